//! Credits that refill, as a caller sees them: topped up at each boundary where they
//! are spent, once per boundary, with the next boundary in every answer.

use std::sync::Arc;
use std::time::Duration;

use keypal::{
    Code, CreditOp, KeyManager, KeyPatch, ManualClock, MemoryStore, NewKey, Refill, RefillInterval, Tier, VerifyOptions,
};
use time::macros::datetime;

type Result = std::result::Result<(), Box<dyn std::error::Error>>;

fn manager(clock: Arc<ManualClock>) -> std::result::Result<KeyManager<MemoryStore>, keypal::Error> {
    KeyManager::builder()
        .prefix("sk_test")
        .tier("free", Tier::new().refill(Refill::new(RefillInterval::Monthly { day: 31 }, 3)))
        .clock(clock)
        .store(MemoryStore::new())
        .build()
}

#[tokio::test]
async fn a_daily_refill_sets_the_credits_back_at_midnight_utc() -> Result {
    let clock = Arc::new(ManualClock::new(datetime!(2025-03-09 22:00 UTC)));
    let keys = manager(clock.clone())?;
    let created = keys.create(NewKey::new().refill(Refill::new(RefillInterval::Daily, 2))).await?;
    assert_eq!(created.record.remaining, Some(2), "a new key starts with the refill's amount");
    let key = created.key.expose();
    let first = keys.verify(key).await?;
    assert_eq!((first.code(), first.remaining()), (Code::Valid, Some(1)));
    assert_eq!(first.refill_at(), Some(datetime!(2025-03-10 0:00 UTC)));
    keys.verify(key).await?;
    let out = keys.verify(key).await?;
    assert_eq!((out.code(), out.remaining()), (Code::UsageExceeded, Some(0)));
    assert_eq!(out.refill_at(), Some(datetime!(2025-03-10 0:00 UTC)));

    clock.set(datetime!(2025-03-10 0:00 UTC));
    let refilled = keys.verify(key).await?;
    assert_eq!((refilled.code(), refilled.remaining()), (Code::Valid, Some(1)), "a quota: back to 2, one spent");
    assert_eq!(refilled.refill_at(), Some(datetime!(2025-03-11 0:00 UTC)));

    // Two days without use: one refill to the amount, not an accumulation.
    clock.set(datetime!(2025-03-12 9:00 UTC));
    assert_eq!(keys.verify_with(key, &VerifyOptions::new().cost(3)).await?.code(), Code::UsageExceeded);
    assert_eq!(keys.verify_with(key, &VerifyOptions::new().cost(2)).await?.remaining(), Some(0));
    Ok(())
}

#[tokio::test]
async fn a_tier_gives_its_refill_to_keys_without_their_own() -> Result {
    let clock = Arc::new(ManualClock::new(datetime!(2024-02-10 12:00 UTC)));
    let keys = manager(clock.clone())?;
    let free = keys.create(NewKey::new().tier("free")).await?;
    assert_eq!(free.record.refill, Some(Refill::new(RefillInterval::Monthly { day: 31 }, 3)));
    let v = keys.verify(free.key.expose()).await?;
    assert_eq!(v.refill_at(), Some(datetime!(2024-02-29 0:00 UTC)), "day 31 of a 29-day month is its last day");
    let own = keys.create(NewKey::new().tier("free").refill(Refill::new(RefillInterval::Weekly, 9))).await?;
    assert_eq!(own.record.remaining, Some(9));
    Ok(())
}

