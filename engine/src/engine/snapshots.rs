//! Snapshots of case state: derived data that makes loading a long-lived case
//! fast. The log stays the source of truth: a missing, stale or undecodable
//! snapshot only means a longer replay.
//!
//! A snapshot must never be ahead of the log: after the log is cut back or
//! replaced by an older copy, a snapshot of a version the log no longer
//! holds would bring back events that are gone, and new events would later
//! reuse its versions. So the sled store keeps, beside the snapshots, the
//! identity of the log they came from and the highest global position any
//! of them reflects; at open, snapshots from another log or past the head
//! are all discarded (the database is set aside and started afresh).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use super::error::EngineError;
use crate::log::{DerivedRebuild, EventStore, GlobalPosition, StreamId, StreamVersion};

/// Key of the identity of the log the snapshots come from (stream keys
/// never start with a zero byte).
const LOG_IDENTITY_KEY: &[u8] = b"\0log";
/// Key of the highest global position a stored snapshot reflects.
const HIGH_WATER_KEY: &[u8] = b"\0high";

/// Where snapshots live. Implementations must be cheap to call and may lose
/// data (after a crash, say) without harm. They report failures as
/// [`EngineError::SnapshotStore`] ([`EngineError::snapshot_store`]).
pub trait SnapshotStore: Send + Sync + 'static {
    /// The latest snapshot of `stream`: the version it reflects and its bytes.
    fn get(&self, stream: &StreamId) -> Result<Option<(StreamVersion, Vec<u8>)>, EngineError>;
    /// Stores a snapshot reflecting the stream up to `version`, the event
    /// at global `position`.
    fn put(
        &self,
        stream: &StreamId,
        version: StreamVersion,
        position: GlobalPosition,
        bytes: Vec<u8>,
    ) -> Result<(), EngineError>;
    /// Drops every snapshot for good, leaving none of their bytes behind
    /// (an erasure: snapshots hold case files in the clear). Blocking.
    ///
    /// Errors: [`EngineError::SnapshotStore`].
    fn purge(&self) -> Result<(), EngineError>;
}

/// Snapshots in memory (for in-memory engines and tests).
#[derive(Default)]
pub struct MemorySnapshots {
    map: Mutex<HashMap<StreamId, (StreamVersion, Vec<u8>)>>,
}

impl SnapshotStore for MemorySnapshots {
    fn get(&self, stream: &StreamId) -> Result<Option<(StreamVersion, Vec<u8>)>, EngineError> {
        Ok(self
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(stream)
            .cloned())
    }

    fn put(
        &self,
        stream: &StreamId,
        version: StreamVersion,
        _position: GlobalPosition,
        bytes: Vec<u8>,
    ) -> Result<(), EngineError> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(stream.clone(), (version, bytes));
        Ok(())
    }

    fn purge(&self) -> Result<(), EngineError> {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).clear();
        Ok(())
    }
}

/// Snapshots in a sled database beside the log (`<data>/snapshots`).
///
/// A database that fails a read or a write while the engine runs (damage,
/// sled failing or panicking on it, sled taking no write after one failed)
/// is set aside and replaced by an empty one at once: snapshots are a
/// cache, so the cost is longer replays until new ones are taken.
pub struct SledSnapshots {
    db: std::sync::RwLock<sled::Db>,
    dir: std::path::PathBuf,
    cache_bytes: u64,
    /// The identity of the log, written into a replacement.
    identity: Option<Vec<u8>>,
    rebuilt: Option<DerivedRebuild>,
    /// Replacements made while the engine ran, and when the last was.
    replaced: Mutex<(Vec<DerivedRebuild>, Option<std::time::Instant>)>,
}

/// How often, at most, a failing snapshot database is replaced.
const REPLACE_AT_MOST_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

impl SledSnapshots {
    /// Opens (or creates) the snapshot database in `dir` for the snapshots
    /// of `log`'s streams. A database built from another log, holding a
    /// snapshot past `log`'s head, or damaged (sled failing or panicking as
    /// it opens), is set aside and started afresh
    /// ([`SledSnapshots::rebuilt_at_open`] says so).
    ///
    /// Errors: [`EngineError::SnapshotStore`] if it cannot be opened or set
    /// aside.
    pub fn open(dir: &Path, log: &dyn EventStore) -> Result<Self, EngineError> {
        Self::open_with_cache(dir, log, 16 * 1024 * 1024)
    }

    /// [`SledSnapshots::open`] keeping up to `cache_bytes` of it in sled's
    /// page cache.
    ///
    /// Errors: as [`SledSnapshots::open`].
    pub fn open_with_cache(
        dir: &Path,
        log: &dyn EventStore,
        cache_bytes: u64,
    ) -> Result<Self, EngineError> {
        let (db, rebuilt) = crate::embedded::open_derived(
            dir,
            cache_bytes,
            crate::embedded::SEGMENT_BYTES,
            "snapshots",
            |db| not_from_this_log(db, log).map_err(|e| e.to_string()),
        )
        .map_err(|e| EngineError::snapshot_store(format!("opening {}", dir.display()), e))?;
        let identity = log.identity().map(|id| id.0.as_bytes().to_vec());
        if let Some(id) = &identity {
            db.insert(LOG_IDENTITY_KEY, id.as_slice()).map_err(|e| {
                EngineError::snapshot_store(format!("opening {}", dir.display()), e)
            })?;
        }
        Ok(SledSnapshots {
            db: std::sync::RwLock::new(db),
            dir: dir.to_path_buf(),
            cache_bytes,
            identity,
            rebuilt,
            replaced: Mutex::default(),
        })
    }

