//! What the built-in projections need from outside (deployed definitions) and
//! the list an engine registers.

use std::sync::Arc;

use async_trait::async_trait;

use super::cases::CasesProjection;
pub use super::error::ResolveError;
use super::timeline::TimelineProjection;
use super::HandlerError;
use super::Projection;
use crate::case::CaseEvent;
use crate::definition::CaseDefinition;
use crate::log::codec::DomainEvent;
use crate::log::{RecordedEvent, TenantId};
use crate::records::sealing::{Opened, SealError};

/// Looks up deployed case definitions (the engine's cache, in practice).
#[async_trait]
pub trait DefinitionResolver: Send + Sync + 'static {
    /// The definition `key` at `version` deployed for `tenant`.
    ///
    /// Errors: [`ResolveError`], keeping why it is not available as its
    /// source.
    async fn definition(
        &self,
        tenant: &TenantId,
        key: &str,
        version: u32,
    ) -> Result<Arc<CaseDefinition>, ResolveError>;

    /// Decodes a case event and opens its sealed personal fields
    /// ([`crate::records::sealing`]). The default decodes only: sealed
    /// fields are left out, as for a reader without the keys.
    ///
    /// Errors: [`SealError`].
    async fn open_case_event(&self, event: &RecordedEvent) -> Result<Opened, SealError> {
        Ok(Opened {
            event: CaseEvent::from_recorded(event)?,
            erased: Vec::new(),
        })
    }
}

/// The built-in projections: [`super::cases`] and [`super::timeline`].
///
/// What the search index word-indexes is the definitions' business: each
/// case-file field marked `search = "text"`.
pub fn projections(resolver: Arc<dyn DefinitionResolver>) -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(CasesProjection::new(Arc::clone(&resolver))),
        Arc::new(TimelineProjection::new(resolver)),
    ]
}

/// A definition cache in front of a resolver, kept by each handler.
pub(crate) struct DefinitionCache {
    resolver: Arc<dyn DefinitionResolver>,
    cache: std::collections::HashMap<(String, u32), Arc<CaseDefinition>>,
}

impl DefinitionCache {
    pub fn new(resolver: Arc<dyn DefinitionResolver>) -> Self {
        DefinitionCache {
            resolver,
            cache: Default::default(),
        }
    }

    /// The case event opened (see [`DefinitionResolver::open_case_event`]).
    ///
    /// Errors: [`HandlerError::Decode`].
    pub async fn open(&self, event: &RecordedEvent) -> Result<Opened, HandlerError> {
        self.resolver
            .open_case_event(event)
            .await
            .map_err(|e| HandlerError::decode(format!("case event {}", event.locator()), e))
    }

    pub async fn get(
        &mut self,
        tenant: &TenantId,
        key: &str,
        version: u32,
    ) -> Result<Arc<CaseDefinition>, ResolveError> {
        if let Some(d) = self.cache.get(&(key.to_string(), version)) {
            return Ok(Arc::clone(d));
        }
        let def = self.resolver.definition(tenant, key, version).await?;
        self.cache
            .insert((key.to_string(), version), Arc::clone(&def));
        Ok(def)
    }
}
