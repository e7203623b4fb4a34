//! `cargo bench -p keypal-redis --bench bus`: how fast a revocation on instance A reaches
//! instance B over [`RedisBus`] (pub/sub on the benches' Redis), the keys being on the
//! local PostgreSQL (schema `keypal_bench_redis_bus`, recreated per run). A and B are
//! two managers with the verified cache on, each on a pool of its own; B had the key
//! cached as valid. The benchmarks are the bus suite's (see
//! `keypal_conformance::bus::Propagation`).

// Benchmark set-up: a failure to build the fixture aborts the run, which is what it should do.
#![allow(clippy::panic, clippy::expect_used)]

use std::sync::LazyLock;

use keypal_conformance::bus::{Propagation, RUNTIME};
use keypal_redis::RedisBus;
use keypal_sql::{PostgresStore, SqlOptions, sqlx};

fn main() {
    divan::main();
}

const SCHEMA: &str = "keypal_bench_redis_bus";
const PREFIX: &str = "keypal:bench:bus:";

/// The benches' PostgreSQL: `KEYPAL_TEST_POSTGRES_URL`, else a private server (see `keypal-testing`).
fn postgres_url() -> &'static str {
    keypal_testing::PostgresServer::required().url()
}

/// The benches' Redis: `KEYPAL_TEST_REDIS_URL`, else a private server (see `keypal-testing`).
fn redis_url() -> &'static str {
    keypal_testing::RedisServer::required().url()
}

static FIXTURE: LazyLock<Propagation<PostgresStore>> = LazyLock::new(|| {
    RUNTIME.block_on(async {
        let admin = sqlx::PgPool::connect(postgres_url())
            .await
            .unwrap_or_else(|e| panic!("the benches' PostgreSQL does not answer: {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")))
            .execute(&admin)
            .await
            .expect("drop bench schema");
        admin.close().await;
        let options = SqlOptions::new().schema(SCHEMA);
        let store_a = PostgresStore::connect_with(postgres_url(), &options).await.expect("store A");
        let store_b = PostgresStore::connect_with(postgres_url(), &options).await.expect("store B");
        let bus_a = RedisBus::connect(redis_url(), PREFIX)
            .await
            .unwrap_or_else(|e| panic!("the benches' Redis does not answer: {e}"));
        let bus_b = RedisBus::connect(redis_url(), PREFIX).await.expect("bus B");
        Propagation::new(
            [store_a, store_b],
            bus_a.event_sink(),
            |handler| async move { bus_b.subscribe(handler).await },
        )
        .await
    })
});

keypal_conformance::bus_benchmarks!(FIXTURE);
