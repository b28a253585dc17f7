//! The derived indexes: streams, event ids, tenant records, and the
//! "indexed through" marker — recent entries in memory, older ones in sled.
//!
//! Everything here can be rebuilt from the segment files. The writer adds each
//! group's records to the active in-memory [`table::Table`] after its
//! `fdatasync` and before it answers; no sled write is on the path of an
//! append. A background indexer thread freezes the table once it holds
//! [`FLUSH_EVENTS`] events (or after [`FLUSH_AFTER`] without reaching it;
//! both are settings of [`super::LogStoreConfig`]) and
//! writes it to sled in **one batch** — atomic across crashes — together with
//! the marker that covers it. The batch is coarse: one `S` entry per stream
//! and one `T` entry per tenant listing all their records in the table, and
//! the table's event ids as one sorted run (`runs`). Keys are in `keys`.
//!
//! Readers see the union: tables still in memory (frozen or active) and sled
//! for everything before the oldest of them. A table leaves memory only after
//! its batch is applied, so every position before the oldest table in memory
//! is in sled; readers take from sled only entries before that point, which
//! makes the union exact even while a flush runs.
//!
//! sled's `flush` is not an fsync, so sled may lag behind the log after a
//! crash; recovery re-indexes from the marker to the end of the log.
//! Back-pressure: the writer waits while [`MAX_FROZEN`] tables are waiting
//! for the indexer.

pub(crate) mod keys;
mod runs;
mod table;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use self::keys::{
    bad_entry, decode_marker, encode_marker, stream_prefix, tenant_prefix, with_u64, Entry, FORMAT,
    FORMAT_KEY, MARKER_KEY, PAGE_PREFIX, RUN_PREFIX,
};
use self::runs::Run;
pub(crate) use self::table::IndexedRecord;
use self::table::Table;
use crate::log::error::LogError;
use crate::log::types::{Direction, EventId, GlobalPosition, StreamId, StreamVersion, TenantId};

/// By default a table is flushed once it holds this many events ...
pub(crate) const FLUSH_EVENTS: u64 = 16_384;
/// ... or once its first entry is this old.
pub(crate) const FLUSH_AFTER: Duration = Duration::from_millis(500);

/// When tables are flushed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tuning {
    pub table_events: u64,
    pub flush_after: Duration,
}
/// The writer waits while this many frozen tables wait for the indexer.
pub(crate) const MAX_FROZEN: usize = 4;

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

struct State {
    active: Table,
    active_since: Option<Instant>,
    /// Oldest first.
    frozen: VecDeque<Arc<Table>>,
    runs: Arc<Vec<Arc<Run>>>,
    /// Merged-away runs whose pages are removed once no reader holds them.
    retired: Vec<Arc<Run>>,
    next_run: u64,
    /// Set when a sled write failed: the writer must stop.
    failed: Option<String>,
    /// Ask the indexer to flush everything now.
    flush_wanted: bool,
    shutdown: bool,
}

impl State {
    /// The first position held in memory; everything before it is in sled.
    fn memory_from(&self) -> u64 {
        self.frozen
            .front()
            .map_or(self.active.first_position, |t| t.first_position)
    }

    /// Tables in memory, oldest first.
    fn tables(&self) -> impl DoubleEndedIterator<Item = &Table> {
        self.frozen
            .iter()
            .map(|t| &**t)
            .chain(std::iter::once(&self.active))
    }

    fn freeze(&mut self) {
        let next = Table::new(self.active.next_position);
        let full = std::mem::replace(&mut self.active, next);
        self.frozen.push_back(Arc::new(full));
        self.active_since = None;
    }
}

struct Shared {
    tuning: Tuning,
    db: sled::Db,
    tree: sled::Tree,
    /// Where `db` lives, to mark it abandoned if it cannot be let go
    /// (moved when the writer sets a failed index aside).
    dir: Mutex<Option<PathBuf>>,
    state: Mutex<State>,
    /// Wakes the indexer.
    work: Condvar,
    /// Wakes writers and flushers waiting for the indexer.
    progress: Condvar,
}

