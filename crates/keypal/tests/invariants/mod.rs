//! What must hold whatever a user or client sends to keypal's parsers: templates, keys
//! of each format kind, and configurations.
//!
//! One definition, used twice: the property tests (`tests/properties.rs`, under
//! `cargo test`) and the fuzz targets (`fuzz/`, which include this file by path; see
//! docs/FUZZING.md). Each function takes an input and panics when an invariant fails,
//! so a failure is a failed test case or a crash the fuzzer keeps.
#![allow(dead_code, clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use keypal::format::{FormatVars, Formatter, Template};
use keypal::hash::BcryptHasher;
use keypal::{Code, Config, Error, HashAlgorithm, KeyManager, MemoryStore, NewKey, Tier};

/// Runs a future of the core to completion (the core needs no runtime).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    pollster::block_on(future)
}

// ---------------------------------------------------------------------------------
// Templates

/// A template and its variables, read from one text: the template on the first line,
/// then `prefix`, `app` and `label` (an empty line is no value), then one tier per
/// line as `name=segment`. How a fuzzer's bytes become a template case.
pub fn template_case(text: &str) -> (String, FormatVars) {
    let mut lines = text.split('\n');
    let template = lines.next().unwrap_or_default().to_owned();
    let mut value = || lines.next().filter(|line| !line.is_empty()).map(str::to_owned);
    let (prefix, app, label) = (value(), value(), value());
    let tiers = lines
        .map(|line| match line.split_once('=') {
            Some((name, segment)) => (name.to_owned(), segment.to_owned()),
            None => (line.to_owned(), line.to_owned()),
        })
        .collect();
    (template, FormatVars { prefix, app, label, tiers })
}

/// `Template::parse` answers (an error, or a format), and a format it accepts makes
/// keys that it parses back exactly, and that a key manager using it verifies under
/// each lookup strategy.
pub fn template(text: &str, vars: &FormatVars) {
    let Ok(format) = Template::parse(text, vars) else { return };
    assert_eq!(format.source(), text, "the source is the template as written");
    assert!((16..=256).contains(&format.secret_len()), "secret length {}", format.secret_len());
    let tiers: Vec<Option<&str>> = if format.has_tier() {
        assert!(!vars.tiers.is_empty(), "a {{tier}} segment needs tiers");
        vars.tiers.iter().map(|(name, _)| Some(name.as_str())).collect()
    } else {
        vec![None]
    };
    for tier in tiers {
        let key = format.generate(tier).unwrap_or_else(|e| panic!("{text:?} cannot generate for {tier:?}: {e}"));
        let key = key.expose();
        let parsed = format.parse(key).unwrap_or_else(|| panic!("{text:?} does not parse its own key {key:?}"));
        assert_eq!(parsed.tier, tier, "tier of {key:?}");
        assert_eq!(parsed.id.is_some(), format.has_id(), "id of {key:?}");
        if let Some(id) = parsed.id {
            assert!(key.contains(id), "the id {id:?} is part of {key:?}");
        }
        assert!(key.is_char_boundary(format.fixed_prefix_len().min(key.len())), "prefix of {key:?}");
        assert!(format.fixed_prefix_len() <= key.len());
        // Any one-byte change that keeps the text valid UTF-8 is not the same key.
        let mut changed = key.as_bytes().to_vec();
        if let Some(last) = changed.last_mut() {
            *last = if *last == b'0' { b'1' } else { b'0' };
        }
        if let Ok(changed) = std::str::from_utf8(&changed)
            && format.has_checksum()
        {
            assert_eq!(format.parse(changed), None, "{text:?}: the checksum catches {changed:?}");
        }
    }
    template_keys_verify(&format, vars);
}

/// A key manager over `format` (SHA-256: lookup by id or by digest; bcrypt at its
/// lowest cost: by id or by hint) creates keys that verify.
fn template_keys_verify(format: &Template, vars: &FormatVars) {
    for slow in [false, true] {
        let mut builder = KeyManager::builder().formatter(format.clone()).cache(keypal::CacheMode::Off);
        for (name, segment) in &vars.tiers {
            builder = builder.tier(name.clone(), Tier::new().segment(segment.clone()));
        }
        if let Some((name, _)) = vars.tiers.first().filter(|_| format.has_tier()) {
            builder = builder.default_tier(name.clone());
        }
        if slow {
            builder = builder.hasher(BcryptHasher::new(4).expect("cost 4"));
        }
        let keys = match builder.store(MemoryStore::new()).build() {
            Ok(keys) => keys,
            // A format the manager refuses (a hint as long as the key, tiers it cannot
            // configure, more than bcrypt reads) is a configuration error.
            Err(Error::Config(e)) => {
                assert!(!e.problems().is_empty(), "a configuration error names its problems");
                continue;
            }
            Err(e) => panic!("{:?}: building a manager failed with {e}", format.source()),
        };
        created_key_verifies(&keys, NewKey::new(), format.source());
    }
}

