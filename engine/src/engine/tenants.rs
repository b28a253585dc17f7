//! The tenant registry: a platform administrator registers, suspends and
//! reactivates tenants, and every engine call is admitted only for a
//! registered, active tenant and a valid principal ([`Engine::admit`]).
//!
//! Registrations are events in the reserved platform tenant
//! ([`PLATFORM_TENANT`]), one stream per tenant,
//! `casebook.platform/tenant/<tenant id>` ([`crate::streams::tenant`]). The
//! registry is read once, at the first call that needs it, and kept in
//! memory; the engine is the only writer of its data directory (its
//! `LOCK`), so what it writes is what it keeps. An unknown or suspended
//! tenant's call is refused before anything is read, written or started:
//! no projection runner and no sled tree is made for it. Suspending a
//! tenant also stops its running work (projection runners, the
//! dispatcher's invocations and timers); reactivating starts it again, and
//! an engine started on data where a tenant is suspended starts nothing
//! for it.

use std::collections::BTreeMap;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use super::{CommandContext, Engine, EngineError};
use crate::log::codec::DomainEvent;
use crate::log::{ExpectedVersion, GlobalPosition, StreamVersion, TenantId};
use crate::security::{
    is_platform_admin, is_platform_tenant, AccessError, Principal, PLATFORM_TENANT,
};
use crate::time::Timestamp;

/// A tenant registry event, in `casebook.platform/tenant/<tenant id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TenantEvent {
    /// The tenant was registered: its users may use the engine.
    TenantRegistered {
        /// The tenant.
        tenant: TenantId,
        /// When.
        at: Timestamp,
    },
    /// The tenant was suspended: every call is refused until reactivated.
    TenantSuspended {
        /// The tenant.
        tenant: TenantId,
        /// When.
        at: Timestamp,
    },
    /// The tenant was reactivated after a suspension.
    TenantReactivated {
        /// The tenant.
        tenant: TenantId,
        /// When.
        at: Timestamp,
    },
}

impl DomainEvent for TenantEvent {
    const SCHEMA_VERSION: u16 = 1;

    fn event_type(&self) -> &'static str {
        match self {
            TenantEvent::TenantRegistered { .. } => "TenantRegistered",
            TenantEvent::TenantSuspended { .. } => "TenantSuspended",
            TenantEvent::TenantReactivated { .. } => "TenantReactivated",
        }
    }
}

/// Whether a registered tenant may use the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TenantStatus {
    /// Its calls are served.
    Active,
    /// Its calls are refused (not-found) until it is reactivated.
    Suspended,
}

/// A registered tenant as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRecord {
    /// The tenant.
    pub tenant: TenantId,
    /// Active or suspended.
    pub status: TenantStatus,
    /// When it was first registered.
    pub registered_at: Timestamp,
    /// When its status last changed.
    pub changed_at: Timestamp,
}

/// What a registry change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantChange {
    /// An event was recorded.
    Changed,
    /// The tenant already was in the wanted state: nothing recorded.
    Unchanged,
}

/// The registry in memory: each tenant's record and its stream version.
#[derive(Default)]
pub(super) struct Registry {
    tenants: BTreeMap<TenantId, (TenantRecord, StreamVersion)>,
}

impl Registry {
    fn apply(&mut self, event: &TenantEvent, version: StreamVersion) {
        match event {
            TenantEvent::TenantRegistered { tenant, at } => {
                let record = TenantRecord {
                    tenant: tenant.clone(),
                    status: TenantStatus::Active,
                    registered_at: *at,
                    changed_at: *at,
                };
                self.tenants.insert(tenant.clone(), (record, version));
            }
            TenantEvent::TenantSuspended { tenant, at }
            | TenantEvent::TenantReactivated { tenant, at } => {
                if let Some((record, v)) = self.tenants.get_mut(tenant) {
                    record.status = match event {
                        TenantEvent::TenantSuspended { .. } => TenantStatus::Suspended,
                        _ => TenantStatus::Active,
                    };
                    record.changed_at = *at;
                    *v = version;
                }
            }
        }
    }
}

/// The registry slot of an engine: loaded at first use, changed under one
/// lock (registry changes are rare; reads take the `RwLock` briefly).
#[derive(Default)]
pub(super) struct RegistrySlot {
    loaded: tokio::sync::OnceCell<RwLock<Registry>>,
    writing: tokio::sync::Mutex<()>,
}

fn platform() -> TenantId {
    // The constant is a valid tenant id (checked by a test).
    TenantId::new(PLATFORM_TENANT).unwrap_or_else(|_| unreachable!("PLATFORM_TENANT is valid"))
}

