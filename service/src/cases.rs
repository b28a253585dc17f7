//! The `casebook.v1.Cases` service: definitions, commands and the views,
//! each call acting for the authenticated caller.

use std::sync::Arc;

use casebook_engine::case::CaseCommand;
use casebook_engine::definition::{CaseDefinition, Format};
use casebook_engine::engine::{CaseOutcome, Engine, OpenCase};
use casebook_engine::log::codec::DomainEvent;
use casebook_engine::projection::query::{DeadlineQuery, PageRequest, TaskStates, WorkQueueQuery};
use casebook_engine::projection::Consistency;
use casebook_engine::security::{PositionToken, Principal};
use casebook_proto::v1 as pb;
use casebook_proto::v1::cases_server::Cases;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::access::{consulted, purpose};
use crate::auth::caller;
use crate::convert;
use crate::server::Stopping;
use crate::status::{invalid, status};
use casebook_engine::audit::ReadContext;

/// The Cases service over an engine.
#[derive(Clone)]
pub struct CasesService {
    engine: Engine,
    stopping: Stopping,
}

impl CasesService {
    /// The service for `engine`; its streams end when `stopping` fires.
    pub fn new(engine: Engine, stopping: Stopping) -> Self {
        CasesService { engine, stopping }
    }
}

fn format(n: i32) -> Result<Format, Status> {
    match pb::DefinitionFormat::try_from(n) {
        Ok(pb::DefinitionFormat::Unspecified | pb::DefinitionFormat::Toml) => Ok(Format::Toml),
        Ok(pb::DefinitionFormat::Json) => Ok(Format::Json),
        Err(_) => Err(invalid("format", format!("unknown format {n}"))),
    }
}

fn outcome(o: &CaseOutcome) -> pb::CaseOutcome {
    pb::CaseOutcome {
        case_id: o.case_id.to_string(),
        version: o.version.0,
        position: convert::wire(o.position.unwrap_or(PositionToken::NONE)),
        events: o
            .events
            .iter()
            .enumerate()
            .map(|(i, e)| pb::AppendedEvent {
                event_type: e.event_type().to_string(),
                version: (o.version.0 + 1 + i as u64).saturating_sub(o.events.len() as u64),
            })
            .collect(),
    }
}

fn next_offset(n: Option<usize>) -> Option<u32> {
    n.and_then(|n| u32::try_from(n).ok())
}

/// INVALID_ARGUMENT for a definition, every problem a field violation.
fn definition_status(e: &casebook_engine::definition::DefinitionError) -> Status {
    let mut details = ErrorDetails::new();
    for p in &e.problems {
        let field = if p.path.is_empty() {
            "source".to_string()
        } else {
            p.path.clone()
        };
        details.add_bad_request_violation(field, p.message.clone());
    }
    Status::with_error_details(Code::InvalidArgument, e.to_string(), details)
}

fn engine_status(e: &casebook_engine::engine::EngineError) -> Status {
    match e {
        casebook_engine::engine::EngineError::InvalidDefinition(d) => definition_status(d),
        other => status(other),
    }
}

impl CasesService {
    async fn run(
        &self,
        principal: &Principal,
        case_id: &str,
        command: CaseCommand,
        context: Option<&pb::CommandContext>,
    ) -> Result<Response<pb::CaseOutcome>, Status> {
        if case_id.is_empty() {
            return Err(invalid("case_id", "the case id is required"));
        }
        let context = convert::context(context, &format!("grpc:{}", principal.subject))?;
        let done = self
            .engine
            .execute(principal, case_id, command, context)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(outcome(&done)))
    }
}

