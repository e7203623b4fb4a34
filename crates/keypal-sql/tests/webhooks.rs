//! The storage side of webhooks, on SQLite and PostgreSQL: the outbox is written in the
//! transaction of each change (and only while a webhook exists), dispatch takes each
//! event once (across two stores on one PostgreSQL too), deliveries are claimed under
//! leases, scanned events fire once per key and threshold, and the expiry scan reads a
//! range of an index.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{postgres_options, postgres_store, postgres_url, sqlite_store};
use keypal::{KeyManager, NewKey};
use keypal_sql::{Attempt, DeliveryStatus, NewDelivery, PostgresStore, SqlStore, WEBHOOK_KIND};
use serde_json::json;
use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

/// Both stores, fresh, writing the outbox (SQLite only when the PostgreSQL tests are skipped).
async fn both() -> Vec<SqlStore> {
    let mut stores = vec![SqlStore::Sqlite(sqlite_store().await)];
    stores.extend(postgres_store().await.map(SqlStore::Postgres));
    stores.into_iter().map(SqlStore::with_webhook_outbox).collect()
}

#[tokio::test]
async fn a_store_writes_no_outbox_unless_told_to() {
    let store = SqlStore::Sqlite(sqlite_store().await);
    add_webhook(&store, "w1").await;
    let keys = KeyManager::builder().store(store.clone()).build().expect("manager");
    keys.create(NewKey::new()).await.expect("create");
    assert_eq!(store.outbox_len().await.expect("len"), 0);
    let store = store.with_webhook_outbox();
    let keys = KeyManager::builder().store(store.clone()).build().expect("manager");
    keys.create(NewKey::new()).await.expect("create");
    assert_eq!(store.outbox_len().await.expect("len"), 1);
}

/// The outbox's event types, oldest first.
async fn outbox_types(store: &SqlStore) -> Vec<String> {
    let sql = "SELECT type FROM keypal_outbox ORDER BY id";
    match store {
        SqlStore::Sqlite(s) => sqlx::query_scalar(sql).fetch_all(s.pool()).await.expect("outbox"),
        SqlStore::Postgres(s) => sqlx::query_scalar(sql).fetch_all(s.pool()).await.expect("outbox"),
        _ => unreachable!(),
    }
}

/// The outbox's data column, oldest first.
async fn outbox_data(store: &SqlStore) -> Vec<String> {
    let sql = "SELECT data FROM keypal_outbox ORDER BY id";
    match store {
        SqlStore::Sqlite(s) => sqlx::query_scalar(sql).fetch_all(s.pool()).await.expect("outbox"),
        SqlStore::Postgres(s) => sqlx::query_scalar(sql).fetch_all(s.pool()).await.expect("outbox"),
        _ => unreachable!(),
    }
}

async fn add_webhook(store: &SqlStore, id: &str) {
    store.insert_object(WEBHOOK_KIND, id, None, &json!({"url": "http://127.0.0.1:1/"}), None).await.expect("webhook");
}

fn delivery_to(webhook: &str, event: Uuid) -> NewDelivery {
    NewDelivery { webhook_id: webhook.into(), event_id: event, event_type: "key.created".into(), body: "{}".into() }
}

#[tokio::test]
async fn no_outbox_row_is_written_while_no_webhook_exists() {
    for store in both().await {
        let keys = KeyManager::builder().store(store.clone()).build().expect("manager");
        let created = keys.create(NewKey::new()).await.expect("create");
        keys.revoke(&created.record.id).await.expect("revoke");
        assert_eq!(store.outbox_len().await.expect("len"), 0, "{}", store.dialect());
    }
}

/// Each change that causes a webhook event writes its outbox row with its audit event;
/// a refused change writes neither; the row holds the key's public fields, never its hash.
#[tokio::test]
async fn key_changes_write_their_outbox_row_in_their_transaction() {
    for store in both().await {
        let d = store.dialect();
        add_webhook(&store, "w1").await;
        let keys = KeyManager::builder().store(store.clone()).build().expect("manager");
        let created = keys.create(NewKey::new().name("ci").owner_id("u1")).await.expect("create");
        let id = created.record.id;
        keys.update(&id, keypal::KeyPatch::new().name("ci-2")).await.expect("update");
        keys.disable(&id).await.expect("disable");
        let rotated = keys.rotate(&id, Duration::ZERO).await.expect("rotate");
        keys.revoke(&rotated.record.id).await.expect("revoke");
        assert!(keys.revoke(&rotated.record.id).await.is_err(), "{d}: revoked twice");
        keys.delete(&rotated.record.id).await.expect("delete");
        let types = outbox_types(&store).await;
        assert_eq!(
            types,
            ["key.created", "key.updated", "key.updated", "key.rotated", "key.revoked", "key.deleted"],
            "{d}"
        );
        let audit: i64 = match &store {
            SqlStore::Sqlite(s) => sqlx::query_scalar("SELECT COUNT(*) FROM keypal_audit").fetch_one(s.pool()).await,
            SqlStore::Postgres(s) => sqlx::query_scalar("SELECT COUNT(*) FROM keypal_audit").fetch_one(s.pool()).await,
            _ => unreachable!(),
        }
        .expect("audit");
        assert_eq!(audit, 6, "{d}: one audit event per change, none for the refused one");
        for data in outbox_data(&store).await {
            assert!(!data.contains(&created.record.hash), "{d}: no hash in the outbox: {data}");
            assert!(!data.contains(created.key.expose()), "{d}: no key in the outbox");
        }
        let deleted: serde_json::Value = serde_json::from_str(outbox_data(&store).await.last().unwrap()).unwrap();
        assert_eq!(deleted["key"]["name"], "ci-2", "{d}: the deleted key's fields as it was: {deleted}");
        assert_eq!(deleted["key"]["hash"], "", "{d}");
    }
}

