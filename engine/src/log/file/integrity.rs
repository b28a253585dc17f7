//! The integrity check behind `casebook verify`: recompute the Merkle tree
//! from the segment files and hold it against every signed checkpoint.
//!
//! It only reads — segments, `tree/nodes`, `checkpoints/` — and takes no
//! lock, so it runs beside a serving engine and never changes the evidence
//! it checks (opening a store would cut a damaged tail). It stops at the
//! first record it cannot trust and names it: segment, byte offset,
//! position and, where the bytes still decode, event id. A leaf that
//! differs from the stored tree is named the same way; a checkpoint whose
//! root differs names the range of events it covers.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::fs::{LogFs, OsFs};
use super::segment::{self, RawScanned, RecordReader, Segments, HEADER_LEN};
use super::tree::{self, NodeFile, TreePaths};
use crate::log::checkpoint::{CheckpointVerifier, SignedCheckpoint};
use crate::log::error::LogError;
use crate::log::merkle::{self, Frontier, Hash};
use crate::log::types::{EventId, GlobalPosition};

/// What to check besides the log's own checkpoints.
#[derive(Debug, Clone, Default)]
pub struct IntegrityOptions {
    /// A checkpoint note a tenant (or anyone) kept: the log must hold at
    /// least its size and have its root at that size — which shows a log
    /// rolled back to an older, self-consistent copy.
    pub held: Option<String>,
    /// The key to check signatures with; `None`: the data directory's own
    /// (`checkpoints/signing.key`). Give the verifier key a force keeps to
    /// catch a key swapped along with the log.
    pub key: Option<CheckpointVerifier>,
}

/// One problem found, located as precisely as the damage allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrityProblem {
    /// What is wrong.
    pub what: String,
    /// The segment file it is in.
    pub segment: Option<PathBuf>,
    /// The byte offset in that segment (of the record's frame).
    pub offset: Option<u64>,
    /// The global position of the (first) event concerned.
    pub position: Option<GlobalPosition>,
    /// That event's id, where the bytes still decode.
    pub event_id: Option<EventId>,
}

impl fmt::Display for IntegrityProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut at = Vec::new();
        if let Some(s) = &self.segment {
            at.push(format!("segment {}", s.display()));
        }
        if let Some(o) = self.offset {
            at.push(format!("offset {o}"));
        }
        if let Some(p) = self.position {
            at.push(format!("position {p}"));
        }
        if let Some(e) = self.event_id {
            at.push(format!("event {e}"));
        }
        if at.is_empty() {
            write!(f, "{}", self.what)
        } else {
            write!(f, "{}: {}", at.join(", "), self.what)
        }
    }
}

/// What [`LogStore::verify_integrity`](super::LogStore::verify_integrity) found.
#[derive(Debug, Clone, Default)]
pub struct IntegrityReport {
    /// Events read and hashed.
    pub events: u64,
    /// Bytes of segment files read.
    pub bytes: u64,
    /// The log's origin (its checkpoints' first line), if known.
    pub origin: Option<String>,
    /// Checkpoints whose signature and root were checked and hold.
    pub checkpoints: u64,
    /// The largest size a checkpoint that holds vouches for.
    pub signed_through: u64,
    /// The size of the held checkpoint, if one was given and it holds.
    pub held: Option<u64>,
    /// The tree's root over all `events`.
    pub root: Hash,
    /// Everything wrong, first found first. Empty: the log is intact.
    pub problems: Vec<IntegrityProblem>,
}

impl IntegrityReport {
    /// Whether nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Events after the last checkpoint: protected by their checksums only.
    pub fn crc_only(&self) -> u64 {
        self.events.saturating_sub(self.signed_through)
    }
}

impl fmt::Display for IntegrityReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} events ({} bytes) hashed; {} checkpoint{} verified, signed through {} events",
            self.events,
            self.bytes,
            self.checkpoints,
            if self.checkpoints == 1 { "" } else { "s" },
            self.signed_through
        )?;
        if let Some(h) = self.held {
            write!(f, "; the held checkpoint of {h} events matches")?;
        }
        if !self.problems.is_empty() {
            write!(f, "; stopped at the first problem")?;
        } else if self.crc_only() > 0 {
            write!(
                f,
                "; the last {} events are after the last checkpoint: protected by checksums only",
                self.crc_only()
            )?;
        }
        for p in &self.problems {
            write!(f, "\nPROBLEM: {p}")?;
        }
        Ok(())
    }
}

/// A root the tree must have at some size, and whose it is.
struct Expected {
    label: String,
    root: Hash,
    held: bool,
}

/// Reads the leaves of the stored node file in order.
struct StoredLeaves {
    reader: Option<std::io::BufReader<std::fs::File>>,
    /// Post-order index of the next node the reader yields.
    at: u64,
    /// Leaves the file holds.
    leaves: u64,
}

