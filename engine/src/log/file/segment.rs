//! On-disk layout of segment files: header, framed records, and reading them back.
//!
//! A segment starts with a 32-byte header (magic, format, segment number,
//! CRC32C). Then come records, one per append, each framed as
//! `[length: u32 LE][crc32c(length ++ body): u32 LE][body]`. One record per
//! append makes every append all-or-nothing on disk: a torn record fails its
//! checksum and is cut away whole.
//!
//! The body is a format byte and the append. Format 2 (written by this build)
//! is a compact little-endian layout that reads without copying or per-event
//! allocation:
//!
//! ```text
//! stream        tenant, category, id: each u8 length + UTF-8
//! first_version u64   first_position u64   recorded i64   group_start u64
//! types         u32 count, each u16 length + UTF-8      (distinct type names)
//! metadata      u32 count, each u32 length + rmp-serde  (distinct metadata,
//!                                                         named fields)
//! events        u32 count, each: id [16], type index u32, metadata index u32,
//!               payload u32 length + bytes
//! ```
//!
//! The events of one append usually share their type and metadata, so each
//! is stored and decoded once per record and shared by reference. Metadata
//! stays a named-field rmp map so it can gain fields. Format 1 (an rmp-serde
//! map of the whole append, written by earlier builds) is still read.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

use bytes::{Bytes, BytesMut};
use serde::Deserialize;

use super::fs::{LogFs, SegmentFile};
use crate::log::batch::{event_head, BatchBuilder, Part, RecordView, Slot, EVENT_HEAD_LEN};
use crate::log::error::LogError;
use crate::log::merkle;
use crate::log::types::{
    EventData, EventId, GlobalPosition, Metadata, RecordedEvent, StreamId, StreamVersion, TenantId,
    Timestamp,
};

/// Bytes before the first record of a segment.
pub(crate) const HEADER_LEN: u64 = 32;
const MAGIC: &[u8; 8] = b"CBOOKSEG";
/// Segment header format this build writes and reads.
pub(crate) const SEGMENT_FORMAT: u32 = 1;
/// Record body format this build writes.
pub(crate) const RECORD_FORMAT: u8 = 2;
/// The first record body format (rmp-serde, named fields): still read.
const RECORD_FORMAT_V1: u8 = 1;
/// Bytes of a record frame before the body.
pub(crate) const FRAME_LEN: usize = 8;
/// No record body is larger than this (a sanity bound for damaged lengths).
pub(crate) const MAX_RECORD_LEN: u32 = 1 << 30;
/// Bytes read at a time by [`RecordReader`].
const WINDOW: usize = 256 * 1024;

/// The segment header bytes for segment `number`.
pub(crate) fn header(number: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&SEGMENT_FORMAT.to_le_bytes());
    h[12..20].copy_from_slice(&number.to_le_bytes());
    let crc = crc32c::crc32c(&h[..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a segment header; `Err` holds what is wrong with it.
pub(crate) fn check_header(bytes: &[u8], number: u64) -> Result<(), String> {
    if bytes.len() < HEADER_LEN as usize {
        return Err(format!(
            "header is {} bytes, expected {HEADER_LEN}",
            bytes.len()
        ));
    }
    if &bytes[..8] != MAGIC {
        return Err("not a Casebook segment (bad magic)".into());
    }
    let crc = u32::from_le_bytes(bytes[28..32].try_into().unwrap_or_default());
    if crc != crc32c::crc32c(&bytes[..28]) {
        return Err("header checksum mismatch".into());
    }
    let format = u32::from_le_bytes(bytes[8..12].try_into().unwrap_or_default());
    if format > SEGMENT_FORMAT {
        return Err(format!(
            "segment format {format} is newer than this build reads ({SEGMENT_FORMAT}); upgrade Casebook"
        ));
    }
    let found = u64::from_le_bytes(bytes[12..20].try_into().unwrap_or_default());
    if found != number {
        return Err(format!("header says segment {found}"));
    }
    Ok(())
}

/// The body of a record as written (borrows the events).
pub(crate) struct RecordBodyRef<'a> {
    pub stream: &'a StreamId,
    pub first_version: StreamVersion,
    pub first_position: GlobalPosition,
    pub recorded: Timestamp,
    /// Offset in the segment where this record's group commit began: lets
    /// recovery tell a torn last group from damage in an earlier, synced one.
    pub group_start: u64,
    pub events: &'a [EventData],
}

/// One event of a record as read back; its type, metadata and payload are
/// shared with the record's other events and the read buffer.
#[derive(Debug, Clone)]
pub(crate) struct StoredEvent {
    pub id: EventId,
    pub event_type: Arc<str>,
    pub payload: Bytes,
    pub metadata: Arc<Metadata>,
}

/// The body of a record as read back.
#[derive(Debug)]
pub(crate) struct RecordBody {
    pub stream: StreamId,
    pub first_version: StreamVersion,
    pub first_position: GlobalPosition,
    pub recorded: Timestamp,
    pub group_start: u64,
    pub events: Vec<StoredEvent>,
}

impl RecordBody {
    /// The record's events as recorded events.
    pub fn into_events(self) -> impl Iterator<Item = RecordedEvent> {
        let RecordBody {
            stream,
            first_version,
            first_position,
            recorded,
            events,
            ..
        } = self;
        events
            .into_iter()
            .enumerate()
            .map(move |(i, e)| e.into_recorded(&stream, first_version, first_position, recorded, i))
    }

    /// The event at `index` as a recorded event.
    pub fn event(&self, index: usize) -> Option<RecordedEvent> {
        let e = self.events.get(index)?.clone();
        Some(e.into_recorded(
            &self.stream,
            self.first_version,
            self.first_position,
            self.recorded,
            index,
        ))
    }
}

impl StoredEvent {
    /// The event as event `index` of a record that starts at these.
    fn into_recorded(
        self,
        stream: &StreamId,
        first_version: StreamVersion,
        first_position: GlobalPosition,
        recorded: Timestamp,
        index: usize,
    ) -> RecordedEvent {
        RecordedEvent {
            stream: stream.clone(),
            version: StreamVersion(first_version.0 + index as u64),
            position: GlobalPosition(first_position.0 + index as u64),
            recorded,
            id: self.id,
            event_type: self.event_type,
            payload: self.payload,
            metadata: self.metadata,
        }
    }
}

/// Index of `item` in `seen`, adding it if new. Appends rarely hold more
/// than a few distinct values, and consecutive events usually repeat the
/// last one, so a scan beats hashing here.
fn intern<'a, T: PartialEq + ?Sized>(seen: &mut Vec<&'a T>, item: &'a T) -> u32 {
    if let Some(last) = seen.last() {
        if *last == item {
            return (seen.len() - 1) as u32;
        }
    }
    match seen.iter().position(|s| *s == item) {
        Some(i) => i as u32,
        None => {
            seen.push(item);
            (seen.len() - 1) as u32
        }
    }
}

