//! Opening after a crash: clean sled's leftovers, cut a torn tail, re-index.
//!
//! What may be damaged after a crash or power cut is bounded by what was not
//! yet synced: only the last group commit of the last segment. Everything the
//! index marker covers was synced before it was indexed, and every segment but
//! the last was synced before the next was created. So:
//!
//! - damage in a segment other than the last is corruption (an error naming
//!   the segment and offset), never silently skipped;
//! - damage in the last segment after the marker is a torn tail — unless an
//!   intact record of a later group commit follows it, which proves it had
//!   been synced: then it is corruption;
//! - a frame of zero bytes ends a segment's log (zero-ahead space follows
//!   it, see `prealloc`). The same rule applies to what follows it: in the
//!   last segment a later group commit after it, in another segment any
//!   intact record after it, means synced records were zeroed: corruption;
//! - the last segment is then cut at the end of its log (zeros, a torn
//!   record, or the end of the file) and synced, so that no stale bytes of a
//!   torn group survive past the end, to be taken for records once new
//!   groups are written before them. The zero-ahead extends it again;
//! - a last segment whose header never reached the disk is removed.

use std::path::Path;
use std::sync::Arc;

use super::fs::SegmentFile;
use super::index::{Index, IndexedRecord, Marker, RecordLoc};
use super::segment::{
    check_header, header, parse_record, RecordBody, RecordReader, Scanned, Segments, FRAME_LEN,
    HEADER_LEN, MAX_RECORD_LEN,
};
use crate::log::error::LogError;
use crate::log::report::{DerivedRebuild, RecoveryReport};
use crate::log::types::{EventId, GlobalPosition};

/// Records handed to the index at a time while re-indexing.
const REINDEX_BATCH: usize = 1024;
/// Bytes read at a time while looking past the end of the log.
const TAIL_WINDOW: usize = 1 << 20;
/// Why a zero frame before other bytes is suspect.
const ZERO_FRAME: &str = "the record frame is all zeros";

pub(crate) struct Recovered {
    pub segment: u64,
    pub file: Arc<dyn SegmentFile>,
    pub offset: u64,
    pub next_position: u64,
}

