//! Bounded rules through the engine: a rule that cannot fit its budget on a
//! full case is refused at deploy; one that exceeds it on a case's actual
//! data fails the command with an error naming the rule, appends nothing,
//! and other tenants' reads keep answering meanwhile.

use casebook::case::{CaseCommand, CaseError, CaseFile};
use casebook::definition::Format;
use casebook::engine::{CommandContext, EngineError, OpenCase};
use casebook::log::TenantId;
use casebook::rules::serde_json::json;
use casebook::rules::EvalError;
use casebook::security::Principal;
use casebook::{Engine, ErrorKind};

const FOI: &str = include_str!("../examples/definitions/foi-request.toml");

/// Fifty probes, each looking through the whole list: 500,000 iterations at
/// worst, within what the validator allows, but over the budget once the
/// list holds 10,000 items.
fn probes() -> String {
    let literal: Vec<String> = (0..50).map(|i| i.to_string()).collect();
    format!(
        "[{}].exists(i, tags.exists(t, t == -1 - i))",
        literal.join(", ")
    )
}

fn watchlist(rule: &str) -> String {
    format!(
        r#"
key = "watchlist"
name = "Watch list"
version = 1
default_classification = "OFFICIAL"
roles = ["analyst"]

[retention]
group = "group3"

[permissions]
open = ["analyst"]
update_case_file = ["analyst"]
close = ["analyst"]

[[fields]]
key = "tags"
type = "list"
element = "integer"

[[stages]]
key = "work"
name = "Work"

  [[stages.activities]]
  key = "flag"
  name = "Flag a match"
  kind = "human_task"
  roles = ["analyst"]
  entry = [{{ if = "{rule}" }}]
"#
    )
}

fn admin(tenant: &str) -> Principal {
    Principal::new(TenantId::new(tenant).unwrap(), "admin-1").with_roles(["administrator"])
}

fn analyst() -> Principal {
    Principal::new(TenantId::new("kent").unwrap(), "an-1").with_roles(["analyst"])
}

fn tags(n: i64) -> CaseFile {
    CaseFile::from_json(json!({ "tags": (0..n).collect::<Vec<_>>() })).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_that_cannot_fit_on_a_full_case_is_refused_at_deploy() {
    let engine = Engine::in_memory_with(casebook::engine::EngineConfig::with_tenants(
        ["kent", "essex"].map(|t| casebook::log::TenantId::new(t).unwrap()),
    ))
    .unwrap();
    let nested = watchlist("tags.exists(a, tags.exists(b, a == b))");
    let err = engine
        .deploy(&admin("kent"), &nested, Format::Toml)
        .await
        .unwrap_err();
    let EngineError::InvalidDefinition(def) = &err else {
        panic!("expected an invalid definition, got {err}");
    };
    let paths: Vec<&str> = def.problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["stages[0].activities[0].entry[0].if"], "{err}");
    assert!(err.to_string().contains("would iterate"), "{err}");

    let deep = watchlist("[1].all(a, [1].all(b, [1].all(c, [1].all(d, a == d))))");
    let err = engine
        .deploy(&admin("kent"), &deep, Format::Toml)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nested 4 deep"), "{err}");

    // The fifty probes fit the worst case's iterations, so they deploy.
    engine
        .deploy(&admin("kent"), &watchlist(&probes()), Format::Toml)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_over_its_budget_fails_the_command_and_other_tenants_keep_reading() {
    let engine = Engine::in_memory_with(casebook::engine::EngineConfig::with_tenants(
        ["kent", "essex"].map(|t| casebook::log::TenantId::new(t).unwrap()),
    ))
    .unwrap();
    engine.start().await.unwrap();
    engine
        .deploy(&admin("kent"), &watchlist(&probes()), Format::Toml)
        .await
        .unwrap();
    engine
        .deploy(&admin("essex"), FOI, Format::Toml)
        .await
        .unwrap();

    // Another tenant's case, read throughout.
    let essex =
        Principal::new(TenantId::new("essex").unwrap(), "foi-7").with_roles(["foi_officer"]);
    let foi = engine
        .open_case(
            &essex,
            OpenCase::new(
                "foi_request",
                CaseFile::from_json(json!({
                    "requester": "P-1",
                    "received_on": "2026-11-02",
                    "request_text": "Number of burglaries",
                }))
                .unwrap(),
            ),
        )
        .await
        .unwrap();

    // A short list: the rule runs (and does not hold).
    let case = engine
        .open_case(&analyst(), OpenCase::new("watchlist", tags(10)))
        .await
        .unwrap();
    let version = case.version;
    let tag_count = |view: &casebook::case::CaseView| {
        view.case_file
            .iter()
            .find(|(k, _)| k.as_str() == "tags")
            .and_then(|(_, v)| v.as_array().map(Vec::len))
    };

    let reader = {
        let engine = engine.clone();
        let essex = essex.clone();
        let case_id = foi.case_id.clone();
        tokio::spawn(async move {
            let mut reads = 0u32;
            for _ in 0..200 {
                engine.view(&essex, &case_id).await.expect("essex reads");
                reads += 1;
                tokio::task::yield_now().await;
            }
            reads
        })
    };

    // A full list: the rule is over its budget, so the update fails, named.
    for _ in 0..5 {
        let err = engine
            .execute(
                &analyst(),
                &case.case_id,
                CaseCommand::UpdateCaseFile {
                    changes: tags(10_000),
                },
                CommandContext::because("bulk import"),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ResourceExhausted, "{err}");
        match &err {
            EngineError::Case(CaseError::RuleFailed { owner, error }) => {
                assert!(owner.contains("'flag'"), "{owner}");
                match error {
                    EvalError::BudgetExceeded {
                        expression, cost, ..
                    } => {
                        assert_eq!(expression, &probes());
                        assert!(cost.is_some_and(|c| c > casebook::rules::COMMAND_BUDGET));
                    }
                    other => panic!("expected BudgetExceeded, got {other:?}"),
                }
            }
            other => panic!("expected a rule failure, got {other}"),
        }
        assert!(
            err.to_string().contains("over its evaluation budget"),
            "{err}"
        );
    }
    assert_eq!(reader.await.unwrap(), 200);

    // Nothing was appended; the case still takes commands that fit.
    let view = engine.view(&analyst(), &case.case_id).await.unwrap();
    assert_eq!(tag_count(&view), Some(10));
    let ok = engine
        .execute(
            &analyst(),
            &case.case_id,
            CaseCommand::UpdateCaseFile { changes: tags(100) },
            CommandContext::because("small import"),
        )
        .await
        .unwrap();
    assert!(ok.version > version);
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_over_the_inline_budget_but_within_the_full_one_succeeds() {
    // One pass over a full list: more than the inline budget, within the
    // command's, so it is decided on a blocking thread and succeeds.
    let engine = Engine::in_memory_with(casebook::engine::EngineConfig::with_tenants(
        ["kent", "essex"].map(|t| casebook::log::TenantId::new(t).unwrap()),
    ))
    .unwrap();
    engine
        .deploy(
            &admin("kent"),
            &watchlist("tags.exists(t, t == -1) || tags.exists(t, t == -2)"),
            Format::Toml,
        )
        .await
        .unwrap();
    let case = engine
        .open_case(&analyst(), OpenCase::new("watchlist", tags(10_000)))
        .await
        .unwrap();
    let view = engine.view(&analyst(), &case.case_id).await.unwrap();
    let tags = view
        .case_file
        .iter()
        .find(|(k, _)| k.as_str() == "tags")
        .and_then(|(_, v)| v.as_array().map(Vec::len));
    assert_eq!(tags, Some(10_000));
}
