//! Where keypal reads the time from, so tests can move it.

use std::fmt::Debug;
use std::sync::Mutex;
use std::time::Duration;

use time::OffsetDateTime;

/// A source of the current time (UTC).
///
/// Every timestamp keypal stores is truncated to whole microseconds, the
/// precision of the SQL stores, so a record reads back equal to what was written.
pub trait Clock: Send + Sync + Debug + 'static {
    /// The current time, truncated to microseconds.
    fn now(&self) -> OffsetDateTime;
}

/// The system clock.
///
/// ```
/// use keypal::{Clock, SystemClock};
/// assert_eq!(SystemClock.now().nanosecond() % 1_000, 0);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        truncate_to_micros(OffsetDateTime::now_utc())
    }
}

/// A clock that moves only when told to: for tests of expiry, grace windows and rate limits.
///
/// ```
/// use keypal::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new(time::macros::datetime!(2025-01-01 0:00 UTC));
/// clock.advance(Duration::from_secs(60));
/// assert_eq!(clock.now(), time::macros::datetime!(2025-01-01 0:01 UTC));
/// ```
#[derive(Debug)]
pub struct ManualClock(Mutex<OffsetDateTime>);

impl ManualClock {
    /// A clock standing at `at`.
    pub fn new(at: OffsetDateTime) -> Self {
        Self(Mutex::new(truncate_to_micros(at)))
    }

    /// A clock standing at the current system time.
    pub fn starting_now() -> Self {
        Self::new(OffsetDateTime::now_utc())
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *now = truncate_to_micros(*now + by);
    }

    /// Sets the clock to `at`.
    pub fn set(&self, at: OffsetDateTime) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = truncate_to_micros(at);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Drops the sub-microsecond part of a timestamp.
///
/// ```
/// use keypal::clock::truncate_to_micros;
/// let t = time::macros::datetime!(2025-01-01 0:00:00.123456789 UTC);
/// assert_eq!(truncate_to_micros(t), time::macros::datetime!(2025-01-01 0:00:00.123456 UTC));
/// ```
pub fn truncate_to_micros(at: OffsetDateTime) -> OffsetDateTime {
    let nanos = at.nanosecond();
    at.replace_nanosecond(nanos - nanos % 1_000).unwrap_or(at)
}
