//! [`RedisRateLimiter`]: keypal's [`RateLimiter`] shared by every instance through Redis.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use keypal::{KeyId, RateLimit, RateLimitStatus, RateLimiter, RateLimiterError};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, IntoConnectionInfo, ProtocolVersion, RedisError, Script};
use time::OffsetDateTime;

use crate::error::RedisStoreError;

/// The decision script (standalone: it needs none of the store's prelude).
static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("scripts/rate_limit.lua")));

/// The default deadline of one decision.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(200);

/// The longest period the limiter counts in (2^51 µs, about 71 years): the script's
/// numbers must stay below 2^53 to be exact in Lua.
const MAX_PERIOD_MICROS: u128 = 1 << 51;

/// What a [`RedisRateLimiter`] answers when Redis cannot decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailMode {
    /// Allow the request, with a status of unknown remaining (`remaining == limit`).
    Open,
    /// Fail the check: `verify` returns `Err(keypal::Error::RateLimiter)`.
    #[default]
    Closed,
}

/// Why Redis could not make a rate-limit decision. Wrapped in
/// [`keypal::RateLimiterError`] under [`FailMode::Closed`].
///
/// ```
/// use std::time::Duration;
/// let error = keypal_redis::RateLimitUnavailable::Timeout(Duration::from_millis(200));
/// assert_eq!(error.code(), "REDIS_TIMEOUT");
/// assert_eq!(error.to_string(), "Redis did not decide within 200ms");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RateLimitUnavailable {
    /// No answer within the limiter's deadline (connecting included).
    #[error("Redis did not decide within {0:?}")]
    Timeout(Duration),
    /// Redis could not be reached, or answered with an error.
    #[error("Redis failed: {0}")]
    Redis(#[source] RedisError),
}

impl RateLimitUnavailable {
    /// A stable, machine-readable code: `REDIS_TIMEOUT` or `REDIS_ERROR`.
    pub fn code(&self) -> &'static str {
        match self {
            RateLimitUnavailable::Timeout(_) => "REDIS_TIMEOUT",
            RateLimitUnavailable::Redis(_) => "REDIS_ERROR",
        }
    }
}

/// Counts failures and logs the transitions between available and unavailable.
#[derive(Debug, Default)]
struct Health {
    down: AtomicBool,
    failures: AtomicU64,
}

impl Health {
    fn failed(&self, prefix: &str, mode: FailMode, error: &RateLimitUnavailable) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                prefix,
                fail_mode = ?mode,
                code = error.code(),
                error = %error,
                "Redis rate limiter unavailable; rate-limited keys are {} until it is back",
                match mode {
                    FailMode::Open => "allowed unmetered",
                    FailMode::Closed => "refused with RATE_LIMITER_UNAVAILABLE",
                }
            );
        }
    }

    fn succeeded(&self, prefix: &str) {
        // A load first: the usual case (never down) writes nothing shared.
        if self.down.load(Ordering::Relaxed) && self.down.swap(false, Ordering::Relaxed) {
            tracing::info!(prefix, "Redis rate limiter available again");
        }
    }
}

/// Settings of a [`RedisRateLimiter`]: its key prefix, [`FailMode`] and deadline.
///
/// ```no_run
/// use std::time::Duration;
/// use keypal_redis::{FailMode, RedisRateLimiter};
///
/// # async fn run() -> Result<(), keypal_redis::RedisStoreError> {
/// let limiter = RedisRateLimiter::builder("keypal:")
///     .fail_mode(FailMode::Open)
///     .timeout(Duration::from_millis(100))
///     .connect("redis://127.0.0.1:6379")
///     .await?;
/// assert_eq!(limiter.fail_mode(), FailMode::Open);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct RedisRateLimiterBuilder {
    prefix: String,
    fail_mode: FailMode,
    timeout: Duration,
}

