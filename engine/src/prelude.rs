//! The names most embedding code needs: `use casebook::prelude::*;`.
//!
//! The engine and its settings, the command and case-file types, principals
//! and classifications, definition formats, query types and consistency,
//! errors and their kinds, and time.

pub use crate::case::{CaseCommand, CaseFile, CaseId, CaseStatus, CaseView, ItemRef};
pub use crate::definition::Format;
pub use crate::engine::{
    CaseOutcome, CommandContext, CommandId, Engine, EngineConfig, EngineError, OpenCase,
};
pub use crate::error::ErrorKind;
pub use crate::log::{GlobalPosition, TenantId};
pub use crate::projection::query::{
    DeadlineQuery, PageRequest, SearchQuery, TaskStates, TimelineEntry, WorkItem, WorkQueueQuery,
};
pub use crate::projection::{Consistency, QueryError};
pub use crate::security::{Classification, Principal};
pub use crate::time::{Clock, Timestamp};
