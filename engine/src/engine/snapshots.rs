//! Snapshots of case state: derived data that makes loading a long-lived case
//! fast. The log stays the source of truth: a missing, stale or undecodable
//! snapshot only means a longer replay.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use super::error::EngineError;
use crate::log::{StreamId, StreamVersion};

/// Where snapshots live. Implementations must be cheap to call and may lose
/// data (after a crash, say) without harm. They report failures as
/// [`EngineError::SnapshotStore`] ([`EngineError::snapshot_store`]).
pub trait SnapshotStore: Send + Sync + 'static {
    /// The latest snapshot of `stream`: the version it reflects and its bytes.
    fn get(&self, stream: &StreamId) -> Result<Option<(StreamVersion, Vec<u8>)>, EngineError>;
    /// Stores a snapshot reflecting the stream up to `version`.
    fn put(
        &self,
        stream: &StreamId,
        version: StreamVersion,
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
}

impl SledSnapshots {
    /// Opens (or creates) the snapshot database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, EngineError> {
        crate::embedded::open_sled(dir, 16 * 1024 * 1024)
            .map(|db| SledSnapshots { db })
            .map_err(|e| EngineError::snapshot_store(format!("opening {}", dir.display()), e))
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
        let Some(v) = self
            .db
            .get(stream.to_string())
            .map_err(|e| EngineError::snapshot_store(format!("reading {stream}"), e))?
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
        bytes: Vec<u8>,
    ) -> Result<(), EngineError> {
        let mut value = Vec::with_capacity(8 + bytes.len());
        value.extend_from_slice(&version.0.to_be_bytes());
        value.extend_from_slice(&bytes);
        self.db
            .insert(stream.to_string(), value)
            .map(|_| ())
            .map_err(|e| EngineError::snapshot_store(format!("storing {stream}"), e))
    }
}
