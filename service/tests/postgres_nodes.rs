//! Three `casebook serve` processes on one PostgreSQL database: any node serves any case.
//!
//! Each node has its own data directory (its views are caches of the
//! shared log) and all share the database and the token secret. A case
//! opened on one node is read on another with the position its command
//! returned; notes added to one case from all three nodes at once all land
//! (conflicting commands are retried); and a fresh engine replaying the
//! database reaches the same case.

mod support;

use std::time::Duration;

use casebook_engine::engine::Engine;
use casebook_engine::log::pg::{PgStoreConfig, TestCluster};
use casebook_engine::log::TenantId;
use casebook_engine::projection::Consistency;
use casebook_engine::security::{Classification, PositionToken, Principal};
use casebook_proto::v1 as pb;
use support::{after, burglary_report, serve_with, token, Bearer, SECRET};
use tonic::transport::Channel;

type Cases =
    pb::cases_client::CasesClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>;

async fn cases(addr: &str, token: &str) -> Cases {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    pb::cases_client::CasesClient::with_interceptor(channel, Bearer(Some(token.to_string())))
}

fn note(case_id: &str, text: String) -> pb::ExecuteRequest {
    pb::ExecuteRequest {
        case_id: case_id.to_string(),
        context: None,
        command: Some(pb::execute_request::Command::AddNote(pb::AddNote { text })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_serve_processes_share_one_database() {
    let Some(cluster) = tokio::task::spawn_blocking(TestCluster::shared)
        .await
        .unwrap()
    else {
        return;
    };
    let url = cluster.new_database().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let config = dir.path().join("casebook.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"{url}\"\n[auth]\nhs256_secret_file = \"{}\"\n",
            secret.display()
        ),
    )
    .unwrap();
    let mut nodes = Vec::new();
    for i in 0..3 {
        // One at a time: the first applies the schema and deploys the
        // bundled definitions; the others find them there.
        nodes.push(serve_with(&dir.path().join(format!("node{i}")), Some(&config)).await);
    }
    let token = token(
        "demo",
        "pc-1",
        &["call_handler", "investigator", "supervisor"],
        "SECRET",
    );
    let mut clients = Vec::new();
    for (_, addr) in &nodes {
        clients.push(cases(addr, &token).await);
    }

    // Opened on node 0, read on node 1 with the position it returned.
    let opened = clients[0]
        .open_case(pb::OpenCaseRequest {
            case_type: "burglary".into(),
            case_file: Some(burglary_report()),
            ..Default::default()
        })
        .await
        .expect("open on node 0")
        .into_inner();
    let seen = clients[1]
        .get_case(pb::GetCaseRequest {
            case_id: opened.case_id.clone(),
            consistency: after(&opened),
            purpose: "n-node test".into(),
        })
        .await
        .expect("node 1 serves the case opened on node 0")
        .into_inner();
    assert_eq!(seen.case_id, opened.case_id);

    // Notes on the same case from all three nodes at once.
    let mut tasks = Vec::new();
    for (n, client) in clients.iter().enumerate() {
        for k in 0..5 {
            let mut client = client.clone();
            let case_id = opened.case_id.clone();
            tasks.push(tokio::spawn(async move {
                client
                    .execute(note(&case_id, format!("note {k} from node {n}")))
                    .await
                    .map(|r| r.into_inner())
            }));
        }
    }
    let mut last = opened.clone();
    for t in tasks {
        let outcome = t.await.unwrap().expect("a note lands despite the race");
        if outcome.version > last.version {
            last = outcome;
        }
    }
    let mut views = Vec::new();
    for client in &mut clients {
        let view = client
            .get_case(pb::GetCaseRequest {
                case_id: opened.case_id.clone(),
                consistency: after(&last),
                purpose: "n-node test".into(),
            })
            .await
            .expect("every node reaches the last note")
            .into_inner();
        views.push(view);
    }
    assert_eq!(views[0].notes.len(), 15, "{:?}", views[0].notes);
    assert!(views
        .iter()
        .all(|v| v.notes == views[0].notes && v.version == last.version));

    // A fresh node replaying the database reaches the same case.
    for (child, _) in &mut nodes {
        child.kill().await.unwrap();
    }
    let engine = Engine::on_postgres(PgStoreConfig::new(url), Default::default())
        .await
        .unwrap();
    engine.start().await.unwrap();
    let reader = Principal::new(TenantId::new("demo").unwrap(), "pc-1")
        .with_roles(["investigator"])
        .with_clearance(Classification::Secret);
    // The token node 0..2 gave is valid here: the secret is the database's.
    let replayed = engine
        .case_view(
            &reader,
            &opened.case_id,
            Consistency::AtLeast {
                position: PositionToken::from_u64(last.position),
                timeout: Duration::from_secs(30),
            },
        )
        .await
        .expect("the replayed case");
    assert_eq!(replayed.version.0, last.version);
    assert_eq!(replayed.view.notes.len(), 15);
    engine.shutdown().await.unwrap();
}
