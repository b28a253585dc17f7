//! Errors of projections and of the queries they answer.

use std::sync::Arc;

use crate::log::{GlobalPosition, LogError, TenantId};
use crate::security::Classification;
use crate::ErrorKind;

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

/// Turns a sled result into one with the opaque [`StoreError`], so no
/// sled type appears in a public signature or conversion.
pub(crate) trait SledResultExt<T> {
    /// The result, its sled error wrapped.
    fn store(self) -> Result<T, StoreError>;
}

impl<T> SledResultExt<T> for Result<T, sled::Error> {
    fn store(self) -> Result<T, StoreError> {
        self.map_err(StoreError::new)
    }
}

/// Any error, boxed: what a user handler or resolver reports.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A row write a batch refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChangesError {
    /// Keys must not be empty.
    #[error("empty key")]
    EmptyKey,
    /// Keys starting with `0x00` are the framework's.
    #[error("keys starting with 0x00 are reserved")]
    ReservedKey,
    /// A key or value longer than 4 GiB.
    #[error("a row of {len} bytes")]
    TooLarge {
        /// Its length.
        len: usize,
    },
}

impl ChangesError {
    /// What the error means to a caller: a handler defect, [`ErrorKind::Internal`].
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Internal
    }
}

/// A deployed definition could not be resolved (see
/// [`super::builtin::DefinitionResolver`]).
#[derive(Debug, thiserror::Error)]
#[error("definition {key} version {version} is not available: {source}")]
pub struct ResolveError {
    /// The definition's key.
    pub key: String,
    /// The version asked for.
    pub version: u32,
    /// Why it is not available.
    #[source]
    pub source: BoxError,
}

impl ResolveError {
    /// The definition `key` at `version` is not available, because of `source`.
    pub fn new(key: impl Into<String>, version: u32, source: impl Into<BoxError>) -> Self {
        ResolveError {
            key: key.into(),
            version,
            source: source.into(),
        }
    }

    /// What the error means to a caller: [`ErrorKind::Unavailable`] (a
    /// definition the log refers to is expected to resolve, later if not now).
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Unavailable
    }
}

