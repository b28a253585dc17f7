//! Errors of projections and of the queries they answer.

use std::sync::Arc;

use crate::log::{GlobalPosition, LogError, TenantId};
use crate::security::Classification;

/// The projection database (sled) failed. Opaque: the storage engine is an
/// implementation detail; the cause is kept as the error's source.
#[derive(Debug, Clone, thiserror::Error)]
#[error("projection store: {source}")]
pub struct StoreError {
    #[source]
    source: Arc<dyn std::error::Error + Send + Sync>,
}

impl StoreError {
    pub(crate) fn new(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        StoreError {
            source: Arc::from(e.into()),
        }
    }
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::new(e)
    }
}

/// A commit of a projection batch failed to land.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    /// The batch's deferred work failed (see `Changes::defer`).
    #[error("a deferred write failed: {0}")]
    Deferred(String),
    /// Turning the batch's rows into pages failed.
    #[error("staging pages: {0}")]
    Stage(#[source] RowsError),
    /// Writing the batch to the projection store failed.
    #[error("writing the projection: {0}")]
    Write(#[source] StoreError),
    /// The batch's preparation was dropped before it finished (the runtime
    /// is shutting down).
    #[error("the write was abandoned")]
    Abandoned,
    /// The committer thread is gone.
    #[error("the projection committer has stopped")]
    Stopped,
}

/// A projection's storage failed or holds a page that does not decode.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RowsError {
    /// The projection database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored page does not decode (the projection must be rebuilt).
    #[error("projection page at {fence:?} does not decode: {why}")]
    Corrupt {
        /// The page's fence, lossily as text.
        fence: String,
        /// What is wrong.
        why: String,
    },
    /// A commit these rows follow failed to be written.
    #[error("an earlier projection batch was not written: {0}")]
    Unwritten(#[source] Arc<CommitError>),
    /// Read while a commit these rows follow is in flight, without waiting
    /// for it first: a handler must `Rows::settled().await` before reading
    /// its rows after a batch was queued.
    #[error("read before the projection's last queued commit was waited for (await Rows::settled first)")]
    Unsettled,
}

impl From<sled::Error> for RowsError {
    fn from(e: sled::Error) -> Self {
        RowsError::Store(StoreError::new(e))
    }
}

/// A projection could not be opened, run or managed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProjectionError {
    /// The projection database failed (opening, reading or writing).
    #[error("projection store: {0}")]
    Store(String),
    /// No projection of this name is registered.
    #[error("no projection named {name}; known: {known:?}")]
    UnknownProjection {
        /// The name asked for.
        name: String,
        /// The registered names.
        known: Vec<String>,
    },
    /// A projection name that cannot name storage.
    #[error("invalid projection name {0:?}: use ASCII letters, digits, '_' and '-'")]
    InvalidName(String),
    /// The same name was registered twice.
    #[error("projection {0} is registered twice")]
    DuplicateName(String),
    /// The host was shut down.
    #[error("the projection host is shut down")]
    ShutDown,
    /// Reading the log failed.
    #[error("reading the log: {0}")]
    Log(String),
}

impl From<LogError> for ProjectionError {
    fn from(e: LogError) -> Self {
        ProjectionError::Log(e.to_string())
    }
}

impl From<sled::Error> for ProjectionError {
    fn from(e: sled::Error) -> Self {
        ProjectionError::Store(e.to_string())
    }
}

