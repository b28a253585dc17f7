//! The `orchestration` projection: which service invocations are pending,
//! kept in its own rows by the projection runner (the same subscription,
//! batching and checkpoints as every read model), and handed to the
//! hub (`hub.rs`) once each batch has landed.
//!
//! It also keeps the running timers — deadlines' (a deadline's
//! `DeadlineSet` starts one; met, cancelled or missed ends it) and wait
//! steps' (`WaitStarted` starts one; `WaitElapsed` or `WaitCancelled` ends
//! it) — and the tenant's working-day calendar, which turns N working days
//! into an instant (a calendar change re-times the running ones), and the
//! open incidents that [`crate::Engine::incidents`] lists.
//!
//! Rows (values MessagePack): `j<case id>\0<invocation, 4 bytes BE>` -> the
//! pending job; `t<case id>\0d<deadline>\0<instance, 4 bytes BE>` -> a
//! running deadline's timer, `t<case id>\0w<item>\0<instance>` a wait
//! step's; `x<case id>\0<invocation>` -> an open incident; `c` -> the
//! calendar.
//!
//! - **Hand-over.** A handler made from the rows (at start, after a
//!   restart or a failed commit, a rebuild's new generation) gives the hub
//!   every pending job and running timer in its rows once it has caught up
//!   with the log (`Handler::caught_up`), so work survives restarts and
//!   overdue timers fire once. Until then it passes on only work that
//!   ended: a generation replaying history never offers a job or a timer
//!   that the log finished later (a rebuild re-offering finished jobs to
//!   workers was the bug). The dispatcher's commands are refused by a
//!   case that no longer waits, so work reported twice costs a look-up.
//! - **Suspended cases.** A case that is suspended refuses to fire its
//!   timers, and the dispatcher drops them; its `CaseResumed` hands the
//!   case's running timers over again, so one that fell due meanwhile
//!   fires once on resume (after a restart too: the rows are durable). A
//!   `PlanItemResumed` does the same for a suspended wait step, whose
//!   firing its suspension refused.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;

use super::hub::{Hub, JobKey, PendingJob, Timed, TimerKey};
use crate::calendar::{CalendarEvent, WorkingCalendar};
use crate::case::{CaseEvent, InvocationId};
use crate::log::codec::DomainEvent;
use crate::log::RecordedEvent;
use crate::projection::{Changes, Handler, HandlerError, Projection, Rows};

/// The projection's name.
pub const NAME: &str = "orchestration";

const P_JOB: u8 = b'j';
const P_INCIDENT: u8 = b'x';
const P_TIMER: u8 = b't';
const CALENDAR_KEY: &[u8] = b"c";

/// A running timer (a deadline's or a wait step's) as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct TimerRow {
    tenant: crate::log::TenantId,
    case_id: String,
    timer: Timed,
    instance: Option<crate::case::InstanceId>,
    due: crate::case::DeadlineDue,
}

impl TimerRow {
    fn key(&self) -> TimerKey {
        TimerKey {
            tenant: self.tenant.clone(),
            case_id: self.case_id.clone(),
            timer: self.timer.clone(),
            instance: self.instance,
        }
    }

    fn due_at(&self, calendar: &WorkingCalendar) -> crate::log::Timestamp {
        match self.due {
            crate::case::DeadlineDue::At { due } => due,
            crate::case::DeadlineDue::WorkingDays { days, from } => {
                calendar.add_working_days(from, days)
            }
        }
    }
}

fn timer_key(case_id: &str, timer: &Timed, instance: Option<crate::case::InstanceId>) -> Vec<u8> {
    let (tag, name) = match timer {
        Timed::Deadline(d) => (b'd', d.as_str()),
        Timed::Wait(item) => (b'w', item.as_str()),
    };
    let mut k = Vec::with_capacity(case_id.len() + name.len() + 8);
    k.push(P_TIMER);
    k.extend_from_slice(case_id.as_bytes());
    k.push(0);
    k.push(tag);
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    k.extend_from_slice(&instance.map_or(u32::MAX, |i| i.0).to_be_bytes());
    k
}

