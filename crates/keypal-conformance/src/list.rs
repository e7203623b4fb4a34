//! Listing and counting: newest first (highest id first), filters by namespace, owner
//! and revocation (judged at the query's `at`), cursor pagination without gaps or
//! duplicates, and counts that agree with listings.

use std::sync::Arc;

use keypal::{Action, KeyId, KeyRecord, ListQuery, NamespaceFilter, Store};

use crate::fixtures::{event, ids, insert, list_all, now, record, record_in, shift, sorted_ids};

/// Inserts `n` records built by `make`, returning their ids sorted newest first.
async fn insert_many<S: Store>(store: &S, n: usize, make: impl Fn() -> KeyRecord) -> Vec<KeyId> {
    let mut inserted = Vec::with_capacity(n);
    for _ in 0..n {
        inserted.push(insert(store, make()).await.id);
    }
    inserted.sort_by(|a, b| b.cmp(a));
    inserted
}

/// Lists one page, panicking on error.
async fn page<S: Store>(store: &S, query: &ListQuery) -> keypal::Page<Arc<KeyRecord>> {
    store.list(query).await.expect("list failed")
}

/// Asserts that `list_all(query)` returns exactly `expected` (newest first) and that
/// `count(query)` agrees.
async fn assert_lists<S: Store>(store: &S, query: ListQuery, expected: &[KeyId], what: &str) {
    let listed = list_all(store, query.clone()).await;
    assert_eq!(ids(&listed), expected, "{what}: list must return exactly these keys, newest first");
    let count = store.count(&query).await.expect("count failed");
    assert_eq!(count, expected.len() as u64, "{what}: count must agree with list");
}

/// An empty store lists nothing, with no cursor, and counts zero.
pub async fn empty_store_lists_and_counts_nothing<S: Store>(store: S) {
    let first = page(&store, &ListQuery::new().include_revoked(true)).await;
    assert!(first.items.is_empty(), "an empty store must list nothing");
    assert_eq!(first.next_cursor, None, "an empty listing has no next cursor");
    assert_eq!(store.count(&ListQuery::new().include_revoked(true)).await.expect("count failed"), 0);
}

/// `list` returns records newest first, i.e. by id descending (ids are UUID v7).
pub async fn list_returns_newest_first<S: Store>(store: S) {
    let expected = insert_many(&store, 7, record).await;
    let listed = page(&store, &ListQuery::new()).await;
    assert_eq!(ids(&listed.items), expected, "list must return the keys newest (highest id) first");
    assert_eq!(listed.next_cursor, None, "everything fits on one page");
    for r in &listed.items {
        assert_eq!(**r, *crate::fixtures::fetch(&store, r.id).await, "listed records must be whole records");
    }
}

/// `NamespaceFilter::Any` lists every namespace, `None` only keys without a namespace,
/// `Is(n)` only keys of `n` (exactly, not as a prefix).
pub async fn list_filters_by_namespace<S: Store>(store: S) {
    let none = insert_many(&store, 2, || record_in(None, "u")).await;
    let a = insert_many(&store, 3, || record_in(Some("app_a"), "u")).await;
    let ab = insert_many(&store, 1, || record_in(Some("app_ab"), "u")).await;
    let b = insert_many(&store, 2, || record_in(Some("app_b"), "v")).await;
    let mut all: Vec<KeyId> = [none.clone(), a.clone(), ab.clone(), b.clone()].concat();
    all.sort_by(|x, y| y.cmp(x));

    assert_lists(&store, ListQuery::new().any_namespace(), &all, "NamespaceFilter::Any").await;
    let mut q = ListQuery::new();
    q.namespace = NamespaceFilter::None;
    assert_lists(&store, q, &none, "NamespaceFilter::None").await;
    assert_lists(&store, ListQuery::new().namespace("app_a"), &a, "NamespaceFilter::Is(app_a)").await;
    assert_lists(&store, ListQuery::new().namespace("app_ab"), &ab, "NamespaceFilter::Is(app_ab)").await;
    assert_lists(&store, ListQuery::new().namespace("app_b"), &b, "NamespaceFilter::Is(app_b)").await;
    assert_lists(&store, ListQuery::new().namespace("app"), &[], "NamespaceFilter::Is(app)").await;
    assert_lists(&store, ListQuery::new().namespace("app_a").owner_id("v"), &[], "namespace and owner").await;
}

/// An owner filter lists only that owner's keys (exact match), across namespaces.
pub async fn list_filters_by_owner<S: Store>(store: S) {
    let mut u1 = Vec::new();
    for i in 0..4 {
        let ns = if i % 2 == 0 { None } else { Some("app") };
        u1.push(insert(&store, record_in(ns, "user_1")).await.id);
        insert(&store, record_in(ns, "user_10")).await;
        insert(&store, record()).await;
    }
    u1.sort_by(|a, b| b.cmp(a));
    assert_lists(&store, ListQuery::new().owner_id("user_1"), &u1, "owner user_1").await;
    assert_lists(&store, ListQuery::new().owner_id("user_"), &[], "owner user_ (a prefix)").await;
    assert_lists(&store, ListQuery::new().owner_id("nobody"), &[], "unknown owner").await;
    assert_eq!(store.count(&ListQuery::new()).await.expect("count failed"), 12);
}

