//! Where keypal reads the time from, so tests can move it.

use std::cell::Cell;
use std::fmt::Debug;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;

/// A source of the current time (UTC).
///
/// Every timestamp keypal stores is truncated to whole microseconds, the
/// precision of the SQL stores, so a record reads back equal to what was written.
pub trait Clock: Send + Sync + Debug + 'static {
    /// The current time, truncated to microseconds.
    fn now(&self) -> OffsetDateTime;

    /// The current Unix time in whole seconds, read cheaply: it may lag
    /// [`now`](Clock::now) by up to the operating system's clock tick (a few
    /// milliseconds). keypal asks it only where that lag cannot change an answer:
    /// whether a key's use was already noted in the current `last_used_at` interval.
    ///
    /// The default reads [`now`](Clock::now), so a clock that implements only `now`
    /// (a test clock, say) stays consistent with itself.
    ///
    /// ```
    /// use keypal::{Clock, ManualClock};
    /// let clock = ManualClock::new(time::macros::datetime!(2025-01-01 0:00:30.5 UTC));
    /// assert_eq!(clock.coarse_unix_seconds(), 1_735_689_630);
    /// ```
    fn coarse_unix_seconds(&self) -> i64 {
        self.now().unix_timestamp()
    }
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
        system_now()
    }

    /// On Linux, `CLOCK_REALTIME_COARSE`: the time at the last clock tick, read from
    /// memory the kernel shares with the process, without reading a hardware counter.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn coarse_unix_seconds(&self) -> i64 {
        rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse).tv_sec
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn coarse_unix_seconds(&self) -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }
}

/// `truncate_to_micros(OffsetDateTime::now_utc())`, faster.
///
/// Turning a Unix time into a calendar date is most of the cost of `now_utc`, and
/// it changes once a second: each thread remembers the date and time of the start
/// of the current second, and a reading within that second only sets the sub-second part.
fn system_now() -> OffsetDateTime {
    thread_local! {
        /// The last whole second read on this thread, as Unix seconds and as a date and time.
        static SECOND: Cell<(u64, OffsetDateTime)> = const { Cell::new((u64::MAX, OffsetDateTime::UNIX_EPOCH)) };
    }
    let Ok(since_epoch) = SystemTime::now().duration_since(UNIX_EPOCH) else {
        return truncate_to_micros(OffsetDateTime::now_utc());
    };
    let secs = since_epoch.as_secs();
    let second = SECOND.with(|cached| {
        let (cached_secs, at) = cached.get();
        if cached_secs == secs {
            return Some(at);
        }
        let at = OffsetDateTime::from_unix_timestamp(i64::try_from(secs).ok()?).ok()?;
        cached.set((secs, at));
        Some(at)
    });
    match second {
        Some(at) => at.replace_nanosecond(since_epoch.subsec_micros() * 1_000).unwrap_or(at),
        None => truncate_to_micros(OffsetDateTime::now_utc()),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The cached second must never make the clock disagree with `now_utc`, also
    /// when readings cross into a new second.
    #[test]
    fn system_clock_agrees_with_now_utc() {
        let first = SystemClock.now();
        let mut seconds_seen = 0;
        let mut last = first;
        while seconds_seen < 1 {
            let before = truncate_to_micros(OffsetDateTime::now_utc());
            let now = SystemClock.now();
            let after = OffsetDateTime::now_utc();
            assert!(before <= now && now <= after, "{before} <= {now} <= {after}");
            assert_eq!(now.nanosecond() % 1_000, 0);
            assert!(now.offset().is_utc());
            assert!(now >= last);
            if now.unix_timestamp() != last.unix_timestamp() {
                seconds_seen += 1;
            }
            last = now;
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The coarse reading never runs ahead of the precise one, and lags it by less
    /// than a second (in practice, by at most one clock tick).
    #[test]
    fn coarse_seconds_trail_the_system_time_closely() {
        for _ in 0..200 {
            let coarse = SystemClock.coarse_unix_seconds();
            let after = OffsetDateTime::now_utc().unix_timestamp();
            assert!(coarse <= after, "{coarse} <= {after}");
            assert!(after - coarse <= 1, "{coarse} lags {after}");
            std::thread::sleep(Duration::from_micros(500));
        }
    }
}
