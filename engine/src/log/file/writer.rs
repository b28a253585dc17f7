//! The single writer thread: group commit.
//!
//! Every append goes through one thread. It takes all the appends waiting in
//! its queue, checks each against the streams' versions (including earlier
//! appends of the same group), writes all their records with one write and one
//! `fdatasync`, then adds them to the index's in-memory table (sled is written
//! later, in the background), publishes the new head, and only then answers
//! the callers. Nothing is acknowledged before it is on stable storage —
//! except what was asked for with [`Durability::Written`].
//!
//! **Written appends** (the audit of reads, see `crate::audit`) are answered
//! as soon as their bytes are written to the file, which the operating system
//! keeps if the process is killed; a group made only of them is not synced at
//! once. The writer syncs them with the next group that needs a sync, when
//! asked to ([`Message::Flush`]), before a segment rolls or the log closes,
//! and at the latest `written_sync_after` (default [`WRITTEN_SYNC`]) after
//! the first of them was written.
//! Until then they are neither indexed nor readable, and the head does not
//! cover them, so the rule the recovery relies on holds: the index marker
//! never covers unsynced bytes. All the records written since the last sync
//! carry that run's start as their `group_start`, so that recovery treats
//! the run as the one group commit it is (a torn record followed by an
//! intact one of the same run is a torn tail, not corruption).
//!
//! With zero-ahead on (`prealloc`), each group is first claimed from the
//! zero thread, so the two never write the same bytes; a segment is cut to
//! its used length before the next one is started, and the active one on a
//! clean stop.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use super::fs::{LogFs, SegmentFile};
use super::index::{EventLoc, Index, IndexedRecord, Marker, RecordLoc};
use super::prealloc::{zero_limit, ZeroAhead};
use super::recovery::{create_segment, cut_to};
use super::segment::{encode_record, RecordBodyRef, RecordReader, Segments, FRAME_LEN, HEADER_LEN};
use super::tree::Tree;
use super::Shared;
use crate::log::append::{check_expected, find_duplicate};
use crate::log::error::LogError;
use crate::log::types::{
    AppendResult, EventData, EventId, ExpectedVersion, GlobalPosition, RecordedEvent, StreamId,
    StreamVersion, Timestamp,
};

/// Stream heads kept in memory before the cache is cleared.
const HEAD_CACHE_LIMIT: usize = 200_000;
/// How long the idle writer polls for the next append before it sleeps:
/// a caller that appends again right after its answer is taken without the
/// cost of waking a sleeping thread.
const SPIN: Duration = Duration::from_micros(50);
/// The longest a group waits for stragglers (see [`Writer::gather`]).
const MAX_GATHER_WAIT: Duration = Duration::from_micros(500);
/// While waiting for stragglers, the writer naps this long between looks.
const GATHER_NAP: Duration = Duration::from_micros(40);
/// The longest a [`Durability::Written`] append stays unsynced, by default
/// (`LogStoreConfig::written_sync_after`).
pub(crate) const WRITTEN_SYNC: Duration = Duration::from_millis(20);
/// Unsynced bytes of written appends that make the writer sync at once.
const WRITTEN_BYTES: u64 = 8 << 20;
/// After a failed write, the writer tries to repair its tail at most this
/// often (on the next append); [`Message::Recover`] tries at once.
const REPAIR_EVERY: Duration = Duration::from_millis(500);
/// How long a free-space reading is trusted (less what was written since).
const SPACE_RECHECK: Duration = Duration::from_millis(100);
/// Bytes counted per append on top of its events' sizes when checking free
/// space: the record's framing and header, generously.
const RECORD_ALLOWANCE: u64 = 512;

/// When an append is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// Once it is on stable storage (every append of the API).
    Synced,
    /// Once it is written to the file; synced within `written_sync_after`.
    Written,
}

pub(crate) struct AppendRequest {
    pub stream: StreamId,
    pub expected: ExpectedVersion,
    pub events: Vec<EventData>,
    pub durability: Durability,
    pub reply: oneshot::Sender<Result<AppendResult, LogError>>,
}

pub(crate) enum Message {
    Append(AppendRequest),
    /// Sync (and make readable) every written append answered so far.
    Flush(oneshot::Sender<Result<(), LogError>>),
    /// Stop after the appends queued before it; the answer tells whether
    /// the active segment was cut to its used length.
    Shutdown(oneshot::Sender<Result<(), LogError>>),
    /// After a failed write: repair the tail now (see [`Writer::repair`]).
    Recover(oneshot::Sender<Result<(), LogError>>),
    /// A read found the index damaged (this reason): rebuild it from the
    /// log ([`Writer::replace_index`]).
    IndexDamaged(String),
}

