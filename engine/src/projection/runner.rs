//! The runner task: catch up from the checkpoint, follow the live log, build a
//! new generation beside the serving one and swap when it has caught up.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::committer::Committer;
use super::host::{lag, store_err, tree_name, GenRef, Generation, MetaRecord, Runner};
use super::host::{RebuildStatus, RunState};
use super::pages::Rows;
use super::{Changes, Handler, Projection};
use crate::log::{
    EventStore, GlobalPosition, LogError, RecordedEvent, Subscription, SubscriptionStart,
};

/// The checkpoint key in every generation's tree.
pub(crate) const CHECKPOINT_KEY: &[u8] = b"\x00checkpoint";

/// A lane catching up applies up to this many batches' events at once: each
/// commit rewrites every page its rows fall in, so fewer, bigger commits
/// write each page fewer times.
const CATCH_UP_BATCHES: usize = 128;
/// A lane reads this many batches' events per read of the log.
const READ_BATCHES: usize = 16;

/// What an operator asks of a runner.
pub(crate) enum Control {
    Retry,
    Rebuild(Option<Arc<dyn Projection>>),
    /// Stop for good (the tenant was suspended): settle what is in flight
    /// and end the task, like a shutdown of this runner alone.
    Stop,
}

/// The serving generation's progress, for read-your-writes waits.
#[derive(Debug, Clone, Default)]
pub(crate) struct Progress {
    pub reached: Option<GlobalPosition>,
    pub fault: Option<(GlobalPosition, String)>,
    pub stopped: bool,
}

pub(crate) struct RunnerCtx {
    pub runner: Arc<Runner>,
    pub store: Arc<dyn EventStore>,
    pub db: sled::Db,
    pub meta: sled::Tree,
    pub meta_key: Vec<u8>,
    pub projection: Arc<dyn Projection>,
    pub active: Arc<Generation>,
    /// The active generation was built by an older version: it serves as it
    /// is (no handler of its version exists to follow the log) until the
    /// building one swaps in.
    pub frozen: bool,
    pub building: Option<(Arc<Generation>, Arc<dyn Projection>)>,
    pub control: mpsc::UnboundedReceiver<Control>,
    pub shutdown: watch::Receiver<bool>,
    pub batch_size: usize,
    /// A live lane commits at most once per this long: under a steady
    /// stream of appends it gathers what arrives meanwhile into one commit,
    /// instead of committing after every group commit of the log (each
    /// commit rewrites every page its rows fall in). A lane that was idle
    /// commits at once.
    pub commit_interval: Duration,
}

/// Events applied per second over a sliding window.
#[derive(Default)]
struct Rate {
    samples: VecDeque<(Instant, u64)>,
    total: u64,
}

impl Rate {
    const WINDOW: Duration = Duration::from_secs(5);

    fn add(&mut self, n: u64) {
        let now = Instant::now();
        if self.samples.is_empty() {
            self.samples.push_back((now, self.total));
        }
        self.total += n;
        self.samples.push_back((now, self.total));
        while self.samples.len() > 2 && now.duration_since(self.samples[0].0) > Self::WINDOW {
            self.samples.pop_front();
        }
    }

    fn per_second(&self) -> f64 {
        let (Some(first), Some(last)) = (self.samples.front(), self.samples.back()) else {
            return 0.0;
        };
        if last.0.elapsed() > Self::WINDOW {
            return 0.0;
        }
        let span = last.0.duration_since(first.0).as_secs_f64();
        if span <= 0.0 {
            return 0.0;
        }
        (last.1 - first.1) as f64 / span
    }
}

/// A commit queued to the lane's committer and not yet known to have
/// landed.
struct InFlight {
    seq: u64,
    first: GlobalPosition,
    last: GlobalPosition,
    count: usize,
}

/// Commits in flight at once: one being written to sled while the next is
/// staged into pages and the one after runs its deferred work.
const IN_FLIGHT: usize = 3;

