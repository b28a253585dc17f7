//! Reads from the projections — case view, timeline, case search, work queue,
//! deadlines — projection status and operations, and the work-queue actions
//! (claim, reassign to a person or a team), which go through [`Engine::execute`].
//!
//! The engine owns one [`ProjectionHost`] with the built-in projections:
//! `<data>/projections` for [`Engine::open`], a temporary sled database
//! otherwise. Runners start when the engine opens (inside a Tokio runtime;
//! else at the first engine call that runs in one) for every tenant the
//! projection database knows, and for a new tenant at its first write or
//! query — so views follow the log with no reader. Every query is scoped to
//! the principal's tenant (it reads that tenant's trees only) and to their
//! clearance.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;

use super::{CaseOutcome, CommandContext, Engine, EngineError, Inner, ADMIN_ROLE};
use crate::audit::{ReadContext, ReadKind, Subject};
use crate::case::{CaseCommand, CaseError, InstanceId, ItemRef};
use crate::definition::CaseDefinition;
use crate::log::codec::DomainEvent;
use crate::log::{Direction, ExpectedVersion, GlobalPosition, Metadata, Source, TenantId};
use crate::projection::builtin::{self, DefinitionResolver, ResolveError};
use crate::projection::calendar::{self, CalendarEvent, WorkingCalendar};
use crate::projection::query::{
    CaseSummary, DeadlineEntry, DeadlineQuery, Page, PageRequest, ProjectedCase, SearchQuery,
    TimelineEntry, WorkItem, WorkQueueQuery,
};
use crate::projection::{
    cases, timeline, Consistency, Freshness, ProjectionError, ProjectionHost, ProjectionStatus,
    QueryError, RunState,
};
use crate::security::{Classification, PositionToken, Principal};

/// Where the engine's projections live, opened on first use — and replaced
/// by a fresh database, rebuilt from the log, when the one in use is found
/// damaged or stops taking writes ([`Engine::replace_projections`]).
#[derive(Default)]
pub(super) struct ProjectionSlot {
    dir: Option<PathBuf>,
    host: std::sync::RwLock<Option<ProjectionHost>>,
    opening: std::sync::Mutex<()>,
    /// One replacement at a time; when the last one was made.
    replacing: tokio::sync::Mutex<Option<std::time::Instant>>,
    /// What opening the first database found and rebuilt.
    at_open: std::sync::Mutex<Option<crate::log::DerivedRebuild>>,
    /// The databases replaced while the engine ran, oldest first.
    replaced: std::sync::Mutex<Vec<crate::log::DerivedRebuild>>,
    /// The log's head when the database in use replaced a damaged one (or
    /// one set aside at open): a read that asks for no position waits for
    /// the rebuild to pass it
    /// (or answers [`QueryError::Rebuilding`]) rather than serve a view
    /// that lacks cases it showed before.
    rebuilding_to: std::sync::Mutex<Option<GlobalPosition>>,
}

impl ProjectionSlot {
    /// Projections in a sled database in `dir`.
    pub(super) fn durable(dir: PathBuf) -> Self {
        ProjectionSlot {
            dir: Some(dir),
            ..ProjectionSlot::default()
        }
    }

