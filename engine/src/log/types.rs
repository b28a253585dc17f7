//! Identifiers, positions and event shapes of the log, as validated newtypes.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::security::Classification;

use super::error::IdError;
pub(crate) use crate::ids::validate_part;
pub use crate::ids::{ActorId, TenantId, MAX_ID_PART_LEN};
pub use crate::time::Timestamp;

/// Longest event type name, in bytes.
pub const MAX_EVENT_TYPE_LEN: usize = 256;

/// A stream: one tenant's sequence of events about one thing, e.g. one case.
///
/// Made of tenant, category (`case`, `definition`...) and id; written
/// `tenant/category/id`. Category allows ASCII letters, digits, `-`, `_`, `.`;
/// the id also allows `:` and `@`. No part may be empty or longer than 128 bytes.
///
/// ```
/// use casebook::log::{StreamId, TenantId};
/// let tenant = TenantId::new("west-mids").unwrap();
/// let stream = StreamId::new(tenant, "case", "BUR-2026-000123").unwrap();
/// assert_eq!(stream.to_string(), "west-mids/case/BUR-2026-000123");
/// assert_eq!(stream.to_string().parse::<StreamId>().unwrap(), stream);
/// ```
///
/// Cloning is one reference-count increment: a stream id is shared by every
/// event read from that stream.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "StreamIdParts", into = "StreamIdParts")]
pub struct StreamId(Arc<StreamIdInner>);

/// The parts of a [`StreamId`]; compared and ordered tenant, category, id.
#[derive(PartialEq, Eq, PartialOrd, Ord, Hash)]
struct StreamIdInner {
    tenant: TenantId,
    category: Box<str>,
    id: Box<str>,
}

#[derive(Serialize, Deserialize)]
struct StreamIdParts {
    tenant: TenantId,
    category: String,
    id: String,
}

impl TryFrom<StreamIdParts> for StreamId {
    type Error = IdError;
    fn try_from(p: StreamIdParts) -> Result<Self, IdError> {
        StreamId::new(p.tenant, &p.category, &p.id)
    }
}

impl From<StreamId> for StreamIdParts {
    fn from(s: StreamId) -> Self {
        StreamIdParts {
            tenant: s.0.tenant.clone(),
            category: s.0.category.to_string(),
            id: s.0.id.to_string(),
        }
    }
}

impl StreamId {
    /// Validates and builds a stream id. Errors: [`IdError`] naming the part at fault.
    pub fn new(tenant: TenantId, category: &str, id: &str) -> Result<Self, IdError> {
        validate_part("stream category", category, &[])?;
        validate_part("stream id", id, &[':', '@'])?;
        Ok(StreamId(Arc::new(StreamIdInner {
            tenant,
            category: Box::from(category),
            id: Box::from(id),
        })))
    }

    /// The tenant that owns the stream.
    pub fn tenant(&self) -> &TenantId {
        &self.0.tenant
    }

    /// The stream's category, e.g. `case`.
    pub fn category(&self) -> &str {
        &self.0.category
    }

    /// The stream's id within tenant and category.
    pub fn id(&self) -> &str {
        &self.0.id
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.0.tenant, self.0.category, self.0.id)
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamId({self})")
    }
}

impl std::str::FromStr for StreamId {
    type Err = IdError;
    /// Parses `tenant/category/id`.
    fn from_str(s: &str) -> Result<Self, IdError> {
        let mut parts = s.splitn(3, '/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(t), Some(c), Some(i)) => StreamId::new(TenantId::new(t)?, c, i),
            _ => Err(IdError::Malformed {
                value: s.to_string(),
                expected: "tenant/category/id",
            }),
        }
    }
}

/// The version of an event within its stream: 0 for the first event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StreamVersion(pub u64);

impl StreamVersion {
    /// The first event of every stream.
    pub const START: StreamVersion = StreamVersion(0);
    /// Reading backwards from `END` starts at the stream's last event.
    pub const END: StreamVersion = StreamVersion(u64::MAX);

    /// The version after this one. Saturates at `u64::MAX`, a version no
    /// stream reaches, so that reading or subscribing after it finds nothing
    /// (instead of wrapping around to the first event).
    pub fn next(self) -> StreamVersion {
        StreamVersion(self.0.saturating_add(1))
    }
}

impl fmt::Display for StreamVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The position of an event in the whole log: gap-free and strictly increasing
/// across all tenants, 0 for the first event ever appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GlobalPosition(pub u64);

impl GlobalPosition {
    /// The first position of the log.
    pub const START: GlobalPosition = GlobalPosition(0);

    /// The position after this one. Saturates at `u64::MAX`, a position no
    /// log reaches, so that reading or subscribing after it finds nothing
    /// (instead of wrapping around to the first event).
    pub fn next(self) -> GlobalPosition {
        GlobalPosition(self.0.saturating_add(1))
    }
}

impl fmt::Display for GlobalPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The unique id of an event, chosen by the writer so that retries are idempotent.
///
/// [`EventId::new`] makes time-ordered (UUID v7) ids: they sort by creation
/// time, and consecutive ids land next to each other in the event-id index,
/// which makes indexing them cheaper than random ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(pub Uuid);

