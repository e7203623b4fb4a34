//! The audit log: every successful mutation appends its event in the same unit, with
//! the key's id, owner and namespace filled in by the store; failed ones append
//! nothing. Reads filter by key, owner, action, namespace and time range (since
//! inclusive, until exclusive), newest (highest event id) first, paged by cursor.

use keypal::{Action, AuditQuery, Event, KeyId, KeyPatch, KeyRecord, ListQuery, Store, StoreError};
use serde_json::json;
use uuid::Uuid;

use crate::fixtures::{
    audit_all, audit_len, event, event_at, fetch, full_record, insert, now, record, record_for, record_in,
    replacement_for, shift,
};

/// `event` as the store must log it: about `record`.
fn about(event: &Event, record: &KeyRecord) -> Event {
    let mut e = event.clone();
    e.key_id = Some(record.id);
    e.namespace.clone_from(&record.namespace);
    e.owner_id.clone_from(&record.owner_id);
    e
}

/// The ids of `events`, in order.
fn event_ids(events: &[Event]) -> Vec<Uuid> {
    events.iter().map(|e| e.id).collect()
}

/// Asserts that `events` are in strictly descending id order (newest first, no repeats).
fn assert_newest_first(events: &[Event], what: &str) {
    for pair in events.windows(2) {
        assert!(pair[0].id > pair[1].id, "{what}: events must be newest (highest id) first without repeats");
    }
}

/// Asserts that `query` returns exactly `expected` (newest first).
async fn assert_audit<S: Store>(store: &S, query: AuditQuery, expected: &[&Event], what: &str) {
    let got = audit_all(store, query).await;
    let expected: Vec<Event> = expected.iter().map(|e| (*e).clone()).collect();
    assert_eq!(got, expected, "{what}: the audit query must return exactly these events, newest first");
}

/// A store without events returns an empty page without a cursor.
pub async fn empty_store_has_no_audit_events<S: Store>(store: S) {
    let page = store.audit(&AuditQuery::new()).await.expect("audit failed");
    assert!(page.items.is_empty(), "an empty store has no audit events");
    assert_eq!(page.next_cursor, None);
    insert(&store, record()).await;
    let page = store.audit(&AuditQuery::new().key_id(KeyId::new())).await.expect("audit failed");
    assert!(page.items.is_empty(), "no events about an unknown key");
}

/// The appended event reads back as given (id, time, action, context, details), with
/// `key_id`, `owner_id` and `namespace` set from the record by the store.
pub async fn event_reads_back_with_key_owner_and_namespace_filled_in<S: Store>(store: S) {
    let r = full_record();
    let mut e = event(Action::Imported);
    e.details = Some(json!({"source": "legacy \"db\"\n", "rows": [1, 2], "ü": true}));
    assert_eq!(e.key_id, None, "fixture events leave the key to the store");
    store.insert(r.clone(), Some(3), e.clone()).await.expect("insert failed");
    let logged = audit_all(&store, AuditQuery::new()).await;
    assert_eq!(logged, vec![about(&e, &r)], "the event must read back whole, about the inserted key");

    let plain = record();
    let e2 = event(Action::Created);
    insert_with(&store, plain.clone(), e2.clone()).await;
    let logged = audit_all(&store, AuditQuery::new().key_id(plain.id)).await;
    assert_eq!(logged, vec![about(&e2, &plain)], "a key without owner or namespace logs them as None");
}

/// Inserts with a given event.
async fn insert_with<S: Store>(store: &S, r: KeyRecord, e: Event) {
    store.insert(r, None, e).await.expect("insert failed");
}

