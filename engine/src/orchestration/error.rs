//! [`OrchestrationError`]: why a job worker's or an incident query's call
//! was refused.

use crate::engine::EngineError;
use crate::error::ErrorKind;
use crate::projection::QueryError;

/// Why a job or incident call was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OrchestrationError {
    /// The caller holds neither the worker role nor `casebook_system`.
    #[error(
        "'{action}' needs the role '{}' or '{}'",
        super::WORKER_ROLE,
        crate::case::SYSTEM_ROLE
    )]
    Forbidden {
        /// What was attempted.
        action: String,
    },
    /// A request argument is out of range or malformed.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The argument.
        field: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// The service runs in process for this tenant: external workers do not
    /// get its jobs.
    #[error("service '{service}' runs in process; external workers get no jobs of it")]
    ServedInProcess {
        /// The service.
        service: String,
    },
    /// No such job is pending (it ended, or the handle is wrong) — or it is
    /// another tenant's.
    #[error("no pending job {job}")]
    UnknownJob {
        /// The job, as named.
        job: String,
    },
    /// The lease expired (the job may have gone to another worker) or the
    /// job's outcome is already being recorded.
    #[error("the lease on job {job} is no longer held; activate jobs again")]
    LeaseLost {
        /// The job.
        job: String,
    },
    /// The engine refused or failed to record the outcome.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The incident query failed.
    #[error(transparent)]
    Query(#[from] QueryError),
}

impl OrchestrationError {
    /// The error's class, for callers and servers.
    pub fn kind(&self) -> ErrorKind {
        match self {
            OrchestrationError::Forbidden { .. } => ErrorKind::PermissionDenied,
            OrchestrationError::Invalid { field, .. } => ErrorKind::invalid(field.clone()),
            OrchestrationError::ServedInProcess { .. } => ErrorKind::invalid("service"),
            OrchestrationError::UnknownJob { .. } => ErrorKind::NotFound,
            OrchestrationError::LeaseLost { .. } => ErrorKind::Conflict {
                actual_version: None,
            },
            OrchestrationError::Engine(e) => e.kind(),
            OrchestrationError::Query(e) => e.kind(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_its_kind() {
        let cases = [
            (
                OrchestrationError::Forbidden { action: "x".into() },
                ErrorKind::PermissionDenied,
            ),
            (
                OrchestrationError::Invalid {
                    field: "max_jobs".into(),
                    reason: "0".into(),
                },
                ErrorKind::invalid("max_jobs"),
            ),
            (
                OrchestrationError::ServedInProcess {
                    service: "s".into(),
                },
                ErrorKind::invalid("service"),
            ),
            (
                OrchestrationError::UnknownJob { job: "j".into() },
                ErrorKind::NotFound,
            ),
            (
                OrchestrationError::LeaseLost { job: "j".into() },
                ErrorKind::Conflict {
                    actual_version: None,
                },
            ),
            (
                OrchestrationError::Engine(EngineError::ShutDown),
                ErrorKind::Unavailable,
            ),
        ];
        for (e, kind) in cases {
            assert_eq!(e.kind(), kind, "{e}");
        }
    }
}
