//! Four engine nodes in one process on one PostgreSQL database, commands on the same cases from every node.
//!
//! Conflicting commands are retried by the engine; every acknowledged
//! command is in the final state; every node's view of each case equals
//! what a fresh node replaying the database builds; a position token from
//! one node is honoured by another.

mod common;
#[path = "common/pg.rs"]
mod pg;

use std::time::Duration;

use casebook::case::{CaseCommand, CaseFile};
use casebook::definition::Format;
use casebook::engine::{CommandContext, EngineConfig, OpenCase};
use casebook::log::pg::PgStoreConfig;
use casebook::log::TenantId;
use casebook::projection::Consistency;
use casebook::security::{PositionToken, Principal};
use casebook::Engine;

fn kent() -> TenantId {
    TenantId::new("kent").unwrap()
}

fn officer() -> Principal {
    Principal::new(kent(), "foi-7").with_roles(["foi_officer"])
}

async fn node(url: &str) -> Engine {
    let config = EngineConfig {
        tenants: vec![kent()],
        ..EngineConfig::default()
    };
    let engine = Engine::on_postgres(PgStoreConfig::new(url), config)
        .await
        .unwrap();
    engine.start().await.unwrap();
    engine
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_nodes_work_the_same_cases_and_agree_with_a_replay() {
    let Some(url) = pg::database().await else {
        return;
    };
    let mut nodes = Vec::new();
    for _ in 0..4 {
        nodes.push(node(&url).await);
    }
    let admin = Principal::new(kent(), "admin").with_roles(["administrator"]);
    nodes[0]
        .deploy(
            &admin,
            include_str!("../examples/definitions/foi-request.toml"),
            Format::Toml,
        )
        .await
        .unwrap();
    let cases: Vec<String> = (0..3).map(|i| format!("FOI-N-{i}")).collect();
    for (i, id) in cases.iter().enumerate() {
        let case_file = CaseFile::new()
            .with("requester", "P-1")
            .with("received_on", "2026-11-02")
            .with("request_text", "Number of burglaries in 2025");
        let mut open = OpenCase::new("foi_request", case_file);
        open.case_id = Some(id.parse().unwrap());
        // Each case opened on a different node.
        nodes[i % 4].open_case(&officer(), open).await.unwrap();
    }
    // 4 nodes × 4 callers, each adding notes to all three cases.
    let mut tasks = Vec::new();
    for (n, engine) in nodes.iter().enumerate() {
        for c in 0..4 {
            let (engine, cases) = (engine.clone(), cases.clone());
            tasks.push(tokio::spawn(async move {
                let mut last = Vec::new();
                for k in 0..6 {
                    let case = &cases[k % cases.len()];
                    // The engine retries conflicts itself; a case hot on
                    // every node may still run out of attempts (UNAVAILABLE,
                    // Contended), which a client retries as any retryable
                    // error.
                    let outcome = loop {
                        match engine
                            .execute(
                                &officer(),
                                case,
                                CaseCommand::AddNote {
                                    text: format!("node {n} caller {c} note {k}"),
                                },
                                CommandContext::default(),
                            )
                            .await
                        {
                            Ok(outcome) => break outcome,
                            Err(e) if e.kind().is_retryable() => continue,
                            Err(e) => panic!("a note failed: {e}"),
                        }
                    };
                    let token = outcome.position.unwrap_or(PositionToken::NONE);
                    last.push((k % 3, outcome.version, token));
                }
                last
            }));
        }
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.extend(t.await.unwrap());
    }
    let replay = node(&url).await;
    let reader = officer();
    for (i, case) in cases.iter().enumerate() {
        // The token of the case's last note (tokens are not ordered;
        // versions are): every node's views wait for it.
        let newest = outcomes
            .iter()
            .filter(|o| o.0 == i)
            .max_by_key(|o| o.1)
            .map(|o| o.2)
            .unwrap();
        let mut views = Vec::new();
        for engine in nodes.iter().chain(std::iter::once(&replay)) {
            let view = engine
                .case_view(
                    &reader,
                    case,
                    Consistency::AtLeast {
                        position: newest,
                        timeout: Duration::from_secs(30),
                    },
                )
                .await
                .expect("every node reaches the newest token");
            views.push(view);
        }
        // 16 callers, 6 notes each over 3 cases: 32 per case.
        assert_eq!(views[0].view.notes.len(), 32, "case {case}");
        for v in &views[1..] {
            assert_eq!(v.version, views[0].version, "case {case}");
            assert_eq!(v.view, views[0].view, "case {case}");
        }
    }
    for engine in nodes.into_iter().chain(std::iter::once(replay)) {
        engine.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_sealed_on_one_node_opens_on_another_and_erased_reads_erased_on_a_fresh_one() {
    use casebook::records::{EraseSubject, ErasureBasis, RECORDS_ROLE};
    use casebook::rules::serde_json::json;
    let Some(url) = pg::database().await else {
        return;
    };
    let a = node(&url).await;
    let b = node(&url).await;
    let admin = Principal::new(kent(), "admin").with_roles(["administrator"]);
    a.deploy(&admin, include_str!("common/subjects.toml"), Format::Toml)
        .await
        .unwrap();
    let officer = Principal::new(kent(), "pc-1")
        .with_roles(["officer"])
        .with_clearance(casebook::security::Classification::Secret);
    let mut open = OpenCase::new(
        "burglary",
        CaseFile::from_json(json!({
            "summary": "shed broken into overnight",
            "suspect_ref": "PNC-77A",
            "suspect_name": "Jo Bloggs",
            "victim_ref": "PNC-12B",
            "victim_address": "4 Station Road",
        }))
        .unwrap(),
    );
    open.case_id = Some("B-1".parse().unwrap());
    a.open_case(&officer, open).await.unwrap();
    // Sealed under a key node A made; node B opens it with the same key.
    let view = b.view(&officer, "B-1").await.unwrap();
    assert_eq!(view.case_file["suspect_name"], json!("Jo Bloggs"));

    let records = Principal::new(kent(), "rm-1").with_roles([RECORDS_ROLE]);
    let subject = a.subject_id(&records, "PNC-77A").await.unwrap();
    a.erase_subject(
        &records,
        EraseSubject {
            subject,
            basis: ErasureBasis::Infringement,
            review: None,
        },
    )
    .await
    .unwrap();
    // A node started after the erasure finds the key destroyed.
    let c = node(&url).await;
    let view = c.view(&officer, "B-1").await.unwrap();
    assert!(!view.case_file.contains_key("suspect_name"), "{view:?}");
    assert_eq!(view.case_file["victim_address"], json!("4 Station Road"));
    for e in [a, b, c] {
        e.shutdown().await.unwrap();
    }
}
