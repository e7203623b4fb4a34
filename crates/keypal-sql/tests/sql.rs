//! What the SQL stores promise beyond the conformance suite: migrations (own table,
//! forward from an older version, explicit), index use on the verify path, the
//! append-only audit log, usage counts, and typed connection errors.

// Test helpers assert by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{postgres_options, postgres_store, postgres_url, sqlite_store, sqlite_url};
use keypal::{Code, KeyManager, NewKey, Store};
use keypal_sql::testing::{POSTGRES_VERIFY_PATH, SQLITE_VERIFY_PATH, migrate_postgres_to, migrate_sqlite_to};
use keypal_sql::{Granularity, PostgresStore, SqlError, SqlOptions, SqlStore, SqliteStore, UsageCounter};
use sqlx::Row;
use time::OffsetDateTime;

/// Both stores, fresh (SQLite only when the PostgreSQL tests are skipped).
async fn both() -> Vec<SqlStore> {
    let mut stores = vec![SqlStore::Sqlite(sqlite_store().await)];
    stores.extend(postgres_store().await.map(SqlStore::Postgres));
    stores
}

/// Runs one SQL statement returning a single integer, on either store.
async fn scalar(store: &SqlStore, sql: &'static str) -> i64 {
    match store {
        SqlStore::Sqlite(s) => sqlx::query_scalar(sql).fetch_one(s.pool()).await.expect(sql),
        SqlStore::Postgres(s) => sqlx::query_scalar(sql).fetch_one(s.pool()).await.expect(sql),
        _ => unreachable!("both dialects are built"),
    }
}

/// Runs one statement, returning whether it succeeded.
async fn execute(store: &SqlStore, sql: &'static str) -> Result<u64, sqlx::Error> {
    match store {
        SqlStore::Sqlite(s) => sqlx::query(sql).execute(s.pool()).await.map(|r| r.rows_affected()),
        SqlStore::Postgres(s) => sqlx::query(sql).execute(s.pool()).await.map(|r| r.rows_affected()),
        _ => unreachable!("both dialects are built"),
    }
}

#[tokio::test]
async fn migrations_are_recorded_in_keypal_table_apart_from_the_host_applications() {
    for store in both().await {
        let dialect = store.dialect();
        let every = keypal_sql::testing::sqlite_migration_versions().len() as i64;
        assert_eq!(
            scalar(&store, "SELECT COUNT(*) FROM keypal_migrations").await,
            every,
            "{dialect}: every migration recorded"
        );
        // A host application with its own sqlx migrations in the same database: they never meet.
        let host = sqlx::migrate::Migrator::with_migrations(vec![sqlx::migrate::Migration::new(
            1,
            "host app table".into(),
            sqlx::migrate::MigrationType::Simple,
            sqlx::SqlSafeStr::into_sql_str("CREATE TABLE host_widgets (id INTEGER PRIMARY KEY)"),
            false,
        )]);
        match &store {
            SqlStore::Sqlite(s) => host.run(s.pool()).await.expect("host migrations"),
            SqlStore::Postgres(s) => host.run(s.pool()).await.expect("host migrations"),
            _ => unreachable!(),
        }
        store.migrate().await.expect("keypal migrates again, as a no-op");
        assert_eq!(scalar(&store, "SELECT COUNT(*) FROM _sqlx_migrations").await, 1, "{dialect}: host table untouched");
        assert_eq!(scalar(&store, "SELECT COUNT(*) FROM keypal_migrations").await, every, "{dialect}");
    }
}

