//! State changes of existing keys: `update` (field by field), `set_enabled`, `revoke`,
//! `revoke_owner`, `replace_hash` and `delete`. Each changes exactly what it says,
//! bumps `version` by one (except `delete`), and appends its event only on success.

use std::time::Duration;

use keypal::{
    Action, AuditQuery, KeyId, KeyPatch, KeyRecord, ListQuery, Lookup, RateLimit, Refill, RefillInterval, Store,
    StoreError,
};
use serde_json::json;

use crate::fixtures::{
    audit_all, audit_len, event, fetch, full_record, insert, list_all, now, record, record_in, record_with_hint, shift,
    sorted_ids,
};

/// The record as it must be after a versioned change: `change` applied, version + 1.
fn changed(before: &KeyRecord, change: impl FnOnce(&mut KeyRecord)) -> KeyRecord {
    let mut expected = before.clone();
    change(&mut expected);
    expected.version = before.version + 1;
    expected
}

/// How many audit events are about `id` with `action`.
async fn events_about<S: Store>(store: &S, id: KeyId, action: Action) -> usize {
    audit_all(store, AuditQuery::new().key_id(id).action(action)).await.len()
}

/// The patches that set or clear exactly one field, with a label.
fn single_field_patches() -> Vec<(&'static str, KeyPatch)> {
    let t = now();
    let mut clear_name = KeyPatch::new();
    clear_name.name = Some(None);
    vec![
        ("set name", KeyPatch::new().name("renamed \"key\"\nü")),
        ("clear name", clear_name),
        ("set metadata to a string", KeyPatch::new().metadata(Some(json!("just a string")))),
        ("set metadata to an object", KeyPatch::new().metadata(Some(json!({"a": {"b": [1, 2]}, "c": "d"})))),
        ("clear metadata", KeyPatch::new().metadata(None)),
        ("set scopes", KeyPatch::new().scopes(["only:this", "and:that"])),
        ("clear scopes", KeyPatch::new().scopes(Vec::<String>::new())),
        ("set expiry", KeyPatch::new().expires_at(shift(t, 86_400))),
        ("clear expiry", KeyPatch::new().clear_expiry()),
        ("set tier", KeyPatch::new().tier(Some("enterprise".to_owned()))),
        ("clear tier", KeyPatch::new().tier(None)),
        ("set credits", KeyPatch::new().remaining(Some(5))),
        ("set credits to zero", KeyPatch::new().remaining(Some(0))),
        ("clear credits", KeyPatch::new().remaining(None)),
        ("set rate limit", KeyPatch::new().rate_limit(Some(RateLimit::per_hour(100)))),
        ("clear rate limit", KeyPatch::new().rate_limit(None)),
        ("set refill", KeyPatch::new().refill(Some(Refill::new(RefillInterval::Every(Duration::from_secs(90)), 7)))),
        ("clear refill", KeyPatch::new().refill(None)),
        ("set refilled_at", KeyPatch::new().refilled_at(Some(shift(t, -7)))),
        ("clear refilled_at", KeyPatch::new().refilled_at(None)),
    ]
}

/// Each field of [`KeyPatch`], set or cleared alone, changes that field only (every
/// other field untouched, `last_used_at`, `revoked_at` and `enabled` included), bumps
/// `version` by one, and appends one `Updated` event.
pub async fn update_sets_or_clears_each_field_alone<S: Store>(store: S) {
    for (what, patch) in single_field_patches() {
        let mut before = full_record();
        before.enabled = false;
        before.revoked_at = Some(shift(before.created_at, 3600));
        insert(&store, before.clone()).await;
        let expected = changed(&before, |r| patch.apply_to(r));
        let mut same_version = expected.clone();
        same_version.version = before.version;
        assert_ne!(same_version, before, "{what}: the patch must change something (test fixture)");
        let updated = match store.update(before.id, &patch, event(Action::Updated)).await {
            Ok(updated) => updated,
            Err(e) => panic!("{what}: update failed: {e:?}"),
        };
        assert_eq!(*updated, expected, "{what}: update must return the record with that field changed only");
        assert_eq!(*fetch(&store, before.id).await, expected, "{what}: get must read the change back, nothing else");
        assert_eq!(events_about(&store, before.id, Action::Updated).await, 1, "{what}: one Updated event");
    }
}

