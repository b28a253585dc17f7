//! Time: [`Timestamp`], arithmetic with [`Duration`], and the [`Clock`] seam
//! every timestamp the engine makes comes from.
//!
//! The engine never reads the system time itself: [`crate::engine::EngineConfig::clock`]
//! (and [`crate::log::LogStoreConfig::clock`], [`crate::log::MemoryStore::with_clock`]
//! for the stores' `recorded` stamps) supply it. [`SystemClock`] is the
//! default; tests of deadlines, timers and retries use a [`ManualClock`]
//! (set and advanced by hand) or a [`TokioClock`], which follows Tokio's
//! clock and so moves with `tokio::time::pause()` / `advance()`.

use std::fmt;
use std::ops::{Add, AddAssign, Sub, SubAssign};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A point in time: microseconds since the Unix epoch, UTC.
///
/// Adding or subtracting a [`Duration`] saturates at the ends of the range
/// rather than overflowing:
///
/// ```
/// use casebook::time::Timestamp;
/// use std::time::Duration;
///
/// let opened = Timestamp::from_micros(1_700_000_000_000_000);
/// let due = opened + Duration::from_secs(24 * 3600);
/// assert_eq!(due.duration_since(opened), Some(Duration::from_secs(86_400)));
/// assert_eq!(due - Duration::from_secs(86_400), opened);
/// assert_eq!(opened.duration_since(due), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The system's wall-clock time. The engine itself never calls this: it
    /// asks its [`Clock`]. It is here for callers building queries and tests.
    pub fn now() -> Self {
        SystemClock.now()
    }

    /// The instant `micros` microseconds after the Unix epoch.
    pub const fn from_micros(micros: i64) -> Self {
        Timestamp(micros)
    }

    /// Microseconds since the Unix epoch.
    pub fn as_micros(self) -> i64 {
        self.0
    }

    /// How long after `earlier` this is; `None` if it is before `earlier`.
    pub fn duration_since(self, earlier: Timestamp) -> Option<Duration> {
        let micros = self.0.checked_sub(earlier.0)?;
        u64::try_from(micros).ok().map(Duration::from_micros)
    }

    /// `self + d`, or `None` beyond the representable range.
    pub fn checked_add(self, d: Duration) -> Option<Timestamp> {
        let micros = i64::try_from(d.as_micros()).ok()?;
        self.0.checked_add(micros).map(Timestamp)
    }

    /// `self - d`, or `None` beyond the representable range.
    pub fn checked_sub(self, d: Duration) -> Option<Timestamp> {
        let micros = i64::try_from(d.as_micros()).ok()?;
        self.0.checked_sub(micros).map(Timestamp)
    }
}

fn saturating_micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(saturating_micros(d)))
    }
}

impl AddAssign<Duration> for Timestamp {
    fn add_assign(&mut self, d: Duration) {
        *self = *self + d;
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Timestamp;
    fn sub(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(saturating_micros(d)))
    }
}

impl SubAssign<Duration> for Timestamp {
    fn sub_assign(&mut self, d: Duration) {
        *self = *self - d;
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with all six digits of microseconds, e.g.
    /// `2026-11-23T15:16:31.123400Z`, so timestamps line up in columns.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let format = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
        );
        let formatted = time::OffsetDateTime::from_unix_timestamp_nanos(self.0 as i128 * 1000)
            .ok()
            .and_then(|t| t.format(&format).ok());
        match formatted {
            Some(s) => f.write_str(&s),
            None => write!(f, "@{}us", self.0),
        }
    }
}

/// Where the engine gets the time from.
pub trait Clock: fmt::Debug + Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(saturating_micros(d))
    }
}

/// A clock that only moves when told to (tests). Clones share the time.
///
/// ```
/// use casebook::time::{Clock, ManualClock, Timestamp};
/// use std::time::Duration;
///
/// let clock = ManualClock::new(Timestamp::from_micros(0));
/// clock.advance(Duration::from_secs(60));
/// assert_eq!(clock.now(), Timestamp::from_micros(60_000_000));
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    micros: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: Timestamp) -> Self {
        ManualClock {
            micros: Arc::new(AtomicI64::new(start.0)),
        }
    }

    /// Sets the time (it may go backwards: tests of clock skew need that).
    pub fn set(&self, to: Timestamp) {
        self.micros.store(to.0, Ordering::SeqCst);
    }

    /// Moves the time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = saturating_micros(by);
        let _ = self
            .micros
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |m| {
                Some(m.saturating_add(by))
            });
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.micros.load(Ordering::SeqCst))
    }
}

/// Wall-clock time that follows Tokio's clock: `start` plus the Tokio time
/// elapsed since the clock was made. Under `tokio::time::pause()` it stands
/// still and jumps with `advance()` (and with auto-advance when the runtime
/// is idle), so time-dependent behaviour is tested without real sleeps.
/// Make it inside a Tokio runtime.
#[derive(Debug, Clone)]
pub struct TokioClock {
    start: Timestamp,
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock reading `start` now.
    pub fn starting_at(start: Timestamp) -> Self {
        TokioClock {
            start,
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        self.start + self.origin.elapsed()
    }
}

/// The default clock, shared.
pub fn system_clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_as_rfc3339() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            Timestamp(1_500_000).to_string(),
            "1970-01-01T00:00:01.500000Z"
        );
        assert_eq!(
            Timestamp(1_764_000_000_123_456).to_string(),
            "2025-11-24T16:00:00.123456Z"
        );
        // Still RFC 3339: it parses back to the same instant.
        let back = time::OffsetDateTime::parse(
            &Timestamp(1_500_000).to_string(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert_eq!(back.unix_timestamp_nanos(), 1_500_000_000);
    }

    #[test]
    fn arithmetic_saturates_and_measures() {
        let t = Timestamp(1_000);
        assert_eq!(t + Duration::from_micros(500), Timestamp(1_500));
        assert_eq!(t - Duration::from_micros(1_500), Timestamp(-500));
        assert_eq!(
            Timestamp(i64::MAX) + Duration::from_secs(1),
            Timestamp(i64::MAX)
        );
        assert_eq!(
            Timestamp(i64::MIN) - Duration::from_secs(1),
            Timestamp(i64::MIN)
        );
        assert_eq!(
            Timestamp(i64::MAX).checked_add(Duration::from_micros(1)),
            None
        );
        assert_eq!(
            Timestamp(2_000).duration_since(t),
            Some(Duration::from_micros(1_000))
        );
        assert_eq!(t.duration_since(Timestamp(2_000)), None);
        let mut u = t;
        u += Duration::from_millis(1);
        u -= Duration::from_micros(1);
        assert_eq!(u, Timestamp(1_999));
    }

    #[test]
    fn manual_clock_moves_only_when_told_and_clones_share_it() {
        let clock = ManualClock::new(Timestamp(10));
        let other = clock.clone();
        assert_eq!(clock.now(), Timestamp(10));
        other.advance(Duration::from_micros(5));
        assert_eq!(clock.now(), Timestamp(15));
        clock.set(Timestamp(3));
        assert_eq!(other.now(), Timestamp(3));
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let clock = TokioClock::starting_at(Timestamp(0));
        assert_eq!(clock.now(), Timestamp(0));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(clock.now(), Timestamp(2_000_000));
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now() > Timestamp(1_577_836_800_000_000));
    }
}
