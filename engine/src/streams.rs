//! Stream naming: every category of stream the engine writes, built in one
//! place. A stream id is `<tenant>/<category>/<id>`.
//!
//! - `<tenant>/case/<case id>`: one case's events;
//! - `<tenant>/definition/<case type>`: the deployments of one case type;
//! - `<tenant>/calendar/working-days`: the tenant's non-working days;
//! - `casebook.platform/tenant/<tenant id>`: one tenant's registration,
//!   suspensions and reactivations, in the reserved platform tenant
//!   ([`crate::security::PLATFORM_TENANT`]).
//! - `<tenant>/audit/<YYYY-MM-DD>`: the day's audit of reads (UTC; see
//!   [`crate::audit`]).
//! - `<tenant>/resource/<kind>.<name>`: the versions of one of the
//!   tenant's resource documents (boundary sets, decision tables, reference
//!   data, contacts, the retention policy; see [`crate::resources`]).
//! - `<tenant>/governance/<subject id>`: one subject's (nominal's) reviews
//!   and holds; `<tenant>/case-hold/<case id>`: the legal holds on one case
//!   (see [`crate::records`]).

use crate::ids::{IdError, TenantId};
use crate::log::StreamId;

/// The category of case streams.
pub const CASE: &str = "case";
/// The category of definition (deployment) streams.
pub const DEFINITION: &str = "definition";
/// The category of the working-day calendar stream.
pub const CALENDAR: &str = "calendar";
/// The id of the one calendar stream per tenant.
pub const CALENDAR_ID: &str = "working-days";
/// The category of tenant registry streams (platform tenant only).
pub const TENANT: &str = "tenant";

/// The category of audit streams (one per tenant and day).
pub const AUDIT: &str = "audit";

/// The category of resource streams (one per tenant, kind and name).
pub const RESOURCE: &str = "resource";

/// The category of subject governance streams (one per subject).
pub const GOVERNANCE: &str = "governance";

/// The category of case hold streams (one per held case).
pub const CASE_HOLD: &str = "case-hold";

/// Every category the engine writes itself. Outside code (the gRPC events
/// API, integrations) must not write them, and reading them raw shows every
/// field of a case; a new category the engine writes belongs here.
pub const ENGINE_CATEGORIES: &[&str] = &[
    CASE, DEFINITION, CALENDAR, TENANT, AUDIT, RESOURCE, GOVERNANCE, CASE_HOLD,
];

/// Whether the engine writes streams of `category` itself.
pub fn is_engine_category(category: &str) -> bool {
    ENGINE_CATEGORIES.contains(&category)
}

/// The stream of case `case_id`. Errors: [`IdError`] for an id that cannot
/// name a stream.
pub fn case(tenant: &TenantId, case_id: &str) -> Result<StreamId, IdError> {
    StreamId::new(tenant.clone(), CASE, case_id)
}

/// The stream of the deployments of `case_type`. Errors: [`IdError`].
pub fn definition(tenant: &TenantId, case_type: &str) -> Result<StreamId, IdError> {
    StreamId::new(tenant.clone(), DEFINITION, case_type)
}

/// The tenant's working-day calendar stream. Errors: none in practice (the
/// parts are constants); typed for uniformity.
pub fn calendar(tenant: &TenantId) -> Result<StreamId, IdError> {
    StreamId::new(tenant.clone(), CALENDAR, CALENDAR_ID)
}

/// The stream of the versions of resource `name` of `kind` (see
/// [`crate::resources::ResourceKind::as_str`]). Errors: [`IdError`].
pub fn resource(tenant: &TenantId, kind: &str, name: &str) -> Result<StreamId, IdError> {
    StreamId::new(tenant.clone(), RESOURCE, &format!("{kind}.{name}"))
}

/// The governance stream of subject `subject` (a subject id, never
/// personal data). Errors: [`IdError`].
pub fn governance(tenant: &TenantId, subject: &str) -> Result<StreamId, IdError> {
    StreamId::new(tenant.clone(), GOVERNANCE, subject)
}

/// The stream of the holds on case `case_id`. Errors: [`IdError`].
pub fn case_hold(tenant: &TenantId, case_id: &str) -> Result<StreamId, IdError> {
    StreamId::new(tenant.clone(), CASE_HOLD, case_id)
}

/// The registry stream of `tenant`, in the platform tenant. Errors:
/// [`IdError`] (none in practice: the platform tenant id is a constant and
/// `tenant` a valid id).
pub fn tenant(tenant: &TenantId) -> Result<StreamId, IdError> {
    StreamId::new(
        TenantId::new(crate::security::PLATFORM_TENANT)?,
        TENANT,
        tenant.as_str(),
    )
}

/// Microseconds in a day.
const DAY_MICROS: i64 = 86_400_000_000;

/// The day number (days since 1970-01-01, UTC) of `at`.
pub fn day_of(at: crate::time::Timestamp) -> i64 {
    at.as_micros().div_euclid(DAY_MICROS)
}

/// The tenant's audit stream of the day `at` falls on (UTC). Errors:
/// [`IdError`] for a day outside the calendar's range.
pub fn audit(tenant: &TenantId, at: crate::time::Timestamp) -> Result<StreamId, IdError> {
    audit_day(tenant, day_of(at))
}

/// The tenant's audit stream of day number `day` (see [`day_of`]).
/// Errors: [`IdError`] for a day outside the calendar's range.
pub fn audit_day(tenant: &TenantId, day: i64) -> Result<StreamId, IdError> {
    let id = crate::calendar::date_of(day)
        .map(crate::calendar::format_date)
        .unwrap_or_else(|| format!("day{day}"));
    StreamId::new(tenant.clone(), AUDIT, &id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_named_tenant_category_id() {
        let kent = TenantId::new("kent").unwrap();
        assert_eq!(case(&kent, "BUR-1").unwrap().to_string(), "kent/case/BUR-1");
        assert_eq!(
            definition(&kent, "burglary").unwrap().to_string(),
            "kent/definition/burglary"
        );
        assert_eq!(
            calendar(&kent).unwrap().to_string(),
            "kent/calendar/working-days"
        );
        assert!(case(&kent, "a/b").is_err());
        assert_eq!(
            tenant(&kent).unwrap().to_string(),
            "casebook.platform/tenant/kent"
        );
        let noon = crate::time::Timestamp::from_micros(20_000 * DAY_MICROS + DAY_MICROS / 2);
        assert_eq!(
            audit(&kent, noon).unwrap().to_string(),
            "kent/audit/2024-10-04"
        );
        assert!(is_engine_category(AUDIT));
        assert_eq!(
            resource(&kent, "boundaries", "wards").unwrap().to_string(),
            "kent/resource/boundaries.wards"
        );
        assert!(is_engine_category(RESOURCE));
    }
}