fn put_short(out: &mut Vec<u8>, s: &str) {
    // Id parts are at most MAX_ID_PART_LEN (128) bytes.
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

fn encode_error(what: &str, e: impl std::fmt::Display) -> LogError {
    LogError::Io {
        context: format!("encoding a record: {what}"),
        source: std::io::Error::other(e.to_string()),
    }
}

/// Appends the framed record for `body` to `out`.
pub(crate) fn encode_record(body: &RecordBodyRef<'_>, out: &mut Vec<u8>) -> Result<(), LogError> {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_LEN]);
    out.push(RECORD_FORMAT);
    let stream = body.stream;
    put_short(out, stream.tenant().as_str());
    put_short(out, stream.category());
    put_short(out, stream.id());
    out.extend_from_slice(&body.first_version.0.to_le_bytes());
    out.extend_from_slice(&body.first_position.0.to_le_bytes());
    out.extend_from_slice(&body.recorded.0.to_le_bytes());
    out.extend_from_slice(&body.group_start.to_le_bytes());

    let mut types: Vec<&str> = Vec::new();
    let mut metas: Vec<&Metadata> = Vec::new();
    let refs: Vec<(u32, u32)> = body
        .events
        .iter()
        .map(|e| {
            (
                intern(&mut types, e.event_type.as_str()),
                intern(&mut metas, &e.metadata),
            )
        })
        .collect();
    out.extend_from_slice(&(types.len() as u32).to_le_bytes());
    for t in &types {
        // Type names are at most MAX_EVENT_TYPE_LEN (256) bytes.
        out.extend_from_slice(&(t.len() as u16).to_le_bytes());
        out.extend_from_slice(t.as_bytes());
    }
    out.extend_from_slice(&(metas.len() as u32).to_le_bytes());
    for m in &metas {
        let at = out.len();
        out.extend_from_slice(&[0u8; 4]);
        rmp_serde::encode::write_named(out, m).map_err(|e| encode_error("metadata", e))?;
        let len = (out.len() - at - 4) as u32;
        out[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }
    out.extend_from_slice(&(body.events.len() as u32).to_le_bytes());
    for (e, (t, m)) in body.events.iter().zip(refs) {
        out.extend_from_slice(e.id.0.as_bytes());
        out.extend_from_slice(&t.to_le_bytes());
        out.extend_from_slice(&m.to_le_bytes());
        out.extend_from_slice(&(e.payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&e.payload);
    }

    let len = out.len() - start - FRAME_LEN;
    if len > MAX_RECORD_LEN as usize {
        return Err(encode_error(
            "size",
            format!("the append takes {len} bytes; a record holds at most {MAX_RECORD_LEN}"),
        ));
    }
    let len = len as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    let mut crc = crc32c::crc32c(&len.to_le_bytes());
    crc = crc32c::crc32c_append(crc, &out[start + FRAME_LEN..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Parses and checks a frame at the start of `bytes`; returns the body and
/// the frame's total length, or `None` if no valid record starts there.
pub(crate) fn parse_record(bytes: &[u8]) -> Option<(RecordBody, usize)> {
    let frame = bytes.get(..FRAME_LEN)?;
    let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]);
    let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
    if len == 0 || len > MAX_RECORD_LEN {
        return None;
    }
    let body = bytes.get(FRAME_LEN..FRAME_LEN + len as usize)?;
    if crc32c::crc32c_append(crc32c::crc32c(&len.to_le_bytes()), body) != crc {
        return None;
    }
    decode_body(&Bytes::copy_from_slice(body))
        .ok()
        .map(|b| (b, FRAME_LEN + len as usize))
}

/// Decodes a checked record body (format byte + append).
fn decode_body(body: &Bytes) -> Result<RecordBody, String> {
    match body.first() {
        Some(&RECORD_FORMAT) => decode_v2(body),
        Some(&RECORD_FORMAT_V1) => decode_v1(&body[1..]),
        Some(&f) => Err(format!(
            "record format {f} is newer than this build reads ({RECORD_FORMAT}); upgrade Casebook"
        )),
        None => Err("empty record".into()),
    }
}

/// Reads the fields of a format 2 body, each bounds-checked.
struct Cursor<'a> {
    body: &'a Bytes,
    at: usize,
}

impl<'a> Cursor<'a> {
    #[inline]
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let bytes: &'a [u8] = self.body;
        let end = self.at.checked_add(n).filter(|&e| e <= bytes.len());
        match end {
            Some(end) => {
                let slice = &bytes[self.at..end];
                self.at = end;
                Ok(slice)
            }
            None => Err(format!(
                "undecodable record: {what} runs past the end of the record"
            )),
        }
    }

    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, String> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn str(&mut self, len: usize, what: &str) -> Result<&'a str, String> {
        std::str::from_utf8(self.take(len, what)?)
            .map_err(|_| format!("undecodable record: {what} is not UTF-8"))
    }

    /// A count of items that each take at least `min` bytes: bounded by what
    /// is left, so a damaged count cannot ask for a huge allocation.
    fn count(&mut self, min: usize, what: &str) -> Result<usize, String> {
        let n = self.u32(what)? as usize;
        if n.saturating_mul(min) > self.body.len() - self.at {
            return Err(format!("undecodable record: {n} {what} cannot fit"));
        }
        Ok(n)
    }
}

/// The part of a format 2 body before its events.
struct HeadV2 {
    stream: StreamId,
    first_version: StreamVersion,
    first_position: GlobalPosition,
    recorded: Timestamp,
    group_start: u64,
    types: Vec<Arc<str>>,
    metas: Vec<Arc<Metadata>>,
    events: usize,
}

impl HeadV2 {
    fn decode(c: &mut Cursor<'_>) -> Result<HeadV2, String> {
        let tenant = c.u8("tenant length").map(usize::from)?;
        let tenant = c.str(tenant, "tenant")?;
        let category = c.u8("category length").map(usize::from)?;
        let category = c.str(category, "category")?;
        let id = c.u8("stream id length").map(usize::from)?;
        let id = c.str(id, "stream id")?;
        let stream = TenantId::new(tenant)
            .and_then(|t| StreamId::new(t, category, id))
            .map_err(|e| format!("undecodable record: {e}"))?;
        let first_version = StreamVersion(c.u64("first version")?);
        let first_position = GlobalPosition(c.u64("first position")?);
        let recorded = Timestamp(c.u64("recorded time")? as i64);
        let group_start = c.u64("group start")?;

        let n = c.count(2, "type names")?;
        let mut types: Vec<Arc<str>> = Vec::with_capacity(n);
        for _ in 0..n {
            let len = c.u16("type name length")? as usize;
            types.push(Arc::from(c.str(len, "type name")?));
        }
        let n = c.count(4, "metadata")?;
        let mut metas: Vec<Arc<Metadata>> = Vec::with_capacity(n);
        for _ in 0..n {
            let len = c.u32("metadata length")? as usize;
            let bytes = c.take(len, "metadata")?;
            let meta: Metadata = rmp_serde::from_slice(bytes)
                .map_err(|e| format!("undecodable record: metadata: {e}"))?;
            metas.push(Arc::new(meta));
        }
        let events = c.count(EVENT_HEAD_LEN, "events")?;
        Ok(HeadV2 {
            stream,
            first_version,
            first_position,
            recorded,
            group_start,
            types,
            metas,
            events,
        })
    }

    /// Decodes the next event.
    #[inline]
    fn event(&self, c: &mut Cursor<'_>) -> Result<StoredEvent, String> {
        let e = self.event_parts(c)?;
        let (Some(event_type), Some(metadata)) = (self.types.get(e.t), self.metas.get(e.m)) else {
            return Err("undecodable record: event refers past its tables".into());
        };
        Ok(StoredEvent {
            id: EventId(uuid::Uuid::from_bytes(e.id)),
            event_type: Arc::clone(event_type),
            payload: c.body.slice(e.payload),
            metadata: Arc::clone(metadata),
        })
    }

    /// Checks and steps over the next event: its id, the indexes of its
    /// type and metadata (both checked), and where its payload lies.
    #[inline]
    fn event_parts(&self, c: &mut Cursor<'_>) -> Result<EventParts, String> {
        let (id, t, m, len) = event_head(c.take(EVENT_HEAD_LEN, "event")?)
            .ok_or_else(|| "undecodable record: short event header".to_string())?;
        let from = c.at;
        c.take(len, "payload")?;
        if t >= self.types.len() || m >= self.metas.len() {
            return Err(format!(
                "undecodable record: an event refers to type {t} or metadata {m}, which the record lacks"
            ));
        }
        Ok(EventParts {
            id,
            t,
            m,
            payload: from..c.at,
        })
    }
}

/// One event's parts as [`HeadV2::event_parts`] found them.
struct EventParts {
    id: [u8; 16],
    t: usize,
    m: usize,
    payload: std::ops::Range<usize>,
}

fn decode_v2(body: &Bytes) -> Result<RecordBody, String> {
    let mut c = Cursor { body, at: 1 };
    let head = HeadV2::decode(&mut c)?;
    let mut events = Vec::with_capacity(head.events);
    for _ in 0..head.events {
        events.push(head.event(&mut c)?);
    }
    if c.at != body.len() {
        return Err(format!(
            "undecodable record: {} bytes follow its last event",
            body.len() - c.at
        ));
    }
    Ok(RecordBody {
        stream: head.stream,
        first_version: head.first_version,
        first_position: head.first_position,
        recorded: head.recorded,
        group_start: head.group_start,
        events,
    })
}

/// Pushes the Merkle leaf hash of each event of a checked record body onto
/// `out` (see `docs/tamper-evidence.md`). A leaf commits to the bytes as
/// stored: for format 2, `0x02 ‖ event index (u32 LE) ‖ SHA-256(the body up
/// to its events: format, stream, versions, position, time, group start,
/// types, metadata, event count) ‖ the event's own bytes (id, type and
/// metadata indexes, payload length, payload)`; for format 1, `0x01 ‖ event
/// index ‖ SHA-256(body)`. Every byte of the record's body is under every
/// one of its leaves, and the frame (length, CRC) follows from the body.
///
/// Errors: what is wrong with an undecodable body.
pub(crate) fn leaf_hashes(body: &[u8], out: &mut Vec<merkle::Hash>) -> Result<(), String> {
    use sha2::{Digest, Sha256};
    let leaf = |format: u8, index: usize, head: &[u8; 32], event: &[u8]| -> merkle::Hash {
        let mut h = Sha256::new();
        h.update([0u8, format]);
        h.update((index as u32).to_le_bytes());
        h.update(head);
        h.update(event);
        h.finalize().into()
    };
    match body.first() {
        Some(&RECORD_FORMAT) => {
            let bytes = Bytes::copy_from_slice(body);
            let mut c = Cursor {
                body: &bytes,
                at: 1,
            };
            for what in ["tenant", "category", "stream id"] {
                let len = c.u8(what)? as usize;
                c.take(len, what)?;
            }
            c.take(32, "positions and times")?;
            for _ in 0..c.count(2, "type names")? {
                let len = c.u16("type name length")? as usize;
                c.take(len, "type name")?;
            }
            for _ in 0..c.count(4, "metadata")? {
                let len = c.u32("metadata length")? as usize;
                c.take(len, "metadata")?;
            }
            let events = c.count(EVENT_HEAD_LEN, "events")?;
            let head: [u8; 32] = Sha256::digest(&body[..c.at]).into();
            for i in 0..events {
                let start = c.at;
                let (_, _, _, len) = event_head(c.take(EVENT_HEAD_LEN, "event")?)
                    .ok_or_else(|| "undecodable record: short event header".to_string())?;
                c.take(len, "payload")?;
                out.push(leaf(RECORD_FORMAT, i, &head, &body[start..c.at]));
            }
            if c.at != body.len() {
                return Err("undecodable record: bytes follow its last event".into());
            }
            Ok(())
        }
        Some(&RECORD_FORMAT_V1) => {
            let record = decode_v1(&body[1..])?;
            let head: [u8; 32] = Sha256::digest(body).into();
            for i in 0..record.events.len() {
                out.push(leaf(RECORD_FORMAT_V1, i, &head, &[]));
            }
            Ok(())
        }
        Some(&f) => Err(format!("record format {f} is newer than this build reads")),
        None => Err("empty record".into()),
    }
}

/// The first position a checked record body says it holds (`None` if it
/// does not decode that far).
pub(crate) fn first_position(body: &[u8]) -> Option<GlobalPosition> {
    if body.first() != Some(&RECORD_FORMAT) {
        return describe_body(body).map(|(p, _)| p);
    }
    let mut at = 1usize;
    for _ in 0..3 {
        at += 1 + usize::from(*body.get(at)?);
    }
    let bytes = body.get(at + 8..at + 16)?;
    Some(GlobalPosition(u64::from_le_bytes(bytes.try_into().ok()?)))
}

/// The first position and event ids of a record body, if it decodes
/// (the checksum unchecked): names what a damaged record held.
pub(crate) fn describe_body(body: &[u8]) -> Option<(GlobalPosition, Vec<EventId>)> {
    let record = decode_body(&Bytes::copy_from_slice(body)).ok()?;
    Some((
        record.first_position,
        record.events.iter().map(|e| e.id).collect(),
    ))
}

/// What a reader wants from a record: its first position and tenant (as the
/// index says), and `take` events after skipping `skip`.
#[derive(Debug, Clone)]
pub(crate) struct Wanted<'t> {
    pub first_position: GlobalPosition,
    pub tenant: &'t TenantId,
    pub skip: usize,
    pub take: usize,
}

