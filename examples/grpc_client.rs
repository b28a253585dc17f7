//! A Rust client of the gRPC service: a call handler opens and works a
//! burglary, an external GIS worker takes the ward lookup as a job and
//! answers it, and an investigator reads the case and its timeline — all
//! over gRPC with nothing but `casebook-proto` and tonic on the client side.
//!
//! ```text
//! cargo run --release --example grpc_client                  # starts its own server
//! cargo run --release --example grpc_client -- ADDR DATA_DIR # against `casebook serve`
//! ```
//!
//! Without arguments it starts a server in-process on 127.0.0.1 over a temp
//! directory, without the built-in common services (so the GIS lookup is a
//! job for the external worker; a `casebook serve` with them answers it in
//! process, and the worker finds no job). With the address of a running `casebook serve` and its data
//! directory (for the generated signing secret), it talks to that one.

use std::time::Duration;

use casebook_proto::v1 as pb;
use casebook_proto::v1::cases_client::CasesClient;
use casebook_proto::v1::workers_client::WorkersClient;
use casebook_service::auth::{hs256_secret, mint_hs256, Claims};
use casebook_service::config::{AuthConfig, Config};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::Request;

fn text(s: &str) -> pb::Value {
    pb::Value {
        kind: Some(pb::value::Kind::Text(s.into())),
    }
}

fn boolean(b: bool) -> pb::Value {
    pb::Value {
        kind: Some(pb::value::Kind::Boolean(b)),
    }
}

fn file(fields: &[(&str, pb::Value)]) -> pb::CaseFile {
    pb::CaseFile {
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    }
}

/// A request carrying the caller's bearer token.
fn authed<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {token}").parse().expect("a token is ASCII");
    request.metadata_mut().insert("authorization", value);
    request
}

fn token(secret: &[u8], sub: &str, roles: &[&str]) -> String {
    let mut claims = Claims::new("demo", sub, Duration::from_secs(3600));
    claims.roles = roles.iter().map(|r| r.to_string()).collect();
    claims.clearance = Some("OFFICIAL".into());
    mint_hs256(secret, &claims).expect("signing works")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let temp = tempfile::tempdir()?;
    let (addr, secret, server) = match args.as_slice() {
        [addr, data] => {
            let secret = hs256_secret(&AuthConfig::default(), std::path::Path::new(data))?;
            (addr.clone(), secret, None)
        }
        _ => {
            let mut config = Config {
                data: temp.path().join("data"),
                listen: "127.0.0.1:0".parse()?,
                ..Config::default()
            };
            // The demo's built-in GIS would answer the lookup in process;
            // this example shows an external worker doing it instead.
            config.demo.builtin_services = false;
            let secret = hs256_secret(&config.auth, &config.data)?;
            let running = casebook_service::start(config, std::future::pending()).await?;
            (running.addr.to_string(), secret, Some(running))
        }
    };
    println!("talking to casebook at {addr}");
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut cases = CasesClient::new(channel.clone());
    let mut workers = WorkersClient::new(channel);
    let handler = token(&secret, "ch-101", &["call_handler"]);
    let worker = token(&secret, "gis-worker", &["casebook_worker"]);
    let investigator = token(&secret, "dc-303", &["investigator"]);

    // The call handler records a burglary; the command id makes a retry safe.
    let report = file(&[
        ("reported_at", text("2026-12-06T09:30:00Z")),
        ("incident_location", text("loc-12-high-street")),
        (
            "incident_point",
            pb::Value {
                kind: Some(pb::value::Kind::GeoPoint(pb::GeoPoint {
                    lat: 51.2802,
                    lon: 1.0789,
                })),
            },
        ),
        ("premises_type", text("dwelling")),
        ("victim", text("person-4411")),
        ("victim_vulnerable", boolean(false)),
    ]);
    let opened = cases
        .open_case(authed(
            &handler,
            pb::OpenCaseRequest {
                case_type: "burglary".into(),
                case_file: Some(report),
                context: Some(pb::CommandContext {
                    reason: "999 call".into(),
                    command_id: uuid::Uuid::new_v4().to_string(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ))
        .await?
        .into_inner();
    println!("opened {} at version {}", opened.case_id, opened.version);
    cases
        .complete_task(authed(
            &handler,
            pb::CompleteTaskRequest {
                case_id: opened.case_id.clone(),
                item: Some(pb::ItemRef {
                    key: "record_report".into(),
                    instance: 0,
                }),
                outputs: Some(file(&[("offenders_on_scene", boolean(false))])),
                context: None,
            },
        ))
        .await?;

    // The GIS worker waits for its job and answers it.
    let jobs = workers
        .activate_jobs(authed(
            &worker,
            pb::ActivateJobsRequest {
                service: "gis.locate".into(),
                worker: "gis-worker".into(),
                max_jobs: 10,
                lease_ms: 30_000,
                wait_ms: 10_000,
            },
        ))
        .await?
        .into_inner()
        .jobs;
    for job in jobs.iter().filter(|j| {
        j.handle
            .as_ref()
            .is_some_and(|h| h.case_id == opened.case_id)
    }) {
        println!("worker took {} ({})", job.service, job.idempotency_key);
        workers
            .complete_job(authed(
                &worker,
                pb::CompleteJobRequest {
                    handle: job.handle.clone(),
                    output: Some(file(&[("ward", text("Westgate")), ("beat", text("C3"))])),
                    // Nothing left the case while doing it.
                    disclosures: Vec::new(),
                },
            ))
            .await?;
    }

    // The investigator reads the case once the ward is in.
    let mut view = None;
    for _ in 0..200 {
        let v = cases
            .get_case(authed(
                &investigator,
                pb::GetCaseRequest {
                    case_id: opened.case_id.clone(),
                    purpose: "investigation".into(),
                    // At least as fresh as the opening (the worker may be
                    // done before the case view has reached the case).
                    consistency: Some(pb::Consistency {
                        min_position: opened.position,
                        timeout_ms: 5_000,
                    }),
                },
            ))
            .await?
            .into_inner();
        if v.case_file
            .as_ref()
            .is_some_and(|f| f.fields.contains_key("ward"))
        {
            view = Some(v);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let view = view.ok_or("the ward did not arrive")?;
    println!("case {} is {:?}; case file:", view.case_id, view.status());
    for (k, v) in &view.case_file.unwrap_or_default().fields {
        println!("  {k} = {:?}", v.kind);
    }
    let timeline = cases
        .get_timeline(authed(
            &investigator,
            pb::GetTimelineRequest {
                case_id: opened.case_id.clone(),
                ..Default::default()
            },
        ))
        .await?
        .into_inner();
    println!("timeline:");
    for e in timeline.entries.iter().take(12) {
        println!(
            "  v{} {} by {}: {}",
            e.version, e.event_type, e.actor, e.summary
        );
    }
    if let Some(server) = server {
        server.stop().await?;
    }
    Ok(())
}