/// The index readers use, which the writer replaces when its sled database
/// fails ([`Writer::replace_index`]).
pub(crate) type IndexSlot = Arc<std::sync::RwLock<Arc<Index>>>;

pub(crate) struct Writer {
    pub segments: Arc<Segments>,
    pub index: Arc<Index>,
    /// Where readers find the index.
    pub index_slot: IndexSlot,
    /// The page cache of a replacement index.
    pub index_cache_bytes: u64,
    pub shared: Arc<Shared>,
    pub head_tx: watch::Sender<Option<GlobalPosition>>,
    pub segment: u64,
    pub file: Arc<dyn SegmentFile>,
    pub offset: u64,
    pub next_position: u64,
    pub segment_size: u64,
    pub max_group_bytes: usize,
    /// Stamps each group's `recorded` time.
    pub clock: Arc<dyn crate::time::Clock>,
    pub heads: HashMap<StreamId, StreamVersion>,
    /// Keeps zeroed, synced space ahead of `offset` (`None`: preallocation off).
    pub zero_ahead: Option<ZeroAhead>,
    /// Written appends not yet synced.
    pub unsynced: Unsynced,
    /// The longest they stay so.
    pub written_sync_after: Duration,
    /// The free space the log's file system must keep.
    pub space: Space,
    /// The Merkle tree over the log and its checkpoints.
    pub tree: Tree,
    /// When a read last had the index replaced.
    pub index_replaced: Option<Instant>,
}

/// How often, at most, reads that find the index damaged have it replaced:
/// damage a rebuild from the log brings back is a defect to report, not a
/// reason to rebuild in a loop.
const INDEX_REPLACED_AT_MOST_EVERY: Duration = Duration::from_secs(30);

/// The free-space reserve: appends that would leave less than `reserve`
/// bytes free are refused before anything is written, so that a filling
/// disk stops the log cleanly while the indexes and views (in the same
/// data directory) still have room to finish their writes.
pub(crate) struct Space {
    reserve: u64,
    /// The last reading, less what was written since.
    available: Option<u64>,
    checked: Option<Instant>,
}

impl Space {
    /// `reserve` 0: no check.
    pub fn new(reserve: u64) -> Self {
        Space {
            reserve,
            available: None,
            checked: None,
        }
    }

    /// Whether `bytes` more may be written. Reads the file system's free
    /// space again when the last reading is old or says no; a file system
    /// that cannot say (or fails to) is not held back.
    /// `share`: 1 needs the whole reserve left free, 2 half of it.
    fn admit(&mut self, fs: &dyn LogFs, bytes: u64, share: u64) -> Result<(), Full> {
        if self.reserve == 0 {
            return Ok(());
        }
        let need = bytes.saturating_add(self.reserve / share);
        let stale = self.checked.is_none_or(|t| t.elapsed() >= SPACE_RECHECK);
        if stale || self.available.is_some_and(|a| a < need) {
            self.available = fs.available().unwrap_or_else(|e| {
                tracing::warn!(
                    target: "casebook::log",
                    "cannot read the free space of the log's disk: {e}"
                );
                None
            });
            self.checked = Some(Instant::now());
        }
        match self.available {
            None => Ok(()),
            Some(a) if a >= need => {
                self.available = Some(a - bytes);
                Ok(())
            }
            Some(a) => Err(Full {
                path: fs
                    .path(0)
                    .parent()
                    .map(std::path::Path::to_path_buf)
                    .unwrap_or_default(),
                available: a,
                reserve: self.reserve,
            }),
        }
    }
}

/// A group refused for want of space.
struct Full {
    path: std::path::PathBuf,
    available: u64,
    reserve: u64,
}

impl Full {
    fn error(&self) -> LogError {
        LogError::StorageFull {
            path: self.path.clone(),
            available: self.available,
            reserve: self.reserve,
        }
    }
}

/// Why the writer refuses appends, and when it last tried to repair.
struct Failure {
    reason: String,
    tried: Instant,
}

impl Failure {
    fn new(reason: String) -> Self {
        tracing::error!(
            target: "casebook::log",
            "appends refused after a failed write: {reason}"
        );
        Failure {
            reason,
            tried: Instant::now(),
        }
    }

    fn error(&self) -> LogError {
        LogError::Failed {
            reason: self.reason.clone(),
        }
    }
}

