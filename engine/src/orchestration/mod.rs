//! Orchestration: business services invoked durably for service tasks.
//!
//! - [`service`]: the [`BusinessService`] plugin trait, its
//!   [`ServiceContract`] (checked at deploy against a definition's
//!   `[[services]]`) and [`ServiceRegistry`] (on
//!   [`crate::engine::EngineConfig::services`], enabled per tenant).
//! - When a service task activates, the same append records a
//!   `ServiceInvocationRequested` event (service, mapped input, retry
//!   policy). The `orchestration` projection ([`pending`]) follows the log
//!   with the projections' own runner — subscription, batches, checkpoints
//!   — and keeps the pending invocations; once a batch lands it hands them
//!   to the hub (`hub.rs`, in memory, rebuilt from the rows at start).
//! - The dispatcher ([`dispatcher`]), started by [`crate::Engine::start`]
//!   and drained by [`crate::Engine::shutdown`], invokes in-process services
//!   and records each outcome with an idempotent command; retries wait with
//!   exponential backoff and jitter (the due time is in the event, so it
//!   survives restarts); after the last attempt the task fails and an
//!   incident is open until `CaseCommand::RetryIncident`.
//! - Services no plugin provides are done by external workers ([`jobs`]).
//! - [`builtin`]: business services that ship with the engine.
//!
//! Invocations are at least once to the service (the same idempotency key
//! on every attempt and after a crash) and exactly once in the log.

pub mod builtin;
pub mod dispatcher;
mod error;
mod hub;
pub mod jobs;
pub mod pending;
pub mod service;

pub use async_trait::async_trait;
pub use error::OrchestrationError;
pub use jobs::{ActivateJobs, Job, JobHandle};
pub use service::{
    BusinessService, Disclosures, RaisedAlerts, Reports, ServiceContext, ServiceContract,
    ServiceError, ServiceRegistry, ServiceValues,
};

pub(crate) use hub::Hub;

/// The role external job workers hold.
pub const WORKER_ROLE: &str = "casebook_worker";

/// What the orchestration layer holds right now, across tenants: for
/// operators' dashboards and alerts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Service invocations pending: due, waiting for a retry, or leased to
    /// an external worker.
    pub invocations: usize,
    /// Running timers (SLA deadlines and their escalations).
    pub timers: usize,
}

impl crate::engine::Engine {
    /// The orchestration backlog (counts only; nothing about any case).
    pub fn orchestration_backlog(&self) -> Backlog {
        let hub = self.hub();
        Backlog {
            invocations: hub.len(),
            timers: hub.timer_count(),
        }
    }
}
