//! Slow hashes through an offload, and single flight: what a service relies on so that
//! slow hashes never stall it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use keypal::offload::{Completion, Job, Offload, OffloadError};
use keypal::{Code, HashAlgorithm, KeyManager, ListQuery, MemoryStore, NewKey, RateLimit};

type Result = std::result::Result<(), Box<dyn std::error::Error>>;

/// Runs each job on a thread of its own, once its gate is open; counts the jobs.
#[derive(Clone, Default)]
struct Gated {
    jobs: Arc<AtomicUsize>,
    open: Arc<(Mutex<bool>, Condvar)>,
}

impl Gated {
    fn opened() -> Self {
        let gated = Self::default();
        gated.open();
        gated
    }

    fn open(&self) {
        self.set(true);
    }

    fn close(&self) {
        self.set(false);
    }

    fn set(&self, is_open: bool) {
        let (open, changed) = &*self.open;
        *open.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = is_open;
        changed.notify_all();
    }

    fn jobs(&self) -> usize {
        self.jobs.load(Ordering::SeqCst)
    }
}

impl Offload for Gated {
    fn run(&self, job: Job) -> Completion {
        self.jobs.fetch_add(1, Ordering::SeqCst);
        let (done, finished) = tokio::sync::oneshot::channel();
        let gate = self.open.clone();
        std::thread::spawn(move || {
            let (open, changed) = &*gate;
            let mut is_open = open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            while !*is_open {
                is_open = changed.wait(is_open).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            drop(is_open);
            job();
            let _ = done.send(());
        });
        Box::pin(async move { finished.await.map_err(|_| OffloadError::Failed) })
    }
}

/// Refuses every job with `error`.
struct Refusing(OffloadError);

impl Offload for Refusing {
    fn run(&self, _job: Job) -> Completion {
        Box::pin(std::future::ready(Err(self.0)))
    }
}

fn bcrypt(offload: impl Offload) -> std::result::Result<KeyManager<MemoryStore>, keypal::Error> {
    KeyManager::builder()
        .prefix("sk_test")
        .hash(HashAlgorithm::Bcrypt)
        .bcrypt_cost(4)
        .offload(offload)
        .store(MemoryStore::new())
        .build()
}

/// Lets every spawned task run up to its first wait (the runtime is single-threaded).
async fn settle() {
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
}

/// Verifies `key` `n` times at once: every verification has started (and is waiting
/// for the offload) before the gate opens.
async fn verify_together(
    keys: &KeyManager<MemoryStore>,
    gated: &Gated,
    key: &str,
    n: usize,
) -> std::result::Result<Vec<keypal::Verification>, Box<dyn std::error::Error>> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let keys = keys.clone();
            let key = key.to_owned();
            tokio::spawn(async move { keys.verify(&key).await })
        })
        .collect();
    settle().await;
    gated.open();
    let mut verifications = Vec::new();
    for task in tasks {
        verifications.push(task.await??);
    }
    Ok(verifications)
}

#[tokio::test]
async fn concurrent_first_verifies_of_one_key_share_one_hash_check() -> Result {
    let gated = Gated::opened();
    let keys = bcrypt(gated.clone())?;
    let created = keys.create(NewKey::new().remaining(100).rate_limit(RateLimit::per_hour(1_000))).await?;
    gated.close();
    let before = gated.jobs();

    let verifications = verify_together(&keys, &gated, created.key.expose(), 32).await?;
    assert_eq!(gated.jobs() - before, 1, "one bcrypt check for 32 concurrent first verifications");
    // Each request ran its own steps: all valid, each spent its own credit and its own
    // share of the rate limit.
    assert!(verifications.iter().all(|v| v.code() == Code::Valid));
    let mut remaining: Vec<u64> = verifications.iter().filter_map(keypal::Verification::remaining).collect();
    remaining.sort_unstable();
    assert_eq!(remaining, (68..100).collect::<Vec<u64>>());
    let mut allowance: Vec<u32> = verifications.iter().filter_map(|v| v.rate_limit()).map(|s| s.remaining).collect();
    allowance.sort_unstable();
    assert_eq!(allowance, (968..1_000).collect::<Vec<u32>>());
    assert_eq!(keys.get(&created.record.id).await?.remaining, Some(68));

    // Cached now: the next verification checks no hash at all.
    assert!(keys.verify(created.key.expose()).await?.is_valid());
    assert_eq!(gated.jobs() - before, 1);
    Ok(())
}

