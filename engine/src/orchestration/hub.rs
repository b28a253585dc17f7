//! The hub: pending invocations in memory, fed by the orchestration
//! projection once its commits land, taken by the dispatcher (in-process
//! services) and leased to external job workers.
//!
//! The hub holds nothing that is not derived from the log: the projection's
//! rows are rebuilt from it, and the hub from the rows when a handler
//! starts. A job taken from the hub is *in flight* until the projection
//! reports its next state (another attempt, or gone), so it is never handed
//! out twice at once; a worker's lease expires by the engine's clock.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::service::ServiceRegistry;
use crate::case::{InvocationId, InvocationRequest};
use crate::definition::ItemKey;
use crate::log::{TenantId, Timestamp};
use crate::security::Classification;

/// Names a pending invocation across the engine.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct JobKey {
    pub tenant: TenantId,
    pub case_id: String,
    pub invocation: InvocationId,
}

/// What a timer runs for: a deadline, or a wait step.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Timed {
    /// An SLA deadline: firing misses it and runs its escalations.
    Deadline(crate::definition::DeadlineKey),
    /// A wait step: firing completes it.
    Wait(ItemKey),
}

/// Names a running timer (a deadline's or a wait step's) across the engine.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct TimerKey {
    pub tenant: TenantId,
    pub case_id: String,
    pub timer: Timed,
    pub instance: Option<crate::case::InstanceId>,
}

/// A pending invocation's next attempt, as the projection stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PendingJob {
    pub tenant: TenantId,
    pub case_id: String,
    pub invocation: InvocationId,
    pub item: ItemKey,
    pub request: InvocationRequest,
    pub attempt: u32,
    pub not_before: Timestamp,
    /// The case's classification when it was asked (a worker must be
    /// cleared for it).
    pub classification: Classification,
}

impl PendingJob {
    pub(crate) fn key(&self) -> JobKey {
        JobKey {
            tenant: self.tenant.clone(),
            case_id: self.case_id.clone(),
            invocation: self.invocation,
        }
    }
}

/// A worker's hold on a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lease {
    pub worker: String,
    pub token: u64,
    pub until: Timestamp,
}

#[derive(Debug)]
struct Entry {
    job: PendingJob,
    /// Run by the dispatcher (a registered service) rather than by workers.
    local: bool,
    /// Taken by the dispatcher, or a worker is reporting its outcome.
    in_flight: bool,
    lease: Option<Lease>,
}

/// What a worker asks for (see [`Hub::lease`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LeaseAsk<'a> {
    pub tenant: &'a TenantId,
    pub service: &'a str,
    pub max: usize,
    pub worker: &'a str,
    pub clearance: Classification,
    pub lease: Duration,
}

/// Why a worker's report on a job was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LeaseProblem {
    /// No such job is pending (finished, or never was).
    Unknown,
    /// The lease expired or another worker holds the job now.
    Lost,
}

#[derive(Default)]
struct State {
    jobs: HashMap<JobKey, Entry>,
    /// Local jobs not in flight, by when they are due.
    due: BTreeSet<(Timestamp, JobKey)>,
    /// External jobs by tenant and service, by when they are due (leased
    /// ones stay listed; activation skips them while the lease holds).
    external: BTreeMap<(TenantId, String), BTreeSet<(Timestamp, JobKey)>>,
    next_token: u64,
    /// Running deadlines' timers.
    timers: HashMap<TimerKey, TimerSlot>,
    /// Timers not being fired, by when they fire.
    timer_due: BTreeSet<(Timestamp, TimerKey)>,
}

/// A running timer in the hub.
#[derive(Debug, Clone, Copy)]
struct TimerSlot {
    /// When it fires.
    due: Timestamp,
    /// Taken by the dispatcher, being fired.
    firing: bool,
    /// Handed over again while being fired (its case resumed meanwhile):
    /// a firing that found nothing to do leaves it running.
    again: bool,
}

/// See the module docs.
pub(crate) struct Hub {
    state: Mutex<State>,
    registry: ServiceRegistry,
    /// Wakes the dispatcher: new local work.
    pub(crate) local_work: Notify,
    /// Wakes waiting workers: new external work.
    pub(crate) external_work: Notify,
}

