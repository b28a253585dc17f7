//! `case_commands`: commands per second on existing cases through the
//! `Engine` (load with snapshot, validate, evaluate sentries, append) from 16
//! concurrent callers, against raw durable appends of the same number of
//! events from 16 writers, in the same run; and loading a case of 1,000
//! events with and without its snapshot.
//!
//! ```text
//! cargo bench --bench case_commands
//! ```

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use casebook::case::{CaseCommand, CaseFile};
use casebook::definition::Format;
use casebook::engine::{CommandContext, EngineConfig, OpenCase};
use casebook::log::{
    ActorId, EventData, EventStore, ExpectedVersion, LogStore, Metadata, Source, StreamId, TenantId,
};
use casebook::rules::serde_json::json;
use casebook::security::Principal;
use casebook::Engine;
use criterion::{Criterion, Throughput};

const CALLERS: usize = 16;
const COMMANDS_PER_CALLER: usize = 16;

fn dir() -> tempfile::TempDir {
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-tmp");
    std::fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(base).unwrap()
}

fn tenant() -> TenantId {
    TenantId::new("kent").unwrap()
}

fn officer() -> Principal {
    Principal::new(tenant(), "foi-7").with_roles(["foi_officer"])
}

async fn open_case(engine: &Engine, id: &str) {
    let case_file = CaseFile::new()
        .with("requester", "P-1")
        .with("received_on", "2026-11-02")
        .with("request_text", "Number of burglaries in 2025");
    let mut open = OpenCase::new("foi_request", case_file);
    open.case_id = Some(id.parse().unwrap());
    engine.open_case(&officer(), open).await.unwrap();
}

/// Alternates a case-file update (re-evaluates every waiting sentry) and a note.
fn command(i: usize) -> CaseCommand {
    if i.is_multiple_of(2) {
        let changes = CaseFile::new().with("estimated_cost_hours", json!(i as f64 / 2.0));
        CaseCommand::UpdateCaseFile { changes }
    } else {
        CaseCommand::AddNote {
            text: format!("called the requester ({i})"),
        }
    }
}

type Tally = Arc<Mutex<Vec<(&'static str, u64, Duration)>>>;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let engine_dir = dir();
    let engine = Engine::open_with(
        engine_dir.path(),
        EngineConfig {
            tenants: vec![tenant()],
            ..EngineConfig::default()
        },
    )
    .unwrap();
    rt.block_on(engine.start()).unwrap();
    let admin = Principal::new(tenant(), "admin").with_roles(["administrator"]);
    let foi = include_str!("../examples/definitions/foi-request.toml");
    rt.block_on(async {
        engine.deploy(&admin, foi, Format::Toml).await.unwrap();
        for c in 0..CALLERS {
            open_case(&engine, &format!("FOI-{c}")).await;
        }
        open_case(&engine, "FOI-LONG").await;
        for i in 0..999 {
            engine
                .execute(
                    &officer(),
                    "FOI-LONG",
                    command(i),
                    CommandContext::default(),
                )
                .await
                .unwrap();
        }
    });
    let raw_dir = dir();
    let raw = LogStore::open(raw_dir.path()).unwrap();
    let tally: Tally = Arc::default();

    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let mut group = c.benchmark_group("case_commands");
    group.throughput(Throughput::Elements((CALLERS * COMMANDS_PER_CALLER) as u64));
    group.bench_function("engine_16_callers", |b| {
        b.iter_custom(|iters| {
            let (elapsed, events) = rt.block_on(async {
                let start = Instant::now();
                let mut tasks = Vec::new();
                for caller in 0..CALLERS {
                    let engine = engine.clone();
                    tasks.push(tokio::spawn(async move {
                        let mut events = 0u64;
                        for i in 0..iters as usize * COMMANDS_PER_CALLER {
                            let out = engine
                                .execute(
                                    &officer(),
                                    &format!("FOI-{caller}"),
                                    command(i),
                                    CommandContext::default(),
                                )
                                .await
                                .unwrap();
                            events += out.events.len() as u64;
                        }
                        events
                    }));
                }
                let mut events = 0;
                for t in tasks {
                    events += t.await.unwrap();
                }
                (start.elapsed(), events)
            });
            tally.lock().unwrap().push((
                "engine commands",
                iters * (CALLERS * COMMANDS_PER_CALLER) as u64,
                elapsed,
            ));
            tally
                .lock()
                .unwrap()
                .push(("engine events", events, elapsed));
            elapsed
        })
    });
    group.bench_function("raw_appends_16_writers", |b| {
        b.iter_custom(|iters| {
            let elapsed = rt.block_on(async {
                let start = Instant::now();
                let mut tasks = Vec::new();
                for w in 0..CALLERS {
                    let raw = raw.clone();
                    tasks.push(tokio::spawn(async move {
                        let stream = StreamId::new(tenant(), "case", &format!("RAW-{w}")).unwrap();
                        for _ in 0..iters as usize * COMMANDS_PER_CALLER {
                            let meta =
                                Metadata::new(ActorId::new("foi-7"), Source::system("bench"));
                            let e = EventData::new("NoteAdded", vec![0x5a; 120], meta);
                            raw.append(&stream, ExpectedVersion::Any, vec![e])
                                .await
                                .unwrap();
                        }
                    }));
                }
                for t in tasks {
                    t.await.unwrap();
                }
                start.elapsed()
            });
            tally.lock().unwrap().push((
                "raw appends",
                iters * (CALLERS * COMMANDS_PER_CALLER) as u64,
                elapsed,
            ));
            elapsed
        })
    });
    group.finish();

    // Loading is measured on a fresh engine without the in-memory state
    // cache, so "with snapshot" reads the stored snapshot.
    rt.block_on(engine.shutdown()).unwrap();
    drop(engine);
    let config = EngineConfig {
        cached_cases: 0,
        tenants: vec![tenant()],
        ..EngineConfig::default()
    };
    let engine = Engine::open_with(engine_dir.path(), config).unwrap();
    rt.block_on(engine.start()).unwrap();
    let mut group = c.benchmark_group("load_case_1000_events");
    group.bench_function("with_snapshot", |b| {
        b.iter(|| rt.block_on(engine.load(&officer(), "FOI-LONG")).unwrap())
    });
    group.bench_function("without_snapshot", |b| {
        b.iter(|| {
            rt.block_on(engine.load_without_snapshot(&officer(), "FOI-LONG"))
                .unwrap()
        })
    });
    group.finish();
    c.final_summary();

    let t = tally.lock().unwrap();
    let rate = |name: &str| {
        let (n, d) = t
            .iter()
            .filter(|x| x.0 == name)
            .fold((0u64, Duration::ZERO), |(n, d), x| (n + x.1, d + x.2));
        n as f64 / d.as_secs_f64()
    };
    let commands = rate("engine commands");
    let events = rate("engine events");
    let raw_rate = rate("raw appends");
    println!("\ncase_commands summary ({CALLERS} concurrent callers, one case each)");
    println!("engine: {commands:.0} commands/s ({events:.0} events/s)");
    println!("raw durable appends: {raw_rate:.0} events/s");
    println!(
        "ratio (engine events/s : raw events/s): {:.1}%",
        100.0 * events / raw_rate
    );
    let loaded = rt.block_on(engine.load(&officer(), "FOI-LONG")).unwrap();
    println!(
        "FOI-LONG has {} events; loads from: {:?}",
        loaded.version.0 + 1,
        loaded.start
    );
    drop(t);
    rt.block_on(engine.shutdown()).unwrap();
    rt.block_on(raw.close()).unwrap();
}