/// Pushes the events `wanted` names of a checked body onto `out`, straight
/// from the bytes (format 2) — the bulk read path.
fn decode_into(
    body: &Bytes,
    wanted: &Wanted<'_>,
    out: &mut Vec<RecordedEvent>,
) -> Result<(), String> {
    if body.first() != Some(&RECORD_FORMAT) {
        let record = decode_body(body)?;
        check_wanted(
            &record.stream,
            record.first_position,
            record.events.len(),
            wanted,
        )?;
        out.extend(record.into_events().skip(wanted.skip).take(wanted.take));
        return Ok(());
    }
    let mut c = Cursor { body, at: 1 };
    let head = HeadV2::decode(&mut c)?;
    check_wanted(&head.stream, head.first_position, head.events, wanted)?;
    for i in 0..wanted.skip + wanted.take {
        let e = head.event(&mut c)?;
        if i >= wanted.skip {
            out.push(e.into_recorded(
                &head.stream,
                head.first_version,
                head.first_position,
                head.recorded,
                i,
            ));
        }
    }
    Ok(())
}

/// The events `wanted` names of a checked body, as a part of a batch: the
/// layout of every wanted event is checked now, its decoding is left to
/// whoever visits it (format 2); older formats are decoded at once.
fn decode_view(body: &Bytes, wanted: &Wanted<'_>, out: &mut BatchBuilder) -> Result<(), String> {
    if body.first() != Some(&RECORD_FORMAT) {
        let mut events = Vec::with_capacity(wanted.take);
        decode_into(body, wanted, &mut events)?;
        out.parts.push(Part::Events(events));
        return Ok(());
    }
    let mut c = Cursor { body, at: 1 };
    let head = HeadV2::decode(&mut c)?;
    check_wanted(&head.stream, head.first_position, head.events, wanted)?;
    let first_slot = out.slots.len();
    for i in 0..wanted.skip + wanted.take {
        let e = head.event_parts(&mut c)?;
        if i >= wanted.skip {
            // Bodies are at most MAX_RECORD_LEN (< 4 GiB) bytes.
            out.slots.push(Slot {
                id: e.id,
                payload_at: e.payload.start as u32,
                payload_len: e.payload.len() as u32,
                event_type: e.t as u32,
                metadata: e.m as u32,
            });
        }
    }
    out.parts.push(Part::Record(RecordView {
        stream: head.stream,
        first_version: head.first_version,
        first_position: head.first_position,
        recorded: head.recorded,
        types: head.types,
        metas: head.metas,
        body: body.clone(),
        skip: wanted.skip,
        slots: first_slot..out.slots.len(),
    }));
    Ok(())
}

