//! `records`: what crypto-shredding costs (issue 22 item 5), each figure beside its plain baseline from the same run.
//!
//! Two engines on the embedded store (temporary directories) with the same
//! case type, one whose `[[subjects]]` mark five fields (a reference and
//! four more, 32-200 bytes each) as a subject's, sealed before every
//! append, one without (`plain`). Summary lines:
//!
//! ```text
//! records: encrypted appends N ev/s, P% of plain appends
//! records: case view with decryption p50 A us, plain p50 B us
//! records: erase one subject in C cases T ms
//! ```
//!
//! - Appends: [`WRITERS`] tasks each update their own case with five new
//!   personal values per command (one event per append, durable), for
//!   [`WINDOW`], sealed and plain alternating twice.
//! - Case view: a replay of a case of [`VIEW_EVENTS`] events from the log
//!   (`load_without_snapshot`, the `bench-internals` hook: the public view
//!   answers from the state cache, which holds opened values), so every
//!   event is opened; p50 of [`VIEW_SAMPLES`].
//! - Erasure: `erase_subject` on an engine holding `C` cases, each naming
//!   its own suspect: checks, certificate, key destroyed, state cache,
//!   snapshots and projections replaced (their rebuild runs after it
//!   returns; the line also says when the rebuilt views caught up). `C` is
//!   [`ERASE_CASES`] (2,000) unless `RECORDS_BENCH_CASES` says otherwise:
//!   the issue's 100,000 cases take about an hour to set up on the 2-core
//!   machine this runs on.
//!
//! ```text
//! cargo bench --bench records
//! RECORDS_BENCH_CASES=100000 cargo bench --bench records
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use casebook::case::{CaseCommand, CaseFile};
use casebook::definition::Format;
use casebook::engine::{CommandContext, EngineConfig, OpenCase};
use casebook::log::TenantId;
use casebook::records::{EraseSubject, ErasureBasis, RECORDS_ROLE};
use casebook::rules::serde_json::{json, Value};
use casebook::security::Principal;
use casebook::Engine;
use criterion::Criterion;

/// Concurrent writers (one case each).
const WRITERS: usize = 64;
/// How long each append window lasts.
const WINDOW: Duration = Duration::from_secs(3);
/// Events of the case replayed for the view figure.
const VIEW_EVENTS: usize = 20;
/// Replays timed for the view figure.
const VIEW_SAMPLES: usize = 300;
/// Cases of the erasure figure by default.
const ERASE_CASES: usize = 2_000;

/// The restriction and erasure tests' burglary: five personal fields
/// (the suspect's reference, name and address, the victim's reference and
/// address) of two subjects.
const SEALED: &str = include_str!("../tests/common/subjects.toml");

/// The same case type without its `[[subjects]]`: nothing sealed.
fn plain() -> String {
    let start = SEALED.find("subjects = [").unwrap();
    let end = start + SEALED[start..].find("]\n").unwrap() + 2;
    format!("{}{}", &SEALED[..start], &SEALED[end..])
}

fn kent() -> TenantId {
    TenantId::new("kent").unwrap()
}

fn officer() -> Principal {
    Principal::new(kent(), "pc-1").with_roles(["officer"])
}

/// Five personal values of 32-200 bytes for person `n`, version `v`.
fn personal(n: usize, v: u64) -> Value {
    let pad = |len: usize, s: String| format!("{s:-<len$}");
    json!({
        "suspect_ref": pad(32, format!("PNC-{n:08}")),
        "suspect_name": pad(40, format!("Person {n} v{v}")),
        "suspect_address": pad(80, format!("{v} Long Street, Town {n}")),
        "victim_ref": pad(32, format!("PNC-V{n:07}")),
        "victim_address": pad(200, format!("{v} Orchard Lane, Village {n}, seen from the road")),
    })
}

async fn engine(dir: &std::path::Path, sealed: bool) -> Engine {
    let engine = Engine::open_with(
        dir,
        EngineConfig {
            tenants: vec![kent()],
            ..EngineConfig::default()
        },
    )
    .unwrap();
    engine.start().await.unwrap();
    let admin = Principal::new(kent(), "admin").with_roles(["administrator"]);
    let source = if sealed { SEALED.to_string() } else { plain() };
    engine.deploy(&admin, &source, Format::Toml).await.unwrap();
    engine
}

async fn open(engine: &Engine, id: &str, n: usize) {
    let mut request = OpenCase::new("burglary", CaseFile::from_json(personal(n, 0)).unwrap());
    request.case_id = Some(id.parse().unwrap());
    engine.open_case(&officer(), request).await.unwrap();
}

async fn update(engine: &Engine, id: &str, n: usize, v: u64) {
    engine
        .execute(
            &officer(),
            id,
            CaseCommand::UpdateCaseFile {
                changes: CaseFile::from_json(personal(n, v)).unwrap(),
            },
            CommandContext::default(),
        )
        .await
        .unwrap();
}

