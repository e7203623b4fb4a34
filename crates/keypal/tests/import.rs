//! Importing keys issued elsewhere: hashes of the whole key or of its secret segment,
//! SHA digests in every encoding, salted digests, bcrypt, argon2id and plaintexts; the
//! re-hash under the manager's policy after the first verification; importing twice.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use keypal::hash::{Argon2Params, Argon2idHasher, BcryptHasher, HashError, Sha256Hasher};
use keypal::{
    AuditQuery, Code, DigestEncoding, Error, Formatter, HashAlgorithm, HashCovers, Hasher, ImportAlgorithm, ImportKey,
    ImportedHash, KeyManager, KeyRecord, ListQuery, Lookup, MemoryStore, NewKey, ParsedKey, PlainKey, Tier,
};
use sha2::{Digest, Sha256, Sha512};

type Result = std::result::Result<(), Box<dyn std::error::Error>>;

/// The tier + id format of DESIGN.md, with the given hash policy.
fn kota(hash: HashAlgorithm) -> std::result::Result<KeyManager<MemoryStore>, Error> {
    let mut keys = KeyManager::builder()
        .template("kota_{tier}_{id:12:base32}_{secret:36:hex}")
        .tier("free", Tier::new())
        .tier("solo", Tier::new())
        .tier("team", Tier::new())
        .default_tier("free")
        .hash(hash);
    if hash == HashAlgorithm::Bcrypt {
        keys = keys.bcrypt_cost(4);
    }
    keys.store(MemoryStore::new()).build()
}

/// A manager for `sk_test_…` keys under the default SHA-256 (found by digest).
fn plain() -> std::result::Result<KeyManager<MemoryStore>, Error> {
    KeyManager::builder().prefix("sk_test").store(MemoryStore::new()).build()
}

/// The id and secret segments of a `kota_{tier}_{id}_{secret}` key.
fn id_and_secret(key: &str) -> (String, String) {
    let parts: Vec<&str> = key.split('_').collect();
    (parts[2].to_owned(), parts[3].to_owned())
}

fn bcrypt(data: &str) -> std::result::Result<String, HashError> {
    Ok(BcryptHasher::new(4)?.hash(data.as_bytes()))
}

fn argon2(data: &str) -> std::result::Result<String, HashError> {
    let hasher = Argon2idHasher::new(Argon2Params { memory_kib: 64, iterations: 1, parallelism: 1 })?;
    Ok(hasher.hash(data.as_bytes()))
}

/// The stored record of a key.
async fn stored(keys: &KeyManager<MemoryStore>, record: &KeyRecord) -> std::result::Result<KeyRecord, Error> {
    keys.get(&record.id).await
}

/// How many keys and audit events the manager's store holds.
async fn contents(keys: &KeyManager<MemoryStore>) -> std::result::Result<(u64, usize), Error> {
    let count = keys.count(ListQuery::new().include_revoked(true)).await?;
    let events = keys.audit(AuditQuery::new()).await?.items.len();
    Ok((count, events))
}