impl Drop for Shared {
    /// sled cannot write again after a failed write, and dropping it then
    /// waits for ever for a flush that cannot happen (sled 0.34). So a
    /// failed index is left to the process — its files stay locked until
    /// it exits — and its directory is marked abandoned, so that a store
    /// reopened in this process sets it aside and rebuilds the index from
    /// the log instead of waiting for the lock. Dropping never hangs.
    fn drop(&mut self) {
        if self.lock().failed.is_some() {
            if let Some(dir) = &*self.dir.lock().unwrap_or_else(|p| p.into_inner()) {
                crate::embedded::abandon(dir);
            }
            tracing::warn!(
                target: "casebook::log",
                "a failed index database is left open until the process exits"
            );
            // A leaked handle keeps sled's last reference (whose drop
            // would flush) alive: the fields below drop without waiting.
            std::mem::forget(self.db.clone());
            std::mem::forget(self.tree.clone());
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for the indexer while `busy` holds; errors if a sled write
    /// failed.
    fn wait_while<'a>(
        &self,
        mut st: MutexGuard<'a, State>,
        busy: impl Fn(&State) -> bool,
    ) -> Result<MutexGuard<'a, State>, LogError> {
        while st.failed.is_none() && busy(&st) {
            st = self.progress.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        match &st.failed {
            Some(reason) => Err(LogError::Failed {
                reason: reason.clone(),
            }),
            None => Ok(st),
        }
    }
}

/// The index of a [`super::LogStore`]. Dropping it flushes what is in memory
/// and stops the indexer thread.
pub(crate) struct Index {
    shared: Arc<Shared>,
    indexer: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Index {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.work.notify_all();
        let handle = self
            .indexer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

fn sled_err(context: &'static str) -> impl Fn(sled::Error) -> LogError {
    move |e| LogError::index(context, e)
}

/// The marker stored in `db`'s index, read before the index is opened (to
/// compare it with the log).
pub(crate) fn stored_marker(db: &sled::Db) -> Result<Option<Marker>, LogError> {
    let tree = db
        .open_tree("log")
        .map_err(sled_err("opening the log index"))?;
    match tree
        .get(MARKER_KEY)
        .map_err(sled_err("reading the marker"))?
    {
        Some(v) => Ok(Some(decode_marker(&v)?)),
        None => Ok(None),
    }
}

impl Index {
    /// Opens the index in `db`: an index of another format is cleared (it is
    /// rebuilt from the log), run summaries are loaded, pages left behind by
    /// an interrupted merge are removed, and the indexer thread starts.
    /// `dir`: where `db` lives (marked abandoned if the index fails).
    pub fn new(db: sled::Db, tuning: Tuning, dir: Option<PathBuf>) -> Result<Self, LogError> {
        let tree = db
            .open_tree("log")
            .map_err(sled_err("opening the log index"))?;
        let format = tree
            .get(FORMAT_KEY)
            .map_err(sled_err("reading the index format"))?;
        if format.as_deref() != Some(&FORMAT.to_be_bytes()[..]) {
            tree.clear()
                .map_err(sled_err("clearing an index of another format"))?;
            tree.insert(FORMAT_KEY, &FORMAT.to_be_bytes()[..])
                .map_err(sled_err("writing the index format"))?;
        }
        let mut runs = Vec::new();
        for item in tree.scan_prefix(RUN_PREFIX) {
            let (k, v) = item.map_err(sled_err("loading event-id runs"))?;
            if k.len() != 9 {
                return Err(bad_entry("event-id run key"));
            }
            runs.push(Arc::new(Run::decode(keys::u64_at(&k, 1), &v)?));
        }
        let mut orphans = sled::Batch::default();
        for item in tree.scan_prefix(PAGE_PREFIX) {
            let (k, _) = item.map_err(sled_err("checking event-id pages"))?;
            let run = keys::u64_at(&k, 1);
            if runs.binary_search_by_key(&run, |r| r.id).is_err() {
                orphans.remove(k);
            }
        }
        tree.apply_batch(orphans)
            .map_err(sled_err("removing pages of merged runs"))?;
        let marker = match tree
            .get(MARKER_KEY)
            .map_err(sled_err("reading the marker"))?
        {
            Some(v) => Some(decode_marker(&v)?),
            None => None,
        };
        let first = marker.map_or(0, |m| m.position.0 + 1);
        let next_run = runs.last().map_or(0, |r| r.id + 1);
        let shared = Arc::new(Shared {
            tuning,
            db,
            tree,
            dir: Mutex::new(dir),
            state: Mutex::new(State {
                active: Table::new(first),
                active_since: None,
                frozen: VecDeque::new(),
                runs: Arc::new(runs),
                retired: Vec::new(),
                next_run,
                failed: None,
                flush_wanted: false,
                shutdown: false,
            }),
            work: Condvar::new(),
            progress: Condvar::new(),
        });
        let worker = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("casebook-log-indexer".into())
            .spawn(move || indexer(&worker))
            .map_err(|e| LogError::io("starting the log indexer thread", e))?;
        Ok(Index {
            shared,
            indexer: Mutex::new(Some(handle)),
        })
    }

    /// Why the index stopped writing, if a sled write failed: sled cannot
    /// write again in this process, so only a reopen (which rebuilds the
    /// index from the log) repairs it.
    pub fn failure(&self) -> Option<String> {
        self.shared.lock().failed.clone()
    }

    /// Marks the index failed as a failed sled write would (for tests).
    #[cfg(test)]
    pub(crate) fn fail_for_test(&self, reason: &str) {
        self.shared.lock().failed = Some(reason.to_string());
        self.shared.progress.notify_all();
    }

    /// Where the database lives, if it is on disk.
    pub fn dir(&self) -> Option<PathBuf> {
        self.shared
            .dir
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// When tables are flushed.
    pub fn tuning(&self) -> Tuning {
        self.shared.tuning
    }

    /// Records that the database's folder was moved to `to` (set aside for
    /// a fresh index): what a failed index marks abandoned.
    pub fn moved_to(&self, to: PathBuf) {
        *self.shared.dir.lock().unwrap_or_else(|p| p.into_inner()) = Some(to);
    }

    /// The marker stored in sled: everything through it is in sled.
    pub fn marker(&self) -> Result<Option<Marker>, LogError> {
        match self
            .shared
            .tree
            .get(MARKER_KEY)
            .map_err(sled_err("reading the marker"))?
        {
            Some(v) => Ok(Some(decode_marker(&v)?)),
            None => Ok(None),
        }
    }

    /// Adds appended (and synced) records, which end at `end`. Waits while
    /// the indexer is [`MAX_FROZEN`] tables behind. Errors if an earlier sled
    /// write failed.
    pub fn add(&self, records: &[IndexedRecord], end: Marker) -> Result<(), LogError> {
        let mut st = self
            .shared
            .wait_while(self.shared.lock(), |st| st.frozen.len() >= MAX_FROZEN)?;
        for r in records {
            st.active.add(r);
        }
        st.active.end = Some(end);
        if st.active_since.is_none() {
            st.active_since = Some(Instant::now());
        }
        if st.active.events() >= self.shared.tuning.table_events {
            st.freeze();
            drop(st);
            self.shared.work.notify_one();
        }
        Ok(())
    }

    /// Writes everything in memory to sled and flushes sled.
    pub fn flush(&self) -> Result<(), LogError> {
        {
            let mut st = self.shared.lock();
            st.flush_wanted = true;
            self.shared.work.notify_one();
            drop(
                self.shared
                    .wait_while(st, |st| st.active.events() > 0 || !st.frozen.is_empty())?,
            );
        }
        self.shared
            .db
            .flush()
            .map(|_| ())
            .map_err(sled_err("flushing the index"))
    }

    pub fn stream_head(&self, stream: &StreamId) -> Result<Option<StreamVersion>, LogError> {
        {
            let st = self.shared.lock();
            for t in st.tables().rev() {
                if let Some(e) = t.streams.get(stream).and_then(|l| l.last()) {
                    return Ok(Some(StreamVersion(e.last_version())));
                }
            }
        }
        let prefix = stream_prefix(stream);
        match self.shared.tree.scan_prefix(&prefix).next_back() {
            None => Ok(None),
            Some(Ok((_, v))) => {
                let list = Entry::decode_all(&v, "stream")?;
                Ok(list.last().map(|e| StreamVersion(e.last_version())))
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
        let (memory, memory_from) = {
            let st = self.shared.lock();
            let mut memory: Vec<Entry> = Vec::new();
            for t in st.tables() {
                if let Some(list) = t.streams.get(stream) {
                    memory.extend(list.iter().filter(|e| match direction {
                        Direction::Forward => e.last_version() >= from.0,
                        Direction::Backward => e.version <= from.0,
                    }));
                }
            }
            (memory, st.memory_from())
        };
        let mut out = Vec::new();
        let take = |e: &Entry, out: &mut Vec<EventLoc>| -> bool {
            for k in 0..e.count {
                let index = match direction {
                    Direction::Forward => k,
                    Direction::Backward => e.count - 1 - k,
                };
                let v = e.version + u64::from(index);
                let wanted = match direction {
                    Direction::Forward => v >= from.0,
                    Direction::Backward => v <= from.0,
                };
                if wanted {
                    out.push(EventLoc {
                        record: e.loc,
                        index,
                    });
                    if out.len() == limit {
                        return true;
                    }
                }
            }
            false
        };
        let prefix = stream_prefix(stream);
        let tree = &self.shared.tree;
        let err = sled_err("reading a stream");
        match direction {
            Direction::Forward => {
                // The entry holding `from` may start before it.
                let start = match tree
                    .range(with_u64(&prefix, 0)..=with_u64(&prefix, from.0))
                    .next_back()
                {
                    Some(item) => keys::u64_at(&item.map_err(&err)?.0, prefix.len()),
                    None => from.0,
                };
                'sled: for item in
                    tree.range(with_u64(&prefix, start)..=with_u64(&prefix, u64::MAX))
                {
                    let (_, v) = item.map_err(&err)?;
                    for e in Entry::decode_all(&v, "stream")? {
                        if e.position >= memory_from {
                            break 'sled;
                        }
                        if take(&e, &mut out) {
                            return Ok(out);
                        }
                    }
                }
                for e in &memory {
                    if take(e, &mut out) {
                        return Ok(out);
                    }
                }
            }
            Direction::Backward => {
                for e in memory.iter().rev() {
                    if take(e, &mut out) {
                        return Ok(out);
                    }
                }
                for item in tree
                    .range(with_u64(&prefix, 0)..=with_u64(&prefix, from.0))
                    .rev()
                {
                    let (_, v) = item.map_err(&err)?;
                    for e in Entry::decode_all(&v, "stream")?.iter().rev() {
                        if e.position >= memory_from {
                            continue;
                        }
                        if take(e, &mut out) {
                            return Ok(out);
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Where event `id` is, if it is in the log.
    pub fn event(&self, id: EventId) -> Result<Option<EventLoc>, LogError> {
        let runs = {
            let st = self.shared.lock();
            for t in st.tables().rev() {
                if let Some(loc) = t.ids.get(&id) {
                    return Ok(Some(*loc));
                }
            }
            Arc::clone(&st.runs)
        };
        let key = *id.0.as_bytes();
        let hash = runs::IdHash::of(&key);
        for run in runs.iter().rev() {
            if let Some(loc) = run.get(&self.shared.tree, &key, hash)? {
                return Ok(Some(loc));
            }
        }
        Ok(None)
    }

    /// The tenant's records that hold events at `from` or later, in order —
    /// `(first position, location, count)` — until they hold at least
    /// `events` events.
    pub fn tenant_records(
        &self,
        tenant: &TenantId,
        from: GlobalPosition,
        events: usize,
    ) -> Result<Vec<(GlobalPosition, RecordLoc, u32)>, LogError> {
        let wanted = events as u64;
        let (memory, memory_from) = {
            let st = self.shared.lock();
            let mut memory: Vec<Entry> = Vec::new();
            let mut held = 0u64;
            'tables: for t in st.tables() {
                if t.next_position <= from.0 {
                    continue;
                }
                for e in t.tenants.get(tenant).into_iter().flatten() {
                    if e.end_position() > from.0 {
                        memory.push(*e);
                        held += e.end_position() - e.position.max(from.0);
                        if held >= wanted {
                            break 'tables;
                        }
                    }
                }
            }
            (memory, st.memory_from())
        };
        let mut out = Vec::new();
        let mut held = 0u64;
        if from.0 < memory_from {
            let prefix = tenant_prefix(tenant);
            let tree = &self.shared.tree;
            let err = sled_err("reading a tenant's records");
            let start = match tree
                .range(with_u64(&prefix, 0)..=with_u64(&prefix, from.0))
                .next_back()
            {
                Some(item) => keys::u64_at(&item.map_err(&err)?.0, prefix.len()),
                None => from.0,
            };
            'sled: for item in tree.range(with_u64(&prefix, start)..=with_u64(&prefix, u64::MAX)) {
                let (_, v) = item.map_err(&err)?;
                for e in Entry::decode_all(&v, "tenant record")? {
                    if e.position >= memory_from {
                        break 'sled;
                    }
                    if e.end_position() > from.0 {
                        out.push((GlobalPosition(e.position), e.loc, e.count));
                        held += e.end_position() - e.position.max(from.0);
                        if held >= wanted {
                            return Ok(out);
                        }
                    }
                }
            }
        }
        for e in memory {
            out.push((GlobalPosition(e.position), e.loc, e.count));
            held += e.end_position() - e.position.max(from.0);
            if held >= wanted {
                break;
            }
        }
        Ok(out)
    }
}

/// The indexer thread: flushes frozen tables, merges runs, removes pages of
/// merged runs no reader holds any more.
fn indexer(shared: &Shared) {
    loop {
        let table = {
            let mut st = shared.lock();
            loop {
                if st.failed.is_some() {
                    if st.shutdown {
                        return;
                    }
                    st = shared.work.wait(st).unwrap_or_else(|p| p.into_inner());
                    continue;
                }
                if let Some(t) = st.frozen.front() {
                    break Arc::clone(t);
                }
                let flush_after = shared.tuning.flush_after;
                let due = st
                    .active_since
                    .is_some_and(|since| since.elapsed() >= flush_after);
                if st.active.events() > 0 && (st.shutdown || st.flush_wanted || due) {
                    st.freeze();
                    continue;
                }
                if st.flush_wanted {
                    st.flush_wanted = false;
                    shared.progress.notify_all();
                }
                if st.shutdown {
                    return;
                }
                let wait = st
                    .active_since
                    .map_or(flush_after, |s| flush_after.saturating_sub(s.elapsed()));
                st = shared
                    .work
                    .wait_timeout(st, wait.max(Duration::from_millis(1)))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        };
        let result = write_table(shared, &table);
        {
            let mut st = shared.lock();
            match result {
                Ok(run) => {
                    st.frozen.pop_front();
                    let mut runs = (*st.runs).clone();
                    runs.push(run);
                    st.runs = Arc::new(runs);
                }
                Err(e) => st.failed = Some(format!("the index could not be written: {e}")),
            }
        }
        shared.progress.notify_all();
        if let Err(e) = maintain(shared) {
            shared.lock().failed = Some(format!("the index could not be merged: {e}"));
            shared.progress.notify_all();
        }
    }
}

/// One sled batch: the table's stream and tenant entries, its event-id run,
/// and the marker that covers it.
fn write_table(shared: &Shared, table: &Table) -> Result<Arc<Run>, LogError> {
    let mut batch = sled::Batch::default();
    let mut value = Vec::new();
    for (stream, list) in &table.streams {
        value.clear();
        list.iter().for_each(|e| e.encode_into(&mut value));
        batch.insert(
            with_u64(&stream_prefix(stream), list[0].version),
            &value[..],
        );
    }
    for (tenant, list) in &table.tenants {
        value.clear();
        list.iter().for_each(|e| e.encode_into(&mut value));
        batch.insert(
            with_u64(&tenant_prefix(tenant), list[0].position),
            &value[..],
        );
    }
    let id = {
        let mut st = shared.lock();
        st.next_run += 1;
        st.next_run - 1
    };
    let ids = table
        .ids
        .iter()
        .map(|(id, loc)| (*id.0.as_bytes(), *loc))
        .collect();
    let run = runs::write_run(id, ids, &mut batch);
    if let Some(end) = table.end {
        batch.insert(MARKER_KEY, &encode_marker(end)[..]);
    }
    shared
        .tree
        .apply_batch(batch)
        .map_err(sled_err("writing index entries"))?;
    Ok(run)
}

/// Merges runs when a tier is full and removes pages of runs merged away.
fn maintain(shared: &Shared) -> Result<(), LogError> {
    loop {
        let (picked, id) = {
            let mut st = shared.lock();
            match runs::pick_merge(&st.runs) {
                Some(picked) => {
                    st.next_run += 1;
                    (picked, st.next_run - 1)
                }
                None => break,
            }
        };
        let mut entries = Vec::with_capacity(picked.iter().map(|r| r.count as usize).sum());
        for r in &picked {
            entries.extend(r.read_all(&shared.tree)?);
        }
        let mut batch = sled::Batch::default();
        let merged = runs::write_run(id, entries, &mut batch);
        for r in &picked {
            batch.remove(keys::run_key(r.id));
        }
        shared
            .tree
            .apply_batch(batch)
            .map_err(sled_err("merging event-id runs"))?;
        let mut st = shared.lock();
        let mut list: Vec<Arc<Run>> = st
            .runs
            .iter()
            .filter(|r| !picked.iter().any(|p| p.id == r.id))
            .cloned()
            .collect();
        list.push(merged);
        list.sort_by_key(|r| r.id);
        st.runs = Arc::new(list);
        st.retired.extend(picked);
    }
    let unused: Vec<Arc<Run>> = {
        let mut st = shared.lock();
        let (unused, held) = std::mem::take(&mut st.retired)
            .into_iter()
            .partition(|r| Arc::strong_count(r) == 1);
        st.retired = held;
        unused
    };
    if !unused.is_empty() {
        let mut batch = sled::Batch::default();
        for r in &unused {
            runs::remove_pages(r, &mut batch);
        }
        shared
            .tree
            .apply_batch(batch)
            .map_err(sled_err("removing pages of merged runs"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuning(events: u64) -> Tuning {
        Tuning {
            table_events: events,
            flush_after: Duration::from_millis(1),
        }
    }

    /// Opens the index as the store does: sled's lock on a database just
    /// dropped may linger a moment (its flusher thread lets go), which the
    /// store's opener waits out.
    fn open(dir: &std::path::Path, events: u64) -> Index {
        let db =
            crate::embedded::open_sled(dir, 8 << 20, crate::embedded::INDEX_SEGMENT_BYTES).unwrap();
        Index::new(db, tuning(events), None).unwrap()
    }

    /// Adds `n` one-event records alternating over two streams of two
    /// tenants; returns their ids in order.
    fn fill(index: &Index, from: u64, n: u64) -> Vec<EventId> {
        let streams: [StreamId; 2] = [
            "kent/case/A".parse().unwrap(),
            "essex/case/B".parse().unwrap(),
        ];
        let mut ids = Vec::new();
        for p in from..from + n {
            let stream = &streams[(p % 2) as usize];
            let id = EventId::new();
            ids.push(id);
            let loc = RecordLoc {
                segment: 0,
                offset: 32 + p * 10,
            };
            index
                .add(
                    &[IndexedRecord {
                        loc,
                        stream: stream.clone(),
                        first_version: StreamVersion(p / 2),
                        first_position: GlobalPosition(p),
                        ids: vec![id],
                    }],
                    Marker {
                        position: GlobalPosition(p),
                        segment: 0,
                        offset: 42 + p * 10,
                    },
                )
                .unwrap();
        }
        ids
    }

    fn check(index: &Index, ids: &[EventId]) {
        for (p, id) in ids.iter().enumerate() {
            let loc = index.event(*id).unwrap().expect("every id is found");
            assert_eq!(loc.record.offset, 32 + p as u64 * 10);
        }
        assert_eq!(index.event(EventId::new()).unwrap(), None);
        let a: StreamId = "kent/case/A".parse().unwrap();
        let n = ids.len() as u64;
        assert_eq!(
            index.stream_head(&a).unwrap(),
            Some(StreamVersion((n - 1) / 2))
        );
        let forward = index
            .stream_events(&a, Direction::Forward, StreamVersion(3), 1_000)
            .unwrap();
        let offsets: Vec<u64> = forward.iter().map(|l| l.record.offset).collect();
        let want: Vec<u64> = (0..n)
            .filter(|p| p % 2 == 0 && p / 2 >= 3)
            .map(|p| 32 + p * 10)
            .collect();
        assert_eq!(offsets, want);
        let backward = index
            .stream_events(&a, Direction::Backward, StreamVersion(u64::MAX), 4)
            .unwrap();
        let offsets: Vec<u64> = backward.iter().map(|l| l.record.offset).collect();
        let want: Vec<u64> = (0..n)
            .rev()
            .filter(|p| p % 2 == 0)
            .take(4)
            .map(|p| 32 + p * 10)
            .collect();
        assert_eq!(offsets, want);
        let essex: TenantId = TenantId::new("essex").unwrap();
        let records = index.tenant_records(&essex, GlobalPosition(7), 5).unwrap();
        let positions: Vec<u64> = records.iter().map(|r| r.0 .0).collect();
        assert_eq!(positions, vec![7, 9, 11, 13, 15]);
    }

    #[test]
    fn entries_are_found_in_memory_in_sled_and_after_merges_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let ids = {
            let index = open(dir.path(), 4);
            let ids = fill(&index, 0, 300);
            check(&index, &ids);
            index.flush().unwrap();
            // 300 events in tables of 4: merged down to a handful of runs.
            let runs = index.shared.lock().runs.len();
            assert!(runs < 20, "{runs} runs after merging");
            check(&index, &ids);
            ids
        };
        // Reopened: everything is in sled now, and more can be added.
        let index = open(dir.path(), 4);
        assert_eq!(
            index.marker().unwrap().map(|m| m.position),
            Some(GlobalPosition(299))
        );
        let mut ids = ids;
        ids.extend(fill(&index, 300, 37));
        check(&index, &ids);
    }

    #[test]
    fn an_index_of_another_format_is_cleared_and_orphan_pages_removed() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::Config::new().path(dir.path()).open().unwrap();
            let tree = db.open_tree("log").unwrap();
            tree.insert(b"Sold-format-entry", &b"x"[..]).unwrap();
            tree.insert(
                MARKER_KEY,
                &encode_marker(Marker {
                    position: GlobalPosition(9),
                    segment: 0,
                    offset: 99,
                })[..],
            )
            .unwrap();
            db.flush().unwrap();
        }
        {
            let index = open(dir.path(), 4);
            // The old marker went with the rest: the log is re-indexed.
            assert_eq!(index.marker().unwrap(), None);
            assert!(index
                .shared
                .tree
                .get(b"Sold-format-entry")
                .unwrap()
                .is_none());
            fill(&index, 0, 8);
            index.flush().unwrap();
            // A page whose run summary is gone (a merge cut short).
            index
                .shared
                .tree
                .insert(keys::page_key(999, 0), &b"stale"[..])
                .unwrap();
        }
        let index = open(dir.path(), 4);
        assert!(index
            .shared
            .tree
            .get(keys::page_key(999, 0))
            .unwrap()
            .is_none());
        assert_eq!(
            index.marker().unwrap().map(|m| m.position),
            Some(GlobalPosition(7))
        );
    }
}
