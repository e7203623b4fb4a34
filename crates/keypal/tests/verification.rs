//! The verification pipeline as a caller sees it: every code, in order.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use keypal::{
    Action, CacheMode, Clock, Code, Event, EventSink, HashAlgorithm, KeyManager, KeyPatch, ManualClock, MemoryStore,
    NewKey, RateLimit, Tags, Tier, VerifyOptions,
};

type Result = std::result::Result<(), Box<dyn std::error::Error>>;

fn manager(clock: Arc<ManualClock>) -> std::result::Result<KeyManager<MemoryStore>, keypal::Error> {
    KeyManager::builder()
        .prefix("sk_test")
        .tier("free", Tier::new().rate_limit(RateLimit::per_hour(3)))
        .clock(clock)
        .store(MemoryStore::new())
        .build()
}

#[tokio::test]
async fn malformed_keys_never_reach_the_store() -> Result {
    let keys = manager(Arc::new(ManualClock::starting_now()))?;
    for bad in ["", "sk_test_", "sk_test_short", "pk_test_0123456789abcdef0123456789abcdef", "sk_test_ü"] {
        assert_eq!(keys.verify(bad).await?.code(), Code::Malformed, "{bad:?}");
    }
    let long = format!("sk_test_{}", "a".repeat(10_000));
    assert_eq!(keys.verify(&long).await?.code(), Code::Malformed);
    Ok(())
}

#[tokio::test]
async fn well_formed_unknown_key_is_not_found() -> Result {
    let keys = manager(Arc::new(ManualClock::starting_now()))?;
    let v = keys.verify(keys.generate_key().expose()).await?;
    assert_eq!(v.code(), Code::NotFound);
    assert!(v.record().is_none());
    Ok(())
}

#[tokio::test]
async fn disabled_then_enabled() -> Result {
    let keys = manager(Arc::new(ManualClock::starting_now()))?;
    let created = keys.create(NewKey::new()).await?;
    keys.disable(&created.record.id).await?;
    assert_eq!(keys.verify(created.key.expose()).await?.code(), Code::Disabled);
    keys.enable(&created.record.id).await?;
    assert!(keys.verify(created.key.expose()).await?.is_valid());
    Ok(())
}

#[tokio::test]
async fn expires_exactly_at_expiry() -> Result {
    let clock = Arc::new(ManualClock::starting_now());
    let keys = manager(clock.clone())?;
    let created = keys.create(NewKey::new().expires_in(Duration::from_secs(60))).await?;
    clock.advance(Duration::from_secs(59));
    assert!(keys.verify(created.key.expose()).await?.is_valid());
    clock.advance(Duration::from_secs(1));
    assert_eq!(keys.verify(created.key.expose()).await?.code(), Code::Expired);
    Ok(())
}

#[tokio::test]
async fn revoked_beats_disabled_and_expired() -> Result {
    let clock = Arc::new(ManualClock::starting_now());
    let keys = manager(clock.clone())?;
    let created = keys.create(NewKey::new().expires_in(Duration::from_secs(60))).await?;
    keys.disable(&created.record.id).await?;
    keys.revoke(&created.record.id).await?;
    clock.advance(Duration::from_secs(120));
    let v = keys.verify(created.key.expose()).await?;
    assert_eq!(v.code(), Code::Revoked);
    assert_eq!(v.record().map(|r| r.id), Some(created.record.id));
    Ok(())
}

#[tokio::test]
async fn scopes_exact_star_and_resource_wildcard() -> Result {
    let keys = manager(Arc::new(ManualClock::starting_now()))?;
    let created = keys.create(NewKey::new().scopes(["read", "billing:*"])).await?;
    let key = created.key.expose();
    let need = |scopes: &[&str]| VerifyOptions::new().scopes(scopes.iter().copied());
    assert!(keys.verify_with(key, &need(&["read"])).await?.is_valid());
    assert!(keys.verify_with(key, &need(&["billing:invoices:write", "read"])).await?.is_valid());
    assert_eq!(keys.verify_with(key, &need(&["write"])).await?.code(), Code::InsufficientScope);
    assert_eq!(keys.verify_with(key, &need(&["billing"])).await?.code(), Code::InsufficientScope);
    let admin = keys.create(NewKey::new().scopes(["*"])).await?;
    assert!(keys.verify_with(admin.key.expose(), &need(&["anything", "billing:x"])).await?.is_valid());
    Ok(())
}

