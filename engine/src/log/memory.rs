//! [`MemoryStore`]: an in-memory [`EventStore`] for tests and examples.
//!
//! It follows exactly the same rules as the durable store (it shares their
//! implementation in `append`) but keeps nothing across process restarts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::sync::watch;

use super::append::{check_expected, find_duplicate, Limits};
use super::error::LogError;
use super::types::{
    AppendResult, Direction, EventData, EventId, ExpectedVersion, GlobalPosition, RecordedEvent,
    StreamId, StreamVersion, TenantId,
};
use super::EventStore;
use crate::time::Clock;

/// An in-memory event store. Cheap to clone; clones share the same events.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    head: watch::Sender<Option<GlobalPosition>>,
    limits: Limits,
    clock: Arc<dyn Clock>,
}

#[derive(Default)]
struct State {
    events: Vec<RecordedEvent>,
    streams: HashMap<StreamId, Vec<u64>>,
    tenants: HashMap<TenantId, Vec<u64>>,
    ids: HashMap<EventId, u64>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store with default [`Limits`].
    pub fn new() -> Self {
        Self::with_limits(Limits::default())
    }

    /// An empty store with the given limits.
    pub fn with_limits(limits: Limits) -> Self {
        Self::with_limits_and_clock(limits, crate::time::system_clock())
    }

    /// An empty store with default limits whose `recorded` stamps come from `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self::with_limits_and_clock(Limits::default(), clock)
    }

    /// An empty store with the given limits and clock.
    pub fn with_limits_and_clock(limits: Limits, clock: Arc<dyn Clock>) -> Self {
        MemoryStore {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                head: watch::channel(None).0,
                limits,
                clock,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave half an append behind
        // (appends mutate only after every check), so a poisoned lock is usable.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult, LogError> {
        self.inner.limits.check_append(stream, &events)?;
        let mut state = self.state();
        let existing = find_duplicate(stream, &events, |id| {
            Ok(state
                .ids
                .get(&id)
                .map(|p| state.events[*p as usize].clone()))
        })?;
        if let Some(original) = existing {
            return Ok(original);
        }
        let actual = state
            .streams
            .get(stream)
            .map(|v| StreamVersion(v.len() as u64 - 1));
        check_expected(stream, expected, actual)?;

        let recorded = self.inner.clock.now();
        let first_version = actual.map_or(StreamVersion::START, StreamVersion::next);
        let first_position = GlobalPosition(state.events.len() as u64);
        let count = events.len() as u64;
        for (i, data) in events.into_iter().enumerate() {
            let position = first_position.0 + i as u64;
            state.ids.insert(data.id, position);
            state
                .streams
                .entry(stream.clone())
                .or_default()
                .push(position);
            state
                .tenants
                .entry(stream.tenant().clone())
                .or_default()
                .push(position);
            state.events.push(RecordedEvent::from_data(
                stream.clone(),
                StreamVersion(first_version.0 + i as u64),
                GlobalPosition(position),
                recorded,
                data,
            ));
        }
        let last_position = GlobalPosition(first_position.0 + count - 1);
        drop(state);
        self.inner.head.send_replace(Some(last_position));
        Ok(AppendResult {
            first_position,
            last_position,
            version: StreamVersion(first_version.0 + count - 1),
        })
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        direction: Direction,
        from: StreamVersion,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        self.inner.limits.check_read(limit)?;
        let state = self.state();
        let Some(positions) = state.streams.get(stream) else {
            return Ok(Vec::new());
        };
        let len = positions.len() as u64;
        let picked: Vec<u64> = match direction {
            Direction::Forward => {
                let start = from.0.min(len) as usize;
                positions[start..].iter().take(limit).copied().collect()
            }
            Direction::Backward => {
                let end = from.0.saturating_add(1).min(len) as usize;
                positions[..end].iter().rev().take(limit).copied().collect()
            }
        };
        Ok(picked
            .into_iter()
            .map(|p| state.events[p as usize].clone())
            .collect())
    }

    async fn read_all(
        &self,
        tenant: &TenantId,
        from: GlobalPosition,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        self.inner.limits.check_read(limit)?;
        let state = self.state();
        let Some(positions) = state.tenants.get(tenant) else {
            return Ok(Vec::new());
        };
        let start = positions.partition_point(|p| *p < from.0);
        Ok(positions[start..]
            .iter()
            .take(limit)
            .map(|p| state.events[*p as usize].clone())
            .collect())
    }

    async fn read_event(&self, id: EventId) -> Result<Option<RecordedEvent>, LogError> {
        let state = self.state();
        Ok(state
            .ids
            .get(&id)
            .and_then(|&p| state.events.get(p as usize))
            .cloned())
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Option<StreamVersion>, LogError> {
        Ok(self
            .state()
            .streams
            .get(stream)
            .map(|v| StreamVersion(v.len() as u64 - 1)))
    }

    fn head_position(&self) -> Option<GlobalPosition> {
        *self.inner.head.borrow()
    }

    fn identity(&self) -> Option<EventId> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .events
            .first()
            .map(|e| e.id)
    }

    fn watch_head(&self) -> watch::Receiver<Option<GlobalPosition>> {
        self.inner.head.subscribe()
    }

    fn limits(&self) -> Limits {
        self.inner.limits
    }

    fn to_dyn(&self) -> Arc<dyn EventStore> {
        Arc::new(self.clone())
    }
}
