//! Power-cut tests of `LogStore` through its file-I/O seam, with a simulated file system.
//!
//! `SimFs` keeps every segment file twice: as written (what the running
//! system sees) and as of its last `sync_data` (what survives a power cut),
//! with the writes and truncations made since, in order. A file's existence
//! is durable only after a `sync_dir`. `SimFs::power_cut` reverts everything
//! to its durable state, optionally letting the first bytes of the unsynced
//! writes reach the disk (a torn write, wherever it landed: at the end of the
//! file or over zero-ahead space) or letting undurable creations survive. The
//! writer thread's syncs can be held at a gate, to line appends up into one
//! group commit. The sled index lives in a real temp dir; tests make it lag
//! by restoring an older copy of it.
//!
//! Most tests run with zero-ahead off (`config`), as they check exact file
//! lengths; those about what survives run with it on too (`config_with`), and
//! the last section is about zero-ahead itself.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use casebook::log::{
    AppendResult, Direction, EventData, EventStore, ExpectedVersion, GlobalPosition, LogError,
    LogFs, LogStore, LogStoreConfig, RecordedEvent, SegmentFile, StreamId, StreamVersion,
};
use common::{meta, stream, tenant};
use tempfile::TempDir;

/// Bytes of a segment header (the format documented in the engine's `segment` module).
const HEADER_LEN: usize = 32;
/// Bytes of a record frame: length and checksum.
const FRAME_LEN: usize = 8;
const TENANTS: [&str; 2] = ["kent", "avon"];

// ---------------------------------------------------------------------------
// The simulated file system
// ---------------------------------------------------------------------------

/// What a power cut lets through beyond what was synced.
#[derive(Debug, Clone, Copy, Default)]
struct Cut {
    /// How many bytes written after a file's last sync reach the disk anyway.
    unsynced_tail: usize,
    /// Whether files created since the last directory sync survive (with
    /// their synced content plus the unsynced tail).
    keep_new_files: bool,
}

/// Something the file system does on its own at a sync.
#[derive(Debug, Clone, Copy)]
enum Trigger {
    None,
    /// Every `sync_data` fails (and syncs nothing); writes still land.
    FailSyncs,
    /// The `remaining`-th `sync_data` from now never completes: power is cut
    /// instead, and every later operation fails until `revive`.
    CutAtSync {
        remaining: u64,
        cut: Cut,
    },
    /// Power is cut at the first `sync_data` of a file holding no more than a
    /// segment header, i.e. while a new segment is being created.
    CutAtHeaderSync(Cut),
}

/// A change to a file not yet synced.
enum Change {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

/// A file as the running system sees it.
struct Live {
    /// Identity of the open file; handles to an older file with the same name go stale.
    inode: u64,
    bytes: Vec<u8>,
    /// The content as of the last `sync_data`.
    synced: Vec<u8>,
    /// The changes since, in order: `bytes` is `synced` with all of them.
    unsynced: Vec<Change>,
    /// Whether the file's name has been made durable by a `sync_dir`.
    name_durable: bool,
}

impl Live {
    fn new(inode: u64, content: Vec<u8>, name_durable: bool) -> Self {
        Live {
            inode,
            bytes: content.clone(),
            synced: content,
            unsynced: Vec::new(),
            name_durable,
        }
    }

    /// The synced content plus the first `budget` bytes of the unsynced
    /// writes (and the truncations among them, while any budget is left).
    fn after_cut(&self, mut budget: usize) -> Vec<u8> {
        let mut content = self.synced.clone();
        for change in &self.unsynced {
            if budget == 0 {
                break;
            }
            match change {
                Change::Write(offset, bytes) => {
                    let n = bytes.len().min(budget);
                    write_at(&mut content, *offset, &bytes[..n]);
                    budget -= n;
                }
                Change::SetLen(len) => content.resize(*len as usize, 0),
            }
        }
        content
    }
}

fn write_at(content: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let end = offset as usize + bytes.len();
    if content.len() < end {
        content.resize(end, 0);
    }
    content[offset as usize..end].copy_from_slice(bytes);
}

/// One name in the folder.
struct Entry {
    /// The file now (None: removed).
    live: Option<Live>,
    /// What a power cut leaves under this name (None: nothing).
    durable: Option<Vec<u8>>,
}

struct State {
    entries: BTreeMap<u64, Entry>,
    next_inode: u64,
    powered: bool,
    trigger: Trigger,
}

impl State {
    fn fresh_inode(&mut self) -> u64 {
        self.next_inode += 1;
        self.next_inode
    }

    fn power_cut(&mut self, cut: Cut) {
        let old = std::mem::take(&mut self.entries);
        for (number, entry) in old {
            let content = match entry.live {
                Some(live) if live.name_durable || cut.keep_new_files => {
                    Some(live.after_cut(cut.unsynced_tail))
                }
                _ => entry.durable,
            };
            if let Some(content) = content {
                let inode = self.fresh_inode();
                self.entries.insert(
                    number,
                    Entry {
                        live: Some(Live::new(inode, content.clone(), true)),
                        durable: Some(content),
                    },
                );
            }
        }
    }

    fn live(&mut self, number: u64, inode: u64) -> io::Result<&mut Live> {
        if !self.powered {
            return Err(power_off());
        }
        self.entries
            .get_mut(&number)
            .and_then(|e| e.live.as_mut())
            .filter(|l| l.inode == inode)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "stale file handle"))
    }
}

fn power_off() -> io::Error {
    io::Error::other("simulated power cut: the machine is off")
}

/// Holds the writer thread's syncs (see [`SimFs::hold_syncs`]).
#[derive(Default)]
struct Gate {
    held: bool,
    /// Syncs let through while held.
    permits: u64,
    /// Syncs waiting now.
    waiting: u64,
}

/// The log writer's thread, whose syncs the gate holds (the zero-ahead
/// thread's go through).
const WRITER_THREAD: &str = "casebook-log-writer";

/// An in-memory segment folder with power-cut semantics. Clones share state.
#[derive(Clone)]
struct SimFs {
    state: Arc<Mutex<State>>,
    gate: Arc<(Mutex<Gate>, Condvar)>,
}

impl SimFs {
    fn new() -> Self {
        SimFs {
            state: Arc::new(Mutex::new(State {
                entries: BTreeMap::new(),
                next_inode: 0,
                powered: true,
                trigger: Trigger::None,
            })),
            gate: Arc::default(),
        }
    }

    /// From now on the writer thread's syncs wait (before they do anything)
    /// until let through by `let_sync_through` or `open_gate`.
    fn hold_syncs(&self) {
        self.gate.0.lock().unwrap().held = true;
    }

    fn let_sync_through(&self) {
        self.gate.0.lock().unwrap().permits += 1;
        self.gate.1.notify_all();
    }

    fn open_gate(&self) {
        self.gate.0.lock().unwrap().held = false;
        self.gate.1.notify_all();
    }