/// A patch of every field sets them all, in one version bump.
pub async fn update_of_several_fields_sets_them_all<S: Store>(store: S) {
    let before = record();
    insert(&store, before.clone()).await;
    let t = now();
    let patch = KeyPatch::new()
        .name("all at once")
        .metadata(Some(json!({"k": "v"})))
        .scopes(["a", "b"])
        .expires_at(shift(t, 600))
        .tier(Some("pro".to_owned()))
        .remaining(Some(77))
        .rate_limit(Some(RateLimit::new(3, Duration::from_secs(1)).expect("valid rate limit")));
    let expected = changed(&before, |r| patch.apply_to(r));
    let updated = store.update(before.id, &patch, event(Action::Updated)).await.expect("update failed");
    assert_eq!(*updated, expected, "every patched field must be set");
    assert_eq!(*fetch(&store, before.id).await, expected, "every patched field must read back");
    assert_eq!(updated.version, 2, "one update is one version bump");
}

/// `update` of an unknown id is `NotFound` and appends nothing.
pub async fn update_of_unknown_key_is_not_found<S: Store>(store: S) {
    insert(&store, record()).await;
    let events = audit_len(&store).await;
    assert_err!(
        store.update(KeyId::new(), &KeyPatch::new().name("x"), event(Action::Updated)).await,
        StoreError::NotFound,
        "update of an unknown key"
    );
    assert_eq!(audit_len(&store).await, events, "a failed update must append no event");
}

/// `set_enabled` sets `enabled` only and bumps `version`; a no-op change succeeds too.
pub async fn set_enabled_toggles_and_bumps_version<S: Store>(store: S) {
    let before = full_record();
    insert(&store, before.clone()).await;
    let disabled = store.set_enabled(before.id, false, event(Action::Disabled)).await.expect("disable failed");
    let expected = changed(&before, |r| r.enabled = false);
    assert_eq!(*disabled, expected, "disable must clear `enabled` only and bump version");
    assert_eq!(*fetch(&store, before.id).await, expected);

    let again = store.set_enabled(before.id, false, event(Action::Disabled)).await.expect("no-op disable must succeed");
    let expected = changed(&expected, |_| {});
    assert_eq!(*again, expected, "a no-op set_enabled still succeeds and bumps version");

    let enabled = store.set_enabled(before.id, true, event(Action::Enabled)).await.expect("enable failed");
    let expected = changed(&expected, |r| r.enabled = true);
    assert_eq!(*enabled, expected, "enable must set `enabled` only and bump version");
    assert_eq!(*fetch(&store, before.id).await, expected);
    assert_eq!(events_about(&store, before.id, Action::Disabled).await, 2);
    assert_eq!(events_about(&store, before.id, Action::Enabled).await, 1);
}

/// `set_enabled` of an unknown id is `NotFound` and appends nothing.
pub async fn set_enabled_of_unknown_key_is_not_found<S: Store>(store: S) {
    let events = audit_len(&store).await;
    assert_err!(
        store.set_enabled(KeyId::new(), false, event(Action::Disabled)).await,
        StoreError::NotFound,
        "set_enabled of an unknown key"
    );
    assert_eq!(audit_len(&store).await, events, "a failed set_enabled must append no event");
}

/// `revoke` sets `revoked_at` to the given time only and bumps `version`.
pub async fn revoke_sets_revoked_at_and_bumps_version<S: Store>(store: S) {
    let before = full_record();
    insert(&store, before.clone()).await;
    let t = shift(now(), 1);
    let revoked = store.revoke(before.id, t, event(Action::Revoked)).await.expect("revoke failed");
    let expected = changed(&before, |r| r.revoked_at = Some(t));
    assert_eq!(*revoked, expected, "revoke must set revoked_at only and bump version");
    assert_eq!(*fetch(&store, before.id).await, expected);
    assert_eq!(events_about(&store, before.id, Action::Revoked).await, 1);
}

