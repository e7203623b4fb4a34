//! Usage credits: `consume` is a guarded decrement that spends `cost` only when at
//! least that many are left, and changes nothing but `remaining`; with a refill due it
//! tops the credits up first, once per boundary. `adjust_credits` sets, increments or
//! decrements them in one audited step.

use keypal::{Action, AuditQuery, CreditOp, Credits, KeyId, KeyRecord, Refill, RefillInterval, Store, StoreError};
use time::OffsetDateTime;

use crate::fixtures::{audit_all, audit_len, event, fetch, full_record, insert, now, record, shift};

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
        let credits = store.consume(r.id, cost, None).await.expect("consume failed");
        assert_eq!(credits, Credits::Unlimited, "a key without credits is unlimited (cost {cost})");
    }
    assert_eq!(*fetch(&store, r.id).await, r, "consuming an unlimited key changes nothing");
}

/// Spending reports what is left and stores it.
pub async fn consume_spends_and_reports_what_is_left<S: Store>(store: S) {
    let r = with_credits(Some(10));
    insert(&store, r.clone()).await;
    let events = audit_len(&store).await;
    assert_eq!(store.consume(r.id, 3, None).await.expect("consume failed"), Credits::Spent { remaining: 7 });
    assert_only_credits_changed(&store, &r, Some(7)).await;
    assert_eq!(store.consume(r.id, 1, None).await.expect("consume failed"), Credits::Spent { remaining: 6 });
    assert_eq!(store.consume(r.id, 5, None).await.expect("consume failed"), Credits::Spent { remaining: 1 });
    assert_only_credits_changed(&store, &r, Some(1)).await;
    assert_eq!(audit_len(&store).await, events, "spending credits appends no audit event");
}

/// Spending exactly what is left reaches zero; then any cost is `Exhausted { remaining: 0 }`.
pub async fn consume_exactly_what_is_left_reaches_zero_then_exhausts<S: Store>(store: S) {
    let r = with_credits(Some(4));
    insert(&store, r.clone()).await;
    assert_eq!(store.consume(r.id, 4, None).await.expect("consume failed"), Credits::Spent { remaining: 0 });
    assert_only_credits_changed(&store, &r, Some(0)).await;
    assert_eq!(store.consume(r.id, 1, None).await.expect("consume failed"), Credits::Exhausted { remaining: 0 });
    assert_only_credits_changed(&store, &r, Some(0)).await;

    let mut empty = record();
    empty.remaining = Some(0);
    insert(&store, empty.clone()).await;
    assert_eq!(store.consume(empty.id, 1, None).await.expect("consume failed"), Credits::Exhausted { remaining: 0 });
    assert_eq!(fetch(&store, empty.id).await.remaining, Some(0), "credits never go below zero");
}

/// Asking for more than is left is `Exhausted` with what is left, and spends nothing.
pub async fn consume_more_than_left_is_exhausted_and_spends_nothing<S: Store>(store: S) {
    let r = with_credits(Some(5));
    insert(&store, r.clone()).await;
    assert_eq!(store.consume(r.id, 6, None).await.expect("consume failed"), Credits::Exhausted { remaining: 5 });
    assert_eq!(store.consume(r.id, u64::MAX, None).await.expect("consume failed"), Credits::Exhausted { remaining: 5 });
    assert_eq!(*fetch(&store, r.id).await, r, "an exhausted consume must change nothing");
    assert_eq!(store.consume(r.id, 5, None).await.expect("consume failed"), Credits::Spent { remaining: 0 });
}

/// `consume` of an unknown id is `NotFound`.
pub async fn consume_of_unknown_key_is_not_found<S: Store>(store: S) {
    insert(&store, with_credits(Some(3))).await;
    assert_err!(store.consume(KeyId::new(), 1, None).await, StoreError::NotFound, "consume of an unknown key");
}

