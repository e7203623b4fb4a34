//! Fresh databases for tests: an SQLite file of its own, or a PostgreSQL schema of its own.
#![allow(dead_code, clippy::expect_used, clippy::panic)]

use std::sync::Once;
use std::time::{SystemTime, UNIX_EPOCH};

use keypal_sql::{PostgresStore, SqlOptions, SqliteStore};

/// The PostgreSQL server the tests use (`KEYPAL_TEST_POSTGRES_URL` overrides it).
pub fn postgres_url() -> String {
    std::env::var("KEYPAL_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
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
    format!("kpt_{}_{}", unix_now(), &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// Options for a store in a new schema of its own, with a small pool.
pub fn postgres_options(schema: &str) -> SqlOptions {
    SqlOptions::new().schema(schema).max_connections(4).idle_timeout(Some(std::time::Duration::from_secs(5)))
}

/// A migrated store in a new schema. PostgreSQL must be running: the test fails (never
/// skips) when it is not, saying how to start it.
pub async fn postgres_store() -> PostgresStore {
    drop_stale_schemas().await;
    let schema = fresh_schema();
    match PostgresStore::connect_with(&postgres_url(), &postgres_options(&schema)).await {
        Ok(store) => store,
        Err(e) => panic!(
            "PostgreSQL is required for this test and is not reachable at {}: {e}. Start it with \
             `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` (CI does).",
            postgres_url()
        ),
    }
}

/// Drops test schemas left by runs more than an hour old (once per test process).
async fn drop_stale_schemas() {
    static ONCE: Once = Once::new();
    let mut first = false;
    ONCE.call_once(|| first = true);
    if !first {
        return;
    }
    let Ok(pool) = sqlx::PgPool::connect(&postgres_url()).await else { return };
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