#[tokio::test]
async fn tier_rate_limit_then_per_key_override() -> Result {
    let clock = Arc::new(ManualClock::starting_now());
    let keys = manager(clock.clone())?;
    let created = keys.create(NewKey::new().tier("free")).await?;
    let key = created.key.expose();
    for expected_remaining in [2, 1, 0] {
        let v = keys.verify(key).await?;
        assert!(v.is_valid());
        assert_eq!(v.rate_limit().map(|s| (s.limit, s.remaining)), Some((3, expected_remaining)));
    }
    let limited = keys.verify(key).await?;
    assert_eq!(limited.code(), Code::RateLimited);
    let status = limited.rate_limit().ok_or("status")?;
    assert_eq!(status.retry_after, Some(Duration::from_secs(1200)));
    clock.advance(Duration::from_secs(1200));
    assert!(keys.verify(key).await?.is_valid());
    // A per-key limit overrides the tier's.
    keys.update(&created.record.id, KeyPatch::new().rate_limit(Some("10/minute".parse()?))).await?;
    assert_eq!(keys.verify(key).await?.rate_limit().map(|s| s.limit), Some(10));
    Ok(())
}

#[tokio::test]
async fn a_rate_limited_call_spends_no_credits() -> Result {
    let keys = manager(Arc::new(ManualClock::starting_now()))?;
    let created = keys.create(NewKey::new().tier("free").remaining(10)).await?;
    let key = created.key.expose();
    for left in [9, 8, 7] {
        assert_eq!(keys.verify(key).await?.remaining(), Some(left));
    }
    for _ in 0..5 {
        assert_eq!(keys.verify(key).await?.code(), Code::RateLimited);
    }
    assert_eq!(keys.get(&created.record.id).await?.remaining, Some(7));
    Ok(())
}

/// A refusal judged on a record from the verified-result cache (cached with 150
/// credits, 50 left in the store) reports the 50 the store holds.
#[tokio::test]
async fn a_refusal_on_a_cached_record_reports_the_credits_the_store_holds() -> Result {
    let keys = KeyManager::builder().prefix("sk_test").cache(CacheMode::On).store(MemoryStore::new()).build()?;
    let created = keys.create(NewKey::new().remaining(150).rate_limit("1/minute".parse()?)).await?;
    let key = created.key.expose();
    let spent = keys.verify_with(key, &VerifyOptions::new().cost(100)).await?;
    assert_eq!((spent.code(), spent.remaining()), (Code::Valid, Some(50)));
    let limited = keys.verify(key).await?;
    assert_eq!((limited.code(), limited.remaining()), (Code::RateLimited, Some(50)));
    let admin = VerifyOptions::new().scopes(["admin"]);
    let refused = keys.verify_with(key, &admin).await?;
    assert_eq!((refused.code(), refused.remaining()), (Code::InsufficientScope, Some(50)));
    Ok(())
}

#[tokio::test]
async fn credits_run_out_without_going_below_zero() -> Result {
    let keys = manager(Arc::new(ManualClock::starting_now()))?;
    let created = keys.create(NewKey::new().remaining(5)).await?;
    let key = created.key.expose();
    let cost = |c| VerifyOptions::new().cost(c);
    assert_eq!(keys.verify_with(key, &cost(3)).await?.remaining(), Some(2));
    let refused = keys.verify_with(key, &cost(3)).await?;
    assert_eq!(refused.code(), Code::UsageExceeded);
    assert_eq!(refused.remaining(), Some(2));
    assert_eq!(keys.verify_with(key, &cost(2)).await?.remaining(), Some(0));
    assert_eq!(keys.verify(key).await?.code(), Code::UsageExceeded);
    // A cost of zero checks the key without spending.
    assert_eq!(keys.verify_with(key, &cost(0)).await?.code(), Code::Valid);
    Ok(())
}

#[tokio::test]
async fn last_used_is_coalesced_and_flushed() -> Result {
    let clock = Arc::new(ManualClock::starting_now());
    let keys = KeyManager::builder()
        .last_used_interval(Duration::from_secs(30))
        .clock(clock.clone())
        .store(MemoryStore::new())
        .build()?;
    let a = keys.create(NewKey::new()).await?;
    let b = keys.create(NewKey::new()).await?;
    // The first use is written at once (nothing was flushed yet).
    keys.verify(a.key.expose()).await?;
    let first = keys.get(&a.record.id).await?.last_used_at.ok_or("a was used")?;
    // Within the interval, uses are remembered, not written.
    clock.advance(Duration::from_secs(5));
    keys.verify(b.key.expose()).await?;
    keys.verify(a.key.expose()).await?;
    assert_eq!(keys.get(&b.record.id).await?.last_used_at, None);
    assert_eq!(keys.get(&a.record.id).await?.last_used_at, Some(first));
    keys.flush_last_used().await?;
    assert_eq!(keys.get(&b.record.id).await?.last_used_at, Some(clock.now()));
    Ok(())
}

