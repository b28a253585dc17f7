//! [`LogStore`]: the embedded, durable event store.
//!
//! The source of truth is a folder of append-only segment files (`segment`),
//! written by one thread with group commit (`writer`), while another keeps
//! zeroed, synced space ahead of it (`prealloc`). sled holds only derived
//! state (`index`): stream, event-id and tenant indexes plus an "indexed
//! through" marker written in the same batch as the entries it covers; recent
//! entries live in memory until a background thread flushes them coarsely.
//! sled's `flush` is not an fsync, so sled is never the only copy of anything:
//! on open, the log is re-indexed from the marker to its end (`recovery`).

mod backup;
pub mod fs;
mod index;
mod integrity;
mod prealloc;
mod recovery;
mod segment;
mod tree;
mod writer;

pub use backup::{BackupReport, RestoreReport};
pub use integrity::{IntegrityOptions, IntegrityProblem, IntegrityReport};
pub use tree::CheckpointConfig;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use async_trait::async_trait;
use tokio::sync::{oneshot, watch};

use self::fs::{LogFs, OsFs};
use self::index::Index;
use self::segment::{RecordReader, Segments};
use self::writer::{AppendRequest, Durability, Message};
use super::append::Limits;
use super::batch::{BatchBuilder, EventBatch};
use super::checkpoint::{CheckpointVerifier, SignedCheckpoint};
use super::error::LogError;
use super::merkle::{self, ConsistencyProof, Hash, InclusionProof, NodeSource, ProofError};
use super::report::RecoveryReport;
use super::types::{
    AppendResult, Direction, EventData, EventId, ExpectedVersion, GlobalPosition, RecordedEvent,
    StreamId, StreamVersion, TenantId,
};
use super::EventStore;

/// Settings of a [`LogStore`].
#[derive(Debug, Clone)]
pub struct LogStoreConfig {
    /// A new segment file is started once the current one reaches this size.
    /// Default 256 MiB.
    pub segment_size: u64,
    /// Limits on appends and reads.
    pub limits: Limits,
    /// sled's page cache, in bytes. Default 64 MiB.
    pub index_cache_bytes: u64,
    /// A group commit stops gathering appends beyond this many payload bytes.
    /// Default 8 MiB.
    pub max_group_bytes: usize,
    /// Index entries of recent appends are kept in memory and written to sled
    /// in one batch once this many events have gathered. Default 16,384.
    /// Smaller tables mean more, smaller sled writes.
    pub index_table_events: u64,
    /// ... or once the oldest of them is this old. Default 500 ms.
    pub index_flush_after: std::time::Duration,
    /// Zero-ahead: how many bytes past the end of the log the active segment
    /// keeps written with zeros and synced. A background thread tops this
    /// headroom up whenever it falls below half, so group commits overwrite
    /// blocks that already exist instead of growing the file, and their
    /// `fdatasync` need not journal a new size and block allocation (about
    /// half the cost of a small commit's sync on ext4). Zeros never reach
    /// beyond the segment size plus a little room for the last group; a
    /// sealed or cleanly closed segment holds none. Durability never depends
    /// on them: every group commit is still synced. Default 8 MiB; 0 turns
    /// zero-ahead off.
    pub preallocate: u64,
    /// Stamps each event's `recorded` time. Default [`crate::time::SystemClock`].
    pub clock: Arc<dyn crate::time::Clock>,
    /// The longest an append answered by
    /// [`EventStore::append_written`] stays unsynced (it is synced sooner
    /// by any append that needs a sync, a [`EventStore::sync_written`], a
    /// segment roll or the close). Default 20 ms: the window in which a
    /// power cut may lose audit entries of reads already answered.
    pub written_sync_after: std::time::Duration,
    /// Free space the log's file system must keep: an append that would
    /// leave less is refused with [`LogError::StorageFull`] before anything
    /// is written, and accepted again once space is freed. The indexes and
    /// views, which live in the same data directory, use the reserve to
    /// finish their own writes, so a filling disk stops appends cleanly
    /// instead of failing writes half-way. Default 64 MiB; 0 turns the
    /// check off (a write that still fails then stops appends until the
    /// writer has repaired the tail: see [`LogStore::recover`]).
    pub min_free_bytes: u64,
    /// When the log signs a checkpoint of its Merkle tree, and with what
    /// key (see [`CheckpointConfig`]).
    pub checkpoints: CheckpointConfig,
}

