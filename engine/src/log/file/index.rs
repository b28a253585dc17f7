//! The derived indexes in sled: streams, event ids, tenant records, and the
//! "indexed through" marker.
//!
//! Everything here can be rebuilt from the segment files. All keys live in one
//! sled tree so that one `apply_batch` — atomic across crashes — writes a
//! group's entries together with the marker that covers them:
//!
//! | key | value |
//! |---|---|
//! | `S` tenant `0` category `0` id `0` first version(BE u64) | segment, offset, event count |
//! | `E` event id (16 bytes) | segment, offset, index in record |
//! | `T` tenant `0` first position(BE u64) | segment, offset, event count |
//!
//! Stream and tenant entries are one per record (one per append), not one per
//! event: sled inserts are the costliest part of an append.
//! | `M` | last indexed position, segment, offset just past its record |
//!
//! Identifier parts never contain a 0 byte (they are validated), so the
//! separators make every prefix unambiguous.

use crate::log::error::LogError;
use crate::log::types::{Direction, EventId, GlobalPosition, StreamId, StreamVersion, TenantId};

use super::segment::RecordBody;

const MARKER_KEY: &[u8] = b"M";

/// Where a record starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordLoc {
    pub segment: u64,
    pub offset: u64,
}

/// Where one event is: its record and its index inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EventLoc {
    pub record: RecordLoc,
    pub index: u32,
}

/// Everything before this point of the log is indexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Marker {
    pub position: GlobalPosition,
    pub segment: u64,
    pub offset: u64,
}

fn stream_prefix(stream: &StreamId) -> Vec<u8> {
    let mut k = Vec::with_capacity(
        4 + stream.tenant().as_str().len() + stream.category().len() + stream.id().len(),
    );
    k.push(b'S');
    for part in [stream.tenant().as_str(), stream.category(), stream.id()] {
        k.extend_from_slice(part.as_bytes());
        k.push(0);
    }
    k
}

fn tenant_prefix(tenant: &TenantId) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + tenant.as_str().len() + 8);
    k.push(b'T');
    k.extend_from_slice(tenant.as_str().as_bytes());
    k.push(0);
    k
}

fn event_key(id: EventId) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = b'E';
    k[1..].copy_from_slice(id.0.as_bytes());
    k
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    bytes
        .get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_be_bytes)
}

fn bad_entry(what: &str) -> LogError {
    LogError::index(
        format!("decoding a {what} index entry"),
        sled::Error::Unsupported(format!(
            "malformed {what} index entry; delete the index folder to rebuild it"
        )),
    )
}

/// The sled side of a [`super::LogStore`].
pub(crate) struct Index {
    db: sled::Db,
    tree: sled::Tree,
}

impl Index {
    pub fn new(db: sled::Db) -> Result<Self, LogError> {
        let tree = db
            .open_tree("log")
            .map_err(|e| LogError::index("opening the log index", e))?;
        Ok(Index { db, tree })
    }

    pub fn marker(&self) -> Result<Option<Marker>, LogError> {
        let Some(v) = self
            .tree
            .get(MARKER_KEY)
            .map_err(|e| LogError::index("reading the marker", e))?
        else {
            return Ok(None);
        };
        if v.len() != 24 {
            return Err(bad_entry("marker"));
        }
        Ok(Some(Marker {
            position: GlobalPosition(u64_at(&v, 0)),
            segment: u64_at(&v, 8),
            offset: u64_at(&v, 16),
        }))
    }

    /// Adds the entries for one record at `loc` to `batch`.
    pub fn add_record(batch: &mut sled::Batch, loc: RecordLoc, body: &RecordBody) {
        Self::add_entries(
            batch,
            loc,
            &body.stream,
            body.first_version,
            body.first_position,
            body.events.iter().map(|e| e.id),
        );
    }

    /// Adds the entries for a record of events with these ids.
    pub fn add_entries(
        batch: &mut sled::Batch,
        loc: RecordLoc,
        stream: &StreamId,
        first_version: StreamVersion,
        first_position: GlobalPosition,
        ids: impl Iterator<Item = EventId>,
    ) {
        let mut count = 0u32;
        for id in ids {
            let mut value = [0u8; 20];
            value[..8].copy_from_slice(&loc.segment.to_be_bytes());
            value[8..16].copy_from_slice(&loc.offset.to_be_bytes());
            value[16..20].copy_from_slice(&count.to_be_bytes());
            batch.insert(&event_key(id)[..], &value[..]);
            count += 1;
        }
        let mut value = [0u8; 20];
        value[..8].copy_from_slice(&loc.segment.to_be_bytes());
        value[8..16].copy_from_slice(&loc.offset.to_be_bytes());
        value[16..20].copy_from_slice(&count.to_be_bytes());
        let mut key = stream_prefix(stream);
        key.extend_from_slice(&first_version.0.to_be_bytes());
        batch.insert(key, &value[..]);
        let mut key = tenant_prefix(stream.tenant());
        key.extend_from_slice(&first_position.0.to_be_bytes());
        batch.insert(key, &value[..]);
    }

