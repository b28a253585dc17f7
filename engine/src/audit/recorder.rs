//! The audit recorder: one task per engine that batches entries, appends them (one append per tenant and day per batch) and wakes each waiting reader once its entry is durable.
//!
//! Readers hand their entry over a bounded tokio channel ([`super::QUEUE`])
//! with a oneshot for the answer; the task takes every entry queued
//! while it was writing (up to [`super::MAX_BATCH`]), so batches grow with
//! the load and a lone reader never waits for company. Groups are appended
//! concurrently, so the log's group commit syncs them together. Nothing
//! here blocks a runtime thread.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{AuditEntry, AuditError, MAX_BATCH, QUEUE};
use crate::ids::TenantId;
use crate::log::codec::DomainEvent;
use crate::log::{ActorId, EventData, EventStore, ExpectedVersion, Metadata, Source, StreamId};

/// An entry waiting to be recorded, and who waits for it.
struct Pending {
    stream: StreamId,
    data: EventData,
    done: oneshot::Sender<Result<(), AuditError>>,
}

/// The engine's audit recorder (its task is started by the first entry).
pub(crate) struct Recorder {
    enabled: bool,
    store: Arc<dyn EventStore>,
    slot: Mutex<Option<(mpsc::Sender<Pending>, JoinHandle<()>)>>,
    closed: AtomicBool,
}

impl Recorder {
    /// A recorder appending to `store`; `enabled: false` records nothing
    /// (benchmarks' baseline only).
    pub(crate) fn new(store: Arc<dyn EventStore>, enabled: bool) -> Self {
        Recorder {
            enabled,
            store,
            slot: Mutex::new(None),
            closed: AtomicBool::new(false),
        }
    }

    /// Whether entries are recorded.
    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    /// Records `entry` in `tenant`'s audit and returns once it is durable.
    ///
    /// Errors: [`AuditError::Unavailable`] if it could not be recorded
    /// (after [`Recorder::close`], or a failed append).
    pub(crate) async fn record(
        &self,
        tenant: &TenantId,
        entry: &AuditEntry,
    ) -> Result<(), AuditError> {
        if !self.enabled {
            return Ok(());
        }
        let unavailable = |reason: String| AuditError::Unavailable { reason };
        let stream = crate::streams::audit(tenant, entry.at)
            .map_err(|e| unavailable(format!("audit stream: {e}")))?;
        let metadata = Metadata::new(
            ActorId::new(entry.subject.clone()),
            Source::system("casebook"),
        )
        .with_classification(entry.marking);
        let data = entry
            .to_event_data(metadata)
            .map_err(|e| unavailable(e.to_string()))?;
        let (done, answer) = oneshot::channel();
        let mut pending = Pending { stream, data, done };
        // A task whose runtime has gone is replaced once.
        for _ in 0..2 {
            let sender = self.sender()?;
            match sender.send(pending).await {
                Ok(()) => {
                    return answer
                        .await
                        .unwrap_or_else(|_| Err(unavailable("the audit recorder stopped".into())))
                }
                Err(mpsc::error::SendError(back)) => {
                    pending = back;
                    self.forget(&sender);
                }
            }
        }
        Err(unavailable("the audit recorder is not running".into()))
    }

    /// The running task's sender, starting the task if none runs.
    fn sender(&self) -> Result<mpsc::Sender<Pending>, AuditError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(AuditError::Unavailable {
                reason: "the engine is shutting down".into(),
            });
        }
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((sender, _)) = slot.as_ref() {
            if !sender.is_closed() {
                return Ok(sender.clone());
            }
        }
        let handle =
            tokio::runtime::Handle::try_current().map_err(|_| AuditError::Unavailable {
                reason: "reads must run inside a Tokio runtime".into(),
            })?;
        let (sender, receiver) = mpsc::channel(QUEUE);
        let task = handle.spawn(run(Arc::clone(&self.store), receiver));
        *slot = Some((sender.clone(), task));
        Ok(sender)
    }

    /// Drops `stale` if it is still the current sender.
    fn forget(&self, stale: &mpsc::Sender<Pending>) {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_some_and(|(s, _)| s.same_channel(stale)) {
            *slot = None;
        }
    }

    /// Stops taking entries, then waits until every entry already queued
    /// is recorded (part of the engine's shutdown, before the log closes).
    pub(crate) async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let taken = self.slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((sender, task)) = taken {
            drop(sender);
            let _ = task.await;
        }
    }
}

/// The recorder task: batch, group, append, answer; until every sender is
/// gone and the queue is empty.
async fn run(store: Arc<dyn EventStore>, mut receiver: mpsc::Receiver<Pending>) {
    let per_append = store.limits().max_events_per_append.max(1);
    let mut batch = Vec::new();
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut groups: BTreeMap<StreamId, Vec<Pending>> = BTreeMap::new();
        for p in batch.drain(..) {
            groups.entry(p.stream.clone()).or_default().push(p);
        }
        let mut appends = tokio::task::JoinSet::new();
        for (stream, mut pending) in groups {
            while !pending.is_empty() {
                let rest = pending.split_off(pending.len().min(per_append));
                let chunk = std::mem::replace(&mut pending, rest);
                let store = Arc::clone(&store);
                let stream = stream.clone();
                appends.spawn(async move {
                    let (data, waiting): (Vec<_>, Vec<_>) =
                        chunk.into_iter().map(|p| (p.data, p.done)).unzip();
                    let result = store
                        .append(&stream, ExpectedVersion::Any, data)
                        .await
                        .map(|_| ())
                        .map_err(|e| AuditError::Unavailable {
                            reason: e.to_string(),
                        });
                    for done in waiting {
                        let _ = done.send(result.clone());
                    }
                });
            }
        }
        while appends.join_next().await.is_some() {}
    }
}