fn check_wanted(
    stream: &StreamId,
    first_position: GlobalPosition,
    events: usize,
    wanted: &Wanted<'_>,
) -> Result<(), String> {
    if first_position != wanted.first_position
        || stream.tenant() != wanted.tenant
        || wanted.skip + wanted.take > events
    {
        return Err("the record does not match its index entry".into());
    }
    Ok(())
}

/// Format 1: the whole append as one rmp-serde map with named fields.
#[derive(Deserialize)]
struct RecordBodyV1 {
    stream: StreamId,
    first_version: StreamVersion,
    first_position: GlobalPosition,
    recorded: Timestamp,
    group_start: u64,
    events: Vec<EventData>,
}

fn decode_v1(bytes: &[u8]) -> Result<RecordBody, String> {
    let v1: RecordBodyV1 =
        rmp_serde::from_slice(bytes).map_err(|e| format!("undecodable record: {e}"))?;
    let mut events: Vec<StoredEvent> = Vec::with_capacity(v1.events.len());
    for e in v1.events {
        // Share type and metadata with the previous event when they repeat.
        let (event_type, metadata) = match events.last() {
            Some(p) if *p.event_type == *e.event_type && *p.metadata == e.metadata => {
                (Arc::clone(&p.event_type), Arc::clone(&p.metadata))
            }
            _ => (Arc::from(e.event_type), Arc::new(e.metadata)),
        };
        events.push(StoredEvent {
            id: e.id,
            event_type,
            payload: Bytes::from(e.payload),
            metadata,
        });
    }
    Ok(RecordBody {
        stream: v1.stream,
        first_version: v1.first_version,
        first_position: v1.first_position,
        recorded: v1.recorded,
        group_start: v1.group_start,
        events,
    })
}