/// A database left by keypal 0.1 with only migration 1 (keys, no usage table) and keys
/// in it: connecting migrates it forward and the keys keep verifying.
#[tokio::test]
async fn a_database_of_an_older_version_migrates_forward_and_keeps_its_keys() {
    // SQLite
    let url = sqlite_url();
    let old = SqliteStore::connect_with(&url, &SqlOptions::new().migrate(false)).await.expect("open");
    migrate_sqlite_to(old.pool(), 1).await.expect("migration 1 only");
    let old_keys = KeyManager::builder().store(old.clone()).build().expect("manager");
    let created = old_keys.create(NewKey::new().owner_id("user_1").scopes(["read"])).await.expect("create on v1");
    old.close().await;

    let new = SqliteStore::connect(&url).await.expect("reopen migrates forward");
    let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM keypal_migrations ORDER BY version")
        .fetch_all(new.pool())
        .await
        .expect("versions");
    assert_eq!(versions, keypal_sql::testing::sqlite_migration_versions());
    assert_eq!(versions[..4], [1, 2, 3, 4]);
    let keys = KeyManager::builder().store(new.clone()).build().expect("manager");
    let v = keys.verify(created.key.expose()).await.expect("verify");
    assert_eq!(v.code(), Code::Valid, "a key created before the migration still verifies");
    assert_eq!(v.record().and_then(|r| r.owner_id.as_deref()), Some("user_1"));
    new.record_usage(&[]).await.expect("the counts table of migration 5 exists");

    // PostgreSQL
    let Some(url) = postgres_url() else { return };
    let schema = common::fresh_schema();
    let options = postgres_options(&schema);
    let old = PostgresStore::connect_with(url, &options.clone().migrate(false)).await.expect("connect");
    migrate_postgres_to(old.pool(), 1).await.expect("migration 1 only");
    let old_keys = KeyManager::builder().store(old.clone()).build().expect("manager");
    let created = old_keys.create(NewKey::new().owner_id("user_1")).await.expect("create on v1");
    old.close().await;
    let new = PostgresStore::connect_with(url, &options).await.expect("reconnect migrates forward");
    let keys = KeyManager::builder().store(new.clone()).build().expect("manager");
    assert_eq!(keys.verify(created.key.expose()).await.expect("verify").code(), Code::Valid);
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM keypal_migrations").fetch_one(new.pool()).await.expect("count");
    assert_eq!(n as usize, keypal_sql::testing::postgres_migration_versions().len());
}

#[tokio::test]
async fn without_migrate_on_connect_the_explicit_call_creates_the_schema() {
    let store = SqliteStore::connect_with(&sqlite_url(), &SqlOptions::new().migrate(false)).await.expect("open");
    assert!(store.get(keypal::KeyId::new()).await.is_err(), "no tables before migrating");
    store.migrate().await.expect("migrate");
    assert!(store.get(keypal::KeyId::new()).await.expect("get after migrating").is_none());
}

#[tokio::test]
async fn a_migration_that_fails_is_a_typed_error() {
    // The host already has a table called keypal_keys with another shape.
    let url = sqlite_url();
    let pool = sqlx::SqlitePool::connect(&format!("{url}?mode=rwc")).await.expect("open");
    sqlx::query("CREATE TABLE keypal_keys (something TEXT)").execute(&pool).await.expect("host table");
    pool.close().await;
    let error = SqliteStore::connect(&url).await.expect_err("migration 1 cannot create keypal_keys");
    assert!(matches!(error, SqlError::Migration(_)), "{error:?}");
    assert_eq!(error.code(), "MIGRATION_FAILED");
}

#[tokio::test]
async fn connection_failures_are_typed_errors_with_stable_codes() {
    let options = SqlOptions::new().acquire_timeout(Duration::from_secs(2));
    let refused = SqlStore::connect_with("postgres://postgres@127.0.0.1:1/test", &options).await.expect_err("port 1");
    assert_eq!(refused.code(), "DATABASE_UNREACHABLE", "{refused:?}");
    let missing_dir = SqlStore::connect("sqlite:///nonexistent-dir/keys.db").await.expect_err("no such directory");
    assert_eq!(missing_dir.code(), "DATABASE_UNREACHABLE", "{missing_dir:?}");
    let scheme = SqlStore::connect("mysql://root:hunter2@localhost/keys").await.expect_err("mysql");
    assert_eq!(scheme.code(), "DATABASE_URL_UNSUPPORTED");
    assert!(!scheme.to_string().contains("hunter2"), "errors never repeat the URL's password: {scheme}");
    let invalid = SqlStore::connect("postgres://user@host:notaport/db").await.expect_err("bad port");
    assert_eq!(invalid.code(), "DATABASE_URL_INVALID", "{invalid:?}");
    let Some(url) = postgres_url() else { return };
    let schema = SqlStore::connect_with(url, &SqlOptions::new().schema("x; DROP TABLE y")).await;
    assert_eq!(schema.expect_err("injection").code(), "DATABASE_SCHEMA_INVALID");
}

