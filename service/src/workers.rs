//! The `casebook.v1.Workers` service: external job workers lease, complete,
//! fail and extend jobs of the services they implement (role
//! `casebook_worker`).

use std::time::Duration;

use casebook_engine::case::InvocationId;
use casebook_engine::engine::Engine;
use casebook_engine::orchestration::jobs::MAX_WAIT;
use casebook_engine::orchestration::{ActivateJobs, Job, JobHandle};
use casebook_proto::v1 as pb;
use casebook_proto::v1::workers_server::Workers;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::auth::caller;
use crate::convert;
use crate::server::Stopping;
use crate::status::{invalid, status};

/// The Workers service over an engine.
#[derive(Clone)]
pub struct WorkersService {
    engine: Engine,
    stopping: Stopping,
}

impl WorkersService {
    /// The service for `engine`; job streams end when `stopping` fires.
    pub fn new(engine: Engine, stopping: Stopping) -> Self {
        WorkersService { engine, stopping }
    }
}

fn activation(r: &pb::ActivateJobsRequest) -> ActivateJobs {
    let mut a = ActivateJobs::new(r.service.clone(), r.worker.clone());
    if r.max_jobs > 0 {
        a = a.max_jobs(r.max_jobs as usize);
    }
    if r.lease_ms > 0 {
        a = a.lease(Duration::from_millis(u64::from(r.lease_ms)));
    }
    a.wait(Duration::from_millis(u64::from(r.wait_ms)))
}

fn handle(h: Option<&pb::JobHandle>) -> Result<JobHandle, Status> {
    let h = h.ok_or_else(|| invalid("handle", "the job handle is required"))?;
    if h.case_id.is_empty() {
        return Err(invalid("handle.case_id", "the case id is required"));
    }
    Ok(JobHandle {
        case_id: h.case_id.clone(),
        invocation: InvocationId(h.invocation),
        attempt: h.attempt,
        lease: h.lease,
    })
}

fn job(j: &Job) -> pb::Job {
    pb::Job {
        handle: Some(pb::JobHandle {
            case_id: j.handle.case_id.clone(),
            invocation: j.handle.invocation.0,
            attempt: j.handle.attempt,
            lease: j.handle.lease,
        }),
        service: j.service.clone(),
        item: j.item.as_str().to_string(),
        input: Some(convert::case_file_out(
            j.input.iter().map(|(k, v)| (k.as_str(), v)),
        )),
        idempotency_key: j.idempotency_key.clone(),
        lease_until: Some(convert::timestamp(j.lease_until)),
        timeout_ms: j.timeout_ms,
    }
}

#[tonic::async_trait]
impl Workers for WorkersService {
    async fn activate_jobs(
        &self,
        request: Request<pb::ActivateJobsRequest>,
    ) -> Result<Response<pb::ActivateJobsResponse>, Status> {
        let principal = caller(&request)?;
        let jobs = self
            .engine
            .activate_jobs(&principal, &activation(request.get_ref()))
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::ActivateJobsResponse {
            jobs: jobs.iter().map(job).collect(),
        }))
    }

    type StreamJobsStream = ReceiverStream<Result<pb::Job, Status>>;

    async fn stream_jobs(
        &self,
        request: Request<pb::ActivateJobsRequest>,
    ) -> Result<Response<Self::StreamJobsStream>, Status> {
        let principal = caller(&request)?;
        let mut ask = activation(request.get_ref());
        ask.wait = MAX_WAIT;
        // Check the request once up front: a bad one is refused, not streamed.
        let first = self
            .engine
            .activate_jobs(&principal, &ask.clone().wait(Duration::ZERO))
            .await
            .map_err(|e| status(&e))?;
        let (tx, rx) = mpsc::channel(ask.max_jobs.clamp(1, 256));
        let engine = self.engine.clone();
        let mut stopping = self.stopping.clone();
        tokio::spawn(async move {
            let mut batch = first;
            loop {
                for j in &batch {
                    if tx.send(Ok(job(j))).await.is_err() {
                        return;
                    }
                }
                // Lease only as many as the caller has room for.
                let room = tx.capacity().max(1);
                let next = ask.clone().max_jobs(room.min(ask.max_jobs));
                batch = tokio::select! {
                    r = engine.activate_jobs(&principal, &next) => match r {
                        Ok(b) => b,
                        Err(e) => {
                            let _ = tx.send(Err(status(&e))).await;
                            return;
                        }
                    },
                    _ = tx.closed() => return,
                    _ = stopping.fired() => {
                        let _ = tx.send(Err(Stopping::status())).await;
                        return;
                    }
                };
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn complete_job(
        &self,
        request: Request<pb::CompleteJobRequest>,
    ) -> Result<Response<pb::CompleteJobResponse>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let handle = handle(r.handle.as_ref())?;
        let output = convert::case_file(r.output.as_ref(), "output")?
            .into_inner()
            .into_iter()
            .map(|(k, v)| (k.as_str().to_string(), v))
            .collect();
        let disclosures = r.disclosures.into_iter().map(convert::disclosure).collect();
        self.engine
            .complete_job_disclosing(&principal, &handle, output, disclosures)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::CompleteJobResponse {}))
    }

    async fn fail_job(
        &self,
        request: Request<pb::FailJobRequest>,
    ) -> Result<Response<pb::FailJobResponse>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let handle = handle(r.handle.as_ref())?;
        self.engine
            .fail_job(&principal, &handle, &r.error, r.retryable)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::FailJobResponse {}))
    }

    async fn extend_job_lease(
        &self,
        request: Request<pb::ExtendJobLeaseRequest>,
    ) -> Result<Response<pb::ExtendJobLeaseResponse>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let handle = handle(r.handle.as_ref())?;
        let until = self
            .engine
            .extend_job_lease(
                &principal,
                &handle,
                Duration::from_millis(u64::from(r.by_ms)),
            )
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::ExtendJobLeaseResponse {
            lease_until: Some(convert::timestamp(until)),
        }))
    }
}