/// Opens the index's sled database (see [`crate::embedded::open_derived`]):
/// one whose marker lies past the log in `segments` ([`index_ahead`]) or
/// that fails or panics as it opens is set aside and started afresh, to be
/// rebuilt from the log.
pub(crate) fn open_index(
    dir: &Path,
    cache_bytes: u64,
    segments: &Segments,
) -> Result<(sled::Db, Option<DerivedRebuild>), LogError> {
    let check = |db: &sled::Db| match super::index::stored_marker(db) {
        Ok(None) => Ok(None),
        Ok(Some(marker)) => index_ahead(segments, marker).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    crate::embedded::open_derived(
        dir,
        cache_bytes,
        crate::embedded::INDEX_SEGMENT_BYTES,
        "index",
        check,
    )
    .map_err(|e| match e {
        crate::embedded::OpenSledError::RemoveStale { path, source }
        | crate::embedded::OpenSledError::SetAside { path, source } => {
            LogError::io(format!("opening {}", path.display()), source)
        }
        crate::embedded::OpenSledError::Open { path, source } => {
            LogError::index(format!("opening {}", path.display()), source)
        }
    })
}

/// The id of the log's first event (`None` for an empty log): the log's
/// identity ([`crate::log::EventStore::identity`]). Reads one record of
/// the first segment, synced before any head covered it.
pub(crate) fn first_event_id(segments: &Segments) -> Result<Option<EventId>, LogError> {
    let Some(&first) = segments.numbers().first() else {
        return Ok(None);
    };
    match RecordReader::new(segments).scan(first, HEADER_LEN)? {
        Scanned::Record(body, _) => Ok(body.events.first().map(|e| e.id)),
        Scanned::End | Scanned::Damaged(_) => Ok(None),
    }
}

fn read_header(
    segments: &Segments,
    number: u64,
    file: &dyn SegmentFile,
) -> Result<Result<(), String>, LogError> {
    let mut h = [0u8; HEADER_LEN as usize];
    let n = file
        .read_at(&mut h, 0)
        .map_err(|e| LogError::io(format!("reading {}", segments.fs.path(number).display()), e))?;
    Ok(check_header(&h[..n], number))
}

/// Creates segment `number` with its header, syncs it and the directory,
/// and registers it.
pub(crate) fn create_segment(
    segments: &Segments,
    number: u64,
) -> Result<Arc<dyn SegmentFile>, LogError> {
    let fs = &segments.fs;
    let path = fs.path(number).display().to_string();
    let file = fs
        .create(number)
        .map_err(|e| LogError::io(format!("creating {path}"), e))?;
    file.write_all_at(&header(number), 0)
        .and_then(|_| file.sync_data())
        .and_then(|_| fs.sync_dir())
        .map_err(|e| LogError::io(format!("initialising {path}"), e))?;
    segments.insert(number, Arc::clone(&file));
    Ok(file)
}

/// Cuts segment `segment` (`file`) to `len` bytes and syncs it, if it is
/// longer.
pub(crate) fn cut_to(
    segments: &Segments,
    segment: u64,
    file: &dyn SegmentFile,
    len: u64,
) -> Result<(), LogError> {
    let path = || segments.fs.path(segment).display().to_string();
    let current = file
        .len()
        .map_err(|e| LogError::io(format!("reading the length of {}", path()), e))?;
    if current > len {
        file.set_len(len)
            .and_then(|()| file.sync_data())
            .map_err(|e| LogError::io(format!("cutting {} to {len} bytes", path()), e))?;
    }
    Ok(())
}

/// Why the index's `marker` cannot belong to the log in `fs`, if it cannot:
/// it covers a segment that no longer exists or bytes past a segment's end
/// (the log was cut back, or replaced by an older copy). The index is then
/// rebuilt from the log instead of refusing to open.
pub(crate) fn index_ahead(segments: &Segments, marker: Marker) -> Result<Option<String>, LogError> {
    let fs = &segments.fs;
    let io = |what: &str, e| LogError::io(what.to_string(), e);
    let numbers = fs.list().map_err(|e| io("listing segment files", e))?;
    if !numbers.contains(&marker.segment) {
        return Ok(Some(format!(
            "the index covers the log through position {} in segment {}, which no longer exists",
            marker.position, marker.segment
        )));
    }
    let len = fs
        .open(marker.segment)
        .and_then(|f| f.len())
        .map_err(|e| io("reading a segment's length", e))?;
    Ok((marker.offset > len).then(|| {
        format!(
            "the index covers the log through position {} ({} bytes into segment {}), but the segment holds {len} bytes",
            marker.position, marker.offset, marker.segment
        )
    }))
}

pub(crate) fn recover(
    segments: &Segments,
    index: &Index,
    report: &mut RecoveryReport,
) -> Result<Recovered, LogError> {
    let fs = Arc::clone(&segments.fs);
    let io = |what: &str, e| LogError::io(what.to_string(), e);
    let mut numbers = fs.list().map_err(|e| io("listing segment files", e))?;
    let marker = index.marker()?;

    // A segment created just before a crash may not have its header yet.
    if let Some(&last) = numbers.last() {
        let file = fs
            .open(last)
            .map_err(|e| io(&format!("opening {}", fs.path(last).display()), e))?;
        let len = file
            .len()
            .map_err(|e| io("reading a segment's length", e))?;
        let is_marked = marker.is_some_and(|m| m.segment >= last);
        if numbers.len() > 1
            && len <= HEADER_LEN
            && !is_marked
            && read_header(segments, last, &*file)?.is_err()
        {
            fs.remove(last)
                .and_then(|_| fs.sync_dir())
                .map_err(|e| io("removing a half-created segment", e))?;
            report.segments_removed.push(fs.path(last));
            numbers.pop();
        }
    }
    for (i, &n) in numbers.iter().enumerate() {
        if i > 0 && numbers[i - 1] + 1 != n {
            return Err(segments.corrupted(
                n,
                0,
                format!("segment {} is missing before it", numbers[i - 1] + 1),
            ));
        }
        let file = fs
            .open(n)
            .map_err(|e| io(&format!("opening {}", fs.path(n).display()), e))?;
        if let Err(reason) = read_header(segments, n, &*file)? {
            let last_and_empty = i + 1 == numbers.len()
                && numbers.len() == 1
                && marker.is_none()
                && file
                    .len()
                    .map_err(|e| io("reading a segment's length", e))?
                    <= HEADER_LEN;
            if last_and_empty {
                // The very first segment's creation was cut short: start afresh.
                file.write_all_at(&header(n), 0)
                    .and_then(|_| file.set_len(HEADER_LEN))
                    .and_then(|_| file.sync_data())
                    .map_err(|e| io("rewriting the first segment's header", e))?;
            } else {
                return Err(segments.corrupted(n, 0, reason));
            }
        }
        segments.insert(n, file);
    }
    if numbers.is_empty() {
        create_segment(segments, 0)?;
        numbers.push(0);
    }
    let last = *numbers.last().unwrap_or(&0);

    let (mut segment, mut offset, mut next_position) = match marker {
        Some(Marker {
            position,
            segment,
            offset,
        }) => {
            let file = segments.get(segment)?;
            let len = file
                .len()
                .map_err(|e| io("reading a segment's length", e))?;
            if offset > len || offset < HEADER_LEN {
                return Err(segments.corrupted(
                    segment,
                    offset,
                    format!("the index covers the log up to this offset but the segment holds {len} bytes"),
                ));
            }
            (segment, offset, position.0 + 1)
        }
        None => (numbers[0], HEADER_LEN, 0),
    };

    let mut reader = RecordReader::new(segments);
    let mut pending: Vec<IndexedRecord> = Vec::new();
    loop {
        match reader.scan(segment, offset)? {
            Scanned::Record(body, next) => {
                if body.first_position.0 != next_position {
                    return Err(segments.corrupted(
                        segment,
                        offset,
                        format!(
                            "record starts at position {} but {next_position} was expected",
                            body.first_position
                        ),
                    ));
                }
                next_position += body.events.len() as u64;
                pending.push(IndexedRecord {
                    loc: RecordLoc { segment, offset },
                    ids: body.events.iter().map(|e| e.id).collect(),
                    stream: body.stream,
                    first_version: body.first_version,
                    first_position: body.first_position,
                });
                offset = next;
                if pending.len() == REINDEX_BATCH {
                    add_pending(index, &mut pending, next_position, segment, offset)?;
                }
            }
            Scanned::End if segment < last => {
                check_end(segments, segment, offset)?;
                segment += 1;
                offset = HEADER_LEN;
            }
            Scanned::End => {
                // The end of the file, or zero-ahead space — unless a later
                // group follows the zeros: then they hide synced records.
                check_torn_tail(segments, segment, offset, ZERO_FRAME)?;
                break;
            }
            Scanned::Damaged(reason) if segment < last => {
                return Err(segments.corrupted(segment, offset, reason));
            }
            Scanned::Damaged(reason) => {
                // A torn tail — written but never synced, so never acknowledged —
                // unless a later group follows the damage: then it was synced.
                check_torn_tail(segments, segment, offset, &reason)?;
                let (bytes, records) = torn_extent(segments, segment, offset)?;
                report.tail_bytes_cut = bytes;
                report.tail_records_cut = records;
                report.tail_reason = Some(reason);
                break;
            }
        }
    }
    // Nothing past the end of the log survives: not a torn group's stale
    // bytes, nor zeros (the zero-ahead writes them again).
    cut_to(segments, segment, &*segments.get(segment)?, offset)?;
    if !pending.is_empty() {
        add_pending(index, &mut pending, next_position, segment, offset)?;
    }
    report.events_reindexed = next_position - marker.map_or(0, |m| m.position.0 + 1);
    report.head = next_position.checked_sub(1).map(GlobalPosition);
    Ok(Recovered {
        file: segments.get(segment)?,
        segment,
        offset,
        next_position,
    })
}

/// What a torn tail at `offset` of `segment` holds: its bytes up to the
/// last non-zero byte of the file (zero-ahead space is not data), and the
/// records in them — the damaged one and any intact ones of the same group
/// after it.
fn torn_extent(segments: &Segments, segment: u64, offset: u64) -> Result<(u64, u64), LogError> {
    let file = segments.get(segment)?;
    let io = |e| {
        LogError::io(
            format!("reading {}", segments.fs.path(segment).display()),
            e,
        )
    };
    let len = file.len().map_err(io)?;
    // The last non-zero byte, read backwards a window at a time.
    let mut end = len;
    let mut buf = vec![0u8; TAIL_WINDOW];
    while end > offset {
        let start = end.saturating_sub(TAIL_WINDOW as u64).max(offset);
        let want = (end - start) as usize;
        let n = file.read_at(&mut buf[..want], start).map_err(io)?;
        match buf[..n].iter().rposition(|&b| b != 0) {
            Some(p) => {
                end = start + p as u64 + 1;
                break;
            }
            None => end = start,
        }
    }
    let mut records = u64::from(end > offset);
    let mut at = offset;
    while let Some((found, _)) = find_record_after(segments, segment, at, |_| true)? {
        if found >= end {
            break;
        }
        records += 1;
        at = found;
    }
    Ok((end - offset, records))
}

/// Damage (or a zero frame) at `offset` of the last segment is a torn tail
/// only if it lies in the last group commit: every intact record after it
/// must belong to a group that began at or before `offset`. A record of a
/// group that began after the damage proves the damaged group was synced
/// before it (the writer syncs a group before writing the next), so the
/// damage is corruption.
fn check_torn_tail(
    segments: &Segments,
    segment: u64,
    offset: u64,
    reason: &str,
) -> Result<(), LogError> {
    match find_record_after(segments, segment, offset, |body| body.group_start > offset)? {
        None => Ok(()),
        Some((_, group_start)) => Err(segments.corrupted(
            segment,
            offset,
            format!(
                "{reason}; a later group commit at offset {group_start} is intact, so this record had been synced"
            ),
        )),
    }
}

/// The log of `segment` ends at `offset` (a zero frame, or the end of the
/// file) where all of it is known to have been synced: in a segment other
/// than the last (synced whole before the next one was created), or before
/// the head (`verify`). An intact record after the zeros then means synced
/// records were zeroed.
fn check_end(segments: &Segments, segment: u64, offset: u64) -> Result<(), LogError> {
    match find_record_after(segments, segment, offset, |_| true)? {
        None => Ok(()),
        Some((at, _)) => Err(segments.corrupted(
            segment,
            offset,
            format!("{ZERO_FRAME}, but an intact record follows at offset {at}"),
        )),
    }
}

/// Looks through `segment` after `offset` for an intact record for which
/// `proves` holds; returns its offset and the start of its group commit.
///
/// Every byte is tried as the start of a record, except in runs of zeros,
/// which are skipped a window at a time (zero-ahead space may be megabytes
/// long): no record starts where its four length bytes are all zero.
fn find_record_after(
    segments: &Segments,
    segment: u64,
    offset: u64,
    proves: impl Fn(&RecordBody) -> bool,
) -> Result<Option<(u64, u64)>, LogError> {
    let file = segments.get(segment)?;
    let io = |e| {
        LogError::io(
            format!("reading {}", segments.fs.path(segment).display()),
            e,
        )
    };
    let len = file.len().map_err(io)?;
    let mut window = Window::new(&*file);
    let mut at = offset + 1;
    while at + FRAME_LEN as u64 <= len {
        let ahead = window.at(at, 1).map_err(io)?;
        match ahead.iter().position(|&b| b != 0) {
            Some(p) => {
                // The first non-zero byte is at best the last length byte.
                at = (at + p as u64).saturating_sub(3).max(at);
            }
            None if ahead.is_empty() => break,
            None => {
                at += ahead.len() as u64;
                continue;
            }
        }
        let frame = window.at(at, FRAME_LEN).map_err(io)?;
        if frame.len() < FRAME_LEN {
            break;
        }
        let record_len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]);
        let total = FRAME_LEN as u64 + u64::from(record_len);
        if record_len != 0 && record_len <= MAX_RECORD_LEN && at + total <= len {
            if let Some((body, size)) = parse_record(window.at(at, total as usize).map_err(io)?) {
                if proves(&body) {
                    return Ok(Some((at, body.group_start)));
                }
                at += size as u64;
                continue;
            }
        }
        at += 1;
    }
    Ok(None)
}