#[tokio::test]
async fn sqlite_runs_in_wal_mode_with_full_sync() {
    let store = sqlite_store().await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(store.pool()).await.expect("pragma");
    assert_eq!(mode, "wal");
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(store.pool()).await.expect("pragma");
    assert_eq!(sync, 2, "synchronous = FULL");
}

/// Every verify-path statement is one index probe: no full-table scan, no sort.
#[tokio::test]
async fn verify_path_queries_use_indexes_on_sqlite() {
    let store = sqlite_store().await;
    for (name, sql) in SQLITE_VERIFY_PATH {
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let rows = sqlx::query(sqlx::AssertSqlSafe(explain)).fetch_all(store.pool()).await.expect("explain");
        let plan: Vec<String> = rows.iter().map(|r| r.get::<String, _>("detail")).collect();
        let plan = plan.join(" | ");
        assert!(plan.contains("USING INDEX") || plan.contains("USING PRIMARY KEY"), "{name}: {plan}");
        assert!(!plan.contains("SCAN keypal_keys"), "{name} scans the table: {plan}");
    }
}

/// The same on PostgreSQL: with sequential scans priced out, the planner must still
/// find an index for each statement (it falls back to a Seq Scan only when none applies).
#[tokio::test]
async fn verify_path_queries_use_indexes_on_postgres() {
    let Some(store) = postgres_store().await else { return };
    let mut conn = store.pool().acquire().await.expect("connection");
    // A generic plan: what the statement does for any parameter values.
    sqlx::raw_sql("SET enable_seqscan = off; SET plan_cache_mode = force_generic_plan")
        .execute(&mut *conn)
        .await
        .expect("set");
    for (name, sql) in POSTGRES_VERIFY_PATH {
        let arguments = match *name {
            "find" => "('abc', 'digest')",
            "find_by_hint" => "('sk_live_abc')",
            "get" => "('0190a0f2-7c4e-7d2a-9b1e-3f5c2a9d8e71')",
            "consume" => "('0190a0f2-7c4e-7d2a-9b1e-3f5c2a9d8e71', 1, now())",
            "touch" => "(ARRAY['0190a0f2-7c4e-7d2a-9b1e-3f5c2a9d8e71']::uuid[], ARRAY[now()])",
            other => panic!("no arguments for {other}"),
        };
        let prepare = format!("PREPARE verify_path_{name} AS {sql}");
        sqlx::raw_sql(sqlx::AssertSqlSafe(prepare)).execute(&mut *conn).await.expect("prepare");
        let explain = format!("EXPLAIN EXECUTE verify_path_{name}{arguments}");
        let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(explain)).fetch_all(&mut *conn).await.expect("explain");
        let plan: Vec<String> = rows.iter().map(|r| r.get::<String, _>(0)).collect();
        let plan = plan.join(" | ");
        assert!(plan.contains("Index"), "{name}: {plan}");
        assert!(!plan.contains("Seq Scan on keypal_keys"), "{name} scans the table: {plan}");
    }
}

#[tokio::test]
async fn the_audit_log_is_append_only() {
    for store in both().await {
        let keys = KeyManager::builder().store(store.clone()).build().expect("manager");
        let created = keys.create(NewKey::new()).await.expect("create");
        keys.revoke(&created.record.id).await.expect("revoke");
        assert_eq!(scalar(&store, "SELECT COUNT(*) FROM keypal_audit").await, 2);
        let dialect = store.dialect();
        assert!(
            execute(&store, "UPDATE keypal_audit SET actor = 'mallory'").await.is_err(),
            "{dialect}: update refused"
        );
        assert!(execute(&store, "DELETE FROM keypal_audit").await.is_err(), "{dialect}: delete refused");
        assert_eq!(scalar(&store, "SELECT COUNT(*) FROM keypal_audit").await, 2);
        // Deleting a key keeps its history.
        keys.delete(&created.record.id).await.expect("delete");
        assert_eq!(scalar(&store, "SELECT COUNT(*) FROM keypal_audit").await, 3);
    }
}

