//! Built-in business services, each configured per tenant and registered
//! like any plugin (`ServiceRegistry::with`).
//!
//! - [`CalendarService`] (`calendar.add_working_days`): the instant N
//!   working days after another, by the England and Wales bank holidays
//!   (computed by rule for any year) and each tenant's own non-working days.
//! - [`GisService`] (`gis.locate`): the ward, borough and beat a point lies
//!   in, from the tenant's GeoJSON boundary set.
//! - [`DecisionService`] (`decision.evaluate`): the first matching rule of
//!   one of the tenant's decision tables.
//! - [`ReferenceService`] (`reference.lookup`): an entry of one of the
//!   tenant's reference-data tables.
//! - [`EmailService`] (`notify.email`): an email filled from case fields,
//!   sent over SMTP or written to a folder, recorded on the case as a
//!   disclosure.
//! - [`AlertService`] (`alert.raise`): an alert filled from case fields,
//!   raised to a role's or a team's work queue until someone there
//!   acknowledges it.
//!
//! The services that read data ([`crate::resources`]) see only the case's
//! tenant's documents, through [`crate::orchestration::ServiceContext`].

mod alert;
mod calendar;
mod decision;
mod gis;
pub mod notify;
mod reference;

pub use alert::{AlertConfig, AlertService};
pub use calendar::CalendarService;
pub use decision::DecisionService;
pub use gis::GisService;
pub use notify::{EmailService, EmailSink};
pub use reference::ReferenceService;

use super::ServiceError;
use crate::engine::EngineError;
use crate::resources::ResourceError;

/// A resource error as a service error: a missing or invalid document is
/// permanent (it needs someone to deploy one); a store that fails is
/// retryable.
pub(crate) fn resource_error(e: EngineError) -> ServiceError {
    match e {
        EngineError::Resource(
            e @ (ResourceError::Unknown { .. }
            | ResourceError::Invalid { .. }
            | ResourceError::InvalidName { .. }
            | ResourceError::Stored { .. }),
        ) => ServiceError::permanent(e.to_string()),
        EngineError::InvalidId(e) => ServiceError::permanent(e.to_string()),
        other => ServiceError::retryable(other.to_string()),
    }
}

/// The one input of `names` that is given (not null), with its text:
/// e.g. the recipient of an email, the queue of an alert.
pub(crate) fn one_text_of<'a, 'i>(
    input: &'i super::ServiceValues,
    names: &[&'a str],
) -> Result<(&'a str, &'i str), ServiceError> {
    let given = names
        .iter()
        .copied()
        .filter(|k| input.get(*k).is_some_and(|v| !v.is_null()))
        .collect::<Vec<_>>();
    let [which] = given.as_slice() else {
        let names = names.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>();
        let (last, rest) = names
            .split_last()
            .map_or(("", &[][..]), |(l, r)| (l.as_str(), r));
        return Err(ServiceError::permanent(format!(
            "give exactly one of {} or {last}",
            rest.join(", ")
        )));
    };
    Ok((which, text_input(input, which)?))
}

/// The text input `name`, required.
pub(crate) fn text_input<'a>(
    input: &'a super::ServiceValues,
    name: &str,
) -> Result<&'a str, ServiceError> {
    input
        .get(name)
        .and_then(|v| v.as_str())
        .ok_or_else(|| ServiceError::permanent(format!("'{name}' must be text")))
}
