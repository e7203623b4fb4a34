//! Creating, listing, changing, rotating, importing and deleting keys.

use std::sync::Arc;
use std::time::Duration;

use keypal::{
    Action, AuditContext, AuditQuery, Clock, Code, Error, Formatter, HashAlgorithm, ImportKey, KeyManager, KeyPatch,
    ListQuery, ManualClock, MemoryStore, NewKey, ParsedKey, PlainKey,
};

type Result = std::result::Result<(), Box<dyn std::error::Error>>;

fn plain() -> std::result::Result<KeyManager<MemoryStore>, Error> {
    KeyManager::builder().prefix("sk_test").store(MemoryStore::new()).build()
}

#[tokio::test]
async fn rotation_keeps_everything_but_the_secret_and_honours_the_grace_window() -> Result {
    let clock = Arc::new(ManualClock::starting_now());
    let keys = KeyManager::builder().clock(clock.clone()).store(MemoryStore::new()).build()?;
    let old = keys
        .create(
            NewKey::new()
                .name("deploys")
                .owner_id("u1")
                .scopes(["read"])
                .metadata(serde_json::json!({"plan": "pro"}))
                .remaining(50)
                .expires_in(Duration::from_secs(3600)),
        )
        .await?;
    let rotated = keys.rotate(&old.record.id, Duration::from_secs(300)).await?;
    let new = &rotated.record;
    assert_ne!(rotated.key.expose(), old.key.expose());
    assert_eq!(
        (&new.name, &new.owner_id, &new.scopes, &new.metadata, new.remaining, new.expires_at),
        (
            &old.record.name,
            &old.record.owner_id,
            &old.record.scopes,
            &old.record.metadata,
            Some(50),
            old.record.expires_at
        )
    );
    assert_eq!(new.rotated_from, Some(old.record.id));
    assert_eq!(rotated.previous.rotated_to, Some(new.id));
    // Both work inside the grace window; the old one stops at its end.
    assert!(keys.verify(old.key.expose()).await?.is_valid());
    assert!(keys.verify(rotated.key.expose()).await?.is_valid());
    clock.advance(Duration::from_secs(300));
    assert_eq!(keys.verify(old.key.expose()).await?.code(), Code::Revoked);
    assert!(keys.verify(rotated.key.expose()).await?.is_valid());
    // A revoked key cannot be rotated.
    assert!(matches!(keys.rotate(&old.record.id, Duration::ZERO).await, Err(Error::AlreadyRevoked(_))));
    Ok(())
}

#[tokio::test]
async fn grace_never_outlives_the_old_keys_expiry() -> Result {
    let clock = Arc::new(ManualClock::starting_now());
    let keys = KeyManager::builder().clock(clock.clone()).store(MemoryStore::new()).build()?;
    let old = keys.create(NewKey::new().expires_in(Duration::from_secs(60))).await?;
    let rotated = keys.rotate(&old.record.id, Duration::from_secs(3600)).await?;
    assert_eq!(rotated.previous.revoked_at, old.record.expires_at);
    clock.advance(Duration::from_secs(60));
    assert_ne!(keys.verify(old.key.expose()).await?.code(), Code::Valid);
    Ok(())
}

#[tokio::test]
async fn revoking_inside_the_grace_window_ends_it() -> Result {
    let keys = plain()?;
    let old = keys.create(NewKey::new()).await?;
    keys.rotate(&old.record.id, Duration::from_secs(3600)).await?;
    assert!(keys.verify(old.key.expose()).await?.is_valid());
    // It already has its replacement: no second one.
    assert!(matches!(keys.rotate(&old.record.id, Duration::ZERO).await, Err(Error::AlreadyRevoked(_))));
    keys.revoke(&old.record.id).await?;
    assert_eq!(keys.verify(old.key.expose()).await?.code(), Code::Revoked);
    assert!(matches!(keys.revoke(&old.record.id).await, Err(Error::AlreadyRevoked(_))));
    Ok(())
}