#[derive(Default)]
struct Recorder(Mutex<Vec<(Action, Option<Code>)>>);

impl EventSink for Recorder {
    fn record(&self, event: &Event) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push((event.action, event.code));
    }
}

#[tokio::test]
async fn event_sinks_see_every_action_and_verification_code() -> Result {
    let recorder = Arc::new(Recorder::default());
    let keys = KeyManager::builder().event_sink(recorder.clone()).store(MemoryStore::new()).build()?;
    let created = keys.create(NewKey::new().owner_id("u1")).await?;
    let id = created.record.id;
    keys.verify(created.key.expose()).await?;
    keys.verify("garbage").await?;
    keys.update(&id, KeyPatch::new().name("renamed")).await?;
    keys.disable(&id).await?;
    keys.enable(&id).await?;
    let rotated = keys.rotate(&id, Duration::ZERO).await?;
    keys.revoke(&rotated.record.id).await?;
    keys.delete(&rotated.record.id).await?;
    let seen = recorder.0.lock().map(|v| v.clone()).unwrap_or_default();
    use Action::*;
    assert_eq!(
        seen,
        vec![
            (Created, None),
            (Verified, Some(Code::Valid)),
            (Verified, Some(Code::Malformed)),
            (Updated, None),
            (Disabled, None),
            (Enabled, None),
            (Rotated, None),
            (Revoked, None),
            (Deleted, None),
        ]
    );
    Ok(())
}

#[derive(Default)]
struct TagRecorder(Mutex<Vec<(Option<Code>, Vec<String>)>>);

impl EventSink for TagRecorder {
    fn record(&self, event: &Event) {
        if event.action == Action::Verified {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).push((event.code, event.tags.to_vec()));
        }
    }
}

#[tokio::test]
async fn verified_events_carry_the_tags_of_the_verification() -> Result {
    let recorder = Arc::new(TagRecorder::default());
    let keys = KeyManager::builder().event_sink(recorder.clone()).store(MemoryStore::new()).build()?;
    let created = keys.create(NewKey::new().scopes(["read"])).await?;
    let key = created.key.expose();
    let tags = Tags::new(["GET /orders", "eu", "GET /orders"])?;
    keys.verify_with(key, &VerifyOptions::new().tags(tags.clone())).await?;
    keys.verify_with(key, &VerifyOptions::new().scopes(["admin"]).tags(tags)).await?;
    keys.verify(key).await?;
    keys.verify_with("garbage", &VerifyOptions::new().tags(Tags::new(["x"])?)).await?;
    let seen = recorder.0.lock().map(|v| v.clone()).unwrap_or_default();
    let both = vec!["GET /orders".to_owned(), "eu".to_owned()];
    assert_eq!(
        seen,
        vec![
            (Some(Code::Valid), both.clone()),
            (Some(Code::InsufficientScope), both),
            (Some(Code::Valid), vec![]),
            (Some(Code::Malformed), vec!["x".to_owned()]),
        ]
    );
    Ok(())
}

#[tokio::test]
async fn slow_hash_results_are_cached_and_changes_drop_the_cache() -> Result {
    let keys = KeyManager::builder()
        .hash(HashAlgorithm::Bcrypt)
        .bcrypt_cost(4)
        .cache(CacheMode::Auto)
        .store(MemoryStore::new())
        .build()?;
    let created = keys.create(NewKey::new().scopes(["read"])).await?;
    let key = created.key.expose();
    assert!(keys.verify(key).await?.is_valid());
    assert!(keys.verify(key).await?.is_valid());
    // Every change through the manager is seen at once despite the cache.
    keys.update(&created.record.id, KeyPatch::new().scopes(["write"])).await?;
    let read = VerifyOptions::new().scopes(["read"]);
    assert_eq!(keys.verify_with(key, &read).await?.code(), Code::InsufficientScope);
    keys.disable(&created.record.id).await?;
    assert_eq!(keys.verify(key).await?.code(), Code::Disabled);
    keys.enable(&created.record.id).await?;
    assert!(keys.verify(key).await?.is_valid());
    keys.revoke(&created.record.id).await?;
    assert_eq!(keys.verify(key).await?.code(), Code::Revoked);
    Ok(())
}

