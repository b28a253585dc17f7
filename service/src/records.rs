//! The `casebook.v1.Records` service: the retention policy, subjects, reviews and legal holds, through the engine's records API (`casebook_engine::records`), which checks roles, tenant and clearance; each review and hold is logged on the `casebook::records` target, each read on `casebook::access`.

use casebook_engine::audit::ReadContext;
use casebook_engine::calendar::{format_date, parse_date, Date};
use casebook_engine::engine::Engine;
use casebook_engine::projection::query::PageRequest;
use casebook_engine::records::{
    Decision, Hold, HoldKind, HoldTarget, NracAnswer, ReviewDueQuery, ReviewSubject, SubjectId,
    SubjectRecord,
};
use casebook_engine::security::Principal;
use casebook_proto::v1 as pb;
use casebook_proto::v1::records_server::Records;
use tonic::{Code, Request, Response, Status};

use crate::access::{consulted, purpose};
use crate::auth::caller;
use crate::convert;
use crate::status::{invalid, status, Kinded};

/// The default page of the review-due list.
const DEFAULT_LIMIT: usize = 50;

/// The Records service over an engine.
#[derive(Clone)]
pub struct RecordsService {
    engine: Engine,
}

impl RecordsService {
    /// The service for `engine`.
    pub fn new(engine: Engine) -> Self {
        RecordsService { engine }
    }
}

fn date(d: Option<Date>) -> String {
    d.map(format_date).unwrap_or_default()
}

fn date_in(s: &str, path: &str) -> Result<Option<Date>, Status> {
    match s {
        "" => Ok(None),
        s => parse_date(s)
            .map(Some)
            .map_err(|_| invalid(path, format!("'{s}' is not a date: use YYYY-MM-DD"))),
    }
}

fn subject_in(s: &str) -> Result<SubjectId, Status> {
    SubjectId::parse(s).map_err(|e| status(&e))
}

fn hold(h: &Hold) -> pb::Hold {
    let (subject, case_id) = match &h.target {
        HoldTarget::Subject(s) => (s.clone(), String::new()),
        HoldTarget::Case(c) => (String::new(), c.clone()),
    };
    pb::Hold {
        id: h.id.clone(),
        subject,
        case_id,
        kind: h.kind.as_str().to_string(),
        reason: h.reason.clone(),
        placed_by: h.placed_by.clone(),
        placed_on: format_date(h.placed_on),
    }
}

fn subject(r: &SubjectRecord) -> pb::Subject {
    pb::Subject {
        id: r.id.to_string(),
        date_of_birth: date(r.date_of_birth),
        case_ids: r.cases.clone(),
        class: r.class.clone(),
        clear_period_start: format_date(r.clear_period_start),
        first_recorded: format_date(r.first_recorded),
        holds: r.holds.iter().map(hold).collect(),
        state: r.state.as_str().to_string(),
        last_decision: r
            .last_review
            .map(|(d, _)| d.as_str().to_string())
            .unwrap_or_default(),
        last_reviewed: date(r.last_review.map(|(_, d)| d)),
        due: date(r.due),
        disposable_from: date(r.disposable_from),
        age_limited: r.age_limited,
        version: r.version,
    }
}

/// Logs a records decision (a review, a hold placed or released) and how
/// it was answered, then the answer or its status.
fn decided<T, E: Kinded>(
    principal: &Principal,
    what: &str,
    target: &str,
    result: Result<T, E>,
) -> Result<T, Status> {
    let result = result.map_err(|e| status(&e));
    let outcome = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
    tracing::info!(
        target: "casebook::records",
        tenant = %principal.tenant,
        subject = %principal.subject,
        what,
        target,
        outcome = ?outcome,
        "records decision"
    );
    result
}