#[tokio::test]
async fn max_active_keys_per_owner_ignores_revoked_and_expired_keys() -> Result {
    let clock = Arc::new(ManualClock::starting_now());
    let keys =
        KeyManager::builder().max_active_keys_per_owner(2).clock(clock.clone()).store(MemoryStore::new()).build()?;
    let a = keys.create(NewKey::new().owner_id("u1")).await?;
    keys.create(NewKey::new().owner_id("u1").expires_in(Duration::from_secs(10))).await?;
    let third = keys.create(NewKey::new().owner_id("u1")).await;
    assert!(matches!(third, Err(Error::LimitReached { limit: 2 })));
    assert_eq!(third.err().map(|e| e.code()), Some("KEY_LIMIT_REACHED"));
    keys.create(NewKey::new().owner_id("u2")).await?;
    keys.revoke(&a.record.id).await?;
    keys.create(NewKey::new().owner_id("u1")).await?;
    clock.advance(Duration::from_secs(10));
    keys.create(NewKey::new().owner_id("u1")).await?;
    assert_eq!(keys.count(ListQuery::new().owner_id("u1")).await?, 3);
    Ok(())
}

#[tokio::test]
async fn sixty_four_concurrent_creates_against_a_limit_of_ten_leave_ten() -> Result {
    let keys = KeyManager::builder().max_active_keys_per_owner(10).store(MemoryStore::new()).build()?;
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let keys = keys.clone();
            tokio::spawn(async move { keys.create(NewKey::new().owner_id("busy")).await })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        match task.await? {
            Ok(_) => created += 1,
            Err(Error::LimitReached { limit: 10 }) => {}
            Err(other) => return Err(other.into()),
        }
    }
    assert_eq!(created, 10);
    assert_eq!(keys.count(ListQuery::new().owner_id("busy")).await?, 10);
    Ok(())
}

#[tokio::test]
async fn names_are_trimmed_and_bounded_and_expiry_is_bounded() -> Result {
    let keys = KeyManager::builder()
        .name_policy(keypal::config::NamePolicy { required: true, min_length: 1, max_length: 100 })
        .expiry_bounds(Some(Duration::from_secs(86_400)), Some(Duration::from_secs(365 * 86_400)))
        .default_expiry(Duration::from_secs(30 * 86_400))
        .store(MemoryStore::new())
        .build()?;
    let invalid_field = |r: std::result::Result<keypal::Created, Error>| match r {
        Err(Error::Invalid { field, .. }) => field,
        other => format!("unexpected {other:?}"),
    };
    assert_eq!(invalid_field(keys.create(NewKey::new()).await), "name");
    assert_eq!(invalid_field(keys.create(NewKey::new().name("   ")).await), "name");
    assert_eq!(invalid_field(keys.create(NewKey::new().name("x".repeat(101))).await), "name");
    let day = Duration::from_secs(86_400);
    assert_eq!(invalid_field(keys.create(NewKey::new().name("a").expires_in(day / 2)).await), "expires_at");
    assert_eq!(invalid_field(keys.create(NewKey::new().name("a").expires_in(day * 366)).await), "expires_at");
    assert_eq!(invalid_field(keys.create(NewKey::new().name("a").never_expires()).await), "expires_at");
    assert_eq!(invalid_field(keys.create(NewKey::new().name("a").scopes(["bad scope"])).await), "scopes[0]");
    assert_eq!(invalid_field(keys.create(NewKey::new().name("a").tier("gold")).await), "tier");
    let ok = keys.create(NewKey::new().name(format!("  {}  ", "é".repeat(100)))).await?;
    assert_eq!(ok.record.name.as_deref().map(|n| n.chars().count()), Some(100));
    let lifetime = ok.record.expires_at.ok_or("default expiry")? - ok.record.created_at;
    assert_eq!(lifetime, day * 30);
    // Nothing was stored by the refused requests.
    assert_eq!(keys.count(ListQuery::new().include_revoked(true)).await?, 1);

    // An update is held to the same bounds: no expiry in the past, none beyond the
    // longest lifetime, and a key that must expire cannot be made to live forever.
    let refused = |r: std::result::Result<keypal::KeyRecord, Error>| match r {
        Err(Error::Invalid { field, .. }) => field,
        other => format!("unexpected {other:?}"),
    };
    let id = ok.record.id;
    let now = time::OffsetDateTime::now_utc();
    assert_eq!(refused(keys.update(&id, KeyPatch::new().expires_at(now - day)).await), "expires_at");
    assert_eq!(refused(keys.update(&id, KeyPatch::new().expires_at(now + day / 2)).await), "expires_at");
    assert_eq!(refused(keys.update(&id, KeyPatch::new().expires_at(now + day * 366)).await), "expires_at");
    assert_eq!(refused(keys.update(&id, KeyPatch::new().clear_expiry()).await), "expires_at");
    assert_eq!(keys.get(&id).await?.expires_at, ok.record.expires_at, "a refused update changes nothing");
    let extended = keys.update(&id, KeyPatch::new().expires_at(now + day * 300)).await?;
    assert_eq!(extended.expires_at, Some(keypal::clock::truncate_to_micros(now + day * 300)));
    Ok(())
}