impl EventId {
    /// A fresh time-ordered (v7) id.
    pub fn new() -> Self {
        EventId(Uuid::now_v7())
    }
}

impl Default for EventId {
    fn default() -> Self {
        EventId::new()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Ties together every event caused by one user request or process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CorrelationId(pub Uuid);

impl CorrelationId {
    /// A fresh random correlation id.
    pub fn new() -> Self {
        CorrelationId(Uuid::new_v4())
    }
}

impl Default for CorrelationId {
    fn default() -> Self {
        CorrelationId::new()
    }
}

/// The id of the command or event that directly caused an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CausationId(pub Uuid);

/// Where an event's information came from: the system, and its own reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Source {
    /// The originating system, e.g. `casebook`, `command-and-control`, `niche-rms`.
    pub system: String,
    /// The originating system's own reference, e.g. a CAD incident number.
    pub reference: Option<String>,
}

impl Source {
    /// A source without a reference.
    pub fn system(system: impl Into<String>) -> Self {
        Source {
            system: system.into(),
            reference: None,
        }
    }

    /// A source with the originating system's reference.
    pub fn with_reference(system: impl Into<String>, reference: impl Into<String>) -> Self {
        Source {
            system: system.into(),
            reference: Some(reference.into()),
        }
    }
}

/// Provenance carried by every event: who, why, from where, under which marking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// The principal that caused the event.
    pub actor: ActorId,
    /// Ties the event to the request or process it belongs to.
    pub correlation_id: CorrelationId,
    /// The command or event that directly caused this one, where known.
    pub causation_id: Option<CausationId>,
    /// The system (and its reference) the information came from.
    pub source: Source,
    /// Why the actor did it, where given (e.g. a disclosure justification).
    pub reason: Option<String>,
    /// The security classification of the event's content.
    pub classification: Classification,
}

impl Metadata {
    /// Metadata with a fresh correlation id, no causation, no reason, OFFICIAL.
    pub fn new(actor: ActorId, source: Source) -> Self {
        Metadata {
            actor,
            correlation_id: CorrelationId::new(),
            causation_id: None,
            source,
            reason: None,
            classification: Classification::Official,
        }
    }

    /// Sets the reason.
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Sets the classification.
    pub fn with_classification(mut self, classification: Classification) -> Self {
        self.classification = classification;
        self
    }

    /// Sets the correlation id.
    pub fn with_correlation(mut self, correlation_id: CorrelationId) -> Self {
        self.correlation_id = correlation_id;
        self
    }

    /// Sets the causation id.
    pub fn with_causation(mut self, causation_id: CausationId) -> Self {
        self.causation_id = Some(causation_id);
        self
    }

    /// Bytes this metadata takes towards the event size limit (an upper estimate).
    pub(crate) fn approximate_size(&self) -> usize {
        64 + self.actor.0.len()
            + self.source.system.len()
            + self.source.reference.as_ref().map_or(0, String::len)
            + self.reason.as_ref().map_or(0, String::len)
    }
}

/// An event to append: id, type name, opaque payload bytes and provenance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventData {
    /// Unique id; appending the same ids again is idempotent.
    pub id: EventId,
    /// The event's type name, e.g. `CaseOpened` (1 to 256 bytes).
    pub event_type: String,
    /// The encoded payload (see [`super::codec`] for the typed layer).
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// Who, why, from where, under which classification.
    pub metadata: Metadata,
}

impl EventData {
    /// An event with a fresh id.
    pub fn new(event_type: impl Into<String>, payload: Vec<u8>, metadata: Metadata) -> Self {
        EventData {
            id: EventId::new(),
            event_type: event_type.into(),
            payload,
            metadata,
        }
    }

    /// Bytes this event counts for against [`super::Limits::max_event_size`].
    pub fn size(&self) -> usize {
        self.payload.len() + self.event_type.len() + self.metadata.approximate_size()
    }
}

/// An event as stored: the appended data plus where and when it was recorded.
///
/// Reading is cheap because the parts events have in common are shared, not
/// copied: the stream id, type name and metadata are reference-counted (the
/// events of one append usually share all three), and the payload is a view
/// of the bytes read from the log. A payload read in bulk ([`super::EventStore::read_all`])
/// keeps the read buffer it lies in alive until it is dropped; call
/// [`RecordedEvent::detach`] before keeping a few events for long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// The stream the event belongs to (and so its tenant).
    pub stream: StreamId,
    /// Its version within the stream.
    pub version: StreamVersion,
    /// Its position in the whole log.
    pub position: GlobalPosition,
    /// When the log recorded it.
    pub recorded: Timestamp,
    /// Unique id.
    pub id: EventId,
    /// Type name.
    pub event_type: Arc<str>,
    /// Encoded payload.
    pub payload: Bytes,
    /// Provenance.
    pub metadata: Arc<Metadata>,
}

impl RecordedEvent {
    /// The tenant that owns the event.
    pub fn tenant(&self) -> &TenantId {
        self.stream.tenant()
    }