/// An open incident as the `orchestration` projection holds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IncidentEntry {
    /// The case.
    pub case_id: String,
    /// The failed invocation.
    pub invocation: InvocationId,
    /// The service task.
    pub item: crate::definition::ItemKey,
    /// The service.
    pub service: String,
    /// Attempts made.
    pub attempts: u32,
    /// What went wrong.
    pub error: String,
    /// When it failed.
    pub at: crate::log::Timestamp,
    /// The case's classification then (readers must be cleared for it).
    pub classification: crate::security::Classification,
}

fn incident_key(case_id: &str, invocation: InvocationId) -> Vec<u8> {
    let mut k = job_key(case_id, invocation);
    k[0] = P_INCIDENT;
    k
}

/// The open incidents in a tenant's `orchestration` rows, oldest case
/// first, that `principal` is cleared for.
pub(crate) fn incidents(
    rows: &Rows,
    principal: &crate::security::Principal,
) -> Result<Vec<IncidentEntry>, crate::projection::QueryError> {
    let mut out = Vec::new();
    for row in rows.scan_prefix(&[P_INCIDENT]) {
        let (_, value) = row?;
        let entry: IncidentEntry =
            rmp_serde::from_slice(&value).map_err(|e| crate::projection::QueryError::Damaged {
                what: format!("stored incident: {e}"),
            })?;
        if principal.may_see(entry.classification) {
            out.push(entry);
        }
    }
    Ok(out)
}

fn job_key(case_id: &str, invocation: InvocationId) -> Vec<u8> {
    let mut k = Vec::with_capacity(case_id.len() + 6);
    k.push(P_JOB);
    k.extend_from_slice(case_id.as_bytes());
    k.push(0);
    k.extend_from_slice(&invocation.0.to_be_bytes());
    k
}

/// See the module docs.
pub(crate) struct OrchestrationProjection {
    hub: Arc<Hub>,
}

impl OrchestrationProjection {
    pub(crate) fn new(hub: Arc<Hub>) -> Self {
        OrchestrationProjection { hub }
    }
}

impl Projection for OrchestrationProjection {
    fn name(&self) -> &str {
        NAME
    }

    fn version(&self) -> u32 {
        // 2: wait steps' timers (rows keyed by what they time).
        2
    }

    fn handler(&self, rows: Rows) -> Box<dyn Handler> {
        // Nothing is in flight for a new handler: reading now is allowed.
        // The rows go to the hub only once the handler has caught up with
        // the log (`Handler::caught_up`): until then they may hold work
        // the log has finished since.
        let calendar: WorkingCalendar = rows
            .get(CALENDAR_KEY)
            .ok()
            .flatten()
            .and_then(|v| rmp_serde::from_slice(&v).ok())
            .unwrap_or_default();
        let mut working_day_timers = BTreeMap::new();
        for row in rows.scan_prefix(&[P_TIMER]) {
            let Ok((key, value)) = row else { continue };
            if let Ok(timer) = rmp_serde::from_slice::<TimerRow>(&value) {
                if matches!(timer.due, crate::case::DeadlineDue::WorkingDays { .. }) {
                    working_day_timers.insert(key, timer);
                }
            }
        }
        Box::new(PendingHandler {
            rows,
            hub: Arc::clone(&self.hub),
            batch: BTreeMap::new(),
            incidents: BTreeMap::new(),
            timers: BTreeMap::new(),
            calendar,
            calendar_changed: false,
            working_day_timers,
            written: None,
            in_flight: VecDeque::new(),
            live: false,
        })
    }
}

type Batch = BTreeMap<Vec<u8>, (JobKey, Option<PendingJob>)>;

/// What a batch tells the hub once it has landed.
#[derive(Default)]
struct Landed {
    jobs: Batch,
    timers: Vec<(TimerKey, Option<crate::log::Timestamp>)>,
}

