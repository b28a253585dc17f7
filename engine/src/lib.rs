//! The Casebook engine: an event-sourced adaptive case management core.
//!
//! Layout, one folder per concept:
//! - [`log`]: the append-only event log — identifiers, the [`log::EventStore`]
//!   trait, the typed event codec, subscriptions, and two stores:
//!   [`log::MemoryStore`] and [`log::LogStore`] (durable segment files plus sled
//!   indexes).
//! - [`security`]: classifications (and, later, principals, roles and audit).
//! - [`case`]: the pure case runtime — commands are decided into events
//!   (with the cascade their sentries cause), events fold into
//!   [`case::CaseState`], and principals read a [`case::CaseView`].

pub mod case;
pub mod definition;
pub mod log;
pub mod rules;
pub mod security;
