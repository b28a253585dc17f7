//! The one mapping from engine errors to gRPC statuses: every error's
//! [`ErrorKind`] decides the code, invalid arguments carry their offending
//! paths as `google.rpc.BadRequest` field violations, a wrong expected
//! version carries the actual version in `google.rpc.ErrorInfo`, and
//! internal failures are logged with a reference instead of being described
//! to the caller.

use std::collections::HashMap;
use std::fmt::Display;

use casebook_engine::ErrorKind;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `google.rpc.ErrorInfo` domain of Casebook's errors.
pub const DOMAIN: &str = "casebook.police.uk";

/// An error that knows what it means to a caller.
pub trait Kinded: Display {
    /// Its kind.
    fn kind(&self) -> ErrorKind;
}

macro_rules! kinded {
    ($($t:ty),* $(,)?) => {
        $(impl Kinded for $t {
            fn kind(&self) -> ErrorKind {
                <$t>::kind(self)
            }
        })*
    };
}

kinded!(
    casebook_engine::engine::EngineError,
    casebook_engine::projection::QueryError,
    casebook_engine::projection::ProjectionError,
    casebook_engine::log::LogError,
    casebook_engine::ids::IdError,
    casebook_engine::case::CaseError,
    casebook_engine::orchestration::OrchestrationError,
    casebook_engine::audit::AuditError,
    casebook_engine::security::AccessError,
    casebook_engine::records::RecordsError,
);

/// The status for an engine error.
pub fn status<E: Kinded + ?Sized>(error: &E) -> Status {
    from_kind(error.kind(), error.to_string())
}

/// The status for an error kind and its message.
pub fn from_kind(kind: ErrorKind, message: String) -> Status {
    match kind {
        ErrorKind::NotFound => Status::not_found(message),
        ErrorKind::AlreadyExists => Status::already_exists(message),
        ErrorKind::InvalidArgument { paths } => {
            let mut details = ErrorDetails::new();
            for path in &paths {
                details.add_bad_request_violation(path.clone(), message.clone());
            }
            Status::with_error_details(Code::InvalidArgument, message, details)
        }
        ErrorKind::Conflict { actual_version } => {
            let mut metadata = HashMap::new();
            if let Some(v) = actual_version {
                metadata.insert("actual_version".to_string(), v.to_string());
            }
            let details = ErrorDetails::with_error_info("CONFLICT", DOMAIN, metadata);
            Status::with_error_details(Code::Aborted, message, details)
        }
        ErrorKind::PermissionDenied => Status::permission_denied(message),
        ErrorKind::ResourceExhausted => Status::resource_exhausted(message),
        ErrorKind::Unavailable => Status::unavailable(message),
        _ => internal(message),
    }
}

/// An internal failure: logged in full with a reference, reported to the
/// caller by that reference only (no paths, no stored values).
pub fn internal(message: impl Display) -> Status {
    let reference = uuid::Uuid::new_v4();
    tracing::error!(%reference, error = %message, "internal error");
    Status::internal(format!(
        "internal error (reference {reference}); the operator can find it in the service log"
    ))
}

/// INVALID_ARGUMENT for one request field.
pub fn invalid(path: &str, message: impl Display) -> Status {
    from_kind(ErrorKind::invalid(path), format!("{path}: {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_code_and_details() {
        let s = from_kind(
            ErrorKind::InvalidArgument {
                paths: vec!["case_file.priority".into()],
            },
            "bad".into(),
        );
        assert_eq!(s.code(), Code::InvalidArgument);
        let violations = s
            .get_error_details()
            .bad_request()
            .unwrap()
            .field_violations
            .clone();
        assert_eq!(violations[0].field, "case_file.priority");
        let s = from_kind(
            ErrorKind::Conflict {
                actual_version: Some(7),
            },
            "wrong version".into(),
        );
        assert_eq!(s.code(), Code::Aborted);
        let info = s.get_error_details().error_info().unwrap().clone();
        assert_eq!(info.metadata["actual_version"], "7");
        assert_eq!(
            from_kind(ErrorKind::NotFound, "x".into()).code(),
            Code::NotFound
        );
        assert_eq!(
            from_kind(ErrorKind::PermissionDenied, "x".into()).code(),
            Code::PermissionDenied
        );
        assert_eq!(
            from_kind(ErrorKind::ResourceExhausted, "x".into()).code(),
            Code::ResourceExhausted
        );
        assert_eq!(
            from_kind(ErrorKind::Unavailable, "x".into()).code(),
            Code::Unavailable
        );
        let s = from_kind(ErrorKind::Internal, "/var/lib/casebook/log: EIO".into());
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("/var/lib"), "{}", s.message());
    }
}