/// A record with a daily refill of `amount`, `remaining` credits, last refilled at the
/// boundary before the latest one; and the latest boundary (midnight UTC today), which
/// has passed: a refill is due.
pub(crate) fn refilling(remaining: Option<u64>, amount: u64) -> (KeyRecord, OffsetDateTime) {
    let refill = Refill::new(RefillInterval::Daily, amount);
    let due = refill.boundary_at(None, now()).expect("a daily refill always has a boundary");
    let mut r = full_record();
    r.remaining = remaining;
    r.refill = Some(refill);
    r.refilled_at = Some(shift(due, -86_400));
    (r, due)
}

/// With a boundary passed since `refilled_at`, `consume` first sets the credits back to
/// the refill's amount (a quota, not an accumulation) and `refilled_at` to the boundary,
/// then spends; the same boundary again (or an older one) tops up nothing more.
/// Nothing but `remaining` and `refilled_at` changes, and no event is appended.
pub async fn consume_tops_up_once_per_boundary<S: Store>(store: S) {
    let (r, due) = refilling(Some(3), 50);
    insert(&store, r.clone()).await;
    let events = audit_len(&store).await;
    let before_due = r.refilled_at;
    assert_eq!(store.consume(r.id, 1, before_due).await.expect("consume failed"), Credits::Spent { remaining: 2 });
    assert_eq!(store.consume(r.id, 2, Some(due)).await.expect("consume failed"), Credits::Spent { remaining: 48 });
    let after = fetch(&store, r.id).await;
    let mut expected = r.clone();
    expected.remaining = Some(48);
    expected.refilled_at = Some(due);
    expected.version = after.version;
    assert_eq!(*after, expected, "a top-up changes `remaining` and `refilled_at` only");
    assert_eq!(store.consume(r.id, 1, Some(due)).await.expect("consume failed"), Credits::Spent { remaining: 47 });
    assert_eq!(store.consume(r.id, 1, before_due).await.expect("consume failed"), Credits::Spent { remaining: 46 });
    let next = shift(due, 86_400);
    assert_eq!(store.consume(r.id, 10, Some(next)).await.expect("consume failed"), Credits::Spent { remaining: 40 });
    assert_eq!(fetch(&store, r.id).await.refilled_at, Some(next));
    assert_eq!(audit_len(&store).await, events, "refills append no audit event");
}

/// A key out of credits is refilled at the boundary even when it had none left, and a
/// cost larger than the refill is `Exhausted` with the topped-up credits.
pub async fn consume_after_a_boundary_refills_an_empty_key<S: Store>(store: S) {
    let (r, due) = refilling(Some(0), 5);
    insert(&store, r.clone()).await;
    assert_eq!(
        store.consume(r.id, 1, r.refilled_at).await.expect("consume failed"),
        Credits::Exhausted { remaining: 0 }
    );
    assert_eq!(store.consume(r.id, 6, Some(due)).await.expect("consume failed"), Credits::Exhausted { remaining: 5 });
    assert_eq!(store.consume(r.id, 5, Some(due)).await.expect("consume failed"), Credits::Spent { remaining: 0 });
    assert_eq!(store.consume(r.id, 1, Some(due)).await.expect("consume failed"), Credits::Exhausted { remaining: 0 });
    assert_eq!(fetch(&store, r.id).await.refilled_at, Some(due));

    // A refill set on a key with unlimited credits gives it its amount at the boundary.
    let (unlimited, due) = refilling(None, 9);
    insert(&store, unlimited.clone()).await;
    assert_eq!(
        store.consume(unlimited.id, 1, Some(due)).await.expect("consume failed"),
        Credits::Spent { remaining: 8 }
    );
}

/// A due boundary tops up only keys whose stored record has a refill (the caller's
/// copy may be older than a change that removed it).
pub async fn consume_without_a_stored_refill_ignores_the_boundary<S: Store>(store: S) {
    let (mut r, due) = refilling(Some(2), 50);
    r.refill = None;
    insert(&store, r.clone()).await;
    assert_eq!(store.consume(r.id, 1, Some(due)).await.expect("consume failed"), Credits::Spent { remaining: 1 });
    assert_eq!(*fetch(&store, r.id).await, {
        let mut e = r.clone();
        e.remaining = Some(1);
        e.version = fetch(&store, r.id).await.version;
        e
    });
}

