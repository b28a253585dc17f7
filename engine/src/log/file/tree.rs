//! The log's Merkle tree on disk and its signed checkpoints.
//!
//! `<data>/tree/nodes` holds every node of the tree (leaves and interior
//! nodes, 32 bytes each) in the order appends complete them: leaf `i`, then
//! the nodes it completes (`merkle::postorder_index`). It is derived: the
//! writer appends to it after each group's write, without a sync of its own,
//! and opening re-hashes whatever the last checkpoint does not vouch for.
//! Any perfect subtree is one read, so proofs cost O(log n) reads.
//!
//! `<data>/checkpoints/` is not derived: `signing.key` (the Ed25519 seed and
//! the log's origin, mode 0600, made on first open unless the config gives
//! a signer), `history` (every checkpoint, appended and synced:
//! `[len u32][crc32c u32][segment u64][offset u64][note]`, where segment and
//! offset say where the log ended at that size) and `latest` (the last
//! note, replaced atomically: for operators and tenants to copy).
//!
//! A checkpoint is made after a group commit's sync once `every_events`
//! events or `every` time have passed since the last, on an idle writer's
//! timer, and on a clean close: the nodes are synced first, so a checkpoint
//! never vouches for nodes a crash could lose.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::segment::{self, RawScanned, RecordReader, Segments, HEADER_LEN};
use crate::log::checkpoint::{Checkpoint, CheckpointSigner, CheckpointVerifier, SignedCheckpoint};
use crate::log::error::LogError;
use crate::log::merkle::{self, Frontier, Hash, NodeSource};
use crate::log::report::{DerivedRebuild, RecoveryReport};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// How a set-aside checkpoint history's folder in `checkpoints/` starts.
pub(crate) const ASIDE: &str = "aside-";
/// A history entry's note is at most this long (a sanity bound).
const MAX_NOTE: usize = 64 * 1024;

/// When the log signs a checkpoint, and with what key.
#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    /// Sign once this many events were appended since the last checkpoint.
    /// Default 10,000.
    pub every_events: u64,
    /// ... or once this long has passed since it, if anything was appended.
    /// Default 1 s: the longest the newest events are protected by their
    /// checksums only.
    pub every: Duration,
    /// The signing key; `None`: the one in `<data>/checkpoints/signing.key`,
    /// made on first open.
    pub signer: Option<CheckpointSigner>,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            every_events: 10_000,
            every: Duration::from_secs(1),
            signer: None,
        }
    }
}

/// Where the tree and the checkpoints of a store whose data directory is
/// `base` live.
#[derive(Debug, Clone)]
pub(crate) struct TreePaths {
    /// The data directory.
    pub base: PathBuf,
    pub nodes: PathBuf,
    pub key: PathBuf,
    pub history: PathBuf,
    pub latest: PathBuf,
}

impl TreePaths {
    pub fn new(base: &Path) -> Self {
        let checkpoints = base.join("checkpoints");
        TreePaths {
            base: base.to_path_buf(),
            nodes: base.join("tree").join("nodes"),
            key: checkpoints.join("signing.key"),
            history: checkpoints.join("history"),
            latest: checkpoints.join("latest"),
        }
    }
}

fn io(what: impl std::fmt::Display, path: &Path, e: std::io::Error) -> LogError {
    LogError::io(format!("{what} {}", path.display()), e)
}

/// The node file, read by any thread and appended to by the writer.
pub(crate) struct NodeFile {
    file: File,
    path: PathBuf,
}

