//! The event-id index on disk: immutable sorted runs with Bloom filters.
//!
//! Every flushed table writes its event ids as one run: entries sorted by id,
//! cut into pages of [`PAGE_ENTRIES`] (one sled value each), plus a summary
//! (`R` key) holding the first id of every page and a Bloom filter. Summaries
//! are loaded at open and kept in memory, so looking an id up costs one
//! Bloom probe per run and, only when a filter says "maybe", one page read
//! and a binary search.
//!
//! Writing a few large values instead of one sled entry per event is what
//! keeps sled off the critical path of an append: sled inserts cost several
//! microseconds each. Runs are merged in the background (size-tiered: eight
//! runs of a tier become one) so that the number of filters to probe grows
//! with the logarithm of the log, not its length; runs of more than
//! [`MAX_MERGED`] entries are not merged further.

use std::sync::Arc;

use super::keys::{bad_entry, page_key, run_key, u32_at, u64_at};
use super::{EventLoc, RecordLoc};
use crate::log::error::LogError;

/// Entries per page.
pub(crate) const PAGE_ENTRIES: usize = 2048;
/// Eight runs of one tier merge into one.
pub(crate) const MERGE_FANIN: usize = 8;
/// Runs larger than this are left alone.
pub(crate) const MAX_MERGED: u64 = 8 << 20;
/// Entries of a table-sized run; tiers grow by [`MERGE_FANIN`] from here.
const TIER_BASE: u64 = 16_384;
const ENTRY_LEN: usize = 16 + 8 + 8 + 4;
const BITS_PER_ENTRY: u64 = 10;
const PROBES: u32 = 7;
/// The Bloom filter is blocked: all probes of an id fall in one 512-bit
/// block (one cache line), so a lookup costs one cache miss per run.
const BLOCK_WORDS: usize = 8;

/// An id and where its event is.
pub(crate) type IdEntry = ([u8; 16], EventLoc);

/// The in-memory summary of one run.
#[derive(Debug)]
pub(crate) struct Run {
    pub id: u64,
    pub count: u64,
    /// The first id of every page.
    fences: Vec<[u8; 16]>,
    /// The greatest id. Ids are UUID v7 by default — time-ordered — so a
    /// fresh id lies above every older run and the range check spares the
    /// Bloom probe.
    last: [u8; 16],
    bloom: Vec<u64>,
}