struct PendingHandler {
    rows: Rows,
    hub: Arc<Hub>,
    /// The batch in progress: row key -> the job's latest state.
    batch: Batch,
    /// Incident rows changed in the batch in progress.
    incidents: BTreeMap<Vec<u8>, Option<IncidentEntry>>,
    /// Timer rows changed in the batch in progress.
    timers: BTreeMap<Vec<u8>, (TimerKey, Option<TimerRow>)>,
    /// The tenant's working-day calendar (as of the batch in progress).
    calendar: WorkingCalendar,
    /// The batch changed the calendar.
    calendar_changed: bool,
    /// Running working-day timers (re-timed when the calendar changes), as
    /// of the batch in progress.
    working_day_timers: BTreeMap<Vec<u8>, TimerRow>,
    /// Written but not yet queued.
    written: Option<Landed>,
    /// Queued commits, oldest first, for the hub once they land.
    in_flight: VecDeque<Landed>,
    /// Caught up with the log once: from then on the hub hears of new
    /// work as it lands. Before, it hears only of work that ended — a
    /// generation replaying history (a rebuild), or catching up after a
    /// restart, would otherwise offer jobs and timers that finished later
    /// in the log — and gets every row when the handler catches up.
    live: bool,
}

impl PendingHandler {
    async fn current(&self, key: &[u8]) -> Result<Option<PendingJob>, HandlerError> {
        if let Some((_, job)) = self.batch.get(key) {
            return Ok(job.clone());
        }
        if let Some(b) = self.in_flight.iter().rev().find_map(|b| b.jobs.get(key)) {
            return Ok(b.1.clone());
        }
        self.rows.settled().await?;
        match self.rows.get(key)? {
            None => Ok(None),
            Some(v) => rmp_serde::from_slice(&v)
                .map(Some)
                .map_err(|e| HandlerError::decode("stored pending job", e)),
        }
    }

    /// Hands every pending job and running timer in the rows to the hub.
    fn hand_over_rows(&self) {
        for row in self.rows.scan_prefix(&[P_JOB]) {
            let Ok((_, value)) = row else { continue };
            if let Ok(job) = rmp_serde::from_slice::<PendingJob>(&value) {
                self.hub.update(job.key(), Some(job));
            }
        }
        for row in self.rows.scan_prefix(&[P_TIMER]) {
            let Ok((_, value)) = row else { continue };
            if let Ok(timer) = rmp_serde::from_slice::<TimerRow>(&value) {
                self.hub
                    .update_timer(timer.key(), Some(timer.due_at(&self.calendar)));
            }
        }
    }

    /// A timer started (in the batch in progress).
    fn timer_started(&mut self, timer: TimerRow) {
        let row = timer_key(&timer.case_id, &timer.timer, timer.instance);
        if matches!(timer.due, crate::case::DeadlineDue::WorkingDays { .. }) {
            self.working_day_timers.insert(row.clone(), timer.clone());
        }
        self.timers.insert(row, (timer.key(), Some(timer)));
    }

    /// A timer ended: fired, met, cancelled (in the batch in progress).
    fn timer_ended(&mut self, key: TimerKey) {
        let row = timer_key(&key.case_id, &key.timer, key.instance);
        self.working_day_timers.remove(&row);
        self.timers.insert(row, (key, None));
    }

    /// A case resumed: its running timers go to the hub again with this
    /// batch (the dispatcher dropped any that fell due while the case was
    /// suspended, as the case refused to fire them).
    async fn resumed(&mut self, case_id: &str) -> Result<(), HandlerError> {
        self.rows.settled().await?;
        let mut prefix = Vec::with_capacity(case_id.len() + 2);
        prefix.push(P_TIMER);
        prefix.extend_from_slice(case_id.as_bytes());
        prefix.push(0);
        for row in self.rows.scan_prefix(&prefix) {
            let (key, value) = row?;
            if self.timers.contains_key(&key) {
                continue;
            }
            let timer = rmp_serde::from_slice::<TimerRow>(&value)
                .map_err(|e| HandlerError::decode("stored timer", e))?;
            self.timers.insert(key, (timer.key(), Some(timer)));
        }
        Ok(())
    }
}

