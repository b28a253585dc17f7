//! Built-in business services, each configured per tenant and registered
//! like any plugin (`ServiceRegistry::with`).
//!
//! - [`CalendarService`] (`calendar.add_working_days`): the instant N
//!   working days after another, by the England and Wales bank holidays
//!   (computed by rule for any year) and each tenant's own non-working days.

mod calendar;

pub use calendar::CalendarService;