/// A [`super::Handler`] could not apply an event or write a batch: the
/// projection is faulted at that event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// A row write was refused.
    #[error(transparent)]
    Changes(#[from] ChangesError),
    /// Reading the projection's rows failed.
    #[error("reading the projection: {0}")]
    Rows(#[from] RowsError),
    /// A definition the event refers to could not be resolved.
    #[error(transparent)]
    Definition(#[from] ResolveError),
    /// An event or a stored value does not decode.
    #[error("{what} does not decode: {source}")]
    Decode {
        /// What did not decode.
        what: String,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// The events contradict each other (e.g. a case event before its
    /// opening).
    #[error("{0}")]
    Inconsistent(String),
    /// Any other failure (user handlers): the cause is the source.
    #[error(transparent)]
    Other(BoxError),
}

impl HandlerError {
    /// Any other failure, keeping `source`.
    pub fn other(source: impl Into<BoxError>) -> Self {
        HandlerError::Other(source.into())
    }

    /// `what` does not decode, because of `source`.
    pub fn decode(what: impl Into<String>, source: impl Into<BoxError>) -> Self {
        HandlerError::Decode {
            what: what.into(),
            source: source.into(),
        }
    }

    /// What the error means to a caller: a definition that cannot be
    /// resolved (yet) is [`ErrorKind::Unavailable`]; rows, as
    /// [`RowsError::kind`]; anything else is [`ErrorKind::Internal`] (data
    /// or code the caller cannot fix).
    pub fn kind(&self) -> ErrorKind {
        match self {
            HandlerError::Definition(e) => e.kind(),
            HandlerError::Rows(e) => e.kind(),
            _ => ErrorKind::Internal,
        }
    }
}

impl From<String> for HandlerError {
    fn from(message: String) -> Self {
        HandlerError::Other(message.into())
    }
}

impl From<&str> for HandlerError {
    fn from(message: &str) -> Self {
        HandlerError::Other(message.into())
    }
}

/// A commit of a projection batch failed to land.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    /// The batch's deferred work failed (see `Changes::defer`).
    #[error("a deferred write failed: {0}")]
    Deferred(#[source] HandlerError),
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

/// A projection could not be opened, run or managed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProjectionError {
    /// The projection database failed (opening, reading or writing).
    #[error(transparent)]
    Store(#[from] StoreError),
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
    /// The engine has not been started, so no runner follows the log.
    #[error("projections are not running: call Engine::start first")]
    NotStarted,
    /// Reading the log failed.
    #[error("reading the log: {0}")]
    Log(#[source] Arc<LogError>),
    /// The tenant's runners are stopped (the tenant is suspended) until
    /// [`crate::projection::ProjectionHost::resume_tenant`].
    #[error("the projections of tenant {tenant} are stopped (the tenant is suspended)")]
    TenantStopped {
        /// The tenant.
        tenant: crate::log::TenantId,
    },
}

impl From<LogError> for ProjectionError {
    fn from(e: LogError) -> Self {
        ProjectionError::Log(Arc::new(e))
    }
}

impl StoreError {
    /// What the error means to a caller: [`ErrorKind::Internal`] (the
    /// projection database failed or is damaged).
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Internal
    }
}

impl CommitError {
    /// What the error means to a caller: a commit abandoned at shutdown is
    /// [`ErrorKind::Unavailable`]; otherwise as its cause.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CommitError::Deferred(e) => e.kind(),
            CommitError::Stage(e) => e.kind(),
            CommitError::Write(e) => e.kind(),
            CommitError::Abandoned | CommitError::Stopped => ErrorKind::Unavailable,
        }
    }
}

impl RowsError {
    /// What the error means to a caller: storage failure or damage is
    /// [`ErrorKind::Internal`]; rows behind a failed commit are
    /// [`ErrorKind::Unavailable`] (the lane restarts from the tree); a read
    /// that did not wait for its commits is a handler defect,
    /// [`ErrorKind::Internal`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            RowsError::Store(e) => e.kind(),
            RowsError::Corrupt { .. } | RowsError::Unsettled => ErrorKind::Internal,
            RowsError::Unwritten(_) => ErrorKind::Unavailable,
        }
    }
}

impl ProjectionError {
    /// What the error means to a caller: an unknown, invalid or duplicate
    /// projection name is [`ErrorKind::InvalidArgument`] at `projection`;
    /// shutting down, not started, a stopped (suspended) tenant and log
    /// failures are [`ErrorKind::Unavailable`];
    /// storage failure is [`ErrorKind::Internal`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            ProjectionError::Store(e) => e.kind(),
            ProjectionError::UnknownProjection { .. }
            | ProjectionError::InvalidName(_)
            | ProjectionError::DuplicateName(_) => ErrorKind::invalid("projection"),
            ProjectionError::ShutDown
            | ProjectionError::NotStarted
            | ProjectionError::Log(_)
            | ProjectionError::TenantStopped { .. } => ErrorKind::Unavailable,
        }
    }
}

