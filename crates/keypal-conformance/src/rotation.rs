//! Rotation: in one atomic unit, the replacement is inserted and the old key gets
//! `rotated_to` and its (possibly future) `revoked_at`; or nothing happens at all.

use keypal::{Action, AuditQuery, KeyRecord, ListQuery, Store, StoreError};
use serde_json::json;
use time::OffsetDateTime;

use crate::fixtures::{
    audit_all, audit_len, event_at, fetch, full_record, insert, list_all, now, replacement_for, shift,
};

/// A `Rotated` event at `at`, with details naming the new key.
fn rotated_event(new: &KeyRecord, at: OffsetDateTime, grace_until: OffsetDateTime) -> keypal::Event {
    let mut e = event_at(Action::Rotated, at);
    e.details = Some(json!({"new_key_id": new.id, "grace_until": grace_until.unix_timestamp()}));
    e
}

/// Asserts that nothing of `replacement` was stored.
async fn assert_not_inserted<S: Store>(store: &S, replacement: &KeyRecord, what: &str) {
    assert!(
        store.get(replacement.id).await.expect("get failed").is_none(),
        "{what}: the replacement must not be stored"
    );
    let found = store.find(&replacement.lookup).await.expect("find failed");
    assert!(found.is_none(), "{what}: the replacement's lookup must find nothing, got {found:?}");
}

/// `rotate` inserts the replacement as given and sets the old key's `rotated_to` and
/// `revoked_at` (its grace end), bumping its version and changing nothing else;
/// during the grace window both keys are listed, after it only the new one; one
/// `Rotated` event about the old key is appended.
pub async fn rotate_inserts_the_replacement_and_marks_the_old_key<S: Store>(store: S) {
    let old = full_record();
    insert(&store, old.clone()).await;
    let events = audit_len(&store).await;
    let t = shift(now(), 1);
    let grace_end = shift(t, 3600);
    let new = replacement_for(&old, t);
    let (previous, current) =
        store.rotate(old.id, new.clone(), grace_end, rotated_event(&new, t, grace_end)).await.expect("rotate failed");

    let mut expected_old = old.clone();
    expected_old.rotated_to = Some(new.id);
    expected_old.revoked_at = Some(grace_end);
    expected_old.version = old.version + 1;
    assert_eq!(*previous, expected_old, "the old record gets rotated_to and revoked_at only (and a version bump)");
    assert_eq!(*current, new, "the replacement is stored as given");
    assert_eq!(*fetch(&store, old.id).await, expected_old);
    assert_eq!(*fetch(&store, new.id).await, new);
    let found = store.find(&new.lookup).await.expect("find failed");
    assert_eq!(found.as_deref(), Some(&new), "the replacement is found by its lookup");
    let found = store.find(&old.lookup).await.expect("find failed");
    assert_eq!(found.as_deref(), Some(&expected_old), "the old key is still found by its lookup");

    let owner = old.owner_id.clone().expect("full record has an owner");
    let mut both = vec![old.id, new.id];
    both.sort_by(|a, b| b.cmp(a));
    let in_grace = list_all(&store, ListQuery::new().owner_id(owner.clone()).at(t)).await;
    assert_eq!(crate::fixtures::ids(&in_grace), both, "in the grace window both keys are listed");
    let after = list_all(&store, ListQuery::new().owner_id(owner).at(grace_end)).await;
    assert_eq!(crate::fixtures::ids(&after), vec![new.id], "after the grace window only the new key is listed");

    assert_eq!(audit_len(&store).await, events + 1, "rotate appends exactly one event");
    let rotated = audit_all(&store, AuditQuery::new().action(Action::Rotated)).await;
    assert_eq!(rotated.len(), 1);
    assert_eq!(rotated[0].key_id, Some(old.id), "the Rotated event is about the old key");
    assert_eq!(rotated[0].details, Some(json!({"new_key_id": new.id, "grace_until": grace_end.unix_timestamp()})));
}

/// A rotated key in its grace window can still be revoked, which ends the window now
/// and leaves the replacement alone.
pub async fn rotated_key_in_its_grace_window_can_be_revoked_now<S: Store>(store: S) {
    let old = insert(&store, full_record()).await;
    let t = now();
    let new = replacement_for(&old, t);
    let grace_end = shift(t, 600);
    store.rotate(old.id, new.clone(), grace_end, rotated_event(&new, t, grace_end)).await.expect("rotate failed");
    let at = shift(t, 1);
    let revoked = store.revoke(old.id, at, event_at(Action::Revoked, at)).await.expect("revoke in grace failed");
    assert_eq!(revoked.revoked_at, Some(at), "revoking in grace moves revoked_at to now");
    assert_eq!(revoked.rotated_to, Some(new.id), "the rotation link stays");
    assert_eq!(*fetch(&store, new.id).await, new, "the replacement is untouched");
}

