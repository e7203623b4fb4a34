//! Atomicity under concurrency. Each test shares the store between tasks spawned on
//! the (multi-threaded) tokio runtime and lines them up on a barrier so their
//! operations overlap as much as possible.
//!
//! These tests call `tokio::spawn`: run them inside a multi-threaded tokio runtime
//! (as [`store_conformance!`](crate::store_conformance) does).

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;

use keypal::{Action, AuditQuery, CreditOp, Credits, KeyPatch, ListQuery, Lookup, NamespaceFilter, Store, StoreError};
use serde_json::json;
use tokio::sync::Barrier;
use uuid::Uuid;

use crate::fixtures::{
    audit_all, event, event_at, fetch, full_record, insert, list_all, now, record, record_for, replacement_for, shift,
    sorted_ids,
};

/// Runs one task per item, all released together by a barrier; returns their outputs
/// in item order. A panicking task fails the test with its message.
async fn race<S, I, F, Fut, T>(store: &Arc<S>, items: Vec<I>, op: F) -> Vec<T>
where
    S: Store,
    I: Send + 'static,
    F: Fn(Arc<S>, I) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let barrier = Arc::new(Barrier::new(items.len()));
    let mut tasks = Vec::with_capacity(items.len());
    for item in items {
        let barrier = barrier.clone();
        let work = op(store.clone(), item);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            work.await
        }));
    }
    let mut outputs = Vec::with_capacity(tasks.len());
    for task in tasks {
        match task.await {
            Ok(output) => outputs.push(output),
            Err(e) => panic!("a concurrent task failed: {e}"),
        }
    }
    outputs
}

/// 64 concurrent inserts for one owner under a limit of 10: exactly 10 succeed, 54
/// are `LimitReached { limit: 10 }`, and the store holds and counts exactly 10 active
/// keys with 10 `Created` events.
pub async fn concurrent_inserts_respect_the_owner_limit<S: Store>(store: S) {
    let store = Arc::new(store);
    // A key of another owner and one of another namespace must not interfere.
    insert(&*store, record_for("bystander")).await;
    insert(&*store, crate::fixtures::record_in(Some("other_app"), "crowd")).await;
    let records: Vec<_> = (0..64).map(|_| record_for("crowd")).collect();
    let results = race(&store, records, |store, r| async move {
        let id = r.id;
        (id, store.insert(r, Some(10), event(Action::Created)).await)
    })
    .await;

    let mut admitted = Vec::new();
    let mut limited = 0;
    for (id, result) in results {
        match result {
            Ok(stored) => {
                assert_eq!(stored.id, id);
                admitted.push(id);
            }
            Err(StoreError::LimitReached { limit: 10 }) => limited += 1,
            Err(e) => {
                panic!("a concurrent insert under the limit must succeed or be LimitReached {{ limit: 10 }}: {e:?}")
            }
        }
    }
    assert_eq!(admitted.len(), 10, "exactly 10 of 64 concurrent inserts must succeed under a limit of 10");
    assert_eq!(limited, 54, "the other 54 must be LimitReached");
    let mut query = ListQuery::new().owner_id("crowd");
    query.namespace = NamespaceFilter::None;
    assert_eq!(store.count(&query).await.expect("count failed"), 10, "count must say 10 active keys");
    admitted.sort();
    assert_eq!(sorted_ids(&list_all(&*store, query).await), admitted, "exactly the admitted keys are stored");
    let created = audit_all(&*store, AuditQuery::new().owner_id("crowd").action(Action::Created)).await;
    assert_eq!(created.len(), 11, "one Created event per admitted key (plus the other namespace's key)");
}

