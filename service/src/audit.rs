//! The `casebook.v1.Audit` service: an auditor's queries of their tenant's audit of reads (DPA 2018 s62), through [`Engine::audit_entries`], which checks the role and clearance and records the query itself.

use casebook_engine::audit::{AuditCursor, AuditEntry, AuditQuery, ReadContext};
use casebook_engine::engine::Engine;
use casebook_proto::v1 as pb;
use casebook_proto::v1::audit_server::Audit;
use tonic::{Request, Response, Status};

use crate::access::{consulted, purpose};
use crate::auth::caller;
use crate::convert;
use crate::status::invalid;

/// The default page of entries.
const DEFAULT_LIMIT: usize = 100;

/// The Audit service over an engine.
#[derive(Clone)]
pub struct AuditService {
    engine: Engine,
}

impl AuditService {
    /// The service for `engine`.
    pub fn new(engine: Engine) -> Self {
        AuditService { engine }
    }
}

fn entry(e: &AuditEntry) -> pb::AuditEntry {
    pb::AuditEntry {
        at: Some(convert::timestamp(e.at)),
        subject: e.subject.clone(),
        roles: e.roles.clone(),
        clearance: convert::classification(e.clearance) as i32,
        read: e.read.as_str().to_string(),
        case_ids: e.cases.clone(),
        query: e.query.clone().unwrap_or_default(),
        purpose: e.purpose.clone().unwrap_or_default(),
        correlation_id: e.correlation.clone().unwrap_or_default(),
        outcome: e.outcome.describe(),
        marking: convert::classification(e.marking) as i32,
    }
}

#[tonic::async_trait]
impl Audit for AuditService {
    async fn query_audit(
        &self,
        request: Request<pb::QueryAuditRequest>,
    ) -> Result<Response<pb::QueryAuditResponse>, Status> {
        let principal = caller(&request)?;
        let purpose = purpose(&request, &request.get_ref().purpose);
        let r = request.into_inner();
        let from = r
            .from
            .as_ref()
            .ok_or_else(|| invalid("from", "the start of the range is required"))?;
        let to =
            r.to.as_ref()
                .ok_or_else(|| invalid("to", "the end of the range is required"))?;
        let some = |s: &String| (!s.is_empty()).then(|| s.clone());
        let query = AuditQuery {
            from: convert::timestamp_in(from, "from")?,
            to: convert::timestamp_in(to, "to")?,
            case_id: some(&r.case_id),
            subject: some(&r.subject),
            limit: match r.limit {
                0 => DEFAULT_LIMIT,
                n => n as usize,
            },
            after: match r.after.as_str() {
                "" => None,
                s => Some(s.parse::<AuditCursor>().map_err(|e| invalid("after", e))?),
            },
        };
        let result = self
            .engine
            .audit_entries(
                ReadContext::new(&principal).purpose(purpose.as_str()),
                &query,
            )
            .await;
        let page = consulted(&principal, "audit", &r.case_id, &purpose, result)?;
        Ok(Response::new(pb::QueryAuditResponse {
            entries: page.entries.iter().map(entry).collect(),
            next: page.next.map(|c| c.to_string()).unwrap_or_default(),
        }))
    }
}
