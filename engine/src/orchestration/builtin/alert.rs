//! `alert.raise`: raises an alert to a role's or a team's work queue, with
//! a message filled from case fields and a priority; someone in that queue
//! acknowledges it (`CaseCommand::AcknowledgeAlert`).
//!
//! The service only checks and fills: it reports the alert on
//! [`ServiceContext::alerts`], and the engine records it on the case as an
//! `AlertRaised` event (marked like the service task, so a reader not
//! cleared for what the message may carry never sees it) in the append
//! that records the answer; the `cases` projection lists open alerts in
//! the work queues of the roles that may acknowledge them and of their
//! team.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::notify::Template;
use super::{one_text_of, text_input};
use crate::case::{AlertQueue, AlertRecord};
use crate::definition::{FieldType, Priority, RoleKey};
use crate::log::TenantId;
use crate::orchestration::{
    BusinessService, ServiceContext, ServiceContract, ServiceError, ServiceValues,
};

/// The service's name.
pub const NAME: &str = "alert.raise";

/// Inputs of the service's own (the rest fill the message).
const OWN_INPUTS: [&str; 4] = ["template", "role", "team", "priority"];

/// One tenant's alert settings: the queues alerts may go to and the
/// message templates.
#[derive(Debug, Clone, Default)]
pub struct AlertConfig {
    /// Roles whose queue takes alerts.
    pub roles: BTreeSet<String>,
    /// Teams whose queue takes alerts, each with the roles of its members
    /// (who may acknowledge them).
    pub teams: BTreeMap<String, Vec<String>>,
    /// Message templates by name: `{{field}}` is replaced by the input
    /// `field`, `{{case_id}}` by the case's id. One line.
    pub templates: BTreeMap<String, String>,
}

impl AlertConfig {
    /// No queue and no template yet.
    pub fn new() -> Self {
        AlertConfig::default()
    }

    /// These settings, with alerts allowed to `role`'s queue.
    pub fn with_role(mut self, role: impl Into<String>) -> Self {
        self.roles.insert(role.into());
        self
    }

    /// These settings, with alerts allowed to `team`'s queue, acknowledged
    /// by holders of `members`.
    pub fn with_team(
        mut self,
        team: impl Into<String>,
        members: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.teams
            .insert(team.into(), members.into_iter().map(Into::into).collect());
        self
    }

    /// These settings with a message template.
    pub fn with_template(mut self, name: impl Into<String>, text: impl Into<String>) -> Self {
        self.templates.insert(name.into(), text.into());
        self
    }
}

/// Raises alerts for service tasks: input `template` (text), exactly one of
/// `role` or `team` (text: a queue the tenant's [`AlertConfig`] allows),
/// `priority` (text: `low`, `normal` — the default —, `high`, `urgent`) and
/// the template's variables (the contract is open); output `queue` (text,
/// e.g. `role supervisor`). An unknown queue, template or priority is a
/// permanent error (an incident on the case); a tenant without settings
/// too.
///
/// ```
/// use casebook::orchestration::builtin::{AlertConfig, AlertService};
/// use casebook::orchestration::BusinessService;
/// use casebook::log::TenantId;
///
/// let kent = AlertConfig::new()
///     .with_role("supervisor")
///     .with_template("high_risk", "High-risk missing person {{name}} ({{case_id}})");
/// let service = AlertService::new().with_tenant(TenantId::new("kent").unwrap(), kent);
/// assert_eq!(service.name(), "alert.raise");
/// ```
#[derive(Debug, Default)]
pub struct AlertService {
    tenants: HashMap<TenantId, AlertConfig>,
}

impl AlertService {
    /// No tenant configured yet.
    pub fn new() -> Self {
        AlertService::default()
    }

    /// This service with `tenant`'s settings.
    pub fn with_tenant(mut self, tenant: TenantId, config: AlertConfig) -> Self {
        self.tenants.insert(tenant, config);
        self
    }
}