impl RedisRateLimiterBuilder {
    /// What to answer when Redis cannot decide (default [`FailMode::Closed`]).
    pub fn fail_mode(mut self, mode: FailMode) -> Self {
        self.fail_mode = mode;
        self
    }

    /// The deadline of one decision, connecting included (default 200 ms). Under
    /// [`connect`](Self::connect) it also bounds each connection attempt and each reply.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// A limiter on its own connection to `url` (`redis://[user:password@]host[:port][/db]`
    /// or `redis+unix:///path`; Redis 6 or later, as for the store: RESP3 unless the URL
    /// says `?protocol=resp2`). The connection is opened lazily: this fails only for
    /// an invalid URL, never because Redis is down (see [`RedisRateLimiter::ping`]).
    ///
    /// Must be called within a Tokio runtime (the connection lives on it).
    pub async fn connect(self, url: &str) -> Result<RedisRateLimiter, RedisStoreError> {
        let mut info = url.into_connection_info().map_err(RedisStoreError::InvalidUrl)?;
        // RESP3 unless the URL names a protocol (as the store does): the manager then
        // hears of a dropped connection as it happens and reconnects before the next
        // decision, instead of failing it.
        if !url.contains("protocol=") {
            let settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
            info = info.set_redis_settings(settings);
        }
        let client = Client::open(info).map_err(RedisStoreError::InvalidUrl)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            // One attempt per decision: a decision never waits for a backoff.
            .set_number_of_retries(0);
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(RedisStoreError::InvalidUrl)?;
        Ok(self.from_manager(conn))
    }

    /// A limiter on an existing connection manager, for example a
    /// [`RedisStore`](crate::RedisStore)'s ([`RedisStore::connection`](crate::RedisStore::connection)).
    /// The limiter's deadline still bounds every decision.
    ///
    /// ```no_run
    /// use keypal::KeyManager;
    /// use keypal_redis::{RedisRateLimiter, RedisStore};
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = RedisStore::connect("redis://127.0.0.1:6379", "keypal:").await?;
    /// let limiter = RedisRateLimiter::builder(store.prefix()).from_manager(store.connection());
    /// let keys = KeyManager::builder().store(store).rate_limiter(limiter).build()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_manager(self, conn: ConnectionManager) -> RedisRateLimiter {
        RedisRateLimiter {
            conn,
            prefix: Arc::from(self.prefix),
            fail_mode: self.fail_mode,
            timeout: self.timeout,
            health: Arc::default(),
        }
    }
}