/// A second `revoke` is `AlreadyRevoked`, keeps the first time, bumps nothing and
/// appends nothing.
pub async fn second_revoke_is_already_revoked_and_keeps_the_first_time<S: Store>(store: S) {
    let r = insert(&store, record()).await;
    let t = now();
    let first = store.revoke(r.id, t, event(Action::Revoked)).await.expect("first revoke failed");
    for later in [t, shift(t, 1), shift(t, 3600)] {
        assert_err!(
            store.revoke(r.id, later, event(Action::Revoked)).await,
            StoreError::AlreadyRevoked,
            "revoke of a key revoked at {t} (again at {later})"
        );
    }
    assert_eq!(*fetch(&store, r.id).await, *first, "a refused revoke must change nothing");
    assert_eq!(events_about(&store, r.id, Action::Revoked).await, 1, "only the first revoke appends an event");
}

/// Revoking a key whose `revoked_at` is in the future (a rotated key in its grace
/// window) succeeds and sets `revoked_at` to now; then it is revoked for good.
pub async fn revoking_a_key_in_its_grace_window_revokes_it_now<S: Store>(store: S) {
    let t = now();
    let mut grace = record();
    grace.revoked_at = Some(shift(t, 3600));
    insert(&store, grace.clone()).await;
    let revoked = store.revoke(grace.id, t, event(Action::Revoked)).await.expect("revoke in grace must succeed");
    let expected = changed(&grace, |r| r.revoked_at = Some(t));
    assert_eq!(*revoked, expected, "revoke in grace must move revoked_at to now");
    assert_eq!(*fetch(&store, grace.id).await, expected);
    assert_err!(
        store.revoke(grace.id, shift(t, 1), event(Action::Revoked)).await,
        StoreError::AlreadyRevoked,
        "revoke after the grace window was ended"
    );
}

/// `revoke` of an unknown id is `NotFound` and appends nothing.
pub async fn revoke_of_unknown_key_is_not_found<S: Store>(store: S) {
    insert(&store, record()).await;
    let events = audit_len(&store).await;
    assert_err!(
        store.revoke(KeyId::new(), now(), event(Action::Revoked)).await,
        StoreError::NotFound,
        "revoke of an unknown key"
    );
    assert_eq!(audit_len(&store).await, events, "a failed revoke must append no event");
}

/// `revoke_owner` revokes every not-yet-revoked key of that owner in that namespace
/// (keys in a grace window included), returns them, appends one event per key with
/// its `key_id`, owner and namespace, and touches nothing else.
pub async fn revoke_owner_revokes_only_that_owner_in_that_namespace<S: Store>(store: S) {
    let t = now();
    let mut targets = Vec::new();
    for _ in 0..3 {
        targets.push(insert(&store, record_in(Some("app_a"), "u")).await);
    }
    let mut grace = record_in(Some("app_a"), "u");
    grace.revoked_at = Some(shift(t, 3600));
    targets.push(insert(&store, grace).await);
    let mut disabled = record_in(Some("app_a"), "u");
    disabled.enabled = false;
    targets.push(insert(&store, disabled).await);

    let mut untouched = Vec::new();
    let mut already = record_in(Some("app_a"), "u");
    already.revoked_at = Some(shift(t, -60));
    untouched.push(insert(&store, already).await);
    untouched.push(insert(&store, record_in(None, "u")).await);
    untouched.push(insert(&store, record_in(Some("app_b"), "u")).await);
    untouched.push(insert(&store, record_in(Some("app_a"), "v")).await);
    untouched.push(insert(&store, record_in(Some("app_a"), "u2")).await);
    untouched.push(insert(&store, record()).await);
    let events_before = audit_len(&store).await;

    let revoked = store.revoke_owner(Some("app_a"), "u", t, event(Action::Revoked)).await.expect("revoke_owner failed");
    assert_eq!(sorted_ids(&revoked), sorted_ids(&targets), "revoke_owner must revoke exactly the owner's live keys");
    for before in &targets {
        let expected = changed(before, |r| r.revoked_at = Some(t));
        let returned = revoked.iter().find(|r| r.id == before.id).expect("returned");
        assert_eq!(**returned, expected, "a returned record must be the revoked record");
        assert_eq!(*fetch(&store, before.id).await, expected, "revoke_owner must set revoked_at only");
    }
    for before in &untouched {
        assert_eq!(*fetch(&store, before.id).await, **before, "revoke_owner must not touch other keys");
    }

    let events = audit_all(&store, AuditQuery::new().action(Action::Revoked)).await;
    assert_eq!(audit_len(&store).await, events_before + targets.len(), "one event per revoked key, nothing else");
    let mut about: Vec<KeyId> = events.iter().map(|e| e.key_id.expect("revoke_owner events carry key_id")).collect();
    about.sort();
    assert_eq!(about, sorted_ids(&targets), "one Revoked event per revoked key");
    for e in &events {
        assert_eq!(e.owner_id.as_deref(), Some("u"), "revoke_owner events carry the owner");
        assert_eq!(e.namespace.as_deref(), Some("app_a"), "revoke_owner events carry the namespace");
    }
    let mut event_ids: Vec<_> = events.iter().map(|e| e.id).collect();
    event_ids.sort();
    event_ids.dedup();
    assert_eq!(event_ids.len(), targets.len(), "each appended event must have its own id");

    let again = store.revoke_owner(Some("app_a"), "u", shift(t, 1), event(Action::Revoked)).await.expect("again");
    assert!(again.is_empty(), "a second revoke_owner finds nothing left to revoke, got {again:?}");
    assert_eq!(audit_len(&store).await, events_before + targets.len(), "and appends nothing");
}