impl Engine {
    /// Admits a call: the principal must be valid and its tenant registered
    /// and active. The platform tenant itself holds no cases.
    ///
    /// Errors: [`EngineError::Access`] ([`AccessError::InvalidPrincipal`],
    /// [`AccessError::UnknownTenant`], [`AccessError::TenantSuspended`],
    /// [`AccessError::ReservedTenant`]); [`EngineError::Log`] /
    /// [`EngineError::Codec`] if the registry cannot be read.
    pub(crate) async fn admit(&self, principal: &Principal) -> Result<(), EngineError> {
        principal.validate().map_err(AccessError::from)?;
        let tenant = &principal.tenant;
        if is_platform_tenant(tenant) {
            return Err(AccessError::ReservedTenant {
                tenant: tenant.clone(),
            }
            .into());
        }
        let registry = self.registry().await?;
        let status = registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .tenants
            .get(tenant)
            .map(|(r, _)| r.status);
        match status {
            Some(TenantStatus::Active) => Ok(()),
            Some(TenantStatus::Suspended) => Err(AccessError::TenantSuspended {
                tenant: tenant.clone(),
            }
            .into()),
            None => Err(AccessError::UnknownTenant {
                tenant: tenant.clone(),
            }
            .into()),
        }
    }

    /// The registry, read from the platform streams at first use; the
    /// tenants of [`super::EngineConfig::tenants`] not yet registered are
    /// registered then.
    async fn registry(&self) -> Result<&RwLock<Registry>, EngineError> {
        let slot = &self.inner.tenants;
        if let Some(r) = slot.loaded.get() {
            return Ok(r);
        }
        let _writing = slot.writing.lock().await;
        slot.loaded
            .get_or_try_init(|| async {
                let mut registry = Registry::default();
                let store = &self.inner.store;
                let page = store.limits().max_read_limit;
                let mut from = GlobalPosition(0);
                loop {
                    let events = store.read_all(&platform(), from, page).await?;
                    for e in &events {
                        if e.stream.category() == crate::streams::TENANT {
                            registry.apply(&TenantEvent::from_recorded(e)?, e.version);
                        }
                        from = GlobalPosition(e.position.0 + 1);
                    }
                    if events.len() < page {
                        break;
                    }
                }
                for tenant in &self.inner.config.tenants {
                    if !registry.tenants.contains_key(tenant) {
                        let event = TenantEvent::TenantRegistered {
                            tenant: tenant.clone(),
                            at: self.now(),
                        };
                        let version = self
                            .record_tenant_event(
                                tenant,
                                None,
                                &event,
                                &CommandContext::because("registered by the engine configuration"),
                                "casebook",
                            )
                            .await?;
                        registry.apply(&event, version);
                    }
                }
                Ok::<_, EngineError>(RwLock::new(registry))
            })
            .await
    }

    async fn record_tenant_event(
        &self,
        tenant: &TenantId,
        after: Option<StreamVersion>,
        event: &TenantEvent,
        context: &CommandContext,
        actor: &str,
    ) -> Result<StreamVersion, EngineError> {
        let stream = crate::streams::tenant(tenant)?;
        let actor = Principal::new(platform(), actor);
        let data = event.to_event_data(context.metadata(&actor))?;
        let expected = after.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
        let result = self
            .inner
            .store
            .append(&stream, expected, vec![data])
            .await?;
        Ok(result.version)
    }

    pub(crate) fn require_platform_admin(
        principal: &Principal,
        action: &str,
    ) -> Result<(), AccessError> {
        if is_platform_admin(principal) {
            Ok(())
        } else {
            Err(AccessError::NotPlatformAdministrator {
                action: action.into(),
            })
        }
    }

    /// Registers `tenant`: from now on its users may use the engine.
    /// Registering a registered tenant changes nothing (a suspended one
    /// stays suspended: see [`Engine::reactivate_tenant`]).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use casebook::engine::{Engine, TenantChange};
    /// use casebook::log::TenantId;
    /// use casebook::security::Principal;
    /// let engine = Engine::in_memory().unwrap();
    /// let ops = Principal::platform_administrator("ops-1");
    /// let kent = TenantId::new("kent").unwrap();
    /// assert_eq!(engine.register_tenant(&ops, &kent).await.unwrap(), TenantChange::Changed);
    /// assert_eq!(engine.register_tenant(&ops, &kent).await.unwrap(), TenantChange::Unchanged);
    /// # });
    /// ```
    ///
    /// Errors: [`AccessError::NotPlatformAdministrator`] unless the caller
    /// is a platform administrator; [`AccessError::ReservedTenant`] for the
    /// platform tenant; [`EngineError::Log`] if it cannot be recorded.
    pub async fn register_tenant(
        &self,
        platform_admin: &Principal,
        tenant: &TenantId,
    ) -> Result<TenantChange, EngineError> {
        self.change_tenant(
            platform_admin,
            tenant,
            "register a tenant",
            |record| match record {
                None => Some(TenantEvent::TenantRegistered {
                    tenant: tenant.clone(),
                    at: self.now(),
                }),
                Some(_) => None,
            },
        )
        .await
    }

