//! The append-only event log: the source of truth for everything in Casebook.
//!
//! - [`types`]: validated identifiers ([`TenantId`], [`StreamId`], [`EventId`]),
//!   positions ([`StreamVersion`], [`GlobalPosition`]) and event shapes
//!   ([`EventData`] in, [`RecordedEvent`] out, with [`Metadata`] provenance).
//! - [`codec`]: the typed layer — [`codec::DomainEvent`] encodes into payloads
//!   with a format and schema version and decodes back.
//! - [`EventStore`]: the narrow storage trait, speaking in serialized events.
//! - [`Subscription`]: catch-up then live reading, built once on top of the trait.
//! - [`MemoryStore`]: in-memory, for tests and examples.
//! - [`LogStore`]: the embedded default — segment files with group commit as the
//!   source of truth, sled for derived indexes (module `file`).
//! - [`RecoveryReport`]: what opening cut, removed or rebuilt.
//! - `pg` (feature `postgres`): the same log on a shared PostgreSQL database,
//!   for N engine nodes.

mod append;
pub mod batch;
pub mod checkpoint;
pub mod codec;
mod error;
mod file;
mod memory;
pub mod merkle;
#[cfg(feature = "postgres")]
pub mod pg;
mod report;
mod subscription;
pub mod types;

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;

pub use append::Limits;
pub use batch::{EventBatch, EventRef};
/// Shared, cheaply cloned bytes: the payload of a [`RecordedEvent`].
pub use bytes::Bytes;
pub use error::{IdError, IndexStoreError, LogError};
pub use file::fs::{LogFs, OsFs, SegmentFile};
pub use file::{
    BackupReport, CheckpointConfig, IntegrityOptions, IntegrityProblem, IntegrityReport, LogStore,
    LogStoreConfig, RestoreReport,
};
pub use memory::MemoryStore;
pub use report::{DerivedRebuild, RecoveryReport};
pub use subscription::Subscription;
pub use types::{
    ActorId, AppendResult, CausationId, CorrelationId, Direction, EventData, EventId,
    ExpectedVersion, GlobalPosition, Metadata, RecordedEvent, Source, StreamId, StreamVersion,
    SubscriptionStart, TenantId, Timestamp,
};