/// Creates a key with `keys` and checks that it verifies; `what` describes the case.
fn created_key_verifies(keys: &KeyManager<MemoryStore>, new: NewKey, what: &str) {
    let created = match block_on(keys.create(new)) {
        Ok(created) => created,
        // The policies may refuse a key without a name, or a default expiry already past.
        Err(Error::Invalid { .. }) => return,
        Err(e) => panic!("{what:?}: creating a key failed with {e}"),
    };
    let key = created.key.expose();
    assert!(keys.accepts(key), "{what:?}: the manager does not accept its own key {key:?}");
    let verification = block_on(keys.verify(key)).unwrap_or_else(|e| panic!("{what:?}: verify failed: {e}"));
    let code = verification.code();
    let expired = code == Code::Expired && created.record.expires_at.is_some();
    assert!(code == Code::Valid || expired, "{what:?} ({:?}): a new key verifies {code:?}", keys.lookup_strategy());
}

// ---------------------------------------------------------------------------------
// Keys of each format kind

/// The format kinds a presented key is parsed under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// A template with `{tier}`, `{id}` and `{checksum}`: keys are found by their id.
    WithId,
    /// A template without `{id}`, SHA-256: keys are found by their digest.
    WithoutId,
    /// A template with `{id}`, and a legacy bare `{secret:43:base64url}` format whose
    /// keys (bcrypt-hashed) are found by their first characters.
    Legacy,
}

/// A key manager of one kind with a few stored keys.
pub struct KeyKit {
    /// The kind.
    pub kind: KeyKind,
    /// The manager.
    pub keys: KeyManager<MemoryStore>,
    /// Its formats, current first.
    pub formats: Vec<Arc<dyn Formatter>>,
    /// Keys it issued, each valid.
    pub stored: Vec<String>,
}

impl KeyKit {
    /// The manager of `kind`, with three keys.
    pub fn new(kind: KeyKind) -> KeyKit {
        let none = FormatVars::default();
        let tiers = FormatVars {
            tiers: vec![("free".into(), "free".into()), ("pro".into(), "p".into())],
            ..FormatVars::default()
        };
        let parse = |text: &str, vars: &FormatVars| Template::parse(text, vars).expect("a valid template");
        let builder = KeyManager::builder().store(MemoryStore::new()).cache(keypal::CacheMode::Off);
        let (keys, formats): (_, Vec<Arc<dyn Formatter>>) = match kind {
            KeyKind::WithId => {
                let format = parse("kp_{tier}_{id:8:base32}_{secret:24:base62}{checksum}", &tiers);
                let keys = builder
                    .formatter(format.clone())
                    .tier("free", Tier::new())
                    .tier("pro", Tier::new().segment("p"))
                    .default_tier("free");
                (keys, vec![Arc::new(format)])
            }
            KeyKind::WithoutId => {
                let format = parse("sk_live_{secret:32:base62}", &none);
                (builder.formatter(format.clone()), vec![Arc::new(format)])
            }
            KeyKind::Legacy => {
                let current = parse("kp_{id:12:hex}_{secret:32:base62}", &none);
                let legacy = parse("{secret:43:base64url}", &none);
                let keys = builder
                    .formatter(current.clone())
                    .legacy_formatter(legacy.clone())
                    .hasher(BcryptHasher::new(4).expect("cost 4"));
                (keys, vec![Arc::new(current), Arc::new(legacy)])
            }
        };
        let keys = keys.build().expect("the kit's manager");
        let mut stored = Vec::new();
        for tier in [None, Some("pro"), None] {
            let mut new = NewKey::new().owner_id("owner").scopes(["read"]);
            if let Some(tier) = tier.filter(|_| kind == KeyKind::WithId) {
                new = new.tier(tier);
            }
            let created = block_on(keys.create(new)).expect("a kit key");
            stored.push(created.key.expose().to_owned());
        }
        if kind == KeyKind::Legacy {
            // A key of the legacy format, imported as it was stored before.
            let key = formats[1].generate(None).expect("a legacy key");
            let import = keypal::ImportKey::plaintext(key.expose()).with(NewKey::new().owner_id("owner"));
            block_on(keys.import(import)).expect("a legacy key imported");
            stored.push(key.expose().to_owned());
        }
        for key in &stored {
            let code = block_on(keys.verify(key)).expect("verify").code();
            assert_eq!(code, Code::Valid, "{kind:?}: the kit's key {key:?}");
        }
        KeyKit { kind, keys, formats, stored }
    }