impl Default for LogStoreConfig {
    fn default() -> Self {
        LogStoreConfig {
            segment_size: 256 * 1024 * 1024,
            limits: Limits::default(),
            index_cache_bytes: 64 * 1024 * 1024,
            max_group_bytes: 8 * 1024 * 1024,
            index_table_events: index::FLUSH_EVENTS,
            index_flush_after: index::FLUSH_AFTER,
            preallocate: 8 * 1024 * 1024,
            clock: crate::time::system_clock(),
            written_sync_after: writer::WRITTEN_SYNC,
            min_free_bytes: 64 * 1024 * 1024,
            checkpoints: CheckpointConfig::default(),
        }
    }
}

/// State shared between the writer thread and readers.
pub(crate) struct Shared {
    /// Last acknowledged position + 1 (0: empty log).
    head_plus_one: AtomicU64,
    /// How far the log is synced: (segment, offset). Readers view mapped
    /// bytes below it in place.
    synced: Mutex<(u64, u64)>,
}

impl Shared {
    fn head(&self) -> Option<GlobalPosition> {
        match self.head_plus_one.load(Ordering::Acquire) {
            0 => None,
            n => Some(GlobalPosition(n - 1)),
        }
    }

    fn set_head(&self, head: GlobalPosition) {
        self.head_plus_one.store(head.0 + 1, Ordering::Release);
    }

