//! Opening the embedded sled databases (log index, snapshots, projections)
//! safely after a crash. All of them hold derived data only.

use std::path::{Path, PathBuf};

use crate::log::DerivedRebuild;
use std::time::{Duration, Instant};

/// Why a sled database did not open.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenSledError {
    /// A stale `snap.*.generating` file could not be removed.
    #[error("removing stale {}: {source}", .path.display())]
    RemoveStale {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A damaged or stale database could not be set aside.
    #[error("setting {} aside: {source}", .path.display())]
    SetAside {
        /// The database folder.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// sled refused to open.
    #[error("opening {}: {source}", .path.display())]
    Open {
        /// The database folder.
        path: PathBuf,
        /// sled's error.
        source: sled::Error,
    },
}

/// The size of sled's log segments in every database made here.
///
/// sled's space on disk is its live data plus the old versions in segments
/// its cleaner has not yet rewritten; a segment is cleaned only once at most
/// half of it is live, and a node larger than a quarter of a segment is
/// written to a blob file of its own. With sled's default of 512 KiB, the
/// projections' database of a soak (issue 24) held about 10 times its live
/// data and the log index wrote its event-id pages and run summaries as
/// blobs. Measured on 2-minute soaks (projections on disk / log, index /
/// log): 512 KiB 3.71x / 0.58x, 128 KiB 4.05x / 0.49x, 4 MiB 2.61x / 0.48x.
pub(crate) const SEGMENT_BYTES: usize = 4 << 20;

/// The segment size of a new log index: sled's default. The index writes
/// event-id runs as values of up to a few hundred KiB and replaces them
/// wholesale when runs merge; with 512 KiB segments sled writes the nodes
/// holding them as blob files, removed as soon as they are replaced, where
/// 4 MiB segments kept them inline until the cleaner caught up (a 10-minute
/// soak: index 4.5 times its live data, 1.21 times the log).
pub(crate) const INDEX_SEGMENT_BYTES: usize = 512 << 10;

/// The segment size recorded in the `conf` file of the sled database in
/// `dir`, if there is one.
fn recorded_segment_size(dir: &Path) -> Option<usize> {
    // The file ends with a binary checksum.
    let conf = std::fs::read(dir.join("conf")).ok()?;
    String::from_utf8_lossy(&conf)
        .lines()
        .find_map(|l| l.strip_prefix("segment_size:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Opens the sled database in `dir` (`segment_bytes` segments if it is new,
/// its own size otherwise).
///
/// First removes the `snap.*.generating` files that a crash during a previous
/// open can leave, which make sled 0.34.7 refuse to open (upstream #1527).
/// Then, because sled 0.34 does not join its background threads when a Db is
/// dropped, its file lock can outlive a database closed a moment ago in this
/// process (upstream #1234): opening waits up to 10 s for it. Callers make
/// sure no live store uses `dir` (the data directory's LOCK file).
pub(crate) fn open_sled(
    dir: &Path,
    cache_bytes: u64,
    segment_bytes: usize,
) -> Result<sled::Db, OpenSledError> {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("snap.") && name.ends_with(".generating") {
                std::fs::remove_file(entry.path()).map_err(|source| {
                    OpenSledError::RemoveStale {
                        path: entry.path(),
                        source,
                    }
                })?;
            }
        }
    }
    // sled refuses to open a database with another segment size than the
    // one it was made with: an existing one keeps its own.
    let segment_size = recorded_segment_size(dir).unwrap_or(segment_bytes);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .segment_size(segment_size)
            .open()
        {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline
                    && !is_abandoned(dir) =>
            {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(source) => {
                return Err(OpenSledError::Open {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        }
    }
}

/// Opens the derived sled database in `dir` and `check`s it against the
/// log. If the check names a reason (the store is ahead of the log, or of
/// another log), or opening or checking fails — with an error, or with a
/// panic inside sled, caught here, its boundary — the database is set
/// aside for diagnosis ([`set_aside`]) and a fresh one opened, to be
/// rebuilt from the log; the returned [`DerivedRebuild`] says so.
///
/// A database locked by another process is not damaged: that error is
/// returned as it is.
///
/// Errors: [`OpenSledError`] if even a fresh database cannot be opened,
/// or the old one cannot be set aside.
pub(crate) fn open_derived(
    dir: &Path,
    cache_bytes: u64,
    segment_bytes: usize,
    store: &str,
    check: impl Fn(&sled::Db) -> Result<Option<String>, String>,
) -> Result<(sled::Db, Option<DerivedRebuild>), OpenSledError> {
    let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let db = open_sled(dir, cache_bytes, segment_bytes)?;
        let verdict = check(&db);
        Ok::<_, OpenSledError>((db, verdict))
    }));
    let reason = match attempt {
        Ok(Ok((db, Ok(None)))) => return Ok((db, None)),
        Ok(Ok((db, Ok(Some(reason))))) => {
            drop(db);
            reason
        }
        Ok(Ok((db, Err(damage)))) => {
            drop(db);
            format!("damaged: {damage}")
        }
        Ok(Err(e @ OpenSledError::RemoveStale { .. })) => return Err(e),
        Ok(Err(OpenSledError::Open { source, .. }))
            if source.to_string().contains("could not acquire lock") && take_abandoned(dir) =>
        {
            format!("abandoned by this process after a failed write ({source})")
        }
        Ok(Err(OpenSledError::Open { source, .. }))
            if source.to_string().contains("could not acquire lock") =>
        {
            return Err(OpenSledError::Open {
                path: dir.to_path_buf(),
                source,
            })
        }
        Ok(Err(e)) => format!("damaged: {e}"),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            format!("damaged: the storage library panicked opening it ({what})")
        }
    };
    let kept = set_aside(dir, &reason).map_err(|source| OpenSledError::SetAside {
        path: dir.to_path_buf(),
        source,
    })?;
    let db = open_sled(dir, cache_bytes, segment_bytes)?;
    Ok((
        db,
        Some(DerivedRebuild {
            store: store.to_string(),
            reason,
            set_aside: Some(kept),
        }),
    ))
}

/// sled databases this process had to leave open after a failed write
/// (dropping one would wait for ever): their files stay locked until the
/// process exits, so reopening one sets it aside instead of waiting.
static ABANDONED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Marks the sled database in `dir` as left open for ever by this process.
pub(crate) fn abandon(dir: &Path) {
    ABANDONED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(dir.to_path_buf());
}

/// Whether `dir` is a database this process abandoned: its lock is never
/// let go, so waiting for it is pointless.
fn is_abandoned(dir: &Path) -> bool {
    ABANDONED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .any(|d| d == dir)
}

/// Whether `dir` was abandoned (and forgets it: it is being set aside).
fn take_abandoned(dir: &Path) -> bool {
    let mut abandoned = ABANDONED.lock().unwrap_or_else(|p| p.into_inner());
    let before = abandoned.len();
    abandoned.retain(|d| d != dir);
    abandoned.len() != before
}

/// Sets the derived store in `dir` aside for diagnosis: renames it to
/// `<dir>.aside-<unix seconds>[-n]` with a `WHY` file saying `reason`, so
/// that a fresh store can be built in `dir` from the log. The old store's
/// sled handles must be dropped first (on Linux a rename works even while
/// sled's lingering threads hold its files).
///
/// Errors: the OS error of the rename.
pub(crate) fn set_aside(dir: &Path, reason: &str) -> std::io::Result<PathBuf> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let name = dir
        .file_name()
        .map_or_else(|| "store".into(), |n| n.to_string_lossy().into_owned());
    let mut target = dir.with_file_name(format!("{name}.aside-{secs}"));
    let mut n = 1;
    while target.exists() {
        target = dir.with_file_name(format!("{name}.aside-{secs}-{n}"));
        n += 1;
    }
    std::fs::rename(dir, &target)?;
    // The reason is for whoever looks at it later; failing to write it
    // must not stop the rebuild.
    let _ = std::fs::write(target.join("WHY"), format!("{reason}\n"));
    if let Some(parent) = dir.parent() {
        if let Ok(d) = std::fs::File::open(parent) {
            let _ = d.sync_all();
        }
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_made_with_another_segment_size_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::Config::new()
                .path(dir.path())
                .segment_size(512 * 1024)
                .open()
                .unwrap();
            db.insert("k", "v").unwrap();
            db.flush().unwrap();
        }
        assert_eq!(recorded_segment_size(dir.path()), Some(512 * 1024));
        let db = open_sled(dir.path(), 1 << 20, SEGMENT_BYTES).unwrap();
        assert_eq!(db.get("k").unwrap().unwrap(), "v");
        drop(db);
        let fresh = tempfile::tempdir().unwrap();
        drop(open_sled(fresh.path(), 1 << 20, SEGMENT_BYTES).unwrap());
        assert_eq!(recorded_segment_size(fresh.path()), Some(SEGMENT_BYTES));
    }

    #[test]
    fn a_stale_generating_snapshot_file_does_not_stop_an_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = open_sled(dir.path(), 1 << 20, SEGMENT_BYTES).unwrap();
            db.insert("k", "v").unwrap();
            db.flush().unwrap();
        }
        std::fs::write(
            dir.path().join("snap.000000000000AB.generating"),
            b"partial",
        )
        .unwrap();
        let db = open_sled(dir.path(), 1 << 20, SEGMENT_BYTES).unwrap();
        assert_eq!(db.get("k").unwrap().as_deref(), Some(&b"v"[..]));
        assert!(!dir.path().join("snap.000000000000AB.generating").exists());
    }
}