#[tonic::async_trait]
impl Records for RecordsService {
    async fn deploy_retention_policy(
        &self,
        request: Request<pb::DeployRetentionPolicyRequest>,
    ) -> Result<Response<pb::DeployRetentionPolicyResponse>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let result = self
            .engine
            .deploy_retention_policy(&principal, &r.source)
            .await;
        let d = decided(&principal, "deploy retention policy", "policy", result)?;
        Ok(Response::new(pb::DeployRetentionPolicyResponse {
            version: d.version,
            newly_deployed: d.newly_deployed,
        }))
    }

    async fn get_subject_id(
        &self,
        request: Request<pb::GetSubjectIdRequest>,
    ) -> Result<Response<pb::GetSubjectIdResponse>, Status> {
        let principal = caller(&request)?;
        let id = self
            .engine
            .subject_id(&principal, &request.get_ref().reference)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::GetSubjectIdResponse {
            subject: id.to_string(),
        }))
    }

    async fn get_subject(
        &self,
        request: Request<pb::GetSubjectRequest>,
    ) -> Result<Response<pb::Subject>, Status> {
        let principal = caller(&request)?;
        let purpose = purpose(&request, &request.get_ref().purpose);
        let id = subject_in(&request.get_ref().subject)?;
        let result = self
            .engine
            .subject(ReadContext::new(&principal).purpose(purpose.as_str()), &id)
            .await;
        let record = consulted(&principal, "subject", id.as_str(), &purpose, result)?;
        Ok(Response::new(subject(&record)))
    }

    async fn review_due(
        &self,
        request: Request<pb::ReviewDueRequest>,
    ) -> Result<Response<pb::ReviewDueResponse>, Status> {
        let principal = caller(&request)?;
        let purpose = purpose(&request, &request.get_ref().purpose);
        let r = request.into_inner();
        let query = ReviewDueQuery {
            class: (!r.class.is_empty()).then(|| r.class.clone()),
            due_by: date_in(&r.due_by, "due_by")?,
            page: PageRequest {
                offset: r.offset as usize,
                limit: match r.limit {
                    0 => DEFAULT_LIMIT,
                    n => n as usize,
                },
            },
        };
        let result = self
            .engine
            .review_due(
                ReadContext::new(&principal).purpose(purpose.as_str()),
                &query,
            )
            .await;
        let page = consulted(&principal, "review_due", "", &purpose, result)?;
        let to_u32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Ok(Response::new(pb::ReviewDueResponse {
            items: page
                .items
                .iter()
                .map(|i| pb::ReviewDueItem {
                    subject: i.subject.to_string(),
                    class: i.class.clone(),
                    due: format_date(i.due),
                    action: i.action.as_str().to_string(),
                    held: i.held,
                    state: i.state.as_str().to_string(),
                })
                .collect(),
            more: page.next_offset.is_some(),
            next_offset: page.next_offset.map(to_u32).unwrap_or_default(),
            total: page.total.map(to_u32).unwrap_or_default(),
        }))
    }

    async fn review_subject(
        &self,
        request: Request<pb::ReviewSubjectRequest>,
    ) -> Result<Response<pb::ReviewSubjectResponse>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let id = subject_in(&r.subject)?;
        let decision = Decision::parse(&r.decision).ok_or_else(|| {
            invalid(
                "decision",
                format!(
                    "'{}' is not a decision: use retain, dispose, restrict or archive",
                    r.decision.chars().take(40).collect::<String>()
                ),
            )
        })?;
        let review = ReviewSubject {
            subject: id.clone(),
            reviewer_role: r.reviewer_role,
            nrac: r
                .nrac
                .into_iter()
                .map(|a| NracAnswer {
                    question: a.question,
                    answer: a.answer,
                    rationale: a.rationale,
                })
                .collect(),
            decision,
            next_review: date_in(&r.next_review, "next_review")?,
            rationale: r.rationale,
            expected_version: r.expected_version,
        };
        let result = self.engine.review_subject(&principal, review).await;
        let outcome = decided(&principal, "review subject", id.as_str(), result)?;
        Ok(Response::new(pb::ReviewSubjectResponse {
            subject: outcome.subject.to_string(),
            decision: outcome.decision.as_str().to_string(),
            next_review: date(outcome.next_review),
            version: outcome.version,
        }))
    }

    async fn place_hold(
        &self,
        request: Request<pb::PlaceHoldRequest>,
    ) -> Result<Response<pb::Hold>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let target = match r.target {
            Some(pb::place_hold_request::Target::Subject(s)) => {
                HoldTarget::Subject(subject_in(&s)?.to_string())
            }
            Some(pb::place_hold_request::Target::CaseId(c)) => HoldTarget::Case(c),
            None => return Err(invalid("target", "name a subject or a case_id")),
        };
        let kind = HoldKind::parse(&r.kind).ok_or_else(|| {
            invalid(
                "kind",
                "not a hold kind: use investigation, disclosure, litigation or inquiry",
            )
        })?;
        let named = match &target {
            HoldTarget::Subject(s) | HoldTarget::Case(s) => s.clone(),
        };
        let result = self
            .engine
            .place_hold(&principal, target, kind, &r.reason)
            .await;
        let placed = decided(&principal, "place hold", &named, result)?;
        Ok(Response::new(hold(&placed)))
    }

    async fn release_hold(
        &self,
        request: Request<pb::ReleaseHoldRequest>,
    ) -> Result<Response<pb::ReleaseHoldResponse>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let result = self
            .engine
            .release_hold(&principal, &r.hold, &r.reason)
            .await;
        decided(&principal, "release hold", &r.hold, result)?;
        Ok(Response::new(pb::ReleaseHoldResponse {}))
    }

    async fn get_case_evidential(
        &self,
        request: Request<pb::GetCaseEvidentialRequest>,
    ) -> Result<Response<pb::CaseView>, Status> {
        let principal = caller(&request)?;
        let purpose = purpose(&request, &request.get_ref().purpose);
        let r = request.into_inner();
        let consistency = convert::consistency(r.consistency.as_ref())?;
        let reader = ReadContext::new(&principal).purpose(purpose.as_str());
        let result = self
            .engine
            .case_view_evidential(reader, &r.case_id, consistency)
            .await;
        let found = consulted(&principal, "evidential case", &r.case_id, &purpose, result)?;
        Ok(Response::new(convert::projected_case(&r.case_id, &found)))
    }
}