/// Verifications are counted per key per minute: many requests, one row; readable per
/// hour over the last N hours and as per-application totals by code.
#[tokio::test]
async fn usage_is_one_row_per_key_per_minute_and_reads_back_per_hour() {
    for store in both().await {
        let dialect = store.dialect();
        let counter = std::sync::Arc::new(UsageCounter::new());
        let keys = KeyManager::builder()
            .namespace("billing")
            .store(store.clone())
            .event_sink(counter.clone())
            .build()
            .expect("manager");
        let a = keys.create(NewKey::new()).await.expect("create a");
        let b = keys.create(NewKey::new()).await.expect("create b");
        for _ in 0..50 {
            keys.verify(a.key.expose()).await.expect("verify a");
        }
        keys.revoke(&b.record.id).await.expect("revoke b");
        for _ in 0..3 {
            keys.verify(b.key.expose()).await.expect("verify b");
        }
        keys.verify("sk_live_nope").await.expect("malformed keys are not counted per key");
        // Written in two flushes: the second adds to the same rows.
        let deltas = counter.take();
        let (first, second) = deltas.split_at(1);
        store.record_usage(first).await.expect("flush 1");
        store.record_usage(second).await.expect("flush 2");
        store.record_usage(&counter.take()).await.expect("empty flush");
        for _ in 0..10 {
            keys.verify(a.key.expose()).await.expect("verify a again");
        }
        store.record_usage(&counter.take()).await.expect("flush 3");

        let rows = scalar(&store, "SELECT COUNT(*) FROM keypal_minutes WHERE scope = 'key' AND tag = ''").await;
        assert!((2..=4).contains(&rows), "{dialect}: one row per key per minute, not per request: {rows} rows");
        let now = OffsetDateTime::now_utc();
        let day = now - time::Duration::hours(24);
        let hours =
            store.usage(a.record.id, day, now + time::Duration::minutes(1), Granularity::Hour).await.expect("usage");
        assert_eq!(hours.iter().map(|h| h.counts.valid).sum::<u64>(), 60, "{dialect}");
        assert!(hours.iter().all(|h| h.start.minute() == 0 && h.start.second() == 0), "{dialect}: hour buckets");
        let minutes =
            store.usage(b.record.id, day, now + time::Duration::minutes(1), Granularity::Minute).await.expect("usage");
        assert_eq!(minutes.iter().map(|m| m.counts.get(Code::Revoked)).sum::<u64>(), 3, "{dialect}");
        let totals = store.usage_totals(Some("billing"), day, now + time::Duration::minutes(1)).await.expect("totals");
        assert_eq!((totals.valid, totals.revoked, totals.total()), (60, 3, 63), "{dialect}");
        let other = store.usage_totals(Some("other"), day, now + time::Duration::minutes(1)).await.expect("totals");
        assert_eq!(other.total(), 0, "{dialect}");
        let past =
            store.usage(a.record.id, day, day + time::Duration::hours(1), Granularity::Hour).await.expect("usage");
        assert!(past.is_empty(), "{dialect}: nothing outside the range");
    }
}

/// Creates by many concurrent managers on one SQLite file: the write lock queues them
/// (BEGIN IMMEDIATE + busy timeout), none fails with "database is locked".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_on_one_sqlite_file_all_succeed() {
    let store = sqlite_store().await;
    let keys = std::sync::Arc::new(KeyManager::builder().store(store.clone()).build().expect("manager"));
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let keys = keys.clone();
            tokio::spawn(async move { keys.create(NewKey::new().owner_id(format!("o{}", i % 7))).await })
        })
        .collect();
    for task in tasks {
        task.await.expect("join").expect("every concurrent create succeeds");
    }
    assert_eq!(store.count(&keypal::ListQuery::new()).await.expect("count"), 100);
}