/// The records of [`Durability::Written`] appends written since the last
/// sync: not yet indexed, not readable.
#[derive(Default)]
pub(crate) struct Unsynced {
    /// Where the run of unsynced records starts (its `group_start`).
    start: Option<u64>,
    /// When its first record was written.
    since: Option<Instant>,
    /// Its records, to index once synced.
    records: Vec<IndexedRecord>,
    /// Its events by id, for the duplicate check.
    events: HashMap<EventId, RecordedEvent>,
}

impl Unsynced {
    fn is_empty(&self) -> bool {
        self.start.is_none()
    }
}

/// What one gathering took from the queue.
struct Gathered {
    group: Vec<AppendRequest>,
    flushes: Vec<oneshot::Sender<Result<(), LogError>>>,
    recovers: Vec<oneshot::Sender<Result<(), LogError>>>,
    /// Reasons reads gave for rebuilding the index.
    damaged: Vec<String>,
    shutdown: Option<oneshot::Sender<Result<(), LogError>>>,
}

/// An append accepted into the current group.
struct Accepted {
    request: AppendRequest,
    loc: RecordLoc,
    first_version: StreamVersion,
    first_position: GlobalPosition,
}

enum Outcome {
    Write(usize),
    Done(
        oneshot::Sender<Result<AppendResult, LogError>>,
        Result<AppendResult, LogError>,
    ),
}

/// What waiting for the next message gave.
enum Next {
    Message(Message),
    /// `until` passed first.
    Due,
    /// Every sender is gone.
    Closed,
}

/// The next message: polled for `spin` (at most [`SPIN`]), then waited for
/// — until `until` if given.
fn next_message(rx: &mpsc::Receiver<Message>, spin: Duration, until: Option<Instant>) -> Next {
    let start = Instant::now();
    loop {
        match rx.try_recv() {
            Ok(m) => return Next::Message(m),
            Err(mpsc::TryRecvError::Disconnected) => return Next::Closed,
            Err(mpsc::TryRecvError::Empty) if start.elapsed() < spin => {
                std::thread::yield_now();
            }
            Err(mpsc::TryRecvError::Empty) => {
                return match until {
                    None => rx.recv().map_or(Next::Closed, Next::Message),
                    Some(until) => {
                        match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                            Ok(m) => Next::Message(m),
                            Err(mpsc::RecvTimeoutError::Timeout) => Next::Due,
                            Err(mpsc::RecvTimeoutError::Disconnected) => Next::Closed,
                        }
                    }
                };
            }
        }
    }
}

/// What the writer learnt from the last group, to size the next.
#[derive(Default)]
struct Pace {
    /// Appends in the last group.
    appends: usize,
    /// How long its `fdatasync` took.
    sync: Duration,
    /// Whether it held a synced append.
    synced: bool,
}

impl Writer {
    pub fn run(mut self, rx: mpsc::Receiver<Message>) {
        let mut failed: Option<Failure> = None;
        let mut buf = Vec::with_capacity(1 << 20);
        let mut pace = Pace::default();
        let mut stop = None;
        loop {
            let due = match self.unsynced.since {
                Some(t) => Some(t + self.written_sync_after),
                // Everything written is synced: the next checkpoint's time.
                None if failed.is_none() => self.tree.due(),
                None => None,
            };
            // Callers of synced appends often append again at once; the
            // audit's written appends come a batch of reads later, and
            // polling for them would only take the CPU those reads need.
            let spin = if pace.synced { SPIN } else { Duration::ZERO };
            let first = match next_message(&rx, spin, due) {
                Next::Message(Message::Recover(done)) => {
                    let _ = done.send(self.try_repair(&mut failed, true));
                    continue;
                }
                Next::Message(m) => m,
                Next::Due => {
                    self.sync_unsynced(&mut failed);
                    self.checkpoint(false, &failed);
                    continue;
                }
                Next::Closed => break,
            };
            let Gathered {
                group,
                flushes,
                recovers,
                damaged,
                shutdown,
            } = self.gather(&rx, first, &pace);
            for done in recovers {
                let _ = done.send(self.try_repair(&mut failed, true));
            }
            if let Some(reason) = damaged.into_iter().next() {
                self.index_damaged(&reason, &mut failed);
            }
            if !group.is_empty() && failed.is_some() {
                // Appends came: a chance to repair, if the last try is old.
                let _ = self.try_repair(&mut failed, false);
            }
            if group.is_empty() {
                // Only a flush or a shutdown: nothing to write.
            } else if let Some(failure) = &failed {
                for r in group {
                    let _ = r.reply.send(Err(failure.error()));
                }
            } else if let Some(group) = self.admit_space(group) {
                let appends = group.len();
                let synced = group.iter().any(|r| r.durability == Durability::Synced);
                match self.commit_group(group, &mut buf) {
                    Ok(sync) => {
                        pace = Pace {
                            appends,
                            sync,
                            synced,
                        }
                    }
                    Err(e) => failed = Some(Failure::new(e)),
                }
            }
            if !flushes.is_empty() || shutdown.is_some() {
                self.sync_unsynced(&mut failed);
                for done in flushes {
                    let _ = done.send(match &failed {
                        Some(failure) => Err(failure.error()),
                        None => Ok(()),
                    });
                }
            }
            if let Some(done) = shutdown {
                stop = Some(done);
                break;
            }
        }
        self.sync_unsynced(&mut failed);
        // A cleanly closed log is signed through its last event.
        self.checkpoint(true, &failed);
        let result = self.finish(failed.is_none());
        if let Some(done) = stop {
            let _ = done.send(result);
        }
    }

