//! Business services: the [`BusinessService`] plugin trait, its declared
//! [`ServiceContract`], the [`ServiceError`] that says whether to retry, and
//! the [`ServiceRegistry`] an engine is configured with.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::case::{AlertRecord, DisclosureRecord, InvocationId, MAX_DISCLOSURES};
use crate::definition::{FieldType, ItemKey, ParamDef, ServiceDef};
use crate::error::ErrorKind;
use crate::log::{TenantId, Timestamp};
use crate::resources::TenantResources;
use crate::security::Classification;

/// A service's input or output: parameter (or result) name -> JSON value.
pub type ServiceValues = BTreeMap<String, serde_json::Value>;

/// A business service the engine invokes for service tasks: GIS lookups,
/// risk scoring, notifications, a force's own systems.
///
/// Object safe, so an engine holds `Arc<dyn BusinessService>`. Register one
/// with [`ServiceRegistry`] on [`crate::engine::EngineConfig::services`];
/// a definition that declares a service of the same name must declare the
/// same contract (checked at deploy). Invocations are **at least once**: a
/// crash between the call and the recording of its outcome calls again with
/// the same [`ServiceContext::idempotency_key`], so a service with side
/// effects should deduplicate on it. The outcome is recorded exactly once.
///
/// `invoke` runs on the engine's Tokio runtime: it must not block (use
/// async I/O, or `spawn_blocking` for blocking work).
///
/// ```
/// use casebook::orchestration::{
///     BusinessService, ServiceContext, ServiceContract, ServiceError, ServiceValues,
/// };
/// use casebook::definition::FieldType;
/// use casebook::rules::serde_json::json;
///
/// struct Thrive;
///
/// #[casebook::orchestration::async_trait]
/// impl BusinessService for Thrive {
///     fn name(&self) -> &str {
///         "risk.thrive"
///     }
///     fn contract(&self) -> ServiceContract {
///         ServiceContract::new()
///             .input("vulnerable", FieldType::Boolean, true)
///             .output("risk", FieldType::Text)
///     }
///     async fn invoke(
///         &self,
///         _ctx: &ServiceContext,
///         input: ServiceValues,
///     ) -> Result<ServiceValues, ServiceError> {
///         let vulnerable = input
///             .get("vulnerable")
///             .and_then(|v| v.as_bool())
///             .ok_or_else(|| ServiceError::permanent("vulnerable must be a boolean"))?;
///         let risk = if vulnerable { "high" } else { "standard" };
///         Ok([("risk".to_string(), json!(risk))].into())
///     }
/// }
/// ```
#[async_trait]
pub trait BusinessService: Send + Sync + 'static {
    /// The service's name, as definitions' `[[services]]` name it, e.g.
    /// `gis.locate`.
    fn name(&self) -> &str;

    /// What it accepts and returns.
    fn contract(&self) -> ServiceContract;

    /// Performs one attempt. Return [`ServiceError::Retryable`] for what may
    /// succeed later (a timeout, an unavailable system) and
    /// [`ServiceError::Permanent`] for what never will (bad input).
    async fn invoke(
        &self,
        ctx: &ServiceContext,
        input: ServiceValues,
    ) -> Result<ServiceValues, ServiceError>;
}

impl fmt::Debug for dyn BusinessService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BusinessService({})", self.name())
    }
}

/// What an attempt is about.
#[derive(Debug, Clone)]
pub struct ServiceContext {
    /// The case's tenant (a service configured per tenant looks itself up by it).
    pub tenant: TenantId,
    /// The case.
    pub case_id: String,
    /// The service task.
    pub item: ItemKey,
    /// The invocation (numbered within the case).
    pub invocation: InvocationId,
    /// The attempt, from 1.
    pub attempt: u32,
    /// The same for every attempt of this invocation and across restarts:
    /// `<tenant>/<case>/<invocation>`.
    pub idempotency_key: String,
    /// When the engine gives up on this attempt.
    pub deadline: Timestamp,
    /// The marking of what the input may carry: the service task's
    /// effective marking (it covers every field its input reads) and the
    /// case's. A service that sends information outside the engine must
    /// not send it to anyone not cleared for it.
    pub marking: Classification,
    /// The tenant's resources (boundary sets, decision tables, reference
    /// data, contacts): the case's tenant's only.
    pub resources: TenantResources,
    /// Where a service reports what it disclosed; recorded on the case with
    /// the answer.
    pub disclosures: Disclosures,
    /// Where a service reports the alerts it raised; recorded on the case
    /// with the answer.
    pub alerts: RaisedAlerts,
}

