//! Crash test for orchestration: a child process opens cases whose service
//! tasks call an in-process service and an external system (a worker in the
//! child leases those jobs and completes only some), and whose deadlines
//! fall due within a fraction of a second; the parent SIGKILLs it with
//! invocations, leased jobs and timers pending, restarts the engine on the
//! same directory and checks that every invocation completes and every
//! timer fires — each exactly once in the log.
//!
//! The child is this same test binary, re-run with `CASEBOOK_ORCH_CHILD_DIR`
//! set and filtered to `orchestration_child`; without that variable the
//! child test returns at once.

use std::future::Future;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use casebook::case::{CaseEvent, CaseFile};
use casebook::definition::Format;
use casebook::engine::{EngineConfig, OpenCase};
use casebook::log::codec::DomainEvent;
use casebook::log::{Direction, GlobalPosition, StreamId, StreamVersion, TenantId};
use casebook::orchestration::{
    async_trait, ActivateJobs, BusinessService, ServiceContext, ServiceContract, ServiceError,
    ServiceRegistry, ServiceValues, WORKER_ROLE,
};
use casebook::security::Principal;
use casebook::Engine;

/// The tenants these tests use, registered when the engine first needs its
/// tenant registry (calls for any other tenant are refused).
fn registered() -> casebook::engine::EngineConfig {
    casebook::engine::EngineConfig::with_tenants(
        ["kent"].map(|t| TenantId::new(t).expect("valid tenant")),
    )
}

/// The platform administrator: the only caller of the engine's unscoped
/// store and projection host.
fn platform_admin() -> casebook::security::Principal {
    casebook::security::Principal::platform_administrator("ops")
}

const CHILD_ENV: &str = "CASEBOOK_ORCH_CHILD_DIR";

const DEFINITION: &str = r#"
key = "crashy"
name = "Crashy"
version = 1
[retention]
group = "group3"
[permissions]
open = ["officer"]

[[services]]
name = "local.slow"
[[services]]
name = "remote.system"

[[activities]]
key = "local"
name = "Local call"
kind = "service_task"
service = "local.slow"
retry = { backoff = "PT1S" }

[[activities]]
key = "remote"
name = "Remote call"
kind = "service_task"
service = "remote.system"

[[activities]]
key = "work"
name = "Work"
kind = "human_task"
roles = ["officer"]

[[deadlines]]
key = "soon"
within = "PT1S"
escalate = [{ notify = ["supervisor"] }]
"#;

fn kent() -> TenantId {
    TenantId::new("kent").unwrap()
}

fn officer() -> Principal {
    Principal::new(kent(), "pc-1").with_roles(["officer"])
}

/// An in-process service that takes a little while (so kills land during
/// calls) and fails now and then (so retries are pending too).
struct Slow;

#[async_trait]
impl BusinessService for Slow {
    fn name(&self) -> &str {
        "local.slow"
    }
    fn contract(&self) -> ServiceContract {
        ServiceContract::new()
    }
    async fn invoke(
        &self,
        ctx: &ServiceContext,
        _input: ServiceValues,
    ) -> Result<ServiceValues, ServiceError> {
        tokio::time::sleep(Duration::from_millis(5 + u64::from(ctx.invocation.0 % 20))).await;
        if ctx.attempt == 1
            && ctx
                .case_id
                .bytes()
                .map(u32::from)
                .sum::<u32>()
                .is_multiple_of(3)
        {
            return Err(ServiceError::retryable("flaky"));
        }
        Ok(ServiceValues::new())
    }
}

fn config() -> EngineConfig {
    EngineConfig {
        services: ServiceRegistry::new().with(Arc::new(Slow)),
        ..registered()
    }
}

#[test]
fn orchestration_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let engine = Engine::open_with(&dir, config()).expect("child opens engine");
        engine.start().await.unwrap();
        let admin = Principal::new(kent(), "admin").with_roles(["administrator"]);
        engine
            .deploy(&admin, DEFINITION, Format::Toml)
            .await
            .unwrap();
        println!("READY");
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let engine = engine.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    engine
                        .open_case(&officer(), OpenCase::new("crashy", CaseFile::new()))
                        .await
                        .unwrap();
                }
            }));
        }
        // A worker that leases every remote job but completes only every
        // other one: the rest stay leased when the process dies.
        let worker = Principal::new(kent(), "w").with_roles([WORKER_ROLE]);
        let request = ActivateJobs::new("remote.system", "w")
            .lease(Duration::from_secs(600))
            .wait(Duration::from_millis(50));
        let mut n = 0u64;
        loop {
            for job in engine.activate_jobs(&worker, &request).await.unwrap() {
                n += 1;
                if n.is_multiple_of(2) {
                    engine
                        .complete_job(&worker, &job.handle, ServiceValues::new())
                        .await
                        .unwrap();
                }
            }
        }
    });
}