    /// The text a fuzzer's bytes stand for: the bytes themselves (first byte even), or
    /// one of the stored keys with the rest of the bytes written over it from a position
    /// (first byte odd), so that near misses of real keys are explored too.
    pub fn key_text(&self, data: &[u8]) -> String {
        match data.split_first() {
            Some((mode, rest)) if mode % 2 == 1 && !self.stored.is_empty() => {
                let stored = &self.stored[usize::from(mode / 2) % self.stored.len()];
                let (at, patch) = rest.split_first().map_or((0, &[][..]), |(at, patch)| (usize::from(*at), patch));
                let mut bytes = stored.as_bytes().to_vec();
                let at = at.min(bytes.len());
                let end = (at + patch.len()).min(bytes.len());
                bytes.splice(at..end, patch.iter().copied());
                String::from_utf8_lossy(&bytes).into_owned()
            }
            _ => String::from_utf8_lossy(data.get(1..).unwrap_or_default()).into_owned(),
        }
    }
}

/// Whatever text is presented, each format parses it or says no, consistently with the
/// manager; and verification answers with a code: `VALID` only for a stored key,
/// `MALFORMED` exactly when no format accepts the text, `NOT_FOUND` otherwise.
pub fn key_text(kit: &KeyKit, text: &str) {
    let mut accepted = false;
    for format in &kit.formats {
        let Some(parsed) = format.parse(text) else { continue };
        accepted = true;
        assert_eq!(parsed.id.is_some(), format.has_id(), "{:?}: id of {text:?}", kit.kind);
        if let Some(id) = parsed.id {
            assert!(text.contains(id), "{:?}: the id {id:?} is part of {text:?}", kit.kind);
        }
        if let Some(tier) = parsed.tier {
            assert!(["free", "pro"].contains(&tier), "{:?}: tier {tier:?} of {text:?}", kit.kind);
        }
        assert_eq!(format.parse(text), Some(parsed), "parsing is deterministic");
    }
    assert_eq!(kit.keys.accepts(text), accepted, "{:?}: the manager accepts {text:?} as its formats do", kit.kind);
    let verification = block_on(kit.keys.verify(text)).unwrap_or_else(|e| panic!("verify of {text:?} failed: {e}"));
    let code = verification.code();
    let expected = if kit.stored.iter().any(|key| key == text) {
        Code::Valid
    } else if accepted {
        Code::NotFound
    } else {
        Code::Malformed
    };
    assert_eq!(code, expected, "{:?}: verify {text:?}", kit.kind);
}

// ---------------------------------------------------------------------------------
// Configuration

/// Whether hashing under `config` is cheap enough to create and verify a key in a
/// property test or a fuzz iteration (bcrypt cost 31 takes hours, by design).
fn cheap_hash(config: &Config) -> bool {
    match config.hash.algorithm {
        HashAlgorithm::Bcrypt => config.hash.bcrypt_cost.unwrap_or(10) <= 5,
        HashAlgorithm::Argon2id => {
            config.hash.argon2.is_some_and(|p| p.memory_kib <= 1024 && p.iterations <= 2 && p.parallelism <= 2)
        }
        HashAlgorithm::Sha256 | HashAlgorithm::Sha512 | HashAlgorithm::HmacSha256 => true,
    }
}

/// A configuration text (TOML or JSON) is read or refused with a syntax error; a config
/// read is validated with every problem named; written back as JSON it reads the same;
/// a valid one builds a manager or is refused as a configuration, and a manager built
/// from it creates keys that verify.
pub fn config(text: &str) {
    for parsed in [Config::from_toml(text), Config::from_json(text)] {
        let Ok(config) = parsed else { continue };
        let json = serde_json::to_string(&config).expect("a config serializes");
        assert_eq!(Config::from_json(&json).as_ref(), Ok(&config), "{json} reads back the same");
        let valid = match config.validate() {
            Ok(()) => true,
            Err(e) => {
                assert!(!e.problems().is_empty(), "an invalid config names its problems: {e}");
                false
            }
        };
        let keys = match KeyManager::from_config(config.clone(), MemoryStore::new()) {
            Ok(keys) => keys,
            Err(Error::Config(e)) => {
                assert!(!e.problems().is_empty(), "a refused config names its problems: {e}");
                continue;
            }
            Err(e) => panic!("building from {json} failed with {e}"),
        };
        assert!(valid, "{json}: a manager was built from a config that does not validate");
        if cheap_hash(&config) {
            created_key_verifies(&keys, NewKey::new().name("fuzz"), &json);
        }
    }
}