fn relevant(event_type: &str) -> bool {
    matches!(
        event_type,
        "ServiceInvocationRequested"
            | "ServiceAttemptFailed"
            | "ServiceInvocationCompleted"
            | "ServiceInvocationFailed"
            | "ServiceInvocationCancelled"
            | "IncidentRetried"
            | "DeadlineSet"
            | "DeadlineMet"
            | "DeadlineCancelled"
            | "DeadlineMissed"
            | "CaseResumed"
            | "WaitStarted"
            | "WaitElapsed"
            | "WaitCancelled"
            | "PlanItemResumed"
    )
}

/// Whether the projection hands `event` over to the dispatcher or to
/// workers as new work (an attempt to make, a timer to run, an incident
/// retried): the engine then rings its runner so the hand-off does not
/// wait out the commit interval ([`crate::engine::EngineConfig::projection_commit_interval`]).
pub(crate) fn hands_over_work(event: &CaseEvent) -> bool {
    matches!(
        event,
        CaseEvent::ServiceInvocationRequested { .. }
            | CaseEvent::ServiceAttemptFailed { .. }
            | CaseEvent::IncidentRetried { .. }
            | CaseEvent::DeadlineSet { .. }
            | CaseEvent::WaitStarted { .. }
    )
}

#[async_trait]
impl Handler for PendingHandler {
    async fn apply(&mut self, event: &RecordedEvent) -> Result<(), HandlerError> {
        if event.stream.category() == crate::calendar::CATEGORY {
            let what = || format!("calendar event {}", event.locator());
            let decoded =
                CalendarEvent::from_recorded(event).map_err(|e| HandlerError::decode(what(), e))?;
            self.calendar = WorkingCalendar::from_event(&decoded)
                .map_err(|e| HandlerError::decode(what(), e))?;
            self.calendar_changed = true;
            return Ok(());
        }
        if event.stream.category() != crate::streams::CASE || !relevant(&event.event_type) {
            return Ok(());
        }
        let decoded = CaseEvent::from_recorded(event)
            .map_err(|e| HandlerError::decode(format!("case event {}", event.locator()), e))?;
        let case_id = event.stream.id();
        let tenant = event.stream.tenant().clone();
        let key_of = |invocation| JobKey {
            tenant: tenant.clone(),
            case_id: case_id.to_string(),
            invocation,
        };
        match decoded {
            CaseEvent::ServiceInvocationRequested {
                invocation,
                item,
                request,
                not_before,
                ..
            } => {
                let job = PendingJob {
                    tenant: tenant.clone(),
                    case_id: case_id.to_string(),
                    invocation,
                    item,
                    request,
                    attempt: 1,
                    not_before,
                    classification: event.metadata.classification,
                };
                self.batch.insert(
                    job_key(case_id, invocation),
                    (key_of(invocation), Some(job)),
                );
            }
            CaseEvent::ServiceAttemptFailed {
                invocation,
                attempt,
                retry_at,
                ..
            } => {
                let row = job_key(case_id, invocation);
                if let Some(mut job) = self.current(&row).await? {
                    job.attempt = attempt + 1;
                    job.not_before = retry_at;
                    self.batch.insert(row, (key_of(invocation), Some(job)));
                }
            }
            CaseEvent::ServiceInvocationFailed {
                invocation,
                attempt,
                error,
            } => {
                let row = job_key(case_id, invocation);
                if let Some(job) = self.current(&row).await? {
                    let entry = IncidentEntry {
                        case_id: case_id.to_string(),
                        invocation,
                        item: job.item,
                        service: job.request.service.to_string(),
                        attempts: attempt,
                        error,
                        at: event.recorded,
                        classification: event.metadata.classification,
                    };
                    self.incidents
                        .insert(incident_key(case_id, invocation), Some(entry));
                }
                self.batch.insert(row, (key_of(invocation), None));
            }
            CaseEvent::DeadlineSet {
                deadline,
                instance,
                due,
                ..
            } => self.timer_started(TimerRow {
                tenant: tenant.clone(),
                case_id: case_id.to_string(),
                timer: Timed::Deadline(deadline),
                instance,
                due,
            }),
            CaseEvent::WaitStarted {
                instance,
                item,
                due,
            } => self.timer_started(TimerRow {
                tenant: tenant.clone(),
                case_id: case_id.to_string(),
                timer: Timed::Wait(item),
                instance: Some(instance),
                due,
            }),
            CaseEvent::DeadlineMet { deadline, instance }
            | CaseEvent::DeadlineCancelled { deadline, instance }
            | CaseEvent::DeadlineMissed { deadline, instance } => self.timer_ended(TimerKey {
                tenant: tenant.clone(),
                case_id: case_id.to_string(),
                timer: Timed::Deadline(deadline),
                instance,
            }),
            CaseEvent::WaitElapsed { instance, item }
            | CaseEvent::WaitCancelled { instance, item } => self.timer_ended(TimerKey {
                tenant: tenant.clone(),
                case_id: case_id.to_string(),
                timer: Timed::Wait(item),
                instance: Some(instance),
            }),
            CaseEvent::IncidentRetried { invocation, .. } => {
                self.incidents
                    .insert(incident_key(case_id, invocation), None);
            }
            CaseEvent::ServiceInvocationCompleted { invocation, .. }
            | CaseEvent::ServiceInvocationCancelled { invocation } => {
                self.batch
                    .insert(job_key(case_id, invocation), (key_of(invocation), None));
            }
            CaseEvent::CaseResumed {} | CaseEvent::PlanItemResumed { .. } => {
                self.resumed(case_id).await?
            }
            _ => {}
        }
        Ok(())
    }