/// Insert (created or imported), update, disable, enable, rotate, revoke,
/// revoke_owner and delete each append exactly their one event, about the key.
pub async fn each_successful_change_appends_one_event<S: Store>(store: S) {
    let t = shift(now(), -100);
    let r = full_record();
    let other = record_in(r.namespace.as_deref(), "someone");
    let mut expected = Vec::new();

    let e = event_at(Action::Created, shift(t, 1));
    insert_with(&store, r.clone(), e.clone()).await;
    expected.push(about(&e, &r));
    let e = event_at(Action::Imported, shift(t, 2));
    insert_with(&store, other.clone(), e.clone()).await;
    expected.push(about(&e, &other));
    let e = event_at(Action::Updated, shift(t, 3));
    store.update(r.id, &KeyPatch::new().name("n"), e.clone()).await.expect("update failed");
    expected.push(about(&e, &r));
    let e = event_at(Action::Disabled, shift(t, 4));
    store.set_enabled(r.id, false, e.clone()).await.expect("disable failed");
    expected.push(about(&e, &r));
    let e = event_at(Action::Enabled, shift(t, 5));
    store.set_enabled(r.id, true, e.clone()).await.expect("enable failed");
    expected.push(about(&e, &r));
    let new = replacement_for(&r, shift(t, 6));
    let mut e = event_at(Action::Rotated, shift(t, 6));
    e.details = Some(json!({"new_key_id": new.id}));
    store.rotate(r.id, new.clone(), shift(t, 3600), e.clone()).await.expect("rotate failed");
    expected.push(about(&e, &r));
    let e = event_at(Action::Revoked, shift(t, 7));
    store.revoke(r.id, shift(t, 7), e.clone()).await.expect("revoke in grace failed");
    expected.push(about(&e, &r));
    let e = event_at(Action::Revoked, shift(t, 8));
    let revoked = store.revoke_owner(other.namespace.as_deref(), "someone", shift(t, 8), e.clone()).await;
    assert_eq!(revoked.expect("revoke_owner failed").len(), 1);
    expected.push(about(&e, &other));
    let e = event_at(Action::Deleted, shift(t, 9));
    store.delete(r.id, e.clone()).await.expect("delete failed").expect("deleted");
    expected.push(about(&e, &r));

    expected.reverse();
    let logged = audit_all(&store, AuditQuery::new()).await;
    assert_eq!(logged, expected, "each successful change appends its one event, newest first");
    let about_new = audit_all(&store, AuditQuery::new().key_id(new.id)).await;
    assert!(about_new.is_empty(), "a rotation's event is about the old key only, got {about_new:?}");
}

/// Refused operations append nothing: duplicate insert, owner limit, update, enable,
/// revoke, rotate and delete of unknown keys, second revoke, rotation of a revoked key
/// or onto a taken lookup, revoke_owner with nothing to revoke.
pub async fn failed_operations_append_nothing<S: Store>(store: S) {
    let live = insert(&store, record_for("u")).await;
    let gone = insert(&store, record_for("u2")).await;
    store.revoke(gone.id, now(), event(Action::Revoked)).await.expect("revoke failed");
    let before = audit_all(&store, AuditQuery::new()).await;
    let mut attempted = Vec::new();
    let mut ev = |action| {
        let e = event(action);
        attempted.push(e.id);
        e
    };

    let mut dup = record();
    dup.lookup = live.lookup.clone();
    assert_err!(store.insert(dup, None, ev(Action::Created)).await, StoreError::Duplicate, "duplicate insert");
    assert_err!(
        store.insert(record_for("u"), Some(1), ev(Action::Created)).await,
        StoreError::LimitReached { .. },
        "insert at the limit"
    );
    let ghost = KeyId::new();
    assert_err!(
        store.update(ghost, &KeyPatch::new().name("x"), ev(Action::Updated)).await,
        StoreError::NotFound,
        "update unknown"
    );
    assert_err!(store.set_enabled(ghost, false, ev(Action::Disabled)).await, StoreError::NotFound, "disable unknown");
    assert_err!(store.revoke(ghost, now(), ev(Action::Revoked)).await, StoreError::NotFound, "revoke unknown");
    assert_err!(store.revoke(gone.id, now(), ev(Action::Revoked)).await, StoreError::AlreadyRevoked, "second revoke");
    let t = now();
    assert_err!(
        store.rotate(gone.id, replacement_for(&gone, t), shift(t, 60), ev(Action::Rotated)).await,
        StoreError::AlreadyRevoked,
        "rotate revoked"
    );
    let mut taken = replacement_for(&live, t);
    taken.lookup = gone.lookup.clone();
    assert_err!(
        store.rotate(live.id, taken, shift(t, 60), ev(Action::Rotated)).await,
        StoreError::Duplicate,
        "rotate onto a taken lookup"
    );
    assert_err!(
        store.rotate(ghost, replacement_for(&live, t), shift(t, 60), ev(Action::Rotated)).await,
        StoreError::NotFound,
        "rotate unknown"
    );
    let none = store.delete(ghost, ev(Action::Deleted)).await.expect("delete failed");
    assert!(none.is_none());
    let none = store.revoke_owner(None, "u2", now(), ev(Action::Revoked)).await.expect("revoke_owner failed");
    assert!(none.is_empty());

    let after = audit_all(&store, AuditQuery::new()).await;
    assert_eq!(after, before, "refused operations must append nothing");
    for id in attempted {
        assert!(!event_ids(&after).contains(&id), "the event of a refused operation must not be logged");
    }
}