/// Dispatch hands each event to the plan once, inserts its deliveries and empties the
/// outbox, in one transaction; a plan's duplicate delivery is skipped.
#[tokio::test]
async fn dispatch_turns_the_outbox_into_deliveries_once() {
    for store in both().await {
        let d = store.dialect();
        add_webhook(&store, "w1").await;
        let keys = KeyManager::builder().store(store.clone()).build().expect("manager");
        for _ in 0..5 {
            keys.create(NewKey::new()).await.expect("create");
        }
        let mut seen = Vec::new();
        let taken = store
            .dispatch_outbox(3, |events| {
                seen.extend(events.iter().map(|e| (e.id, e.event_type.clone(), e.key.is_some())));
                let mut planned: Vec<NewDelivery> = events.iter().map(|e| delivery_to("w1", e.id)).collect();
                planned.extend(events.iter().map(|e| delivery_to("w1", e.id)));
                planned.extend(events.iter().map(|e| delivery_to("w2", e.id)));
                planned
            })
            .await
            .expect("dispatch");
        assert_eq!(taken, 3, "{d}");
        assert!(seen.iter().all(|(_, t, has_key)| t == "key.created" && *has_key), "{d}: {seen:?}");
        assert_eq!(store.outbox_len().await.expect("len"), 2, "{d}");
        let rest = store.dispatch_outbox(100, |events| events.iter().map(|e| delivery_to("w1", e.id)).collect());
        assert_eq!(rest.await.expect("dispatch"), 2, "{d}");
        assert_eq!(store.dispatch_outbox(100, |_| Vec::new()).await.expect("empty"), 0, "{d}");
        assert_eq!(store.deliveries("w1", None, 100).await.expect("list").items.len(), 5, "{d}");
        assert_eq!(store.deliveries("w2", None, 100).await.expect("list").items.len(), 3, "{d}");
    }
}

