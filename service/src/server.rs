//! Starting and stopping the gRPC server: the engine on its data directory,
//! the bundled definitions deployed to the demo tenant, authentication in
//! front of every Casebook service, the standard health and reflection
//! services, and a graceful shutdown that lets in-flight calls finish and
//! then drains the engine.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use casebook_engine::definition::Format;
use casebook_engine::engine::{Engine, EngineConfig, EngineError, ADMIN_ROLE};
use casebook_engine::log::TenantId;
use casebook_engine::orchestration::builtin::notify::{EmailConfig, Template};
use casebook_engine::orchestration::builtin::{
    AlertConfig, AlertService, CalendarService, DecisionService, EmailService, EmailSink,
    GisService, ReferenceService,
};
use casebook_engine::orchestration::ServiceRegistry;
use casebook_engine::resources::ResourceKind;
use casebook_engine::security::{Classification, Principal};
use casebook_proto::v1::admin_server::AdminServer;
use casebook_proto::v1::audit_server::AuditServer;
use casebook_proto::v1::cases_server::CasesServer;
use casebook_proto::v1::events_server::EventsServer;
use casebook_proto::v1::integrity_server::IntegrityServer;
use casebook_proto::v1::records_server::RecordsServer;
use casebook_proto::v1::workers_server::WorkersServer;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Identity, ServerTlsConfig};

use crate::admin::AdminService;
use crate::audit::AuditService;
use crate::auth::{AuthSetupError, Authenticator};
use crate::cases::CasesService;
use crate::config::Config;
use crate::events::EventsService;
use crate::integrity::IntegrityService;
use crate::records::RecordsService;
use crate::workers::WorkersService;

/// The example definitions shipped with the service (`examples/definitions`).
pub const BUNDLED_DEFINITIONS: &[(&str, &str)] = &[
    (
        "burglary.toml",
        include_str!("../../examples/definitions/burglary.toml"),
    ),
    (
        "domestic-abuse.toml",
        include_str!("../../examples/definitions/domestic-abuse.toml"),
    ),
    (
        "foi-request.toml",
        include_str!("../../examples/definitions/foi-request.toml"),
    ),
    (
        "missing-person.toml",
        include_str!("../../examples/definitions/missing-person.toml"),
    ),
];

/// The sample resources deployed to the demo tenant with the bundled
/// definitions (`examples/resources`): kind, name, document.
pub const BUNDLED_RESOURCES: &[(ResourceKind, &str, &str)] = &[
    (
        ResourceKind::Boundaries,
        "wards",
        include_str!("../../examples/resources/wards.geojson"),
    ),
    (
        ResourceKind::DecisionTable,
        "burglary-grading",
        include_str!("../../examples/resources/burglary-grading.toml"),
    ),
    (
        ResourceKind::ReferenceData,
        "offence-codes",
        include_str!("../../examples/resources/offence-codes.toml"),
    ),
    (
        ResourceKind::Contacts,
        "directory",
        include_str!("../../examples/resources/directory.toml"),
    ),
];

/// The demo tenant's email template for the burglary acknowledgement.
pub fn demo_templates() -> Vec<(&'static str, Template)> {
    vec![(
        "burglary_acknowledgement",
        Template::new(
            "Your burglary report {{case_id}}",
            "Thank you for reporting the burglary.\n\n\
             Your report is graded {{grade}}: we aim to attend within \
             {{attend_within_minutes}} minutes.\n\
             Your local policing ward is {{ward}}.\n\n\
             Quote {{case_id}} if you contact us about it.\n",
        ),
    )]
}

/// The built-in services `serve` runs for `tenant`, sending email as
/// `email` says (`data` is the data directory, for the default outbox).
pub fn builtin_services(
    tenant: &TenantId,
    email: &crate::config::EmailConfig,
    data: &std::path::Path,
) -> ServiceRegistry {
    let sink = match &email.smtp_host {
        Some(host) => EmailSink::Smtp {
            host: host.clone(),
            port: email.smtp_port.unwrap_or(25),
        },
        None => EmailSink::Folder(email.folder.clone().unwrap_or_else(|| data.join("outbox"))),
    };
    let mut config = EmailConfig::new(
        email
            .from
            .clone()
            .unwrap_or_else(|| "Casebook <casebook@localhost>".into()),
        sink,
    );
    for (name, template) in demo_templates() {
        config = config.with_template(name, template);
    }
    let only = || [tenant.clone()];
    let alerts = AlertConfig::new()
        .with_role("supervisor")
        .with_role("duty_inspector")
        .with_team("control_room", ["call_handler", "supervisor"])
        .with_team("cid", ["investigator", "supervisor"])
        .with_template("attention", "{{case_id}} needs attention: {{reason}}");
    ServiceRegistry::new()
        .with_for(
            Arc::new(AlertService::new().with_tenant(tenant.clone(), alerts)),
            only(),
        )
        .with_for(Arc::new(CalendarService::new()), only())
        .with_for(Arc::new(GisService::new()), only())
        .with_for(Arc::new(DecisionService::new()), only())
        .with_for(Arc::new(ReferenceService::new()), only())
        .with_for(
            Arc::new(EmailService::new().with_tenant(tenant.clone(), config)),
            only(),
        )
}