/// One generation being written: its handler and its place in the log.
///
/// A lane's commits land in the background while its handler works on the
/// next batch: each commit's deferred work ([`Changes::defer`]) runs in
/// `spawn_blocking`, and the lane's [`Committer`] thread — the only owner
/// of the page writer — stages it into pages and writes it with the
/// checkpoint, in commit order. Up to [`IN_FLIGHT`] commits are in flight;
/// the lane waits for the oldest (asynchronously) before queuing another.
/// The handler's reads wait, asynchronously, for every queued commit
/// ([`Rows::settled`]). The checkpoint and `reached` move, and the handler
/// hears [`Handler::committed`], when a commit has landed. A live lane
/// waits for each commit before reporting it.
struct Lane {
    gen: Arc<Generation>,
    projection: Arc<dyn Projection>,
    handler: Box<dyn Handler>,
    committer: Committer,
    inflight: VecDeque<InFlight>,
    /// The buffer a step collects its batch's events in.
    events: Vec<RecordedEvent>,
    sub: Subscription,
    checkpoint: Option<GlobalPosition>,
    reached: Option<GlobalPosition>,
    caught_up: bool,
    fault: Option<(GlobalPosition, String)>,
    rate: Rate,
    /// Serves without following the log (an older version's generation).
    frozen: bool,
}

pub(crate) fn read_checkpoint(tree: &sled::Tree) -> Result<Option<GlobalPosition>, String> {
    match tree.get(CHECKPOINT_KEY).map_err(|e| e.to_string())? {
        None => Ok(None),
        Some(v) => {
            let bytes: [u8; 8] = v
                .as_ref()
                .try_into()
                .map_err(|_| "malformed checkpoint".to_string())?;
            Ok(Some(GlobalPosition(u64::from_be_bytes(bytes))))
        }
    }
}

impl Lane {
    async fn open(
        store: &Arc<dyn EventStore>,
        runner: &Runner,
        gen: Arc<Generation>,
        projection: Arc<dyn Projection>,
        batch_size: usize,
    ) -> Result<Lane, LogError> {
        let (checkpoint, fault) = match read_checkpoint(gen.rows.tree()) {
            Ok(c) => (c, None),
            Err(e) => (None, Some((GlobalPosition::START, e))),
        };
        let start = checkpoint.map_or(SubscriptionStart::Beginning, SubscriptionStart::After);
        let sub = store
            .subscribe_all(runner.tenant.clone(), start)
            .await?
            .with_page_size(batch_size.saturating_mul(READ_BATCHES));
        let committer = Committer::start(&gen.rows, IN_FLIGHT)
            .map_err(|e| LogError::io("starting a projection committer thread", e))?;
        Ok(Lane {
            handler: projection.handler(gen.rows.behind(Arc::clone(committer.pipeline()))),
            committer,
            inflight: VecDeque::new(),
            events: Vec::new(),
            gen,
            projection,
            sub,
            checkpoint,
            reached: checkpoint,
            caught_up: false,
            fault,
            rate: Rate::default(),
            frozen: false,
        })
    }

    /// A lane that serves `gen` as it is and never applies an event.
    fn frozen(mut self) -> Lane {
        self.frozen = true;
        self.caught_up = true;
        self
    }

    /// Applies up to one batch. Returns how many events it applied; sets
    /// `caught_up` when the log had nothing more for this tenant.
    async fn step(
        &mut self,
        store: &Arc<dyn EventStore>,
        batch_size: usize,
    ) -> Result<usize, LogError> {
        if self.fault.is_some() || self.frozen {
            return Ok(0);
        }
        let head = store.head_position();
        // Catching up, bigger batches write each page fewer times.
        let limit = if self.caught_up {
            batch_size
        } else {
            batch_size.saturating_mul(CATCH_UP_BATCHES)
        };
        // The batch's events, in a buffer kept from step to step (a catch-up
        // batch holds tens of thousands).
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        let mut failed = None;
        let mut exhausted = false;
        while events.len() < limit {
            // A catch-up batch is tens of thousands of events, mostly
            // already read ahead (no await that yields): the task gives the
            // runtime back its thread whenever its budget is spent, so
            // other tasks on the same worker keep running.
            tokio::task::coop::consume_budget().await;
            match self.sub.try_next().await {
                Ok(Some(e)) => {
                    // Applied as they come, so that the subscription's
                    // reading ahead overlaps the handler's work.
                    let outcome = self.handler.apply(&e).await;
                    events.push(e);
                    if let Err(msg) = outcome {
                        failed = Some((events.len() - 1, msg.to_string()));
                        break;
                    }
                }
                Ok(None) => {
                    exhausted = true;
                    break;
                }
                Err(LogError::Closed) => return Err(LogError::Closed),
                Err(e) => {
                    // Nothing of this batch is committed: the fault names
                    // the first event after the checkpoint.
                    events.clear();
                    let settled = self.settle().await;
                    self.handler.discarded();
                    if settled {
                        let at = self.checkpoint.map_or(GlobalPosition::START, |c| c.next());
                        self.fault = Some((at, format!("reading the log: {e}")));
                    }
                    break;
                }
            }
        }
        // A batch that ends at the head read before it also leaves nothing.
        exhausted |=
            failed.is_none() && head.is_some() && events.last().map(|e| e.position) >= head;
        let applied = if events.is_empty() {
            0
        } else {
            self.finish_batch(&events, failed).await
        };
        if exhausted && self.fault.is_none() {
            // Report nothing as applied before it has landed.
            self.settle().await;
        }
        if exhausted && self.fault.is_none() {
            // Every event of this tenant up to `head` has been applied.
            self.reached = self.reached.max(head);
            self.caught_up = true;
            self.handler.caught_up();
        } else {
            self.caught_up = false;
        }
        events.clear();
        self.events = events;
        Ok(applied)
    }

