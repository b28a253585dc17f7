//! sled keys and values of the log index, and the packed record entries that
//! stream and tenant keys hold.
//!
//! | key | value |
//! |---|---|
//! | `V` | index format (BE u32) |
//! | `M` | last indexed position, segment, offset just past its record |
//! | `S` tenant `0` category `0` id `0` first version (BE u64) | packed [`Entry`]s of the stream |
//! | `T` tenant `0` first position (BE u64) | packed [`Entry`]s of the tenant |
//! | `R` run id (BE u64) | an event-id run's summary (see `runs`) |
//! | `P` run id (BE u64) page (BE u32) | a page of an event-id run |
//!
//! Identifier parts never contain a 0 byte (they are validated), so the
//! separators make every prefix unambiguous. One `S` or `T` key covers all the
//! records a stream or tenant gained in one flushed table, not one record.

use crate::log::error::LogError;
use crate::log::types::{StreamId, TenantId};

use super::{Marker, RecordLoc};
use crate::log::types::GlobalPosition;

pub(crate) const MARKER_KEY: &[u8] = b"M";
pub(crate) const FORMAT_KEY: &[u8] = b"V";
/// Format 1 had one sled entry per record and per event id; format 2 kept
/// recent entries in memory and flushed them coarsely; format 3 blocks the
/// event-id runs' Bloom filters; format 4 adds each run's greatest id.
pub(crate) const FORMAT: u32 = 4;
pub(crate) const RUN_PREFIX: &[u8] = b"R";
pub(crate) const PAGE_PREFIX: &[u8] = b"P";

pub(crate) fn stream_prefix(stream: &StreamId) -> Vec<u8> {
    let mut k = Vec::with_capacity(
        12 + stream.tenant().as_str().len() + stream.category().len() + stream.id().len(),
    );
    k.push(b'S');
    for part in [stream.tenant().as_str(), stream.category(), stream.id()] {
        k.extend_from_slice(part.as_bytes());
        k.push(0);
    }
    k
}

pub(crate) fn tenant_prefix(tenant: &TenantId) -> Vec<u8> {
    let mut k = Vec::with_capacity(10 + tenant.as_str().len());
    k.push(b'T');
    k.extend_from_slice(tenant.as_str().as_bytes());
    k.push(0);
    k
}

/// `prefix` followed by `n` big-endian, so keys sort by `n`.
pub(crate) fn with_u64(prefix: &[u8], n: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 8);
    k.extend_from_slice(prefix);
    k.extend_from_slice(&n.to_be_bytes());
    k
}

pub(crate) fn run_key(run: u64) -> Vec<u8> {
    with_u64(RUN_PREFIX, run)
}

pub(crate) fn page_key(run: u64, page: u32) -> Vec<u8> {
    let mut k = with_u64(PAGE_PREFIX, run);
    k.extend_from_slice(&page.to_be_bytes());
    k
}

pub(crate) fn u64_at(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

pub(crate) fn u32_at(bytes: &[u8], at: usize) -> u32 {
    bytes
        .get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_be_bytes)
}

pub(crate) fn bad_entry(what: &str) -> LogError {
    LogError::index(
        format!("decoding a {what} index entry"),
        sled::Error::Unsupported(format!(
            "malformed {what} index entry; delete the index folder to rebuild it"
        )),
    )
}

pub(crate) fn encode_marker(marker: Marker) -> [u8; 24] {
    let mut v = [0u8; 24];
    v[..8].copy_from_slice(&marker.position.0.to_be_bytes());
    v[8..16].copy_from_slice(&marker.segment.to_be_bytes());
    v[16..24].copy_from_slice(&marker.offset.to_be_bytes());
    v
}

pub(crate) fn decode_marker(v: &[u8]) -> Result<Marker, LogError> {
    if v.len() != 24 {
        return Err(bad_entry("marker"));
    }
    Ok(Marker {
        position: GlobalPosition(u64_at(v, 0)),
        segment: u64_at(v, 8),
        offset: u64_at(v, 16),
    })
}

/// One record as the stream and tenant indexes see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Stream version of the record's first event.
    pub version: u64,
    /// Global position of the record's first event.
    pub position: u64,
    pub loc: RecordLoc,
    /// Events in the record (at least 1).
    pub count: u32,
}

pub(crate) const ENTRY_LEN: usize = 36;

impl Entry {
    pub fn last_version(&self) -> u64 {
        self.version + u64::from(self.count.max(1)) - 1
    }

    pub fn end_position(&self) -> u64 {
        self.position + u64::from(self.count.max(1))
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
        out.extend_from_slice(&self.loc.segment.to_be_bytes());
        out.extend_from_slice(&self.loc.offset.to_be_bytes());
        out.extend_from_slice(&self.count.to_be_bytes());
    }

    /// Decodes a packed list; `what` names the index for the error.
    pub fn decode_all(v: &[u8], what: &str) -> Result<Vec<Entry>, LogError> {
        if v.is_empty() || !v.len().is_multiple_of(ENTRY_LEN) {
            return Err(bad_entry(what));
        }
        Ok(v.chunks_exact(ENTRY_LEN)
            .map(|c| Entry {
                version: u64_at(c, 0),
                position: u64_at(c, 8),
                loc: RecordLoc {
                    segment: u64_at(c, 16),
                    offset: u64_at(c, 24),
                },
                count: u32_at(c, 32),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_bad_lengths_are_errors() {
        let e = Entry {
            version: 7,
            position: 1_000,
            loc: RecordLoc {
                segment: 2,
                offset: 4_096,
            },
            count: 3,
        };
        let mut v = Vec::new();
        e.encode_into(&mut v);
        e.encode_into(&mut v);
        assert_eq!(Entry::decode_all(&v, "stream").unwrap(), vec![e, e]);
        assert_eq!(e.last_version(), 9);
        assert_eq!(e.end_position(), 1_003);
        assert!(Entry::decode_all(&v[..35], "stream").is_err());
        assert!(Entry::decode_all(&[], "stream").is_err());
        let m = Marker {
            position: GlobalPosition(5),
            segment: 1,
            offset: 99,
        };
        assert_eq!(decode_marker(&encode_marker(m)).unwrap(), m);
        assert!(decode_marker(&[1, 2]).is_err());
    }
}
