//! Fresh stores for tests: each under a key prefix of its own on the local Redis.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::sync::Once;
use std::time::{SystemTime, UNIX_EPOCH};

use keypal_redis::RedisStore;
use keypal_redis::redis;

/// The Redis server the tests use (`KEYPAL_TEST_REDIS_URL` overrides it).
pub fn redis_url() -> String {
    std::env::var("KEYPAL_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A prefix no other test uses: `kpt:<unix seconds>_<random>:`.
pub fn fresh_prefix() -> String {
    format!("kpt:{}_{}:", unix_now(), &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// A store under `prefix`. Redis must be running: the test fails (never skips) when
/// it is not, saying how to start it.
pub async fn store_with_prefix(prefix: &str) -> RedisStore {
    match RedisStore::connect(&redis_url(), prefix).await {
        Ok(store) => store,
        Err(e) => panic!(
            "Redis is required for this test and is not reachable at {}: {e} ({}). Start it with \
             `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no` (CI does).",
            redis_url(),
            e.code()
        ),
    }
}

/// A store under a fresh prefix (see [`fresh_prefix`]).
pub async fn redis_store() -> RedisStore {
    drop_stale_prefixes().await;
    store_with_prefix(&fresh_prefix()).await
}

/// A plain connection to the test server, for looking at keys directly.
pub async fn raw_connection() -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(redis_url()).expect("a valid Redis URL");
    client.get_multiplexed_async_connection().await.expect("connect to the test Redis")
}

/// Deletes the keys of test prefixes more than an hour old (once per test process).
async fn drop_stale_prefixes() {
    static ONCE: Once = Once::new();
    let mut first = false;
    ONCE.call_once(|| first = true);
    if !first {
        return;
    }
    let Ok(client) = redis::Client::open(redis_url()) else { return };
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
