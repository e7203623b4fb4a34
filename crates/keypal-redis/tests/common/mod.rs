//! Fresh stores for tests: each under a key prefix of its own on the test binary's Redis
//! (see `keypal-testing`).
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::sync::Once;
use std::time::{SystemTime, UNIX_EPOCH};

use keypal_redis::RedisStore;
use keypal_redis::redis;
use keypal_testing::RedisServer;

/// The URL of this test binary's Redis, or `None` when the test is skipped
/// (`redis-server` is not installed; fails instead under `CI=true`). Every test that
/// needs Redis asks for it first, and returns on `None`.
pub fn redis_url() -> Option<&'static str> {
    RedisServer::shared().map(RedisServer::url)
}

/// The URL, for helpers called once the test has asked for [`redis_url`].
pub fn url() -> &'static str {
    redis_url().expect("the test asks for redis_url() first")
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A prefix no other test uses: `kpt:<unix seconds>_<random>:`.
pub fn fresh_prefix() -> String {
    RedisServer::fresh_prefix()
}

/// A store under `prefix` (once the test has asked for [`redis_url`]).
pub async fn store_with_prefix(prefix: &str) -> RedisStore {
    match RedisStore::connect(url(), prefix).await {
        Ok(store) => store,
        Err(e) => panic!("the test Redis at {} does not answer: {e} ({})", url(), e.code()),
    }
}

/// A store under a fresh prefix (see [`fresh_prefix`]), or `None` when the test is
/// skipped (see [`redis_url`]).
pub async fn redis_store() -> Option<RedisStore> {
    redis_url()?;
    drop_stale_prefixes().await;
    Some(store_with_prefix(&fresh_prefix()).await)
}

/// A plain connection to the test server, for looking at keys directly.
pub async fn raw_connection() -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url()).expect("a valid Redis URL");
    client.get_multiplexed_async_connection().await.expect("connect to the test Redis")
}

/// Deletes the keys of test prefixes more than an hour old (once per test process), on a
/// long-lived server named by `KEYPAL_TEST_REDIS_URL`.
async fn drop_stale_prefixes() {
    static ONCE: Once = Once::new();
    let mut first = false;
    ONCE.call_once(|| first = true);
    if !first {
        return;
    }
    let Ok(client) = redis::Client::open(url()) else { return };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else { return };
    let cutoff = unix_now().saturating_sub(3600);
    let mut cursor: u64 = 0;
    loop {
        let Ok((next, keys)): Result<(u64, Vec<String>), _> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("kpt:*")
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
        else {
            return;
        };
        let stale: Vec<&String> = keys
            .iter()
            .filter(|k| {
                let created = k.split(':').nth(1).and_then(|p| p.split('_').next()).and_then(|s| s.parse::<u64>().ok());
                created.is_some_and(|t| t < cutoff)
            })
            .collect();
        if !stale.is_empty() {
            let _: Result<u64, _> = redis::cmd("UNLINK").arg(stale).query_async(&mut conn).await;
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}
