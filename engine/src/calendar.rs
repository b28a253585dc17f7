//! Working-day calendars: deadlines counted in working days (Victims' Code,
//! FOI's 20 working days) skip weekends, the bank holidays of England and
//! Wales, and a tenant's own non-working days.
//!
//! A tenant's non-working days are events (`NonWorkingDaysSet` in the
//! stream `<tenant>/calendar/working-days`), so the `cases` projection sees
//! each change at its place in the log: it re-derives the due times of
//! every running working-day deadline when the calendar changes, and a
//! rebuild reproduces exactly the same times.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use crate::log::codec::DomainEvent;
use crate::log::Timestamp;

pub use time::{Date, Month};

/// The stream category of calendar events.
pub const CATEGORY: &str = crate::streams::CALENDAR;
/// The id of a tenant's working-day calendar stream.
pub const STREAM_ID: &str = crate::streams::CALENDAR_ID;

/// Bank holidays in England and Wales as published for 2025 to 2028
/// (substitute days included), as `(year, month, day)`: the reference the
/// rules of [`england_and_wales_bank_holidays`] are tested against.
///
/// Source: GOV.UK, "UK bank holidays", <https://www.gov.uk/bank-holidays>
/// (`https://www.gov.uk/bank-holidays.json`, division `england-and-wales`).
pub const ENGLAND_AND_WALES_BANK_HOLIDAYS: &[(i32, u8, u8)] = &[
    (2025, 1, 1),   // New Year's Day
    (2025, 4, 18),  // Good Friday
    (2025, 4, 21),  // Easter Monday
    (2025, 5, 5),   // Early May bank holiday
    (2025, 5, 26),  // Spring bank holiday
    (2025, 8, 25),  // Summer bank holiday
    (2025, 12, 25), // Christmas Day
    (2025, 12, 26), // Boxing Day
    (2026, 1, 1),   // New Year's Day
    (2026, 4, 3),   // Good Friday
    (2026, 4, 6),   // Easter Monday
    (2026, 5, 4),   // Early May bank holiday
    (2026, 5, 25),  // Spring bank holiday
    (2026, 8, 31),  // Summer bank holiday
    (2026, 12, 25), // Christmas Day
    (2026, 12, 28), // Boxing Day (substitute day)
    (2027, 1, 1),   // New Year's Day
    (2027, 3, 26),  // Good Friday
    (2027, 3, 29),  // Easter Monday
    (2027, 5, 3),   // Early May bank holiday
    (2027, 5, 31),  // Spring bank holiday
    (2027, 8, 30),  // Summer bank holiday
    (2027, 12, 27), // Christmas Day (substitute day)
    (2027, 12, 28), // Boxing Day (substitute day)
    (2028, 1, 3),   // New Year's Day (substitute day)
    (2028, 4, 14),  // Good Friday
    (2028, 4, 17),  // Easter Monday
    (2028, 5, 1),   // Early May bank holiday
    (2028, 5, 29),  // Spring bank holiday
    (2028, 8, 28),  // Summer bank holiday
    (2028, 12, 25), // Christmas Day
    (2028, 12, 26), // Boxing Day
];

const DAY_MICROS: i64 = 86_400_000_000;
/// The Julian day number of 1970-01-01.
const UNIX_EPOCH_JULIAN_DAY: i64 = 2_440_588;

/// Days since 1970-01-01 of a date.
pub fn day_number(date: Date) -> i64 {
    i64::from(date.to_julian_day()) - UNIX_EPOCH_JULIAN_DAY
}

/// The date of a day number, if it is within the calendar's range.
pub fn date_of(day: i64) -> Option<Date> {
    let julian = i32::try_from(day + UNIX_EPOCH_JULIAN_DAY).ok()?;
    Date::from_julian_day(julian).ok()
}