/// Rotating a revoked key is `AlreadyRevoked`: the replacement is not inserted, the
/// old key is unchanged and no event is appended.
pub async fn rotating_a_revoked_key_is_already_revoked_and_inserts_nothing<S: Store>(store: S) {
    let old = insert(&store, full_record()).await;
    let t = now();
    let revoked_at = shift(t, -10);
    let old = store.revoke(old.id, revoked_at, event_at(Action::Revoked, revoked_at)).await.expect("revoke failed");
    let events = audit_len(&store).await;
    let new = replacement_for(&old, t);
    assert_err!(
        store.rotate(old.id, new.clone(), shift(t, 60), rotated_event(&new, t, shift(t, 60))).await,
        StoreError::AlreadyRevoked,
        "rotate of a revoked key"
    );
    assert_not_inserted(&store, &new, "rotate of a revoked key").await;
    assert_eq!(*fetch(&store, old.id).await, *old, "the revoked key must be unchanged");
    assert_eq!(audit_len(&store).await, events, "a refused rotation appends nothing");
}

/// A key already rotated (in its grace window) cannot be rotated again: that would
/// make a second live replacement. `AlreadyRevoked`, and nothing changes.
pub async fn rotating_a_key_in_its_grace_window_again_is_already_revoked<S: Store>(store: S) {
    let old = insert(&store, full_record()).await;
    let t = now();
    let first = replacement_for(&old, t);
    let grace_end = shift(t, 600);
    let (previous, _) = store
        .rotate(old.id, first.clone(), grace_end, rotated_event(&first, t, grace_end))
        .await
        .expect("rotate failed");
    let events = audit_len(&store).await;
    let later = shift(t, 1);
    let second = replacement_for(&old, later);
    assert_err!(
        store.rotate(old.id, second.clone(), shift(later, 600), rotated_event(&second, later, shift(later, 600))).await,
        StoreError::AlreadyRevoked,
        "second rotation of a key in its grace window"
    );
    assert_not_inserted(&store, &second, "second rotation").await;
    assert_eq!(*fetch(&store, old.id).await, *previous, "the rotated key is unchanged");
    assert_eq!(audit_len(&store).await, events, "a refused rotation appends nothing");
}

/// Rotating with a replacement whose lookup is taken is `Duplicate`: the old key is
/// unchanged (not revoked, no `rotated_to`), the replacement is not stored, the holder
/// of the lookup is unchanged, and no event is appended.
pub async fn rotating_with_a_taken_lookup_is_duplicate_and_leaves_the_old_key_unchanged<S: Store>(store: S) {
    let old = insert(&store, full_record()).await;
    let holder = insert(&store, full_record()).await;
    let events = audit_len(&store).await;
    let t = now();
    let mut new = replacement_for(&old, t);
    new.lookup = holder.lookup.clone();
    assert_err!(
        store.rotate(old.id, new.clone(), shift(t, 60), rotated_event(&new, t, shift(t, 60))).await,
        StoreError::Duplicate,
        "rotate with a taken lookup"
    );
    assert_eq!(*fetch(&store, old.id).await, *old, "the old key must be unchanged");
    assert!(store.get(new.id).await.expect("get failed").is_none(), "the replacement must not be stored");
    assert_eq!(*fetch(&store, holder.id).await, *holder, "the lookup's holder must be unchanged");
    let found = store.find(&holder.lookup).await.expect("find failed");
    assert_eq!(found.as_deref(), Some(&*holder), "the lookup still finds its holder");
    assert_eq!(audit_len(&store).await, events, "a refused rotation appends nothing");
}

/// Rotating with a replacement whose id is taken is `Duplicate` and changes nothing.
pub async fn rotating_with_a_taken_record_id_is_duplicate_and_leaves_the_old_key_unchanged<S: Store>(store: S) {
    let old = insert(&store, full_record()).await;
    let holder = insert(&store, full_record()).await;
    let events = audit_len(&store).await;
    let t = now();
    let mut new = replacement_for(&old, t);
    new.id = holder.id;
    assert_err!(
        store.rotate(old.id, new.clone(), shift(t, 60), rotated_event(&new, t, shift(t, 60))).await,
        StoreError::Duplicate,
        "rotate with a taken record id"
    );
    assert_eq!(*fetch(&store, old.id).await, *old, "the old key must be unchanged");
    assert_eq!(*fetch(&store, holder.id).await, *holder, "the id's holder must be unchanged");
    assert!(store.find(&new.lookup).await.expect("find failed").is_none(), "the replacement must not be stored");
    assert_eq!(audit_len(&store).await, events, "a refused rotation appends nothing");
}

/// Rotating an unknown key is `NotFound` and inserts nothing.
pub async fn rotating_an_unknown_key_is_not_found_and_inserts_nothing<S: Store>(store: S) {
    let ghost = full_record();
    let t = now();
    let new = replacement_for(&ghost, t);
    assert_err!(
        store.rotate(ghost.id, new.clone(), shift(t, 60), rotated_event(&new, t, shift(t, 60))).await,
        StoreError::NotFound,
        "rotate of an unknown key"
    );
    assert_not_inserted(&store, &new, "rotate of an unknown key").await;
    assert_eq!(audit_len(&store).await, 0, "a refused rotation appends nothing");
}
