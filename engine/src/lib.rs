//! The Casebook engine: an event-sourced adaptive case management core.
//!
//! Layout, one folder per concept:
//! - [`engine`]: [`Engine`], the one entry point for embedding users — deploy
//!   definitions, open cases, execute commands, read views.
//! - [`log`]: the append-only event log — identifiers, the [`log::EventStore`]
//!   trait, the typed event codec, subscriptions, and two stores:
//!   [`log::MemoryStore`] and [`log::LogStore`] (durable segment files plus sled
//!   indexes).
//! - [`definition`] and [`rules`]: case definitions as metadata, and the CEL
//!   conditions in them.
//! - [`case`]: the pure case runtime — commands are decided into events
//!   (with the cascade their sentries cause), events fold into
//!   [`case::CaseState`], and principals read a [`case::CaseView`].
//! - [`projection`]: durable read models built from the log — the
//!   [`projection::Projection`] trait, runners with checkpoints written
//!   atomically with their data, background rebuilds, and the built-in case
//!   view, timeline, case search, work queue and deadline views.
//! - [`resources`]: tenant resources the built-in services work from —
//!   boundary sets, decision tables, reference data, contacts — deployed
//!   and versioned per tenant — and the retention policy.
//! - [`records`]: the records lifecycle — the tenant's record of subjects
//!   (nominals), MoPI retention review, legal holds.
//! - [`security`]: classifications, vetting and the [`security::Principal`]
//!   every call takes.
//! - [`time`]: [`time::Timestamp`] and the [`time::Clock`] every timestamp
//!   the engine makes comes from.

#![deny(unsafe_code)]

pub mod audit;
pub mod calendar;
pub mod case;
pub mod definition;
mod embedded;
pub mod engine;
pub mod error;
pub mod ids;
pub mod log;
pub mod orchestration;
pub mod prelude;
pub mod projection;
mod recent;
pub mod records;
pub mod resources;
pub mod rules;
pub mod security;
pub mod streams;
pub mod time;

pub use engine::Engine;
pub use error::ErrorKind;
