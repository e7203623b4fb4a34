//! `RedisBus` against the bus conformance suite (see `keypal_conformance::bus`): a key
//! revoked on one instance is refused by another that had it cached as valid; a lost
//! subscription comes back and says `All`; only changes to existing keys are announced,
//! and every one of a burst arrives. Then what is Redis's own: errors and the channel.
//!
//! The instances share one PostgreSQL schema (the production layout: PostgreSQL for
//! the keys, Redis for the bus), on the test binary's servers (see `keypal-testing`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use keypal::Invalidation;
use keypal_conformance::bus::{self, BusUnderTest, FaultySubscriber};
use keypal_redis::redis::aio::ConnectionManager;
use keypal_redis::redis::{self, IntoConnectionInfo, RedisError};
use keypal_redis::{BusSubscription, RedisBus, RedisBusSink};
use keypal_sql::{PostgresStore, SqlOptions};

use common::{fresh_prefix, raw_connection, redis_url, url};
use keypal_testing::PostgresServer;

/// One instance's store on the shared schema (a pool of its own, as on another node).
async fn postgres_store(postgres: &PostgresServer, schema: &str) -> PostgresStore {
    let options = SqlOptions::new().schema(schema).max_connections(4);
    match PostgresStore::connect_with(postgres.url(), &options).await {
        Ok(store) => store,
        Err(e) => panic!("the test PostgreSQL at {} does not answer: {e}", postgres.url()),
    }
}

async fn drop_schema(store: &PostgresStore, schema: &str) {
    let drop = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
    let _ = keypal_sql::sqlx::query(keypal_sql::sqlx::AssertSqlSafe(drop)).execute(store.pool()).await;
}

/// A bus on the test Redis. Redis must be running.
async fn bus(prefix: &str) -> RedisBus {
    match RedisBus::connect(url(), prefix).await {
        Ok(bus) => bus,
        Err(e) => panic!("the test Redis at {} does not answer: {e} ({})", url(), e.code()),
    }
}

/// `RedisBus` on the test binary's Redis.
struct Redis;

impl BusUnderTest for Redis {
    type Bus = RedisBus;
    type Error = RedisError;
    type Subscriber = TestUser;

    const NAME: &'static str = "RedisBus";

    fn fresh_prefix() -> String {
        fresh_prefix()
    }

    async fn connect(&self, prefix: &str) -> RedisBus {
        bus(prefix).await
    }

    async fn subscriber(&self, prefix: &str) -> TestUser {
        TestUser::create(prefix).await
    }

    fn ping_interval(bus: RedisBus, every: Duration) -> RedisBus {
        bus.ping_interval(every)
    }

    fn event_sink(bus: &RedisBus) -> RedisBusSink {
        bus.event_sink()
    }

    async fn publish(bus: &RedisBus, message: &Invalidation) -> Result<(), RedisError> {
        bus.publish(message).await
    }

    async fn subscribe(
        bus: &RedisBus,
        handler: impl Fn(Invalidation) + Send + Sync + 'static,
    ) -> Result<BusSubscription, RedisError> {
        bus.subscribe(handler).await
    }
}

keypal_conformance::bus_conformance!(optional redis_url().map(|_| Redis));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_on_a_is_refused_by_b_that_had_it_cached() {
    let Some(_) = redis_url() else { return };
    let Some(postgres) = PostgresServer::shared() else { return };
    let schema = PostgresServer::fresh_schema();
    let prefix = fresh_prefix();
    let stores = [
        postgres_store(postgres, &schema).await,
        postgres_store(postgres, &schema).await,
        postgres_store(postgres, &schema).await,
    ];
    let cleanup = stores[2].clone();
    bus::a_key_revoked_on_a_is_refused_by_b_that_had_it_cached::<Redis, _>(
        stores,
        [bus(&prefix).await, bus(&prefix).await],
    )
    .await;
    drop_schema(&cleanup, &schema).await;
}

/// An ACL user of its own, so that killing its connections touches nothing else, and
/// its subscriber bus.
struct TestUser {
    name: String,
    bus: RedisBus,
    channel: String,
}

impl TestUser {
    async fn create(prefix: &str) -> Self {
        let name = format!("kpt_bus_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let mut conn = raw_connection().await;
        let _: () = redis::cmd("ACL")
            .arg(&["SETUSER", &name, "on", ">secret", "~*", "&*", "+@all"])
            .query_async(&mut conn)
            .await
            .expect("ACL SETUSER");
        let info = url().into_connection_info().unwrap();
        let settings = info.redis_settings().clone().set_username(&name).set_password("secret");
        let client = redis::Client::open(info.set_redis_settings(settings)).unwrap();
        let conn = ConnectionManager::new(client.clone()).await.expect("connect as the test user");
        let bus = RedisBus::new(client, conn, prefix);
        let channel = bus.channel().to_owned();
        Self { name, bus, channel }
    }

    async fn set(&self, state: &str) {
        let mut conn = raw_connection().await;
        let _: () =
            redis::cmd("ACL").arg(&["SETUSER", &self.name, state]).query_async(&mut conn).await.expect("ACL SETUSER");
    }
}

impl FaultySubscriber<Redis> for TestUser {
    fn bus(&self) -> &RedisBus {
        &self.bus
    }

    /// Kills this user's pub/sub connections.
    async fn cut(&self) -> u64 {
        let mut conn = raw_connection().await;
        redis::cmd("CLIENT")
            .arg(&["KILL", "TYPE", "pubsub", "USER", &self.name])
            .query_async(&mut conn)
            .await
            .expect("CLIENT KILL")
    }

    async fn refuse(&self) {
        self.set("off").await;
    }

    async fn admit(&self) {
        self.set("on").await;
    }

    async fn listening(&self) -> bool {
        let mut conn = raw_connection().await;
        let (_, subscribers): (String, u64) =
            redis::cmd("PUBSUB").arg("NUMSUB").arg(&self.channel).query_async(&mut conn).await.expect("PUBSUB NUMSUB");
        subscribers > 0
    }

    /// The user goes when dropped.
    async fn clean_up(self) {}
}

impl Drop for TestUser {
    fn drop(&mut self) {
        if let Ok(mut conn) = redis::Client::open(url()).and_then(|c| c.get_connection()) {
            let _: Result<(), _> = redis::cmd("ACL").arg(&["DELUSER", &self.name]).query(&mut conn);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_reported_at_once() {
    let error = RedisBus::connect("redis://127.0.0.1:1", "kpt:").await.unwrap_err();
    assert_eq!(error.code(), "REDIS_UNREACHABLE");
    let error = RedisBus::connect("mysql://localhost", "kpt:").await.unwrap_err();
    assert_eq!(error.code(), "REDIS_URL_INVALID");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_channel_is_the_prefix_and_invalidate() {
    let Some(_) = redis_url() else { return };
    let bus = bus("kpt:chan:").await;
    assert_eq!(bus.channel(), "kpt:chan:invalidate");
}