    /// Checks the free-space reserve for each append of a group about to
    /// be written; answers those refused. Written appends (the audit of
    /// reads: small, and a read is refused without its audit entry) that
    /// fit in the zeroed headroom of the active segment take no free space
    /// at all (they overwrite blocks the zero-ahead already allocated) and
    /// are always admitted; beyond it they may use half the reserve. So
    /// reads go on while commands are refused, however much of the reserve
    /// the views' own writes take meanwhile. `None` if none is left.
    fn admit_space(&mut self, group: Vec<AppendRequest>) -> Option<Vec<AppendRequest>> {
        let zeroed_to = self.zero_ahead.as_ref().map_or(0, ZeroAhead::zeroed_to);
        let mut end = self.offset;
        let mut admitted = Vec::with_capacity(group.len());
        for r in group {
            let bytes = r.events.iter().map(|e| e.size() as u64).sum::<u64>() + RECORD_ALLOWANCE;
            let share = match r.durability {
                Durability::Synced => 1,
                Durability::Written => 2,
            };
            let on_zeros =
                r.durability == Durability::Written && end.saturating_add(bytes) <= zeroed_to;
            let admit = if on_zeros {
                Ok(())
            } else {
                self.space.admit(&*self.segments.fs, bytes, share)
            };
            match admit {
                Ok(()) => {
                    end = end.saturating_add(bytes);
                    admitted.push(r);
                }
                Err(full) => {
                    let _ = r.reply.send(Err(full.error()));
                }
            }
        }
        (!admitted.is_empty()).then_some(admitted)
    }

    /// Repairs the tail after a failed write if `now` or the last try is
    /// [`REPAIR_EVERY`] old; clears `failed` when it worked. `Ok` when the
    /// store accepts appends again (or never stopped).
    fn try_repair(&mut self, failed: &mut Option<Failure>, now: bool) -> Result<(), LogError> {
        let Some(failure) = failed else {
            return Ok(());
        };
        if !now && failure.tried.elapsed() < REPAIR_EVERY {
            return Err(failure.error());
        }
        failure.tried = Instant::now();
        match self.repair() {
            Ok(()) => {
                tracing::warn!(
                    target: "casebook::log",
                    "the log accepts appends again: its tail was repaired after {}",
                    failure.reason
                );
                *failed = None;
                Ok(())
            }
            Err(e) => {
                tracing::debug!(target: "casebook::log", "repair failed: {e}");
                Err(LogError::Failed {
                    reason: format!("{}; repairing it failed: {e}", failure.reason),
                })
            }
        }
    }

    /// Puts the log back where it was last acknowledged, after a failed
    /// write or sync: removes a segment a failed roll may have left, cuts
    /// the active segment to the end of its last synced group (dropping
    /// whatever the failed group wrote, and the zero-ahead space) and syncs
    /// it, then forgets what the writer held about unacknowledged appends.
    /// Appends answered [`Durability::Written`] but not yet synced are lost,
    /// as a crash would lose them. The index was never told of anything past
    /// the last sync, so it needs nothing, unless a sled write failed: then
    /// the store must be reopened, which rebuilds it.
    fn repair(&mut self) -> Result<(), LogError> {
        if let Some(zero_ahead) = &self.zero_ahead {
            zero_ahead.detach();
        }
        let (segment, offset) = self.shared.synced();
        let fs = Arc::clone(&self.segments.fs);
        let io = |what: String, e| LogError::io(what, e);
        let listed = fs
            .list()
            .map_err(|e| io("listing segment files".into(), e))?;
        let mut removed = false;
        for n in listed.into_iter().filter(|&n| n > segment) {
            fs.remove(n)
                .map_err(|e| io(format!("removing {}", fs.path(n).display()), e))?;
            removed = true;
        }
        if removed {
            fs.sync_dir()
                .map_err(|e| io("syncing the log directory".into(), e))?;
        }
        let file = self.segments.get(segment)?;
        cut_to(&self.segments, segment, &*file, offset)?;
        file.sync_data()
            .map_err(|e| io(format!("syncing {}", fs.path(segment).display()), e))?;
        self.segment = segment;
        self.file = Arc::clone(&file);
        self.offset = offset;
        let head = self.shared.head().map_or(0, |h| h.0 + 1);
        self.next_position = head;
        self.heads.clear();
        self.unsynced = Unsynced::default();
        if let Some(reason) = self.index.failure() {
            // The log is what the segments hold through the synced offset.
            // That may be more than the head: a group synced whose indexing
            // failed (the index had already failed a write) was answered
            // with an error, yet its records are synced and stay; a retry
            // finds them by their event ids.
            self.next_position = self.replace_index(&reason, head)?;
            if self.next_position > head {
                let head = GlobalPosition(self.next_position - 1);
                self.shared.set_head(head);
                self.head_tx.send_replace(Some(head));
            }
        }
        // The failed group's leaves were added to the tree: take out those
        // of records the tail repair cut.
        self.tree.rewind(&self.segments, self.next_position)?;
        if let Some(zero_ahead) = &self.zero_ahead {
            zero_ahead.attach(file, offset, zero_limit(self.segment_size));
        }
        Ok(())
    }