#[tokio::test]
async fn a_kota_key_imported_as_id_and_bcrypt_of_its_secret_verifies_and_is_rehashed_whole() -> Result {
    for policy in [HashAlgorithm::Sha256, HashAlgorithm::Bcrypt] {
        let keys = kota(policy)?;
        let key = keys.generate_key();
        let key = key.expose();
        let (id, secret) = id_and_secret(key);
        let hash = ImportedHash::new(ImportAlgorithm::Bcrypt, bcrypt(&secret)?).covers(HashCovers::Secret);
        let imported = keys.import(ImportKey::hash(hash).id(&id).with(NewKey::new().owner_id("u1"))).await?;
        assert_eq!(imported.lookup, Lookup::Id(id.clone()));
        assert_eq!(imported.hash_covers(), HashCovers::Secret);
        // Only the secret was hashed: the whole key does not match the hash as such.
        assert!(!BcryptHasher::new(4)?.verify(key.as_bytes(), imported.hash.trim_start_matches("$secret$")));
        assert!(keys.validate_key(key, &imported.hash));

        // The right id with another secret is not the key.
        let wrong = format!("kota_free_{id}_{}", "0".repeat(36));
        assert_eq!(keys.verify(&wrong).await?.code(), Code::NotFound, "{policy:?}");
        let v = keys.verify(key).await?;
        assert!(v.is_valid(), "{policy:?}: {:?}", v.code());
        assert_eq!(v.record().map(|r| r.id), Some(imported.id));

        // Re-hashed under the policy, as keypal stores its own keys: the whole key.
        let after = stored(&keys, &imported).await?;
        assert_eq!(after.hash_covers(), HashCovers::Key, "{policy:?}");
        assert_ne!(after.hash, imported.hash);
        assert_eq!(after.lookup, Lookup::Id(id.clone()));
        match policy {
            HashAlgorithm::Sha256 => assert_eq!(after.hash, Sha256Hasher.hash(key.as_bytes())),
            _ => {
                assert!(after.hash.starts_with("$2b$04$") && BcryptHasher::new(4)?.verify(key.as_bytes(), &after.hash))
            }
        }
        assert_eq!(after.version, imported.version + 1);
        keys.clear_cache();
        assert!(keys.verify(key).await?.is_valid(), "{policy:?}: after the re-hash");
        assert_eq!(keys.verify(&wrong).await?.code(), Code::NotFound);
        assert_eq!(stored(&keys, &imported).await?.hash, after.hash, "re-hashed once");
    }
    Ok(())
}

#[tokio::test]
async fn a_hash_of_the_secret_found_by_hint_verifies_too() -> Result {
    // Hashes of the secret alone, of every algorithm, under the hint strategy.
    let keys = KeyManager::builder()
        .template("brdnv_sk_{secret:32:alnum}")
        .hash(HashAlgorithm::Bcrypt)
        .bcrypt_cost(4)
        .store(MemoryStore::new())
        .build()?;
    for algorithm in
        [ImportAlgorithm::Sha256, ImportAlgorithm::Sha512, ImportAlgorithm::Bcrypt, ImportAlgorithm::Argon2id]
    {
        let key = keys.generate_key();
        let secret = &key.expose()["brdnv_sk_".len()..];
        let value = match algorithm {
            ImportAlgorithm::Sha256 => hex(&Sha256::digest(secret)),
            ImportAlgorithm::Sha512 => hex(&Sha512::digest(secret)),
            ImportAlgorithm::Bcrypt => bcrypt(secret)?,
            _ => argon2(secret)?,
        };
        let hash = ImportedHash::new(algorithm, value).covers(HashCovers::Secret);
        let imported = keys.import(ImportKey::hash(hash).hint(key.start(12))).await?;
        assert_eq!(imported.hash_covers(), HashCovers::Secret);
        assert!(keys.verify(key.expose()).await?.is_valid(), "{algorithm}");
        let after = stored(&keys, &imported).await?;
        assert!(after.hash.starts_with("$2b$04$"), "{algorithm}: {}", after.hash);
        keys.clear_cache();
        assert!(keys.verify(key.expose()).await?.is_valid(), "{algorithm}: after the re-hash");
    }
    Ok(())
}

/// A format that cannot tell its secret apart (custom formats do not, unless they say so).
#[derive(Debug)]
struct NoSecretSegment;

impl Formatter for NoSecretSegment {
    fn generate(&self, _tier: Option<&str>) -> std::result::Result<PlainKey, keypal::format::FormatError> {
        let secret = keypal::format::random_string(keypal::Encoding::Hex, 32)?;
        Ok(PlainKey::new(format!("opaque_{secret}")))
    }
    fn parse<'k>(&'k self, key: &'k str) -> Option<ParsedKey<'k>> {
        let secret = key.strip_prefix("opaque_")?;
        (secret.len() == 32).then_some(ParsedKey { id: None, tier: None })
    }
    fn has_id(&self) -> bool {
        false
    }
    fn fixed_prefix_len(&self) -> usize {
        7
    }
    fn describe(&self) -> String {
        "opaque_<32 hex>".to_owned()
    }
}

