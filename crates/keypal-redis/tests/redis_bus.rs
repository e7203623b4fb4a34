//! `RedisBus`: a key revoked on one instance is refused by another that had it cached
//! as valid; a lost subscription comes back and says `All`; only changes to existing
//! keys are announced, and every one of a burst arrives.
//!
//! The instances share one PostgreSQL schema (the production layout: PostgreSQL for
//! the keys, Redis for the bus), on the test binary's servers (see `keypal-testing`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keypal::{Action, AuditContext, CacheMode, Code, Event, EventSink, Invalidation, KeyId, KeyManager, NewKey};
use keypal_redis::redis::aio::ConnectionManager;
use keypal_redis::redis::{self, IntoConnectionInfo};
use keypal_redis::{BusSubscription, RedisBus};
use keypal_sql::{PostgresStore, SqlOptions};
use time::OffsetDateTime;
use tokio::sync::mpsc;

use common::{fresh_prefix, raw_connection, redis_url, url};
use keypal_testing::PostgresServer;

/// How long a propagation may take before the test fails (the target is 100 ms).
const BOUND: Duration = Duration::from_secs(1);
/// Long enough that only an invalidation can explain a refusal.
const CACHE_TTL: Duration = Duration::from_secs(60);

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

/// A subscription whose messages land in a channel.
async fn collect(bus: &RedisBus) -> (BusSubscription, mpsc::UnboundedReceiver<Invalidation>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let subscription = bus
        .subscribe(move |message| {
            let _ = tx.send(message);
        })
        .await
        .expect("subscribe");
    (subscription, rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Invalidation>, within: Duration) -> Invalidation {
    tokio::time::timeout(within, rx.recv()).await.expect("no message in time").expect("the subscription ended")
}

fn event(action: Action, id: KeyId) -> Event {
    let mut event = Event::new(action, OffsetDateTime::now_utc(), AuditContext::new("bus-test"));
    event.key_id = Some(id);
    event
}

/// Verifies `key` on `b` until it is refused as revoked; how long that took.
async fn until_revoked(b: &KeyManager<PostgresStore>, key: &str) -> Duration {
    let start = Instant::now();
    loop {
        let code = b.verify(key).await.expect("verify on B").code();
        if code == Code::Revoked {
            return start.elapsed();
        }
        assert_eq!(code, Code::Valid);
        assert!(start.elapsed() < BOUND, "B still accepts the revoked key after {:?}", start.elapsed());
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_on_a_is_refused_by_b_that_had_it_cached() {
    let Some(_) = redis_url() else { return };
    let Some(postgres) = PostgresServer::shared() else { return };
    let schema = PostgresServer::fresh_schema();
    let prefix = fresh_prefix();
    let (store_a, store_b, store_c) = (
        postgres_store(postgres, &schema).await,
        postgres_store(postgres, &schema).await,
        postgres_store(postgres, &schema).await,
    );
    let (bus_a, bus_b) = (bus(&prefix).await, bus(&prefix).await);

    let a = KeyManager::builder()
        .store(store_a)
        .cache(CacheMode::On)
        .cache_ttl(CACHE_TTL)
        .event_sink(bus_a.event_sink())
        .build()
        .unwrap();
    let b = Arc::new(KeyManager::builder().store(store_b).cache(CacheMode::On).cache_ttl(CACHE_TTL).build().unwrap());
    // An instance that announces nothing: its changes show what B does without the bus.
    let silent = KeyManager::builder().store(store_c.clone()).cache(CacheMode::Off).build().unwrap();
    let cache = Arc::clone(&b);
    let subscription = bus_b.subscribe(move |message: Invalidation| message.apply(&cache)).await.unwrap();

    // Without an announcement B keeps serving its cached result: the cache is on.
    let unannounced = a.create(NewKey::new()).await.unwrap();
    assert_eq!(b.verify(unannounced.key.expose()).await.unwrap().code(), Code::Valid);
    silent.revoke(&unannounced.record.id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(b.verify(unannounced.key.expose()).await.unwrap().code(), Code::Valid, "B's cache was not used");

    let mut after_return = Vec::new();
    for _ in 0..20 {
        let created = a.create(NewKey::new()).await.unwrap();
        assert_eq!(b.verify(created.key.expose()).await.unwrap().code(), Code::Valid);
        assert_eq!(b.verify(created.key.expose()).await.unwrap().code(), Code::Valid);
        let start = Instant::now();
        a.revoke(&created.record.id).await.unwrap();
        let revoke_took = start.elapsed();
        let propagation = until_revoked(&b, created.key.expose()).await;
        after_return.push((revoke_took, propagation));
    }
    let mut propagation: Vec<Duration> = after_return.iter().map(|(_, p)| *p).collect();
    propagation.sort();
    println!(
        "RedisBus: B refused the revoked key {:?} (median; max {:?}) after A's revoke returned; A's revoke took {:?} (first)",
        propagation[propagation.len() / 2],
        propagation[propagation.len() - 1],
        after_return[0].0
    );
    assert!(subscription.received() >= 20);
    assert_eq!(subscription.reconnects(), 0);
    drop_schema(&store_c, &schema).await;
}

/// An ACL user of its own, so that killing its connections touches nothing else.
struct TestUser(String);

impl TestUser {
    async fn create() -> Self {
        let name = format!("kpt_bus_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let mut conn = raw_connection().await;
        let _: () = redis::cmd("ACL")
            .arg(&["SETUSER", &name, "on", ">secret", "~*", "&*", "+@all"])
            .query_async(&mut conn)
            .await
            .expect("ACL SETUSER");
        Self(name)
    }

    async fn set(&self, state: &str) {
        let mut conn = raw_connection().await;
        let _: () =
            redis::cmd("ACL").arg(&["SETUSER", &self.0, state]).query_async(&mut conn).await.expect("ACL SETUSER");
    }

    /// Kills this user's pub/sub connections; how many there were.
    async fn kill_pubsub(&self) -> u64 {
        let mut conn = raw_connection().await;
        redis::cmd("CLIENT")
            .arg(&["KILL", "TYPE", "pubsub", "USER", &self.0])
            .query_async(&mut conn)
            .await
            .expect("CLIENT KILL")
    }

    /// A bus that connects as this user.
    async fn bus(&self, prefix: &str) -> RedisBus {
        let info = url().into_connection_info().unwrap();
        let settings = info.redis_settings().clone().set_username(&self.0).set_password("secret");
        let client = redis::Client::open(info.set_redis_settings(settings)).unwrap();
        let conn = ConnectionManager::new(client.clone()).await.expect("connect as the test user");
        RedisBus::new(client, conn, prefix)
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        if let Ok(mut conn) = redis::Client::open(url()).and_then(|c| c.get_connection()) {
            let _: Result<(), _> = redis::cmd("ACL").arg(&["DELUSER", &self.0]).query(&mut conn);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_subscription_reconnects_says_all_and_hears_later_messages() {
    let Some(_) = redis_url() else { return };
    let prefix = fresh_prefix();
    let user = TestUser::create().await;
    let publisher = bus(&prefix).await;
    let subscriber = user.bus(&prefix).await;
    let (subscription, mut rx) = collect(&subscriber).await;

    let before = KeyId::new();
    publisher.publish(&Invalidation::Key(before)).await.unwrap();
    assert_eq!(next(&mut rx, BOUND).await, Invalidation::Key(before));

    assert_eq!(user.kill_pubsub().await, 1, "the subscriber's connection was not found");
    assert_eq!(next(&mut rx, Duration::from_secs(5)).await, Invalidation::All);
    assert_eq!(subscription.reconnects(), 1);
    let after = KeyId::new();
    publisher.publish(&Invalidation::Key(after)).await.unwrap();
    assert_eq!(next(&mut rx, BOUND).await, Invalidation::Key(after));

    // While Redis refuses the reconnection, no `All` yet; once it accepts, `All`.
    user.set("off").await;
    assert_eq!(user.kill_pubsub().await, 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(rx.try_recv().is_err(), "All before the subscription was back");
    assert!(subscription.is_running());
    user.set("on").await;
    assert_eq!(next(&mut rx, Duration::from_secs(10)).await, Invalidation::All);
    assert_eq!(subscription.reconnects(), 2);
    publisher.publish(&Invalidation::Settings).await.unwrap();
    assert_eq!(next(&mut rx, BOUND).await, Invalidation::Settings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_pings_keep_the_subscription() {
    let Some(_) = redis_url() else { return };
    let prefix = fresh_prefix();
    let publisher = bus(&prefix).await;
    let subscriber = bus(&prefix).await.ping_interval(Duration::from_millis(20));
    let (subscription, mut rx) = collect(&subscriber).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(subscription.reconnects(), 0);
    assert!(rx.try_recv().is_err());
    publisher.publish(&Invalidation::App("billing".into())).await.unwrap();
    assert_eq!(next(&mut rx, BOUND).await, Invalidation::App("billing".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_announces_changes_to_existing_keys_only_and_every_one_of_a_burst() {
    let Some(_) = redis_url() else { return };
    let prefix = fresh_prefix();
    let publisher = bus(&prefix).await;
    let subscriber = bus(&prefix).await;
    let (_subscription, mut rx) = collect(&subscriber).await;
    let sink = publisher.event_sink();

    let quiet = KeyId::new();
    for action in [Action::Verified, Action::Created, Action::Imported] {
        sink.record(&event(action, quiet));
    }
    let mut expected = HashSet::new();
    for i in 0..1000 {
        let id = KeyId::new();
        let action =
            [Action::Revoked, Action::Rotated, Action::Enabled, Action::Disabled, Action::Updated, Action::Deleted]
                [i % 6];
        sink.record(&event(action, id));
        expected.insert(Invalidation::Key(id));
    }
    let mut received = HashSet::new();
    while received.len() < expected.len() {
        let message = next(&mut rx, Duration::from_secs(5)).await;
        assert_ne!(message, Invalidation::Key(quiet), "a non-change was announced");
        received.insert(message);
    }
    assert_eq!(received, expected);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(rx.try_recv().is_err());

    // Another bus's channel hears nothing of it.
    let other = bus(&fresh_prefix()).await;
    let (_other_subscription, mut other_rx) = collect(&other).await;
    sink.record(&event(Action::Revoked, KeyId::new()));
    assert!(matches!(next(&mut rx, BOUND).await, Invalidation::Key(_)));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(other_rx.try_recv().is_err());
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