#[tokio::test]
async fn a_refill_set_or_removed_by_update() -> Result {
    let clock = Arc::new(ManualClock::new(datetime!(2025-01-01 0:00:10 UTC)));
    let keys = manager(clock.clone())?;
    let created = keys.create(NewKey::new().remaining(1)).await?;
    let id = created.record.id;
    let every = Refill::new(RefillInterval::Every(Duration::from_secs(90)), 5);
    let updated = keys.update(&id, KeyPatch::new().refill(Some(every))).await?;
    assert_eq!((updated.remaining, updated.refilled_at), (Some(5), Some(datetime!(2025-01-01 0:00:10 UTC))));
    let v = keys.verify(created.key.expose()).await?;
    assert_eq!(v.refill_at(), Some(datetime!(2025-01-01 0:01:40 UTC)), "90 s after the refill was set");
    clock.advance(Duration::from_secs(95));
    assert_eq!(keys.verify(created.key.expose()).await?.remaining(), Some(4));
    let removed = keys.update(&id, KeyPatch::new().refill(None)).await?;
    assert_eq!((removed.refill, removed.refilled_at, removed.remaining), (None, None, Some(4)));
    clock.advance(Duration::from_secs(3600));
    assert_eq!(keys.verify(created.key.expose()).await?.remaining(), Some(3), "no refill any more");
    assert!(
        keys.update(&id, KeyPatch::new().refill(Some(Refill::new(RefillInterval::Daily, u64::MAX)))).await.is_err()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_verifies_across_a_boundary_refill_once() -> Result {
    let clock = Arc::new(ManualClock::new(datetime!(2025-06-30 23:59:59 UTC)));
    let keys = Arc::new(manager(clock.clone())?);
    let created = keys.create(NewKey::new().refill(Refill::new(RefillInterval::Daily, 40)).remaining(0)).await?;
    assert_eq!(keys.verify(created.key.expose()).await?.code(), Code::UsageExceeded);
    clock.set(datetime!(2025-07-01 0:00 UTC));
    let key: Arc<str> = created.key.expose().into();
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (keys, key) = (keys.clone(), key.clone());
            tokio::spawn(async move { keys.verify(&key).await })
        })
        .collect();
    let mut valid = 0;
    for task in tasks {
        if task.await??.is_valid() {
            valid += 1;
        }
    }
    assert_eq!(valid, 40, "exactly the refill's amount is spent");
    assert_eq!(keys.get(&created.record.id).await?.remaining, Some(0));
    Ok(())
}

#[tokio::test]
async fn credits_are_set_incremented_and_decremented_after_a_due_refill() -> Result {
    let clock = Arc::new(ManualClock::new(datetime!(2025-01-01 12:00 UTC)));
    let keys = manager(clock.clone())?;
    let created = keys.create(NewKey::new().refill(Refill::new(RefillInterval::Daily, 10))).await?;
    let id = created.record.id;
    assert_eq!(keys.adjust_credits(&id, CreditOp::Decrement(8)).await?.remaining, Some(2));
    clock.set(datetime!(2025-01-02 1:00 UTC));
    assert_eq!(keys.adjust_credits(&id, CreditOp::Increment(5)).await?.remaining, Some(15), "10 refilled, then 5");
    assert_eq!(keys.verify(created.key.expose()).await?.remaining(), Some(14));
    Ok(())
}

#[tokio::test]
async fn an_imported_key_keeps_its_credits_until_the_first_boundary_after_its_import() -> Result {
    let clock = Arc::new(ManualClock::new(datetime!(2025-05-20 10:00 UTC)));
    let keys = manager(clock.clone())?;
    let plain = keys.generate_key();
    let import = keypal::ImportKey::plaintext(plain.expose())
        .created_at(datetime!(2023-01-01 0:00 UTC))
        .with(NewKey::new().remaining(5).refill(Refill::new(RefillInterval::Monthly { day: 1 }, 100)));
    let imported = keys.import(import).await?;
    assert_eq!(imported.refilled_at, Some(datetime!(2025-05-20 10:00 UTC)), "the first period starts at the import");
    assert_eq!(keys.verify(plain.expose()).await?.remaining(), Some(4), "the credits it came with");
    clock.set(datetime!(2025-06-01 0:00 UTC));
    assert_eq!(keys.verify(plain.expose()).await?.remaining(), Some(99));
    Ok(())
}