/// The service's documents: unique ids and lookups per kind, updates, listing, deletion.
#[tokio::test]
async fn objects_are_unique_per_kind_by_id_and_lookup() {
    use keypal::StoreError;
    use serde_json::json;
    for store in both().await {
        let d = store.dialect();
        store.insert_object("app", "a1", Some("digest-1"), &json!({"name": "one"}), None).await.expect("insert a1");
        store.insert_object("app", "a2", None, &json!("plain string"), None).await.expect("insert a2");
        store
            .insert_object("session", "a1", Some("digest-1"), &json!({}), None)
            .await
            .expect("same id and lookup, other kind");
        let dup_id = store.insert_object("app", "a1", None, &json!({}), None).await;
        assert!(matches!(dup_id, Err(StoreError::Duplicate)), "{d}: taken id: {dup_id:?}");
        let dup_lookup = store.insert_object("app", "a3", Some("digest-1"), &json!({}), None).await;
        assert!(matches!(dup_lookup, Err(StoreError::Duplicate)), "{d}: taken lookup: {dup_lookup:?}");

        let found = store.find_object("app", "digest-1").await.expect("find").expect("found");
        assert_eq!((found.id.as_str(), &found.body), ("a1", &json!({"name": "one"})), "{d}");
        assert!(store.update_object("app", "a1", &json!({"name": "uno"}), None).await.expect("update"));
        assert!(store.find_object("app", "digest-1").await.expect("find").is_some(), "{d}: the body alone changed");
        // The lookup alone; another document's lookup is refused.
        let taken = store.update_object_lookup("app", "a2", Some("digest-1"), None).await;
        assert!(matches!(taken, Err(StoreError::Duplicate)), "{d}: {taken:?}");
        assert!(store.update_object_lookup("app", "a1", Some("digest-2"), None).await.expect("update lookup"));
        assert!(store.find_object("app", "digest-1").await.expect("find").is_none(), "{d}: old lookup gone");
        let got = store.get_object("app", "a1").await.expect("get").expect("exists");
        assert_eq!(got.body, json!({"name": "uno"}), "{d}");
        assert!(got.updated_at >= got.created_at, "{d}");
        let listed: Vec<String> = store.list_objects("app").await.expect("list").into_iter().map(|o| o.id).collect();
        assert_eq!(listed, ["a1", "a2"], "{d}");
        assert!(store.delete_object("app", "a1", None).await.expect("delete"), "{d}");
        assert!(!store.delete_object("app", "a1", None).await.expect("delete again"), "{d}");
        assert!(!store.update_object("app", "a1", &json!({}), None).await.expect("update missing"), "{d}");
        assert!(!store.update_object_lookup("app", "a1", None, None).await.expect("update missing"), "{d}");
        assert!(store.get_object("app", "a1").await.expect("get").is_none(), "{d}");
    }
}

/// A document change given an event writes both or neither: the event is in the audit
/// log after each change, none after a change that found nothing or was refused.
#[tokio::test]
async fn object_changes_append_their_event_in_the_same_transaction() {
    use keypal::{Action, AuditContext, AuditQuery, Event, Store, StoreError};
    use serde_json::json;
    for store in both().await {
        let d = store.dialect();
        let event = |action| {
            let mut event = Event::new(action, time::OffsetDateTime::now_utc(), AuditContext::new("admin"));
            event.namespace = Some("app-1".into());
            event
        };
        let logged = || async {
            let page = store.audit(&AuditQuery::new().namespace("app-1")).await.expect("audit");
            page.items.iter().map(|e| e.action).collect::<Vec<_>>()
        };
        let created = event(Action::AppCreated);
        store.insert_object("app", "a1", Some("d1"), &json!({}), Some(&created)).await.expect("insert");
        // A refused insert (its id is taken) logs nothing.
        let refused = store.insert_object("app", "a1", None, &json!({}), Some(&event(Action::AppCreated))).await;
        assert!(matches!(refused, Err(StoreError::Duplicate)), "{d}: {refused:?}");
        assert!(
            store.update_object("app", "a1", &json!({"v": 2}), Some(&event(Action::AppUpdated))).await.expect("update")
        );
        assert!(
            !store
                .update_object("app", "nope", &json!({}), Some(&event(Action::AppUpdated)))
                .await
                .expect("update missing")
        );
        assert!(store.delete_object("app", "a1", Some(&event(Action::AppDeleted))).await.expect("delete"));
        assert!(!store.delete_object("app", "a1", Some(&event(Action::AppDeleted))).await.expect("delete again"));
        assert_eq!(logged().await, [Action::AppDeleted, Action::AppUpdated, Action::AppCreated], "{d}: newest first");
        let page = store.audit(&AuditQuery::new().action(Action::AppCreated)).await.expect("audit");
        let first = page.items.iter().find(|e| e.id == created.id).expect("the created event");
        assert_eq!((first.key_id, first.context.actor.as_str()), (None, "admin"), "{d}");
    }
}

