//! Tenant resources: the data documents the built-in business services
//! work from, deployed per tenant and versioned like case definitions.
//!
//! - [`ResourceKind::Boundaries`] ([`boundaries`]): a GeoJSON boundary set
//!   (wards, boroughs, beats) for `gis.locate`;
//! - [`ResourceKind::DecisionTable`] ([`decision`]): a first-match table
//!   (TOML) for `decision.evaluate`;
//! - [`ResourceKind::ReferenceData`] ([`reference`](mod@reference)): a lookup table (TOML)
//!   for `reference.lookup`;
//! - [`ResourceKind::Contacts`] ([`contacts`]): the tenant's directory of
//!   people and organisations (TOML) that `notify.email` and `alert.raise`
//!   address by contact id or role;
//! - [`ResourceKind::Retention`] ([`retention`]): the tenant's retention
//!   policy (MoPI classes and their rules, the NRAC questions), always
//!   named [`retention::POLICY_NAME`]; shipped defaults apply until one is
//!   deployed.
//!
//! Each version is a `ResourceDeployed` event in the engine-owned stream
//! `<tenant>/resource/<kind>.<name>` ([`crate::streams::resource`]): the
//! log is the store, so a loaded boundary set survives restarts and the
//! history of every table is kept. [`crate::Engine::deploy_resource`]
//! validates the document first (every problem with its path, as for
//! definitions) and stores it as the next version; the same content again
//! is a no-op. Services read the latest version through the
//! [`TenantResources`] handle in their
//! [`crate::orchestration::ServiceContext`], which names the case's tenant
//! and nothing else: one tenant's tables and boundaries are never visible
//! to another. [`ParsedCache`] keeps each parsed document until its stream
//! moves.

pub mod boundaries;
pub mod contacts;
pub mod decision;
pub mod reference;
pub mod retention;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::case::ADMIN_ROLE;
use crate::engine::{Engine, EngineError};
use crate::error::ErrorKind;
use crate::log::codec::DomainEvent;
use crate::log::{
    Direction, EventStore, ExpectedVersion, LogError, Metadata, Source, StreamVersion, TenantId,
};
use crate::security::Principal;

/// Largest resource document accepted (bytes): a force's ward boundaries
/// simplified for lookup fit well within it.
pub const MAX_RESOURCE_BYTES: usize = 4 * 1024 * 1024;

/// What a resource document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceKind {
    /// A GeoJSON boundary set.
    Boundaries,
    /// A first-match decision table (TOML).
    DecisionTable,
    /// A reference-data lookup table (TOML).
    ReferenceData,
    /// The tenant's contact directory (TOML).
    Contacts,
    /// The tenant's retention policy (TOML; see [`retention`]).
    Retention,
}

impl ResourceKind {
    /// Every kind.
    pub const ALL: [ResourceKind; 5] = [
        ResourceKind::Boundaries,
        ResourceKind::DecisionTable,
        ResourceKind::ReferenceData,
        ResourceKind::Contacts,
        ResourceKind::Retention,
    ];

    /// Its name in stream ids and messages: `boundaries`,
    /// `decision_table`, `reference_data`, `contacts`, `retention`.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Boundaries => "boundaries",
            ResourceKind::DecisionTable => "decision_table",
            ResourceKind::ReferenceData => "reference_data",
            ResourceKind::Contacts => "contacts",
            ResourceKind::Retention => "retention",
        }
    }

    /// The kind of that name.
    pub fn parse(name: &str) -> Option<ResourceKind> {
        ResourceKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Every problem of `source` as a document of this kind (empty: valid).
    pub fn problems(self, source: &str) -> Vec<ResourceProblem> {
        let result = match self {
            ResourceKind::Boundaries => boundaries::BoundarySet::parse(source).map(drop),
            ResourceKind::DecisionTable => decision::DecisionTable::parse(source).map(drop),
            ResourceKind::ReferenceData => reference::ReferenceTable::parse(source).map(drop),
            ResourceKind::Contacts => contacts::Directory::parse(source).map(drop),
            ResourceKind::Retention => retention::RetentionPolicy::parse(source).map(drop),
        };
        result.err().unwrap_or_default()
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem of a resource document: where, and what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceProblem {
    /// Where: e.g. `rules[2].then.grade`, `features[3].geometry`; empty for
    /// the document as a whole.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl ResourceProblem {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ResourceProblem {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ResourceProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// What went wrong with a resource.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    /// The document is invalid; every problem is listed with its path.
    #[error("invalid {kind} '{name}': {}", .problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// Its kind.
        kind: ResourceKind,
        /// Its name.
        name: String,
        /// Every problem.
        problems: Vec<ResourceProblem>,
    },
    /// A name that is not a lower-case identifier (letters, digits, `_`,
    /// `-`, at most 64 bytes).
    #[error(
        "'{name}' is not a valid resource name: use 1 to 64 lower-case letters, digits, '_' or '-'"
    )]
    InvalidName {
        /// The name given.
        name: String,
    },
    /// No such resource (or version) is deployed for the tenant.
    #[error("no {kind} '{name}'{} is deployed for tenant {tenant}", .version.map(|v| format!(" version {v}")).unwrap_or_default())]
    Unknown {
        /// The tenant.
        tenant: TenantId,
        /// Its kind.
        kind: ResourceKind,
        /// Its name.
        name: String,
        /// The version asked for, if any.
        version: Option<u32>,
    },
    /// A stored version could not be read back (the log is damaged or was
    /// written by a newer engine).
    #[error("stored {kind} '{name}' cannot be read: {reason}")]
    Stored {
        /// Its kind.
        kind: ResourceKind,
        /// Its name.
        name: String,
        /// Why.
        reason: String,
    },
}