    pub fn set_marker(batch: &mut sled::Batch, marker: Marker) {
        let mut v = [0u8; 24];
        v[..8].copy_from_slice(&marker.position.0.to_be_bytes());
        v[8..16].copy_from_slice(&marker.segment.to_be_bytes());
        v[16..24].copy_from_slice(&marker.offset.to_be_bytes());
        batch.insert(MARKER_KEY, &v[..]);
    }

    pub fn apply(&self, batch: sled::Batch) -> Result<(), LogError> {
        self.tree
            .apply_batch(batch)
            .map_err(|e| LogError::index("writing index entries", e))
    }

    fn record_entry(
        k: &[u8],
        v: &[u8],
        prefix_len: usize,
        what: &str,
    ) -> Result<(u64, RecordLoc, u32), LogError> {
        if v.len() != 20 || k.len() != prefix_len + 8 {
            return Err(bad_entry(what));
        }
        Ok((
            u64_at(k, prefix_len),
            RecordLoc {
                segment: u64_at(v, 0),
                offset: u64_at(v, 8),
            },
            u32_at(v, 16),
        ))
    }

    pub fn stream_head(&self, stream: &StreamId) -> Result<Option<StreamVersion>, LogError> {
        let prefix = stream_prefix(stream);
        match self.tree.scan_prefix(&prefix).next_back() {
            None => Ok(None),
            Some(Ok((k, v))) => {
                let (first, _, count) = Self::record_entry(&k, &v, prefix.len(), "stream")?;
                Ok(Some(StreamVersion(first + u64::from(count).max(1) - 1)))
            }
            Some(Err(e)) => Err(LogError::index("reading a stream head", e)),
        }
    }

    /// Locations of up to `limit` events of a stream from `from` in `direction`.
    pub fn stream_events(
        &self,
        stream: &StreamId,
        direction: Direction,
        from: StreamVersion,
        limit: usize,
    ) -> Result<Vec<EventLoc>, LogError> {
        let prefix = stream_prefix(stream);
        let key = |v: u64| {
            let mut k = prefix.clone();
            k.extend_from_slice(&v.to_be_bytes());
            k
        };
        let err = |e| LogError::index("reading a stream", e);
        let mut out = Vec::new();
        match direction {
            Direction::Forward => {
                // The record holding `from` may start before it.
                let start = match self.tree.range(key(0)..=key(from.0)).next_back() {
                    Some(item) => u64_at(&item.map_err(err)?.0, prefix.len()),
                    None => from.0,
                };
                for item in self.tree.range(key(start)..=key(u64::MAX)) {
                    let (k, v) = item.map_err(err)?;
                    let (first, record, count) =
                        Self::record_entry(&k, &v, prefix.len(), "stream")?;
                    for index in 0..count {
                        if first + u64::from(index) >= from.0 {
                            out.push(EventLoc { record, index });
                            if out.len() == limit {
                                return Ok(out);
                            }
                        }
                    }
                }
            }
            Direction::Backward => {
                for item in self.tree.range(key(0)..=key(from.0)).rev() {
                    let (k, v) = item.map_err(err)?;
                    let (first, record, count) =
                        Self::record_entry(&k, &v, prefix.len(), "stream")?;
                    for index in (0..count).rev() {
                        if first + u64::from(index) <= from.0 {
                            out.push(EventLoc { record, index });
                            if out.len() == limit {
                                return Ok(out);
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    pub fn event(&self, id: EventId) -> Result<Option<EventLoc>, LogError> {
        let Some(v) = self
            .tree
            .get(event_key(id))
            .map_err(|e| LogError::index("looking up an event id", e))?
        else {
            return Ok(None);
        };
        if v.len() != 20 {
            return Err(bad_entry("event id"));
        }
        Ok(Some(EventLoc {
            record: RecordLoc {
                segment: u64_at(&v, 0),
                offset: u64_at(&v, 8),
            },
            index: u32_at(&v, 16),
        }))
    }

    /// The tenant's records that hold events at `from` or later, in order:
    /// `(first position, location, count)`.
    pub fn tenant_records(
        &self,
        tenant: &TenantId,
        from: GlobalPosition,
    ) -> impl Iterator<Item = Result<(GlobalPosition, RecordLoc, u32), LogError>> + '_ {
        let prefix = tenant_prefix(tenant);
        let key = |p: u64| {
            let mut k = prefix.clone();
            k.extend_from_slice(&p.to_be_bytes());
            k
        };
        // The record holding `from` may start before it.
        let start = self
            .tree
            .range(key(0)..=key(from.0))
            .next_back()
            .and_then(Result::ok)
            .map_or(from.0, |(k, _)| u64_at(&k, prefix.len()));
        let prefix_len = prefix.len();
        self.tree
            .range(key(start)..=key(u64::MAX))
            .map(move |item| {
                let (k, v) = item.map_err(|e| LogError::index("reading a tenant's records", e))?;
                let (first, loc, count) = Self::record_entry(&k, &v, prefix_len, "tenant record")?;
                Ok((GlobalPosition(first), loc, count))
            })
    }

    pub async fn flush(&self) -> Result<(), LogError> {
        self.db
            .flush_async()
            .await
            .map(|_| ())
            .map_err(|e| LogError::index("flushing the index", e))
    }
}
