//! The typed layer: domain events encode into [`EventData`] payloads and decode back.
//!
//! A payload is an rmp-serde map with named fields — so fields can be added
//! (with `#[serde(default)]`) without breaking old events — wrapped in a small
//! envelope carrying the envelope format and the event type's schema version.
//! Bytes that cannot be decoded, or that were written by a newer schema, give a
//! [`CodecError`]; decoding never panics.

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};

use super::types::{EventData, EventId, Metadata, RecordedEvent};
use crate::error::ErrorKind;

/// The envelope format of a payload without sealed fields: what
/// [`DomainEvent::to_event_data`] writes.
pub const PLAIN_FORMAT: u16 = 1;

/// The envelope format of a payload with sealed (encrypted) personal fields
/// (issue 22, crypto-shredding): format 1 plus a `sealed` list beside the
/// event, whose own maps then lack those fields (see
/// `crate::records::sealing`). A reader that does not unseal sees the event
/// without them.
pub const SEALED_FORMAT: u16 = 2;

/// The newest payload envelope format this build reads (it reads every
/// earlier one).
pub const PAYLOAD_FORMAT: u16 = SEALED_FORMAT;

/// A domain event that can be stored in the log.
///
/// ```
/// use casebook::log::{codec::DomainEvent, ActorId, Metadata, Source};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// struct CrimeRecorded { crime_number: String }
///
/// impl DomainEvent for CrimeRecorded {
///     const SCHEMA_VERSION: u16 = 1;
///     fn event_type(&self) -> &'static str { "CrimeRecorded" }
/// }
///
/// let meta = Metadata::new(ActorId::new("pc-1234"), Source::system("niche-rms"));
/// let event = CrimeRecorded { crime_number: "CR/12345/26".into() };
/// let data = event.to_event_data(meta).unwrap();
/// assert_eq!(data.event_type, "CrimeRecorded");
/// assert_eq!(CrimeRecorded::decode_payload(&data.event_type, &data.payload).unwrap(), event);
/// ```
pub trait DomainEvent: Serialize + DeserializeOwned {
    /// The schema version this type writes; it reads this version and older ones.
    const SCHEMA_VERSION: u16;

    /// The type name stored with the event.
    fn event_type(&self) -> &'static str;

    /// Encodes into an [`EventData`] with a fresh id.
    fn to_event_data(&self, metadata: Metadata) -> Result<EventData, CodecError> {
        self.to_event_data_with_id(EventId::new(), metadata)
    }

    /// Encodes into an [`EventData`] with the given id (for idempotent retries).
    fn to_event_data_with_id(
        &self,
        id: EventId,
        metadata: Metadata,
    ) -> Result<EventData, CodecError> {
        let envelope = Envelope {
            format: PLAIN_FORMAT,
            schema: Self::SCHEMA_VERSION,
            event: self,
        };
        let payload = rmp_serde::to_vec_named(&envelope).map_err(|e| CodecError::Encode {
            event_type: self.event_type().to_string(),
            reason: e.to_string(),
        })?;
        Ok(EventData {
            id,
            event_type: self.event_type().to_string(),
            payload,
            metadata,
        })
    }

    /// Decodes a payload written by [`DomainEvent::to_event_data`].
    ///
    /// Errors: [`CodecError::UnsupportedFormat`] for a newer envelope,
    /// [`CodecError::FutureSchema`] for a newer schema of this type,
    /// [`CodecError::Malformed`] for bytes that do not decode as this type.
    fn decode_payload(event_type: &str, payload: &[u8]) -> Result<Self, CodecError> {
        let malformed = |e: rmp_serde::decode::Error| CodecError::Malformed {
            event_type: event_type.to_string(),
            reason: e.to_string(),
        };
        let check = |format: u16, schema: u16| {
            if format > PAYLOAD_FORMAT {
                return Err(CodecError::UnsupportedFormat {
                    found: format,
                    supported: PAYLOAD_FORMAT,
                });
            }
            if schema > Self::SCHEMA_VERSION {
                return Err(CodecError::FutureSchema {
                    event_type: event_type.to_string(),
                    found: schema,
                    supported: Self::SCHEMA_VERSION,
                });
            }
            Ok(())
        };
        // One pass in the usual case; the header alone is read only to say
        // why a payload does not decode (a newer format or schema first).
        match from_slice_bounded::<Envelope<Self>>(payload) {
            Ok(envelope) => {
                check(envelope.format, envelope.schema)?;
                Ok(envelope.event)
            }
            Err(e) => {
                let header: Header = rmp_serde::from_slice(payload).map_err(malformed)?;
                check(header.format, header.schema)?;
                Err(malformed(e))
            }
        }
    }

