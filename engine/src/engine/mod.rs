//! [`Engine`]: the one entry point for embedding users.
//!
//! It ties the event log, case definitions and the case runtime together:
//! deploy definitions (stored as events, versioned per tenant), open cases,
//! execute commands, and read a case as the caller may see it. Every call
//! takes a [`Principal`]; every stream it touches is the principal's tenant's,
//! so no call can reach another tenant's data.
//!
//! Streams: `<tenant>/definition/<case type>` holds `DefinitionDeployed`
//! events; `<tenant>/case/<case id>` holds a case's events. A command loads
//! the case (snapshot + newer events), runs [`crate::case::decide`], and
//! appends everything it returns in one append with the version it loaded
//! (retrying on a concurrent change, which is safe because `decide` is pure).
//!
//! # Where commands are decided
//!
//! `decide` runs on the calling task's async worker thread, with its rules
//! limited to [`INLINE_BUDGET`] units (about a millisecond or two; see
//! `rules::budget` for the cost model): the ordinary command pays no thread
//! hop. A command whose rules would need more is refused by that budget
//! *before* the rule runs, and is decided again — `decide` is pure — under
//! `tokio::task::spawn_blocking` with the full [`COMMAND_BUDGET`], at most
//! [`HEAVY_DECISIONS`] at a time (a semaphore), so long evaluations never
//! hold an async worker and cannot take the blocking pool either. A rule
//! over even the full budget fails the command with
//! [`crate::rules::EvalError::BudgetExceeded`] naming the rule, again before
//! it runs.

pub(crate) mod audited;
mod error;
mod idempotency;
mod integrity;
mod queries;
mod snapshots;
mod tenant_log;
mod tenants;

pub use integrity::EventProof;

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

pub use audited::{raw_visible, reads_engine_streams};
pub use error::{EngineError, SnapshotSource};
pub use idempotency::CommandId;
pub use queries::{
    TenantProjectionStatus, TenantRebuildStatus, TenantRunState, PENDING_COUNT_LIMIT,
};
pub use snapshots::{MemorySnapshots, SledSnapshots, SnapshotStore};
pub use tenant_log::{
    CaseChanges, TenantAppendResult, TenantLog, TenantPage, TenantSubscription, AUDITOR_ROLE,
    INTEGRATION_ROLE,
};
pub use tenants::{TenantChange, TenantEvent, TenantRecord, TenantStatus};

use crate::audit::ReadContext;
use crate::case::{
    decide_to_state, CaseCommand, CaseError, CaseEvent, CaseFile, CaseId, CaseState, CaseView,
    DefinitionRef, Disclosure,
};
use crate::definition::deployment::{self, Decision, DefinitionEvent, Deployed};
pub use crate::definition::Deployment;
use crate::definition::{CaseDefinition, Fingerprint, Format};
use crate::log::codec::DomainEvent;
use crate::log::{
    CorrelationId, Direction, EventId, EventStore, ExpectedVersion, GlobalPosition, LogError,
    LogStore, LogStoreConfig, MemoryStore, Metadata, Source, StreamId, StreamVersion, TenantId,
};
use crate::recent::Recent;
use crate::rules::{Budget, EvalError, COMMAND_BUDGET, INLINE_BUDGET};
use crate::security::{Classification, PositionKey, PositionToken, Principal, TenantPositions};
use crate::time::{Clock, Timestamp};

/// How many commands whose rules exceed [`INLINE_BUDGET`] may be decided at
/// once on blocking threads (see the module docs); more wait their turn.
pub const HEAVY_DECISIONS: usize = 2;

/// How long [`Engine::shutdown`] waits for invocations in flight.
pub const DISPATCHER_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// The role that may deploy case definitions (and complete a service task
/// by hand, with a reason).
pub const ADMIN_ROLE: &str = crate::case::ADMIN_ROLE;

/// Snapshots encoded and stored at once, on blocking threads: a command
/// never waits for its case's snapshot, and a snapshot due while these are
/// all busy is skipped (the next interval writes one; a load meanwhile
/// replays a little more).
pub const SNAPSHOT_WRITERS: usize = 2;

/// Snapshots read and decoded at once, on blocking threads: a load that
/// misses the case cache never reads the snapshot store (a sled read that
/// may touch the disk) or decodes a large state on an async worker.
pub const SNAPSHOT_READERS: usize = 8;

/// About how many bytes of snapshot encoding a case's events pay for each:
/// a case's snapshot interval grows with its estimated encoded size.
pub const SNAPSHOT_BYTES_PER_EVENT: u64 = 1024;

/// Whether a command taking a case from `before` to `after` events (with
/// `state` after it) writes a snapshot: when it crosses a multiple of the
/// interval, `every` events or, for a case whose snapshot would be larger
/// than `every` x [`SNAPSHOT_BYTES_PER_EVENT`], its estimated size divided
/// by that. So the encoding work per event stays bounded as notes and links
/// accumulate, and a cold load replays at most one interval of events.
pub fn snapshot_due(every: u64, before: u64, after: u64, state: &CaseState) -> bool {
    if every == 0 {
        return false;
    }
    // Rough encoded sizes (MessagePack with names): an instance with its
    // latches ~160 bytes, a note or link ~120, a case-file value ~48.
    let estimate = 160 * state.items.len() as u64
        + 120 * (state.notes.len() + state.entities.len()) as u64
        + 48 * state.case_file.len() as u64;
    let interval = every.max(estimate / SNAPSHOT_BYTES_PER_EVENT);
    after / interval > before / interval
}

/// How many bytes each of the engine's sled databases keeps in its page
/// cache (sled's `cache_capacity`; measured, sled's own use can reach a
/// few times this). Reported by
/// [`Engine::cache_budget`] (and by the service's metrics).
///
/// ```
/// use casebook::engine::CacheBudget;
/// let budget = CacheBudget::default();
/// assert_eq!(budget.total(), (64 + 64 + 16) << 20);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheBudget {
    /// The projections' database (`<data>/projections`). Default 64 MiB.
    pub projections_bytes: u64,
    /// The log's stream index (`<data>/index`). Default 64 MiB.
    pub index_bytes: u64,
    /// The case snapshots (`<data>/snapshots`). Default 16 MiB.
    pub snapshots_bytes: u64,
}

impl Default for CacheBudget {
    fn default() -> Self {
        CacheBudget {
            projections_bytes: 64 << 20,
            index_bytes: 64 << 20,
            snapshots_bytes: 16 << 20,
        }
    }
}

impl CacheBudget {
    /// The three budgets together.
    pub fn total(&self) -> u64 {
        self.projections_bytes + self.index_bytes + self.snapshots_bytes
    }