impl Hub {
    pub(crate) fn new(registry: ServiceRegistry) -> Arc<Self> {
        Arc::new(Hub {
            state: Mutex::new(State::default()),
            registry,
            local_work: Notify::new(),
            external_work: Notify::new(),
        })
    }

    pub(crate) fn registry(&self) -> &ServiceRegistry {
        &self.registry
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The projection's latest word on an invocation: its next attempt, or
    /// `None` when it ended. The same attempt again changes nothing.
    pub(crate) fn update(&self, key: JobKey, job: Option<PendingJob>) {
        let mut s = self.lock();
        if let (Some(new), Some(old)) = (&job, s.jobs.get(&key)) {
            // The same attempt again, or an older one (a rebuilding
            // generation replaying history): nothing new.
            if old.job.attempt > new.attempt
                || (old.job.attempt == new.attempt && old.job.not_before == new.not_before)
            {
                return;
            }
        }
        if let Some(old) = s.jobs.remove(&key) {
            let at = (old.job.not_before, key.clone());
            s.due.remove(&at);
            let ext = (key.tenant.clone(), old.job.request.service.to_string());
            if let Some(set) = s.external.get_mut(&ext) {
                set.remove(&at);
                if set.is_empty() {
                    s.external.remove(&ext);
                }
            }
        }
        let Some(job) = job else { return };
        let local = self
            .registry
            .find(&key.tenant, job.request.service.as_str())
            .is_some();
        let at = (job.not_before, key.clone());
        if local {
            s.due.insert(at);
        } else {
            s.external
                .entry((key.tenant.clone(), job.request.service.to_string()))
                .or_default()
                .insert(at);
        }
        s.jobs.insert(
            key,
            Entry {
                job,
                local,
                in_flight: false,
                lease: None,
            },
        );
        drop(s);
        if local {
            self.local_work.notify_one();
        } else {
            self.external_work.notify_waiters();
        }
    }

    /// Local jobs due by `now`, at most `max`, marked in flight; and when
    /// the next one not yet due is.
    pub(crate) fn take_due(
        &self,
        now: Timestamp,
        max: usize,
    ) -> (Vec<PendingJob>, Option<Timestamp>) {
        let mut s = self.lock();
        let mut out = Vec::new();
        while out.len() < max {
            let Some(first) = s.due.first().cloned() else {
                break;
            };
            if first.0 > now {
                break;
            }
            s.due.remove(&first);
            if let Some(e) = s.jobs.get_mut(&first.1) {
                e.in_flight = true;
                out.push(e.job.clone());
            }
        }
        let next = s.due.first().map(|(t, _)| *t);
        (out, next)
    }

    /// A job the dispatcher could not settle: due again at `at`.
    pub(crate) fn release(&self, key: &JobKey, attempt: u32, at: Timestamp) {
        let mut s = self.lock();
        let Some(e) = s.jobs.get_mut(key) else { return };
        if e.job.attempt != attempt || !e.in_flight {
            return;
        }
        e.in_flight = false;
        e.lease = None;
        let old = (e.job.not_before, key.clone());
        e.job.not_before = at;
        let local = e.local;
        let service = e.job.request.service.to_string();
        if local {
            s.due.insert((at, key.clone()));
        } else if let Some(set) = s.external.get_mut(&(key.tenant.clone(), service)) {
            set.remove(&old);
            set.insert((at, key.clone()));
        }
        drop(s);
        if local {
            self.local_work.notify_one();
        } else {
            self.external_work.notify_waiters();
        }
    }

    /// Forgets a job whose case no longer wants this attempt.
    pub(crate) fn forget(&self, key: &JobKey, attempt: u32) {
        let current = self.lock().jobs.get(key).map(|e| e.job.attempt);
        if current == Some(attempt) {
            self.update(key.clone(), None);
        }
    }

    /// Leases up to `max` due external jobs of `service` for `tenant` to
    /// `worker` until `now + lease`, skipping jobs above `clearance`.
    pub(crate) fn lease(&self, ask: &LeaseAsk<'_>, now: Timestamp) -> Vec<(PendingJob, Lease)> {
        let LeaseAsk {
            tenant,
            service,
            max,
            worker,
            clearance,
            lease,
        } = *ask;
        let mut s = self.lock();
        let s = &mut *s;
        let Some(set) = s.external.get(&(tenant.clone(), service.to_string())) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (at, key) in set {
            if out.len() >= max || *at > now {
                break;
            }
            let Some(e) = s.jobs.get_mut(key) else {
                continue;
            };
            let held = e.lease.as_ref().is_some_and(|l| l.until > now);
            if held || e.in_flight || e.job.classification > clearance {
                continue;
            }
            s.next_token += 1;
            let l = Lease {
                worker: worker.to_string(),
                token: s.next_token,
                until: now + lease,
            };
            e.lease = Some(l.clone());
            out.push((e.job.clone(), l));
        }
        out
    }

    /// Checks a worker's lease on a job; with `take`, marks the job in
    /// flight (its outcome is being recorded) so no one else gets it.
    pub(crate) fn check_lease(
        &self,
        key: &JobKey,
        token: u64,
        now: Timestamp,
        take: bool,
    ) -> Result<PendingJob, LeaseProblem> {
        let mut s = self.lock();
        let e = s.jobs.get_mut(key).ok_or(LeaseProblem::Unknown)?;
        match &e.lease {
            Some(l) if l.token == token && l.until > now && !e.in_flight => {
                if take {
                    e.in_flight = true;
                }
                Ok(e.job.clone())
            }
            _ => Err(LeaseProblem::Lost),
        }
    }

    /// Extends a held lease to `now + by`.
    pub(crate) fn extend(
        &self,
        key: &JobKey,
        token: u64,
        now: Timestamp,
        by: Duration,
    ) -> Result<Timestamp, LeaseProblem> {
        let mut s = self.lock();
        let e = s.jobs.get_mut(key).ok_or(LeaseProblem::Unknown)?;
        match &mut e.lease {
            Some(l) if l.token == token && l.until > now && !e.in_flight => {
                l.until = now + by;
                Ok(l.until)
            }
            _ => Err(LeaseProblem::Lost),
        }
    }

    /// The projection's latest word on a deadline's timer: when it fires,
    /// or `None` when it no longer runs (met, cancelled, fired).
    pub(crate) fn update_timer(&self, key: TimerKey, due: Option<Timestamp>) {
        let mut s = self.lock();
        if let Some(slot) = s.timers.get_mut(&key) {
            if Some(slot.due) == due {
                // Handed over again while being fired: the firing may have
                // been refused by a case that has resumed since.
                slot.again |= slot.firing;
                return;
            }
        }
        if let Some(old) = s.timers.remove(&key) {
            s.timer_due.remove(&(old.due, key.clone()));
        }
        let Some(due) = due else { return };
        s.timers.insert(
            key.clone(),
            TimerSlot {
                due,
                firing: false,
                again: false,
            },
        );
        s.timer_due.insert((due, key));
        drop(s);
        self.local_work.notify_one();
    }

    /// Timers due by `now`, at most `max`, marked as being fired; and when
    /// the next one falls due.
    pub(crate) fn take_due_timers(
        &self,
        now: Timestamp,
        max: usize,
    ) -> (Vec<(TimerKey, Timestamp)>, Option<Timestamp>) {
        let mut s = self.lock();
        let mut out = Vec::new();
        while out.len() < max {
            let Some(first) = s.timer_due.first().cloned() else {
                break;
            };
            if first.0 > now {
                break;
            }
            s.timer_due.remove(&first);
            if let Some(t) = s.timers.get_mut(&first.1) {
                t.firing = true;
                t.again = false;
                out.push((first.1, first.0));
            }
        }
        let next = s.timer_due.first().map(|(t, _)| *t);
        (out, next)
    }

    /// A timer that could not be fired: due again at `at`.
    pub(crate) fn release_timer(&self, key: &TimerKey, at: Timestamp) {
        let mut s = self.lock();
        let Some(t) = s.timers.get_mut(key) else {
            return;
        };
        if !t.firing {
            return;
        }
        *t = TimerSlot {
            due: at,
            firing: false,
            again: false,
        };
        s.timer_due.insert((at, key.clone()));
    }

    /// Forgets a timer the dispatcher fired, or found nothing to fire for
    /// (no longer running, or its case suspended: the projection hands it
    /// over again when the case resumes). One handed over again while it
    /// was being fired is due again at once instead.
    pub(crate) fn forget_timer(&self, key: &TimerKey) {
        let mut s = self.lock();
        let Some(t) = s.timers.get_mut(key) else {
            return;
        };
        if !t.firing {
            // Handed over anew (another due time) while being fired: it
            // stands.
            return;
        }
        if t.again {
            t.firing = false;
            t.again = false;
            let due = t.due;
            s.timer_due.insert((due, key.clone()));
            drop(s);
            self.local_work.notify_one();
            return;
        }
        let due = t.due;
        s.timers.remove(key);
        s.timer_due.remove(&(due, key.clone()));
    }

    /// Forgets every job and timer of `tenant` (its tenant was suspended
    /// and its orchestration runner stopped). Nothing is lost: the
    /// orchestration projection's rows still hold them, and its next
    /// handler (when the tenant is reactivated) hands them back. A job in
    /// flight finishes; its report finds nothing to release.
    pub(crate) fn forget_tenant(&self, tenant: &TenantId) {
        let mut s = self.lock();
        s.jobs.retain(|k, _| &k.tenant != tenant);
        s.due.retain(|(_, k)| &k.tenant != tenant);
        s.external.retain(|(t, _), _| t != tenant);
        s.timers.retain(|k, _| &k.tenant != tenant);
        s.timer_due.retain(|(_, k)| &k.tenant != tenant);
    }

    /// Timers the hub holds.
    pub(crate) fn timer_count(&self) -> usize {
        self.lock().timers.len()
    }

    /// Pending invocations (due, waiting to retry, or leased).
    pub(crate) fn len(&self) -> usize {
        self.lock().jobs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::ServiceName;

    fn job(case: &str, attempt: u32, at: i64) -> PendingJob {
        PendingJob {
            tenant: TenantId::new("kent").unwrap(),
            case_id: case.into(),
            invocation: InvocationId(1),
            item: ItemKey::new("locate"),
            request: InvocationRequest {
                service: ServiceName::new("gis.locate"),
                input: BTreeMap::new(),
                max_attempts: 3,
                timeout_ms: 1000,
                backoff_ms: 10,
                max_backoff_ms: 100,
            },
            attempt,
            not_before: Timestamp(at),
            classification: Classification::Official,
        }
    }

    fn ask<'a>(
        tenant: &'a TenantId,
        worker: &'a str,
        clearance: Classification,
        lease: Duration,
    ) -> LeaseAsk<'a> {
        LeaseAsk {
            tenant,
            service: "gis.locate",
            max: 5,
            worker,
            clearance,
            lease,
        }
    }

