//! A client in another language: Python stubs generated from `proto/` with
//! grpcio-tools drive a real `casebook serve` — open, work and read a case,
//! and complete a job as an external worker (`python/client.py`).
//!
//! Needs Python 3 with `grpcio` and `grpcio-tools` (`.ci/run` installs
//! them). Without them the test says so and passes, except under `CI`,
//! where it fails.

mod support;

use std::path::Path;

use support::{serve_with, token_cli};
use tokio::process::Command;

async fn python_has_grpc() -> bool {
    Command::new("python3")
        .args(["-c", "import grpc, grpc_tools"])
        .output()
        .await
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_works_a_case_and_a_job() {
    if !python_has_grpc().await {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 with grpcio and grpcio-tools is required: pip install grpcio grpcio-tools"
        );
        eprintln!("skipping: python3 lacks grpcio/grpcio-tools (pip install grpcio grpcio-tools)");
        return;
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let protos = manifest.join("../proto/proto");
    let dir = tempfile::tempdir().unwrap();
    let stubs = dir.path().join("stubs");
    std::fs::create_dir_all(&stubs).unwrap();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(protos.join("casebook/v1")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "proto") {
            files.push(format!(
                "casebook/v1/{}",
                path.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    let generated = Command::new("python3")
        .args(["-m", "grpc_tools.protoc"])
        .arg(format!("-I{}", protos.display()))
        .arg(format!("--python_out={}", stubs.display()))
        .arg(format!("--grpc_python_out={}", stubs.display()))
        .args(&files)
        .output()
        .await
        .unwrap();
    assert!(
        generated.status.success(),
        "generating stubs: {}",
        String::from_utf8_lossy(&generated.stderr)
    );

    let data = dir.path().join("data");
    // The GIS lookup is the external worker's job here, not the built-in
    // service's.
    let config = dir.path().join("casebook.toml");
    std::fs::write(&config, "[demo]\nbuiltin_services = false\n").unwrap();
    let (mut server, addr) = serve_with(&data, Some(&config)).await;
    let handler = token_cli(&data, &["call_handler"]).await;
    let worker = token_cli(&data, &["casebook_worker"]).await;
    let run = Command::new("python3")
        .arg(manifest.join("tests/python/client.py"))
        .arg(&stubs)
        .arg(&addr)
        .arg(&handler)
        .arg(&worker)
        .output()
        .await
        .unwrap();
    server.start_kill().unwrap();
    server.wait().await.unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("python client: ok"), "{stdout}");
}
