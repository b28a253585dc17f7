//! The dispatcher: takes due invocations of in-process services from the
//! hub (`hub.rs`), invokes them with a per-attempt timeout, and records each
//! outcome through an idempotent engine command.
//!
//! - **Exactly once in the log.** The outcome command carries a command id
//!   derived from the invocation and the attempt
//!   (`svc.<invocation>.<attempt>`), so recording it again — after a lost
//!   reply, after a restart — appends nothing; an outcome for an attempt the
//!   case no longer waits for is refused by the case runtime.
//! - **At least once to the service.** A crash between the call and the
//!   recording calls again with the same idempotency key.
//! - **What the service sees and returns.** The context carries the task's
//!   marking and the tenant's resources; results the definition does not
//!   declare are dropped (a definition may leave out outputs it does not
//!   use), and what the service reports on `ServiceContext::disclosures`
//!   and `ServiceContext::alerts` is
//!   recorded with its answer.
//! - **Backoff.** A retryable failure schedules the next attempt at
//!   `backoff * 2^(attempt-1)` (at most `max_backoff`) plus up to a quarter
//!   more at random, recorded in the event (a durable timer: after a restart
//!   the attempt is still due then).
//! - **Timers.** It also fires running deadlines whose time has come
//!   (`CaseCommand::FireDeadline`, command id `timer.<deadline>.<instance>`,
//!   so a timer fires once however often it is tried): the deadline is
//!   missed and its escalations run in the same append. Likewise wait
//!   steps (`CaseCommand::FireWait`, command id `wait.<instance>`): the step
//!   completes and what waits for it follows in the same append. Overdue
//!   timers found at start (rebuilt from the projection's rows) fire at
//!   once.
//! - Up to [`MAX_IN_FLIGHT`] invocations run at once; with nothing due, the
//!   dispatcher sleeps until the next due time or [`TICK`], whichever is
//!   sooner (so a hand-moved `ManualClock` is noticed within a tick).

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::hub::{Hub, PendingJob, Timed, TimerKey};
use super::service::ServiceContext;
use crate::case::{CaseCommand, CaseError, ServiceOutcome, SYSTEM_ROLE};
use crate::engine::{CommandContext, CommandId, Engine, EngineError, Inner};
use crate::log::{Source, TenantId, Timestamp};
use crate::security::{Classification, Principal};

/// Invocations in flight at once.
pub const MAX_IN_FLIGHT: usize = 256;

/// The longest the dispatcher sleeps without looking at the clock.
pub const TICK: Duration = Duration::from_millis(20);

/// The subject the orchestration layer acts as.
pub const ORCHESTRATOR: &str = "casebook-orchestrator";

/// The principal the orchestration layer records outcomes as: the
/// tenant's `casebook_system`, cleared for everything.
pub(crate) fn system_principal(tenant: &TenantId) -> Principal {
    Principal::new(tenant.clone(), ORCHESTRATOR)
        .with_roles([SYSTEM_ROLE])
        .with_clearance(Classification::TopSecret)
}

/// The command id an attempt's outcome is recorded with.
pub(crate) fn outcome_command_id(job: &PendingJob) -> CommandId {
    // Only digits, letters and dots: always a valid command id.
    CommandId::new(format!("svc.{}.{}", job.invocation.0, job.attempt))
        .unwrap_or_else(|_| CommandId::random())
}

/// When the attempt after `attempt` (from 1) may start, with jitter.
pub(crate) fn retry_at(now: Timestamp, job: &PendingJob) -> Timestamp {
    let r = &job.request;
    let shift = job.attempt.saturating_sub(1).min(32);
    let base = r
        .backoff_ms
        .saturating_mul(1u64 << shift)
        .min(r.max_backoff_ms.max(1));
    let jitter = if base >= 4 {
        (uuid::Uuid::new_v4().as_u128() % u128::from(base / 4 + 1)) as u64
    } else {
        0
    };
    now + Duration::from_millis(base.saturating_add(jitter))
}