    #[test]
    fn a_leased_job_goes_to_one_worker_until_its_lease_expires() {
        let hub = Hub::new(ServiceRegistry::new());
        let j = job("c1", 1, 0);
        hub.update(j.key(), Some(j.clone()));
        let kent = j.tenant.clone();
        let sec = Duration::from_secs(1);
        let a = hub.lease(
            &ask(&kent, "a", Classification::Official, sec),
            Timestamp(10),
        );
        assert_eq!(a.len(), 1);
        let b = hub.lease(
            &ask(&kent, "b", Classification::Official, sec),
            Timestamp(20),
        );
        assert!(b.is_empty());
        // Expired: re-offered, and the first lease is lost.
        let later = Timestamp(10) + sec;
        let b = hub.lease(&ask(&kent, "b", Classification::Official, sec), later);
        assert_eq!(b.len(), 1);
        assert_eq!(
            hub.check_lease(&j.key(), a[0].1.token, later, true),
            Err(LeaseProblem::Lost)
        );
        assert!(hub.check_lease(&j.key(), b[0].1.token, later, true).is_ok());
        // In flight: nobody else gets it, not even after the lease.
        let much_later = later + sec * 10;
        assert!(hub
            .lease(&ask(&kent, "c", Classification::Official, sec), much_later)
            .is_empty());
        // The projection reports its end: gone.
        hub.update(j.key(), None);
        assert_eq!(hub.len(), 0);
    }

