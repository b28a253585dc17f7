//! A user-written business service: a THRIVE risk scorer (Threat, Harm,
//! Risk, Investigation, Vulnerability, Engagement) registered on the
//! engine and called by a definition's service task. The engine records
//! the request, invokes the plugin, retries it if it reports a retryable
//! error, and writes its answer into the case file.
//!
//! ```text
//! cargo run --example thrive_plugin
//! ```

use std::sync::Arc;
use std::time::Duration;

use casebook::case::CaseFile;
use casebook::definition::{FieldType, Format};
use casebook::engine::{EngineConfig, OpenCase};
use casebook::log::TenantId;
use casebook::orchestration::{
    async_trait, BusinessService, ServiceContext, ServiceContract, ServiceError, ServiceRegistry,
    ServiceValues,
};
use casebook::rules::serde_json::json;
use casebook::security::Principal;
use casebook::Engine;

/// Grades risk from a few THRIVE factors.
struct ThriveScorer;

#[async_trait]
impl BusinessService for ThriveScorer {
    fn name(&self) -> &str {
        "risk.thrive"
    }

    /// Must match the definition's `[[services]]` entry (checked at deploy).
    fn contract(&self) -> ServiceContract {
        ServiceContract::new()
            .input("threat_of_violence", FieldType::Boolean, true)
            .input("vulnerable", FieldType::Boolean, true)
            .input("repeat_victim", FieldType::Boolean, false)
            .output("grade", FieldType::Text)
    }

    async fn invoke(
        &self,
        ctx: &ServiceContext,
        input: ServiceValues,
    ) -> Result<ServiceValues, ServiceError> {
        let flag = |name: &str| input.get(name).and_then(|v| v.as_bool()).unwrap_or(false);
        let score = [
            flag("threat_of_violence") as u8 * 2,
            flag("vulnerable") as u8 * 2,
            flag("repeat_victim") as u8,
        ]
        .iter()
        .sum::<u8>();
        let grade = match score {
            4.. => "high",
            2..=3 => "medium",
            _ => "standard",
        };
        println!(
            "  THRIVE scorer: case {} attempt {} (key {}) -> {grade}",
            ctx.case_id, ctx.attempt, ctx.idempotency_key
        );
        Ok([("grade".to_string(), json!(grade))].into())
    }
}

const DEFINITION: &str = r#"
key = "domestic_incident"
name = "Domestic incident"
version = 1
[retention]
group = "group2"
[permissions]
open = ["call_handler"]

[[fields]]
key = "threat_of_violence"
type = "boolean"
required = true
[[fields]]
key = "vulnerable"
type = "boolean"
required = true
[[fields]]
key = "risk_grade"
type = "text"

[[services]]
name = "risk.thrive"
[services.inputs]
threat_of_violence = { type = "boolean", required = true }
vulnerable = { type = "boolean", required = true }
repeat_victim = { type = "boolean" }
[services.outputs]
grade = { type = "text" }

[[activities]]
key = "grade_risk"
name = "Grade the risk (THRIVE)"
kind = "service_task"
service = "risk.thrive"
input = { threat_of_violence = "threat_of_violence", vulnerable = "vulnerable" }
output = { grade = "risk_grade" }
retry = { max_attempts = 3, timeout = "PT5S", backoff = "PT1S" }

[[activities]]
key = "attend"
name = "Attend"
kind = "human_task"
roles = ["response_officer"]
entry = [{ on = [{ completed = "grade_risk" }] }]
"#;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = EngineConfig {
        services: ServiceRegistry::new().with(Arc::new(ThriveScorer)),
        // Registered at first use, so this example needs no platform call.
        tenants: vec![TenantId::new("kent")?],
        ..EngineConfig::default()
    };
    let engine = Engine::in_memory_with(config)?;
    engine.start().await?;
    let kent = TenantId::new("kent")?;
    let admin = Principal::new(kent.clone(), "admin-1").with_roles(["administrator"]);
    engine.deploy(&admin, DEFINITION, Format::Toml).await?;

    let handler = Principal::new(kent, "ch-1").with_roles(["call_handler"]);
    let case_file = CaseFile::from_json(json!({ "threat_of_violence": true, "vulnerable": true }))?;
    let opened = engine
        .open_case(&handler, OpenCase::new("domestic_incident", case_file))
        .await?;
    println!("opened {}", opened.case_id);

    // The dispatcher invokes the scorer in the background.
    let mut grade = None;
    for _ in 0..500 {
        let view = engine.view(&handler, &opened.case_id).await?;
        if let Some(g) = view.case_file.get("risk_grade") {
            grade = Some(g.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let grade = grade.ok_or("the scorer did not answer in time")?;
    println!("risk grade recorded on the case: {grade}");
    let view = engine.view(&handler, &opened.case_id).await?;
    for item in &view.items {
        println!("  {:<12} {:?}", item.item.as_str(), item.state);
    }
    engine.shutdown().await?;
    Ok(())
}