impl StoredLeaves {
    fn open(path: &Path) -> Self {
        let leaves = NodeFile::open(path, false)
            .and_then(|n| n.nodes())
            .map_or(0, merkle::size_for_nodes);
        let reader = std::fs::File::open(path)
            .ok()
            .map(|f| std::io::BufReader::with_capacity(1 << 20, f));
        StoredLeaves {
            reader,
            at: 0,
            leaves,
        }
    }

    /// The stored hash of leaf `position`, if the file holds it.
    fn leaf(&mut self, position: u64) -> Option<Hash> {
        if position >= self.leaves {
            return None;
        }
        let target = merkle::nodes_for(position);
        let reader = self.reader.as_mut()?;
        let mut hash = [0u8; 32];
        while self.at < target {
            reader.read_exact(&mut hash).ok()?;
            self.at += 1;
        }
        reader.read_exact(&mut hash).ok()?;
        self.at += 1;
        Some(hash)
    }
}

/// Checks the log in data directory `dir`; see the module docs.
/// `progress(bytes_done, bytes_total)` is called as it goes.
///
/// Errors (the check could not be made, as opposed to problems found):
/// no log in `dir`; a held checkpoint that does not parse or verify, or is
/// of another log ([`LogError::Checkpoint`]); no key to check with; I/O
/// errors.
pub(crate) fn verify_integrity(
    dir: &Path,
    options: &IntegrityOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<IntegrityReport, LogError> {
    let log_dir = dir.join("log");
    if !log_dir.is_dir() {
        return Err(LogError::io(
            format!("opening {}", log_dir.display()),
            std::io::Error::new(std::io::ErrorKind::NotFound, "no Casebook log there"),
        ));
    }
    let paths = TreePaths::new(dir);
    let verifier = match &options.key {
        Some(k) => k.clone(),
        None => {
            let text = std::fs::read_to_string(&paths.key)
                .map_err(|e| LogError::io(format!("reading {}", paths.key.display()), e))?;
            tree::parse_key_file(&text)?.verifier()
        }
    };
    let mut report = IntegrityReport {
        origin: Some(verifier.name().to_string()),
        ..IntegrityReport::default()
    };
    let problem = |what: String| IntegrityProblem {
        what,
        segment: None,
        offset: None,
        position: None,
        event_id: None,
    };

    // The roots the tree must have, by size.
    let mut expected: BTreeMap<u64, Vec<Expected>> = BTreeMap::new();
    let history = tree::read_history(&paths.history)?;
    for (at, e) in &history.unparsable {
        report.problems.push(problem(format!(
            "the checkpoint {at} bytes into {} does not parse: {e}",
            paths.history.display()
        )));
    }
    for (i, entry) in history.entries.iter().enumerate() {
        match entry.note.verify(&verifier) {
            Ok(c) => expected.entry(c.size).or_default().push(Expected {
                label: format!("checkpoint #{} (size {})", i + 1, c.size),
                root: c.root,
                held: false,
            }),
            Err(e) => report.problems.push(problem(format!(
                "checkpoint #{} in {}: {e}",
                i + 1,
                paths.history.display()
            ))),
        }
    }
    if let Some(text) = &options.held {
        let held = SignedCheckpoint::parse(text)?;
        let c = held.verify(&verifier)?;
        if c.origin != verifier.name() {
            return Err(crate::log::checkpoint::CheckpointError::Malformed(format!(
                "the held checkpoint is of log {}, not of this log ({})",
                c.origin,
                verifier.name()
            ))
            .into());
        }
        expected.entry(c.size).or_default().push(Expected {
            label: format!("the held checkpoint (size {})", c.size),
            root: c.root,
            held: true,
        });
    }
    if let Ok(entries) = std::fs::read_dir(paths.history.parent().unwrap_or(dir)) {
        let mut aside: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(tree::ASIDE))
            .collect();
        aside.sort();
        for name in aside {
            report.problems.push(problem(format!(
                "a checkpoint history was set aside when the log no longer matched it (checkpoints/{name}, see its WHY): the log was cut back, replaced or altered"
            )));
        }
    }

    let fs: Arc<dyn LogFs> = Arc::new(
        OsFs::new(&log_dir)
            .map_err(|e| LogError::io(format!("opening {}", log_dir.display()), e))?,
    );
    let numbers = fs
        .list()
        .map_err(|e| LogError::io("listing segment files", e))?;
    let segments = Segments::new(Arc::clone(&fs), 0);
    let mut total = 0u64;
    for &n in &numbers {
        let file = fs
            .open(n)
            .map_err(|e| LogError::io(format!("opening {}", fs.path(n).display()), e))?;
        total += file
            .len()
            .map_err(|e| LogError::io("reading a segment's length", e))?;
        segments.insert(n, file);
    }
    let mut stored = StoredLeaves::open(&paths.nodes);
    let mut frontier = Frontier::default();
    let mut completed = Vec::new();
    let mut leaves = Vec::new();
    let mut reader = RecordReader::new(&segments);
    let mut done = 0u64;
    let mut reported = 0u64;
    let mut end = None;
    'segments: for (i, &n) in numbers.iter().enumerate() {
        let path = fs.path(n);
        let at = |offset: u64, position: u64, what: String| IntegrityProblem {
            what,
            segment: Some(path.clone()),
            offset: Some(offset),
            position: Some(GlobalPosition(position)),
            event_id: None,
        };
        let expected_number = numbers[0] + i as u64;
        if n != expected_number {
            report.problems.push(at(
                0,
                frontier.size(),
                format!("segment {expected_number} is missing before this one"),
            ));
            break;
        }
        let file = segments.get(n)?;
        let mut header = [0u8; HEADER_LEN as usize];
        let got = file
            .read_at(&mut header, 0)
            .map_err(|e| LogError::io(format!("reading {}", path.display()), e))?;
        if let Err(reason) = segment::check_header(&header[..got], n) {
            report.problems.push(at(
                0,
                frontier.size(),
                format!("bad segment header: {reason}"),
            ));
            break;
        }
        let mut offset = HEADER_LEN;
        loop {
            match reader.scan_raw(n, offset)? {
                RawScanned::Record(body, next) => {
                    let position = frontier.size();
                    let describe = || segment::describe_body(&body);
                    if segment::first_position(&body) != Some(GlobalPosition(position)) {
                        let mut p = at(
                            offset,
                            position,
                            format!(
                                "the record says it starts at position {}, but {position} comes next: records were removed, inserted or reordered",
                                segment::first_position(&body)
                                    .map_or("(undecodable)".into(), |p| p.to_string())
                            ),
                        );
                        p.event_id = describe().and_then(|(_, ids)| ids.first().copied());
                        report.problems.push(p);
                        break 'segments;
                    }
                    leaves.clear();
                    if let Err(reason) = segment::leaf_hashes(&body, &mut leaves) {
                        report.problems.push(at(offset, position, reason));
                        break 'segments;
                    }
                    for (k, leaf) in leaves.iter().enumerate() {
                        let p = position + k as u64;
                        if let Some(s) = stored.leaf(p) {
                            if s != *leaf {
                                let mut problem = at(
                                    offset,
                                    p,
                                    "the event's bytes differ from the leaf the tree stored for it: it was altered after it was written".into(),
                                );
                                problem.event_id =
                                    describe().and_then(|(_, ids)| ids.get(k).copied());
                                report.problems.push(problem);
                                break 'segments;
                            }
                        }
                        frontier.push(*leaf, &mut completed);
                    }
                    completed.clear();
                    let size = frontier.size();
                    while let Some(entry) = expected.first_entry() {
                        let s = *entry.key();
                        if s > size {
                            break;
                        }
                        let checks = entry.remove();
                        for e in checks {
                            let found = if s == size {
                                (frontier.root() == e.root).then_some(())
                            } else {
                                None
                            };
                            match found {
                                Some(()) if e.held => report.held = Some(s),
                                Some(()) => {
                                    report.checkpoints += 1;
                                    report.signed_through = report.signed_through.max(s);
                                }
                                None => {
                                    let mut problem = at(
                                        offset,
                                        position,
                                        format!(
                                            "{} does not match the log: the events it signed were altered, removed or reordered (this record ends at size {size})",
                                            e.label
                                        ),
                                    );
                                    problem.event_id =
                                        describe().and_then(|(_, ids)| ids.first().copied());
                                    report.problems.push(problem);
                                    break 'segments;
                                }
                            }
                        }
                    }
                    done += next - offset;
                    offset = next;
                    end = Some((n, offset));
                    if done - reported >= 16 << 20 {
                        reported = done;
                        progress(done, total);
                    }
                }
                RawScanned::End => break,
                RawScanned::Damaged(reason) => {
                    let mut p = at(offset, frontier.size(), format!("damaged record: {reason}"));
                    if let Ok(Some(body)) = reader.body_unchecked(n, offset) {
                        p.event_id =
                            segment::describe_body(&body).and_then(|(_, ids)| ids.first().copied());
                    }
                    report.problems.push(p);
                    break 'segments;
                }
            }
        }
        done += HEADER_LEN;
    }
    report.events = frontier.size();
    report.bytes = total;
    report.root = frontier.root();
    if report.problems.is_empty() {
        for (s, checks) in expected {
            for e in checks {
                report.problems.push(IntegrityProblem {
                    what: format!(
                        "{} signed {s} events but the log holds only {}: events were removed from its end, or the log was rolled back",
                        e.label, report.events
                    ),
                    segment: end.map(|(n, _)| fs.path(n)),
                    offset: end.map(|(_, o)| o),
                    position: Some(GlobalPosition(report.events)),
                    event_id: None,
                });
            }
        }
    }
    progress(total, total);
    Ok(report)
}