impl ResourceError {
    /// The one classification servers map to statuses.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ResourceError::Invalid { problems, .. } => ErrorKind::InvalidArgument {
                paths: problems.iter().map(|p| p.path.clone()).collect(),
            },
            ResourceError::InvalidName { .. } => ErrorKind::InvalidArgument {
                paths: vec!["name".into()],
            },
            ResourceError::Unknown { .. } => ErrorKind::NotFound,
            ResourceError::Stored { .. } => ErrorKind::Internal,
        }
    }
}

/// Checks a resource name.
pub fn check_name(name: &str) -> Result<(), ResourceError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ResourceError::InvalidName {
            name: name.chars().take(80).collect(),
        })
    }
}

/// One deployed version of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// Its kind.
    pub kind: ResourceKind,
    /// Its name.
    pub name: String,
    /// Its version, from 1.
    pub version: u32,
    /// SHA-256 of the document, hex.
    pub fingerprint: String,
    /// The document as deployed.
    pub source: Arc<str>,
}

/// What [`Engine::deploy_resource`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceDeployment {
    /// Its kind.
    pub kind: ResourceKind,
    /// Its name.
    pub name: String,
    /// The version now latest.
    pub version: u32,
    /// Whether this call stored it (false: the latest version already had
    /// this content).
    pub newly_deployed: bool,
}

/// The stored form of a deployment (schema version 1).
#[derive(Debug, Serialize, Deserialize)]
enum ResourceEvent {
    Deployed {
        kind: String,
        name: String,
        version: u32,
        fingerprint: String,
        source: String,
    },
}

impl DomainEvent for ResourceEvent {
    const SCHEMA_VERSION: u16 = 1;
    fn event_type(&self) -> &'static str {
        "ResourceDeployed"
    }
}