/// Appends per second over one window of `WRITERS` concurrent writers.
async fn appends(engine: &Engine) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (engine, stop, done) = (engine.clone(), Arc::clone(&stop), Arc::clone(&done));
        tasks.push(tokio::spawn(async move {
            let id = format!("W-{w}");
            let mut v = 1;
            while !stop.load(Ordering::Relaxed) {
                update(&engine, &id, w, v).await;
                done.fetch_add(1, Ordering::Relaxed);
                v += 1;
            }
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(WINDOW).await;
    stop.store(true, Ordering::Relaxed);
    let n = done.load(Ordering::Relaxed);
    let elapsed = started.elapsed();
    for t in tasks {
        t.await.unwrap();
    }
    n as f64 / elapsed.as_secs_f64()
}

/// The p50 of replaying case `V-1` from the log, in microseconds.
async fn view_p50(engine: &Engine) -> f64 {
    let who = officer();
    let mut times = Vec::with_capacity(VIEW_SAMPLES);
    for _ in 0..VIEW_SAMPLES {
        let started = Instant::now();
        engine.load_without_snapshot(&who, "V-1").await.unwrap();
        times.push(started.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// `erase_subject` of one suspect among `cases` cases: the call, and the
/// time until the rebuilt views caught up.
async fn erase(cases: usize) -> (Duration, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), true).await;
    let mut last = None;
    for n in 0..cases {
        let mut request = OpenCase::new("burglary", CaseFile::from_json(personal(n, 0)).unwrap());
        request.case_id = Some(format!("E-{n}").parse().unwrap());
        last = engine
            .open_case(&officer(), request)
            .await
            .unwrap()
            .position;
    }
    engine
        .wait_for_projections(&officer(), last.unwrap(), Duration::from_secs(600))
        .await
        .unwrap();
    let rm = Principal::new(kent(), "rm-1").with_roles([RECORDS_ROLE]);
    let subject = engine
        .subject_id(&rm, &format!("{:-<32}", format!("PNC-{:08}", cases / 2)))
        .await
        .unwrap();
    let started = Instant::now();
    engine
        .erase_subject(
            &rm,
            EraseSubject {
                subject,
                basis: ErasureBasis::Infringement,
                review: None,
            },
        )
        .await
        .unwrap();
    let erased = started.elapsed();
    // The next command's position: the rebuilt views must pass it.
    let outcome = engine
        .execute(
            &officer(),
            "E-0",
            CaseCommand::UpdateCaseFile {
                changes: CaseFile::from_json(json!({"summary": "after"})).unwrap(),
            },
            CommandContext::default(),
        )
        .await
        .unwrap();
    engine
        .wait_for_projections(
            &officer(),
            outcome.position.unwrap(),
            Duration::from_secs(600),
        )
        .await
        .unwrap();
    let rebuilt = started.elapsed();
    engine.shutdown().await.unwrap();
    (erased, rebuilt)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sealed_dir = tempfile::tempdir().unwrap();
    let plain_dir = tempfile::tempdir().unwrap();
    let (sealed, plain) = rt.block_on(async {
        let sealed = engine(sealed_dir.path(), true).await;
        let plain = engine(plain_dir.path(), false).await;
        for e in [&sealed, &plain] {
            for w in 0..WRITERS {
                open(e, &format!("W-{w}"), w).await;
            }
            open(e, "V-1", 1).await;
            for v in 1..VIEW_EVENTS as u64 {
                update(e, "V-1", 1, v).await;
            }
        }
        (sealed, plain)
    });

    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut group = c.benchmark_group("records");
    let who = officer();
    for (name, engine) in [("replay_sealed", &sealed), ("replay_plain", &plain)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(engine.load_without_snapshot(&who, "V-1"))
                    .unwrap()
            })
        });
    }
    group.finish();
    c.final_summary();

    let (mut sealed_rate, mut plain_rate) = (0.0, 0.0);
    for _ in 0..2 {
        sealed_rate += rt.block_on(appends(&sealed));
        plain_rate += rt.block_on(appends(&plain));
    }
    let (sealed_view, plain_view) =
        rt.block_on(async { (view_p50(&sealed).await, view_p50(&plain).await) });
    rt.block_on(async {
        sealed.shutdown().await.unwrap();
        plain.shutdown().await.unwrap();
    });
    let cases = std::env::var("RECORDS_BENCH_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ERASE_CASES);
    let (erased, rebuilt) = rt.block_on(erase(cases));

    println!(
        "records: encrypted appends {:.0} ev/s, {:.0}% of plain appends",
        sealed_rate / 2.0,
        100.0 * sealed_rate / plain_rate
    );
    println!(
        "records: case view with decryption p50 {sealed_view:.0} us, plain p50 {plain_view:.0} us"
    );
    println!(
        "records: erase one subject in {cases} cases {} ms (views rebuilt and caught up after {} ms)",
        erased.as_millis(),
        rebuilt.as_millis()
    );
}
