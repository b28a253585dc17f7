//! [`RecoveryReport`]: what opening a store had to do to the log and to the
//! stores derived from it — told, never silent.

use std::fmt;
use std::path::PathBuf;

use super::types::GlobalPosition;

/// What an open (or [`LogStore::verify`](super::LogStore::verify)) found
/// and did: bytes cut from the log's tail, segments removed, derived stores
/// rebuilt. Empty ([`RecoveryReport::is_clean`]) after a clean shutdown.
/// Its `Display` is the text `casebook verify` prints and the engine logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Bytes cut from the end of the last segment: a torn last group
    /// commit (written, never synced, so never acknowledged), or a damaged
    /// last record that cannot be told apart from one.
    pub tail_bytes_cut: u64,
    /// Records (appends) whose frames were found in the cut bytes, the
    /// damaged one included.
    pub tail_records_cut: u64,
    /// Why the tail was cut (the first damage found), if it was.
    pub tail_reason: Option<String>,
    /// Segment files removed: a last segment whose header never reached the
    /// disk.
    pub segments_removed: Vec<PathBuf>,
    /// The log's head after recovery.
    pub head: Option<GlobalPosition>,
    /// Events indexed again from the log at open (those after the index's
    /// marker, or all of them when the index was rebuilt).
    pub events_reindexed: u64,
    /// Derived stores rebuilt from the log, and why.
    pub rebuilt: Vec<DerivedRebuild>,
}

/// A derived store (log index, projections, snapshots) that opening found
/// unusable and rebuilds from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerivedRebuild {
    /// Which store: `index`, `projections` or `snapshots`.
    pub store: String,
    /// Why: ahead of the log, built from another log, damaged.
    pub reason: String,
    /// Where the old store was set aside for diagnosis (renamed), if it
    /// was kept.
    pub set_aside: Option<PathBuf>,
}

impl RecoveryReport {
    /// Whether nothing was cut, removed or rebuilt (re-indexing the events
    /// after the index's marker is ordinary work, not repair).
    pub fn is_clean(&self) -> bool {
        self.tail_bytes_cut == 0 && self.segments_removed.is_empty() && self.rebuilt.is_empty()
    }
}

impl fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.head {
            Some(h) => write!(f, "log head at position {h}")?,
            None => write!(f, "log empty")?,
        }
        if self.tail_bytes_cut > 0 {
            write!(
                f,
                "; cut {} bytes ({} record{}) from the tail",
                self.tail_bytes_cut,
                self.tail_records_cut,
                if self.tail_records_cut == 1 { "" } else { "s" }
            )?;
            if let Some(r) = &self.tail_reason {
                write!(f, " ({r})")?;
            }
        }
        for s in &self.segments_removed {
            write!(f, "; removed half-created segment {}", s.display())?;
        }
        if self.events_reindexed > 0 {
            write!(f, "; re-indexed {} events", self.events_reindexed)?;
        }
        for r in &self.rebuilt {
            write!(f, "; rebuilding {}: {}", r.store, r.reason)?;
            if let Some(p) = &r.set_aside {
                write!(f, " (old store kept at {})", p.display())?;
            }
        }
        Ok(())
    }
}