    /// Commits a batch the handler has applied; or, if the handler failed
    /// at `failed` (its index and error), commits the events before it and
    /// faults the lane there. Returns how many events were committed.
    async fn finish_batch(
        &mut self,
        events: &[RecordedEvent],
        failed: Option<(usize, String)>,
    ) -> usize {
        let Some((index, message)) = failed else {
            return match self.commit(events).await {
                Ok(()) => events.len(),
                Err(msg) => {
                    if self.fault.is_none() {
                        self.fault = Some((events[0].position, msg));
                    }
                    0
                }
            };
        };
        // Commit the good events before the failing one, so the fault names
        // the failing event and the checkpoint sits just before it.
        if !self.settle().await {
            return 0;
        }
        self.handler.discarded();
        let good = &events[..index];
        let mut applied = 0;
        let mut error = (events[index].position, message);
        if !good.is_empty() {
            let mut again = Ok(());
            for e in good {
                if let Err(msg) = self.handler.apply(e).await {
                    again = Err((e.position, msg.to_string()));
                    break;
                }
            }
            match again {
                Ok(()) => match self.commit(good).await {
                    Ok(()) => applied = good.len(),
                    Err(msg) => error = (good[0].position, msg),
                },
                Err(e) => {
                    self.handler.discarded();
                    error = e;
                }
            }
            // The fault is reported once the good events have landed.
            if !self.settle().await {
                return 0;
            }
        }
        if self.fault.is_none() {
            self.fault = Some(error);
        }
        applied
    }

