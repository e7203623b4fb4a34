//! Rate limiting: the [`RateLimiter`] trait and the in-process [`GcraLimiter`].

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use time::OffsetDateTime;

use crate::record::KeyId;
use crate::tier::RateLimit;

/// The state of a key's rate limit after one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitStatus {
    /// Whether this request was let through.
    pub allowed: bool,
    /// Requests per period.
    pub limit: u32,
    /// Requests left right now.
    pub remaining: u32,
    /// When the allowance is whole again.
    pub reset_at: OffsetDateTime,
    /// For a refused request: how long until one more is allowed.
    pub retry_after: Option<Duration>,
}

/// The rate limiter could not decide (a shared limiter's backend is down).
#[derive(Debug, thiserror::Error)]
#[error("rate limiter unavailable: {0}")]
pub struct RateLimiterError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// Decides whether one more request of a key is allowed under its limit.
///
/// keypal ships the in-process [`GcraLimiter`]; a limiter shared between instances
/// (Redis) implements the same trait.
pub trait RateLimiter: Send + Sync + 'static {
    /// Counts one request of `key` at `now` against `limit` and says whether it is allowed.
    fn check(
        &self,
        key: KeyId,
        limit: RateLimit,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<RateLimitStatus, RateLimiterError>> + Send;
}

/// An object-safe [`RateLimiter`], implemented for every limiter, so a manager can hold any.
pub trait DynRateLimiter: Send + Sync + 'static {
    /// See [`RateLimiter::check`].
    fn check_boxed(
        &self,
        key: KeyId,
        limit: RateLimit,
        now: OffsetDateTime,
    ) -> Pin<Box<dyn Future<Output = Result<RateLimitStatus, RateLimiterError>> + Send + '_>>;
}

impl<T: RateLimiter> DynRateLimiter for T {
    fn check_boxed(
        &self,
        key: KeyId,
        limit: RateLimit,
        now: OffsetDateTime,
    ) -> Pin<Box<dyn Future<Output = Result<RateLimitStatus, RateLimiterError>> + Send + '_>> {
        Box::pin(self.check(key, limit, now))
    }
}

const SHARDS: usize = 16;
const PRUNE_ABOVE: usize = 4_096;

/// The generic cell rate algorithm, in process: exact, O(1) memory per active key,
/// no background task. A key with limit N per period may send N requests at once,
/// then one every period/N.
///
/// ```
/// use keypal::{GcraLimiter, KeyId, RateLimit};
/// let limiter = GcraLimiter::new();
/// let key = KeyId::new();
/// let now = time::OffsetDateTime::now_utc();
/// let limit: RateLimit = "2/minute".parse()?;
/// assert!(limiter.decide(key, limit, now).allowed);
/// assert!(limiter.decide(key, limit, now).allowed);
/// let third = limiter.decide(key, limit, now);
/// assert!(!third.allowed);
/// assert_eq!(third.retry_after, Some(std::time::Duration::from_secs(30)));
/// # Ok::<(), keypal::InvalidRateLimit>(())
/// ```
#[derive(Debug)]
pub struct GcraLimiter {
    /// Theoretical arrival time per key, in nanoseconds since the Unix epoch.
    shards: Vec<Mutex<HashMap<KeyId, i128>>>,
    hasher: RandomState,
}

impl Default for GcraLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl GcraLimiter {
    /// An empty limiter.
    pub fn new() -> Self {
        Self { shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(), hasher: RandomState::new() }
    }

    /// Counts one request (synchronous form of [`RateLimiter::check`]).
    pub fn decide(&self, key: KeyId, limit: RateLimit, now: OffsetDateTime) -> RateLimitStatus {
        let period = limit.period.as_nanos() as i128;
        let interval = period / i128::from(limit.limit);
        let now_ns = now.unix_timestamp_nanos();
        let shard = &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS];
        let mut tats = shard.lock().unwrap_or_else(|e| e.into_inner());
        if tats.len() > PRUNE_ABOVE {
            // A key whose theoretical arrival time has passed is the same as a fresh one.
            tats.retain(|_, tat| *tat > now_ns);
        }
        let tat = tats.get(&key).copied().unwrap_or(now_ns).max(now_ns);
        let new_tat = tat + interval;
        let allowed = new_tat - now_ns <= period;
        let horizon = if allowed {
            tats.insert(key, new_tat);
            new_tat
        } else {
            tat
        };
        drop(tats);
        let used = horizon - now_ns;
        let remaining = ((period - used).max(0) / interval) as u32;
        let reset_at = OffsetDateTime::from_unix_timestamp_nanos(horizon).unwrap_or(now);
        let retry_after = (!allowed).then(|| {
            let wait = new_tat - period - now_ns;
            Duration::from_nanos(u64::try_from(wait.max(0)).unwrap_or(u64::MAX))
        });
        RateLimitStatus { allowed, limit: limit.limit, remaining: remaining.min(limit.limit), reset_at, retry_after }
    }
}

impl RateLimiter for GcraLimiter {
    fn check(
        &self,
        key: KeyId,
        limit: RateLimit,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<RateLimitStatus, RateLimiterError>> + Send {
        std::future::ready(Ok(self.decide(key, limit, now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(text: &str) -> RateLimit {
        text.parse().unwrap_or(RateLimit::per_hour(1))
    }

    #[test]
    fn burst_of_exactly_the_limit_then_refusals() {
        let limiter = GcraLimiter::new();
        let key = KeyId::new();
        let now = OffsetDateTime::now_utc();
        let allowed = (0..160).filter(|_| limiter.decide(key, limit("100/hour"), now).allowed).count();
        assert_eq!(allowed, 100);
    }

    #[test]
    fn remaining_counts_down_and_refills_with_time() {
        let limiter = GcraLimiter::new();
        let key = KeyId::new();
        let t0 = OffsetDateTime::now_utc();
        let l = limit("10/minute");
        assert_eq!(limiter.decide(key, l, t0).remaining, 9);
        assert_eq!(limiter.decide(key, l, t0).remaining, 8);
        for _ in 0..8 {
            limiter.decide(key, l, t0);
        }
        let refused = limiter.decide(key, l, t0);
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.retry_after, Some(Duration::from_secs(6)));
        // One interval later exactly one more request is allowed.
        let later = t0 + Duration::from_secs(6);
        assert!(limiter.decide(key, l, later).allowed);
        assert!(!limiter.decide(key, l, later).allowed);
        // A full period later the whole allowance is back.
        assert_eq!(limiter.decide(key, l, t0 + Duration::from_secs(120)).remaining, 9);
    }

    #[test]
    fn keys_are_independent() {
        let limiter = GcraLimiter::new();
        let (a, b) = (KeyId::new(), KeyId::new());
        let now = OffsetDateTime::now_utc();
        assert!(limiter.decide(a, limit("1/hour"), now).allowed);
        assert!(!limiter.decide(a, limit("1/hour"), now).allowed);
        assert!(limiter.decide(b, limit("1/hour"), now).allowed);
    }
}
