//! Casebook: event-sourced adaptive case management for police forces and other
//! public-safety bodies.
//!
//! Everything that happens to a case is an event in one append-only log;
//! every other state — case snapshots, read models, indexes — is derived from
//! it and can be rebuilt from it. This facade re-exports the engine crate so
//! that embedding code depends on one crate and writes `casebook::` paths;
//! `use casebook::prelude::*` brings in the names most code needs.
//!
//! # The engine
//!
//! [`Engine`] is the one entry point. Every call takes a
//! [`Principal`](security::Principal) — tenant, subject, roles, clearance — and
//! sees only that tenant's data, and of it only what the clearance allows.
//!
//! - [`Engine::open`] (the durable embedded store in a directory) or
//!   [`Engine::in_memory`]: recovers the log and opens its databases; commands
//!   work at once.
//! - [`Engine::start`]: starts the projection runners; queries before it
//!   return [`QueryError::Projection`](projection::QueryError::Projection)
//!   (`ProjectionError::NotStarted`). [`Engine::run`] starts, waits for a
//!   shutdown signal and shuts down.
//! - [`Engine::deploy`]: a case definition, per tenant, as versioned events;
//!   the same document again is a no-op.
//! - [`Engine::open_case`] and [`Engine::execute`]: commands, each decided and
//!   appended as one append. A [`CommandContext`](engine::CommandContext)
//!   carries the reason and, for safe retries, a
//!   [`CommandId`](engine::CommandId): the same id returns the first outcome
//!   and appends nothing, also after a restart.
//! - [`Engine::view`]: the case as the principal may see it, read from the log.
//! - [`Engine::shutdown`]: drains the runners and releases the data directory.
//!
//! Time comes from the [`Clock`](time::Clock) in
//! [`EngineConfig`](engine::EngineConfig) (tests use
//! [`ManualClock`](time::ManualClock)); every public error has
//! `kind() -> ` [`ErrorKind`], the one classification a server maps to its
//! statuses.
//!
//! # Cases
//!
//! A case type is data, not code: a [`definition::CaseDefinition`] written
//! in TOML or JSON (format: `docs/definition-format.md`) lists the typed case
//! file, the plan (stages, human tasks, service tasks, automatic steps,
//! milestones, discretionary items), the **sentries** that move the plan on
//! (on-parts such as "`log_request` completed", and [`rules`] — CEL
//! conditions over the case file), SLA deadlines and who may do what.
//! [`case`] is the runtime as pure functions: a
//! [`CaseCommand`](case::CaseCommand) is decided into events, the cascade
//! its sentries cause included, or rejected with nothing appended. Every
//! field and case carries a [`Classification`](security::Classification);
//! a reader below it does not see the field, and a case above their
//! **clearance** reads as not found. The rules: `docs/case-semantics.md` and
//! `docs/case-runtime.md`.
//!
//! # Projections
//!
//! [`projection`] builds durable read models from the log in the background:
//! the case view, timeline, work queues (by role, team, assignee), case
//! search and deadlines, each per tenant and clearance-aware, queried through
//! `Engine` ([`Engine::case_view`], [`Engine::timeline`],
//! [`Engine::work_queue`], [`Engine::search_cases`], [`Engine::deadlines`]).
//! They follow the log asynchronously; a query takes a
//! [`Consistency`](projection::Consistency): `Eventual`, or
//! [`Consistency::after`](projection::Consistency::after) a command's outcome
//! to read your own writes.
//!
//! # Example
//!
//! ```
//! use casebook::prelude::*;
//! use casebook::rules::serde_json::json;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let engine = Engine::in_memory()?; // or Engine::open("/var/lib/casebook")
//! engine.start().await?;
//!
//! // A platform administrator registers the tenant `kent` (calls for an
//! // unregistered tenant are refused; `EngineConfig::tenants` does it at start).
//! let kent = TenantId::new("kent")?;
//! engine
//!     .register_tenant(&Principal::platform_administrator("ops-1"), &kent)
//!     .await?;
//!
//! // Deploy a case type for the tenant `kent`.
//! let admin = Principal::new(kent.clone(), "admin-1").with_roles(["administrator"]);
//! let source = include_str!("../examples/definitions/foi-request.toml");
//! engine.deploy(&admin, source, Format::Toml).await?;
//!
//! // Open a case: a command, decided and appended as one append.
//! let officer = Principal::new(kent, "foi-7").with_roles(["foi_officer"]);
//! let request = CaseFile::new()
//!     .with("requester", "P-1001")
//!     .with("received_on", "2026-11-02")
//!     .with("request_text", "Burglaries in Canterbury in 2025");
//! let opened = engine.open_case(&officer, OpenCase::new("foi_request", request)).await?;
//!
//! // Complete the first task: the sentries waiting on it fire in the same append.
//! let outputs = CaseFile::from_json(json!({ "valid_request": true, "clarification_needed": false }))?;
//! let done = engine
//!     .execute(
//!         &officer,
//!         &opened.case_id,
//!         CaseCommand::Complete { item: ItemRef::key("log_request"), outputs },
//!         CommandContext::because("request logged").with_command_id(CommandId::random()),
//!     )
//!     .await?;
//! let view = engine.view(&officer, &opened.case_id).await?;
//! assert!(view.items.iter().any(|i| i.item.as_str() == "search_for_information"));
//!
//! // Projections: wait until they have seen this command, then query.
//! let queue = engine
//!     .work_queue(&officer, &WorkQueueQuery::default(), Consistency::after(&done))
//!     .await?;
//! assert!(queue.items.iter().any(|t| t.case_id == opened.case_id.as_str()));
//! let timeline = engine
//!     .timeline(&officer, &opened.case_id, PageRequest::default(), Consistency::after(&done))
//!     .await?;
//! assert!(timeline.items.iter().any(|e| e.actor == "foi-7"));
//!
//! engine.shutdown().await?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```
//!
//! # Modules
//!
//! - [`log`] — the append-only event log: [`log::EventStore`], the embedded
//!   durable [`log::LogStore`] and the in-memory [`log::MemoryStore`];
//! - [`definition`] (case definitions as metadata) and [`rules`] (their CEL
//!   conditions);
//! - [`case`] — the pure case runtime;
//! - [`engine`] — [`Engine`] and its commands, configuration and errors;
//! - [`projection`] — read models, queries and consistency;
//! - [`orchestration`] — business services, durable invocations, external
//!   job workers, and the built-in common services;
//! - [`resources`] — the tenant resources those services read (boundary
//!   sets, decision tables, reference data, contacts);
//! - [`records`] — the records lifecycle: subjects (nominals), MoPI
//!   retention review, legal holds, restriction and erasure by
//!   crypto-shredding (`docs/RETENTION.md`);
//! - [`security`] — classifications, vetting and principals;
//! - [`time`] — timestamps and clocks; [`error`] — [`ErrorKind`];
//! - [`prelude`] — the names most embedding code needs.
//!
//! How the code is laid out, and the invariants each part keeps:
//! `ARCHITECTURE.md`.