/// 32 concurrent inserts of different records with one `Lookup::Id`: exactly one
/// succeeds, the rest are `Duplicate`, and the lookup finds the winner.
pub async fn concurrent_inserts_of_one_lookup_succeed_once<S: Store>(store: S) {
    let store = Arc::new(store);
    let lookup = Lookup::Id("contested".to_owned());
    let records: Vec<_> = (0..32)
        .map(|_| {
            let mut r = record();
            r.lookup = lookup.clone();
            r
        })
        .collect();
    let results =
        race(&store, records, |store, r| async move { store.insert(r, None, event(Action::Created)).await }).await;
    let mut winners = Vec::new();
    for result in results {
        match result {
            Ok(stored) => winners.push(stored),
            Err(StoreError::Duplicate) => {}
            Err(e) => panic!("a concurrent insert of a taken lookup must be Duplicate: {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one concurrent insert of one lookup must succeed");
    let found = store.find(&lookup).await.expect("find failed");
    assert_eq!(found.as_deref(), Some(&*winners[0]), "the lookup finds the winner");
    let all = list_all(&*store, ListQuery::new().include_revoked(true)).await;
    assert_eq!(all.len(), 1, "only the winner is stored");
}

/// 64 concurrent `consume(1)` on a key with 10 credits: exactly 10 are `Spent` (leaving
/// 9, 8, ..., 0, each once), 54 are `Exhausted { remaining: 0 }`, and 0 credits are left.
pub async fn concurrent_consumes_spend_each_credit_once<S: Store>(store: S) {
    let store = Arc::new(store);
    let mut r = full_record();
    r.remaining = Some(10);
    insert(&*store, r.clone()).await;
    let id = r.id;
    let results = race(&store, vec![(); 64], |store, ()| async move { store.consume(id, 1, None).await }).await;
    let mut left_after_spend = BTreeSet::new();
    let mut exhausted = 0;
    for result in results {
        match result.expect("consume failed") {
            Credits::Spent { remaining } => {
                assert!(
                    left_after_spend.insert(remaining),
                    "two spends reported {remaining} left: a credit was spent twice"
                );
            }
            Credits::Exhausted { remaining } => {
                assert_eq!(remaining, 0, "only an empty key is exhausted by a cost of 1");
                exhausted += 1;
            }
            Credits::Unlimited => panic!("a key with credits must not be Unlimited"),
        }
    }
    assert_eq!(left_after_spend, (0..10).collect(), "exactly 10 spends, leaving 9 down to 0");
    assert_eq!(exhausted, 54, "the other 54 must be Exhausted");
    assert_eq!(fetch(&*store, id).await.remaining, Some(0), "no credit is left");
}

/// 64 concurrent `consume(1)` across a refill boundary: a key with 3 credits left of
/// the last period and a refill of 40 due. The boundary tops up exactly once: exactly
/// 40 spends (leaving 39 down to 0), 24 `Exhausted`; a second race at the same
/// boundary spends nothing, and one at the next boundary exactly 40 again.
pub async fn concurrent_consumes_across_a_refill_boundary_refill_once<S: Store>(store: S) {
    let store = Arc::new(store);
    let (r, due) = crate::credits::refilling(Some(3), 40);
    insert(&*store, r.clone()).await;
    let id = r.id;
    for (round, due, spends) in [(1, due, 40), (2, due, 0), (3, shift(due, 86_400), 40)] {
        let results =
            race(&store, vec![(); 64], move |store, ()| async move { store.consume(id, 1, Some(due)).await }).await;
        let mut left_after_spend = BTreeSet::new();
        for result in results {
            match result.expect("consume failed") {
                Credits::Spent { remaining } => {
                    assert!(left_after_spend.insert(remaining), "round {round}: two spends left {remaining}");
                }
                Credits::Exhausted { remaining } => assert_eq!(remaining, 0, "round {round}: exhausted with credits"),
                Credits::Unlimited => panic!("a key with credits must not be Unlimited"),
            }
        }
        assert_eq!(left_after_spend, (0..spends).collect(), "round {round}: exactly {spends} spends");
        let stored = fetch(&*store, id).await;
        assert_eq!((stored.remaining, stored.refilled_at), (Some(0), Some(due)), "round {round}");
    }
}

/// 64 concurrent `adjust_credits` (32 increments of 3, 32 decrements of 1) of a key
/// with 100 credits: every change is kept (164 left) with one event each.
pub async fn concurrent_credit_changes_are_all_kept<S: Store>(store: S) {
    let store = Arc::new(store);
    let mut r = full_record();
    r.remaining = Some(100);
    insert(&*store, r.clone()).await;
    let id = r.id;
    let ops: Vec<CreditOp> =
        (0..64).map(|i| if i % 2 == 0 { CreditOp::Increment(3) } else { CreditOp::Decrement(1) }).collect();
    let results = race(&store, ops, move |store, op| async move {
        store.adjust_credits(id, op, None, event(Action::CreditsChanged)).await
    })
    .await;
    for result in results {
        result.expect("adjust failed");
    }
    let stored = fetch(&*store, id).await;
    assert_eq!(stored.remaining, Some(164), "every change kept");
    assert_eq!(stored.version, r.version + 64, "one version bump each");
}

/// 32 concurrent revokes of one key (at one instant), over several rounds: each time
/// exactly one succeeds, the rest are `AlreadyRevoked`, and exactly one `Revoked`
/// event is appended.
pub async fn concurrent_revokes_succeed_exactly_once<S: Store>(store: S) {
    let store = Arc::new(store);
    for round in 0..8 {
        let r = insert(&*store, full_record()).await;
        let id = r.id;
        let t = now();
        let results =
            race(&store, vec![(); 32], |store, ()| async move { store.revoke(id, t, event(Action::Revoked)).await })
                .await;
        let mut ok = 0;
        for result in results {
            match result {
                Ok(revoked) => {
                    assert_eq!(revoked.revoked_at, Some(t));
                    ok += 1;
                }
                Err(StoreError::AlreadyRevoked) => {}
                Err(e) => panic!("round {round}: a concurrent revoke must succeed or be AlreadyRevoked: {e:?}"),
            }
        }
        assert_eq!(ok, 1, "round {round}: exactly one of 32 concurrent revokes must succeed");
        let after = fetch(&*store, id).await;
        assert_eq!(after.revoked_at, Some(t));
        assert_eq!(after.version, r.version + 1, "round {round}: one revoke, one version bump");
        let events = audit_all(&*store, AuditQuery::new().key_id(id).action(Action::Revoked)).await;
        assert_eq!(events.len(), 1, "round {round}: exactly one Revoked event");
    }
}

/// 16 concurrent rotations of one key without grace (the old key revoked at the
/// replacement's creation): exactly one succeeds, the rest are `AlreadyRevoked`, and
/// only the winning replacement is stored.
pub async fn concurrent_rotations_of_one_key_succeed_exactly_once<S: Store>(store: S) {
    let store = Arc::new(store);
    let old = insert(&*store, full_record()).await;
    let t = shift(now(), 1);
    let replacements: Vec<_> = (0..16).map(|_| replacement_for(&old, t)).collect();
    let old_id = old.id;
    let results = race(&store, replacements.clone(), |store, new| async move {
        store.rotate(old_id, new, t, event_at(Action::Rotated, t)).await
    })
    .await;
    let mut winners = Vec::new();
    for result in results {
        match result {
            Ok((_, new)) => winners.push(new),
            Err(StoreError::AlreadyRevoked) => {}
            Err(e) => panic!("a concurrent rotation must succeed or be AlreadyRevoked: {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one of 16 concurrent rotations must succeed");
    let after = fetch(&*store, old_id).await;
    assert_eq!(after.rotated_to, Some(winners[0].id), "the old key names the winning replacement");
    assert_eq!(after.revoked_at, Some(t));
    for r in &replacements {
        let stored = store.get(r.id).await.expect("get failed");
        assert_eq!(stored.is_some(), r.id == winners[0].id, "only the winning replacement may be stored");
        let found = store.find(&r.lookup).await.expect("find failed");
        assert_eq!(found.is_some(), r.id == winners[0].id, "only the winning replacement may be findable");
    }
    let events = audit_all(&*store, AuditQuery::new().action(Action::Rotated)).await;
    assert_eq!(events.len(), 1, "exactly one Rotated event");
}

/// Over many rounds, `touch` batches (written from a record read before the revoke)
/// racing a `revoke` never leave the key un-revoked or move `revoked_at`.
pub async fn touch_racing_revoke_never_undoes_the_revocation<S: Store>(store: S) {
    let store = Arc::new(store);
    for round in 0..40 {
        let mut r = full_record();
        r.last_used_at = None;
        insert(&*store, r.clone()).await;
        let id = r.id;
        let t = now();
        let jobs: Vec<Option<usize>> = (0..8).map(Some).chain([None]).collect();
        let results = race(&store, jobs, |store, job| async move {
            match job {
                Some(toucher) => {
                    for k in 0..4 {
                        let at = t + time::Duration::microseconds((toucher * 4 + k) as i64 + 1);
                        store.touch(&[(id, at)]).await.expect("touch failed");
                    }
                    None
                }
                None => Some(store.revoke(id, t, event(Action::Revoked)).await.expect("revoke failed")),
            }
        })
        .await;
        let revoked = results.into_iter().flatten().next().expect("the revoke ran");
        let after = fetch(&*store, id).await;
        assert_eq!(after.revoked_at, Some(t), "round {round}: touch must never undo or move a revocation");
        assert_eq!(after.version, revoked.version, "round {round}: touch must not change the version");
        let mut expected = (*revoked).clone();
        expected.last_used_at = after.last_used_at;
        assert_eq!(*after, expected, "round {round}: touch must change last_used_at only");
        assert_eq!(after.last_used_at, Some(t + time::Duration::microseconds(32)), "round {round}: newest touch wins");
    }
}

/// Concurrent changes of different fields (three updates, a disable, a hash swap,
/// touches; then spends racing touches) are all kept: no change overwrites another.
pub async fn concurrent_changes_to_different_fields_are_all_kept<S: Store>(store: S) {
    let store = Arc::new(store);
    let mut before = full_record();
    before.remaining = Some(100);
    before.last_used_at = None;
    insert(&*store, before.clone()).await;
    let id = before.id;
    let old_hash = before.hash.clone();
    let t = now();

    let jobs: Vec<usize> = (0..9).collect();
    let results = race(&store, jobs, |store, job| {
        let old_hash = old_hash.clone();
        let lookup = before.lookup.clone();
        async move {
            match job {
                0 => store.update(id, &KeyPatch::new().name("concurrent name"), event(Action::Updated)).await.is_ok(),
                1 => store.update(id, &KeyPatch::new().scopes(["x", "y"]), event(Action::Updated)).await.is_ok(),
                2 => {
                    let patch = KeyPatch::new().metadata(Some(json!({"concurrent": true})));
                    store.update(id, &patch, event(Action::Updated)).await.is_ok()
                }
                3 => store.set_enabled(id, false, event(Action::Disabled)).await.is_ok(),
                4 => store.replace_hash(id, &old_hash, "$sha256$concurrent", &lookup).await.unwrap_or(false),
                n => store.touch(&[(id, shift(t, n as i64))]).await.is_ok(),
            }
        }
    })
    .await;
    assert!(results.iter().all(|ok| *ok), "every concurrent change must succeed: {results:?}");
    let after = fetch(&*store, id).await;
    let mut expected = before.clone();
    expected.name = Some("concurrent name".to_owned());
    expected.scopes = vec!["x".to_owned(), "y".to_owned()];
    expected.metadata = Some(json!({"concurrent": true}));
    expected.enabled = false;
    expected.hash = "$sha256$concurrent".to_owned();
    expected.last_used_at = Some(shift(t, 8));
    expected.version = before.version + 5;
    assert_eq!(*after, expected, "every concurrent change must be kept, and each versioned one counted");

    let jobs: Vec<usize> = (0..16).collect();
    race(&store, jobs, |store, job| async move {
        if job < 8 {
            assert!(matches!(store.consume(id, 2, None).await, Ok(Credits::Spent { .. })), "consume failed");
        } else {
            store.touch(&[(id, shift(t, 100 + job as i64))]).await.expect("touch failed");
        }
    })
    .await;
    let last = fetch(&*store, id).await;
    assert_eq!(last.remaining, Some(84), "touches must not undo spent credits");
    assert_eq!(last.last_used_at, Some(shift(t, 115)), "the newest touch wins");
    let mut expected = expected.clone();
    expected.remaining = Some(84);
    expected.last_used_at = Some(shift(t, 115));
    expected.version = last.version;
    assert_eq!(*last, expected, "spends and touches change only credits and last use");
}

/// Events appended concurrently (created in one order, appended in another) still page
/// newest first by id, with no gaps and no repeats.
pub async fn concurrent_writes_page_through_the_audit_log_without_gaps<S: Store>(store: S) {
    let store = Arc::new(store);
    let t = shift(now(), -100);
    let items: Vec<_> = (0..64).map(|i| (record(), event_at(Action::Created, shift(t, i)))).collect();
    let mut expected: Vec<Uuid> = items.iter().map(|(_, e)| e.id).collect();
    expected.sort_by(|a, b| b.cmp(a));
    race(&store, items, |store, (r, e)| async move {
        store.insert(r, None, e).await.expect("insert failed");
    })
    .await;

    let mut seen = Vec::new();
    let mut query = AuditQuery::new().limit(7);
    loop {
        let page = store.audit(&query).await.expect("audit failed");
        seen.extend(page.items.iter().map(|e| e.id));
        match page.next_cursor {
            Some(cursor) => query = AuditQuery::new().limit(7).cursor(cursor),
            None => break,
        }
        assert!(seen.len() <= 64, "pagination must end");
    }
    assert_eq!(seen, expected, "the log pages newest (highest id) first with no gaps, whatever the append order");
}