/// The open segment files, shared by the writer and readers.
pub(crate) struct Segments {
    pub fs: Arc<dyn LogFs>,
    files: RwLock<BTreeMap<u64, Arc<dyn SegmentFile>>>,
    /// Read windows handed back by readers, reused once no event refers to
    /// them any more: fresh ones cost page faults and zeroing per read.
    windows: Mutex<VecDeque<Bytes>>,
    /// Segments mapped into memory (`None`: the file system cannot map).
    maps: RwLock<BTreeMap<u64, Option<Bytes>>>,
    /// How much of a segment to map: a segment grows up to about this size.
    map_len: u64,
}

/// Most read windows kept for reuse.
const SPARE_WINDOWS: usize = 32;
/// Mapped beyond a segment's nominal size, for a last group that runs past it.
const MAP_SLACK: u64 = 64 * 1024 * 1024;

impl Segments {
    /// `segment_size`: the size at which the writer starts a new segment.
    pub fn new(fs: Arc<dyn LogFs>, segment_size: u64) -> Self {
        Segments {
            fs,
            files: RwLock::new(BTreeMap::new()),
            windows: Mutex::new(VecDeque::new()),
            maps: RwLock::new(BTreeMap::new()),
            // Room for the last group of a segment to run past its size.
            map_len: segment_size.saturating_add(MAP_SLACK),
        }
    }

    /// Segment `number` mapped into memory, mapping it on first use.
    fn mapping(&self, number: u64, file: &dyn SegmentFile) -> Result<Option<Bytes>, LogError> {
        if let Some(m) = self
            .maps
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&number)
        {
            return Ok(m.clone());
        }
        let mut maps = self.maps.write().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = maps.get(&number) {
            return Ok(m.clone());
        }
        let io = |e| LogError::io(format!("mapping {}", self.fs.path(number).display()), e);
        let len = file.len().map_err(io)?.max(self.map_len);
        let map = file.map(len).map_err(io)?;
        maps.insert(number, map.clone());
        Ok(map)
    }

    /// A buffer of `len` bytes to read into: a spare window nothing refers
    /// to any more, or a new one.
    fn window_buffer(&self, len: usize) -> BytesMut {
        let mut spare = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        for _ in 0..spare.len() {
            let Some(w) = spare.pop_front() else { break };
            match w.try_into_mut() {
                Ok(mut buf) => {
                    drop(spare);
                    buf.resize(len, 0);
                    return buf;
                }
                // Still read from: look again later.
                Err(w) => spare.push_back(w),
            }
        }
        drop(spare);
        BytesMut::zeroed(len)
    }

    /// Hands a window back for reuse.
    fn spare_window(&self, window: Bytes) {
        if window.is_empty() {
            return;
        }
        let mut spare = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if spare.len() == SPARE_WINDOWS {
            spare.pop_front();
        }
        spare.push_back(window);
    }

    /// Registers an open segment.
    pub fn insert(&self, number: u64, file: Arc<dyn SegmentFile>) {
        self.files
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(number, file);
    }

    /// The open segment `number`.
    pub fn get(&self, number: u64) -> Result<Arc<dyn SegmentFile>, LogError> {
        self.files
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&number)
            .cloned()
            .ok_or_else(|| LogError::Corrupted {
                segment: self.fs.path(number),
                offset: 0,
                reason: "the index refers to a segment that does not exist".into(),
            })
    }

    /// The numbers of all open segments, ascending.
    pub fn numbers(&self) -> Vec<u64> {
        self.files
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect()
    }

    pub fn corrupted(&self, segment: u64, offset: u64, reason: impl Into<String>) -> LogError {
        LogError::Corrupted {
            segment: self.fs.path(segment),
            offset,
            reason: reason.into(),
        }
    }
}

/// What [`RecordReader::scan`] found at an offset.
pub(crate) enum Scanned {
    /// A valid record, and the offset just past it.
    Record(RecordBody, u64),
    /// The clean end of the segment: the end of the file, or a frame of
    /// [`FRAME_LEN`] zero bytes (zero-ahead space; no record has length 0).
    End,
    /// A damaged or incomplete record, with what is wrong.
    Damaged(String),
}

/// What [`RecordReader::scan_raw`] found at an offset.
pub(crate) enum RawScanned {
    /// A record whose checksum holds: its body, and the offset just past it.
    Record(Bytes, u64),
    /// The clean end of the segment (as [`Scanned::End`]).
    End,
    /// A damaged or incomplete record, with what is wrong.
    Damaged(String),
}