    /// A read found the index damaged: unless the store has failed (its
    /// repair sees to the index) or the index was replaced in the last
    /// [`INDEX_REPLACED_AT_MOST_EVERY`], syncs what is written (the index
    /// names only synced records) and replaces it.
    fn index_damaged(&mut self, reason: &str, failed: &mut Option<Failure>) {
        if failed.is_some()
            || self
                .index_replaced
                .is_some_and(|at| at.elapsed() < INDEX_REPLACED_AT_MOST_EVERY)
        {
            return;
        }
        self.index_replaced = Some(Instant::now());
        self.sync_unsynced(failed);
        if failed.is_some() {
            return;
        }
        let next = self.next_position;
        match self.replace_index(reason, next) {
            Ok(read) if read == next => {}
            Ok(read) => tracing::error!(
                target: "casebook::recovery",
                "the rebuilt log index reads to position {read} but the writer is at {next}"
            ),
            Err(e) => {
                tracing::error!(target: "casebook::recovery", "replacing the damaged log index: {e}")
            }
        }
    }

    /// Replaces an index whose sled database failed a write (sled takes
    /// none after that until reopened): the old database is set aside
    /// (`index.aside-<secs>`, with a `WHY` file), a fresh one is built from
    /// the segment files — everything synced, which the tail repair has
    /// just made the whole log — and readers are switched to it. Readers
    /// keep the old one until then (it still reads). If the fresh one
    /// cannot be made (the disk still full), the old folder is put back and
    /// the next repair tries again.
    ///
    /// Returns the next position the rebuilt index reads to: at least
    /// `at_least` (the next position after the head readers were shown).
    ///
    /// Errors: [`LogError::Failed`] naming why.
    fn replace_index(&mut self, reason: &str, at_least: u64) -> Result<u64, LogError> {
        let failed = |why: String| LogError::Failed {
            reason: format!("{reason}; rebuilding the index: {why}"),
        };
        let Some(dir) = self.index.dir() else {
            return Err(failed("it has no folder; reopen the store".into()));
        };
        let kept = crate::embedded::set_aside(&dir, reason)
            .map_err(|e| failed(format!("setting {} aside: {e}", dir.display())))?;
        self.index.moved_to(kept.clone());
        let fresh = super::recovery::open_index(&dir, self.index_cache_bytes, &self.segments)
            .and_then(|(db, _)| Index::new(db, self.index.tuning(), Some(dir.clone())))
            .and_then(|index| {
                let mut report = crate::log::RecoveryReport::default();
                let recovered = super::recovery::recover(&self.segments, &index, &mut report)?;
                if recovered.next_position < at_least {
                    return Err(LogError::Failed {
                        reason: format!(
                            "the log reads to position {} but events before {} were acknowledged",
                            recovered.next_position, at_least
                        ),
                    });
                }
                index.flush()?;
                Ok((index, recovered.next_position))
            });
        let (index, next_position) = match fresh {
            Ok((index, next)) => (Arc::new(index), next),
            Err(e) => {
                // Put the old one back where a reopen looks for it.
                let _ = std::fs::remove_dir_all(&dir);
                if std::fs::rename(&kept, &dir).is_ok() {
                    self.index.moved_to(dir);
                }
                return Err(failed(e.to_string()));
            }
        };
        *self.index_slot.write().unwrap_or_else(|p| p.into_inner()) = Arc::clone(&index);
        self.index = index;
        tracing::warn!(
            target: "casebook::recovery",
            set_aside = %kept.display(),
            "the log index failed a write ({reason}); it was set aside and rebuilt from the log"
        );
        Ok(next_position)
    }

