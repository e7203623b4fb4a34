//! Redis-specific behaviour of `RedisStore`, beyond the shared conformance suite:
//! prefixes keep stores apart, records survive a reconnect, the key layout holds no
//! TTLs, corrupt data is a typed error, large values stay exact, and reads that walk
//! past one script call's batch continue correctly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use keypal::clock::truncate_to_micros;
use keypal::{
    Action, AuditContext, AuditQuery, Credits, Event, KeyId, KeyRecord, ListQuery, Lookup, Store, StoreError,
};
use keypal_redis::{RedisStore, redis};
use time::OffsetDateTime;

use common::{fresh_prefix, raw_connection, redis_store, redis_url, store_with_prefix};

fn now() -> OffsetDateTime {
    truncate_to_micros(OffsetDateTime::now_utc())
}

fn event(action: Action) -> Event {
    Event::new(action, now(), AuditContext::new("redis-test"))
}

fn record_for(owner: Option<&str>) -> KeyRecord {
    let id = KeyId::new();
    let mut digest = [0u8; 32];
    digest[..16].copy_from_slice(id.0.as_bytes());
    let mut r = KeyRecord::new(id, Lookup::Digest(digest), format!("$sha256${}", id.0.simple()), now());
    r.owner_id = owner.map(str::to_owned);
    r
}

async fn insert(store: &RedisStore, r: KeyRecord) -> KeyRecord {
    store.insert(r.clone(), None, event(Action::Created)).await.expect("insert failed");
    r
}