fn fingerprint(source: &str) -> String {
    let digest = sha2::Sha256::digest(source.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode(
    kind: ResourceKind,
    name: &str,
    event: &crate::log::RecordedEvent,
) -> Result<Resource, ResourceError> {
    let stored = |reason: String| ResourceError::Stored {
        kind,
        name: name.to_string(),
        reason,
    };
    let ResourceEvent::Deployed {
        version,
        fingerprint,
        source,
        ..
    } = ResourceEvent::from_recorded(event).map_err(|e| stored(e.to_string()))?;
    Ok(Resource {
        kind,
        name: name.to_string(),
        version,
        fingerprint,
        source: source.into(),
    })
}

/// Reads the latest version (or `version`) of a resource from the store.
async fn read(
    store: &dyn EventStore,
    tenant: &TenantId,
    kind: ResourceKind,
    name: &str,
    version: Option<u32>,
) -> Result<Option<Resource>, EngineError> {
    check_name(name)?;
    let stream = crate::streams::resource(tenant, kind.as_str(), name)?;
    let (direction, from) = match version {
        None => (Direction::Backward, StreamVersion::END),
        Some(0) => return Ok(None),
        Some(v) => (Direction::Forward, StreamVersion(u64::from(v) - 1)),
    };
    let events = store.read_stream(&stream, direction, from, 1).await?;
    match events.first() {
        None => Ok(None),
        Some(e) => Ok(Some(decode(kind, name, e)?)),
    }
}

impl Engine {
    /// Deploys a resource document for the principal's tenant as the next
    /// version of `kind` / `name` (the same content as the latest version:
    /// a no-op). The document is validated first.
    ///
    /// Errors: [`ResourceError::Invalid`] with every problem and its path;
    /// [`ResourceError::InvalidName`]; `Forbidden` without the
    /// `administrator` role; access and store errors.
    pub async fn deploy_resource(
        &self,
        principal: &Principal,
        kind: ResourceKind,
        name: &str,
        source: &str,
    ) -> Result<ResourceDeployment, EngineError> {
        self.admit(principal).await?;
        if !principal.has_role(ADMIN_ROLE) {
            return Err(EngineError::forbidden(
                format!("deploy {kind} resources"),
                &[ADMIN_ROLE],
            ));
        }
        check_name(name)?;
        let mut problems = if source.len() > MAX_RESOURCE_BYTES {
            vec![ResourceProblem::new(
                "",
                format!(
                    "the document is {} bytes; at most {MAX_RESOURCE_BYTES} are accepted",
                    source.len()
                ),
            )]
        } else {
            Vec::new()
        };
        if kind == ResourceKind::Retention && name != retention::POLICY_NAME {
            problems.push(ResourceProblem::new(
                "name",
                format!(
                    "a tenant has one retention policy, named '{}'",
                    retention::POLICY_NAME
                ),
            ));
        }
        if problems.is_empty() {
            problems = kind.problems(source);
        }
        if !problems.is_empty() {
            return Err(ResourceError::Invalid {
                kind,
                name: name.to_string(),
                problems,
            }
            .into());
        }
        let tenant = &principal.tenant;
        let stream = crate::streams::resource(tenant, kind.as_str(), name)?;
        let store = self.raw_store();
        let print = fingerprint(source);
        for _ in 0..8 {
            let latest = read(&*store, tenant, kind, name, None).await?;
            if let Some(latest) = &latest {
                if latest.fingerprint == print {
                    return Ok(ResourceDeployment {
                        kind,
                        name: name.to_string(),
                        version: latest.version,
                        newly_deployed: false,
                    });
                }
            }
            let version = latest.as_ref().map_or(1, |l| l.version + 1);
            let expected = match &latest {
                None => ExpectedVersion::NoStream,
                Some(l) => ExpectedVersion::Exact(StreamVersion(u64::from(l.version) - 1)),
            };
            let mut metadata = Metadata::new(principal.actor(), Source::system("casebook"));
            metadata.reason = Some(format!("deploy {kind} {name} version {version}"));
            let event = ResourceEvent::Deployed {
                kind: kind.as_str().to_string(),
                name: name.to_string(),
                version,
                fingerprint: print.clone(),
                source: source.to_string(),
            };
            let data = event.to_event_data(metadata)?;
            match store.append(&stream, expected, vec![data]).await {
                Ok(_) => {
                    return Ok(ResourceDeployment {
                        kind,
                        name: name.to_string(),
                        version,
                        newly_deployed: true,
                    })
                }
                Err(LogError::WrongExpectedVersion { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Contended {
            case_id: stream.to_string(),
            attempts: 8,
        })
    }

    /// A deployed resource of the principal's tenant (the latest version
    /// when `version` is `None`).
    ///
    /// Errors: [`ResourceError::Unknown`]; [`ResourceError::InvalidName`];
    /// access and store errors.
    pub async fn resource(
        &self,
        principal: &Principal,
        kind: ResourceKind,
        name: &str,
        version: Option<u32>,
    ) -> Result<Resource, EngineError> {
        self.admit(principal).await?;
        read(&*self.raw_store(), &principal.tenant, kind, name, version)
            .await?
            .ok_or_else(|| {
                ResourceError::Unknown {
                    tenant: principal.tenant.clone(),
                    kind,
                    name: name.to_string(),
                    version,
                }
                .into()
            })
    }

    /// The resources of `tenant`, as a service invoked for one of its
    /// cases sees them.
    pub(crate) fn tenant_resources(&self, tenant: &TenantId) -> TenantResources {
        TenantResources {
            store: Some(self.raw_store()),
            tenant: tenant.clone(),
        }
    }
}

/// One tenant's deployed resources, read-only: what a business service
/// sees of them. It names one tenant, fixed when the engine builds it for
/// an invocation, so a service cannot read another tenant's resources.
#[derive(Clone)]
pub struct TenantResources {
    store: Option<Arc<dyn EventStore>>,
    tenant: TenantId,
}

impl fmt::Debug for TenantResources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantResources({})", self.tenant)
    }
}

impl TenantResources {
    /// A handle that finds nothing (for services tested on their own).
    pub fn none(tenant: TenantId) -> Self {
        TenantResources {
            store: None,
            tenant,
        }
    }

    /// A handle on `store` for `tenant` (for tests of services; the engine
    /// builds its own for each invocation).
    pub fn on_store(store: Arc<dyn EventStore>, tenant: TenantId) -> Self {
        TenantResources {
            store: Some(store),
            tenant,
        }
    }

    /// The tenant.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The latest version of a resource, if any is deployed.
    ///
    /// Errors: [`EngineError`] for a bad name or a store that fails.
    pub async fn latest(
        &self,
        kind: ResourceKind,
        name: &str,
    ) -> Result<Option<Resource>, EngineError> {
        match &self.store {
            None => {
                check_name(name)?;
                Ok(None)
            }
            Some(store) => read(&**store, &self.tenant, kind, name, None).await,
        }
    }

    async fn stream_version(
        &self,
        kind: ResourceKind,
        name: &str,
    ) -> Result<Option<StreamVersion>, EngineError> {
        match &self.store {
            None => Ok(None),
            Some(store) => {
                let stream = crate::streams::resource(&self.tenant, kind.as_str(), name)?;
                Ok(store.stream_version(&stream).await?)
            }
        }
    }
}

type CacheKey = (TenantId, String);

/// Parsed documents of one kind, per tenant and name, kept until their
/// stream moves (checked with one `stream_version` per use).
pub struct ParsedCache<T> {
    kind: ResourceKind,
    parse: fn(&str) -> Result<T, Vec<ResourceProblem>>,
    entries: Mutex<HashMap<CacheKey, (u32, Arc<T>)>>,
}

impl<T> fmt::Debug for ParsedCache<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ParsedCache({})", self.kind)
    }
}

/// Most parsed documents one cache keeps (it is cleared when full).
const CACHE_ENTRIES: usize = 1024;

impl<T> ParsedCache<T> {
    /// An empty cache of documents of `kind`, parsed with `parse`.
    pub fn new(kind: ResourceKind, parse: fn(&str) -> Result<T, Vec<ResourceProblem>>) -> Self {
        ParsedCache {
            kind,
            parse,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The latest version of `name` for the handle's tenant, parsed, and
    /// its version.
    ///
    /// Errors: [`ResourceError::Unknown`] when none is deployed,
    /// [`ResourceError::Invalid`] / [`ResourceError::Stored`] when the
    /// stored document no longer parses; store errors.
    pub async fn get(
        &self,
        resources: &TenantResources,
        name: &str,
    ) -> Result<(u32, Arc<T>), EngineError> {
        check_name(name)?;
        let key = (resources.tenant.clone(), name.to_string());
        let current = resources.stream_version(self.kind, name).await?;
        if let Some(current) = current {
            let hit = self
                .entries
                .lock()
                .ok()
                .and_then(|m| m.get(&key).cloned())
                .filter(|(v, _)| u64::from(*v) == current.0 + 1);
            if let Some(hit) = hit {
                return Ok(hit);
            }
        }
        let Some(resource) = resources.latest(self.kind, name).await? else {
            return Err(ResourceError::Unknown {
                tenant: resources.tenant.clone(),
                kind: self.kind,
                name: name.to_string(),
                version: None,
            }
            .into());
        };
        let parsed = Arc::new((self.parse)(&resource.source).map_err(|problems| {
            ResourceError::Invalid {
                kind: self.kind,
                name: name.to_string(),
                problems,
            }
        })?);
        if let Ok(mut m) = self.entries.lock() {
            if m.len() >= CACHE_ENTRIES {
                m.clear();
            }
            m.insert(key, (resource.version, Arc::clone(&parsed)));
        }
        Ok((resource.version, parsed))
    }
}

/// A TOML document's parse error as a problem with a path where the
/// parser gives one.
pub(crate) fn toml_problem(e: &toml::de::Error) -> ResourceProblem {
    ResourceProblem::new("", e.message().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_kinds() {
        assert!(check_name("incident-grading").is_ok());
        assert!(check_name("Wards").is_err());
        assert!(check_name("").is_err());
        assert!(check_name("a/b").is_err());
        for k in ResourceKind::ALL {
            assert_eq!(ResourceKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(fingerprint("x").len(), 64);
    }

    #[tokio::test]
    async fn a_handle_without_a_store_finds_nothing() {
        let r = TenantResources::none(TenantId::new("kent").unwrap());
        assert_eq!(
            r.latest(ResourceKind::Contacts, "main").await.unwrap(),
            None
        );
        let cache = ParsedCache::new(ResourceKind::Contacts, contacts::Directory::parse);
        let err = cache.get(&r, "main").await.unwrap_err();
        assert!(matches!(
            err,
            EngineError::Resource(ResourceError::Unknown { .. })
        ));
    }
}