    fn db(&self) -> sled::Db {
        self.db.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The replacements made while the engine ran, oldest first.
    pub fn replaced(&self) -> Vec<DerivedRebuild> {
        self.replaced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    /// Sets the database aside (with a `WHY` file saying `reason`) and
    /// opens an empty one in its place, at most once per
    /// [`REPLACE_AT_MOST_EVERY`]. The old handle is never dropped: sled
    /// waits for ever in its drop after a failed write. If no fresh
    /// database can be made (a disk still full), the old one is put back.
    /// Blocking I/O: called where snapshots are read and written, off the
    /// async workers.
    fn replace(&self, reason: &str) {
        let mut replaced = self.replaced.lock().unwrap_or_else(|p| p.into_inner());
        if replaced
            .1
            .is_some_and(|at| at.elapsed() < REPLACE_AT_MOST_EVERY)
        {
            return;
        }
        replaced.1 = Some(std::time::Instant::now());
        let Ok(kept) = crate::embedded::set_aside(&self.dir, reason) else {
            return;
        };
        let fresh =
            crate::embedded::open_sled(&self.dir, self.cache_bytes, crate::embedded::SEGMENT_BYTES)
                .map_err(|e| e.to_string())
                .and_then(|db| match &self.identity {
                    Some(id) => db
                        .insert(LOG_IDENTITY_KEY, id.as_slice())
                        .map(|_| db)
                        .map_err(|e| e.to_string()),
                    None => Ok(db),
                });
        match fresh {
            Ok(db) => {
                let old =
                    std::mem::replace(&mut *self.db.write().unwrap_or_else(|p| p.into_inner()), db);
                std::mem::forget(old);
                tracing::warn!(
                    target: "casebook::recovery",
                    set_aside = %kept.display(),
                    "the snapshot database failed ({reason}); it was set aside and replaced by an empty one"
                );
                replaced.0.push(DerivedRebuild {
                    store: "snapshots".into(),
                    reason: reason.to_string(),
                    set_aside: Some(kept),
                });
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&self.dir);
                let _ = std::fs::rename(&kept, &self.dir);
                tracing::error!(target: "casebook::recovery", "replacing the failing snapshot database: {e}");
            }
        }
    }

    /// Moves the database to `<dir>.purging`, opens an empty one in its
    /// place, closes the old one and deletes its folder: sled never
    /// overwrites a dropped key's old bytes in place, so deleting entries
    /// would not erase them.
    fn purge_files(&self) -> Result<(), EngineError> {
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            EngineError::snapshot_store(
                format!("purging {}: {what}", self.dir.display()),
                e.to_string(),
            )
        };
        let mut old_dir = self.dir.clone().into_os_string();
        old_dir.push(".purging");
        let old_dir = std::path::PathBuf::from(old_dir);
        let _ = std::fs::remove_dir_all(&old_dir);
        let mut slot = self.db.write().unwrap_or_else(|p| p.into_inner());
        std::fs::rename(&self.dir, &old_dir).map_err(|e| failed("moving it aside", &e))?;
        let fresh =
            crate::embedded::open_sled(&self.dir, self.cache_bytes, crate::embedded::SEGMENT_BYTES)
                .map_err(|e| failed("opening an empty one", &e))?;
        if let Some(id) = &self.identity {
            fresh
                .insert(LOG_IDENTITY_KEY, id.as_slice())
                .map_err(|e| failed("opening an empty one", &e))?;
        }
        let old = std::mem::replace(&mut *slot, fresh);
        drop(slot);
        drop(old);
        std::fs::remove_dir_all(&old_dir).map_err(|e| failed("deleting the old one", &e))
    }

    /// Whether opening discarded the snapshots (ahead of the log, or of
    /// another log), and why.
    pub fn rebuilt_at_open(&self) -> Option<&DerivedRebuild> {
        self.rebuilt.as_ref()
    }

    /// Flushes to disk (at close).
    pub async fn flush(&self) -> Result<(), EngineError> {
        self.db()
            .flush_async()
            .await
            .map(|_| ())
            .map_err(|e| EngineError::snapshot_store("flushing", e))
    }
}