/// `revoke_owner` with no namespace revokes only the owner's keys without a namespace.
pub async fn revoke_owner_without_namespace_only_revokes_keys_without_namespace<S: Store>(store: S) {
    let plain = insert(&store, record_in(None, "u")).await;
    let scoped = insert(&store, record_in(Some("app"), "u")).await;
    let t = now();
    let revoked = store.revoke_owner(None, "u", t, event(Action::Revoked)).await.expect("revoke_owner failed");
    assert_eq!(sorted_ids(&revoked), vec![plain.id], "only the key without a namespace");
    assert_eq!(fetch(&store, plain.id).await.revoked_at, Some(t));
    assert_eq!(*fetch(&store, scoped.id).await, *scoped, "the namespaced key must be untouched");
}

/// `revoke_owner` of an owner with no keys returns nothing and appends nothing.
pub async fn revoke_owner_of_unknown_owner_revokes_nothing<S: Store>(store: S) {
    let other = insert(&store, record_in(None, "someone")).await;
    let events = audit_len(&store).await;
    let revoked = store.revoke_owner(None, "nobody", now(), event(Action::Revoked)).await.expect("revoke_owner failed");
    assert!(revoked.is_empty(), "nothing to revoke, got {revoked:?}");
    assert_eq!(audit_len(&store).await, events, "revoking nothing appends nothing");
    assert_eq!(*fetch(&store, other.id).await, *other);
}

/// `replace_hash` with the current hash as `expected` swaps it, changes nothing else
/// (but bumps `version`) and returns true.
pub async fn replace_hash_swaps_when_expected_matches<S: Store>(store: S) {
    let before = full_record();
    insert(&store, before.clone()).await;
    let new_hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo";
    let swapped =
        store.replace_hash(before.id, &before.hash, new_hash, &before.lookup).await.expect("replace_hash failed");
    assert!(swapped, "replace_hash with the current hash must swap");
    let expected = changed(&before, |r| r.hash = new_hash.to_owned());
    assert_eq!(*fetch(&store, before.id).await, expected, "only the hash (and version) may change");
    let old_again = store
        .replace_hash(before.id, &before.hash, "$sha256$other", &before.lookup)
        .await
        .expect("replace_hash failed");
    assert!(!old_again, "the old hash is no longer current");
    assert_eq!(*fetch(&store, before.id).await, expected);
}

/// `replace_hash` with a stale `expected` returns false and changes nothing: neither
/// the hash nor the lookup, even when the new lookup is another one.
pub async fn replace_hash_refuses_when_expected_differs<S: Store>(store: S) {
    let before = full_record();
    insert(&store, before.clone()).await;
    let prefix = &before.hash[..before.hash.len() - 1];
    let hint = Lookup::Hint("sk_live_stale".to_owned());
    for stale in ["$sha256$stale", "", prefix] {
        for lookup in [&before.lookup, &hint] {
            let swapped =
                store.replace_hash(before.id, stale, "$sha256$new", lookup).await.expect("replace_hash failed");
            assert!(!swapped, "replace_hash with expected {stale:?} (not the current hash) must not swap");
        }
    }
    assert_eq!(*fetch(&store, before.id).await, before, "a refused replace_hash must change nothing");
    assert!(store.find_by_hint("sk_live_stale").await.expect("find_by_hint failed").is_empty());
    assert_eq!(store.find(&before.lookup).await.expect("find failed").map(|r| r.id), Some(before.id));
}