impl NodeFile {
    /// Opens the node file; `write`: create it too.
    pub fn open(path: &Path, write: bool) -> Result<Self, LogError> {
        if write {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| io("creating", dir, e))?;
            }
        }
        let file = File::options()
            .read(true)
            .write(write)
            .create(write)
            .truncate(false)
            .open(path)
            .map_err(|e| io("opening", path, e))?;
        Ok(NodeFile {
            file,
            path: path.to_path_buf(),
        })
    }

    /// How many whole nodes the file holds.
    pub fn nodes(&self) -> Result<u64, LogError> {
        let len = self
            .file
            .metadata()
            .map_err(|e| io("reading the length of", &self.path, e))?
            .len();
        Ok(len / 32)
    }

    /// The node at post-order index `at`.
    pub fn read(&self, at: u64) -> Result<Hash, LogError> {
        let mut hash = [0u8; 32];
        self.file
            .read_exact_at(&mut hash, at * 32)
            .map_err(|e| io("reading", &self.path, e))?;
        Ok(hash)
    }

    fn write(&self, at: u64, nodes: &[Hash]) -> Result<(), LogError> {
        let bytes: Vec<u8> = nodes.iter().flatten().copied().collect();
        self.file
            .write_all_at(&bytes, at * 32)
            .map_err(|e| io("writing", &self.path, e))
    }

    fn truncate(&self, nodes: u64) -> Result<(), LogError> {
        self.file
            .set_len(nodes * 32)
            .map_err(|e| io("cutting", &self.path, e))
    }

    fn sync(&self) -> Result<(), LogError> {
        self.file
            .sync_data()
            .map_err(|e| io("syncing", &self.path, e))
    }
}

impl NodeSource for NodeFile {
    type Error = LogError;
    fn node(&self, level: u32, index: u64) -> Result<Hash, LogError> {
        self.read(merkle::postorder_index(level, index))
    }
}

/// A checkpoint as the history holds it: the note, and where the log
/// ended at its size.
#[derive(Debug, Clone)]
pub(crate) struct StoredCheckpoint {
    pub note: SignedCheckpoint,
    pub segment: u64,
    pub offset: u64,
}

/// What reading the history found.
pub(crate) struct History {
    pub entries: Vec<StoredCheckpoint>,
    /// Bytes of whole, intact entries (a torn last entry lies past them).
    pub valid_len: u64,
    /// Entries whose checksum holds but whose note does not parse:
    /// (byte offset, what is wrong).
    pub unparsable: Vec<(u64, String)>,
}

/// A history entry for the note `text` of a log that ended at `(segment,
/// offset)`.
pub(crate) fn encode_entry(text: &str, segment: u64, offset: u64) -> Vec<u8> {
    let mut rest = Vec::with_capacity(16 + text.len());
    rest.extend_from_slice(&segment.to_le_bytes());
    rest.extend_from_slice(&offset.to_le_bytes());
    rest.extend_from_slice(text.as_bytes());
    let mut entry = Vec::with_capacity(8 + rest.len());
    entry.extend_from_slice(&(rest.len() as u32).to_le_bytes());
    entry.extend_from_slice(&crc32c::crc32c(&rest).to_le_bytes());
    entry.extend_from_slice(&rest);
    entry
}

/// Reads the checkpoint history (an absent file is an empty history).
pub(crate) fn read_history(path: &Path) -> Result<History, LogError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io("reading", path, e)),
    };
    let mut history = History {
        entries: Vec::new(),
        valid_len: 0,
        unparsable: Vec::new(),
    };
    let mut at = 0usize;
    while let Some(head) = bytes.get(at..at + 8) {
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if !(16..=MAX_NOTE + 16).contains(&len) {
            break;
        }
        let Some(rest) = bytes.get(at + 8..at + 8 + len) else {
            break;
        };
        if crc32c::crc32c(rest) != crc {
            break;
        }
        let segment = u64::from_le_bytes(rest[..8].try_into().unwrap_or_default());
        let offset = u64::from_le_bytes(rest[8..16].try_into().unwrap_or_default());
        match std::str::from_utf8(&rest[16..])
            .map_err(|_| "the note is not UTF-8".to_string())
            .and_then(|t| SignedCheckpoint::parse(t).map_err(|e| e.to_string()))
        {
            Ok(note) => history.entries.push(StoredCheckpoint {
                note,
                segment,
                offset,
            }),
            Err(e) => history.unparsable.push((at as u64, e)),
        }
        at += 8 + len;
        history.valid_len = at as u64;
    }
    Ok(history)
}

