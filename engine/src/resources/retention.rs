//! The tenant's retention policy (MoPI): retention classes with their rules,
//! and the National Retention Assessment Criteria (NRAC) questions a review
//! answers.
//!
//! A policy is a TOML document deployed like any tenant resource
//! ([`super::ResourceKind::Retention`], always named [`POLICY_NAME`]), so
//! each version is an event in `<tenant>/resource/retention.policy`. Until a
//! tenant deploys one, the shipped defaults apply ([`DEFAULT_POLICY`],
//! version 0); `docs/RETENTION.md` lists each default with its source and
//! status. No figure is written in the engine's logic: every period and age
//! comes from the policy in force.
//!
//! ```toml
//! [[classes]]
//! key = "mopi_group_3"
//! name = "MoPI group 3: all other offences"
//! clear_period = "P6Y"       # due this long after the last police contact
//! review_every = "P10Y"      # due this long after the first record or last review
//! retain_until_age = 100     # not disposable before the subject is this old
//! at_due = "review"          # or "dispose": time-based disposal
//!
//! [[nrac]]
//! key = "serious_harm"
//! question = "Is there evidence of a capacity to inflict serious harm?"
//! ```

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{toml_problem, ResourceProblem};
use crate::calendar::Date;
use crate::definition::{check_identifier, Period, PeriodParts};

/// The name a tenant's retention policy is deployed under.
pub const POLICY_NAME: &str = "policy";

/// The shipped policy (see `docs/RETENTION.md`).
pub const DEFAULT_POLICY: &str = include_str!("retention-defaults.toml");

/// Oldest age a `retain_until_age` may name.
pub const MAX_AGE: u32 = 150;

/// What falls due when a class's period has run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AtDue {
    /// A person reviews the record (NRAC) and decides.
    Review,
    /// The record is disposed of without a review (time-based disposal),
    /// unless a hold or `retain_until_age` prevents it.
    Dispose,
}

impl AtDue {
    /// `review` or `dispose`.
    pub fn as_str(self) -> &'static str {
        match self {
            AtDue::Review => "review",
            AtDue::Dispose => "dispose",
        }
    }
}

/// A retention class and its rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionClass {
    /// Its key, named by definitions' `retention.class` (or the group's
    /// `mopi_group_N`).
    pub key: String,
    /// Human-readable name.
    pub name: String,
    /// Not disposable before the subject reaches this age (a subject whose
    /// date of birth is unknown is then not disposable at all).
    #[serde(default)]
    pub retain_until_age: Option<u32>,
    /// Due this long after the subject's first record, or after the last
    /// review.
    #[serde(default)]
    pub review_every: Option<Period>,
    /// Due this long after the subject's last police contact (the clear
    /// period).
    #[serde(default)]
    pub clear_period: Option<Period>,
    /// What falls due.
    pub at_due: AtDue,
    /// Where the figures come from.
    #[serde(default)]
    pub source: Option<String>,
    /// Whether the figures are confirmed.
    #[serde(default)]
    pub status: Option<String>,
}

/// One NRAC question a review must answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NracQuestion {
    /// Its key, named by review answers.
    pub key: String,
    /// The question as reviewers read it.
    pub question: String,
}

/// A tenant's retention policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    /// The classes, most serious first: a subject who appears in cases of
    /// several classes is kept under the first of them listed here.
    pub classes: Vec<RetentionClass>,
    /// The NRAC questions every review answers.
    #[serde(default)]
    pub nrac: Vec<NracQuestion>,
}

impl RetentionPolicy {
    /// Parses and checks a policy.
    ///
    /// Errors: every problem, with its path (`classes[1].clear_period`).
    pub fn parse(source: &str) -> Result<Self, Vec<ResourceProblem>> {
        let policy: RetentionPolicy = toml::from_str(source).map_err(|e| vec![toml_problem(&e)])?;
        let problems = policy.problems();
        if problems.is_empty() {
            Ok(policy)
        } else {
            Err(problems)
        }
    }

    /// The shipped defaults ([`DEFAULT_POLICY`]).
    pub fn defaults() -> Self {
        // The shipped document is checked by a unit test; an empty policy
        // (nothing ever falls due) is the safe reading should it not parse.
        RetentionPolicy::parse(DEFAULT_POLICY).unwrap_or(RetentionPolicy {
            classes: Vec::new(),
            nrac: Vec::new(),
        })
    }

    /// The class `key`, and its rank (0: most serious).
    pub fn class(&self, key: &str) -> Option<(usize, &RetentionClass)> {
        self.classes.iter().enumerate().find(|(_, c)| c.key == key)
    }