    /// Syncs and indexes the written appends not yet synced, unless the
    /// store has failed; a failure fails the store.
    fn sync_unsynced(&mut self, failed: &mut Option<Failure>) {
        if failed.is_none() && !self.unsynced.is_empty() {
            if let Err(e) = self.sync_and_index(Vec::new()) {
                *failed = Some(Failure::new(e.to_string()));
            }
        }
        if failed.is_some() {
            // A failed store syncs nothing more: forget them (recovery
            // decides what of them the file kept), so that their deadline
            // does not wake the writer again and again.
            self.unsynced = Unsynced::default();
        }
    }

    /// Signs a checkpoint if one is due (or `force`d) and everything
    /// written is synced (a failure to sign is logged, not fatal).
    fn checkpoint(&mut self, force: bool, failed: &Option<Failure>) {
        if failed.is_none() && self.unsynced.is_empty() {
            self.tree
                .checkpoint_if_due(force, self.segment, self.offset);
        }
    }

    /// Stops the zero thread and, unless a write failed, cuts the active
    /// segment to its used length, so a cleanly closed log holds no zeros.
    /// After a failed write the file is left as it is, as a crash would
    /// leave it: recovery sorts it out.
    fn finish(&mut self, clean: bool) -> Result<(), LogError> {
        drop(self.zero_ahead.take());
        if clean {
            cut_to(&self.segments, self.segment, &*self.file, self.offset)?;
        }
        Ok(())
    }

    /// Gathers a group: everything already queued and, when the last group
    /// was larger than what is queued now, the stragglers of the same crowd
    /// of callers — waiting at most as long as the last `fdatasync` took
    /// (capped by [`MAX_GATHER_WAIT`]). Callers answered together append
    /// again together, but not quite at once; without the wait, groups
    /// alternate between a handful and the rest, and each pays a full sync.
    /// A lone caller never waits: its last group had one append.
    fn gather(&self, rx: &mpsc::Receiver<Message>, first: Message, pace: &Pace) -> Gathered {
        let deadline = Instant::now() + pace.sync.min(MAX_GATHER_WAIT);
        let want = pace.appends * 3 / 4;
        let mut gathered = Gathered {
            group: Vec::new(),
            flushes: Vec::new(),
            recovers: Vec::new(),
            damaged: Vec::new(),
            shutdown: None,
        };
        let mut bytes = 0;
        let mut next = Some(first);
        loop {
            match next.take() {
                Some(Message::Append(r)) => {
                    bytes += r.events.iter().map(EventData::size).sum::<usize>();
                    gathered.group.push(r);
                }
                Some(Message::Flush(done)) => gathered.flushes.push(done),
                Some(Message::Recover(done)) => gathered.recovers.push(done),
                Some(Message::IndexDamaged(reason)) => gathered.damaged.push(reason),
                Some(Message::Shutdown(done)) => {
                    gathered.shutdown = Some(done);
                    return gathered;
                }
                None => {}
            }
            if bytes >= self.max_group_bytes {
                break;
            }
            match rx.try_recv() {
                Ok(m) => next = Some(m),
                Err(mpsc::TryRecvError::Disconnected) => break,
                Err(mpsc::TryRecvError::Empty) => {
                    let now = Instant::now();
                    if gathered.group.len() >= want || now >= deadline {
                        break;
                    }
                    // Nap and take what arrived, rather than be woken by
                    // every single straggler.
                    std::thread::sleep(GATHER_NAP.min(deadline - now));
                }
            }
        }
        gathered
    }

