//! External job workers: services implemented outside the process take
//! their invocations as *jobs* — activate up to N with a lease, then
//! complete, fail or extend the lease. An expired lease makes the job
//! available again; a worker may wait (long poll) for jobs to appear.
//!
//! Two workers never both record one job's outcome: a report is accepted
//! only with the current lease, the job is then in flight until the log
//! says what became of it, and the outcome command's id (derived from the
//! invocation and attempt) makes a repeated report append nothing.

use std::time::Duration;

use super::dispatcher::{record, retry_at};
use super::error::OrchestrationError;
use super::hub::{JobKey, LeaseAsk, LeaseProblem, PendingJob};
use super::service::ServiceValues;
use super::WORKER_ROLE;
use crate::case::{DisclosureRecord, InvocationId, ServiceOutcome, MAX_DISCLOSURES, SYSTEM_ROLE};
use crate::definition::{check_service_name, ItemKey};
use crate::engine::Engine;
use crate::log::Timestamp;
use crate::security::Principal;

/// Most jobs one activation returns.
pub const MAX_JOBS_PER_ACTIVATION: usize = 1_000;
/// Longest lease (and lease extension).
pub const MAX_LEASE: Duration = Duration::from_secs(3_600);
/// Longest long-poll wait.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// A request for jobs.
#[derive(Debug, Clone)]
pub struct ActivateJobs {
    /// The service whose jobs to take (a definition's `[[services]]` name).
    pub service: String,
    /// The worker's name (recorded on the outcome).
    pub worker: String,
    /// At most this many jobs (1 to [`MAX_JOBS_PER_ACTIVATION`]).
    pub max_jobs: usize,
    /// How long the worker holds each job (up to [`MAX_LEASE`]).
    pub lease: Duration,
    /// With no job available, wait up to this long for one (up to
    /// [`MAX_WAIT`]; zero: answer at once).
    pub wait: Duration,
}

impl ActivateJobs {
    /// Up to 32 jobs of `service` for `worker`, leased for 30 seconds,
    /// answered at once.
    pub fn new(service: impl Into<String>, worker: impl Into<String>) -> Self {
        ActivateJobs {
            service: service.into(),
            worker: worker.into(),
            max_jobs: 32,
            lease: Duration::from_secs(30),
            wait: Duration::ZERO,
        }
    }

    /// This request with at most `n` jobs.
    pub fn max_jobs(mut self, n: usize) -> Self {
        self.max_jobs = n;
        self
    }

    /// This request with another lease.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// This request waiting up to `wait` for jobs.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }
}

/// What a worker passes back to report on a job.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobHandle {
    /// The case.
    pub case_id: String,
    /// The invocation.
    pub invocation: InvocationId,
    /// The attempt.
    pub attempt: u32,
    /// The lease's token.
    pub lease: u64,
}

impl std::fmt::Display for JobHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}#{}", self.case_id, self.invocation, self.attempt)
    }
}

/// A job leased to a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Pass it back to complete, fail or extend.
    pub handle: JobHandle,
    /// The service.
    pub service: String,
    /// The service task.
    pub item: ItemKey,
    /// The input.
    pub input: ServiceValues,
    /// The same for every attempt of the invocation (deduplicate on it).
    pub idempotency_key: String,
    /// Until when the worker holds it.
    pub lease_until: Timestamp,
    /// How long an attempt may take, in milliseconds (the task's policy).
    pub timeout_ms: u64,
}

fn check_worker(principal: &Principal, action: &str) -> Result<(), OrchestrationError> {
    if principal.has_any_role([WORKER_ROLE, SYSTEM_ROLE]) {
        Ok(())
    } else {
        Err(OrchestrationError::Forbidden {
            action: action.into(),
        })
    }
}

fn check_duration(
    field: &str,
    d: Duration,
    max: Duration,
    zero_ok: bool,
) -> Result<(), OrchestrationError> {
    if (d.is_zero() && !zero_ok) || d > max {
        return Err(OrchestrationError::Invalid {
            field: field.into(),
            reason: format!("must be {} to {} ms", u8::from(!zero_ok), max.as_millis()),
        });
    }
    Ok(())
}

