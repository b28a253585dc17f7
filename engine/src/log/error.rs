//! Typed errors of the log layer: what went wrong and what to fix.

use std::path::PathBuf;

use super::types::{EventId, ExpectedVersion, StreamId, StreamVersion};
use crate::error::{io_kind, sled_kind, ErrorKind};

pub use crate::ids::IdError;

/// Everything an [`super::EventStore`] can report.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Optimistic concurrency check failed: nothing was appended.
    #[error("wrong expected version for stream {stream}: expected {expected}, but the stream is at {}", .actual.map_or("no stream".to_string(), |v| format!("version {v}")))]
    WrongExpectedVersion {
        /// The stream appended to.
        stream: StreamId,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// The stream's actual last version (None: the stream does not exist).
        actual: Option<StreamVersion>,
    },
    /// An append with no events.
    #[error("append to {stream} holds no events; send at least one")]
    EmptyAppend {
        /// The stream appended to.
        stream: StreamId,
    },
    /// An append with more events than allowed.
    #[error("append holds {count} events; the maximum per append is {max} (split it into several appends)")]
    TooManyEvents {
        /// Events in the append.
        count: usize,
        /// The configured maximum.
        max: usize,
    },
    /// An append whose events together are larger than allowed.
    #[error("append holds {size} bytes of events; the maximum per append is {max} (split it into several appends)")]
    AppendTooLarge {
        /// The events' sizes summed.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// An event larger than allowed.
    #[error("event {event_id} is {size} bytes; the maximum event size is {max} (store large content elsewhere and reference it)")]
    EventTooLarge {
        /// The event at fault.
        event_id: EventId,
        /// Its size.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// An event type name that is empty or too long.
    #[error("event {event_id} has an invalid type name: {reason}")]
    InvalidEventType {
        /// The event at fault.
        event_id: EventId,
        /// What is wrong.
        reason: String,
    },
    /// The same event id twice in one append.
    #[error("event id {event_id} appears more than once in the same append")]
    DuplicateEventId {
        /// The repeated id.
        event_id: EventId,
    },
    /// An event id that is already stored with other content or elsewhere.
    #[error("event id {event_id} is already used: {reason}; give new events new ids, and retry an append only with exactly the same events")]
    EventIdConflict {
        /// The reused id.
        event_id: EventId,
        /// How it differs.
        reason: String,
    },
    /// A page size of zero or above the maximum.
    #[error("read limit {limit} is invalid: use 1 to {max}")]
    InvalidLimit {
        /// The requested limit.
        limit: usize,
        /// The maximum.
        max: usize,
    },
    /// Stored bytes that fail their checksum or cannot be decoded.
    #[error("log corrupted in segment {} at offset {offset}: {reason}", .segment.display())]
    Corrupted {
        /// The segment file.
        segment: PathBuf,
        /// Byte offset of the damaged record.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// Stored data written by a newer Casebook.
    #[error(
        "{what} has format version {found}; this build reads up to {supported} (upgrade Casebook)"
    )]
    UnsupportedFormat {
        /// What carries the version.
        what: String,
        /// The version found.
        found: u32,
        /// The highest this build reads.
        supported: u32,
    },
    /// Another process (or store in this process) holds the data directory.
    #[error("data directory {} is in use by another Casebook store", .path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// An operating-system I/O failure.
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What the store was doing.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The embedded index store failed.
    #[error("index store error while {context}: {source}")]
    Index {
        /// What the store was doing.
        context: String,
        /// The index store's error (opaque: the storage engine is an
        /// implementation detail).
        #[source]
        source: IndexStoreError,
    },
    /// A write failed earlier: appends are refused until the store has
    /// repaired its tail. The writer retries by itself (at most every
    /// half second, on the next append) and [`crate::log::LogStore::recover`]
    /// retries at once; only a failed index write needs a reopen.
    #[error("the store refuses appends after a failed write ({reason})")]
    Failed {
        /// The original failure.
        reason: String,
    },
    /// The file system holding the log has less free space than the store
    /// keeps in reserve (`LogStoreConfig::min_free_bytes`), so the append was
    /// refused before anything was written; the indexes and views keep the
    /// reserve to finish their own writes. Appends are accepted again as soon
    /// as space is freed.
    #[error(
        "the disk holding {path} is full: {available} bytes free, {reserve} kept in reserve; \
         free space (or add disk) and retry"
    )]
    StorageFull {
        /// The log's directory.
        path: PathBuf,
        /// Free bytes when the append was refused.
        available: u64,
        /// The reserve the store keeps.
        reserve: u64,
    },
    /// The store was closed.
    #[error("the store is closed")]
    Closed,
    /// The shared database (the PostgreSQL store) failed, refused or could
    /// not be reached. `retryable` failures (a lost connection, a timeout,
    /// a server restarting) may succeed unchanged later; an append that
    /// failed so may or may not have committed, and retrying it with the
    /// same events is safe (their ids make a repeat return the original
    /// result).
    #[error("database error while {context}: {reason}")]
    Database {
        /// What the store was doing.
        context: String,
        /// What the database (or the connection) reported.
        reason: String,
        /// Whether retrying later may succeed.
        retryable: bool,
    },
    /// The log disagrees with its own signed checkpoints (or they with their
    /// key): events were altered, removed or inserted after they were
    /// signed, or the log was cut back. Run `casebook verify` to locate it.
    #[error(
        "the log fails its integrity check: {reason} (run `casebook verify` to locate the damage)"
    )]
    Integrity { reason: String },
    /// A proof was asked for that the tree cannot give (a size beyond it, a
    /// position outside the size).
    #[error("{0}")]
    Proof(#[from] crate::log::merkle::ProofError),
    /// A checkpoint or key given to the log is malformed or does not verify.
    #[error("{0}")]
    Checkpoint(#[from] crate::log::checkpoint::CheckpointError),
}

impl LogError {
    /// What the error means to a caller.
    ///
    /// A wrong expected version is a [`ErrorKind::Conflict`] carrying the
    /// stream's actual version; appends over the size limits are
    /// [`ErrorKind::ResourceExhausted`]; malformed requests (no events, a bad
    /// type name, an id twice in one append, a bad page size) are
    /// [`ErrorKind::InvalidArgument`]; an event id already stored with other
    /// content is [`ErrorKind::AlreadyExists`]; a closed or locked store is
    /// [`ErrorKind::Unavailable`]; damaged or unreadable storage is
    /// [`ErrorKind::Internal`], except a full disk, which is
    /// [`ErrorKind::ResourceExhausted`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            LogError::WrongExpectedVersion { actual, .. } => ErrorKind::Conflict {
                actual_version: actual.map(|v| v.0),
            },
            LogError::EmptyAppend { .. } | LogError::DuplicateEventId { .. } => {
                ErrorKind::invalid("events")
            }
            LogError::InvalidEventType { .. } => ErrorKind::invalid("event_type"),
            LogError::InvalidLimit { .. } => ErrorKind::invalid("limit"),
            LogError::TooManyEvents { .. }
            | LogError::EventTooLarge { .. }
            | LogError::AppendTooLarge { .. }
            | LogError::StorageFull { .. } => ErrorKind::ResourceExhausted,
            LogError::EventIdConflict { .. } => ErrorKind::AlreadyExists,
            // A failed store repairs itself: retrying later is the answer.
            LogError::Locked { .. } | LogError::Closed | LogError::Failed { .. } => {
                ErrorKind::Unavailable
            }
            LogError::Database { retryable, .. } => {
                if *retryable {
                    ErrorKind::Unavailable
                } else {
                    ErrorKind::Internal
                }
            }
            LogError::Io { source, .. } => io_kind(source),
            LogError::Index { source, .. } => sled_kind(&source.0),
            LogError::Proof(_) => ErrorKind::invalid("size"),
            LogError::Checkpoint(e) => e.kind(),
            LogError::Corrupted { .. }
            | LogError::UnsupportedFormat { .. }
            | LogError::Integrity { .. } => ErrorKind::Internal,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        LogError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn index(context: impl Into<String>, source: sled::Error) -> Self {
        LogError::Index {
            context: context.into(),
            source: IndexStoreError(source),
        }
    }
}