impl SnapshotStore for SledSnapshots {
    fn get(&self, stream: &StreamId) -> Result<Option<(StreamVersion, Vec<u8>)>, EngineError> {
        // A damaged database may make sled panic on a read: caught here, at
        // its boundary, it is a failed read (a longer replay), not a crash.
        let db = self.db();
        let read =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| db.get(stream.to_string())));
        let read = match read {
            Ok(Ok(read)) => read,
            Ok(Err(e)) => {
                self.replace(&format!("damaged: reading {stream}: {e}"));
                return Err(EngineError::snapshot_store(format!("reading {stream}"), e));
            }
            Err(_) => {
                self.replace(&format!(
                    "damaged: the storage library panicked reading {stream}"
                ));
                return Err(EngineError::snapshot_store(
                    format!("reading {stream}"),
                    "the storage library panicked",
                ));
            }
        };
        let Some(v) = read else {
            return Ok(None);
        };
        if v.len() < 8 {
            return Ok(None);
        }
        let version = u64::from_be_bytes(v[..8].try_into().unwrap_or_default());
        Ok(Some((StreamVersion(version), v[8..].to_vec())))
    }

    fn put(
        &self,
        stream: &StreamId,
        version: StreamVersion,
        position: GlobalPosition,
        bytes: Vec<u8>,
    ) -> Result<(), EngineError> {
        let mut value = Vec::with_capacity(8 + bytes.len());
        value.extend_from_slice(&version.0.to_be_bytes());
        value.extend_from_slice(&bytes);
        let db = self.db();
        let stored = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // The high-water mark first: a crash between the two leaves it
            // higher than needed (harmless), never lower than a snapshot.
            db.fetch_and_update(HIGH_WATER_KEY, |old| {
                let old = old.and_then(decode_position);
                let high = old.map_or(position, |o| o.max(position));
                Some(high.0.to_be_bytes().to_vec())
            })
            .map_err(|e| EngineError::snapshot_store("storing the high-water mark", e))?;
            db.insert(stream.to_string(), value)
                .map(|_| ())
                .map_err(|e| EngineError::snapshot_store(format!("storing {stream}"), e))
        }))
        .unwrap_or_else(|_| {
            Err(EngineError::snapshot_store(
                format!("storing {stream}"),
                "the storage library panicked",
            ))
        });
        if let Err(e) = &stored {
            // sled takes no write after one failed: an empty database
            // in its place lets snapshots be taken again.
            self.replace(&format!("failed: {e}"));
        }
        stored
    }

    fn purge(&self) -> Result<(), EngineError> {
        self.purge_files()
    }
}

fn decode_position(bytes: &[u8]) -> Option<GlobalPosition> {
    Some(GlobalPosition(u64::from_be_bytes(bytes.try_into().ok()?)))
}

/// Why the snapshots in `db` cannot serve `log`, if they cannot: taken from
/// another log, past its head, or of unknown height (a database written
/// before the high-water mark was kept, holding snapshots).
fn not_from_this_log(db: &sled::Db, log: &dyn EventStore) -> Result<Option<String>, sled::Error> {
    if let (Some(stored), Some(id)) = (db.get(LOG_IDENTITY_KEY)?, log.identity()) {
        if stored.as_ref() != id.0.as_bytes() {
            return Ok(Some("taken from another log".into()));
        }
    }
    let head = log.head_position();
    match db.get(HIGH_WATER_KEY)?.as_deref().map(decode_position) {
        Some(Some(high)) if head.is_none_or(|h| high > h) => Ok(Some(format!(
            "a snapshot (of position {high}) is past the log's head ({})",
            head.map_or_else(|| "empty".to_string(), |h| format!("position {h}"))
        ))),
        Some(Some(_)) => Ok(None),
        Some(None) => Ok(Some("the high-water mark does not decode".into())),
        None => {
            let any_snapshot = db
                .iter()
                .keys()
                .any(|k| k.is_ok_and(|k| !k.starts_with(b"\0")));
            Ok(any_snapshot.then(|| "snapshots of unknown position (an older format)".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{MemoryStore, TenantId};

    #[test]
    fn a_failing_database_is_set_aside_and_snapshots_go_on_in_a_fresh_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshots");
        let log = MemoryStore::new();
        let store = SledSnapshots::open(&path, &log).unwrap();
        let stream = StreamId::new(TenantId::new("kent").unwrap(), "case", "I-1").unwrap();
        store
            .put(
                &stream,
                StreamVersion(3),
                GlobalPosition(7),
                b"state".to_vec(),
            )
            .unwrap();
        assert!(store.get(&stream).unwrap().is_some());

        store.replace("damaged: a test");
        // The old database is kept for diagnosis, with the reason.
        let replaced = store.replaced();
        assert_eq!(replaced.len(), 1);
        let kept = replaced[0].set_aside.clone().unwrap();
        assert_eq!(
            std::fs::read_to_string(kept.join("WHY")).unwrap(),
            "damaged: a test\n"
        );
        // The fresh one holds no snapshot (a replay), and takes new ones.
        assert_eq!(store.get(&stream).unwrap(), None);
        store
            .put(
                &stream,
                StreamVersion(4),
                GlobalPosition(9),
                b"later".to_vec(),
            )
            .unwrap();
        assert_eq!(
            store.get(&stream).unwrap(),
            Some((StreamVersion(4), b"later".to_vec()))
        );
        // Not again at once: damage a rebuild brings back is a defect to
        // report, not a loop.
        store.replace("damaged: again");
        assert_eq!(store.replaced().len(), 1);
    }
}