fn mix(mut z: u64) -> u64 {
    // splitmix64's finaliser: ids may be time-ordered (UUID v7), so their
    // bytes are far from uniform.
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The two hashes of an id: which block, and which bits in it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdHash(u64, u64);

impl IdHash {
    pub fn of(id: &[u8; 16]) -> Self {
        let a = u64::from_le_bytes(id[..8].try_into().unwrap_or([0; 8]));
        let b = u64::from_le_bytes(id[8..].try_into().unwrap_or([0; 8]));
        IdHash(
            mix(a ^ mix(b)),
            mix(b.wrapping_add(0x9e37_79b9_7f4a_7c15) ^ a.rotate_left(17)),
        )
    }

    /// The block among `blocks` (multiply-shift, no division).
    fn block(self, blocks: usize) -> usize {
        ((u128::from(self.0) * blocks as u128) >> 64) as usize
    }

    /// The bits in the block: 9 bits of the second hash per probe.
    fn bits(self) -> impl Iterator<Item = usize> {
        (0..PROBES).map(move |i| ((self.1 >> (i * 9)) & 511) as usize)
    }
}

/// The tier of a run of `count` entries: 0 up to a table's size, then one
/// more for every factor of [`MERGE_FANIN`].
pub(crate) fn tier(count: u64) -> u32 {
    let mut t = 0;
    let mut c = count / TIER_BASE;
    while c > 0 {
        t += 1;
        c /= MERGE_FANIN as u64;
    }
    t
}

impl Run {
    fn blocks(&self) -> usize {
        self.bloom.len() / BLOCK_WORDS
    }

    /// Whether the run may hold the id (false: it certainly does not).
    pub fn may_contain(&self, hash: IdHash) -> bool {
        let blocks = self.blocks();
        if blocks == 0 {
            return false;
        }
        let block = &self.bloom[hash.block(blocks) * BLOCK_WORDS..][..BLOCK_WORDS];
        hash.bits()
            .all(|bit| block[bit / 64] & (1 << (bit % 64)) != 0)
    }

    fn set(&mut self, hash: IdHash) {
        let blocks = self.blocks();
        let start = hash.block(blocks) * BLOCK_WORDS;
        for bit in hash.bits() {
            self.bloom[start + bit / 64] |= 1 << (bit % 64);
        }
    }

    /// Looks `id` (whose hash is `hash`) up: a Bloom probe, then at most one
    /// page read.
    pub fn get(
        &self,
        tree: &sled::Tree,
        id: &[u8; 16],
        hash: IdHash,
    ) -> Result<Option<EventLoc>, LogError> {
        if self.fences.first().is_none_or(|first| id < first) || id > &self.last {
            return Ok(None);
        }
        if !self.may_contain(hash) {
            return Ok(None);
        }
        let page = match self.fences.binary_search(id) {
            Ok(p) => p,
            Err(0) => return Ok(None),
            Err(p) => p - 1,
        };
        let bytes = tree
            .get(page_key(self.id, page as u32))
            .map_err(|e| LogError::index("reading an event-id page", e))?
            .ok_or_else(|| bad_entry("event-id page (missing)"))?;
        if !bytes.len().is_multiple_of(ENTRY_LEN) {
            return Err(bad_entry("event-id page"));
        }
        let n = bytes.len() / ENTRY_LEN;
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let at = mid * ENTRY_LEN;
            match bytes[at..at + 16].cmp(&id[..]) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(Some(decode_loc(&bytes[at + 16..]))),
            }
        }
        Ok(None)
    }

    pub fn pages(&self) -> u32 {
        self.fences.len() as u32
    }

    /// Every entry of the run, in id order.
    pub fn read_all(&self, tree: &sled::Tree) -> Result<Vec<IdEntry>, LogError> {
        let mut out = Vec::with_capacity(self.count as usize);
        for page in 0..self.pages() {
            let bytes = tree
                .get(page_key(self.id, page))
                .map_err(|e| LogError::index("reading an event-id page", e))?
                .ok_or_else(|| bad_entry("event-id page (missing)"))?;
            if !bytes.len().is_multiple_of(ENTRY_LEN) {
                return Err(bad_entry("event-id page"));
            }
            for c in bytes.chunks_exact(ENTRY_LEN) {
                let mut id = [0u8; 16];
                id.copy_from_slice(&c[..16]);
                out.push((id, decode_loc(&c[16..])));
            }
        }
        Ok(out)
    }

    /// Decodes a summary stored under `R` + `id`.
    pub fn decode(id: u64, v: &[u8]) -> Result<Run, LogError> {
        let count = u64_at(v, 0);
        let pages = u32_at(v, 8) as usize;
        let words = u32_at(v, 12) as usize;
        let want = 16 + pages * 16 + 16 + words * 8;
        if v.len() != want
            || pages != (count as usize).div_ceil(PAGE_ENTRIES)
            || words == 0
            || !words.is_multiple_of(BLOCK_WORDS)
        {
            return Err(bad_entry("event-id run"));
        }
        let fences = (0..pages)
            .map(|p| {
                let mut f = [0u8; 16];
                f.copy_from_slice(&v[16 + p * 16..32 + p * 16]);
                f
            })
            .collect();
        let mut last = [0u8; 16];
        last.copy_from_slice(&v[16 + pages * 16..32 + pages * 16]);
        let base = 32 + pages * 16;
        let bloom = (0..words).map(|w| u64_at(v, base + w * 8)).collect();
        Ok(Run {
            id,
            count,
            fences,
            last,
            bloom,
        })
    }

    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(32 + self.fences.len() * 16 + self.bloom.len() * 8);
        v.extend_from_slice(&self.count.to_be_bytes());
        v.extend_from_slice(&(self.fences.len() as u32).to_be_bytes());
        v.extend_from_slice(&(self.bloom.len() as u32).to_be_bytes());
        for f in &self.fences {
            v.extend_from_slice(f);
        }
        v.extend_from_slice(&self.last);
        for w in &self.bloom {
            v.extend_from_slice(&w.to_be_bytes());
        }
        v
    }
}

fn decode_loc(b: &[u8]) -> EventLoc {
    EventLoc {
        record: RecordLoc {
            segment: u64_at(b, 0),
            offset: u64_at(b, 8),
        },
        index: u32_at(b, 16),
    }
}

/// Builds run `id` from `entries` (sorted here) and adds its pages and
/// summary to `batch`.
pub(crate) fn write_run(id: u64, mut entries: Vec<IdEntry>, batch: &mut sled::Batch) -> Arc<Run> {
    entries.sort_unstable_by_key(|e| e.0);
    let count = entries.len() as u64;
    let blocks = (count * BITS_PER_ENTRY)
        .div_ceil(64 * BLOCK_WORDS as u64)
        .max(1) as usize;
    let mut run = Run {
        id,
        count,
        fences: Vec::with_capacity(entries.len().div_ceil(PAGE_ENTRIES)),
        last: entries.last().map_or([0; 16], |e| e.0),
        bloom: vec![0; blocks * BLOCK_WORDS],
    };
    for (page, chunk) in entries.chunks(PAGE_ENTRIES).enumerate() {
        run.fences.push(chunk[0].0);
        let mut bytes = Vec::with_capacity(chunk.len() * ENTRY_LEN);
        for (eid, loc) in chunk {
            bytes.extend_from_slice(eid);
            bytes.extend_from_slice(&loc.record.segment.to_be_bytes());
            bytes.extend_from_slice(&loc.record.offset.to_be_bytes());
            bytes.extend_from_slice(&loc.index.to_be_bytes());
            run.set(IdHash::of(eid));
        }
        batch.insert(page_key(id, page as u32), bytes);
    }
    batch.insert(run_key(id), run.encode());
    Arc::new(run)
}

