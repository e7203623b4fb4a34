//! `RedisRateLimiter`: exact across instances (two managers on one store, one Redis,
//! clocks two hours apart), the same decisions as the in-process `GcraLimiter`, idle
//! state that expires, and both fail modes against a Redis that is not there or does
//! not answer.
//!
//! On the test binary's Redis (see `keypal-testing`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use keypal::{
    Code, Error, GcraLimiter, KeyId, KeyManager, ManualClock, MemoryStore, NewKey, RateLimit, RateLimiter,
    RateLimiterError,
};
use keypal_redis::{FailMode, RateLimitUnavailable, RedisRateLimiter, redis};
use time::OffsetDateTime;

use common::{fresh_prefix, raw_connection, redis_url, url};

/// A limiter on the test Redis under `prefix`, checked to be reachable. The deadline is
/// generous: a loaded test machine must not turn into a fail-closed error.
async fn limiter(prefix: &str) -> RedisRateLimiter {
    let limiter = RedisRateLimiter::builder(prefix)
        .timeout(Duration::from_secs(2))
        .connect(url())
        .await
        .expect("a valid Redis URL");
    if let Err(e) = limiter.ping().await {
        panic!("the test Redis at {} does not answer: {e} ({})", url(), e.code());
    }
    limiter
}

/// A limiter on a port where nothing listens.
async fn unreachable(mode: FailMode) -> RedisRateLimiter {
    RedisRateLimiter::builder(fresh_prefix())
        .fail_mode(mode)
        .timeout(Duration::from_millis(200))
        .connect("redis://127.0.0.1:1")
        .await
        .expect("a valid Redis URL")
}

fn limit(text: &str) -> RateLimit {
    text.parse().expect("a valid rate limit")
}

