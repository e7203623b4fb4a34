//! Fresh databases for tests: an SQLite file of its own, or a PostgreSQL schema of its own
//! on the test binary's PostgreSQL (see `keypal-testing`).
#![allow(dead_code, clippy::expect_used, clippy::panic)]

use std::sync::Once;
use std::time::{SystemTime, UNIX_EPOCH};

use keypal_sql::{PostgresStore, SqlOptions, SqliteStore};
use keypal_testing::PostgresServer;

/// The URL of this test binary's PostgreSQL, or `None` when the test is skipped
/// (PostgreSQL is not installed; fails instead under `CI=true`).
pub fn postgres_url() -> Option<&'static str> {
    PostgresServer::shared().map(PostgresServer::url)
}

/// A URL for a new SQLite file under the target directory.
pub fn sqlite_url() -> String {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("keypal-sql-tests");
    std::fs::create_dir_all(&dir).expect("create the test database directory");
    format!("sqlite://{}", dir.join(format!("{}.db", uuid::Uuid::now_v7().simple())).display())
}

/// A migrated store on a new SQLite file.
pub async fn sqlite_store() -> SqliteStore {
    SqliteStore::connect(&sqlite_url()).await.expect("open a new SQLite database")
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A schema name no other test uses: `kpt_<unix seconds>_<random>`.
pub fn fresh_schema() -> String {
    PostgresServer::fresh_schema()
}

/// Options for a store in a new schema of its own, with a small pool.
pub fn postgres_options(schema: &str) -> SqlOptions {
    SqlOptions::new().schema(schema).max_connections(4).idle_timeout(Some(std::time::Duration::from_secs(5)))
}

/// A migrated store in a new schema, or `None` when the test is skipped (see
/// [`postgres_url`]).
pub async fn postgres_store() -> Option<PostgresStore> {
    let url = postgres_url()?;
    drop_stale_schemas(url).await;
    let schema = fresh_schema();
    match PostgresStore::connect_with(url, &postgres_options(&schema)).await {
        Ok(store) => Some(store),
        Err(e) => panic!("the test PostgreSQL at {url} does not answer: {e}"),
    }
}

/// Drops test schemas left by runs more than an hour old (once per test process), on a
/// long-lived server named by `KEYPAL_TEST_POSTGRES_URL`.
async fn drop_stale_schemas(url: &str) {
    static ONCE: Once = Once::new();
    let mut first = false;
    ONCE.call_once(|| first = true);
    if !first {
        return;
    }
    let Ok(pool) = sqlx::PgPool::connect(url).await else { return };
    let names: Vec<String> = sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'kpt\\_%'")
        .fetch_all(&pool)
        .await
        .unwrap_or_default();
    let cutoff = unix_now().saturating_sub(3600);
    for name in names {
        let created = name.split('_').nth(1).and_then(|s| s.parse::<u64>().ok());
        if created.is_some_and(|t| t < cutoff) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            let _ =
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {name} CASCADE"))).execute(&pool).await;
        }
    }
    pool.close().await;
}