/// A frame as read: its checked body and the offset past it, the clean end
/// of the segment, or damage.
enum Framed {
    Body(Bytes, u64),
    End,
    Damaged(String),
}

/// Reads records through a window of buffered bytes, so sequential reads cost
/// one system call per window rather than two per record. Decoded payloads
/// are views of the window: a window is never reused, only replaced.
pub(crate) struct RecordReader<'a> {
    segments: &'a Segments,
    window: Bytes,
    segment: u64,
    start: u64,
    /// Where the log was synced up to when the read began, as (segment,
    /// offset): a reader that knows it views mapped bytes below it instead
    /// of copying them.
    synced: Option<(u64, u64)>,
    /// Whether the window is a view of a mapping (not a buffer to reuse).
    mapped: bool,
}

impl Drop for RecordReader<'_> {
    fn drop(&mut self) {
        if !self.mapped {
            self.segments.spare_window(std::mem::take(&mut self.window));
        }
    }
}

impl<'a> RecordReader<'a> {
    pub fn new(segments: &'a Segments) -> Self {
        RecordReader {
            segments,
            window: Bytes::new(),
            segment: u64::MAX,
            start: 0,
            synced: None,
            mapped: false,
        }
    }

    /// A reader of records synced before `synced` (segment, offset), which
    /// reads them from memory-mapped segments where it can.
    pub fn synced_before(segments: &'a Segments, synced: (u64, u64)) -> Self {
        let mut reader = RecordReader::new(segments);
        reader.synced = Some(synced);
        reader
    }

    /// How far `segment` may be viewed in place: its synced bytes.
    fn viewable(&self, file: &dyn SegmentFile, segment: u64) -> Result<Option<u64>, LogError> {
        Ok(match self.synced {
            Some((s, _)) if segment < s => {
                // Sealed: every byte it holds was synced before the next began.
                Some(file.len().map_err(|e| {
                    LogError::io(
                        format!("reading {}", self.segments.fs.path(segment).display()),
                        e,
                    )
                })?)
            }
            Some((s, end)) if segment == s => Some(end),
            _ => None,
        })
    }

    /// Makes sure `[offset, offset + len)` of `segment` is in the window, as
    /// far as the file has it; returns how many of those bytes are there.
    fn fill(
        &mut self,
        file: &dyn SegmentFile,
        segment: u64,
        offset: u64,
        len: usize,
    ) -> Result<usize, LogError> {
        let have = segment == self.segment
            && offset >= self.start
            && offset + len as u64 <= self.start + self.window.len() as u64;
        if !have {
            if let Some(viewable) = self.viewable(file, segment)? {
                if let Some(map) = self.segments.mapping(segment, file)? {
                    let upto = viewable.min(map.len() as u64);
                    if offset + len as u64 <= upto {
                        // A window of its own owns a share of the mapping:
                        // events count their references on it, not on the
                        // mapping every reader thread shares.
                        let view = map.slice(offset as usize..upto as usize);
                        self.replace_window(Bytes::from_owner(view), true);
                        self.segment = segment;
                        self.start = offset;
                        return Ok(len);
                    }
                }
            }
            let mut window = self.segments.window_buffer(len.max(WINDOW));
            let n = file.read_at(&mut window, offset).map_err(|e| {
                LogError::io(
                    format!("reading {}", self.segments.fs.path(segment).display()),
                    e,
                )
            })?;
            window.truncate(n);
            self.replace_window(window.freeze(), false);
            self.segment = segment;
            self.start = offset;
        }
        let available = (self.start + self.window.len() as u64).saturating_sub(offset);
        Ok((available as usize).min(len))
    }

    fn replace_window(&mut self, window: Bytes, mapped: bool) {
        let old = std::mem::replace(&mut self.window, window);
        if !std::mem::replace(&mut self.mapped, mapped) {
            self.segments.spare_window(old);
        }
    }

    fn slice(&self, offset: u64, len: usize) -> &[u8] {
        let at = (offset - self.start) as usize;
        &self.window[at..at + len]
    }

    /// Reads the record at `offset`, telling a clean end from damage.
    pub fn scan(&mut self, segment: u64, offset: u64) -> Result<Scanned, LogError> {
        Ok(match self.frame(segment, offset)? {
            Framed::Body(body, next) => match decode_body(&body) {
                Ok(record) => Scanned::Record(record, next),
                Err(reason) => Scanned::Damaged(reason),
            },
            Framed::End => Scanned::End,
            Framed::Damaged(reason) => Scanned::Damaged(reason),
        })
    }

    /// Reads the frame at `offset` without decoding it: its checked body
    /// and the offset past it, the clean end of the segment, or damage.
    pub fn scan_raw(&mut self, segment: u64, offset: u64) -> Result<RawScanned, LogError> {
        Ok(match self.frame(segment, offset)? {
            Framed::Body(body, next) => RawScanned::Record(body, next),
            Framed::End => RawScanned::End,
            Framed::Damaged(reason) => RawScanned::Damaged(reason),
        })
    }

