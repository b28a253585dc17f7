//! When a subject falls due and when it may be disposed of: pure functions
//! of the subject's facts and its retention class (no clock, no I/O; the
//! caller passes today). Days are day numbers (days since 1970-01-01).
//!
//! - **Due.** The later of the clear-period date (the clear period's start
//!   plus `clear_period`) and the review date (the last review's
//!   `next_review`; else the last review, or the first record, plus
//!   `review_every`), whichever of them the class has. A class with
//!   neither never falls due on its own.
//! - **Disposable.** From the day the subject reaches `retain_until_age`;
//!   never, with that rule and no date of birth; any day without it.

use serde::{Deserialize, Serialize};

use crate::calendar::{date_of, day_number};
use crate::resources::retention::{add_period, date_period, RetentionClass};

/// What state a subject's record is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SubjectState {
    /// Recorded, not yet reviewed.
    #[default]
    Active,
    /// Reviewed and kept.
    Retained,
    /// Processing restricted (DPA 2018 s47(2)): by a review, or a hold
    /// placed on a record awaiting disposal.
    Restricted,
    /// Archived.
    Archived,
    /// A review decided to dispose of it (erasure follows).
    AwaitingDisposal,
    /// Erased by crypto-shredding: its data key is destroyed, its personal
    /// data unreadable everywhere (`Engine::erase_subject`).
    Erased,
}

impl SubjectState {
    /// The name: `active`, `retained`, `restricted`, `archived`,
    /// `awaiting_disposal`, `erased`.
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectState::Active => "active",
            SubjectState::Retained => "retained",
            SubjectState::Restricted => "restricted",
            SubjectState::Archived => "archived",
            SubjectState::AwaitingDisposal => "awaiting_disposal",
            SubjectState::Erased => "erased",
        }
    }
}

/// What the schedule needs to know of a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// The first day it was recorded.
    pub first_recorded: i64,
    /// The clear period's start.
    pub clear_start: i64,
    /// Date of birth, if known.
    pub date_of_birth: Option<i64>,
    /// The last review's day and the next review day it set.
    pub last_review: Option<(i64, Option<i64>)>,
}

/// When a subject may be disposed of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposable {
    /// No age limit.
    Any,
    /// From this day (the subject reaches the class's age).
    From(i64),
    /// Never: the class has an age limit and the date of birth is unknown.
    Never,
}

/// `day` plus a period (whole days; `None` if it is not one, or past the
/// calendar).
pub fn add(day: i64, period: &crate::definition::Period) -> Option<i64> {
    let parts = date_period(period).ok()?;
    add_period(date_of(day)?, &parts).map(day_number)
}

/// When the subject falls due (see the module docs).
pub fn due(class: &RetentionClass, facts: &Facts) -> Option<i64> {
    let clear = class
        .clear_period
        .as_ref()
        .and_then(|p| add(facts.clear_start, p));
    let review = match facts.last_review {
        Some((_, Some(next))) => Some(next),
        Some((day, None)) => class.review_every.as_ref().and_then(|p| add(day, p)),
        None => class
            .review_every
            .as_ref()
            .and_then(|p| add(facts.first_recorded, p)),
    };
    match (clear, review) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// When the subject may be disposed of (see the module docs).
pub fn disposable(class: &RetentionClass, facts: &Facts) -> Disposable {
    let Some(age) = class.retain_until_age else {
        return Disposable::Any;
    };
    let Some(dob) = facts.date_of_birth else {
        return Disposable::Never;
    };
    let parts = crate::definition::PeriodParts {
        years: age,
        ..Default::default()
    };
    match date_of(dob).and_then(|d| add_period(d, &parts)) {
        Some(d) => Disposable::From(day_number(d)),
        None => Disposable::Never,
    }
}

impl Disposable {
    /// Whether disposal is allowed on `today`.
    pub fn allows(self, today: i64) -> bool {
        match self {
            Disposable::Any => true,
            Disposable::From(d) => today >= d,
            Disposable::Never => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::parse_date;
    use crate::definition::Period;
    use crate::resources::retention::AtDue;

    fn day(s: &str) -> i64 {
        day_number(parse_date(s).unwrap())
    }

    fn class(clear: Option<&str>, every: Option<&str>, age: Option<u32>) -> RetentionClass {
        RetentionClass {
            key: "c".into(),
            name: "C".into(),
            retain_until_age: age,
            review_every: every.map(Period::new),
            clear_period: clear.map(Period::new),
            at_due: AtDue::Review,
            source: None,
            status: None,
        }
    }

    fn facts(first: &str, clear: &str) -> Facts {
        Facts {
            first_recorded: day(first),
            clear_start: day(clear),
            date_of_birth: None,
            last_review: None,
        }
    }

    #[test]
    fn due_is_the_later_of_the_rules_the_class_has() {
        let f = facts("2020-03-01", "2022-05-10");
        assert_eq!(
            due(&class(Some("P6Y"), None, None), &f),
            Some(day("2028-05-10"))
        );
        assert_eq!(
            due(&class(None, Some("P10Y"), None), &f),
            Some(day("2030-03-01"))
        );
        assert_eq!(
            due(&class(Some("P6Y"), Some("P10Y"), None), &f),
            Some(day("2030-03-01"))
        );
        assert_eq!(due(&class(None, None, Some(100)), &f), None);
        let reviewed = Facts {
            last_review: Some((day("2028-06-01"), Some(day("2031-01-01")))),
            ..f
        };
        assert_eq!(
            due(&class(Some("P6Y"), None, None), &reviewed),
            Some(day("2031-01-01"))
        );
        let undated = Facts {
            last_review: Some((day("2030-04-01"), None)),
            ..f
        };
        assert_eq!(
            due(&class(None, Some("P10Y"), None), &undated),
            Some(day("2040-04-01"))
        );
    }

    #[test]
    fn disposal_waits_for_the_age_and_a_known_birth_date() {
        let c = class(None, Some("P10Y"), Some(100));
        let mut f = facts("2020-01-01", "2020-01-01");
        assert_eq!(disposable(&c, &f), Disposable::Never);
        assert!(!Disposable::Never.allows(i64::MAX));
        f.date_of_birth = Some(day("1950-02-28"));
        assert_eq!(disposable(&c, &f), Disposable::From(day("2050-02-28")));
        assert!(!disposable(&c, &f).allows(day("2050-02-27")));
        assert!(disposable(&c, &f).allows(day("2050-02-28")));
        assert_eq!(
            disposable(&class(Some("P6Y"), None, None), &f),
            Disposable::Any
        );
    }
}
