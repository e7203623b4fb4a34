//! `PgBus`: a key revoked on one instance is refused by another that had it cached as
//! valid; a terminated listener comes back and says `All`; only changes to existing
//! keys are announced, and every one of a burst arrives.
//!
//! On the test binary's PostgreSQL (see `keypal-testing`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keypal::{Action, AuditContext, CacheMode, Code, Event, EventSink, Invalidation, KeyId, KeyManager, NewKey};
use keypal_sql::{BusSubscription, PgBus, PostgresStore};
use time::OffsetDateTime;
use tokio::sync::mpsc;

use common::{fresh_schema, postgres_options, postgres_url};

/// How long a propagation may take before the test fails (the target is 100 ms).
const BOUND: Duration = Duration::from_secs(1);
/// Long enough that only an invalidation can explain a refusal.
const CACHE_TTL: Duration = Duration::from_secs(60);

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

/// A subscription whose messages land in a channel.
async fn collect(bus: &PgBus) -> (BusSubscription, mpsc::UnboundedReceiver<Invalidation>) {
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
    let Some(url) = postgres_url() else { return };
    let schema = fresh_schema();
    let prefix = fresh_prefix();
    let (store_a, store_b, store_c) =
        (postgres_store(url, &schema).await, postgres_store(url, &schema).await, postgres_store(url, &schema).await);
    // A on a pool of its own, B on its store's pool.
    let bus_a = bus(url, &prefix).await;
    let bus_b = PgBus::new(store_b.pool().clone(), &prefix).unwrap();

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
        "PgBus: B refused the revoked key {:?} (median; max {:?}) after A's revoke returned; A's revoke took {:?} (first)",
        propagation[propagation.len() / 2],
        propagation[propagation.len() - 1],
        after_return[0].0
    );
    assert!(subscription.received() >= 20);
    assert_eq!(subscription.reconnects(), 0);
    drop_schema(&store_c, &schema).await;
}

/// Terminates the backends listening on `channel`; how many there were.
async fn terminate_listener(admin: &sqlx::PgPool, channel: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE query LIKE 'LISTEN%' AND position(quote_ident($1) IN query) > 0 AND pid <> pg_backend_pid()",
    )
    .bind(channel)
    .fetch_one(admin)
    .await
    .expect("terminate the listener")
}

