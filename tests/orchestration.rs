//! Orchestration end to end on the embedded store: in-process services
//! with retries, backoff, timeouts, final failure, incidents and the retry
//! command; external job workers competing for jobs and losing expired
//! leases; pending work surviving a restart; bad input refused with typed
//! errors (never a panic).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use casebook::case::{CaseCommand, CaseEvent, CaseFile, InvocationId, ItemRef};
use casebook::definition::{FieldType, Format};
use casebook::engine::{CommandContext, EngineConfig, EngineError, OpenCase};
use casebook::log::{Direction, StreamId, StreamVersion, TenantId};
use casebook::orchestration::{
    async_trait, ActivateJobs, BusinessService, OrchestrationError, ServiceContext,
    ServiceContract, ServiceError, ServiceRegistry, ServiceValues, WORKER_ROLE,
};
use casebook::projection::query::PageRequest;
use casebook::projection::Consistency;
use casebook::rules::serde_json::json;
use casebook::rules::ItemState;
use casebook::security::Principal;
use casebook::time::{ManualClock, Timestamp};
use casebook::{Engine, ErrorKind};

/// The tenants these tests use, registered when the engine first needs its
/// tenant registry (calls for any other tenant are refused).
fn registered() -> casebook::engine::EngineConfig {
    casebook::engine::EngineConfig::with_tenants(
        ["kent", "essex"].map(|t| TenantId::new(t).expect("valid tenant")),
    )
}

/// The platform administrator: the only caller of the engine's unscoped
/// store and projection host.
fn platform_admin() -> casebook::security::Principal {
    casebook::security::Principal::platform_administrator("ops")
}

/// A referral case: a risk score from an in-process service, a crime
/// number from an external system (its workers).
const REFERRAL: &str = r#"
key = "referral"
name = "Referral"
version = 1
[retention]
group = "group3"
[permissions]
open = ["officer"]
update_case_file = ["officer"]

[[fields]]
key = "vulnerable"
type = "boolean"
[[fields]]
key = "risk"
type = "text"
[[fields]]
key = "crime_number"
type = "text"

[[services]]
name = "risk.score"
[services.inputs]
vulnerable = { type = "boolean", required = true }
[services.outputs]
risk = { type = "text" }

[[services]]
name = "crime.allocate"
[services.outputs]
crime_number = { type = "text" }

[[activities]]
key = "score"
name = "Score the risk"
kind = "service_task"
service = "risk.score"
input = { vulnerable = "vulnerable" }
output = { risk = "risk" }
required = true
retry = { max_attempts = 3, timeout = "PT2S", backoff = "PT10S", max_backoff = "PT1M" }

[[activities]]
key = "allocate"
name = "Allocate a crime number"
kind = "service_task"
service = "crime.allocate"
output = { crime_number = "crime_number" }
required = true

[[activities]]
key = "review"
name = "Review"
kind = "human_task"
roles = ["officer"]
required = true
"#;

fn kent() -> TenantId {
    TenantId::new("kent").unwrap()
}

fn admin() -> Principal {
    Principal::new(kent(), "admin-1").with_roles(["administrator"])
}

fn officer() -> Principal {
    Principal::new(kent(), "pc-1").with_roles(["officer"])
}

fn worker(name: &str) -> Principal {
    Principal::new(kent(), name).with_roles([WORKER_ROLE])
}

fn start_time() -> Timestamp {
    // Monday 2 November 2026, 09:00 UTC.
    Timestamp::from_micros(1_793_610_000_000_000)
}

/// How a scripted service answers each call, in order (then the last).
#[derive(Clone, Debug)]
enum Answer {
    Ok(ServiceValues),
    Retryable,
    Permanent,
    Hang,
}

/// A test service following a script; it records every call.
struct Scripted {
    name: &'static str,
    contract: ServiceContract,
    script: Mutex<Vec<Answer>>,
    calls: Mutex<Vec<(String, u32)>>,
}

impl Scripted {
    fn risk(script: Vec<Answer>) -> Arc<Self> {
        Arc::new(Scripted {
            name: "risk.score",
            contract: ServiceContract::new()
                .input("vulnerable", FieldType::Boolean, true)
                .output("risk", FieldType::Text),
            script: Mutex::new(script),
            calls: Mutex::new(Vec::new()),
        })
    }

    fn calls(&self) -> Vec<(String, u32)> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait]
impl BusinessService for Scripted {
    fn name(&self) -> &str {
        self.name
    }

    fn contract(&self) -> ServiceContract {
        self.contract.clone()
    }

    async fn invoke(
        &self,
        ctx: &ServiceContext,
        input: ServiceValues,
    ) -> Result<ServiceValues, ServiceError> {
        assert!(input.contains_key("vulnerable"), "the mapped input arrives");
        self.calls
            .lock()
            .unwrap()
            .push((ctx.idempotency_key.clone(), ctx.attempt));
        let answer = {
            let mut script = self.script.lock().unwrap();
            if script.len() > 1 {
                script.remove(0)
            } else {
                script[0].clone()
            }
        };
        match answer {
            Answer::Ok(out) => Ok(out),
            Answer::Retryable => Err(ServiceError::retryable("scoring system unavailable")),
            Answer::Permanent => Err(ServiceError::permanent("no such person")),
            Answer::Hang => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(BTreeMap::new())
            }
        }
    }
}

fn risk(level: &str) -> Answer {
    Answer::Ok([("risk".to_string(), json!(level))].into())
}

/// An engine with the referral definition deployed, whose risk scorer
/// answers "standard", on a manual clock at [`start_time`] (returned).
async fn referrals_scored_standard(dir: &std::path::Path) -> (Engine, ManualClock) {
    let clock = ManualClock::new(start_time());
    let scorer = Scripted::risk(vec![risk("standard")]);
    let engine = engine_with(dir, &clock, ServiceRegistry::new().with(scorer)).await;
    engine
        .deploy(&admin(), REFERRAL, Format::Toml)
        .await
        .unwrap();
    (engine, clock)
}

async fn engine_with(
    dir: &std::path::Path,
    clock: &ManualClock,
    services: ServiceRegistry,
) -> Engine {
    let config = EngineConfig {
        clock: Arc::new(clock.clone()),
        services,
        ..registered()
    };
    let engine = Engine::open_with(dir, config).unwrap();
    engine.start().await.unwrap();
    engine
}

async fn open_referral(engine: &Engine) -> String {
    engine
        .open_case(
            &officer(),
            OpenCase::new(
                "referral",
                CaseFile::from_json(json!({ "vulnerable": true })).unwrap(),
            ),
        )
        .await
        .unwrap()
        .case_id
        .to_string()
}

/// Polls `check` (real time) until it holds, for up to 20 seconds.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..2_000 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

async fn case_events(engine: &Engine, case_id: &str) -> Vec<CaseEvent> {
    let stream = StreamId::new(kent(), "case", case_id).unwrap();
    let recorded = engine
        .store(&platform_admin())
        .unwrap()
        .read_stream(&stream, Direction::Forward, StreamVersion::START, 10_000)
        .await
        .unwrap();
    recorded
        .iter()
        .map(|r| {
            use casebook::log::codec::DomainEvent;
            CaseEvent::from_recorded(r).unwrap()
        })
        .collect()
}

fn count(events: &[CaseEvent], pred: impl Fn(&CaseEvent) -> bool) -> usize {
    events.iter().filter(|e| pred(e)).count()
}

