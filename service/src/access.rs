//! The access log: every consultation of case data over the API — who,
//! which tenant, what, which case, the purpose they stated, and whether it
//! was answered — on the `casebook::access` tracing target, refused
//! attempts included.

use casebook_engine::security::Principal;
use tonic::{Code, Request, Status};

use crate::status::status;

/// The metadata header a caller may state their purpose in.
pub const PURPOSE_HEADER: &str = "x-casebook-purpose";

/// The caller's stated purpose: the request field, else the header.
pub fn purpose<T>(request: &Request<T>, field: &str) -> String {
    if !field.is_empty() {
        return field.to_string();
    }
    request
        .metadata()
        .get(PURPOSE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// Records a consultation of case data (structured log, target
/// `casebook::access`): who, which tenant, what, why, and whether it was
/// answered — then the answer, or its status.
pub fn consulted<T, E: crate::status::Kinded>(
    principal: &Principal,
    what: &str,
    case_id: &str,
    purpose: &str,
    result: Result<T, E>,
) -> Result<T, Status> {
    let result = result.map_err(|e| status(&e));
    let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
    access(principal, what, case_id, purpose, code);
    result
}

/// Logs one consultation and how it was answered.
pub fn access(principal: &Principal, what: &str, case_id: &str, purpose: &str, outcome: Code) {
    tracing::info!(
        target: "casebook::access",
        tenant = %principal.tenant,
        subject = %principal.subject,
        what,
        case_id,
        purpose,
        outcome = ?outcome,
        "case data consulted"
    );
}