/// Reads and usage writes (`consume`, `touch`, `replace_hash`) append nothing.
pub async fn usage_writes_append_nothing<S: Store>(store: S) {
    let mut r = full_record();
    r.remaining = Some(3);
    insert(&store, r.clone()).await;
    let before = audit_len(&store).await;
    store.consume(r.id, 1, None).await.expect("consume failed");
    store.touch(&[(r.id, shift(now(), 1))]).await.expect("touch failed");
    assert!(store.replace_hash(r.id, &r.hash, "$sha256$new", &r.lookup).await.expect("replace_hash failed"));
    store.get(r.id).await.expect("get failed");
    store.find(&r.lookup).await.expect("find failed");
    store.find_by_hint("x").await.expect("find_by_hint failed");
    store.list(&ListQuery::new()).await.expect("list failed");
    store.count(&ListQuery::new()).await.expect("count failed");
    assert_eq!(audit_len(&store).await, before, "reads and usage writes append no audit event");
    assert_eq!(fetch(&store, r.id).await.hash, "$sha256$new");
}

/// Filters by key, owner, action and namespace, alone and combined, select exactly
/// the matching events (exact string matches, not prefixes).
pub async fn audit_filters_by_key_owner_action_and_namespace<S: Store>(store: S) {
    let t = shift(now(), -100);
    let a = record_in(Some("app_a"), "u1");
    let b = record_in(Some("app_a"), "u2");
    let c = record_in(None, "u1");
    let mut d = record();
    d.namespace = Some("app_b".to_owned());
    let mut logged = Vec::new();
    for (i, r) in [&a, &b, &c, &d].into_iter().enumerate() {
        let e = event_at(Action::Created, shift(t, i as i64));
        insert_with(&store, r.clone(), e.clone()).await;
        logged.push(about(&e, r));
    }
    let e = event_at(Action::Updated, shift(t, 10));
    store.update(a.id, &KeyPatch::new().name("a"), e.clone()).await.expect("update failed");
    let a_updated = about(&e, &a);
    let e = event_at(Action::Revoked, shift(t, 11));
    store.revoke(b.id, shift(t, 11), e.clone()).await.expect("revoke failed");
    let b_revoked = about(&e, &b);
    let e = event_at(Action::Disabled, shift(t, 12));
    store.set_enabled(c.id, false, e.clone()).await.expect("disable failed");
    let c_disabled = about(&e, &c);
    let e = event_at(Action::Deleted, shift(t, 13));
    store.delete(d.id, e.clone()).await.expect("delete failed");
    let d_deleted = about(&e, &d);
    let [a_created, b_created, c_created, d_created] = [&logged[0], &logged[1], &logged[2], &logged[3]];

    assert_audit(&store, AuditQuery::new().key_id(a.id), &[&a_updated, a_created], "key a").await;
    assert_audit(&store, AuditQuery::new().key_id(d.id), &[&d_deleted, d_created], "deleted key d").await;
    assert_audit(
        &store,
        AuditQuery::new().owner_id("u1"),
        &[&c_disabled, &a_updated, c_created, a_created],
        "owner u1",
    )
    .await;
    assert_audit(&store, AuditQuery::new().owner_id("u"), &[], "owner u (a prefix)").await;
    assert_audit(
        &store,
        AuditQuery::new().action(Action::Created),
        &[d_created, c_created, b_created, a_created],
        "action created",
    )
    .await;
    assert_audit(&store, AuditQuery::new().action(Action::Rotated), &[], "action rotated").await;
    assert_audit(
        &store,
        AuditQuery::new().namespace("app_a"),
        &[&b_revoked, &a_updated, b_created, a_created],
        "namespace app_a",
    )
    .await;
    assert_audit(&store, AuditQuery::new().namespace("app"), &[], "namespace app (a prefix)").await;
    assert_audit(&store, AuditQuery::new().namespace("app_a").owner_id("u1"), &[&a_updated, a_created], "ns+owner")
        .await;
    assert_audit(
        &store,
        AuditQuery::new().namespace("app_a").action(Action::Revoked).owner_id("u2").key_id(b.id),
        &[&b_revoked],
        "all filters",
    )
    .await;
    assert_audit(&store, AuditQuery::new().key_id(b.id).action(Action::Updated), &[], "key b updated").await;
}