/// Bytes of a file read through a window, for [`find_record_after`].
struct Window<'a> {
    file: &'a dyn SegmentFile,
    start: u64,
    bytes: Vec<u8>,
    /// The window reaches the end of the file.
    at_end: bool,
}

impl<'a> Window<'a> {
    fn new(file: &'a dyn SegmentFile) -> Self {
        Window {
            file,
            start: 0,
            bytes: Vec::new(),
            at_end: false,
        }
    }

    /// The bytes from `at` on that the window holds, once it holds at least
    /// `want` of them (or all up to the end of the file).
    fn at(&mut self, at: u64, want: usize) -> std::io::Result<&[u8]> {
        let end = self.start + self.bytes.len() as u64;
        let held = at >= self.start && (at + want as u64 <= end || (self.at_end && at <= end));
        if !held {
            let size = want.max(TAIL_WINDOW);
            self.bytes.resize(size, 0);
            let n = self.file.read_at(&mut self.bytes, at)?;
            self.bytes.truncate(n);
            self.start = at;
            self.at_end = n < size;
        }
        Ok(&self.bytes[(at - self.start) as usize..])
    }
}

fn add_pending(
    index: &Index,
    pending: &mut Vec<IndexedRecord>,
    next_position: u64,
    segment: u64,
    offset: u64,
) -> Result<(), LogError> {
    index.add(
        pending,
        Marker {
            position: GlobalPosition(next_position - 1),
            segment,
            offset,
        },
    )?;
    pending.clear();
    Ok(())
}