/// A [`RateLimiter`] shared by every keypal instance on one Redis: exact across
/// instances, one Lua script per decision, on the Redis server's clock. Cheap to
/// clone (clones share the connection and the failure count).
///
/// The algorithm is the one of keypal's in-process [`keypal::GcraLimiter`] (the generic
/// cell rate algorithm): a key with a limit of N per period may send N requests at
/// once, then one every period/N. Each decision is **one** Lua script
/// (`scripts/rate_limit.lua`), so decisions of any number of instances are serialized
/// by Redis and the count is exact across them.
///
/// # State in Redis
///
/// One string per key that was used recently: `{prefix}rl:{key id}` holds the key's
/// theoretical arrival time (integer microseconds since the Unix epoch). It expires
/// (`SET … PX`) at that time, which is at most about one period after the last allowed
/// request: from then on an absent key means the same thing (a whole allowance), so
/// idle keys vanish by themselves. The script touches only that one key (passed as
/// `KEYS[1]`), so it also runs on Redis Cluster.
///
/// # Clocks
///
/// The script reads the time with `redis.call('TIME')`: every instance decides on the
/// Redis server's clock, so instances whose clocks disagree still agree on the limit.
/// The `now` argument of [`RateLimiter::check`] is therefore **not** used for a
/// decision Redis made; it only dates the status of a request let through while Redis
/// is unavailable under [`FailMode::Open`]. `reset_at` of a status Redis decided is on
/// the Redis server's clock.
///
/// Times are whole microseconds (Redis's `TIME` resolution). The emission interval is
/// period/N rounded down to a microsecond (at least one), and the burst is exactly N
/// intervals, so exactly N requests pass at once even where the period is not a whole
/// number of microsecond intervals (the sustained rate is then a hair above N per
/// period; limits above one million requests per second allow one per microsecond).
///
/// # Redis unavailable
///
/// Each decision has a deadline ([`RedisRateLimiterBuilder::timeout`], 200 ms by
/// default) covering the connection, the script and its reload after a Redis restart.
/// When Redis cannot decide in time (unreachable, too slow, an error), the
/// [`FailMode`] says what happens:
///
/// - [`FailMode::Closed`] (the default): `check` returns `Err(RateLimiterError)`, so
///   [`keypal::KeyManager::verify`] returns `Err(keypal::Error::RateLimiter)`, code
///   `RATE_LIMITER_UNAVAILABLE`. No request of a rate-limited key gets through
///   unmetered; keys without a rate limit are not affected (the limiter is not asked).
/// - [`FailMode::Open`]: the request is allowed with a status whose `remaining` equals
///   its `limit`, `reset_at` is `now` and `retry_after` is `None`. No status Redis
///   decides looks like that (an allowed request always uses at least one interval,
///   so `remaining` is at most `limit - 1`), so callers can tell "unknown" apart; and
///   [`RedisRateLimiter::failures`] counts these decisions. The first failure after a
///   success is logged (`tracing` at WARN level), and so is the recovery (INFO).
///
/// Memory: the limiter's keys are the only keypal keys with a TTL. Under
/// `maxmemory-policy noeviction` (which the store requires) a full Redis refuses the
/// script's write, and the decision follows the [`FailMode`]; under a `volatile-*`
/// policy Redis would evict these keys first, giving those keys their whole allowance
/// back.
///
/// The connection is opened lazily and re-opened after a failure (one attempt per
/// decision, no backoff of its own), so a limiter can be created while Redis is down
/// and starts deciding as soon as Redis is back.
///
/// # Example
///
/// ```no_run
/// use keypal::{KeyManager, MemoryStore, NewKey, RateLimit};
/// use keypal_redis::{FailMode, RedisRateLimiter};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let limiter = RedisRateLimiter::builder("keypal:")
///     .fail_mode(FailMode::Closed)
///     .connect("redis://127.0.0.1:6379")
///     .await?;
/// let keys = KeyManager::builder().store(MemoryStore::new()).rate_limiter(limiter).build()?;
/// let created = keys.create(NewKey::new().rate_limit("2/minute".parse::<RateLimit>()?)).await?;
/// for _ in 0..2 {
///     assert!(keys.verify(created.key.expose()).await?.is_valid());
/// }
/// let third = keys.verify(created.key.expose()).await?;
/// assert_eq!(third.code(), keypal::Code::RateLimited);
/// assert!(third.rate_limit().and_then(|s| s.retry_after).is_some());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisRateLimiter {
    conn: ConnectionManager,
    prefix: Arc<str>,
    fail_mode: FailMode,
    timeout: Duration,
    health: Arc<Health>,
}

impl fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the connection: its client's Debug would show the URL's password.
        f.debug_struct("RedisRateLimiter")
            .field("prefix", &self.prefix)
            .field("fail_mode", &self.fail_mode)
            .field("timeout", &self.timeout)
            .field("failures", &self.failures())
            .finish_non_exhaustive()
    }
}

impl RedisRateLimiter {
    /// Settings for a limiter whose keys start with `prefix` (end it with `:`; the
    /// same prefix as the [`RedisStore`](crate::RedisStore) is fine, the limiter's
    /// keys are `{prefix}rl:{key id}`). Every instance that shares a limit must use
    /// the same prefix on the same Redis.
    pub fn builder(prefix: impl Into<String>) -> RedisRateLimiterBuilder {
        RedisRateLimiterBuilder { prefix: prefix.into(), fail_mode: FailMode::default(), timeout: DEFAULT_TIMEOUT }
    }

