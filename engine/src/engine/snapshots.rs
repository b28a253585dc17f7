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
}

/// Snapshots in a sled database beside the log (`<data>/snapshots`).
pub struct SledSnapshots {
    db: sled::Db,
    rebuilt: Option<DerivedRebuild>,
}

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
        if let Some(id) = log.identity() {
            db.insert(LOG_IDENTITY_KEY, id.0.as_bytes()).map_err(|e| {
                EngineError::snapshot_store(format!("opening {}", dir.display()), e)
            })?;
        }
        Ok(SledSnapshots { db, rebuilt })
    }

    /// Whether opening discarded the snapshots (ahead of the log, or of
    /// another log), and why.
    pub fn rebuilt_at_open(&self) -> Option<&DerivedRebuild> {
        self.rebuilt.as_ref()
    }

    /// Flushes to disk (at close).
    pub async fn flush(&self) -> Result<(), EngineError> {
        self.db
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
        let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.db.get(stream.to_string())
        }))
        .map_err(|_| {
            EngineError::snapshot_store(format!("reading {stream}"), "the storage library panicked")
        })?;
        let Some(v) =
            read.map_err(|e| EngineError::snapshot_store(format!("reading {stream}"), e))?
        else {
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
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // The high-water mark first: a crash between the two leaves it
            // higher than needed (harmless), never lower than a snapshot.
            self.db
                .fetch_and_update(HIGH_WATER_KEY, |old| {
                    let old = old.and_then(decode_position);
                    let high = old.map_or(position, |o| o.max(position));
                    Some(high.0.to_be_bytes().to_vec())
                })
                .map_err(|e| EngineError::snapshot_store("storing the high-water mark", e))?;
            self.db
                .insert(stream.to_string(), value)
                .map(|_| ())
                .map_err(|e| EngineError::snapshot_store(format!("storing {stream}"), e))
        }))
        .unwrap_or_else(|_| {
            Err(EngineError::snapshot_store(
                format!("storing {stream}"),
                "the storage library panicked",
            ))
        })
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
