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
    /// Where the events of the records lie, in order (see [`Slot`]).
    slots: Vec<Slot>,
    len: usize,
}

/// Where one stored event lies in its record body, found (and checked) when
/// the record was read, so visiting it reads a dense array rather than
/// walking record bytes that have long left the cache.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot {
    pub id: [u8; 16],
    pub payload_at: u32,
    pub payload_len: u32,
    pub event_type: u32,
    pub metadata: u32,
}

/// Gathers the parts and slots of a batch as records are read.
#[derive(Debug, Default)]
pub(crate) struct BatchBuilder {
    pub parts: Vec<Part>,
    pub slots: Vec<Slot>,
}

impl BatchBuilder {
    pub fn with_capacity(events: usize, records: usize) -> Self {
        BatchBuilder {
            parts: Vec::with_capacity(records),
            slots: Vec::with_capacity(events),
        }
    }

    pub fn build(self) -> EventBatch {
        let len = self
            .parts
            .iter()
            .map(|p| match p {
                Part::Record(r) => r.slots.len(),
                Part::Events(e) => e.len(),
            })
            .sum();
        EventBatch {
            parts: self.parts,
            slots: self.slots,
            len,
        }
    }
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
    /// Index (within the record) of the first wanted event.
    pub skip: usize,
    /// The wanted events' slots in the batch.
    pub slots: std::ops::Range<usize>,
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
    /// A batch of events already decoded.
    pub fn from_events(events: Vec<RecordedEvent>) -> Self {
        BatchBuilder {
            parts: vec![Part::Events(events)],
            slots: Vec::new(),
        }
        .build()
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
            Part::Record(r) if !r.slots.is_empty() => Some(GlobalPosition(
                r.first_position.0 + (r.skip + r.slots.len() - 1) as u64,
            )),
            Part::Events(e) => e.last().map(|e| e.position),
            Part::Record(_) => None,
        })
    }

    /// The events, in log order, borrowing from the batch.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            parts: self.parts.iter(),
            slots: &self.slots,
            current: None,
        }
    }

    /// The events as owned [`RecordedEvent`]s.
    pub fn into_events(mut self) -> Vec<RecordedEvent> {
        if let [Part::Events(events)] = self.parts.as_mut_slice() {
            return std::mem::take(events);
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
    slots: &'a [Slot],
    current: Option<PartIter<'a>>,
}

#[derive(Debug)]
enum PartIter<'a> {
    Record {
        view: &'a RecordView,
        slots: std::slice::Iter<'a, Slot>,
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
            PartIter::Record { view, slots, index } => {
                let slot = slots.next()?;
                let start = slot.payload_at as usize;
                // Slots were checked against the record when it was read.
                let event = EventRef {
                    stream: &view.stream,
                    version: StreamVersion(view.first_version.0 + *index as u64),
                    position: GlobalPosition(view.first_position.0 + *index as u64),
                    recorded: view.recorded,
                    id: EventId(uuid::Uuid::from_bytes(slot.id)),
                    event_type: view.types.get(slot.event_type as usize)?,
                    source: &view.body,
                    payload: (start, start + slot.payload_len as usize),
                    metadata: view.metas.get(slot.metadata as usize)?,
                };
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
                    slots: self
                        .slots
                        .get(view.slots.clone())
                        .unwrap_or_default()
                        .iter(),
                    index: view.skip,
                },
                Part::Events(events) => PartIter::Events(events.iter()),
            });
        }
    }
}