/// `adjust_credits` sets, increments and decrements (down to zero), each bumping
/// `version` by one and appending its event; nothing else changes.
pub async fn adjust_credits_sets_increments_and_decrements<S: Store>(store: S) {
    let mut r = full_record();
    r.remaining = Some(10);
    insert(&store, r.clone()).await;
    let steps = [
        (CreditOp::Increment(5), 15),
        (CreditOp::Decrement(3), 12),
        (CreditOp::Decrement(100), 0),
        (CreditOp::Set(7), 7),
        (CreditOp::Increment(CreditOp::MAX - 7), CreditOp::MAX),
    ];
    for (i, (op, left)) in steps.into_iter().enumerate() {
        let changed = store.adjust_credits(r.id, op, None, event(Action::CreditsChanged)).await.expect("adjust failed");
        let mut expected = r.clone();
        expected.remaining = Some(left);
        expected.version = r.version + 1 + i as u64;
        assert_eq!(*changed, expected, "{op:?}: changes `remaining` only, bumping `version`");
        assert_eq!(*fetch(&store, r.id).await, expected, "{op:?}: reads back");
    }
    let events = audit_all(&store, AuditQuery::new().key_id(r.id).action(Action::CreditsChanged)).await;
    assert_eq!(events.len(), steps.len(), "one event per change");
    assert_err!(
        store.adjust_credits(r.id, CreditOp::Increment(1), None, event(Action::CreditsChanged)).await,
        StoreError::CreditsUnchangeable,
        "an increment past the maximum"
    );
}

/// Increments and decrements of a key with unlimited credits, and a set past the
/// maximum, are `CreditsUnchangeable` and change nothing; a set gives it a limit.
/// An unknown key is `NotFound`.
pub async fn adjust_credits_refuses_what_does_not_apply<S: Store>(store: S) {
    let mut r = full_record();
    r.remaining = None;
    r.refill = None;
    insert(&store, r.clone()).await;
    let events = audit_len(&store).await;
    for op in [CreditOp::Increment(1), CreditOp::Decrement(1), CreditOp::Set(CreditOp::MAX + 1)] {
        assert_err!(
            store.adjust_credits(r.id, op, None, event(Action::CreditsChanged)).await,
            StoreError::CreditsUnchangeable,
            "{op:?} of an unlimited key"
        );
    }
    assert_eq!(*fetch(&store, r.id).await, r, "a refused change changes nothing");
    assert_eq!(audit_len(&store).await, events, "a refused change appends nothing");
    let set =
        store.adjust_credits(r.id, CreditOp::Set(4), None, event(Action::CreditsChanged)).await.expect("set failed");
    assert_eq!(set.remaining, Some(4));
    assert_err!(
        store.adjust_credits(KeyId::new(), CreditOp::Set(1), None, event(Action::CreditsChanged)).await,
        StoreError::NotFound,
        "adjust of an unknown key"
    );
}

/// A due top-up is applied before the change: an increment adds to the refilled
/// credits, and a set is not undone by the top-up at the next spend.
pub async fn adjust_credits_applies_a_due_refill_first<S: Store>(store: S) {
    let (r, due) = refilling(Some(2), 50);
    insert(&store, r.clone()).await;
    let up = store.adjust_credits(r.id, CreditOp::Increment(5), Some(due), event(Action::CreditsChanged)).await;
    let up = up.expect("increment failed");
    assert_eq!((up.remaining, up.refilled_at), (Some(55), Some(due)));

    let (r, due) = refilling(Some(2), 50);
    insert(&store, r.clone()).await;
    let set = store.adjust_credits(r.id, CreditOp::Set(3), Some(due), event(Action::CreditsChanged)).await;
    assert_eq!(set.expect("set failed").remaining, Some(3));
    assert_eq!(store.consume(r.id, 1, Some(due)).await.expect("consume failed"), Credits::Spent { remaining: 2 });
}
