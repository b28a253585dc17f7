//! On-disk layout of segment files: header, framed records, and reading them back.
//!
//! A segment starts with a 32-byte header (magic, format, segment number,
//! CRC32C). Then come records, one per append, each framed as
//! `[length: u32 LE][crc32c(length ++ body): u32 LE][body]`. The body is a
//! format byte followed by the rmp-serde (named fields) encoding of the
//! append: stream, first version, first position, recorded time and events.
//! One record per append makes every append all-or-nothing on disk: a torn
//! record fails its checksum and is cut away whole.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use super::fs::{LogFs, SegmentFile};
use crate::log::error::LogError;
use crate::log::types::{
    EventData, GlobalPosition, RecordedEvent, StreamId, StreamVersion, Timestamp,
};

/// Bytes before the first record of a segment.
pub(crate) const HEADER_LEN: u64 = 32;
const MAGIC: &[u8; 8] = b"CBOOKSEG";
/// Segment header format this build writes and reads.
pub(crate) const SEGMENT_FORMAT: u32 = 1;
/// Record body format this build writes and reads.
pub(crate) const RECORD_FORMAT: u8 = 1;
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
#[derive(Serialize)]
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

/// The body of a record as read back.
#[derive(Deserialize)]
pub(crate) struct RecordBody {
    pub stream: StreamId,
    pub first_version: StreamVersion,
    pub first_position: GlobalPosition,
    pub recorded: Timestamp,
    pub group_start: u64,
    pub events: Vec<EventData>,
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
            .map(move |(i, e)| RecordedEvent {
                stream: stream.clone(),
                version: StreamVersion(first_version.0 + i as u64),
                position: GlobalPosition(first_position.0 + i as u64),
                recorded,
                id: e.id,
                event_type: e.event_type,
                payload: e.payload,
                metadata: e.metadata,
            })
    }

    /// The event at `index` as a recorded event.
    pub fn event(&self, index: usize) -> Option<RecordedEvent> {
        let e = self.events.get(index)?;
        Some(RecordedEvent {
            stream: self.stream.clone(),
            version: StreamVersion(self.first_version.0 + index as u64),
            position: GlobalPosition(self.first_position.0 + index as u64),
            recorded: self.recorded,
            id: e.id,
            event_type: e.event_type.clone(),
            payload: e.payload.clone(),
            metadata: e.metadata.clone(),
        })
    }
}

/// Appends the framed record for `body` to `out`.
pub(crate) fn encode_record(body: &RecordBodyRef<'_>, out: &mut Vec<u8>) -> Result<(), LogError> {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_LEN]);
    out.push(RECORD_FORMAT);
    rmp_serde::encode::write_named(out, body).map_err(|e| LogError::Io {
        context: "encoding a record".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let len = (out.len() - start - FRAME_LEN) as u32;
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
    decode_body(body)
        .ok()
        .map(|b| (b, FRAME_LEN + len as usize))
}

/// Decodes a checked record body (format byte + rmp).
fn decode_body(body: &[u8]) -> Result<RecordBody, String> {
    match body.first() {
        Some(&RECORD_FORMAT) => {
            rmp_serde::from_slice(&body[1..]).map_err(|e| format!("undecodable record: {e}"))
        }
        Some(&f) => Err(format!(
            "record format {f} is newer than this build reads ({RECORD_FORMAT}); upgrade Casebook"
        )),
        None => Err("empty record".into()),
    }
}

/// The open segment files, shared by the writer and readers.
pub(crate) struct Segments {
    pub fs: Arc<dyn LogFs>,
    files: RwLock<BTreeMap<u64, Arc<dyn SegmentFile>>>,
}

impl Segments {
    pub fn new(fs: Arc<dyn LogFs>) -> Self {
        Segments {
            fs,
            files: RwLock::new(BTreeMap::new()),
        }
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

/// Reads records through a window of buffered bytes, so sequential reads cost
/// one system call per window rather than two per record.
pub(crate) struct RecordReader<'a> {
    segments: &'a Segments,
    window: Vec<u8>,
    segment: u64,
    start: u64,
}

impl<'a> RecordReader<'a> {
    pub fn new(segments: &'a Segments) -> Self {
        RecordReader {
            segments,
            window: Vec::new(),
            segment: u64::MAX,
            start: 0,
        }
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
            let size = len.max(WINDOW);
            self.window.resize(size, 0);
            let n = file.read_at(&mut self.window, offset).map_err(|e| {
                LogError::io(
                    format!("reading {}", self.segments.fs.path(segment).display()),
                    e,
                )
            })?;
            self.window.truncate(n);
            self.segment = segment;
            self.start = offset;
        }
        let available = (self.start + self.window.len() as u64).saturating_sub(offset);
        Ok((available as usize).min(len))
    }

    fn slice(&self, offset: u64, len: usize) -> &[u8] {
        let at = (offset - self.start) as usize;
        &self.window[at..at + len]
    }

    /// Reads the record at `offset`, telling a clean end from damage.
    pub fn scan(&mut self, segment: u64, offset: u64) -> Result<Scanned, LogError> {
        let file = self.segments.get(segment)?;
        let got = self.fill(&*file, segment, offset, FRAME_LEN)?;
        if got == 0 {
            return Ok(Scanned::End);
        }
        if got < FRAME_LEN {
            return Ok(Scanned::Damaged(format!(
                "incomplete record frame ({got} bytes)"
            )));
        }
        let frame = self.slice(offset, FRAME_LEN);
        if frame.iter().all(|&b| b == 0) {
            return Ok(Scanned::End);
        }
        let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]);
        let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
        if len == 0 || len > MAX_RECORD_LEN {
            return Ok(Scanned::Damaged(format!("impossible record length {len}")));
        }
        let total = FRAME_LEN + len as usize;
        let got = self.fill(&*file, segment, offset, total)?;
        if got < total {
            return Ok(Scanned::Damaged(format!(
                "record of {len} bytes is cut short at {} bytes",
                got.saturating_sub(FRAME_LEN)
            )));
        }
        let body = self.slice(offset + FRAME_LEN as u64, len as usize);
        let actual = crc32c::crc32c_append(crc32c::crc32c(&len.to_le_bytes()), body);
        if actual != crc {
            return Ok(Scanned::Damaged(format!(
                "checksum mismatch (stored {crc:08x}, computed {actual:08x})"
            )));
        }
        match decode_body(body) {
            Ok(record) => Ok(Scanned::Record(record, offset + total as u64)),
            Err(reason) => Ok(Scanned::Damaged(reason)),
        }
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