    fn problems(&self) -> Vec<ResourceProblem> {
        let mut problems = Vec::new();
        if self.classes.is_empty() {
            problems.push(ResourceProblem::new(
                "classes",
                "declare at least one retention class",
            ));
        }
        let mut keys = BTreeSet::new();
        for (i, c) in self.classes.iter().enumerate() {
            let path = format!("classes[{i}]");
            if let Err(e) = check_identifier(&c.key) {
                problems.push(ResourceProblem::new(format!("{path}.key"), e.to_string()));
            }
            if !keys.insert(c.key.as_str()) {
                problems.push(ResourceProblem::new(
                    format!("{path}.key"),
                    format!("duplicate class '{}'", c.key),
                ));
            }
            if c.name.trim().is_empty() {
                problems.push(ResourceProblem::new(
                    format!("{path}.name"),
                    "must not be empty",
                ));
            }
            if let Some(age) = c.retain_until_age {
                if age == 0 || age > MAX_AGE {
                    problems.push(ResourceProblem::new(
                        format!("{path}.retain_until_age"),
                        format!("{age} is not an age: use 1 to {MAX_AGE} (years)"),
                    ));
                }
            }
            for (name, period) in [
                ("review_every", &c.review_every),
                ("clear_period", &c.clear_period),
            ] {
                if let Some(p) = period {
                    if let Err(m) = date_period(p) {
                        problems.push(ResourceProblem::new(format!("{path}.{name}"), m));
                    }
                }
            }
        }
        let mut questions = BTreeSet::new();
        for (i, q) in self.nrac.iter().enumerate() {
            let path = format!("nrac[{i}]");
            if let Err(e) = check_identifier(&q.key) {
                problems.push(ResourceProblem::new(format!("{path}.key"), e.to_string()));
            }
            if !questions.insert(q.key.as_str()) {
                problems.push(ResourceProblem::new(
                    format!("{path}.key"),
                    format!("duplicate question '{}'", q.key),
                ));
            }
            if q.question.trim().is_empty() {
                problems.push(ResourceProblem::new(
                    format!("{path}.question"),
                    "must not be empty",
                ));
            }
        }
        problems
    }
}

/// The parts of a period of whole days (years, months, weeks, days).
///
/// Errors: a message saying what to write instead.
pub fn date_period(p: &Period) -> Result<PeriodParts, String> {
    let parts = p.parts().map_err(|e| e.to_string())?;
    if parts.hours > 0 || parts.minutes > 0 || parts.seconds > 0 {
        return Err(format!(
            "'{}' has a time part; retention periods are whole days: use years, months, weeks or days (e.g. P6Y)",
            p.as_str()
        ));
    }
    Ok(parts)
}

/// `date` plus a period of whole days: years and months on the calendar
/// (29 February plus a year is 28 February), then weeks and days. `None`
/// past the calendar's range.
pub fn add_period(date: Date, parts: &PeriodParts) -> Option<Date> {
    let months =
        i64::from(date.month() as u8) - 1 + i64::from(parts.months) + 12 * i64::from(parts.years);
    let year = i32::try_from(i64::from(date.year()) + months.div_euclid(12)).ok()?;
    let month = time::Month::try_from(u8::try_from(months.rem_euclid(12) + 1).ok()?).ok()?;
    let day = date.day().min(time::util::days_in_month(month, year));
    let shifted = Date::from_calendar_date(year, month, day).ok()?;
    shifted.checked_add(time::Duration::days(
        i64::from(parts.weeks) * 7 + i64::from(parts.days),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::parse_date;

    #[test]
    fn the_shipped_policy_is_valid_and_names_every_group() {
        let policy = RetentionPolicy::parse(DEFAULT_POLICY).expect("valid");
        assert_eq!(policy, RetentionPolicy::defaults());
        for key in ["mopi_group_1", "mopi_group_2", "mopi_group_3", "undetected"] {
            let (_, class) = policy.class(key).expect(key);
            assert!(class.status.is_some() && class.source.is_some(), "{key}");
        }
        assert_eq!(policy.nrac.len(), 6);
    }

    #[test]
    fn problems_are_listed_with_paths() {
        let bad = r#"
[[classes]]
key = "Bad Key"
name = ""
retain_until_age = 0
clear_period = "PT6H"
at_due = "review"

[[classes]]
key = "x"
name = "X"
review_every = "soon"
at_due = "dispose"

[[nrac]]
key = "q"
question = " "
[[nrac]]
key = "q"
question = "again"
"#;
        let paths: Vec<String> = RetentionPolicy::parse(bad)
            .unwrap_err()
            .into_iter()
            .map(|p| p.path)
            .collect();
        assert_eq!(
            paths,
            [
                "classes[0].key",
                "classes[0].name",
                "classes[0].retain_until_age",
                "classes[0].clear_period",
                "classes[1].review_every",
                "nrac[0].question",
                "nrac[1].key",
            ]
        );
        assert_eq!(
            RetentionPolicy::parse("classes = []").unwrap_err()[0].path,
            "classes"
        );
        assert!(RetentionPolicy::parse(
            "[[classes]]\nkey = \"x\"\nname = \"X\"\nat_due = \"never\""
        )
        .is_err());
    }

    #[test]
    fn periods_add_on_the_calendar() {
        let d = |s: &str| parse_date(s).unwrap();
        let p = |s: &str| date_period(&Period::new(s)).unwrap();
        assert_eq!(
            add_period(d("2020-02-29"), &p("P1Y")),
            Some(d("2021-02-28"))
        );
        assert_eq!(
            add_period(d("2020-02-29"), &p("P4Y")),
            Some(d("2024-02-29"))
        );
        assert_eq!(
            add_period(d("2020-01-31"), &p("P1M")),
            Some(d("2020-02-29"))
        );
        assert_eq!(
            add_period(d("2020-11-15"), &p("P1Y2M")),
            Some(d("2022-01-15"))
        );
        assert_eq!(
            add_period(d("2020-12-31"), &p("P1D")),
            Some(d("2021-01-01"))
        );
        assert_eq!(
            add_period(d("2020-01-01"), &p("P2W")),
            Some(d("2020-01-15"))
        );
        assert!(date_period(&Period::new("PT1H")).is_err());
    }
}