async fn state_of(engine: &Engine, case_id: &str, item: &str) -> Option<ItemState> {
    let view = engine.view(&officer(), case_id).await.unwrap();
    view.items
        .iter()
        .rev()
        .find(|i| i.item.as_str() == item)
        .map(|i| i.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_service_is_retried_with_backoff_then_fails_with_an_incident_that_a_retry_resolves()
{
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start_time());
    let service = Scripted::risk(vec![
        Answer::Retryable,
        Answer::Retryable,
        Answer::Retryable,
        risk("high"),
    ]);
    let engine = engine_with(
        dir.path(),
        &clock,
        ServiceRegistry::new().with(service.clone()),
    )
    .await;
    engine
        .deploy(&admin(), REFERRAL, Format::Toml)
        .await
        .unwrap();
    let case_id = open_referral(&engine).await;

    // Attempt 1 fails; attempt 2 waits for its backoff (10 s, plus at most
    // a quarter) by the engine's clock.
    eventually("attempt 1 failed", || async {
        let s = engine.load(&officer(), &case_id).await.unwrap().state;
        s.invocations.first().is_some_and(|p| p.attempt == 2)
    })
    .await;
    let pending = engine
        .load(&officer(), &case_id)
        .await
        .unwrap()
        .state
        .invocations[0]
        .clone();
    let wait = pending.not_before.duration_since(start_time()).unwrap();
    assert!(
        wait >= Duration::from_secs(10) && wait <= Duration::from_millis(12_500),
        "backoff {wait:?}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(service.calls().len(), 1, "not retried before its time");

    clock.advance(Duration::from_millis(12_600));
    eventually("attempt 2 failed", || async {
        let s = engine.load(&officer(), &case_id).await.unwrap().state;
        s.invocations.first().is_some_and(|p| p.attempt == 3)
    })
    .await;
    let pending = engine
        .load(&officer(), &case_id)
        .await
        .unwrap()
        .state
        .invocations[0]
        .clone();
    let wait = pending
        .not_before
        .duration_since(clock.now_for_test())
        .unwrap();
    assert!(
        wait >= Duration::from_secs(20) && wait <= Duration::from_secs(25),
        "backoff doubles: {wait:?}"
    );

    clock.advance(Duration::from_secs(26));
    eventually("the last attempt failed", || async {
        state_of(&engine, &case_id, "score").await == Some(ItemState::Failed)
    })
    .await;
    let calls = service.calls();
    assert_eq!(
        calls.iter().map(|c| c.1).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "three attempts, each once"
    );
    assert!(
        calls.iter().all(|c| c.0 == calls[0].0),
        "one idempotency key for every attempt"
    );

    // The incident is on the case and in the tenant's incident query.
    let view = engine.view(&officer(), &case_id).await.unwrap();
    assert_eq!(view.incidents.len(), 1);
    assert_eq!(view.incidents[0].attempts, 3);
    assert!(view.incidents[0]
        .error
        .contains("scoring system unavailable"));
    let incidents = engine
        .incidents(
            &officer(),
            PageRequest::default(),
            Consistency::at_least(
                engine
                    .position_token(&platform_admin(), &kent(), engine_head(&engine).await)
                    .unwrap(),
            ),
        )
        .await
        .unwrap()
        .items;
    assert_eq!(incidents.len(), 1);
    assert_eq!(incidents[0].case_id, case_id);
    assert_eq!(incidents[0].service, "risk.score");
    // Another tenant sees none.
    let essex = Principal::new(TenantId::new("essex").unwrap(), "x").with_roles(["officer"]);
    assert!(engine
        .incidents(&essex, PageRequest::default(), Consistency::Eventual)
        .await
        .unwrap()
        .items
        .is_empty());

    // Retrying: a new invocation, which succeeds this time.
    let retried = engine
        .execute(
            &admin(),
            &case_id,
            CaseCommand::RetryIncident {
                invocation: InvocationId(1),
            },
            CommandContext::because("scoring system is back"),
        )
        .await
        .unwrap();
    assert!(engine
        .view(&officer(), &case_id)
        .await
        .unwrap()
        .incidents
        .is_empty());
    eventually("the retried task completed", || async {
        state_of(&engine, &case_id, "score").await == Some(ItemState::Completed)
    })
    .await;
    let view = engine.view(&officer(), &case_id).await.unwrap();
    assert_eq!(view.case_file.get("risk"), Some(&json!("high")));
    let events = case_events(&engine, &case_id).await;
    assert_eq!(
        count(&events, |e| matches!(
            e,
            CaseEvent::ServiceAttemptFailed { .. }
        )),
        2
    );
    assert_eq!(
        count(&events, |e| matches!(
            e,
            CaseEvent::ServiceInvocationFailed { .. }
        )),
        1
    );
    assert_eq!(
        count(&events, |e| matches!(
            e,
            CaseEvent::ServiceInvocationCompleted { .. }
        )),
        1
    );
    let incidents = engine
        .incidents(
            &officer(),
            PageRequest::default(),
            Consistency::after(&retried),
        )
        .await
        .unwrap()
        .items;
    assert!(incidents.is_empty(), "resolved: {incidents:?}");
    engine.shutdown().await.unwrap();
}

/// The log's head for this tenant (for read-your-writes on queries).
async fn engine_head(engine: &Engine) -> casebook::log::GlobalPosition {
    let batch = engine
        .store(&platform_admin())
        .unwrap()
        .read_all(&kent(), casebook::log::GlobalPosition::START, 10_000)
        .await
        .unwrap();
    batch.last().unwrap().position
}

trait NowForTest {
    fn now_for_test(&self) -> Timestamp;
}

impl NowForTest for ManualClock {
    fn now_for_test(&self) -> Timestamp {
        use casebook::time::Clock;
        self.now()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_that_outlives_its_timeout_fails_and_a_permanent_error_is_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start_time());
    let service = Scripted::risk(vec![Answer::Hang, Answer::Permanent]);
    let engine = engine_with(
        dir.path(),
        &clock,
        ServiceRegistry::new().with(service.clone()),
    )
    .await;
    engine
        .deploy(&admin(), REFERRAL, Format::Toml)
        .await
        .unwrap();
    let case_id = open_referral(&engine).await;
    // The timeout is 2 s of real time per attempt.
    eventually("the attempt timed out", || async {
        let s = engine.load(&officer(), &case_id).await.unwrap().state;
        s.invocations.first().is_some_and(|p| {
            p.attempt == 2
                && p.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("timed out"))
        })
    })
    .await;
    clock.advance(Duration::from_secs(60));
    eventually("the permanent error failed the task", || async {
        state_of(&engine, &case_id, "score").await == Some(ItemState::Failed)
    })
    .await;
    let view = engine.view(&officer(), &case_id).await.unwrap();
    assert_eq!(
        view.incidents[0].attempts, 2,
        "not retried after a permanent error"
    );
    assert!(view.incidents[0].error.contains("no such person"));
    clock.advance(Duration::from_secs(600));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(service.calls().len(), 2);
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn competing_workers_never_both_complete_a_job_and_an_expired_lease_is_reoffered() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, clock) = referrals_scored_standard(dir.path()).await;
    const CASES: usize = 24;
    let mut cases = Vec::new();
    for _ in 0..CASES {
        cases.push(open_referral(&engine).await);
    }

    // Two workers race for every job (a long poll each time).
    let completed = Arc::new(AtomicU32::new(0));
    let lost = Arc::new(AtomicU32::new(0));
    let mut workers = Vec::new();
    for name in ["worker-a", "worker-b"] {
        let engine = engine.clone();
        let completed = Arc::clone(&completed);
        let lost = Arc::clone(&lost);
        workers.push(tokio::spawn(async move {
            let me = worker(name);
            let request = ActivateJobs::new("crime.allocate", name)
                .max_jobs(5)
                .wait(Duration::from_millis(300));
            let mut idle = 0;
            while idle < 3 {
                let jobs = engine.activate_jobs(&me, &request).await.unwrap();
                if jobs.is_empty() {
                    idle += 1;
                    continue;
                }
                idle = 0;
                for job in jobs {
                    let output = [(
                        "crime_number".to_string(),
                        json!(format!("CR/{}", job.handle.case_id)),
                    )]
                    .into();
                    match engine.complete_job(&me, &job.handle, output).await {
                        Ok(()) => {
                            completed.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => {
                            assert!(matches!(
                                e.kind(),
                                ErrorKind::Conflict { .. } | ErrorKind::NotFound
                            ));
                            lost.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(completed.load(Ordering::SeqCst) as usize, CASES);
    for case_id in &cases {
        let events = case_events(&engine, case_id).await;
        let done = count(&events, |e| {
            matches!(e, CaseEvent::ServiceInvocationCompleted { .. })
        });
        // The scorer's and the allocation's: one each.
        assert_eq!(done, 2, "case {case_id}");
        assert_eq!(
            state_of(&engine, case_id, "allocate").await,
            Some(ItemState::Completed)
        );
    }

    // An expired lease: the job goes to the next worker, and the first
    // worker's report is refused.
    let case_id = open_referral(&engine).await;
    let a = worker("worker-a");
    let b = worker("worker-b");
    let lease = ActivateJobs::new("crime.allocate", "worker-a")
        .lease(Duration::from_secs(5))
        .wait(Duration::from_secs(5));
    let first = engine.activate_jobs(&a, &lease).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].handle.case_id, case_id);
    let none = engine
        .activate_jobs(&b, &ActivateJobs::new("crime.allocate", "worker-b"))
        .await
        .unwrap();
    assert!(none.is_empty(), "held while the lease runs");
    let extended = engine
        .extend_job_lease(&a, &first[0].handle, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(extended > first[0].lease_until);
    clock.advance(Duration::from_secs(11));
    let second = engine
        .activate_jobs(&b, &ActivateJobs::new("crime.allocate", "worker-b"))
        .await
        .unwrap();
    assert_eq!(second.len(), 1, "re-offered after the lease expired");
    let output: ServiceValues = [("crime_number".to_string(), json!("CR/1"))].into();
    let err = engine
        .complete_job(&a, &first[0].handle, output.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, OrchestrationError::LeaseLost { .. }), "{err}");
    engine
        .fail_job(&b, &second[0].handle, "allocation system down", true)
        .await
        .unwrap();
    // A retryable failure: offered again after its backoff.
    clock.advance(Duration::from_secs(2));
    let third = engine
        .activate_jobs(
            &b,
            &ActivateJobs::new("crime.allocate", "worker-b").wait(Duration::from_secs(5)),
        )
        .await
        .unwrap();
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].handle.attempt, 2);
    engine
        .complete_job(&b, &third[0].handle, output.clone())
        .await
        .unwrap();
    let err = engine
        .complete_job(&b, &third[0].handle, output)
        .await
        .unwrap_err();
    assert!(matches!(
        err.kind(),
        ErrorKind::NotFound | ErrorKind::Conflict { .. }
    ));
    let events = case_events(&engine, &case_id).await;
    assert_eq!(
        count(&events, |e| matches!(
            e,
            CaseEvent::ServiceInvocationCompleted { invocation, .. } if invocation.0 == 2
        )),
        1
    );
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_jobs_survive_a_restart_and_complete_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start_time());
    let case_id = {
        let engine = engine_with(dir.path(), &clock, ServiceRegistry::new()).await;
        engine
            .deploy(&admin(), REFERRAL, Format::Toml)
            .await
            .unwrap();
        let case_id = open_referral(&engine).await;
        // Leased, but the worker never reports: the engine stops.
        let jobs = engine
            .activate_jobs(
                &worker("w"),
                &ActivateJobs::new("crime.allocate", "w").wait(Duration::from_secs(5)),
            )
            .await
            .unwrap();
        assert_eq!(jobs.len(), 1);
        engine.shutdown().await.unwrap();
        case_id
    };
    let engine = engine_with(dir.path(), &clock, ServiceRegistry::new()).await;
    // Both service tasks' jobs are pending again (no scorer runs here).
    let mut seen = Vec::new();
    for service in ["crime.allocate", "risk.score"] {
        let jobs = engine
            .activate_jobs(
                &worker("w2"),
                &ActivateJobs::new(service, "w2").wait(Duration::from_secs(5)),
            )
            .await
            .unwrap();
        assert_eq!(jobs.len(), 1, "{service}");
        assert_eq!(jobs[0].handle.case_id, case_id);
        let output: ServiceValues = match service {
            "crime.allocate" => [("crime_number".to_string(), json!("CR/9"))].into(),
            _ => [("risk".to_string(), json!("high"))].into(),
        };
        engine
            .complete_job(&worker("w2"), &jobs[0].handle, output)
            .await
            .unwrap();
        seen.push(jobs[0].handle.clone());
    }
    let view = engine.view(&officer(), &case_id).await.unwrap();
    assert_eq!(view.case_file.get("crime_number"), Some(&json!("CR/9")));
    let events = case_events(&engine, &case_id).await;
    assert_eq!(
        count(&events, |e| matches!(
            e,
            CaseEvent::ServiceInvocationCompleted { .. }
        )),
        2
    );
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_typed_errors_and_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start_time());
    // The registered scorer returns a number where the contract says text.
    let bad_output = Scripted::risk(vec![Answer::Ok([("risk".to_string(), json!(7))].into())]);
    let engine = engine_with(
        dir.path(),
        &clock,
        ServiceRegistry::new().with(bad_output.clone()),
    )
    .await;

    // A definition declaring the registered service with another contract
    // is refused at deploy, naming the field.
    let mismatched = REFERRAL.replace(
        "risk = { type = \"text\" }",
        "risk = { type = \"text\" }\nscore = { type = \"integer\" }",
    );
    let err = engine
        .deploy(&admin(), &mismatched, Format::Toml)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::ServiceContractMismatch { service, .. } if service == "risk.score"),
        "{err}"
    );
    assert_eq!(
        err.kind(),
        ErrorKind::InvalidArgument {
            paths: vec!["services[0].outputs.score".into()]
        }
    );
    // A service task naming an undeclared service is an invalid definition.
    let unknown = REFERRAL.replace("service = \"risk.score\"", "service = \"risk.unknown\"");
    let err = engine
        .deploy(&admin(), &unknown, Format::Toml)
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::InvalidDefinition(_)), "{err}");
    assert!(
        err.to_string().contains("unknown service 'risk.unknown'"),
        "{err}"
    );
    // So is a retry policy out of range.
    let bad_retry = REFERRAL.replace("max_attempts = 3", "max_attempts = 0");
    let err = engine
        .deploy(&admin(), &bad_retry, Format::Toml)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("max_attempts"), "{err}");

    engine
        .deploy(&admin(), REFERRAL, Format::Toml)
        .await
        .unwrap();
    // Malformed output: the task fails with the reason on the case.
    let case_id = open_referral(&engine).await;
    eventually("the malformed output failed the task", || async {
        state_of(&engine, &case_id, "score").await == Some(ItemState::Failed)
    })
    .await;
    let view = engine.view(&officer(), &case_id).await.unwrap();
    assert!(
        view.incidents[0]
            .error
            .contains("malformed output: output 'risk'"),
        "{}",
        view.incidents[0].error
    );
    assert_eq!(
        bad_output.calls().len(),
        1,
        "a malformed output is not retried"
    );

    // A mapping that reads a missing field: failed at activation, no call.
    let opened = engine
        .open_case(
            &officer(),
            OpenCase::new("referral", CaseFile::from_json(json!({})).unwrap()),
        )
        .await
        .unwrap();
    let view = engine.view(&officer(), &opened.case_id).await.unwrap();
    assert!(view.incidents[0]
        .error
        .contains("required input 'vulnerable' has no value"));
    assert_eq!(view.incidents[0].attempts, 0);

    // Hand completion: administrators only, with a reason.
    let complete = CaseCommand::Complete {
        item: ItemRef::key("allocate"),
        outputs: CaseFile::from_json(json!({ "crime_number": "CR/HAND" })).unwrap(),
    };
    let err = engine
        .execute(
            &officer(),
            &case_id,
            complete.clone(),
            CommandContext::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::InvalidArgument { paths: vec![] },
        "{err}"
    );
    let err = engine
        .execute(
            &officer(),
            &case_id,
            complete.clone(),
            CommandContext::because("system down"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    let by_hand = engine
        .execute(
            &admin(),
            &case_id,
            complete,
            CommandContext::because("allocated by phone"),
        )
        .await
        .unwrap();
    // Workers see the cancellation once the projection has.
    engine
        .incidents(
            &officer(),
            PageRequest::default(),
            Consistency::after(&by_hand),
        )
        .await
        .unwrap();
    let events = case_events(&engine, &case_id).await;
    assert!(events
        .iter()
        .any(|e| matches!(e, CaseEvent::ServiceInvocationCancelled { .. })));

    // Job API misuse.
    let w = worker("w");
    for (request, field) in [
        (
            ActivateJobs::new("crime.allocate", "w").max_jobs(0),
            "max_jobs",
        ),
        (
            ActivateJobs::new("crime.allocate", "w").lease(Duration::ZERO),
            "lease",
        ),
        (
            ActivateJobs::new("crime.allocate", "w").wait(Duration::from_secs(3_600)),
            "wait",
        ),
        (ActivateJobs::new("not a name", "w"), "service"),
        (ActivateJobs::new("crime.allocate", ""), "worker"),
    ] {
        let err = engine.activate_jobs(&w, &request).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::invalid(field), "{err}");
    }
    let err = engine
        .activate_jobs(&w, &ActivateJobs::new("risk.score", "w"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, OrchestrationError::ServedInProcess { .. }),
        "{err}"
    );
    let err = engine
        .activate_jobs(&officer(), &ActivateJobs::new("crime.allocate", "w"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    let bogus = casebook::orchestration::JobHandle {
        case_id: "no-such-case".into(),
        invocation: InvocationId(1),
        attempt: 1,
        lease: 1,
    };
    let err = engine
        .complete_job(&w, &bogus, BTreeMap::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    // A worker of another tenant cannot reach kent's jobs.
    let jobs = engine
        .activate_jobs(
            &w,
            &ActivateJobs::new("crime.allocate", "w").wait(Duration::from_secs(2)),
        )
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1);
    let essex = Principal::new(TenantId::new("essex").unwrap(), "w").with_roles([WORKER_ROLE]);
    let err = engine
        .complete_job(&essex, &jobs[0].handle, BTreeMap::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    // A worker reporting an output the contract does not have fails the
    // task with the reason (not a panic, not a half-written case).
    let output: ServiceValues = [("wrong".to_string(), json!("x"))].into();
    engine
        .complete_job(&w, &jobs[0].handle, output)
        .await
        .unwrap();
    let view = engine.view(&officer(), &opened.case_id).await.unwrap();
    assert!(view.incidents.iter().any(|i| i
        .error
        .contains("'wrong' is not an output of service 'crime.allocate'")));
    engine.shutdown().await.unwrap();
}

/// A missing-person report: the first review is due in one working day,
/// escalating to a supervisor; the case is reviewed within an hour.
const MISPER: &str = r#"
key = "misper"
name = "Missing person"
version = 1
[retention]
group = "group3"
[permissions]
open = ["officer"]
update_case_file = ["officer"]
add_discretionary = ["supervisor"]

[[fields]]
key = "name"
type = "text"

[[activities]]
key = "review"
name = "First review"
kind = "human_task"
roles = ["officer"]
required = true
[[activities.deadlines]]
key = "first_review"
working_days = 1
escalate = [{ notify = ["supervisor"] }, { raise_priority = "urgent" }, { start = "supervisor_review" }]

[[activities]]
key = "supervisor_review"
name = "Supervisor review"
kind = "human_task"
roles = ["supervisor"]
discretionary = true

[[deadlines]]
key = "hourly_check"
within = "PT1H"
escalate = [{ raise_priority = "high" }]
"#;

/// Opens a case of `case_type` named `name`, and waits until the
/// orchestration projection has recorded its timers (so that a shutdown
/// right after leaves them in its rows).
async fn open_with_timers(engine: &Engine, case_type: &str, name: &str) -> String {
    let opened = engine
        .open_case(
            &officer(),
            OpenCase::new(
                case_type,
                CaseFile::from_json(json!({ "name": name })).unwrap(),
            ),
        )
        .await
        .unwrap();
    engine
        .incidents(
            &officer(),
            PageRequest::default(),
            Consistency::after(&opened),
        )
        .await
        .unwrap();
    opened.case_id.to_string()
}

fn at(y: i32, m: u8, d: u8, h: u8) -> Timestamp {
    let date = casebook::projection::calendar::Date::from_calendar_date(
        y,
        casebook::projection::calendar::Month::try_from(m).unwrap(),
        d,
    )
    .unwrap();
    let secs = date
        .with_hms(h, 0, 0)
        .unwrap()
        .assume_utc()
        .unix_timestamp();
    Timestamp::from_micros(secs * 1_000_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_fire_once_at_the_right_working_day_and_not_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // Thursday 25 March 2027; Easter: Good Friday 26th, Easter Monday 29th.
    let clock = ManualClock::new(at(2027, 3, 25, 9));
    let engine = engine_with(dir.path(), &clock, ServiceRegistry::new()).await;
    engine.deploy(&admin(), MISPER, Format::Toml).await.unwrap();
    let opened = engine
        .open_case(
            &officer(),
            OpenCase::new(
                "misper",
                CaseFile::from_json(json!({ "name": "A" })).unwrap(),
            ),
        )
        .await
        .unwrap();
    let case_id = opened.case_id.to_string();
    let missed = |events: &[CaseEvent], key: &str| {
        count(
            events,
            |e| matches!(e, CaseEvent::DeadlineMissed { deadline, .. } if deadline.as_str() == key),
        )
    };

    // The fixed one-hour deadline fires an hour later, and only it.
    clock.advance(Duration::from_secs(3_600 + 1));
    eventually("the hourly check fired", || async {
        missed(&case_events(&engine, &case_id).await, "hourly_check") == 1
    })
    .await;
    let state = engine.load(&officer(), &case_id).await.unwrap().state;
    assert_eq!(state.priority, Some(casebook::definition::Priority::High));

    // Over Easter: not on Good Friday, the weekend or Easter Monday.
    for day in [26, 27, 28, 29] {
        clock.set(at(2027, 3, day, 23));
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(
            missed(&case_events(&engine, &case_id).await, "first_review"),
            0,
            "fired on 2027-03-{day}"
        );
    }
    // One working day after Thursday 09:00 is Tuesday 09:00.
    clock.set(at(2027, 3, 30, 9) + Duration::from_secs(1));
    eventually("the first-review deadline fired", || async {
        missed(&case_events(&engine, &case_id).await, "first_review") == 1
    })
    .await;
    let events = case_events(&engine, &case_id).await;
    assert_eq!(
        count(
            &events,
            |e| matches!(e, CaseEvent::EscalationNotified { roles, .. } if roles[0].as_str() == "supervisor")
        ),
        1
    );
    assert_eq!(
        count(&events, |e| matches!(e, CaseEvent::PriorityRaised { .. })),
        2,
        "high, then urgent"
    );
    assert_eq!(
        state_of(&engine, &case_id, "supervisor_review").await,
        Some(ItemState::Active),
        "the escalation started the supervisor's review"
    );
    // Still overdue (not met) in the deadlines it runs.
    let state = engine.load(&officer(), &case_id).await.unwrap().state;
    assert!(state.deadlines.iter().all(|d| d.escalated));
    engine.shutdown().await.unwrap();
    drop(engine);

    // After a restart nothing fires again.
    clock.advance(Duration::from_secs(86_400 * 10));
    let engine = engine_with(dir.path(), &clock, ServiceRegistry::new()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = case_events(&engine, &case_id).await;
    assert_eq!(missed(&events, "first_review"), 1);
    assert_eq!(missed(&events, "hourly_check"), 1);
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_that_fell_due_while_the_engine_was_down_fires_once_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(at(2027, 1, 11, 9));
    let case_id = {
        let engine = engine_with(dir.path(), &clock, ServiceRegistry::new()).await;
        engine.deploy(&admin(), MISPER, Format::Toml).await.unwrap();
        let case_id = open_with_timers(&engine, "misper", "B").await;
        engine.shutdown().await.unwrap();
        case_id
    };
    clock.advance(Duration::from_secs(7_200));
    for round in 0..2 {
        let engine = engine_with(dir.path(), &clock, ServiceRegistry::new()).await;
        eventually("the overdue timer fired", || async {
            count(&case_events(&engine, &case_id).await, |e| {
                matches!(e, CaseEvent::DeadlineMissed { .. })
            }) == 1
        })
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let events = case_events(&engine, &case_id).await;
        assert_eq!(
            count(&events, |e| matches!(e, CaseEvent::DeadlineMissed { .. })),
            1,
            "round {round}"
        );
        engine.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_tasks_are_handed_over_without_waiting_out_the_projection_commit_interval() {
    // With a 600 s commit interval, a live orchestration runner that just
    // committed would hold a new service task for ten minutes unless the
    // append that asked for it rings the runner.
    let dir = tempfile::tempdir().unwrap();
    let scorer = Scripted::risk(vec![risk("standard")]);
    let config = EngineConfig {
        services: ServiceRegistry::new().with(scorer.clone()),
        projection_commit_interval: Duration::from_secs(600),
        ..registered()
    };
    let engine = Engine::open_with(dir.path(), config).unwrap();
    engine.start().await.unwrap();
    engine
        .deploy(&admin(), REFERRAL, Format::Toml)
        .await
        .unwrap();
    let me = worker("worker-a");
    let request = ActivateJobs::new("crime.allocate", "worker-a")
        .max_jobs(1)
        .wait(Duration::from_secs(20));
    for round in 0..3 {
        let case_id = open_referral(&engine).await;
        eventually(&format!("round {round}: the score was taken"), || async {
            state_of(&engine, &case_id, "score").await == Some(ItemState::Completed)
        })
        .await;
        let jobs =
            tokio::time::timeout(Duration::from_secs(20), engine.activate_jobs(&me, &request))
                .await
                .unwrap_or_else(|_| panic!("round {round}: no job offered in 20 s"))
                .unwrap();
        assert_eq!(jobs.len(), 1, "round {round}");
        assert_eq!(jobs[0].handle.case_id, case_id, "round {round}");
        let output = [("crime_number".to_string(), json!(format!("CR/{round}")))].into();
        engine
            .complete_job(&me, &jobs[0].handle, output)
            .await
            .unwrap();
    }
    assert_eq!(scorer.calls().len(), 3);
    engine.shutdown().await.unwrap();
}

/// Resumes a suspended case as the supervisor, and waits until `fired`
/// counts one timer fired on it.
async fn resume_until_fired(
    engine: &Engine,
    case_id: &str,
    what: &str,
    fired: impl Fn(&[CaseEvent]) -> usize,
) {
    engine
        .execute(
            &supervisor(),
            case_id,
            CaseCommand::Resume,
            CommandContext::because("still needed"),
        )
        .await
        .unwrap();
    eventually(what, || async {
        fired(&case_events(engine, case_id).await) == 1
    })
    .await;
}

/// The missing-person case with a supervisor who may suspend and resume it.
fn misper_suspendable() -> String {
    MISPER.replace(
        "add_discretionary = [\"supervisor\"]",
        "add_discretionary = [\"supervisor\"]\nsuspend = [\"supervisor\"]\nresume = [\"supervisor\"]",
    )
}

fn supervisor() -> Principal {
    Principal::new(kent(), "ps-1").with_roles(["supervisor"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_due_while_its_case_is_suspended_fires_once_when_the_case_resumes() {
    let dir = tempfile::tempdir().unwrap();
    // Monday 11 January 2027, 09:00: the hourly check is due at 10:00, the
    // first review (one working day) on Tuesday at 09:00.
    let clock = ManualClock::new(at(2027, 1, 11, 9));
    let engine = engine_with(dir.path(), &clock, ServiceRegistry::new()).await;
    engine
        .deploy(&admin(), &misper_suspendable(), Format::Toml)
        .await
        .unwrap();
    let opened = engine
        .open_case(
            &officer(),
            OpenCase::new(
                "misper",
                CaseFile::from_json(json!({ "name": "C" })).unwrap(),
            ),
        )
        .await
        .unwrap();
    let case_id = opened.case_id.to_string();
    engine
        .incidents(
            &officer(),
            PageRequest::default(),
            Consistency::after(&opened),
        )
        .await
        .unwrap();
    engine
        .execute(
            &supervisor(),
            &case_id,
            CaseCommand::Suspend,
            CommandContext::because("the subject was found; checking"),
        )
        .await
        .unwrap();
    let hourly = |events: &[CaseEvent]| {
        count(
            events,
            |e| matches!(e, CaseEvent::DeadlineMissed { deadline, .. } if deadline.as_str() == "hourly_check"),
        )
    };

    // Due while suspended: nothing fires, here or after a restart.
    clock.set(at(2027, 1, 11, 11));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hourly(&case_events(&engine, &case_id).await), 0);
    engine.shutdown().await.unwrap();
    drop(engine);
    let engine = engine_with(dir.path(), &clock, ServiceRegistry::new()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hourly(&case_events(&engine, &case_id).await), 0);

    // Resumed: it fires once, now, and only it (the review is not due).
    resume_until_fired(
        &engine,
        &case_id,
        "the hourly check fired on resume",
        hourly,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let events = case_events(&engine, &case_id).await;
    assert_eq!(hourly(&events), 1);
    assert_eq!(
        count(&events, |e| matches!(e, CaseEvent::DeadlineMissed { .. })),
        1,
        "the first review is not due before Tuesday"
    );
    let resumed_at = events
        .iter()
        .position(|e| matches!(e, CaseEvent::CaseResumed {}))
        .unwrap();
    let fired_at = events
        .iter()
        .position(|e| matches!(e, CaseEvent::DeadlineMissed { .. }))
        .unwrap();
    assert!(fired_at > resumed_at, "fired after the resume, not before");
    engine.shutdown().await.unwrap();
    drop(engine);

    // Not again after a restart.
    clock.set(at(2027, 1, 11, 12));
    let engine = engine_with(dir.path(), &clock, ServiceRegistry::new()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hourly(&case_events(&engine, &case_id).await), 1);
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_of_the_orchestration_projection_never_offers_finished_jobs_again() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start_time());
    let scorer = Scripted::risk(vec![risk("standard")]);
    let config = EngineConfig {
        clock: Arc::new(clock.clone()),
        services: ServiceRegistry::new().with(scorer.clone()),
        // Small batches: a rebuild replays history over many commits, so
        // a job's request and its completion land in different ones.
        projection_batch: 1,
        ..registered()
    };
    let engine = Engine::open_with(dir.path(), config).unwrap();
    engine.start().await.unwrap();
    engine
        .deploy(&admin(), REFERRAL, Format::Toml)
        .await
        .unwrap();
    const FINISHED: usize = 40;
    let mut cases = Vec::new();
    for _ in 0..FINISHED {
        cases.push(open_referral(&engine).await);
    }
    let a = worker("worker-a");
    let take = ActivateJobs::new("crime.allocate", "worker-a")
        .max_jobs(10)
        .lease(Duration::from_secs(3_000))
        .wait(Duration::from_secs(2));
    let mut done = 0;
    while done < FINISHED {
        let jobs = engine.activate_jobs(&a, &take).await.unwrap();
        assert!(!jobs.is_empty(), "{done} of {FINISHED} jobs offered");
        for job in jobs {
            let output = [("crime_number".to_string(), json!("CR/1"))].into();
            engine.complete_job(&a, &job.handle, output).await.unwrap();
            done += 1;
        }
    }
    // One job still pending, leased to worker A.
    let pending_case = open_referral(&engine).await;
    let held = engine.activate_jobs(&a, &take).await.unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].handle.case_id, pending_case);
    eventually("every score taken", || async {
        scorer.calls().len() == FINISHED + 1
    })
    .await;

    // Worker B waits for jobs all through the rebuild: there are none.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let engine = engine.clone();
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let b = worker("worker-b");
            let ask = ActivateJobs::new("crime.allocate", "worker-b")
                .max_jobs(100)
                .wait(Duration::from_millis(100));
            let mut offered = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                for job in engine.activate_jobs(&b, &ask).await.unwrap() {
                    offered.push(job.handle.case_id);
                }
            }
            offered
        })
    };
    let generation = |engine: Engine| async move {
        engine
            .projection_status(&admin())
            .await
            .unwrap()
            .into_iter()
            .find(|s| s.projection == "orchestration")
            .map(|s| {
                (
                    s.generation,
                    s.state == casebook::engine::TenantRunState::Live && s.rebuild.is_none(),
                )
            })
            .unwrap()
    };
    let (before, _) = generation(engine.clone()).await;
    engine
        .rebuild_projection(&admin(), "orchestration")
        .await
        .unwrap();
    eventually("the rebuilt generation serves", || async {
        let (now, live) = generation(engine.clone()).await;
        now > before && live
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let offered = watcher.await.unwrap();
    assert!(
        offered.is_empty(),
        "finished (or held) jobs offered again: {offered:?}"
    );
    assert_eq!(scorer.calls().len(), FINISHED + 1, "no score asked again");
    assert_eq!(engine.orchestration_backlog().invocations, 1);

    // The held job is still worker A's to complete.
    let output = [("crime_number".to_string(), json!("CR/2"))].into();
    engine
        .complete_job(&a, &held[0].handle, output)
        .await
        .unwrap();
    eventually("the last allocation recorded", || async {
        state_of(&engine, &pending_case, "allocate").await == Some(ItemState::Completed)
    })
    .await;
    assert_eq!(cases.len(), FINISHED);
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incidents_come_a_page_at_a_time_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start_time());
    let scorer = Scripted::risk(vec![Answer::Permanent]);
    let engine = engine_with(dir.path(), &clock, ServiceRegistry::new().with(scorer)).await;
    engine
        .deploy(&admin(), REFERRAL, Format::Toml)
        .await
        .unwrap();
    const CASES: usize = 5;
    let mut cases = std::collections::BTreeSet::new();
    for _ in 0..CASES {
        cases.insert(open_referral(&engine).await);
    }
    for case_id in &cases {
        eventually("the score failed for good", || async {
            !engine
                .view(&officer(), case_id)
                .await
                .unwrap()
                .incidents
                .is_empty()
        })
        .await;
    }
    let fresh = Consistency::at_least(
        engine
            .position_token(&platform_admin(), &kent(), engine_head(&engine).await)
            .unwrap(),
    );
    let mut seen = Vec::new();
    let mut offset = 0;
    let mut pages = 0;
    loop {
        let page = engine
            .incidents(&officer(), PageRequest { offset, limit: 2 }, fresh)
            .await
            .unwrap();
        pages += 1;
        assert!(page.items.len() <= 2);
        seen.extend(page.items.into_iter().map(|i| i.case_id));
        match page.next_offset {
            Some(next) => {
                assert_eq!(next, offset + 2);
                offset = next;
            }
            None => break,
        }
    }
    assert_eq!(pages, 3, "2 + 2 + 1");
    let unique: std::collections::BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), CASES, "each once: {seen:?}");
    assert_eq!(unique, cases);
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "by case id");
    // Past the end: empty, no next page.
    let past = engine
        .incidents(
            &officer(),
            PageRequest {
                offset: 10,
                limit: 2,
            },
            fresh,
        )
        .await
        .unwrap();
    assert!(past.items.is_empty() && past.next_offset.is_none());
    // Bad pages are typed errors.
    for bad in [
        PageRequest {
            offset: 0,
            limit: 0,
        },
        PageRequest {
            offset: 0,
            limit: casebook::projection::query::MAX_PAGE_SIZE + 1,
        },
    ] {
        let err = engine
            .incidents(&officer(), bad, Consistency::Eventual)
            .await
            .unwrap_err();
        assert!(
            matches!(err, casebook::projection::QueryError::PageSize { .. }),
            "{err:?}"
        );
    }
    // Another tenant's pages are empty.
    let essex = Principal::new(TenantId::new("essex").unwrap(), "x").with_roles(["officer"]);
    assert!(engine
        .incidents(&essex, PageRequest::default(), Consistency::Eventual)
        .await
        .unwrap()
        .items
        .is_empty());
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_that_works_easter_monday_has_its_deadline_fall_due_that_day() {
    let dir = tempfile::tempdir().unwrap();
    // Thursday 25 March 2027; Good Friday 26th, Easter Monday 29th.
    let clock = ManualClock::new(at(2027, 3, 25, 9));
    let engine = engine_with(dir.path(), &clock, ServiceRegistry::new()).await;
    engine.deploy(&admin(), MISPER, Format::Toml).await.unwrap();
    let easter_monday = casebook::projection::calendar::Date::from_calendar_date(
        2027,
        casebook::projection::calendar::Month::March,
        29,
    )
    .unwrap();
    let working = casebook::projection::calendar::WorkingCalendar::england_and_wales()
        .working_bank_holidays([easter_monday])
        .unwrap();
    // Only administrators set it.
    let err = engine
        .set_working_calendar(&officer(), &working, CommandContext::because("staffed"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err:?}");
    engine
        .set_working_calendar(&admin(), &working, CommandContext::because("staffed"))
        .await
        .unwrap();
    assert_eq!(engine.working_calendar(&admin()).await.unwrap(), working);
    let essex =
        Principal::new(TenantId::new("essex").unwrap(), "admin-2").with_roles(["administrator"]);
    assert_eq!(
        engine.working_calendar(&essex).await.unwrap(),
        casebook::projection::calendar::WorkingCalendar::england_and_wales(),
        "another tenant's calendar is its own"
    );
    let opened = engine
        .open_case(
            &officer(),
            OpenCase::new(
                "misper",
                CaseFile::from_json(json!({ "name": "D" })).unwrap(),
            ),
        )
        .await
        .unwrap();
    let case_id = opened.case_id.to_string();
    let review = |events: &[CaseEvent]| {
        count(
            events,
            |e| matches!(e, CaseEvent::DeadlineMissed { deadline, .. } if deadline.as_str() == "first_review"),
        )
    };
    // Not on Good Friday or over the weekend...
    for day in [26, 27, 28] {
        clock.set(at(2027, 3, day, 23));
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(review(&case_events(&engine, &case_id).await), 0, "{day}");
    }
    clock.set(at(2027, 3, 29, 8));
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(review(&case_events(&engine, &case_id).await), 0);
    // ...but on the Monday it works, at 09:00.
    clock.set(at(2027, 3, 29, 9) + Duration::from_secs(1));
    eventually("the review deadline fired on Easter Monday", || async {
        review(&case_events(&engine, &case_id).await) == 1
    })
    .await;
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_disclosures_are_recorded_on_the_case_with_its_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, _clock) = referrals_scored_standard(dir.path()).await;
    let case_id = open_referral(&engine).await;
    let me = worker("worker-a");
    let jobs = engine
        .activate_jobs(
            &me,
            &ActivateJobs::new("crime.allocate", "worker-a").wait(Duration::from_secs(10)),
        )
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1);
    let handle = &jobs[0].handle;
    let letter = casebook::case::DisclosureRecord {
        recipient: "Victim Support (Kent)".into(),
        what: "referral letter (fields: crime_number)".into(),
        why: "Victims' Code referral".into(),
        channel: "letter".into(),
    };
    let output: ServiceValues = [("crime_number".to_string(), json!("CR/77"))].into();

    // A blank field is refused, naming it; the lease still holds.
    let mut blank = letter.clone();
    blank.why = "  ".into();
    let err = engine
        .complete_job_disclosing(&me, handle, output.clone(), vec![letter.clone(), blank])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, OrchestrationError::Invalid { field, .. } if field == "disclosures[1].why"),
        "{err:?}"
    );
    let too_many = vec![letter.clone(); casebook::case::MAX_DISCLOSURES + 1];
    let err = engine
        .complete_job_disclosing(&me, handle, output.clone(), too_many)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, OrchestrationError::Invalid { field, .. } if field == "disclosures"),
        "{err:?}"
    );
    assert!(
        count(&case_events(&engine, &case_id).await, |e| {
            matches!(e, CaseEvent::DisclosureRecorded { .. })
        }) == 0
    );

    engine
        .complete_job_disclosing(&me, handle, output, vec![letter.clone()])
        .await
        .unwrap();
    let events = case_events(&engine, &case_id).await;
    let recorded: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            CaseEvent::DisclosureRecorded { disclosure, .. } => Some(disclosure.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(recorded, vec![letter]);
    // In the same append as the answer, just before it.
    let at = events
        .iter()
        .position(|e| matches!(e, CaseEvent::DisclosureRecorded { .. }))
        .unwrap();
    assert!(matches!(
        events[at + 1],
        CaseEvent::ServiceInvocationCompleted { .. }
    ));
    assert_eq!(
        state_of(&engine, &case_id, "allocate").await,
        Some(ItemState::Completed)
    );
    engine.shutdown().await.unwrap();
}