/// Deploys the sample resources to `tenant` (a no-op for those already
/// deployed). Returns how many were newly deployed.
///
/// Errors: [`ServeError::DemoTenant`]; a resource that cannot be deployed
/// is logged and skipped.
pub async fn deploy_bundled_resources(engine: &Engine, tenant: &str) -> Result<usize, ServeError> {
    let tenant = TenantId::new(tenant).map_err(|e| ServeError::DemoTenant(e.to_string()))?;
    let admin = Principal::new(tenant, "casebook-bootstrap")
        .with_roles([ADMIN_ROLE])
        .with_clearance(Classification::TopSecret);
    let mut deployed = 0;
    for (kind, name, source) in BUNDLED_RESOURCES {
        match engine.deploy_resource(&admin, *kind, name, source).await {
            Ok(d) if d.newly_deployed => {
                tracing::info!(%kind, name, version = d.version, "deployed bundled resource");
                deployed += 1;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(%kind, name, error = %e, "bundled resource not deployed"),
        }
    }
    Ok(deployed)
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The engine could not be opened, started or shut down.
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
    /// Authentication could not be set up.
    #[error("authentication: {0}")]
    Auth(#[from] AuthSetupError),
    /// The address could not be bound.
    #[error("listening on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TLS files could not be read or used.
    #[error("TLS: {0}")]
    Tls(String),
    /// A tenant of `tenants` is not a valid tenant id.
    #[error("tenants: {0}")]
    Tenant(String),
    /// The checkpoint settings are not usable.
    #[error("{0}")]
    Checkpoints(String),
    /// The PostgreSQL store could not be used.
    #[error("store: {0}")]
    Store(String),
    /// The demo tenant name is not a valid tenant id.
    #[error("demo tenant: {0}")]
    DemoTenant(String),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A background task of the server failed.
    #[error("{0}")]
    Task(String),
}

/// Fires when the server starts shutting down, so long-lived streams
/// (case watches, subscriptions) end and the graceful shutdown can finish.
#[derive(Clone)]
pub struct Stopping(watch::Receiver<bool>);

impl Stopping {
    /// A signal and the sender that fires it.
    pub fn new() -> (watch::Sender<bool>, Stopping) {
        let (tx, rx) = watch::channel(false);
        (tx, Stopping(rx))
    }

    /// Completes once shutdown has begun (or the sender is gone).
    pub async fn fired(&mut self) {
        let _ = self.0.wait_for(|stopping| *stopping).await;
    }

    /// What a stream ends with when the server stops: retry elsewhere or
    /// later, resuming from the last position or version received.
    pub fn status() -> tonic::Status {
        tonic::Status::unavailable(
            "the server is shutting down: reconnect and resume from the last position received",
        )
    }
}

/// A server that is running.
pub struct Running {
    /// The address it listens on (the real port when bound to port 0).
    pub addr: SocketAddr,
    /// The engine it serves.
    pub engine: Engine,
    /// Where Prometheus metrics are served, if configured.
    pub metrics_addr: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl Running {
    /// Stops accepting calls, lets in-flight calls finish, shuts the engine
    /// down (its data directory is released when this returns).
    ///
    /// Errors: [`ServeError`] from the server or the engine's shutdown.
    pub async fn stop(mut self) -> Result<(), ServeError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.wait().await
    }

    /// Waits until the server stops by itself (on the signal given to
    /// [`start`]).
    ///
    /// Errors: as [`Running::stop`].
    pub async fn wait(&mut self) -> Result<(), ServeError> {
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(ServeError::Task(format!("server task failed: {e}"))),
        }
    }
}

/// Deploys the bundled definitions to `tenant` (a no-op for those already
/// deployed). Returns how many were newly deployed.
///
/// Errors: [`ServeError::DemoTenant`]; a definition that conflicts with
/// what the tenant has is logged and skipped.
pub async fn deploy_bundled(engine: &Engine, tenant: &str) -> Result<usize, ServeError> {
    let tenant = TenantId::new(tenant).map_err(|e| ServeError::DemoTenant(e.to_string()))?;
    let admin = Principal::new(tenant, "casebook-bootstrap")
        .with_roles([ADMIN_ROLE])
        .with_clearance(Classification::TopSecret);
    let mut deployed = 0;
    for (name, source) in BUNDLED_DEFINITIONS {
        match engine.deploy(&admin, source, Format::Toml).await {
            Ok(d) if d.newly_deployed => {
                tracing::info!(
                    definition = name,
                    case_type = d.key,
                    version = d.version,
                    "deployed bundled definition"
                );
                deployed += 1;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(definition = name, error = %e, "bundled definition not deployed")
            }
        }
    }
    Ok(deployed)
}

/// An engine node on the PostgreSQL database at `url`, with the
/// deployment's shared position-token secret.
///
/// Errors: [`ServeError::Store`] for a URL that is not PostgreSQL's or a
/// database that cannot be reached or migrated.
async fn shared_store_node(
    url: &str,
    pool_size: usize,
    engine_config: EngineConfig,
) -> Result<Engine, ServeError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(ServeError::Store(
            "store must be a postgres:// URL (or absent for the embedded store)".into(),
        ));
    }
    let mut store = casebook_engine::log::pg::PgStoreConfig::new(url);
    store.pool_size = pool_size.max(1);
    let engine = Engine::on_postgres(store, engine_config)
        .await
        .map_err(|e| ServeError::Store(e.to_string()))?;
    tracing::info!("events on PostgreSQL (shared by every node with this URL)");
    Ok(engine)
}