/// Scans every record of every segment; returns the number of events.
pub(crate) fn verify(
    segments: &Segments,
    head: Option<GlobalPosition>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64, LogError> {
    let mut reader = RecordReader::new(segments);
    let mut next_position = 0u64;
    let limit = head.map_or(0, |h| h.0 + 1);
    let mut reported = 0u64;
    for n in segments.numbers() {
        let mut offset = HEADER_LEN;
        while next_position < limit {
            match reader.scan(n, offset)? {
                Scanned::Record(body, next) => {
                    if body.first_position.0 != next_position {
                        return Err(segments.corrupted(
                            n,
                            offset,
                            format!(
                                "record starts at position {} but {next_position} was expected",
                                body.first_position
                            ),
                        ));
                    }
                    next_position += body.events.len() as u64;
                    offset = next;
                    if next_position - reported >= PROGRESS_EVERY {
                        reported = next_position;
                        progress(next_position, limit);
                    }
                }
                Scanned::End => {
                    check_end(segments, n, offset)?;
                    break;
                }
                Scanned::Damaged(reason) => return Err(segments.corrupted(n, offset, reason)),
            }
        }
    }
    if next_position < limit {
        return Err(segments.corrupted(
            segments.numbers().last().copied().unwrap_or(0),
            0,
            format!(
                "the log ends at position {next_position} but {limit} events were acknowledged"
            ),
        ));
    }
    progress(next_position, limit);
    Ok(next_position)
}

/// How many events `verify` checks between two progress reports.
const PROGRESS_EVERY: u64 = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::file::fs::OsFs;
    use crate::log::file::segment::{encode_record, RecordBodyRef};
    use crate::log::types::{
        ActorId, EventData, Metadata, Source, StreamId, StreamVersion, TenantId, Timestamp,
    };

    /// A framed record of one event whose group began at `group_start`,
    /// its payload sized so the framed length is a multiple of 256 (the low
    /// length byte is zero) when `round` is set.
    fn record(group_start: u64, round: bool) -> Vec<u8> {
        let stream = StreamId::new(TenantId::new("kent").unwrap(), "case", "c1").unwrap();
        for extra in 0..1024 {
            let meta = Metadata::new(ActorId::new("pc-1"), Source::system("test"));
            let events = [EventData::new("E", vec![7; 100 + extra], meta)];
            let body = RecordBodyRef {
                stream: &stream,
                first_version: StreamVersion(0),
                first_position: GlobalPosition(0),
                recorded: Timestamp(0),
                group_start,
                events: &events,
            };
            let mut out = Vec::new();
            encode_record(&body, &mut out).unwrap();
            if !round || (out.len() - FRAME_LEN).is_multiple_of(256) {
                return out;
            }
        }
        panic!("no payload size gives a round length")
    }

    /// Segment 0 holding a header and then `parts` at their offsets.
    fn segment(parts: &[(u64, &[u8])]) -> (tempfile::TempDir, Segments) {
        let dir = tempfile::tempdir().unwrap();
        let segments = Segments::new(Arc::new(OsFs::new(dir.path()).unwrap()), 1 << 20);
        let file = create_segment(&segments, 0).unwrap();
        for (at, bytes) in parts {
            file.write_all_at(bytes, *at).unwrap();
        }
        (dir, segments)
    }

    #[test]
    fn a_zero_frame_ends_the_log_and_a_zero_length_with_a_checksum_is_damage() {
        let r = record(HEADER_LEN, false);
        let end = HEADER_LEN + r.len() as u64;
        let zeros = vec![0u8; 64 * 1024];
        let (_dir, segments) = segment(&[(HEADER_LEN, &r), (end, &zeros)]);
        let mut reader = RecordReader::new(&segments);
        assert!(matches!(
            reader.scan(0, HEADER_LEN).unwrap(),
            Scanned::Record(_, next) if next == end
        ));
        assert!(matches!(reader.scan(0, end).unwrap(), Scanned::End));
        assert!(check_torn_tail(&segments, 0, end, ZERO_FRAME).is_ok());
        assert!(check_end(&segments, 0, end).is_ok());

        let (_dir, segments) = segment(&[(HEADER_LEN, &[0, 0, 0, 0, 1, 0, 0, 0])]);
        let mut reader = RecordReader::new(&segments);
        assert!(matches!(
            reader.scan(0, HEADER_LEN).unwrap(),
            Scanned::Damaged(_)
        ));
    }

    /// Records after megabytes of zeros are found, wherever the window
    /// boundaries fall and even when their length's low byte is zero.
    #[test]
    fn a_later_group_after_long_runs_of_zeros_is_found() {
        let first = record(HEADER_LEN, false);
        let end = HEADER_LEN + first.len() as u64;
        let zeros = vec![0u8; 3 << 20];
        for later_at in [
            end + 8,
            end + 1 + TAIL_WINDOW as u64 - 5,
            end + (2 << 20) + 13,
            end + (3 << 20) - 700,
        ] {
            let later = record(later_at, true);
            assert_eq!(later[0], 0, "the low length byte is zero");
            let (_dir, segments) =
                segment(&[(HEADER_LEN, &first), (end, &zeros), (later_at, &later)]);
            let found = find_record_after(&segments, 0, end, |b| b.group_start > end).unwrap();
            assert_eq!(found, Some((later_at, later_at)), "at {later_at}");
            let err = check_torn_tail(&segments, 0, end, ZERO_FRAME).unwrap_err();
            assert!(err.to_string().contains("later group commit"), "{err}");
            assert!(matches!(err, LogError::Corrupted { offset, .. } if offset == end));
            let err = check_end(&segments, 0, end).unwrap_err();
            assert!(err.to_string().contains("intact record follows"), "{err}");
            // A record of the same (torn) group proves nothing.
            assert_eq!(
                find_record_after(&segments, 0, end, |b| b.group_start > later_at).unwrap(),
                None
            );
        }
    }

    /// Garbage and zeros after a torn record, then a record of the same
    /// group: a torn tail.
    #[test]
    fn a_torn_group_followed_by_zeros_is_a_torn_tail() {
        let first = record(HEADER_LEN, false);
        let end = HEADER_LEN + first.len() as u64;
        let torn = record(end, false);
        let same_group = record(end, true);
        let garbage = [0x5au8; 37];
        let zeros = vec![0u8; 1 << 20];
        let after = end + torn.len() as u64;
        let (_dir, segments) = segment(&[
            (HEADER_LEN, &first),
            (end, &torn[..torn.len() / 2]),
            (end + 100, &garbage),
            (after, &same_group),
            (after + same_group.len() as u64, &zeros),
        ]);
        assert!(check_torn_tail(&segments, 0, end, "torn").is_ok());
        assert_eq!(
            find_record_after(&segments, 0, end, |_| true).unwrap(),
            Some((after, end))
        );
    }

    #[test]
    fn cut_to_shortens_only_longer_files() {
        let zeros = vec![0u8; 10_000];
        let (_dir, segments) = segment(&[(HEADER_LEN, &zeros)]);
        let file = segments.get(0).unwrap();
        cut_to(&segments, 0, &*file, 20_000).unwrap();
        assert_eq!(file.len().unwrap(), HEADER_LEN + 10_000);
        cut_to(&segments, 0, &*file, 100).unwrap();
        assert_eq!(file.len().unwrap(), 100);
    }
}