    /// The host in use, if it has been opened.
    pub(super) fn current(&self) -> Option<ProjectionHost> {
        self.host.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// What opening the first database found and rebuilt (a replacement
    /// made later is in [`ProjectionSlot::replaced`]).
    pub(super) fn rebuilt_at_open(&self) -> Option<crate::log::DerivedRebuild> {
        self.at_open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The databases replaced while the engine ran.
    pub(super) fn replaced(&self) -> Vec<crate::log::DerivedRebuild> {
        self.replaced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// How long a replaced projection database is kept before damage found
/// again replaces it again: damage that a rebuild from the log brings
/// back is a defect to report, not a reason to rebuild in a loop.
const REPLACE_AT_MOST_EVERY: Duration = Duration::from_secs(30);

/// How long a read that asks for no position waits for a rebuild after a
/// replacement before it answers [`QueryError::Rebuilding`].
const REBUILD_READ_WAIT: Duration = Duration::from_secs(2);

/// Resolves definitions through the engine without keeping it alive.
struct EngineDefinitions(Weak<Inner>);

#[async_trait]
impl DefinitionResolver for EngineDefinitions {
    async fn definition(
        &self,
        tenant: &TenantId,
        key: &str,
        version: u32,
    ) -> Result<Arc<CaseDefinition>, ResolveError> {
        let inner = self
            .0
            .upgrade()
            .ok_or_else(|| ResolveError::new(key, version, "the engine has been dropped"))?;
        Engine { inner }
            .definition_for(tenant, key, Some(version))
            .await
            .map_err(|e| ResolveError::new(key, version, e))
    }

    async fn open_case_event(
        &self,
        event: &crate::log::RecordedEvent,
    ) -> Result<crate::records::sealing::Opened, crate::records::sealing::SealError> {
        match self.0.upgrade() {
            Some(inner) => inner.sealer.open(event).await,
            None => Err(crate::records::kms::KmsError::Io {
                path: "key store".into(),
                detail: "the engine has been dropped".into(),
            }
            .into()),
        }
    }
}

/// Deletes the projection and snapshot databases set aside in `data` for
/// diagnosis (`<name>.aside-<secs>`): they hold case data in the clear.
fn remove_set_aside(data: &std::path::Path) -> Result<(), String> {
    let entries = match std::fs::read_dir(data) {
        Ok(e) => e,
        Err(e) => return Err(format!("listing {}: {e}", data.display())),
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("projections.aside-") || name.starts_with("snapshots.aside-") {
            std::fs::remove_dir_all(entry.path())
                .map_err(|e| format!("deleting {}: {e}", entry.path().display()))?;
        }
    }
    Ok(())
}

fn unknown_case(principal: &Principal, case_id: &str) -> QueryError {
    QueryError::UnknownCase {
        tenant: principal.tenant.clone(),
        case_id: case_id.to_string(),
    }
}

fn require_admin(principal: &Principal, action: &str) -> Result<(), QueryError> {
    if principal.has_role(ADMIN_ROLE) {
        return Ok(());
    }
    Err(QueryError::Forbidden {
        principal: principal.to_string(),
        action: action.into(),
        needed: vec![ADMIN_ROLE.into()],
    })
}

impl Engine {
    /// The engine's projection host, unscoped: every tenant's read models,
    /// their rebuilds and retries. For a platform administrator only
    /// ([`crate::security::Principal::platform_administrator`]); a tenant's
    /// administrator uses [`Engine::projection_status`],
    /// [`Engine::rebuild_projection`] and [`Engine::retry_projection`],
    /// which act on their own tenant only.
    ///
    /// The host returned shares the engine's stores, like
    /// [`Engine::store`]: the data directory stays open while it is held,
    /// and after a replacement of a damaged database
    /// ([`Engine::derived_rebuilds`]) it is the old one, stopped: ask again.
    ///
    /// Errors: [`QueryError::Access`] unless the caller is a platform
    /// administrator; [`QueryError::Projection`] if its database cannot be
    /// opened.
    pub fn projections(&self, platform_admin: &Principal) -> Result<ProjectionHost, QueryError> {
        Self::require_platform_admin(platform_admin, "use the unscoped projection host")?;
        self.projection_host()
    }

    /// The projection host, opening its database on first use.
    fn projection_host(&self) -> Result<ProjectionHost, QueryError> {
        let slot = &self.inner.projections;
        if let Some(h) = slot.current() {
            return Ok(h);
        }
        let _guard = slot.opening.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = slot.current() {
            return Ok(h);
        }
        let head = self.raw_store().head_position();
        let host = self.new_projection_host()?;
        let rebuilt = host.rebuilt_at_open();
        if rebuilt.is_some() {
            // Set aside at open: reads wait for the rebuild as after a
            // replacement, rather than serve views that lack cases.
            *slot.rebuilding_to.lock().unwrap_or_else(|p| p.into_inner()) = head;
        }
        *slot.at_open.lock().unwrap_or_else(|p| p.into_inner()) = rebuilt;
        *slot.host.write().unwrap_or_else(|p| p.into_inner()) = Some(host.clone());
        Ok(host)
    }

    /// A host with the built-in projections (and the configured ones) on
    /// the slot's folder, or on a temporary database.
    fn new_projection_host(&self) -> Result<ProjectionHost, ProjectionError> {
        let resolver = Arc::new(EngineDefinitions(Arc::downgrade(&self.inner)));
        let mut projections = builtin::projections(resolver);
        projections.push(Arc::new(
            crate::orchestration::pending::OrchestrationProjection::new(self.hub_arc()),
        ));
        projections.push(Arc::new(
            crate::records::projection::NominalsProjection::new(
                Arc::new(EngineDefinitions(Arc::downgrade(&self.inner))),
                self.inner.positions.clone(),
            ),
        ));
        projections.extend(self.inner.config.projections.iter().cloned());
        let batch = self.inner.config.projection_batch;
        let host = match &self.inner.projections.dir {
            Some(dir) => ProjectionHost::open_with_cache(
                dir,
                self.raw_store(),
                projections,
                batch,
                self.inner.config.caches.projections_bytes,
            )?,
            None => ProjectionHost::temporary(self.raw_store(), projections, batch)?,
        };
        host.set_commit_interval(self.inner.config.projection_commit_interval);
        Ok(host)
    }

    /// Replaces the projection database in use by a fresh one rebuilt from
    /// the log in the background (issue 19: derived state is disposable):
    /// the old one is set aside for diagnosis (`projections.aside-<secs>`
    /// with a `WHY` file saying `reason`), its runners stop, and the new
    /// host's runners start for the same tenants (suspended ones stay
    /// stopped). Until a tenant's projections pass the log's head as it was
    /// now, its reads that ask for no position wait a moment and then
    /// answer [`QueryError::Rebuilding`]. Logged on `casebook::recovery`
    /// and listed by [`Engine::derived_rebuilds`].
    ///
    /// Done at most once per [`REPLACE_AT_MOST_EVERY`] unless `force`, and
    /// never twice at once (a second call while one runs returns at once).
    ///
    /// With `purge` (an erasure, [`Engine::purge_derived`]) it waits for a
    /// replacement under way instead of returning, closes the old database
    /// and deletes its folder instead of keeping it: sled never overwrites
    /// old bytes in place, so only a fresh database leaves none behind.
    ///
    /// Errors: [`QueryError::Projection`] if the old database cannot be
    /// set aside or a fresh one cannot be opened (the old one then stays in
    /// use, its folder back in place), or with `purge` if its folder cannot
    /// be deleted.
    pub(crate) async fn replace_projections(
        &self,
        reason: String,
        force: bool,
        purge: bool,
    ) -> Result<(), QueryError> {
        let slot = &self.inner.projections;
        let mut last = if purge {
            slot.replacing.lock().await
        } else {
            let Ok(last) = slot.replacing.try_lock() else {
                return Ok(());
            };
            last
        };
        if !force && last.is_some_and(|at| at.elapsed() < REPLACE_AT_MOST_EVERY) {
            return Ok(());
        }
        let Some(old) = slot.current() else {
            return Ok(());
        };
        let head = self.raw_store().head_position();
        let writable = {
            let old = old.clone();
            tokio::task::spawn_blocking(move || old.check_writable().is_ok())
                .await
                .unwrap_or(false)
        };
        // Renaming, syncing the folder and opening sled are blocking I/O.
        let engine = self.clone();
        let why = reason.clone();
        let (host, set_aside) = tokio::task::spawn_blocking(move || engine.fresh_projections(&why))
            .await
            .map_err(|e| {
                QueryError::Projection(ProjectionError::Store(crate::projection::StoreError::new(
                    e.to_string(),
                )))
            })??;
        let rebuild = crate::log::DerivedRebuild {
            store: "projections".into(),
            reason: reason.clone(),
            set_aside: if purge { None } else { set_aside.clone() },
        };
        host.set_rebuilt(rebuild.clone());
        let (followed, stopped) = old.tenants();
        for tenant in &stopped {
            host.stop_tenant(tenant).await;
        }
        *slot.rebuilding_to.lock().unwrap_or_else(|p| p.into_inner()) = head;
        *slot.host.write().unwrap_or_else(|p| p.into_inner()) = Some(host.clone());
        old.halt(!writable).await;
        if writable {
            // Its last handles may close files: off the async workers.
            let closed = tokio::task::spawn_blocking(move || drop(old));
            if purge {
                let _ = closed.await;
            }
        }
        if let (true, Some(dir)) = (purge, set_aside) {
            tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()))
                .map_err(|e| {
                    QueryError::Projection(ProjectionError::Store(
                        crate::projection::StoreError::new(format!(
                            "deleting the purged projection database: {e}"
                        )),
                    ))
                })?;
        }
        for tenant in followed.iter().filter(|t| !stopped.contains(t)) {
            if let Err(e) = host.ensure(tenant) {
                tracing::warn!(target: "casebook::recovery", %tenant, "restarting projections after replacing their database: {e}");
            }
        }
        tracing::warn!(
            target: "casebook::recovery",
            reason = %rebuild.reason,
            set_aside = ?rebuild.set_aside,
            "projection database replaced; rebuilding every projection from the log"
        );
        slot.replaced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(rebuild);
        *last = Some(std::time::Instant::now());
        Ok(())
    }

    /// Purges every copy of case data the engine derived (an erasure, see
    /// `crate::records::erasure`): the cached case states, every snapshot
    /// (a fresh database, the old folder deleted, after the snapshot
    /// writers in flight finish), the projection database (replaced by a
    /// fresh one rebuilt from the log, the old folder deleted) and any
    /// derived database set aside earlier for diagnosis.
    ///
    /// Errors: [`QueryError::Projection`] if a database cannot be replaced
    /// or deleted.
    pub(crate) async fn purge_derived(&self, reason: String) -> Result<(), QueryError> {
        let store_error = |e: String| {
            QueryError::Projection(ProjectionError::Store(crate::projection::StoreError::new(
                e,
            )))
        };
        let clear_states = || {
            *self.inner.states.lock().unwrap_or_else(|p| p.into_inner()) =
                crate::recent::Recent::new(self.inner.config.cached_cases);
        };
        clear_states();
        {
            // No snapshot write may land in the fresh database with data
            // read before the erasure: wait for those in flight.
            let _writers = self
                .inner
                .snapshotting
                .acquire_many(super::SNAPSHOT_WRITERS as u32)
                .await
                .map_err(|e| store_error(e.to_string()))?;
            let snapshots = Arc::clone(&self.inner.snapshots);
            tokio::task::spawn_blocking(move || snapshots.purge())
                .await
                .map_err(|e| store_error(e.to_string()))?
                .map_err(|e| store_error(e.to_string()))?;
        }
        self.replace_projections(reason, true, true).await?;
        if let Some(data) = self.inner.projections.dir.as_ref().and_then(|d| d.parent()) {
            let data = data.to_path_buf();
            tokio::task::spawn_blocking(move || remove_set_aside(&data))
                .await
                .map_err(|e| store_error(e.to_string()))?
                .map_err(store_error)?;
        }
        // A command that loaded its case before the erasure may have
        // cached its state since.
        clear_states();
        Ok(())
    }

    /// Sets the projection database aside (saying `reason`) and opens a
    /// host on a fresh one, under the slot's opening lock; if no fresh one
    /// can be made, the old folder is put back. A temporary database is
    /// simply replaced. Blocking.
    fn fresh_projections(
        &self,
        reason: &str,
    ) -> Result<(ProjectionHost, Option<PathBuf>), QueryError> {
        let slot = &self.inner.projections;
        let _guard = slot.opening.lock().unwrap_or_else(|p| p.into_inner());
        let Some(dir) = &slot.dir else {
            return Ok((self.new_projection_host()?, None));
        };
        let kept = crate::embedded::set_aside(dir, reason).map_err(|e| {
            ProjectionError::Store(crate::projection::StoreError::new(format!(
                "setting the projection database {} aside: {e}",
                dir.display()
            )))
        })?;
        match self.new_projection_host() {
            Ok(host) => Ok((host, Some(kept))),
            Err(e) => {
                // Put it back: better the old one than none.
                let _ = std::fs::remove_dir_all(dir);
                let _ = std::fs::rename(&kept, dir);
                Err(e.into())
            }
        }
    }

    /// Reacts to a read's error: damage found in the projection database
    /// ([`QueryError::Damaged`]) starts its replacement in the background.
    pub(crate) fn on_read_error(&self, error: &QueryError) {
        if let QueryError::Damaged { what } = error {
            if tokio::runtime::Handle::try_current().is_ok() {
                let engine = self.clone();
                let reason = format!("damaged: {what}");
                tokio::spawn(async move {
                    if let Err(e) = engine.replace_projections(reason, false, false).await {
                        tracing::error!(target: "casebook::recovery", "replacing the damaged projection database: {e}");
                    }
                });
            }
        }
    }

    /// The derived stores replaced while the engine ran (damage found by a
    /// read, a database that stopped taking writes): the projections', then
    /// the snapshots', each oldest first; what opening did is in
    /// [`Engine::recovery_report`].
    ///
    /// Errors: [`crate::security::AccessError::NotPlatformAdministrator`]
    /// (it tells paths).
    pub fn derived_rebuilds(
        &self,
        platform_admin: &Principal,
    ) -> Result<Vec<crate::log::DerivedRebuild>, crate::security::AccessError> {
        Self::require_platform_admin(platform_admin, "read the derived stores' rebuilds")?;
        let mut all = self.inner.projections.replaced();
        if let Some(s) = &self.inner.sled_snapshots {
            all.extend(s.replaced());
        }
        Ok(all)
    }

    /// Starts the runners of every tenant the projection host knows but
    /// the `suspended` ones, which are stopped (part of [`Engine::start`]).
    ///
    /// Errors: [`ProjectionError`] if a runner cannot start.
    pub(super) async fn start_projections(
        &self,
        suspended: &[TenantId],
    ) -> Result<(), ProjectionError> {
        let host = self.open_projections()?;
        for tenant in suspended {
            host.stop_tenant(tenant).await;
        }
        host.start_known()
    }

    /// The projection host, opening its database if it is not open yet.
    pub(super) fn open_projections(&self) -> Result<ProjectionHost, ProjectionError> {
        self.projection_host().map_err(|e| match e {
            QueryError::Projection(p) => p,
            other => ProjectionError::Store(crate::projection::StoreError::new(other.to_string())),
        })
    }

    /// The projection host, once the engine runs.
    fn host(&self) -> Result<ProjectionHost, QueryError> {
        if !self.inner.started.load(Ordering::Acquire) {
            return Err(QueryError::Projection(ProjectionError::NotStarted));
        }
        self.projection_host()
    }

    /// Starts the runners of `tenant` after a write, once the engine runs
    /// (a failure here must not fail the write that succeeded: the runner's
    /// status and the next query report it).
    pub(crate) fn follow_tenant(&self, tenant: &TenantId) {
        if self.is_running() {
            if let Ok(host) = self.projection_host() {
                let _ = host.ensure(tenant);
            }
        }
    }

    /// Rings the tenant's orchestration runner: its next commit (the
    /// hand-off of new service tasks and timers to the dispatcher and
    /// workers) goes now, not after the commit interval.
    pub(crate) fn hurry_orchestration(&self, tenant: &TenantId) {
        if let Some(host) = self.inner.projections.current() {
            host.hurry(crate::orchestration::pending::NAME, tenant);
        }
    }

    /// Stops the projection runners and flushes their database (part of
    /// [`Engine::close`]).
    pub(super) async fn close_projections(&self) -> Result<(), ProjectionError> {
        match self.inner.projections.current() {
            Some(h) => h.shutdown().await,
            None => Ok(()),
        }
    }

    /// [`Engine::admit`] for a query: an access refusal keeps its kind; a
    /// registry that cannot be read is a log failure.
    pub(crate) async fn admit_query(&self, principal: &Principal) -> Result<(), QueryError> {
        self.admit(principal).await.map_err(|e| match e {
            EngineError::Access(a) => QueryError::Access(a),
            EngineError::Log(l) => QueryError::Projection(ProjectionError::Log(Arc::new(l))),
            other => QueryError::Corrupt(other.to_string()),
        })
    }

    async fn read_tree(
        &self,
        name: &str,
        principal: &Principal,
        consistency: Consistency,
    ) -> Result<Arc<crate::projection::Generation>, QueryError> {
        self.admit_query(principal).await?;
        let freshness = match consistency {
            Consistency::Eventual => Freshness::Eventual,
            Consistency::AtLeast { position, timeout } => {
                match self
                    .tenant_positions(&principal.tenant)
                    .decode_opt(position, "consistency.position")?
                {
                    Some(position) => Freshness::AtLeast { position, timeout },
                    None => Freshness::Eventual,
                }
            }
        };
        let host = self.host()?;
        if matches!(freshness, Freshness::Eventual) {
            self.await_rebuild(&host, name, &principal.tenant).await?;
        }
        host.read(name, &principal.tenant, freshness)
            .await
            .map_err(|e| self.scoped(&principal.tenant, e, consistency_token(consistency)))
    }

    /// The tenant's tree of projection `name` as it serves now (no wait):
    /// what the engine's own checks read (e.g. which subjects are
    /// restricted).
    ///
    /// Errors: [`QueryError::Projection`] before [`Engine::start`];
    /// [`QueryError::NotReady`]; the host's errors.
    pub(crate) async fn serving_tree(
        &self,
        name: &str,
        tenant: &TenantId,
    ) -> Result<Arc<crate::projection::Generation>, QueryError> {
        self.host()?.read(name, tenant, Freshness::Eventual).await
    }

    /// After the projection database was replaced, waits a moment for the
    /// tenant's projection `name` to pass the log's head as it was then.
    ///
    /// Errors: [`QueryError::Rebuilding`] if it has not.
    async fn await_rebuild(
        &self,
        host: &ProjectionHost,
        name: &str,
        tenant: &TenantId,
    ) -> Result<(), QueryError> {
        let slot = &self.inner.projections;
        let Some(target) = *slot.rebuilding_to.lock().unwrap_or_else(|p| p.into_inner()) else {
            return Ok(());
        };
        match host.wait_for(name, tenant, target, REBUILD_READ_WAIT).await {
            Ok(()) => Ok(()),
            Err(QueryError::Timeout { .. }) => Err(QueryError::Rebuilding {
                projection: name.to_string(),
            }),
            Err(e) => Err(e),
        }
    }

    /// The tree of projection `name` for `tenant`, once it has applied
    /// every event in the log when called (the tenant's own writes
    /// included): what a command decides on. Waits at most 10 s.
    ///
    /// Errors: [`QueryError::Lagging`] (with the tenant's token),
    /// [`QueryError::FaultedAt`], the host's errors.
    pub(crate) async fn caught_up_tree(
        &self,
        name: &str,
        tenant: &TenantId,
    ) -> Result<Arc<crate::projection::Generation>, QueryError> {
        let head = self.raw_store().head_position();
        let (freshness, wanted) = match head {
            Some(position) => (
                Freshness::AtLeast {
                    position,
                    timeout: Duration::from_secs(10),
                },
                self.tenant_positions(tenant).encode(position)?,
            ),
            None => (Freshness::Eventual, PositionToken::NONE),
        };
        self.host()?
            .read(name, tenant, freshness)
            .await
            .map_err(|e| self.scoped(tenant, e, wanted))
    }

    /// A host error as the tenant is told it: a wait's timeout and a fault
    /// carry the tenant's tokens, never global positions.
    fn scoped(&self, tenant: &TenantId, error: QueryError, wanted: PositionToken) -> QueryError {
        match error {
            QueryError::Timeout { projection, .. } => QueryError::Lagging { projection, wanted },
            QueryError::Faulted {
                projection,
                position,
                error,
            } => match self.tenant_positions(tenant).encode(position) {
                Ok(position) => QueryError::FaultedAt {
                    projection,
                    position,
                    error,
                },
                Err(e) => e.into(),
            },
            other => other,
        }
    }

    /// The case as the `cases` projection holds it, as `principal` may see
    /// it (one lookup). Fields above the reader's clearance are left out; a
    /// case above it reads as unknown.
    ///
    /// Errors: [`QueryError::UnknownCase`]; consistency errors
    /// ([`QueryError::Lagging`], [`QueryError::FaultedAt`]);
    /// [`QueryError::Damaged`] (the database is then replaced, and reads
    /// answer [`QueryError::Rebuilding`] until it is rebuilt);
    /// [`QueryError::Corrupt`].
    pub async fn case_view<'a>(
        &self,
        reader: impl Into<ReadContext<'a>>,
        case_id: &str,
        consistency: Consistency,
    ) -> Result<ProjectedCase, QueryError> {
        let reader = reader.into();
        let mut marking = None;
        let result = self
            .case_view_inner(&reader, case_id, consistency, &mut marking, true)
            .await
            .map(|(case, _)| case);
        self.audited(
            &reader,
            ReadKind::CaseView,
            Subject::case(case_id, marking),
            result,
        )
        .await
    }

    /// [`Engine::case_view`] unaudited, with what the case's restricted
    /// subjects withhold (left out of the view when `withhold`; only an
    /// evidential read passes `false`).
    pub(crate) async fn case_view_inner(
        &self,
        reader: &ReadContext<'_>,
        case_id: &str,
        consistency: Consistency,
        marking: &mut Option<Classification>,
        withhold: bool,
    ) -> Result<(ProjectedCase, crate::records::RestrictedCase), QueryError> {
        let principal = reader.principal;
        let (record, def, viewer) = self
            .case_for_reader(reader, case_id, consistency, marking)
            .await?;
        let restricted = self.withheld_in(&principal.tenant, &def, case_id).await;
        let erased = self.erased_in(principal, &def, case_id).await;
        let none = std::collections::BTreeSet::new();
        let withheld = if withhold { &restricted.fields } else { &none };
        match record.state.view_withholding(&def, &viewer, withheld) {
            Ok(mut view) => Ok((
                ProjectedCase {
                    view: {
                        view.erased = erased;
                        view
                    },
                    version: record.version,
                    position: self
                        .tenant_positions(&principal.tenant)
                        .encode(record.position)?,
                },
                restricted,
            )),
            Err(CaseError::InsufficientClearance { .. } | CaseError::WrongTenant { .. }) => {
                Err(unknown_case(principal, case_id))
            }
            Err(e) => Err(QueryError::Corrupt(e.to_string())),
        }
    }

    /// The case as the `cases` projection holds it, its definition, and the
    /// principal it is read as (see `audited::viewer`); a case the reader
    /// may not see reads as unknown.
    async fn case_for_reader(
        &self,
        reader: &ReadContext<'_>,
        case_id: &str,
        consistency: Consistency,
        marking: &mut Option<Classification>,
    ) -> Result<(cases::CaseRecord, Arc<CaseDefinition>, Principal), QueryError> {
        let principal = reader.principal;
        reader.check()?;
        let gen = self.read_tree(cases::NAME, principal, consistency).await?;
        let record = cases::load_case(&gen.rows, case_id)?
            .ok_or_else(|| unknown_case(principal, case_id))?;
        let Some(dref) = &record.state.definition else {
            return Err(unknown_case(principal, case_id));
        };
        *marking = Some(record.state.classification);
        let def = self
            .definition_for(&principal.tenant, dref.key.as_str(), Some(dref.version))
            .await
            .map_err(|e| QueryError::Corrupt(e.to_string()))?;
        let viewer = super::audited::viewer(reader, &def, record.state.classification, case_id)?;
        if !viewer.may_see(record.state.classification)
            || record.state.tenant.as_ref() != Some(&viewer.tenant)
        {
            return Err(unknown_case(principal, case_id));
        }
        Ok((record, def, viewer.into_owned()))
    }

    /// The discretionary items the reader could plan into the case now,
    /// each with whether its applicability rule holds
    /// ([`crate::case::plannable`]): what a user interface offers without
    /// trying each item. Read (and audited) like the case view.
    ///
    /// Errors: as [`Engine::case_view`].
    pub async fn plannable_items<'a>(
        &self,
        reader: impl Into<ReadContext<'a>>,
        case_id: &str,
        consistency: Consistency,
    ) -> Result<Vec<crate::case::PlannableItem>, QueryError> {
        let reader = reader.into();
        let mut marking = None;
        let result = self
            .case_for_reader(&reader, case_id, consistency, &mut marking)
            .await
            .map(|(record, def, viewer)| crate::case::plannable(&def, &record.state, &viewer));
        self.audited(
            &reader,
            ReadKind::CaseView,
            Subject::case(case_id, marking),
            result,
        )
        .await
    }