    /// Waits until `n` of the writer's syncs wait at the gate.
    async fn syncs_waiting(&self, n: u64) {
        for _ in 0..10_000 {
            if self.gate.0.lock().unwrap().waiting == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("{n} syncs never waited at the gate");
    }

    fn pass_gate(&self) {
        if std::thread::current().name() != Some(WRITER_THREAD) {
            return;
        }
        let (lock, cvar) = &*self.gate;
        let mut gate = lock.lock().unwrap();
        gate.waiting += 1;
        while gate.held && gate.permits == 0 {
            gate = cvar.wait(gate).unwrap();
        }
        gate.waiting -= 1;
        if gate.held {
            gate.permits -= 1;
        }
    }

    /// Cuts the power now, as if in the middle of whatever is running: every
    /// later operation fails until `revive`.
    fn cut_power(&self, cut: Cut) {
        let mut state = self.lock();
        state.power_cut(cut);
        state.powered = false;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn as_dyn(&self) -> Arc<dyn LogFs> {
        Arc::new(self.clone())
    }

    /// Reverts every file to its durable state, as after a power cut.
    fn power_cut(&self, cut: Cut) {
        self.lock().power_cut(cut);
    }

    fn arm(&self, trigger: Trigger) {
        self.lock().trigger = trigger;
    }

    /// Powers the machine back on (after a triggered cut) and disarms triggers.
    fn revive(&self) {
        let mut state = self.lock();
        state.powered = true;
        state.trigger = Trigger::None;
    }

    /// Segment numbers that exist now.
    fn numbers(&self) -> Vec<u64> {
        self.lock()
            .entries
            .iter()
            .filter(|(_, e)| e.live.is_some())
            .map(|(n, _)| *n)
            .collect()
    }

    fn bytes(&self, number: u64) -> Vec<u8> {
        self.lock()
            .entries
            .get(&number)
            .and_then(|e| e.live.as_ref())
            .map(|l| l.bytes.clone())
            .unwrap_or_else(|| panic!("segment {number} does not exist"))
    }

    fn len(&self, number: u64) -> usize {
        self.bytes(number).len()
    }

    /// The length of a file as of its last sync.
    fn synced_len(&self, number: u64) -> usize {
        self.lock()
            .entries
            .get(&number)
            .and_then(|e| e.live.as_ref())
            .map_or(0, |l| l.synced.len())
    }

    /// Writes bytes both in memory and on "disk" (like `damage`).
    fn poke(&self, number: u64, offset: usize, bytes: &[u8]) {
        let mut state = self.lock();
        let entry = state.entries.get_mut(&number).expect("segment exists");
        let live = entry.live.as_mut().expect("segment exists");
        assert_eq!(live.bytes, live.synced, "poke only synced files");
        write_at(&mut live.bytes, offset as u64, bytes);
        write_at(&mut live.synced, offset as u64, bytes);
        entry.durable = Some(live.synced.clone());
    }

    /// Bit rot: flips bits of a byte both in memory and on "disk".
    fn damage(&self, number: u64, offset: usize, xor: u8) {
        let mut state = self.lock();
        let entry = state.entries.get_mut(&number).expect("segment exists");
        let live = entry.live.as_mut().expect("segment exists");
        assert_eq!(live.bytes, live.synced, "damage only synced files");
        live.bytes[offset] ^= xor;
        live.synced[offset] ^= xor;
        entry.durable = Some(live.synced.clone());
    }

    /// Puts a file with durable name and content into the folder.
    fn put(&self, number: u64, content: &[u8]) {
        let mut state = self.lock();
        let inode = state.fresh_inode();
        state.entries.insert(
            number,
            Entry {
                live: Some(Live::new(inode, content.to_vec(), true)),
                durable: Some(content.to_vec()),
            },
        );
    }
}

struct SimFile {
    fs: SimFs,
    number: u64,
    inode: u64,
}

impl SimFile {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.fs.lock()
    }
}

impl SegmentFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut state = self.lock();
        let live = state.live(self.number, self.inode)?;
        let start = (offset as usize).min(live.bytes.len());
        let n = buf.len().min(live.bytes.len() - start);
        buf[..n].copy_from_slice(&live.bytes[start..start + n]);
        Ok(n)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut state = self.lock();
        let live = state.live(self.number, self.inode)?;
        write_at(&mut live.bytes, offset, buf);
        live.unsynced.push(Change::Write(offset, buf.to_vec()));
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.fs.pass_gate();
        let mut state = self.lock();
        let len = state.live(self.number, self.inode)?.bytes.len();
        match state.trigger {
            Trigger::None => {}
            Trigger::FailSyncs => return Err(io::Error::other("simulated fsync failure")),
            Trigger::CutAtSync { remaining, cut } => {
                if remaining <= 1 {
                    state.power_cut(cut);
                    state.powered = false;
                    state.trigger = Trigger::None;
                    return Err(power_off());
                }
                state.trigger = Trigger::CutAtSync {
                    remaining: remaining - 1,
                    cut,
                };
            }
            Trigger::CutAtHeaderSync(cut) => {
                if len <= HEADER_LEN {
                    state.power_cut(cut);
                    state.powered = false;
                    state.trigger = Trigger::None;
                    return Err(power_off());
                }
            }
        }
        let entry = state.entries.get_mut(&self.number).expect("checked above");
        let live = entry.live.as_mut().expect("checked above");
        live.synced = live.bytes.clone();
        live.unsynced.clear();
        if live.name_durable {
            entry.durable = Some(live.synced.clone());
        }
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        let mut state = self.lock();
        Ok(state.live(self.number, self.inode)?.bytes.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.lock();
        let live = state.live(self.number, self.inode)?;
        live.bytes.resize(len as usize, 0);
        live.unsynced.push(Change::SetLen(len));
        Ok(())
    }
}

impl LogFs for SimFs {
    fn list(&self) -> io::Result<Vec<u64>> {
        if !self.lock().powered {
            return Err(power_off());
        }
        Ok(self.numbers())
    }

    fn open(&self, segment: u64) -> io::Result<Arc<dyn SegmentFile>> {
        let state = self.lock();
        if !state.powered {
            return Err(power_off());
        }
        let inode = state
            .entries
            .get(&segment)
            .and_then(|e| e.live.as_ref())
            .map(|l| l.inode)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such segment"))?;
        Ok(Arc::new(SimFile {
            fs: self.clone(),
            number: segment,
            inode,
        }))
    }

    fn create(&self, segment: u64) -> io::Result<Arc<dyn SegmentFile>> {
        let mut state = self.lock();
        if !state.powered {
            return Err(power_off());
        }
        let inode = state.fresh_inode();
        let entry = state.entries.entry(segment).or_insert(Entry {
            live: None,
            durable: None,
        });
        if entry.live.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "segment exists",
            ));
        }
        entry.live = Some(Live::new(inode, Vec::new(), false));
        Ok(Arc::new(SimFile {
            fs: self.clone(),
            number: segment,
            inode,
        }))
    }

    fn remove(&self, segment: u64) -> io::Result<()> {
        let mut state = self.lock();
        if !state.powered {
            return Err(power_off());
        }
        let entry = state
            .entries
            .get_mut(&segment)
            .filter(|e| e.live.is_some())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such segment"))?;
        entry.live = None;
        if entry.durable.is_none() {
            state.entries.remove(&segment);
        }
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut state = self.lock();
        if !state.powered {
            return Err(power_off());
        }
        state.entries.retain(|_, e| e.live.is_some());
        for entry in state.entries.values_mut() {
            if let Some(live) = entry.live.as_mut() {
                live.name_durable = true;
                entry.durable = Some(live.synced.clone());
            }
        }
        Ok(())
    }

    fn path(&self, segment: u64) -> PathBuf {
        PathBuf::from(format!("/sim/log/{segment:012}.seg"))
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Zero-ahead headroom in the tests that turn it on.
const PREALLOCATE: u64 = 64 * 1024;

/// Zero-ahead off: files end where the log ends.
fn config(segment_size: u64) -> LogStoreConfig {
    config_with(segment_size, 0)
}

fn config_with(segment_size: u64, preallocate: u64) -> LogStoreConfig {
    LogStoreConfig {
        segment_size,
        index_cache_bytes: 4 * 1024 * 1024,
        index_table_events: 4,
        index_flush_after: std::time::Duration::from_millis(2),
        preallocate,
        ..LogStoreConfig::default()
    }
}

fn open(sim: &SimFs, index: &Path, segment_size: u64) -> LogStore {
    try_open(sim, index, segment_size).expect("open the store")
}

fn try_open(sim: &SimFs, index: &Path, segment_size: u64) -> Result<LogStore, LogError> {
    LogStore::open_with_fs(sim.as_dyn(), index, config(segment_size))
}

fn open_with(sim: &SimFs, index: &Path, segment_size: u64, preallocate: u64) -> LogStore {
    try_open_with(sim, index, segment_size, preallocate).expect("open the store")
}

fn try_open_with(
    sim: &SimFs,
    index: &Path,
    segment_size: u64,
    preallocate: u64,
) -> Result<LogStore, LogError> {
    LogStore::open_with_fs(sim.as_dyn(), index, config_with(segment_size, preallocate))
}

fn open_dir(dir: &Path) -> LogStore {
    LogStore::open_with(dir, config(4096)).expect("open the store")
}

/// An event of a few hundred bytes, so that small segments fill quickly.
fn event(label: &str) -> EventData {
    let mut payload = label.as_bytes().to_vec();
    payload.extend(std::iter::repeat_n(b'.', 120));
    EventData::new("TestEvent", payload, meta().with_reason(label))
}

fn batch_events(label: &str, n: usize) -> Vec<EventData> {
    (0..n).map(|k| event(&format!("{label}-e{k}"))).collect()
}

/// One append as sent, and what it returned.
struct Batch {
    stream: StreamId,
    events: Vec<EventData>,
    result: Result<AppendResult, LogError>,
}

impl Batch {
    fn acked(&self) -> Option<AppendResult> {
        self.result.as_ref().ok().copied()
    }
}

async fn append(store: &LogStore, stream: &StreamId, events: Vec<EventData>) -> Batch {
    let result = store
        .append(stream, ExpectedVersion::Any, events.clone())
        .await;
    Batch {
        stream: stream.clone(),
        events,
        result,
    }
}

/// `n` appends one after the other, to streams of both tenants; all must succeed.
async fn append_sequentially(store: &LogStore, label: &str, n: usize) -> Vec<Batch> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let s = stream(TENANTS[i % 2], &format!("{label}-{}", i % 3));
        let b = append(store, &s, batch_events(&format!("{label}-{i}"), 1 + i % 2)).await;
        b.result.as_ref().expect("append");
        out.push(b);
    }
    out
}

