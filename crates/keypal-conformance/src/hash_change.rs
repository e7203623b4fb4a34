//! Changing a manager's hash: keys stored under any of the five built-in algorithms
//! keep verifying under any other, are re-stored under the new one (hash and lookup,
//! through `replace_hash`) by their first successful verify, and new keys verify too.
//!
//! The managers of the core crate run over the store: a fast hash finds keys by their
//! digest, a slow one by their hint, so a change between the two moves every key from
//! one lookup to the other, which each store must carry out.

use std::sync::Arc;

use keypal::config::SecretString;
use keypal::hash::Argon2Params;
use keypal::{Code, Config, HashAlgorithm, KeyManager, KeyRecord, Lookup, NewKey, Store};

use crate::fixtures::fetch;

/// Every built-in algorithm, fast ones first.
const ALGORITHMS: [HashAlgorithm; 5] = [
    HashAlgorithm::Sha256,
    HashAlgorithm::Sha512,
    HashAlgorithm::HmacSha256,
    HashAlgorithm::Argon2id,
    HashAlgorithm::Bcrypt,
];

/// A template without `{id}`: keys are found by digest or hint, depending on the hash.
const TEMPLATE: &str = "sk_conf_{secret:32:base62}";
/// The template's constant prefix as the hint: every key of a namespace shares its
/// hint, so a slow hash's lookup always has candidates that do not match.
const HINT_LENGTH: usize = "sk_conf_".len();

/// Whether keys hashed with `algorithm` are found by hint (slow) rather than digest.
fn is_slow(algorithm: HashAlgorithm) -> bool {
    matches!(algorithm, HashAlgorithm::Argon2id | HashAlgorithm::Bcrypt)
}

/// The start of the stored strings of `algorithm`.
fn tag(algorithm: HashAlgorithm) -> &'static str {
    match algorithm {
        HashAlgorithm::Sha256 => "$sha256$",
        HashAlgorithm::Sha512 => "$sha512$",
        HashAlgorithm::HmacSha256 => "$hmac-sha256$",
        HashAlgorithm::Argon2id => "$argon2id$",
        _ => "$2b$",
    }
}

/// A manager of `namespace` hashing new keys with `algorithm` (cheap parameters for
/// the slow ones), with the HMAC pepper configured whatever the algorithm, as a
/// deployment keeps it so that HMAC hashes made before a change keep verifying.
fn manager<S: Store>(store: &Arc<S>, algorithm: HashAlgorithm, namespace: &str) -> KeyManager<Arc<S>> {
    let mut config =
        Config { template: Some(TEMPLATE.to_owned()), namespace: Some(namespace.to_owned()), ..Config::default() };
    config.lookup.hint_length = Some(HINT_LENGTH);
    config.hash.algorithm = algorithm;
    match algorithm {
        HashAlgorithm::Bcrypt => config.hash.bcrypt_cost = Some(4),
        HashAlgorithm::Argon2id => {
            config.hash.argon2 = Some(Argon2Params { memory_kib: 64, iterations: 1, parallelism: 1 });
        }
        _ => {}
    }
    config.hash.peppers.insert("p1".to_owned(), SecretString::new("conformance-pepper-0123456789"));
    config.hash.pepper_id = Some("p1".to_owned());
    KeyManager::from_config(config, store.clone())
        .unwrap_or_else(|e| panic!("a manager hashing with {}: {e}", algorithm.name()))
}

/// Asserts that `record` is stored as `algorithm` stores a new key: its hash of that
/// algorithm, found by the lookup that algorithm's strategy gives.
fn assert_stored_under(record: &KeyRecord, algorithm: HashAlgorithm, what: &str) {
    assert!(
        record.hash.starts_with(tag(algorithm)),
        "{what}: the hash must be {}, got {:?}",
        algorithm.name(),
        record.hash.split('$').nth(1)
    );
    let expected = if is_slow(algorithm) { "hint" } else { "digest" };
    assert_eq!(record.lookup.kind(), expected, "{what}: a {} hash is found by {expected}", algorithm.name());
}