    /// Suspends a registered tenant: its calls are refused (not found,
    /// [`AccessError::TenantSuspended`]) until it is reactivated, and its
    /// running work stops before this returns: its projection runners
    /// settle their batch in flight and end (their read models stay, at
    /// their checkpoints), and the orchestration dispatcher lets go of its
    /// pending service invocations and timers (they stay in the
    /// orchestration read model). An engine opened later on the same data
    /// starts nothing for a suspended tenant.
    ///
    /// Errors: as [`Engine::register_tenant`];
    /// [`AccessError::UnknownTenant`] for an unregistered tenant.
    pub async fn suspend_tenant(
        &self,
        platform_admin: &Principal,
        tenant: &TenantId,
    ) -> Result<TenantChange, EngineError> {
        let change = self
            .change_tenant(
                platform_admin,
                tenant,
                "suspend a tenant",
                |record| match record.map(|r| r.status) {
                    Some(TenantStatus::Active) => Some(TenantEvent::TenantSuspended {
                        tenant: tenant.clone(),
                        at: self.now(),
                    }),
                    _ => None,
                },
            )
            .await?;
        // Also when unchanged: a retried suspension whose first attempt
        // recorded the event but did not get to stop the work.
        self.stop_tenant_work(tenant).await;
        Ok(change)
    }

    /// Reactivates a suspended tenant: its calls are served again and its
    /// projection runners start again (once the engine runs), from their
    /// checkpoints, applying everything appended meanwhile; the
    /// orchestration runner hands its pending invocations and timers back
    /// to the dispatcher.
    ///
    /// Errors: as [`Engine::suspend_tenant`].
    pub async fn reactivate_tenant(
        &self,
        platform_admin: &Principal,
        tenant: &TenantId,
    ) -> Result<TenantChange, EngineError> {
        let change = self
            .change_tenant(
                platform_admin,
                tenant,
                "reactivate a tenant",
                |record| match record.map(|r| r.status) {
                    Some(TenantStatus::Suspended) => Some(TenantEvent::TenantReactivated {
                        tenant: tenant.clone(),
                        at: self.now(),
                    }),
                    _ => None,
                },
            )
            .await?;
        if let Ok(host) = self.open_projections() {
            host.resume_tenant(tenant);
        }
        self.follow_tenant(tenant);
        Ok(change)
    }

    /// Stops the tenant's running work (see [`Engine::suspend_tenant`]):
    /// its runners first, so that none hands the dispatcher work again,
    /// then the dispatcher's share.
    async fn stop_tenant_work(&self, tenant: &TenantId) {
        if let Ok(host) = self.open_projections() {
            host.stop_tenant(tenant).await;
        }
        self.hub().forget_tenant(tenant);
    }

    /// The registered tenants that are suspended (to start nothing for
    /// them when the engine starts).
    ///
    /// Errors: [`EngineError::Log`] / [`EngineError::Codec`] if the
    /// registry cannot be read.
    pub(super) async fn suspended_tenants(&self) -> Result<Vec<TenantId>, EngineError> {
        let registry = self.registry().await?;
        let registry = registry.read().unwrap_or_else(|p| p.into_inner());
        Ok(registry
            .tenants
            .values()
            .filter(|(r, _)| r.status == TenantStatus::Suspended)
            .map(|(r, _)| r.tenant.clone())
            .collect())
    }

    /// Every registered tenant, by id.
    ///
    /// Errors: [`AccessError::NotPlatformAdministrator`];
    /// [`EngineError::Log`] if the registry cannot be read.
    pub async fn tenants(
        &self,
        platform_admin: &Principal,
    ) -> Result<Vec<TenantRecord>, EngineError> {
        Self::require_platform_admin(platform_admin, "list tenants")?;
        let registry = self.registry().await?;
        let registry = registry.read().unwrap_or_else(|p| p.into_inner());
        Ok(registry.tenants.values().map(|(r, _)| r.clone()).collect())
    }

    async fn change_tenant(
        &self,
        platform_admin: &Principal,
        tenant: &TenantId,
        action: &str,
        decide: impl FnOnce(Option<&TenantRecord>) -> Option<TenantEvent>,
    ) -> Result<TenantChange, EngineError> {
        self.check_running()?;
        Self::require_platform_admin(platform_admin, action)?;
        if is_platform_tenant(tenant) {
            return Err(AccessError::ReservedTenant {
                tenant: tenant.clone(),
            }
            .into());
        }
        let registry = self.registry().await?;
        let _writing = self.inner.tenants.writing.lock().await;
        let current = registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .tenants
            .get(tenant)
            .cloned();
        let registering = action == "register a tenant";
        if current.is_none() && !registering {
            return Err(AccessError::UnknownTenant {
                tenant: tenant.clone(),
            }
            .into());
        }
        let Some(event) = decide(current.as_ref().map(|(r, _)| r)) else {
            return Ok(TenantChange::Unchanged);
        };
        let context = CommandContext::because(action);
        let version = self
            .record_tenant_event(
                tenant,
                current.as_ref().map(|(_, v)| *v),
                &event,
                &context,
                &platform_admin.subject,
            )
            .await?;
        registry
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .apply(&event, version);
        Ok(TenantChange::Changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_platform_tenant_id_is_valid() {
        assert_eq!(platform().as_str(), PLATFORM_TENANT);
    }
}