#[tokio::test]
async fn an_expired_key_stays_expired_so_the_owner_limit_holds() -> Result {
    let clock = Arc::new(ManualClock::starting_now());
    let day = Duration::from_secs(86_400);
    let keys =
        KeyManager::builder().max_active_keys_per_owner(1).clock(clock.clone()).store(MemoryStore::new()).build()?;
    let old = keys.create(NewKey::new().owner_id("u").expires_in(day)).await?;
    clock.advance(day * 2);
    // The expired key no longer counts: a new one may be created.
    keys.create(NewKey::new().owner_id("u")).await?;
    let refused = |r: std::result::Result<keypal::KeyRecord, Error>| match r {
        Err(Error::Invalid { field, .. }) => field,
        other => format!("unexpected {other:?}"),
    };
    let later = time::OffsetDateTime::now_utc() + day * 30;
    assert_eq!(refused(keys.update(&old.record.id, KeyPatch::new().expires_at(later)).await), "expires_at");
    assert_eq!(refused(keys.update(&old.record.id, KeyPatch::new().clear_expiry()).await), "expires_at");
    assert_eq!(keys.get(&old.record.id).await?.expires_at, old.record.expires_at, "still expired");
    Ok(())
}

#[tokio::test]
async fn an_expiry_sent_back_unchanged_is_no_change() -> Result {
    let clock = Arc::new(ManualClock::starting_now());
    let day = Duration::from_secs(86_400);
    let keys = KeyManager::builder()
        .expiry_bounds(Some(day), Some(day * 365))
        .clock(clock.clone())
        .store(MemoryStore::new())
        .build()?;
    let created = keys.create(NewKey::new().expires_in(day * 2)).await?;
    let expires_at = created.record.expires_at.ok_or("an expiry")?;
    // Within a day of its expiry, then past it: a new expiry there would be refused,
    // the same one sent back with a new name is not.
    for advance in [day * 3 / 2, day] {
        clock.advance(advance);
        let renamed = keys.update(&created.record.id, KeyPatch::new().name("renamed").expires_at(expires_at)).await?;
        assert_eq!((renamed.name.as_deref(), renamed.expires_at), (Some("renamed"), Some(expires_at)));
    }
    Ok(())
}

#[tokio::test]
async fn list_is_newest_first_paginated_and_filters_revoked() -> Result {
    let keys = plain()?;
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(keys.create(NewKey::new().owner_id("u1").name(format!("k{i}"))).await?.record.id);
    }
    keys.create(NewKey::new().owner_id("u2")).await?;
    keys.revoke(&ids[3]).await?;
    let mut seen = Vec::new();
    let mut query = ListQuery::new().owner_id("u1").limit(3);
    loop {
        let page = keys.list(query.clone()).await?;
        seen.extend(page.items.iter().map(|r| r.id));
        match page.next_cursor {
            Some(cursor) => query = query.cursor(cursor),
            None => break,
        }
    }
    let expected: Vec<_> = ids.iter().rev().filter(|id| **id != ids[3]).copied().collect();
    assert_eq!(seen, expected);
    let all = keys.list(ListQuery::new().owner_id("u1").include_revoked(true).limit(100)).await?;
    assert_eq!(all.items.len(), 7);
    Ok(())
}