/// An event store: appends with optimistic concurrency, reads and subscriptions.
///
/// Every implementation passes the same conformance suite (`tests/log_conformance.rs`).
/// Appends are all-or-nothing and, for durable stores, on stable storage before
/// they return. Every read is scoped to one tenant: a stream id carries its
/// tenant, and [`EventStore::read_all`] takes one.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends `events` to `stream` if its version matches `expected`.
    ///
    /// Returns the positions taken and the stream's new version. Appending
    /// events whose ids are all stored already, identically and in order,
    /// returns the original result and appends nothing.
    ///
    /// Errors: [`LogError::WrongExpectedVersion`]; limit errors
    /// ([`LogError::EmptyAppend`], [`LogError::TooManyEvents`],
    /// [`LogError::EventTooLarge`], [`LogError::InvalidEventType`],
    /// [`LogError::DuplicateEventId`]); [`LogError::EventIdConflict`] for a
    /// reused id; I/O failures ([`LogError::Io`], [`LogError::Failed`]).
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult, LogError>;

    /// Appends like [`EventStore::append`], but may answer once the events
    /// are written where a crash of the process cannot lose them, before
    /// they are on stable storage: a power cut within a short window
    /// (20 ms for the file store) may lose them. They become readable once
    /// synced; [`EventStore::sync_written`] syncs them at once. For records
    /// whose loss on a power cut is tolerable but whose every write must not
    /// wait for a sync — the audit of reads. Stores that always sync answer
    /// as `append` does.
    ///
    /// Errors: as [`EventStore::append`].
    async fn append_written(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult, LogError> {
        self.append(stream, expected, events).await
    }

    /// Syncs every append answered by [`EventStore::append_written`] so
    /// far and makes it readable.
    ///
    /// Errors: I/O failures ([`LogError::Io`], [`LogError::Failed`]),
    /// [`LogError::Closed`].
    async fn sync_written(&self) -> Result<(), LogError> {
        Ok(())
    }

    /// Reads up to `limit` events of a stream, starting at version `from`
    /// (inclusive) and going in `direction`. Use [`StreamVersion::START`]
    /// forwards or [`StreamVersion::END`] backwards for the whole stream.
    /// An unknown stream reads as empty.
    ///
    /// Errors: [`LogError::InvalidLimit`], [`LogError::Corrupted`], I/O.
    async fn read_stream(
        &self,
        stream: &StreamId,
        direction: Direction,
        from: StreamVersion,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, LogError>;

    /// Reads up to `limit` of `tenant`'s events at global position `from` or
    /// later, in log order. Other tenants' events are never returned.
    ///
    /// Errors: [`LogError::InvalidLimit`], [`LogError::Corrupted`], I/O.
    async fn read_all(
        &self,
        tenant: &TenantId,
        from: GlobalPosition,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, LogError>;

    /// Like [`EventStore::read_all`], as an [`EventBatch`] whose events are
    /// decoded as they are visited — the cheapest way to replay the log.
    /// Stores without a zero-copy path hand back what `read_all` reads.
    ///
    /// Errors: as [`EventStore::read_all`].
    async fn read_all_batch(
        &self,
        tenant: &TenantId,
        from: GlobalPosition,
        limit: usize,
    ) -> Result<EventBatch, LogError> {
        Ok(EventBatch::from_events(
            self.read_all(tenant, from, limit).await?,
        ))
    }

    /// The event with id `id`, wherever it is stored, or `None` if no event
    /// has it. This is how a retried command finds what its first attempt
    /// appended (command ids derive event ids deterministically). Callers
    /// check the event's stream: the id space is the whole store's.
    ///
    /// Errors: [`LogError::Corrupted`], I/O.
    async fn read_event(&self, id: EventId) -> Result<Option<RecordedEvent>, LogError>;

    /// The version of the stream's last event, or `None` if it has none.
    async fn stream_version(&self, stream: &StreamId) -> Result<Option<StreamVersion>, LogError>;

    /// The position of the last acknowledged event in the whole log.
    fn head_position(&self) -> Option<GlobalPosition>;

    /// What tells this log apart from another: the id of its first event
    /// (`None` while it is empty, or for a store that cannot tell). A
    /// derived store records it beside its checkpoints, so that views built
    /// from another log are noticed at open; an older copy of the same log
    /// has the same identity and is noticed by its shorter head.
    fn identity(&self) -> Option<EventId> {
        None
    }

    /// A receiver that changes after every commit (to the new head position).
    fn watch_head(&self) -> watch::Receiver<Option<GlobalPosition>>;

    /// The limits this store enforces.
    fn limits(&self) -> Limits;

    /// A shared handle to this store, for subscriptions.
    fn to_dyn(&self) -> Arc<dyn EventStore>;

    /// Subscribes to all of `tenant`'s events: catch-up from `start`, then live.
    ///
    /// No event is missed or delivered twice across the switch to live; the
    /// subscription reads a page at a time as the consumer asks, so a slow
    /// consumer only falls behind and never makes the store buffer for it.
    async fn subscribe_all(
        &self,
        tenant: TenantId,
        start: SubscriptionStart<GlobalPosition>,
    ) -> Result<Subscription, LogError> {
        let from = match start {
            SubscriptionStart::Beginning => GlobalPosition::START,
            SubscriptionStart::After(p) => p.next(),
            SubscriptionStart::End => self
                .head_position()
                .map_or(GlobalPosition::START, GlobalPosition::next),
        };
        Ok(Subscription::all(self.to_dyn(), tenant, from))
    }

    /// Subscribes to one stream: catch-up from `start`, then live.
    async fn subscribe_stream(
        &self,
        stream: StreamId,
        start: SubscriptionStart<StreamVersion>,
    ) -> Result<Subscription, LogError> {
        let from = match start {
            SubscriptionStart::Beginning => StreamVersion::START,
            SubscriptionStart::After(v) => v.next(),
            SubscriptionStart::End => self
                .stream_version(&stream)
                .await?
                .map_or(StreamVersion::START, StreamVersion::next),
        };
        Ok(Subscription::stream(self.to_dyn(), stream, from))
    }
}
