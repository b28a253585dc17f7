//! `audit`: reads per second with every read audited (its entry durable before the read answers) against the same reads with auditing off, in the same run.
//!
//! Two engines on the embedded store (temporary directories), each with the
//! same 200 cases: one as shipped, one with `EngineConfig::audit_reads =
//! false` (the switch exists for this baseline only). [`READERS`] tasks read
//! case views (`Engine::view`, with a purpose) as fast as they can for
//! [`WINDOW`], alternating on and off three times so that both see the same
//! machine; criterion also times one read of each alone. The summary line:
//!
//! ```text
//! audit: on R1 reads/s, off R2 reads/s, P% of off
//! ```
//!
//! The goal is at least 70% of off.
//!
//! ```text
//! cargo bench --bench audit
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use casebook::audit::ReadContext;
use casebook::case::CaseFile;
use casebook::definition::Format;
use casebook::engine::{EngineConfig, OpenCase};
use casebook::log::TenantId;
use casebook::rules::serde_json::json;
use casebook::security::{Classification, Principal};
use casebook::Engine;
use criterion::Criterion;

/// Concurrent readers.
const READERS: usize = 32;
/// Cases read (round robin).
const CASES: usize = 200;
/// How long each measurement window lasts.
const WINDOW: Duration = Duration::from_secs(3);

const INCIDENT: &str = include_str!("../tests/common/incident.toml");

fn kent() -> TenantId {
    TenantId::new("kent").unwrap()
}

fn reader() -> Principal {
    Principal::new(kent(), "pc-101").with_roles(["handler"])
}

async fn engine(dir: &std::path::Path, audit_reads: bool) -> Engine {
    let engine = Engine::open_with(
        dir,
        EngineConfig {
            audit_reads,
            tenants: vec![casebook::log::TenantId::new("kent").unwrap()],
            ..EngineConfig::default()
        },
    )
    .unwrap();
    engine.start().await.unwrap();
    let admin = Principal::new(kent(), "admin").with_roles(["administrator"]);
    engine.deploy(&admin, INCIDENT, Format::Toml).await.unwrap();
    let opener = Principal::new(kent(), "sgt-7")
        .with_roles(["handler"])
        .with_clearance(Classification::Secret);
    for i in 0..CASES {
        let mut request = OpenCase::new(
            "incident",
            CaseFile::from_json(json!({"summary": format!("case {i}"), "ward": "north"})).unwrap(),
        );
        request.case_id = Some(format!("INC-{i}").parse().unwrap());
        engine.open_case(&opener, request).await.unwrap();
    }
    engine
}

/// Reads per second over one window of `READERS` concurrent readers.
async fn throughput(engine: &Engine) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for r in 0..READERS {
        let (engine, stop, reads) = (engine.clone(), Arc::clone(&stop), Arc::clone(&reads));
        tasks.push(tokio::spawn(async move {
            let who = reader();
            let mut i = r;
            while !stop.load(Ordering::Relaxed) {
                let context = ReadContext::new(&who).purpose("bench");
                engine
                    .view(context, format!("INC-{}", i % CASES))
                    .await
                    .unwrap();
                reads.fetch_add(1, Ordering::Relaxed);
                i += READERS;
                // A read answered from the cache never waits: yield, so the
                // window's timer (and the other readers) get the workers.
                tokio::task::yield_now().await;
            }
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(WINDOW).await;
    stop.store(true, Ordering::Relaxed);
    let n = reads.load(Ordering::Relaxed);
    let elapsed = started.elapsed();
    for t in tasks {
        t.await.unwrap();
    }
    n as f64 / elapsed.as_secs_f64()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let on_dir = tempfile::tempdir().unwrap();
    let off_dir = tempfile::tempdir().unwrap();
    let on = rt.block_on(engine(on_dir.path(), true));
    let off = rt.block_on(engine(off_dir.path(), false));

    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut group = c.benchmark_group("audit");
    let who = reader();
    for (name, engine) in [("one_view_audit_on", &on), ("one_view_audit_off", &off)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(engine.view(ReadContext::new(&who).purpose("bench"), "INC-7"))
                    .unwrap()
            })
        });
    }
    group.finish();
    c.final_summary();

    let (mut on_rate, mut off_rate) = (0.0, 0.0);
    for _ in 0..3 {
        on_rate += rt.block_on(throughput(&on));
        off_rate += rt.block_on(throughput(&off));
    }
    let (on_rate, off_rate) = (on_rate / 3.0, off_rate / 3.0);
    rt.block_on(async {
        on.shutdown().await.unwrap();
        off.shutdown().await.unwrap();
    });
    println!(
        "audit: on {:.0} reads/s, off {:.0} reads/s, {:.0}% of off",
        on_rate,
        off_rate,
        100.0 * on_rate / off_rate
    );
}