#[tokio::test]
async fn outdated_hashes_are_rehashed_after_a_successful_verify() -> Result {
    let store = Arc::new(MemoryStore::new());
    let old = KeyManager::builder().hash(HashAlgorithm::Sha512).store(store.clone()).build()?;
    let created = old.create(NewKey::new()).await?;
    assert!(created.record.hash.starts_with("$sha512$"));
    // The policy changes to SHA-256: the SHA-512 key still verifies and is re-hashed.
    let new = KeyManager::builder().hash(HashAlgorithm::Sha256).store(store.clone()).build()?;
    // Digest lookup finds it (the lookup is the key's SHA-256 whatever the stored hash).
    assert!(new.verify(created.key.expose()).await?.is_valid());
    assert!(new.get(&created.record.id).await?.hash.starts_with("$sha256$"));
    assert!(new.verify(created.key.expose()).await?.is_valid());
    Ok(())
}

#[tokio::test]
async fn hmac_pepper_rotation_keeps_old_keys_and_rehashes_them() -> Result {
    let store = Arc::new(MemoryStore::new());
    let v1 = KeyManager::builder()
        .hash(HashAlgorithm::HmacSha256)
        .pepper("p1", "first-pepper-0123456789")
        .store(store.clone())
        .build()?;
    let created = v1.create(NewKey::new()).await?;
    assert!(created.record.hash.starts_with("$hmac-sha256$kid=p1$"));
    let v2 = KeyManager::builder()
        .hash(HashAlgorithm::HmacSha256)
        .pepper("p1", "first-pepper-0123456789")
        .pepper("p2", "second-pepper-0123456789")
        .store(store.clone())
        .build()?;
    assert!(v2.verify(created.key.expose()).await?.is_valid());
    assert!(v2.get(&created.record.id).await?.hash.starts_with("$hmac-sha256$kid=p2$"));
    // Without the pepper, nothing verifies: a leaked database alone is not enough.
    let stranger = KeyManager::builder()
        .hash(HashAlgorithm::HmacSha256)
        .pepper("p2", "another-pepper-entirely")
        .store(store)
        .build()?;
    assert_eq!(stranger.verify(created.key.expose()).await?.code(), Code::NotFound);
    Ok(())
}

/// A MemoryStore that, on the next `find`, first lets the clock move and changes the
/// key the way a concurrent request would: the change completes while the lookup is
/// under way, after the verification started.
struct ChangesDuringLookup {
    inner: MemoryStore,
    clock: Arc<ManualClock>,
    change: Mutex<Option<(keypal::KeyId, Change)>>,
}

#[derive(Clone, Copy)]
enum Change {
    Revoke,
    ExpireNow,
}

impl ChangesDuringLookup {
    async fn apply_pending_change(&self) {
        use keypal::Store;
        let pending = self.change.lock().map(|mut c| c.take()).unwrap_or(None);
        let Some((id, change)) = pending else { return };
        self.clock.advance(Duration::from_secs(1));
        let now = self.clock.now();
        let context = keypal::AuditContext::default();
        let _ = match change {
            Change::Revoke => self.inner.revoke(id, now, Event::new(Action::Revoked, now, context)).await,
            Change::ExpireNow => {
                let patch = KeyPatch::new().expires_at(now);
                self.inner.update(id, &patch, Event::new(Action::Updated, now, context)).await
            }
        };
    }
}

impl keypal::Store for ChangesDuringLookup {
    const IN_MEMORY: bool = true;

