//! [`ErrorKind`]: what an error means to a caller, whichever layer raised it.
//!
//! Every public error type of the engine has `fn kind(&self) -> ErrorKind`,
//! so a server (the gRPC service maps kinds to statuses in one function), a
//! dispatcher deciding whether to retry, or an embedding application can act
//! on an error without matching every variant of every layer. The engine
//! itself knows no gRPC: kinds are plain data.

/// The class of an error, with the data a caller needs to act on it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The thing asked for does not exist — or the caller may not know that
    /// it exists (another tenant's case, a case above their clearance): the
    /// two are deliberately indistinguishable.
    NotFound,
    /// What the caller tried to create exists already.
    AlreadyExists,
    /// The request itself is wrong; `paths` name the offending parts (a
    /// definition's `stages[0].items[2].entry`, a query's field, a command's
    /// output key). Retrying the same request fails the same way.
    InvalidArgument {
        /// Where the problems are (may be empty when the whole input is bad).
        paths: Vec<String>,
    },
    /// The request is valid but the state it acts on does not allow it now:
    /// a wrong expected version (with the actual one, when known), a task in
    /// the wrong state, a closed case. Re-read, then decide again.
    Conflict {
        /// The stream's actual version, when the conflict is about versions.
        actual_version: Option<u64>,
    },
    /// The caller is known but lacks the role or clearance for this.
    PermissionDenied,
    /// A limit was exceeded (sizes, counts, budgets, disk space).
    ResourceExhausted,
    /// Temporarily unable (shutting down, contended, rebuilding, lagging):
    /// the same request may succeed later.
    Unavailable,
    /// Something the caller cannot fix: damaged storage, an engine defect.
    Internal,
}

impl ErrorKind {
    /// An invalid-argument kind naming one path.
    pub fn invalid(path: impl Into<String>) -> Self {
        ErrorKind::InvalidArgument {
            paths: vec![path.into()],
        }
    }

    /// Whether the same request may succeed if retried later unchanged.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ErrorKind::Unavailable)
    }

    /// Whether this means "not found" (including "not visible to you").
    pub fn is_not_found(&self) -> bool {
        matches!(self, ErrorKind::NotFound)
    }
}

/// The kind of an operating-system I/O failure: a full disk or an exceeded
/// quota is [`ErrorKind::ResourceExhausted`], anything else
/// [`ErrorKind::Internal`].
pub(crate) fn io_kind(e: &std::io::Error) -> ErrorKind {
    match e.kind() {
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
            ErrorKind::ResourceExhausted
        }
        _ => ErrorKind::Internal,
    }
}

/// The kind of an embedded index store (sled) failure: its I/O errors as
/// [`io_kind`], anything else [`ErrorKind::Internal`].
pub(crate) fn sled_kind(e: &sled::Error) -> ErrorKind {
    match e {
        sled::Error::Io(io) => io_kind(io),
        _ => ErrorKind::Internal,
    }
}

/// The kind of a storage failure given as any error: the first I/O or sled
/// error in its source chain decides (see [`io_kind`]); anything else is
/// [`ErrorKind::Internal`].
pub(crate) fn storage_kind(e: &(dyn std::error::Error + 'static)) -> ErrorKind {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io_kind(io);
        }
        if let Some(sled) = e.downcast_ref::<sled::Error>() {
            return sled_kind(sled);
        }
        next = e.source();
    }
    ErrorKind::Internal
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ErrorKind::NotFound => f.write_str("not found"),
            ErrorKind::AlreadyExists => f.write_str("already exists"),
            ErrorKind::InvalidArgument { paths } if paths.is_empty() => {
                f.write_str("invalid argument")
            }
            ErrorKind::InvalidArgument { paths } => {
                write!(f, "invalid argument at {}", paths.join(", "))
            }
            ErrorKind::Conflict {
                actual_version: Some(v),
            } => write!(f, "conflict (actual version {v})"),
            ErrorKind::Conflict { .. } => f.write_str("conflict"),
            ErrorKind::PermissionDenied => f.write_str("permission denied"),
            ErrorKind::ResourceExhausted => f.write_str("resource exhausted"),
            ErrorKind::Unavailable => f.write_str("unavailable"),
            ErrorKind::Internal => f.write_str("internal"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unavailable_is_retryable() {
        assert!(ErrorKind::Unavailable.is_retryable());
        assert!(!ErrorKind::Internal.is_retryable());
        assert!(!ErrorKind::invalid("x").is_retryable());
        assert_eq!(
            ErrorKind::invalid("stages[0]").to_string(),
            "invalid argument at stages[0]"
        );
    }

    #[test]
    fn a_full_disk_is_resource_exhausted_other_io_is_internal() {
        use std::io::{Error, ErrorKind as Io};
        assert_eq!(
            io_kind(&Error::from(Io::StorageFull)),
            ErrorKind::ResourceExhausted
        );
        assert_eq!(
            io_kind(&Error::from(Io::QuotaExceeded)),
            ErrorKind::ResourceExhausted
        );
        assert_eq!(
            io_kind(&Error::from(Io::PermissionDenied)),
            ErrorKind::Internal
        );
        assert_eq!(
            sled_kind(&sled::Error::Io(Error::from(Io::StorageFull))),
            ErrorKind::ResourceExhausted
        );
        assert_eq!(
            sled_kind(&sled::Error::ReportableBug("x".into())),
            ErrorKind::Internal
        );
    }
}
