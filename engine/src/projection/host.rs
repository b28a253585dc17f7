//! [`ProjectionHost`]: the projection database, its runners, status and control.

use crate::projection::error::SledResultExt as _;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::error::{ProjectionError, QueryError, StoreError};
use super::runner::{self, Control, Progress, RunnerCtx};
use super::{Projection, Rows};
use crate::log::{DerivedRebuild, EventStore, GlobalPosition, TenantId};
use crate::security::PositionToken;

/// Events per batch (one sled batch, one checkpoint) when live, by default.
pub const DEFAULT_BATCH_SIZE: usize = 512;

/// How often, at most, a live runner commits, by default: under a steady
/// stream of commands it gathers what arrives meanwhile into one commit (a
/// commit rewrites every page its rows fall in, and sled keeps each old
/// version until its cleaner catches up); a runner that was idle commits at
/// once. On 2-minute soaks (issue 24) 100 ms instead of 2 ms took the
/// projections' database from 3.7 to 2.8 times the log.
pub const DEFAULT_COMMIT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// How fresh a tenant's query answer must be (the engine's query methods).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// Whatever the projection holds now (it may be behind the log).
    #[default]
    Eventual,
    /// Wait until the projection has reached `position` — a position token
    /// the engine gave the caller's tenant, e.g. a command's
    /// [`crate::engine::CaseOutcome::position`] — for at most `timeout`.
    /// [`PositionToken::NONE`] waits for nothing; another tenant's or a
    /// made-up token is refused
    /// ([`crate::security::AccessError::NotAPositionToken`]).
    AtLeast {
        /// The tenant's position token to reach.
        position: PositionToken,
        /// How long to wait.
        timeout: Duration,
    },
}

impl Consistency {
    /// Waits for `position` for up to 5 seconds.
    pub fn at_least(position: PositionToken) -> Self {
        Consistency::AtLeast {
            position,
            timeout: Duration::from_secs(5),
        }
    }
}

/// How fresh a [`ProjectionHost::read`] must be, in global positions: the
/// unscoped host's (a platform administrator's) form of [`Consistency`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Freshness {
    /// Whatever the projection holds now.
    #[default]
    Eventual,
    /// Wait until the projection has reached `position` (events of other
    /// tenants count as passed), for at most `timeout`.
    AtLeast {
        /// The global position to reach.
        position: GlobalPosition,
        /// How long to wait.
        timeout: Duration,
    },
}

impl Freshness {
    /// Waits for `position` for up to 5 seconds.
    pub fn at_least(position: GlobalPosition) -> Self {
        Freshness::AtLeast {
            position,
            timeout: Duration::from_secs(5),
        }
    }
}

/// What a projection runner is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Applying events that are already in the log.
    CatchingUp,
    /// Caught up; applying events as they are appended.
    Live,
    /// Live (the serving generation) while a new generation is being built.
    Rebuilding,
    /// Stopped at an event it could not apply; [`ProjectionHost::retry`] resumes it.
    Faulted {
        /// The failing event's position.
        position: GlobalPosition,
        /// Why it failed.
        error: String,
    },
    /// The host was shut down (or the log closed).
    Stopped,
}

/// A rebuild in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RebuildStatus {
    /// The version being built.
    pub version: u32,
    /// The generation being built.
    pub generation: u64,
    /// The last event applied to it.
    pub position: Option<GlobalPosition>,
    /// Its recent speed.
    pub events_per_second: f64,
    /// Set if the rebuild itself is faulted: (position, error).
    pub fault: Option<(GlobalPosition, String)>,
}

/// The state of one projection for one tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectionStatus {
    /// The projection.
    pub projection: String,
    /// The tenant.
    pub tenant: TenantId,
    /// The version of the serving generation.
    pub version: u32,
    /// The serving generation.
    pub generation: u64,
    /// What it is doing.
    pub state: RunState,
    /// The checkpoint: the last of the tenant's events applied.
    pub position: Option<GlobalPosition>,
    /// The global position it has caught up through (events of other tenants
    /// up to here count as passed).
    pub reached: Option<GlobalPosition>,
    /// The log's head.
    pub head: Option<GlobalPosition>,
    /// Global positions between `reached` and the head.
    pub lag: u64,
    /// Recent speed (over the last few seconds).
    pub events_per_second: f64,
    /// A rebuild in progress, if any.
    pub rebuild: Option<RebuildStatus>,
}