    /// A page of the open incidents of the principal's tenant (service
    /// invocations that failed for good and wait for
    /// `CaseCommand::RetryIncident`), those on cases and tasks within
    /// their clearance, ordered by case id then invocation. Like the queue
    /// and deadline scans, it walks that order and stops at the page's
    /// end (`total` is `None`; `next_offset` says whether there are more).
    ///
    /// Errors: [`QueryError::PageSize`], [`QueryError::Offset`];
    /// consistency errors ([`QueryError::Lagging`],
    /// [`QueryError::FaultedAt`]); [`QueryError::Corrupt`].
    pub async fn incidents<'a>(
        &self,
        reader: impl Into<ReadContext<'a>>,
        page: PageRequest,
        consistency: Consistency,
    ) -> Result<Page<crate::orchestration::pending::IncidentEntry>, QueryError> {
        let reader = reader.into();
        let principal = reader.principal;
        let result = async {
            reader.check()?;
            page.check()?;
            self.admit_query(principal).await?;
            let gen = self
                .read_tree(crate::orchestration::pending::NAME, principal, consistency)
                .await?;
            let all = crate::orchestration::pending::incidents(&gen.rows, principal)?;
            // An incident is about its task: withheld when the task's
            // effective marking is above the reader's clearance. Read as
            // fresh as the incidents, or a case the view has not reached
            // yet would drop out of the page.
            let cases = self.read_tree(cases::NAME, principal, consistency).await?;
            let mut out = Vec::with_capacity(page.limit.min(all.len()));
            let mut skipped = 0;
            let mut more = false;
            for entry in all {
                let Some(record) = cases::load_case_head(&cases.rows, &entry.case_id)? else {
                    continue;
                };
                let Some(dref) = &record.state.definition else {
                    continue;
                };
                let def = self
                    .definition_for(&principal.tenant, dref.key.as_str(), Some(dref.version))
                    .await
                    .map_err(|e| QueryError::Corrupt(e.to_string()))?;
                let see =
                    crate::case::Disclosure::new(&def, record.state.classification, principal);
                if !see.item(entry.item.as_str()) {
                    continue;
                }
                if skipped < page.offset {
                    skipped += 1;
                } else if out.len() < page.limit {
                    out.push(entry);
                } else {
                    more = true;
                    break;
                }
            }
            Ok(Page {
                items: out,
                next_offset: more.then_some(page.offset + page.limit),
                total: None,
            })
        }
        .await;
        let subject = Subject::query(
            format!("incidents offset {} limit {}", page.offset, page.limit),
            Classification::Official,
        )
        .with_cases(
            result
                .iter()
                .flat_map(|p| &p.items)
                .map(|i| (i.case_id.as_str(), i.classification)),
        );
        self.audited(&reader, ReadKind::Incidents, subject, result)
            .await
    }

    /// A case's history in human terms, oldest first.
    ///
    /// Errors: [`QueryError::UnknownCase`]; page errors; consistency errors.
    pub async fn timeline<'a>(
        &self,
        reader: impl Into<ReadContext<'a>>,
        case_id: &str,
        page: PageRequest,
        consistency: Consistency,
    ) -> Result<Page<TimelineEntry>, QueryError> {
        let reader = reader.into();
        let principal = reader.principal;
        let result = async {
            reader.check()?;
            let gen = self
                .read_tree(timeline::NAME, principal, consistency)
                .await?;
            let positions = self.tenant_positions(&principal.tenant);
            let restricted = self.restricted_case(&principal.tenant, case_id).await?;
            timeline::read(
                &gen.rows,
                case_id,
                principal,
                &page,
                &positions,
                &restricted.fields,
            )
        }
        .await;
        let marking = self.case_marking(principal, case_id).await;
        self.audited(
            &reader,
            ReadKind::Timeline,
            Subject::case(case_id, marking),
            result,
        )
        .await
    }

    /// A case's marking as the `cases` projection holds it now, if it
    /// exists (for the audit entry of a read that does not load the case).
    async fn case_marking(&self, principal: &Principal, case_id: &str) -> Option<Classification> {
        let gen = self
            .read_tree(cases::NAME, principal, Consistency::Eventual)
            .await
            .ok()?;
        cases::load_case_head(&gen.rows, case_id)
            .ok()
            .flatten()
            .map(|r| r.state.classification)
    }

    /// Searches the principal's tenant's cases (only those within their
    /// clearance are returned or counted).
    ///
    /// Errors: [`QueryError::UnknownCaseType`]; the validation errors of
    /// [`cases::search`]; consistency errors.
    pub async fn search_cases<'a>(
        &self,
        reader: impl Into<ReadContext<'a>>,
        query: &SearchQuery,
        consistency: Consistency,
    ) -> Result<Page<CaseSummary>, QueryError> {
        let reader = reader.into();
        let mut marking = Classification::Official;
        let result = self
            .search_inner(&reader, query, consistency, &mut marking)
            .await;
        let described = serde_json::to_string(query).unwrap_or_else(|_| format!("{query:?}"));
        let subject = Subject::query(format!("search {described}"), marking).with_cases(
            result
                .iter()
                .flat_map(|p| &p.items)
                .map(|c| (c.case_id.as_str(), c.classification)),
        );
        self.audited(&reader, ReadKind::Search, subject, result)
            .await
    }

    async fn search_inner(
        &self,
        reader: &ReadContext<'_>,
        query: &SearchQuery,
        consistency: Consistency,
        marking: &mut Classification,
    ) -> Result<Page<CaseSummary>, QueryError> {
        let principal = reader.principal;
        reader.check()?;
        self.admit_query(principal).await?;
        query.page.check()?;
        let def = match &query.case_type {
            Some(t) => Some(
                self.definition_for(&principal.tenant, t, None)
                    .await
                    .map_err(|_| QueryError::UnknownCaseType {
                        tenant: principal.tenant.clone(),
                        case_type: t.clone(),
                    })?,
            ),
            None => None,
        };
        if let Some(def) = &def {
            // The fields a query filters on are as sensitive as the fields.
            for filter in &query.fields {
                let named = def.fields.iter().find(|f| f.key.as_str() == filter.field);
                if let Some(c) = named.and_then(|f| f.classification) {
                    *marking = (*marking).max(c);
                }
            }
        }
        let gen = self.read_tree(cases::NAME, principal, consistency).await?;
        let restricted = self.restricted_cases(&principal.tenant).await?;
        cases::search(&gen.rows, query, def.as_deref(), principal, &restricted)
    }

    /// The case types deployed in the principal's tenant (keys, sorted).
    ///
    /// Errors: consistency errors.
    pub async fn case_types(
        &self,
        principal: &Principal,
        consistency: Consistency,
    ) -> Result<Vec<String>, QueryError> {
        let gen = self.read_tree(cases::NAME, principal, consistency).await?;
        let types = cases::case_types(&gen);
        if let Err(e) = &types {
            self.on_read_error(e);
        }
        types
    }

    /// Open human tasks by role, team or assignee, earliest due first.
    ///
    /// Errors: page errors; [`QueryError::Invalid`] for a team that is not
    /// an identifier; consistency errors.
    pub async fn work_queue<'a>(
        &self,
        reader: impl Into<ReadContext<'a>>,
        query: &WorkQueueQuery,
        consistency: Consistency,
    ) -> Result<Page<WorkItem>, QueryError> {
        let reader = reader.into();
        let principal = reader.principal;
        let result = async {
            reader.check()?;
            query.page.check()?;
            let gen = self.read_tree(cases::NAME, principal, consistency).await?;
            cases::work_queue(&gen, query, principal)
        }
        .await;
        let described = serde_json::to_string(query).unwrap_or_else(|_| format!("{query:?}"));
        let subject = Subject::query(format!("work queue {described}"), Classification::Official)
            .with_cases(
                result
                    .iter()
                    .flat_map(|p| &p.items)
                    .map(|w| (w.case_id.as_str(), w.classification)),
            );
        self.audited(&reader, ReadKind::WorkQueue, subject, result)
            .await
    }

    /// Running SLA and Victims' Code deadlines due by a time, earliest first,
    /// marked overdue against the query's `now`.
    ///
    /// Errors: page errors; consistency errors.
    pub async fn deadlines<'a>(
        &self,
        reader: impl Into<ReadContext<'a>>,
        query: &DeadlineQuery,
        consistency: Consistency,
    ) -> Result<Page<DeadlineEntry>, QueryError> {
        let reader = reader.into();
        let principal = reader.principal;
        let result = async {
            reader.check()?;
            query.page.check()?;
            let gen = self.read_tree(cases::NAME, principal, consistency).await?;
            cases::deadlines(&gen.rows, query, principal)
        }
        .await;
        let described = serde_json::to_string(query).unwrap_or_else(|_| format!("{query:?}"));
        let subject = Subject::query(format!("deadlines {described}"), Classification::Official)
            .with_cases(
                result
                    .iter()
                    .flat_map(|p| &p.items)
                    .map(|d| (d.case_id.as_str(), d.classification)),
            );
        self.audited(&reader, ReadKind::Deadlines, subject, result)
            .await
    }

    /// Claims an open task for the principal (an [`Engine::execute`] of
    /// [`CaseCommand::Claim`]).
    ///
    /// Errors: those of [`Engine::execute`]; [`EngineError::Case`] if the
    /// instance does not exist.
    pub async fn claim_task(
        &self,
        principal: &Principal,
        case_id: &str,
        instance: InstanceId,
        context: CommandContext,
    ) -> Result<CaseOutcome, EngineError> {
        let item = self.task_ref(principal, case_id, instance).await?;
        self.execute(principal, case_id, CaseCommand::Claim { item }, context)
            .await
    }

    /// Assigns an open task to `assignee` (an [`Engine::execute`] of
    /// [`CaseCommand::Assign`]).
    ///
    /// Errors: as [`Engine::claim_task`].
    pub async fn reassign_task(
        &self,
        principal: &Principal,
        case_id: &str,
        instance: InstanceId,
        assignee: &str,
        context: CommandContext,
    ) -> Result<CaseOutcome, EngineError> {
        let item = self.task_ref(principal, case_id, instance).await?;
        let command = CaseCommand::Assign {
            item,
            assignee: assignee.to_string(),
        };
        self.execute(principal, case_id, command, context).await
    }

    /// Routes an open human task to another team's work queue (an
    /// [`Engine::execute`] of [`CaseCommand::AssignTeam`]); whoever held it
    /// is released, so it waits unassigned in the new team's queue.
    ///
    /// Errors: as [`Engine::claim_task`]; [`EngineError::Case`] for a team
    /// that is not an identifier or an item that is not a human task.
    pub async fn reassign_task_to_team(
        &self,
        principal: &Principal,
        case_id: &str,
        instance: InstanceId,
        team: &str,
        context: CommandContext,
    ) -> Result<CaseOutcome, EngineError> {
        let item = self.task_ref(principal, case_id, instance).await?;
        let command = CaseCommand::AssignTeam {
            item,
            team: team.to_string(),
        };
        self.execute(principal, case_id, command, context).await
    }

    async fn task_ref(
        &self,
        principal: &Principal,
        case_id: &str,
        instance: InstanceId,
    ) -> Result<ItemRef, EngineError> {
        // An instance the principal may not see is answered like one that
        // does not exist (the engine's own read: not audited).
        let loaded = self.load_unaudited(principal, case_id).await?;
        let see = crate::case::Disclosure::new(
            &loaded.definition,
            loaded.state.classification,
            principal,
        );
        let inst = loaded
            .state
            .item(instance)
            .filter(|i| see.item(i.key.as_str()))
            .ok_or_else(|| {
                EngineError::Case(CaseError::InvalidCommand {
                    reason: format!("case {case_id} has no plan item instance {instance}"),
                })
            })?;
        Ok(ItemRef::instance(inst.key.as_str(), instance))
    }

    /// Sets the tenant's own non-working days, on top of weekends and the
    /// England and Wales bank holidays, for every deadline counted in
    /// working days: [`Engine::set_working_calendar`] with these days and
    /// no bank holiday worked (the whole calendar is replaced).
    ///
    /// Errors: as [`Engine::set_working_calendar`].
    pub async fn set_non_working_days(
        &self,
        principal: &Principal,
        days: &[calendar::Date],
        context: CommandContext,
    ) -> Result<PositionToken, EngineError> {
        let calendar = WorkingCalendar::with_non_working_days(days.iter().copied());
        self.set_working_calendar(principal, &calendar, context)
            .await
    }

    /// Sets the tenant's working-day calendar, replacing the one before:
    /// its own non-working days, and the bank holidays it works
    /// ([`WorkingCalendar::working_bank_holidays`]). Stored as a
    /// `NonWorkingDaysSet` event in `<tenant>/calendar/working-days`; the
    /// deadline and work queue views and the orchestration timers re-derive
    /// the due times of running working-day deadlines when they reach it.
    /// Returns the event's position token (for read-your-writes waits).
    ///
    /// Errors: [`EngineError::Case`] with [`CaseError::Forbidden`] without
    /// the `administrator` role; [`EngineError::Log`] (including a list too
    /// large for one event).
    pub async fn set_working_calendar(
        &self,
        principal: &Principal,
        calendar: &WorkingCalendar,
        context: CommandContext,
    ) -> Result<PositionToken, EngineError> {
        self.admit(principal).await?;
        if !principal.has_role(ADMIN_ROLE) {
            return Err(EngineError::forbidden(
                "set the working-day calendar",
                &[ADMIN_ROLE],
            ));
        }
        let event = calendar.to_event();
        let stream = crate::streams::calendar(&principal.tenant)?;
        let mut metadata = Metadata::new(
            principal.actor(),
            context.source.unwrap_or_else(|| Source::system("casebook")),
        )
        .with_correlation(context.correlation_id.unwrap_or_default());
        metadata.reason = context.reason;
        let result = self
            .raw_store()
            .append(
                &stream,
                ExpectedVersion::Any,
                vec![event.to_event_data(metadata)?],
            )
            .await?;
        self.follow_tenant(&principal.tenant);
        // Working-day timers are re-timed by the orchestration projection.
        self.hurry_orchestration(&principal.tenant);
        Ok(self
            .tenant_positions(&principal.tenant)
            .encode(result.last_position)?)
    }

    /// The tenant's working-day calendar as last set (weekends and the
    /// England and Wales bank holidays if never set).
    ///
    /// Errors: [`EngineError::Log`]; [`EngineError::Codec`] for an event
    /// that does not decode; [`EngineError::InvalidStoredCalendar`] for a
    /// stored day that is not a date (or a worked day that is not a bank
    /// holiday).
    pub async fn working_calendar(
        &self,
        principal: &Principal,
    ) -> Result<WorkingCalendar, EngineError> {
        self.admit(principal).await?;
        let stream = crate::streams::calendar(&principal.tenant)?;
        let Some(version) = self.raw_store().stream_version(&stream).await? else {
            return Ok(WorkingCalendar::default());
        };
        let last = self
            .raw_store()
            .read_stream(&stream, Direction::Forward, version, 1)
            .await?;
        match last.first() {
            None => Ok(WorkingCalendar::default()),
            Some(e) => {
                WorkingCalendar::from_event(&CalendarEvent::from_recorded(e)?).map_err(|e| {
                    EngineError::InvalidStoredCalendar {
                        reason: e.to_string(),
                    }
                })
            }
        }
    }

    /// The status of the principal's tenant's projections, as the tenant
    /// may see it (see [`TenantProjectionStatus`]): positions as the
    /// tenant's tokens, and how far behind each is in the tenant's own
    /// events — nothing of the log's head or other tenants' volume.
    ///
    /// Errors: [`QueryError::Projection`].
    pub async fn projection_status(
        &self,
        principal: &Principal,
    ) -> Result<Vec<TenantProjectionStatus>, QueryError> {
        self.admit_query(principal).await?;
        let statuses = self.host()?.status(&principal.tenant)?;
        let positions = self.tenant_positions(&principal.tenant);
        let mut out = Vec::with_capacity(statuses.len());
        for s in statuses {
            let pending = self.pending_events(&principal.tenant, s.reached).await?;
            out.push(TenantProjectionStatus::of(s, pending, &positions)?);
        }
        Ok(out)
    }

    /// How many of `tenant`'s events lie past `reached`, counted up to
    /// [`PENDING_COUNT_LIMIT`] (one read of the tenant's log index, no
    /// decoding of the events).
    async fn pending_events(
        &self,
        tenant: &TenantId,
        reached: Option<GlobalPosition>,
    ) -> Result<u64, QueryError> {
        let from = reached.map_or(GlobalPosition::START, |r| r.next());
        let store = self.raw_store();
        let limit = usize::try_from(PENDING_COUNT_LIMIT)
            .unwrap_or(usize::MAX)
            .min(store.limits().max_read_limit);
        let batch = store
            .read_all_batch(tenant, from, limit)
            .await
            .map_err(|e| QueryError::Projection(ProjectionError::Log(Arc::new(e))))?;
        Ok(batch.len() as u64)
    }

    /// Rebuilds one of the tenant's projections in the background; the
    /// current generation serves until the new one has caught up.
    ///
    /// Errors: [`QueryError::Forbidden`] without the `administrator` role;
    /// [`QueryError::Projection`] for an unknown projection.
    pub async fn rebuild_projection(
        &self,
        principal: &Principal,
        name: &str,
    ) -> Result<(), QueryError> {
        self.admit_query(principal).await?;
        require_admin(principal, "rebuild projections")?;
        let host = self.host()?;
        if self.replace_if_unwritable(&host).await? {
            return Ok(());
        }
        Ok(host.rebuild(name, &principal.tenant, None)?)
    }

    /// Resumes a faulted projection of the tenant from its checkpoint.
    ///
    /// Errors: as [`Engine::rebuild_projection`].
    pub async fn retry_projection(
        &self,
        principal: &Principal,
        name: &str,
    ) -> Result<(), QueryError> {
        self.admit_query(principal).await?;
        require_admin(principal, "retry projections")?;
        let host = self.host()?;
        if self.replace_if_unwritable(&host).await? {
            // The replacement rebuilds every projection from the log.
            return Ok(());
        }
        Ok(host.retry(name, &principal.tenant)?)
    }

    /// Replaces the projection database if it no longer takes writes (sled
    /// takes none after one failed, e.g. on a full disk with no reserve,
    /// until reopened: retrying runners on it cannot succeed). True if it
    /// was replaced.
    ///
    /// Errors: as [`Engine::replace_projections`] (a disk still full,
    /// say: retry once space is freed).
    async fn replace_if_unwritable(&self, host: &ProjectionHost) -> Result<bool, QueryError> {
        let probe = host.clone();
        let check = tokio::task::spawn_blocking(move || probe.check_writable())
            .await
            .map_err(|e| {
                QueryError::Projection(ProjectionError::Store(crate::projection::StoreError::new(
                    e.to_string(),
                )))
            })?;
        let Err(e) = check else {
            return Ok(false);
        };
        self.replace_projections(format!("stopped taking writes: {e}"), true, false)
            .await?;
        Ok(true)
    }

    /// Waits until every projection of the principal's tenant has reached
    /// `position`, a position token the engine gave the tenant
    /// (read-your-writes after a command; [`PositionToken::NONE`] waits for
    /// nothing).
    ///
    /// Errors: [`QueryError::Lagging`]; [`QueryError::FaultedAt`];
    /// [`QueryError::Access`] with
    /// [`crate::security::AccessError::NotAPositionToken`] for another
    /// tenant's or a made-up token.
    pub async fn wait_for_projections(
        &self,
        principal: &Principal,
        position: PositionToken,
        timeout: Duration,
    ) -> Result<(), QueryError> {
        self.admit_query(principal).await?;
        let token = position;
        let Some(position) = self
            .tenant_positions(&principal.tenant)
            .decode_opt(position, "position")?
        else {
            return Ok(());
        };
        self.host()?
            .wait_all(&principal.tenant, position, timeout)
            .await
            .map_err(|e| self.scoped(&principal.tenant, e, token))
    }
}

