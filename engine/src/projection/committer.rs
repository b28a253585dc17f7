//! The committer: one dedicated thread per lane that owns the lane's page
//! writer and lands its commits in order, with async handoffs to the runner.
//!
//! The runner (an async task) never waits on a std primitive. A commit goes
//! through three steps that overlap with the runner applying the next batch:
//!
//! 1. the batch's deferred work ([`Changes::defer`]) and sorting run in
//!    `spawn_blocking`; the result comes back through a oneshot channel;
//! 2. the runner queues the commit, in commit order, on a bounded channel to
//!    the committer thread (an async send: a full queue suspends the runner,
//!    it never parks a runtime thread);
//! 3. the committer thread — the only owner of the [`PageWriter`] — waits for
//!    the prepared changes (a blocking receive is fine on its own thread),
//!    stages them into pages and applies them with the checkpoint as one sled
//!    batch, then publishes the commit as landed on a `watch` channel.
//!
//! The runner and the handler's reads wait for landings asynchronously
//! ([`Pipeline::landed`], [`super::Rows::settled`]). After a failure the
//! committer lands nothing more: every later commit fails too, and the lane
//! starts a fresh committer from what the tree holds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use super::error::CommitError;
use super::pages::{PageWriter, Rows};
use super::runner::CHECKPOINT_KEY;
use super::{Changes, Sorted};
use crate::log::GlobalPosition;

/// Where a lane's commits stand, shared by the runner, the committer thread
/// and the handler's [`Rows`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Landed {
    /// The last commit queued (commits are numbered from 1).
    pub submitted: u64,
    /// The last commit that landed.
    pub landed: u64,
    /// The first commit that failed to land, and why.
    pub failed: Option<(u64, Arc<CommitError>)>,
}

/// A lane's commit pipeline, as seen from outside the committer thread.
#[derive(Debug)]
pub(crate) struct Pipeline {
    state: watch::Sender<Landed>,
    /// The last commit the handler's reads have waited for (see
    /// [`Rows::settled`]): reads are allowed only once it equals
    /// `submitted`.
    acknowledged: AtomicU64,
}

impl Pipeline {
    fn new() -> Arc<Self> {
        Arc::new(Pipeline {
            state: watch::channel(Landed::default()).0,
            acknowledged: AtomicU64::new(0),
        })
    }

    /// Whether reads may go ahead now: every queued commit has been waited
    /// for. Errors: the failure of a commit.
    pub(crate) fn check_read(&self) -> Result<(), super::RowsError> {
        let s = self.state.borrow();
        if let Some((_, e)) = &s.failed {
            return Err(super::RowsError::Unwritten(Arc::clone(e)));
        }
        if self.acknowledged.load(Ordering::Acquire) < s.submitted {
            return Err(super::RowsError::Unsettled);
        }
        Ok(())
    }

    /// Waits (asynchronously) until every commit queued so far has landed,
    /// then allows reads. Errors: the failure of a commit.
    pub(crate) async fn settle(&self) -> Result<(), super::RowsError> {
        let mut rx = self.state.subscribe();
        let s = rx
            .wait_for(|s| s.failed.is_some() || s.landed >= s.submitted)
            .await
            .map(|s| s.clone())
            // The sender lives in `self`: it cannot be gone.
            .unwrap_or_default();
        if let Some((_, e)) = s.failed {
            return Err(super::RowsError::Unwritten(e));
        }
        self.acknowledged.fetch_max(s.submitted, Ordering::AcqRel);
        Ok(())
    }

    /// Waits (asynchronously) for commit `seq` to land, or for a failure at
    /// or before it.
    pub(crate) async fn landed(&self, seq: u64) -> Result<(), Arc<CommitError>> {
        let mut rx = self.state.subscribe();
        let s = rx
            .wait_for(|s| s.landed >= seq || s.failed.as_ref().is_some_and(|f| f.0 <= seq))
            .await
            .map(|s| s.clone())
            .unwrap_or_default();
        match s.failed {
            Some((at, e)) if at <= seq => Err(e),
            _ => Ok(()),
        }
    }

    /// Whether commit `seq` has landed (without waiting): `None` while it
    /// is in flight.
    pub(crate) fn poll(&self, seq: u64) -> Option<Result<(), Arc<CommitError>>> {
        let s = self.state.borrow();
        match &s.failed {
            Some((at, e)) if *at <= seq => Some(Err(Arc::clone(e))),
            _ if s.landed >= seq => Some(Ok(())),
            _ => None,
        }
    }
}

/// One commit on its way to the committer thread.
struct Job {
    seq: u64,
    checkpoint: GlobalPosition,
    /// The batch's writes, once its deferred work has run.
    prepared: oneshot::Receiver<Result<Sorted, CommitError>>,
}

/// The runner's end of a lane's committer.
pub(crate) struct Committer {
    jobs: mpsc::Sender<Job>,
    pipeline: Arc<Pipeline>,
    next: u64,
}