/// Revoked keys are left out unless `include_revoked`; revocation is judged at `at`.
pub async fn list_hides_revoked_keys_unless_asked<S: Store>(store: S) {
    let kept = insert_many(&store, 3, || record_in(None, "u")).await;
    let gone = insert(&store, record_in(None, "u")).await;
    let t = now();
    store.revoke(gone.id, t, event(Action::Revoked)).await.expect("revoke failed");
    let mut everything = kept.clone();
    everything.push(gone.id);
    everything.sort_by(|a, b| b.cmp(a));

    assert_lists(&store, ListQuery::new().owner_id("u"), &kept, "without revoked").await;
    assert_lists(&store, ListQuery::new().owner_id("u").at(t), &kept, "revoked exactly at `at`").await;
    assert_lists(&store, ListQuery::new().owner_id("u").include_revoked(true), &everything, "with revoked").await;
    let listed = list_all(&store, ListQuery::new().include_revoked(true)).await;
    let revoked = listed.iter().find(|r| r.id == gone.id).expect("revoked key listed");
    assert_eq!(revoked.revoked_at, Some(t), "a listed revoked key shows when it was revoked");
    assert_lists(&store, ListQuery::new().owner_id("u").at(shift(t, -1)), &everything, "judged before the revocation")
        .await;
}

/// 25 matching keys (among others) page as 10, 10 and 5 with `limit(10)`: newest first
/// across pages, no duplicates, no gaps, `next_cursor` `None` only on the last page.
pub async fn list_pages_with_a_cursor_without_gaps_or_duplicates<S: Store>(store: S) {
    let mut mine = Vec::new();
    for i in 0..25 {
        mine.push(insert(&store, record_in(Some("app"), "pager")).await.id);
        if i % 3 == 0 {
            insert(&store, record_in(Some("app"), "someone_else")).await;
            insert(&store, record_in(None, "pager")).await;
        }
    }
    mine.sort_by(|a, b| b.cmp(a));

    let query = ListQuery::new().namespace("app").owner_id("pager").limit(10);
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut current = query.clone();
    loop {
        let p = page(&store, &current).await;
        sizes.push(p.items.len());
        seen.extend(ids(&p.items));
        match p.next_cursor {
            Some(cursor) => {
                assert_eq!(Some(cursor), p.items.last().map(|r| r.id.0), "the cursor is the last item's id");
                current = query.clone().cursor(cursor);
            }
            None => break,
        }
        assert!(sizes.len() < 10, "pagination must end");
    }
    assert_eq!(sizes, vec![10, 10, 5], "25 keys page as 10, 10, 5");
    assert_eq!(seen, mine, "pages must cover every key once, newest first");
    assert_eq!(store.count(&query).await.expect("count failed"), 25);
}

/// When the matching keys exactly fill the last page, that page has no next cursor.
pub async fn list_last_full_page_has_no_next_cursor<S: Store>(store: S) {
    let all = insert_many(&store, 20, record).await;
    let first = page(&store, &ListQuery::new().limit(10)).await;
    assert_eq!(ids(&first.items), all[..10], "first page");
    let cursor = first.next_cursor.expect("a first page of 10 out of 20 has a next cursor");
    let second = page(&store, &ListQuery::new().limit(10).cursor(cursor)).await;
    assert_eq!(ids(&second.items), all[10..], "second page");
    assert_eq!(second.next_cursor, None, "the page that ends the listing must have no next cursor");
    let exact = page(&store, &ListQuery::new().limit(20)).await;
    assert_eq!(exact.items.len(), 20);
    assert_eq!(exact.next_cursor, None, "a page holding everything must have no next cursor");
}

/// A key whose `revoked_at` is in the future (rotated, in its grace window) is listed
/// as not revoked until that time, and counted so; after it, only with `include_revoked`.
pub async fn list_shows_a_key_in_its_grace_window_as_not_revoked<S: Store>(store: S) {
    let t = now();
    let mut grace = record_in(None, "u");
    grace.revoked_at = Some(shift(t, 3600));
    insert(&store, grace.clone()).await;
    let plain = insert(&store, record_in(None, "u")).await;
    let mut both = vec![grace.id, plain.id];
    both.sort_by(|a, b| b.cmp(a));

    assert_lists(&store, ListQuery::new().owner_id("u"), &both, "in grace, judged now (default)").await;
    assert_lists(&store, ListQuery::new().owner_id("u").at(t), &both, "in grace, judged at t").await;
    assert_lists(&store, ListQuery::new().owner_id("u").at(shift(t, 3600)), &[plain.id], "grace over").await;
    assert_lists(
        &store,
        ListQuery::new().owner_id("u").at(shift(t, 7200)).include_revoked(true),
        &both,
        "grace over, with revoked",
    )
    .await;
}