/// The queue an input names, and the roles that may acknowledge its alerts.
fn queue(
    config: &AlertConfig,
    input: &ServiceValues,
) -> Result<(AlertQueue, Vec<String>), ServiceError> {
    let (which, name) = one_text_of(input, &["role", "team"])?;
    let known = |names: Vec<&String>| {
        names
            .into_iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if which == "role" {
        if !config.roles.contains(name) {
            return Err(ServiceError::permanent(format!(
                "unknown role '{name}': alerts go to the roles {}",
                known(config.roles.iter().collect())
            )));
        }
        return Ok((AlertQueue::Role(name.to_string()), vec![name.to_string()]));
    }
    let members = config.teams.get(name).ok_or_else(|| {
        ServiceError::permanent(format!(
            "unknown team '{name}': alerts go to the teams {}",
            known(config.teams.keys().collect())
        ))
    })?;
    Ok((AlertQueue::Team(name.to_string()), members.clone()))
}

fn priority(input: &ServiceValues) -> Result<Priority, ServiceError> {
    match input.get("priority") {
        None | Some(serde_json::Value::Null) => Ok(Priority::Normal),
        Some(v) => serde_json::from_value(v.clone()).map_err(|_| {
            ServiceError::permanent(format!(
                "priority {v} is not one of low, normal, high, urgent"
            ))
        }),
    }
}

#[async_trait::async_trait]
impl BusinessService for AlertService {
    fn name(&self) -> &str {
        NAME
    }

    fn contract(&self) -> ServiceContract {
        ServiceContract::new()
            .input("template", FieldType::Text, true)
            .input("role", FieldType::Text, false)
            .input("team", FieldType::Text, false)
            .input("priority", FieldType::Text, false)
            .output("queue", FieldType::Text)
            .open()
    }

    async fn invoke(
        &self,
        ctx: &ServiceContext,
        input: ServiceValues,
    ) -> Result<ServiceValues, ServiceError> {
        let config = self.tenants.get(&ctx.tenant).ok_or_else(|| {
            ServiceError::permanent(format!(
                "alerts are not configured for tenant {}",
                ctx.tenant
            ))
        })?;
        let (queue, members) = queue(config, &input)?;
        let priority = priority(&input)?;
        let template_name = text_input(&input, "template")?;
        let text = config.templates.get(template_name).ok_or_else(|| {
            ServiceError::permanent(format!("no alert template '{template_name}'"))
        })?;
        let template = Template::new(text.as_str(), "");
        let (_, values) = template.values_for(template_name, ctx, &input, &OWN_INPUTS)?;
        let acknowledged_by = members.into_iter().map(RoleKey::new).collect();
        let label = queue.to_string();
        ctx.alerts.record(AlertRecord {
            queue,
            message: Template::fill(&template.subject, &values, true),
            priority,
            acknowledged_by,
        });
        Ok([("queue".to_string(), serde_json::Value::from(label))].into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::ItemKey;
    use crate::resources::TenantResources;
    use serde_json::json;

    fn service() -> AlertService {
        AlertService::new().with_tenant(
            TenantId::new("kent").unwrap(),
            AlertConfig::new()
                .with_role("supervisor")
                .with_team("mash", ["safeguarding"])
                .with_template("risk", "{{name}} is at {{risk}} risk"),
        )
    }

    fn ctx(tenant: &str) -> ServiceContext {
        let tenant = TenantId::new(tenant).unwrap();
        ServiceContext::new(
            tenant.clone(),
            "case-1",
            ItemKey::new("alert_supervisor".to_string()),
            TenantResources::none(tenant),
        )
    }

    fn input(v: serde_json::Value) -> ServiceValues {
        serde_json::from_value(v).unwrap()
    }

    #[tokio::test]
    async fn an_alert_is_filled_and_reported_for_its_queue() {
        let ctx = ctx("kent");
        let out = service()
            .invoke(
                &ctx,
                input(
                    json!({ "template": "risk", "team": "mash", "priority": "urgent",
                              "name": "A\nB", "risk": "high" }),
                ),
            )
            .await
            .unwrap();
        assert_eq!(out["queue"], json!("team mash"));
        let alerts = ctx.alerts.take();
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].message, "A B is at high risk");
        assert_eq!(alerts[0].priority, Priority::Urgent);
        assert_eq!(alerts[0].queue, AlertQueue::Team("mash".into()));
        assert_eq!(alerts[0].acknowledged_by[0].as_str(), "safeguarding");
    }

    #[tokio::test]
    async fn bad_input_is_a_permanent_error_and_raises_nothing() {
        let s = service();
        for (tenant, v, says) in [
            (
                "essex",
                json!({ "template": "risk", "role": "supervisor" }),
                "not configured",
            ),
            (
                "kent",
                json!({ "template": "risk", "role": "sergeant", "name": "A", "risk": "x" }),
                "unknown role 'sergeant'",
            ),
            (
                "kent",
                json!({ "template": "risk", "team": "cid", "name": "A", "risk": "x" }),
                "unknown team 'cid'",
            ),
            (
                "kent",
                json!({ "template": "risk", "name": "A", "risk": "x" }),
                "exactly one",
            ),
            (
                "kent",
                json!({ "template": "nope", "role": "supervisor" }),
                "no alert template",
            ),
            (
                "kent",
                json!({ "template": "risk", "role": "supervisor", "name": "A" }),
                "{{risk}}",
            ),
            (
                "kent",
                json!({ "template": "risk", "role": "supervisor", "priority": "asap", "name": "A", "risk": "x" }),
                "not one of",
            ),
        ] {
            let ctx = ctx(tenant);
            let err = s.invoke(&ctx, input(v)).await.unwrap_err();
            assert!(!err.is_retryable());
            assert!(err.to_string().contains(says), "{err} should say {says}");
            assert!(ctx.alerts.take().is_empty());
        }
    }
}