impl QueryError {
    /// What the error means to a caller. Bad queries are
    /// [`ErrorKind::InvalidArgument`] with the offending part's path
    /// (`fields.<field>`, `case_type`, `page.limit`, `page.offset`, or the
    /// parameter's name); an unknown case is [`ErrorKind::NotFound`]; a
    /// field above the caller's clearance or a missing role is
    /// [`ErrorKind::PermissionDenied`]; a projection that is lagging, not
    /// ready, faulted or shutting down is [`ErrorKind::Unavailable`];
    /// damaged data is [`ErrorKind::Internal`].
    pub fn kind(&self) -> ErrorKind {
        let field = |f: &str| ErrorKind::invalid(format!("fields.{f}"));
        match self {
            QueryError::UnknownField { field: f, .. }
            | QueryError::WrongType { field: f, .. }
            | QueryError::Unsupported { field: f, .. }
            | QueryError::NotTextSearchable { field: f, .. } => field(f),
            QueryError::FieldNeedsCaseType { .. } | QueryError::UnknownCaseType { .. } => {
                ErrorKind::invalid("case_type")
            }
            QueryError::FieldNotVisible { .. } | QueryError::Forbidden { .. } => {
                ErrorKind::PermissionDenied
            }
            QueryError::PageSize { .. } => ErrorKind::invalid("page.limit"),
            QueryError::Offset { .. } => ErrorKind::invalid("page.offset"),
            QueryError::Invalid { parameter, .. } => ErrorKind::invalid(parameter.clone()),
            QueryError::UnknownCase { .. } => ErrorKind::NotFound,
            QueryError::Timeout { .. }
            | QueryError::Faulted { .. }
            | QueryError::Lagging { .. }
            | QueryError::FaultedAt { .. }
            | QueryError::NotReady { .. }
            | QueryError::Damaged { .. }
            | QueryError::Rebuilding { .. } => ErrorKind::Unavailable,
            QueryError::Corrupt(_) => ErrorKind::Internal,
            QueryError::Projection(e) => e.kind(),
            QueryError::Access(e) => e.kind(),
            QueryError::Audit(e) => e.kind(),
        }
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
    /// A tenant's query: the projection did not reach the position token
    /// asked for in time ([`QueryError::Timeout`] as a tenant is told it,
    /// with no global position).
    #[error("projection {projection} has not reached position {wanted} within the timeout; retry or wait longer")]
    Lagging {
        /// The projection.
        projection: String,
        /// The position token asked for.
        wanted: crate::security::PositionToken,
    },
    /// A tenant's query: the projection is faulted
    /// ([`QueryError::Faulted`] as a tenant is told it: the failing
    /// event's position as the tenant's token).
    #[error("projection {projection} is faulted at position {position}: {error}")]
    FaultedAt {
        /// The projection.
        projection: String,
        /// The failing event's position token.
        position: crate::security::PositionToken,
        /// The error.
        error: String,
    },
    /// The projection has no generation it can serve yet.
    #[error("projection {projection} is not ready to serve queries yet")]
    NotReady {
        /// The projection.
        projection: String,
    },
    /// Something other than the stored rows could not be read or made
    /// sense of (a case's definition, a stored value its definition
    /// refuses): a defect to report.
    #[error("projection data: {0}")]
    Corrupt(String),
    /// The projection database is damaged (a page or row that cannot be
    /// decoded, or the storage library failing on it). The engine sets the
    /// database aside and rebuilds every projection from the log in the
    /// background (issue 19); retry shortly.
    #[error("the projection database is damaged ({what}); it is being set aside and rebuilt from the log: retry shortly")]
    Damaged {
        /// What was found damaged.
        what: String,
    },
    /// The projection is being rebuilt from the log after its database was
    /// found damaged, and has not yet caught up with what it served
    /// before; retry shortly (or ask for a position to wait for).
    #[error("projection {projection} is being rebuilt from the log after damage was found; retry shortly")]
    Rebuilding {
        /// The projection.
        projection: String,
    },
    /// The projection machinery failed.
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    /// The caller may not use the engine: a bad principal, an unknown or
    /// suspended tenant.
    #[error(transparent)]
    Access(#[from] crate::security::AccessError),
    /// The read's audit refused it or could not record it (see [`crate::audit`]).
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(kind: ErrorKind) -> Vec<String> {
        match kind {
            ErrorKind::InvalidArgument { paths } => paths,
            other => panic!("expected an invalid argument, got {other}"),
        }
    }

    #[test]
    fn query_errors_map_to_kinds_with_paths() {
        let unknown_field = QueryError::UnknownField {
            case_type: "incident".into(),
            field: "ward".into(),
            known: vec![],
        };
        assert_eq!(paths(unknown_field.kind()), ["fields.ward"]);
        let wrong = QueryError::WrongType {
            field: "age".into(),
            message: "a number".into(),
        };
        assert_eq!(paths(wrong.kind()), ["fields.age"]);
        let page = QueryError::PageSize {
            requested: 0,
            max: 100,
        };
        assert_eq!(paths(page.kind()), ["page.limit"]);
        let offset = QueryError::Offset {
            requested: 1 << 30,
            max: 10_000,
        };
        assert_eq!(paths(offset.kind()), ["page.offset"]);
        let invalid = QueryError::Invalid {
            parameter: "role".into(),
            message: "no definition declares it".into(),
        };
        assert_eq!(paths(invalid.kind()), ["role"]);
        let tenant = TenantId::new("kent").unwrap();
        let case_type = QueryError::UnknownCaseType {
            tenant: tenant.clone(),
            case_type: "x".into(),
        };
        assert_eq!(paths(case_type.kind()), ["case_type"]);
        let unknown = QueryError::Projection(ProjectionError::UnknownProjection {
            name: "nope".into(),
            known: vec!["cases".into()],
        });
        assert_eq!(paths(unknown.kind()), ["projection"]);
        let case = QueryError::UnknownCase {
            tenant,
            case_id: "BUR-1".into(),
        };
        assert_eq!(case.kind(), ErrorKind::NotFound);
        let hidden = QueryError::FieldNotVisible {
            field: "informant".into(),
            needed: Classification::Secret,
        };
        assert_eq!(hidden.kind(), ErrorKind::PermissionDenied);
    }

    #[test]
    fn lagging_stopped_or_damaged_projections_are_unavailable_and_other_corruption_internal() {
        let lagging = QueryError::Timeout {
            projection: "cases".into(),
            reached: None,
            wanted: GlobalPosition(9),
        };
        let faulted = QueryError::Faulted {
            projection: "cases".into(),
            position: GlobalPosition(3),
            error: "bad".into(),
        };
        let not_ready = QueryError::NotReady {
            projection: "cases".into(),
        };
        let down = QueryError::Projection(ProjectionError::ShutDown);
        for e in [lagging, faulted, not_ready, down] {
            assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
            assert!(e.kind().is_retryable());
        }
        let io = std::io::Error::other("disk on fire");
        let store = ProjectionError::Store(StoreError::new(io));
        assert_eq!(store.kind(), ErrorKind::Internal);
        assert!(
            std::error::Error::source(&store).is_some(),
            "the cause is kept"
        );
        let corrupt: QueryError = RowsError::Corrupt {
            fence: "S".into(),
            why: "truncated".into(),
        }
        .into();
        // A damaged page: the database is replaced, retry shortly.
        assert!(matches!(corrupt, QueryError::Damaged { .. }));
        assert_eq!(corrupt.kind(), ErrorKind::Unavailable);
        assert_eq!(
            QueryError::Rebuilding {
                projection: "cases".into()
            }
            .kind(),
            ErrorKind::Unavailable
        );
        assert_eq!(QueryError::Corrupt("x".into()).kind(), ErrorKind::Internal);
    }

    #[test]
    fn handler_and_commit_errors_keep_their_sources_and_kinds() {
        let resolve = ResolveError::new("incident", 2, "the engine has been dropped");
        assert_eq!(resolve.kind(), ErrorKind::Unavailable);
        let handler = HandlerError::from(resolve);
        assert_eq!(handler.kind(), ErrorKind::Unavailable);
        assert!(handler.to_string().contains("incident version 2"));
        let decode = HandlerError::decode("event 7", std::io::Error::other("garbage"));
        assert_eq!(decode.kind(), ErrorKind::Internal);
        assert!(std::error::Error::source(&decode).is_some());
        let deferred = CommitError::Deferred(HandlerError::from(ChangesError::ReservedKey));
        assert_eq!(deferred.kind(), ErrorKind::Internal);
        assert!(std::error::Error::source(&deferred).is_some());
        assert_eq!(CommitError::Abandoned.kind(), ErrorKind::Unavailable);
        let unwritten = RowsError::Unwritten(Arc::new(CommitError::Stopped));
        assert_eq!(unwritten.kind(), ErrorKind::Unavailable);
        assert_eq!(RowsError::Unsettled.kind(), ErrorKind::Internal);
        assert_eq!(
            HandlerError::from("a user handler's failure").kind(),
            ErrorKind::Internal
        );
    }
}
