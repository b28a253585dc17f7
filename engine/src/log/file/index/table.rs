//! The in-memory table: index entries of records acknowledged since the last
//! flush to sled.
//!
//! The writer adds a group's records here after its `fdatasync` and before it
//! answers the callers, so a reader that sees a position finds its entries. A
//! full (or old) table is frozen and flushed to sled by the indexer thread in
//! one batch with coarse entries; until that batch is applied, readers find
//! the entries here.

use std::collections::HashMap;

use super::keys::Entry;
use super::{EventLoc, Marker, RecordLoc};
use crate::log::types::{EventId, GlobalPosition, StreamId, StreamVersion, TenantId};

/// One appended record, as the index needs it.
#[derive(Debug, Clone)]
pub(crate) struct IndexedRecord {
    pub loc: RecordLoc,
    pub stream: StreamId,
    pub first_version: StreamVersion,
    pub first_position: GlobalPosition,
    pub ids: Vec<EventId>,
}

impl IndexedRecord {
    pub fn entry(&self) -> Entry {
        Entry {
            version: self.first_version.0,
            position: self.first_position.0,
            loc: self.loc,
            count: self.ids.len() as u32,
        }
    }
}

/// Entries of a contiguous range of positions, `[first_position, next_position)`.
#[derive(Debug)]
pub(crate) struct Table {
    pub first_position: u64,
    pub next_position: u64,
    /// The marker to store once this table is in sled.
    pub end: Option<Marker>,
    pub ids: HashMap<EventId, EventLoc>,
    pub streams: HashMap<StreamId, Vec<Entry>>,
    pub tenants: HashMap<TenantId, Vec<Entry>>,
}

impl Table {
    pub fn new(first_position: u64) -> Self {
        Table {
            first_position,
            next_position: first_position,
            end: None,
            ids: HashMap::new(),
            streams: HashMap::new(),
            tenants: HashMap::new(),
        }
    }

    pub fn events(&self) -> u64 {
        self.next_position - self.first_position
    }

    pub fn add(&mut self, record: &IndexedRecord) {
        let entry = record.entry();
        for (i, id) in record.ids.iter().enumerate() {
            self.ids.insert(
                *id,
                EventLoc {
                    record: record.loc,
                    index: i as u32,
                },
            );
        }
        match self.streams.get_mut(&record.stream) {
            Some(list) => list.push(entry),
            None => {
                self.streams.insert(record.stream.clone(), vec![entry]);
            }
        }
        match self.tenants.get_mut(record.stream.tenant()) {
            Some(list) => list.push(entry),
            None => {
                self.tenants
                    .insert(record.stream.tenant().clone(), vec![entry]);
            }
        }
        self.next_position = self.next_position.max(entry.end_position());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_gathers_entries_per_stream_and_tenant() {
        let s: StreamId = "kent/case/C-1".parse().unwrap();
        let mut t = Table::new(10);
        let rec = |pos: u64, ver: u64, n: usize| IndexedRecord {
            loc: RecordLoc {
                segment: 0,
                offset: pos * 100,
            },
            stream: s.clone(),
            first_version: StreamVersion(ver),
            first_position: GlobalPosition(pos),
            ids: (0..n).map(|_| EventId::new()).collect(),
        };
        let a = rec(10, 0, 2);
        let b = rec(12, 2, 1);
        t.add(&a);
        t.add(&b);
        assert_eq!(t.events(), 3);
        assert_eq!(t.streams[&s].len(), 2);
        assert_eq!(t.tenants[s.tenant()].len(), 2);
        assert_eq!(t.ids[&a.ids[1]].index, 1);
        assert_eq!(t.ids[&b.ids[0]].record.offset, 1200);
    }
}
