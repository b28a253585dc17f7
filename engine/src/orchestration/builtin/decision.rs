//! `decision.evaluate`: the first matching rule of one of the tenant's
//! decision tables ([`crate::resources::decision`]).

use crate::definition::FieldType;
use crate::resources::decision::{DecisionError, DecisionTable};
use crate::resources::{ParsedCache, ResourceKind};

use super::super::service::{
    BusinessService, ServiceContext, ServiceContract, ServiceError, ServiceValues,
};
use super::{resource_error, text_input};

/// The service's name.
pub const NAME: &str = "decision.evaluate";

/// Evaluates a decision table: input `table` (text: the table's name, e.g.
/// the constant `'burglary-grading'` in a definition) and the table's own
/// inputs; output the matching rule's outputs and `rule` (its index from
/// 0). The contract is open ([`ServiceContract::accepts_more`]): a
/// definition declares the table's inputs and outputs it uses, and the
/// table checks them when invoked. An unknown table, an input the table
/// does not declare or of the wrong type, and no matching rule are
/// permanent errors.
///
/// ```
/// use casebook::orchestration::builtin::DecisionService;
/// use casebook::orchestration::BusinessService;
/// assert_eq!(DecisionService::new().name(), "decision.evaluate");
/// ```
#[derive(Debug)]
pub struct DecisionService {
    cache: ParsedCache<DecisionTable>,
}

impl Default for DecisionService {
    fn default() -> Self {
        DecisionService::new()
    }
}

impl DecisionService {
    /// The service, for every tenant's tables.
    pub fn new() -> Self {
        DecisionService {
            cache: ParsedCache::new(ResourceKind::DecisionTable, DecisionTable::parse),
        }
    }
}

#[async_trait::async_trait]
impl BusinessService for DecisionService {
    fn name(&self) -> &str {
        NAME
    }

    fn contract(&self) -> ServiceContract {
        ServiceContract::new()
            .input("table", FieldType::Text, true)
            .output("rule", FieldType::Integer)
            .open()
    }

    async fn invoke(
        &self,
        ctx: &ServiceContext,
        mut input: ServiceValues,
    ) -> Result<ServiceValues, ServiceError> {
        let name = text_input(&input, "table")?.to_string();
        input.remove("table");
        let (version, table) = self
            .cache
            .get(&ctx.resources, &name)
            .await
            .map_err(resource_error)?;
        let (rule, mut out) = table.evaluate(&input).map_err(|e| {
            let why = match e {
                DecisionError::NoMatch => "no rule matches the input".to_string(),
                other => other.to_string(),
            };
            ServiceError::permanent(format!("decision table '{name}' version {version}: {why}"))
        })?;
        out.insert("rule".into(), serde_json::Value::from(rule as u64));
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

    const GRADING: &str = include_str!("../../../../examples/resources/burglary-grading.toml");

    fn ctx(engine: &Engine, tenant: &str) -> ServiceContext {
        let tenant = TenantId::new(tenant).unwrap();
        ServiceContext::new(
            tenant.clone(),
            "c",
            ItemKey::new("suggest_grade"),
            engine.tenant_resources(&tenant),
        )
    }

    fn input(v: serde_json::Value) -> ServiceValues {
        serde_json::from_value(v).unwrap()
    }

    #[tokio::test]
    async fn a_tables_first_match_decides_for_its_tenant_only() {
        let kent = TenantId::new("kent").unwrap();
        let engine = Engine::in_memory_with(EngineConfig {
            tenants: vec![kent.clone(), TenantId::new("essex").unwrap()],
            ..Default::default()
        })
        .unwrap();
        let admin = Principal::new(kent, "admin").with_roles(["administrator"]);
        let d = engine
            .deploy_resource(
                &admin,
                ResourceKind::DecisionTable,
                "burglary-grading",
                GRADING,
            )
            .await
            .unwrap();
        assert_eq!((d.version, d.newly_deployed), (1, true));
        let service = DecisionService::new();
        let out = service
            .invoke(
                &ctx(&engine, "kent"),
                input(
                    json!({"table": "burglary-grading", "offenders_on_scene": true,
                             "victim_vulnerable": false, "premises_type": "dwelling"}),
                ),
            )
            .await
            .unwrap();
        assert_eq!(out["grade"], json!("immediate"));
        assert_eq!(out["attend_within_minutes"], json!(15));
        assert_eq!(out["rule"], json!(0));

        // A new version is used at once; the same content again is a no-op.
        let changed = GRADING.replace("attend_within_minutes = 15", "attend_within_minutes = 10");
        let d = engine
            .deploy_resource(
                &admin,
                ResourceKind::DecisionTable,
                "burglary-grading",
                &changed,
            )
            .await
            .unwrap();
        assert_eq!(d.version, 2);
        let again = engine
            .deploy_resource(
                &admin,
                ResourceKind::DecisionTable,
                "burglary-grading",
                &changed,
            )
            .await
            .unwrap();
        assert_eq!((again.version, again.newly_deployed), (2, false));
        let out = service
            .invoke(
                &ctx(&engine, "kent"),
                input(json!({"table": "burglary-grading", "offenders_on_scene": true})),
            )
            .await
            .unwrap();
        assert_eq!(out["attend_within_minutes"], json!(10));

        // Essex sees no Kent table.
        let err = service
            .invoke(
                &ctx(&engine, "essex"),
                input(json!({"table": "burglary-grading", "offenders_on_scene": true})),
            )
            .await
            .unwrap_err();
        assert!(
            !err.is_retryable() && err.to_string().contains("no decision_table"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn unknown_tables_and_bad_input_are_permanent_errors() {
        let t = TenantId::new("kent").unwrap();
        let engine = Engine::in_memory_with(EngineConfig {
            tenants: vec![t.clone()],
            ..Default::default()
        })
        .unwrap();
        let service = DecisionService::new();
        let admin = Principal::new(t, "admin").with_roles(["administrator"]);
        engine
            .deploy_resource(&admin, ResourceKind::DecisionTable, "g", GRADING)
            .await
            .unwrap();
        let tenant = admin.tenant.as_str().to_string();
        for (bad, says) in [
            (json!({"table": "nope"}), "no decision_table 'nope'"),
            (json!({"table": "Bad Name"}), "not a valid resource name"),
            (json!({}), "'table' must be text"),
            (json!({"table": "g", "colour": "red"}), "no input 'colour'"),
            (
                json!({"table": "g", "offenders_on_scene": "yes"}),
                "must be boolean",
            ),
        ] {
            let err = service
                .invoke(&ctx(&engine, &tenant), input(bad))
                .await
                .unwrap_err();
            assert!(
                !err.is_retryable() && err.to_string().contains(says),
                "{err}"
            );
        }
        let err = engine
            .deploy_resource(
                &admin,
                ResourceKind::DecisionTable,
                "g",
                "[[rules]]\nthen = 1",
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("rules[0].then"), "{err}");
    }
}