impl ServiceContext {
    /// A context for calling a service outside the engine (tests, tools):
    /// attempt 1, marking OFFICIAL, a deadline of 0.
    pub fn new(
        tenant: TenantId,
        case_id: impl Into<String>,
        item: ItemKey,
        resources: TenantResources,
    ) -> Self {
        let case_id = case_id.into();
        ServiceContext {
            idempotency_key: format!("{tenant}/{case_id}/inv-1"),
            tenant,
            case_id,
            item,
            invocation: InvocationId(1),
            attempt: 1,
            deadline: Timestamp(0),
            marking: Classification::Official,
            resources,
            disclosures: Disclosures::default(),
            alerts: RaisedAlerts::default(),
        }
    }
}

/// What a service reports during one attempt besides its answer (at most
/// [`MAX_DISCLOSURES`] of each kind are kept): what it disclosed
/// ([`Disclosures`]), the alerts it raised ([`RaisedAlerts`]). The engine
/// records them on the case (`DisclosureRecorded`, `AlertRaised`) in the
/// append that records the answer, so they are on the case exactly when
/// the answer is.
#[derive(Debug, Clone)]
pub struct Reports<T>(Arc<Mutex<Vec<T>>>);

impl<T> Default for Reports<T> {
    fn default() -> Self {
        Reports(Arc::new(Mutex::new(Vec::new())))
    }
}

/// What a service disclosed during one attempt (see [`Reports`]).
pub type Disclosures = Reports<DisclosureRecord>;

/// The alerts a service raised during one attempt (see [`Reports`]).
pub type RaisedAlerts = Reports<AlertRecord>;

impl<T> Reports<T> {
    /// Reports one.
    pub fn record(&self, report: T) {
        if let Ok(mut d) = self.0.lock() {
            if d.len() < MAX_DISCLOSURES {
                d.push(report);
            }
        }
    }

    /// Those reported so far, in order (leaving none).
    pub fn take(&self) -> Vec<T> {
        self.0
            .lock()
            .map(|mut d| std::mem::take(&mut *d))
            .unwrap_or_default()
    }
}

/// Why an attempt failed, and whether trying again may help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// It may succeed later: the engine retries with backoff.
    #[error("retryable: {0}")]
    Retryable(String),
    /// It never will: the invocation fails and an incident is raised.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl ServiceError {
    /// A retryable error.
    pub fn retryable(message: impl Into<String>) -> Self {
        ServiceError::Retryable(message.into())
    }

    /// A permanent error.
    pub fn permanent(message: impl Into<String>) -> Self {
        ServiceError::Permanent(message.into())
    }

    /// Whether the engine retries after it.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ServiceError::Retryable(_))
    }

    /// [`ErrorKind::Unavailable`] when retryable, else
    /// [`ErrorKind::InvalidArgument`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            ServiceError::Retryable(_) => ErrorKind::Unavailable,
            ServiceError::Permanent(_) => ErrorKind::InvalidArgument { paths: Vec::new() },
        }
    }
}

/// The inputs and outputs a service declares: the same shape as a
/// definition's `[[services]]` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceContract {
    /// Parameters, by name.
    pub inputs: BTreeMap<String, ParamDef>,
    /// Results, by name.
    pub outputs: BTreeMap<String, ParamDef>,
    /// Whether a definition may declare inputs and outputs beyond these
    /// (of any type): the service checks them when invoked. For services
    /// whose parameters are data, such as a decision table's inputs or a
    /// template's variables.
    pub accepts_more: bool,
}

fn param(ty: FieldType, required: bool) -> ParamDef {
    ParamDef {
        ty,
        values: Vec::new(),
        element: None,
        required,
    }
}

impl ServiceContract {
    /// An empty contract.
    pub fn new() -> Self {
        ServiceContract::default()
    }

    /// This contract with an input parameter.
    pub fn input(mut self, name: impl Into<String>, ty: FieldType, required: bool) -> Self {
        self.inputs.insert(name.into(), param(ty, required));
        self
    }

    /// This contract with a result.
    pub fn output(mut self, name: impl Into<String>, ty: FieldType) -> Self {
        self.outputs.insert(name.into(), param(ty, false));
        self
    }

    /// This contract, open to inputs and outputs it does not list (see
    /// [`ServiceContract::accepts_more`]).
    pub fn open(mut self) -> Self {
        self.accepts_more = true;
        self
    }

    /// This contract with a fully described input or output parameter.
    pub fn with_param(mut self, output: bool, name: impl Into<String>, p: ParamDef) -> Self {
        let map = if output {
            &mut self.outputs
        } else {
            &mut self.inputs
        };
        map.insert(name.into(), p);
        self
    }

