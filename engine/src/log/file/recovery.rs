//! Opening after a crash: clean sled's leftovers, cut a torn tail, re-index.
//!
//! What may be damaged after a crash or power cut is bounded by what was not
//! yet synced: only the last group commit of the last segment. Everything the
//! index marker covers was synced before it was indexed, and every segment but
//! the last was synced before the next was created. So:
//!
//! - damage in a segment other than the last is corruption (an error naming
//!   the segment and offset), never silently skipped;
//! - damage in the last segment after the marker is a torn tail: the file is
//!   truncated at the first bad record and synced;
//! - a last segment whose header never reached the disk is removed.

use std::path::Path;
use std::sync::Arc;

use super::fs::SegmentFile;
use super::index::{Index, IndexedRecord, Marker, RecordLoc};
use super::segment::{
    check_header, header, parse_record, RecordReader, Scanned, Segments, HEADER_LEN,
};
use crate::log::error::LogError;
use crate::log::types::GlobalPosition;

/// Records handed to the index at a time while re-indexing.
const REINDEX_BATCH: usize = 1024;

pub(crate) struct Recovered {
    pub segment: u64,
    pub file: Arc<dyn SegmentFile>,
    pub offset: u64,
    pub next_position: u64,
}

/// Opens the index's sled database (see [`crate::embedded::open_sled`]).
pub(crate) fn open_sled(dir: &Path, cache_bytes: u64) -> Result<sled::Db, LogError> {
    crate::embedded::open_sled(dir, cache_bytes).map_err(|e| match e {
        crate::embedded::OpenSledError::RemoveStale { path, source } => {
            LogError::io(format!("removing stale {}", path.display()), source)
        }
        crate::embedded::OpenSledError::Open { path, source } => {
            LogError::index(format!("opening {}", path.display()), source)
        }
    })
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

pub(crate) fn recover(segments: &Segments, index: &Index) -> Result<Recovered, LogError> {
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
                segment += 1;
                offset = HEADER_LEN;
            }
            Scanned::End => break,
            Scanned::Damaged(reason) if segment < last => {
                return Err(segments.corrupted(segment, offset, reason));
            }
            Scanned::Damaged(reason) => {
                // A torn tail — written but never synced, so never acknowledged —
                // unless a later group follows the damage: then it was synced.
                check_torn_tail(segments, segment, offset, &reason)?;
                let file = segments.get(segment)?;
                file.set_len(offset)
                    .and_then(|_| file.sync_data())
                    .map_err(|e| io("truncating a torn tail", e))?;
                break;
            }
        }
    }
    if !pending.is_empty() {
        add_pending(index, &mut pending, next_position, segment, offset)?;
    }
    Ok(Recovered {
        file: segments.get(segment)?,
        segment,
        offset,
        next_position,
    })
}

/// Damage at `offset` of the last segment is a torn tail only if it lies in
/// the last group commit: every valid record after it must belong to a group
/// that began at or before `offset`. A record of a group that began after the
/// damage proves the damaged group was synced before it (the writer syncs a
/// group before writing the next), so the damage is corruption.
fn check_torn_tail(
    segments: &Segments,
    segment: u64,
    offset: u64,
    reason: &str,
) -> Result<(), LogError> {
    let file = segments.get(segment)?;
    let len = file
        .len()
        .map_err(|e| LogError::io("reading a segment's length", e))?;
    let mut rest = vec![0u8; len.saturating_sub(offset) as usize];
    let n = file.read_at(&mut rest, offset).map_err(|e| {
        LogError::io(
            format!("reading {}", segments.fs.path(segment).display()),
            e,
        )
    })?;
    rest.truncate(n);
    let mut at = 1;
    while at < rest.len() {
        match parse_record(&rest[at..]) {
            Some((body, size)) => {
                if body.group_start > offset {
                    return Err(segments.corrupted(
                        segment,
                        offset,
                        format!(
                            "{reason}; a later group commit at offset {} is intact, so this record had been synced",
                            body.group_start
                        ),
                    ));
                }
                at += size;
            }
            None => at += 1,
        }
    }
    Ok(())
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
pub(crate) fn verify(segments: &Segments, head: Option<GlobalPosition>) -> Result<u64, LogError> {
    let mut reader = RecordReader::new(segments);
    let mut next_position = 0u64;
    let limit = head.map_or(0, |h| h.0 + 1);
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
                }
                Scanned::End => break,
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
    Ok(next_position)
}
