//! `PgBus` against the bus conformance suite (see `keypal_conformance::bus`): a key
//! revoked on one instance is refused by another that had it cached as valid; a
//! terminated listener comes back and says `All`; only changes to existing keys are
//! announced, and every one of a burst arrives. Then what is PostgreSQL's own: a bus on
//! a store's pool, the pool's closing, prefixes and URLs.
//!
//! On the test binary's PostgreSQL (see `keypal-testing`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use keypal::Invalidation;
use keypal_conformance::bus::{self, BusUnderTest, FaultySubscriber};
use keypal_sql::{BusSubscription, PgBus, PgBusSink, PostgresStore};

use common::{fresh_schema, postgres_options, postgres_url};

fn unreachable(e: impl std::fmt::Display) -> ! {
    panic!("the test PostgreSQL does not answer: {e}")
}

/// One instance's store on the shared schema (a pool of its own, as on another node).
async fn postgres_store(url: &str, schema: &str) -> PostgresStore {
    PostgresStore::connect_with(url, &postgres_options(schema)).await.unwrap_or_else(|e| unreachable(e))
}

async fn drop_schema(store: &PostgresStore, schema: &str) {
    let drop = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
    let _ = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(store.pool()).await;
}

/// A prefix (and so a channel) no other test uses.
fn fresh_prefix() -> String {
    format!("kpt_{}_", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

async fn bus(url: &str, prefix: &str) -> PgBus {
    PgBus::connect(url, prefix).await.unwrap_or_else(|e| unreachable(e))
}

/// `PgBus` on the test binary's PostgreSQL at this URL.
struct Postgres(&'static str);

impl BusUnderTest for Postgres {
    type Bus = PgBus;
    type Error = sqlx::Error;
    type Subscriber = TestRole;

    const NAME: &'static str = "PgBus";

    fn fresh_prefix() -> String {
        fresh_prefix()
    }

    async fn connect(&self, prefix: &str) -> PgBus {
        bus(self.0, prefix).await
    }

    async fn subscriber(&self, prefix: &str) -> TestRole {
        TestRole::create(self.0, prefix).await
    }

    fn ping_interval(bus: PgBus, every: Duration) -> PgBus {
        bus.ping_interval(every)
    }

    fn event_sink(bus: &PgBus) -> PgBusSink {
        bus.event_sink()
    }

    async fn publish(bus: &PgBus, message: &Invalidation) -> Result<(), sqlx::Error> {
        bus.publish(message).await
    }

    async fn subscribe(
        bus: &PgBus,
        handler: impl Fn(Invalidation) + Send + Sync + 'static,
    ) -> Result<BusSubscription, sqlx::Error> {
        bus.subscribe(handler).await
    }
}

keypal_conformance::bus_conformance!(optional postgres_url().map(Postgres));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_on_a_is_refused_by_b_that_had_it_cached() {
    let Some(url) = postgres_url() else { return };
    let schema = fresh_schema();
    let prefix = fresh_prefix();
    let stores =
        [postgres_store(url, &schema).await, postgres_store(url, &schema).await, postgres_store(url, &schema).await];
    let cleanup = stores[2].clone();
    // A on a pool of its own, B on its store's pool.
    let buses = [bus(url, &prefix).await, PgBus::new(stores[1].pool().clone(), &prefix).unwrap()];
    bus::a_key_revoked_on_a_is_refused_by_b_that_had_it_cached::<Postgres, _>(stores, buses).await;
    drop_schema(&cleanup, &schema).await;
}

/// A login role of its own, so that terminating and refusing its connections touches
/// nothing else, and its subscriber bus.
struct TestRole {
    admin: sqlx::PgPool,
    role: String,
    bus: PgBus,
}

impl TestRole {
    async fn create(url: &str, prefix: &str) -> Self {
        let admin = sqlx::PgPool::connect(url).await.unwrap_or_else(|e| unreachable(e));
        let role = format!("kpt_bus_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        run(&admin, format!("CREATE ROLE {role} LOGIN")).await;
        match PgBus::connect(&url_of_role(url, &role), prefix).await {
            Ok(bus) => Self { admin, role, bus },
            Err(e) => {
                run(&admin, format!("DROP ROLE {role}")).await;
                panic!("cannot connect as a new role ({e}): the test server must trust local connections");
            }
        }
    }
}

async fn run(admin: &sqlx::PgPool, sql: String) {
    sqlx::query(sqlx::AssertSqlSafe(sql)).execute(admin).await.expect("role statement");
}

/// The test server's URL with `role` as the user.
fn url_of_role(url: &str, role: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{role}@{host}")
}

impl FaultySubscriber<Postgres> for TestRole {
    fn bus(&self) -> &PgBus {
        &self.bus
    }

    /// Terminates the backends listening on the channel.
    async fn cut(&self) -> u64 {
        let terminated: i64 = sqlx::query_scalar(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE query LIKE 'LISTEN%' AND position(quote_ident($1) IN query) > 0 AND pid <> pg_backend_pid()",
        )
        .bind(self.bus.channel())
        .fetch_one(&self.admin)
        .await
        .expect("terminate the listener");
        terminated.try_into().expect("a count")
    }

    async fn refuse(&self) {
        run(&self.admin, format!("ALTER ROLE {} NOLOGIN", self.role)).await;
    }

    async fn admit(&self) {
        run(&self.admin, format!("ALTER ROLE {} LOGIN", self.role)).await;
    }

    async fn listening(&self) -> bool {
        let query = "SELECT count(*) FROM pg_stat_activity \
            WHERE query LIKE 'LISTEN%' AND position(quote_ident($1) IN query) > 0";
        let listening: i64 =
            sqlx::query_scalar(query).bind(self.bus.channel()).fetch_one(&self.admin).await.expect("pg_stat_activity");
        listening > 0
    }

    async fn clean_up(self) {
        drop(self.bus);
        let _ = sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1")
            .bind(&self.role)
            .execute(&self.admin)
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        run(&self.admin, format!("DROP ROLE IF EXISTS {}", self.role)).await;
        self.admin.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_pool_ends_the_subscription() {
    let Some(url) = postgres_url() else { return };
    let pool = sqlx::PgPool::connect(url).await.unwrap_or_else(|e| unreachable(e));
    let bus = PgBus::new(pool.clone(), &fresh_prefix()).unwrap();
    let subscription = bus.subscribe(drop).await.expect("subscribe");
    assert!(subscription.is_running());
    tokio::time::timeout(Duration::from_secs(5), pool.close()).await.expect("the pool closes");
    let start = Instant::now();
    while subscription.is_running() {
        assert!(start.elapsed() < Duration::from_secs(5), "the subscription outlived its pool");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_prefixes_and_urls_are_refused() {
    let Some(url) = postgres_url() else { return };
    for prefix in ["Keypal_", "key-pal_", "kp:", &"a".repeat(54)] {
        let error = PgBus::connect(url, prefix).await.unwrap_err();
        assert_eq!(error.code(), "BUS_PREFIX_INVALID", "{prefix:?}");
    }
    assert_eq!(PgBus::connect("mysql://localhost/x", "kp_").await.unwrap_err().code(), "DATABASE_URL_INVALID");
    assert_eq!(
        PgBus::connect("postgres://postgres@127.0.0.1:1/x", "kp_").await.unwrap_err().code(),
        "DATABASE_UNREACHABLE"
    );
}