/// Adds the removal of run `run`'s pages to `batch`.
pub(crate) fn remove_pages(run: &Run, batch: &mut sled::Batch) {
    for page in 0..run.pages() {
        batch.remove(page_key(run.id, page));
    }
}

/// Picks runs to merge: all runs of the lowest tier that has at least
/// [`MERGE_FANIN`] of them, unless the result would exceed [`MAX_MERGED`].
pub(crate) fn pick_merge(runs: &[Arc<Run>]) -> Option<Vec<Arc<Run>>> {
    let mut tiers: std::collections::BTreeMap<u32, Vec<Arc<Run>>> = Default::default();
    for r in runs {
        tiers.entry(tier(r.count)).or_default().push(Arc::clone(r));
    }
    tiers.into_values().find_map(|mut group| {
        if group.len() < MERGE_FANIN {
            return None;
        }
        group.sort_by_key(|r| r.id);
        group.truncate(MERGE_FANIN);
        let total: u64 = group.iter().map(|r| r.count).sum();
        (total <= MAX_MERGED).then_some(group)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(n: u64) -> EventLoc {
        EventLoc {
            record: RecordLoc {
                segment: n / 1000,
                offset: n,
            },
            index: (n % 7) as u32,
        }
    }

    fn tree() -> (tempfile::TempDir, sled::Tree) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        (dir, tree)
    }

    #[test]
    fn a_run_finds_every_id_it_holds_and_rejects_others() {
        let (_dir, tree) = tree();
        let entries: Vec<IdEntry> = (0..5_000u64)
            .map(|n| (*uuid::Uuid::now_v7().as_bytes(), loc(n)))
            .collect();
        let mut batch = sled::Batch::default();
        let run = write_run(3, entries.clone(), &mut batch);
        tree.apply_batch(batch).unwrap();
        assert_eq!(run.pages(), 3);
        for (id, l) in &entries {
            assert_eq!(run.get(&tree, id, IdHash::of(id)).unwrap(), Some(*l));
        }
        // Ids made later lie above the run: rejected without a probe.
        let later = *uuid::Uuid::now_v7().as_bytes();
        assert!(later > run.last);
        assert_eq!(run.get(&tree, &later, IdHash::of(&later)).unwrap(), None);
        let mut false_positives = 0;
        for _ in 0..10_000 {
            let id = *uuid::Uuid::new_v4().as_bytes();
            if run.may_contain(IdHash::of(&id)) {
                false_positives += 1;
            }
            assert_eq!(run.get(&tree, &id, IdHash::of(&id)).unwrap(), None);
        }
        // 10 bits per entry and 7 probes in one block: one or two percent.
        assert!(false_positives < 300, "{false_positives} false positives");
        let stored = tree.get(run_key(3)).unwrap().unwrap();
        let decoded = Run::decode(3, &stored).unwrap();
        assert_eq!(decoded.count, 5_000);
        assert_eq!(decoded.fences, run.fences);
        assert_eq!(decoded.last, run.last);
        assert_eq!(decoded.bloom, run.bloom);
        let mut all = run.read_all(&tree).unwrap();
        let mut want = entries;
        want.sort_by_key(|e| e.0);
        assert_eq!(all.len(), want.len());
        all.retain(|e| want.binary_search_by(|w| w.0.cmp(&e.0)).is_ok());
        assert_eq!(all.len(), want.len());
        assert!(Run::decode(3, &stored[..stored.len() - 1]).is_err());
    }

    #[test]
    fn tiers_and_merge_picks() {
        assert_eq!(tier(1), 0);
        assert_eq!(tier(16_383), 0);
        assert_eq!(tier(16_384), 1);
        assert_eq!(tier(16_384 * 8), 2);
        let run = |id, count| {
            Arc::new(Run {
                id,
                count,
                fences: vec![],
                last: [0; 16],
                bloom: vec![],
            })
        };
        let mut runs: Vec<_> = (0..7).map(|i| run(i, 100)).collect();
        assert!(pick_merge(&runs).is_none());
        runs.push(run(7, 5));
        runs.push(run(8, 20_000));
        let picked = pick_merge(&runs).unwrap();
        assert_eq!(picked.len(), 8);
        assert!(picked.iter().all(|r| r.count < 16_384));
        let big: Vec<_> = (0..8).map(|i| run(i, MAX_MERGED / 4)).collect();
        assert!(pick_merge(&big).is_none());
    }
}