/// One generation of one projection for one tenant: a tree and the version
/// that built it.
#[derive(Debug)]
pub struct Generation {
    /// The generation number (unique in the database).
    pub number: u64,
    /// The projection version that builds it.
    pub version: u32,
    /// Its rows.
    pub rows: Rows,
}

/// Where a generation is recorded in the `meta` tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GenRef {
    pub number: u64,
    pub version: u32,
}

/// A runner's record in the `meta` tree.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct MetaRecord {
    pub active: Option<GenRef>,
    pub building: Option<GenRef>,
}

/// A runner's shared face: what queries and operators see of it.
pub(crate) struct Runner {
    pub name: String,
    pub tenant: TenantId,
    pub serving: RwLock<Option<Arc<Generation>>>,
    pub progress: watch::Sender<Progress>,
    pub status: Mutex<ProjectionStatus>,
    pub control: mpsc::UnboundedSender<Control>,
    /// Rung by a reader waiting for a position the runner has not reached:
    /// a live runner waiting out its commit interval commits at once.
    pub hurry: tokio::sync::Notify,
}

struct HostInner {
    db: sled::Db,
    meta: sled::Tree,
    store: Arc<dyn EventStore>,
    projections: Vec<Arc<dyn Projection>>,
    runners: Mutex<HashMap<(String, TenantId), Arc<Runner>>>,
    tasks: Mutex<Vec<(TenantId, JoinHandle<()>)>>,
    /// Tenants whose runners are stopped and may not start
    /// ([`ProjectionHost::stop_tenant`]).
    stopped_tenants: Mutex<std::collections::HashSet<TenantId>>,
    shutdown: watch::Sender<bool>,
    batch_size: usize,
    /// How often a live runner commits at most, in microseconds
    /// ([`ProjectionHost::set_commit_interval`]).
    commit_interval_us: std::sync::atomic::AtomicU64,
    /// What opening found and rebuilt ([`ProjectionHost::rebuilt_at_open`]).
    rebuilt: Mutex<Option<DerivedRebuild>>,
}

/// The projection database and its runners (one per projection per tenant).
/// Cheap to clone; clones share everything.
///
/// Runners start when a tenant is first used ([`ProjectionHost::ensure`]; every
/// query does it) and, for tenants this database already knows, when
/// [`ProjectionHost::start_known`] is called inside a Tokio runtime.
#[derive(Clone)]
pub struct ProjectionHost {
    inner: Arc<HostInner>,
}

fn meta_key(name: &str, tenant: &TenantId) -> Vec<u8> {
    format!("r\0{name}\0{tenant}").into_bytes()
}

fn tenant_key(tenant: &TenantId) -> Vec<u8> {
    format!("t\0{tenant}").into_bytes()
}

