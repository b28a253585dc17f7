//! Online backup and restore of a data directory's log, up to a signed
//! checkpoint.
//!
//! A backup reads only files, takes no lock and may run beside a serving
//! store. Its recovery point P is the latest signed checkpoint: its events
//! are synced, its root is signed, and history entries say where the log
//! ended at its size (segment, offset). Then: sealed segments before that
//! segment (immutable) are copied — in an incremental backup only those the
//! target's previous manifest does not already list with the same length
//! and hash —, the checkpoint's segment up to its offset, the checkpoint
//! history up to P, and the signing key; last, `MANIFEST`, a checkpoint
//! note of P and its root whose extension lines list every file with its
//! length and SHA-256, signed with the log's key. Derived state (index,
//! tree nodes, views) is not copied: it is rebuilt on open.
//!
//! A restore checks the manifest's signature and every file's length and
//! hash, copies into a temporary folder beside the target, recomputes the
//! tree there (it must hold exactly P events with the manifest's root),
//! and only then renames the folder into place: a refused restore writes
//! nothing to the target.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::integrity::{verify_integrity, IntegrityOptions};
use super::tree::{self, TreePaths};
use crate::log::checkpoint::{CheckpointError, CheckpointVerifier, SignedCheckpoint};
use crate::log::error::LogError;
use crate::log::merkle::Hash;

/// The manifest's file name in a backup folder.
pub(crate) const MANIFEST: &str = "MANIFEST";
const FILE: &str = "file ";

/// What a backup did.
#[derive(Debug, Clone)]
pub struct BackupReport {
    /// The recovery point: the backup holds the log's first `position`
    /// events (a signed checkpoint's size).
    pub events: u64,
    /// The tree's root at that size (the checkpoint's).
    pub root: Hash,
    /// Files copied.
    pub files_copied: usize,
    /// Files an earlier backup into the same folder already held.
    pub files_kept: usize,
    /// Bytes copied.
    pub bytes_copied: u64,
    /// How long it took.
    pub took: Duration,
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    /// Events restored (the backup's recovery point).
    pub events: u64,
    /// Their tree's root, recomputed and equal to the manifest's.
    pub root: Hash,
    /// Bytes restored.
    pub bytes: u64,
    /// How long copying and verifying took (views are rebuilt when the
    /// restored directory is first opened).
    pub took: Duration,
}

fn io(what: impl std::fmt::Display, path: &Path, e: std::io::Error) -> LogError {
    LogError::io(format!("{what} {}", path.display()), e)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Copies the first `len` bytes of `from` to `to` (through a temporary
/// file, synced, renamed); returns their SHA-256.
fn copy_prefix(from: &Path, to: &Path, len: u64) -> Result<[u8; 32], LogError> {
    let mut source = std::fs::File::open(from).map_err(|e| io("opening", from, e))?;
    let tmp = to.with_extension("part");
    let mut target = std::fs::File::create(&tmp).map_err(|e| io("creating", &tmp, e))?;
    let mut hasher = Sha256::new();
    let mut left = len;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let want = buf.len().min(left as usize);
        let n = source
            .read(&mut buf[..want])
            .map_err(|e| io("reading", from, e))?;
        if n == 0 {
            return Err(io(
                "reading",
                from,
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "shorter than expected"),
            ));
        }
        hasher.update(&buf[..n]);
        target
            .write_all(&buf[..n])
            .map_err(|e| io("writing", &tmp, e))?;
        left -= n as u64;
    }
    target.sync_all().map_err(|e| io("syncing", &tmp, e))?;
    std::fs::rename(&tmp, to).map_err(|e| io("renaming into", to, e))?;
    Ok(hasher.finalize().into())
}