fn run_child(dir: &std::path::Path, kill_after: Duration) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "orchestration_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().unwrap();
    let ready = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .any(|l| l.is_ok_and(|l| l.ends_with("READY")))
    });
    std::thread::sleep(kill_after);
    child.kill().expect("SIGKILL the child");
    assert!(!child.wait().unwrap().success(), "the child was killed");
    assert!(ready.join().unwrap(), "the child never got going");
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..3_000 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Every case stream and its events.
async fn cases(engine: &Engine) -> Vec<(StreamId, Vec<CaseEvent>)> {
    let store = engine.store(&platform_admin()).unwrap();
    let mut streams = std::collections::BTreeSet::new();
    let mut at = GlobalPosition::START;
    loop {
        let page = store.read_all(&kent(), at, 5_000).await.unwrap();
        for e in &page {
            if e.stream.category() == "case" {
                streams.insert(e.stream.clone());
            }
        }
        match page.last() {
            Some(e) if page.len() == 5_000 => at = e.position,
            _ => break,
        }
    }
    let mut out = Vec::new();
    for s in streams {
        let events = store
            .read_stream(&s, Direction::Forward, StreamVersion::START, 10_000)
            .await
            .unwrap()
            .iter()
            .map(|r| CaseEvent::from_recorded(r).unwrap())
            .collect();
        out.push((s, events));
    }
    out
}

fn count(events: &[CaseEvent], pred: impl Fn(&CaseEvent) -> bool) -> usize {
    events.iter().filter(|e| pred(e)).count()
}

#[test]
fn after_sigkill_every_invocation_job_and_timer_completes_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rng = fastrand::Rng::with_seed(0x0c4a5 ^ u64::from(std::process::id()));
    for round in 0..3 {
        run_child(dir.path(), Duration::from_millis(rng.u64(600..1_500)));
        rt.block_on(async {
            let engine = Engine::open_with(dir.path(), config()).expect("reopen after SIGKILL");
            engine.start().await.unwrap();
            // A worker finishes the remote jobs: the ones leased when the
            // child died come back (their leases died with it).
            let worker = Principal::new(kent(), "w2").with_roles([WORKER_ROLE]);
            let request = ActivateJobs::new("remote.system", "w2")
                .max_jobs(100)
                .wait(Duration::from_millis(50));
            eventually(&format!("round {round}: all done"), || async {
                for job in engine.activate_jobs(&worker, &request).await.unwrap() {
                    // Another report may have landed meanwhile: refused, not doubled.
                    let _ = engine
                        .complete_job(&worker, &job.handle, ServiceValues::new())
                        .await;
                }
                cases(&engine).await.iter().all(|(_, events)| {
                    let done = count(events, |e| {
                        matches!(e, CaseEvent::ServiceInvocationCompleted { .. })
                    });
                    let fired = count(events, |e| matches!(e, CaseEvent::DeadlineMissed { .. }));
                    done == 2 && fired == 1
                })
            })
            .await;
            let all = cases(&engine).await;
            assert!(all.len() > 5, "round {round}: the child opened cases");
            for (stream, events) in &all {
                for inv in 1..=2u32 {
                    assert_eq!(
                        count(events, |e| matches!(
                            e,
                            CaseEvent::ServiceInvocationCompleted { invocation, .. } if invocation.0 == inv
                        )),
                        1,
                        "round {round}: {stream} invocation {inv}"
                    );
                }
                assert_eq!(
                    count(events, |e| matches!(e, CaseEvent::EscalationNotified { .. })),
                    1,
                    "round {round}: {stream} escalated once"
                );
                // The case replays.
                engine.load(&officer(), stream.id()).await.unwrap();
            }
            engine.shutdown().await.unwrap();
        });
    }
}
