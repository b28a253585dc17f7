//! Periods: ISO 8601 durations (`PT1H`, `P10Y`) or shorthand (`48h`, `15m`, `5d`).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ErrorKind;

/// A period as written in a definition. Kept as text (so that it serializes as
/// written); [`Period::parts`] parses it.
///
/// Accepted forms: ISO 8601 `PnYnMnWnDTnHnMnS` (each part optional, integers
/// only), or one shorthand number with a unit: `s`, `m` (minutes), `h`, `d`, `w`.
///
/// ```
/// use casebook::definition::Period;
/// assert_eq!(Period::new("PT1H").duration(), Some(time::Duration::hours(1)));
/// assert_eq!(Period::new("48h").duration(), Some(time::Duration::hours(48)));
/// assert_eq!(Period::new("P6Y").duration(), None); // years have no fixed length
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Period(String);

/// A period that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    /// Neither ISO 8601 nor a shorthand number with a unit.
    #[error("'{text}' is not a period: use ISO 8601 (e.g. 'PT1H', 'P5D', 'P6Y') or a number with s, m, h, d or w (e.g. '48h')")]
    Malformed {
        /// The text as written.
        text: String,
    },
    /// A period of length zero.
    #[error("'{text}' is an empty period")]
    Empty {
        /// The text as written.
        text: String,
    },
}

impl PeriodError {
    /// What the error means to a caller: [`ErrorKind::InvalidArgument`]
    /// (the caller knows where the period sits).
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidArgument { paths: Vec::new() }
    }
}

/// A parsed period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeriodParts {
    /// Calendar years.
    pub years: u32,
    /// Calendar months.
    pub months: u32,
    /// Weeks.
    pub weeks: u32,
    /// Days.
    pub days: u32,
    /// Hours.
    pub hours: u32,
    /// Minutes.
    pub minutes: u32,
    /// Seconds.
    pub seconds: u32,
}

impl PeriodParts {
    /// Whether the period has calendar parts (years or months), whose length
    /// depends on the date it starts from.
    pub fn is_calendar(&self) -> bool {
        self.years > 0 || self.months > 0
    }

    /// The exact length, when the period has no calendar parts.
    pub fn duration(&self) -> Option<time::Duration> {
        if self.is_calendar() {
            return None;
        }
        let secs = i64::from(self.weeks) * 7 * 86_400
            + i64::from(self.days) * 86_400
            + i64::from(self.hours) * 3_600
            + i64::from(self.minutes) * 60
            + i64::from(self.seconds);
        Some(time::Duration::seconds(secs))
    }

    fn is_zero(&self) -> bool {
        *self == PeriodParts::default()
    }
}

impl Period {
    /// Wraps text (unvalidated).
    pub fn new(s: impl Into<String>) -> Self {
        Period(s.into())
    }

    /// The period as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses the period.
    ///
    /// # Errors
    /// [`PeriodError::Malformed`], naming the text and the accepted forms;
    /// [`PeriodError::Empty`] for a zero period.
    pub fn parts(&self) -> Result<PeriodParts, PeriodError> {
        let s = self.0.trim();
        let bad = || PeriodError::Malformed {
            text: self.0.clone(),
        };
        let parts = if let Some(rest) = s.strip_prefix('P') {
            parse_iso(rest).ok_or_else(bad)?
        } else {
            let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
            let (num, unit) = s.split_at(split);
            let n: u32 = num.parse().map_err(|_| bad())?;
            let mut p = PeriodParts::default();
            match unit {
                "s" => p.seconds = n,
                "m" => p.minutes = n,
                "h" => p.hours = n,
                "d" => p.days = n,
                "w" => p.weeks = n,
                _ => return Err(bad()),
            }
            p
        };
        if parts.is_zero() {
            return Err(PeriodError::Empty {
                text: self.0.clone(),
            });
        }
        Ok(parts)
    }

    /// The exact length, if the period parses and has no years or months.
    pub fn duration(&self) -> Option<time::Duration> {
        self.parts().ok().and_then(|p| p.duration())
    }
}

fn parse_iso(rest: &str) -> Option<PeriodParts> {
    let mut parts = PeriodParts::default();
    let mut in_time = false;
    let mut num = String::new();
    let mut any = false;
    for c in rest.chars() {
        match c {
            'T' if !in_time && num.is_empty() => in_time = true,
            '0'..='9' => num.push(c),
            unit => {
                let n: u32 = num.parse().ok()?;
                num.clear();
                any = true;
                let slot = match (in_time, unit) {
                    (false, 'Y') => &mut parts.years,
                    (false, 'M') => &mut parts.months,
                    (false, 'W') => &mut parts.weeks,
                    (false, 'D') => &mut parts.days,
                    (true, 'H') => &mut parts.hours,
                    (true, 'M') => &mut parts.minutes,
                    (true, 'S') => &mut parts.seconds,
                    _ => return None,
                };
                *slot = n;
            }
        }
    }
    (any && num.is_empty()).then_some(parts)
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_iso_and_shorthand() {
        assert_eq!(
            Period::new("PT15M").duration(),
            Some(time::Duration::minutes(15))
        );
        assert_eq!(
            Period::new("P1DT2H").duration(),
            Some(time::Duration::hours(26))
        );
        assert_eq!(
            Period::new("P2W").duration(),
            Some(time::Duration::days(14))
        );
        assert_eq!(
            Period::new("90s").duration(),
            Some(time::Duration::seconds(90))
        );
        assert_eq!(Period::new("P10Y").parts().map(|p| p.years), Ok(10));
        for bad in ["", "P", "PT", "1.5h", "h", "P1H", "5x", "PT1H2"] {
            assert_eq!(
                Period::new(bad).parts(),
                Err(PeriodError::Malformed { text: bad.into() }),
                "{bad}"
            );
        }
        let empty = Period::new("P0D").parts().unwrap_err();
        assert_eq!(empty, PeriodError::Empty { text: "P0D".into() });
        assert_eq!(empty.to_string(), "'P0D' is an empty period");
        assert_eq!(empty.kind(), ErrorKind::InvalidArgument { paths: vec![] });
    }
}