/// Bank holidays moved or added by royal proclamation since 1995: the
/// rules' days that were not holidays, and the extra days that were.
const PROCLAIMED_AWAY: &[(i32, u8, u8)] = &[
    (1995, 5, 1),  // Early May moved to VE Day's 50th anniversary
    (2002, 5, 27), // Spring moved for the Golden Jubilee
    (2012, 5, 28), // Spring moved for the Diamond Jubilee
    (2020, 5, 4),  // Early May moved to VE Day's 75th anniversary
    (2022, 5, 30), // Spring moved for the Platinum Jubilee
];
const PROCLAIMED: &[(i32, u8, u8)] = &[
    (1995, 5, 8),
    (1999, 12, 31), // the millennium
    (2002, 6, 3),
    (2002, 6, 4),
    (2011, 4, 29), // a royal wedding
    (2012, 6, 4),
    (2012, 6, 5),
    (2020, 5, 8),
    (2022, 6, 2),
    (2022, 6, 3),
    (2022, 9, 19), // the state funeral of Queen Elizabeth II
    (2023, 5, 8),  // the coronation of King Charles III
];

fn ymd(y: i32, m: u8, d: u8) -> Option<Date> {
    Date::from_calendar_date(y, Month::try_from(m).ok()?, d).ok()
}

/// Easter Sunday of a Gregorian year (the anonymous Gregorian algorithm of
/// Meeus, Jones and Butcher), or `None` outside the dates the calendar
/// represents.
pub fn easter_sunday(year: i32) -> Option<Date> {
    let a = year.rem_euclid(19);
    let b = year.div_euclid(100);
    let c = year.rem_euclid(100);
    let d = b.div_euclid(4);
    let e = b.rem_euclid(4);
    let f = (b + 8).div_euclid(25);
    let g = (b - f + 1).div_euclid(3);
    let h = (19 * a + b - d - g + 15).rem_euclid(30);
    let i = c.div_euclid(4);
    let k = c.rem_euclid(4);
    let l = (32 + 2 * e + 2 * i - h - k).rem_euclid(7);
    let m = (a + 11 * h + 22 * l).div_euclid(451);
    let month = (h + l - 7 * m + 114).div_euclid(31);
    let day = (h + l - 7 * m + 114).rem_euclid(31) + 1;
    ymd(year, u8::try_from(month).ok()?, u8::try_from(day).ok()?)
}

/// The bank holidays of England and Wales in `year`, ascending, by the
/// rules of the Banking and Financial Dealings Act 1971 as they stand since
/// 1978 — New Year's Day, Good Friday, Easter Monday, the first and last
/// Mondays of May, the last Monday of August, Christmas Day and Boxing Day,
/// with a weekday substitute for a day that falls at a weekend — and the
/// one-off changes proclaimed since 1995. Any year the calendar represents.
pub fn england_and_wales_bank_holidays(year: i32) -> Vec<Date> {
    let monday = |d: Date| d.weekday().number_days_from_monday() == 0;
    let first_monday = |m: u8| (1..=7).filter_map(|d| ymd(year, m, d)).find(|&d| monday(d));
    let last_monday = |m: u8, last: u8| {
        (last - 6..=last)
            .rev()
            .filter_map(|d| ymd(year, m, d))
            .find(|&d| monday(d))
    };
    let mut days: Vec<Date> = Vec::with_capacity(10);
    // New Year's Day, or the Monday after a weekend one.
    if let Some(jan1) = ymd(year, 1, 1) {
        days.extend(match jan1.weekday().number_days_from_monday() {
            5 => ymd(year, 1, 3),
            6 => ymd(year, 1, 2),
            _ => Some(jan1),
        });
    }
    if let Some(easter) = easter_sunday(year) {
        days.extend(easter.checked_sub(time::Duration::days(2)));
        days.extend(easter.checked_add(time::Duration::days(1)));
    }
    days.extend(first_monday(5));
    days.extend(last_monday(5, 31));
    days.extend(last_monday(8, 31));
    // Christmas and Boxing Day, with substitutes after a weekend.
    if let Some(christmas) = ymd(year, 12, 25) {
        let (a, b) = match christmas.weekday().number_days_from_monday() {
            4 => (25, 28), // Friday: Boxing Day moves to Monday
            5 => (27, 28), // Saturday: both move to Monday and Tuesday
            6 => (26, 27), // Sunday: Christmas moves to Tuesday
            _ => (25, 26),
        };
        days.extend(ymd(year, 12, a));
        days.extend(ymd(year, 12, b));
    }
    let listed = |list: &[(i32, u8, u8)]| -> Vec<Date> {
        list.iter()
            .filter(|h| h.0 == year)
            .filter_map(|&(y, m, d)| ymd(y, m, d))
            .collect()
    };
    let away = listed(PROCLAIMED_AWAY);
    days.retain(|d| !away.contains(d));
    days.extend(listed(PROCLAIMED));
    days.sort();
    days.dedup();
    days
}