#[tokio::test]
async fn a_hash_of_the_secret_needs_a_format_with_a_secret_segment() -> Result {
    let keys = KeyManager::builder().formatter(NoSecretSegment).store(MemoryStore::new()).build()?;
    let key = keys.generate_key();
    let hash = ImportedHash::new(ImportAlgorithm::Sha256, hex(&Sha256::digest(&key.expose()[7..])));
    let refused = keys.import(ImportKey::hash(hash.clone().covers(HashCovers::Secret)).hint(key.start(10))).await;
    assert!(matches!(refused, Err(Error::Invalid { ref field, .. }) if field == "covers"), "{refused:?}");
    // A kota key without its id (nor hint) cannot be found: a hash of the secret is no digest of the key.
    let keys = kota(HashAlgorithm::Sha256)?;
    let refused = keys.import(ImportKey::hash(hash.covers(HashCovers::Secret))).await;
    assert!(matches!(refused, Err(Error::Invalid { ref field, .. }) if field == "hint"), "{refused:?}");
    assert_eq!(contents(&keys).await?, (0, 0));
    Ok(())
}

#[tokio::test]
async fn a_hash_is_imported_under_a_lookup_its_key_will_be_found_by() -> Result {
    // Keys of a format with an id are found by it, never by hint: a hint alone would strand the key.
    let keys = kota(HashAlgorithm::Sha256)?;
    let key = keys.generate_key();
    let (id, secret) = id_and_secret(key.expose());
    let hash = ImportedHash::new(ImportAlgorithm::Bcrypt, bcrypt(&secret)?).covers(HashCovers::Secret);
    let refused = keys.import(ImportKey::hash(hash.clone()).hint(key.start(8))).await;
    assert!(matches!(refused, Err(Error::Invalid { ref field, .. }) if field == "id"), "{refused:?}");
    // And no key of a format without an id is found by one.
    let keys = plain()?;
    let refused = keys.import(ImportKey::hash(hash.covers(HashCovers::Key)).id(id)).await;
    assert!(matches!(refused, Err(Error::Invalid { ref field, .. }) if field == "id"), "{refused:?}");
    assert_eq!(contents(&keys).await?, (0, 0));
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every way a SHA digest is written that keypal imports: (encoding, text, what it is).
fn encodings(digest: &[u8]) -> Vec<(Option<DigestEncoding>, String, &'static str)> {
    vec![
        (None, hex(digest), "hex, the default"),
        (Some(DigestEncoding::Hex), hex(digest).to_uppercase(), "uppercase hex"),
        (Some(DigestEncoding::Base64), STANDARD.encode(digest), "padded base64"),
        (Some(DigestEncoding::Base64), STANDARD_NO_PAD.encode(digest), "unpadded base64"),
        (Some(DigestEncoding::Base64Url), URL_SAFE.encode(digest), "padded base64url"),
        (Some(DigestEncoding::Base64Url), URL_SAFE_NO_PAD.encode(digest), "unpadded base64url (Better Auth)"),
    ]
}

#[tokio::test]
async fn sha256_and_sha512_digests_import_in_hex_base64_and_base64url_padded_or_not() -> Result {
    let keys = plain()?;
    for algorithm in [ImportAlgorithm::Sha256, ImportAlgorithm::Sha512] {
        // Enough keys for every encoding, the digests of each key chosen so that base64
        // and base64url differ (they do when the text has `+` or `/`).
        let mut tried = 0;
        while tried < 6 {
            let key = keys.generate_key();
            let digest = match algorithm {
                ImportAlgorithm::Sha256 => Sha256::digest(key.expose()).to_vec(),
                _ => Sha512::digest(key.expose()).to_vec(),
            };
            if !STANDARD.encode(&digest).contains(['+', '/']) {
                continue;
            }
            let (encoding, text, what) = encodings(&digest).swap_remove(tried);
            tried += 1;
            let mut hash = ImportedHash::new(algorithm, text);
            hash.encoding = encoding;
            // A SHA-256 of the whole key is found by its digest; a SHA-512 needs a hint.
            let import = match algorithm {
                ImportAlgorithm::Sha256 => ImportKey::hash(hash),
                _ => ImportKey::hash(hash).hint(key.start(11)),
            };
            let imported = keys.import(import).await?;
            let expected_lookup = match algorithm {
                ImportAlgorithm::Sha256 => Lookup::Digest(keypal::hash::sha256(key.expose().as_bytes())),
                _ => Lookup::Hint(key.start(11).to_owned()),
            };
            assert_eq!(imported.lookup, expected_lookup, "{algorithm} {what}");
            assert_eq!(imported.hash, format!("${algorithm}${}", hex(&digest)), "{algorithm} {what}");
            assert!(keys.verify(key.expose()).await?.is_valid(), "{algorithm} {what}");
            // The policy's hash, found by digest, after the first verification.
            let after = stored(&keys, &imported).await?;
            assert_eq!(after.hash, Sha256Hasher.hash(key.expose().as_bytes()), "{algorithm} {what}");
            assert_eq!(after.lookup, Lookup::Digest(keypal::hash::sha256(key.expose().as_bytes())));
            assert!(keys.verify(key.expose()).await?.is_valid(), "{algorithm} {what}: after the re-hash");
        }
    }
    Ok(())
}

#[tokio::test]
async fn salted_digests_import_and_are_rehashed_under_the_policy() -> Result {
    let keys = plain()?;
    // The TypeScript keypal's `salt` option: sha256(key + salt) as hex. A salt may be any text.
    for salt in ["pepper", "a$b$c", "ünïcode salt"] {
        for algorithm in [ImportAlgorithm::Sha256, ImportAlgorithm::Sha512] {
            let key = keys.generate_key();
            let salted = format!("{}{salt}", key.expose());
            let (digest, tag) = match algorithm {
                ImportAlgorithm::Sha256 => (Sha256::digest(&salted).to_vec(), "$salted-sha256$"),
                _ => (Sha512::digest(&salted).to_vec(), "$salted-sha512$"),
            };
            let hash = ImportedHash::new(algorithm, hex(&digest)).salt(salt);
            // A salted digest is not the digest keys are found by: it needs a hint (or an id).
            let refused = keys.import(ImportKey::hash(hash.clone())).await;
            assert!(matches!(refused, Err(Error::Invalid { ref field, .. }) if field == "hint"), "{refused:?}");
            let imported = keys.import(ImportKey::hash(hash).hint(key.start(11))).await?;
            assert!(imported.hash.starts_with(tag), "{}", imported.hash);
            // The same digest without its salt is another key's.
            assert!(!keys.validate_key(&salted, &imported.hash));
            assert!(keys.verify(key.expose()).await?.is_valid(), "{algorithm} salted with {salt:?}");
            let after = stored(&keys, &imported).await?;
            assert_eq!(after.hash, Sha256Hasher.hash(key.expose().as_bytes()));
            assert!(keys.verify(key.expose()).await?.is_valid());
        }
    }
    // Base64 digests may be salted too.
    let key = keys.generate_key();
    let digest = Sha256::digest(format!("{}s", key.expose()));
    let hash = ImportedHash::new(ImportAlgorithm::Sha256, URL_SAFE_NO_PAD.encode(digest))
        .encoding(DigestEncoding::Base64Url)
        .salt("s");
    keys.import(ImportKey::hash(hash).hint(key.start(11))).await?;
    assert!(keys.verify(key.expose()).await?.is_valid());
    Ok(())
}

#[tokio::test]
async fn bcrypt_of_every_version_and_argon2id_import_and_are_rehashed_under_the_policy() -> Result {
    let keys = plain()?;
    for version in ["$2a$", "$2b$", "$2y$"] {
        let key = keys.generate_key();
        let hash = format!("{version}{}", &bcrypt(key.expose())?[4..]);
        let imported =
            keys.import(ImportKey::hash(ImportedHash::new(ImportAlgorithm::Bcrypt, &hash)).hint(key.start(11))).await?;
        assert_eq!(imported.hash, hash);
        assert!(keys.verify(key.expose()).await?.is_valid(), "{version}");
        assert_eq!(stored(&keys, &imported).await?.hash, Sha256Hasher.hash(key.expose().as_bytes()));
    }
    // The older constructor means the same.
    let key = keys.generate_key();
    keys.import(ImportKey::bcrypt(bcrypt(key.expose())?).hint(key.start(11))).await?;
    assert!(keys.verify(key.expose()).await?.is_valid());

    let key = keys.generate_key();
    let hash = argon2(key.expose())?;
    let imported =
        keys.import(ImportKey::hash(ImportedHash::new(ImportAlgorithm::Argon2id, &hash)).hint(key.start(11))).await?;
    assert_eq!(imported.hash, hash);
    assert!(keys.verify(key.expose()).await?.is_valid());
    assert_eq!(stored(&keys, &imported).await?.hash, Sha256Hasher.hash(key.expose().as_bytes()));
    Ok(())
}

#[tokio::test]
async fn plaintext_keys_import_hashed_under_the_policy() -> Result {
    let keys = kota(HashAlgorithm::Sha256)?;
    let key = keys.generate_key();
    let imported = keys.import(ImportKey::plaintext(key.expose())).await?;
    assert_eq!(imported.hash, Sha256Hasher.hash(key.expose().as_bytes()));
    assert_eq!(imported.lookup, Lookup::Id(id_and_secret(key.expose()).0));
    assert_eq!(imported.tier.as_deref(), Some("free"));
    assert!(keys.verify(key.expose()).await?.is_valid());
    Ok(())
}

#[tokio::test]
async fn a_hash_that_is_not_what_it_claims_is_a_clear_error_and_nothing_is_stored() -> Result {
    let keys = plain()?;
    let key = keys.generate_key();
    let digest = Sha256::digest(key.expose());
    let cases: Vec<(ImportedHash, &str)> = vec![
        // Base64 declared as hex (the default).
        (
            ImportedHash::new(ImportAlgorithm::Sha256, STANDARD.encode(digest)),
            "cannot import SHA-256 hex hash: expected 64 hex characters",
        ),
        // Hex declared as base64.
        (
            ImportedHash::new(ImportAlgorithm::Sha256, hex(&digest)).encoding(DigestEncoding::Base64),
            "cannot import SHA-256 base64 hash: expected 44 characters of base64 (43 without `=` padding)",
        ),
        // Base64url (`-`, `_`) declared as base64, and the reverse.
        (
            ImportedHash::new(ImportAlgorithm::Sha256, "-".repeat(43)).encoding(DigestEncoding::Base64),
            "cannot import SHA-256 base64 hash",
        ),
        (
            ImportedHash::new(ImportAlgorithm::Sha256, "+".repeat(43)).encoding(DigestEncoding::Base64Url),
            "cannot import SHA-256 base64url hash",
        ),
        // A SHA-256 declared as SHA-512, a digest one byte short.
        (ImportedHash::new(ImportAlgorithm::Sha512, hex(&digest)), "cannot import SHA-512 hex hash: expected 128 hex"),
        (
            ImportedHash::new(ImportAlgorithm::Sha256, URL_SAFE_NO_PAD.encode(&digest[..31]))
                .encoding(DigestEncoding::Base64Url),
            "cannot import SHA-256 base64url hash: expected 43 characters",
        ),
        (ImportedHash::new(ImportAlgorithm::Sha256, hex(&digest)).salt(""), "the salt is empty"),
        // bcrypt and argon2id strings: malformed, or given SHA options.
        (ImportedHash::new(ImportAlgorithm::Bcrypt, hex(&digest)), "cannot import bcrypt hash"),
        (ImportedHash::new(ImportAlgorithm::Bcrypt, argon2(key.expose())?), "cannot import bcrypt hash"),
        (ImportedHash::new(ImportAlgorithm::Argon2id, bcrypt(key.expose())?), "cannot import argon2id hash"),
        (
            ImportedHash::new(ImportAlgorithm::Bcrypt, bcrypt(key.expose())?).encoding(DigestEncoding::Hex),
            "an encoding applies to SHA-256 and SHA-512 digests only",
        ),
        (
            ImportedHash::new(ImportAlgorithm::Argon2id, argon2(key.expose())?).salt("s"),
            "a salt applies to SHA-256 and SHA-512 digests only",
        ),
    ];
    for (hash, message) in cases {
        let result = keys.import(ImportKey::hash(hash.clone()).hint(key.start(11))).await;
        match result {
            Err(Error::Hash(error @ HashError::InvalidImport { .. })) => {
                assert!(error.to_string().contains(message), "{error} / {message}");
            }
            other => panic!("{hash:?}: {other:?}"),
        }
    }
    assert_eq!(contents(&keys).await?, (0, 0));

    // Names of algorithms, encodings and coverage: typed errors naming what is known.
    let unknown = "md5".parse::<ImportAlgorithm>().unwrap_err();
    assert!(matches!(unknown, HashError::UnknownName { what: "hash algorithm", .. }));
    assert_eq!(unknown.to_string(), "unknown hash algorithm: expected sha256, sha512, bcrypt or argon2id");
    assert!(matches!("base32".parse::<DigestEncoding>(), Err(HashError::UnknownName { what: "digest encoding", .. })));
    assert!(matches!("both".parse::<HashCovers>(), Err(HashError::UnknownName { what: "hash coverage", .. })));
    for algorithm in
        [ImportAlgorithm::Sha256, ImportAlgorithm::Sha512, ImportAlgorithm::Bcrypt, ImportAlgorithm::Argon2id]
    {
        assert_eq!(algorithm.to_string().parse::<ImportAlgorithm>()?, algorithm);
        assert_eq!(algorithm.to_string().to_uppercase().parse::<ImportAlgorithm>()?, algorithm);
    }
    for encoding in [DigestEncoding::Hex, DigestEncoding::Base64, DigestEncoding::Base64Url] {
        assert_eq!(encoding.to_string().parse::<DigestEncoding>()?, encoding);
    }
    for covers in [HashCovers::Key, HashCovers::Secret] {
        assert_eq!(covers.to_string().parse::<HashCovers>()?, covers);
    }
    Ok(())
}

/// Imports `import` a second time: refused as already stored, naming the first
/// record, with nothing changed.
async fn import_twice(keys: &KeyManager<MemoryStore>, import: ImportKey, what: &str) -> Result {
    let first = keys.import(import.clone()).await?;
    let before = contents(keys).await?;
    let again = keys.import(import).await;
    assert!(matches!(again, Err(Error::AlreadyExists { existing }) if existing == Some(first.id)), "{what}: {again:?}");
    assert_eq!(again.err().map(|e| e.code()), Some("ALREADY_EXISTS"));
    assert_eq!(contents(keys).await?, before, "{what}: nothing stored");
    assert_eq!(stored(keys, &first).await?, first, "{what}: the first record unchanged");
    Ok(())
}

#[tokio::test]
async fn importing_a_key_twice_is_already_exists_and_changes_nothing() -> Result {
    // Found by id.
    let keys = kota(HashAlgorithm::Sha256)?;
    let key = keys.generate_key();
    let (id, secret) = id_and_secret(key.expose());
    let hash = ImportedHash::new(ImportAlgorithm::Bcrypt, bcrypt(&secret)?).covers(HashCovers::Secret);
    import_twice(&keys, ImportKey::hash(hash).id(&id), "id, hash of the secret").await?;
    import_twice(&keys, ImportKey::plaintext(keys.generate_key().expose()), "id, plaintext").await?;

    // Found by digest.
    let keys = plain()?;
    let key = keys.generate_key();
    let digest = hex(&Sha256::digest(key.expose()));
    import_twice(&keys, ImportKey::sha256_hex(&digest), "digest, SHA-256").await?;
    // The same key again, known this time by its plaintext: it already verifies.
    let again = keys.import(ImportKey::plaintext(key.expose())).await;
    assert!(matches!(again, Err(Error::AlreadyExists { existing: Some(_) })), "{again:?}");
    import_twice(&keys, ImportKey::plaintext(keys.generate_key().expose()), "digest, plaintext").await?;

    // Found by hint: not a unique index, so the manager looks for the key among the hint's candidates.
    let keys = KeyManager::builder()
        .template("brdnv_sk_{secret:32:alnum}")
        .hash(HashAlgorithm::Bcrypt)
        .bcrypt_cost(4)
        .store(MemoryStore::new())
        .build()?;
    let key = keys.generate_key();
    let bcrypt_hash = bcrypt(key.expose())?;
    import_twice(&keys, ImportKey::bcrypt(&bcrypt_hash).hint(key.start(12)), "hint, bcrypt").await?;
    // The same key by its plaintext: it already verifies.
    let again = keys.import(ImportKey::plaintext(key.expose())).await;
    assert!(matches!(again, Err(Error::AlreadyExists { existing: Some(_) })), "{again:?}");
    import_twice(&keys, ImportKey::plaintext(keys.generate_key().expose()), "hint, plaintext").await?;
    let other = keys.generate_key();
    let secret = ImportedHash::new(ImportAlgorithm::Sha512, hex(&Sha512::digest(&other.expose()[9..])));
    import_twice(&keys, ImportKey::hash(secret.covers(HashCovers::Secret)).hint(other.start(12)), "hint, secret")
        .await?;
    // Another key's hash under a hint already taken is no duplicate: hints are shared.
    let other = keys.generate_key();
    keys.import(ImportKey::bcrypt(bcrypt(other.expose())?).hint(key.start(12))).await?;
    assert!(keys.verify(key.expose()).await?.is_valid());
    Ok(())
}

#[tokio::test]
async fn an_import_keeps_last_use_and_disabled_state_and_may_skip_the_owner_limit() -> Result {
    let keys =
        KeyManager::builder().prefix("sk_test").max_active_keys_per_owner(1).store(MemoryStore::new()).build()?;
    let owner = || NewKey::new().owner_id("u1");
    let used = time::OffsetDateTime::now_utc() - std::time::Duration::from_secs(86_400);
    let first = keys.generate_key();
    let record = keys.import(ImportKey::plaintext(first.expose()).last_used_at(used).with(owner())).await?;
    assert_eq!(record.last_used_at, Some(keypal::clock::truncate_to_micros(used)));
    assert_eq!(stored(&keys, &record).await?.last_used_at, record.last_used_at);
    assert!(record.enabled);

    // The owner has their one active key: a second is refused, and stored only when told to.
    let second = keys.generate_key();
    let refused = keys.import(ImportKey::plaintext(second.expose()).with(owner())).await;
    assert!(matches!(refused, Err(Error::LimitReached { limit: 1 })), "{refused:?}");
    assert_eq!(contents(&keys).await?, (1, 1), "nothing stored");
    let disabled =
        keys.import(ImportKey::plaintext(second.expose()).enabled(false).skip_owner_limit().with(owner())).await?;
    assert!(!disabled.enabled && !stored(&keys, &disabled).await?.enabled);
    assert_eq!(keys.verify(second.expose()).await?.code(), Code::Disabled);
    assert!(keys.verify(first.expose()).await?.is_valid());
    // The limit still holds for keys created afterwards.
    assert!(matches!(keys.create(owner()).await, Err(Error::LimitReached { limit: 1 })));
    Ok(())
}

#[tokio::test]
async fn import_many_answers_for_each_key_and_catches_a_key_given_twice_under_a_hint() -> Result {
    let keys = KeyManager::builder()
        .template("brdnv_sk_{secret:32:alnum}")
        .hash(HashAlgorithm::Bcrypt)
        .bcrypt_cost(4)
        .max_active_keys_per_owner(1)
        .store(MemoryStore::new())
        .build()?;
    let key = keys.generate_key();
    let by_hint = ImportKey::bcrypt(bcrypt(key.expose())?).hint(key.start(12));
    let second = keys.generate_key();
    let owned = |k: &PlainKey| ImportKey::plaintext(k.expose()).with(NewKey::new().owner_id("u1"));
    let results = keys
        .import_many(vec![
            by_hint.clone(),
            ImportKey::plaintext("brdnv_sk_short"),
            by_hint,
            owned(&second),
            owned(&keys.generate_key()),
        ])
        .await?;
    let codes: Vec<&str> = results.iter().map(|r| r.as_ref().map_or_else(|e| e.code(), |_| "created")).collect();
    assert_eq!(codes, ["created", "INVALID_INPUT", "ALREADY_EXISTS", "created", "KEY_LIMIT_REACHED"]);
    let first_id = results[0].as_ref().map(|r| r.id).ok();
    assert!(matches!(&results[2], Err(Error::AlreadyExists { existing }) if *existing == first_id));
    assert_eq!(contents(&keys).await?, (2, 2), "two keys and their two events");
    assert!(keys.verify(key.expose()).await?.is_valid());
    assert!(keys.verify(second.expose()).await?.is_valid());

    // A dry run checks the same, storing nothing.
    let fresh = keys.generate_key();
    keys.check_import(ImportKey::plaintext(fresh.expose())).await?;
    let stored_again = keys.check_import(ImportKey::plaintext(key.expose())).await;
    assert!(matches!(stored_again, Err(Error::AlreadyExists { .. })), "{stored_again:?}");
    assert_eq!(contents(&keys).await?, (2, 2), "a check stores nothing");
    Ok(())
}

#[test]
fn every_importable_stored_hash_exports_back_to_its_import_form() -> Result {
    let sha256 = hex(&Sha256::digest("sk_test_key"));
    let sha512 = hex(&Sha512::digest("sk_test_key"));
    let hashes = [
        ImportedHash::new(ImportAlgorithm::Sha256, sha256.as_str()),
        ImportedHash::new(ImportAlgorithm::Sha512, sha512.as_str()),
        ImportedHash::new(ImportAlgorithm::Sha256, sha256.as_str()).salt("pepper$1"),
        ImportedHash::new(ImportAlgorithm::Sha512, sha512.as_str()).salt("ünïcode"),
        ImportedHash::new(ImportAlgorithm::Bcrypt, bcrypt("sk_test_key")?),
        ImportedHash::new(ImportAlgorithm::Argon2id, argon2("sk_test_key")?),
    ];
    for hash in hashes {
        for covers in [HashCovers::Key, HashCovers::Secret] {
            let hash = hash.clone().covers(covers);
            let stored = keypal::hash::Hashing::import(&hash)?;
            assert_eq!(keypal::hash::Hashing::export(&stored), Some(hash), "{stored}");
        }
    }
    // Keyed by this deployment's master key: no other can check it.
    let keyed = keypal::hash::HmacSha256Hasher::new([("v1".to_owned(), vec![7; 32])], "v1")?.hash(b"sk_test_key");
    assert_eq!(keypal::hash::Hashing::export(&keyed), None);
    assert_eq!(keypal::hash::Hashing::export("$sha256$not-hex"), None);
    Ok(())
}