    /// A limiter with the default settings ([`FailMode::Closed`], 200 ms): shorthand
    /// for `RedisRateLimiter::builder(prefix).connect(url)`.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), keypal_redis::RedisStoreError> {
    /// let limiter = keypal_redis::RedisRateLimiter::connect("redis://127.0.0.1:6379", "keypal:").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(url: &str, prefix: impl Into<String>) -> Result<Self, RedisStoreError> {
        Self::builder(prefix).connect(url).await
    }

    /// The prefix of every key the limiter writes.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// What the limiter answers when Redis cannot decide.
    pub fn fail_mode(&self) -> FailMode {
        self.fail_mode
    }

    /// The deadline of one decision.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// How many decisions Redis could not make (each answered per the [`FailMode`])
    /// since this limiter (or the one it was cloned from) was built.
    pub fn failures(&self) -> u64 {
        self.health.failures.load(Ordering::Relaxed)
    }

    /// The Redis key holding `key`'s state.
    fn state_key(&self, key: KeyId) -> String {
        format!("{}rl:{}", self.prefix, key)
    }

    /// Checks that Redis answers within the deadline (for a readiness probe, or to
    /// refuse to start under [`FailMode::Closed`] while Redis is down).
    pub async fn ping(&self) -> Result<(), RateLimitUnavailable> {
        let mut conn = self.conn.clone();
        self.within_deadline(redis::cmd("PING").query_async::<()>(&mut conn)).await
    }

    /// Forgets `key`'s usage: its whole allowance is back at once.
    pub async fn reset(&self, key: KeyId) -> Result<(), RateLimitUnavailable> {
        let mut conn = self.conn.clone();
        self.within_deadline(redis::cmd("DEL").arg(self.state_key(key)).query_async::<()>(&mut conn)).await
    }

    /// Runs `request` under the limiter's deadline.
    async fn within_deadline<T>(
        &self,
        request: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, RateLimitUnavailable> {
        match tokio::time::timeout(self.timeout, request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) if e.is_timeout() => Err(RateLimitUnavailable::Timeout(self.timeout)),
            Ok(Err(e)) => Err(RateLimitUnavailable::Redis(e)),
            Err(_) => Err(RateLimitUnavailable::Timeout(self.timeout)),
        }
    }

    /// One decision by Redis, without the fail mode.
    ///
    /// ```no_run
    /// use keypal::{KeyId, RateLimit};
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let limiter = keypal_redis::RedisRateLimiter::connect("redis://127.0.0.1:6379", "keypal:").await?;
    /// let status = limiter.decide(KeyId::new(), RateLimit::per_hour(100)).await?;
    /// assert!(status.allowed);
    /// assert_eq!(status.remaining, 99);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn decide(&self, key: KeyId, limit: RateLimit) -> Result<RateLimitStatus, RateLimitUnavailable> {
        let gcra = Gcra::of(limit);
        let mut invocation = SCRIPT.key(self.state_key(key));
        invocation.arg(gcra.tolerance).arg(gcra.interval);
        let mut conn = self.conn.clone();
        let (allowed, now, horizon): (i64, i64, i64) = self.within_deadline(invocation.invoke_async(&mut conn)).await?;
        Ok(gcra.status(allowed == 1, now, horizon))
    }

    /// The status of a request let through because Redis could not decide.
    fn unknown(limit: RateLimit, now: OffsetDateTime) -> RateLimitStatus {
        RateLimitStatus { allowed: true, limit: limit.limit, remaining: limit.limit, reset_at: now, retry_after: None }
    }
}

