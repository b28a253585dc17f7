//! Idempotent commands: [`CommandId`], the event ids derived from it, and
//! finding what an earlier attempt of a command appended.
//!
//! A command that carries a command id appends events whose ids are
//! derived from (stream, command id, index). Before deciding, the engine
//! looks up the first of those ids: if it is stored, the command ran
//! already — perhaps its acknowledgement was lost, perhaps the engine was
//! restarted since — and the original outcome is read back from the log
//! instead of applying the command again. Two attempts racing each other
//! cannot both append: the loser's append fails on the stream version (or
//! on the event ids) and its next attempt finds the winner's events.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::log::{
    Direction, EventId, EventStore, IdError, LogError, RecordedEvent, StreamId, StreamVersion,
};

/// A client-chosen id naming one command (e.g. a UUID), so that retrying
/// the command — after a timeout, a lost reply, a restart — applies it once.
///
/// 1 to 128 bytes of ASCII letters, digits, `-`, `_`, `.`, `:` and `@`. A
/// command id is scoped to the stream the command writes (one case, or one
/// case type's deployments): reusing it for a different command there
/// returns the first command's outcome.
///
/// ```
/// use casebook::engine::CommandId;
/// let id: CommandId = "6f1c2a8e-03d4-4c1b-9f59-2d8c1f0b7a11".parse().unwrap();
/// assert_eq!(id.as_str(), "6f1c2a8e-03d4-4c1b-9f59-2d8c1f0b7a11");
/// assert!(CommandId::new("two words").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CommandId(Arc<str>);

impl CommandId {
    /// Validates and wraps a command id. Errors: [`IdError`] naming the problem.
    pub fn new(value: impl AsRef<str>) -> Result<Self, IdError> {
        let value = value.as_ref();
        crate::log::types::validate_part("command id", value, &[':', '@'])?;
        Ok(CommandId(Arc::from(value)))
    }

    /// A fresh random id (UUID v4), for callers that make one per request.
    pub fn random() -> Self {
        CommandId::from(uuid::Uuid::new_v4())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<uuid::Uuid> for CommandId {
    fn from(id: uuid::Uuid) -> Self {
        CommandId(Arc::from(id.hyphenated().to_string()))
    }
}

impl FromStr for CommandId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        CommandId::new(s)
    }
}

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CommandId({})", self.0)
    }
}

/// The id of the `index`th event a command appends to `stream`: the first
/// 16 bytes of SHA-256 over the three, as a version 8 (custom) UUID.
pub(crate) fn event_id(stream: &StreamId, command: &CommandId, index: usize) -> EventId {
    let mut hash = Sha256::new();
    hash.update(b"casebook.command-event.v1\0");
    hash.update(stream.to_string().as_bytes());
    hash.update([0]);
    hash.update(command.as_str().as_bytes());
    hash.update([0]);
    hash.update((index as u64).to_be_bytes());
    let digest = hash.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    EventId(uuid::Builder::from_custom_bytes(bytes).into_uuid())
}

/// A short deterministic suffix for the id of a case opened with a command
/// id and no case id, so that a retried open names the same case.
pub(crate) fn case_suffix(case_type: &str, command: &CommandId) -> String {
    let mut hash = Sha256::new();
    hash.update(b"casebook.command-case.v1\0");
    hash.update(case_type.as_bytes());
    hash.update([0]);
    hash.update(command.as_str().as_bytes());
    hash.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The events a command with id `command` appended to `stream`, in order,
/// if it ran; `None` if it has not.
///
/// Errors: those of reading the log.
pub(crate) async fn find(
    store: &dyn EventStore,
    stream: &StreamId,
    command: &CommandId,
) -> Result<Option<Vec<RecordedEvent>>, LogError> {
    let Some(first) = store.read_event(event_id(stream, command, 0)).await? else {
        return Ok(None);
    };
    if &first.stream != stream {
        // Not ours (a 128-bit collision): the append will report the id.
        return Ok(None);
    }
    let page = store.limits().max_read_limit.min(1024);
    let mut found = vec![first];
    loop {
        let from: StreamVersion = found[found.len() - 1].version.next();
        let events = store
            .read_stream(stream, Direction::Forward, from, page)
            .await?;
        let read = events.len();
        for event in events {
            if event.id != event_id(stream, command, found.len()) {
                return Ok(Some(found));
            }
            found.push(event);
        }
        if read < page {
            return Ok(Some(found));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_deterministic_and_distinct() {
        let a: StreamId = "kent/case/BUR-1".parse().unwrap();
        let b: StreamId = "essex/case/BUR-1".parse().unwrap();
        let c = CommandId::new("cmd-1").unwrap();
        let d = CommandId::new("cmd-2").unwrap();
        assert_eq!(event_id(&a, &c, 0), event_id(&a, &c, 0));
        assert_ne!(event_id(&a, &c, 0), event_id(&a, &c, 1));
        assert_ne!(event_id(&a, &c, 0), event_id(&b, &c, 0));
        assert_ne!(event_id(&a, &c, 0), event_id(&a, &d, 0));
        assert_eq!(event_id(&a, &c, 0).0.get_version_num(), 8);
        assert_eq!(case_suffix("burglary", &c).len(), 32);
        assert_ne!(case_suffix("burglary", &c), case_suffix("burglary", &d));
    }

    #[test]
    fn command_ids_are_validated() {
        assert!(CommandId::new("").is_err());
        assert!(CommandId::new("a/b").is_err());
        assert!(CommandId::new("x".repeat(128)).is_ok());
        assert!(CommandId::new("x".repeat(129)).is_err());
        assert_eq!(CommandId::random().as_str().len(), 36);
    }
}