#![deny(unsafe_code)]

pub use casebook_engine::{
    audit, calendar, case, definition, engine, error, log, orchestration, prelude, projection,
    records, resources, rules, security, streams, time, Engine, ErrorKind,
};

/// The README's code examples, compiled as doctests so the README stays true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// `docs/case-runtime.md`'s code examples, compiled as doctests.
#[doc = include_str!("../docs/case-runtime.md")]
#[cfg(doctest)]
pub struct CaseRuntimeDoctests;

/// `docs/case-semantics.md`'s code examples, compiled as doctests.
#[doc = include_str!("../docs/case-semantics.md")]
#[cfg(doctest)]
pub struct CaseSemanticsDoctests;

/// `docs/markings.md`'s code examples, compiled as doctests.
#[doc = include_str!("../docs/markings.md")]
#[cfg(doctest)]
pub struct MarkingsDoctests;

/// `docs/tamper-evidence.md`'s code examples, compiled as doctests.
#[doc = include_str!("../docs/tamper-evidence.md")]
#[cfg(doctest)]
pub struct TamperEvidenceDoctests;

/// `docs/RETENTION.md`'s code examples, compiled as doctests.
#[doc = include_str!("../docs/RETENTION.md")]
#[cfg(doctest)]
pub struct RetentionDoctests;

/// `docs/postgres.md`'s code examples, compiled as doctests.
#[doc = include_str!("../docs/postgres.md")]
#[cfg(doctest)]
pub struct PostgresDoctests;

/// `docs/definition-format.md`'s code examples, compiled as doctests.
#[doc = include_str!("../docs/definition-format.md")]
#[cfg(doctest)]
pub struct DefinitionFormatDoctests;
