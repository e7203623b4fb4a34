//! Configuration: read from TOML/JSON, validated all at once, described by a committed JSON Schema.

use keypal::{Config, ConfigError, Error, KeyManager, MemoryStore};

const SCHEMA_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schema/keypal.schema.json");

#[test]
fn committed_json_schema_is_current() {
    let generated = serde_json::to_string_pretty(&Config::json_schema()).unwrap_or_default() + "\n";
    if std::env::var_os("KEYPAL_UPDATE_SCHEMA").is_some() {
        std::fs::write(SCHEMA_PATH, &generated).unwrap_or_else(|e| panic!("writing {SCHEMA_PATH}: {e}"));
    }
    let committed = std::fs::read_to_string(SCHEMA_PATH).unwrap_or_default();
    assert!(
        committed == generated,
        "schema/keypal.schema.json is stale: run `KEYPAL_UPDATE_SCHEMA=1 cargo test -p keypal --test config` and commit it"
    );
}

#[test]
fn a_full_toml_config_builds_a_manager() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::from_toml(
        r#"
        template = "sprint-{tier}_{secret:43:base64url}"
        legacy_templates = ["sprint_{secret:43:base64url}"]
        namespace = "sprint"
        default_tier = "free"

        [tiers.free]
        rate_limit = "100/hour"
        [tiers.enterprise]
        segment = "ent"
        rate_limit = "10000/hour"

        [hash]
        algorithm = "hmac-sha256"
        pepper_id = "2025"
        [hash.peppers]
        2024 = "an-old-pepper-of-enough-length"
        2025 = "the-current-pepper-of-enough-length"

        [policy]
        max_active_keys_per_owner = 10
        name = { required = true, min_length = 1, max_length = 100 }
        expiry = { default = "90d", max = "365d" }

        [cache]
        mode = "on"
        ttl = "5s"

        [last_used]
        interval = "1m"
        "#,
    )?;
    let keys = KeyManager::from_config(config, MemoryStore::new())?;
    assert!(keys.generate_key().expose().starts_with("sprint-free_"));
    assert!(format!("{keys:?}").contains("hmac-sha256"));
    assert!(!format!("{keys:?}").contains("pepper-of"), "peppers never show in Debug");
    Ok(())
}

#[test]
fn every_problem_is_reported_at_once_with_its_path() {
    let config = Config::from_toml(
        r#"
        template = "sk_{tier}_{secret:8:base62}"
        default_tier = "gold"
        [tiers.free]
        segment = "f"
        [tiers.team]
        segment = "f"
        [hash]
        algorithm = "bcrypt"
        bcrypt_cost = 99
        pepper_id = "nope"
        [policy]
        max_active_keys_per_owner = 0
        name = { min_length = 10, max_length = 5 }
        [cache]
        capacity = 0
        "#,
    );
    let error = match config.map(|c| KeyManager::from_config(c, MemoryStore::new())) {
        Ok(Err(Error::Config(e))) => e,
        other => panic!("expected config problems, got {other:?}"),
    };
    let paths: Vec<&str> = error.problems().iter().map(|p| p.path.as_str()).collect();
    for expected in [
        "template",
        "hash.pepper_id",
        "hash.bcrypt_cost",
        "tiers.team.segment",
        "default_tier",
        "policy.max_active_keys_per_owner",
        "policy.name",
        "cache.capacity",
    ] {
        assert!(paths.contains(&expected), "{expected} missing from {paths:?}");
    }
    let message = error.to_string();
    assert!(message.contains("hash.bcrypt_cost:"), "{message}");
}

#[test]
fn unknown_fields_and_bad_values_are_syntax_errors() {
    for bad in [
        r#"prefx = "typo""#,
        r#"[tiers.free]
rate_limit = "100/fortnight""#,
        r#"[cache]
ttl = "soon""#,
    ] {
        assert!(matches!(Config::from_toml(bad), Err(ConfigError::Syntax(_))), "{bad}");
    }
}

#[test]
fn the_builder_reports_problems_like_the_config() {
    let error = KeyManager::builder().length(4).hint_length(2).store(MemoryStore::new()).build();
    let Err(Error::Config(error)) = error else { panic!("a 4-character key must be refused") };
    let paths: Vec<&str> = error.problems().iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["length", "lookup.hint_length"]);
}

#[test]
fn bcrypt_is_refused_for_keys_longer_than_it_reads() {
    let error = KeyManager::builder()
        .template("long_{secret:80:hex}")
        .hash(keypal::HashAlgorithm::Bcrypt)
        .store(MemoryStore::new())
        .build();
    let Err(Error::Config(error)) = error else { panic!("bcrypt must refuse 85-character keys") };
    assert_eq!(error.problems().iter().map(|p| p.path.as_str()).collect::<Vec<_>>(), ["hash.algorithm"]);
}

#[test]
fn durations_beyond_a_hundred_years_are_refused_with_their_paths() {
    // These used to validate, then panic: moka refuses a TTL over 1000 years, and a
    // default expiry past the calendar overflowed when a key was created.
    let config = Config::from_toml(
        r#"
        [policy.expiry]
        default = "101y"
        min = "584942417y"
        max = "10000000000000d"
        [cache]
        mode = "on"
        ttl = "2000y"
        [last_used]
        interval = "18446744073709551615s"
        "#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let error = KeyManager::from_config(config, MemoryStore::new()).map(|_| ()).unwrap_err();
    let Error::Config(error) = error else { panic!("{error}") };
    let paths: Vec<&str> = error.problems().iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        ["policy.expiry.default", "policy.expiry.min", "policy.expiry.max", "cache.ttl", "last_used.interval"]
    );
    assert!(error.problems().iter().all(|p| p.message.contains("100 years")), "{error}");

    let longest = Config::from_toml(
        r#"
        [policy.expiry]
        default = "100y"
        max = "100y"
        [cache]
        ttl = "100y"
        "#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(longest.validate(), Ok(()));
}
