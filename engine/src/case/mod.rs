//! The case runtime: commands -> events -> state, as pure functions.
//!
//! Everything here is a deterministic function of the definition, the case's
//! events, the command, the [`Principal`](crate::security::Principal) and a
//! clock value passed in. No I/O: an `Engine` loads events, calls these
//! functions, and appends what they return in one append.
//!
//! # How an engine uses it
//!
//! ```text
//! let state = CaseState::replay(&def, &events)?;          // or a snapshot + apply
//! let new = decide(&def, &state, &principal, command, now)?;  // Err: append nothing
//! store.append(stream, ExpectedVersion::Exact(v), encode(new))?;
//! for e in &new { state.apply(&def, e)?; }                // keep the state current
//! let view = state.view_for(&def, &principal)?;           // reads
//! ```
//!
//! - [`CaseEvent`]: every fact, one variant each; implements
//!   [`DomainEvent`](crate::log::codec::DomainEvent).
//! - [`CaseCommand`]: what a person or the orchestration layer asks.
//! - [`decide`]: validates a command against the definition, the case's state
//!   and the principal, and returns all its events — including the cascade of
//!   transitions its sentries cause, run to a fixpoint within
//!   [`CASCADE_LIMIT`] — or a [`CaseError`] and nothing.
//! - [`CaseState`]: the fold of the events ([`CaseState::replay`],
//!   [`CaseState::apply`]); serde-serializable for snapshots.
//! - [`CaseView`]: what a principal may read ([`CaseState::view_for`]);
//!   [`Disclosure`]: the one rule of what a reader may see of a case.
//!
//! The rules are those of `docs/case-semantics.md`; `docs/case-runtime.md` lists
//! the choices made where it is silent.

mod command;
mod decide;
pub(crate) mod disclose;
mod error;
mod event;
mod file;
mod state;
mod values;
mod view;

#[cfg(test)]
mod repetition_tests;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

pub use crate::ids::CaseId;
pub use command::{CaseCommand, ItemRef, ServiceOutcome};
pub use decide::{
    decide, decide_to_state, decide_within, plannable, PlannableItem, ADMIN_ROLE, CASCADE_LIMIT,
    MAX_DISCLOSURES, MAX_ID_LEN, MAX_NOTE_LEN, SYSTEM_ROLE,
};
pub use disclose::Disclosure;
pub use error::{CaseError, ClearanceSubject};
pub use event::{
    AlertId, AlertQueue, AlertRecord, CaseEvent, DeadlineDue, DefinitionRef, DisclosureRecord,
    EntityRole, InvocationId, InvocationRequest, PoleKind, PoleRef, SuspendedBy,
};
pub use file::{CaseFile, NotAnObject};
pub use state::{
    is_terminal, CaseState, CaseStatus, EntityLink, Incident, InstanceId, ItemInstance, Note,
    OpenAlert, PendingInvocation, PlannedItem, RunningDeadline, RunningWait,
};
pub use values::{
    check_depth, check_value, discard, ValueError, MAX_LIST_LEN, MAX_REF_LEN, MAX_SEARCH_TEXT,
    MAX_TEXT_LEN, MAX_VALUE_DEPTH,
};
pub use view::{CaseView, ItemView};
