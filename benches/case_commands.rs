//! `case_commands`: what a command costs through the `Engine` (load from the
//! state cache, decide, append, with the built-in projections running), and
//! whether that cost grows with the case:
//!
//! - 16 callers on fresh cases (each moves to a new case every
//!   [`FRESH_CASE_COMMANDS`] commands), with per-command latency;
//! - the same 16 callers on cases of 10,000 events (notes and case-file
//!   updates, appended in setup);
//! - raw durable appends of one event by 16 writers, the baseline;
//! - 16 callers on one hot case (conflicts retried), checking that every
//!   acknowledged command is in the final state;
//! - opening a case of a one-stage plan of 10 and of 1,000 tasks.
//!
//! Prints, after criterion's own output:
//!
//! ```text
//! case_commands: fresh cases <N> cmd/s, p50 <a> ms, p99 <b> ms
//! case_commands: cases of 10000 events <M> cmd/s (<M/N as %> of fresh)
//! case_commands: engine vs raw appends, 16 callers: <%>
//! case_commands: one hot case, 16 callers <K> cmd/s, <L> lost updates
//! case_commands: open, plan of 1000 tasks p50 <c> ms
//! case_commands: open, plan of 10 tasks p50 <d> ms
//! ```
//!
//! ```text
//! cargo bench --bench case_commands
//! ```

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use casebook::case::{CaseCommand, CaseEvent, CaseFile};
use casebook::definition::{FieldKey, Format};
use casebook::engine::{CommandContext, EngineConfig, EngineError, OpenCase};
use casebook::log::codec::DomainEvent;
use casebook::log::{
    ActorId, EventData, EventStore, ExpectedVersion, LogStore, Metadata, Source, StreamId,
    TenantId, Timestamp,
};
use casebook::rules::serde_json::json;
use casebook::security::Principal;
use casebook::Engine;
use criterion::{Criterion, Throughput};

const CALLERS: usize = 16;
const COMMANDS_PER_CALLER: usize = 16;
/// Commands on a fresh case before its caller moves to a new one.
const FRESH_CASE_COMMANDS: usize = 32;
/// Events in each long case before the measurement.
const LONG_CASE_EVENTS: u64 = 10_000;

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

