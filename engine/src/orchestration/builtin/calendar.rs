//! `calendar.add_working_days`: working-day arithmetic as a service, so a
//! definition can compute a due date into the case file (e.g. "the victim
//! must be updated within 5 working days of the charge").

use std::collections::HashMap;

use crate::calendar::{Date, WorkingCalendar};
use crate::definition::FieldType;
use crate::log::{TenantId, Timestamp};

use super::super::service::{
    BusinessService, ServiceContext, ServiceContract, ServiceError, ServiceValues,
};

/// The service's name.
pub const NAME: &str = "calendar.add_working_days";

/// Most working days one call may add (about 40 years).
pub const MAX_DAYS: i64 = 10_000;

/// Adds working days to an instant: input `from` (date_time) and `days`
/// (integer, 0 to 10,000); output `due` (date_time, the same time of
/// day on the working day reached). Weekends and England and Wales bank
/// holidays never count; a tenant's own non-working days are configured
/// with [`CalendarService::with_non_working_days`].
///
/// ```
/// use casebook::orchestration::builtin::CalendarService;
/// use casebook::orchestration::BusinessService;
/// assert_eq!(CalendarService::new().name(), "calendar.add_working_days");
/// ```
#[derive(Debug, Clone, Default)]
pub struct CalendarService {
    tenants: HashMap<TenantId, WorkingCalendar>,
}

impl CalendarService {
    /// Weekends and bank holidays only, for every tenant.
    pub fn new() -> Self {
        CalendarService::default()
    }

    /// This service with `tenant`'s own non-working days as well.
    pub fn with_non_working_days(
        mut self,
        tenant: TenantId,
        days: impl IntoIterator<Item = Date>,
    ) -> Self {
        self.tenants
            .insert(tenant, WorkingCalendar::with_non_working_days(days));
        self
    }
}

fn parse_instant(v: Option<&serde_json::Value>) -> Result<Timestamp, ServiceError> {
    let s = v
        .and_then(|v| v.as_str())
        .ok_or_else(|| ServiceError::permanent("'from' must be an RFC 3339 date-time"))?;
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| ServiceError::permanent(format!("'from' is not RFC 3339 ({e}): {s}")))?;
    let micros = t.unix_timestamp_nanos() / 1_000;
    i64::try_from(micros)
        .map(Timestamp::from_micros)
        .map_err(|_| ServiceError::permanent(format!("'from' is out of range: {s}")))
}

fn format_instant(t: Timestamp) -> Result<String, ServiceError> {
    let dt = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.as_micros()) * 1_000)
        .map_err(|_| ServiceError::permanent("the result is out of range"))?;
    dt.format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| ServiceError::permanent(format!("the result cannot be written: {e}")))
}

#[async_trait::async_trait]
impl BusinessService for CalendarService {
    fn name(&self) -> &str {
        NAME
    }

    fn contract(&self) -> ServiceContract {
        ServiceContract::new()
            .input("from", FieldType::DateTime, true)
            .input("days", FieldType::Integer, true)
            .output("due", FieldType::DateTime)
    }

    async fn invoke(
        &self,
        ctx: &ServiceContext,
        input: ServiceValues,
    ) -> Result<ServiceValues, ServiceError> {
        let from = parse_instant(input.get("from"))?;
        let days = input
            .get("days")
            .and_then(|v| v.as_i64())
            .filter(|d| (0..=MAX_DAYS).contains(d))
            .ok_or_else(|| {
                ServiceError::permanent(format!("'days' must be a whole number 0 to {MAX_DAYS}"))
            })?;
        let calendar = self.tenants.get(&ctx.tenant).cloned().unwrap_or_default();
        let due = calendar.add_working_days(from, days as u32);
        Ok([("due".to_string(), serde_json::json!(format_instant(due)?))].into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::ItemKey;
    use serde_json::json;

    fn ctx(tenant: &str) -> ServiceContext {
        let tenant = TenantId::new(tenant).unwrap();
        ServiceContext::new(
            tenant.clone(),
            "c",
            ItemKey::new("due"),
            crate::resources::TenantResources::none(tenant),
        )
    }

    async fn add(
        s: &CalendarService,
        tenant: &str,
        from: &str,
        days: i64,
    ) -> Result<String, ServiceError> {
        let input = [
            ("from".to_string(), json!(from)),
            ("days".to_string(), json!(days)),
        ]
        .into();
        let out = s.invoke(&ctx(tenant), input).await?;
        Ok(out["due"].as_str().unwrap().to_string())
    }

    #[tokio::test]
    async fn working_days_skip_easter_christmas_and_a_tenants_own_days() {
        let kent = TenantId::new("kent").unwrap();
        let closure = Date::from_calendar_date(2027, time::Month::March, 31).unwrap();
        let s = CalendarService::new().with_non_working_days(kent, [closure]);
        // Thursday before Easter 2027: Good Friday and Easter Monday skipped.
        assert_eq!(
            add(&s, "essex", "2027-03-25T09:00:00Z", 1).await.unwrap(),
            "2027-03-30T09:00:00Z"
        );
        // Kent is also closed on Wednesday 31st.
        assert_eq!(
            add(&s, "kent", "2027-03-25T09:00:00Z", 2).await.unwrap(),
            "2027-04-01T09:00:00Z"
        );
        // Christmas 2027 falls on a Saturday: 27 and 28 December are the
        // substitute days.
        assert_eq!(
            add(&s, "essex", "2027-12-24T12:00:00Z", 1).await.unwrap(),
            "2027-12-29T12:00:00Z"
        );
        // Far beyond any published list: Easter 2045 is 9 April.
        assert_eq!(
            add(&s, "essex", "2045-04-06T08:30:00Z", 1).await.unwrap(),
            "2045-04-11T08:30:00Z"
        );
        assert_eq!(s.contract().inputs.len(), 2);
    }

    #[tokio::test]
    async fn bad_input_is_a_permanent_error() {
        let s = CalendarService::new();
        for (from, days) in [
            ("yesterday", 1),
            ("2027-03-25T09:00:00Z", -1),
            ("2027-03-25T09:00:00Z", MAX_DAYS + 1),
        ] {
            let err = add(&s, "kent", from, days).await.unwrap_err();
            assert!(!err.is_retryable(), "{err}");
        }
        let err = s
            .invoke(&ctx("kent"), ServiceValues::new())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("'from'"), "{err}");
    }
}