impl Committer {
    /// Starts a committer thread owning a fresh page writer over `rows`
    /// (plain rows: the thread lands its commits in order, so its own reads
    /// of the tree never need to wait), with room for `depth` queued
    /// commits.
    ///
    /// Errors: the thread could not be started.
    pub(crate) fn start(rows: &Rows, depth: usize) -> std::io::Result<Committer> {
        let (jobs, rx) = mpsc::channel(depth.max(1));
        let pipeline = Pipeline::new();
        let writer = PageWriter::new(rows.plain());
        let shared = Arc::clone(&pipeline);
        std::thread::Builder::new()
            .name("casebook-projection-commit".into())
            .spawn(move || {
                lower_priority();
                run(writer, rx, &shared)
            })?;
        Ok(Committer {
            jobs,
            pipeline,
            next: 1,
        })
    }

    /// The pipeline the lane's handler reads behind.
    pub(crate) fn pipeline(&self) -> &Arc<Pipeline> {
        &self.pipeline
    }

    /// Queues a commit of `changes` with the checkpoint `checkpoint`: its
    /// deferred work starts in `spawn_blocking`, and the committer lands it
    /// after every commit queued before it. Returns its number; waits
    /// (asynchronously) while the queue is full.
    ///
    /// Errors: the committer thread is gone.
    pub(crate) async fn submit(
        &mut self,
        mut changes: Changes,
        checkpoint: GlobalPosition,
    ) -> Result<u64, CommitError> {
        let seq = self.next;
        let (tx, prepared) = oneshot::channel();
        // If the blocking pool refuses the work (the runtime is shutting
        // down), the sender is dropped with it and the commit fails as
        // abandoned.
        drop(tokio::task::spawn_blocking(move || {
            let sorted = changes
                .run_deferred()
                .map(|()| changes.into_sorted())
                .map_err(CommitError::Deferred);
            let _ = tx.send(sorted);
        }));
        // Reads behind the pipeline wait for this commit from now on.
        self.pipeline
            .state
            .send_modify(|s| s.submitted = s.submitted.max(seq));
        let job = Job {
            seq,
            checkpoint,
            prepared,
        };
        if self.jobs.send(job).await.is_err() {
            let e = Arc::new(CommitError::Stopped);
            self.pipeline.state.send_modify(|s| {
                s.failed.get_or_insert((seq, Arc::clone(&e)));
            });
            return Err(CommitError::Stopped);
        }
        self.next += 1;
        Ok(seq)
    }
}

/// Lowers the calling (committer) thread's OS priority a little below the
/// runtime's workers (nice about +5 on Linux): writing pages is background
/// work, and a worker woken by a timer or a request should get a core at
/// once rather than wait out this thread's slice. Best effort: where the OS
/// refuses, the thread runs at normal priority.
fn lower_priority() {
    use thread_priority::{ThreadPriority, ThreadPriorityValue};
    if let Ok(value) = ThreadPriorityValue::try_from(37u8) {
        let _ = thread_priority::set_current_thread_priority(ThreadPriority::Crossplatform(value));
    }
}

/// The committer thread: lands jobs in the order they were queued, until
/// the runner lets go of its end of the queue.
fn run(mut writer: PageWriter, mut jobs: mpsc::Receiver<Job>, pipeline: &Pipeline) {
    let mut failed = false;
    while let Some(job) = jobs.blocking_recv() {
        if failed {
            // Nothing lands after a failure (the pipeline already says so).
            continue;
        }
        // A damaged database may make sled panic as pages are written:
        // caught here, at its boundary, it faults the runner (which says
        // so in its status and can be retried or rebuilt), not the process.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            land(&mut writer, job.prepared, job.checkpoint)
        }))
        .unwrap_or_else(|_| {
            Err(CommitError::Write(super::error::StoreError::new(
                "the storage library panicked writing the projection",
            )))
        });
        match outcome {
            Ok(()) => {
                writer.committed();
                pipeline.state.send_modify(|s| s.landed = job.seq);
            }
            Err(e) => {
                writer.discarded();
                failed = true;
                let e = Arc::new(e);
                pipeline.state.send_modify(|s| {
                    s.failed.get_or_insert((job.seq, e));
                });
            }
        }
    }
}

/// Stages one commit's writes into pages and applies them with the
/// checkpoint as one sled batch.
fn land(
    writer: &mut PageWriter,
    prepared: oneshot::Receiver<Result<Sorted, CommitError>>,
    checkpoint: GlobalPosition,
) -> Result<(), CommitError> {
    let sorted = prepared
        .blocking_recv()
        .map_err(|_| CommitError::Abandoned)??;
    let mut batch = sled::Batch::default();
    writer
        .stage(&sorted, &mut batch)
        .map_err(CommitError::Stage)?;
    drop(sorted);
    batch.insert(CHECKPOINT_KEY, &checkpoint.0.to_be_bytes());
    writer
        .tree()
        .apply_batch(batch)
        .map_err(|e| CommitError::Write(super::error::StoreError::new(e)))
}