async fn open_case(engine: &Engine, id: &str) -> u64 {
    let case_file = CaseFile::new()
        .with("requester", "P-1")
        .with("received_on", "2026-11-02")
        .with("request_text", "Number of burglaries in 2025");
    let mut open = OpenCase::new("foi_request", case_file);
    open.case_id = Some(id.parse().unwrap());
    engine.open_case(&officer(), open).await.unwrap().version.0
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

/// A definition whose one stage holds `tasks` human tasks; every other task
/// waits for a case-file condition, so opening also evaluates sentries.
fn plan_definition(tasks: usize) -> String {
    let mut toml = format!(
        r#"
key = "plan_{tasks}"
name = "A plan of {tasks} tasks"
version = 1
roles = ["officer"]

[retention]
group = "group3"

[permissions]
open = ["officer"]
update_case_file = ["officer"]

[[fields]]
key = "grade"
type = "text"

[[stages]]
key = "work"
name = "The work"
"#
    );
    for t in 0..tasks {
        toml.push_str(&format!(
            "\n  [[stages.activities]]\n  key = \"task_{t}\"\n  name = \"Task {t}\"\n  kind = \"human_task\"\n  roles = [\"officer\"]\n"
        ));
        if t % 2 == 1 {
            toml.push_str("  entry = [{ if = \"grade == 'urgent'\" }]\n");
        }
    }
    toml
}

type Tally = Arc<Mutex<Vec<(&'static str, u64, Duration)>>>;

/// Runs `per_caller` commands on each caller's cases; returns the elapsed
/// time, and pushes each command's latency to `latencies`.
async fn run_callers(
    engine: &Engine,
    cases: Vec<Vec<String>>,
    per_caller: usize,
    latencies: Option<&Arc<Mutex<Vec<Duration>>>>,
) -> Duration {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for caller_cases in cases {
        let engine = engine.clone();
        let latencies = latencies.cloned();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::with_capacity(per_caller);
            for i in 0..per_caller {
                let case = &caller_cases[(i / FRESH_CASE_COMMANDS) % caller_cases.len()];
                let t = Instant::now();
                engine
                    .execute(&officer(), case, command(i), CommandContext::default())
                    .await
                    .unwrap();
                mine.push(t.elapsed());
            }
            if let Some(l) = latencies {
                l.lock().unwrap().extend(mine);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

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
    let long_cases: Vec<String> = (0..CALLERS).map(|c| format!("FOI-LONG-{c}")).collect();
    rt.block_on(async {
        engine.deploy(&admin, foi, Format::Toml).await.unwrap();
        for tasks in [10, 1000] {
            engine
                .deploy(&admin, &plan_definition(tasks), Format::Toml)
                .await
                .unwrap();
        }
        // Long cases: opened through the engine, then notes and case-file
        // updates appended to their streams directly (as the engine would
        // have, without 160,000 commands of setup).
        let store = engine
            .store(&Principal::platform_administrator("ops"))
            .unwrap();
        for id in &long_cases {
            let mut version = open_case(&engine, id).await + 1;
            let stream = StreamId::new(tenant(), "case", id).unwrap();
            while version < LONG_CASE_EVENTS {
                let n = (LONG_CASE_EVENTS - version).min(1000);
                let batch = (0..n)
                    .map(|i| {
                        let meta = Metadata::new(ActorId::new("foi-7"), Source::system("bench"));
                        let v = version + i;
                        let event = if v % 2 == 0 {
                            let mut changes = std::collections::BTreeMap::new();
                            changes.insert(
                                FieldKey::new("estimated_cost_hours".to_string()),
                                json!(v as f64 / 2.0),
                            );
                            CaseEvent::CaseFileUpdated { changes }
                        } else {
                            CaseEvent::NoteAdded {
                                text: format!("called the requester ({v})"),
                                by: "foi-7".into(),
                                at: Timestamp(1_790_000_000_000 + v as i64),
                            }
                        };
                        event.to_event_data(meta).unwrap()
                    })
                    .collect::<Vec<_>>();
                store
                    .append(&stream, ExpectedVersion::Any, batch)
                    .await
                    .unwrap();
                version += n;
            }
        }
        // The projections catch up before anything is measured.
        for id in &long_cases {
            let note = CaseCommand::AddNote {
                text: "setup done".into(),
            };
            let out = engine
                .execute(&officer(), id, note, CommandContext::default())
                .await
                .unwrap();
            engine
                .wait_for_projections(&officer(), out.position.unwrap(), Duration::from_secs(600))
                .await
                .unwrap();
        }
    });
    let raw_dir = dir();
    let raw = LogStore::open(raw_dir.path()).unwrap();
    let tally: Tally = Arc::default();
    let fresh_latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let fresh_serial = AtomicUsize::new(0);

    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let mut group = c.benchmark_group("case_commands");
    group.throughput(Throughput::Elements((CALLERS * COMMANDS_PER_CALLER) as u64));
    group.bench_function("engine_16_callers_fresh_cases", |b| {
        b.iter_custom(|iters| {
            let per_caller = iters as usize * COMMANDS_PER_CALLER;
            let per_caller_cases = per_caller.div_ceil(FRESH_CASE_COMMANDS);
            // Cases are opened before the clock starts.
            let cases: Vec<Vec<String>> = rt.block_on(async {
                let mut all = Vec::new();
                for _ in 0..CALLERS {
                    let mut mine = Vec::new();
                    for _ in 0..per_caller_cases {
                        let id = format!("FOI-{}", fresh_serial.fetch_add(1, Ordering::Relaxed));
                        open_case(&engine, &id).await;
                        mine.push(id);
                    }
                    all.push(mine);
                }
                all
            });
            let elapsed = rt.block_on(run_callers(
                &engine,
                cases,
                per_caller,
                Some(&fresh_latencies),
            ));
            tally
                .lock()
                .unwrap()
                .push(("fresh", (CALLERS * per_caller) as u64, elapsed));
            elapsed
        })
    });
    group.bench_function("engine_16_callers_cases_of_10000_events", |b| {
        b.iter_custom(|iters| {
            let per_caller = iters as usize * COMMANDS_PER_CALLER;
            let cases = long_cases.iter().map(|c| vec![c.clone()]).collect();
            let elapsed = rt.block_on(run_callers(&engine, cases, per_caller, None));
            tally
                .lock()
                .unwrap()
                .push(("long", (CALLERS * per_caller) as u64, elapsed));
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
                "raw",
                iters * (CALLERS * COMMANDS_PER_CALLER) as u64,
                elapsed,
            ));
            elapsed
        })
    });
    let hot_serial = AtomicUsize::new(0);
    let lost = AtomicUsize::new(0);
    group.bench_function("engine_16_callers_one_hot_case", |b| {
        b.iter_custom(|iters| {
            let id = format!("FOI-HOT-{}", hot_serial.fetch_add(1, Ordering::Relaxed));
            rt.block_on(open_case(&engine, &id));
            let per_caller = iters as usize * COMMANDS_PER_CALLER;
            let (elapsed, acked) = rt.block_on(async {
                let start = Instant::now();
                let mut tasks = Vec::new();
                for caller in 0..CALLERS {
                    let engine = engine.clone();
                    let id = id.clone();
                    tasks.push(tokio::spawn(async move {
                        let mut acked = Vec::new();
                        for i in 0..per_caller {
                            let text = format!("caller {caller} note {i}");
                            // Contended (every attempt met a newer version):
                            // not applied, so the caller sends it again.
                            loop {
                                let add = CaseCommand::AddNote { text: text.clone() };
                                match engine
                                    .execute(&officer(), &id, add, CommandContext::default())
                                    .await
                                {
                                    Ok(_) => break,
                                    Err(EngineError::Contended { .. }) => continue,
                                    Err(e) => panic!("hot case command failed: {e}"),
                                }
                            }
                            acked.push(text);
                        }
                        acked
                    }));
                }
                let mut acked = Vec::new();
                for t in tasks {
                    acked.extend(t.await.unwrap());
                }
                (start.elapsed(), acked)
            });
            // Every acknowledged note is in the case, once.
            let state = rt.block_on(engine.load(&officer(), &id)).unwrap().state;
            let held: Vec<&str> = state.notes.iter().map(|n| n.text.as_str()).collect();
            let distinct: BTreeSet<&str> = held.iter().copied().collect();
            let acked_set: BTreeSet<&str> = acked.iter().map(String::as_str).collect();
            // Missing, stored twice, or stored without an acknowledgement.
            let missing = acked_set.difference(&distinct).count();
            let twice = held.len() - distinct.len();
            let unacked = distinct.difference(&acked_set).count();
            lost.fetch_add(missing + twice + unacked, Ordering::Relaxed);
            tally
                .lock()
                .unwrap()
                .push(("hot", acked.len() as u64, elapsed));
            elapsed
        })
    });
    group.finish();

    let mut group = c.benchmark_group("case_commands_open");
    let open_serial = AtomicUsize::new(0);
    let opens: Arc<Mutex<Vec<(usize, Duration)>>> = Arc::default();
    for tasks in [10usize, 1000] {
        group.bench_function(format!("plan_of_{tasks}_tasks"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let mut open = OpenCase::new(
                            format!("plan_{tasks}"),
                            CaseFile::new().with("grade", "routine"),
                        );
                        let n = open_serial.fetch_add(1, Ordering::Relaxed);
                        open.case_id = Some(format!("PLAN-{n}").parse().unwrap());
                        let t = Instant::now();
                        engine.open_case(&officer_of_plans(), open).await.unwrap();
                        let took = t.elapsed();
                        opens.lock().unwrap().push((tasks, took));
                        total += took;
                    }
                    total
                })
            })
        });
    }
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
    let (fresh, long, raw_rate, hot) = (rate("fresh"), rate("long"), rate("raw"), rate("hot"));
    let mut lat = fresh_latencies.lock().unwrap().clone();
    lat.sort();
    let opens = opens.lock().unwrap();
    let open_p50 = |tasks: usize| {
        let mut v: Vec<Duration> = opens.iter().filter(|o| o.0 == tasks).map(|o| o.1).collect();
        v.sort();
        percentile(&v, 0.5)
    };
    println!();
    println!(
        "case_commands: fresh cases {fresh:.0} cmd/s, p50 {:.2} ms, p99 {:.2} ms",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    println!(
        "case_commands: cases of {LONG_CASE_EVENTS} events {long:.0} cmd/s ({:.1}% of fresh)",
        100.0 * long / fresh
    );
    println!(
        "case_commands: engine vs raw appends, {CALLERS} callers: {:.1}%",
        100.0 * fresh / raw_rate
    );
    println!(
        "case_commands: one hot case, {CALLERS} callers {hot:.0} cmd/s, {} lost updates",
        lost.load(Ordering::Relaxed)
    );
    println!(
        "case_commands: open, plan of 1000 tasks p50 {:.2} ms",
        open_p50(1000)
    );
    println!(
        "case_commands: open, plan of 10 tasks p50 {:.2} ms",
        open_p50(10)
    );
    println!("(raw durable appends: {raw_rate:.0} events/s)");
    drop(t);
    rt.block_on(engine.shutdown()).unwrap();
    rt.block_on(raw.close()).unwrap();
}

fn officer_of_plans() -> Principal {
    Principal::new(tenant(), "pc-1").with_roles(["officer"])
}