/// The length and SHA-256 of a whole file.
fn hash_file(path: &Path) -> Result<(u64, [u8; 32]), LogError> {
    let mut file = std::fs::File::open(path).map_err(|e| io("opening", path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| io("reading", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((len, hasher.finalize().into()))
}

/// A manifest's file lines: (relative path, length, hex SHA-256).
fn manifest_files(note: &SignedCheckpoint) -> Result<Vec<(String, u64, String)>, LogError> {
    let bad = |m: String| LogError::Checkpoint(CheckpointError::Malformed(m));
    let mut files = Vec::new();
    for line in note.extensions() {
        let Some(rest) = line.strip_prefix(FILE) else {
            continue;
        };
        let parts: Vec<&str> = rest.split(' ').collect();
        let [path, len, hash] = parts[..] else {
            return Err(bad(format!(
                "manifest line {line:?} is not `file <path> <length> <sha256>`"
            )));
        };
        let len = len
            .parse()
            .map_err(|_| bad(format!("manifest line {line:?}: bad length")))?;
        if path.contains("..") || path.starts_with('/') || hash.len() != 64 {
            return Err(bad(format!("manifest line {line:?}: bad path or hash")));
        }
        files.push((path.to_string(), len, hash.to_string()));
    }
    Ok(files)
}

/// See the module docs. `data`: a store's data directory; `to`: the
/// backup folder (made if missing; an earlier backup there is built on).
pub(crate) fn backup(data: &Path, to: &Path) -> Result<BackupReport, LogError> {
    let started = Instant::now();
    let paths = TreePaths::new(data);
    let key_text = std::fs::read_to_string(&paths.key).map_err(|e| io("reading", &paths.key, e))?;
    let signer = tree::parse_key_file(&key_text)?;
    let history = tree::read_history(&paths.history)?;
    let Some(last) = history.entries.last().cloned() else {
        return Err(LogError::Integrity {
            reason: format!(
                "{} has no signed checkpoint yet to back up to (one is signed within a second of an append, and on close)",
                data.display()
            ),
        });
    };
    let checkpoint = last.note.verify(&signer.verifier())?.clone();
    let log_dir = data.join("log");
    let fs = super::fs::OsFs::new(&log_dir).map_err(|e| io("opening", &log_dir, e))?;
    use super::fs::LogFs;
    let numbers = fs.list().map_err(|e| io("listing", &log_dir, e))?;

    // What an earlier backup here holds, by path: (length, hash).
    let previous: std::collections::HashMap<String, (u64, String)> =
        std::fs::read_to_string(to.join(MANIFEST))
            .ok()
            .and_then(|t| SignedCheckpoint::parse(&t).ok())
            .filter(|n| n.verify(&signer.verifier()).is_ok())
            .and_then(|n| manifest_files(&n).ok())
            .map(|files| files.into_iter().map(|(p, l, h)| (p, (l, h))).collect())
            .unwrap_or_default();

    std::fs::create_dir_all(to.join("log")).map_err(|e| io("creating", &to.join("log"), e))?;
    std::fs::create_dir_all(to.join("checkpoints"))
        .map_err(|e| io("creating", &to.join("checkpoints"), e))?;
    let mut report = BackupReport {
        events: checkpoint.size,
        root: checkpoint.root,
        files_copied: 0,
        files_kept: 0,
        bytes_copied: 0,
        took: Duration::ZERO,
    };
    let mut lines = vec![format!("segment-end {} {}", last.segment, last.offset)];
    for &n in numbers.iter().filter(|&&n| n <= last.segment) {
        let source = fs.path(n);
        let name = source
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let rel = format!("log/{name}");
        let target = to.join(&rel);
        let len = if n == last.segment {
            last.offset
        } else {
            std::fs::metadata(&source)
                .map_err(|e| io("reading", &source, e))?
                .len()
        };
        let kept = previous
            .get(&rel)
            .filter(|(l, _)| *l == len && n < last.segment);
        let hash = match kept {
            Some((_, h)) if target.exists() => {
                report.files_kept += 1;
                h.clone()
            }
            _ => {
                let h = hex(&copy_prefix(&source, &target, len)?);
                report.files_copied += 1;
                report.bytes_copied += len;
                h
            }
        };
        lines.push(format!("{FILE}{rel} {len} {hash}"));
    }
    // The history as of P (later checkpoints are past the recovery point).
    let mut kept_history = Vec::new();
    for e in history
        .entries
        .iter()
        .filter(|e| e.note.checkpoint().size <= checkpoint.size)
    {
        kept_history.extend(tree::encode_entry(&e.note.note(), e.segment, e.offset));
    }
    for (rel, bytes, mode) in [
        ("checkpoints/history", kept_history, 0o644),
        ("checkpoints/latest", last.note.note().into_bytes(), 0o644),
        ("checkpoints/signing.key", key_text.into_bytes(), 0o600),
    ] {
        tree::write_atomically(&to.join(rel), &bytes, mode)?;
        lines.push(format!(
            "{FILE}{rel} {} {}",
            bytes.len(),
            hex(&Sha256::digest(&bytes))
        ));
        report.files_copied += 1;
        report.bytes_copied += bytes.len() as u64;
    }
    let manifest = signer.sign_with_extensions(&checkpoint, &lines);
    tree::write_atomically(&to.join(MANIFEST), manifest.note().as_bytes(), 0o644)?;
    report.took = started.elapsed();
    Ok(report)
}

/// See the module docs. `key`: the verifier key to check the manifest
/// with; `None`: the one in the backup (which proves the files are the
/// ones the backup listed, not whose they are).
pub(crate) fn restore(
    from: &Path,
    data: &Path,
    key: Option<&CheckpointVerifier>,
) -> Result<RestoreReport, LogError> {
    let started = Instant::now();
    let exists = |p: &Path| {
        std::fs::read_dir(p)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
    };
    if exists(data) {
        return Err(io(
            "restoring into",
            data,
            std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the target is not empty; restore into a new directory",
            ),
        ));
    }
    let manifest_path = from.join(MANIFEST);
    let text =
        std::fs::read_to_string(&manifest_path).map_err(|e| io("reading", &manifest_path, e))?;
    let note = SignedCheckpoint::parse(&text)?;
    let verifier = match key {
        Some(k) => k.clone(),
        None => {
            let path = from.join("checkpoints").join("signing.key");
            let text = std::fs::read_to_string(&path).map_err(|e| io("reading", &path, e))?;
            tree::parse_key_file(&text)?.verifier()
        }
    };
    let checkpoint = note.verify(&verifier)?.clone();
    let files = manifest_files(&note)?;
    let bad = |reason: String| LogError::Integrity { reason };
    for (rel, len, hash) in &files {
        let path = from.join(rel);
        let (found_len, found) = hash_file(&path)?;
        if found_len != *len || hex(&found) != *hash {
            return Err(bad(format!(
                "backup file {} is not the one the manifest lists ({found_len} bytes, expected {len}; its hash differs or it was altered)",
                path.display()
            )));
        }
    }
    let parent = data.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| io("creating", parent, e))?;
    let name = data
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    let staging = parent.join(format!(".{name}.restoring-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let result = (|| -> Result<RestoreReport, LogError> {
        let mut bytes = 0;
        for (rel, len, _) in &files {
            let target = staging.join(rel);
            if let Some(dir) = target.parent() {
                std::fs::create_dir_all(dir).map_err(|e| io("creating", dir, e))?;
            }
            copy_prefix(&from.join(rel), &target, *len)?;
            bytes += len;
        }
        {
            use std::os::unix::fs::PermissionsExt;
            let key = staging.join("checkpoints").join("signing.key");
            if key.exists() {
                std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| io("protecting", &key, e))?;
            }
        }
        let check = verify_integrity(
            &staging,
            &IntegrityOptions {
                held: None,
                key: Some(verifier.clone()),
            },
            &mut |_, _| {},
        )?;
        if !check.is_ok() {
            return Err(bad(format!("the restored log does not verify: {check}")));
        }
        if check.events != checkpoint.size || check.root != checkpoint.root {
            return Err(bad(format!(
                "the restored log holds {} events with another root than the manifest's {} events",
                check.events, checkpoint.size
            )));
        }
        Ok(RestoreReport {
            events: check.events,
            root: check.root,
            bytes,
            took: Duration::ZERO,
        })
    })();
    match result {
        Ok(mut report) => {
            if data.exists() {
                std::fs::remove_dir(data).map_err(|e| io("replacing the empty", data, e))?;
            }
            std::fs::rename(&staging, data).map_err(|e| io("moving the restore into", data, e))?;
            report.took = started.elapsed();
            Ok(report)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}