    /// Each budget with the name of its cache: `projections`, `index`,
    /// `snapshots`.
    pub fn by_name(&self) -> [(&'static str, u64); 3] {
        [
            ("projections", self.projections_bytes),
            ("index", self.index_bytes),
            ("snapshots", self.snapshots_bytes),
        ]
    }
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// A snapshot is written each time a case crosses a multiple of this many
    /// events; a large case (many instances, notes or links) snapshots less
    /// often, so that writing snapshots costs about
    /// [`SNAPSHOT_BYTES_PER_EVENT`] of encoding per event however long the
    /// case grows (see [`snapshot_due`]). 0 turns snapshots off. Default 100.
    pub snapshot_every: u64,
    /// Attempts at a command when other commands change the case meanwhile.
    pub max_attempts: u32,
    /// Case states kept in memory after a command, so the next command on a
    /// hot case reads only the events appended since; the least recently
    /// used are let go first. 0 turns it off. Default 10,000.
    pub cached_cases: usize,
    /// The page caches of the engine's sled databases, in bytes (see
    /// [`CacheBudget`]).
    pub caches: CacheBudget,
    /// Read models the engine hosts beside the built-in ones (names must
    /// differ from theirs and each other). A new version of one rebuilds in
    /// the background at the next open while the old one serves (see
    /// [`crate::projection::Projection`]). Default: none.
    pub projections: Vec<Arc<dyn crate::projection::Projection>>,
    /// The key store of subjects' data keys (crypto-shredding, see
    /// [`crate::records::kms`]). Default: `None`, the file-backed store in
    /// `<dir>/keys` for [`Engine::open`], an in-memory one for an
    /// in-memory engine.
    pub kms: Option<Arc<dyn crate::records::kms::Kms>>,
    /// Events a projection applies per commit (one sled batch with its
    /// checkpoint) while following the live log; catching up or rebuilding,
    /// it takes up to 128 times as many at once. Default
    /// [`crate::projection::DEFAULT_BATCH_SIZE`] (512).
    pub projection_batch: usize,
    /// How often, at most, a projection following the live log commits
    /// (an idle one commits at once): under load it gathers what arrives
    /// meanwhile, so each page is rewritten less often. A read-your-writes
    /// query does not wait it out: a reader waiting for a position makes
    /// the projection commit at once. Default
    /// [`crate::projection::DEFAULT_COMMIT_INTERVAL`] (100 ms).
    pub projection_commit_interval: std::time::Duration,
    /// Where every timestamp the engine makes comes from: command times,
    /// deadlines, and (for the stores the engine opens itself) each event's
    /// `recorded` stamp. Default [`crate::time::SystemClock`]; tests use a
    /// [`crate::time::ManualClock`] or [`crate::time::TokioClock`].
    pub clock: Arc<dyn Clock>,
    /// Business services run in process for service tasks, each enabled for
    /// every tenant or some (see [`crate::orchestration`]). A service a
    /// definition declares that is not registered here is left to external
    /// job workers. Default: none.
    pub services: crate::orchestration::ServiceRegistry,
    /// Whether reads of case data are audited (see [`crate::audit`]).
    /// Default `true`. **Only for measuring the audit's cost** (the audit
    /// bench's baseline): turned off, consultations go unrecorded, which
    /// law-enforcement processing may not do (DPA 2018 s62).
    pub audit_reads: bool,
    /// Tenants registered when the engine first reads its tenant registry,
    /// if they are not registered yet (a suspended one stays suspended), so
    /// an embedder or a test need not call [`Engine::register_tenant`].
    /// Calls for any other tenant are refused until a platform
    /// administrator registers it. Default: none.
    pub tenants: Vec<TenantId>,
    /// Free space the data directory's disk must keep: commands that would
    /// append with less free are refused ([`crate::ErrorKind::ResourceExhausted`],
    /// nothing written) and accepted again once space is freed, while the
    /// views and indexes use the reserve to finish their writes (see
    /// [`LogStoreConfig::min_free_bytes`]). Default 64 MiB.
    pub min_free_bytes: u64,
    /// When the log signs a checkpoint of its Merkle tree, and with what
    /// key (see [`crate::log::CheckpointConfig`]): by default every 10,000
    /// events or 1 s, with the key in `<data>/checkpoints/signing.key`.
    pub checkpoints: crate::log::CheckpointConfig,
}

impl EngineConfig {
    /// The default settings with `tenants` registered at first use.
    ///
    /// ```
    /// use casebook::engine::EngineConfig;
    /// use casebook::log::TenantId;
    /// let config = EngineConfig::with_tenants([TenantId::new("kent").unwrap()]);
    /// assert_eq!(config.tenants.len(), 1);
    /// ```
    pub fn with_tenants(tenants: impl IntoIterator<Item = TenantId>) -> Self {
        EngineConfig {
            tenants: tenants.into_iter().collect(),
            ..EngineConfig::default()
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            snapshot_every: 100,
            max_attempts: 8,
            cached_cases: 10_000,
            caches: CacheBudget::default(),
            projections: Vec::new(),
            kms: None,
            projection_batch: crate::projection::DEFAULT_BATCH_SIZE,
            projection_commit_interval: crate::projection::DEFAULT_COMMIT_INTERVAL,
            clock: crate::time::system_clock(),
            services: crate::orchestration::ServiceRegistry::new(),
            tenants: Vec::new(),
            audit_reads: true,
            min_free_bytes: LogStoreConfig::default().min_free_bytes,
            checkpoints: crate::log::CheckpointConfig::default(),
        }
    }
}

/// Provenance a caller may give with a command, and its command id.
///
/// ```
/// use casebook::engine::{CommandContext, CommandId};
/// let context = CommandContext::because("victim asked for an update")
///     .with_command_id(CommandId::random());
/// assert!(context.command_id.is_some());
/// ```
#[derive(Debug, Clone, Default)]
pub struct CommandContext {
    /// Why (recorded on every event of the command).
    pub reason: Option<String>,
    /// The originating system and its reference (default: `casebook`).
    pub source: Option<Source>,
    /// Ties the command to a wider request (default: a fresh id).
    pub correlation_id: Option<CorrelationId>,
    /// Makes the command idempotent: the same command id on the same case
    /// (or, for a deployment, the same case type) returns the original
    /// outcome and appends nothing — after a lost reply, after a restart.
    pub command_id: Option<CommandId>,
}

impl CommandContext {
    /// A context recording why the command is made.
    pub fn because(reason: impl Into<String>) -> Self {
        CommandContext {
            reason: Some(reason.into()),
            ..CommandContext::default()
        }
    }

    /// This context with a command id (see [`CommandContext::command_id`]).
    pub fn with_command_id(mut self, id: CommandId) -> Self {
        self.command_id = Some(id);
        self
    }

    /// This context with the originating system.
    pub fn with_source(mut self, source: Source) -> Self {
        self.source = Some(source);
        self
    }

    /// This context tied to a wider request.
    pub fn with_correlation(mut self, id: CorrelationId) -> Self {
        self.correlation_id = Some(id);
        self
    }

    /// The metadata of events `principal` records with this context: who,
    /// from where (default `casebook`), why, and the correlation (a fresh
    /// one if none is given). Classification stays OFFICIAL.
    pub fn metadata(&self, principal: &Principal) -> Metadata {
        let mut metadata = Metadata::new(
            principal.actor(),
            self.source
                .clone()
                .unwrap_or_else(|| Source::system("casebook")),
        )
        .with_correlation(self.correlation_id.unwrap_or_default());
        metadata.reason = self.reason.clone();
        metadata
    }
}

/// A request to open a case.
#[derive(Debug, Clone)]
pub struct OpenCase {
    /// The case type key.
    pub case_type: String,
    /// The definition version (default: the latest deployed).
    pub version: Option<u32>,
    /// The case id (default: generated, e.g. `burglary-0193…`; derived
    /// from the command id when the context has one, so a retried open
    /// names the same case).
    pub case_id: Option<CaseId>,
    /// The initial case file.
    pub case_file: CaseFile,
    /// A classification above the definition's default, if needed.
    pub classification: Option<Classification>,
    /// Provenance.
    pub context: CommandContext,
}

impl OpenCase {
    /// Opens a case of `case_type` at its latest version with this case file.
    pub fn new(case_type: impl Into<String>, case_file: impl Into<CaseFile>) -> Self {
        OpenCase {
            case_type: case_type.into(),
            version: None,
            case_id: None,
            case_file: case_file.into(),
            classification: None,
            context: CommandContext::default(),
        }
    }

    /// This request with a chosen case id.
    pub fn with_id(mut self, case_id: CaseId) -> Self {
        self.case_id = Some(case_id);
        self
    }

    /// This request with provenance and, optionally, a command id.
    pub fn with_context(mut self, context: CommandContext) -> Self {
        self.context = context;
        self
    }
}

/// What a command did.
#[derive(Debug, Clone)]
pub struct CaseOutcome {
    /// The case.
    pub case_id: CaseId,
    /// Every event the command appended (the command's own and its cascade).
    pub events: Vec<CaseEvent>,
    /// The case's version after the command.
    pub version: StreamVersion,
    /// Where the last event appended is, as the tenant's position token
    /// (for read-your-writes: [`crate::projection::Consistency::after`]);
    /// `None` if the command appended nothing.
    pub position: Option<PositionToken>,
}

/// Completing a service task by hand (instead of its service) is an
/// administrator's override: the reason must be recorded.
fn check_hand_completion(
    def: &CaseDefinition,
    command: &CaseCommand,
    context: &CommandContext,
) -> Result<(), EngineError> {
    let CaseCommand::Complete { item, .. } = command else {
        return Ok(());
    };
    let is_service_task = matches!(
        def.item(item.key.as_str()).map(|e| e.item),
        Some(crate::definition::PlanItem::Activity(a))
            if a.kind == crate::definition::ActivityKind::ServiceTask
    );
    let has_reason = context
        .reason
        .as_deref()
        .is_some_and(|r| !r.trim().is_empty());
    if is_service_task && !has_reason {
        return Err(crate::case::CaseError::InvalidCommand {
            reason: format!(
                "completing service task '{}' by hand needs a reason \
                 (CommandContext::because)",
                item.key
            ),
        }
        .into());
    }
    Ok(())
}

/// "Above your clearance" and "another tenant's" must look exactly like
/// "does not exist": the error names only what the caller asked for.
/// The highest marking anything in a loaded case can have: what a reader of
/// its whole state must be cleared for.
fn full_marking(loaded: &LoadedCase) -> crate::security::Classification {
    let def = &loaded.definition;
    let fields = def.fields.iter().filter_map(|f| f.classification);
    fields
        .fold(def.markings().highest(), Ord::max)
        .max(loaded.state.classification)
}

fn conceal(error: EngineError, principal: &Principal, case_id: &str) -> EngineError {
    match error {
        EngineError::Case(
            crate::case::CaseError::InsufficientClearance {
                subject: crate::case::ClearanceSubject::Case,
                ..
            }
            | crate::case::CaseError::WrongTenant { .. },
        ) => EngineError::UnknownCase {
            tenant: principal.tenant.clone(),
            case_id: case_id.to_string(),
        },
        other => other,
    }
}

impl crate::projection::Consistency {
    /// Wait (up to 5 seconds) until the projections have seen everything
    /// `outcome` appended — read-your-writes after a command. A command that
    /// appended nothing needs no wait: [`Consistency::Eventual`].
    ///
    /// [`Consistency::Eventual`]: crate::projection::Consistency::Eventual
    pub fn after(outcome: &CaseOutcome) -> Self {
        match outcome.position {
            Some(position) => crate::projection::Consistency::at_least(position),
            None => crate::projection::Consistency::Eventual,
        }
    }
}

/// A case as loaded: its definition, state and version.
#[derive(Debug, Clone)]
pub struct LoadedCase {
    /// The definition version the case runs.
    pub definition: Arc<CaseDefinition>,
    /// The case's state.
    pub state: CaseState,
    /// The version of its last event.
    pub version: StreamVersion,
    /// Where loading started.
    pub start: LoadStart,
}

/// Where loading a case started before reading newer events from the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadStart {
    /// A state kept in memory from a recent command.
    Cache,
    /// A stored snapshot.
    Snapshot,
    /// The case's first event.
    Log,
}