impl Engine {
    /// Leases up to `request.max_jobs` due jobs of a service of the
    /// principal's tenant, within their clearance, waiting up to
    /// `request.wait` for one (without blocking a thread).
    ///
    /// Errors: [`OrchestrationError::Forbidden`] without the
    /// `casebook_worker` (or `casebook_system`) role;
    /// [`OrchestrationError::Invalid`] for a malformed service name or an
    /// out-of-range count, lease or wait;
    /// [`OrchestrationError::ServedInProcess`] for a service the engine runs
    /// itself for this tenant.
    pub async fn activate_jobs(
        &self,
        principal: &Principal,
        request: &ActivateJobs,
    ) -> Result<Vec<Job>, OrchestrationError> {
        self.admit(principal).await?;
        check_worker(principal, "activate jobs")?;
        check_service_name(&request.service).map_err(|e| OrchestrationError::Invalid {
            field: "service".into(),
            reason: e.to_string(),
        })?;
        if request.max_jobs == 0 || request.max_jobs > MAX_JOBS_PER_ACTIVATION {
            return Err(OrchestrationError::Invalid {
                field: "max_jobs".into(),
                reason: format!("must be 1 to {MAX_JOBS_PER_ACTIVATION}"),
            });
        }
        check_duration("lease", request.lease, MAX_LEASE, false)?;
        check_duration("wait", request.wait, MAX_WAIT, true)?;
        if request.worker.trim().is_empty() || request.worker.len() > crate::case::MAX_ID_LEN {
            return Err(OrchestrationError::Invalid {
                field: "worker".into(),
                reason: format!("must be 1 to {} bytes", crate::case::MAX_ID_LEN),
            });
        }
        let hub = self.hub();
        if hub
            .registry()
            .find(&principal.tenant, &request.service)
            .is_some()
        {
            return Err(OrchestrationError::ServedInProcess {
                service: request.service.clone(),
            });
        }
        let deadline = tokio::time::Instant::now() + request.wait;
        loop {
            // Registered before looking, so a job added meanwhile wakes us.
            let notified = hub.external_work.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let ask = LeaseAsk {
                tenant: &principal.tenant,
                service: &request.service,
                max: request.max_jobs,
                worker: &request.worker,
                clearance: principal.clearance,
                lease: request.lease,
            };
            let leased = hub.lease(&ask, self.now());
            if !leased.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(leased.into_iter().map(|(j, l)| to_job(j, l)).collect());
            }
            // A job may also come due (or a lease expire) with no
            // notification: look again at least every tick.
            let tick = tokio::time::Instant::now() + super::dispatcher::TICK * 5;
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline.min(tick)) => {}
            }
        }
    }

    /// Completes a leased job with the service's output: the task completes
    /// with the output mapped into the case file (a malformed output fails
    /// it, with an incident saying what is wrong).
    ///
    /// Errors: [`OrchestrationError::Forbidden`];
    /// [`OrchestrationError::UnknownJob`]; [`OrchestrationError::LeaseLost`];
    /// [`OrchestrationError::Engine`] if the outcome cannot be recorded.
    pub async fn complete_job(
        &self,
        principal: &Principal,
        handle: &JobHandle,
        output: ServiceValues,
    ) -> Result<(), OrchestrationError> {
        self.complete_job_disclosing(principal, handle, output, Vec::new())
            .await
    }

    /// Completes a leased job, as [`Engine::complete_job`], for a worker
    /// that sent information out of the case while doing it (a letter, a
    /// referral to a partner agency): each disclosure it reports is
    /// recorded on the case as a `DisclosureRecorded` event (recipient,
    /// what, why, channel; marked with the task's effective marking) in
    /// the same append as the answer, exactly as `notify.email`'s are.
    ///
    /// Errors: as [`Engine::complete_job`]; [`OrchestrationError::Invalid`]
    /// (`disclosures[i].<field>`) for a disclosure without a recipient,
    /// what, why or channel, or more than [`MAX_DISCLOSURES`] of them —
    /// checked before the lease is used, so the worker may report again.
    pub async fn complete_job_disclosing(
        &self,
        principal: &Principal,
        handle: &JobHandle,
        output: ServiceValues,
        disclosures: Vec<DisclosureRecord>,
    ) -> Result<(), OrchestrationError> {
        self.admit(principal).await?;
        check_worker(principal, "complete a job")?;
        check_disclosures(&disclosures)?;
        let job = self.take_leased(principal, handle)?;
        let reason = format!("completed by worker {}", principal.subject);
        self.settle(
            job,
            ServiceOutcome::Completed {
                output,
                disclosures,
                alerts: Vec::new(),
            },
            reason,
        )
        .await
    }

    /// Fails a leased job: a retryable failure is retried after the task's
    /// backoff (until its attempts run out), a permanent one fails the task
    /// and raises an incident.
    ///
    /// Errors: as [`Engine::complete_job`].
    pub async fn fail_job(
        &self,
        principal: &Principal,
        handle: &JobHandle,
        error: &str,
        retryable: bool,
    ) -> Result<(), OrchestrationError> {
        self.admit(principal).await?;
        check_worker(principal, "fail a job")?;
        let job = self.take_leased(principal, handle)?;
        let retry = retryable.then(|| retry_at(self.now(), &job));
        let reason = format!("failed by worker {}", principal.subject);
        let outcome = ServiceOutcome::Failed {
            error: error.to_string(),
            retry_at: retry,
        };
        self.settle(job, outcome, reason).await
    }

    /// Extends a held lease to `by` from now.
    ///
    /// Errors: [`OrchestrationError::Forbidden`];
    /// [`OrchestrationError::Invalid`] for a zero or too long extension;
    /// [`OrchestrationError::UnknownJob`]; [`OrchestrationError::LeaseLost`].
    pub async fn extend_job_lease(
        &self,
        principal: &Principal,
        handle: &JobHandle,
        by: Duration,
    ) -> Result<Timestamp, OrchestrationError> {
        self.admit(principal).await?;
        check_worker(principal, "extend a lease")?;
        check_duration("lease", by, MAX_LEASE, false)?;
        let key = key_of(principal, handle);
        let job = handle.to_string();
        self.hub()
            .extend(&key, handle.lease, self.now(), by)
            .map_err(|p| lease_error(p, job))
    }

    fn take_leased(
        &self,
        principal: &Principal,
        handle: &JobHandle,
    ) -> Result<PendingJob, OrchestrationError> {
        let key = key_of(principal, handle);
        let hub = self.hub();
        match hub.check_lease(&key, handle.lease, self.now(), true) {
            Ok(job) if job.attempt == handle.attempt => Ok(job),
            Ok(job) => {
                hub.release(&key, job.attempt, job.not_before);
                Err(OrchestrationError::LeaseLost {
                    job: handle.to_string(),
                })
            }
            Err(p) => Err(lease_error(p, handle.to_string())),
        }
    }

    async fn settle(
        &self,
        job: PendingJob,
        outcome: ServiceOutcome,
        reason: String,
    ) -> Result<(), OrchestrationError> {
        match record(self, &job, outcome, reason).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                self.hub().forget(&job.key(), job.attempt);
                Err(OrchestrationError::UnknownJob {
                    job: format!("{}/{}#{}", job.case_id, job.invocation, job.attempt),
                })
            }
            Err(e) => {
                self.hub().release(&job.key(), job.attempt, self.now());
                Err(e.into())
            }
        }
    }
}