    /// How a definition's declaration of this service differs from the
    /// contract: every problem, each as (path below the service, message).
    /// Empty: they match. A definition may leave out optional inputs and
    /// outputs it does not use; it may not add any, change a type or leave
    /// out a required input.
    pub fn mismatches(&self, declared: &ServiceDef) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut compare = |side: &str,
                           ours: &BTreeMap<String, ParamDef>,
                           theirs: &BTreeMap<String, ParamDef>| {
            for (name, d) in theirs {
                match ours.get(name) {
                    None if self.accepts_more => {}
                    None => out.push((
                        format!("{side}.{name}"),
                        format!("the registered service has no {side} '{name}'"),
                    )),
                    Some(p) if p.ty != d.ty || p.element != d.element || p.values != d.values => {
                        out.push((
                            format!("{side}.{name}"),
                            format!(
                                "declared as {}, the registered service says {}",
                                describe(d),
                                describe(p)
                            ),
                        ))
                    }
                    Some(_) => {}
                }
            }
            if side == "inputs" {
                for (name, p) in ours {
                    if p.required && !theirs.contains_key(name) {
                        out.push((
                            format!("{side}.{name}"),
                            format!("the registered service requires input '{name}'"),
                        ));
                    }
                }
            }
        };
        compare("inputs", &self.inputs, &declared.inputs);
        compare("outputs", &self.outputs, &declared.outputs);
        out
    }
}

fn describe(p: &ParamDef) -> String {
    match (p.element, p.values.is_empty()) {
        (Some(e), _) => format!("{} of {}", p.ty.as_str(), e.as_str()),
        (None, false) => format!("{} [{}]", p.ty.as_str(), p.values.join(", ")),
        (None, true) => p.ty.as_str().to_string(),
    }
}

#[derive(Clone)]
struct Registered {
    service: Arc<dyn BusinessService>,
    /// `None`: every tenant.
    tenants: Option<BTreeSet<TenantId>>,
}

/// The business services an engine runs in process, each enabled for every
/// tenant or for some. A service a definition declares but no registered
/// service provides is left to external job workers
/// ([`crate::Engine::activate_jobs`]).
///
/// ```
/// use std::sync::Arc;
/// use casebook::orchestration::*;
/// use casebook::log::TenantId;
///
/// struct Echo;
/// #[casebook::orchestration::async_trait]
/// impl BusinessService for Echo {
///     fn name(&self) -> &str { "echo" }
///     fn contract(&self) -> ServiceContract { ServiceContract::new() }
///     async fn invoke(&self, _: &ServiceContext, input: ServiceValues)
///         -> Result<ServiceValues, ServiceError> { Ok(input) }
/// }
///
/// let kent = TenantId::new("kent").unwrap();
/// let registry = ServiceRegistry::new().with_for(Arc::new(Echo), [kent.clone()]);
/// assert!(registry.find(&kent, "echo").is_some());
/// assert!(registry.find(&TenantId::new("essex").unwrap(), "echo").is_none());
/// ```
#[derive(Clone, Default)]
pub struct ServiceRegistry {
    entries: Vec<Registered>,
}

impl fmt::Debug for ServiceRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|e| e.service.name().to_string()))
            .finish()
    }
}

impl ServiceRegistry {
    /// No services.
    pub fn new() -> Self {
        ServiceRegistry::default()
    }

    /// This registry with `service` enabled for every tenant (replacing one
    /// of the same name).
    pub fn with(mut self, service: Arc<dyn BusinessService>) -> Self {
        self.entries.retain(|e| e.service.name() != service.name());
        self.entries.push(Registered {
            service,
            tenants: None,
        });
        self
    }

    /// This registry with `service` enabled for these tenants only
    /// (replacing one of the same name).
    pub fn with_for(
        mut self,
        service: Arc<dyn BusinessService>,
        tenants: impl IntoIterator<Item = TenantId>,
    ) -> Self {
        self.entries.retain(|e| e.service.name() != service.name());
        self.entries.push(Registered {
            service,
            tenants: Some(tenants.into_iter().collect()),
        });
        self
    }

    /// The service of that name enabled for `tenant`, if any.
    pub fn find(&self, tenant: &TenantId, name: &str) -> Option<Arc<dyn BusinessService>> {
        self.entries
            .iter()
            .find(|e| {
                e.service.name() == name && e.tenants.as_ref().is_none_or(|t| t.contains(tenant))
            })
            .map(|e| Arc::clone(&e.service))
    }

    /// Whether no service is registered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
