//! `grpc`: commands through the gRPC service over loopback TCP — one client
//! calling in a loop, and 32 clients on their own connections — against the
//! same commands called on the `Engine` in process by 32 callers, in the
//! same run, on the durable embedded store. Each command adds a note to the
//! caller's own burglary case (one event, authenticated, `fdatasync`ed).
//!
//! ```text
//! cargo bench --bench grpc
//! ```
//!
//! Prints `grpc: 1 client <N> cmd/s, p50 <a> ms, p99 <b> ms` and
//! `grpc: 32 clients <M> cmd/s, p50 <c> ms, p99 <d> ms, <%> of in-process`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use casebook::case::{CaseCommand, CaseFile};
use casebook::engine::{CommandContext, OpenCase};
use casebook::log::TenantId;
use casebook::security::Principal;
use casebook_proto::v1 as pb;
use casebook_proto::v1::cases_client::CasesClient;
use casebook_service::auth::{mint_hs256, Claims};
use casebook_service::config::{AuthConfig, Config};
use criterion::{Criterion, Throughput};
use tonic::transport::Channel;

const CLIENTS: usize = 32;
const PER_CLIENT: usize = 8;
const SECRET: &[u8] = b"bench-secret-bench-secret-bench-secret";

fn dir() -> tempfile::TempDir {
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-tmp");
    std::fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(base).unwrap()
}

fn handler() -> Principal {
    Principal::new(TenantId::new("demo").unwrap(), "ch-1").with_roles(["call_handler"])
}

fn report() -> CaseFile {
    CaseFile::new()
        .with("reported_at", "2026-12-06T09:30:00Z")
        .with("incident_location", "loc-12-high-street")
        .with("premises_type", "dwelling")
        .with("victim", "person-4411")
        .with("victim_vulnerable", false)
}

fn note_request(case_id: &str, i: usize) -> tonic::Request<pb::ExecuteRequest> {
    tonic::Request::new(pb::ExecuteRequest {
        case_id: case_id.to_string(),
        context: None,
        command: Some(pb::execute_request::Command::AddNote(pb::AddNote {
            text: format!("house-to-house enquiry {i}: no answer"),
        })),
    })
}

/// Every call's latency and each run's (commands, elapsed), per mode.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    runs: Vec<(u64, Duration)>,
}

impl Tally {
    fn rate(&self) -> f64 {
        let n: u64 = self.runs.iter().map(|r| r.0).sum();
        let t: f64 = self.runs.iter().map(|r| r.1.as_secs_f64()).sum();
        n as f64 / t
    }

    fn percentile_ms(&mut self, p: f64) -> f64 {
        self.latencies.sort_unstable();
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i].as_secs_f64() * 1000.0
    }
}

type Shared = Arc<Mutex<Tally>>;

