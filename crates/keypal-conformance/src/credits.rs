//! Usage credits: `consume` is a guarded decrement that spends `cost` only when at
//! least that many are left, and changes nothing but `remaining`.

use keypal::{Credits, KeyId, KeyRecord, Store, StoreError};

use crate::fixtures::{audit_len, fetch, full_record, insert, record};

/// A record with `remaining` credits.
fn with_credits(remaining: Option<u64>) -> KeyRecord {
    let mut r = full_record();
    r.remaining = remaining;
    r
}

/// Asserts the stored record equals `before` except for `remaining` (and, since the
/// trait leaves it open whether spending credits bumps `version`, `version`).
async fn assert_only_credits_changed<S: Store>(store: &S, before: &KeyRecord, remaining: Option<u64>) {
    let after = fetch(store, before.id).await;
    let mut expected = before.clone();
    expected.remaining = remaining;
    expected.version = after.version;
    assert_eq!(*after, expected, "consume must change `remaining` only");
    assert!(after.version >= before.version, "version never goes back");
}

/// A key without a credit limit is `Unlimited`, whatever the cost, and stays unlimited.
pub async fn consume_on_unlimited_key_is_unlimited<S: Store>(store: S) {
    let r = with_credits(None);
    insert(&store, r.clone()).await;
    for cost in [1, 1_000_000, u64::from(u32::MAX)] {
        let credits = store.consume(r.id, cost).await.expect("consume failed");
        assert_eq!(credits, Credits::Unlimited, "a key without credits is unlimited (cost {cost})");
    }
    assert_eq!(*fetch(&store, r.id).await, r, "consuming an unlimited key changes nothing");
}

/// Spending reports what is left and stores it.
pub async fn consume_spends_and_reports_what_is_left<S: Store>(store: S) {
    let r = with_credits(Some(10));
    insert(&store, r.clone()).await;
    let events = audit_len(&store).await;
    assert_eq!(store.consume(r.id, 3).await.expect("consume failed"), Credits::Spent { remaining: 7 });
    assert_only_credits_changed(&store, &r, Some(7)).await;
    assert_eq!(store.consume(r.id, 1).await.expect("consume failed"), Credits::Spent { remaining: 6 });
    assert_eq!(store.consume(r.id, 5).await.expect("consume failed"), Credits::Spent { remaining: 1 });
    assert_only_credits_changed(&store, &r, Some(1)).await;
    assert_eq!(audit_len(&store).await, events, "spending credits appends no audit event");
}

/// Spending exactly what is left reaches zero; then any cost is `Exhausted { remaining: 0 }`.
pub async fn consume_exactly_what_is_left_reaches_zero_then_exhausts<S: Store>(store: S) {
    let r = with_credits(Some(4));
    insert(&store, r.clone()).await;
    assert_eq!(store.consume(r.id, 4).await.expect("consume failed"), Credits::Spent { remaining: 0 });
    assert_only_credits_changed(&store, &r, Some(0)).await;
    assert_eq!(store.consume(r.id, 1).await.expect("consume failed"), Credits::Exhausted { remaining: 0 });
    assert_only_credits_changed(&store, &r, Some(0)).await;

    let mut empty = record();
    empty.remaining = Some(0);
    insert(&store, empty.clone()).await;
    assert_eq!(store.consume(empty.id, 1).await.expect("consume failed"), Credits::Exhausted { remaining: 0 });
    assert_eq!(fetch(&store, empty.id).await.remaining, Some(0), "credits never go below zero");
}

/// Asking for more than is left is `Exhausted` with what is left, and spends nothing.
pub async fn consume_more_than_left_is_exhausted_and_spends_nothing<S: Store>(store: S) {
    let r = with_credits(Some(5));
    insert(&store, r.clone()).await;
    assert_eq!(store.consume(r.id, 6).await.expect("consume failed"), Credits::Exhausted { remaining: 5 });
    assert_eq!(store.consume(r.id, u64::MAX).await.expect("consume failed"), Credits::Exhausted { remaining: 5 });
    assert_eq!(*fetch(&store, r.id).await, r, "an exhausted consume must change nothing");
    assert_eq!(store.consume(r.id, 5).await.expect("consume failed"), Credits::Spent { remaining: 0 });
}

/// `consume` of an unknown id is `NotFound`.
pub async fn consume_of_unknown_key_is_not_found<S: Store>(store: S) {
    insert(&store, with_credits(Some(3))).await;
    assert_err!(store.consume(KeyId::new(), 1).await, StoreError::NotFound, "consume of an unknown key");
}