/// `replace_hash` of an unknown id returns false.
pub async fn replace_hash_of_unknown_key_returns_false<S: Store>(store: S) {
    let lookup = Lookup::Hint("sk_live_none".to_owned());
    let swapped =
        store.replace_hash(KeyId::new(), "$sha256$x", "$sha256$y", &lookup).await.expect("replace_hash failed");
    assert!(!swapped, "replace_hash of an unknown key must return false");
    assert!(store.find_by_hint("sk_live_none").await.expect("find_by_hint failed").is_empty());
}

/// `replace_hash` moves the lookup with the hash, both ways between a digest and a
/// hint (a hash changing between a fast and a slow algorithm): afterwards the record
/// is found by its new lookup only, and the old one is free for another key.
pub async fn replace_hash_moves_the_lookup_with_the_hash<S: Store>(store: S) {
    let before = record();
    let digest = before.lookup.clone();
    insert(&store, before.clone()).await;
    let neighbour = insert(&store, record_with_hint("sk_test_mov")).await;

    let slow = "$2b$04$KeypalKatSaltValue123uYgBpfQKzFccdKJw4S1mYtKWwVUmmfqW";
    let hint = Lookup::Hint("sk_test_mov".to_owned());
    assert!(store.replace_hash(before.id, &before.hash, slow, &hint).await.expect("replace_hash failed"));
    let slowed = changed(&before, |r| {
        r.hash = slow.to_owned();
        r.lookup = hint.clone();
    });
    assert_eq!(*fetch(&store, before.id).await, slowed, "the hash and the lookup (and version) change");
    assert!(store.find(&digest).await.expect("find failed").is_none(), "no longer found by its old digest");
    let mut candidates: Vec<KeyId> =
        store.find_by_hint("sk_test_mov").await.expect("find_by_hint failed").iter().map(|r| r.id).collect();
    candidates.sort();
    let mut both = vec![before.id, neighbour.id];
    both.sort();
    assert_eq!(candidates, both, "found by its new hint, beside the other key");

    // The old digest is free: another key may take it.
    let mut taker = record();
    taker.lookup = digest.clone();
    insert(&store, taker.clone()).await;
    // A new digest (as a key's SHA-256 would be).
    let fresh = record().lookup;

    let fast = "$sha256$back";
    assert!(store.replace_hash(before.id, slow, fast, &fresh).await.expect("replace_hash failed"));
    let fastened = changed(&slowed, |r| {
        r.hash = fast.to_owned();
        r.lookup = fresh.clone();
    });
    assert_eq!(*fetch(&store, before.id).await, fastened);
    assert_eq!(store.find(&fresh).await.expect("find failed").map(|r| r.id), Some(before.id));
    let candidates: Vec<KeyId> =
        store.find_by_hint("sk_test_mov").await.expect("find_by_hint failed").iter().map(|r| r.id).collect();
    assert_eq!(candidates, [neighbour.id], "no longer a candidate of its old hint");
    assert_eq!(store.find(&digest).await.expect("find failed").map(|r| r.id), Some(taker.id));
}

/// `replace_hash` to a unique lookup another record holds is `Duplicate` and changes
/// nothing; with a stale hash it is simply `false`.
pub async fn replace_hash_to_a_taken_lookup_is_duplicate_and_changes_nothing<S: Store>(store: S) {
    let holder = insert(&store, record()).await;
    let before = insert(&store, record_with_hint("sk_test_dup")).await;
    assert_err!(
        store.replace_hash(before.id, &before.hash, "$sha256$new", &holder.lookup).await,
        StoreError::Duplicate,
        "replace_hash to a digest another key holds"
    );
    let stale = store.replace_hash(before.id, "$sha256$stale", "$sha256$new", &holder.lookup).await;
    assert!(matches!(stale, Ok(false)), "a stale hash is refused before the lookup is looked at, got {stale:?}");
    assert_eq!(*fetch(&store, before.id).await, *before, "a refused replace_hash must change nothing");
    assert_eq!(*fetch(&store, holder.id).await, *holder);
    assert_eq!(store.find(&holder.lookup).await.expect("find failed").map(|r| r.id), Some(holder.id));
    let candidates: Vec<KeyId> =
        store.find_by_hint("sk_test_dup").await.expect("find_by_hint failed").iter().map(|r| r.id).collect();
    assert_eq!(candidates, [before.id]);
}