async fn keys_of(prefix: &str) -> Vec<String> {
    let mut conn = raw_connection().await;
    let mut keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut conn).await.expect("KEYS failed");
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_under_two_prefixes_never_see_each_other() {
    let Some(a) = redis_store().await else { return };
    let b = store_with_prefix(&fresh_prefix()).await;
    assert_ne!(a.prefix(), b.prefix());

    // The same record (same id, same unique lookup) goes into both: no Duplicate.
    let mut r = record_for(Some("owner"));
    r.namespace = Some("app".to_owned());
    a.insert(r.clone(), Some(1), event(Action::Created)).await.expect("insert into a");
    b.insert(r.clone(), Some(1), event(Action::Created)).await.expect("the same record into b");
    let only_a = insert(&a, record_for(Some("owner"))).await;

    assert_eq!(a.count(&ListQuery::new().include_revoked(true)).await.unwrap(), 2);
    assert_eq!(b.count(&ListQuery::new().include_revoked(true)).await.unwrap(), 1);
    assert!(b.get(only_a.id).await.unwrap().is_none(), "b must not see a's record");
    assert!(b.find(&only_a.lookup).await.unwrap().is_none(), "b must not find a's lookup");
    assert_eq!(b.audit(&AuditQuery::new()).await.unwrap().items.len(), 1, "b sees its own audit event only");

    // Revoking in a leaves b's copy alone; a per-owner limit counts per store.
    a.revoke(r.id, now(), event(Action::Revoked)).await.expect("revoke in a");
    assert_eq!(b.get(r.id).await.unwrap().unwrap().revoked_at, None, "b's copy is not revoked");

    // Every key of a starts with a's prefix, and clearing a leaves b whole.
    let a_keys = keys_of(a.prefix()).await;
    assert!(!a_keys.is_empty());
    let deleted = a.clear().await.expect("clear a");
    assert_eq!(deleted, a_keys.len() as u64, "clear deletes exactly a's keys");
    assert!(keys_of(a.prefix()).await.is_empty());
    assert_eq!(*b.get(r.id).await.unwrap().unwrap(), r, "b is untouched by clearing a");
    b.clear().await.expect("clear b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_survive_a_reconnect_and_operations_keep_working() {
    let Some(base) = redis_url() else { return };
    // RESP3 (the default) and RESP2 (named in the URL) both reconnect.
    for url in [base.to_owned(), format!("{base}/?protocol=resp2")] {
        let store = RedisStore::connect(&url, fresh_prefix()).await.expect("connect to the test Redis");
        survives_a_reconnect(store).await;
    }
}

async fn survives_a_reconnect(store: RedisStore) {
    let r = insert(&store, record_for(Some("u"))).await;

    // Kill exactly this store's connection from another one.
    let mut own = store.connection();
    let id: i64 = redis::cmd("CLIENT").arg("ID").query_async(&mut own).await.expect("CLIENT ID");
    let mut other = raw_connection().await;
    let killed: i64 =
        redis::cmd("CLIENT").arg("KILL").arg("ID").arg(id).query_async(&mut other).await.expect("CLIENT KILL");
    assert_eq!(killed, 1, "the store's connection was killed");

    // Reads retry once on the re-established connection.
    let back = store.get(r.id).await.expect("get after the connection was killed");
    assert_eq!(back.as_deref(), Some(&r), "the record survives the reconnect");
    let mut own = store.connection();
    let new_id: i64 = redis::cmd("CLIENT").arg("ID").query_async(&mut own).await.expect("CLIENT ID");
    assert_ne!(new_id, id, "the manager reconnected");

    // And changes work again.
    let second = insert(&store, record_for(Some("u"))).await;
    store.revoke(r.id, now(), event(Action::Revoked)).await.expect("revoke after reconnect");
    assert_eq!(store.count(&ListQuery::new().owner_id("u")).await.unwrap(), 1);
    assert_eq!(store.list(&ListQuery::new().owner_id("u")).await.unwrap().items[0].id, second.id);
    store.clear().await.unwrap();
}

#[tokio::test]
async fn unreachable_redis_and_bad_urls_are_typed_errors() {
    let started = std::time::Instant::now();
    let error = RedisStore::connect("redis://127.0.0.1:1", "kpt:unreachable:").await.unwrap_err();
    assert_eq!(error.code(), "REDIS_UNREACHABLE", "{error}");
    assert!(started.elapsed() < Duration::from_secs(5), "an unreachable server is reported at once");
    let error = RedisStore::connect("http://127.0.0.1:6379", "kpt:bad:").await.unwrap_err();
    assert_eq!(error.code(), "REDIS_URL_INVALID", "{error}");
}

#[tokio::test]
async fn the_key_layout_is_as_documented_and_nothing_expires() {
    let Some(store) = redis_store().await else { return };
    let p = store.prefix().to_owned();
    let mut r = record_for(Some("own:er"));
    r.namespace = Some("ns:1".to_owned());
    insert(&store, r.clone()).await;
    let mut hinted = record_for(None);
    hinted.lookup = Lookup::Hint("sk_live_abc".to_owned());
    insert(&store, hinted.clone()).await;
    store.revoke(r.id, now(), event(Action::Revoked)).await.unwrap();

    let id = r.id.to_string();
    let events = store.audit(&AuditQuery::new()).await.unwrap().items;
    assert_eq!(events.len(), 3);
    let mut expected = vec![
        format!("{p}key:{id}"),
        format!("{p}key:{}", hinted.id),
        format!("{p}lookup:digest:{}", r.lookup.value()),
        format!("{p}hint:sk_live_abc"),
        format!("{p}ix:all"),
        format!("{p}ix:ns:4=ns:1"),
        format!("{p}ix:ns:~"),
        format!("{p}ix:owner:own:er"),
        format!("{p}ix:nso:4=ns:1:own:er"),
        format!("{p}audit"),
        format!("{p}audit:key:{id}"),
        format!("{p}audit:key:{}", hinted.id),
        format!("{p}audit:owner:own:er"),
        format!("{p}audit:ns:4=ns:1"),
        format!("{p}audit:action:created"),
        format!("{p}audit:action:revoked"),
    ];
    expected.extend(events.iter().map(|e| format!("{p}ev:{}", e.id)));
    expected.sort();
    assert_eq!(keys_of(&p).await, expected, "the keys are exactly those of the documented layout");

    let mut conn = raw_connection().await;
    for key in &expected {
        let ttl: i64 = redis::cmd("TTL").arg(key).query_async(&mut conn).await.unwrap();
        assert_eq!(ttl, -1, "{key} must not expire");
    }
    let kind: String = redis::cmd("TYPE").arg(format!("{p}key:{id}")).query_async(&mut conn).await.unwrap();
    assert_eq!(kind, "hash");
    let revoked: String =
        redis::cmd("HGET").arg(format!("{p}key:{id}")).arg("revoked_at").query_async(&mut conn).await.unwrap();
    assert!(revoked.parse::<i64>().is_ok(), "timestamps are integer microseconds, got {revoked:?}");
    store.clear().await.unwrap();
}

#[tokio::test]
async fn corrupt_data_is_a_backend_error_never_a_panic() {
    let Some(store) = redis_store().await else { return };
    let p = store.prefix().to_owned();
    let mut r = record_for(Some("u"));
    r.remaining = Some(10);
    insert(&store, r.clone()).await;
    let key = format!("{p}key:{}", r.id);
    let mut conn = raw_connection().await;

    let _: () = redis::cmd("HSET").arg(&key).arg("remaining").arg("lots").query_async(&mut conn).await.unwrap();
    match store.consume(r.id, 1, None).await {
        Err(StoreError::Backend(e)) => assert!(e.to_string().contains("remaining"), "{e}"),
        other => panic!("consume of corrupt credits must be a backend error, got {other:?}"),
    }
    let _: () = redis::cmd("HSET").arg(&key).arg("version").arg("-1").query_async(&mut conn).await.unwrap();
    let before: Vec<String> = redis::cmd("HGETALL").arg(&key).query_async(&mut conn).await.unwrap();
    assert!(matches!(store.revoke(r.id, now(), event(Action::Revoked)).await, Err(StoreError::Backend(_))));
    let after: Vec<String> = redis::cmd("HGETALL").arg(&key).query_async(&mut conn).await.unwrap();
    assert_eq!(before, after, "a refused change writes nothing");

    let _: () = redis::cmd("HSET").arg(&key).arg("created_at").arg("yesterday").query_async(&mut conn).await.unwrap();
    for result in [
        store.get(r.id).await.map(|_| ()),
        store.find(&r.lookup).await.map(|_| ()),
        store.list(&ListQuery::new()).await.map(|_| ()),
    ] {
        match result {
            Err(StoreError::Backend(e)) => assert!(e.to_string().contains("created_at"), "{e}"),
            other => panic!("reading a corrupt record must be a backend error, got {other:?}"),
        }
    }
    store.clear().await.unwrap();
}

#[tokio::test]
async fn credits_and_far_timestamps_stay_exact() {
    let Some(store) = redis_store().await else { return };
    let mut r = record_for(None);
    r.remaining = Some(u64::MAX);
    // Microseconds far beyond 2^53: Lua doubles would round these.
    let far =
        OffsetDateTime::parse("9999-12-31T23:59:59.999990Z", &time::format_description::well_known::Rfc3339).unwrap();
    r.expires_at = Some(far);
    insert(&store, r.clone()).await;
    assert_eq!(store.consume(r.id, 1, None).await.unwrap(), Credits::Spent { remaining: u64::MAX - 1 });
    assert_eq!(
        store.consume(r.id, u64::MAX, None).await.unwrap(),
        Credits::Exhausted { remaining: u64::MAX - 1 },
        "more than is left"
    );
    assert_eq!(
        store.consume(r.id, 9_007_199_254_740_993, None).await.unwrap(),
        Credits::Spent { remaining: u64::MAX - 1 - 9_007_199_254_740_993 }
    );

    let micro = time::Duration::microseconds(1);
    store.touch(&[(r.id, far - micro * 3)]).await.unwrap();
    store.touch(&[(r.id, far - micro * 2)]).await.unwrap();
    store.touch(&[(r.id, far - micro * 5)]).await.unwrap();
    let back = store.get(r.id).await.unwrap().unwrap();
    assert_eq!(back.last_used_at, Some(far - micro * 2), "touch moves forward by one microsecond, exactly");
    assert_eq!(back.expires_at, Some(far));
    store.clear().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_counts_and_audit_reads_continue_past_one_scripts_batch() {
    let Some(store) = redis_store().await else { return };
    let t = now();
    // 5 live keys, then 1200 revoked ones newer than them, then 3 live ones.
    let mut live = Vec::new();
    for _ in 0..5 {
        live.push(insert(&store, record_for(Some("u"))).await.id);
    }
    for _ in 0..1200 {
        let mut r = record_for(Some("u"));
        r.revoked_at = Some(t);
        let e = Event::new(Action::Imported, t - time::Duration::hours(1), AuditContext::new("bulk"));
        store.insert(r, None, e).await.unwrap();
    }
    for _ in 0..3 {
        live.push(insert(&store, record_for(Some("u"))).await.id);
    }
    live.reverse();

    let query = ListQuery::new().owner_id("u").at(t).limit(4);
    let first = store.list(&query).await.unwrap();
    assert_eq!(first.items.iter().map(|r| r.id).collect::<Vec<_>>(), live[..4], "across the revoked keys");
    let second = store.list(&query.clone().cursor(first.next_cursor.unwrap())).await.unwrap();
    assert_eq!(second.items.iter().map(|r| r.id).collect::<Vec<_>>(), live[4..]);
    assert_eq!(second.next_cursor, None);
    assert_eq!(store.count(&query).await.unwrap(), 8, "count walks every batch");
    assert_eq!(store.count(&query.clone().include_revoked(true)).await.unwrap(), 1208);

    // The oldest events, found through 1200 newer ones outside the time range.
    let range = AuditQuery::new().between(t - time::Duration::minutes(1), t + time::Duration::minutes(1));
    let page = store.audit(&range.clone().limit(6)).await.unwrap();
    assert_eq!(page.items.len(), 6);
    assert!(page.items.iter().all(|e| e.action == Action::Created), "only the events in the range");
    let rest = store.audit(&range.limit(6).cursor(page.next_cursor.unwrap())).await.unwrap();
    assert_eq!(rest.items.len(), 2);
    assert!(rest.items.iter().all(|e| e.action == Action::Created));
    assert_eq!(rest.next_cursor, None);
    store.clear().await.unwrap();
}

#[tokio::test]
async fn revoke_owner_of_many_keys_gives_each_event_its_own_id() {
    let Some(store) = redis_store().await else { return };
    let mut ids = Vec::new();
    for _ in 0..40 {
        ids.push(insert(&store, record_for(Some("many"))).await.id);
    }
    let e = event(Action::Revoked);
    let revoked = store.revoke_owner(None, "many", now(), e.clone()).await.unwrap();
    assert_eq!(revoked.iter().map(|r| r.id).collect::<Vec<_>>(), ids, "every key, in id order");
    let events = store.audit(&AuditQuery::new().action(Action::Revoked).limit(100)).await.unwrap().items;
    assert_eq!(events.len(), 40);
    let oldest = events.last().unwrap();
    assert_eq!((oldest.id, oldest.key_id), (e.id, Some(ids[0])), "the first key's event keeps the given id");
    let mut event_ids: Vec<_> = events.iter().map(|e| e.id).collect();
    event_ids.dedup();
    assert_eq!(event_ids.len(), 40);
    store.clear().await.unwrap();
}

#[tokio::test]
async fn an_event_id_already_logged_is_refused_and_changes_nothing() {
    let Some(store) = redis_store().await else { return };
    let e = event(Action::Created);
    let first = record_for(None);
    store.insert(first.clone(), None, e.clone()).await.unwrap();
    let second = record_for(None);
    match store.insert(second.clone(), None, e.clone()).await {
        Err(StoreError::Backend(error)) => assert!(error.to_string().contains("already logged"), "{error}"),
        other => panic!("reusing an event id must be refused, got {other:?}"),
    }
    assert!(store.get(second.id).await.unwrap().is_none());
    let mut revoke = event(Action::Revoked);
    revoke.id = e.id;
    assert!(matches!(store.revoke(first.id, now(), revoke).await, Err(StoreError::Backend(_))));
    assert_eq!(store.get(first.id).await.unwrap().unwrap().revoked_at, None);
    assert_eq!(store.audit(&AuditQuery::new()).await.unwrap().items.len(), 1);
    store.clear().await.unwrap();
}