const SNAPSHOT_FORMAT: u16 = 1;

#[derive(Deserialize)]
struct Snapshot {
    format: u16,
    definition: DefinitionRef,
    state: CaseState,
}

/// [`Snapshot`] as written, borrowing the state.
#[derive(Serialize)]
struct SnapshotRef<'a> {
    format: u16,
    definition: &'a DefinitionRef,
    state: &'a CaseState,
}

type DefinitionCache = HashMap<(TenantId, String, u32), Arc<CaseDefinition>>;

/// Recently written case states: a case's state at a version is a fact, so a
/// cached state plus the events appended after it is the current state.
type StateCache = Recent<StreamId, (StreamVersion, Arc<CaseDefinition>, CaseState)>;

/// The Casebook engine. Cheap to clone; clones share everything.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use casebook::engine::{Engine, OpenCase};
/// use casebook::definition::Format;
/// use casebook::security::Principal;
/// use casebook::log::TenantId;
///
/// let engine = Engine::in_memory().unwrap();
/// engine.start().await.unwrap();
/// let kent = TenantId::new("kent").unwrap();
/// let ops = Principal::platform_administrator("ops-1");
/// engine.register_tenant(&ops, &kent).await.unwrap();
/// let admin = Principal::new(kent.clone(), "admin-1").with_roles(["administrator"]);
/// let source = include_str!("../../../examples/definitions/foi-request.toml");
/// let deployed = engine.deploy(&admin, source, Format::Toml).await.unwrap();
/// assert!(deployed.newly_deployed);
/// // Deploying the same document again is a no-op.
/// assert!(!engine.deploy(&admin, source, Format::Toml).await.unwrap().newly_deployed);
/// engine.shutdown().await.unwrap();
/// # });
/// ```
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// The running dispatcher: its stop signal and task.
type DispatcherSlot = Option<(
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
)>;

pub(crate) struct Inner {
    store: Arc<dyn EventStore>,
    log: Option<LogStore>,
    snapshots: Arc<dyn SnapshotStore>,
    sled_snapshots: Option<Arc<SledSnapshots>>,
    definitions: RwLock<DefinitionCache>,
    /// The latest deployed version of each case type, with the definition
    /// stream's version it was read at: valid while the stream has not
    /// moved (checked with one `stream_version`, so opening a case does not
    /// read and parse every deployment again).
    latest: RwLock<HashMap<(TenantId, String), (StreamVersion, u32)>>,
    projections: queries::ProjectionSlot,
    states: Mutex<StateCache>,
    config: EngineConfig,
    /// [`Engine::start`] has run: projection runners follow the log.
    started: AtomicBool,
    /// [`Engine::shutdown`] has begun: no more commands.
    stopped: AtomicBool,
    /// Pending service invocations (fed by the orchestration projection).
    hub: Arc<crate::orchestration::Hub>,
    /// The dispatcher, once started.
    dispatcher: Mutex<DispatcherSlot>,
    /// Permits to decide a command off the async workers
    /// ([`HEAVY_DECISIONS`]).
    heavy: Arc<tokio::sync::Semaphore>,
    /// Snapshots being written off the command path (at most
    /// [`SNAPSHOT_WRITERS`]; one due while they are busy is skipped).
    snapshotting: Arc<tokio::sync::Semaphore>,
    /// Snapshots being read and decoded off the async workers (at most
    /// [`SNAPSHOT_READERS`]).
    snapshot_reads: Arc<tokio::sync::Semaphore>,
    /// The tenant registry, read at first use.
    tenants: tenants::RegistrySlot,
    /// Records the audit of reads.
    audit: crate::audit::Recorder,
    /// The secret of the tenants' position tokens.
    positions: PositionKey,
    /// Seals subjects' personal fields before they reach the log and opens
    /// them on read (crypto-shredding, `crate::records::sealing`).
    pub(crate) sealer: Arc<crate::records::sealing::Sealer>,
}