/// [`TenantProjectionStatus::pending`] is counted up to this many events.
pub const PENDING_COUNT_LIMIT: u64 = 10_000;

/// What a tenant is told of one of its projections
/// ([`Engine::projection_status`]): the host's [`ProjectionStatus`]
/// without anything global. Positions are the tenant's tokens; there is no
/// log head and no lag in global positions (both would count other
/// tenants' events), but the number of the tenant's own events not yet
/// applied.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantProjectionStatus {
    /// The projection.
    pub projection: String,
    /// The version of the serving generation.
    pub version: u32,
    /// The serving generation.
    pub generation: u64,
    /// What it is doing.
    pub state: TenantRunState,
    /// The checkpoint: the last of the tenant's events applied
    /// ([`PositionToken::NONE`] before the first).
    pub position: PositionToken,
    /// The tenant's events in the log not yet applied, counted up to
    /// [`PENDING_COUNT_LIMIT`] (or the store's largest read, if smaller:
    /// the cap means "at least"); 0 when caught up.
    pub pending: u64,
    /// Recent speed (over the last few seconds).
    pub events_per_second: f64,
    /// A rebuild in progress, if any.
    pub rebuild: Option<TenantRebuildStatus>,
}

/// What a tenant's projection runner is doing ([`RunState`] with the
/// tenant's token for a fault's position).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantRunState {
    /// Applying events that are already in the log.
    CatchingUp,
    /// Caught up; applying events as they are appended.
    Live,
    /// Live while a new generation is being built.
    Rebuilding,
    /// Stopped at an event it could not apply; retry resumes it.
    Faulted {
        /// The failing event's position token.
        position: PositionToken,
        /// Why it failed.
        error: String,
    },
    /// The host was shut down (or the log closed).
    Stopped,
}

