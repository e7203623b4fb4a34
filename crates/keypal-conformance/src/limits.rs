//! The per-owner limit of active keys, checked by `insert` in the same atomic unit:
//! only keys of the same owner and namespace that are active at the new record's
//! `created_at` count (not revoked nor scheduled to be, not expired).

use keypal::{Action, ListQuery, Store, StoreError};

use crate::fixtures::{audit_len, event, insert, list_all, record_in, shift};

/// Inserts a key for (`namespace`, `owner`) under `limit`, expecting success.
async fn admit<S: Store>(store: &S, namespace: Option<&str>, owner: &str, limit: u32) -> keypal::KeyRecord {
    let r = record_in(namespace, owner);
    let id = r.id;
    match store.insert(r.clone(), Some(limit), event(Action::Created)).await {
        Ok(_) => r,
        Err(e) => panic!("insert of {id} for {owner:?} in {namespace:?} under limit {limit} must succeed: {e:?}"),
    }
}

/// Inserts a key for (`namespace`, `owner`) under `limit`, expecting `LimitReached`
/// and no trace of the refused record.
async fn refuse<S: Store>(store: &S, namespace: Option<&str>, owner: &str, limit: u32) {
    let events = audit_len(store).await;
    let r = record_in(namespace, owner);
    match store.insert(r.clone(), Some(limit), event(Action::Created)).await {
        Err(StoreError::LimitReached { limit: reported }) => {
            assert_eq!(reported, limit, "LimitReached must report the limit in force")
        }
        other => panic!("insert for {owner:?} in {namespace:?} at limit {limit} must be LimitReached, got {other:?}"),
    }
    assert!(store.get(r.id).await.expect("get failed").is_none(), "a refused record must not be stored");
    assert!(store.find(&r.lookup).await.expect("find failed").is_none(), "a refused record must not be findable");
    assert_eq!(audit_len(store).await, events, "a refused insert must append no event");
}

/// With a limit of 3, three keys are admitted and the fourth is `LimitReached { limit: 3 }`;
/// a higher limit or no limit on the next call admits it.
pub async fn owner_limit_refuses_at_the_limit<S: Store>(store: S) {
    for _ in 0..3 {
        admit(&store, None, "user_1", 3).await;
    }
    refuse(&store, None, "user_1", 3).await;
    refuse(&store, None, "user_1", 1).await;
    admit(&store, None, "user_1", 4).await;
    refuse(&store, None, "user_1", 4).await;
    insert(&store, record_in(None, "user_1")).await;
    let count = store.count(&ListQuery::new().owner_id("user_1")).await.expect("count failed");
    assert_eq!(count, 5, "3 + 1 admitted under limits + 1 inserted without a limit");
}

/// Revoked keys do not count: revoking one of the owner's keys frees a place.
pub async fn revoked_keys_do_not_count_against_the_owner_limit<S: Store>(store: S) {
    let first = admit(&store, None, "user_1", 2).await;
    admit(&store, None, "user_1", 2).await;
    refuse(&store, None, "user_1", 2).await;
    store.revoke(first.id, crate::fixtures::now(), event(Action::Revoked)).await.expect("revoke failed");
    admit(&store, None, "user_1", 2).await;
    refuse(&store, None, "user_1", 2).await;

    // A key inserted already revoked does not count either.
    let mut revoked = record_in(None, "user_2");
    revoked.revoked_at = Some(shift(revoked.created_at, -60));
    insert(&store, revoked).await;
    admit(&store, None, "user_2", 1).await;
    refuse(&store, None, "user_2", 1).await;
}

/// Expired keys do not count, including one expiring exactly at the new record's
/// `created_at`; a key expiring later does count.
pub async fn expired_keys_do_not_count_against_the_owner_limit<S: Store>(store: S) {
    let base = crate::fixtures::now();
    let mut expired = record_in(None, "user_1");
    expired.created_at = shift(base, -7200);
    expired.expires_at = Some(shift(base, -3600));
    insert(&store, expired).await;

    // Expires exactly when the next one is created: expired at that instant.
    let mut boundary = record_in(None, "user_1");
    boundary.created_at = shift(base, -10);
    boundary.expires_at = Some(shift(base, 5));
    insert(&store, boundary).await;

    let mut next = record_in(None, "user_1");
    next.created_at = shift(base, 5);
    store.insert(next, Some(1), event(Action::Created)).await.expect("expired keys must not count");

    let mut later = record_in(None, "user_3");
    later.expires_at = Some(shift(base, 3600));
    insert(&store, later).await;
    refuse(&store, None, "user_3", 1).await;
}

/// A key whose `revoked_at` is in the future (a rotated key in its grace window)
/// does not count: it is on its way out.
pub async fn keys_in_their_grace_window_do_not_count_against_the_owner_limit<S: Store>(store: S) {
    let mut rotated = record_in(Some("app"), "user_1");
    rotated.revoked_at = Some(shift(rotated.created_at, 3600));
    insert(&store, rotated).await;
    admit(&store, Some("app"), "user_1", 1).await;
    refuse(&store, Some("app"), "user_1", 1).await;
}

/// Disabled keys still count: a disabled key can be enabled again.
pub async fn disabled_keys_still_count_against_the_owner_limit<S: Store>(store: S) {
    let first = admit(&store, None, "user_1", 1).await;
    store.set_enabled(first.id, false, event(Action::Disabled)).await.expect("set_enabled failed");
    refuse(&store, None, "user_1", 1).await;
}

/// Keys of another owner, and the same owner's keys in another namespace (or none),
/// do not count; owner ids are compared exactly.
pub async fn other_owners_and_namespaces_do_not_count_against_the_owner_limit<S: Store>(store: S) {
    admit(&store, None, "user_1", 1).await;
    refuse(&store, None, "user_1", 1).await;
    admit(&store, Some("app_a"), "user_1", 1).await;
    refuse(&store, Some("app_a"), "user_1", 1).await;
    admit(&store, Some("app_b"), "user_1", 1).await;
    admit(&store, Some("app_a"), "user_2", 1).await;
    admit(&store, None, "user_2", 1).await;
    admit(&store, None, "User_1", 1).await;
    admit(&store, None, "user_1 ", 1).await;
    admit(&store, None, "user_", 1).await;
    refuse(&store, Some("app_b"), "user_1", 1).await;
    let all = list_all(&store, ListQuery::new()).await;
    assert_eq!(all.len(), 8, "every admitted key must be stored");
}

/// Keys without an owner are never limited.
pub async fn keys_without_owner_are_not_limited<S: Store>(store: S) {
    for _ in 0..3 {
        let r = crate::fixtures::record();
        store.insert(r, Some(1), event(Action::Created)).await.expect("an ownerless key must not be limited");
    }
    let count = store.count(&ListQuery::new()).await.expect("count failed");
    assert_eq!(count, 3, "all ownerless keys must be stored");
}