/// For every pair of algorithms (from → to, the same one included): keys created
/// under `from` verify under `to`, are re-stored under `to` by that first verify
/// (hash and lookup), are found by their new lookup only, and verify again; a key
/// created under `to` verifies too.
pub async fn every_hash_change_keeps_existing_keys_verifying<S: Store>(store: S) {
    let store = Arc::new(store);
    for from in ALGORITHMS {
        for to in ALGORITHMS {
            let pair = format!("{} -> {}", from.name(), to.name());
            let namespace = format!("hash_change_{}_{}", from.name(), to.name());
            let before = manager(&store, from, &namespace);
            let mut old_keys = Vec::new();
            for n in 0..2 {
                let created = before.create(NewKey::new().name(format!("old {n}"))).await.expect("create failed");
                assert_stored_under(&created.record, from, &format!("{pair}: a key created under {}", from.name()));
                old_keys.push(created);
            }

            let after = manager(&store, to, &namespace);
            for old in &old_keys {
                let key = old.key.expose();
                let v = after.verify(key).await.expect("verify failed");
                assert_eq!(v.code(), Code::Valid, "{pair}: a key stored under {} must verify", from.name());
                let stored = fetch(&*store, old.record.id).await;
                assert_stored_under(&stored, to, &format!("{pair}: after its first verify"));
                if stored.lookup != old.record.lookup && old.record.lookup.is_unique() {
                    let by_old = store.find(&old.record.lookup).await.expect("find failed");
                    assert!(by_old.is_none(), "{pair}: the old digest must no longer find the key");
                }
                if let (Lookup::Hint(hint), false) = (&old.record.lookup, is_slow(to)) {
                    let candidates = store.find_by_hint(hint).await.expect("find_by_hint failed");
                    assert!(
                        candidates.iter().all(|r| r.id != old.record.id),
                        "{pair}: the old hint must no longer find the key"
                    );
                }
            }

            // Found again by the new lookup, not a cached result; a new key too.
            let created = after.create(NewKey::new().name("new")).await.expect("create failed");
            assert_stored_under(&created.record, to, &format!("{pair}: a key created under {}", to.name()));
            let fresh = manager(&store, to, &namespace);
            for (key, what) in
                old_keys.iter().map(|c| (c.key.expose(), "an old key")).chain([(created.key.expose(), "a new key")])
            {
                let v = fresh.verify(key).await.expect("verify failed");
                assert_eq!(v.code(), Code::Valid, "{pair}: {what} must verify under {}", to.name());
                let stored = fetch(&*store, v.record().map(|r| r.id).expect("a valid key has a record")).await;
                assert_stored_under(&stored, to, &format!("{pair}: {what}"));
            }
            // A key never stored is still not found, after either lookup.
            let unknown = fresh.generate_key();
            let v = fresh.verify(unknown.expose()).await.expect("verify failed");
            assert_eq!(v.code(), Code::NotFound, "{pair}: a key never stored");
        }
    }
}

/// A key verified under the new hash is re-stored once: later verifies (other
/// managers, no cache) find it stored under the new hash and leave it as it is.
pub async fn a_re_hashed_key_is_re_stored_once<S: Store>(store: S) {
    let store = Arc::new(store);
    for (from, to) in [(HashAlgorithm::Sha256, HashAlgorithm::Bcrypt), (HashAlgorithm::Bcrypt, HashAlgorithm::Sha256)] {
        let pair = format!("{} -> {}", from.name(), to.name());
        let namespace = format!("re_stored_once_{}", from.name());
        let created = manager(&store, from, &namespace).create(NewKey::new()).await.expect("create failed");
        let after = manager(&store, to, &namespace);
        assert!(after.verify(created.key.expose()).await.expect("verify failed").is_valid(), "{pair}");
        let once = fetch(&*store, created.record.id).await;
        assert_eq!(once.version, created.record.version + 1, "{pair}: re-stored by the first verify");
        for _ in 0..2 {
            let v = manager(&store, to, &namespace).verify(created.key.expose()).await.expect("verify failed");
            assert!(v.is_valid(), "{pair}");
        }
        let later = fetch(&*store, created.record.id).await;
        assert_eq!(
            (&later.hash, &later.lookup, later.version),
            (&once.hash, &once.lookup, once.version),
            "{pair}: a key stored under the current hash is not re-stored again"
        );
    }
}