    /// Decodes a recorded event's payload.
    fn from_recorded(event: &RecordedEvent) -> Result<Self, CodecError> {
        Self::decode_payload(&event.event_type, &event.payload)
    }
}

/// Deepest nesting of arrays and maps the decoder follows in a payload
/// (rmp-serde's own default, 1024, lets a hostile payload recurse deep
/// enough to overflow a runtime worker's stack). An event's structure takes
/// a few levels; the case-file values inside it at most
/// [`MAX_VALUE_DEPTH`](crate::case::MAX_VALUE_DEPTH).
pub const MAX_DECODE_DEPTH: usize = 96;

/// `rmp_serde::from_slice` with the nesting bounded by [`MAX_DECODE_DEPTH`]:
/// a deeper input is a decode error, not a deep recursion.
pub(crate) fn from_slice_bounded<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
) -> Result<T, rmp_serde::decode::Error> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(MAX_DECODE_DEPTH);
    T::deserialize(&mut de)
}

/// Encodes `event` in the [`SEALED_FORMAT`] envelope with `sealed` beside it.
pub(crate) fn to_event_data_sealed<E: DomainEvent, S: Serialize>(
    event: &E,
    sealed: &S,
    id: EventId,
    metadata: Metadata,
) -> Result<EventData, CodecError> {
    #[derive(Serialize)]
    struct SealedEnvelope<'a, E, S> {
        format: u16,
        schema: u16,
        event: &'a E,
        sealed: &'a S,
    }
    let envelope = SealedEnvelope {
        format: SEALED_FORMAT,
        schema: E::SCHEMA_VERSION,
        event,
        sealed,
    };
    let payload = rmp_serde::to_vec_named(&envelope).map_err(|e| CodecError::Encode {
        event_type: event.event_type().to_string(),
        reason: e.to_string(),
    })?;
    Ok(EventData {
        id,
        event_type: event.event_type().to_string(),
        payload,
        metadata,
    })
}