/// `count` ignores the query's cursor and limit.
pub async fn count_ignores_cursor_and_limit<S: Store>(store: S) {
    let all = insert_many(&store, 6, record).await;
    let query = ListQuery::new().limit(2).cursor(all[3].0);
    assert_eq!(store.count(&query).await.expect("count failed"), 6, "count must ignore cursor and limit");
    let listed = page(&store, &query).await;
    assert_eq!(sorted_ids(&listed.items), {
        let mut rest = all[4..].to_vec();
        rest.sort();
        rest
    });
}

/// `active_only` lists and counts exactly the keys that count against an owner's limit
/// (`KeyRecord::is_active_at`): a disabled key is active; a revoked key, a rotated key
/// in its grace window and an expired key are not, whatever `include_revoked` says.
pub async fn list_active_only_is_the_limit_definition<S: Store>(store: S) {
    let t = now();
    let plain = insert(&store, record_in(Some("app"), "u")).await;
    let mut disabled = record_in(Some("app"), "u");
    disabled.enabled = false;
    let disabled = insert(&store, disabled).await;
    let mut later = record_in(Some("app"), "u");
    later.expires_at = Some(shift(t, 3600));
    let later = insert(&store, later).await;
    let mut expired = record_in(Some("app"), "u");
    expired.expires_at = Some(shift(t, -1));
    insert(&store, expired).await;
    let mut grace = record_in(Some("app"), "u");
    grace.revoked_at = Some(shift(t, 3600));
    insert(&store, grace).await;
    let gone = insert(&store, record_in(Some("app"), "u")).await;
    store.revoke(gone.id, t, event(Action::Revoked)).await.expect("revoke failed");

    let query = ListQuery::new().namespace("app").active_only(true).at(t);
    for r in list_all(&store, query.clone()).await {
        assert!(r.is_active_at(t), "an active listing holds only keys `is_active_at` calls active");
    }
    let active = newest_first(vec![plain.id, disabled.id, later.id]);
    assert_lists(&store, query.clone(), &active, "active only").await;
    assert_lists(&store, query.include_revoked(true), &active, "active only overrides include_revoked").await;
    let by_owner = ListQuery::new().namespace("app").owner_id("u").active_only(true).at(t);
    assert_lists(&store, by_owner, &active, "active only, by owner").await;
    let after = ListQuery::new().namespace("app").active_only(true).at(shift(t, 3600));
    assert_lists(&store, after, &newest_first(vec![plain.id, disabled.id]), "judged when the later key expired").await;
}

/// `search` keeps the keys whose name or owner id contains the text, ASCII letters in
/// any case; `%`, `_` and `\` are plain characters, not patterns.
pub async fn list_searches_names_and_owners<S: Store>(store: S) {
    let named = |name: Option<&str>, owner: &str| {
        let mut r = record_in(Some("app"), owner);
        r.name = name.map(str::to_owned);
        r
    };
    let ci = insert(&store, named(Some("CI deploy"), "user_1")).await.id;
    let circle = insert(&store, named(Some("laptop"), "Circle_9")).await.id;
    let percent = insert(&store, named(Some("100% off"), "user-2")).await.id;
    let underscore = insert(&store, named(Some("a_b"), "user-3")).await.id;
    let backslash = insert(&store, named(Some("c\\d"), "user-4")).await.id;
    let unnamed = insert(&store, named(None, "user-5")).await.id;
    let mut elsewhere = named(Some("CI other app"), "user_1");
    elsewhere.namespace = Some("other".to_owned());
    insert(&store, elsewhere).await;

    let q = |text: &str| ListQuery::new().namespace("app").search(text);
    assert_lists(&store, q("ci"), &newest_first(vec![ci, circle]), "name and owner id, any case").await;
    assert_lists(&store, q("DEPLOY"), &[ci], "case of ASCII letters ignored").await;
    assert_lists(&store, q("circle_9"), &[circle], "owner id").await;
    assert_lists(&store, q("%"), &[percent], "% is a plain character").await;
    assert_lists(&store, q("_"), &newest_first(vec![ci, circle, underscore]), "_ is a plain character").await;
    assert_lists(&store, q("c\\d"), &[backslash], "\\ is a plain character").await;
    assert_lists(&store, q("user-5"), &[unnamed], "a key without a name is found by its owner").await;
    assert_lists(&store, q("nothing like it"), &[], "no match").await;
    assert_lists(&store, q("").include_revoked(true), &list_ids(&store, "app").await, "an empty search").await;
}

/// Ids sorted newest (highest) first.
fn newest_first(mut ids: Vec<KeyId>) -> Vec<KeyId> {
    ids.sort_by(|a, b| b.cmp(a));
    ids
}

/// Every key id of a namespace, newest first.
async fn list_ids<S: Store>(store: &S, namespace: &str) -> Vec<KeyId> {
    ids(&list_all(store, ListQuery::new().namespace(namespace).include_revoked(true)).await)
}
