//! `RecordsError`: what goes wrong with reviews, holds and the review-due
//! query, each with its [`ErrorKind`].

use crate::audit::AuditError;
use crate::calendar::{format_date, Date};
use crate::engine::EngineError;
use crate::error::ErrorKind;
use crate::log::TenantId;
use crate::projection::QueryError;
use crate::resources::ResourceProblem;
use crate::security::AccessError;

/// What went wrong with a records command or query.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    /// The caller may not use the engine (unknown or suspended tenant, bad
    /// principal).
    #[error(transparent)]
    Access(#[from] AccessError),
    /// The caller lacks the role.
    #[error("{principal} may not {action}: it needs the role {needed}")]
    Forbidden {
        /// Who.
        principal: String,
        /// What they tried.
        action: String,
        /// The role it needs.
        needed: String,
    },
    /// Not a subject id (`n` and 32 lower-case hex digits).
    #[error("'{id}' is not a subject id: expected 'n' followed by 32 lower-case hex digits")]
    InvalidSubjectId {
        /// What was given (shortened).
        id: String,
    },
    /// The request is invalid; every problem with its path.
    #[error("invalid request: {}", .problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// Every problem.
        problems: Vec<ResourceProblem>,
    },
    /// No such subject in the tenant — or not one the caller may see.
    #[error("no subject {subject} in tenant {tenant}")]
    UnknownSubject {
        /// The tenant.
        tenant: TenantId,
        /// The id asked for.
        subject: String,
    },
    /// No such case in the tenant — or not one the caller may see.
    #[error("no case {case_id} in tenant {tenant}")]
    UnknownCase {
        /// The tenant.
        tenant: TenantId,
        /// The id asked for.
        case_id: String,
    },
    /// No such hold — or not one the caller may see.
    #[error("no hold {hold} in tenant {tenant}")]
    UnknownHold {
        /// The tenant.
        tenant: TenantId,
        /// The id asked for.
        hold: String,
    },
    /// A retention class the tenant's policy does not have.
    #[error("the retention policy (version {policy_version}) has no class '{class}': use one of [{}]", .known.join(", "))]
    UnknownClass {
        /// The class asked for.
        class: String,
        /// The policy version in force (0: the shipped defaults).
        policy_version: u32,
        /// The classes it has.
        known: Vec<String>,
    },
    /// The subject's class is missing from the policy in force.
    #[error("subject {subject} falls in class '{class}', which the retention policy (version {policy_version}) no longer has: deploy a policy with that class")]
    ClassNotInPolicy {
        /// The subject.
        subject: String,
        /// Its class.
        class: String,
        /// The policy version in force.
        policy_version: u32,
    },
    /// A dispose decision while a hold is in force.
    #[error("subject {subject} is under hold ({}): release the holds before disposal", .holds.join(", "))]
    UnderHold {
        /// The subject.
        subject: String,
        /// The holds in force, as `kind id`.
        holds: Vec<String>,
    },
    /// A dispose decision before the class's retain-until age.
    #[error("subject {subject} is retained until age {age}{}", match .until { Some(d) => format!(" ({})", format_date(*d)), None => ": its date of birth is unknown, so it cannot be disposed of".into() })]
    RetainedUntil {
        /// The subject.
        subject: String,
        /// The class's age.
        age: u32,
        /// The first day disposal is allowed, if known.
        until: Option<Date>,
    },
    /// An erasure of a subject under a legal hold: the data must be kept as
    /// evidence (DPA 2018 s47(2)), so it is not erased; restrict it instead.
    #[error("subject {subject} is under hold ({}): its data must be kept as evidence, so it is not erased; restrict processing instead (DPA 2018 s47(2))", .holds.join(", "))]
    ErasureUnderHold {
        /// The subject.
        subject: String,
        /// The holds in force, as `kind id`.
        holds: Vec<String>,
    },
    /// The subject was erased already.
    #[error("subject {subject} was erased already (certificate {certificate})")]
    AlreadyErased {
        /// The subject.
        subject: String,
        /// The erasure certificate (the `SubjectErased` event's id).
        certificate: String,
    },
    /// The subject awaits disposal: no further review.
    #[error("subject {subject} awaits disposal; place a hold to restrict it instead")]
    AwaitingDisposal {
        /// The subject.
        subject: String,
    },
    /// The hold was released already.
    #[error("hold {hold} was released already")]
    HoldReleased {
        /// The hold.
        hold: String,
    },
    /// The subject changed since the caller read it.
    #[error(
        "subject {subject} is at version {actual}, not {expected}: read it again and decide again"
    )]
    WrongVersion {
        /// The subject.
        subject: String,
        /// The version the caller gave.
        expected: u64,
        /// Its version now.
        actual: u64,
    },
    /// A projection read failed.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// An engine failure (log, policy).
    #[error(transparent)]
    Engine(Box<EngineError>),
    /// The audit of reads failed.
    #[error(transparent)]
    Audit(#[from] AuditError),
}

impl From<EngineError> for RecordsError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Access(a) => RecordsError::Access(a),
            other => RecordsError::Engine(Box::new(other)),
        }
    }
}

impl From<crate::log::LogError> for RecordsError {
    fn from(e: crate::log::LogError) -> Self {
        RecordsError::Engine(Box::new(e.into()))
    }
}

impl From<crate::ids::IdError> for RecordsError {
    fn from(e: crate::ids::IdError) -> Self {
        RecordsError::Engine(Box::new(e.into()))
    }
}

impl From<crate::log::codec::CodecError> for RecordsError {
    fn from(e: crate::log::codec::CodecError) -> Self {
        RecordsError::Engine(Box::new(e.into()))
    }
}

impl RecordsError {
    /// The one classification servers map to statuses.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RecordsError::Access(a) => a.kind(),
            RecordsError::Forbidden { .. } => ErrorKind::PermissionDenied,
            RecordsError::InvalidSubjectId { .. } => ErrorKind::invalid("subject"),
            RecordsError::Invalid { problems } => ErrorKind::InvalidArgument {
                paths: problems.iter().map(|p| p.path.clone()).collect(),
            },
            RecordsError::UnknownSubject { .. }
            | RecordsError::UnknownCase { .. }
            | RecordsError::UnknownHold { .. } => ErrorKind::NotFound,
            RecordsError::UnknownClass { .. } => ErrorKind::invalid("class"),
            RecordsError::ClassNotInPolicy { .. }
            | RecordsError::UnderHold { .. }
            | RecordsError::RetainedUntil { .. }
            | RecordsError::AwaitingDisposal { .. }
            | RecordsError::ErasureUnderHold { .. }
            | RecordsError::AlreadyErased { .. }
            | RecordsError::HoldReleased { .. } => ErrorKind::Conflict {
                actual_version: None,
            },
            RecordsError::WrongVersion { actual, .. } => ErrorKind::Conflict {
                actual_version: Some(*actual),
            },
            RecordsError::Query(q) => q.kind(),
            RecordsError::Engine(e) => e.kind(),
            RecordsError::Audit(a) => a.kind(),
        }
    }

    /// One problem at `path`.
    pub(crate) fn invalid(path: &str, message: impl Into<String>) -> Self {
        RecordsError::Invalid {
            problems: vec![ResourceProblem::new(path, message)],
        }
    }
}

impl crate::engine::audited::ReadError for RecordsError {
    fn read_kind(&self) -> ErrorKind {
        self.kind()
    }
}
