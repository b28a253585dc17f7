//! Sealing personal fields before they reach the log, and opening them on
//! read (issue 22 item 5, crypto-shredding).
//!
//! A case event's case-file values (`CaseOpened.case_file`,
//! `CaseFileUpdated.changes`, `PlanItemCompleted.outputs`) in a field that a
//! definition's `[[subjects]]` mark as a subject's (its reference, date of
//! birth or `fields`) are taken out of the event and stored beside it, each
//! sealed with XChaCha20-Poly1305 under the subject's data key, in the
//! payload envelope's [`SEALED_FORMAT`](crate::log::codec::SEALED_FORMAT)
//! `sealed` list: `{field, key, nonce, ct}`. The associated data binds
//! tenant, stream, event id, field and key id, so a sealed value moved to
//! another event, field, case, tenant or subject does not open. The key id
//! is the subject's id (a keyed hash of its reference, no personal data); a
//! field written while its subject's reference is unknown is sealed under
//! the case's own key (a subject id derived from the case id).
//!
//! Opening puts the values back; a value whose key was destroyed by an
//! erasure is left out and reported as [`ErasedField`] with the
//! certificate's reference. A key that is absent without a tombstone, a
//! value that does not open, a key store that fails: typed
//! [`SealError`]s, never a panic and never plaintext guessed.
//!
//! Ciphers are cached per key (`Sealer`), so a read or append costs one
//! map lookup and the AEAD itself; erasure evicts the key.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

use super::kms::{KeyLookup, Kms, KmsError};
use super::SubjectIds;
use crate::case::CaseEvent;
use crate::definition::{CaseDefinition, FieldKey};
use crate::error::ErrorKind;
use crate::log::codec::{self, CodecError, DomainEvent};
use crate::log::{EventData, EventId, Metadata, RecordedEvent, StreamId, TenantId};
use crate::security::PositionKey;

/// Ciphers kept in memory at most; past it the cache starts again.
const CACHED_KEYS: usize = 65_536;

/// One sealed value, as stored beside the event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SealedField {
    /// The case-file field (a definition's key: no personal data).
    field: String,
    /// The key id (a subject id).
    key: String,
    #[serde(with = "serde_bytes")]
    nonce: Vec<u8>,
    #[serde(with = "serde_bytes")]
    ct: Vec<u8>,
}

/// A field whose value was erased (its key destroyed).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ErasedField {
    /// The field.
    pub field: FieldKey,
    /// The subject (key id) it belonged to.
    pub subject: String,
    /// The erasure certificate's reference: the id of the `SubjectErased`
    /// event in the subject's governance stream.
    pub certificate: String,
}

/// A case event opened: its personal values back in place, but erased ones.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The event.
    pub event: CaseEvent,
    /// The fields whose values were erased.
    pub erased: Vec<ErasedField>,
}