    #[test]
    fn a_timer_is_taken_once_when_due_and_forgotten_when_it_no_longer_runs() {
        let hub = Hub::new(ServiceRegistry::new());
        let key = TimerKey {
            tenant: TenantId::new("kent").unwrap(),
            case_id: "c1".into(),
            timer: Timed::Deadline(crate::definition::DeadlineKey::new("review")),
            instance: None,
        };
        hub.update_timer(key.clone(), Some(Timestamp(100)));
        hub.update_timer(key.clone(), Some(Timestamp(100)));
        assert_eq!(hub.timer_count(), 1);
        let (due, next) = hub.take_due_timers(Timestamp(99), 10);
        assert!(due.is_empty());
        assert_eq!(next, Some(Timestamp(100)));
        let (due, next) = hub.take_due_timers(Timestamp(100), 10);
        assert_eq!(due, vec![(key.clone(), Timestamp(100))]);
        assert_eq!(next, None);
        // Being fired: not taken again; released, it is due again.
        assert!(hub.take_due_timers(Timestamp(1_000), 10).0.is_empty());
        hub.release_timer(&key, Timestamp(2_000));
        assert_eq!(hub.take_due_timers(Timestamp(2_000), 10).0.len(), 1);
        hub.forget_timer(&key);
        assert_eq!(hub.timer_count(), 0);
    }