    /// Commits one group; returns how long its sync took. `Err` means the
    /// store must stop accepting appends.
    fn commit_group(
        &mut self,
        group: Vec<AppendRequest>,
        buf: &mut Vec<u8>,
    ) -> Result<Duration, String> {
        buf.clear();
        let recorded = self.clock.now();
        // Records written since the last sync are one group commit.
        let group_start = self.unsynced.start.unwrap_or(self.offset);
        let must_sync = group.iter().any(|r| r.durability == Durability::Synced);
        let mut accepted: Vec<Accepted> = Vec::with_capacity(group.len());
        let mut pending: HashMap<EventId, (usize, usize)> = HashMap::new();
        let mut outcomes = Vec::with_capacity(group.len());
        for request in group {
            match self.admit(&request, &accepted, &pending) {
                Ok(Some(original)) => outcomes.push(Outcome::Done(request.reply, Ok(original))),
                Ok(None) => {
                    let first_version = self
                        .heads
                        .get(&request.stream)
                        .map_or(StreamVersion::START, |v| v.next());
                    let first_position = GlobalPosition(self.next_position);
                    let loc = RecordLoc {
                        segment: self.segment,
                        offset: self.offset + buf.len() as u64,
                    };
                    let body = RecordBodyRef {
                        stream: &request.stream,
                        first_version,
                        first_position,
                        recorded,
                        group_start,
                        events: &request.events,
                    };
                    let before = buf.len();
                    let encoded = encode_record(&body, buf)
                        .and_then(|()| self.tree.add_record(&buf[before + FRAME_LEN..]));
                    if let Err(e) = encoded {
                        buf.truncate(before);
                        outcomes.push(Outcome::Done(request.reply, Err(e)));
                        continue;
                    }
                    let count = request.events.len() as u64;
                    self.next_position += count;
                    self.heads.insert(
                        request.stream.clone(),
                        StreamVersion(first_version.0 + count - 1),
                    );
                    for (i, e) in request.events.iter().enumerate() {
                        pending.insert(e.id, (accepted.len(), i));
                    }
                    outcomes.push(Outcome::Write(accepted.len()));
                    accepted.push(Accepted {
                        request,
                        loc,
                        first_version,
                        first_position,
                    });
                }
                Err(e) => outcomes.push(Outcome::Done(request.reply, Err(e))),
            }
        }

        let mut fatal = None;
        let mut sync = Duration::ZERO;
        if !accepted.is_empty() {
            if let Err(e) = self.write(buf).and_then(|()| self.tree.write_pending()) {
                fatal = Some(e.to_string());
            }
        }
        if fatal.is_none() {
            let due = self
                .unsynced
                .since
                .is_some_and(|t| t.elapsed() >= self.written_sync_after)
                || self.offset - group_start >= WRITTEN_BYTES;
            let records = indexed(&accepted);
            if must_sync || due {
                if !accepted.is_empty() || !self.unsynced.is_empty() {
                    match self.sync_and_index(records) {
                        Ok(took) => sync = took,
                        Err(e) => fatal = Some(e.to_string()),
                    }
                }
            } else if !accepted.is_empty() {
                self.defer(group_start, records, &accepted, recorded);
            }
        }
        let mut replies: Vec<Option<Accepted>> = accepted.into_iter().map(Some).collect();
        for outcome in outcomes {
            match outcome {
                Outcome::Done(reply, result) => {
                    let result = match (&fatal, result) {
                        // A duplicate of an event in this failed group was never stored.
                        (Some(reason), Ok(_)) => Err(LogError::Failed {
                            reason: reason.clone(),
                        }),
                        (_, r) => r,
                    };
                    let _ = reply.send(result);
                }
                Outcome::Write(i) => {
                    let Some(a) = replies[i].take() else { continue };
                    let result = match &fatal {
                        Some(reason) => Err(LogError::Failed {
                            reason: reason.clone(),
                        }),
                        None => {
                            let count = a.request.events.len() as u64;
                            Ok(AppendResult {
                                first_position: a.first_position,
                                last_position: GlobalPosition(a.first_position.0 + count - 1),
                                version: StreamVersion(a.first_version.0 + count - 1),
                            })
                        }
                    };
                    let _ = a.request.reply.send(result);
                }
            }
        }
        if let Some(reason) = fatal {
            return Err(reason);
        }
        if self.offset >= self.segment_size {
            let mut failed = None;
            self.sync_unsynced(&mut failed);
            if let Some(failure) = failed {
                return Err(failure.reason);
            }
            self.roll().map_err(|e| e.to_string())?;
        }
        if self.heads.len() > HEAD_CACHE_LIMIT && self.unsynced.is_empty() {
            self.heads.clear();
        }
        Ok(sync)
    }