/// Loads the signer from `path`, or makes one (origin `casebook/<uuid>`)
/// and stores it there, readable by its owner only.
pub(crate) fn load_or_create_signer(path: &Path) -> Result<CheckpointSigner, LogError> {
    match std::fs::read_to_string(path) {
        Ok(text) => return parse_key_file(&text).map_err(LogError::from),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("reading", path, e)),
    }
    let name = format!("casebook/{}", uuid::Uuid::new_v4());
    let signer = CheckpointSigner::generate(&name)?;
    let text = format!("{}\n{}\n", signer.name(), B64.encode(signer.seed()));
    write_atomically(path, text.as_bytes(), 0o600)?;
    Ok(signer)
}

/// The signer a key file holds: its name, then its base64 seed.
pub(crate) fn parse_key_file(
    text: &str,
) -> Result<CheckpointSigner, crate::log::checkpoint::CheckpointError> {
    use crate::log::checkpoint::CheckpointError;
    let mut lines = text.lines();
    let (Some(name), Some(seed)) = (lines.next(), lines.next()) else {
        return Err(CheckpointError::BadKey(
            "a key file holds the key's name, then its base64 seed, each on a line".into(),
        ));
    };
    let seed: [u8; 32] = B64
        .decode(seed.trim())
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| CheckpointError::BadKey("the seed is not 32 bytes of base64".into()))?;
    CheckpointSigner::from_seed(name.trim(), &seed)
}