/// `since` is inclusive and `until` exclusive, to the microsecond.
pub async fn audit_time_range_includes_since_and_excludes_until<S: Store>(store: S) {
    let t = shift(now(), -1000);
    let micro = time::Duration::microseconds(1);
    let times = [t, shift(t, 1), shift(t, 2), shift(t, 3) - micro, shift(t, 3), shift(t, 4)];
    let mut logged = Vec::new();
    for at in times {
        let r = record();
        let e = event_at(Action::Created, at);
        insert_with(&store, r.clone(), e.clone()).await;
        logged.push(about(&e, &r));
    }
    let [e0, e1, e2, e3, e4, e5] = [&logged[0], &logged[1], &logged[2], &logged[3], &logged[4], &logged[5]];

    let range = |since, until| AuditQuery::new().between(since, until);
    assert_audit(&store, range(times[1], times[4]), &[e3, e2, e1], "[t+1, t+3)").await;
    assert_audit(&store, range(times[1] + micro, times[4] + micro), &[e4, e3, e2], "[t+1µs, t+3+1µs)").await;
    assert_audit(&store, range(times[2], times[2]), &[], "an empty range").await;
    assert_audit(&store, range(times[2], times[2] + micro), &[e2], "a one-microsecond range").await;
    let mut since = AuditQuery::new();
    since.since = Some(times[4]);
    assert_audit(&store, since, &[e5, e4], "since t+3").await;
    let mut until = AuditQuery::new();
    until.until = Some(times[2]);
    assert_audit(&store, until, &[e1, e0], "until t+2").await;
    assert_audit(&store, range(shift(t, -10), shift(t, 10)).action(Action::Created), &[e5, e4, e3, e2, e1, e0], "all")
        .await;
}

/// 25 single events plus 12 from one `revoke_owner` page as 10, 10, 10, 7 with
/// `limit(10)`: newest first across pages, no gaps, no repeats, each event its own id.
pub async fn audit_pages_newest_first_with_a_cursor<S: Store>(store: S) {
    let t = shift(now(), -1000);
    let mut owned = Vec::new();
    for i in 0..25 {
        let r = if i < 12 { record_for("pager") } else { record() };
        insert_with(&store, r.clone(), event_at(Action::Created, shift(t, i))).await;
        if i < 12 {
            owned.push(r.id);
        }
    }
    let revoked = store
        .revoke_owner(None, "pager", shift(t, 40), event_at(Action::Revoked, shift(t, 40)))
        .await
        .expect("revoke_owner failed");
    assert_eq!(revoked.len(), 12);
    let total = 25 + 12;

    let query = AuditQuery::new().limit(10);
    let mut seen: Vec<Event> = Vec::new();
    let mut sizes = Vec::new();
    let mut current = query.clone();
    loop {
        let page = store.audit(&current).await.expect("audit failed");
        sizes.push(page.items.len());
        seen.extend(page.items.iter().cloned());
        match page.next_cursor {
            Some(cursor) => {
                assert_eq!(Some(cursor), page.items.last().map(|e| e.id), "the cursor is the last item's id");
                current = query.clone().cursor(cursor);
            }
            None => break,
        }
        assert!(sizes.len() <= total, "pagination must end");
    }
    assert_eq!(sizes, vec![10, 10, 10, 7], "37 events page as 10, 10, 10, 7");
    assert_newest_first(&seen, "paged audit");
    assert_eq!(seen.len(), total, "every event exactly once across pages");
    let revocations: Vec<&Event> = seen.iter().filter(|e| e.action == Action::Revoked).collect();
    assert_eq!(revocations.len(), 12, "each key revoked by revoke_owner has its event on some page");
    let mut keys: Vec<KeyId> = revocations.iter().filter_map(|e| e.key_id).collect();
    keys.sort();
    owned.sort();
    assert_eq!(keys, owned, "one revocation event per key");
    let all = audit_all(&store, AuditQuery::new()).await;
    assert_eq!(all, seen, "paging by 10 and by 1000 read the same log");
}