/// `delete` returns the record; afterwards `get`, `find`, `find_by_hint`, `list` and
/// `count` no longer see it, and other records are untouched.
pub async fn delete_returns_the_record_and_removes_it_everywhere<S: Store>(store: S) {
    let by_digest = insert(&store, full_record()).await;
    let mut hinted = record_with_hint("sk_shared");
    hinted.owner_id = Some("user_full".to_owned());
    let hinted = insert(&store, hinted).await;
    let sibling = insert(&store, record_with_hint("sk_shared")).await;
    let keep = insert(&store, record()).await;

    for gone in [&by_digest, &hinted] {
        let deleted = store.delete(gone.id, event(Action::Deleted)).await.expect("delete failed");
        assert_eq!(deleted.as_deref(), Some(&**gone), "delete must return the deleted record");
        assert!(store.get(gone.id).await.expect("get failed").is_none(), "get after delete must be None");
        assert_eq!(events_about(&store, gone.id, Action::Deleted).await, 1, "delete appends one Deleted event");
    }
    assert!(store.find(&by_digest.lookup).await.expect("find failed").is_none(), "find after delete must be None");
    let candidates = store.find_by_hint("sk_shared").await.expect("find_by_hint failed");
    assert_eq!(sorted_ids(&candidates), vec![sibling.id], "find_by_hint must no longer return a deleted key");
    let listed = list_all(&store, ListQuery::new().include_revoked(true)).await;
    let mut rest = vec![sibling.id, keep.id];
    rest.sort();
    assert_eq!(sorted_ids(&listed), rest, "list must no longer return deleted keys");
    assert_eq!(store.count(&ListQuery::new().owner_id("user_full")).await.expect("count failed"), 0);
    assert_eq!(*fetch(&store, keep.id).await, *keep, "other records are untouched");
}

/// After `delete`, the deleted key's lookup value and id can be used again.
pub async fn delete_frees_the_lookup_value<S: Store>(store: S) {
    let first = insert(&store, record_in(None, "u")).await;
    store.delete(first.id, event(Action::Deleted)).await.expect("delete failed").expect("was there");
    let mut second = record_in(None, "u");
    second.lookup = first.lookup.clone();
    store.insert(second.clone(), Some(1), event(Action::Created)).await.expect("a deleted key's lookup is free");
    let found = store.find(&first.lookup).await.expect("find failed");
    assert_eq!(found.as_deref(), Some(&second), "find must return the new holder of the lookup");

    let id_lookup = Lookup::Id("reusable".to_owned());
    let mut third = record();
    third.lookup = id_lookup.clone();
    insert(&store, third.clone()).await;
    store.delete(third.id, event(Action::Deleted)).await.expect("delete failed");
    let mut fourth = record();
    fourth.id = third.id;
    fourth.lookup = id_lookup;
    store.insert(fourth.clone(), None, event(Action::Created)).await.expect("a deleted key's id is free");
    assert_eq!(*fetch(&store, third.id).await, fourth);
}

/// `delete` of an unknown id returns `None` and appends nothing; deleting twice
/// returns `None` the second time.
pub async fn delete_of_unknown_key_returns_none<S: Store>(store: S) {
    let r = insert(&store, record()).await;
    let events = audit_len(&store).await;
    let none = store.delete(KeyId::new(), event(Action::Deleted)).await.expect("delete failed");
    assert!(none.is_none(), "delete of an unknown key must be Ok(None), got {none:?}");
    assert_eq!(audit_len(&store).await, events, "deleting nothing appends nothing");
    store.delete(r.id, event(Action::Deleted)).await.expect("delete failed").expect("first delete finds it");
    let twice = store.delete(r.id, event(Action::Deleted)).await.expect("delete failed");
    assert!(twice.is_none(), "a second delete must be Ok(None), got {twice:?}");
    assert_eq!(audit_len(&store).await, events + 1, "only the real delete appends an event");
}