/// Several documents in one transaction: inserted all or none; deleted as a document
/// and what depends on it, the dependants only while they are the body given.
#[tokio::test]
async fn documents_written_together_are_written_all_or_nothing() {
    use keypal::StoreError;
    use keypal_sql::{NewObject, ObjectRef};
    use serde_json::json;
    for store in both().await {
        let d = store.dialect();
        let (claim, app, other) = (json!({"app_id": "a1"}), json!({"name": "one"}), json!({"app_id": "a2"}));
        store.insert_object("label", "taken", None, &other, None).await.expect("insert");
        // The second is a duplicate: the first is not stored either.
        let both_new = [
            NewObject { kind: "app", id: "a1", lookup: None, body: &app },
            NewObject { kind: "label", id: "taken", lookup: None, body: &claim },
        ];
        let refused = store.insert_objects(&both_new, None).await;
        assert!(matches!(refused, Err(StoreError::Duplicate)), "{d}: {refused:?}");
        assert!(store.get_object("app", "a1").await.expect("get").is_none(), "{d}: nothing half-written");
        let together = [
            NewObject { kind: "app", id: "a1", lookup: None, body: &app },
            NewObject { kind: "label", id: "free", lookup: None, body: &claim },
        ];
        store.insert_objects(&together, None).await.expect("insert both");

        // A dependant whose body is another's stays; a missing first deletes nothing.
        let wrong_claim = [
            ObjectRef { kind: "app", id: "a1", body: None },
            ObjectRef { kind: "label", id: "taken", body: Some(&claim) },
        ];
        let missing_first = [
            ObjectRef { kind: "app", id: "nope", body: None },
            ObjectRef { kind: "label", id: "free", body: Some(&claim) },
        ];
        assert!(!store.delete_objects(&missing_first, None).await.expect("delete"), "{d}");
        assert!(store.get_object("label", "free").await.expect("get").is_some(), "{d}: kept with its app");
        assert!(store.delete_objects(&wrong_claim, None).await.expect("delete"), "{d}");
        assert!(store.get_object("app", "a1").await.expect("get").is_none(), "{d}");
        assert!(store.get_object("label", "taken").await.expect("get").is_some(), "{d}: another's claim stays");
        let right_claim = [ObjectRef { kind: "label", id: "free", body: Some(&claim) }];
        assert!(store.delete_objects(&right_claim, None).await.expect("delete"), "{d}");
        assert!(store.get_object("label", "free").await.expect("get").is_none(), "{d}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_in_memory_sqlite_database_is_one_connection_kept_open() {
    // sqlx names `:memory:` a shared-cache database of its own (`file:sqlx-in-memory-N`):
    // several connections to it lock each other ("database table is locked", found by
    // fuzzing `keypal serve` on `sqlite::memory:`), and it vanishes when the last closes.
    for url in ["sqlite::memory:", "sqlite://:memory:", "sqlite://?mode=memory"] {
        let store = SqliteStore::connect(url).await.expect(url);
        let options = store.pool().options();
        assert_eq!((options.get_max_connections(), options.get_idle_timeout()), (1, None), "{url}");
        let keys = KeyManager::builder().store(store).build().expect("a manager");
        let creates: Vec<_> = (0..32)
            .map(|_| {
                let keys = keys.clone();
                tokio::spawn(async move { keys.create(NewKey::new()).await })
            })
            .collect();
        for create in creates {
            create.await.expect("a task").unwrap_or_else(|e| panic!("{url}: {e}"));
        }
        assert_eq!(keys.count(keypal::ListQuery::new()).await.expect("a count"), 32, "{url}");
    }
}