#[tokio::test]
async fn concurrent_verifies_of_one_unknown_key_share_one_dummy_check() -> Result {
    let gated = Gated::default();
    let keys = bcrypt(gated.clone())?;
    let unknown = keys.generate_key();
    let verifications = verify_together(&keys, &gated, unknown.expose(), 32).await?;
    assert!(verifications.iter().all(|v| v.code() == Code::NotFound));
    assert_eq!(gated.jobs(), 1);
    Ok(())
}

#[tokio::test]
async fn a_verification_begun_after_a_revoke_does_not_share_an_earlier_lookup() -> Result {
    let gated = Gated::opened();
    let keys = bcrypt(gated.clone())?;
    let created = keys.create(NewKey::new()).await?;
    gated.close();
    let before = gated.jobs();
    let verify = |keys: &KeyManager<MemoryStore>| {
        let keys = keys.clone();
        let key = created.key.expose().to_owned();
        tokio::spawn(async move { keys.verify(&key).await })
    };

    // Looked up (the key was active), waiting for its hash check.
    let earlier = verify(&keys);
    settle().await;
    keys.revoke(&created.record.id).await?;
    // Begun after the revoke completed: must see it, not await the earlier lookup.
    let later = verify(&keys);
    settle().await;
    gated.open();
    assert_eq!(earlier.await??.code(), Code::Valid);
    assert_eq!(later.await??.code(), Code::Revoked);
    assert_eq!(gated.jobs() - before, 2);
    Ok(())
}

#[tokio::test]
async fn slow_hashes_run_through_the_offload_and_fast_ones_in_place() -> Result {
    let gated = Gated::opened();
    let keys = bcrypt(gated.clone())?;
    let created = keys.create(NewKey::new()).await?;
    assert_eq!(gated.jobs(), 1, "the new key's hash");
    assert!(keys.verify(created.key.expose()).await?.is_valid());
    assert_eq!(gated.jobs(), 2, "its check");
    keys.rotate(&created.record.id, std::time::Duration::ZERO).await?;
    assert_eq!(gated.jobs(), 3, "the rotated key's hash");

    let gated = Gated::opened();
    let fast = KeyManager::builder().prefix("sk_test").offload(gated.clone()).store(MemoryStore::new()).build()?;
    let created = fast.create(NewKey::new()).await?;
    assert!(fast.verify(created.key.expose()).await?.is_valid());
    assert_eq!(fast.verify(fast.generate_key().expose()).await?.code(), Code::NotFound);
    assert_eq!(gated.jobs(), 0);
    Ok(())
}

#[tokio::test]
async fn a_refused_slow_hash_is_a_typed_error_and_changes_nothing() -> Result {
    for (refusal, code) in [(OffloadError::Busy, "HASHING_BUSY"), (OffloadError::Failed, "HASHING_FAILED")] {
        let keys = bcrypt(Refusing(refusal))?;
        let error = keys.create(NewKey::new().owner_id("u1")).await.unwrap_err();
        assert!(matches!(error, keypal::Error::Offload(e) if e == refusal), "{error:?}");
        assert_eq!(error.code(), code);
        assert_eq!(keys.count(ListQuery::new()).await?, 0);

        let error = keys.verify(keys.generate_key().expose()).await.unwrap_err();
        assert_eq!(error.code(), code);
    }
    Ok(())
}