    /// Queues the batch's changes and the checkpoint to the lane's
    /// committer, which prepares them as pages and writes them, as one sled
    /// batch, after the commits queued before.
    ///
    /// Errors: the handler's error; if an earlier commit failed to land,
    /// the lane is faulted at that commit instead.
    async fn commit(&mut self, events: &[RecordedEvent]) -> Result<(), String> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Ok(());
        };
        let mut changes = Changes::default();
        if let Err(e) = self.handler.write(&mut changes) {
            // The commits before this batch count as they land.
            self.settle().await;
            self.handler.discarded();
            return Err(e.to_string());
        }
        if !self.reap() {
            return Err("an earlier batch was not written".into());
        }
        while self.inflight.len() >= IN_FLIGHT {
            if !self.settle_oldest().await {
                return Err("an earlier batch was not written".into());
            }
        }
        let seq = match self.committer.submit(changes, last.position).await {
            Ok(seq) => seq,
            Err(e) => {
                self.settle().await;
                self.handler.discarded();
                return Err(e.to_string());
            }
        };
        // The handler goes on from what this batch wrote; if it fails to
        // land, `settle` starts it afresh from the tree.
        self.handler.queued();
        self.inflight.push_back(InFlight {
            seq,
            first: first.position,
            last: last.position,
            count: events.len(),
        });
        Ok(())
    }

    /// Waits (asynchronously) for every commit in flight and records them
    /// as applied. If one failed, faults the lane at its first event,
    /// starts the handler and the committer afresh from the tree, and
    /// returns false.
    async fn settle(&mut self) -> bool {
        while !self.inflight.is_empty() {
            if !self.settle_oldest().await {
                return false;
            }
        }
        // Every queued commit has landed: the handler may read (its
        // `discarded` does, synchronously).
        let pipeline = Arc::clone(self.committer.pipeline());
        let _ = pipeline.settle().await;
        true
    }

    /// Records the commits that have landed, oldest first, without
    /// waiting. False if one failed (the lane is then faulted).
    fn reap(&mut self) -> bool {
        while let Some(f) = self.inflight.front() {
            match self.committer.pipeline().poll(f.seq) {
                None => return true,
                Some(Ok(())) => self.landed(),
                Some(Err(e)) => {
                    self.failed(&e);
                    return false;
                }
            }
        }
        true
    }

    /// Waits (asynchronously) for the oldest commit in flight, as
    /// [`Lane::settle`] does.
    async fn settle_oldest(&mut self) -> bool {
        let Some(seq) = self.inflight.front().map(|f| f.seq) else {
            return true;
        };
        let pipeline = Arc::clone(self.committer.pipeline());
        match pipeline.landed(seq).await {
            Ok(()) => {
                self.landed();
                true
            }
            Err(e) => {
                self.failed(&e);
                false
            }
        }
    }

    /// The oldest commit in flight has landed.
    fn landed(&mut self) {
        if let Some(f) = self.inflight.pop_front() {
            self.checkpoint = Some(f.last);
            self.reached = self.reached.max(Some(f.last));
            self.rate.add(f.count as u64);
            self.handler.committed();
        }
    }

    /// The oldest commit in flight failed to land: the later ones fail too
    /// (nothing lands after a failure) and none of them counts. Faults the
    /// lane at its first event and starts the handler and the committer
    /// afresh from the tree.
    fn failed(&mut self, e: &super::error::CommitError) {
        let Some(f) = self.inflight.pop_front() else {
            return;
        };
        self.inflight.clear();
        match Committer::start(&self.gen.rows, IN_FLIGHT) {
            Ok(c) => {
                self.committer = c;
                self.handler = self
                    .projection
                    .handler(self.gen.rows.behind(Arc::clone(self.committer.pipeline())));
            }
            Err(io) => {
                self.fault = Some((f.first, format!("{e}; restarting the committer: {io}")));
                return;
            }
        }
        self.fault = Some((f.first, e.to_string()));
    }
}

struct Task {
    ctx: RunnerCtx,
    active: Option<Lane>,
    building: Option<Lane>,
    retired: Vec<Arc<Generation>>,
    stopped: bool,
    /// [`Control::Stop`] was received.
    stop_asked: bool,
}