/// A claim holds a delivery until its lease ends; a result is recorded only under the
/// lease that holds it; a failure with a retry time stays pending, without one it fails.
#[tokio::test]
async fn deliveries_are_claimed_under_leases() {
    for store in both().await {
        let d = store.dialect();
        let made = store.insert_delivery(&delivery_to("w1", Uuid::now_v7())).await.expect("insert");
        assert_eq!(made.status, DeliveryStatus::Pending);
        let now = OffsetDateTime::now_utc() + Duration::from_secs(1);
        let lease = Duration::from_secs(60);
        let claimed = store.claim_deliveries(now, lease, 10).await.expect("claim");
        assert_eq!(claimed.len(), 1, "{d}");
        assert!(store.claim_deliveries(now, lease, 10).await.expect("claim").is_empty(), "{d}: held");
        // The lease ran out (the instance died): another claim takes it.
        let later = now + Duration::from_secs(120);
        let again = store.claim_deliveries(later, lease, 10).await.expect("claim");
        assert_eq!(again.len(), 1, "{d}: a lapsed lease is claimed again");
        let stale = claimed[0].locked_until.expect("lease");
        let failed = Attempt::Failed {
            status: Some(500),
            excerpt: "boom".into(),
            retry_at: Some(later + Duration::from_secs(5)),
        };
        assert!(!store.finish_delivery(made.id, stale, &failed).await.expect("finish"), "{d}: stale lease");
        let current = again[0].locked_until.expect("lease");
        assert!(store.finish_delivery(made.id, current, &failed).await.expect("finish"), "{d}");
        let page = store.deliveries("w1", None, 10).await.expect("list");
        let row = &page.items[0];
        assert_eq!((row.status, row.attempts, row.last_status), (DeliveryStatus::Pending, 1, Some(500)), "{d}");
        assert!(row.first_failed_at.is_some() && row.locked_until.is_none(), "{d}: {row:?}");
        assert_eq!(store.webhook_failing_since("w1").await.expect("failing"), row.first_failed_at, "{d}");
        // Due again after its backoff; then it succeeds.
        assert!(store.claim_deliveries(later, lease, 10).await.expect("claim").is_empty(), "{d}: backing off");
        let due = later + Duration::from_secs(6);
        let third = store.claim_deliveries(due, lease, 10).await.expect("claim");
        let ok = Attempt::Succeeded { status: 204, excerpt: String::new() };
        assert!(store.finish_delivery(made.id, third[0].locked_until.unwrap(), &ok).await.expect("finish"));
        let row = store.deliveries("w1", None, 10).await.expect("list").items.remove(0);
        assert_eq!((row.status, row.attempts, row.last_status), (DeliveryStatus::Succeeded, 2, Some(204)), "{d}");
        assert_eq!(store.webhook_failing_since("w1").await.expect("failing"), None, "{d}: a success ends it");
        // A retry asked for makes it due again; a missing delivery is None.
        let retried = store.retry_delivery("w1", made.id).await.expect("retry").expect("found");
        assert_eq!(retried.status, DeliveryStatus::Pending, "{d}");
        assert!(store.retry_delivery("w2", made.id).await.expect("retry").is_none(), "{d}: another webhook's");
        let last = store.claim_deliveries(due, lease, 10).await.expect("claim");
        let gave_up = Attempt::Failed { status: None, excerpt: "connection refused".into(), retry_at: None };
        assert!(store.finish_delivery(made.id, last[0].locked_until.unwrap(), &gave_up).await.expect("finish"));
        let row = store.deliveries("w1", None, 10).await.expect("list").items.remove(0);
        assert_eq!((row.status, row.next_attempt_at), (DeliveryStatus::Failed, None), "{d}");
        assert_eq!(store.delete_deliveries("w1").await.expect("delete"), 1, "{d}");
    }
}

/// A threshold fires once per key, whoever asks and however often; never while no
/// webhook exists.
#[tokio::test]
async fn scanned_events_fire_once_per_key_and_threshold() {
    for store in both().await {
        let d = store.dialect();
        let keys = KeyManager::builder().store(store.clone()).build().expect("manager");
        let created = keys.create(NewKey::new()).await.expect("create");
        let record = &created.record;
        assert!(!store.fire_once("key.expiring", "7d", record, None).await.expect("fire"), "{d}: no webhook");
        add_webhook(&store, "w1").await;
        assert!(store.fire_once("key.expiring", "7d", record, None).await.expect("fire"), "{d}");
        assert!(!store.fire_once("key.expiring", "7d", record, None).await.expect("fire"), "{d}: once");
        assert!(store.fire_once("key.expiring", "1d", record, None).await.expect("fire"), "{d}: another threshold");
        assert_eq!(outbox_types(&store).await, ["key.expiring", "key.expiring"], "{d}");
    }
}

/// Concurrent firings of one threshold from many tasks: exactly one outbox row.
#[tokio::test]
async fn concurrent_firings_of_one_threshold_put_one_event_in() {
    for store in both().await {
        let d = store.dialect();
        add_webhook(&store, "w1").await;
        let keys = KeyManager::builder().store(store.clone()).build().expect("manager");
        let record = keys.create(NewKey::new()).await.expect("create").record;
        let store = Arc::new(store);
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (store, record) = (store.clone(), record.clone());
                tokio::spawn(async move { store.fire_once("key.credits_low", "10", &record, None).await })
            })
            .collect();
        let mut fired = 0;
        for task in tasks {
            fired += usize::from(task.await.expect("task").expect("fire"));
        }
        assert_eq!(fired, 1, "{d}");
        assert_eq!(outbox_types(&store).await.len(), 2, "{d}: key.created and one key.credits_low");
    }
}

/// Keys expiring in a range, a page at a time, revoked ones and fired ones left out.
#[tokio::test]
async fn the_expiry_scan_pages_through_a_range_of_unfired_keys() {
    for store in both().await {
        let d = store.dialect();
        add_webhook(&store, "w1").await;
        let keys = KeyManager::builder().store(store.clone()).build().expect("manager");
        let now = OffsetDateTime::now_utc();
        let mut soon = Vec::new();
        for hours in [1, 2, 3, 30, 24 * 20] {
            let at = now + Duration::from_secs(hours * 3600);
            soon.push(keys.create(NewKey::new().expires_at(at)).await.expect("create").record);
        }
        keys.revoke(&soon[1].id).await.expect("revoke");
        keys.create(NewKey::new()).await.expect("no expiry");
        let to = now + Duration::from_secs(7 * 86_400);
        let band = ("key.expiring", "7d");
        let first = store.keys_expiring(now, to, band, None, 2).await.expect("scan");
        assert_eq!(first.iter().map(|r| r.id).collect::<Vec<_>>(), [soon[0].id, soon[2].id], "{d}");
        let last = first.last().map(|r| (r.expires_at.unwrap(), r.id));
        let next = store.keys_expiring(now, to, band, last, 2).await.expect("scan");
        assert_eq!(next.iter().map(|r| r.id).collect::<Vec<_>>(), [soon[3].id], "{d}");
        assert!(store.fire_once("key.expiring", "7d", &soon[0], None).await.expect("fire"));
        let again = store.keys_expiring(now, to, band, None, 10).await.expect("scan");
        assert_eq!(again.iter().map(|r| r.id).collect::<Vec<_>>(), [soon[2].id, soon[3].id], "{d}: fired left out");
        let other = store.keys_expiring(now, to, ("key.expiring", "1d"), None, 10).await.expect("scan");
        assert_eq!(other.len(), 3, "{d}: another threshold has its own marks");
    }
}

