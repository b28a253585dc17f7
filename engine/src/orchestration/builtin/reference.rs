//! `reference.lookup`: an entry of one of the tenant's reference-data
//! tables ([`crate::resources::reference`]).

use crate::definition::FieldType;
use crate::resources::reference::ReferenceTable;
use crate::resources::{ParsedCache, ResourceKind};

use super::super::service::{
    BusinessService, ServiceContext, ServiceContract, ServiceError, ServiceValues,
};
use super::{resource_error, text_input};

/// The service's name.
pub const NAME: &str = "reference.lookup";

/// Looks up a key: input `table` (text, the table's name) and `key`
/// (text); output `found` (boolean) and, when found, every column of the
/// entry as text (the contract is open: a definition declares the columns
/// it maps). An unknown key is not an error (`found = false`): the
/// definition decides what that means; an unknown table is a permanent
/// error.
///
/// ```
/// use casebook::orchestration::builtin::ReferenceService;
/// use casebook::orchestration::BusinessService;
/// assert_eq!(ReferenceService::new().name(), "reference.lookup");
/// ```
#[derive(Debug)]
pub struct ReferenceService {
    cache: ParsedCache<ReferenceTable>,
}

impl Default for ReferenceService {
    fn default() -> Self {
        ReferenceService::new()
    }
}

impl ReferenceService {
    /// The service, for every tenant's tables.
    pub fn new() -> Self {
        ReferenceService {
            cache: ParsedCache::new(ResourceKind::ReferenceData, ReferenceTable::parse),
        }
    }
}

#[async_trait::async_trait]
impl BusinessService for ReferenceService {
    fn name(&self) -> &str {
        NAME
    }

    fn contract(&self) -> ServiceContract {
        ServiceContract::new()
            .input("table", FieldType::Text, true)
            .input("key", FieldType::Text, true)
            .output("found", FieldType::Boolean)
            .open()
    }

    async fn invoke(
        &self,
        ctx: &ServiceContext,
        input: ServiceValues,
    ) -> Result<ServiceValues, ServiceError> {
        let name = text_input(&input, "table")?;
        let key = text_input(&input, "key")?;
        let (_, table) = self
            .cache
            .get(&ctx.resources, name)
            .await
            .map_err(resource_error)?;
        let mut out = ServiceValues::new();
        match table.lookup(key) {
            None => {
                out.insert("found".into(), false.into());
            }
            Some(entry) => {
                out.insert("found".into(), true.into());
                for (column, value) in entry {
                    out.insert(column.clone(), value.clone().into());
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::ItemKey;
    use crate::engine::{Engine, EngineConfig};
    use crate::log::TenantId;
    use crate::security::Principal;
    use serde_json::json;

    const OFFENCES: &str = include_str!("../../../../examples/resources/offence-codes.toml");

    #[tokio::test]
    async fn keys_are_looked_up_in_the_tenants_table_only() {
        let kent = TenantId::new("kent").unwrap();
        let essex = TenantId::new("essex").unwrap();
        let engine = Engine::in_memory_with(EngineConfig {
            tenants: vec![kent.clone(), essex.clone()],
            ..Default::default()
        })
        .unwrap();
        let admin = Principal::new(kent.clone(), "admin").with_roles(["administrator"]);
        engine
            .deploy_resource(
                &admin,
                ResourceKind::ReferenceData,
                "offence-codes",
                OFFENCES,
            )
            .await
            .unwrap();
        let ctx = |t: &TenantId| {
            ServiceContext::new(
                t.clone(),
                "c",
                ItemKey::new("x"),
                engine.tenant_resources(t),
            )
        };
        let ask = |key: &str| -> ServiceValues {
            [
                ("table".to_string(), json!("offence-codes")),
                ("key".to_string(), json!(key)),
            ]
            .into()
        };
        let service = ReferenceService::new();
        let out = service.invoke(&ctx(&kent), ask("28/1")).await.unwrap();
        assert_eq!(out["found"], json!(true));
        assert_eq!(out["home_office_class"], json!("28"));
        assert_eq!(out["description"], json!("Burglary in a dwelling"));
        let out = service.invoke(&ctx(&kent), ask("99/99")).await.unwrap();
        assert_eq!(out["found"], json!(false));
        let err = service.invoke(&ctx(&essex), ask("28/1")).await.unwrap_err();
        assert!(
            !err.is_retryable() && err.to_string().contains("no reference_data"),
            "{err}"
        );
        let err = service
            .invoke(
                &ctx(&kent),
                [("table".to_string(), json!("offence-codes"))].into(),
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("'key'"), "{err}");
    }
}
