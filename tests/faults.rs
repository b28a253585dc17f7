//! Faults that must not lose, lie or crash (issue 19): hostile values
//! (nesting far deeper than a stack, text fields of thousands of words),
//! positions at the end of their range, derived state ahead of or damaged
//! beside the log. Every engine here runs on the embedded store in a temp
//! dir.

use std::time::Duration;

use casebook::case::{CaseCommand, CaseError, CaseFile, MAX_SEARCH_TEXT, MAX_VALUE_DEPTH};
use casebook::definition::Format;
use casebook::engine::{CommandContext, EngineConfig, EngineError, OpenCase};
use casebook::log::TenantId;
use casebook::projection::query::SearchQuery;
use casebook::projection::Consistency;
use casebook::rules::serde_json::{json, Value};
use casebook::security::{Classification, Principal};
use casebook::Engine;

const INCIDENT: &str = include_str!("common/incident.toml");
const WAIT: Duration = Duration::from_secs(30);

fn registered() -> EngineConfig {
    EngineConfig::with_tenants(["kent"].map(|t| TenantId::new(t).expect("valid tenant")))
}

fn admin() -> Principal {
    Principal::new(TenantId::new("kent").unwrap(), "admin-1").with_roles(["administrator"])
}

fn handler() -> Principal {
    Principal::new(TenantId::new("kent").unwrap(), "pc-101")
        .with_roles(["handler"])
        .with_clearance(Classification::Secret)
}

fn ctx() -> CommandContext {
    CommandContext::because("test")
}

/// A value `depth` arrays deep, built (and later dropped by the engine)
/// without recursion.
fn nested(depth: usize) -> Value {
    let mut v = json!("x");
    for _ in 0..depth {
        v = Value::Array(vec![v]);
    }
    v
}

async fn open_incident(engine: &Engine, id: &str, summary: Value) -> Result<(), EngineError> {
    let mut req = OpenCase::new(
        "incident",
        CaseFile::new()
            .with("summary", summary)
            .with("ward", "north"),
    );
    req.case_id = Some(id.parse().unwrap());
    req.context = ctx();
    engine.open_case(&handler(), req).await.map(|_| ())
}

async fn deployed(dir: &std::path::Path) -> Engine {
    let engine = Engine::open_with(dir, registered()).unwrap();
    engine.start().await.unwrap();
    engine
        .deploy(&admin(), INCIDENT, Format::Toml)
        .await
        .unwrap();
    engine
}

fn invalid_field(err: EngineError) -> String {
    match err {
        EngineError::Case(CaseError::InvalidField { field, reason }) => {
            assert!(reason.contains("nested deeper"), "{reason}");
            field
        }
        other => panic!("expected an invalid field, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_nested_deeper_than_a_stack_are_refused_naming_their_field() {
    let dir = tempfile::tempdir().unwrap();
    let engine = deployed(dir.path()).await;
    // 100,000 arrays deep: walked recursively (cloned, compared, encoded,
    // even dropped) this overflows a runtime worker's stack.
    let err = open_incident(&engine, "I-DEEP", nested(100_000))
        .await
        .unwrap_err();
    assert_eq!(invalid_field(err), "summary");
    assert_eq!(
        open_incident(&engine, "I-1", json!("a burglary"))
            .await
            .map_err(|e| e.to_string()),
        Ok(())
    );
    for command in [
        CaseCommand::UpdateCaseFile {
            changes: CaseFile::new().with("notes", nested(100_000)),
        },
        CaseCommand::Complete {
            item: "assess".into(),
            outputs: CaseFile::new().with("loss", nested(MAX_VALUE_DEPTH + 1)),
        },
    ] {
        let err = engine
            .execute(&handler(), "I-1", command, ctx())
            .await
            .unwrap_err();
        let field = invalid_field(err);
        assert!(field == "notes" || field == "loss", "{field}");
    }
    // Nothing was appended: the case is at its opening version.
    let view = engine.view(&handler(), "I-1").await.unwrap();
    assert_eq!(view.case_file.get("notes"), None);
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_word_of_a_long_text_field_is_found_or_the_value_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let engine = deployed(dir.path()).await;
    // 15,000 distinct words (2 to 5 bytes each, within the field's limit).
    let text: Vec<String> = (0..15_000).map(|i| format!("x{i:x}")).collect();
    let text = text.join(" ");
    assert!(text.len() <= MAX_SEARCH_TEXT);
    open_incident(&engine, "I-LONG", json!(text)).await.unwrap();
    // The first, the 2,001st (past the old cap) and the last.
    for word in ["x0", &format!("x{:x}", 2_000), &format!("x{:x}", 14_999)] {
        let q = SearchQuery {
            text: Some(word.into()),
            ..Default::default()
        };
        let found = engine
            .search_cases(&handler(), &q, Consistency::Eventual)
            .await;
        // Eventual: wait until the case is projected.
        let mut found = found.unwrap();
        let deadline = std::time::Instant::now() + WAIT;
        while found.items.is_empty() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            found = engine
                .search_cases(&handler(), &q, Consistency::Eventual)
                .await
                .unwrap();
        }
        let ids: Vec<_> = found.items.iter().map(|s| s.case_id.to_string()).collect();
        assert_eq!(ids, ["I-LONG"], "searching {word}");
    }
    // More text than the field can hold is refused, never partly indexed.
    let err = open_incident(&engine, "I-HUGE", json!("ab ".repeat(MAX_SEARCH_TEXT)))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::Case(CaseError::InvalidField { field, .. }) if field == "summary"),
        "{err}"
    );
    engine.shutdown().await.unwrap();
}