    async fn insert(
        &self,
        record: keypal::KeyRecord,
        max_active_per_owner: Option<u32>,
        event: Event,
    ) -> std::result::Result<Arc<keypal::KeyRecord>, keypal::StoreError> {
        self.inner.insert(record, max_active_per_owner, event).await
    }
    async fn find(
        &self,
        lookup: &keypal::Lookup,
    ) -> std::result::Result<Option<Arc<keypal::KeyRecord>>, keypal::StoreError> {
        self.apply_pending_change().await;
        self.inner.find(lookup).await
    }
    async fn find_by_hint(&self, hint: &str) -> std::result::Result<Vec<Arc<keypal::KeyRecord>>, keypal::StoreError> {
        self.inner.find_by_hint(hint).await
    }
    async fn get(&self, id: keypal::KeyId) -> std::result::Result<Option<Arc<keypal::KeyRecord>>, keypal::StoreError> {
        self.inner.get(id).await
    }
    async fn list(
        &self,
        query: &keypal::ListQuery,
    ) -> std::result::Result<keypal::Page<Arc<keypal::KeyRecord>>, keypal::StoreError> {
        self.inner.list(query).await
    }
    async fn count(&self, query: &keypal::ListQuery) -> std::result::Result<u64, keypal::StoreError> {
        self.inner.count(query).await
    }
    async fn update(
        &self,
        id: keypal::KeyId,
        patch: &KeyPatch,
        event: Event,
    ) -> std::result::Result<Arc<keypal::KeyRecord>, keypal::StoreError> {
        self.inner.update(id, patch, event).await
    }
    async fn set_enabled(
        &self,
        id: keypal::KeyId,
        enabled: bool,
        event: Event,
    ) -> std::result::Result<Arc<keypal::KeyRecord>, keypal::StoreError> {
        self.inner.set_enabled(id, enabled, event).await
    }
    async fn revoke(
        &self,
        id: keypal::KeyId,
        at: time::OffsetDateTime,
        event: Event,
    ) -> std::result::Result<Arc<keypal::KeyRecord>, keypal::StoreError> {
        self.inner.revoke(id, at, event).await
    }
    async fn revoke_owner(
        &self,
        namespace: Option<&str>,
        owner: &str,
        at: time::OffsetDateTime,
        event: Event,
    ) -> std::result::Result<Vec<Arc<keypal::KeyRecord>>, keypal::StoreError> {
        self.inner.revoke_owner(namespace, owner, at, event).await
    }
    async fn rotate(
        &self,
        old: keypal::KeyId,
        replacement: keypal::KeyRecord,
        old_revoked_at: time::OffsetDateTime,
        event: Event,
    ) -> std::result::Result<(Arc<keypal::KeyRecord>, Arc<keypal::KeyRecord>), keypal::StoreError> {
        self.inner.rotate(old, replacement, old_revoked_at, event).await
    }
    async fn delete(
        &self,
        id: keypal::KeyId,
        event: Event,
    ) -> std::result::Result<Option<Arc<keypal::KeyRecord>>, keypal::StoreError> {
        self.inner.delete(id, event).await
    }
    async fn consume(
        &self,
        id: keypal::KeyId,
        cost: u64,
        refill_due: Option<time::OffsetDateTime>,
    ) -> std::result::Result<keypal::Credits, keypal::StoreError> {
        self.inner.consume(id, cost, refill_due).await
    }
    async fn adjust_credits(
        &self,
        id: keypal::KeyId,
        op: keypal::CreditOp,
        refill_due: Option<time::OffsetDateTime>,
        event: Event,
    ) -> std::result::Result<Arc<keypal::KeyRecord>, keypal::StoreError> {
        self.inner.adjust_credits(id, op, refill_due, event).await
    }
    async fn touch(
        &self,
        used: &[(keypal::KeyId, time::OffsetDateTime)],
    ) -> std::result::Result<(), keypal::StoreError> {
        self.inner.touch(used).await
    }
    async fn replace_hash(
        &self,
        id: keypal::KeyId,
        expected: &str,
        new_hash: &str,
        new_lookup: &keypal::Lookup,
    ) -> std::result::Result<bool, keypal::StoreError> {
        self.inner.replace_hash(id, expected, new_hash, new_lookup).await
    }
    async fn audit(&self, query: &keypal::AuditQuery) -> std::result::Result<keypal::Page<Event>, keypal::StoreError> {
        self.inner.audit(query).await
    }
}

/// The time of a request is read before the lookup, but a revocation or an expiry
/// that took effect before the store answered is judged as done.
#[tokio::test]
async fn a_state_change_completed_during_the_lookup_is_judged_as_done() -> Result {
    for (change, code) in [(Change::Revoke, Code::Revoked), (Change::ExpireNow, Code::Expired)] {
        let clock = Arc::new(ManualClock::starting_now());
        let store = ChangesDuringLookup { inner: MemoryStore::new(), clock: clock.clone(), change: Mutex::new(None) };
        let keys = KeyManager::builder().prefix("sk_test").clock(clock).store(store).build()?;
        let created = keys.create(NewKey::new()).await?;
        assert!(keys.verify(created.key.expose()).await?.is_valid());
        if let Ok(mut pending) = keys.store().change.lock() {
            *pending = Some((created.record.id, change));
        }
        assert_eq!(keys.verify(created.key.expose()).await?.code(), code);
    }
    Ok(())
}