/// Decodes a payload and its `sealed` list (`S::default()` for a
/// [`PLAIN_FORMAT`] one) in one pass.
///
/// Errors: those of [`DomainEvent::decode_payload`];
/// [`CodecError::Malformed`] for a sealed list that does not decode.
pub(crate) fn decode_sealed<E: DomainEvent, S: DeserializeOwned + Default>(
    event_type: &str,
    payload: &[u8],
) -> Result<(E, S), CodecError> {
    // A plain envelope is a map of 3 entries (fixmap 0x83), a sealed one
    // of 4.
    if payload.first() != Some(&0x84) {
        return Ok((E::decode_payload(event_type, payload)?, S::default()));
    }
    #[derive(Deserialize)]
    struct Full<E, S> {
        format: u16,
        schema: u16,
        event: E,
        sealed: S,
    }
    match from_slice_bounded::<Full<E, S>>(payload) {
        Ok(f) if f.format <= PAYLOAD_FORMAT && f.schema <= E::SCHEMA_VERSION => {
            Ok((f.event, f.sealed))
        }
        // The ordinary decoder says why (a newer format or schema, garbage),
        // or else it is the sealed list that does not decode.
        _ => {
            E::decode_payload(event_type, payload)?;
            Err(CodecError::Malformed {
                event_type: event_type.to_string(),
                reason: "its sealed fields do not decode".into(),
            })
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Envelope<E> {
    format: u16,
    schema: u16,
    event: E,
}

#[derive(Deserialize)]
struct Header {
    format: u16,
    schema: u16,
    #[allow(dead_code)]
    event: IgnoredAny,
}

/// A payload that could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The event could not be serialized.
    #[error("cannot encode {event_type}: {reason}")]
    Encode {
        /// The event type.
        event_type: String,
        /// Serializer message.
        reason: String,
    },
    /// The bytes are not a valid payload of this type.
    #[error("cannot decode {event_type} payload: {reason}")]
    Malformed {
        /// The stored event type.
        event_type: String,
        /// Deserializer message.
        reason: String,
    },
    /// The envelope was written by a newer Casebook.
    #[error("payload envelope format {found} is newer than this build reads ({supported}); upgrade Casebook")]
    UnsupportedFormat {
        /// Found format.
        found: u16,
        /// Highest supported.
        supported: u16,
    },
    /// The event was written with a newer schema of its type.
    #[error("{event_type} has schema version {found}; this build reads up to {supported}; upgrade Casebook")]
    FutureSchema {
        /// The event type.
        event_type: String,
        /// Found schema version.
        found: u16,
        /// Highest supported.
        supported: u16,
    },
}

impl CodecError {
    /// What the error means to a caller: always [`ErrorKind::Internal`].
    /// Events are encoded from the engine's own types and decoded from the
    /// log, so a failure is a defect or stored data this build cannot read
    /// (written by a newer Casebook, or damaged), not something a request
    /// can fix.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CodecError::Encode { .. }
            | CodecError::Malformed { .. }
            | CodecError::UnsupportedFormat { .. }
            | CodecError::FutureSchema { .. } => ErrorKind::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::types::{ActorId, Source};

    #[test]
    fn codec_errors_are_internal() {
        let cases = [
            CodecError::Encode {
                event_type: "Thing".into(),
                reason: "x".into(),
            },
            CodecError::Malformed {
                event_type: "Thing".into(),
                reason: "x".into(),
            },
            CodecError::UnsupportedFormat {
                found: 9,
                supported: 1,
            },
            CodecError::FutureSchema {
                event_type: "Thing".into(),
                found: 2,
                supported: 1,
            },
        ];
        for err in cases {
            assert_eq!(err.kind(), ErrorKind::Internal, "{err}");
        }
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct V1 {
        name: String,
    }
    impl DomainEvent for V1 {
        const SCHEMA_VERSION: u16 = 1;
        fn event_type(&self) -> &'static str {
            "Thing"
        }
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct V2 {
        name: String,
        #[serde(default)]
        grade: Option<u8>,
    }
    impl DomainEvent for V2 {
        const SCHEMA_VERSION: u16 = 2;
        fn event_type(&self) -> &'static str {
            "Thing"
        }
    }

    fn meta() -> Metadata {
        Metadata::new(ActorId::new("tester"), Source::system("unit"))
    }

    #[test]
    fn old_events_decode_with_a_newer_schema() {
        let data = V1 { name: "a".into() }.to_event_data(meta()).unwrap();
        let v2 = V2::decode_payload(&data.event_type, &data.payload).unwrap();
        assert_eq!(
            v2,
            V2 {
                name: "a".into(),
                grade: None
            }
        );
    }

    #[test]
    fn newer_schema_is_a_typed_error() {
        let data = V2 {
            name: "a".into(),
            grade: Some(1),
        }
        .to_event_data(meta())
        .unwrap();
        let err = V1::decode_payload(&data.event_type, &data.payload).unwrap_err();
        assert_eq!(
            err,
            CodecError::FutureSchema {
                event_type: "Thing".into(),
                found: 2,
                supported: 1
            }
        );
    }

    #[test]
    fn newer_envelope_and_garbage_are_typed_errors() {
        let bytes = rmp_serde::to_vec_named(&Envelope {
            format: 9,
            schema: 1,
            event: V1 { name: "a".into() },
        })
        .unwrap();
        assert!(matches!(
            V1::decode_payload("Thing", &bytes),
            Err(CodecError::UnsupportedFormat { found: 9, .. })
        ));
        for garbage in [&b""[..], &b"\xff\x00\x13"[..], &b"\x81\xa6format"[..]] {
            assert!(matches!(
                V1::decode_payload("Thing", garbage),
                Err(CodecError::Malformed { .. })
            ));
        }
        let wrong_shape = rmp_serde::to_vec_named(&Envelope {
            format: 1,
            schema: 1,
            event: 42u32,
        })
        .unwrap();
        assert!(matches!(
            V1::decode_payload("Thing", &wrong_shape),
            Err(CodecError::Malformed { .. })
        ));
    }
}
