//! `orchestration`: service invocations per second through a no-op
//! in-process service (requested -> invoked -> completed, durably) against
//! raw durable appends of the same events in the same run; the firing delay
//! of 10,000 pending deadline timers; external job workers' throughput and
//! activate-complete round trip.
//!
//! ```text
//! cargo bench --bench orchestration
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use casebook::case::{CaseEvent, CaseFile, DeadlineDue};
use casebook::definition::Format;
use casebook::engine::{EngineConfig, OpenCase};
use casebook::log::codec::DomainEvent;
use casebook::log::{
    ActorId, EventData, EventStore, ExpectedVersion, GlobalPosition, LogStore, Metadata, Source,
    StreamId, SubscriptionStart, TenantId,
};
use casebook::orchestration::{
    async_trait, ActivateJobs, BusinessService, ServiceContext, ServiceContract, ServiceError,
    ServiceRegistry, ServiceValues, WORKER_ROLE,
};
use casebook::security::Principal;
use casebook::Engine;
use criterion::{Criterion, Throughput};

/// The platform administrator: the only caller of the engine's unscoped
/// store and projection host.
fn platform_admin() -> casebook::security::Principal {
    casebook::security::Principal::platform_administrator("ops")
}

/// Raw streams made so far (each raw "case" is a new stream).
static RAW_STREAMS: AtomicU64 = AtomicU64::new(0);

/// Callers opening cases (and raw writers) at once.
const CALLERS: usize = 16;
/// Cases each caller opens per iteration.
const CASES_PER_CALLER: usize = 4;
/// Timers pending at once.
const TIMERS: usize = 10_000;
/// Jobs external workers take.
const JOBS: usize = 2_000;
/// External workers.
const WORKERS: usize = 4;
/// How long after its case opens a timer falls due (`within` of `TIMED`).
const TIMER_LEAD: Duration = Duration::from_secs(20);

const DEFINITION: &str = r#"
key = "bench"
name = "Bench"
version = 1
autocomplete = true
[retention]
group = "group3"
[permissions]
open = ["officer"]

[[services]]
name = "noop"

[[activities]]
key = "call"
name = "Call"
kind = "service_task"
service = "noop"
"#;

const EXTERNAL: &str = r#"
key = "external"
name = "External"
version = 1
autocomplete = true
[retention]
group = "group3"
[permissions]
open = ["officer"]

[[services]]
name = "ext.noop"

[[activities]]
key = "call"
name = "Call"
kind = "service_task"
service = "ext.noop"
"#;

const TIMED: &str = r#"
key = "timed"
name = "Timed"
version = 1
[retention]
group = "group3"
[permissions]
open = ["officer"]

[[activities]]
key = "work"
name = "Work"
kind = "human_task"
roles = ["officer"]

[[deadlines]]
key = "soon"
within = "PT20S"
escalate = [{ raise_priority = "high" }]
"#;

struct Noop;

#[async_trait]
impl BusinessService for Noop {
    fn name(&self) -> &str {
        "noop"
    }
    fn contract(&self) -> ServiceContract {
        ServiceContract::new()
    }
    async fn invoke(
        &self,
        _ctx: &ServiceContext,
        _input: ServiceValues,
    ) -> Result<ServiceValues, ServiceError> {
        Ok(ServiceValues::new())
    }
}

fn dir() -> tempfile::TempDir {
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-tmp");
    std::fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(base).unwrap()
}

fn tenant() -> TenantId {
    TenantId::new("kent").unwrap()
}

fn officer() -> Principal {
    Principal::new(tenant(), "pc-1").with_roles(["officer"])
}

async fn head(store: &dyn EventStore) -> GlobalPosition {
    let mut at = GlobalPosition::START;
    loop {
        let page = store.read_all(&tenant(), at, 10_000).await.unwrap();
        match page.last() {
            Some(e) if page.len() == 10_000 => at = e.position,
            Some(e) => return e.position,
            None => return at,
        }
    }
}