#[tokio::test]
async fn the_expiry_scan_reads_a_range_of_its_index_on_sqlite() {
    let store = sqlite_store().await;
    let explain = format!("EXPLAIN QUERY PLAN {}", keypal_sql::testing::EXPIRY_SCAN);
    let rows = sqlx::query(sqlx::AssertSqlSafe(explain)).fetch_all(store.pool()).await.expect("explain");
    let plan: Vec<String> = rows.iter().map(|r| r.get::<String, _>("detail")).collect();
    let plan = plan.join(" | ");
    assert!(plan.contains("USING INDEX keypal_keys_expires (expires_at>? AND expires_at<?)"), "{plan}");
    assert!(!plan.contains("TEMP B-TREE"), "no sort: {plan}");
    assert!(plan.contains("SEARCH f USING COVERING INDEX sqlite_autoindex_keypal_webhook_fired_1 (key_id=? AND kind=? AND threshold=?)"), "a probe per key: {plan}");
}

#[tokio::test]
async fn the_expiry_scan_reads_a_range_of_its_index_on_postgres() {
    let Some(store) = postgres_store().await else { return };
    let mut conn = store.pool().acquire().await.expect("connection");
    sqlx::raw_sql("SET enable_seqscan = off; SET plan_cache_mode = force_generic_plan")
        .execute(&mut *conn)
        .await
        .expect("set");
    let prepare = format!("PREPARE expiry_scan AS {}", keypal_sql::testing::EXPIRY_SCAN);
    sqlx::raw_sql(sqlx::AssertSqlSafe(prepare)).execute(&mut *conn).await.expect("prepare");
    let explain = "EXPLAIN EXECUTE expiry_scan(now(), now() + interval '7 days', now(), \
                   '00000000-0000-0000-0000-000000000000', 'key.expiring', '7d', 500)";
    let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(explain)).fetch_all(&mut *conn).await.expect("explain");
    let plan: Vec<String> = rows.iter().map(|r| r.get::<String, _>(0)).collect();
    let plan = plan.join(" | ");
    assert!(plan.contains("keypal_keys_expires"), "{plan}");
    assert!(!plan.contains("Seq Scan on keypal_keys"), "{plan}");
}

/// Two stores on one PostgreSQL dispatching at once: every event planned by exactly one.
#[tokio::test]
async fn two_dispatchers_on_one_postgres_take_each_event_once() {
    let Some(url) = postgres_url() else { return };
    let schema = common::fresh_schema();
    let a = SqlStore::Postgres(PostgresStore::connect_with(url, &postgres_options(&schema)).await.expect("a"))
        .with_webhook_outbox();
    let b = SqlStore::Postgres(PostgresStore::connect_with(url, &postgres_options(&schema)).await.expect("b"));
    add_webhook(&a, "w1").await;
    let keys = KeyManager::builder().store(a.clone()).build().expect("manager");
    for _ in 0..200 {
        keys.create(NewKey::new()).await.expect("create");
    }
    let planned = Arc::new(Mutex::new(Vec::new()));
    let run = |store: SqlStore| {
        let planned = planned.clone();
        tokio::spawn(async move {
            loop {
                let planned = planned.clone();
                let taken = store
                    .dispatch_outbox(7, move |events| {
                        planned.lock().unwrap().extend(events.iter().map(|e| e.id));
                        events.iter().map(|e| delivery_to("w1", e.id)).collect()
                    })
                    .await
                    .expect("dispatch");
                if taken == 0 {
                    break;
                }
            }
        })
    };
    let (x, y) = (run(a.clone()), run(b.clone()));
    x.await.expect("a");
    y.await.expect("b");
    let planned = planned.lock().unwrap().clone();
    let distinct: HashSet<_> = planned.iter().collect();
    assert_eq!((planned.len(), distinct.len()), (200, 200), "each event planned once");
}