/// A victim update after a cooling-off period of two working days; the
/// supervisor may suspend and resume the case.
const COOLING_OFF: &str = r#"
key = "victim_update"
name = "Victim update"
version = 1
[retention]
group = "group3"
[permissions]
open = ["officer"]
suspend = ["supervisor"]
resume = ["supervisor"]

[[fields]]
key = "name"
type = "text"

[[activities]]
key = "cooling_off"
name = "Cooling off"
kind = "wait"
wait = { working_days = 2 }
required = true

[[activities]]
key = "update_victim"
name = "Update the victim"
kind = "human_task"
roles = ["officer"]
required = true
entry = [{ on = [{ completed = "cooling_off" }] }]
"#;

async fn open_cooling_off(engine: &Engine) -> String {
    engine
        .deploy(&admin(), COOLING_OFF, Format::Toml)
        .await
        .unwrap();
    open_with_timers(engine, "victim_update", "V").await
}

fn elapsed(events: &[CaseEvent]) -> usize {
    count(events, |e| matches!(e, CaseEvent::WaitElapsed { .. }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_of_working_days_ends_on_the_right_day_once_and_its_follow_up_becomes_available() {
    let dir = tempfile::tempdir().unwrap();
    // Thursday 25 March 2027, 09:00; Good Friday 26th, Easter Monday 29th:
    // two working days on is Wednesday 31 March, 09:00.
    let clock = ManualClock::new(at(2027, 3, 25, 9));
    let engine = engine_with(dir.path(), &clock, ServiceRegistry::new()).await;
    let case_id = open_cooling_off(&engine).await;
    let events = case_events(&engine, &case_id).await;
    assert!(events.iter().any(|e| matches!(e,
        CaseEvent::WaitStarted { item, due: casebook::case::DeadlineDue::WorkingDays { days: 2, .. }, .. }
            if item.as_str() == "cooling_off")));
    assert_eq!(
        state_of(&engine, &case_id, "cooling_off").await,
        Some(ItemState::Active)
    );
    // Nobody completes a wait by hand.
    let err = engine
        .execute(
            &officer(),
            &case_id,
            CaseCommand::Complete {
                item: ItemRef::key("cooling_off"),
                outputs: CaseFile::default(),
            },
            CommandContext::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(
        err.kind(),
        ErrorKind::PermissionDenied | ErrorKind::InvalidArgument { .. }
    ));

    // Not over Easter, and not a day early (Tuesday 30th, 23:00).
    for day in [26, 27, 28, 29, 30] {
        clock.set(at(2027, 3, day, 23));
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(
            elapsed(&case_events(&engine, &case_id).await),
            0,
            "ended on 2027-03-{day}"
        );
    }
    assert_eq!(
        state_of(&engine, &case_id, "update_victim").await,
        Some(ItemState::Available)
    );
    clock.set(at(2027, 3, 31, 9) + Duration::from_secs(1));
    eventually("the wait ended", || async {
        elapsed(&case_events(&engine, &case_id).await) == 1
    })
    .await;
    assert_eq!(
        state_of(&engine, &case_id, "cooling_off").await,
        Some(ItemState::Completed)
    );
    assert_eq!(
        state_of(&engine, &case_id, "update_victim").await,
        Some(ItemState::Active),
        "the follow-up entered once the wait completed"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(elapsed(&case_events(&engine, &case_id).await), 1);
    engine.shutdown().await.unwrap();
    drop(engine);

    // Not again after a restart (nor a second one).
    for _ in 0..2 {
        clock.advance(Duration::from_secs(86_400 * 10));
        let engine = engine_with(dir.path(), &clock, ServiceRegistry::new()).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(elapsed(&case_events(&engine, &case_id).await), 1);
        engine.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_due_while_the_engine_was_down_or_its_case_suspended_ends_once_afterwards() {
    let dir = tempfile::tempdir().unwrap();
    // Monday 11 January 2027, 09:00: due on Wednesday 13th, 09:00.
    let clock = ManualClock::new(at(2027, 1, 11, 9));
    let (running, suspended) = {
        let engine = engine_with(dir.path(), &clock, ServiceRegistry::new()).await;
        let running = open_cooling_off(&engine).await;
        let suspended = open_cooling_off(&engine).await;
        engine
            .execute(
                &supervisor(),
                &suspended,
                CaseCommand::Suspend,
                CommandContext::because("checking"),
            )
            .await
            .unwrap();
        engine.shutdown().await.unwrap();
        (running, suspended)
    };

    // Due while the engine was down: ends once at the next start, and not
    // again after another; the suspended case's ends once it resumes.
    clock.set(at(2027, 1, 13, 10));
    for round in 0..2 {
        let engine = engine_with(dir.path(), &clock, ServiceRegistry::new()).await;
        eventually("the overdue wait ended", || async {
            elapsed(&case_events(&engine, &running).await) == 1
        })
        .await;
        if round == 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(elapsed(&case_events(&engine, &suspended).await), 0);
            resume_until_fired(&engine, &suspended, "the resumed wait ended", elapsed).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        for case_id in [&running, &suspended] {
            assert_eq!(
                elapsed(&case_events(&engine, case_id).await),
                1,
                "round {round}"
            );
            assert_eq!(
                state_of(&engine, case_id, "update_victim").await,
                Some(ItemState::Active)
            );
        }
        engine.shutdown().await.unwrap();
    }
}

/// A missing-person report that alerts a queue named in the case file
/// (`target`) through `alert.raise`, with a message from `name` — or from
/// the SECRET `intel` in [`secret_alerts`].
const ALERTING: &str = r#"
key = "misper_alert"
name = "Missing person (alerting)"
version = 1
[retention]
group = "group3"
[permissions]
open = ["officer"]

[[fields]]
key = "name"
type = "text"
[[fields]]
key = "intel"
type = "text"
classification = "SECRET"
[[fields]]
key = "target"
type = "text"

[[services]]
name = "alert.raise"
[services.inputs]
template = { type = "text", required = true }
role = { type = "text" }
priority = { type = "text" }
name = { type = "text" }

[[activities]]
key = "alert_supervisor"
name = "Alert the supervisor"
kind = "service_task"
service = "alert.raise"
input = { template = "'high_risk'", role = "target", priority = "'urgent'", name = "name" }
retry = { max_attempts = 1 }

[[activities]]
key = "review"
name = "Supervisor review"
kind = "human_task"
roles = ["supervisor"]
required = true
"#;

fn secret_alerts() -> String {
    ALERTING
        .replace("key = \"misper_alert\"", "key = \"misper_alert_secret\"")
        .replace("name = \"name\" }", "name = \"intel\" }")
}

async fn alerting_engine(dir: &std::path::Path) -> Engine {
    use casebook::orchestration::builtin::{AlertConfig, AlertService};
    let alerts = AlertService::new().with_tenant(
        kent(),
        AlertConfig::new().with_role("supervisor").with_template(
            "high_risk",
            "High-risk missing person {{name}} ({{case_id}})",
        ),
    );
    let clock = ManualClock::new(start_time());
    let engine = engine_with(dir, &clock, ServiceRegistry::new().with(Arc::new(alerts))).await;
    engine
        .deploy(&admin(), ALERTING, Format::Toml)
        .await
        .unwrap();
    engine
        .deploy(&admin(), &secret_alerts(), Format::Toml)
        .await
        .unwrap();
    engine
}

async fn open_alerting(engine: &Engine, case_type: &str, target: &str) -> String {
    let file = json!({ "name": "Ann Smith", "intel": "Seen with Source X", "target": target });
    engine
        .open_case(
            &officer().with_clearance(casebook::security::Classification::Secret),
            OpenCase::new(case_type, CaseFile::from_json(file).unwrap()),
        )
        .await
        .unwrap()
        .case_id
        .to_string()
}

async fn alerts_for(
    engine: &Engine,
    who: &Principal,
) -> Vec<casebook::projection::query::WorkItem> {
    let q = casebook::projection::query::WorkQueueQuery {
        role: Some("supervisor".into()),
        ..Default::default()
    };
    let page = engine
        .work_queue(who, &q, Consistency::Eventual)
        .await
        .unwrap();
    page.items
        .into_iter()
        .filter(|w| w.alert.is_some())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_reaches_the_supervisors_queue_until_one_acknowledges_it() {
    let dir = tempfile::tempdir().unwrap();
    let engine = alerting_engine(dir.path()).await;
    let case_id = open_alerting(&engine, "misper_alert", "supervisor").await;
    eventually("the alert is in the supervisors' queue", || async {
        alerts_for(&engine, &supervisor()).await.len() == 1
    })
    .await;
    let item = alerts_for(&engine, &supervisor()).await.remove(0);
    let alert = item.alert.clone().unwrap();
    assert_eq!(item.case_id, case_id);
    assert_eq!(
        alert.message,
        format!("High-risk missing person Ann Smith ({case_id})")
    );
    assert_eq!(alert.priority, casebook::definition::Priority::Urgent);
    assert_eq!(
        state_of(&engine, &case_id, "alert_supervisor").await,
        Some(ItemState::Completed)
    );

    // Only the queue's members acknowledge it.
    let ack = CaseCommand::AcknowledgeAlert { alert: alert.alert };
    let err = engine
        .execute(&officer(), &case_id, ack.clone(), CommandContext::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    engine
        .execute(
            &supervisor(),
            &case_id,
            ack.clone(),
            CommandContext::default(),
        )
        .await
        .unwrap();
    eventually("the acknowledged alert left the queue", || async {
        alerts_for(&engine, &supervisor()).await.is_empty()
    })
    .await;
    let events = case_events(&engine, &case_id).await;
    assert_eq!(
        count(
            &events,
            |e| matches!(e, CaseEvent::AlertAcknowledged { by, .. } if by == "ps-1")
        ),
        1
    );
    // Once only.
    let err = engine
        .execute(&supervisor(), &case_id, ack, CommandContext::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::InvalidArgument { .. }),
        "{err}"
    );
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_to_an_unknown_queue_is_an_incident_and_a_secret_one_shows_only_to_the_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let engine = alerting_engine(dir.path()).await;
    let unknown = open_alerting(&engine, "misper_alert", "sergeant").await;
    let secret = open_alerting(&engine, "misper_alert_secret", "supervisor").await;
    eventually("the unknown role is an incident", || async {
        let view = engine.view(&officer(), &unknown).await.unwrap();
        view.incidents
            .iter()
            .any(|i| i.error.contains("unknown role 'sergeant'"))
    })
    .await;
    assert_eq!(
        state_of(&engine, &unknown, "alert_supervisor").await,
        Some(ItemState::Failed)
    );

    // The message carries a SECRET field: only a supervisor cleared for
    // it sees the alert.
    let cleared = supervisor().with_clearance(casebook::security::Classification::Secret);
    eventually("the secret alert is in the queue", || async {
        alerts_for(&engine, &cleared).await.len() == 1
    })
    .await;
    let seen = alerts_for(&engine, &cleared).await.remove(0);
    assert_eq!(seen.case_id, secret);
    assert!(seen.alert.unwrap().message.contains("Seen with Source X"));
    assert!(alerts_for(&engine, &supervisor()).await.is_empty());
    let hidden = CaseCommand::AcknowledgeAlert {
        alert: casebook::case::AlertId(1),
    };
    let err = engine
        .execute(&supervisor(), &secret, hidden, CommandContext::default())
        .await
        .unwrap_err();
    assert!(
        !err.to_string().contains("Source X"),
        "nothing of the message in {err}"
    );
    engine.shutdown().await.unwrap();
}

/// `who` completes `item` of `case_id` with `outputs`.
async fn complete(
    engine: &Engine,
    who: &Principal,
    case_id: &str,
    item: &str,
    outputs: casebook::rules::serde_json::Value,
) {
    engine
        .execute(
            who,
            case_id,
            CaseCommand::Complete {
                item: ItemRef::key(item),
                outputs: CaseFile::from_json(outputs).unwrap(),
            },
            CommandContext::default(),
        )
        .await
        .unwrap();
}

/// Opens a bundled missing-person case for `name` and grades it high risk.
async fn open_graded_high(
    engine: &Engine,
    handler: &Principal,
    response: &Principal,
    name: &str,
) -> String {
    let case_id = engine
        .open_case(
            handler,
            OpenCase::new(
                "missing_person",
                CaseFile::from_json(json!({
                    "missing_person": name,
                    "reporting_person": "P-2",
                    "last_seen_at": "2026-11-02T08:00:00Z",
                }))
                .unwrap(),
            ),
        )
        .await
        .unwrap()
        .case_id
        .to_string();
    complete(engine, handler, &case_id, "record_report", json!({})).await;
    let thrive = json!({
        "thrive_threat": "river nearby",
        "thrive_harm": "serious",
        "thrive_vulnerability": "dementia",
        "thrive_engagement": "none",
        "risk_level": "high",
    });
    complete(engine, response, &case_id, "thrive_assessment", thrive).await;
    case_id
}

/// The bundled missing-person definition under the services `casebook
/// serve` runs: a case graded high risk waits two hours; when the person
/// is not found by then, `alert.raise` puts an alert in the duty
/// inspector's queue. A person found in time ends the wait with no alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundled_missing_person_wait_elapses_and_alerts_the_duty_inspector_unless_found() {
    use casebook::case::{AlertQueue, CaseEvent as E};
    use casebook::security::Classification;

    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start_time());
    let services = casebook_service::server::builtin_services(
        &kent(),
        &casebook_service::config::EmailConfig::default(),
        dir.path(),
    );
    let engine = engine_with(dir.path(), &clock, services).await;
    let (_, source) = casebook_service::server::BUNDLED_DEFINITIONS
        .iter()
        .find(|(name, _)| *name == "missing-person.toml")
        .unwrap();
    engine.deploy(&admin(), source, Format::Toml).await.unwrap();
    let os = Classification::OfficialSensitive;
    let handler = Principal::new(kent(), "ch-1")
        .with_roles(["call_handler"])
        .with_clearance(os);
    let response = Principal::new(kent(), "pc-2")
        .with_roles(["response_officer"])
        .with_clearance(os);
    let lost = open_graded_high(&engine, &handler, &response, "P-1").await;
    let found = open_graded_high(&engine, &handler, &response, "P-3").await;
    for case_id in [&lost, &found] {
        let events = case_events(&engine, case_id).await;
        assert!(
            events
                .iter()
                .any(|e| matches!(e, E::WaitStarted { item, .. }
                if item.as_str() == "high_risk_two_hours")),
            "{events:?}"
        );
    }
    // P-3 is found within the two hours: the search ends, and the wait.
    engine
        .execute(
            &response,
            &found,
            CaseCommand::Start {
                item: ItemRef::key("record_found"),
            },
            CommandContext::default(),
        )
        .await
        .unwrap();
    complete(
        &engine,
        &response,
        &found,
        "record_found",
        json!({ "found": true, "found_at": "2026-11-02T09:30:00Z", "found_safe": true }),
    )
    .await;

    // Not a minute early.
    clock.advance(Duration::from_secs(2 * 3600 - 60));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(elapsed(&case_events(&engine, &lost).await), 0);
    clock.advance(Duration::from_secs(61));
    let alerted = |case_id: String| {
        let engine = engine.clone();
        async move {
            case_events(&engine, &case_id)
                .await
                .into_iter()
                .filter_map(|e| match e {
                    E::AlertRaised { record, .. } => Some(record),
                    _ => None,
                })
                .collect::<Vec<_>>()
        }
    };
    eventually("the duty inspector is alerted", || async {
        !alerted(lost.clone()).await.is_empty()
    })
    .await;
    let alerts = alerted(lost.clone()).await;
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].queue, AlertQueue::Role("duty_inspector".into()));
    assert_eq!(
        alerts[0].message,
        format!("{lost} needs attention: high-risk missing person not found within 2 hours")
    );
    let events = case_events(&engine, &lost).await;
    assert_eq!(elapsed(&events), 1);
    assert!(events
        .iter()
        .any(|e| matches!(e, E::ServiceInvocationCompleted { .. })));

    // The person found in time: the wait was cancelled, nothing fired.
    let events = case_events(&engine, &found).await;
    assert!(events.iter().any(|e| matches!(e, E::WaitCancelled { .. })));
    assert_eq!(elapsed(&events), 0);
    assert!(alerted(found.clone()).await.is_empty());
    engine.shutdown().await.unwrap();
}