/// A year's bank holidays (day numbers) and its working days without any
/// tenant's own days.
struct Year {
    holidays: BTreeSet<i64>,
    working_days: i64,
}

/// A year's facts, computed once per process.
fn year(year: i32) -> Option<Arc<Year>> {
    type Years = Mutex<HashMap<i32, Arc<Year>>>;
    static YEARS: OnceLock<Years> = OnceLock::new();
    let first = day_number(ymd(year, 1, 1)?);
    let last = day_number(ymd(year, 12, 31)?);
    let mut map = YEARS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let info = map.entry(year).or_insert_with(|| {
        let holidays: BTreeSet<i64> = england_and_wales_bank_holidays(year)
            .into_iter()
            .map(day_number)
            .collect();
        let working_days = (first..=last)
            .filter(|&d| is_weekday(d) && !holidays.contains(&d))
            .count() as i64;
        Arc::new(Year {
            holidays,
            working_days,
        })
    });
    Some(Arc::clone(info))
}

fn is_weekday(day: i64) -> bool {
    // 1970-01-01 was a Thursday: weekday 0 = Monday.
    (day + 3).rem_euclid(7) < 5
}

/// The years whose bank holidays are held in one sorted table, looked up
/// without a lock or a date conversion (deadline arithmetic asks about
/// every day it counts).
const TABLE_YEARS: std::ops::RangeInclusive<i32> = 1900..=2299;

/// (first day, last day, every bank holiday between) for [`TABLE_YEARS`].
fn holiday_table() -> &'static (i64, i64, Vec<i64>) {
    static TABLE: OnceLock<(i64, i64, Vec<i64>)> = OnceLock::new();
    TABLE.get_or_init(|| {
        let first = ymd(*TABLE_YEARS.start(), 1, 1).map_or(i64::MAX, day_number);
        let last = ymd(*TABLE_YEARS.end(), 12, 31).map_or(i64::MIN, day_number);
        let mut days: Vec<i64> = TABLE_YEARS
            .flat_map(england_and_wales_bank_holidays)
            .map(day_number)
            .collect();
        days.sort_unstable();
        (first, last, days)
    })
}

/// Whether a day (number) is a bank holiday of England and Wales.
fn is_bank_holiday(day: i64) -> bool {
    let (first, last, days) = holiday_table();
    if (*first..=*last).contains(&day) {
        return days.binary_search(&day).is_ok();
    }
    date_of(day)
        .and_then(|d| year(d.year()))
        .is_some_and(|y| y.holidays.contains(&day))
}

/// A tenant's calendar event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CalendarEvent {
    /// The tenant's own non-working days (force-wide closures, local
    /// holidays), replacing any earlier list; weekends and the bank
    /// holidays are non-working regardless. Dates as `YYYY-MM-DD`.
    NonWorkingDaysSet {
        /// The days, ascending.
        days: Vec<String>,
        /// Bank holidays the tenant works (each a bank holiday of England
        /// and Wales), ascending, replacing any earlier list. Absent in
        /// events written before tenants could work a bank holiday.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        working_bank_holidays: Vec<String>,
    },
}

impl DomainEvent for CalendarEvent {
    const SCHEMA_VERSION: u16 = 1;

    fn event_type(&self) -> &'static str {
        match self {
            CalendarEvent::NonWorkingDaysSet { .. } => "NonWorkingDaysSet",
        }
    }
}