/// Opens `n` cases of `case_type` from [`CALLERS`] callers.
async fn open_cases(engine: &Engine, case_type: &'static str, n: usize) {
    let mut tasks = Vec::new();
    for c in 0..CALLERS {
        let engine = engine.clone();
        let share = n / CALLERS + usize::from(c < n % CALLERS);
        tasks.push(tokio::spawn(async move {
            for _ in 0..share {
                engine
                    .open_case(&officer(), OpenCase::new(case_type, CaseFile::new()))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Waits until `n` events of `event_type` follow `from`; returns every
/// event seen (the events of the run).
async fn wait_for(
    store: &dyn EventStore,
    from: GlobalPosition,
    event_type: &str,
    n: usize,
) -> Vec<casebook::log::RecordedEvent> {
    let mut sub = store
        .subscribe_all(tenant(), SubscriptionStart::After(from))
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut found = 0;
    while found < n {
        let e = sub.next().await.unwrap();
        if &*e.event_type == event_type {
            found += 1;
        }
        seen.push(e.detach());
    }
    seen
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

type Tally = Arc<Mutex<Vec<(&'static str, u64, Duration)>>>;

/// One invocation's case as appended: events per append, and in all.
type Shape = Arc<Mutex<Option<(Vec<usize>, usize)>>>;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let engine_dir = dir();
    let config = EngineConfig {
        services: ServiceRegistry::new().with(Arc::new(Noop)),
        tenants: vec![tenant()],
        ..EngineConfig::default()
    };
    let engine = Engine::open_with(engine_dir.path(), config).unwrap();
    let admin = Principal::new(tenant(), "admin").with_roles(["administrator"]);
    rt.block_on(async {
        engine.start().await.unwrap();
        for d in [DEFINITION, EXTERNAL, TIMED] {
            engine.deploy(&admin, d, Format::Toml).await.unwrap();
        }
    });
    let raw_dir = dir();
    let raw = LogStore::open(raw_dir.path()).unwrap();
    let tally: Tally = Arc::default();
    // Events per case, measured in the first engine iteration: (appends, events).
    let shape: Shape = Arc::default();

    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let per_iter = CALLERS * CASES_PER_CALLER;
    let mut group = c.benchmark_group("orchestration");
    group.throughput(Throughput::Elements(per_iter as u64));
    group.bench_function("invocations_noop_service", |b| {
        b.iter_custom(|iters| {
            let n = iters as usize * per_iter;
            let (elapsed, events) = rt.block_on(async {
                let store = engine.store(&platform_admin()).unwrap();
                let from = head(&*store).await;
                let start = Instant::now();
                let waiter = {
                    let store = Arc::clone(&store);
                    tokio::spawn(async move {
                        wait_for(&*store, from, "ServiceInvocationCompleted", n).await
                    })
                };
                open_cases(&engine, "bench", n).await;
                let seen = waiter.await.unwrap();
                (start.elapsed(), seen)
            });
            let mut shape = shape.lock().unwrap();
            if shape.is_none() {
                // One case's appends: its events grouped by append (the
                // events of one append share their metadata).
                let first = events[0].stream.clone();
                let mut appends: Vec<usize> = Vec::new();
                let mut last_meta = None;
                for e in events.iter().filter(|e| e.stream == first) {
                    if last_meta.as_ref() != Some(&e.metadata) {
                        appends.push(0);
                        last_meta = Some(Arc::clone(&e.metadata));
                    }
                    *appends.last_mut().unwrap() += 1;
                }
                let total = appends.iter().sum();
                *shape = Some((appends, total));
            }
            tally
                .lock()
                .unwrap()
                .push(("invocations", n as u64, elapsed));
            elapsed
        })
    });
    group.bench_function("raw_appends_same_events", |b| {
        b.iter_custom(|iters| {
            let (appends, _) = shape.lock().unwrap().clone().unwrap();
            let n = iters as usize * per_iter;
            let elapsed = rt.block_on(async {
                let start = Instant::now();
                let mut tasks = Vec::new();
                for w in 0..CALLERS {
                    let raw = raw.clone();
                    let appends = appends.clone();
                    let share = n / CALLERS + usize::from(w < n % CALLERS);
                    tasks.push(tokio::spawn(async move {
                        for _ in 0..share {
                            let id = format!("RAW-{}", RAW_STREAMS.fetch_add(1, Ordering::Relaxed));
                            let stream = StreamId::new(tenant(), "case", &id).unwrap();
                            for &events in &appends {
                                let meta =
                                    Metadata::new(ActorId::new("pc-1"), Source::system("bench"));
                                let batch = (0..events)
                                    .map(|_| EventData::new("Raw", vec![0x5a; 160], meta.clone()))
                                    .collect();
                                raw.append(&stream, ExpectedVersion::Any, batch)
                                    .await
                                    .unwrap();
                            }
                        }
                    }));
                }
                for t in tasks {
                    t.await.unwrap();
                }
                start.elapsed()
            });
            tally.lock().unwrap().push(("raw cases", n as u64, elapsed));
            elapsed
        })
    });
    group.finish();
    c.final_summary();

    // 10,000 pending timers, each due 20 s after its case opened: they fall
    // due at the rate the cases were opened (the baseline printed beside
    // the delays), all of them pending before the first does.
    let (p50, p99, opened_per_s) = rt.block_on(async {
        let store = engine.store(&platform_admin()).unwrap();
        let from = head(&*store).await;
        let waiter = {
            let store = Arc::clone(&store);
            tokio::spawn(async move { wait_for(&*store, from, "DeadlineMissed", TIMERS).await })
        };
        let opening = Instant::now();
        open_cases(&engine, "timed", TIMERS).await;
        let opened = opening.elapsed();
        assert!(
            opened < TIMER_LEAD,
            "every timer is pending before the first falls due"
        );
        let seen = waiter.await.unwrap();
        let mut due = std::collections::HashMap::new();
        let mut delays = Vec::new();
        for e in &seen {
            match &*e.event_type {
                "DeadlineSet" => {
                    if let Ok(CaseEvent::DeadlineSet {
                        due: DeadlineDue::At { due: at },
                        ..
                    }) = CaseEvent::from_recorded(e)
                    {
                        due.insert(e.stream.clone(), at);
                    }
                }
                "DeadlineMissed" => {
                    if let Some(at) = due.get(&e.stream) {
                        let micros = e.recorded.as_micros() - at.as_micros();
                        delays.push(micros as f64 / 1000.0);
                    }
                }
                _ => {}
            }
        }
        delays.sort_by(|a, b| a.total_cmp(b));
        assert_eq!(delays.len(), TIMERS, "every timer fired once");
        (
            percentile(&delays, 0.5),
            percentile(&delays, 0.99),
            TIMERS as f64 / opened.as_secs_f64(),
        )
    });

    // External workers: JOBS jobs waiting, WORKERS workers take them.
    let (rate, rt_p99) = rt.block_on(async {
        open_cases(&engine, "external", JOBS).await;
        // Let the projection hand every job over before timing.
        let store = engine.store(&platform_admin()).unwrap();
        let _ = head(&*store).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let start = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..WORKERS {
            let engine = engine.clone();
            tasks.push(tokio::spawn(async move {
                let me = Principal::new(tenant(), format!("worker-{w}")).with_roles([WORKER_ROLE]);
                let request = ActivateJobs::new("ext.noop", format!("worker-{w}"))
                    .max_jobs(32)
                    .wait(Duration::from_millis(200));
                let mut trips = Vec::new();
                loop {
                    let asked = Instant::now();
                    let jobs = engine.activate_jobs(&me, &request).await.unwrap();
                    if jobs.is_empty() {
                        break;
                    }
                    for job in jobs {
                        engine
                            .complete_job(&me, &job.handle, ServiceValues::new())
                            .await
                            .unwrap();
                        trips.push(asked.elapsed().as_secs_f64() * 1000.0);
                    }
                }
                trips
            }));
        }
        let mut trips = Vec::new();
        for t in tasks {
            trips.extend(t.await.unwrap());
        }
        let elapsed = start.elapsed();
        trips.sort_by(|a, b| a.total_cmp(b));
        assert_eq!(trips.len(), JOBS, "every job completed once");
        (
            JOBS as f64 / elapsed.as_secs_f64(),
            percentile(&trips, 0.99),
        )
    });

    let t = tally.lock().unwrap();
    let rate_of = |name: &str| {
        let (n, d) = t
            .iter()
            .filter(|x| x.0 == name)
            .fold((0u64, Duration::ZERO), |(n, d), x| (n + x.1, d + x.2));
        n as f64 / d.as_secs_f64()
    };
    // A criterion filter may have left out the invocation benches: their
    // line is printed only when both ran.
    let measured = |name: &str| t.iter().any(|x| x.0 == name);
    if let (Some((appends, per_case)), true) = (
        shape.lock().unwrap().clone(),
        measured("invocations") && measured("raw cases"),
    ) {
        let invocations = rate_of("invocations");
        let raw_cases = rate_of("raw cases");
        println!(
            "\norchestration summary: each invocation's case = {} appends, {per_case} events \
             ({appends:?}); raw: the same appends from {CALLERS} writers",
            appends.len()
        );
        println!(
            "orchestration: invocations {invocations:.0}/s through a no-op service, {:.1}% of raw appends",
            100.0 * invocations / raw_cases
        );
    }
    println!(
        "orchestration: {TIMERS} pending timers, firing delay p50 {p50:.1} ms, p99 {p99:.1} ms"
    );
    println!(
        "orchestration summary: the timers fell due as their cases were opened, \
         {opened_per_s:.0}/s"
    );
    println!(
        "orchestration: external jobs {rate:.0}/s, activate-complete round trip p99 {rt_p99:.1} ms"
    );
    drop(t);
    rt.block_on(engine.shutdown()).unwrap();
}