/// Sealing or opening failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The key store failed.
    #[error(transparent)]
    Kms(#[from] KmsError),
    /// A value is sealed under a key the key store has no trace of (neither
    /// the key nor an erasure tombstone): the key file was lost or deleted.
    #[error("event {event} of {stream} holds field '{field}' sealed under key {key_id}, which the key store does not hold (and no erasure destroyed it); restore the key store from its backup")]
    KeyMissing {
        /// The stream.
        stream: String,
        /// The event.
        event: EventId,
        /// The field.
        field: String,
        /// The key.
        key_id: String,
    },
    /// A sealed value does not open: damaged, or moved from another event,
    /// field or key.
    #[error("field '{field}' of event {event} of {stream} does not open under key {key_id} (damaged or moved ciphertext)")]
    Damaged {
        /// The stream.
        stream: String,
        /// The event.
        event: EventId,
        /// The field.
        field: String,
        /// The key.
        key_id: String,
    },
    /// New personal data names a subject that was erased: its key is
    /// destroyed for good, so nothing more can be sealed under it.
    #[error("subject {subject} was erased (certificate {certificate}); new data about them cannot be recorded under the destroyed key")]
    SubjectErased {
        /// The subject id.
        subject: String,
        /// The erasure certificate.
        certificate: String,
    },
    /// The event or a value could not be encoded or decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

impl SealError {
    /// [`ErrorKind::Conflict`] for new data about an erased
    /// subject; the key store's kind for its errors; the rest
    /// [`ErrorKind::Internal`] (stored data or the key store is wrong).
    pub fn kind(&self) -> ErrorKind {
        match self {
            SealError::Kms(e) => e.kind(),
            SealError::SubjectErased { .. } => ErrorKind::Conflict {
                actual_version: None,
            },
            SealError::KeyMissing { .. } | SealError::Damaged { .. } | SealError::Codec(_) => {
                ErrorKind::Internal
            }
        }
    }
}

enum Cached {
    Live(XChaCha20Poly1305),
    Destroyed(String),
}

/// Seals and opens personal fields with the engine's key store; caches one
/// cipher per key.
pub struct Sealer {
    kms: Arc<dyn Kms>,
    secret: PositionKey,
    cache: Mutex<HashMap<(TenantId, String), Arc<Cached>>>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

fn aad(stream: &StreamId, event: EventId, field: &str, key_id: &str) -> Vec<u8> {
    let mut aad = b"casebook field v1\0".to_vec();
    for part in [stream.tenant().as_str(), &stream.to_string()] {
        aad.extend_from_slice(part.as_bytes());
        aad.push(0);
    }
    aad.extend_from_slice(event.0.as_bytes());
    aad.push(0);
    aad.extend_from_slice(field.as_bytes());
    aad.push(0);
    aad.extend_from_slice(key_id.as_bytes());
    aad
}

/// The event's case-file values, if it carries any.
fn values_mut(event: &mut CaseEvent) -> Option<&mut BTreeMap<FieldKey, serde_json::Value>> {
    match event {
        CaseEvent::CaseOpened { case_file, .. } => Some(case_file),
        CaseEvent::CaseFileUpdated { changes } => Some(changes),
        CaseEvent::PlanItemCompleted { outputs, .. } => Some(outputs),
        _ => None,
    }
}

fn reference(value: &serde_json::Value) -> Option<&str> {
    value.as_str().map(str::trim).filter(|s| !s.is_empty())
}

impl Sealer {
    /// A sealer over `kms`, deriving subject ids with the engine's secret.
    pub(crate) fn new(kms: Arc<dyn Kms>, secret: PositionKey) -> Self {
        Sealer {
            kms,
            secret,
            cache: Mutex::default(),
        }
    }

    /// The key store.
    pub(crate) fn kms(&self) -> &Arc<dyn Kms> {
        &self.kms
    }

    async fn key(
        &self,
        tenant: &TenantId,
        key_id: &str,
        create: bool,
    ) -> Result<Option<Arc<Cached>>, KmsError> {
        let at = (tenant.clone(), key_id.to_string());
        if let Some(c) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&at)
        {
            return Ok(Some(Arc::clone(c)));
        }
        let cached = match self.kms.data_key(tenant, key_id, create).await? {
            KeyLookup::Key(k) => Arc::new(Cached::Live(k.cipher())),
            KeyLookup::Destroyed { certificate } => Arc::new(Cached::Destroyed(certificate)),
            KeyLookup::Absent => return Ok(None),
        };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHED_KEYS {
            cache.clear();
        }
        cache.insert(at, Arc::clone(&cached));
        Ok(Some(cached))
    }

    /// Forgets the cached cipher of a key (after it was destroyed).
    pub(crate) fn forget(&self, tenant: &TenantId, key_id: &str) {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(tenant.clone(), key_id.to_string()));
    }

    /// The key id a subject field is sealed under: the subject's id from
    /// its reference in `values` or, failing that, in `case_file` (the
    /// case file after the command); else the case's own key.
    fn key_id_for(
        &self,
        ids: &SubjectIds,
        def: &CaseDefinition,
        field: &str,
        values: &BTreeMap<FieldKey, serde_json::Value>,
        case_file: &BTreeMap<FieldKey, serde_json::Value>,
        case_id: &str,
    ) -> Option<String> {
        let subject = def.subject_of(field)?;
        let found = values
            .get(&subject.id)
            .and_then(reference)
            .or_else(|| case_file.get(&subject.id).and_then(reference));
        Some(match found {
            Some(r) => ids.id(r).as_str().to_string(),
            None => ids
                .id(&format!("\u{0}case\u{0}{case_id}"))
                .as_str()
                .to_string(),
        })
    }

    /// Encodes a case event for `stream` with id `id`, its subject fields
    /// sealed (a plain payload when it has none). `case_file` is the case
    /// file after the command, where a subject's reference is looked up
    /// when the event itself does not hold it.
    ///
    /// Errors: [`SealError::SubjectErased`] for new data about an erased
    /// subject; [`SealError::Kms`]; [`SealError::Codec`].
    pub(crate) async fn encode(
        &self,
        def: &CaseDefinition,
        stream: &StreamId,
        case_file: &BTreeMap<FieldKey, serde_json::Value>,
        event: &CaseEvent,
        id: EventId,
        metadata: Metadata,
    ) -> Result<EventData, SealError> {
        let personal = match event {
            CaseEvent::CaseOpened { case_file: v, .. }
            | CaseEvent::CaseFileUpdated { changes: v }
            | CaseEvent::PlanItemCompleted { outputs: v, .. } => v
                .iter()
                .any(|(f, value)| !value.is_null() && def.subject_of(f.as_str()).is_some()),
            _ => false,
        };
        if def.subjects.is_empty() || !personal {
            return Ok(event.to_event_data_with_id(id, metadata)?);
        }
        let tenant = stream.tenant();
        let ids = SubjectIds::new(&self.secret, tenant);
        let mut stripped = event.clone();
        let values = values_mut(&mut stripped)
            .map(std::mem::take)
            .unwrap_or_default();
        let mut kept = BTreeMap::new();
        let mut sealed = Vec::new();
        for (field, value) in &values {
            let key_id = match value.is_null() {
                true => None,
                false => {
                    self.key_id_for(&ids, def, field.as_str(), &values, case_file, stream.id())
                }
            };
            let Some(key_id) = key_id else {
                kept.insert(field.clone(), value.clone());
                continue;
            };
            let cipher = match self.key(tenant, &key_id, true).await?.as_deref() {
                Some(Cached::Live(c)) => c.clone(),
                Some(Cached::Destroyed(certificate)) => {
                    return Err(SealError::SubjectErased {
                        subject: key_id,
                        certificate: certificate.clone(),
                    })
                }
                None => {
                    return Err(SealError::Kms(KmsError::Io {
                        path: key_id,
                        detail: "the key store made no key".into(),
                    }))
                }
            };
            let plain = zeroize::Zeroizing::new(serde_json::to_vec(value).map_err(|e| {
                CodecError::Encode {
                    event_type: event.event_type().to_string(),
                    reason: e.to_string(),
                }
            })?);
            let mut nonce = [0u8; 24];
            getrandom::fill(&mut nonce).map_err(|e| KmsError::Random(e.to_string()))?;
            let aad = aad(stream, id, field.as_str(), &key_id);
            let ct = cipher
                .encrypt(
                    &XNonce::from(nonce),
                    Payload {
                        msg: &plain,
                        aad: &aad,
                    },
                )
                .map_err(|_| CodecError::Encode {
                    event_type: event.event_type().to_string(),
                    reason: "sealing a field failed".into(),
                })?;
            sealed.push(SealedField {
                field: field.as_str().to_string(),
                key: key_id,
                nonce: nonce.to_vec(),
                ct,
            });
        }
        if let Some(v) = values_mut(&mut stripped) {
            *v = kept;
        }
        Ok(codec::to_event_data_sealed(
            &stripped, &sealed, id, metadata,
        )?)
    }

    /// Decodes a recorded case event and opens its sealed fields.
    ///
    /// Errors: [`SealError::Codec`] for a payload that does not decode;
    /// [`SealError::KeyMissing`]; [`SealError::Damaged`];
    /// [`SealError::Kms`].
    pub async fn open(&self, recorded: &RecordedEvent) -> Result<Opened, SealError> {
        let (mut event, sealed): (CaseEvent, Vec<SealedField>) =
            codec::decode_sealed(&recorded.event_type, &recorded.payload)?;
        let mut erased = Vec::new();
        if sealed.is_empty() {
            return Ok(Opened { event, erased });
        }
        let tenant = recorded.stream.tenant();
        let mut opened = BTreeMap::new();
        for s in sealed {
            let damaged = || SealError::Damaged {
                stream: recorded.stream.to_string(),
                event: recorded.id,
                field: s.field.clone(),
                key_id: s.key.clone(),
            };
            let key = self.key(tenant, &s.key, false).await?;
            let cipher = match key.as_deref() {
                Some(Cached::Live(c)) => c,
                Some(Cached::Destroyed(certificate)) => {
                    erased.push(ErasedField {
                        field: FieldKey::new(s.field.clone()),
                        subject: s.key.clone(),
                        certificate: certificate.clone(),
                    });
                    continue;
                }
                None => {
                    return Err(SealError::KeyMissing {
                        stream: recorded.stream.to_string(),
                        event: recorded.id,
                        field: s.field.clone(),
                        key_id: s.key.clone(),
                    })
                }
            };
            let nonce: [u8; 24] = s.nonce.as_slice().try_into().map_err(|_| damaged())?;
            let aad = aad(&recorded.stream, recorded.id, &s.field, &s.key);
            let plain = zeroize::Zeroizing::new(
                cipher
                    .decrypt(
                        &XNonce::from(nonce),
                        Payload {
                            msg: &s.ct,
                            aad: &aad,
                        },
                    )
                    .map_err(|_| damaged())?,
            );
            let value: serde_json::Value = serde_json::from_slice(&plain).map_err(|_| damaged())?;
            opened.insert(FieldKey::new(s.field.clone()), value);
        }
        if let Some(values) = values_mut(&mut event) {
            values.extend(opened);
        }
        Ok(Opened { event, erased })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{ActorId, GlobalPosition, Source, StreamVersion};
    use crate::records::kms::MemoryKms;

    const DEF: &str = r#"
key = "sealed"
name = "Sealed"
version = 1
roles = ["officer"]
retention = { group = "group3" }
permissions = { open = ["officer"], update_case_file = ["officer"] }
fields = [
  { key = "suspect", type = "person" },
  { key = "suspect_address", type = "text" },
  { key = "crime", type = "text" },
]
subjects = [{ key = "suspect", id = "suspect", fields = ["suspect_address"], contact = true }]
activities = [{ key = "t", name = "T", kind = "human_task", roles = ["officer"] }]
"#;

    fn sealer() -> Sealer {
        Sealer::new(
            Arc::new(MemoryKms::default()),
            PositionKey::random().unwrap(),
        )
    }

    fn stream(tenant: &str, case: &str) -> StreamId {
        StreamId::new(TenantId::new(tenant).unwrap(), "case", case).unwrap()
    }

    fn recorded(stream: &StreamId, data: EventData) -> RecordedEvent {
        RecordedEvent {
            stream: stream.clone(),
            version: StreamVersion(0),
            position: GlobalPosition(0),
            recorded: crate::time::Timestamp(0),
            id: data.id,
            event_type: Arc::from(data.event_type.as_str()),
            payload: data.payload.into(),
            metadata: Arc::new(data.metadata),
        }
    }

    fn update(pairs: &[(&str, &str)]) -> CaseEvent {
        CaseEvent::CaseFileUpdated {
            changes: pairs
                .iter()
                .map(|(k, v)| (FieldKey::new(*k), serde_json::json!(v)))
                .collect(),
        }
    }

    async fn sealed_update(s: &Sealer, st: &StreamId, id: EventId) -> EventData {
        let def = CaseDefinition::parse(DEF, crate::definition::Format::Toml).unwrap();
        let event = update(&[
            ("suspect", "CANARY-NAME"),
            ("suspect_address", "CANARY-ADDR"),
            ("crime", "burglary"),
        ]);
        let meta = Metadata::new(ActorId::new("pc"), Source::system("t"));
        s.encode(&def, st, &BTreeMap::new(), &event, id, meta)
            .await
            .unwrap()
    }

    fn contains(hay: &[u8], needle: &str) -> bool {
        hay.windows(needle.len()).any(|w| w == needle.as_bytes())
    }

    #[tokio::test]
    async fn personal_fields_are_sealed_and_open_again() {
        let s = sealer();
        let st = stream("t1", "c1");
        let data = sealed_update(&s, &st, EventId::new()).await;
        assert!(
            !contains(&data.payload, "CANARY"),
            "plaintext in the payload"
        );
        assert!(
            contains(&data.payload, "burglary"),
            "other fields stay plain"
        );
        let opened = s.open(&recorded(&st, data)).await.unwrap();
        assert_eq!(
            opened.event,
            update(&[
                ("suspect", "CANARY-NAME"),
                ("suspect_address", "CANARY-ADDR"),
                ("crime", "burglary"),
            ])
        );
        assert!(opened.erased.is_empty());
    }

    #[tokio::test]
    async fn a_destroyed_key_reads_as_erased_with_its_certificate() {
        let s = sealer();
        let st = stream("t1", "c1");
        let data = sealed_update(&s, &st, EventId::new()).await;
        let subject = SubjectIds::new(&s.secret, st.tenant()).id("CANARY-NAME");
        s.kms()
            .destroy(st.tenant(), subject.as_str(), "cert-9")
            .await
            .unwrap();
        s.forget(st.tenant(), subject.as_str());
        let opened = s.open(&recorded(&st, data)).await.unwrap();
        assert_eq!(opened.event, update(&[("crime", "burglary")]));
        let fields: Vec<_> = opened.erased.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["suspect", "suspect_address"]);
        assert!(opened.erased.iter().all(|e| e.certificate == "cert-9"));
    }

    #[tokio::test]
    async fn damaged_moved_or_keyless_ciphertext_is_a_typed_error() {
        let s = sealer();
        let st = stream("t1", "c1");
        let data = sealed_update(&s, &st, EventId::new()).await;
        // Flip a byte of the ciphertext (found as the sealed list's tail).
        let mut bad = data.clone();
        let at = bad.payload.len() - 3;
        bad.payload[at] ^= 1;
        assert!(matches!(
            s.open(&recorded(&st, bad)).await,
            Err(SealError::Damaged { .. })
        ));
        // The same bytes under another event id or stream do not open.
        let mut moved = data.clone();
        moved.id = EventId::new();
        assert!(matches!(
            s.open(&recorded(&st, moved)).await,
            Err(SealError::Damaged { .. })
        ));
        assert!(matches!(
            s.open(&recorded(&stream("t1", "c2"), data.clone())).await,
            Err(SealError::Damaged { .. })
        ));
        // A key store that lost the key: not erased, missing.
        let other = Sealer::new(Arc::new(MemoryKms::default()), s.secret.clone());
        assert!(matches!(
            other.open(&recorded(&st, data)).await,
            Err(SealError::KeyMissing { .. })
        ));
    }

    #[tokio::test]
    async fn new_data_about_an_erased_subject_is_refused() {
        let s = sealer();
        let st = stream("t1", "c1");
        let subject = SubjectIds::new(&s.secret, st.tenant()).id("CANARY-NAME");
        s.kms()
            .destroy(st.tenant(), subject.as_str(), "cert-1")
            .await
            .unwrap();
        let def = CaseDefinition::parse(DEF, crate::definition::Format::Toml).unwrap();
        let meta = Metadata::new(ActorId::new("pc"), Source::system("t"));
        let err = s
            .encode(
                &def,
                &st,
                &BTreeMap::new(),
                &update(&[("suspect", "CANARY-NAME")]),
                EventId::new(),
                meta,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, SealError::SubjectErased { .. }), "{err}");
    }

    #[test]
    fn plain_payloads_of_the_earlier_format_still_decode() {
        let meta = Metadata::new(ActorId::new("pc"), Source::system("t"));
        let data = update(&[("crime", "x")]).to_event_data(meta).unwrap();
        let (event, sealed): (CaseEvent, Vec<SealedField>) =
            codec::decode_sealed(&data.event_type, &data.payload).unwrap();
        assert!(sealed.is_empty());
        assert_eq!(event, update(&[("crime", "x")]));
        assert_eq!(
            CaseEvent::decode_payload(&data.event_type, &data.payload).unwrap(),
            update(&[("crime", "x")])
        );
    }
}