/// A query was refused or could not be answered. Each variant says what to fix.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QueryError {
    /// The query names a field the case type does not have.
    #[error("case type {case_type} has no field {field}; its fields are {known:?}")]
    UnknownField {
        /// The case type.
        case_type: String,
        /// The field asked for.
        field: String,
        /// The fields it has.
        known: Vec<String>,
    },
    /// A value of the wrong type for its field.
    #[error("field {field}: {message}")]
    WrongType {
        /// The field (or query parameter).
        field: String,
        /// What was expected.
        message: String,
    },
    /// An operation the field's type does not support (ranges on booleans,
    /// text search on numbers...).
    #[error("field {field} of type {field_type} does not support {operation}")]
    Unsupported {
        /// The field.
        field: String,
        /// Its type.
        field_type: String,
        /// The operation asked for.
        operation: String,
    },
    /// Text search on a field its definition does not mark `search = "text"`.
    #[error("field {field} of case type {case_type} is not text-searchable (mark it search = \"text\" in the definition); text-searchable fields: {searchable:?}")]
    NotTextSearchable {
        /// The case type.
        case_type: String,
        /// The field asked for.
        field: String,
        /// The fields that are.
        searchable: Vec<String>,
    },
    /// The query filters on case-file fields without naming a case type.
    #[error("filtering on case-file field {field} needs a case type")]
    FieldNeedsCaseType {
        /// The field.
        field: String,
    },
    /// The caller may not filter on a field above their clearance.
    #[error("field {field} is classified {needed}, above the caller's clearance")]
    FieldNotVisible {
        /// The field.
        field: String,
        /// Its classification.
        needed: Classification,
    },
    /// A page size of zero or above the limit.
    #[error("page size {requested} is out of range: use 1 to {max}")]
    PageSize {
        /// The size asked for.
        requested: usize,
        /// The largest allowed.
        max: usize,
    },
    /// An offset beyond what a query may skip.
    #[error("offset {requested} is too large: at most {max}; narrow the query instead")]
    Offset {
        /// The offset asked for.
        requested: usize,
        /// The largest allowed.
        max: usize,
    },
    /// A malformed query parameter (empty text, inverted range...).
    #[error("invalid {parameter}: {message}")]
    Invalid {
        /// The parameter.
        parameter: String,
        /// What is wrong.
        message: String,
    },
    /// No such case type is deployed for the caller's tenant.
    #[error("case type {case_type} is not deployed for tenant {tenant}")]
    UnknownCaseType {
        /// The caller's tenant.
        tenant: TenantId,
        /// The case type.
        case_type: String,
    },
    /// No such case in the caller's tenant (or not visible to the caller: a
    /// case above their clearance reads as absent).
    #[error("case {case_id} does not exist in tenant {tenant}")]
    UnknownCase {
        /// The caller's tenant.
        tenant: TenantId,
        /// The case id.
        case_id: String,
    },
    /// The caller may not do this.
    #[error("{principal} may not {action}: it needs one of the roles {needed:?}")]
    Forbidden {
        /// Who asked.
        principal: String,
        /// What they tried.
        action: String,
        /// Roles that would allow it.
        needed: Vec<String>,
    },
    /// The projection did not reach the position in time.
    #[error("projection {projection} reached {reached:?}, not {wanted} within the timeout; retry or wait longer")]
    Timeout {
        /// The projection.
        projection: String,
        /// How far it got.
        reached: Option<GlobalPosition>,
        /// The position asked for.
        wanted: GlobalPosition,
    },
    /// The projection is faulted; an operator must fix the cause and retry it.
    #[error("projection {projection} is faulted at position {position}: {error}")]
    Faulted {
        /// The projection.
        projection: String,
        /// The failing event's position.
        position: GlobalPosition,
        /// The error.
        error: String,
    },
    /// The projection has no generation it can serve yet.
    #[error("projection {projection} is not ready to serve queries yet")]
    NotReady {
        /// The projection.
        projection: String,
    },
    /// A stored row could not be read (the projection should be rebuilt).
    #[error("projection data: {0}")]
    Corrupt(String),
    /// The projection machinery failed.
    #[error(transparent)]
    Projection(#[from] ProjectionError),
}

impl From<sled::Error> for QueryError {
    fn from(e: sled::Error) -> Self {
        QueryError::Projection(ProjectionError::Store(e.to_string()))
    }
}