pub(crate) fn tree_name(name: &str, tenant: &TenantId, number: u64) -> String {
    format!("{name}/{tenant}/{number}")
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The `meta` key [`ProjectionHost::check_writable`] writes.
const PROBE_KEY: &[u8] = b"\x00probe";

/// The `meta` key of the identity of the log the projections follow.
const LOG_IDENTITY_KEY: &[u8] = b"\0log";

/// Why the projections in `db` cannot serve `store`'s log, if they cannot:
/// built from another log (its identity differs), or a generation's
/// checkpoint past the log's head (the log was cut back or replaced by an
/// older copy). Their rows would tell of events the log does not hold, and
/// their runners would skip the new events up to the checkpoint.
fn not_from_this_log(
    db: &sled::Db,
    store: &dyn EventStore,
) -> Result<Option<String>, ProjectionError> {
    let meta = db.open_tree("meta").store()?;
    if let (Some(stored), Some(id)) = (meta.get(LOG_IDENTITY_KEY).store()?, store.identity()) {
        if stored.as_ref() != id.0.as_bytes() {
            return Ok(Some("built from another log".into()));
        }
    }
    let head = store.head_position();
    for name in db.tree_names() {
        // Generation trees only: `<projection>/<tenant>/<number>`.
        if name.iter().filter(|&&b| b == b'/').count() != 2 {
            continue;
        }
        let tree = db.open_tree(&name).store()?;
        // A checkpoint that does not decode is the runner's to report.
        if let Ok(Some(checkpoint)) = runner::read_checkpoint(&tree) {
            if head.is_none_or(|h| checkpoint > h) {
                return Ok(Some(format!(
                    "a checkpoint (position {checkpoint}) is past the log's head ({})",
                    head.map_or_else(|| "empty".to_string(), |h| format!("position {h}"))
                )));
            }
        }
    }
    Ok(None)
}

impl ProjectionHost {
    /// A host on a sled database in `dir` (created if absent) — set aside
    /// and started afresh, every projection rebuilt from the log, if it is
    /// ahead of the log, of another log, or damaged (sled failing or
    /// panicking as it opens; [`ProjectionHost::rebuilt_at_open`]) — applying up
    /// to `batch_size` events per batch (one sled batch with the
    /// checkpoint) when following the live log; a runner catching up or
    /// rebuilding applies up to 128 times as many at once, so that each
    /// page is written fewer times.
    ///
    /// Errors: [`ProjectionError::Store`]; [`ProjectionError::InvalidName`] /
    /// [`ProjectionError::DuplicateName`] for bad registrations.
    pub fn open(
        dir: impl AsRef<Path>,
        store: Arc<dyn EventStore>,
        projections: Vec<Arc<dyn Projection>>,
        batch_size: usize,
    ) -> Result<Self, ProjectionError> {
        Self::open_with_cache(dir, store, projections, batch_size, 64 * 1024 * 1024)
    }

    /// [`ProjectionHost::open`] keeping up to `cache_bytes` of the database
    /// in sled's page cache.
    ///
    /// Errors: as [`ProjectionHost::open`].
    pub fn open_with_cache(
        dir: impl AsRef<Path>,
        store: Arc<dyn EventStore>,
        projections: Vec<Arc<dyn Projection>>,
        batch_size: usize,
        cache_bytes: u64,
    ) -> Result<Self, ProjectionError> {
        let (db, rebuilt) = crate::embedded::open_derived(
            dir.as_ref(),
            cache_bytes,
            crate::embedded::SEGMENT_BYTES,
            "projections",
            |db| not_from_this_log(db, &*store).map_err(|e| e.to_string()),
        )
        .map_err(|e| ProjectionError::Store(StoreError::new(e)))?;
        if let Some(id) = store.identity() {
            db.open_tree("meta")
                .store()?
                .insert(LOG_IDENTITY_KEY, id.0.as_bytes())
                .store()?;
        }
        let host = Self::with_db(db, store, projections, batch_size)?;
        *host.inner.rebuilt.lock().unwrap_or_else(|p| p.into_inner()) = rebuilt;
        Ok(host)
    }

    /// The rebuild opening this host started, if its database was found
    /// ahead of the log or built from another log (it was set aside and
    /// every projection is rebuilt from the log).
    pub fn rebuilt_at_open(&self) -> Option<DerivedRebuild> {
        self.inner
            .rebuilt
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A host on a temporary database (deleted when dropped) with a 64 MiB
    /// cache.
    pub fn temporary(
        store: Arc<dyn EventStore>,
        projections: Vec<Arc<dyn Projection>>,
        batch_size: usize,
    ) -> Result<Self, ProjectionError> {
        Self::temporary_with_cache(store, projections, batch_size, 64 * 1024 * 1024)
    }

    /// A host on a temporary database (deleted when dropped) keeping up to
    /// `cache_bytes` of it in memory.
    pub fn temporary_with_cache(
        store: Arc<dyn EventStore>,
        projections: Vec<Arc<dyn Projection>>,
        batch_size: usize,
        cache_bytes: u64,
    ) -> Result<Self, ProjectionError> {
        let db = sled::Config::new()
            .temporary(true)
            .cache_capacity(cache_bytes)
            .open()
            .store()?;
        Self::with_db(db, store, projections, batch_size)
    }

    /// A host on an open sled database, applying up to `batch_size` events
    /// per batch (one sled batch with the checkpoint) when following the
    /// live log; a runner catching up or rebuilding applies up to 128 times
    /// as many at once, so that each page is written fewer times.
    pub(crate) fn with_db(
        db: sled::Db,
        store: Arc<dyn EventStore>,
        projections: Vec<Arc<dyn Projection>>,
        batch_size: usize,
    ) -> Result<Self, ProjectionError> {
        let mut seen = std::collections::BTreeSet::new();
        for p in &projections {
            if !valid_name(p.name()) {
                return Err(ProjectionError::InvalidName(p.name().to_string()));
            }
            if !seen.insert(p.name().to_string()) {
                return Err(ProjectionError::DuplicateName(p.name().to_string()));
            }
        }
        let meta = db.open_tree("meta").store()?;
        Ok(ProjectionHost {
            inner: Arc::new(HostInner {
                db,
                meta,
                store,
                projections,
                runners: Mutex::default(),
                tasks: Mutex::default(),
                stopped_tenants: Mutex::default(),
                shutdown: watch::channel(false).0,
                batch_size: batch_size.max(1),
                commit_interval_us: std::sync::atomic::AtomicU64::new(
                    DEFAULT_COMMIT_INTERVAL.as_micros() as u64,
                ),
                rebuilt: Mutex::new(None),
            }),
        })
    }

    /// Sets how often, at most, a live runner commits (default
    /// [`DEFAULT_COMMIT_INTERVAL`]): longer writes each page fewer times
    /// under load. A query waiting for a position the runner has not
    /// reached makes it commit at once, so read-your-writes does not wait
    /// the interval out. Applies to runners started afterwards.
    pub fn set_commit_interval(&self, interval: std::time::Duration) {
        let us = u64::try_from(interval.as_micros()).unwrap_or(u64::MAX);
        self.inner
            .commit_interval_us
            .store(us, std::sync::atomic::Ordering::Relaxed);
    }

    /// The registered projections' names.
    pub fn names(&self) -> Vec<String> {
        self.inner
            .projections
            .iter()
            .map(|p| p.name().to_string())
            .collect()
    }

    /// Tenants this database has projections for.
    pub fn known_tenants(&self) -> Vec<TenantId> {
        self.inner
            .meta
            .scan_prefix(b"t\0")
            .keys()
            .filter_map(|k| k.ok())
            .filter_map(|k| TenantId::new(String::from_utf8_lossy(&k[2..])).ok())
            .collect()
    }

    /// Starts the runners of every known tenant (needs a Tokio runtime),
    /// except those stopped by [`ProjectionHost::stop_tenant`].
    pub fn start_known(&self) -> Result<(), ProjectionError> {
        for tenant in self.known_tenants() {
            match self.ensure(&tenant) {
                Ok(()) | Err(ProjectionError::TenantStopped { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Stops the tenant's runners (when its tenant is suspended): each
    /// settles the batch it has in flight, records its checkpoint and
    /// ends; this waits for them. Until [`ProjectionHost::resume_tenant`],
    /// no runner of the tenant starts ([`ProjectionHost::ensure`], queries
    /// and waits answer [`ProjectionError::TenantStopped`]). The read models
    /// stay as they are, and resume from their checkpoints. Idempotent;
    /// works before any runner started (it only bars them then).
    pub async fn stop_tenant(&self, tenant: &TenantId) {
        self.inner
            .stopped_tenants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tenant.clone());
        let stopping: Vec<Arc<Runner>> = {
            let mut runners = self.inner.runners.lock().unwrap_or_else(|p| p.into_inner());
            let keys: Vec<(String, TenantId)> = runners
                .keys()
                .filter(|(_, t)| t == tenant)
                .cloned()
                .collect();
            keys.iter().filter_map(|k| runners.remove(k)).collect()
        };
        for runner in &stopping {
            // A runner whose task has already ended has dropped its receiver.
            let _ = runner.control.send(Control::Stop);
        }
        let tasks: Vec<JoinHandle<()>> = {
            let mut all = self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner());
            let (mine, others): (Vec<_>, Vec<_>) = std::mem::take(&mut *all)
                .into_iter()
                .partition(|(t, _)| t == tenant);
            *all = others;
            mine.into_iter().map(|(_, task)| task).collect()
        };
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Lets the tenant's runners start again after
    /// [`ProjectionHost::stop_tenant`] (they start at the next
    /// [`ProjectionHost::ensure`], from their checkpoints).
    pub fn resume_tenant(&self, tenant: &TenantId) {
        self.inner
            .stopped_tenants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(tenant);
    }

    /// Whether the tenant's runners are stopped ([`ProjectionHost::stop_tenant`]).
    pub fn is_stopped(&self, tenant: &TenantId) -> bool {
        self.inner
            .stopped_tenants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(tenant)
    }

    /// Starts the tenant's runners if they are not running (needs a Tokio
    /// runtime). Cheap when they are.
    ///
    /// Errors: [`ProjectionError::ShutDown`]; [`ProjectionError::Store`];
    /// [`ProjectionError::TenantStopped`] for a tenant stopped by
    /// [`ProjectionHost::stop_tenant`].
    pub fn ensure(&self, tenant: &TenantId) -> Result<(), ProjectionError> {
        if *self.inner.shutdown.borrow() {
            return Err(ProjectionError::ShutDown);
        }
        let mut runners = self.inner.runners.lock().unwrap_or_else(|p| p.into_inner());
        // Checked under the runners' lock: `stop_tenant` marks the tenant
        // before it takes that lock, so no runner starts after it has run.
        if self.is_stopped(tenant) {
            return Err(ProjectionError::TenantStopped {
                tenant: tenant.clone(),
            });
        }
        if self
            .inner
            .projections
            .iter()
            .all(|p| runners.contains_key(&(p.name().to_string(), tenant.clone())))
        {
            return Ok(());
        }
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| store_err("projection runners need a Tokio runtime"))?;
        self.inner.meta.insert(tenant_key(tenant), &[]).store()?;
        for projection in &self.inner.projections {
            let key = (projection.name().to_string(), tenant.clone());
            if runners.contains_key(&key) {
                continue;
            }
            let (runner, ctx) = self.prepare(Arc::clone(projection), tenant)?;
            runners.insert(key, runner);
            let task = handle.spawn(runner::run(ctx));
            self.inner
                .tasks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((tenant.clone(), task));
        }
        Ok(())
    }

    /// Rings the tenant's runner of `name`, if it runs: a live runner
    /// waiting out its commit interval commits what it has at once. For
    /// work other parts of the engine act on (the orchestration
    /// projection's hand-off of service tasks and timers), which must not
    /// wait for the interval any more than a reader waiting for a
    /// position does. Cheap; does nothing for a runner not started.
    pub(crate) fn hurry(&self, name: &str, tenant: &TenantId) {
        let runner = self
            .inner
            .runners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(name.to_string(), tenant.clone()))
            .cloned();
        if let Some(runner) = runner {
            runner.hurry.notify_one();
        }
    }

    /// Decides the runner's generations from the `meta` tree (resuming a
    /// rebuild a crash interrupted) and drops trees no record refers to.
    fn prepare(
        &self,
        projection: Arc<dyn Projection>,
        tenant: &TenantId,
    ) -> Result<(Arc<Runner>, RunnerCtx), ProjectionError> {
        let inner = &self.inner;
        let name = projection.name().to_string();
        let key = meta_key(&name, tenant);
        let mut record: MetaRecord = match inner.meta.get(&key).store()? {
            Some(bytes) => rmp_serde::from_slice(&bytes).unwrap_or_default(),
            None => MetaRecord::default(),
        };
        // Generations stored in another layout cannot be read: rebuild them.
        for slot in [&mut record.active, &mut record.building] {
            if let Some(g) = *slot {
                if Rows::open(&inner.db, &tree_name(&name, tenant, g.number))
                    .store()?
                    .is_none()
                {
                    *slot = None;
                }
            }
        }
        let version = projection.version();
        if record.building.is_some_and(|g| g.version != version) {
            record.building = None;
        }
        // An older generation this version can read keeps serving (frozen)
        // while this version builds its own: an upgrade with no gap.
        let frozen = match record.active {
            Some(g) if g.version != version && projection.can_serve(g.version) => {
                if record.building.is_none() {
                    record.building = Some(GenRef {
                        number: inner.db.generate_id().store()?,
                        version,
                    });
                }
                true
            }
            Some(g) if g.version != version => {
                record.active = None;
                false
            }
            _ => false,
        };
        if record.active.is_none() {
            // A rebuild of this version that was under way becomes the
            // active generation; otherwise start one from the beginning.
            record.active = match record.building.take() {
                Some(b) => Some(b),
                None => Some(GenRef {
                    number: inner.db.generate_id().store()?,
                    version,
                }),
            };
        }
        inner
            .meta
            .insert(&key, rmp_serde::to_vec(&record).map_err(store_err)?)
            .store()?;
        // Drop the trees of generations no longer recorded.
        let prefix = format!("{name}/{tenant}/");
        let keep: Vec<String> = [record.active, record.building]
            .into_iter()
            .flatten()
            .map(|g| tree_name(&name, tenant, g.number))
            .collect();
        for t in inner.db.tree_names() {
            let t = String::from_utf8_lossy(&t).to_string();
            if t.starts_with(&prefix) && !keep.contains(&t) {
                inner.db.drop_tree(t.as_bytes()).store()?;
            }
        }
        let open = |g: GenRef| -> Result<Arc<Generation>, ProjectionError> {
            let rows = Rows::open(&inner.db, &tree_name(&name, tenant, g.number))
                .store()?
                .ok_or_else(|| store_err("a generation's tree has another layout"))?;
            Ok(Arc::new(Generation {
                number: g.number,
                version: g.version,
                rows,
            }))
        };
        let active = match record.active {
            Some(g) => open(g)?,
            None => return Err(store_err("no active generation")),
        };
        let building = record.building.map(open).transpose()?;
        // Until the runner's first report: where the trees stand.
        let checkpoint = runner::read_checkpoint(active.rows.tree()).ok().flatten();
        let rebuild = building.as_ref().map(|b| RebuildStatus {
            version: b.version,
            generation: b.number,
            position: runner::read_checkpoint(b.rows.tree()).ok().flatten(),
            events_per_second: 0.0,
            fault: None,
        });
        let (control, control_rx) = mpsc::unbounded_channel();
        let runner = Arc::new(Runner {
            name: name.clone(),
            tenant: tenant.clone(),
            serving: RwLock::new(Some(Arc::clone(&active))),
            progress: watch::channel(Progress::default()).0,
            status: Mutex::new(ProjectionStatus {
                projection: name,
                tenant: tenant.clone(),
                version: active.version,
                generation: active.number,
                state: if frozen {
                    RunState::Rebuilding
                } else {
                    RunState::CatchingUp
                },
                position: checkpoint,
                reached: checkpoint,
                head: inner.store.head_position(),
                lag: 0,
                events_per_second: 0.0,
                rebuild,
            }),
            control,
            hurry: tokio::sync::Notify::new(),
        });
        let ctx = RunnerCtx {
            runner: Arc::clone(&runner),
            store: Arc::clone(&inner.store),
            db: inner.db.clone(),
            meta: inner.meta.clone(),
            meta_key: key,
            projection: Arc::clone(&projection),
            active,
            frozen,
            building: building.map(|b| (b, projection)),
            control: control_rx,
            shutdown: inner.shutdown.subscribe(),
            batch_size: inner.batch_size,
            commit_interval: std::time::Duration::from_micros(
                inner
                    .commit_interval_us
                    .load(std::sync::atomic::Ordering::Relaxed),
            ),
        };
        Ok((runner, ctx))
    }

    fn runner(&self, name: &str, tenant: &TenantId) -> Result<Arc<Runner>, ProjectionError> {
        self.ensure(tenant)?;
        self.inner
            .runners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(name.to_string(), tenant.clone()))
            .cloned()
            .ok_or_else(|| ProjectionError::UnknownProjection {
                name: name.to_string(),
                known: self.names(),
            })
    }

    /// The tree a query of `name` for `tenant` should read, once the
    /// consistency asked for holds.
    ///
    /// Errors: [`QueryError::Timeout`]; [`QueryError::Faulted`] when waiting
    /// on a faulted projection; [`QueryError::NotReady`];
    /// [`QueryError::Projection`] for an unknown projection.
    pub async fn read(
        &self,
        name: &str,
        tenant: &TenantId,
        consistency: Freshness,
    ) -> Result<Arc<Generation>, QueryError> {
        if let Freshness::AtLeast { position, timeout } = consistency {
            self.wait_for(name, tenant, position, timeout).await?;
        }
        let runner = self.runner(name, tenant)?;
        let serving = runner
            .serving
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        serving.ok_or_else(|| QueryError::NotReady {
            projection: name.to_string(),
        })
    }

    /// Waits until the tenant's projection `name` has reached `position`.
    ///
    /// Errors: [`QueryError::Timeout`]; [`QueryError::Faulted`] if it is
    /// (or becomes) faulted before reaching it.
    pub async fn wait_for(
        &self,
        name: &str,
        tenant: &TenantId,
        position: GlobalPosition,
        timeout: Duration,
    ) -> Result<(), QueryError> {
        let runner = self.runner(name, tenant)?;
        let mut rx = runner.progress.subscribe();
        let reached = |p: &Progress| p.reached.is_some_and(|r| r >= position);
        if !reached(&rx.borrow()) {
            // Someone waits: the runner need not gather more for its commit.
            runner.hurry.notify_one();
        }
        let waited = tokio::time::timeout(
            timeout,
            rx.wait_for(|p| reached(p) || p.fault.is_some() || p.stopped),
        )
        .await
        .map(|r| r.map(|_| ()));
        let progress = rx.borrow().clone();
        if reached(&progress) {
            return Ok(());
        }
        if let Some((at, error)) = progress.fault {
            return Err(QueryError::Faulted {
                projection: name.to_string(),
                position: at,
                error,
            });
        }
        if progress.stopped || matches!(waited, Ok(Err(_))) {
            return Err(ProjectionError::ShutDown.into());
        }
        Err(QueryError::Timeout {
            projection: name.to_string(),
            reached: progress.reached,
            wanted: position,
        })
    }

    /// Waits until every projection of the tenant has reached `position`.
    ///
    /// Errors: as [`ProjectionHost::wait_for`].
    pub async fn wait_all(
        &self,
        tenant: &TenantId,
        position: GlobalPosition,
        timeout: Duration,
    ) -> Result<(), QueryError> {
        for name in self.names() {
            self.wait_for(&name, tenant, position, timeout).await?;
        }
        Ok(())
    }

    /// The status of every projection of the tenant (starting them if needed).
    ///
    /// Errors: [`ProjectionError::ShutDown`]; [`ProjectionError::Store`].
    pub fn status(&self, tenant: &TenantId) -> Result<Vec<ProjectionStatus>, ProjectionError> {
        self.ensure(tenant)?;
        Ok(self.running_status(tenant))
    }

    /// The status of the tenant's runners that are running, without
    /// starting any (empty if none is).
    pub fn running_status(&self, tenant: &TenantId) -> Vec<ProjectionStatus> {
        let head = self.inner.store.head_position();
        let runners = self.inner.runners.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<ProjectionStatus> = runners
            .values()
            .filter(|r| &r.tenant == tenant)
            .map(|r| {
                let mut s = r.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
                s.head = head;
                s.lag = lag(s.reached, head);
                s
            })
            .collect();
        out.sort_by(|a, b| a.projection.cmp(&b.projection));
        out
    }

    /// Rebuilds the tenant's projection `name` from position 0 into a fresh
    /// generation while the current one keeps serving; swaps when caught up.
    /// With `replacement`, the new generation is built by that projection (a
    /// new version under the same name), which then replaces the old one. A
    /// rebuild already under way is abandoned and started again.
    ///
    /// Errors: [`ProjectionError::UnknownProjection`] (also for a replacement
    /// whose name differs); [`ProjectionError::ShutDown`].
    pub fn rebuild(
        &self,
        name: &str,
        tenant: &TenantId,
        replacement: Option<Arc<dyn Projection>>,
    ) -> Result<(), ProjectionError> {
        if let Some(r) = &replacement {
            if r.name() != name {
                return Err(ProjectionError::UnknownProjection {
                    name: r.name().to_string(),
                    known: vec![name.to_string()],
                });
            }
        }
        let runner = self.runner(name, tenant)?;
        runner
            .control
            .send(Control::Rebuild(replacement))
            .map_err(|_| ProjectionError::ShutDown)
    }

    /// Resumes a faulted projection (and a faulted rebuild) from its checkpoint.
    ///
    /// Errors: [`ProjectionError::UnknownProjection`]; [`ProjectionError::ShutDown`].
    pub fn retry(&self, name: &str, tenant: &TenantId) -> Result<(), ProjectionError> {
        let runner = self.runner(name, tenant)?;
        runner
            .control
            .send(Control::Retry)
            .map_err(|_| ProjectionError::ShutDown)
    }

    /// Whether the database still takes writes: a probe write and a flush
    /// (blocking I/O: call it off the async workers). sled takes no write
    /// at all after one failed (a full disk with no reserve left, an I/O
    /// error) until the database is opened again, so retrying its runners
    /// cannot help; such a database must be replaced (issue 19).
    ///
    /// Errors: [`ProjectionError::Store`] naming sled's error (or its
    /// panic, caught here).
    pub fn check_writable(&self) -> Result<(), ProjectionError> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.inner.meta.insert(PROBE_KEY, &[]).store()?;
            self.inner.db.flush().store()?;
            Ok(())
        }))
        .unwrap_or_else(|_| Err(store_err("the storage library panicked on a probe write")))
    }

    /// The tenants whose runners run, and those stopped
    /// ([`ProjectionHost::stop_tenant`]).
    pub(crate) fn tenants(&self) -> (Vec<TenantId>, Vec<TenantId>) {
        let running: std::collections::BTreeSet<TenantId> = self
            .inner
            .runners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .map(|(_, t)| t.clone())
            .collect();
        let stopped = self
            .inner
            .stopped_tenants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        (running.into_iter().collect(), stopped)
    }

    /// Stops every runner for good and waits for them, without flushing:
    /// the database is being replaced. If `leak`, its sled handle is never
    /// dropped: sled 0.34 waits for ever in its drop after a failed write.
    pub(crate) async fn halt(&self, leak: bool) {
        self.inner.shutdown.send_replace(true);
        let tasks: Vec<(TenantId, JoinHandle<()>)> =
            std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for (_, t) in tasks {
            let _ = t.await;
        }
        if leak {
            std::mem::forget(self.inner.db.clone());
        }
    }

    /// Records that this host's database replaces one set aside while the
    /// engine ran ([`ProjectionHost::rebuilt_at_open`] then tells it).
    pub(crate) fn set_rebuilt(&self, rebuild: DerivedRebuild) {
        *self.inner.rebuilt.lock().unwrap_or_else(|p| p.into_inner()) = Some(rebuild);
    }

    /// Stops every runner, waits for them, and flushes the database.
    pub async fn shutdown(&self) -> Result<(), ProjectionError> {
        self.inner.shutdown.send_replace(true);
        let tasks: Vec<(TenantId, JoinHandle<()>)> =
            std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for (_, t) in tasks {
            let _ = t.await;
        }
        self.inner.db.flush_async().await.store()?;
        Ok(())
    }
}

impl Drop for HostInner {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

pub(crate) fn lag(reached: Option<GlobalPosition>, head: Option<GlobalPosition>) -> u64 {
    match (reached, head) {
        (_, None) => 0,
        (None, Some(h)) => h.0 + 1,
        (Some(r), Some(h)) => h.0.saturating_sub(r.0),
    }
}

pub(crate) fn store_err(e: impl Into<super::error::BoxError>) -> ProjectionError {
    ProjectionError::Store(StoreError::new(e))
}