    fn write(&mut self, changes: &mut Changes) -> Result<(), HandlerError> {
        let batch = std::mem::take(&mut self.batch);
        for (row, (_, job)) in &batch {
            match job {
                Some(job) => {
                    let bytes = rmp_serde::to_vec_named(job)
                        .map_err(|e| HandlerError::other(e.to_string()))?;
                    changes.insert(row, bytes)?;
                }
                None => changes.remove(row)?,
            }
        }
        for (row, entry) in std::mem::take(&mut self.incidents) {
            match entry {
                Some(entry) => {
                    let bytes = rmp_serde::to_vec_named(&entry)
                        .map_err(|e| HandlerError::other(e.to_string()))?;
                    changes.insert(&row, bytes)?;
                }
                None => changes.remove(&row)?,
            }
        }
        let mut landed = Landed {
            jobs: batch,
            timers: Vec::new(),
        };
        for (row, (key, timer)) in std::mem::take(&mut self.timers) {
            match timer {
                Some(timer) => {
                    let bytes = rmp_serde::to_vec_named(&timer)
                        .map_err(|e| HandlerError::other(e.to_string()))?;
                    changes.insert(&row, bytes)?;
                    landed
                        .timers
                        .push((timer.key(), Some(timer.due_at(&self.calendar))));
                }
                None => {
                    changes.remove(&row)?;
                    landed.timers.push((key, None));
                }
            }
        }
        if std::mem::take(&mut self.calendar_changed) {
            let bytes = rmp_serde::to_vec_named(&self.calendar)
                .map_err(|e| HandlerError::other(e.to_string()))?;
            changes.insert(CALENDAR_KEY, bytes)?;
            for timer in self.working_day_timers.values() {
                landed
                    .timers
                    .push((timer.key(), Some(timer.due_at(&self.calendar))));
            }
        }
        self.written = Some(landed);
        Ok(())
    }

    fn queued(&mut self) {
        if let Some(b) = self.written.take() {
            self.in_flight.push_back(b);
        }
    }

    fn committed(&mut self) {
        if let Some(landed) = self.in_flight.pop_front() {
            for (_, (key, job)) in landed.jobs {
                if self.live || job.is_none() {
                    self.hub.update(key, job);
                }
            }
            for (key, due) in landed.timers {
                if self.live || due.is_none() {
                    self.hub.update_timer(key, due);
                }
            }
        }
    }

    fn caught_up(&mut self) {
        if !self.live {
            self.live = true;
            self.hand_over_rows();
        }
    }

    fn discarded(&mut self) {
        self.batch.clear();
        self.incidents.clear();
        self.timers.clear();
        self.calendar_changed = false;
        self.written = None;
    }
}