#[tonic::async_trait]
impl Cases for CasesService {
    async fn deploy_definition(
        &self,
        request: Request<pb::DeployDefinitionRequest>,
    ) -> Result<Response<pb::DeployDefinitionResponse>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let context = convert::context(r.context.as_ref(), &format!("grpc:{}", principal.subject))?;
        let d = self
            .engine
            .deploy_with(&principal, &r.source, format(r.format)?, context)
            .await
            .map_err(|e| engine_status(&e))?;
        Ok(Response::new(pb::DeployDefinitionResponse {
            case_type: d.key,
            version: d.version,
            fingerprint: d.fingerprint.to_string(),
            newly_deployed: d.newly_deployed,
        }))
    }

    async fn validate_definition(
        &self,
        request: Request<pb::ValidateDefinitionRequest>,
    ) -> Result<Response<pb::ValidateDefinitionResponse>, Status> {
        caller(&request)?;
        let r = request.into_inner();
        Ok(Response::new(validate(&r.source, format(r.format)?)))
    }

    async fn list_definitions(
        &self,
        request: Request<pb::ListDefinitionsRequest>,
    ) -> Result<Response<pb::ListDefinitionsResponse>, Status> {
        let principal = caller(&request)?;
        let consistency = convert::consistency(request.get_ref().consistency.as_ref())?;
        let keys = self
            .engine
            .case_types(&principal, consistency)
            .await
            .map_err(|e| status(&e))?;
        let mut definitions = Vec::with_capacity(keys.len());
        for key in keys {
            let def = self
                .engine
                .definition(&principal, &key, None)
                .await
                .map_err(|e| status(&e))?;
            definitions.push(pb::DefinitionSummary {
                case_type: key,
                name: def.name.clone(),
                latest_version: def.version,
                fingerprint: def.fingerprint().to_string(),
            });
        }
        Ok(Response::new(pb::ListDefinitionsResponse { definitions }))
    }

    async fn list_definition_versions(
        &self,
        request: Request<pb::ListDefinitionVersionsRequest>,
    ) -> Result<Response<pb::ListDefinitionVersionsResponse>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let versions = self
            .engine
            .deployments(&principal, &r.case_type)
            .await
            .map_err(|e| status(&e))?;
        if versions.is_empty() {
            return Err(Status::not_found(format!(
                "no definition of case type {} is deployed",
                r.case_type
            )));
        }
        Ok(Response::new(pb::ListDefinitionVersionsResponse {
            versions: versions
                .into_iter()
                .map(|(version, f)| pb::DefinitionVersion {
                    version,
                    fingerprint: f.to_string(),
                })
                .collect(),
        }))
    }

    async fn get_definition(
        &self,
        request: Request<pb::GetDefinitionRequest>,
    ) -> Result<Response<pb::GetDefinitionResponse>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let def = self
            .engine
            .definition(
                &principal,
                &r.case_type,
                (r.version > 0).then_some(r.version),
            )
            .await
            .map_err(|e| status(&e))?;
        let json = serde_json::to_string(&*def).map_err(crate::status::internal)?;
        Ok(Response::new(pb::GetDefinitionResponse {
            case_type: def.key.as_str().to_string(),
            version: def.version,
            name: def.name.clone(),
            fingerprint: def.fingerprint().to_string(),
            definition_json: json,
        }))
    }

    async fn open_case(
        &self,
        request: Request<pb::OpenCaseRequest>,
    ) -> Result<Response<pb::CaseOutcome>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        if r.case_type.is_empty() {
            return Err(invalid("case_type", "the case type is required"));
        }
        let mut open = OpenCase::new(
            r.case_type.clone(),
            convert::case_file(r.case_file.as_ref(), "case_file")?,
        );
        open.version = (r.version > 0).then_some(r.version);
        if !r.case_id.is_empty() {
            open.case_id = Some(
                casebook_engine::case::CaseId::new(&r.case_id)
                    .map_err(|e| invalid("case_id", e))?,
            );
        }
        open.classification = convert::classification_in(r.classification, "classification")?;
        open.context =
            convert::context(r.context.as_ref(), &format!("grpc:{}", principal.subject))?;
        let done = self
            .engine
            .open_case(&principal, open)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(outcome(&done)))
    }

    async fn execute(
        &self,
        request: Request<pb::ExecuteRequest>,
    ) -> Result<Response<pb::CaseOutcome>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let command = convert::command(r.command.as_ref())?;
        self.run(&principal, &r.case_id, command, r.context.as_ref())
            .await
    }

    async fn claim_task(
        &self,
        request: Request<pb::TaskRequest>,
    ) -> Result<Response<pb::CaseOutcome>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let item = convert::task(r.item.as_ref())?;
        self.run(
            &principal,
            &r.case_id,
            CaseCommand::Claim { item },
            r.context.as_ref(),
        )
        .await
    }

    async fn complete_task(
        &self,
        request: Request<pb::CompleteTaskRequest>,
    ) -> Result<Response<pb::CaseOutcome>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let item = convert::task(r.item.as_ref())?;
        let outputs = convert::case_file(r.outputs.as_ref(), "outputs")?;
        self.run(
            &principal,
            &r.case_id,
            CaseCommand::Complete { item, outputs },
            r.context.as_ref(),
        )
        .await
    }

    async fn plan_discretionary(
        &self,
        request: Request<pb::PlanDiscretionaryRequest>,
    ) -> Result<Response<pb::CaseOutcome>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let command = convert::discretionary(&r.item, &r.stage, "")?;
        self.run(&principal, &r.case_id, command, r.context.as_ref())
            .await
    }

    async fn get_case(
        &self,
        request: Request<pb::GetCaseRequest>,
    ) -> Result<Response<pb::CaseView>, Status> {
        let principal = caller(&request)?;
        let purpose = purpose(&request, &request.get_ref().purpose);
        let r = request.into_inner();
        let consistency = convert::consistency(r.consistency.as_ref())?;
        let result = self
            .engine
            .case_view(
                ReadContext::new(&principal).purpose(purpose.as_str()),
                &r.case_id,
                consistency,
            )
            .await;
        let found = consulted(&principal, "case", &r.case_id, &purpose, result)?;
        Ok(Response::new(convert::projected_case(&r.case_id, &found)))
    }

    async fn list_plannable(
        &self,
        request: Request<pb::GetCaseRequest>,
    ) -> Result<Response<pb::ListPlannableResponse>, Status> {
        let principal = caller(&request)?;
        let purpose = purpose(&request, &request.get_ref().purpose);
        let r = request.into_inner();
        let consistency = convert::consistency(r.consistency.as_ref())?;
        let result = self
            .engine
            .plannable_items(
                ReadContext::new(&principal).purpose(purpose.as_str()),
                &r.case_id,
                consistency,
            )
            .await;
        let items = consulted(&principal, "plannable", &r.case_id, &purpose, result)?;
        Ok(Response::new(pb::ListPlannableResponse {
            items: items
                .into_iter()
                .map(|p| pb::PlannableItem {
                    item: p.item.to_string(),
                    name: p.name,
                    stage: p.stage.map(|s| s.to_string()).unwrap_or_default(),
                    applicable: p.applicable,
                    applicability: p.applicability.unwrap_or_default(),
                    pending: p.pending,
                    repeatable: p.repeatable,
                })
                .collect(),
        }))
    }

    async fn search_cases(
        &self,
        request: Request<pb::SearchCasesRequest>,
    ) -> Result<Response<pb::SearchCasesResponse>, Status> {
        let principal = caller(&request)?;
        let purpose = purpose(&request, &request.get_ref().purpose);
        let r = request.into_inner();
        let query = convert::search(&r)?;
        let consistency = convert::consistency(r.consistency.as_ref())?;
        let result = self
            .engine
            .search_cases(
                ReadContext::new(&principal).purpose(purpose.as_str()),
                &query,
                consistency,
            )
            .await;
        let page = consulted(&principal, "search", "", &purpose, result)?;
        Ok(Response::new(pb::SearchCasesResponse {
            cases: page.items.iter().map(convert::summary).collect(),
            next_offset: next_offset(page.next_offset),
            total: page.total.map(|t| t as u64),
        }))
    }

    async fn get_timeline(
        &self,
        request: Request<pb::GetTimelineRequest>,
    ) -> Result<Response<pb::GetTimelineResponse>, Status> {
        let principal = caller(&request)?;
        let purpose = purpose(&request, &request.get_ref().purpose);
        let r = request.into_inner();
        let consistency = convert::consistency(r.consistency.as_ref())?;
        let result = self
            .engine
            .timeline(
                ReadContext::new(&principal).purpose(purpose.as_str()),
                &r.case_id,
                convert::page(r.page.as_ref()),
                consistency,
            )
            .await;
        let page = consulted(&principal, "timeline", &r.case_id, &purpose, result)?;
        Ok(Response::new(pb::GetTimelineResponse {
            entries: page.items.iter().map(convert::timeline_entry).collect(),
            next_offset: next_offset(page.next_offset),
        }))
    }

    type WatchCaseStream = ReceiverStream<Result<pb::TimelineEntry, Status>>;

    async fn watch_case(
        &self,
        request: Request<pb::WatchCaseRequest>,
    ) -> Result<Response<Self::WatchCaseStream>, Status> {
        let principal = caller(&request)?;
        let purpose = purpose(&request, &request.get_ref().purpose);
        let r = request.into_inner();
        // The case must be one the caller may see now (from the log, so a
        // case opened a moment ago is found).
        let visible = self
            .engine
            .view(
                ReadContext::new(&principal).purpose(purpose.as_str()),
                &r.case_id,
            )
            .await;
        consulted(&principal, "watch", &r.case_id, &purpose, visible)?;
        let subscription = self
            .engine
            .case_changes(&principal, &r.case_id)
            .await
            .map_err(|e| status(&e))?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(watch(
            self.engine.clone(),
            self.stopping.clone(),
            (Arc::new(principal), purpose),
            r.case_id,
            r.from_version,
            subscription,
            tx,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_work_queue(
        &self,
        request: Request<pb::GetWorkQueueRequest>,
    ) -> Result<Response<pb::GetWorkQueueResponse>, Status> {
        let principal = caller(&request)?;
        let purpose = purpose(&request, "");
        let r = request.into_inner();
        let some = |s: &String| (!s.is_empty()).then(|| s.clone());
        let query = WorkQueueQuery {
            role: some(&r.role),
            assignee: some(&r.assignee),
            team: some(&r.team),
            case_type: some(&r.case_type),
            unassigned_only: r.unassigned_only,
            page: convert::page(r.page.as_ref()),
            tasks: match pb::TaskStates::try_from(r.tasks) {
                Ok(pb::TaskStates::Active) => TaskStates::Active,
                Ok(pb::TaskStates::Startable) => TaskStates::Startable,
                Ok(pb::TaskStates::Both) => TaskStates::Both,
                Err(_) => {
                    return Err(crate::status::invalid(
                        "tasks",
                        "unknown TaskStates value: use ACTIVE, STARTABLE or BOTH",
                    ))
                }
            },
        };
        let consistency = convert::consistency(r.consistency.as_ref())?;
        let result = self
            .engine
            .work_queue(
                ReadContext::new(&principal).purpose(purpose.as_str()),
                &query,
                consistency,
            )
            .await;
        let page = consulted(&principal, "work_queue", "", &purpose, result)?;
        Ok(Response::new(pb::GetWorkQueueResponse {
            items: page.items.iter().map(convert::work_item).collect(),
            next_offset: next_offset(page.next_offset),
        }))
    }

    async fn list_incidents(
        &self,
        request: Request<pb::ListIncidentsRequest>,
    ) -> Result<Response<pb::ListIncidentsResponse>, Status> {
        let principal = caller(&request)?;
        let purpose = purpose(&request, "");
        let consistency = convert::consistency(request.get_ref().consistency.as_ref())?;
        let page = convert::page(request.get_ref().page.as_ref());
        let result = self
            .engine
            .incidents(
                ReadContext::new(&principal).purpose(purpose.as_str()),
                page,
                consistency,
            )
            .await;
        let page = consulted(&principal, "incidents", "", &purpose, result)?;
        Ok(Response::new(pb::ListIncidentsResponse {
            incidents: page.items.iter().map(convert::incident).collect(),
            next_offset: next_offset(page.next_offset),
        }))
    }

    async fn list_deadlines(
        &self,
        request: Request<pb::ListDeadlinesRequest>,
    ) -> Result<Response<pb::ListDeadlinesResponse>, Status> {
        let principal = caller(&request)?;
        let purpose = purpose(&request, "");
        let r = request.into_inner();
        let now = self.engine.now();
        let due_before = match &r.due_before {
            Some(t) => convert::timestamp_in(t, "due_before")?,
            None => now,
        };
        let query = DeadlineQuery {
            due_before,
            now,
            case_type: (!r.case_type.is_empty()).then(|| r.case_type.clone()),
            page: convert::page(r.page.as_ref()),
        };
        let consistency = convert::consistency(r.consistency.as_ref())?;
        let result = self
            .engine
            .deadlines(
                ReadContext::new(&principal).purpose(purpose.as_str()),
                &query,
                consistency,
            )
            .await;
        let page = consulted(&principal, "deadlines", "", &purpose, result)?;
        Ok(Response::new(pb::ListDeadlinesResponse {
            deadlines: page.items.iter().map(convert::deadline).collect(),
            next_offset: next_offset(page.next_offset),
        }))
    }
}

/// Validates a definition: what deploy would say, as data.
pub fn validate(source: &str, format: Format) -> pb::ValidateDefinitionResponse {
    match CaseDefinition::parse(source, format) {
        Ok(def) => pb::ValidateDefinitionResponse {
            valid: true,
            problems: Vec::new(),
            case_type: def.key.as_str().to_string(),
            version: def.version,
        },
        Err(e) => pb::ValidateDefinitionResponse {
            valid: false,
            problems: e
                .problems
                .iter()
                .map(|p| pb::DefinitionProblem {
                    path: p.path.clone(),
                    message: p.message.clone(),
                })
                .collect(),
            case_type: String::new(),
            version: 0,
        },
    }
}

/// Follows a case for [`CasesService::watch_case`]: for each event the log
/// records, waits until the timeline has it and sends the caller's new
/// entries, until the caller goes away or the case leaves their sight.
async fn watch(
    engine: Engine,
    mut stopping: Stopping,
    (principal, purpose): (Arc<Principal>, String),
    case_id: String,
    from_version: u64,
    mut subscription: casebook_engine::engine::CaseChanges,
    tx: mpsc::Sender<Result<pb::TimelineEntry, Status>>,
) {
    // Timeline entries the caller has been given or skipped, in order.
    let mut seen = 0usize;
    let mut sent_up_to: Option<u64> = None;
    loop {
        let event = tokio::select! {
            e = subscription.next() => e,
            _ = tx.closed() => return,
            _ = stopping.fired() => {
                let _ = tx.send(Err(Stopping::status())).await;
                return;
            }
        };
        let (version, position) = match event {
            Ok(e) => e,
            Err(e) => {
                let _ = tx.send(Err(status(&e))).await;
                return;
            }
        };
        if sent_up_to.is_some_and(|v| version.0 <= v) {
            continue;
        }
        loop {
            let page = engine
                .timeline(
                    // Each page the watch sends is a consultation, audited.
                    ReadContext::new(&principal).purpose(purpose.as_str()),
                    &case_id,
                    PageRequest {
                        offset: seen,
                        limit: 1000,
                    },
                    Consistency::at_least(position),
                )
                .await;
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    // Gone from the caller's sight (NOT_FOUND), or the
                    // views are unavailable: the stream ends with why.
                    let _ = tx.send(Err(status(&e))).await;
                    return;
                }
            };
            seen += page.items.len();
            for entry in &page.items {
                sent_up_to = Some(sent_up_to.map_or(entry.version.0, |v| v.max(entry.version.0)));
                if entry.version.0 < from_version {
                    continue;
                }
                if tx.send(Ok(convert::timeline_entry(entry))).await.is_err() {
                    return;
                }
            }
            if page.next_offset.is_none() {
                break;
            }
        }
    }
}
