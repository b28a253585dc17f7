//! Rules every store applies to an append: limits, idempotency and the version check.
//!
//! Stores differ in how they look up stream heads and event ids; the decisions
//! are made here, once, so that every store behaves the same.

use std::collections::HashSet;

use super::error::LogError;
use super::types::{
    AppendResult, EventData, EventId, ExpectedVersion, RecordedEvent, StreamId, StreamVersion,
    MAX_EVENT_TYPE_LEN,
};

/// Size and count limits a store enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest event (payload + type + metadata), in bytes. Default 1 MiB.
    pub max_event_size: usize,
    /// Most events in one append. Default 10,000: as many as one command
    /// of the case runtime may cause ([`crate::case::CASCADE_LIMIT`]), so
    /// that, for example, opening a case of a large plan is one append.
    pub max_events_per_append: usize,
    /// Most bytes (events' sizes summed) in one append. Default 64 MiB.
    pub max_append_size: usize,
    /// Most events one read may ask for. Default 10,000.
    pub max_read_limit: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_event_size: 1024 * 1024,
            max_events_per_append: 10_000,
            max_append_size: 64 * 1024 * 1024,
            max_read_limit: 10_000,
        }
    }
}

impl Limits {
    /// Checks a read's limit. Errors: [`LogError::InvalidLimit`].
    pub(crate) fn check_read(&self, limit: usize) -> Result<(), LogError> {
        if limit == 0 || limit > self.max_read_limit {
            return Err(LogError::InvalidLimit {
                limit,
                max: self.max_read_limit,
            });
        }
        Ok(())
    }

    /// Checks an append's shape before any store state is consulted.
    ///
    /// Errors: [`LogError::EmptyAppend`], [`LogError::TooManyEvents`],
    /// [`LogError::InvalidEventType`], [`LogError::EventTooLarge`],
    /// [`LogError::DuplicateEventId`], [`LogError::AppendTooLarge`].
    pub(crate) fn check_append(
        &self,
        stream: &StreamId,
        events: &[EventData],
    ) -> Result<(), LogError> {
        if events.is_empty() {
            return Err(LogError::EmptyAppend {
                stream: stream.clone(),
            });
        }
        if events.len() > self.max_events_per_append {
            return Err(LogError::TooManyEvents {
                count: events.len(),
                max: self.max_events_per_append,
            });
        }
        let mut seen = HashSet::with_capacity(events.len());
        let mut total = 0usize;
        for event in events {
            if event.event_type.is_empty() || event.event_type.len() > MAX_EVENT_TYPE_LEN {
                return Err(LogError::InvalidEventType {
                    event_id: event.id,
                    reason: format!(
                        "type name is {} bytes; use 1 to {MAX_EVENT_TYPE_LEN}",
                        event.event_type.len()
                    ),
                });
            }
            let size = event.size();
            if size > self.max_event_size {
                return Err(LogError::EventTooLarge {
                    event_id: event.id,
                    size,
                    max: self.max_event_size,
                });
            }
            if !seen.insert(event.id) {
                return Err(LogError::DuplicateEventId { event_id: event.id });
            }
            total = total.saturating_add(size);
        }
        if total > self.max_append_size {
            return Err(LogError::AppendTooLarge {
                size: total,
                max: self.max_append_size,
            });
        }
        Ok(())
    }
}

/// Decides whether an append repeats one already stored.
///
/// `lookup` returns the stored event with a given id, if any. Returns the
/// original result when every event is already stored, identically and in
/// order, in this stream; `None` when none is stored.
///
/// Errors: [`LogError::EventIdConflict`] when only some ids are stored, or an
/// id is stored in another stream, with other content or out of order.
pub(crate) fn find_duplicate(
    stream: &StreamId,
    events: &[EventData],
    mut lookup: impl FnMut(EventId) -> Result<Option<RecordedEvent>, LogError>,
) -> Result<Option<AppendResult>, LogError> {
    let mut found = Vec::new();
    let mut missing = None;
    for event in events {
        match lookup(event.id)? {
            Some(stored) => found.push(stored),
            None => missing = missing.or(Some(event.id)),
        }
    }
    if found.is_empty() {
        return Ok(None);
    }
    if missing.is_some() {
        return Err(LogError::EventIdConflict {
            event_id: found[0].id,
            reason: "some events of this append are already stored and others are not".into(),
        });
    }
    for (i, (stored, data)) in found.iter().zip(events).enumerate() {
        let conflict = |reason: String| LogError::EventIdConflict {
            event_id: data.id,
            reason,
        };
        if &stored.stream != stream {
            return Err(conflict(format!(
                "it is stored in stream {}",
                stored.stream
            )));
        }
        if !stored.same_data(data) {
            return Err(conflict("it is stored with different content".into()));
        }
        if i > 0 && stored.version != found[i - 1].version.next() {
            return Err(conflict(
                "the stored events are in a different order".into(),
            ));
        }
    }
    let (first, last) = (&found[0], &found[found.len() - 1]);
    Ok(Some(AppendResult {
        first_position: first.position,
        last_position: last.position,
        version: last.version,
    }))
}

/// Checks the optimistic-concurrency expectation against the stream's head.
///
/// Errors: [`LogError::WrongExpectedVersion`] carrying the actual version.
pub(crate) fn check_expected(
    stream: &StreamId,
    expected: ExpectedVersion,
    actual: Option<StreamVersion>,
) -> Result<(), LogError> {
    if expected.matches(actual) {
        Ok(())
    } else {
        Err(LogError::WrongExpectedVersion {
            stream: stream.clone(),
            expected,
            actual,
        })
    }
}