    #[test]
    fn a_timer_handed_over_again_while_being_fired_is_not_dropped_by_that_firing() {
        let hub = Hub::new(ServiceRegistry::new());
        let key = TimerKey {
            tenant: TenantId::new("kent").unwrap(),
            case_id: "c1".into(),
            timer: Timed::Deadline(crate::definition::DeadlineKey::new("review")),
            instance: None,
        };
        hub.update_timer(key.clone(), Some(Timestamp(100)));
        assert_eq!(hub.take_due_timers(Timestamp(100), 10).0.len(), 1);
        // The case resumed while the (refused) firing was under way.
        hub.update_timer(key.clone(), Some(Timestamp(100)));
        hub.forget_timer(&key);
        assert_eq!(hub.timer_count(), 1);
        assert_eq!(hub.take_due_timers(Timestamp(100), 10).0.len(), 1);
        // Without a new hand-over, the firing's end forgets it.
        hub.forget_timer(&key);
        assert_eq!(hub.timer_count(), 0);
    }

    #[test]
    fn a_job_above_the_workers_clearance_is_not_offered() {
        let hub = Hub::new(ServiceRegistry::new());
        let mut j = job("c1", 1, 0);
        j.classification = Classification::Secret;
        hub.update(j.key(), Some(j.clone()));
        let sec = Duration::from_secs(1);
        assert!(hub
            .lease(
                &ask(&j.tenant, "a", Classification::Official, sec),
                Timestamp(1)
            )
            .is_empty());
        assert_eq!(
            hub.lease(
                &ask(&j.tenant, "a", Classification::Secret, sec),
                Timestamp(1)
            )
            .len(),
            1
        );
    }

    #[test]
    fn the_same_attempt_reported_twice_is_not_offered_twice() {
        let hub = Hub::new(ServiceRegistry::new());
        let j = job("c1", 1, 0);
        hub.update(j.key(), Some(j.clone()));
        let sec = Duration::from_secs(60);
        let a = hub.lease(
            &ask(&j.tenant, "a", Classification::Official, sec),
            Timestamp(1),
        );
        assert_eq!(a.len(), 1);
        hub.update(j.key(), Some(j.clone()));
        assert!(hub
            .lease(
                &ask(&j.tenant, "b", Classification::Official, sec),
                Timestamp(2)
            )
            .is_empty());
        // An older attempt (a rebuild replaying history) changes nothing.
        let mut older = job("c1", 1, 0);
        older.attempt = 0;
        hub.update(older.key(), Some(older));
        assert!(hub
            .lease(
                &ask(&j.tenant, "b", Classification::Official, sec),
                Timestamp(2)
            )
            .is_empty());
        // The next attempt is a new job.
        let next = job("c1", 2, 5);
        hub.update(next.key(), Some(next));
        assert_eq!(
            hub.lease(
                &ask(&j.tenant, "b", Classification::Official, sec),
                Timestamp(6)
            )
            .len(),
            1
        );
    }
}