impl Engine {
    /// An engine on the embedded durable store in `dir` (`<dir>/log`,
    /// `<dir>/index`, `<dir>/snapshots`, `<dir>/projections`, and
    /// `<dir>/position.key`, the secret of the tenants' position tokens,
    /// made at the first open: see [`crate::security::positions`]).
    ///
    /// Opening recovers the log and opens every database, and starts no
    /// background work: commands work at once, and [`Engine::start`] starts
    /// the projection runners (queries need it). [`Engine::shutdown`] stops
    /// everything and releases the directory.
    ///
    /// Errors: those of [`LogStore::open`] ([`LogError::Locked`] while
    /// another engine has the directory open); [`EngineError::SnapshotStore`];
    /// [`EngineError::PositionKey`] if the token secret cannot be read or
    /// made;
    /// [`EngineError::Projection`] if the projection database cannot be
    /// opened.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, EngineError> {
        Self::open_with(dir, EngineConfig::default())
    }

    /// The page-cache budgets the engine's sled databases were opened with.
    pub fn cache_budget(&self) -> CacheBudget {
        self.inner.config.caches
    }

    /// [`Engine::open`] with settings.
    pub fn open_with(dir: impl AsRef<Path>, config: EngineConfig) -> Result<Self, EngineError> {
        let log = LogStore::open_with(
            dir.as_ref(),
            LogStoreConfig {
                clock: Arc::clone(&config.clock),
                min_free_bytes: config.min_free_bytes,
                index_cache_bytes: config.caches.index_bytes,
                checkpoints: config.checkpoints.clone(),
                ..LogStoreConfig::default()
            },
        )?;
        let snapshots = Arc::new(SledSnapshots::open_with_cache(
            &dir.as_ref().join("snapshots"),
            &log,
            config.caches.snapshots_bytes,
        )?);
        let positions =
            PositionKey::load_or_create(dir.as_ref()).map_err(EngineError::PositionKey)?;
        let kms: Arc<dyn crate::records::kms::Kms> = match &config.kms {
            Some(kms) => Arc::clone(kms),
            None => Arc::new(crate::records::kms::FileKms::new(dir.as_ref().join("keys"))),
        };
        let engine = Engine::assemble(
            positions,
            kms,
            Arc::new(log.clone()),
            Some(log),
            Arc::clone(&snapshots) as Arc<dyn SnapshotStore>,
            Some(snapshots),
            queries::ProjectionSlot::durable(dir.as_ref().join("projections")),
            config,
        );
        engine.open_projections()?;
        let report = engine.recovery();
        if !report.is_clean() {
            tracing::warn!(target: "casebook::recovery", "engine opened: {report}");
        }
        Ok(engine)
    }

    /// What opening the engine found and did: the log's
    /// [`LogStore::recovery_report`] (bytes and records cut from its tail,
    /// segments removed, the index rebuilt) and the derived stores set aside
    /// and rebuilt from the log because they were ahead of it or built from
    /// another log (snapshots, projections). An in-memory engine's is empty.
    /// Opening logs it on the `casebook::recovery` target.
    ///
    /// Errors: [`crate::security::AccessError::NotPlatformAdministrator`]
    /// (it tells global positions and paths).
    pub fn recovery_report(
        &self,
        platform_admin: &Principal,
    ) -> Result<crate::log::RecoveryReport, crate::security::AccessError> {
        Self::require_platform_admin(platform_admin, "read the recovery report")?;
        Ok(self.recovery())
    }

    fn recovery(&self) -> crate::log::RecoveryReport {
        let mut report = self
            .inner
            .log
            .as_ref()
            .map(|l| l.recovery_report().clone())
            .unwrap_or_default();
        if let Some(r) = self
            .inner
            .sled_snapshots
            .as_ref()
            .and_then(|s| s.rebuilt_at_open())
        {
            report.rebuilt.push(r.clone());
        }
        if let Some(r) = self.inner.projections.rebuilt_at_open() {
            report.rebuilt.push(r);
        }
        report
    }

    /// An engine that keeps everything in memory (tests, examples); its
    /// projections live in a temporary database.
    ///
    /// Errors: [`EngineError::Projection`] if the temporary projection
    /// database cannot be made.
    pub fn in_memory() -> Result<Self, EngineError> {
        Self::in_memory_with(EngineConfig::default())
    }

    /// [`Engine::in_memory`] with settings (the store's clock is the config's).
    pub fn in_memory_with(config: EngineConfig) -> Result<Self, EngineError> {
        let store = Arc::new(MemoryStore::with_clock(Arc::clone(&config.clock)));
        Self::with_store(store, config)
    }

    /// An engine on any event store, with in-memory snapshots, a
    /// temporary projection database and a position-token secret of its
    /// own (tokens it gives are valid for this engine value only). The
    /// store stamps `recorded` times with its own clock.
    ///
    /// Errors: [`EngineError::Projection`] if the temporary projection
    /// database cannot be made.
    pub fn with_store(
        store: Arc<dyn EventStore>,
        config: EngineConfig,
    ) -> Result<Self, EngineError> {
        let positions = PositionKey::random().map_err(EngineError::PositionKey)?;
        Self::node_on_shared_store(store, positions, config)
    }

    /// An engine node on an event store other nodes share (the PostgreSQL
    /// store): everything that must survive is in the store — cases,
    /// definitions, tenants, audit, idempotency records — so any node serves
    /// any case. Views are this node's own caches, rebuilt from the shared
    /// log when the node starts (queries wait for them to catch up);
    /// snapshots are kept in memory. `positions` is the position-token
    /// secret every node of the deployment shares, so a token one node gave
    /// is valid on the others (the PostgreSQL store keeps one:
    /// `PgEventStore::shared_secret`). Exclusive decisions are made on case
    /// streams with expected versions, so nodes racing on one case retry
    /// as commands in one process do.
    ///
    /// Errors: [`EngineError::Projection`] if the temporary projection
    /// database cannot be made.
    pub fn node_on_shared_store(
        store: Arc<dyn EventStore>,
        positions: PositionKey,
        config: EngineConfig,
    ) -> Result<Self, EngineError> {
        let kms: Arc<dyn crate::records::kms::Kms> = match &config.kms {
            Some(kms) => Arc::clone(kms),
            None => Arc::new(crate::records::kms::MemoryKms::default()),
        };
        let engine = Engine::assemble(
            positions,
            kms,
            store,
            None,
            Arc::new(MemorySnapshots::default()),
            None,
            queries::ProjectionSlot::default(),
            config,
        );
        engine.open_projections()?;
        Ok(engine)
    }

    /// An engine node on the PostgreSQL database `store` names: connects
    /// (applying the schema if needed) and runs
    /// [`Engine::node_on_shared_store`] with the deployment's position-token
    /// secret, which the database keeps, and — unless `config.kms` names
    /// another — the subjects' data keys in the same database
    /// ([`crate::records::pg_kms::PgKms`]). The store stamps events with
    /// `config`'s clock. Call [`Engine::start`] next.
    ///
    /// Errors: [`EngineError::Log`] with [`LogError::Database`] if the
    /// database cannot be reached or migrated; those of
    /// [`Engine::node_on_shared_store`].
    #[cfg(feature = "postgres")]
    pub async fn on_postgres(
        mut store: crate::log::pg::PgStoreConfig,
        mut config: EngineConfig,
    ) -> Result<Self, EngineError> {
        store.clock = Arc::clone(&config.clock);
        let store = crate::log::pg::PgEventStore::connect(store).await?;
        if config.kms.is_none() {
            // Every node opens what any node sealed: the keys are shared too.
            config.kms = Some(Arc::new(crate::records::pg_kms::PgKms::new(store.clone())));
        }
        let key = store.shared_secret("position-key").await?;
        Self::node_on_shared_store(Arc::new(store), PositionKey::from_bytes(key), config)
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        positions: PositionKey,
        kms: Arc<dyn crate::records::kms::Kms>,
        store: Arc<dyn EventStore>,
        log: Option<LogStore>,
        snapshots: Arc<dyn SnapshotStore>,
        sled_snapshots: Option<Arc<SledSnapshots>>,
        projections: queries::ProjectionSlot,
        config: EngineConfig,
    ) -> Self {
        let hub = crate::orchestration::Hub::new(config.services.clone());
        let audit = crate::audit::Recorder::new(Arc::clone(&store), config.audit_reads);
        Engine {
            inner: Arc::new(Inner {
                audit,
                store,
                log,
                snapshots,
                sled_snapshots,
                definitions: RwLock::default(),
                latest: RwLock::default(),
                projections,
                states: Mutex::new(Recent::new(config.cached_cases)),
                config,
                started: AtomicBool::new(false),
                stopped: AtomicBool::new(false),
                hub,
                dispatcher: Mutex::new(None),
                heavy: Arc::new(tokio::sync::Semaphore::new(HEAVY_DECISIONS)),
                snapshotting: Arc::new(tokio::sync::Semaphore::new(SNAPSHOT_WRITERS)),
                snapshot_reads: Arc::new(tokio::sync::Semaphore::new(SNAPSHOT_READERS)),
                tenants: tenants::RegistrySlot::default(),
                sealer: Arc::new(crate::records::sealing::Sealer::new(kms, positions.clone())),
                positions,
            }),
        }
    }

    /// Starts the background work: the projection runners of every tenant
    /// the projection database knows (but a suspended one), and from then
    /// on of each tenant at its first write. Idempotent.
    ///
    /// Errors: [`EngineError::ShutDown`] after [`Engine::shutdown`];
    /// [`EngineError::Projection`] if a runner cannot start.
    pub async fn start(&self) -> Result<(), EngineError> {
        self.check_running()?;
        let suspended = self.suspended_tenants().await?;
        self.start_projections(&suspended).await?;
        self.inner.started.store(true, Ordering::Release);
        let mut slot = self
            .inner
            .dispatcher
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let task = tokio::spawn(crate::orchestration::dispatcher::run(
                Arc::downgrade(&self.inner),
                Arc::clone(&self.inner.hub),
                stopped,
            ));
            *slot = Some((stop, task));
        }
        Ok(())
    }

    pub(crate) fn from_inner(inner: Arc<Inner>) -> Self {
        Engine { inner }
    }

    /// Whether the case's state kept in memory (after a recent command)
    /// waits for this attempt of an invocation. `false` says nothing (no
    /// state kept, or an older one): load the case to know.
    pub(crate) fn cached_wants(
        &self,
        tenant: &TenantId,
        case_id: &str,
        invocation: crate::case::InvocationId,
        attempt: u32,
    ) -> bool {
        let Ok(stream) = crate::streams::case(tenant, case_id) else {
            return false;
        };
        let mut states = self.inner.states.lock().unwrap_or_else(|p| p.into_inner());
        states.get(&stream).is_some_and(|(_, _, state)| {
            state
                .invocations
                .iter()
                .any(|p| p.invocation == invocation && p.attempt == attempt)
        })
    }

    pub(crate) fn hub(&self) -> &crate::orchestration::Hub {
        &self.inner.hub
    }

    pub(crate) fn hub_arc(&self) -> Arc<crate::orchestration::Hub> {
        Arc::clone(&self.inner.hub)
    }

    /// Stops the dispatcher: no new invocations; those in flight get up to
    /// [`DISPATCHER_DRAIN`] to finish and record their outcomes (the rest
    /// are invoked again after the next start).
    async fn stop_dispatcher(&self) {
        let taken = self
            .inner
            .dispatcher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some((stop, mut task)) = taken {
            let _ = stop.send(true);
            if tokio::time::timeout(DISPATCHER_DRAIN, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }

    /// Starts the engine, runs until `shutdown` completes (e.g.
    /// `tokio::signal::ctrl_c()` mapped to `()`), then shuts it down.
    ///
    /// Errors: those of [`Engine::start`] and [`Engine::shutdown`].
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<(), EngineError> {
        self.start().await?;
        shutdown.await;
        self.shutdown().await
    }

    /// Stops the engine: refuses new commands, drains and stops the
    /// projection runners, closes the durable log after the appends already
    /// queued (releasing the data directory's `LOCK`), and flushes snapshots
    /// and projections. Once every clone of the engine is dropped, the
    /// directory can be opened again straight away. Idempotent.
    ///
    /// Errors: a flush or close that failed (what was acknowledged is in
    /// the log regardless).
    pub async fn shutdown(&self) -> Result<(), EngineError> {
        self.stop_dispatcher().await;
        self.inner.stopped.store(true, Ordering::Release);
        self.close_projections().await?;
        self.inner.audit.close().await;
        if let Some(log) = &self.inner.log {
            log.close().await?;
        }
        // Snapshots being written land before their store is flushed.
        let _ = self
            .inner
            .snapshotting
            .acquire_many(SNAPSHOT_WRITERS as u32)
            .await;
        if let Some(s) = &self.inner.sled_snapshots {
            s.flush().await?;
        }
        Ok(())
    }

    /// Every service the definition declares that runs in process for the
    /// tenant must be declared with the registered service's contract.
    fn check_service_contracts(
        &self,
        tenant: &TenantId,
        def: &CaseDefinition,
    ) -> Result<(), EngineError> {
        for (i, declared) in def.services.iter().enumerate() {
            let Some(service) = self
                .inner
                .hub
                .registry()
                .find(tenant, declared.name.as_str())
            else {
                continue;
            };
            let problems = service.contract().mismatches(declared);
            if !problems.is_empty() {
                return Err(EngineError::ServiceContractMismatch {
                    service: declared.name.to_string(),
                    problems: problems
                        .into_iter()
                        .map(|(p, m)| (format!("services[{i}].{p}"), m))
                        .collect(),
                });
            }
        }
        Ok(())
    }

    /// Whether [`Engine::start`] has run and [`Engine::shutdown`] has not.
    pub fn is_running(&self) -> bool {
        self.inner.started.load(Ordering::Acquire) && !self.inner.stopped.load(Ordering::Acquire)
    }

    fn check_running(&self) -> Result<(), EngineError> {
        if self.inner.stopped.load(Ordering::Acquire) {
            return Err(EngineError::ShutDown);
        }
        Ok(())
    }

    /// The time now, by the engine's clock.
    pub fn now(&self) -> Timestamp {
        self.inner.config.clock.now()
    }

    /// The event store underneath, unscoped: it reads every tenant's
    /// events and appends under any actor, bypassing every check of the
    /// engine. For a platform administrator only
    /// ([`Principal::platform_administrator`]); a tenant's callers use
    /// [`Engine::tenant_log`], scoped to their tenant and clearance.
    ///
    /// Errors: [`crate::security::AccessError::NotPlatformAdministrator`].
    pub fn store(
        &self,
        platform_admin: &Principal,
    ) -> Result<Arc<dyn EventStore>, crate::security::AccessError> {
        Self::require_platform_admin(platform_admin, "use the unscoped event store")?;
        Ok(self.raw_store())
    }

    /// The sealer of subjects' personal fields.
    pub(crate) fn inner_sealer(&self) -> &Arc<crate::records::sealing::Sealer> {
        &self.inner.sealer
    }

    pub(crate) fn raw_store(&self) -> Arc<dyn EventStore> {
        Arc::clone(&self.inner.store)
    }

    /// The position-token codec of `tenant` (see
    /// [`crate::security::positions`]).
    /// The engine's secret (position tokens, subject ids).
    pub(crate) fn position_secret(&self) -> &PositionKey {
        &self.inner.positions
    }

    pub(crate) fn tenant_positions(&self, tenant: &TenantId) -> TenantPositions {
        self.inner.positions.tenant(tenant)
    }

    /// The token `tenant` would be given for a global position: for a
    /// platform administrator who reads the unscoped log
    /// ([`Engine::store`]) and hands a tenant a position, or answers a
    /// tenant's question about one.
    ///
    /// Errors: [`crate::security::AccessError::NotPlatformAdministrator`];
    /// [`crate::security::AccessError::PositionOutOfRange`].
    pub fn position_token(
        &self,
        platform_admin: &Principal,
        tenant: &TenantId,
        position: GlobalPosition,
    ) -> Result<PositionToken, crate::security::AccessError> {
        Self::require_platform_admin(platform_admin, "make a tenant's position token")?;
        self.tenant_positions(tenant).encode(position)
    }

    /// The global position a token of `tenant` stands for (for a platform
    /// administrator, as [`Engine::position_token`]).
    ///
    /// Errors: [`crate::security::AccessError::NotPlatformAdministrator`];
    /// [`crate::security::AccessError::NotAPositionToken`].
    pub fn token_position(
        &self,
        platform_admin: &Principal,
        tenant: &TenantId,
        token: PositionToken,
    ) -> Result<GlobalPosition, crate::security::AccessError> {
        Self::require_platform_admin(platform_admin, "decode a tenant's position token")?;
        self.tenant_positions(tenant).decode(token, "position")
    }

    /// The token of a raw event the principal has read (through
    /// [`Engine::read_all`], [`Engine::subscribe_all`], [`Engine::read_stream`]
    /// or [`Engine::tenant_log`]): what a server hands on instead of the
    /// event's global position. Only an event of the principal's own
    /// tenant has one.
    ///
    /// Errors: [`crate::security::AccessError::UnknownStream`] for another
    /// tenant's event; [`crate::security::AccessError::PositionOutOfRange`].
    pub fn event_token(
        &self,
        principal: &Principal,
        event: &crate::log::RecordedEvent,
    ) -> Result<PositionToken, crate::security::AccessError> {
        if event.tenant() != &principal.tenant {
            return Err(crate::security::AccessError::UnknownStream {
                stream: event.stream.to_string(),
            });
        }
        self.tenant_positions(&principal.tenant)
            .encode(event.position)
    }

    /// Deploys a case definition for the principal's tenant.
    ///
    /// The document is parsed and validated; a valid one is stored as a
    /// `DefinitionDeployed` event. Deploying the same content again returns
    /// the existing deployment (`newly_deployed: false`). Running cases keep
    /// the version they started with.
    ///
    /// Errors: [`EngineError::Case`] with [`crate::case::CaseError::Forbidden`]
    /// without the `administrator` role; [`EngineError::InvalidDefinition`]
    /// listing every problem;
    /// [`EngineError::DefinitionVersionConflict`] for a deployed version with
    /// other content; [`EngineError::DefinitionVersionNotIncreasing`].
    pub async fn deploy(
        &self,
        principal: &Principal,
        source: &str,
        format: Format,
    ) -> Result<Deployment, EngineError> {
        self.deploy_with(principal, source, format, CommandContext::default())
            .await
    }

    /// [`Engine::deploy`] with provenance and a command id: a retried
    /// deployment with the same command id returns the first attempt's
    /// outcome.
    ///
    /// Errors: as [`Engine::deploy`].
    pub async fn deploy_with(
        &self,
        principal: &Principal,
        source: &str,
        format: Format,
        context: CommandContext,
    ) -> Result<Deployment, EngineError> {
        self.check_running()?;
        self.admit(principal).await?;
        if !principal.has_role(ADMIN_ROLE) {
            return Err(EngineError::forbidden(
                "deploy case definitions",
                &[ADMIN_ROLE],
            ));
        }
        let def = CaseDefinition::parse(source, format)?;
        self.check_service_contracts(&principal.tenant, &def)?;
        let max_events = self.inner.store.limits().max_events_per_append;
        if let Some(problem) =
            crate::definition::opening_too_large(def.items_created_on_open(), max_events)
        {
            return Err(crate::definition::DefinitionError {
                problems: vec![problem],
            }
            .into());
        }
        let key = def.key.as_str().to_string();
        let fingerprint = def.fingerprint();
        let stream = crate::streams::definition(&principal.tenant, &key)?;
        for _ in 0..self.inner.config.max_attempts {
            if let Some(command) = &context.command_id {
                if let Some(done) = idempotency::find(&*self.inner.store, &stream, command).await? {
                    return Ok(DefinitionEvent::outcome(&done[0])?);
                }
            }
            let deployed = self.deployed(&stream).await?;
            match deployment::decide(&deployed, &def) {
                Decision::Deploy => {}
                Decision::AlreadyDeployed => {
                    return Ok(Deployment {
                        key,
                        version: def.version,
                        fingerprint,
                        newly_deployed: false,
                    })
                }
                Decision::VersionConflict => {
                    return Err(EngineError::DefinitionVersionConflict {
                        key,
                        version: def.version,
                    })
                }
                Decision::NotIncreasing { latest } => {
                    return Err(EngineError::DefinitionVersionNotIncreasing {
                        key,
                        version: def.version,
                        latest,
                    })
                }
            }
            let event = DefinitionEvent::deploying(&def, source, format);
            let mut metadata = self.metadata(principal, &context);
            if metadata.reason.is_none() {
                metadata.reason = Some(format!("deploy {key} version {}", def.version));
            }
            let expected = match deployed.len() {
                0 => ExpectedVersion::NoStream,
                n => ExpectedVersion::Exact(StreamVersion(n as u64 - 1)),
            };
            let data = match &context.command_id {
                Some(command) => event
                    .to_event_data_with_id(idempotency::event_id(&stream, command, 0), metadata)?,
                None => event.to_event_data(metadata)?,
            };
            match self.inner.store.append(&stream, expected, vec![data]).await {
                Ok(_) => {
                    let version = def.version;
                    self.cache(&principal.tenant, Arc::new(def));
                    self.follow_tenant(&principal.tenant);
                    return Ok(Deployment {
                        key,
                        version,
                        fingerprint,
                        newly_deployed: true,
                    });
                }
                Err(LogError::WrongExpectedVersion { .. }) => continue,
                Err(LogError::EventIdConflict { .. }) if context.command_id.is_some() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Contended {
            case_id: stream.to_string(),
            attempts: self.inner.config.max_attempts,
        })
    }

    /// The deployed versions of a case type: `(version, fingerprint)`, oldest first.
    pub async fn deployments(
        &self,
        principal: &Principal,
        case_type: &str,
    ) -> Result<Vec<(u32, Fingerprint)>, EngineError> {
        self.admit(principal).await?;
        let stream = crate::streams::definition(&principal.tenant, case_type)?;
        Ok(self
            .deployed(&stream)
            .await?
            .into_iter()
            .map(|d| (d.version, d.fingerprint))
            .collect())
    }

    /// A deployed definition of the principal's tenant (latest if `version` is None).
    ///
    /// Errors: [`EngineError::UnknownDefinition`].
    pub async fn definition(
        &self,
        principal: &Principal,
        case_type: &str,
        version: Option<u32>,
    ) -> Result<Arc<CaseDefinition>, EngineError> {
        self.admit(principal).await?;
        self.definition_for(&principal.tenant, case_type, version)
            .await
    }

    /// Decides a command: inline within [`INLINE_BUDGET`], else again on a
    /// blocking thread within [`COMMAND_BUDGET`] (see the module docs).
    /// Returns the events and the state they lead to.
    async fn decide(
        &self,
        def: &Arc<CaseDefinition>,
        state: &CaseState,
        principal: &Principal,
        command: CaseCommand,
        now: Timestamp,
    ) -> Result<(Vec<CaseEvent>, CaseState), EngineError> {
        let inline = Budget::new(INLINE_BUDGET);
        match decide_to_state(def, state, principal, command.clone(), now, &inline) {
            Err(CaseError::RuleFailed {
                error: EvalError::BudgetExceeded { .. },
                ..
            }) => {}
            decided => return Ok(decided?),
        }
        let _permit = Arc::clone(&self.inner.heavy)
            .acquire_owned()
            .await
            .map_err(|_| EngineError::ShutDown)?;
        let (def, state, principal) = (Arc::clone(def), state.clone(), principal.clone());
        let decided = tokio::task::spawn_blocking(move || {
            let budget = Budget::new(COMMAND_BUDGET);
            decide_to_state(&def, &state, &principal, command, now, &budget)
        })
        .await;
        match decided {
            Ok(decided) => Ok(decided?),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(EngineError::ShutDown),
        }
    }

    async fn definition_for(
        &self,
        tenant: &TenantId,
        case_type: &str,
        version: Option<u32>,
    ) -> Result<Arc<CaseDefinition>, EngineError> {
        let unknown = || EngineError::UnknownDefinition {
            tenant: tenant.clone(),
            key: case_type.to_string(),
            version,
        };
        if let Some(v) = version {
            let cached = self
                .inner
                .definitions
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&(tenant.clone(), case_type.to_string(), v))
                .cloned();
            if let Some(def) = cached {
                return Ok(def);
            }
        }
        let stream = crate::streams::definition(tenant, case_type).map_err(|_| unknown())?;
        let mut head = None;
        if version.is_none() {
            head = self.inner.store.stream_version(&stream).await?;
            let known = self
                .inner
                .latest
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&(tenant.clone(), case_type.to_string()))
                .copied();
            if let (Some(head), Some((at, latest))) = (head, known) {
                if at == head {
                    return Box::pin(self.definition_for(tenant, case_type, Some(latest))).await;
                }
            }
        }
        let deployed = self.deployed(&stream).await?;
        let pick = match version {
            Some(v) => deployed.into_iter().find(|d| d.version == v),
            None => deployed.into_iter().max_by_key(|d| d.version),
        };
        let Deployed {
            version: deployed_version,
            fingerprint,
            format,
            source,
        } = pick.ok_or_else(unknown)?;
        let changed = |source| EngineError::StoredDefinitionChanged {
            key: case_type.to_string(),
            version: deployed_version,
            source,
        };
        if let Some(head) = head {
            self.inner
                .latest
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(
                    (tenant.clone(), case_type.to_string()),
                    (head, deployed_version),
                );
        }
        let cached = self
            .inner
            .definitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(tenant.clone(), case_type.to_string(), deployed_version))
            .cloned();
        if let Some(def) = cached {
            return Ok(def);
        }
        let def = CaseDefinition::parse_deployed(&source, format).map_err(|e| changed(Some(e)))?;
        if def.fingerprint() != fingerprint {
            return Err(changed(None));
        }
        let def = Arc::new(def);
        self.cache(tenant, Arc::clone(&def));
        Ok(def)
    }

    fn cache(&self, tenant: &TenantId, def: Arc<CaseDefinition>) {
        self.inner
            .definitions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                (tenant.clone(), def.key.as_str().to_string(), def.version),
                def,
            );
    }

    /// Every deployment in a definition stream, oldest first.
    async fn deployed(&self, stream: &StreamId) -> Result<Vec<Deployed>, EngineError> {
        let events = self
            .inner
            .store
            .read_stream(
                stream,
                Direction::Forward,
                StreamVersion::START,
                self.inner.store.limits().max_read_limit,
            )
            .await?;
        Ok(deployment::read(&events)?)
    }

    /// Opens a case. The case's tenant is the principal's.
    ///
    /// With a command id in the request's context, a retried open returns
    /// the first attempt's outcome (and, without a case id, names the same
    /// case: the id is derived from the command id).
    ///
    /// Errors: [`EngineError::UnknownDefinition`]; [`EngineError::CaseExists`];
    /// [`EngineError::InvalidId`]; [`EngineError::Case`] for a rejected open
    /// (roles, clearance, missing or mistyped fields).
    pub async fn open_case(
        &self,
        principal: &Principal,
        request: OpenCase,
    ) -> Result<CaseOutcome, EngineError> {
        // Before anything walks the values (and so before any early return
        // would drop them recursively).
        let command = CaseCommand::Open {
            case_file: request.case_file,
            classification: request.classification,
        }
        .check_nesting();
        self.check_running()?;
        self.admit(principal).await?;
        let command = command?;
        let def = self
            .definition_for(&principal.tenant, &request.case_type, request.version)
            .await?;
        let context = request.context;
        let case_id = match (request.case_id, &context.command_id) {
            (Some(id), _) => id,
            (None, Some(command)) => CaseId::new(format!(
                "{}-{}",
                def.key.as_str(),
                idempotency::case_suffix(def.key.as_str(), command)
            ))?,
            (None, None) => CaseId::new(format!(
                "{}-{}",
                def.key.as_str(),
                uuid::Uuid::now_v7().simple()
            ))?,
        };
        let stream = crate::streams::case(&principal.tenant, &case_id)?;
        if let Some(outcome) = self
            .earlier_outcome(principal, &stream, &case_id, &context)
            .await?
        {
            return Ok(outcome);
        }
        let state = CaseState::default();
        let (events, state) = self
            .decide(&def, &state, principal, command, self.now())
            .await?;
        match self
            .append(&def, state, &stream, None, events, principal, &context)
            .await
        {
            Err(EngineError::Log(
                LogError::WrongExpectedVersion { .. } | LogError::EventIdConflict { .. },
            )) => match self
                .earlier_outcome(principal, &stream, &case_id, &context)
                .await?
            {
                Some(outcome) => Ok(outcome),
                None => Err(EngineError::CaseExists {
                    case_id: case_id.to_string(),
                }),
            },
            other => other.map(|(version, position, events)| CaseOutcome {
                case_id,
                events,
                version,
                position,
            }),
        }
    }

    /// Executes a command on a case of the principal's tenant.
    ///
    /// With a command id in `context`, a command that already ran (its
    /// reply lost, the engine restarted since) is not applied again: the
    /// original outcome is returned and nothing is appended.
    ///
    /// Errors: [`EngineError::UnknownCase`]; [`EngineError::Case`] when the
    /// runtime rejects the command (nothing is appended);
    /// [`EngineError::Contended`] if other commands keep changing the case;
    /// [`EngineError::CommandIdReused`] for another principal's command id.
    pub async fn execute(
        &self,
        principal: &Principal,
        case_id: impl AsRef<str>,
        command: CaseCommand,
        context: CommandContext,
    ) -> Result<CaseOutcome, EngineError> {
        let case_id = case_id.as_ref();
        self.execute_inner(principal, case_id, command, context)
            .await
            .map_err(|e| conceal(e, principal, case_id))
    }

    async fn execute_inner(
        &self,
        principal: &Principal,
        case_id: &str,
        command: CaseCommand,
        context: CommandContext,
    ) -> Result<CaseOutcome, EngineError> {
        // Before anything clones or compares the values (and so before any
        // early return would drop them recursively).
        let command = command.check_nesting();
        self.check_running()?;
        self.admit(principal).await?;
        let command = command?;
        let stream = self.case_stream(principal, case_id)?;
        for attempt in 0..self.inner.config.max_attempts {
            if attempt > 1 {
                contention_backoff(attempt).await;
            }
            if let Some(outcome) = self
                .earlier_outcome(principal, &stream, case_id, &context)
                .await?
            {
                return Ok(outcome);
            }
            let loaded = self.load_stream(&stream, case_id, true).await?;
            check_hand_completion(&loaded.definition, &command, &context)?;
            let (definition, case_class) = (loaded.definition.clone(), loaded.state.classification);
            let invocations = Disclosure::invocation_items(&loaded.state);
            let (events, decided) = self
                .decide(
                    &loaded.definition,
                    &loaded.state,
                    principal,
                    command.clone(),
                    self.now(),
                )
                .await?;
            match self
                .append(
                    &loaded.definition,
                    decided,
                    &stream,
                    Some(loaded.version),
                    events,
                    principal,
                    &context,
                )
                .await
            {
                Ok((version, position, events)) => {
                    // The caller sees only what they may of what they caused
                    // (a restricted subject's data included: they may have
                    // sent it, but the reply is read like any other output).
                    let restricted = self
                        .withheld_in(&principal.tenant, &definition, case_id)
                        .await;
                    let see = Disclosure::new(&definition, case_class, principal)
                        .withholding(&restricted.fields);
                    return Ok(CaseOutcome {
                        case_id: CaseId::new(case_id)?,
                        events: see.events_with(events, invocations),
                        version,
                        position,
                    });
                }
                Err(EngineError::Log(LogError::WrongExpectedVersion { .. })) => continue,
                Err(EngineError::Log(LogError::EventIdConflict { .. }))
                    if context.command_id.is_some() =>
                {
                    continue
                }
                Err(e) => return Err(e),
            }
        }
        Err(EngineError::Contended {
            case_id: case_id.to_string(),
            attempts: self.inner.config.max_attempts,
        })
    }

    /// What an earlier attempt of this command (same command id) did to
    /// `stream`, if one ran.
    async fn earlier_outcome(
        &self,
        principal: &Principal,
        stream: &StreamId,
        case_id: &str,
        context: &CommandContext,
    ) -> Result<Option<CaseOutcome>, EngineError> {
        let Some(command) = &context.command_id else {
            return Ok(None);
        };
        let Some(recorded) = idempotency::find(&*self.inner.store, stream, command).await? else {
            return Ok(None);
        };
        if recorded[0].metadata.actor != principal.actor() {
            return Err(EngineError::CommandIdReused {
                command_id: command.to_string(),
            });
        }
        let last = &recorded[recorded.len() - 1];
        let (version, position) = (last.version, last.position);
        let mut events = Vec::with_capacity(recorded.len());
        for r in &recorded {
            events.push(self.inner.sealer.open(r).await?.event);
        }
        // Filtered like the first reply: by what the case is now.
        let loaded = self.load_stream(stream, case_id, false).await?;
        let restricted = self
            .withheld_in(stream.tenant(), &loaded.definition, case_id)
            .await;
        let see = Disclosure::new(&loaded.definition, loaded.state.classification, principal)
            .withholding(&restricted.fields);
        Ok(Some(CaseOutcome {
            case_id: CaseId::new(case_id)?,
            events: see.events(events, &loaded.state),
            version,
            position: Some(self.tenant_positions(stream.tenant()).encode(position)?),
        }))
    }

    /// The metadata of a command's events: who, from where, why.
    fn metadata(&self, principal: &Principal, context: &CommandContext) -> Metadata {
        context.metadata(principal)
    }

    /// The case as the reader may see it: fields above their clearance
    /// are withheld (and, without a purpose, those above the marking the
    /// definition requires one for: see [`crate::audit`]). Audited
    /// ([`ReadKind::View`](crate::audit::ReadKind::View)).
    ///
    /// Errors: [`EngineError::UnknownCase`] (also for a case above the
    /// reader's clearance); [`EngineError::Audit`].
    pub async fn view<'a>(
        &self,
        reader: impl Into<ReadContext<'a>>,
        case_id: impl AsRef<str>,
    ) -> Result<CaseView, EngineError> {
        let reader = reader.into();
        let case_id = case_id.as_ref();
        let (result, marking) = self.view_inner(&reader, case_id).await;
        let subject = crate::audit::Subject::case(case_id, marking);
        self.audited(&reader, crate::audit::ReadKind::View, subject, result)
            .await
    }

    /// [`Engine::view`] unaudited, with the case's marking once known; a
    /// restricted subject's fields are withheld.
    async fn view_inner(
        &self,
        reader: &ReadContext<'_>,
        case_id: &str,
    ) -> (Result<CaseView, EngineError>, Option<Classification>) {
        let principal = reader.principal;
        let loaded = match self.load_visible(reader, case_id).await {
            Ok(loaded) => loaded,
            Err((e, marking)) => return (Err(e), marking),
        };
        let marking = Some(loaded.state.classification);
        let restricted = self
            .withheld_in(&principal.tenant, &loaded.definition, case_id)
            .await;
        let erased = self.erased_in(principal, &loaded.definition, case_id).await;
        let result = audited::viewer(
            reader,
            &loaded.definition,
            loaded.state.classification,
            case_id,
        )
        .map_err(EngineError::from)
        .and_then(|viewer| {
            loaded
                .state
                .view_withholding(&loaded.definition, &viewer, &restricted.fields)
                .map_err(|e| conceal(e.into(), principal, case_id))
        })
        .map(|mut view| {
            view.erased = erased;
            view
        });
        (result, marking)
    }

    /// Loads a case the reader may see (unaudited), or the concealed error
    /// and the case's marking if it exists.
    async fn load_visible(
        &self,
        reader: &ReadContext<'_>,
        case_id: &str,
    ) -> Result<LoadedCase, (EngineError, Option<Classification>)> {
        let principal = reader.principal;
        reader.check().map_err(|e| (e.into(), None))?;
        self.admit(principal).await.map_err(|e| (e, None))?;
        let stream = self
            .case_stream(principal, case_id)
            .map_err(|e| (e, None))?;
        let loaded = self
            .load_stream(&stream, case_id, false)
            .await
            .map_err(|e| (conceal(e, principal, case_id), None))?;
        match loaded.state.view_for(&loaded.definition, principal) {
            Ok(_) => Ok(loaded),
            Err(e) => Err((
                conceal(e.into(), principal, case_id),
                Some(loaded.state.classification),
            )),
        }
    }

    /// Loads a case's full state (snapshot plus newer events), for embedding
    /// code that needs more than [`Engine::view`]. The state holds
    /// everything, so only a principal cleared for everything the case's
    /// definition can hold (its most restricted field and plan item) gets
    /// it; anyone else gets [`EngineError::UnknownCase`], exactly as for a
    /// case they may not see — they read it with [`Engine::view`]. A
    /// definition that requires a purpose for some fields requires one
    /// here. Audited
    /// ([`ReadKind::Load`](crate::audit::ReadKind::Load)).
    ///
    /// Errors: [`EngineError::UnknownCase`]; [`EngineError::Audit`] (with
    /// [`AuditError::PurposeRequired`](crate::audit::AuditError::PurposeRequired)).
    pub async fn load<'a>(
        &self,
        reader: impl Into<ReadContext<'a>>,
        case_id: impl AsRef<str>,
    ) -> Result<LoadedCase, EngineError> {
        let reader = reader.into();
        let case_id = case_id.as_ref();
        let (result, marking) = match self.load_visible(&reader, case_id).await {
            Err((e, marking)) => (Err(e), marking),
            Ok(loaded) if !reader.principal.may_see(full_marking(&loaded)) => (
                Err(EngineError::UnknownCase {
                    tenant: reader.principal.tenant.clone(),
                    case_id: case_id.to_string(),
                }),
                Some(loaded.state.classification),
            ),
            Ok(loaded) => {
                let marking = Some(loaded.state.classification);
                let p = reader.principal;
                match loaded.definition.purpose_required_above() {
                    Some(above) if !reader.has_purpose() && p.clearance > above => (
                        Err(crate::audit::AuditError::PurposeRequired {
                            case_id: case_id.to_string(),
                            above,
                        }
                        .into()),
                        marking,
                    ),
                    _ => {
                        // A restricted subject's data leaves the state too.
                        let mut loaded = loaded;
                        let restricted = self
                            .withheld_in(&p.tenant, &loaded.definition, case_id)
                            .await;
                        loaded
                            .state
                            .case_file
                            .retain(|k, _| !restricted.fields.contains(k.as_str()));
                        (Ok(loaded), marking)
                    }
                }
            }
        };
        let subject = crate::audit::Subject::case(case_id, marking);
        self.audited(&reader, crate::audit::ReadKind::Load, subject, result)
            .await
    }

    /// [`Engine::load`] for the engine's own work (a command naming a task,
    /// the dispatcher): not a consultation, so not audited.
    pub(crate) async fn load_unaudited(
        &self,
        principal: &Principal,
        case_id: &str,
    ) -> Result<LoadedCase, EngineError> {
        self.load_visible(&ReadContext::new(principal), case_id)
            .await
            .map_err(|(e, _)| e)
    }

    /// Loads a case from its first event, ignoring cached states and
    /// snapshots (to measure and to check them; behind the
    /// `bench-internals` feature).
    #[cfg(any(test, feature = "bench-internals"))]
    pub async fn load_without_snapshot<'a>(
        &self,
        reader: impl Into<ReadContext<'a>>,
        case_id: &str,
    ) -> Result<LoadedCase, EngineError> {
        let reader = reader.into();
        let principal = reader.principal;
        let mut marking = None;
        let result = async {
            self.admit(principal).await?;
            let stream = self.case_stream(principal, case_id)?;
            let loaded = self.replay(&stream, case_id, None, LoadStart::Log).await?;
            marking = Some(loaded.state.classification);
            loaded
                .state
                .view_for(&loaded.definition, principal)
                .map_err(|e| conceal(e.into(), principal, case_id))?;
            Ok(loaded)
        }
        .await;
        let subject = crate::audit::Subject::case(case_id, marking);
        self.audited(&reader, crate::audit::ReadKind::Load, subject, result)
            .await
    }

    fn case_stream(&self, principal: &Principal, case_id: &str) -> Result<StreamId, EngineError> {
        crate::streams::case(&principal.tenant, case_id).map_err(|_| EngineError::UnknownCase {
            tenant: principal.tenant.clone(),
            case_id: case_id.to_string(),
        })
    }

    /// Loads a case: from the state cache, a snapshot, or its first event.
    /// `take` removes the cached state instead of copying it (a command will
    /// put the new state back), which saves copying a large state twice.
    async fn load_stream(
        &self,
        stream: &StreamId,
        case_id: &str,
        take: bool,
    ) -> Result<LoadedCase, EngineError> {
        let cached = {
            let mut states = self.inner.states.lock().unwrap_or_else(|p| p.into_inner());
            if take {
                states.remove(stream)
            } else {
                states.get(stream).cloned()
            }
        };
        if let Some((version, def, state)) = cached {
            return self
                .replay(
                    stream,
                    case_id,
                    Some((def, state, version)),
                    LoadStart::Cache,
                )
                .await;
        }
        let snapshot = self.read_snapshot(stream).await;
        match snapshot {
            Some((version, s)) => {
                let def = self
                    .definition_for(
                        stream.tenant(),
                        s.definition.key.as_str(),
                        Some(s.definition.version),
                    )
                    .await?;
                if def.fingerprint() == s.definition.fingerprint {
                    return self
                        .replay(
                            stream,
                            case_id,
                            Some((def, s.state, version)),
                            LoadStart::Snapshot,
                        )
                        .await;
                }
                self.replay(stream, case_id, None, LoadStart::Log).await
            }
            None => self.replay(stream, case_id, None, LoadStart::Log).await,
        }
    }

    /// The stream's latest usable snapshot, read and decoded on a blocking
    /// thread (at most [`SNAPSHOT_READERS`] at once). Snapshots are
    /// derived: a failing store, a damaged or older-format snapshot only
    /// cost a replay (`None`).
    async fn read_snapshot(&self, stream: &StreamId) -> Option<(StreamVersion, Snapshot)> {
        let _permit = self.inner.snapshot_reads.acquire().await.ok()?;
        let store = Arc::clone(&self.inner.snapshots);
        let stream = stream.clone();
        tokio::task::spawn_blocking(move || match store.get(&stream) {
            Ok(Some((version, bytes))) => crate::log::codec::from_slice_bounded::<Snapshot>(&bytes)
                .ok()
                .filter(|s| s.format == SNAPSHOT_FORMAT)
                .map(|s| (version, s)),
            _ => None,
        })
        .await
        .ok()
        .flatten()
    }

    async fn replay(
        &self,
        stream: &StreamId,
        case_id: &str,
        start: Option<(Arc<CaseDefinition>, CaseState, StreamVersion)>,
        from: LoadStart,
    ) -> Result<LoadedCase, EngineError> {
        let (mut def, mut state, mut version) = match start {
            Some((d, s, v)) => (Some(d), s, Some(v)),
            None => (None, CaseState::default(), None),
        };
        let page = self.inner.store.limits().max_read_limit;
        loop {
            let from = version.map_or(StreamVersion::START, StreamVersion::next);
            let events = self
                .inner
                .store
                .read_stream(stream, Direction::Forward, from, page)
                .await?;
            for recorded in &events {
                let event = self.inner.sealer.open(recorded).await?.event;
                if def.is_none() {
                    let CaseEvent::CaseOpened { definition, .. } = &event else {
                        return Err(crate::case::CaseError::NotOpened.into());
                    };
                    def = Some(
                        self.definition_for(
                            stream.tenant(),
                            definition.key.as_str(),
                            Some(definition.version),
                        )
                        .await?,
                    );
                }
                if let Some(d) = &def {
                    state.apply(d, &event)?;
                }
                version = Some(recorded.version);
            }
            if events.len() < page {
                break;
            }
        }
        match (def, version) {
            (Some(definition), Some(version)) => Ok(LoadedCase {
                definition,
                state,
                version,
                start: from,
            }),
            _ => Err(EngineError::UnknownCase {
                tenant: stream.tenant().clone(),
                case_id: case_id.to_string(),
            }),
        }
    }

    /// Appends a command's events with provenance, then snapshots if due.
    /// `state` is the case's state after the events (as decided).
    #[allow(clippy::too_many_arguments)]
    async fn append(
        &self,
        def: &Arc<CaseDefinition>,
        state: CaseState,
        stream: &StreamId,
        loaded_version: Option<StreamVersion>,
        events: Vec<CaseEvent>,
        principal: &Principal,
        context: &CommandContext,
    ) -> Result<(StreamVersion, Option<PositionToken>, Vec<CaseEvent>), EngineError> {
        if events.is_empty() {
            return Ok((loaded_version.unwrap_or(StreamVersion::START), None, events));
        }
        let metadata = self
            .metadata(principal, context)
            .with_classification(state.classification);
        let mut data = Vec::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            let id = match &context.command_id {
                Some(command) => idempotency::event_id(stream, command, i),
                None => EventId::new(),
            };
            data.push(
                self.inner
                    .sealer
                    .encode(def, stream, &state.case_file, e, id, metadata.clone())
                    .await?,
            );
        }
        let expected = loaded_version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
        let result = self.inner.store.append(stream, expected, data).await?;
        self.follow_tenant(stream.tenant());
        if events
            .iter()
            .any(crate::orchestration::pending::hands_over_work)
        {
            self.hurry_orchestration(stream.tenant());
        }
        let before = loaded_version.map_or(0, |v| v.0 + 1);
        let every = self.inner.config.snapshot_every;
        if snapshot_due(every, before, result.version.0 + 1, &state) {
            if let Ok(permit) = Arc::clone(&self.inner.snapshotting).try_acquire_owned() {
                // The state's large parts are shared, so the copy is cheap;
                // encoding and storing it happen off the async workers.
                let (snapshots, stream, version, position, state) = (
                    Arc::clone(&self.inner.snapshots),
                    stream.clone(),
                    result.version,
                    result.last_position,
                    state.clone(),
                );
                tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    let Some(definition) = &state.definition else {
                        return;
                    };
                    let snapshot = SnapshotRef {
                        format: SNAPSHOT_FORMAT,
                        definition,
                        state: &state,
                    };
                    if let Ok(bytes) = rmp_serde::to_vec_named(&snapshot) {
                        // A failed snapshot costs only a longer replay later.
                        let _ = snapshots.put(&stream, version, position, bytes);
                    }
                });
            }
        }
        self.inner
            .states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put_back(stream.clone(), (result.version, Arc::clone(def), state));
        let token = self
            .tenant_positions(stream.tenant())
            .encode(result.last_position)?;
        Ok((result.version, Some(token), events))
    }
}

/// A pause before another attempt at a command whose case kept changing:
/// random, up to 2^`attempt` ms (at most 128 ms), so that callers racing on
/// one case — on several nodes of a shared store, where nothing else
/// orders them — spread out instead of colliding again in step.
async fn contention_backoff(attempt: u32) {
    let ceiling_ms = 1u64 << attempt.min(7);
    let jitter = getrandom::u64().unwrap_or(ceiling_ms / 2) % (ceiling_ms * 1000);
    tokio::time::sleep(std::time::Duration::from_micros(jitter)).await;
}
