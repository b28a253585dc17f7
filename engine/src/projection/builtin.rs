//! What the built-in projections need from outside: deployed definitions and
//! search settings; and the list an engine registers.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::cases::CasesProjection;
use super::timeline::TimelineProjection;
use super::Projection;
use crate::definition::{CaseDefinition, FieldType};
use crate::log::TenantId;

/// Looks up deployed case definitions (the engine's cache, in practice).
#[async_trait]
pub trait DefinitionResolver: Send + Sync + 'static {
    /// The definition `key` at `version` deployed for `tenant`.
    ///
    /// Errors: a message saying why it is not available.
    async fn definition(
        &self,
        tenant: &TenantId,
        key: &str,
        version: u32,
    ) -> Result<Arc<CaseDefinition>, String>;
}

/// Search settings.
#[derive(Debug, Clone, Default)]
pub struct SearchConfig {
    /// Case type -> the case-file fields whose words are indexed for text
    /// search. A case type not listed here indexes all its `text` fields.
    pub text_fields: BTreeMap<String, Vec<String>>,
}

impl SearchConfig {
    /// The text-indexed fields of a definition.
    pub fn text_fields_of<'d>(&self, def: &'d CaseDefinition) -> Vec<&'d str> {
        match self.text_fields.get(def.key.as_str()) {
            Some(list) => def
                .fields
                .iter()
                .filter(|f| list.iter().any(|l| l == f.key.as_str()))
                .map(|f| f.key.as_str())
                .collect(),
            None => def
                .fields
                .iter()
                .filter(|f| f.ty == FieldType::Text)
                .map(|f| f.key.as_str())
                .collect(),
        }
    }
}

/// The built-in projections: [`super::cases`] and [`super::timeline`].
pub fn projections(
    resolver: Arc<dyn DefinitionResolver>,
    config: SearchConfig,
) -> Vec<Arc<dyn Projection>> {
    let config = Arc::new(config);
    vec![
        Arc::new(CasesProjection::new(Arc::clone(&resolver), config)),
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

    pub async fn get(
        &mut self,
        tenant: &TenantId,
        key: &str,
        version: u32,
    ) -> Result<Arc<CaseDefinition>, String> {
        if let Some(d) = self.cache.get(&(key.to_string(), version)) {
            return Ok(Arc::clone(d));
        }
        let def = self.resolver.definition(tenant, key, version).await?;
        self.cache
            .insert((key.to_string(), version), Arc::clone(&def));
        Ok(def)
    }
}
