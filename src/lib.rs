//! Casebook: event-sourced adaptive case management for police forces and other
//! public-safety bodies.
//!
//! This facade re-exports the engine ([`casebook_engine`]) so that embedding
//! users depend on one crate:
//!
//! - [`log`] — the append-only event log — [`log::EventStore`], the embedded
//!   durable [`log::LogStore`] and the in-memory [`log::MemoryStore`];
//! - [`security`] — classifications, vetting and principals;
//! - [`definition`] (case definitions as metadata) and [`rules`] (their CEL
//!   conditions).
//!
//! ```
//! use casebook::log::{ActorId, EventData, EventStore, ExpectedVersion, MemoryStore, Metadata, Source, StreamId};
//! # tokio_test_shim::block_on(async {
//! let store = MemoryStore::new();
//! let stream: StreamId = "kent/case/BUR-1".parse().unwrap();
//! let meta = Metadata::new(ActorId::new("pc-4521"), Source::system("casebook"));
//! let result = store
//!     .append(&stream, ExpectedVersion::NoStream, vec![EventData::new("CaseOpened", vec![], meta)])
//!     .await
//!     .unwrap();
//! assert_eq!(result.version.0, 0);
//! # });
//! # mod tokio_test_shim { pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f) } }
//! ```

#![deny(unsafe_code)]

pub use casebook_engine::{
    case, definition, engine, error, log, prelude, projection, rules, security, time, Engine,
    ErrorKind,
};

/// The README's code examples, compiled as doctests so the README stays true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
