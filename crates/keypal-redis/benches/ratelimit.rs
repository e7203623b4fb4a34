//! `cargo bench -p keypal-redis --bench ratelimit`: one `RedisRateLimiter` decision
//! (one `EVALSHA` round trip to a Redis on this machine: `KEYPAL_TEST_REDIS_URL`, else a
//! private `redis-server`), next to the in-process `GcraLimiter` for scale.
//!
//! Each sample is one decision, so divan's median is the p50 latency. The keys are
//! fresh per run and have a limit far above what a run sends, so every decision is an
//! allowed one (the script's longer path: it writes).

// Benchmark set-up: a failure to build the fixture aborts the run, which is what it should do.
#![allow(clippy::panic, clippy::expect_used)]

use std::hint::black_box;
use std::sync::LazyLock;

use divan::Bencher;
use keypal::{GcraLimiter, KeyId, RateLimit, RateLimiter};
use keypal_redis::RedisRateLimiter;
use time::OffsetDateTime;
use tokio::runtime::Runtime;

fn main() {
    divan::main();
}

/// One thread: the measured time is the round trip, not hand-offs between threads.
static RUNTIME: LazyLock<Runtime> =
    LazyLock::new(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime"));

/// The benches' Redis: `KEYPAL_TEST_REDIS_URL`, else a private server (see `keypal-testing`).
fn redis_url() -> &'static str {
    keypal_testing::RedisServer::required().url()
}

/// A limit no run reaches: every decision is allowed.
fn limit() -> RateLimit {
    RateLimit::new(u32::MAX, std::time::Duration::from_secs(3600)).expect("limit")
}

static LIMITER: LazyLock<RedisRateLimiter> = LazyLock::new(|| {
    RUNTIME.block_on(async {
        let prefix = format!("kpbench:{}:", KeyId::new());
        let limiter = RedisRateLimiter::connect(redis_url(), prefix).await.expect("a valid Redis URL");
        if let Err(e) = limiter.ping().await {
            panic!("the bench's Redis at {} does not answer: {e}", redis_url());
        }
        // Load the script before measuring.
        limiter.decide(KeyId::new(), limit()).await.expect("warm-up decision");
        limiter
    })
});

/// One decision on Redis: a round trip and the script.
#[divan::bench]
fn redis_decision(bencher: Bencher) {
    let limiter = &*LIMITER;
    let key = KeyId::new();
    let now = OffsetDateTime::now_utc();
    bencher.bench_local(|| {
        RUNTIME.block_on(async { black_box(limiter.check(key, limit(), now).await.expect("decision")) })
    });
    RUNTIME.block_on(async { limiter.reset(key).await.expect("clean up") });
}

/// The in-process limiter, for comparison.
#[divan::bench]
fn in_process_decision(bencher: Bencher) {
    let limiter = GcraLimiter::new();
    let key = KeyId::new();
    let now = OffsetDateTime::now_utc();
    bencher.bench_local(|| black_box(limiter.decide(key, limit(), now)));
}