impl RateLimiter for RedisRateLimiter {
    /// One decision by Redis (on Redis's clock; `now` only dates a fail-open status).
    async fn check(
        &self,
        key: KeyId,
        limit: RateLimit,
        now: OffsetDateTime,
    ) -> Result<RateLimitStatus, RateLimiterError> {
        match self.decide(key, limit).await {
            Ok(status) => {
                self.health.succeeded(&self.prefix);
                Ok(status)
            }
            Err(error) => {
                self.health.failed(&self.prefix, self.fail_mode, &error);
                match self.fail_mode {
                    FailMode::Open => Ok(Self::unknown(limit, now)),
                    FailMode::Closed => Err(RateLimiterError(Box::new(error))),
                }
            }
        }
    }
}

/// A limit in the script's units (microseconds).
#[derive(Debug, Clone, Copy)]
struct Gcra {
    limit: u32,
    /// The burst tolerance: `limit` intervals (the period, rounded down to whole intervals).
    tolerance: i64,
    /// The emission interval.
    interval: i64,
}

impl Gcra {
    fn of(limit: RateLimit) -> Self {
        let period = limit.period.as_micros().min(MAX_PERIOD_MICROS) as i64;
        let interval = (period / i64::from(limit.limit.max(1))).max(1);
        Self { limit: limit.limit, tolerance: interval * i64::from(limit.limit.max(1)), interval }
    }

    /// The status after the script answered: whether it allowed the request, the
    /// server's time, and the key's theoretical arrival time after the request.
    /// The same arithmetic as [`keypal::GcraLimiter`], in microseconds, with the
    /// tolerance in place of the period (the same whenever the period is a whole
    /// number of intervals, as for `100/hour`).
    fn status(self, allowed: bool, now: i64, horizon: i64) -> RateLimitStatus {
        let used = horizon - now;
        let remaining = u32::try_from((self.tolerance - used).max(0) / self.interval).unwrap_or(u32::MAX);
        let reset_at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(horizon) * 1_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let retry_after = (!allowed).then(|| {
            let wait = horizon + self.interval - self.tolerance - now;
            Duration::from_micros(u64::try_from(wait).unwrap_or(0))
        });
        RateLimitStatus { allowed, limit: self.limit, remaining: remaining.min(self.limit), reset_at, retry_after }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_microseconds_and_the_interval_is_at_least_one() {
        let g = Gcra::of(RateLimit::per_hour(100));
        assert_eq!((g.tolerance, g.interval), (3_600_000_000, 36_000_000));
        // 1500/second: 666 µs per request, exactly 1500 of them at once.
        let odd = Gcra::of(RateLimit::new(1500, Duration::from_secs(1)).unwrap_or(RateLimit::per_hour(1)));
        assert_eq!((odd.tolerance, odd.interval), (999_000, 666));
        let first = odd.status(true, 0, odd.interval);
        assert_eq!(first.remaining, 1499, "an allowed request leaves at most limit - 1");
        let fast = Gcra::of(RateLimit::new(u32::MAX, Duration::from_secs(1)).unwrap_or(RateLimit::per_hour(1)));
        assert_eq!((fast.interval, fast.tolerance), (1, i64::from(u32::MAX)));
        let long = Gcra::of(RateLimit::new(1, Duration::from_secs(u64::MAX / 2)).unwrap_or(RateLimit::per_hour(1)));
        assert_eq!(long.tolerance as u128, MAX_PERIOD_MICROS);
    }

    #[test]
    fn status_arithmetic_matches_the_in_process_limiter() {
        let g = Gcra::of("10/minute".parse().unwrap_or(RateLimit::per_hour(1)));
        let now = 1_700_000_000_000_000;
        // First request of a fresh key: one interval used.
        let first = g.status(true, now, now + g.interval);
        assert_eq!((first.remaining, first.retry_after), (9, None));
        assert_eq!(first.reset_at.unix_timestamp_nanos(), i128::from(now + g.interval) * 1_000);
        // Refused with a full allowance in use: one interval to wait.
        let refused = g.status(false, now, now + g.tolerance);
        assert_eq!((refused.allowed, refused.remaining), (false, 0));
        assert_eq!(refused.retry_after, Some(Duration::from_secs(6)));
    }
}