/// The `RateLimitUnavailable` inside a limiter error.
fn cause(error: &RateLimiterError) -> &RateLimitUnavailable {
    error.0.downcast_ref::<RateLimitUnavailable>().expect("the limiter's own error")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_with_skewed_clocks_share_one_exact_limit() {
    let Some(_) = redis_url() else { return };
    let prefix = fresh_prefix();
    let store = Arc::new(MemoryStore::new());
    let a = KeyManager::builder().store(store.clone()).rate_limiter(limiter(&prefix).await).build().unwrap();
    // The second instance's clock is two hours ahead: deciding on its own clock, it
    // would see the first one's usage as long past. Both decide on Redis's clock.
    let skewed = Arc::new(ManualClock::new(OffsetDateTime::now_utc() + Duration::from_secs(2 * 3600)));
    let b =
        KeyManager::builder().store(store.clone()).clock(skewed).rate_limiter(limiter(&prefix).await).build().unwrap();

    let created = a.create(NewKey::new().rate_limit(limit("100/hour")).remaining(1_000)).await.unwrap();
    let tasks: Vec<_> = (0..160)
        .map(|i| {
            let keys = if i % 2 == 0 { a.clone() } else { b.clone() };
            let plain = created.key.expose().to_owned();
            tokio::spawn(async move { keys.verify(&plain).await })
        })
        .collect();
    let (mut valid, mut limited) = (0, 0);
    for task in tasks {
        let verification = task.await.expect("join").expect("verify");
        match verification.code() {
            Code::Valid => valid += 1,
            Code::RateLimited => {
                limited += 1;
                let status = verification.rate_limit().expect("a rate-limited verification has a status");
                assert_eq!((status.allowed, status.remaining, status.limit), (false, 0, 100));
                let wait = status.retry_after.expect("a refusal says when to retry");
                assert!(wait <= Duration::from_secs(36) && wait > Duration::from_secs(30), "retry after {wait:?}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((valid, limited), (100, 60), "exactly the limit gets through across both instances");
    // A rate-limited verification spends no credits.
    assert_eq!(a.get(&created.record.id).await.unwrap().remaining, Some(900));

    // The state is one key, expiring within the period.
    let mut conn = raw_connection().await;
    let state = format!("{prefix}rl:{}", created.record.id);
    let ttl: i64 = redis::cmd("PTTL").arg(&state).query_async(&mut conn).await.unwrap();
    assert!(ttl > 3_500_000 && ttl <= 3_600_000, "the state expires when the allowance is whole again: {ttl} ms");
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut conn).await.unwrap();
    assert_eq!(keys, vec![state]);
    let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await.unwrap();
}

#[tokio::test]
async fn decides_like_the_in_process_limiter() {
    let Some(_) = redis_url() else { return };
    let redis = limiter(&fresh_prefix()).await;
    let local = GcraLimiter::new();
    let (key, other) = (KeyId::new(), KeyId::new());
    let l = limit("10/minute");
    let now = OffsetDateTime::now_utc();
    for i in 0..13 {
        let shared = redis.check(key, l, now).await.expect("Redis decides");
        let expected = local.decide(key, l, now);
        assert_eq!(
            (shared.allowed, shared.remaining, shared.limit),
            (expected.allowed, expected.remaining, expected.limit),
            "request {i}"
        );
        // The same horizon, on Redis's clock (the same machine's here).
        let drift = (shared.reset_at - expected.reset_at).unsigned_abs();
        assert!(drift < Duration::from_secs(1), "request {i}: reset_at {drift:?} apart");
        match (shared.retry_after, expected.retry_after) {
            (None, None) => {}
            (Some(got), Some(want)) => {
                // Redis's clock moved on a little since the burst: a little less to wait.
                assert!(got <= want && want - got < Duration::from_secs(1), "retry after {got:?}, want {want:?}");
            }
            other => panic!("request {i}: retry_after {other:?}"),
        }
    }
    assert_eq!(local.decide(key, l, now).retry_after, Some(Duration::from_secs(6)));

    // Keys are independent, and a reset gives the whole allowance back.
    assert_eq!(redis.check(other, l, now).await.unwrap().remaining, 9);
    redis.reset(key).await.unwrap();
    assert_eq!(redis.check(key, l, now).await.unwrap().remaining, 9);
    redis.reset(key).await.unwrap();
    redis.reset(other).await.unwrap();
}

#[tokio::test]
async fn one_more_request_per_interval_and_idle_state_vanishes() {
    let Some(_) = redis_url() else { return };
    let prefix = fresh_prefix();
    let redis = limiter(&prefix).await;
    let key = KeyId::new();
    // Two per second: one every 500 ms, a margin that a loaded machine keeps.
    let l = limit("2/second");
    let now = OffsetDateTime::now_utc();
    let burst: Vec<bool> = decisions(&redis, key, l, now, 3).await;
    assert_eq!(burst, [true, true, false], "the whole allowance at once, then refused");
    let refused = redis.check(key, l, now).await.unwrap();
    assert!(!refused.allowed);
    let wait = refused.retry_after.expect("a refusal with a wait");
    assert!(wait <= Duration::from_millis(500), "one interval at most: {wait:?}");

    // After the wait exactly one more, then refused again.
    tokio::time::sleep(wait + Duration::from_millis(20)).await;
    let after = decisions(&redis, key, l, now, 2).await;
    assert_eq!(after, [true, false], "one more request per interval");

    // The state expires by itself once the allowance is whole again.
    let mut conn = raw_connection().await;
    let state = format!("{prefix}rl:{key}");
    let ttl: i64 = redis::cmd("PTTL").arg(&state).query_async(&mut conn).await.unwrap();
    assert!(ttl > 0 && ttl <= 1_000, "expires within the period: {ttl} ms");
    tokio::time::sleep(Duration::from_millis(ttl as u64 + 50)).await;
    let exists: i64 = redis::cmd("EXISTS").arg(&state).query_async(&mut conn).await.unwrap();
    assert_eq!(exists, 0, "idle state vanished");
    assert_eq!(redis.check(key, l, now).await.unwrap().remaining, 1, "a vanished state is a whole allowance");
}

/// `count` decisions one after the other: whether each was allowed.
async fn decisions(redis: &RedisRateLimiter, key: KeyId, l: RateLimit, now: OffsetDateTime, count: usize) -> Vec<bool> {
    let mut allowed = Vec::with_capacity(count);
    for _ in 0..count {
        allowed.push(redis.check(key, l, now).await.expect("Redis decides").allowed);
    }
    allowed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_fails_closed_by_default() {
    let limiter = unreachable(FailMode::Closed).await;
    assert_eq!(limiter.fail_mode(), FailMode::Closed);
    let observer = limiter.clone();
    let keys = KeyManager::builder().store(MemoryStore::new()).rate_limiter(limiter).build().unwrap();
    let limited = keys.create(NewKey::new().rate_limit(limit("100/hour")).remaining(5)).await.unwrap();

    let started = Instant::now();
    let error = keys.verify(limited.key.expose()).await.expect_err("fails closed");
    assert!(started.elapsed() < Duration::from_secs(2), "no hang: {:?}", started.elapsed());
    assert_eq!(error.code(), "RATE_LIMITER_UNAVAILABLE");
    let Error::RateLimiter(inner) = &error else { panic!("a rate limiter error, got {error:?}") };
    assert!(matches!(cause(inner), RateLimitUnavailable::Redis(_) | RateLimitUnavailable::Timeout(_)));
    assert_eq!(keys.get(&limited.record.id).await.unwrap().remaining, Some(5), "no credit spent");
    assert_eq!(observer.failures(), 1);

    // Keys without a rate limit never ask the limiter.
    let unlimited = keys.create(NewKey::new()).await.unwrap();
    assert!(keys.verify(unlimited.key.expose()).await.unwrap().is_valid());
    assert_eq!(observer.failures(), 1);
    assert!(observer.ping().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_fails_open_when_asked_with_an_unknown_remaining() {
    let limiter = unreachable(FailMode::Open).await;
    let observer = limiter.clone();
    let keys = KeyManager::builder().store(MemoryStore::new()).rate_limiter(limiter).build().unwrap();
    let created = keys.create(NewKey::new().rate_limit(limit("2/hour")).remaining(10)).await.unwrap();

    let started = Instant::now();
    for _ in 0..3 {
        let verification = keys.verify(created.key.expose()).await.expect("fails open");
        assert!(verification.is_valid(), "allowed while the limit cannot be counted");
        let status = verification.rate_limit().expect("a status");
        assert!(status.allowed);
        assert_eq!((status.limit, status.remaining, status.retry_after), (2, 2, None), "remaining == limit: unknown");
    }
    assert!(started.elapsed() < Duration::from_secs(3), "no hang: {:?}", started.elapsed());
    assert_eq!(observer.failures(), 3);
    assert_eq!(keys.get(&created.record.id).await.unwrap().remaining, Some(7), "credits are still spent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_never_answers_times_out_in_both_modes() {
    // Accepts connections and never says a word.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("redis://{}", listener.local_addr().unwrap());
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let timeout = Duration::from_millis(200);
    let l = limit("10/minute");
    let now = OffsetDateTime::now_utc();

    let closed = RedisRateLimiter::builder(fresh_prefix()).timeout(timeout).connect(&url).await.unwrap();
    let started = Instant::now();
    let error = closed.check(KeyId::new(), l, now).await.expect_err("fails closed");
    let elapsed = started.elapsed();
    assert!(elapsed >= timeout && elapsed < Duration::from_secs(1), "the deadline holds: {elapsed:?}");
    assert_eq!(cause(&error).code(), "REDIS_TIMEOUT", "{error}");

    let open = RedisRateLimiter::builder(fresh_prefix())
        .fail_mode(FailMode::Open)
        .timeout(timeout)
        .connect(&url)
        .await
        .unwrap();
    let started = Instant::now();
    let status = open.check(KeyId::new(), l, now).await.expect("fails open");
    assert!(started.elapsed() < Duration::from_secs(1), "the deadline holds: {:?}", started.elapsed());
    assert_eq!((status.allowed, status.remaining, status.reset_at), (true, 10, now));
    silent.abort();
}