    fn synced(&self) -> (u64, u64) {
        *self.synced.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that the log is synced up to `offset` of `segment`.
    pub(crate) fn set_synced(&self, segment: u64, offset: u64) {
        *self.synced.lock().unwrap_or_else(|p| p.into_inner()) = (segment, offset);
    }
}

/// The embedded durable event store: segment files plus sled indexes.
///
/// Cheap to clone; clones share one writer. Open it once per data directory
/// (a lock file keeps a second store out). Layout: `<data>/log/*.seg`,
/// `<data>/index/` (sled) and `<data>/LOCK`.
///
/// ```no_run
/// # async fn demo() -> Result<(), casebook::log::LogError> {
/// use casebook::log::*;
/// let store = LogStore::open("/var/lib/casebook")?;
/// let stream: StreamId = "kent/case/C-1".parse().unwrap();
/// let meta = Metadata::new(ActorId::new("pc-1"), Source::system("casebook"));
/// let event = EventData::new("CaseOpened", b"{}".to_vec(), meta);
/// store.append(&stream, ExpectedVersion::NoStream, vec![event]).await?;
/// store.close().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

struct Inner {
    segments: Arc<Segments>,
    /// The index in use: the writer replaces one whose sled database
    /// failed ([`writer::IndexSlot`]).
    index: writer::IndexSlot,
    shared: Arc<Shared>,
    head_rx: watch::Receiver<Option<GlobalPosition>>,
    tx: Mutex<Option<mpsc::Sender<Message>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    limits: Limits,
    /// The data directory's `LOCK`, held from open until [`LogStore::close`]
    /// (or the last clone's drop).
    lock: Mutex<Option<File>>,
    /// The id of the first event, once read ([`EventStore::identity`]).
    identity: std::sync::OnceLock<EventId>,
    /// What opening cut, removed and rebuilt.
    report: RecoveryReport,
    /// The Merkle tree's nodes and the latest checkpoint.
    tree: Arc<tree::TreeShared>,
}

impl Inner {
    /// The index in use.
    fn index(&self) -> Arc<Index> {
        Arc::clone(&self.index.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// A read's index error: sled failing on the index (damage) has the
    /// writer rebuild it from the log, and the reader is told to retry
    /// ([`LogError::Failed`], retryable) rather than given the damage.
    fn indexed<T>(&self, read: Result<T, LogError>) -> Result<T, LogError> {
        match read {
            Err(e @ LogError::Index { .. }) => {
                let reason = format!("damaged: {e}");
                if let Some(tx) = &*self.tx.lock().unwrap_or_else(|p| p.into_inner()) {
                    let _ = tx.send(Message::IndexDamaged(reason));
                }
                Err(LogError::Failed {
                    reason: format!("{e}; the index is being rebuilt from the log: retry shortly"),
                })
            }
            other => other,
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(tx) = tx {
            let (done, _) = oneshot::channel();
            let _ = tx.send(Message::Shutdown(done));
        }
        let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

impl LogStore {
    /// Opens (or creates) a store in `dir` with default settings, recovering
    /// from any crash. See [`LogStore::open_with`].
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, LogError> {
        Self::open_with(dir, LogStoreConfig::default())
    }

    /// Opens (or creates) a store in `dir`.
    ///
    /// Recovery: removes sled's stale `snap.*.generating` files, cuts the
    /// last segment at the end of its log (dropping a torn tail and any
    /// zero-ahead space), and indexes every record the index does not cover
    /// yet.
    ///
    /// Errors: [`LogError::Locked`] if another store has the directory open;
    /// [`LogError::Corrupted`] for damage anywhere but an unsynced tail (the
    /// error names the segment and offset); [`LogError::UnsupportedFormat`];
    /// I/O and index errors.
    pub fn open_with(dir: impl AsRef<Path>, config: LogStoreConfig) -> Result<Self, LogError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir)
            .map_err(|e| LogError::io(format!("creating {}", dir.display()), e))?;
        let lock_path = dir.join("LOCK");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| LogError::io(format!("opening {}", lock_path.display()), e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LogError::Locked { path: lock_path })
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(LogError::io(format!("locking {}", lock_path.display()), e))
            }
        }
        let fs = OsFs::new(dir.join("log"))
            .map_err(|e| LogError::io(format!("creating {}", dir.join("log").display()), e))?;
        Self::open_parts(Arc::new(fs), &dir.join("index"), dir, config, Some(lock))
    }

    /// Opens a store whose segment files live behind `fs` and whose index lives
    /// in `index_dir`. This is the seam tests use to simulate power cuts; the
    /// caller is responsible for not opening the same files twice. The
    /// Merkle tree and the checkpoints live in `index_dir/integrity/`
    /// (so they go with the index if it is ever set aside: a test seam, not
    /// a layout for evidence).
    pub fn open_with_fs(
        fs: Arc<dyn LogFs>,
        index_dir: impl AsRef<Path>,
        config: LogStoreConfig,
    ) -> Result<Self, LogError> {
        let index_dir = index_dir.as_ref();
        let base = index_dir.join("integrity");
        Self::open_parts(fs, index_dir, &base, config, None)
    }

    fn open_parts(
        fs: Arc<dyn LogFs>,
        index_dir: &Path,
        base: &Path,
        config: LogStoreConfig,
        lock: Option<File>,
    ) -> Result<Self, LogError> {
        let segments = Arc::new(Segments::new(fs, config.segment_size));
        let mut report = RecoveryReport::default();
        let (db, rebuilt) = recovery::open_index(index_dir, config.index_cache_bytes, &segments)?;
        report.rebuilt.extend(rebuilt);
        let index = Arc::new(Index::new(
            db,
            index::Tuning {
                table_events: config.index_table_events.max(1),
                flush_after: config.index_flush_after,
            },
            Some(index_dir.to_path_buf()),
        )?);
        let recovered = recovery::recover(&segments, &index, &mut report)?;
        let tree = tree::Tree::open(
            base,
            &segments,
            recovered.next_position,
            &config.checkpoints,
            &mut report,
        )?;
        let tree_shared = Arc::clone(&tree.shared);
        if report.is_clean() {
            tracing::debug!(target: "casebook::recovery", "log opened: {report}");
        } else {
            tracing::warn!(target: "casebook::recovery", "log recovered: {report}");
        }
        let shared = Arc::new(Shared {
            head_plus_one: AtomicU64::new(recovered.next_position),
            synced: Mutex::new((recovered.segment, recovered.offset)),
        });
        let (head_tx, head_rx) = watch::channel(shared.head());
        let segment_size = config.segment_size.max(segment::HEADER_LEN + 1);
        let zero_ahead = match config.preallocate {
            0 => None,
            target => Some(prealloc::ZeroAhead::start(
                Arc::clone(&recovered.file),
                recovered.offset,
                prealloc::zero_limit(segment_size),
                target,
            )?),
        };
        let index_slot: writer::IndexSlot = Arc::new(std::sync::RwLock::new(Arc::clone(&index)));
        let writer = writer::Writer {
            segments: Arc::clone(&segments),
            index: Arc::clone(&index),
            index_slot: Arc::clone(&index_slot),
            index_cache_bytes: config.index_cache_bytes,
            shared: Arc::clone(&shared),
            head_tx,
            segment: recovered.segment,
            file: recovered.file,
            offset: recovered.offset,
            next_position: recovered.next_position,
            segment_size,
            max_group_bytes: config.max_group_bytes.max(1),
            clock: config.clock,
            heads: Default::default(),
            zero_ahead,
            unsynced: Default::default(),
            written_sync_after: config.written_sync_after,
            space: writer::Space::new(config.min_free_bytes),
            tree,
            index_replaced: None,
        };
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("casebook-log-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| LogError::io("starting the log writer thread", e))?;
        Ok(LogStore {
            inner: Arc::new(Inner {
                segments,
                index: index_slot,
                shared,
                head_rx,
                tx: Mutex::new(Some(tx)),
                writer: Mutex::new(Some(handle)),
                limits: config.limits,
                lock: Mutex::new(lock),
                identity: std::sync::OnceLock::new(),
                report,
                tree: tree_shared,
            }),
        })
    }

    /// Stops the writer after the appends already queued, cuts the zeros off
    /// the active segment, and flushes the index.
    /// Later appends on any clone fail with [`LogError::Closed`]; subscriptions
    /// end with it. Once the index is flushed, the directory's `LOCK` is
    /// released, so another store may open the directory at once (its index
    /// database waits for this store's sled files to be let go, which happens
    /// when the last clone is dropped).
    pub async fn close(&self) -> Result<(), LogError> {
        let tx = self
            .inner
            .tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let mut stopped = Ok(());
        if let Some(tx) = tx {
            let (done, wait) = oneshot::channel();
            if tx.send(Message::Shutdown(done)).is_ok() {
                stopped = wait.await.unwrap_or(Ok(()));
            }
        }
        let index = self.inner.index();
        let flushed = tokio::task::spawn_blocking(move || index.flush())
            .await
            .map_err(join_error)?;
        let result = stopped.and(flushed);
        if result.is_ok() {
            // Dropping the file releases the lock (`flock` belongs to the
            // open file description).
            drop(
                self.inner
                    .lock
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take(),
            );
        }
        result
    }

    /// Makes a store that refuses appends after a failed write accept them
    /// again, without reopening it: the writer cuts the active segment back
    /// to the end of the last acknowledged group (what the failed write left
    /// is dropped; nothing acknowledged is touched) and syncs it. The writer
    /// also tries this by itself, at most every half second, when appends
    /// arrive; this tries at once (after space was freed, say). `Ok` if
    /// appends are accepted (also when nothing had failed).
    ///
    /// Errors: [`LogError::Failed`] if the repair failed too (the disk is
    /// still full) or if the index could not be written, which only a
    /// reopen repairs (it rebuilds the index); [`LogError::Closed`].
    pub async fn recover(&self) -> Result<(), LogError> {
        let (done, wait) = oneshot::channel();
        self.send(Message::Recover(done))?;
        wait.await.map_err(|_| LogError::Closed)?
    }

    /// Reads every record of every segment and checks its checksum and
    /// position order — a full scrub, for operators. Returns the number of
    /// events checked.
    ///
    /// Errors: [`LogError::Corrupted`] naming the first damaged record.
    pub async fn verify(&self) -> Result<u64, LogError> {
        self.verify_with_progress(|_, _| {}).await
    }

    /// [`LogStore::verify`], calling `progress(checked, total)` as it goes
    /// (every 65,536 events and at the end), from the thread doing the work.
    ///
    /// Errors: as [`LogStore::verify`].
    pub async fn verify_with_progress(
        &self,
        mut progress: impl FnMut(u64, u64) + Send + 'static,
    ) -> Result<u64, LogError> {
        let segments = Arc::clone(&self.inner.segments);
        let head = self.inner.shared.head();
        tokio::task::spawn_blocking(move || recovery::verify(&segments, head, &mut progress))
            .await
            .map_err(|e| LogError::io("verifying the log", std::io::Error::other(e.to_string())))?
    }

    /// Checks the log in data directory `dir` against its Merkle tree and
    /// signed checkpoints (and a held one, if given) without opening it:
    /// it only reads, takes no lock, and may run beside a serving store.
    /// This is `casebook verify`. `progress(bytes_done, bytes_total)` is
    /// called from the calling thread as it goes. It blocks: call it from a
    /// blocking thread, not an async worker.
    ///
    /// Problems found (a damaged or altered record, a missing or swapped
    /// segment, a checkpoint the log does not match or is shorter than) are
    /// in the report, the first one located by segment, offset, position
    /// and event id; the report also says how many of the newest events are
    /// protected by checksums only.
    ///
    /// Errors (the check could not be made): no log in `dir`, no key file,
    /// a held checkpoint that does not parse, verify, or is of another log
    /// ([`LogError::Checkpoint`]); I/O errors.
    pub fn verify_integrity(
        dir: impl AsRef<Path>,
        options: &IntegrityOptions,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<IntegrityReport, LogError> {
        integrity::verify_integrity(dir.as_ref(), options, &mut progress)
    }

    /// Backs up the log of data directory `data` into the folder `to`, up
    /// to its latest signed checkpoint (the recovery point), while a store
    /// may be serving it: see [`BackupReport`] and `docs/operations.md`.
    /// A second backup into the same folder copies only what is new. This
    /// is `casebook backup`. It blocks: call it from a blocking thread.
    ///
    /// Errors: no signed checkpoint yet ([`LogError::Integrity`]); a key
    /// file or checkpoint that does not verify ([`LogError::Checkpoint`]);
    /// I/O errors.
    pub fn backup_dir(
        data: impl AsRef<Path>,
        to: impl AsRef<Path>,
    ) -> Result<BackupReport, LogError> {
        backup::backup(data.as_ref(), to.as_ref())
    }

    /// [`LogStore::backup_dir`] of this store's own data directory, on a
    /// blocking thread (for a store opened with [`LogStore::open`] or
    /// [`LogStore::open_with`]).
    ///
    /// Errors: as [`LogStore::backup_dir`].
    pub async fn backup(&self, to: impl AsRef<Path>) -> Result<BackupReport, LogError> {
        let data = self.inner.tree.paths.base.clone();
        let to = to.as_ref().to_path_buf();
        tokio::task::spawn_blocking(move || backup::backup(&data, &to))
            .await
            .map_err(join_error)?
    }

    /// Restores the backup in folder `from` into the new data directory
    /// `data` (absent or empty): checks the manifest's signature (with
    /// `key`, else the backup's own key) and every file's length and hash,
    /// copies, recomputes the tree (it must hold the manifest's events and
    /// root), and only then moves the result into place. Views and indexes
    /// are rebuilt when the directory is first opened. This is `casebook
    /// restore`. It blocks.
    ///
    /// Errors: a target that is not empty, a file missing, truncated or
    /// altered, a manifest of another key or malformed: nothing is written
    /// to `data`. I/O errors.
    pub fn restore_dir(
        from: impl AsRef<Path>,
        data: impl AsRef<Path>,
        key: Option<&CheckpointVerifier>,
    ) -> Result<RestoreReport, LogError> {
        backup::restore(from.as_ref(), data.as_ref(), key)
    }

    /// What opening this store found and did: bytes and records cut from
    /// the tail, segments removed, the index rebuilt (when it covered more
    /// than the log holds), events re-indexed. Opening also logs it (a
    /// warning when anything was cut, removed or rebuilt).
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.report
    }

    /// The latest signed checkpoint of the log's Merkle tree (`None` until
    /// the first is made: after `CheckpointConfig::every` or `every_events`,
    /// or on close). The events after its size are protected by their
    /// checksums only.
    pub fn latest_checkpoint(&self) -> Option<SignedCheckpoint> {
        self.inner.tree.latest()
    }

    /// What checks this log's checkpoint signatures (its text form is the
    /// signed-note verifier key a force can keep).
    pub fn checkpoint_verifier(&self) -> CheckpointVerifier {
        self.inner.tree.verifier.clone()
    }

    /// Every checkpoint the log has signed, oldest first.
    ///
    /// Errors: I/O errors reading `<data>/checkpoints/history`.
    pub async fn checkpoints(&self) -> Result<Vec<SignedCheckpoint>, LogError> {
        let path = self.inner.tree.paths.history.clone();
        tokio::task::spawn_blocking(move || tree::read_history(&path))
            .await
            .map_err(join_error)?
            .map(|h| h.entries.into_iter().map(|e| e.note).collect())
    }

    /// How many events the tree can prove things about now: the
    /// acknowledged ones whose nodes are written. Errors:
    /// [`LogError::Integrity`] if no tree could be built at open.
    fn provable(&self) -> Result<u64, LogError> {
        if let Some(reason) = &self.inner.tree.broken {
            return Err(LogError::Integrity {
                reason: reason.clone(),
            });
        }
        let head = self.inner.shared.head().map_or(0, |h| h.0 + 1);
        Ok(head.min(self.inner.tree.size.load(Ordering::Acquire)))
    }

    /// Checks that a tree of `size` events can be proven.
    ///
    /// Errors: as [`LogStore::provable`]; [`LogError::Proof`] beyond it.
    fn check_provable(&self, size: u64) -> Result<(), LogError> {
        let provable = self.provable()?;
        if size > provable {
            return Err(ProofError::BadSizes {
                from: size,
                to: size,
                tree: provable,
            }
            .into());
        }
        Ok(())
    }

    /// The root of the tree of the first `size` events.
    ///
    /// Errors: [`LogError::Proof`] if `size` is beyond the provable tree;
    /// [`LogError::Integrity`] if no tree could be built over the log at
    /// open (damage); I/O errors.
    pub async fn tree_root(&self, size: u64) -> Result<Hash, LogError> {
        self.check_provable(size)?;
        let tree = Arc::clone(&self.inner.tree);
        tokio::task::spawn_blocking(move || merkle::root(&*tree.nodes, size))
            .await
            .map_err(join_error)?
    }

    /// The proof that the event at `position` is in the tree of `size`
    /// events (a checkpoint's size), with its leaf hash.
    ///
    /// Errors: [`LogError::Proof`] if `position` is not below `size` or
    /// `size` is beyond the provable tree; I/O errors.
    pub async fn inclusion_proof(
        &self,
        position: GlobalPosition,
        size: u64,
    ) -> Result<InclusionProof, LogError> {
        self.check_provable(size)?;
        let tree = Arc::clone(&self.inner.tree);
        tokio::task::spawn_blocking(move || {
            let hashes = merkle::inclusion_proof(&*tree.nodes, position.0, size)?;
            let leaf = tree.nodes.node(0, position.0)?;
            Ok(InclusionProof {
                index: position.0,
                size,
                leaf,
                hashes,
            })
        })
        .await
        .map_err(join_error)?
    }

    /// The proof that the tree of `to` events extends the tree of `from`.
    ///
    /// Errors: [`LogError::Proof`] unless `0 < from <= to <=` the provable
    /// tree; I/O errors.
    pub async fn consistency_proof(
        &self,
        from: u64,
        to: u64,
    ) -> Result<ConsistencyProof, LogError> {
        let provable = self.provable()?;
        if from == 0 || from > to || to > provable {
            return Err(ProofError::BadSizes {
                from,
                to,
                tree: provable,
            }
            .into());
        }
        let tree = Arc::clone(&self.inner.tree);
        tokio::task::spawn_blocking(move || {
            let hashes = merkle::consistency_proof(&*tree.nodes, from, to)?;
            Ok(ConsistencyProof { from, to, hashes })
        })
        .await
        .map_err(join_error)?
    }

    /// Where the segment files of segment `n` live (for operators and tests).
    pub fn segment_path(&self, n: u64) -> PathBuf {
        self.inner.segments.fs.path(n)
    }

    fn read_stream_blocking(
        &self,
        stream: &StreamId,
        direction: Direction,
        from: StreamVersion,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        let locs = self.inner.indexed(
            self.inner
                .index()
                .stream_events(stream, direction, from, limit),
        )?;
        // Everything the index names was synced before it was indexed.
        let mut reader =
            RecordReader::synced_before(&self.inner.segments, self.inner.shared.synced());
        let mut out = Vec::with_capacity(locs.len());
        let mut cached: Option<(index::RecordLoc, segment::RecordBody)> = None;
        for loc in locs {
            if cached.as_ref().map(|(l, _)| *l) != Some(loc.record) {
                let body = reader.read(loc.record.segment, loc.record.offset)?;
                cached = Some((loc.record, body));
            }
            let Some((_, body)) = &cached else { continue };
            let event = body.event(loc.index as usize).ok_or_else(|| {
                self.inner.segments.corrupted(
                    loc.record.segment,
                    loc.record.offset,
                    format!(
                        "the index names event {} of a record that has fewer",
                        loc.index
                    ),
                )
            })?;
            out.push(event);
        }
        Ok(out)
    }

    /// The records holding `tenant`'s events from `from`, up to `limit`
    /// events, and which of their events are wanted.
    fn plan<'t>(
        &self,
        tenant: &'t TenantId,
        from: GlobalPosition,
        limit: usize,
    ) -> Result<Plan<'t>, LogError> {
        let records = self
            .inner
            .indexed(self.inner.index().tenant_records(tenant, from, limit))?;
        // Everything the index names was synced before it was indexed.
        let synced = self.inner.shared.synced();
        let mut reads = Vec::with_capacity(records.len());
        let mut events = 0;
        for (first, loc, count) in records {
            let skip = from.0.saturating_sub(first.0).min(u64::from(count)) as usize;
            let take = (count as usize - skip).min(limit - events);
            if take == 0 {
                continue;
            }
            let wanted = segment::Wanted {
                first_position: first,
                tenant,
                skip,
                take,
            };
            reads.push((loc, wanted));
            events += take;
            if events == limit {
                break;
            }
        }
        Ok(Plan {
            reads,
            events,
            synced,
        })
    }