/// A worker's disclosures name who got what, why and how: each field is
/// needed for the DPA 2018 s62 record (none may be blank), and no more are
/// taken than the case records for one answer.
fn check_disclosures(disclosures: &[DisclosureRecord]) -> Result<(), OrchestrationError> {
    if disclosures.len() > MAX_DISCLOSURES {
        return Err(OrchestrationError::Invalid {
            field: "disclosures".into(),
            reason: format!(
                "{} disclosures; at most {MAX_DISCLOSURES} per answer",
                disclosures.len()
            ),
        });
    }
    for (i, d) in disclosures.iter().enumerate() {
        let fields = [
            ("recipient", &d.recipient),
            ("what", &d.what),
            ("why", &d.why),
            ("channel", &d.channel),
        ];
        if let Some((name, _)) = fields.iter().find(|(_, v)| v.trim().is_empty()) {
            return Err(OrchestrationError::Invalid {
                field: format!("disclosures[{i}].{name}"),
                reason: "must not be blank: a disclosure records who received what, why and how"
                    .into(),
            });
        }
    }
    Ok(())
}

fn key_of(principal: &Principal, handle: &JobHandle) -> JobKey {
    JobKey {
        tenant: principal.tenant.clone(),
        case_id: handle.case_id.clone(),
        invocation: handle.invocation,
    }
}

fn lease_error(p: LeaseProblem, job: String) -> OrchestrationError {
    match p {
        LeaseProblem::Unknown => OrchestrationError::UnknownJob { job },
        LeaseProblem::Lost => OrchestrationError::LeaseLost { job },
    }
}

fn to_job(j: PendingJob, lease: super::hub::Lease) -> Job {
    Job {
        handle: JobHandle {
            case_id: j.case_id.clone(),
            invocation: j.invocation,
            attempt: j.attempt,
            lease: lease.token,
        },
        service: j.request.service.to_string(),
        item: j.item,
        idempotency_key: format!("{}/{}/{}", j.tenant, j.case_id, j.invocation),
        input: j.request.input,
        lease_until: lease.until,
        timeout_ms: j.request.timeout_ms,
    }
}
