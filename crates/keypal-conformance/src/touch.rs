//! `touch`: the coalesced `last_used_at` write. It sets that column only, only
//! forward in time, ignores unknown ids, never bumps `version`, and never undoes a
//! change made to the record after it was read (a revoke, a disable, an update).

use keypal::{Action, KeyId, KeyPatch, Store};
use serde_json::json;

use crate::fixtures::{audit_len, event, fetch, full_record, insert, now, record, shift};

/// A record with every field set except `last_used_at` (never used yet).
fn unused_record() -> keypal::KeyRecord {
    let mut r = full_record();
    r.last_used_at = None;
    r
}

/// `touch` sets `last_used_at` and nothing else (not even `version`), and appends no event.
pub async fn touch_sets_last_used_at_only<S: Store>(store: S) {
    let before = unused_record();
    insert(&store, before.clone()).await;
    let events = audit_len(&store).await;
    let t = shift(now(), 2);
    store.touch(&[(before.id, t)]).await.expect("touch failed");
    let mut expected = before.clone();
    expected.last_used_at = Some(t);
    assert_eq!(*fetch(&store, before.id).await, expected, "touch must set last_used_at only, version unchanged");
    assert_eq!(audit_len(&store).await, events, "touch appends no audit event");
}

/// An older timestamp never moves `last_used_at` back; an equal one changes nothing;
/// a newer one moves it forward.
pub async fn touch_only_moves_forward<S: Store>(store: S) {
    let r = insert(&store, record()).await;
    let t = now();
    store.touch(&[(r.id, t)]).await.expect("touch failed");
    assert_eq!(fetch(&store, r.id).await.last_used_at, Some(t));
    store.touch(&[(r.id, shift(t, -60))]).await.expect("touch failed");
    assert_eq!(fetch(&store, r.id).await.last_used_at, Some(t), "an older timestamp must not move last_used_at back");
    store.touch(&[(r.id, t)]).await.expect("touch failed");
    assert_eq!(fetch(&store, r.id).await.last_used_at, Some(t));
    store.touch(&[(r.id, shift(t, 60))]).await.expect("touch failed");
    assert_eq!(fetch(&store, r.id).await.last_used_at, Some(shift(t, 60)), "a newer timestamp moves it forward");
}

/// Unknown ids in a batch are ignored (no error, no record created) and the known ones
/// are still written.
pub async fn touch_ignores_unknown_ids<S: Store>(store: S) {
    let r = insert(&store, record()).await;
    let ghost = KeyId::new();
    let t = now();
    store.touch(&[(ghost, t), (r.id, t), (KeyId::new(), t)]).await.expect("touch with unknown ids must succeed");
    assert_eq!(fetch(&store, r.id).await.last_used_at, Some(t), "the known key in the batch is touched");
    assert!(store.get(ghost).await.expect("get failed").is_none(), "touch must not create records");
    store.touch(&[]).await.expect("an empty touch must succeed");
    store.touch(&[(ghost, t)]).await.expect("a touch of only unknown ids must succeed");
}

/// One batch touches many keys, each with its own time.
pub async fn touch_updates_many_keys_in_one_batch<S: Store>(store: S) {
    let t = now();
    let mut batch = Vec::new();
    for i in 0..20 {
        let r = insert(&store, record()).await;
        batch.push((r.id, shift(t, i)));
    }
    store.touch(&batch).await.expect("touch failed");
    for (id, at) in batch {
        assert_eq!(fetch(&store, id).await.last_used_at, Some(at), "each key of the batch gets its own time");
    }
}

/// A key read, then revoked, then touched (as a write-behind flush would) stays
/// revoked with the same `revoked_at` and version.
pub async fn touch_after_revoke_keeps_the_revocation<S: Store>(store: S) {
    let r = insert(&store, unused_record()).await;
    let read = fetch(&store, r.id).await;
    let t = now();
    let revoked = store.revoke(r.id, t, event(Action::Revoked)).await.expect("revoke failed");
    store.touch(&[(read.id, shift(t, 1))]).await.expect("touch failed");
    let after = fetch(&store, r.id).await;
    assert_eq!(after.revoked_at, Some(t), "touch must not undo a revocation");
    let mut expected = (*revoked).clone();
    expected.last_used_at = Some(shift(t, 1));
    assert_eq!(*after, expected, "touch after revoke must set last_used_at only");
}

/// A key read, then disabled, then touched stays disabled.
pub async fn touch_after_disable_keeps_the_key_disabled<S: Store>(store: S) {
    let r = insert(&store, unused_record()).await;
    let read = fetch(&store, r.id).await;
    let disabled = store.set_enabled(r.id, false, event(Action::Disabled)).await.expect("disable failed");
    let t = shift(now(), 1);
    store.touch(&[(read.id, t)]).await.expect("touch failed");
    let after = fetch(&store, r.id).await;
    assert!(!after.enabled, "touch must not undo a disable");
    let mut expected = (*disabled).clone();
    expected.last_used_at = Some(t);
    assert_eq!(*after, expected, "touch after disable must set last_used_at only");
}

/// A key read, then updated (and its credits spent), then touched keeps the update
/// and the spent credits.
pub async fn touch_after_update_keeps_the_update<S: Store>(store: S) {
    let r = insert(&store, unused_record()).await;
    let read = fetch(&store, r.id).await;
    let patch = KeyPatch::new().name("after read").scopes(["new"]).metadata(Some(json!({"v": 2})));
    store.update(r.id, &patch, event(Action::Updated)).await.expect("update failed");
    store.consume(r.id, 1, None).await.expect("consume failed");
    let updated = fetch(&store, r.id).await;
    let t = shift(now(), 1);
    store.touch(&[(read.id, t)]).await.expect("touch failed");
    let after = fetch(&store, r.id).await;
    let mut expected = (*updated).clone();
    expected.last_used_at = Some(t);
    assert_eq!(*after, expected, "touch must not undo an update or spent credits");
    assert_eq!(after.name.as_deref(), Some("after read"));
    assert_eq!(after.remaining, r.remaining.map(|n| n - 1));
}