    /// Carries out `plan`, reading each record with `read` into `out`.
    ///
    /// One thread reads a page: splitting a page between two threads was
    /// measured slower (the replay bench), as the pass is bound by memory
    /// more than by the cores.
    fn carry_out<T>(
        &self,
        plan: &Plan<'_>,
        mut out: T,
        read: impl Fn(
            &mut RecordReader<'_>,
            &index::RecordLoc,
            &segment::Wanted<'_>,
            &mut T,
        ) -> Result<(), LogError>,
    ) -> Result<T, LogError> {
        let mut reader = RecordReader::synced_before(&self.inner.segments, plan.synced);
        for (loc, wanted) in &plan.reads {
            read(&mut reader, loc, wanted, &mut out)?;
        }
        Ok(out)
    }

    fn read_all_blocking(
        &self,
        tenant: &TenantId,
        from: GlobalPosition,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        let plan = self.plan(tenant, from, limit)?;
        let out = Vec::with_capacity(plan.events);
        self.carry_out(&plan, out, |reader, loc, wanted, out| {
            reader.read_into(loc.segment, loc.offset, wanted, out)
        })
    }

    fn read_all_batch_blocking(
        &self,
        tenant: &TenantId,
        from: GlobalPosition,
        limit: usize,
    ) -> Result<EventBatch, LogError> {
        let plan = self.plan(tenant, from, limit)?;
        let out = BatchBuilder::with_capacity(plan.events, plan.reads.len());
        let batch = self.carry_out(&plan, out, |reader, loc, wanted, out| {
            reader.read_view_into(loc.segment, loc.offset, wanted, out)
        })?;
        Ok(batch.build())
    }
}

/// What a bulk read will read: records, the events wanted of each, and how
/// far the log was synced when the records were looked up.
struct Plan<'t> {
    reads: Vec<(index::RecordLoc, segment::Wanted<'t>)>,
    events: usize,
    synced: (u64, u64),
}

impl LogStore {
    /// Runs a blocking read of `tenant`'s events off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        tenant: &TenantId,
        read: impl FnOnce(&LogStore, &TenantId) -> Result<T, LogError> + Send + 'static,
    ) -> Result<T, LogError> {
        let this = self.clone();
        let tenant = tenant.clone();
        tokio::task::spawn_blocking(move || read(&this, &tenant))
            .await
            .map_err(join_error)?
    }
}