/// `tasks` tokio tasks each making `rounds` appends one after the other: to
/// its own stream with an exact expected version, and every third to a stream
/// shared with other tasks. Returns every append and its outcome.
async fn append_concurrently(store: &LogStore, tasks: usize, rounds: usize) -> Vec<Batch> {
    let mut handles = Vec::with_capacity(tasks);
    for t in 0..tasks {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let own = stream(TENANTS[t % 2], &format!("T{t}"));
            let shared = stream(TENANTS[t % 2], "shared");
            let mut version: Option<StreamVersion> = None;
            let mut out = Vec::with_capacity(rounds);
            for round in 0..rounds {
                let events = batch_events(&format!("t{t}-r{round}"), 1 + (t + round) % 3);
                let (s, expected) = if round % 3 == 2 {
                    (shared.clone(), ExpectedVersion::Any)
                } else {
                    (
                        own.clone(),
                        version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact),
                    )
                };
                let result = store.append(&s, expected, events.clone()).await;
                if let (true, Ok(r)) = (s == own, &result) {
                    version = Some(r.version);
                }
                out.push(Batch {
                    stream: s,
                    events,
                    result,
                });
            }
            out
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.expect("append task"));
    }
    all
}

/// Reads the whole log (both tenants) in position order and checks that the
/// positions run from 0 without gaps or repeats.
async fn read_whole_log(store: &LogStore) -> Vec<RecordedEvent> {
    let mut all = Vec::new();
    for t in TENANTS {
        all.extend(
            store
                .read_all(&tenant(t), GlobalPosition::START, 10_000)
                .await
                .expect("read_all"),
        );
    }
    all.sort_by_key(|e| e.position);
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.position, GlobalPosition(i as u64), "gap in the log");
    }
    all
}

/// Checks the reopened store: every acknowledged batch stored where its
/// append said, identically; positions gap-free; every stream read by stream
/// agreeing with the log; head and `verify` agreeing. Returns the whole log.
async fn check(store: &LogStore, batches: &[Batch]) -> Vec<RecordedEvent> {
    let all = read_whole_log(store).await;
    for b in batches {
        let Some(r) = b.acked() else { continue };
        let n = b.events.len() as u64;
        assert_eq!(r.last_position.0 + 1 - r.first_position.0, n);
        for (i, data) in b.events.iter().enumerate() {
            let stored = all
                .get(r.first_position.0 as usize + i)
                .unwrap_or_else(|| panic!("acknowledged event at {} lost", r.first_position));
            assert!(stored.same_data(data), "event {} differs", stored.position);
            assert_eq!(stored.stream, b.stream);
            assert_eq!(stored.version.0, r.version.0 + 1 - n + i as u64);
        }
    }
    let mut streams: BTreeMap<StreamId, Vec<RecordedEvent>> = BTreeMap::new();
    for e in &all {
        streams.entry(e.stream.clone()).or_default().push(e.clone());
    }
    for (s, expected) in &streams {
        let read = store
            .read_stream(s, Direction::Forward, StreamVersion::START, 10_000)
            .await
            .expect("read_stream");
        assert_eq!(&read, expected, "stream {s} disagrees with the log");
        for (i, e) in read.iter().enumerate() {
            assert_eq!(e.version, StreamVersion(i as u64));
        }
        assert_eq!(
            store.stream_version(s).await.expect("stream_version"),
            Some(StreamVersion(read.len() as u64 - 1))
        );
    }
    assert_eq!(
        store.head_position(),
        all.last().map(|e| e.position),
        "head position"
    );
    assert_eq!(store.verify().await.expect("verify"), all.len() as u64);
    all
}

/// Where the log of a segment's bytes ends (what follows is zeros or nothing).
fn used(bytes: &[u8]) -> usize {
    records(bytes).last().map_or(HEADER_LEN, |r| r.0 + r.1)
}

