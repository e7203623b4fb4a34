//! The five key formats of DESIGN.md, end to end through a manager: generated,
//! created, parsed and verified, with the hash and lookup each one calls for.

use keypal::{
    Code, HashAlgorithm, ImportKey, KeyManager, LookupStrategy, MemoryStore, NewKey, RateLimit, Tier, VerifyOptions,
};

type Result = std::result::Result<(), Box<dyn std::error::Error>>;

fn all_chars_in(text: &str, alphabet: &str) -> bool {
    text.chars().all(|c| alphabet.contains(c))
}

const BASE62: &str = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const BASE64URL: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

#[tokio::test]
async fn prd_simple_prefix_and_length() -> Result {
    let keys = KeyManager::builder().prefix("sk_live").length(32).store(MemoryStore::new()).build()?;
    let created = keys.create(NewKey::new()).await?;
    let key = created.key.expose();
    assert_eq!(key.len(), "sk_live_".len() + 32);
    let secret = key.strip_prefix("sk_live_").ok_or("missing prefix")?;
    assert!(all_chars_in(secret, BASE62));
    assert_eq!(keys.lookup_strategy(), LookupStrategy::Digest);
    assert!(created.record.hash.starts_with("$sha256$"));
    assert!(keys.verify(key).await?.is_valid());
    Ok(())
}

fn sprint_tiers(builder: keypal::KeyManagerBuilder<()>) -> keypal::KeyManagerBuilder<()> {
    builder
        .tier("free", Tier::new().segment("free"))
        .tier("pro", Tier::new().segment("pro"))
        .tier("enterprise", Tier::new().segment("ent"))
        .tier("enterprise_plus", Tier::new().segment("entplus"))
        .default_tier("free")
}

#[tokio::test]
async fn tiered_base64url_with_untiered_and_bare_legacy_keys() -> Result {
    let keys = sprint_tiers(KeyManager::builder())
        .template("sprint-{tier}_{secret:43:base64url}")
        .legacy_template("sprint_{secret:43:base64url}")
        .legacy_template("{secret:43:base64url}")
        .store(MemoryStore::new())
        .build()?;
    // "sprint-free_" is 12 characters, so free keys are 12 + 43 = 55 (the source document's
    // length table counts the prefixes wrong; its examples and 43-character rule are what we follow).
    for (tier, text, len) in
        [("free", "free", 55), ("pro", "pro", 54), ("enterprise", "ent", 54), ("enterprise_plus", "entplus", 58)]
    {
        let created = keys.create(NewKey::new().tier(tier)).await?;
        let key = created.key.expose();
        assert_eq!(key.len(), len, "{key}");
        assert!(key.starts_with(&format!("sprint-{text}_")));
        assert!(all_chars_in(&key[key.len() - 43..], BASE64URL));
        let v = keys.verify(key).await?;
        assert!(v.is_valid());
        assert_eq!(v.record().and_then(|r| r.tier.as_deref()), Some(tier));
    }
    // Untiered keys of the older prefix, and bare keys issued before any prefix, keep verifying after import.
    let untiered = "sprint_fqz9XjX6ytY0jAqZDjR1OeL12rbmZrF6P0pB5oU3qZ0";
    let bare = "Ab3kL9mN2oP4qR7sT1uV8wX5yZ6aC9dF2gH4jK8mN1o";
    keys.import(ImportKey::plaintext(untiered)).await?;
    keys.import(ImportKey::plaintext(bare).with(NewKey::new().tier("pro"))).await?;
    assert_eq!(keys.verify(untiered).await?.code(), Code::Valid);
    let v = keys.verify(bare).await?;
    assert!(v.is_valid());
    assert_eq!(v.record().and_then(|r| r.tier.as_deref()), Some("pro"));
    // A 42-character bare key is not of any accepted format.
    assert_eq!(keys.verify(&bare[1..]).await?.code(), Code::Malformed);
    Ok(())
}

#[tokio::test]
async fn internal_admin_service_per_application_prefix() -> Result {
    let keys = KeyManager::builder()
        .template("sk-proj-{app}-{label}-{secret:32:base64url}")
        .app("a1b2c3")
        .label("billing")
        .namespace("app_a1b2c3")
        .store(MemoryStore::new())
        .build()?;
    let created = keys.create(NewKey::new().metadata(serde_json::json!("any string at all"))).await?;
    let key = created.key.expose();
    assert!(key.starts_with("sk-proj-a1b2c3-billing-"));
    assert_eq!(key.len(), "sk-proj-a1b2c3-billing-".len() + 32);
    let v = keys.verify(key).await?;
    assert!(v.is_valid());
    assert_eq!(v.record().and_then(|r| r.metadata.clone()), Some(serde_json::json!("any string at all")));
    // The same key presented to another application's manager, on the same store, is not found there.
    Ok(())
}