impl LogStore {
    /// Hands an append to the writer and waits for its answer.
    async fn submit(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        durability: Durability,
    ) -> Result<AppendResult, LogError> {
        self.inner.limits.check_append(stream, &events)?;
        let (reply, wait) = oneshot::channel();
        self.send(Message::Append(AppendRequest {
            stream: stream.clone(),
            expected,
            events,
            durability,
            reply,
        }))?;
        wait.await.map_err(|_| LogError::Closed)?
    }

    /// Queues a message for the writer. Errors: [`LogError::Closed`].
    fn send(&self, message: Message) -> Result<(), LogError> {
        let tx = self.inner.tx.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = tx.as_ref() else {
            return Err(LogError::Closed);
        };
        tx.send(message).map_err(|_| LogError::Closed)
    }
}

fn join_error(e: tokio::task::JoinError) -> LogError {
    LogError::io("a blocking read task", std::io::Error::other(e.to_string()))
}

#[async_trait]
impl EventStore for LogStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult, LogError> {
        self.submit(stream, expected, events, Durability::Synced)
            .await
    }

    async fn append_written(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult, LogError> {
        self.submit(stream, expected, events, Durability::Written)
            .await
    }

    async fn sync_written(&self) -> Result<(), LogError> {
        let (done, wait) = oneshot::channel();
        self.send(Message::Flush(done))?;
        wait.await.map_err(|_| LogError::Closed)?
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        direction: Direction,
        from: StreamVersion,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        self.inner.limits.check_read(limit)?;
        self.read_stream_blocking(stream, direction, from, limit)
    }

    async fn read_all(
        &self,
        tenant: &TenantId,
        from: GlobalPosition,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        self.inner.limits.check_read(limit)?;
        self.blocking(tenant, move |this, tenant| {
            this.read_all_blocking(tenant, from, limit)
        })
        .await
    }

    async fn read_all_batch(
        &self,
        tenant: &TenantId,
        from: GlobalPosition,
        limit: usize,
    ) -> Result<EventBatch, LogError> {
        self.inner.limits.check_read(limit)?;
        self.blocking(tenant, move |this, tenant| {
            this.read_all_batch_blocking(tenant, from, limit)
        })
        .await
    }

    async fn read_event(&self, id: EventId) -> Result<Option<RecordedEvent>, LogError> {
        let Some(loc) = self.inner.indexed(self.inner.index().event(id))? else {
            return Ok(None);
        };
        // Everything the index names was synced before it was indexed.
        let mut reader =
            RecordReader::synced_before(&self.inner.segments, self.inner.shared.synced());
        let body = reader.read(loc.record.segment, loc.record.offset)?;
        match body.event(loc.index as usize) {
            Some(event) => Ok(Some(event)),
            None => Err(self.inner.segments.corrupted(
                loc.record.segment,
                loc.record.offset,
                format!(
                    "the index names event {} of a record that has fewer",
                    loc.index
                ),
            )),
        }
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Option<StreamVersion>, LogError> {
        self.inner.indexed(self.inner.index().stream_head(stream))
    }

    fn head_position(&self) -> Option<GlobalPosition> {
        self.inner.shared.head()
    }

    fn identity(&self) -> Option<EventId> {
        if let Some(id) = self.inner.identity.get() {
            return Some(*id);
        }
        // Only once the first event is acknowledged (so synced).
        self.head_position()?;
        let id = recovery::first_event_id(&self.inner.segments).ok()??;
        Some(*self.inner.identity.get_or_init(|| id))
    }

    fn watch_head(&self) -> watch::Receiver<Option<GlobalPosition>> {
        self.inner.head_rx.clone()
    }

    fn limits(&self) -> Limits {
        self.inner.limits
    }

    fn to_dyn(&self) -> Arc<dyn EventStore> {
        Arc::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::types::{ActorId, EventData, Metadata, Source, TenantId};
    use crate::log::{Direction, ExpectedVersion};

    fn note(n: u8) -> EventData {
        let meta = Metadata::new(ActorId::new("pc-1"), Source::system("test"));
        let mut e = EventData::new("NoteAdded", vec![n; 64], meta);
        e.id = EventId(uuid::Uuid::from_u64_pair(7, u64::from(n)));
        e
    }

    /// A group whose records were synced but whose indexing failed (the
    /// index had already failed a sled write) is answered with an error,
    /// yet stays in the log: the repair rebuilds the index from the
    /// segments, publishes the head through it, and a retry of the append
    /// finds it by its event id. (The repair used to refuse, forever, a
    /// log longer than the head it had shown.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_synced_but_not_indexed_stays_and_the_store_repairs() {
        let dir = tempfile::tempdir().unwrap();
        let stream = StreamId::new(TenantId::new("kent").unwrap(), "case", "c1").unwrap();
        let store = LogStore::open(dir.path()).unwrap();
        store
            .append(&stream, ExpectedVersion::Any, vec![note(1)])
            .await
            .unwrap();
        store
            .inner
            .index()
            .fail_for_test("simulated: sled refused a write");
        let second = note(2);
        let refused = store
            .append(&stream, ExpectedVersion::Any, vec![second.clone()])
            .await
            .unwrap_err();
        assert!(refused.kind().is_retryable(), "{refused}");

        store.recover().await.unwrap();
        let read = store
            .read_stream(&stream, Direction::Forward, StreamVersion(0), 10)
            .await
            .unwrap();
        let ids: Vec<EventId> = read.iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![note(1).id, second.id]);
        assert_eq!(store.head_position(), Some(read[1].position));
        let again = store
            .append(&stream, ExpectedVersion::Any, vec![second])
            .await
            .unwrap();
        assert_eq!(again.first_position, read[1].position);
        let next = store
            .append(
                &stream,
                ExpectedVersion::Exact(StreamVersion(1)),
                vec![note(3)],
            )
            .await
            .unwrap();
        assert_eq!(next.first_position, GlobalPosition(read[1].position.0 + 1));
        store.close().await.unwrap();
        drop(store);

        let store = LogStore::open(dir.path()).unwrap();
        let read = store
            .read_stream(&stream, Direction::Forward, StreamVersion(0), 10)
            .await
            .unwrap();
        assert_eq!(read.len(), 3);
        store.verify().await.unwrap();
        store.close().await.unwrap();
    }
}