/// Waits until a backend listens on `channel` again (the reconnection may be under way).
async fn listening(admin: &sqlx::PgPool, channel: &str) -> bool {
    let query =
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%' AND position(quote_ident($1) IN query) > 0";
    sqlx::query_scalar::<_, i64>(query).bind(channel).fetch_one(admin).await.expect("pg_stat_activity") > 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_listener_reconnects_says_all_and_hears_later_messages() {
    let Some(url) = postgres_url() else { return };
    let admin = sqlx::PgPool::connect(url).await.unwrap_or_else(|e| unreachable(e));
    let prefix = fresh_prefix();
    let publisher = bus(url, &prefix).await;
    let subscriber = bus(url, &prefix).await;
    let (subscription, mut rx) = collect(&subscriber).await;
    let channel = subscriber.channel().to_owned();

    let before = KeyId::new();
    publisher.publish(&Invalidation::Key(before)).await.unwrap();
    assert_eq!(next(&mut rx, BOUND).await, Invalidation::Key(before));

    assert_eq!(terminate_listener(&admin, &channel).await, 1, "the listener was not found");
    assert_eq!(next(&mut rx, Duration::from_secs(10)).await, Invalidation::All);
    assert_eq!(subscription.reconnects(), 1);
    assert!(listening(&admin, &channel).await);
    let after = KeyId::new();
    publisher.publish(&Invalidation::Key(after)).await.unwrap();
    assert_eq!(next(&mut rx, BOUND).await, Invalidation::Key(after));
    admin.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_database_refuses_the_listener_no_all_then_all_once_it_listens_again() {
    let Some(url) = postgres_url() else { return };
    let admin = sqlx::PgPool::connect(url).await.unwrap_or_else(|e| unreachable(e));
    let role = format!("kpt_bus_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let run = |sql: String| {
        let admin = admin.clone();
        async move { sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&admin).await.expect("role statement") }
    };
    run(format!("CREATE ROLE {role} LOGIN")).await;

    let prefix = fresh_prefix();
    let publisher = bus(url, &prefix).await;
    let subscriber = PgBus::connect(&url_of_role(url, &role), &prefix).await;
    let subscriber = match subscriber {
        Ok(bus) => bus,
        Err(e) => {
            run(format!("DROP ROLE {role}")).await;
            panic!("cannot connect as a new role ({e}): the test server must trust local connections");
        }
    };
    let (subscription, mut rx) = collect(&subscriber).await;
    let channel = subscriber.channel().to_owned();

    run(format!("ALTER ROLE {role} NOLOGIN")).await;
    assert_eq!(terminate_listener(&admin, &channel).await, 1);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(rx.try_recv().is_err(), "All before listening again");
    assert!(subscription.is_running());
    run(format!("ALTER ROLE {role} LOGIN")).await;
    assert_eq!(next(&mut rx, Duration::from_secs(20)).await, Invalidation::All);
    assert!(subscription.reconnects() >= 1);
    publisher.publish(&Invalidation::Settings).await.unwrap();
    assert_eq!(next(&mut rx, BOUND).await, Invalidation::Settings);

    drop(subscription);
    drop(subscriber);
    let _ = sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1")
        .bind(&role)
        .execute(&admin)
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    run(format!("DROP ROLE IF EXISTS {role}")).await;
    admin.close().await;
}

/// The test server's URL with `role` as the user.
fn url_of_role(url: &str, role: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{role}@{host}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_checks_keep_the_subscription() {
    let Some(url) = postgres_url() else { return };
    let prefix = fresh_prefix();
    let publisher = bus(url, &prefix).await;
    let subscriber = bus(url, &prefix).await.ping_interval(Duration::from_millis(20));
    let (subscription, mut rx) = collect(&subscriber).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(subscription.reconnects(), 0);
    assert!(rx.try_recv().is_err());
    publisher.publish(&Invalidation::App("billing".into())).await.unwrap();
    assert_eq!(next(&mut rx, BOUND).await, Invalidation::App("billing".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_announces_changes_to_existing_keys_only_and_every_one_of_a_burst() {
    let Some(url) = postgres_url() else { return };
    let prefix = fresh_prefix();
    let publisher = bus(url, &prefix).await;
    let subscriber = bus(url, &prefix).await;
    let (_subscription, mut rx) = collect(&subscriber).await;
    let sink = publisher.event_sink();

    let quiet = KeyId::new();
    for action in [Action::Verified, Action::Created, Action::Imported] {
        sink.record(&event(action, quiet));
    }
    let mut expected = HashSet::new();
    let changes =
        [Action::Revoked, Action::Rotated, Action::Enabled, Action::Disabled, Action::Updated, Action::Deleted];
    for i in 0..1000 {
        let id = KeyId::new();
        sink.record(&event(changes[i % changes.len()], id));
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

    // Another prefix's channel hears nothing of it.
    let other = bus(url, &fresh_prefix()).await;
    let (_other_subscription, mut other_rx) = collect(&other).await;
    sink.record(&event(Action::Revoked, KeyId::new()));
    assert!(matches!(next(&mut rx, BOUND).await, Invalidation::Key(_)));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(other_rx.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_pool_ends_the_subscription() {
    let Some(url) = postgres_url() else { return };
    let pool = sqlx::PgPool::connect(url).await.unwrap_or_else(|e| unreachable(e));
    let bus = PgBus::new(pool.clone(), &fresh_prefix()).unwrap();
    let (subscription, _rx) = collect(&bus).await;
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