/// Runs one projection for one tenant until shutdown or the log closes.
pub(crate) async fn run(ctx: RunnerCtx) {
    let mut task = Task {
        active: None,
        building: None,
        retired: Vec::new(),
        stopped: false,
        stop_asked: false,
        ctx,
    };
    if let Err(e) = task.open_lanes().await {
        task.fault_active(GlobalPosition::START, format!("subscribing: {e}"));
    }
    let mut head = task.ctx.store.watch_head();
    let mut last_live_commit: Option<Instant> = None;
    loop {
        while let Ok(c) = task.ctx.control.try_recv() {
            task.handle(c).await;
        }
        if *task.ctx.shutdown.borrow() || task.stop_asked {
            break;
        }
        head.borrow_and_update();
        task.drop_retired();
        let mut busy = false;
        let store = Arc::clone(&task.ctx.store);
        let batch = task.ctx.batch_size;
        if let Some(lane) = task.active.as_mut() {
            if lane.caught_up {
                if let Some(wait) = last_live_commit
                    .and_then(|t: Instant| task.ctx.commit_interval.checked_sub(t.elapsed()))
                {
                    // A reader waiting for a position cuts the wait short:
                    // gathering saves page rewrites, never a reader's time.
                    // So does a shutdown.
                    let hurry = Arc::clone(&task.ctx.runner);
                    let mut shutdown = task.ctx.shutdown.clone();
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = hurry.hurry.notified() => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
            let live = lane.caught_up;
            match lane.step(&store, batch).await {
                Ok(n) => {
                    busy |= n > 0 && !lane.caught_up;
                    last_live_commit = (live && n > 0).then(Instant::now);
                }
                Err(_) => break,
            }
        }
        if let Some(lane) = task.building.as_mut() {
            match lane.step(&store, batch).await {
                Ok(_) => busy |= !lane.caught_up && lane.fault.is_none(),
                Err(_) => break,
            }
            task.maybe_swap().await;
        }
        task.publish();
        if busy {
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            changed = head.changed() => if changed.is_err() { break },
            c = task.ctx.control.recv() => match c {
                Some(c) => task.handle(c).await,
                None => break,
            },
            _ = task.ctx.shutdown.changed() => {}
        }
    }
    for lane in [task.active.as_mut(), task.building.as_mut()]
        .into_iter()
        .flatten()
    {
        lane.settle().await;
    }
    task.stopped = true;
    task.publish();
}

impl Task {
    async fn open_lanes(&mut self) -> Result<(), LogError> {
        let c = &self.ctx;
        let active = Lane::open(
            &c.store,
            &c.runner,
            Arc::clone(&c.active),
            Arc::clone(&c.projection),
            c.batch_size,
        )
        .await?;
        self.active = Some(if c.frozen { active.frozen() } else { active });
        if let Some((gen, projection)) = &c.building {
            self.building = Some(
                Lane::open(
                    &c.store,
                    &c.runner,
                    Arc::clone(gen),
                    Arc::clone(projection),
                    c.batch_size,
                )
                .await?,
            );
        }
        Ok(())
    }

    fn fault_active(&mut self, at: GlobalPosition, error: String) {
        match self.active.as_mut() {
            Some(lane) => lane.fault = Some((at, error)),
            None => {
                self.ctx
                    .runner
                    .progress
                    .send_modify(|p| p.fault = Some((at, error)));
            }
        }
    }

    async fn handle(&mut self, control: Control) {
        match control {
            Control::Retry => {
                let c = &self.ctx;
                let reopen = |lane: &Lane| (Arc::clone(&lane.gen), Arc::clone(&lane.projection));
                let active = match &self.active {
                    Some(l) if l.fault.is_none() => None,
                    Some(l) => Some(reopen(l)),
                    None => Some((Arc::clone(&c.active), Arc::clone(&c.projection))),
                };
                let frozen = self.active.as_ref().is_some_and(|l| l.frozen)
                    || (self.active.is_none() && c.frozen);
                if let Some((gen, projection)) = active {
                    match Lane::open(&c.store, &c.runner, gen, projection, c.batch_size).await {
                        Ok(lane) if frozen => self.active = Some(lane.frozen()),
                        Ok(lane) => self.active = Some(lane),
                        Err(e) => self.fault_active(GlobalPosition::START, e.to_string()),
                    }
                    self.ctx.runner.progress.send_modify(|p| p.fault = None);
                }
                let c = &self.ctx;
                if let Some(l) = self.building.as_ref().filter(|l| l.fault.is_some()) {
                    let (gen, projection) = reopen(l);
                    if let Ok(lane) =
                        Lane::open(&c.store, &c.runner, gen, projection, c.batch_size).await
                    {
                        self.building = Some(lane);
                    }
                }
            }
            Control::Stop => self.stop_asked = true,
            Control::Rebuild(replacement) => {
                if let Err(e) = self.start_rebuild(replacement).await {
                    if let Some(l) = self.building.as_mut() {
                        l.fault = Some((GlobalPosition::START, e));
                    }
                }
            }
        }
    }

    async fn start_rebuild(
        &mut self,
        replacement: Option<Arc<dyn Projection>>,
    ) -> Result<(), String> {
        let projection = match replacement {
            Some(p) => p,
            None => match &self.active {
                Some(l) => Arc::clone(&l.projection),
                None => Arc::clone(&self.ctx.projection),
            },
        };
        let c = &self.ctx;
        let number = c.db.generate_id().map_err(|e| e.to_string())?;
        let old_build = match self.building.take() {
            Some(mut l) => {
                // Its last commits land before its tree is dropped.
                l.settle().await;
                Some(l.gen.number)
            }
            None => None,
        };
        let active = self.active.as_ref().map(|l| GenRef {
            number: l.gen.number,
            version: l.gen.version,
        });
        let record = MetaRecord {
            active,
            building: Some(GenRef {
                number,
                version: projection.version(),
            }),
        };
        // Record the new generation before writing into it, so a crash can
        // never leave a tree nobody knows about.
        write_meta(&c.meta, &c.meta_key, &record)?;
        if let Some(n) = old_build {
            let _ =
                c.db.drop_tree(tree_name(&c.runner.name, &c.runner.tenant, n).as_bytes());
        }
        let rows = Rows::open(&c.db, &tree_name(&c.runner.name, &c.runner.tenant, number))
            .map_err(|e| e.to_string())?
            .ok_or("a new generation's tree already holds data of another layout")?;
        let gen = Arc::new(Generation {
            number,
            version: projection.version(),
            rows,
        });
        let lane = Lane::open(&c.store, &c.runner, gen, projection, c.batch_size)
            .await
            .map_err(|e| e.to_string())?;
        self.building = Some(lane);
        Ok(())
    }

    /// Swaps the new generation in once it has caught up with the log (and
    /// so with the serving generation).
    async fn maybe_swap(&mut self) {
        let Some(build) = self.building.as_ref() else {
            return;
        };
        let active_reached = self.active.as_ref().and_then(|l| l.reached);
        if !build.caught_up || build.fault.is_some() || build.reached < active_reached {
            return;
        }
        let record = MetaRecord {
            active: Some(GenRef {
                number: build.gen.number,
                version: build.gen.version,
            }),
            building: None,
        };
        if let Err(e) = write_meta(&self.ctx.meta, &self.ctx.meta_key, &record) {
            if let Some(b) = self.building.as_mut() {
                b.fault = Some((b.reached.unwrap_or(GlobalPosition::START), e));
            }
            return;
        }
        let Some(build) = self.building.take() else {
            return;
        };
        *self
            .ctx
            .runner
            .serving
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&build.gen));
        let old = self.active.replace(build);
        if let Some(mut old) = old {
            // Its last commits land before its tree can be let go of.
            old.settle().await;
            // Queries may still be reading the old tree; it is dropped once
            // the last of them lets go (see `drop_retired`).
            self.retired.push(Arc::clone(&old.gen));
        }
        self.drop_retired();
    }

    /// Drops the trees of replaced generations that no query holds any more
    /// (a crash before that leaves them to the host's clean-up at start).
    fn drop_retired(&mut self) {
        let db = &self.ctx.db;
        let runner = &self.ctx.runner;
        self.retired.retain(|gen| {
            if Arc::strong_count(gen) > 1 {
                return true;
            }
            let name = tree_name(&runner.name, &runner.tenant, gen.number);
            let _ = db.drop_tree(name.as_bytes());
            false
        });
    }

    fn publish(&self) {
        let runner = &self.ctx.runner;
        let head = self.ctx.store.head_position();
        let mut status = runner.status.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = &self.active {
            status.version = a.gen.version;
            status.generation = a.gen.number;
            status.position = a.checkpoint;
            status.reached = a.reached;
            status.events_per_second = a.rate.per_second();
            status.state = match (&a.fault, &self.building) {
                _ if self.stopped => RunState::Stopped,
                (Some((position, error)), _) => RunState::Faulted {
                    position: *position,
                    error: error.clone(),
                },
                (None, Some(_)) if a.caught_up => RunState::Rebuilding,
                (None, _) if a.caught_up => RunState::Live,
                (None, _) => RunState::CatchingUp,
            };
        } else if self.stopped {
            status.state = RunState::Stopped;
        }
        status.head = head;
        status.lag = lag(status.reached, head);
        status.rebuild = self.building.as_ref().map(|b| RebuildStatus {
            version: b.gen.version,
            generation: b.gen.number,
            position: b.checkpoint,
            events_per_second: b.rate.per_second(),
            fault: b.fault.clone(),
        });
        drop(status);
        let progress = Progress {
            reached: self.active.as_ref().and_then(|a| a.reached),
            fault: self.active.as_ref().and_then(|a| a.fault.clone()),
            stopped: self.stopped,
        };
        runner.progress.send_if_modified(|p| {
            let changed = p.reached != progress.reached
                || p.fault != progress.fault
                || p.stopped != progress.stopped;
            *p = progress;
            changed
        });
    }
}

fn write_meta(meta: &sled::Tree, key: &[u8], record: &MetaRecord) -> Result<(), String> {
    let bytes = rmp_serde::to_vec(record).map_err(|e| store_err(e).to_string())?;
    meta.insert(key, bytes).map_err(|e| e.to_string())?;
    Ok(())
}
