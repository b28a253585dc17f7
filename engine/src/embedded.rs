//! Opening the embedded sled databases (log index, snapshots, projections)
//! safely after a crash. All of them hold derived data only.

use std::path::{Path, PathBuf};
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
    /// sled refused to open.
    #[error("opening {}: {source}", .path.display())]
    Open {
        /// The database folder.
        path: PathBuf,
        /// sled's error.
        source: sled::Error,
    },
}

/// Opens the sled database in `dir`.
///
/// First removes the `snap.*.generating` files that a crash during a previous
/// open can leave, which make sled 0.34.7 refuse to open (upstream #1527).
/// Then, because sled 0.34 does not join its background threads when a Db is
/// dropped, its file lock can outlive a database closed a moment ago in this
/// process (upstream #1234): opening waits up to 10 s for it. Callers make
/// sure no live store uses `dir` (the data directory's LOCK file).
pub(crate) fn open_sled(dir: &Path, cache_bytes: u64) -> Result<sled::Db, OpenSledError> {
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
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .open()
        {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline =>
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_generating_snapshot_file_does_not_stop_an_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = open_sled(dir.path(), 1 << 20).unwrap();
            db.insert("k", "v").unwrap();
            db.flush().unwrap();
        }
        std::fs::write(
            dir.path().join("snap.000000000000AB.generating"),
            b"partial",
        )
        .unwrap();
        let db = open_sled(dir.path(), 1 << 20).unwrap();
        assert_eq!(db.get("k").unwrap().as_deref(), Some(&b"v"[..]));
        assert!(!dir.path().join("snap.000000000000AB.generating").exists());
    }
}