/// A rebuild in progress, as the tenant sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantRebuildStatus {
    /// The version being built.
    pub version: u32,
    /// The generation being built.
    pub generation: u64,
    /// The last event applied to it ([`PositionToken::NONE`] before the first).
    pub position: PositionToken,
    /// Its recent speed.
    pub events_per_second: f64,
    /// Set if the rebuild itself is faulted: (position token, error).
    pub fault: Option<(PositionToken, String)>,
}

impl TenantProjectionStatus {
    fn of(
        s: ProjectionStatus,
        pending: u64,
        positions: &crate::security::TenantPositions,
    ) -> Result<Self, crate::security::AccessError> {
        let state = match s.state {
            RunState::CatchingUp => TenantRunState::CatchingUp,
            RunState::Live => TenantRunState::Live,
            RunState::Rebuilding => TenantRunState::Rebuilding,
            RunState::Stopped => TenantRunState::Stopped,
            RunState::Faulted { position, error } => TenantRunState::Faulted {
                position: positions.encode(position)?,
                error,
            },
        };
        let rebuild = match s.rebuild {
            None => None,
            Some(r) => Some(TenantRebuildStatus {
                version: r.version,
                generation: r.generation,
                position: positions.encode_opt(r.position)?,
                events_per_second: r.events_per_second,
                fault: match r.fault {
                    None => None,
                    Some((p, e)) => Some((positions.encode(p)?, e)),
                },
            }),
        };
        Ok(TenantProjectionStatus {
            projection: s.projection,
            version: s.version,
            generation: s.generation,
            state,
            position: positions.encode_opt(s.position)?,
            pending,
            events_per_second: s.events_per_second,
            rebuild,
        })
    }
}

/// The token a consistency waits for ([`PositionToken::NONE`] for none).
fn consistency_token(consistency: Consistency) -> PositionToken {
    match consistency {
        Consistency::Eventual => PositionToken::NONE,
        Consistency::AtLeast { position, .. } => position,
    }
}