/// Waits until segment `number` is synced up to `upto` bytes (zero-ahead).
async fn zeroed_ahead(sim: &SimFs, number: u64, upto: usize) {
    for _ in 0..10_000 {
        if sim.synced_len(number) >= upto {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("segment {number} was never zeroed up to {upto}");
}

/// `(offset, framed length)` of every complete record of a segment's bytes.
fn records(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = HEADER_LEN;
    while at + FRAME_LEN <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        if len == 0 || at + FRAME_LEN + len > bytes.len() {
            break;
        }
        out.push((at, FRAME_LEN + len));
        at += FRAME_LEN + len;
    }
    out
}

fn assert_corrupted_at(err: LogError, sim: &SimFs, segment: u64, offset: usize) {
    match err {
        LogError::Corrupted {
            segment: path,
            offset: at,
            ..
        } => {
            assert_eq!(path, sim.path(segment), "segment named by {path:?}");
            assert_eq!(at, offset as u64, "offset named");
        }
        other => panic!("expected Corrupted, got {other}"),
    }
}

/// The scrub and a read of the victim's stream both report the damage at
/// `offset` of `segment`.
async fn assert_scrub_and_read_find(
    store: &LogStore,
    victim: &StreamId,
    sim: &SimFs,
    segment: u64,
    offset: usize,
) {
    assert_corrupted_at(
        store.verify().await.expect_err("verify"),
        sim,
        segment,
        offset,
    );
    let read = store
        .read_stream(victim, Direction::Forward, StreamVersion::START, 100)
        .await
        .expect_err("read_stream");
    assert_corrupted_at(read, sim, segment, offset);
}

/// After recovery the store holds exactly the `acked` events of `batches`,
/// and the next append takes the next position and is written where the
/// log was cut (`end` of segment 0); it joins `batches`.
async fn appends_resume_where_the_log_was_cut(
    store: &LogStore,
    sim: &SimFs,
    batches: &mut Vec<Batch>,
    acked: usize,
    end: usize,
) {
    assert_eq!(check(store, batches).await.len(), acked);
    let z = append(store, &stream("avon", "z"), batch_events("z", 2)).await;
    assert_eq!(
        z.acked().expect("append after recovery").first_position,
        GlobalPosition(acked as u64)
    );
    assert_eq!(records(&sim.bytes(0)).last().map(|r| r.0), Some(end));
    batches.push(z);
}

fn expect_failed(b: &Batch) {
    assert!(
        matches!(b.result, Err(LogError::Failed { .. })),
        "expected Failed, got {:?}",
        b.result.as_ref().map(|_| ())
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// The last position an index folder covers, read straight from sled (the
/// layout documented in the engine's `index` module: tree `log`, key `M`,
/// position as a big-endian u64 first). Only to check a test's setup.
fn marker_position(index: &Path) -> Option<u64> {
    let db = (0..10_000)
        .find_map(|_| match sled::open(index) {
            Err(e) if e.to_string().contains("could not acquire lock") => {
                std::thread::sleep(Duration::from_millis(1));
                None
            }
            other => Some(other.expect("open the index")),
        })
        .expect("sled's lock is released");
    let tree = db.open_tree("log").expect("the log tree");
    let value = tree.get(b"M").expect("read the marker")?;
    Some(u64::from_be_bytes(value[..8].try_into().expect("8 bytes")))
}

// ---------------------------------------------------------------------------
// Acknowledged appends survive
// ---------------------------------------------------------------------------

/// `close_first`: a clean close, then the power cut; else the power is cut
/// under the running store (with zero-ahead on: while zeroed space lies
/// past the end of the log).
async fn acknowledged_appends_survive(close_first: bool, preallocate: u64) {
    let sim = SimFs::new();
    let index = tempfile::tempdir().expect("temp dir");
    let store = open_with(&sim, index.path(), 4096, preallocate);
    assert_eq!(store.verify().await.expect("verify"), 0);

    let batches = append_concurrently(&store, 8, 20).await;
    assert!(
        batches.iter().all(|b| b.result.is_ok()),
        "all appends succeed"
    );
    let numbers = sim.numbers();
    assert!(numbers.len() > 3, "the appends span several segments");
    let last = *numbers.last().expect("segments");
    for &n in &numbers[..numbers.len() - 1] {
        assert_eq!(
            sim.len(n),
            used(&sim.bytes(n)),
            "sealed segment {n} holds no zeros"
        );
    }
    if close_first {
        store.close().await.expect("close");
        for &n in &numbers {
            assert_eq!(
                sim.len(n),
                used(&sim.bytes(n)),
                "closed segment {n} holds no zeros"
            );
        }
        drop(store);
        sim.power_cut(Cut::default());
    } else {
        if preallocate > 0 {
            zeroed_ahead(&sim, last, used(&sim.bytes(last)) + 1).await;
        }
        sim.power_cut(Cut::default());
        drop(store);
    }

    let store = open_with(&sim, index.path(), 4096, preallocate);
    let all = check(&store, &batches).await;
    let total: usize = batches.iter().map(|b| b.events.len()).sum();
    assert_eq!(all.len(), total);

    // New appends continue the positions and the streams' versions.
    let fresh = stream("kent", "after-cut");
    let r = store
        .append(&fresh, ExpectedVersion::NoStream, batch_events("fresh", 2))
        .await
        .expect("append after reopen");
    assert_eq!(r.first_position, GlobalPosition(total as u64));
    let own = stream("kent", "T0");
    let head = store.stream_version(&own).await.expect("version");
    let more = store
        .append(
            &own,
            ExpectedVersion::Exact(head.expect("T0 exists")),
            batch_events("more", 1),
        )
        .await
        .expect("append with the exact version");
    assert_eq!(more.first_position, GlobalPosition(total as u64 + 2));
    sim.power_cut(Cut::default());
    drop(store);
    let store = open_with(&sim, index.path(), 4096, preallocate);
    assert_eq!(check(&store, &batches).await.len(), total + 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_a_power_cut_after_close() {
    acknowledged_appends_survive(true, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_a_power_cut_without_close() {
    acknowledged_appends_survive(false, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_zero_ahead_acknowledged_appends_survive_a_power_cut_after_close() {
    acknowledged_appends_survive(true, PREALLOCATE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_zero_ahead_acknowledged_appends_survive_a_power_cut_with_zeros_past_the_end() {
    acknowledged_appends_survive(false, PREALLOCATE).await;
}

// ---------------------------------------------------------------------------
// Unacknowledged data disappears without harm
// ---------------------------------------------------------------------------

/// A failed fsync fails the append and stops the store. After a process crash
/// (the page cache kept the bytes) the record may be back; after a power cut
/// it is gone. Either way, retrying the same append is safe and lands at the
/// same position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_fails_the_append_and_a_retry_after_reopen_is_safe() {
    for (power_cut, preallocate) in [
        (false, 0),
        (true, 0),
        (false, PREALLOCATE),
        (true, PREALLOCATE),
    ] {
        let sim = SimFs::new();
        let index = tempfile::tempdir().expect("temp dir");
        let store = open_with(&sim, index.path(), 1 << 20, preallocate);
        let mut batches = append_sequentially(&store, "a", 10).await;
        let acked: usize = batches.iter().map(|b| b.events.len()).sum();

        sim.arm(Trigger::FailSyncs);
        let x = append(&store, &stream("kent", "x"), batch_events("x", 3)).await;
        expect_failed(&x);
        sim.arm(Trigger::None);
        // The store stopped accepting appends, even though syncs work again.
        expect_failed(&append(&store, &stream("kent", "y"), batch_events("y", 1)).await);
        drop(store);
        if power_cut {
            sim.power_cut(Cut::default());
        }

        let store = open_with(&sim, index.path(), 1 << 20, preallocate);
        let all = check(&store, &batches).await;
        assert_eq!(
            all.len(),
            if power_cut { acked } else { acked + 3 },
            "power cut: {power_cut}, preallocate: {preallocate}"
        );
        let retry = store
            .append(&x.stream, ExpectedVersion::Any, x.events.clone())
            .await
            .expect("retry");
        assert_eq!(retry.first_position, GlobalPosition(acked as u64));
        batches.push(Batch {
            result: Ok(retry),
            ..x
        });
        assert_eq!(check(&store, &batches).await.len(), acked + 3);
    }
}

/// How the unacknowledged record at the end of the log gets damaged.
#[derive(Debug, Clone, Copy)]
enum Tear {
    /// Only this many of its bytes reached the disk.
    Keep(usize),
    /// All but the last byte reached the disk.
    AllButOne,
    /// All of it reached the disk, but the byte at this offset is flipped.
    Flip(usize),
    /// As `Flip`, counting from the record's end.
    FlipFromEnd(usize),
}

/// A torn record after the last synced one (whether cut short or with
/// damaged bytes) is removed on open; everything acknowledged stays, and the
/// next append is written where the torn record was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_final_record_is_cut_away() {
    let tears = [
        Tear::Keep(1),
        Tear::Keep(FRAME_LEN - 1),
        Tear::Keep(FRAME_LEN),
        Tear::Keep(FRAME_LEN + 1),
        Tear::Keep(200),
        Tear::AllButOne,
        Tear::Flip(0),
        Tear::Flip(3),
        Tear::Flip(5),
        Tear::Flip(FRAME_LEN + 1),
        Tear::Flip(150),
        Tear::FlipFromEnd(1),
    ];
    for tear in tears {
        let sim = SimFs::new();
        let index = tempfile::tempdir().expect("temp dir");
        let store = open(&sim, index.path(), 1 << 20);
        let mut batches = append_sequentially(&store, "a", 10).await;
        let acked: usize = batches.iter().map(|b| b.events.len()).sum();
        let end = sim.len(0);

        sim.arm(Trigger::FailSyncs);
        expect_failed(&append(&store, &stream("kent", "x"), batch_events("x", 3)).await);
        drop(store);
        sim.revive();
        let torn_len = sim.len(0) - end;
        assert!(torn_len > 300, "the failed append was written");
        match tear {
            Tear::Keep(n) => sim.power_cut(Cut {
                unsynced_tail: n,
                ..Cut::default()
            }),
            Tear::AllButOne => sim.power_cut(Cut {
                unsynced_tail: torn_len - 1,
                ..Cut::default()
            }),
            Tear::Flip(at) => {
                sim.power_cut(Cut {
                    unsynced_tail: usize::MAX,
                    ..Cut::default()
                });
                sim.damage(0, end + at, 0x5a);
            }
            Tear::FlipFromEnd(at) => {
                sim.power_cut(Cut {
                    unsynced_tail: usize::MAX,
                    ..Cut::default()
                });
                sim.damage(0, end + torn_len - at, 0x5a);
            }
        }
        assert!(sim.len(0) > end, "{tear:?}: a torn tail is on disk");

        let store = open(&sim, index.path(), 1 << 20);
        assert_eq!(sim.len(0), end, "{tear:?}: the torn tail is cut off");
        appends_resume_where_the_log_was_cut(&store, &sim, &mut batches, acked, end).await;
        drop(store);
        sim.power_cut(Cut::default());
        let store = open(&sim, index.path(), 1 << 20);
        assert_eq!(check(&store, &batches).await.len(), acked + 2, "{tear:?}");
    }
}

/// Power is cut at a sync chosen by the test while many appends are in
/// flight, letting various amounts of unsynced data through. Every
/// acknowledged append survives; an unacknowledged one is there whole or not
/// at all; retrying the unacknowledged ones stores each exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_while_appends_are_in_flight_keeps_every_acknowledged_append() {
    let cases = [
        (5, Cut::default()),
        (
            9,
            Cut {
                unsynced_tail: 150,
                keep_new_files: true,
            },
        ),
        (
            12,
            Cut {
                unsynced_tail: 1000,
                keep_new_files: false,
            },
        ),
        (
            15,
            Cut {
                unsynced_tail: usize::MAX,
                keep_new_files: true,
            },
        ),
    ];
    let runs = cases
        .iter()
        .flat_map(|&case| [(case, 0), (case, PREALLOCATE)]);
    for ((at_sync, cut), preallocate) in runs {
        let sim = SimFs::new();
        let index = tempfile::tempdir().expect("temp dir");
        let store = open_with(&sim, index.path(), 4096, preallocate);
        // Each task appends one after the other, so there are at least 15
        // group commits, hence at least 15 syncs: the cut happens.
        sim.arm(Trigger::CutAtSync {
            remaining: at_sync,
            cut,
        });
        let mut batches = append_concurrently(&store, 6, 15).await;
        let failed: Vec<&Batch> = batches.iter().filter(|b| b.result.is_err()).collect();
        assert!(!failed.is_empty(), "the power cut failed some appends");
        failed.iter().for_each(|b| expect_failed(b));
        drop(store);
        sim.revive();

        let store = open_with(&sim, index.path(), 4096, preallocate);
        let all = check(&store, &batches).await;
        let by_id: HashMap<_, _> = all.iter().map(|e| (e.id, e)).collect();
        let acked: usize = batches
            .iter()
            .filter(|b| b.result.is_ok())
            .map(|b| b.events.len())
            .sum();
        let mut recovered = 0;
        for b in batches.iter().filter(|b| b.result.is_err()) {
            let found: Vec<_> = b.events.iter().filter_map(|e| by_id.get(&e.id)).collect();
            assert!(
                found.is_empty() || found.len() == b.events.len(),
                "an append is stored whole or not at all"
            );
            recovered += found.len();
        }
        assert_eq!(all.len(), acked + recovered, "nothing but appends sent");

        // Retrying every failed append stores each exactly once.
        for b in batches.iter_mut().filter(|b| b.result.is_err()) {
            let before = by_id.get(&b.events[0].id).map(|e| e.position);
            let r = store
                .append(&b.stream, ExpectedVersion::Any, b.events.clone())
                .await
                .expect("retry");
            if let Some(p) = before {
                assert_eq!(r.first_position, p, "a retry of a stored append");
            }
            b.result = Ok(r);
        }
        let total: usize = batches.iter().map(|b| b.events.len()).sum();
        assert_eq!(check(&store, &batches).await.len(), total);
    }
}

// ---------------------------------------------------------------------------
// Half-created segments
// ---------------------------------------------------------------------------

/// Power is cut while a new segment is being created, with the file left
/// missing, empty, with part of its header, or with all of it. A segment
/// without a valid header is removed on open and later created again; one
/// with its header is simply used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_cut_short_while_being_created_is_removed_on_open() {
    let cases = [
        (Cut::default(), None),
        (
            Cut {
                unsynced_tail: 0,
                keep_new_files: true,
            },
            Some(0),
        ),
        (
            Cut {
                unsynced_tail: 10,
                keep_new_files: true,
            },
            Some(10),
        ),
        (
            Cut {
                unsynced_tail: HEADER_LEN,
                keep_new_files: true,
            },
            Some(HEADER_LEN),
        ),
    ];
    for (cut, left) in cases {
        let sim = SimFs::new();
        let index = tempfile::tempdir().expect("temp dir");
        let store = open(&sim, index.path(), 1024);
        sim.arm(Trigger::CutAtHeaderSync(cut));
        let mut batches = Vec::new();
        for i in 0..100 {
            let b = append(
                &store,
                &stream("kent", "roll"),
                batch_events(&format!("r{i}"), 1),
            )
            .await;
            let failed = b.result.is_err();
            batches.push(b);
            if failed {
                break;
            }
        }
        expect_failed(batches.last().expect("appends"));
        drop(store);
        sim.revive();
        match left {
            None => assert_eq!(sim.numbers(), [0], "{cut:?}"),
            Some(len) => {
                assert_eq!(sim.numbers(), [0, 1], "{cut:?}");
                assert_eq!(sim.len(1), len, "{cut:?}");
            }
        }

        let store = open(&sim, index.path(), 1024);
        let expected = if left == Some(HEADER_LEN) {
            vec![0, 1]
        } else {
            vec![0]
        };
        assert_eq!(sim.numbers(), expected, "{cut:?}");
        let before = check(&store, &batches).await.len();
        // Appending goes on, creating the next segments.
        batches.extend(append_sequentially(&store, "more", 12).await);
        assert!(sim.numbers().len() > expected.len() + 1, "{cut:?}");
        drop(store);
        sim.power_cut(Cut::default());
        let store = open(&sim, index.path(), 1024);
        assert!(check(&store, &batches).await.len() > before);
    }

    // The very first open, creating segment 0, is cut short: it fails, and
    // the next open starts afresh whatever was left of the file.
    for cut in [
        Cut::default(),
        Cut {
            unsynced_tail: 0,
            keep_new_files: true,
        },
        Cut {
            unsynced_tail: 10,
            keep_new_files: true,
        },
    ] {
        let sim = SimFs::new();
        let index = tempfile::tempdir().expect("temp dir");
        sim.arm(Trigger::CutAtHeaderSync(cut));
        let err = try_open(&sim, index.path(), 1024)
            .err()
            .expect("the first open fails");
        assert!(matches!(err, LogError::Io { .. }), "{cut:?}: {err}");
        sim.revive();
        let store = open(&sim, index.path(), 1024);
        assert_eq!(sim.numbers(), [0], "{cut:?}");
        assert_eq!(sim.len(0), HEADER_LEN, "{cut:?}");
        let batches = append_sequentially(&store, "a", 3).await;
        drop(store);
        sim.power_cut(Cut::default());
        let store = open(&sim, index.path(), 1024);
        assert_eq!(check(&store, &batches).await.len(), 4, "{cut:?}");
    }
}

/// A short segment file at the end of the folder (as a crash during creation
/// can leave, here with a durable name) is removed on open, and the removal
/// is itself durable. A first segment with a short header is started afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_created_segment_at_the_tail_is_removed_durably() {
    let header_start = b"CBOOKSEG\x01\x00";
    for content in [&[][..], &header_start[..5], &header_start[..]] {
        let sim = SimFs::new();
        let index = tempfile::tempdir().expect("temp dir");
        let store = open(&sim, index.path(), 1024);
        let batches = append_sequentially(&store, "a", 12).await;
        store.close().await.expect("close");
        drop(store);
        let numbers = sim.numbers();
        assert!(numbers.len() >= 3);
        let next = numbers.last().expect("segments") + 1;
        sim.put(next, content);

        let store = open(&sim, index.path(), 1024);
        assert_eq!(
            sim.numbers(),
            numbers,
            "the half-created segment is removed"
        );
        check(&store, &batches).await;
        drop(store);
        sim.power_cut(Cut::default());
        assert_eq!(sim.numbers(), numbers, "the removal was made durable");
        let store = open(&sim, index.path(), 1024);
        let mut batches = batches;
        batches.extend(append_sequentially(&store, "b", 12).await);
        assert!(sim.numbers().len() > numbers.len());
        check(&store, &batches).await;
    }

    // The very first segment with a short header: the store starts afresh.
    for content in [&[][..], &header_start[..5]] {
        let sim = SimFs::new();
        let index = tempfile::tempdir().expect("temp dir");
        sim.put(0, content);
        let store = open(&sim, index.path(), 1024);
        assert_eq!(sim.len(0), HEADER_LEN);
        let batches = append_sequentially(&store, "a", 3).await;
        drop(store);
        sim.power_cut(Cut::default());
        let store = open(&sim, index.path(), 1024);
        assert_eq!(check(&store, &batches).await.len(), 4);
    }
}

// ---------------------------------------------------------------------------
// sled lagging behind the log
// ---------------------------------------------------------------------------

/// sled's `flush` is not an fsync, so after a power cut its files may hold an
/// older state than the log. Restoring an old copy of the index folder must
/// lose nothing: the log is re-indexed from the old marker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_lagging_behind_the_log_is_caught_up_on_open() {
    for restore in ["old copy", "no index at all"] {
        let dir = tempfile::tempdir().expect("temp dir");
        let index = dir.path().join("index");
        let aside = TempDir::new().expect("temp dir");
        let old_index = aside.path().join("index");

        let store = open_dir(dir.path());
        let a = append_sequentially(&store, "a", 20).await;
        store.close().await.expect("close");
        drop(store);
        copy_dir(&index, &old_index);
        let a_events: usize = a.iter().map(|b| b.events.len()).sum();
        assert_eq!(marker_position(&old_index), Some(a_events as u64 - 1));

        let store = open_dir(dir.path());
        let b = append_sequentially(&store, "b", 40).await;
        let a_and_b: Vec<RecordedEvent> = read_whole_log(&store).await;
        store.close().await.expect("close");
        drop(store);
        assert!(marker_position(&index) > marker_position(&old_index));
        std::fs::remove_dir_all(&index).expect("remove index");
        if restore == "old copy" {
            copy_dir(&old_index, &index);
        }

        let store = open_dir(dir.path());
        let all = read_whole_log(&store).await;
        assert_eq!(all, a_and_b, "{restore}: the log reads as before");
        let mut streams: BTreeMap<StreamId, Vec<RecordedEvent>> = BTreeMap::new();
        for e in &all {
            streams.entry(e.stream.clone()).or_default().push(e.clone());
        }
        for (s, events) in &streams {
            let read = store
                .read_stream(s, Direction::Forward, StreamVersion::START, 10_000)
                .await
                .expect("read_stream");
            assert_eq!(&read, events, "{restore}: stream {s}");
            let back = store
                .read_stream(s, Direction::Backward, StreamVersion::END, 10_000)
                .await
                .expect("read_stream backwards");
            assert!(back.iter().rev().eq(events.iter()), "{restore}: stream {s}");
        }
        for batch in a.iter().chain(&b) {
            let again = store
                .append(
                    &batch.stream,
                    ExpectedVersion::NoStream,
                    batch.events.clone(),
                )
                .await
                .expect("an idempotent re-append");
            assert_eq!(Some(again), batch.acked(), "{restore}: original result");
        }
        // Stream heads and the global head were caught up too.
        let s = &b.last().expect("batches").stream;
        let head = store.stream_version(s).await.expect("version");
        assert_eq!(head, streams[s].last().map(|e| e.version));
        let r = store
            .append(
                s,
                ExpectedVersion::Exact(head.expect("stream exists")),
                batch_events("c", 1),
            )
            .await
            .expect("append after recovery");
        assert_eq!(r.first_position, GlobalPosition(all.len() as u64));
        assert_eq!(store.verify().await.expect("verify"), all.len() as u64 + 1);
    }
}

// ---------------------------------------------------------------------------
// Damage before the tail
// ---------------------------------------------------------------------------

/// Fills a store on `sim` with sequential appends until there are at least
/// `segments` segments, then appends `tail` more into the last segment
/// (reopened with a large segment size, so that it does not roll).
async fn fill(sim: &SimFs, index: &Path, segments: usize, tail: usize) -> (Vec<Batch>, usize) {
    async fn one(store: &LogStore, i: usize) -> Batch {
        let s = stream(TENANTS[i % 2], &format!("s{}", i % 3));
        let b = append(store, &s, batch_events(&format!("f{i}"), 1 + i % 2)).await;
        b.result.as_ref().expect("append");
        b
    }
    let mut batches = Vec::new();
    let store = open(sim, index, 2048);
    while sim.numbers().len() < segments {
        assert!(batches.len() < 500, "the store fills up");
        batches.push(one(&store, batches.len()).await);
    }
    store.close().await.expect("close");
    drop(store);
    let store = open(sim, index, 1 << 20);
    for _ in 0..tail {
        batches.push(one(&store, batches.len()).await);
    }
    store.close().await.expect("close");
    drop(store);
    let total = batches.iter().map(|b| b.events.len()).sum();
    (batches, total)
}

/// Which batch a record is: the number of records in earlier segments plus
/// its index in its own (one record per append, appended one at a time).
fn record_index(sim: &SimFs, segment: u64, index_in_segment: usize) -> usize {
    (0..segment)
        .map(|n| records(&sim.bytes(n)).len())
        .sum::<usize>()
        + index_in_segment
}

/// A damaged record in a segment that is not the last is never a torn tail:
/// reads and `verify` report it, and an open that has to scan it (the index
/// is gone) fails, naming the segment and offset — and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_in_an_earlier_segment_is_a_clear_error() {
    let sim = SimFs::new();
    let index = tempfile::tempdir().expect("temp dir");
    let (batches, total) = fill(&sim, index.path(), 4, 0).await;
    let target = 1;
    let (offset, len) = records(&sim.bytes(target))[1];
    let victim = &batches[record_index(&sim, target, 1)];
    sim.damage(target, offset + FRAME_LEN + len / 2, 0x01);

    // With the index: the open does not scan sealed segments, but reads and
    // the scrub find the damage.
    let store = open(&sim, index.path(), 2048);
    assert_eq!(
        store.head_position(),
        Some(GlobalPosition(total as u64 - 1))
    );
    assert_scrub_and_read_find(&store, &victim.stream, &sim, target, offset).await;
    assert_corrupted_at(
        store
            .read_all(victim.stream.tenant(), GlobalPosition::START, 10_000)
            .await
            .expect_err("read_all"),
        &sim,
        target,
        offset,
    );
    // Re-appending the damaged events cannot be answered from the index either.
    let err = store
        .append(&victim.stream, ExpectedVersion::Any, victim.events.clone())
        .await
        .expect_err("re-append of a damaged record");
    assert!(
        matches!(err, LogError::Corrupted { .. }),
        "expected Corrupted, got {err}"
    );
    drop(store);

    // Without the index, the open scans the whole log and stops at the damage.
    let lengths: Vec<usize> = sim.numbers().iter().map(|&n| sim.len(n)).collect();
    std::fs::remove_dir_all(index.path()).expect("remove index");
    let err = try_open(&sim, index.path(), 2048)
        .err()
        .expect("open over damage fails");
    assert_corrupted_at(err, &sim, target, offset);
    let after: Vec<usize> = sim.numbers().iter().map(|&n| sim.len(n)).collect();
    assert_eq!(after, lengths, "a failed open changes no segment");
}

/// The rule in `recovery.rs`: damage in the last segment is a torn tail only
/// if it lies in the last group commit. With the index intact, damage before
/// the marker is not looked at by open, but reads and `verify` report it.
/// With the index gone the open scans the last segment; the damaged record is
/// followed by intact records of later group commits, which proves it had
/// been synced, so the open fails naming it — and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_in_the_last_segment_follows_the_torn_tail_rule() {
    let sim = SimFs::new();
    let index = tempfile::tempdir().expect("temp dir");
    let (batches, total) = fill(&sim, index.path(), 3, 5).await;
    let last = *sim.numbers().last().expect("segments");
    let (offset, len) = records(&sim.bytes(last))[2];
    let victim_index = record_index(&sim, last, 2);
    let victim = &batches[victim_index];
    let cut_at = victim.acked().expect("acked").first_position;
    sim.damage(last, offset + FRAME_LEN + len / 3, 0x80);

    let store = open(&sim, index.path(), 1 << 20);
    assert_eq!(
        sim.len(last),
        records(&sim.bytes(last)).last().map_or(0, |r| r.0 + r.1)
    );
    assert_eq!(
        store.head_position(),
        Some(GlobalPosition(total as u64 - 1))
    );
    assert_corrupted_at(
        store.verify().await.expect_err("verify"),
        &sim,
        last,
        offset,
    );
    assert_corrupted_at(
        store
            .read_stream(&victim.stream, Direction::Backward, StreamVersion::END, 100)
            .await
            .expect_err("read_stream"),
        &sim,
        last,
        offset,
    );
    drop(store);

    std::fs::remove_dir_all(index.path()).expect("remove index");
    let lengths: Vec<usize> = sim.numbers().iter().map(|&n| sim.len(n)).collect();
    let err = try_open(&sim, index.path(), 1 << 20)
        .err()
        .expect("open over damage before later groups fails");
    assert!(err.to_string().contains("later group commit"), "{err}");
    assert_corrupted_at(err, &sim, last, offset);
    let after: Vec<usize> = sim.numbers().iter().map(|&n| sim.len(n)).collect();
    assert_eq!(after, lengths, "a failed open changes no segment");
    assert!(
        victim_index + 1 < batches.len() && (cut_at.0 as usize) < total,
        "acknowledged records follow the damaged one"
    );
}

// ---------------------------------------------------------------------------
// Zero-ahead
// ---------------------------------------------------------------------------

/// Opens a store with zero-ahead on, makes `n` appends and waits until the
/// whole headroom past them is zeroed and synced. Returns the appends and
/// where the log ends.
async fn zeroed_store(sim: &SimFs, index: &Path, n: usize) -> (LogStore, Vec<Batch>, usize) {
    let store = open_with(sim, index, 1 << 20, PREALLOCATE);
    let batches = append_sequentially(&store, "a", n).await;
    let end = used(&sim.bytes(0));
    zero_ahead_settled(sim, end).await;
    assert!(
        sim.bytes(0)[end..].iter().all(|&b| b == 0),
        "zeros past the end"
    );
    (store, batches, end)
}

/// Waits until the zero-ahead of segment 0 is done: at least half the
/// headroom past `end` (where the log ends) zeroed and synced, nothing
/// unsynced, and no change for a while.
async fn zero_ahead_settled(sim: &SimFs, end: usize) {
    zeroed_ahead(sim, 0, end + PREALLOCATE as usize / 2).await;
    let mut last = 0;
    let mut still = 0;
    while still < 20 {
        let synced = sim.synced_len(0);
        if synced == last && sim.len(0) == synced {
            still += 1;
        } else {
            (last, still) = (synced, 0);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The bytes of segment 0 past `end` are zeros (or absent).
fn only_zeros_after(sim: &SimFs, end: usize) -> bool {
    sim.bytes(0)[end..].iter().all(|&b| b == 0)
}

/// The unacknowledged group was written over zero-ahead space, and the power
/// cut let any part of it through: the front of it, or (as disks may) a later
/// part while its start stayed zero. Either way it is cut away on open,
/// everything acknowledged stays, and the next append goes where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_group_over_zeros_is_cut_away() {
    #[derive(Debug, Clone, Copy)]
    enum Tear {
        /// The first bytes of the group's write reached the disk.
        Keep(usize),
        /// Its bytes from this offset on did; those before stayed zero.
        From(usize),
    }
    let tears = [
        Tear::Keep(1),
        Tear::Keep(FRAME_LEN),
        Tear::Keep(200),
        Tear::From(FRAME_LEN),
        Tear::From(100),
        Tear::From(4),
    ];
    for tear in tears {
        let sim = SimFs::new();
        let index = tempfile::tempdir().expect("temp dir");
        let (store, mut batches, end) = zeroed_store(&sim, index.path(), 10).await;
        let acked: usize = batches.iter().map(|b| b.events.len()).sum();

        sim.arm(Trigger::FailSyncs);
        expect_failed(&append(&store, &stream("kent", "x"), batch_events("x", 3)).await);
        let written = sim.bytes(0);
        let (at, torn_len) = *records(&written)
            .last()
            .expect("the failed append was written");
        assert_eq!(at, end, "the failed append went over the zeros");
        assert!(torn_len > 300);
        let total_len = sim.len(0);
        drop(store);
        sim.revive();
        match tear {
            Tear::Keep(n) => sim.power_cut(Cut {
                unsynced_tail: n,
                ..Cut::default()
            }),
            Tear::From(k) => {
                sim.power_cut(Cut::default());
                sim.poke(0, end + k, &written[end + k..end + torn_len]);
            }
        }
        assert_eq!(sim.len(0), total_len, "{tear:?}: the zeros are still there");
        assert!(
            !only_zeros_after(&sim, end),
            "{tear:?}: a torn group is on disk"
        );

        let store = open_with(&sim, index.path(), 1 << 20, PREALLOCATE);
        assert!(
            only_zeros_after(&sim, end),
            "{tear:?}: the torn group is cut off"
        );
        assert_eq!(used(&sim.bytes(0)), end, "{tear:?}");
        appends_resume_where_the_log_was_cut(&store, &sim, &mut batches, acked, end).await;
        sim.power_cut(Cut::default());
        drop(store);
        let store = open_with(&sim, index.path(), 1 << 20, PREALLOCATE);
        assert_eq!(check(&store, &batches).await.len(), acked + 2, "{tear:?}");
    }
}

/// A record inside synced data reads as zeros (say, a page the disk lost),
/// with later group commits after it: that is corruption, never a clean end
/// of the log. With the index the open does not look there, but reads and
/// `verify` report it; without it the open fails naming it and changes
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zeroed_record_followed_by_a_later_group_is_corruption() {
    for zeroed in ["frame", "whole record"] {
        let sim = SimFs::new();
        let index = tempfile::tempdir().expect("temp dir");
        let (store, batches, _) = zeroed_store(&sim, index.path(), 8).await;
        // The power fails under the running store: the zeros stay.
        sim.power_cut(Cut::default());
        drop(store);
        let (offset, len) = records(&sim.bytes(0))[3];
        let victim = &batches[3];
        let wipe = if zeroed == "frame" { FRAME_LEN } else { len };
        sim.poke(0, offset, &vec![0; wipe]);

        let store = open_with(&sim, index.path(), 1 << 20, PREALLOCATE);
        assert_scrub_and_read_find(&store, &victim.stream, &sim, 0, offset).await;
        sim.power_cut(Cut::default());
        drop(store);

        std::fs::remove_dir_all(index.path()).expect("remove index");
        let before = sim.bytes(0);
        let err = try_open_with(&sim, index.path(), 1 << 20, PREALLOCATE)
            .err()
            .expect("open over zeroed synced records fails");
        assert!(
            err.to_string().contains("later group commit"),
            "{zeroed}: {err}"
        );
        assert_corrupted_at(err, &sim, 0, offset);
        assert_eq!(
            sim.bytes(0),
            before,
            "{zeroed}: a failed open changes nothing"
        );
    }
}

/// Stale bytes past the end of the log must not outlive recovery. Two
/// appends A and B go into one group commit, which the power cut interrupts
/// with both on disk; A is damaged, B intact. B belongs to the torn group,
/// so recovery cuts the log at A — and must cut B off the file too: the next
/// append Z, as long as A, is written where A was, and if B were still after
/// it, B (whose positions follow Z's) would read as a record after the next
/// power cut, an append nobody acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_bytes_past_the_end_are_cut_off_on_recovery() {
    for preallocate in [0, PREALLOCATE] {
        let sim = SimFs::new();
        let index = tempfile::tempdir().expect("temp dir");
        let store = open_with(&sim, index.path(), 1 << 20, preallocate);
        let mut batches = append_sequentially(&store, "a", 5).await;
        if preallocate > 0 {
            zero_ahead_settled(&sim, used(&sim.bytes(0))).await;
        }

        // W's sync is held while A and B queue up behind it: they make one group.
        sim.hold_syncs();
        let w = {
            let store = store.clone();
            tokio::spawn(
                async move { append(&store, &stream("kent", "w"), batch_events("w", 1)).await },
            )
        };
        sim.syncs_waiting(1).await;
        let pair = {
            let store = store.clone();
            let sim = sim.clone();
            tokio::spawn(async move {
                let (sa, sb) = (stream("kent", "A"), stream("kent", "B"));
                let (a, b, ()) = tokio::join!(
                    append(&store, &sa, batch_events("A", 1)),
                    append(&store, &sb, batch_events("B", 1)),
                    async {
                        // Both appends are queued by now: let W's sync through.
                        tokio::task::yield_now().await;
                        sim.let_sync_through();
                    }
                );
                (a, b)
            })
        };
        let w = w.await.expect("W");
        w.result.as_ref().expect("W is acknowledged");
        batches.push(w);
        sim.syncs_waiting(1).await;
        sim.cut_power(Cut {
            unsynced_tail: usize::MAX,
            ..Cut::default()
        });
        sim.open_gate();
        let (a, b) = pair.await.expect("A and B");
        expect_failed(&a);
        expect_failed(&b);
        drop(store);
        sim.revive();

        let recs = records(&sim.bytes(0));
        let [.., (a_at, a_len), (b_at, b_len)] = recs[..] else {
            panic!("A and B are on disk");
        };
        assert_eq!(b_at, a_at + a_len);
        assert_eq!(a_len, b_len);
        sim.damage(0, a_at + FRAME_LEN + 5, 0x01);

        let store = open_with(&sim, index.path(), 1 << 20, preallocate);
        assert!(
            only_zeros_after(&sim, a_at),
            "preallocate {preallocate}: B is gone"
        );
        let acked: usize = batches.iter().map(|b| b.events.len()).sum();
        assert_eq!(check(&store, &batches).await.len(), acked);
        let z = append(&store, &stream("kent", "A"), batch_events("Z", 1)).await;
        assert_eq!(
            z.acked().expect("Z").first_position,
            GlobalPosition(acked as u64)
        );
        assert_eq!(
            records(&sim.bytes(0)).last().copied(),
            Some((a_at, a_len)),
            "Z is where A was, and as long"
        );
        batches.push(z);
        sim.power_cut(Cut::default());
        drop(store);

        let store = open_with(&sim, index.path(), 1 << 20, preallocate);
        assert_eq!(
            check(&store, &batches).await.len(),
            acked + 1,
            "preallocate {preallocate}: nothing but Z after the cut"
        );
    }
}

// ---------------------------------------------------------------------------
// Written appends (answered before their sync: the audit of reads)
// ---------------------------------------------------------------------------

/// A store whose written appends wait an hour for a sync of their own.
fn open_unhurried(sim: &SimFs, index: &Path) -> LogStore {
    let config = LogStoreConfig {
        written_sync_after: Duration::from_secs(3600),
        ..config(1 << 20)
    };
    LogStore::open_with_fs(sim.as_dyn(), index, config).expect("open the store")
}

/// Three written appends to one stream, one after the other; each is
/// answered without a sync.
async fn append_written(store: &LogStore, label: &str) -> Vec<Batch> {
    let s = stream("kent", &format!("{label}-audit"));
    let mut out = Vec::new();
    for i in 0..3 {
        let events = batch_events(&format!("{label}-{i}"), 2);
        let result = store
            .append_written(&s, ExpectedVersion::Any, events.clone())
            .await;
        result.as_ref().expect("written append");
        out.push(Batch {
            stream: s.clone(),
            events,
            result,
        });
    }
    out
}

/// A written append is answered with its bytes in the file but not synced:
/// until synced it is not readable and a power cut loses it — cleanly, as a
/// torn tail, even when only its first record is damaged and the written
/// records after it are intact (they were never synced either, so they are
/// no proof that the damaged one had been).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsynced_written_appends_are_a_torn_tail_after_a_power_cut() {
    let sim = SimFs::new();
    let index = tempfile::tempdir().expect("temp dir");
    let store = open_unhurried(&sim, index.path());
    let batches = append_sequentially(&store, "a", 4).await;
    let acked: usize = batches.iter().map(|b| b.events.len()).sum();
    let end = sim.len(0);
    let written = append_written(&store, "w").await;
    assert!(
        sim.len(0) > end + 600,
        "the written appends are in the file"
    );
    let audit = &written[0].stream;
    assert!(
        store
            .read_stream(audit, Direction::Forward, StreamVersion::START, 100)
            .await
            .expect("read")
            .is_empty(),
        "unsynced written appends are not readable"
    );
    // Every written byte reaches the disk but the first record's.
    sim.power_cut(Cut {
        unsynced_tail: usize::MAX,
        ..Cut::default()
    });
    sim.damage(0, end + FRAME_LEN + 3, 0x5a);
    drop(store);

    let store = open(&sim, index.path(), 1 << 20);
    assert_eq!(sim.len(0), end, "the written run is cut away whole");
    assert_eq!(check(&store, &batches).await.len(), acked);
    assert!(store
        .read_stream(audit, Direction::Forward, StreamVersion::START, 100)
        .await
        .expect("read")
        .is_empty());
}

/// Written appends survive a power cut once synced: by `sync_written`, by
/// the next append that needs a sync, or by the writer's own deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn written_appends_survive_once_synced() {
    for how in ["sync_written", "next_synced_append", "deadline", "close"] {
        let sim = SimFs::new();
        let index = tempfile::tempdir().expect("temp dir");
        let store = open(&sim, index.path(), 1 << 20);
        let mut batches = append_written(&store, how).await;
        match how {
            "sync_written" => store.sync_written().await.expect("sync"),
            "next_synced_append" => {
                batches.push(append(&store, &stream("avon", "after"), batch_events("s", 1)).await);
                batches.last().unwrap().result.as_ref().expect("append");
            }
            "deadline" => {
                let audit = &batches[0].stream;
                let mut read = Vec::new();
                for _ in 0..500 {
                    read = store
                        .read_stream(audit, Direction::Forward, StreamVersion::START, 100)
                        .await
                        .expect("read");
                    if !read.is_empty() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                assert_eq!(read.len(), 6, "synced and readable within the window");
            }
            _ => store.close().await.expect("close"),
        }
        sim.power_cut(Cut::default());
        drop(store);
        let store = open(&sim, index.path(), 1 << 20);
        let all = check(&store, &batches).await;
        assert_eq!(
            all.len(),
            batches.iter().map(|b| b.events.len()).sum::<usize>(),
            "{how}"
        );
        // Versions and positions continue after them.
        let next = store
            .append_written(
                &batches[0].stream,
                ExpectedVersion::Exact(StreamVersion(5)),
                batch_events("n", 1),
            )
            .await
            .unwrap_or_else(|e| panic!("{how}: {e}"));
        assert_eq!(next.version, StreamVersion(6), "{how}");
    }
}

/// A retried written append (same event ids) is stored once, whether the
/// first is synced yet or not, and a synced append repeating it is answered
/// only once it is synced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_written_append_is_stored_once() {
    let sim = SimFs::new();
    let index = tempfile::tempdir().expect("temp dir");
    let store = open_unhurried(&sim, index.path());
    let s = stream("kent", "retry-audit");
    let events = batch_events("r", 2);
    let first = store
        .append_written(&s, ExpectedVersion::Any, events.clone())
        .await
        .expect("first");
    let again = store
        .append_written(&s, ExpectedVersion::Any, events.clone())
        .await
        .expect("retry before the sync");
    assert_eq!(first, again);
    let synced = store
        .append(&s, ExpectedVersion::Any, events.clone())
        .await
        .expect("a synced retry");
    assert_eq!(first, synced);
    // The synced retry was answered after a sync: the power cut keeps it.
    sim.power_cut(Cut::default());
    drop(store);
    let store = open(&sim, index.path(), 1 << 20);
    let read = store
        .read_stream(&s, Direction::Forward, StreamVersion::START, 100)
        .await
        .expect("read");
    assert_eq!(read.len(), 2, "stored once");
}

/// CPU time (user + system, in clock ticks) used so far by this process's
/// thread named `name`.
fn thread_cpu_ticks(name: &str) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").expect("tasks") {
        let dir = task.expect("task").path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let comm = comm.trim();
        // Thread names are cut to 15 bytes.
        if comm.is_empty() || !name.starts_with(comm) {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: state is the 3rd field,
        // utime and stime the 14th and 15th.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let tick = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        total += tick(11) + tick(12);
    }
    total
}

/// A sync that fails while written appends wait for it fails the store
/// (later appends are refused, the close reports nothing lost that was
/// acknowledged as synced) and leaves the writer asleep, not woken again
/// and again by their deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_of_written_appends_fails_the_store_and_the_writer_rests() {
    let sim = SimFs::new();
    let index = tempfile::tempdir().expect("temp dir");
    let store = open(&sim, index.path(), 1 << 20);
    sim.arm(Trigger::FailSyncs);
    let written = append_written(&store, "f").await;
    assert_eq!(written.len(), 3, "answered once written");
    // Their deadline passes: the sync fails and the store with it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    expect_failed(&append(&store, &stream("kent", "after"), batch_events("a", 1)).await);
    let before = thread_cpu_ticks(WRITER_THREAD);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let used = thread_cpu_ticks(WRITER_THREAD) - before;
    // Half a second is about 50 ticks; a writer woken in a loop uses them all.
    assert!(used < 20, "the failed writer used {used} ticks in 500 ms");
    drop(store);
}