/// Formats a date as `YYYY-MM-DD`.
pub fn format_date(date: Date) -> String {
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

/// A day that is not a `YYYY-MM-DD` date.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{text}' is not a date (YYYY-MM-DD)")]
pub struct DateError {
    /// The text given.
    pub text: String,
}

impl DateError {
    /// What the error means to a caller: [`crate::ErrorKind::InvalidArgument`]
    /// at `days`.
    pub fn kind(&self) -> crate::ErrorKind {
        crate::ErrorKind::invalid("days")
    }
}

/// Parses `YYYY-MM-DD`.
///
/// Errors: [`DateError`] naming the bad value.
pub fn parse_date(s: &str) -> Result<Date, DateError> {
    let bad = || DateError {
        text: s.to_string(),
    };
    let mut parts = s.splitn(3, '-');
    let (Some(y), Some(m), Some(d)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return Err(bad());
    }
    let y: i32 = y.parse().map_err(|_| bad())?;
    let m: u8 = m.parse().map_err(|_| bad())?;
    let d: u8 = d.parse().map_err(|_| bad())?;
    let month = Month::try_from(m).map_err(|_| bad())?;
    Date::from_calendar_date(y, month, d).map_err(|_| bad())
}

/// A day given as a bank holiday the tenant works that is not a bank
/// holiday of England and Wales.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{day} is not a bank holiday of England and Wales, so it cannot be worked as one")]
pub struct NotABankHoliday {
    /// The day given, `YYYY-MM-DD`.
    pub day: String,
}

impl NotABankHoliday {
    /// What the error means to a caller: [`crate::ErrorKind::InvalidArgument`]
    /// at `working_bank_holidays`.
    pub fn kind(&self) -> crate::ErrorKind {
        crate::ErrorKind::invalid("working_bank_holidays")
    }
}

/// Why a stored calendar event does not make a calendar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    /// A day that is not a date.
    #[error(transparent)]
    Date(#[from] DateError),
    /// A worked bank holiday that is not one.
    #[error(transparent)]
    NotABankHoliday(#[from] NotABankHoliday),
}

/// Which days are working days: Monday to Friday, except the bank holidays
/// of England and Wales (but for those the tenant works) and the tenant's
/// own non-working days.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkingCalendar {
    /// The tenant's own non-working days (day numbers since 1970-01-01).
    extra: BTreeSet<i64>,
    /// Bank holidays the tenant works (day numbers). Absent in calendars
    /// stored before tenants could work one.
    #[serde(default)]
    worked: BTreeSet<i64>,
}

impl WorkingCalendar {
    /// Weekends and the England and Wales bank holidays only.
    pub fn england_and_wales() -> Self {
        WorkingCalendar::default()
    }

    /// With the tenant's own non-working days as well.
    pub fn with_non_working_days(days: impl IntoIterator<Item = Date>) -> Self {
        WorkingCalendar {
            extra: days.into_iter().map(day_number).collect(),
            worked: BTreeSet::new(),
        }
    }

    /// This calendar with `days` worked although they are bank holidays
    /// (replacing any earlier list): a force that staffs Easter Monday as
    /// a normal day counts it. A day also among the tenant's own
    /// non-working days stays non-working.
    ///
    /// Errors: [`NotABankHoliday`] naming the first day that is not a bank
    /// holiday of England and Wales.
    pub fn working_bank_holidays(
        mut self,
        days: impl IntoIterator<Item = Date>,
    ) -> Result<Self, NotABankHoliday> {
        let mut worked = BTreeSet::new();
        for date in days {
            let day = day_number(date);
            if !is_bank_holiday(day) {
                return Err(NotABankHoliday {
                    day: format_date(date),
                });
            }
            worked.insert(day);
        }
        self.worked = worked;
        Ok(self)
    }

    /// The calendar an event sets.
    ///
    /// Errors: [`CalendarError`] for a day that is not `YYYY-MM-DD`, or a
    /// worked bank holiday that is not one.
    pub fn from_event(event: &CalendarEvent) -> Result<Self, CalendarError> {
        match event {
            CalendarEvent::NonWorkingDaysSet {
                days,
                working_bank_holidays,
            } => {
                let parse = |list: &[String]| {
                    list.iter()
                        .map(|d| parse_date(d))
                        .collect::<Result<Vec<_>, _>>()
                };
                Ok(Self::with_non_working_days(parse(days)?)
                    .working_bank_holidays(parse(working_bank_holidays)?)?)
            }
        }
    }

    /// The event that sets this calendar.
    pub fn to_event(&self) -> CalendarEvent {
        CalendarEvent::NonWorkingDaysSet {
            days: self
                .non_working_days()
                .into_iter()
                .map(format_date)
                .collect(),
            working_bank_holidays: self
                .worked_bank_holidays()
                .into_iter()
                .map(format_date)
                .collect(),
        }
    }

    /// The tenant's own non-working days, ascending.
    pub fn non_working_days(&self) -> Vec<Date> {
        self.extra.iter().filter_map(|&d| date_of(d)).collect()
    }

    /// The bank holidays the tenant works, ascending.
    pub fn worked_bank_holidays(&self) -> Vec<Date> {
        self.worked.iter().filter_map(|&d| date_of(d)).collect()
    }

    /// Whether `date` is a working day.
    pub fn is_working_day(&self, date: Date) -> bool {
        self.is_working(day_number(date))
    }

    fn is_working(&self, day: i64) -> bool {
        is_weekday(day)
            && (!is_bank_holiday(day) || self.worked.contains(&day))
            && !self.extra.contains(&day)
    }

    /// The working days of a whole year.
    fn working_days_in(&self, y: i32) -> Option<i64> {
        let info = year(y)?;
        let (first, last) = (day_number(ymd(y, 1, 1)?), day_number(ymd(y, 12, 31)?));
        let own = self
            .extra
            .range(first..=last)
            .filter(|&&d| is_weekday(d) && !info.holidays.contains(&d))
            .count() as i64;
        // Bank holidays are weekdays; one worked counts unless it is also
        // among the tenant's own non-working days.
        let worked = self
            .worked
            .range(first..=last)
            .filter(|&&d| !self.extra.contains(&d))
            .count() as i64;
        Some(info.working_days - own + worked)
    }

    /// The instant `days` working days after `from`, at the same time of day
    /// (days are UTC calendar days). The day `from` falls on does not count:
    /// one working day from a Friday afternoon is Monday afternoon. Zero
    /// days is `from` itself.
    pub fn add_working_days(&self, from: Timestamp, days: u32) -> Timestamp {
        let mut day = from.0.div_euclid(DAY_MICROS);
        let offset = from.0.rem_euclid(DAY_MICROS);
        let mut left = i64::from(days);
        while left > 0 {
            if left > 366 {
                match date_of(day.saturating_add(1)) {
                    // A whole year ahead: skip it at once.
                    Some(next) if next.ordinal() == 1 => {
                        let y = next.year();
                        let whole = self.working_days_in(y).zip(ymd(y, 12, 31));
                        if let Some((n, last)) = whole {
                            if left > n {
                                day = day_number(last);
                                left -= n;
                                continue;
                            }
                        }
                    }
                    // Past the dates the calendar represents there are no
                    // holidays: any 7 days hold 5 working days.
                    None => {
                        let weeks = (left - 1) / 5;
                        day = day.saturating_add(weeks.saturating_mul(7));
                        left -= weeks * 5;
                    }
                    Some(_) => {}
                }
            }
            day = day.saturating_add(1);
            if self.is_working(day) {
                left -= 1;
            }
        }
        Timestamp(day.saturating_mul(DAY_MICROS).saturating_add(offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u8, d: u8) -> Date {
        Date::from_calendar_date(y, Month::try_from(m).unwrap(), d).unwrap()
    }

    fn at(y: i32, m: u8, d: u8, hour: i64) -> Timestamp {
        Timestamp(day_number(date(y, m, d)) * DAY_MICROS + hour * 3_600_000_000)
    }

    #[test]
    fn the_rules_give_the_published_bank_holidays() {
        let published = |year: i32| -> Vec<Date> {
            ENGLAND_AND_WALES_BANK_HOLIDAYS
                .iter()
                .filter(|h| h.0 == year)
                .map(|&(y, m, d)| date(y, m, d))
                .collect()
        };
        for year in 2025..=2028 {
            assert_eq!(
                england_and_wales_bank_holidays(year),
                published(year),
                "{year}"
            );
        }
        // Years with proclaimed changes and every kind of substitute day
        // (GOV.UK's published lists).
        let cases: &[(i32, &[(u8, u8)])] = &[
            (
                2020,
                &[
                    (1, 1),
                    (4, 10),
                    (4, 13),
                    (5, 8),
                    (5, 25),
                    (8, 31),
                    (12, 25),
                    (12, 28),
                ],
            ),
            (
                2021,
                &[
                    (1, 1),
                    (4, 2),
                    (4, 5),
                    (5, 3),
                    (5, 31),
                    (8, 30),
                    (12, 27),
                    (12, 28),
                ],
            ),
            (
                2022,
                &[
                    (1, 3),
                    (4, 15),
                    (4, 18),
                    (5, 2),
                    (6, 2),
                    (6, 3),
                    (8, 29),
                    (9, 19),
                    (12, 26),
                    (12, 27),
                ],
            ),
            (
                2023,
                &[
                    (1, 2),
                    (4, 7),
                    (4, 10),
                    (5, 1),
                    (5, 8),
                    (5, 29),
                    (8, 28),
                    (12, 25),
                    (12, 26),
                ],
            ),
            (
                2024,
                &[
                    (1, 1),
                    (3, 29),
                    (4, 1),
                    (5, 6),
                    (5, 27),
                    (8, 26),
                    (12, 25),
                    (12, 26),
                ],
            ),
        ];
        for (year, days) in cases {
            let want: Vec<Date> = days.iter().map(|&(m, d)| date(*year, m, d)).collect();
            assert_eq!(england_and_wales_bank_holidays(*year), want, "{year}");
        }
        // Easter, far from the published years too.
        assert_eq!(easter_sunday(2038), Some(date(2038, 4, 25)));
        assert_eq!(easter_sunday(2285), Some(date(2285, 3, 22)));
        assert_eq!(easter_sunday(2049), Some(date(2049, 4, 18)));
        assert_eq!(easter_sunday(1961), Some(date(1961, 4, 2)));
        // Every year has its eight (at least), all on weekdays.
        for year in 1978..2200 {
            let days = england_and_wales_bank_holidays(year);
            assert!(days.len() >= 8, "{year}: {days:?}");
            for d in days {
                assert!(d.weekday().number_days_from_monday() < 5, "{d}");
            }
        }
        // Out of range: nothing, no panic.
        assert!(easter_sunday(i32::MAX).is_none());
        let _ = england_and_wales_bank_holidays(i32::MIN);
    }

    #[test]
    fn the_bundled_holidays_are_all_weekdays_and_cover_2025_to_2028() {
        for &(y, m, d) in ENGLAND_AND_WALES_BANK_HOLIDAYS {
            let wd = date(y, m, d).weekday().number_days_from_monday();
            assert!(wd < 5, "{y}-{m}-{d} falls on a weekend");
        }
        for year in 2025..=2028 {
            let n = ENGLAND_AND_WALES_BANK_HOLIDAYS
                .iter()
                .filter(|h| h.0 == year)
                .count();
            assert_eq!(n, 8, "England and Wales have 8 bank holidays in {year}");
        }
        assert_eq!(day_number(date(1970, 1, 1)), 0);
        assert_eq!(
            date_of(day_number(date(2026, 12, 24))),
            Some(date(2026, 12, 24))
        );
    }

    #[test]
    fn working_days_skip_weekends_and_bank_holidays() {
        let cal = WorkingCalendar::england_and_wales();
        // Thursday 24 December 2026: Friday 25 (Christmas) and Monday 28
        // (Boxing Day, substitute) are bank holidays, and so is Friday
        // 1 January 2027: 29, 30, 31 Dec, 4 Jan, then 5 Jan.
        let eve = at(2026, 12, 24, 15);
        assert_eq!(cal.add_working_days(eve, 1), at(2026, 12, 29, 15));
        assert_eq!(cal.add_working_days(eve, 4), at(2027, 1, 4, 15));
        assert_eq!(cal.add_working_days(eve, 5), at(2027, 1, 5, 15));
        // With only 25 and 28 December as holidays, 5 working days land on
        // Monday 4 January.
        let only_christmas = |d: i64| {
            let weekday = (d + 3).rem_euclid(7);
            weekday < 5
                && d != day_number(date(2026, 12, 25))
                && d != day_number(date(2026, 12, 28))
        };
        let mut day = day_number(date(2026, 12, 24));
        let mut left = 5;
        while left > 0 {
            day += 1;
            if only_christmas(day) {
                left -= 1;
            }
        }
        assert_eq!(date_of(day), Some(date(2027, 1, 4)));
        // Easter 2027 and an ordinary week.
        assert_eq!(
            cal.add_working_days(at(2027, 3, 25, 9), 1),
            at(2027, 3, 30, 9)
        );
        let friday = at(2026, 1, 2, 1);
        assert_eq!(cal.add_working_days(friday, 1), at(2026, 1, 5, 1));
        assert_eq!(cal.add_working_days(friday, 5), at(2026, 1, 9, 1));
        assert_eq!(cal.add_working_days(friday, 0), friday);
        // FOI: 20 working days from Monday 30 March 2026 skip Good Friday
        // and Easter Monday.
        assert_eq!(
            cal.add_working_days(at(2026, 3, 30, 10), 20),
            at(2026, 4, 29, 10)
        );
        // Huge counts neither loop for long nor overflow into a panic.
        let _ = cal.add_working_days(friday, u32::MAX);
        let _ = cal.add_working_days(Timestamp(i64::MAX), 3);
        // Beyond the published list the rules go on: Easter 2030 is 21
        // April, so from Thursday 18 April one working day is Tuesday 23rd.
        let far = at(2030, 1, 7, 0); // a Monday
        assert_eq!(cal.add_working_days(far, 10), at(2030, 1, 21, 0));
        assert_eq!(cal.add_working_days(far, 11), at(2030, 1, 22, 0));
        assert_eq!(
            cal.add_working_days(at(2030, 4, 18, 9), 1),
            at(2030, 4, 23, 9)
        );
        // Skipping whole years agrees with counting day by day.
        let start = at(2031, 12, 31, 8);
        let mut day = day_number(date(2031, 12, 31));
        let mut left = 1_000;
        while left > 0 {
            day += 1;
            if cal.is_working(day) {
                left -= 1;
            }
        }
        assert_eq!(
            cal.add_working_days(start, 1_000),
            Timestamp(day * DAY_MICROS + 8 * 3_600_000_000)
        );
    }

    #[test]
    fn a_tenants_own_days_are_skipped_too() {
        let closure = [date(2026, 12, 29), date(2026, 12, 30)];
        let cal = WorkingCalendar::with_non_working_days(closure);
        assert!(!cal.is_working_day(date(2026, 12, 29)));
        assert!(WorkingCalendar::default().is_working_day(date(2026, 12, 29)));
        assert_eq!(
            cal.add_working_days(at(2026, 12, 24, 15), 1),
            at(2026, 12, 31, 15)
        );
        assert_eq!(cal.non_working_days(), closure);
        let event = CalendarEvent::NonWorkingDaysSet {
            days: closure.iter().map(|d| format_date(*d)).collect(),
            working_bank_holidays: Vec::new(),
        };
        assert_eq!(cal.to_event(), event);
        assert_eq!(WorkingCalendar::from_event(&event), Ok(cal));
        let bad = CalendarEvent::NonWorkingDaysSet {
            days: vec!["2026-02-30".into()],
            working_bank_holidays: Vec::new(),
        };
        assert!(WorkingCalendar::from_event(&bad)
            .unwrap_err()
            .to_string()
            .contains("2026-02-30"));
        for s in ["2026-1-01", "26-01-01", "2026-13-01", "x", "2026-01-01-"] {
            assert!(parse_date(s).is_err(), "{s}");
        }
        assert_eq!(parse_date("2026-12-24"), Ok(date(2026, 12, 24)));
    }

    /// Counts `n` working days from `from` one day at a time (the
    /// reference the year-skipping arithmetic is checked against).
    fn day_by_day(cal: &WorkingCalendar, from: Timestamp, n: u32) -> Timestamp {
        let mut day = from.0.div_euclid(DAY_MICROS);
        let mut left = n;
        while left > 0 {
            day += 1;
            if cal.is_working(day) {
                left -= 1;
            }
        }
        Timestamp(day * DAY_MICROS + from.0.rem_euclid(DAY_MICROS))
    }

    #[test]
    fn a_tenant_may_work_a_bank_holiday_across_easter_and_substitute_days() {
        // Easter 2027: Good Friday 26 March, Easter Monday 29 March.
        let thursday = at(2027, 3, 25, 9);
        let default = WorkingCalendar::default();
        assert_eq!(default.add_working_days(thursday, 1), at(2027, 3, 30, 9));
        let easter_monday = WorkingCalendar::default()
            .working_bank_holidays([date(2027, 3, 29)])
            .unwrap();
        assert!(easter_monday.is_working_day(date(2027, 3, 29)));
        assert!(!easter_monday.is_working_day(date(2027, 3, 26)));
        assert_eq!(
            easter_monday.add_working_days(thursday, 1),
            at(2027, 3, 29, 9)
        );
        assert_eq!(
            easter_monday.add_working_days(thursday, 2),
            at(2027, 3, 30, 9)
        );
        let good_friday = WorkingCalendar::default()
            .working_bank_holidays([date(2027, 3, 26)])
            .unwrap();
        assert_eq!(
            good_friday.add_working_days(thursday, 1),
            at(2027, 3, 26, 9)
        );
        assert_eq!(
            good_friday.add_working_days(thursday, 2),
            at(2027, 3, 30, 9)
        );

        // Christmas 2027 falls on a Saturday: the substitute days are
        // Monday 27 and Tuesday 28 December.
        let christmas_eve = at(2027, 12, 24, 15);
        assert_eq!(
            default.add_working_days(christmas_eve, 1),
            at(2027, 12, 29, 15)
        );
        let substitute = WorkingCalendar::default()
            .working_bank_holidays([date(2027, 12, 27)])
            .unwrap();
        assert_eq!(
            substitute.add_working_days(christmas_eve, 1),
            at(2027, 12, 27, 15)
        );
        assert_eq!(
            substitute.add_working_days(christmas_eve, 2),
            at(2027, 12, 29, 15)
        );
        // The day itself (a Saturday) is not a bank holiday: refused, and
        // so is any ordinary day.
        for day in [date(2027, 12, 25), date(2027, 3, 31), date(2027, 3, 28)] {
            let err = WorkingCalendar::default()
                .working_bank_holidays([day])
                .unwrap_err();
            assert_eq!(err.day, format_date(day));
            assert_eq!(
                err.kind(),
                crate::ErrorKind::invalid("working_bank_holidays")
            );
        }
        // A worked bank holiday that is also one of the tenant's own
        // closures stays closed.
        let both = WorkingCalendar::with_non_working_days([date(2027, 3, 29)])
            .working_bank_holidays([date(2027, 3, 29)])
            .unwrap();
        assert!(!both.is_working_day(date(2027, 3, 29)));
        assert_eq!(both.add_working_days(thursday, 1), at(2027, 3, 30, 9));

        // Long spans skip whole years: the same answer as counting day by
        // day, with worked holidays (and a closure) in the years skipped.
        let many = WorkingCalendar::with_non_working_days([date(2028, 6, 1)])
            .working_bank_holidays([
                date(2027, 3, 29),
                date(2027, 12, 27),
                date(2028, 4, 17),
                date(2028, 5, 29),
            ])
            .unwrap();
        let from = at(2026, 12, 31, 8);
        for n in [1, 250, 400, 700, 1_000] {
            assert_eq!(
                many.add_working_days(from, n),
                day_by_day(&many, from, n),
                "{n} working days"
            );
        }
        // Three more working days than the default calendar by then.
        assert_eq!(
            many.add_working_days(from, 700),
            default.add_working_days(from, 697)
        );

        // Stored calendars and events from before: they decode, nothing
        // worked.
        #[derive(Serialize)]
        struct OldCalendar {
            extra: BTreeSet<i64>,
        }
        #[derive(Serialize)]
        enum OldEvent {
            NonWorkingDaysSet { days: Vec<String> },
        }
        let old = rmp_serde::to_vec_named(&OldCalendar {
            extra: [day_number(date(2027, 1, 4))].into(),
        })
        .unwrap();
        let decoded: WorkingCalendar = rmp_serde::from_slice(&old).unwrap();
        assert_eq!(
            decoded,
            WorkingCalendar::with_non_working_days([date(2027, 1, 4)])
        );
        let old = rmp_serde::to_vec_named(&OldEvent::NonWorkingDaysSet {
            days: vec!["2027-01-04".into()],
        })
        .unwrap();
        let decoded: CalendarEvent = rmp_serde::from_slice(&old).unwrap();
        assert_eq!(WorkingCalendar::from_event(&decoded), Ok(decoded_cal()));
        fn decoded_cal() -> WorkingCalendar {
            WorkingCalendar::with_non_working_days([date(2027, 1, 4)])
        }
        // And a calendar with worked days round-trips through its event.
        assert_eq!(WorkingCalendar::from_event(&many.to_event()), Ok(many));
    }
}