/// Opens the engine on `config.data`, binds `config.listen` and serves until
/// `signal` completes or [`Running::stop`] is called.
///
/// Errors: [`ServeError`] for anything that stops it from starting; nothing
/// is left running then.
pub async fn start(
    config: Config,
    signal: impl Future<Output = ()> + Send + 'static,
) -> Result<Running, ServeError> {
    let data: PathBuf = config.data.clone();
    // Everything that can fail without the engine comes first, so a bad
    // key, TLS file or address leaves nothing running.
    let auth = Authenticator::from_config(&config.auth, &data)?;
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &config.tls {
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|e| ServeError::Tls(format!("{}: {e}", p.display())))
        };
        let identity = Identity::from_pem(read(&tls.cert_file)?, read(&tls.key_file)?);
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(identity))
            .map_err(|e| ServeError::Tls(e.to_string()))?;
    }
    // Reflection in both versions: v1, and v1alpha for older tools.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(casebook_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| ServeError::Task(format!("reflection: {e}")))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| ServeError::Task(format!("reflection: {e}")))?;
    let bind_error = |addr| move |source| ServeError::Bind { addr, source };
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(bind_error(config.listen))?;
    let addr = listener.local_addr().map_err(bind_error(config.listen))?;
    let metrics_listener = match config.metrics_listen {
        None => None,
        Some(at) => Some(crate::metrics::bind(at).await.map_err(bind_error(at))?),
    };
    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());

    let mut tenants = config
        .tenants
        .iter()
        .map(|t| TenantId::new(t).map_err(|e| ServeError::Tenant(format!("{t}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    if config.demo.deploy_examples {
        tenants.push(
            TenantId::new(&config.demo.tenant)
                .map_err(|e| ServeError::DemoTenant(e.to_string()))?,
        );
    }
    let services = if config.demo.deploy_examples && config.demo.builtin_services {
        let demo = TenantId::new(&config.demo.tenant)
            .map_err(|e| ServeError::DemoTenant(e.to_string()))?;
        builtin_services(&demo, &config.demo.email, &data)
    } else {
        ServiceRegistry::new()
    };
    let checkpoints = config
        .checkpoints
        .engine()
        .map_err(ServeError::Checkpoints)?;
    let engine = {
        let data = data.clone();
        let engine_config = EngineConfig {
            tenants,
            services,
            min_free_bytes: config.min_free_bytes,
            checkpoints,
            ..EngineConfig::default()
        };
        match &config.store {
            None => tokio::task::spawn_blocking(move || Engine::open_with(data, engine_config))
                .await
                .map_err(|e| ServeError::Task(format!("opening the engine: {e}")))??,
            Some(url) => shared_store_node(url, config.pool_size, engine_config).await?,
        }
    };
    engine.start().await?;
    if config.demo.deploy_examples && config.demo.builtin_services {
        // Before the definitions, so that their first cases find them.
        if let Err(e) = deploy_bundled_resources(&engine, &config.demo.tenant).await {
            engine.shutdown().await?;
            return Err(e);
        }
    }
    if config.demo.deploy_examples {
        if let Err(e) = deploy_bundled(&engine, &config.demo.tenant).await {
            engine.shutdown().await?;
            return Err(e);
        }
    }
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<CasesServer<CasesService>>()
        .await;
    health_reporter
        .set_serving::<EventsServer<EventsService>>()
        .await;
    health_reporter
        .set_serving::<AdminServer<AdminService>>()
        .await;
    health_reporter
        .set_serving::<WorkersServer<WorkersService>>()
        .await;
    health_reporter
        .set_serving::<AuditServer<AuditService>>()
        .await;
    health_reporter
        .set_serving::<RecordsServer<RecordsService>>()
        .await;
    health_reporter
        .set_serving::<IntegrityServer<IntegrityService>>()
        .await;
    let max = config.max_message_bytes;
    let intercept = {
        let auth = auth.clone();
        move |r| auth.intercept(r)
    };
    let (stop_streams, stopping) = Stopping::new();
    let cases = CasesServer::new(CasesService::new(engine.clone(), stopping.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let workers = WorkersServer::new(WorkersService::new(engine.clone(), stopping.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let events = EventsServer::new(EventsService::new(engine.clone(), stopping))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let admin = AdminServer::new(AdminService::new(engine.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let audit = AuditServer::new(AuditService::new(engine.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let records = RecordsServer::new(RecordsService::new(engine.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let integrity = IntegrityServer::new(IntegrityService::new(engine.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let metrics = crate::metrics::Metrics::default();
    if let Some(listener) = metrics_listener {
        tokio::spawn(crate::metrics::serve(
            listener,
            metrics.clone(),
            engine.clone(),
        ));
    }
    let router = builder
        .layer(crate::metrics::MetricsLayer(metrics))
        .layer(tower::util::MapResponseLayer::new(
            precise_codes::<tonic::body::Body>,
        ))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(InterceptedService::new(cases, intercept.clone()))
        .add_service(InterceptedService::new(events, intercept.clone()))
        .add_service(InterceptedService::new(workers, intercept.clone()))
        .add_service(InterceptedService::new(admin, intercept.clone()))
        .add_service(InterceptedService::new(audit, intercept.clone()))
        .add_service(InterceptedService::new(records, intercept.clone()))
        .add_service(InterceptedService::new(integrity, intercept));
    let (tx, rx) = oneshot::channel::<()>();
    let served = engine.clone();
    let task = tokio::spawn(async move {
        let stop = async move {
            tokio::select! {
                _ = signal => {}
                _ = rx => {}
            }
            tracing::info!("shutting down: finishing in-flight calls");
            let _ = stop_streams.send(true);
            health_reporter
                .set_not_serving::<CasesServer<CasesService>>()
                .await;
        };
        let result = router
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop)
            .await;
        let stopped = served.shutdown().await;
        tracing::info!("engine shut down; data directory released");
        result?;
        stopped?;
        Ok(())
    });
    tracing::info!(%addr, data = %data.display(), "casebook serving");
    Ok(Running {
        addr,
        engine,
        metrics_addr,
        shutdown: Some(tx),
        task,
    })
}

/// Gives the failures tonic reports before a request reaches a service
/// the codes the API promises: a message over the size limit is
/// RESOURCE_EXHAUSTED (tonic says OUT_OF_RANGE), and bytes that do not
/// decode as the request message are INVALID_ARGUMENT (tonic says
/// INTERNAL). Such statuses travel in the response headers
/// (trailers-only responses); nothing else is touched.
fn precise_codes<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    let code = headers.get("grpc-status").and_then(|v| v.to_str().ok());
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let new = match code {
        Some("11")
            if message.contains("message%20length%20too%20large")
                || message.contains("message length too large") =>
        {
            Some(tonic::Code::ResourceExhausted)
        }
        Some("13")
            if message.contains("failed%20to%20decode") || message.contains("failed to decode") =>
        {
            Some(tonic::Code::InvalidArgument)
        }
        _ => None,
    };
    if let Some(code) = new {
        headers.insert("grpc-status", http::HeaderValue::from(code as i32));
    }
    response
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