    /// Names the event by its stream and version (`kent/case/BUR-1
    /// version 3`) — for messages a tenant may read, which must not carry
    /// the global position (it counts other tenants' events).
    pub fn locator(&self) -> String {
        format!("{} version {}", self.stream, self.version.0)
    }

    /// Whether this recorded event holds exactly this appended data.
    pub fn same_data(&self, data: &EventData) -> bool {
        self.id == data.id
            && *self.event_type == *data.event_type
            && self.payload == data.payload
            && *self.metadata == data.metadata
    }

    /// The event with its payload copied out of the buffer it was read
    /// into, so keeping it does not keep that whole buffer alive.
    pub fn detach(mut self) -> Self {
        self.payload = Bytes::copy_from_slice(&self.payload);
        self
    }

    /// Builds the recorded form of appended data (stores use this).
    pub(crate) fn from_data(
        stream: StreamId,
        version: StreamVersion,
        position: GlobalPosition,
        recorded: Timestamp,
        data: EventData,
    ) -> Self {
        RecordedEvent {
            stream,
            version,
            position,
            recorded,
            id: data.id,
            event_type: Arc::from(data.event_type),
            payload: Bytes::from(data.payload),
            metadata: Arc::new(data.metadata),
        }
    }
}

/// What the writer believes the stream's version to be; checked atomically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must have at least one event.
    StreamExists,
    /// The stream's last event must have exactly this version.
    Exact(StreamVersion),
}

impl ExpectedVersion {
    /// Whether a stream currently at `actual` (None: no stream) satisfies this.
    pub fn matches(self, actual: Option<StreamVersion>) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual.is_none(),
            ExpectedVersion::StreamExists => actual.is_some(),
            ExpectedVersion::Exact(v) => actual == Some(v),
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::StreamExists => f.write_str("stream exists"),
            ExpectedVersion::Exact(v) => write!(f, "version {v}"),
        }
    }
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// Global position of the first event appended.
    pub first_position: GlobalPosition,
    /// Global position of the last event appended.
    pub last_position: GlobalPosition,
    /// The stream's version after the append (the last event's version).
    pub version: StreamVersion,
}

/// Direction of a stream read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Oldest first, from the given version upwards.
    Forward,
    /// Newest first, from the given version downwards.
    Backward,
}

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionStart<P> {
    /// From the very first event.
    Beginning,
    /// With the first event after this position or version.
    After(P),
    /// With the first event appended after the subscription was made.
    End,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locator_names_stream_and_version_not_the_global_position() {
        let stream = StreamId::new(TenantId::new("kent").unwrap(), "case", "BUR-1").unwrap();
        let data = EventData::new(
            "Opened",
            b"x".to_vec(),
            Metadata::new(ActorId::new("pc-1"), Source::system("test")),
        );
        let event = RecordedEvent::from_data(
            stream,
            StreamVersion(3),
            GlobalPosition(987_654),
            Timestamp(0),
            data,
        );
        assert_eq!(event.locator(), "kent/case/BUR-1 version 3");
    }

    #[test]
    fn ids_are_validated_with_clear_errors() {
        assert!(matches!(
            TenantId::new(""),
            Err(IdError::Empty { kind: "tenant id" })
        ));
        let long = "x".repeat(MAX_ID_PART_LEN + 1);
        assert!(matches!(TenantId::new(&long), Err(IdError::TooLong { .. })));
        let err = TenantId::new("a b").unwrap_err();
        assert!(err.to_string().contains("' '"), "{err}");
        let t = TenantId::new("kent").unwrap();
        assert!(StreamId::new(t.clone(), "case", "x/y").is_err());
        assert!(StreamId::new(t.clone(), "ca:se", "x").is_err());
        assert!(StreamId::new(t.clone(), "case", "officer@kent:1").is_ok());
        assert!("kent/case".parse::<StreamId>().is_err());
        assert!("kent/case/a/b".parse::<StreamId>().is_err());
    }

    #[test]
    fn ids_round_trip_through_rmp_and_reject_bad_bytes() {
        let s = StreamId::new(TenantId::new("kent").unwrap(), "case", "C-1").unwrap();
        let bytes = rmp_serde::to_vec_named(&s).unwrap();
        assert_eq!(rmp_serde::from_slice::<StreamId>(&bytes).unwrap(), s);
        let bad = rmp_serde::to_vec_named(&StreamIdParts {
            tenant: TenantId::new("kent").unwrap(),
            category: "".into(),
            id: "x".into(),
        })
        .unwrap();
        assert!(rmp_serde::from_slice::<StreamId>(&bad).is_err());
    }

    #[test]
    fn expected_version_matches() {
        let v = Some(StreamVersion(3));
        assert!(ExpectedVersion::Any.matches(None));
        assert!(ExpectedVersion::NoStream.matches(None));
        assert!(!ExpectedVersion::NoStream.matches(v));
        assert!(ExpectedVersion::StreamExists.matches(v));
        assert!(!ExpectedVersion::StreamExists.matches(None));
        assert!(ExpectedVersion::Exact(StreamVersion(3)).matches(v));
        assert!(!ExpectedVersion::Exact(StreamVersion(2)).matches(v));
    }
}
