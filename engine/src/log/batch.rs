//! [`EventBatch`]: a page of events read in bulk and decoded as it is visited.
//!
//! [`EventStore::read_all`](super::EventStore::read_all) hands back owned
//! [`RecordedEvent`]s; building each costs a few reference counts and a copy
//! of its fields. A replay that only looks at each event once — rebuilding a
//! read model, exporting, checksumming — can instead take a batch from
//! [`EventStore::read_all_batch`](super::EventStore::read_all_batch) and visit
//! [`EventRef`]s that borrow the bytes read from the log: nothing is built
//! per event until it asks ([`EventRef::to_recorded`]). The records' framing
//! and checksums are checked when the batch is read, before any event is
//! visited.

use std::sync::Arc;

use bytes::Bytes;

use super::types::{
    EventId, GlobalPosition, Metadata, RecordedEvent, StreamId, StreamVersion, Timestamp,
};

/// A page of one tenant's events, in log order. See the module docs.
#[derive(Debug, Default)]
pub struct EventBatch {
    parts: Vec<Part>,
    len: usize,
}

#[derive(Debug)]
pub(crate) enum Part {
    /// Events of one stored record, decoded as they are visited.
    Record(RecordView),
    /// Events already decoded (stores without a zero-copy path, old records).
    Events(Vec<RecordedEvent>),
}

/// The wanted events of one record, whose layout was checked when read.
#[derive(Debug)]
pub(crate) struct RecordView {
    pub stream: StreamId,
    pub first_version: StreamVersion,
    pub first_position: GlobalPosition,
    pub recorded: Timestamp,
    pub types: Vec<Arc<str>>,
    pub metas: Vec<Arc<Metadata>>,
    /// The record body.
    pub body: Bytes,
    /// Where the first wanted event starts in `body`.
    pub events_at: usize,
    /// Index (within the record) of the first wanted event.
    pub skip: usize,
    /// How many events are wanted.
    pub take: usize,
}

/// Bytes of a stored event before its payload: id, type, metadata, length.
pub(crate) const EVENT_HEAD_LEN: usize = 28;

/// The parts of a stored event header: id, type index, metadata index,
/// payload length. `None` if `bytes` is too short.
pub(crate) fn event_head(bytes: &[u8]) -> Option<([u8; 16], usize, usize, usize)> {
    let h = bytes.get(..EVENT_HEAD_LEN)?;
    let word = |at: usize| u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]) as usize;
    let mut id = [0u8; 16];
    id.copy_from_slice(&h[..16]);
    Some((id, word(16), word(20), word(24)))
}

impl EventBatch {
    pub(crate) fn from_parts(parts: Vec<Part>) -> Self {
        let len = parts
            .iter()
            .map(|p| match p {
                Part::Record(r) => r.take,
                Part::Events(e) => e.len(),
            })
            .sum();
        EventBatch { parts, len }
    }

    /// A batch of events already decoded.
    pub fn from_events(events: Vec<RecordedEvent>) -> Self {
        EventBatch::from_parts(vec![Part::Events(events)])
    }

    /// How many events the batch holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch holds no event (the end of the log was reached).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The position of the batch's last event: read on from the one after it.
    pub fn last_position(&self) -> Option<GlobalPosition> {
        self.parts.iter().rev().find_map(|p| match p {
            Part::Record(r) if r.take > 0 => Some(GlobalPosition(
                r.first_position.0 + (r.skip + r.take - 1) as u64,
            )),
            Part::Events(e) => e.last().map(|e| e.position),
            Part::Record(_) => None,
        })
    }

    /// The events, in log order, borrowing from the batch.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            parts: self.parts.iter(),
            current: None,
        }
    }

    /// The events as owned [`RecordedEvent`]s.
    pub fn into_events(self) -> Vec<RecordedEvent> {
        if let [Part::Events(_)] = self.parts.as_slice() {
            if let Some(Part::Events(events)) = self.parts.into_iter().next() {
                return events;
            }
            return Vec::new();
        }
        self.iter().map(|e| e.to_recorded()).collect()
    }
}