    /// The body bytes a frame at `offset` claims, its checksum unchecked
    /// (`None` if its length is impossible or runs past the file).
    pub fn body_unchecked(&mut self, segment: u64, offset: u64) -> Result<Option<Bytes>, LogError> {
        let file = self.segments.get(segment)?;
        if self.fill(&*file, segment, offset, FRAME_LEN)? < FRAME_LEN {
            return Ok(None);
        }
        let frame = self.slice(offset, FRAME_LEN);
        let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]);
        if len == 0 || len > MAX_RECORD_LEN {
            return Ok(None);
        }
        let total = FRAME_LEN + len as usize;
        if self.fill(&*file, segment, offset, total)? < total {
            return Ok(None);
        }
        let at = (offset - self.start) as usize + FRAME_LEN;
        Ok(Some(self.window.slice(at..at + len as usize)))
    }

    /// Pushes the events `wanted` names of the record at a location the
    /// index vouches for onto `out`; anything but such a record is corruption.
    pub fn read_into(
        &mut self,
        segment: u64,
        offset: u64,
        wanted: &Wanted<'_>,
        out: &mut Vec<RecordedEvent>,
    ) -> Result<(), LogError> {
        self.decode_at(segment, offset, |body| decode_into(body, wanted, out))
    }

    /// Like [`RecordReader::read_into`], as a part of a batch whose events
    /// are decoded when visited.
    pub fn read_view_into(
        &mut self,
        segment: u64,
        offset: u64,
        wanted: &Wanted<'_>,
        out: &mut BatchBuilder,
    ) -> Result<(), LogError> {
        self.decode_at(segment, offset, |body| decode_view(body, wanted, out))
    }

    /// Hands the body of the record at a location the index vouches for to
    /// `decode`; anything but such a record is corruption.
    fn decode_at(
        &mut self,
        segment: u64,
        offset: u64,
        decode: impl FnOnce(&Bytes) -> Result<(), String>,
    ) -> Result<(), LogError> {
        let reason = match self.frame(segment, offset)? {
            Framed::Body(body, _) => match decode(&body) {
                Ok(()) => return Ok(()),
                Err(reason) => reason,
            },
            Framed::End => "the index points past the end of the segment".into(),
            Framed::Damaged(reason) => reason,
        };
        Err(self.segments.corrupted(segment, offset, reason))
    }

    /// Reads and checks the frame at `offset`: its body, or what is wrong.
    fn frame(&mut self, segment: u64, offset: u64) -> Result<Framed, LogError> {
        let file = self.segments.get(segment)?;
        let got = self.fill(&*file, segment, offset, FRAME_LEN)?;
        if got == 0 {
            return Ok(Framed::End);
        }
        if got < FRAME_LEN {
            return Ok(Framed::Damaged(format!(
                "incomplete record frame ({got} bytes)"
            )));
        }
        let frame = self.slice(offset, FRAME_LEN);
        if frame.iter().all(|&b| b == 0) {
            return Ok(Framed::End);
        }
        let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]);
        let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
        if len == 0 || len > MAX_RECORD_LEN {
            return Ok(Framed::Damaged(format!("impossible record length {len}")));
        }
        let total = FRAME_LEN + len as usize;
        let got = self.fill(&*file, segment, offset, total)?;
        if got < total {
            return Ok(Framed::Damaged(format!(
                "record of {len} bytes is cut short at {} bytes",
                got.saturating_sub(FRAME_LEN)
            )));
        }
        let body = self.slice(offset + FRAME_LEN as u64, len as usize);
        let actual = crc32c::crc32c_append(crc32c::crc32c(&len.to_le_bytes()), body);
        if actual != crc {
            return Ok(Framed::Damaged(format!(
                "checksum mismatch (stored {crc:08x}, computed {actual:08x})"
            )));
        }
        let at = (offset - self.start) as usize + FRAME_LEN;
        Ok(Framed::Body(
            self.window.slice(at..at + len as usize),
            offset + total as u64,
        ))
    }

    /// Reads the record at a location the index vouches for: anything but a
    /// valid record there is corruption.
    pub fn read(&mut self, segment: u64, offset: u64) -> Result<RecordBody, LogError> {
        match self.scan(segment, offset)? {
            Scanned::Record(body, _) => Ok(body),
            Scanned::End => Err(self.segments.corrupted(
                segment,
                offset,
                "the index points past the end of the segment",
            )),
            Scanned::Damaged(reason) => Err(self.segments.corrupted(segment, offset, reason)),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Serialize;

    use super::*;
    use crate::log::types::{ActorId, Source};
    use crate::security::Classification;

    fn stream() -> StreamId {
        "kent/case/CR-2026-000042".parse().unwrap()
    }

    fn events() -> Vec<EventData> {
        let officer = Metadata::new(ActorId::new("pc-4521"), Source::system("niche-rms"));
        let sensitive = officer
            .clone()
            .with_reason("safeguarding referral")
            .with_classification(Classification::OfficialSensitive);
        vec![
            EventData::new("CaseOpened", b"opened".to_vec(), officer.clone()),
            EventData::new("CaseFileUpdated", b"ward=E05".to_vec(), officer.clone()),
            EventData::new("CaseFileUpdated", Vec::new(), sensitive.clone()),
            EventData::new("CaseOpened", vec![7; 300], officer),
            EventData::new("NoteAdded", b"x".to_vec(), sensitive),
        ]
    }

    fn body<'a>(stream: &'a StreamId, events: &'a [EventData]) -> RecordBodyRef<'a> {
        RecordBodyRef {
            stream,
            first_version: StreamVersion(3),
            first_position: GlobalPosition(1000),
            recorded: Timestamp(1_764_000_000_000_000),
            group_start: 4096,
            events,
        }
    }

    fn encoded(stream: &StreamId, events: &[EventData]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_record(&body(stream, events), &mut out).unwrap();
        out
    }

    fn check_round_trip(read: &RecordBody, stream: &StreamId, events: &[EventData]) {
        assert_eq!(read.stream, *stream);
        assert_eq!(read.first_version, StreamVersion(3));
        assert_eq!(read.first_position, GlobalPosition(1000));
        assert_eq!(read.recorded, Timestamp(1_764_000_000_000_000));
        assert_eq!(read.group_start, 4096);
        assert_eq!(read.events.len(), events.len());
        for (i, e) in events.iter().enumerate() {
            let r = read.event(i).unwrap();
            assert!(r.same_data(e), "event {i}");
            assert_eq!(r.position, GlobalPosition(1000 + i as u64));
            assert_eq!(r.version, StreamVersion(3 + i as u64));
        }
    }

    #[test]
    fn records_round_trip_and_share_repeated_types_and_metadata() {
        let (s, events) = (stream(), events());
        let bytes = encoded(&s, &events);
        let (read, size) = parse_record(&bytes).unwrap();
        assert_eq!(size, bytes.len());
        check_round_trip(&read, &s, &events);
        let e = &read.events;
        assert!(Arc::ptr_eq(&e[1].event_type, &e[2].event_type));
        assert!(Arc::ptr_eq(&e[0].event_type, &e[3].event_type));
        assert!(Arc::ptr_eq(&e[0].metadata, &e[3].metadata));
        assert!(Arc::ptr_eq(&e[2].metadata, &e[4].metadata));
        assert!(!Arc::ptr_eq(&e[0].metadata, &e[2].metadata));
    }

    #[test]
    fn format_1_records_written_by_earlier_builds_still_read() {
        #[derive(Serialize)]
        struct V1<'a> {
            stream: &'a StreamId,
            first_version: StreamVersion,
            first_position: GlobalPosition,
            recorded: Timestamp,
            group_start: u64,
            events: &'a [EventData],
        }
        let (s, events) = (stream(), events());
        let b = body(&s, &events);
        let mut bytes = vec![RECORD_FORMAT_V1];
        rmp_serde::encode::write_named(
            &mut bytes,
            &V1 {
                stream: b.stream,
                first_version: b.first_version,
                first_position: b.first_position,
                recorded: b.recorded,
                group_start: b.group_start,
                events: b.events,
            },
        )
        .unwrap();
        let read = decode_body(&Bytes::from(bytes)).unwrap();
        check_round_trip(&read, &s, &events);
    }

    #[test]
    fn batch_views_visit_the_wanted_events_of_either_format() {
        let (s, events) = (stream(), events());
        let v2 = Bytes::from(encoded(&s, &events)[FRAME_LEN..].to_vec());
        let b = body(&s, &events);
        let mut v1 = vec![RECORD_FORMAT_V1];
        rmp_serde::encode::write_named(
            &mut v1,
            &(
                b.stream,
                b.first_version,
                b.first_position,
                b.recorded,
                b.group_start,
                b.events,
            ),
        )
        .unwrap();
        let tenant = s.tenant().clone();
        let wanted = Wanted {
            first_position: GlobalPosition(1000),
            tenant: &tenant,
            skip: 1,
            take: 3,
        };
        let mut out = BatchBuilder::default();
        decode_view(&v2, &wanted, &mut out).unwrap();
        assert!(matches!(out.parts[..], [Part::Record(_)]));
        // A second record's slots follow the first's.
        decode_view(&v2, &wanted, &mut out).unwrap();
        let batch = out.build();
        assert_eq!(batch.len(), 6);
        let seen: Vec<_> = batch.iter().map(|e| e.to_recorded()).collect();
        assert_eq!(seen.len(), 6);
        for (i, e) in seen.iter().enumerate() {
            assert!(e.same_data(&events[i % 3 + 1]));
            assert_eq!(e.position, GlobalPosition(1001 + (i % 3) as u64));
        }
        assert_eq!(batch.last_position(), Some(GlobalPosition(1003)));
        // An index entry that disagrees with the record is an error.
        let wrong = Wanted {
            skip: 4,
            ..wanted.clone()
        };
        assert!(decode_view(&v2, &wrong, &mut BatchBuilder::default()).is_err());
        // Format 1 bodies (rmp reads a struct from its fields in order too)
        // are decoded at once.
        let mut old = BatchBuilder::default();
        decode_view(&Bytes::from(v1), &wanted, &mut old).unwrap();
        let Some(Part::Events(old)) = old.parts.pop() else {
            panic!("format 1 is decoded at once")
        };
        assert_eq!(old, seen[..3]);
    }

    #[test]
    fn damaged_or_future_bodies_are_errors_never_panics() {
        let (s, events) = (stream(), events());
        let bytes = encoded(&s, &events);
        let body = &bytes[FRAME_LEN..];
        // Every truncation of the body fails cleanly.
        for cut in 0..body.len() {
            assert!(decode_body(&Bytes::copy_from_slice(&body[..cut])).is_err());
        }
        // Every single-byte change either fails or decodes to something.
        for at in 0..body.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut damaged = body.to_vec();
                damaged[at] ^= flip;
                let _ = decode_body(&Bytes::from(damaged));
            }
        }
        let mut trailing = body.to_vec();
        trailing.push(0);
        let err = decode_body(&Bytes::from(trailing)).unwrap_err();
        assert!(err.contains("follow its last event"), "{err}");
        let mut future = body.to_vec();
        future[0] = RECORD_FORMAT + 1;
        let err = decode_body(&Bytes::from(future)).unwrap_err();
        assert!(err.contains("upgrade Casebook"), "{err}");
        // A damaged count cannot ask for a huge allocation.
        let mut huge = body.to_vec();
        let events_at = huge.len() - events.iter().map(|e| 28 + e.payload.len()).sum::<usize>() - 4;
        huge[events_at..events_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = decode_body(&Bytes::from(huge)).unwrap_err();
        assert!(err.contains("cannot fit"), "{err}");
        // The frame's checksum catches what decoding alone would not.
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(parse_record(&flipped).is_none());
    }

    #[test]
    fn compact_records_are_smaller_than_format_1() {
        let s = stream();
        let meta = Metadata::new(ActorId::new("pc-4521"), Source::system("bench"));
        let events: Vec<EventData> = (0..10)
            .map(|_| EventData::new("BenchEvent", vec![0x5a; 200], meta.clone()))
            .collect();
        let v2 = encoded(&s, &events).len();
        let mut v1 = Vec::new();
        rmp_serde::encode::write_named(&mut v1, &events).unwrap();
        assert!(v2 < 10 * 240 + 200, "{v2} bytes");
        assert!(v2 * 10 < v1.len() * 7, "{v2} vs {}", v1.len());
    }
}
