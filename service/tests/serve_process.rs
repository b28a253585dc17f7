//! The `casebook` binary as an operator runs it: `serve` on an empty
//! directory, `token` for its generated secret, load, `kill -9`, restart
//! with nothing acknowledged lost, SIGTERM for a clean stop, and
//! `definitions validate` for CI pipelines.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use casebook_proto::v1 as pb;
use support::{burglary_report, serve, token_cli as token, Bearer, BIN};
use tokio::process::Command;
use tonic::transport::Channel;

async fn client(
    addr: &str,
    token: &str,
) -> casebook_proto::v1::cases_client::CasesClient<
    tonic::service::interceptor::InterceptedService<Channel, Bearer>,
> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    casebook_proto::v1::cases_client::CasesClient::with_interceptor(
        channel,
        Bearer(Some(token.to_string())),
    )
}

/// Opens cases from 8 tasks until stopped; returns the acknowledged ones.
fn load(
    addr: &str,
    token: &str,
) -> (
    Arc<Mutex<Vec<pb::CaseOutcome>>>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (addr, token, acked) = (addr.to_string(), token.to_string(), Arc::clone(&acked));
        tasks.push(tokio::spawn(async move {
            let mut cases = client(&addr, &token).await;
            loop {
                let r = cases
                    .open_case(pb::OpenCaseRequest {
                        case_type: "burglary".into(),
                        case_file: Some(burglary_report()),
                        ..Default::default()
                    })
                    .await;
                match r {
                    Ok(o) => acked.lock().unwrap().push(o.into_inner()),
                    Err(_) => return,
                }
            }
        }));
    }
    (acked, tasks)
}

async fn all_present(addr: &str, token: &str, acked: &[pb::CaseOutcome]) {
    let mut cases = client(addr, token).await;
    // Position tokens are not ordered: each case waits for its own outcome's.
    for o in acked {
        let view = cases
            .get_case(pb::GetCaseRequest {
                case_id: o.case_id.clone(),
                consistency: Some(pb::Consistency {
                    min_position: o.position,
                    timeout_ms: 30_000,
                }),
                purpose: "recovery check".into(),
            })
            .await
            .unwrap_or_else(|e| panic!("acknowledged case {} lost: {e}", o.case_id))
            .into_inner();
        assert_eq!(view.version, o.version);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_survives_kill_9_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut child, addr) = serve(&data).await;
    let token = token(&data, &["call_handler"]).await;

    // kill -9 under load: every acknowledged open is there after restart.
    let (acked, tasks) = load(&addr, &token);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 10, "only {} opens acknowledged", acked.len());
    let (mut child, addr) = serve(&data).await;
    all_present(&addr, &token, &acked).await;

    // SIGTERM under load: in-flight calls finish, the process exits 0, and
    // the directory is free for the next start at once.
    let (acked2, tasks) = load(&addr, &token);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let pid = child.id().unwrap().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("stops within 30 s")
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    for t in tasks {
        t.await.unwrap();
    }
    let acked2 = acked2.lock().unwrap().clone();
    assert!(!acked2.is_empty());
    let (mut child, addr) = serve(&data).await;
    all_present(&addr, &token, &acked2).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();

    // The operator's scrub of the log, and its progress.
    let out = Command::new(BIN)
        .arg("verify")
        .arg("--data")
        .arg(&data)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let checked: u64 = text
        .split(": ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected verify output {text:?}"));
    assert!(checked as usize >= acked.len() + acked2.len(), "{text}");
    let log = casebook_engine::log::LogStore::open(&data).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let n = log
        .verify_with_progress(move |done, total| sink.lock().unwrap().push((done, total)))
        .await
        .unwrap();
    log.close().await.unwrap();
    assert_eq!(n, checked);
    assert_eq!(seen.lock().unwrap().last(), Some(&(n, n)));
}

#[tokio::test]
async fn definitions_validate_reports_problems_for_pipelines() {
    let good = Command::new(BIN)
        .args(["definitions", "validate"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/definitions/burglary.toml"
        ))
        .output()
        .await
        .unwrap();
    assert!(good.status.success());
    assert!(String::from_utf8_lossy(&good.stdout).contains("valid (burglary version 2)"));
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "key = \"theft\"\nname = \"Theft\"\nversion = 0\n[retention]\ngroup = \"group3\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["definitions", "validate"])
        .arg(&bad)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(": version: "), "{text}");
}