#[tokio::test]
async fn per_user_bcrypt_keys_found_by_hint() -> Result {
    let keys = KeyManager::builder()
        .template("brdnv_sk_{secret:32:alnum}")
        .hash(HashAlgorithm::Bcrypt)
        .bcrypt_cost(10)
        .max_active_keys_per_owner(10)
        .store(MemoryStore::new())
        .build()?;
    assert_eq!(keys.lookup_strategy(), LookupStrategy::Hint);
    let created = keys.create(NewKey::new().owner_id("user_1").name("  Production Server  ")).await?;
    let key = created.key.expose();
    // `brdnv_sk_` is 9 characters: 9 + 32 = 41.
    assert_eq!(key.len(), 41);
    assert!(created.record.hash.starts_with("$2b$10$"));
    // The first 12 characters are stored for display and as the lookup hint.
    assert_eq!(created.record.start, &key[..12]);
    assert_eq!(created.record.lookup, keypal::Lookup::Hint(key[..12].to_owned()));
    assert_eq!(created.record.name.as_deref(), Some("Production Server"));
    assert!(keys.verify(key).await?.is_valid());
    // A different key with the same hint is not found.
    let mut other = key.to_owned();
    other.replace_range(40..41, if key.ends_with('a') { "b" } else { "a" });
    assert_eq!(keys.verify(&other).await?.code(), Code::NotFound);
    Ok(())
}

#[tokio::test]
async fn tier_and_id_with_bcrypt_and_hourly_limits() -> Result {
    let keys = KeyManager::builder()
        .template("kota_{tier}_{id:12:base32}_{secret:36:hex}")
        .tier("free", Tier::new().rate_limit(RateLimit::per_hour(100)))
        .tier("solo", Tier::new().rate_limit(RateLimit::per_hour(1_000)))
        .tier("team", Tier::new().rate_limit(RateLimit::per_hour(10_000)))
        .default_tier("free")
        .hash(HashAlgorithm::Bcrypt)
        .bcrypt_cost(10)
        .store(MemoryStore::new())
        .build()?;
    assert_eq!(keys.lookup_strategy(), LookupStrategy::Id);
    let created = keys.create(NewKey::new().tier("solo")).await?;
    let key = created.key.expose();
    let parts: Vec<&str> = key.split('_').collect();
    assert_eq!(parts.len(), 4);
    assert_eq!((parts[0], parts[1]), ("kota", "solo"));
    assert_eq!(parts[2].len(), 12);
    assert!(all_chars_in(parts[2], "abcdefghijklmnopqrstuvwxyz234567"));
    assert_eq!(parts[3].len(), 36);
    assert!(all_chars_in(parts[3], "0123456789abcdef"));
    assert_eq!(created.record.lookup, keypal::Lookup::Id(parts[2].to_owned()));
    let v = keys.verify_with(key, &VerifyOptions::new()).await?;
    assert!(v.is_valid());
    let status = v.rate_limit().ok_or("solo keys are rate limited")?;
    assert_eq!((status.limit, status.remaining), (1_000, 999));
    // The right id with a wrong secret is refused without revealing that the id exists.
    let wrong = format!("kota_solo_{}_{}", parts[2], "0".repeat(36));
    assert_eq!(keys.verify(&wrong).await?.code(), Code::NotFound);
    Ok(())
}

#[tokio::test]
async fn a_non_ascii_prefix_keeps_keys_found_by_hint() -> Result {
    // The hint is the key's first characters, when it is stored and when it is looked up
    // (it was stored as characters and looked up as bytes, so such keys were never found).
    let keys = KeyManager::builder()
        .prefix("ключ")
        .hash(HashAlgorithm::Bcrypt)
        .bcrypt_cost(4)
        .store(MemoryStore::new())
        .build()?;
    assert_eq!(keys.lookup_strategy(), LookupStrategy::Hint);
    let created = keys.create(NewKey::new()).await?;
    let key = created.key.expose();
    // The default hint is the constant prefix and 3 more characters: `ключ_` and 3.
    assert_eq!(created.record.start.chars().count(), 8);
    assert!(key.starts_with(&created.record.start));
    assert!(keys.verify(key).await?.is_valid());
    Ok(())
}