/// Records an attempt's outcome. `Ok(false)`: the case no longer waits for
/// this attempt (nothing to do).
pub(crate) async fn record(
    engine: &Engine,
    job: &PendingJob,
    outcome: ServiceOutcome,
    reason: String,
) -> Result<bool, EngineError> {
    let context = CommandContext::because(reason)
        .with_command_id(outcome_command_id(job))
        .with_source(Source::system("casebook-orchestration"));
    let command = CaseCommand::RecordServiceOutcome {
        invocation: job.invocation,
        attempt: job.attempt,
        outcome,
    };
    match engine
        .execute(
            &system_principal(&job.tenant),
            &job.case_id,
            command,
            context,
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(EngineError::Case(
            CaseError::UnknownInvocation { .. }
            | CaseError::StaleAttempt { .. }
            | CaseError::CaseClosed { .. }
            | CaseError::CaseSuspended,
        ))
        | Err(EngineError::UnknownCase { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether the case still waits for this attempt.
async fn wanted(engine: &Engine, job: &PendingJob) -> bool {
    // A state kept from a recent command that waits for it settles it
    // without a load (a kept state can only be older, never newer).
    if engine.cached_wants(&job.tenant, &job.case_id, job.invocation, job.attempt) {
        return true;
    }
    match engine
        .load_unaudited(&system_principal(&job.tenant), &job.case_id)
        .await
    {
        Ok(loaded) => loaded
            .state
            .invocations
            .iter()
            .any(|p| p.invocation == job.invocation && p.attempt == job.attempt),
        // Unable to tell (a store error): try, the case runtime decides.
        Err(_) => true,
    }
}

/// What the dispatcher needs to know of the case for one invocation: the
/// marking of what it may carry (see [`ServiceContext::marking`]) and the
/// outputs the definition declares for the service (`None`: unknown).
/// TOP SECRET when the case cannot be read, so that a service that
/// discloses errs on the safe side.
async fn facts(engine: &Engine, job: &PendingJob) -> (Classification, Option<BTreeSet<String>>) {
    match engine
        .load_unaudited(&system_principal(&job.tenant), &job.case_id)
        .await
    {
        Ok(loaded) => {
            let def = &loaded.definition;
            let marking = def
                .markings()
                .item(job.item.as_str())
                .max(loaded.state.classification);
            let declared = def
                .services
                .iter()
                .find(|s| s.name.as_str() == job.request.service.as_str())
                .map(|s| s.outputs.keys().cloned().collect());
            (marking, declared)
        }
        Err(_) => (Classification::TopSecret, None),
    }
}

async fn invoke(engine: Engine, hub: Arc<Hub>, job: PendingJob) {
    let key = job.key();
    if !wanted(&engine, &job).await {
        hub.forget(&key, job.attempt);
        return;
    }
    let Some(service) = hub
        .registry()
        .find(&job.tenant, job.request.service.as_str())
    else {
        return;
    };
    let timeout = Duration::from_millis(job.request.timeout_ms.max(1));
    let (marking, declared) = facts(&engine, &job).await;
    let started = engine.now();
    let ctx = ServiceContext {
        tenant: job.tenant.clone(),
        case_id: job.case_id.clone(),
        item: job.item.clone(),
        invocation: job.invocation,
        attempt: job.attempt,
        idempotency_key: format!("{}/{}/{}", job.tenant, job.case_id, job.invocation),
        deadline: started + timeout,
        marking,
        resources: engine.tenant_resources(&job.tenant),
        disclosures: Default::default(),
        alerts: Default::default(),
    };
    let result =
        tokio::time::timeout(timeout, service.invoke(&ctx, job.request.input.clone())).await;
    let now = engine.now();
    let (outcome, reason) = match result {
        Ok(Ok(mut output)) => (
            ServiceOutcome::Completed {
                output: {
                    // A definition may leave out outputs it does not use
                    // (the contract check allows it): drop them here, so
                    // the case runtime sees only what it declared.
                    if let Some(declared) = &declared {
                        output.retain(|k, _| declared.contains(k));
                    }
                    output
                },
                disclosures: ctx.disclosures.take(),
                alerts: ctx.alerts.take(),
            },
            format!("{} answered", job.request.service),
        ),
        Ok(Err(e)) => {
            let retry = e.is_retryable().then(|| retry_at(now, &job));
            (
                ServiceOutcome::Failed {
                    error: e.to_string(),
                    retry_at: retry,
                },
                format!("{} failed", job.request.service),
            )
        }
        Err(_) => (
            ServiceOutcome::Failed {
                error: format!("attempt timed out after {} ms", timeout.as_millis()),
                retry_at: Some(retry_at(now, &job)),
            },
            format!("{} timed out", job.request.service),
        ),
    };
    match record(&engine, &job, outcome, reason).await {
        Ok(true) => {}
        Ok(false) => hub.forget(&key, job.attempt),
        // Not recorded (the store is failing, the engine is stopping):
        // the attempt is due again shortly; its id keeps it single.
        Err(_) => hub.release(&key, job.attempt, now + Duration::from_secs(1)),
    }
}

/// Fires a deadline's or a wait step's timer (once: its command id).
async fn fire(engine: Engine, hub: Arc<Hub>, key: TimerKey) {
    let instance = key
        .instance
        .map_or_else(|| "case".to_string(), |i| i.0.to_string());
    // Keys are identifiers and instances numbers: always a valid id.
    let (command_id, reason, command) = match &key.timer {
        Timed::Deadline(deadline) => (
            format!("timer.{deadline}.{instance}"),
            format!("deadline {deadline} passed"),
            CaseCommand::FireDeadline {
                deadline: deadline.clone(),
                instance: key.instance,
            },
        ),
        Timed::Wait(item) => match key.instance {
            Some(instance) => (
                format!("wait.{}", instance.0),
                format!("wait step {item} has waited its time"),
                CaseCommand::FireWait { instance },
            ),
            // A wait step always has an instance: nothing to fire.
            None => return hub.forget_timer(&key),
        },
    };
    let command_id = CommandId::new(command_id).unwrap_or_else(|_| CommandId::random());
    let context = CommandContext::because(reason)
        .with_command_id(command_id)
        .with_source(Source::system("casebook-orchestration"));
    match engine
        .execute(
            &system_principal(&key.tenant),
            &key.case_id,
            command,
            context,
        )
        .await
    {
        // Fired, or nothing to fire any more: either way the projection
        // will say the timer is gone.
        Ok(_) | Err(EngineError::Case(_)) | Err(EngineError::UnknownCase { .. }) => {
            hub.forget_timer(&key)
        }
        Err(_) => hub.release_timer(&key, engine.now() + Duration::from_secs(1)),
    }
}

/// The dispatcher task: runs until `stop` turns true, then waits for the
/// invocations in flight.
pub(crate) async fn run(engine: Weak<Inner>, hub: Arc<Hub>, mut stop: watch::Receiver<bool>) {
    let mut running = JoinSet::new();
    loop {
        if *stop.borrow() {
            break;
        }
        let Some(inner) = engine.upgrade() else { break };
        let engine_now = Engine::from_inner(inner);
        let now = engine_now.now();
        let room = MAX_IN_FLIGHT.saturating_sub(running.len());
        let (jobs, next_job) = hub.take_due(now, room);
        for job in jobs {
            running.spawn(invoke(engine_now.clone(), Arc::clone(&hub), job));
        }
        let room = MAX_IN_FLIGHT.saturating_sub(running.len());
        let (timers, next_timer) = hub.take_due_timers(now, room);
        for (key, _) in timers {
            running.spawn(fire(engine_now.clone(), Arc::clone(&hub), key));
        }
        let next = match (next_job, next_timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        drop(engine_now);
        let wait = match next {
            Some(t) if t > now => t.duration_since(now).map_or(TICK, |d| d.min(TICK)),
            // Due now but no room: a finishing invocation wakes us.
            Some(_) if running.len() >= MAX_IN_FLIGHT => TICK,
            Some(_) => Duration::ZERO,
            None => TICK,
        };
        tokio::select! {
            _ = hub.local_work.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
            Some(_) = running.join_next(), if !running.is_empty() => {}
        }
    }
    while running.join_next().await.is_some() {}
}