/// The embedded index store failed: what [`LogError::Index`] carries. Its
/// message and source say what the storage engine reported.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct IndexStoreError(sled::Error);

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> StreamId {
        "kent/case/BUR-1".parse().unwrap()
    }

    #[test]
    fn id_errors_are_invalid_arguments_naming_the_identifier() {
        let cases = [
            (IdError::Empty { kind: "tenant id" }, "tenant_id"),
            (
                IdError::TooLong {
                    kind: "stream id",
                    len: 300,
                    max: 128,
                },
                "stream_id",
            ),
            (
                IdError::BadCharacter {
                    kind: "stream category",
                    value: "a/b".into(),
                    character: '/',
                    allowed: "letters",
                },
                "stream_category",
            ),
            (
                IdError::Malformed {
                    value: "x".into(),
                    expected: "tenant/category/id",
                },
                "stream",
            ),
        ];
        for (err, path) in cases {
            assert_eq!(err.kind(), ErrorKind::invalid(path), "{err}");
        }
    }

    #[test]
    fn log_errors_map_to_their_kinds() {
        let id = EventId::new();
        let io = |k| std::io::Error::from(k);
        let cases = [
            (
                LogError::WrongExpectedVersion {
                    stream: stream(),
                    expected: ExpectedVersion::NoStream,
                    actual: Some(StreamVersion(4)),
                },
                ErrorKind::Conflict {
                    actual_version: Some(4),
                },
            ),
            (
                LogError::WrongExpectedVersion {
                    stream: stream(),
                    expected: ExpectedVersion::Exact(StreamVersion(2)),
                    actual: None,
                },
                ErrorKind::Conflict {
                    actual_version: None,
                },
            ),
            (
                LogError::EmptyAppend { stream: stream() },
                ErrorKind::invalid("events"),
            ),
            (
                LogError::DuplicateEventId { event_id: id },
                ErrorKind::invalid("events"),
            ),
            (
                LogError::InvalidEventType {
                    event_id: id,
                    reason: "empty".into(),
                },
                ErrorKind::invalid("event_type"),
            ),
            (
                LogError::InvalidLimit { limit: 0, max: 10 },
                ErrorKind::invalid("limit"),
            ),
            (
                LogError::TooManyEvents { count: 9, max: 8 },
                ErrorKind::ResourceExhausted,
            ),
            (
                LogError::EventTooLarge {
                    event_id: id,
                    size: 9,
                    max: 8,
                },
                ErrorKind::ResourceExhausted,
            ),
            (
                LogError::EventIdConflict {
                    event_id: id,
                    reason: "other content".into(),
                },
                ErrorKind::AlreadyExists,
            ),
            (LogError::Closed, ErrorKind::Unavailable),
            (
                LogError::Locked {
                    path: PathBuf::from("LOCK"),
                },
                ErrorKind::Unavailable,
            ),
            (
                LogError::io("appending", io(std::io::ErrorKind::StorageFull)),
                ErrorKind::ResourceExhausted,
            ),
            (
                LogError::io("reading", io(std::io::ErrorKind::UnexpectedEof)),
                ErrorKind::Internal,
            ),
            (
                LogError::index(
                    "indexing",
                    sled::Error::Io(io(std::io::ErrorKind::StorageFull)),
                ),
                ErrorKind::ResourceExhausted,
            ),
            (
                LogError::index("indexing", sled::Error::Unsupported("x".into())),
                ErrorKind::Internal,
            ),
            (
                LogError::Corrupted {
                    segment: PathBuf::from("00000001.seg"),
                    offset: 8,
                    reason: "bad checksum".into(),
                },
                ErrorKind::Internal,
            ),
            (
                LogError::UnsupportedFormat {
                    what: "segment".into(),
                    found: 9,
                    supported: 2,
                },
                ErrorKind::Internal,
            ),
            (
                LogError::Failed {
                    reason: "disk full".into(),
                },
                ErrorKind::Unavailable,
            ),
            (
                LogError::StorageFull {
                    path: "/var/lib/casebook/log".into(),
                    available: 10,
                    reserve: 64 << 20,
                },
                ErrorKind::ResourceExhausted,
            ),
        ];
        for (err, kind) in cases {
            assert_eq!(err.kind(), kind, "{err}");
        }
    }
}