    /// Checks one append against the stored log and the group so far.
    /// `Ok(Some)` is a repeat of an earlier append.
    fn admit(
        &mut self,
        request: &AppendRequest,
        accepted: &[Accepted],
        pending: &HashMap<EventId, (usize, usize)>,
    ) -> Result<Option<AppendResult>, LogError> {
        let segments = Arc::clone(&self.segments);
        let index = Arc::clone(&self.index);
        let mut reader = RecordReader::new(&segments);
        let original = find_duplicate(&request.stream, &request.events, |id| {
            if let Some(&(a, i)) = pending.get(&id) {
                let a = &accepted[a];
                let e = &a.request.events[i];
                return Ok(Some(RecordedEvent::from_data(
                    a.request.stream.clone(),
                    StreamVersion(a.first_version.0 + i as u64),
                    GlobalPosition(a.first_position.0 + i as u64),
                    Timestamp(0),
                    e.clone(),
                )));
            }
            if let Some(e) = self.unsynced.events.get(&id) {
                return Ok(Some(e.clone()));
            }
            match index.event(id)? {
                None => Ok(None),
                Some(EventLoc { record, index }) => Ok(reader
                    .read(record.segment, record.offset)?
                    .event(index as usize)),
            }
        })?;
        if original.is_some() {
            return Ok(original);
        }
        let actual = match self.heads.get(&request.stream) {
            Some(v) => Some(*v),
            None => {
                let v = self.index.stream_head(&request.stream)?;
                if let Some(v) = v {
                    self.heads.insert(request.stream.clone(), v);
                }
                v
            }
        };
        check_expected(&request.stream, request.expected, actual)?;
        Ok(None)
    }

    /// Writes the group's records after the last ones.
    fn write(&mut self, buf: &[u8]) -> Result<(), LogError> {
        if let Some(zero_ahead) = &self.zero_ahead {
            zero_ahead.claim(self.offset + buf.len() as u64);
        }
        self.file.write_all_at(buf, self.offset).map_err(|e| {
            LogError::io(
                format!(
                    "writing to {}",
                    self.segments.fs.path(self.segment).display()
                ),
                e,
            )
        })?;
        self.offset += buf.len() as u64;
        Ok(())
    }

    /// Keeps the records of a group of written appends, unsynced, to index
    /// once synced.
    fn defer(
        &mut self,
        group_start: u64,
        records: Vec<IndexedRecord>,
        accepted: &[Accepted],
        recorded: Timestamp,
    ) {
        let unsynced = &mut self.unsynced;
        unsynced.start.get_or_insert(group_start);
        unsynced.since.get_or_insert_with(Instant::now);
        unsynced.records.extend(records);
        for a in accepted {
            for (i, e) in a.request.events.iter().enumerate() {
                let event = RecordedEvent::from_data(
                    a.request.stream.clone(),
                    StreamVersion(a.first_version.0 + i as u64),
                    GlobalPosition(a.first_position.0 + i as u64),
                    recorded,
                    e.clone(),
                );
                unsynced.events.insert(e.id, event);
            }
        }
    }

    /// Syncs everything written, then indexes the unsynced records and
    /// `records` and publishes the new head; returns how long the sync took.
    fn sync_and_index(&mut self, records: Vec<IndexedRecord>) -> Result<Duration, LogError> {
        let started = Instant::now();
        self.file.sync_data().map_err(|e| {
            LogError::io(
                format!("syncing {}", self.segments.fs.path(self.segment).display()),
                e,
            )
        })?;
        let took = started.elapsed();
        self.shared.set_synced(self.segment, self.offset);
        let mut all = std::mem::take(&mut self.unsynced).records;
        all.extend(records);
        let head = GlobalPosition(self.next_position - 1);
        self.index.add(
            &all,
            Marker {
                position: head,
                segment: self.segment,
                offset: self.offset,
            },
        )?;
        self.shared.set_head(head);
        self.head_tx.send_replace(Some(head));
        self.tree
            .checkpoint_if_due(false, self.segment, self.offset);
        Ok(took)
    }
}

/// What the index records of a group's appends.
fn indexed(accepted: &[Accepted]) -> Vec<IndexedRecord> {
    accepted
        .iter()
        .map(|a| IndexedRecord {
            loc: a.loc,
            stream: a.request.stream.clone(),
            first_version: a.first_version,
            first_position: a.first_position,
            ids: a.request.events.iter().map(|e| e.id).collect(),
        })
        .collect()
}

impl Writer {
    /// Seals the segment — the zero thread let go of it, then it is cut to
    /// its used length and synced — and starts a new one: header synced,
    /// then the directory synced. The zero thread then zeroes the new one.
    fn roll(&mut self) -> Result<(), LogError> {
        if let Some(zero_ahead) = &self.zero_ahead {
            zero_ahead.detach();
        }
        cut_to(&self.segments, self.segment, &*self.file, self.offset)?;
        let number = self.segment + 1;
        let file = create_segment(&self.segments, number)?;
        self.segment = number;
        self.file = Arc::clone(&file);
        self.offset = HEADER_LEN;
        self.shared.set_synced(number, HEADER_LEN);
        if let Some(zero_ahead) = &self.zero_ahead {
            zero_ahead.attach(file, HEADER_LEN, zero_limit(self.segment_size));
        }
        Ok(())
    }
}