async fn timed_calls(
    mut client: CasesClient<Channel>,
    token: String,
    case_id: String,
    n: usize,
) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut request = note_request(&case_id, i);
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let t = Instant::now();
        client.execute(request).await.unwrap();
        out.push(t.elapsed());
    }
    out
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let data = dir();
    let secret = data.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let config = Config {
        data: data.path().join("data"),
        listen: "127.0.0.1:0".parse().unwrap(),
        auth: AuthConfig {
            hs256_secret_file: Some(secret),
            ..AuthConfig::default()
        },
        ..Config::default()
    };
    let running = rt
        .block_on(casebook_service::start(config, std::future::pending()))
        .unwrap();
    let engine = running.engine.clone();
    let mut claims = Claims::new("demo", "ch-1", Duration::from_secs(3600));
    claims.roles = vec!["call_handler".into()];
    let token = mint_hs256(SECRET, &claims).unwrap();
    // One case per caller and mode, opened in process.
    let cases: Vec<String> = rt.block_on(async {
        let mut ids = Vec::new();
        for _ in 0..(2 * CLIENTS + 1) {
            let open = OpenCase::new("burglary", report());
            ids.push(
                engine
                    .open_case(&handler(), open)
                    .await
                    .unwrap()
                    .case_id
                    .to_string(),
            );
        }
        ids
    });
    let addr = format!("http://{}", running.addr);
    let channels: Vec<Channel> = rt.block_on(async {
        let mut out = Vec::new();
        for _ in 0..CLIENTS {
            out.push(
                Channel::from_shared(addr.clone())
                    .unwrap()
                    .connect()
                    .await
                    .unwrap(),
            );
        }
        out
    });

    let one: Shared = Arc::default();
    let many: Shared = Arc::default();
    let local: Shared = Arc::default();
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let mut group = c.benchmark_group("grpc");
    group.throughput(Throughput::Elements(PER_CLIENT as u64));
    group.bench_function("1_client", |b| {
        b.iter_custom(|iters| {
            let n = iters as usize * PER_CLIENT;
            let client = CasesClient::new(channels[0].clone());
            let start = Instant::now();
            let lat = rt.block_on(timed_calls(client, token.clone(), cases[0].clone(), n));
            let elapsed = start.elapsed();
            let mut t = one.lock().unwrap();
            t.latencies.extend(lat);
            t.runs.push((n as u64, elapsed));
            elapsed
        })
    });
    group.throughput(Throughput::Elements((CLIENTS * PER_CLIENT) as u64));
    group.bench_function("32_clients", |b| {
        b.iter_custom(|iters| {
            let n = iters as usize * PER_CLIENT;
            let start = Instant::now();
            let lat = rt.block_on(async {
                let tasks: Vec<_> = (0..CLIENTS)
                    .map(|k| {
                        tokio::spawn(timed_calls(
                            CasesClient::new(channels[k].clone()),
                            token.clone(),
                            cases[1 + k].clone(),
                            n,
                        ))
                    })
                    .collect();
                let mut all = Vec::new();
                for t in tasks {
                    all.extend(t.await.unwrap());
                }
                all
            });
            let elapsed = start.elapsed();
            let mut t = many.lock().unwrap();
            t.latencies.extend(lat);
            t.runs.push(((n * CLIENTS) as u64, elapsed));
            elapsed
        })
    });
    group.bench_function("in_process_32_callers", |b| {
        b.iter_custom(|iters| {
            let n = iters as usize * PER_CLIENT;
            let start = Instant::now();
            let lat = rt.block_on(async {
                let tasks: Vec<_> = (0..CLIENTS)
                    .map(|k| {
                        let engine = engine.clone();
                        let case_id = cases[1 + CLIENTS + k].clone();
                        tokio::spawn(async move {
                            let mut out = Vec::with_capacity(n);
                            for i in 0..n {
                                let t = Instant::now();
                                engine
                                    .execute(
                                        &handler(),
                                        &case_id,
                                        CaseCommand::AddNote {
                                            text: format!("house-to-house enquiry {i}: no answer"),
                                        },
                                        CommandContext::default(),
                                    )
                                    .await
                                    .unwrap();
                                out.push(t.elapsed());
                            }
                            out
                        })
                    })
                    .collect();
                let mut all = Vec::new();
                for t in tasks {
                    all.extend(t.await.unwrap());
                }
                all
            });
            let elapsed = start.elapsed();
            let mut t = local.lock().unwrap();
            t.latencies.extend(lat);
            t.runs.push(((n * CLIENTS) as u64, elapsed));
            elapsed
        })
    });
    group.finish();
    rt.block_on(running.stop()).unwrap();

    let (mut one, mut many, mut local) = (
        std::mem::take(&mut *one.lock().unwrap()),
        std::mem::take(&mut *many.lock().unwrap()),
        std::mem::take(&mut *local.lock().unwrap()),
    );
    println!(
        "\nin-process: 32 callers {:.0} cmd/s, p50 {:.2} ms, p99 {:.2} ms",
        local.rate(),
        local.percentile_ms(0.50),
        local.percentile_ms(0.99)
    );
    println!(
        "grpc: 1 client {:.0} cmd/s, p50 {:.2} ms, p99 {:.2} ms",
        one.rate(),
        one.percentile_ms(0.50),
        one.percentile_ms(0.99)
    );
    println!(
        "grpc: 32 clients {:.0} cmd/s, p50 {:.2} ms, p99 {:.2} ms, {:.1}% of in-process",
        many.rate(),
        many.percentile_ms(0.50),
        many.percentile_ms(0.99),
        100.0 * many.rate() / local.rate()
    );
}
