//! The audit recorder: one task per engine that batches entries, appends them (one append per tenant and day per batch, entries packed into a few events) and wakes each waiting reader once its entry is written.
//!
//! Readers hand their entry over a bounded tokio channel ([`super::QUEUE`])
//! with a oneshot for the answer; the task takes every entry queued
//! while it was writing (up to [`super::MAX_BATCH`]), so batches grow with
//! the load and a lone reader never waits for company. Each group is
//! encoded and appended by a task of its own (so encoding a large batch is
//! spread over the workers and bounded by the batch size), with
//! [`EventStore::append_written`]: answered once the log has the bytes in
//! its file, synced by the log within its window. Nothing here blocks a
//! runtime thread.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{AuditEntry, AuditError, AuditRecord, ENTRIES_PER_EVENT, MAX_BATCH, QUEUE};
use crate::ids::TenantId;
use crate::log::codec::DomainEvent;
use crate::log::{ActorId, EventData, EventStore, ExpectedVersion, Metadata, Source, StreamId};

/// Groups appended but not yet answered before the task waits for one.
const IN_FLIGHT: usize = 1;

/// The most turns [`gather`] yields for more entries.
const GATHER_TURNS: usize = 8;

/// An entry waiting to be recorded, and who waits for it.
struct Pending {
    stream: StreamId,
    entry: AuditEntry,
    done: oneshot::Sender<Result<(), AuditError>>,
}

/// Entries packed into one event, and who waits for them.
struct Packed {
    data: EventData,
    waiting: Vec<oneshot::Sender<Result<(), AuditError>>>,
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

    /// Records `entry` in `tenant`'s audit and returns once it is written
    /// to the log (see the module's "Logged before disclosed").
    ///
    /// Errors: [`AuditError::Unavailable`] if it could not be recorded
    /// (after [`Recorder::close`], or a failed append).
    pub(crate) async fn record(
        &self,
        tenant: &TenantId,
        entry: AuditEntry,
    ) -> Result<(), AuditError> {
        if !self.enabled {
            return Ok(());
        }
        let unavailable = |reason: String| AuditError::Unavailable { reason };
        let stream = crate::streams::audit(tenant, entry.at)
            .map_err(|e| unavailable(format!("audit stream: {e}")))?;
        let (done, answer) = oneshot::channel();
        let mut pending = Pending {
            stream,
            entry,
            done,
        };
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
    let limits = store.limits();
    let per_append = limits.max_events_per_append.max(1);
    // Room for the envelope and the metadata around the entries.
    let per_event = limits.max_event_size.saturating_sub(4096).max(1);
    let mut batch = Vec::new();
    let mut appends = tokio::task::JoinSet::new();
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        gather(&mut receiver, &mut batch).await;
        let mut groups: BTreeMap<StreamId, Vec<Pending>> = BTreeMap::new();
        for p in batch.drain(..) {
            groups.entry(p.stream.clone()).or_default().push(p);
        }
        for (stream, pending) in groups {
            let store = Arc::clone(&store);
            appends.spawn(async move {
                let mut events = pack(pending, per_event);
                while !events.is_empty() {
                    let rest = events.split_off(events.len().min(per_append));
                    let chunk = std::mem::replace(&mut events, rest);
                    let (data, waiting): (Vec<_>, Vec<_>) =
                        chunk.into_iter().map(|p| (p.data, p.waiting)).unzip();
                    let result = store
                        .append_written(&stream, ExpectedVersion::Any, data)
                        .await
                        .map(|_| ())
                        .map_err(|e| AuditError::Unavailable {
                            reason: e.to_string(),
                        });
                    for done in waiting.into_iter().flatten() {
                        let _ = done.send(result.clone());
                    }
                }
            });
        }
        // The next batch gathers while this one is written; at most
        // IN_FLIGHT groups are on their way to the log at once.
        while appends.len() > IN_FLIGHT {
            appends.join_next().await;
        }
    }
    while appends.join_next().await.is_some() {}
}

/// Adds to `batch` the entries of readers that are about to ask: the
/// readers the last batch answered are reading again, on the same workers,
/// so the task yields to them — as long as each turn brings more entries,
/// at most [`GATHER_TURNS`] turns. Fewer, larger batches cost less per read
/// (one append, one event, one wake of the log's writer each); a lone
/// reader's entry goes at once (its first turn brings nothing).
async fn gather(receiver: &mut mpsc::Receiver<Pending>, batch: &mut Vec<Pending>) {
    for _ in 0..GATHER_TURNS {
        if batch.len() >= MAX_BATCH {
            return;
        }
        tokio::task::yield_now().await;
        let before = batch.len();
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        if batch.len() == before {
            return;
        }
    }
}

/// Packs one stream's entries into events of at most
/// [`ENTRIES_PER_EVENT`] entries and about `per_event` bytes; an entry that
/// cannot be encoded is answered at once.
fn pack(pending: Vec<Pending>, per_event: usize) -> Vec<Packed> {
    let mut packed = Vec::new();
    let mut entries = Vec::new();
    let mut waiting = Vec::new();
    let mut bytes = 0;
    let mut flush = |entries: &mut Vec<AuditEntry>, waiting: &mut Vec<_>| {
        if entries.is_empty() {
            return;
        }
        let record = AuditRecord {
            entries: std::mem::take(entries),
        };
        let waiting = std::mem::take(waiting);
        let marking = record.entries.iter().map(|e| e.marking).max();
        let metadata = Metadata::new(ActorId::new("casebook"), Source::system("casebook"))
            .with_classification(marking.unwrap_or_default());
        match record.to_event_data(metadata) {
            Ok(data) => packed.push(Packed { data, waiting }),
            Err(e) => {
                for done in waiting {
                    let _ = done.send(Err(AuditError::Unavailable {
                        reason: e.to_string(),
                    }));
                }
            }
        }
    };
    for p in pending {
        let size = p.entry.encoded_size();
        if !entries.is_empty() && (entries.len() == ENTRIES_PER_EVENT || bytes + size > per_event) {
            flush(&mut entries, &mut waiting);
            bytes = 0;
        }
        bytes += size;
        entries.push(p.entry);
        waiting.push(p.done);
    }
    flush(&mut entries, &mut waiting);
    packed
}
