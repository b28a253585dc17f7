//! Typed errors of the log layer: what went wrong and what to fix.

use std::path::PathBuf;

use super::types::{EventId, ExpectedVersion, StreamId, StreamVersion};

/// An identifier that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The part was empty.
    #[error("{kind} must not be empty")]
    Empty {
        /// Which identifier.
        kind: &'static str,
    },
    /// The part was too long.
    #[error("{kind} is {len} bytes long; the maximum is {max}")]
    TooLong {
        /// Which identifier.
        kind: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The part held a character that is not allowed.
    #[error("{kind} '{value}' contains '{character}'; allowed are {allowed}")]
    BadCharacter {
        /// Which identifier.
        kind: &'static str,
        /// The rejected value.
        value: String,
        /// The first bad character.
        character: char,
        /// What is allowed.
        allowed: &'static str,
    },
    /// A composite id did not have the expected shape.
    #[error("'{value}' is not of the form {expected}")]
    Malformed {
        /// The rejected value.
        value: String,
        /// The expected shape.
        expected: &'static str,
    },
}

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
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// A write failed earlier; the store must be reopened to recover.
    #[error(
        "the store stopped accepting appends after a failed write ({reason}); reopen it to recover"
    )]
    Failed {
        /// The original failure.
        reason: String,
    },
    /// The store was closed.
    #[error("the store is closed")]
    Closed,
}

impl LogError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        LogError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn index(context: impl Into<String>, source: sled::Error) -> Self {
        LogError::Index {
            context: context.into(),
            source,
        }
    }
}