#[tokio::test]
async fn update_changes_only_the_named_fields() -> Result {
    let keys = plain()?;
    let created = keys
        .create(NewKey::new().name("n").owner_id("u").scopes(["a"]).metadata(serde_json::json!({"k": 1})).remaining(9))
        .await?;
    let id = created.record.id;
    let after = keys.update(&id, KeyPatch::new().metadata(Some(serde_json::json!("plain string")))).await?;
    assert_eq!(after.metadata, Some(serde_json::json!("plain string")));
    assert_eq!((after.name.as_deref(), after.remaining, &after.scopes), (Some("n"), Some(9), &vec!["a".to_owned()]));
    assert_eq!(after.version, created.record.version + 1);
    let cleared = keys.update(&id, KeyPatch::new().remaining(None).clear_expiry()).await?;
    assert_eq!(cleared.remaining, None);
    assert!(matches!(
        keys.update(&id, KeyPatch::new().scopes(["no spaces allowed"])).await,
        Err(Error::Invalid { .. })
    ));
    assert!(matches!(keys.update(&keypal::KeyId::new(), KeyPatch::new().name("x")).await, Err(Error::NotFound(_))));
    Ok(())
}

#[tokio::test]
async fn revoke_all_revokes_one_owners_keys_only() -> Result {
    let keys = plain()?;
    let a1 = keys.create(NewKey::new().owner_id("a")).await?;
    let a2 = keys.create(NewKey::new().owner_id("a")).await?;
    let b = keys.create(NewKey::new().owner_id("b")).await?;
    let revoked = keys.revoke_all("a").await?;
    assert_eq!(revoked.len(), 2);
    assert_eq!(keys.verify(a1.key.expose()).await?.code(), Code::Revoked);
    assert_eq!(keys.verify(a2.key.expose()).await?.code(), Code::Revoked);
    assert!(keys.verify(b.key.expose()).await?.is_valid());
    assert!(keys.revoke_all("a").await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn delete_removes_the_key_for_good() -> Result {
    let keys = plain()?;
    let created = keys.create(NewKey::new()).await?;
    keys.delete(&created.record.id).await?;
    assert_eq!(keys.verify(created.key.expose()).await?.code(), Code::NotFound);
    assert!(matches!(keys.get(&created.record.id).await, Err(Error::NotFound(_))));
    assert!(matches!(keys.delete(&created.record.id).await, Err(Error::NotFound(_))));
    Ok(())
}

#[tokio::test]
async fn namespaces_do_not_see_each_others_keys() -> Result {
    let store = Arc::new(MemoryStore::new());
    let app_a = KeyManager::builder().namespace("a").store(store.clone()).build()?;
    let app_b = KeyManager::builder().namespace("b").store(store.clone()).build()?;
    let key = app_a.create(NewKey::new().owner_id("u")).await?;
    assert!(app_a.verify(key.key.expose()).await?.is_valid());
    assert_eq!(app_b.verify(key.key.expose()).await?.code(), Code::NotFound);
    assert!(matches!(app_b.revoke(&key.record.id).await, Err(Error::NotFound(_))));
    assert!(app_b.list(ListQuery::new()).await?.items.is_empty());
    assert!(app_b.revoke_all("u").await?.is_empty());
    assert!(app_a.verify(key.key.expose()).await?.is_valid());
    Ok(())
}

#[tokio::test]
async fn imports_of_sha256_digests_and_bcrypt_hashes_keep_old_keys_working() -> Result {
    // SHA-256 hex digests from a system that stored them (the key is "legacy_" + 32 base62).
    let keys = KeyManager::builder().prefix("legacy").store(MemoryStore::new()).build()?;
    let old_key = "legacy_0123456789abcdefABCDEF0123456789";
    let digest = "a6e3a0cbe26bc1e2c3b0b1d62fb62acee7f1d8e9cd9a2cf9b6c9e0b0e3a5c1d2";
    let real_digest = keypal::hash::sha256(old_key.as_bytes());
    let hex: String = real_digest.iter().map(|b| format!("{b:02X}")).collect();
    assert!(matches!(keys.import(ImportKey::sha256_hex("not hex")).await, Err(Error::Hash(_))));
    keys.import(ImportKey::sha256_hex(digest)).await?;
    keys.import(ImportKey::sha256_hex(hex).with(NewKey::new().owner_id("u1"))).await?;
    let v = keys.verify(old_key).await?;
    assert!(v.is_valid());
    assert_eq!(v.record().and_then(|r| r.owner_id.as_deref()), Some("u1"));

    // bcrypt hashes stored with the key's first 12 characters, as per-user key systems do.
    let keys = KeyManager::builder()
        .template("brdnv_sk_{secret:32:alnum}")
        .hash(HashAlgorithm::Bcrypt)
        .bcrypt_cost(4)
        .store(MemoryStore::new())
        .build()?;
    let old_key = keys.generate_key();
    let bcrypt_hash = bcrypt_hash_of(old_key.expose());
    let missing_hint = keys.import(ImportKey::bcrypt(bcrypt_hash.clone())).await;
    assert!(matches!(missing_hint, Err(Error::Invalid { ref field, .. }) if field == "hint"));
    keys.import(ImportKey::bcrypt(bcrypt_hash).hint(old_key.start(12)).last4(old_key.end(4))).await?;
    assert!(keys.verify(old_key.expose()).await?.is_valid());
    // A plaintext that parses under no accepted format is refused.
    assert!(matches!(keys.import(ImportKey::plaintext("sk_other_0000")).await, Err(Error::Invalid { .. })));
    Ok(())
}

/// A bcrypt hash made the way another system would have made it.
fn bcrypt_hash_of(key: &str) -> String {
    let hasher = keypal::hash::BcryptHasher::new(4).map(|h| keypal::Hasher::hash(&h, key.as_bytes()));
    hasher.unwrap_or_default()
}

/// A format that always draws the same id, to force collisions.
#[derive(Debug)]
struct SameIdEveryTime;

impl Formatter for SameIdEveryTime {
    fn generate(&self, _tier: Option<&str>) -> std::result::Result<PlainKey, keypal::format::FormatError> {
        let secret = keypal::format::random_string(keypal::Encoding::Hex, 32)?;
        Ok(PlainKey::new(format!("fixed_AAAA_{secret}")))
    }
    fn parse<'k>(&'k self, key: &'k str) -> Option<ParsedKey<'k>> {
        let rest = key.strip_prefix("fixed_")?;
        let (id, secret) = rest.split_once('_')?;
        (id.len() == 4 && secret.len() == 32).then_some(ParsedKey { id: Some(id), tier: None })
    }
    fn has_id(&self) -> bool {
        true
    }
    fn fixed_prefix_len(&self) -> usize {
        6
    }
    fn describe(&self) -> String {
        "fixed_{id}_{secret}".into()
    }
}

#[tokio::test]
async fn id_collisions_are_retried_three_times_then_reported() -> Result {
    let keys = KeyManager::builder().formatter(SameIdEveryTime).store(MemoryStore::new()).build()?;
    let first = keys.create(NewKey::new()).await?;
    assert!(keys.verify(first.key.expose()).await?.is_valid());
    let second = keys.create(NewKey::new()).await;
    assert!(matches!(second, Err(Error::Collision { attempts: 3 })));
    Ok(())
}

#[tokio::test]
async fn audit_log_records_who_did_what_and_is_queryable() -> Result {
    let clock = Arc::new(ManualClock::starting_now());
    let keys = KeyManager::builder().clock(clock.clone()).store(MemoryStore::new()).build()?;
    let admin = keys.with_context(AuditContext::new("admin").ip("203.0.113.7").user_agent("test"));
    let start = clock.now();
    let a = admin.create(NewKey::new().owner_id("u1")).await?;
    clock.advance(Duration::from_secs(10));
    let b = keys.create(NewKey::new().owner_id("u2")).await?;
    admin.revoke(&a.record.id).await?;
    keys.disable(&b.record.id).await?;

    let by_owner = keys.audit(AuditQuery::new().owner_id("u1")).await?;
    let actions: Vec<_> = by_owner.items.iter().map(|e| e.action).collect();
    assert_eq!(actions, [Action::Revoked, Action::Created]);
    assert!(
        by_owner.items.iter().all(|e| e.context.actor == "admin" && e.context.ip.as_deref() == Some("203.0.113.7"))
    );
    let revoked = keys.audit(AuditQuery::new().action(Action::Revoked)).await?;
    assert_eq!(revoked.items.len(), 1);
    let by_key = keys.audit(AuditQuery::new().key_id(b.record.id)).await?;
    assert_eq!(by_key.items.len(), 2);
    let first_ten_seconds = keys.audit(AuditQuery::new().between(start, start + Duration::from_secs(10))).await?;
    assert_eq!(first_ten_seconds.items.len(), 1);
    let page = keys.audit(AuditQuery::new().limit(3)).await?;
    let rest = keys.audit(AuditQuery::new().limit(3).cursor(page.next_cursor.ok_or("more")?)).await?;
    assert_eq!(page.items.len() + rest.items.len(), 4);
    Ok(())
}

/// A sealer that keeps the key reversed (stands in for encryption) and can be told to fail.
struct ReversingSealer {
    fail: bool,
}

impl keypal::KeySealer for ReversingSealer {
    fn seal(&self, id: keypal::KeyId, key: &keypal::PlainKey) -> std::result::Result<String, keypal::SealError> {
        if self.fail {
            return Err(keypal::SealError("no master key".into()));
        }
        Ok(format!("{id}:{}", key.expose().chars().rev().collect::<String>()))
    }
}

#[allow(clippy::expect_used)] // a test helper: a missing copy fails the test
fn unseal(record: &keypal::KeyRecord) -> String {
    let sealed = record.encrypted_key.as_deref().expect("a sealed copy");
    let (id, reversed) = sealed.split_once(':').expect("id:key");
    assert_eq!(id, record.id.to_string(), "bound to its own record");
    reversed.chars().rev().collect()
}

#[tokio::test]
async fn a_key_sealer_keeps_a_copy_of_created_rotated_and_imported_keys() -> Result {
    let keys = KeyManager::builder().store(MemoryStore::new()).key_sealer(ReversingSealer { fail: false }).build()?;
    let created = keys.create(NewKey::new()).await?;
    assert_eq!(unseal(&created.record), created.key.expose());
    let rotated = keys.rotate(&created.record.id, Duration::ZERO).await?;
    assert_eq!(unseal(&rotated.record), rotated.key.expose());
    let legacy = keys.generate_key();
    let imported = keys.import(keypal::ImportKey::plaintext(legacy.expose())).await?;
    assert_eq!(unseal(&imported), legacy.expose());

    let without = plain()?;
    assert!(without.create(NewKey::new()).await?.record.encrypted_key.is_none(), "no sealer, no copy");
    Ok(())
}

#[tokio::test]
async fn a_failing_sealer_stores_nothing() -> Result {
    let keys = KeyManager::builder().store(MemoryStore::new()).key_sealer(ReversingSealer { fail: true }).build()?;
    let error = keys.create(NewKey::new()).await.expect_err("sealing fails");
    assert_eq!(error.code(), "SEAL_ERROR");
    assert_eq!(keys.count(keypal::ListQuery::new()).await?, 0);
    Ok(())
}

#[tokio::test]
async fn expiries_and_grace_periods_beyond_a_hundred_years_are_invalid_not_a_panic() -> Result {
    let keys = plain()?;
    let too_long = Duration::from_secs(101 * 365 * 86_400);
    for after in [too_long, Duration::MAX] {
        let refused = keys.create(NewKey::new().expires_in(after)).await;
        assert!(matches!(refused, Err(Error::Invalid { ref field, .. }) if field == "expires_at"), "{refused:?}");
    }
    let created = keys.create(NewKey::new().expires_in(Duration::from_secs(100 * 365 * 86_400))).await?;
    for grace in [too_long, Duration::MAX] {
        let refused = keys.rotate(&created.record.id, grace).await;
        assert!(matches!(refused, Err(Error::Invalid { ref field, .. }) if field == "grace"), "{refused:?}");
    }
    // Nothing changed: the key still verifies and was not rotated.
    assert!(keys.verify(created.key.expose()).await?.is_valid());
    assert_eq!(keys.get(&created.record.id).await?.rotated_to, None);
    Ok(())
}