/// Writes `path` through a temporary file, synced, renamed over it, and
/// the directory synced.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), LogError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| io("creating", dir, e))?;
    let tmp = path.with_extension("tmp");
    let mut file = File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| io("creating", &tmp, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| io("writing", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("renaming into", path, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("syncing", dir, e))
}

/// What readers share with the writer's tree.
pub(crate) struct TreeShared {
    pub nodes: Arc<NodeFile>,
    /// Why no tree could be built at open (damage in the log): then none
    /// is extended, signed or proved from.
    pub broken: Option<String>,
    /// Leaves whose nodes are in the node file.
    pub size: AtomicU64,
    pub latest: RwLock<Option<SignedCheckpoint>>,
    pub verifier: CheckpointVerifier,
    pub paths: TreePaths,
}

impl TreeShared {
    pub fn latest(&self) -> Option<SignedCheckpoint> {
        self.latest
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The writer's side of the tree.
pub(crate) struct Tree {
    pub shared: Arc<TreeShared>,
    frontier: Frontier,
    /// Nodes completed but not yet written.
    completed: Vec<Hash>,
    /// Nodes in the file.
    written: u64,
    leaves: Vec<Hash>,
    signer: CheckpointSigner,
    history: File,
    every_events: u64,
    every: Duration,
    /// The size of the last checkpoint, and when it was made.
    signed: u64,
    signed_at: Instant,
}

impl Tree {
    /// Opens the tree of a log of `size` events (as recovery left it):
    /// keeps the nodes the last checkpoint vouches for, checks them against
    /// it, re-hashes the rest from the segments.
    ///
    /// A log that no longer matches its checkpoint history (shorter than
    /// the last checkpoint, other events under it, a history that does not
    /// verify) still opens, as a log cut back or restored from a copy must:
    /// the history is set aside (renamed, kept as evidence, and reported in
    /// `report` and by `casebook verify`), and a new one begins.
    ///
    /// Errors: [`LogError::Checkpoint`] for a bad key file;
    /// [`LogError::Integrity`] if a record cannot be hashed; I/O errors.
    pub fn open(
        base: &Path,
        segments: &Segments,
        size: u64,
        config: &crate::log::file::CheckpointConfig,
        report: &mut RecoveryReport,
    ) -> Result<Tree, LogError> {
        let paths = TreePaths::new(base);
        let signer = match &config.signer {
            Some(s) => s.clone(),
            None => load_or_create_signer(&paths.key)?,
        };
        let verifier = signer.verifier();
        let nodes = Arc::new(NodeFile::open(&paths.nodes, true)?);
        let mut history = read_history(&paths.history)?;
        let mut frontier = Frontier::default();
        let mut completed = Vec::new();
        let mut broken = None;
        let resumed = resume(
            &history,
            &verifier,
            &nodes,
            segments,
            size,
            &mut frontier,
            &mut completed,
        );
        if let Err(reason) = resumed {
            let aside = set_aside(&paths, &reason)?;
            tracing::warn!(target: "casebook::recovery", "the log does not match its checkpoints ({reason}): their history is kept at {}", aside.display());
            report.rebuilt.push(DerivedRebuild {
                store: "checkpoints".into(),
                reason,
                set_aside: Some(aside),
            });
            history = read_history(&paths.history)?;
            frontier = Frontier::default();
            completed.clear();
            let start = (segments.numbers().first().copied().unwrap_or(0), HEADER_LEN);
            if let Err(reason) = rehash(segments, start, size, &mut frontier, &mut completed, None)
            {
                // Damage before the index's marker, which opening does not
                // read: the log opens as before (reads of the damaged
                // record fail), but no tree can be built over it, so none
                // is signed until the damage is dealt with.
                let reason = format!("no tree can be built over the log: {reason}");
                tracing::error!(target: "casebook::recovery", "{reason}");
                report.rebuilt.push(DerivedRebuild {
                    store: "tree".into(),
                    reason: reason.clone(),
                    set_aside: None,
                });
                broken = Some(reason);
                frontier = Frontier::default();
                completed.clear();
            }
        }
        let last = history.entries.last().map(|l| l.note.clone());
        let signed = last.as_ref().map_or(0, |l| l.checkpoint().size);
        let base_nodes = merkle::nodes_for(frontier.size()) - completed.len() as u64;
        nodes.truncate(base_nodes)?;
        nodes.write(base_nodes, &completed)?;
        let written = merkle::nodes_for(frontier.size());
        completed.clear();
        let history_file = File::options()
            .append(true)
            .create(true)
            .open(&paths.history)
            .map_err(|e| io("opening", &paths.history, e))?;
        // A torn last entry is cut away before anything is appended.
        history_file
            .set_len(history.valid_len)
            .map_err(|e| io("cutting", &paths.history, e))?;
        let shared = Arc::new(TreeShared {
            nodes,
            broken,
            size: AtomicU64::new(frontier.size()),
            latest: RwLock::new(last),
            verifier,
            paths,
        });
        Ok(Tree {
            shared,
            frontier,
            completed,
            written,
            leaves: Vec::new(),
            signer,
            history: history_file,
            every_events: config.every_events.max(1),
            every: config.every,
            signed,
            signed_at: Instant::now(),
        })
    }

    /// Adds the leaves of a record just encoded (its body).
    pub fn add_record(&mut self, body: &[u8]) -> Result<(), LogError> {
        if self.shared.broken.is_some() {
            return Ok(());
        }
        self.leaves.clear();
        segment::leaf_hashes(body, &mut self.leaves).map_err(|reason| LogError::Integrity {
            reason: format!("hashing a record just written: {reason}"),
        })?;
        for leaf in &self.leaves {
            self.frontier.push(*leaf, &mut self.completed);
        }
        Ok(())
    }

    /// Takes the tree back to the log's first `size` events, after the
    /// writer cut a failed group off the log: the nodes the last checkpoint
    /// vouches for are kept, the rest re-hashed from the segments (which
    /// hold exactly `size` events now).
    ///
    /// Errors: [`LogError::Integrity`] if the log no longer matches its
    /// checkpoints; I/O errors.
    pub fn rewind(&mut self, segments: &Segments, size: u64) -> Result<(), LogError> {
        if self.shared.broken.is_some() || self.frontier.size() == size {
            self.completed.clear();
            return Ok(());
        }
        let history = read_history(&self.shared.paths.history)?;
        let mut frontier = Frontier::default();
        let mut completed = Vec::new();
        resume(
            &history,
            &self.shared.verifier,
            &self.shared.nodes,
            segments,
            size,
            &mut frontier,
            &mut completed,
        )
        .map_err(|reason| LogError::Integrity {
            reason: format!("rewinding the tree after a failed write: {reason}"),
        })?;
        let base_nodes = merkle::nodes_for(frontier.size()) - completed.len() as u64;
        self.shared.nodes.truncate(base_nodes)?;
        self.shared.nodes.write(base_nodes, &completed)?;
        self.written = merkle::nodes_for(frontier.size());
        self.completed.clear();
        self.frontier = frontier;
        self.shared
            .size
            .store(self.frontier.size(), Ordering::Release);
        Ok(())
    }

    /// Writes the nodes completed since the last call (no sync).
    pub fn write_pending(&mut self) -> Result<(), LogError> {
        if self.completed.is_empty() {
            return Ok(());
        }
        self.shared.nodes.write(self.written, &self.completed)?;
        self.written += self.completed.len() as u64;
        self.completed.clear();
        self.shared
            .size
            .store(self.frontier.size(), Ordering::Release);
        Ok(())
    }

    /// When the next checkpoint falls due if nothing more is appended.
    pub fn due(&self) -> Option<Instant> {
        (self.shared.broken.is_none() && self.frontier.size() > self.signed)
            .then(|| self.signed_at + self.every)
    }

    /// Signs a checkpoint of the whole tree if one is due (or `force`d);
    /// the log must be synced through its end, which lies at `(segment,
    /// offset)`. A failure (a full disk...) does not fail the store, whose
    /// appends are durable without it: it is logged, the newest events stay
    /// CRC-only, and signing is tried again after `every`.
    pub fn checkpoint_if_due(&mut self, force: bool, segment: u64, offset: u64) {
        if let Err(e) = self.try_checkpoint(force, segment, offset) {
            tracing::error!(target: "casebook::log", "signing a checkpoint failed (tried again in {:?}): {e}", self.every);
            self.signed_at = Instant::now();
        }
    }

    fn try_checkpoint(&mut self, force: bool, segment: u64, offset: u64) -> Result<(), LogError> {
        let size = self.frontier.size();
        if size <= self.signed || self.shared.broken.is_some() {
            return Ok(());
        }
        let due = force
            || size - self.signed >= self.every_events
            || self.signed_at.elapsed() >= self.every;
        if !due {
            return Ok(());
        }
        self.write_pending()?;
        self.shared.nodes.sync()?;
        let note = self.signer.sign(&Checkpoint {
            origin: self.signer.name().to_string(),
            size,
            root: self.frontier.root(),
        });
        let text = note.note();
        let entry = encode_entry(&text, segment, offset);
        let path = &self.shared.paths.history;
        let before = self
            .history
            .metadata()
            .map_err(|e| io("reading the length of", path, e))?
            .len();
        if let Err(e) = self
            .history
            .write_all(&entry)
            .and_then(|()| self.history.sync_data())
        {
            // No torn entry may stay before the next one.
            let _ = self.history.set_len(before);
            return Err(io("appending to", path, e));
        }
        write_atomically(&self.shared.paths.latest, text.as_bytes(), 0o644)?;
        *self
            .shared
            .latest
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(note);
        self.signed = size;
        self.signed_at = Instant::now();
        Ok(())
    }
}

/// Brings `frontier` to the log's `size` events under its checkpoint
/// history: from the stored nodes the last checkpoint vouches for, else by
/// re-hashing the whole log; `Err` says why the log and its history
/// disagree.
fn resume(
    history: &History,
    verifier: &CheckpointVerifier,
    nodes: &NodeFile,
    segments: &Segments,
    size: u64,
    frontier: &mut Frontier,
    completed: &mut Vec<Hash>,
) -> Result<(), String> {
    if let Some((at, e)) = history.unparsable.first() {
        return Err(format!(
            "the checkpoint {at} bytes into the history does not parse: {e}"
        ));
    }
    let first = (segments.numbers().first().copied().unwrap_or(0), HEADER_LEN);
    let Some(last) = history.entries.last() else {
        return rehash(segments, first, size, frontier, completed, None);
    };
    let checkpoint = last
        .note
        .verify(verifier)
        .map_err(|e| format!("the last checkpoint does not verify: {e}"))?;
    let signed = checkpoint.size;
    if signed > size {
        return Err(format!(
            "the log holds {size} events but its last checkpoint signed {signed}: events were removed or the log was cut back"
        ));
    }
    let stored = merkle::size_for_nodes(nodes.nodes().map_err(|e| e.to_string())?);
    if stored >= signed {
        let loaded = Frontier::load(nodes, signed).map_err(|e| e.to_string())?;
        if loaded.root() == checkpoint.root {
            *frontier = loaded;
            let from = (last.segment, last.offset);
            if rehash(segments, from, size, frontier, completed, None).is_ok() {
                return Ok(());
            }
        }
    }
    // The stored nodes are behind, damaged, or the checkpoint's offset is
    // no record boundary: the whole log is hashed again.
    tracing::info!(target: "casebook::recovery", "re-hashing the whole log for its tree");
    *frontier = Frontier::default();
    completed.clear();
    rehash(
        segments,
        first,
        size,
        frontier,
        completed,
        Some((signed, checkpoint.root)),
    )
}

/// Moves the checkpoint history and the latest note aside, for diagnosis,
/// into `checkpoints/aside-<unix seconds>[-n]/` with a `WHY` file saying
/// `reason` (the signing key stays); returns that folder.
fn set_aside(paths: &TreePaths, reason: &str) -> Result<PathBuf, LogError> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let dir = paths.history.parent().unwrap_or(Path::new("."));
    let mut target = dir.join(format!("{ASIDE}{secs}"));
    let mut n = 1;
    while target.exists() {
        target = dir.join(format!("{ASIDE}{secs}-{n}"));
        n += 1;
    }
    std::fs::create_dir_all(&target).map_err(|e| io("creating", &target, e))?;
    for file in [&paths.history, &paths.latest] {
        if file.exists() {
            let name = file.file_name().unwrap_or_default();
            std::fs::rename(file, target.join(name)).map_err(|e| io("setting aside", file, e))?;
        }
    }
    std::fs::write(target.join("WHY"), format!("{reason}\n"))
        .map_err(|e| io("writing", &target.join("WHY"), e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("syncing", dir, e))?;
    Ok(target)
}

/// Hashes the records from `start` (segment, offset) on until the tree
/// holds `size` leaves; `check`: a (size, root) the tree must pass through.
fn rehash(
    segments: &Segments,
    start: (u64, u64),
    size: u64,
    frontier: &mut Frontier,
    completed: &mut Vec<Hash>,
    check: Option<(u64, Hash)>,
) -> Result<(), String> {
    // Whether the tree passed through the checked size with its root.
    let mut checked = check.is_none_or(|(s, _)| s == 0);
    let mut check_root = |frontier: &Frontier| -> Result<(), String> {
        if let Some((s, root)) = check {
            if s == frontier.size() {
                if frontier.root() != root {
                    return Err(format!(
                        "the log's first {s} events do not match their signed checkpoint"
                    ));
                }
                checked = true;
            }
        }
        Ok(())
    };
    check_root(frontier)?;
    let (mut segment, mut offset) = start;
    let numbers = segments.numbers();
    let mut reader = RecordReader::new(segments);
    let mut leaves = Vec::new();
    while frontier.size() < size {
        match reader
            .scan_raw(segment, offset)
            .map_err(|e| e.to_string())?
        {
            RawScanned::Record(body, next) => {
                leaves.clear();
                segment::leaf_hashes(&body, &mut leaves)
                    .map_err(|r| format!("segment {segment} at offset {offset}: {r}"))?;
                for leaf in &leaves {
                    frontier.push(*leaf, completed);
                }
                check_root(frontier)?;
                offset = next;
            }
            RawScanned::End if numbers.contains(&(segment + 1)) => {
                segment += 1;
                offset = HEADER_LEN;
            }
            RawScanned::End => {
                return Err(format!(
                    "the log ends after {} events; {size} expected",
                    frontier.size()
                ))
            }
            RawScanned::Damaged(reason) => {
                return Err(format!("segment {segment} at offset {offset}: {reason}"))
            }
        }
    }
    if !checked {
        return Err("the log's records do not end where its signed checkpoint does".into());
    }
    Ok(())
}