impl<'a> IntoIterator for &'a EventBatch {
    type Item = EventRef<'a>;
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// One event of a batch, borrowed from it.
#[derive(Debug, Clone, Copy)]
pub struct EventRef<'a> {
    stream: &'a StreamId,
    version: StreamVersion,
    position: GlobalPosition,
    recorded: Timestamp,
    id: EventId,
    event_type: &'a Arc<str>,
    /// The bytes the payload lies in, and where.
    source: &'a Bytes,
    payload: (usize, usize),
    metadata: &'a Arc<Metadata>,
}

impl<'a> EventRef<'a> {
    /// The stream the event belongs to (and so its tenant).
    pub fn stream(&self) -> &'a StreamId {
        self.stream
    }

    /// Its version within the stream.
    pub fn version(&self) -> StreamVersion {
        self.version
    }

    /// Its position in the whole log.
    pub fn position(&self) -> GlobalPosition {
        self.position
    }

    /// When the log recorded it.
    pub fn recorded(&self) -> Timestamp {
        self.recorded
    }

    /// Its unique id.
    pub fn id(&self) -> EventId {
        self.id
    }

    /// Its type name.
    pub fn event_type(&self) -> &'a str {
        self.event_type
    }

    /// Its encoded payload.
    pub fn payload(&self) -> &'a [u8] {
        &self.source[self.payload.0..self.payload.1]
    }

    /// Its provenance.
    pub fn metadata(&self) -> &'a Metadata {
        self.metadata
    }

    /// The event as an owned [`RecordedEvent`] (sharing the batch's bytes).
    pub fn to_recorded(&self) -> RecordedEvent {
        RecordedEvent {
            stream: self.stream.clone(),
            version: self.version,
            position: self.position,
            recorded: self.recorded,
            id: self.id,
            event_type: Arc::clone(self.event_type),
            payload: self.source.slice(self.payload.0..self.payload.1),
            metadata: Arc::clone(self.metadata),
        }
    }
}

/// Iterator over a batch's events. See [`EventBatch::iter`].
#[derive(Debug)]
pub struct Iter<'a> {
    parts: std::slice::Iter<'a, Part>,
    current: Option<PartIter<'a>>,
}

#[derive(Debug)]
enum PartIter<'a> {
    Record {
        view: &'a RecordView,
        at: usize,
        index: usize,
    },
    Events(std::slice::Iter<'a, RecordedEvent>),
}

impl<'a> PartIter<'a> {
    fn next(&mut self) -> Option<EventRef<'a>> {
        match self {
            PartIter::Events(events) => events.next().map(|e| EventRef {
                stream: &e.stream,
                version: e.version,
                position: e.position,
                recorded: e.recorded,
                id: e.id,
                event_type: &e.event_type,
                source: &e.payload,
                payload: (0, e.payload.len()),
                metadata: &e.metadata,
            }),
            PartIter::Record { view, at, index } => {
                if *index >= view.skip + view.take {
                    return None;
                }
                // The layout was checked when the batch was read; a record
                // that somehow disagrees ends its part rather than panicking.
                let (id, t, m, len) = event_head(view.body.get(*at..)?)?;
                let start = *at + EVENT_HEAD_LEN;
                let end = start.checked_add(len).filter(|&e| e <= view.body.len())?;
                let event = EventRef {
                    stream: &view.stream,
                    version: StreamVersion(view.first_version.0 + *index as u64),
                    position: GlobalPosition(view.first_position.0 + *index as u64),
                    recorded: view.recorded,
                    id: EventId(uuid::Uuid::from_bytes(id)),
                    event_type: view.types.get(t)?,
                    source: &view.body,
                    payload: (start, end),
                    metadata: view.metas.get(m)?,
                };
                *at = end;
                *index += 1;
                Some(event)
            }
        }
    }
}

impl<'a> Iterator for Iter<'a> {
    type Item = EventRef<'a>;

    fn next(&mut self) -> Option<EventRef<'a>> {
        loop {
            if let Some(event) = self.current.as_mut().and_then(PartIter::next) {
                return Some(event);
            }
            self.current = Some(match self.parts.next()? {
                Part::Record(view) => PartIter::Record {
                    view,
                    at: view.events_at,
                    index: view.skip,
                },
                Part::Events(events) => PartIter::Events(events.iter()),
            });
        }
    }
}
