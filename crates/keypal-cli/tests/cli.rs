//! The `keypal` binary, run as a user runs it: arguments, stdin and environment in;
//! exit code, stdout and stderr out.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Command, Stdio};

use common::*;

const TIERED: &str = "kota_{tier}_{id:12:base32}_{secret:36:hex}{checksum}";
const PEPPER: &str = "a-pepper-of-enough-length-0123";

fn is_base62(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// One key of `TIERED` of tier `tier`.
fn tiered_key(tier: &str) -> String {
    let out = keypal(&["generate", "--template", TIERED, "--tier", tier]).run();
    out.assert_code(0);
    out.stdout.trim_end().to_owned()
}

/// The secret part of a `TIERED` key: after `kota_<tier>_<id>_`, before the checksum.
fn tiered_secret<'k>(key: &'k str, tier: &str) -> &'k str {
    let start = "kota_".len() + tier.len() + 1 + 12 + 1;
    &key[start..start + 36]
}

// ---------------------------------------------------------------- generate

#[test]
fn generate_prints_one_key_of_the_core_default_format() {
    let out = keypal(&["generate"]).run();
    out.assert_code(0);
    assert!(out.stderr.is_empty(), "{out:#?}");
    let lines = out.lines();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].len(), 32);
    assert!(is_base62(lines[0]), "{out:#?}");
}

#[test]
fn generate_count_prints_distinct_keys_of_the_simple_form() {
    let out = keypal(&["generate", "--prefix", "sk_live", "--length", "40", "--encoding", "hex", "--count", "5"]).run();
    out.assert_code(0);
    let mut lines = out.lines();
    assert_eq!(lines.len(), 5);
    for line in &lines {
        let secret = line.strip_prefix("sk_live_").unwrap_or_else(|| panic!("{line}"));
        assert_eq!(secret.len(), 40);
        assert!(secret.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{line}");
    }
    lines.sort_unstable();
    lines.dedup();
    assert_eq!(lines.len(), 5, "keys are random");
}

#[test]
fn generate_json_prints_key_and_sha256_hash_per_line_and_the_hashes_verify() {
    let out = keypal(&["generate", "--prefix", "sk_test", "--json", "-n", "3"]).run();
    out.assert_code(0);
    assert_eq!(out.lines().len(), 3);
    for line in out.lines() {
        assert!(line.starts_with(r#"{"key":"sk_test_"#), "key first: {line}");
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        let object = value.as_object().unwrap();
        assert_eq!(object.len(), 2, "{line}");
        let (key, hash) = (object["key"].as_str().unwrap(), object["hash"].as_str().unwrap());
        assert!(hash.starts_with("$sha256$") && hash.len() == 8 + 64, "{hash}");
        keypal(&["verify", key, "--hash", hash]).run().assert_code(0);
    }
}

#[test]
fn generate_json_with_another_algorithm() {
    let out = keypal(&["generate", "--json", "--hash", "bcrypt", "--cost", "4"]).run();
    out.assert_code(0);
    let value: serde_json::Value = serde_json::from_str(out.stdout.trim_end()).unwrap();
    assert!(value["hash"].as_str().unwrap().starts_with("$2b$04$"), "{value}");

    let out = keypal(&["generate", "--json", "--hash", "hmac-sha256", "--pepper-id", "k1"])
        .env("KEYPAL_PEPPER", PEPPER)
        .run();
    out.assert_code(0);
    let value: serde_json::Value = serde_json::from_str(out.stdout.trim_end()).unwrap();
    assert!(value["hash"].as_str().unwrap().starts_with("$hmac-sha256$kid=k1$"), "{value}");
    assert!(!out.all().contains(PEPPER));
}

#[test]
fn generate_template_with_tier_and_checksum() {
    let out = keypal(&["generate", "--template", TIERED, "--tier", "team", "--count", "2"]).run();
    out.assert_code(0);
    for key in out.lines() {
        assert!(key.starts_with("kota_team_"), "{key}");
        assert_eq!(key.len(), "kota_team_".len() + 12 + 1 + 36 + 6, "{key}");
        keypal(&["inspect", key, "--template", TIERED, "--tier", "team"]).run().assert_code(0);
    }
}

#[test]
fn generate_template_with_app_and_label() {
    let out =
        keypal(&["generate", "-t", "sk-proj-{app}-{label}-{secret:32:base64url}", "--app", "a1", "--label", "ci"])
            .run();
    out.assert_code(0);
    assert!(out.stdout.starts_with("sk-proj-a1-ci-"), "{out:#?}");
}

#[test]
fn generate_refuses_bad_options_with_clear_errors() {
    keypal(&["generate", "--template", "kota_{tier}_{secret:32:hex}"]).run().assert_error("--tier");
    keypal(&["generate", "--tier", "free"]).run().assert_error("no {tier} segment");
    keypal(&["generate", "--length", "8"]).run().assert_error("--length: must be between 16 and 256");
    keypal(&["generate", "--prefix", "has space"]).run().assert_error("--prefix");
    keypal(&["generate", "--template", "sk_{secret:32:base58}"]).run().assert_error("unknown encoding `base58`");
    keypal(&["generate", "--template", "sk_{secret:32:hex}", "--length", "40"]).run().assert_error("cannot be used");
    keypal(&["generate", "--encoding", "base58"]).run().assert_error("invalid value 'base58'");
    keypal(&["generate", "--count", "0"]).run().assert_error("--count");
    keypal(&["generate", "--hash", "sha512"]).run().assert_error("--json");
    keypal(&["generate", "--json", "--cost", "4"]).run().assert_error("--cost only applies to bcrypt");
    keypal(&["generate", "--json", "--hash", "hmac-sha256", "--pepper-id", "k1"]).run().assert_error("KEYPAL_PEPPER");
}

// ---------------------------------------------------------------- hash

#[test]
fn hash_from_argument_and_from_stdin_agree() {
    // SHA-256("abc") is the FIPS 180-2 test vector.
    let expected = "$sha256$ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n";
    let from_arg = keypal(&["hash", "abc", "--algorithm", "sha256"]).run();
    from_arg.assert_code(0);
    assert_eq!(from_arg.stdout, expected);
    assert_eq!(keypal(&["hash", "abc"]).run().stdout, expected, "sha256 is the default");
    assert_eq!(keypal(&["hash", "-"]).stdin("abc\n").run().stdout, expected, "the trailing newline is dropped");
    assert_eq!(keypal(&["hash"]).stdin("abc\r\n").run().stdout, expected);
    assert_eq!(keypal(&["hash"]).stdin("abc").run().stdout, expected);
}

#[test]
fn keys_beginning_with_a_hyphen_are_keys_not_options() {
    // A base64url secret starts with `-` one time in 64: bare legacy keys do.
    let key = "-sQ3vTt0b_9XyZ-AbCdEfGhIjKlMnOpQrStUvWxYz01";
    let hashed = keypal(&["hash", key, "--algorithm", "sha256"]).run();
    hashed.assert_code(0);
    let stored = hashed.stdout.trim_end().to_owned();
    assert_eq!(keypal(&["hash", "--algorithm", "sha256", key]).run().stdout.trim_end(), stored);
    assert_eq!(keypal(&["hash"]).stdin(key).run().stdout.trim_end(), stored);
    let valid = keypal(&["verify", key, "--hash", &stored]).run();
    valid.assert_code(0);
    let inspected = keypal(&["inspect", key, "--template", "{secret:43:base64url}"]).run();
    inspected.assert_code(0);
}

#[test]
fn hash_every_algorithm_and_verify_it() {
    let key = "sk_live_Kq3vX9mB2nR7tY4wZ8pL1cF6hJ0dS5aE";
    let pepper_file = temp_file("pepper", &format!("{PEPPER}\n"));
    let cases: [(&[&str], &str); 5] = [
        (&["--algorithm", "sha256"], "$sha256$"),
        (&["--algorithm", "sha512"], "$sha512$"),
        (
            &["-a", "argon2id", "--memory-kib", "64", "--iterations", "1", "--parallelism", "1"],
            "$argon2id$v=19$m=64,t=1,p=1$",
        ),
        (&["-a", "bcrypt", "--cost", "4"], "$2b$04$"),
        (
            &["-a", "hmac-sha256", "--pepper-id", "2025", "--pepper-file", path_str(&pepper_file)],
            "$hmac-sha256$kid=2025$",
        ),
    ];
    for (options, start) in cases {
        for stdin in [false, true] {
            let mut args = vec!["hash"];
            if !stdin {
                args.push(key);
            }
            args.extend_from_slice(options);
            let run = keypal(&args);
            let out = if stdin { run.stdin(&format!("{key}\n")).run() } else { run.run() };
            out.assert_code(0);
            let lines = out.lines();
            assert_eq!(lines.len(), 1, "{out:#?}");
            assert!(lines[0].starts_with(start), "{options:?}: {out:#?}");
            assert!(!out.all().contains(PEPPER));

            let verify = keypal(&["verify", key, "--hash", lines[0], "--pepper-file", path_str(&pepper_file)]).run();
            verify.assert_code(0);
            let wrong =
                keypal(&["verify", &key.replace('E', "F"), "--hash", lines[0]]).env("KEYPAL_PEPPER", PEPPER).run();
            wrong.assert_code(1);
        }
    }
}

#[test]
fn hash_hmac_takes_the_pepper_from_the_environment_or_a_file() {
    let file = temp_file("pepper", PEPPER);
    let from_file =
        keypal(&["hash", "abc", "-a", "hmac-sha256", "--pepper-id", "k1", "--pepper-file", path_str(&file)]).run();
    let from_env =
        keypal(&["hash", "abc", "-a", "hmac-sha256", "--pepper-id", "k1"]).env("KEYPAL_PEPPER", PEPPER).run();
    let id_from_env =
        keypal(&["hash", "abc", "-a", "hmac-sha256"]).env("KEYPAL_PEPPER", PEPPER).env("KEYPAL_PEPPER_ID", "k1").run();
    from_file.assert_code(0);
    assert_eq!(from_file.stdout, from_env.stdout, "HMAC is deterministic");
    assert_eq!(from_file.stdout, id_from_env.stdout);

    keypal(&["hash", "abc", "-a", "hmac-sha256", "--pepper-id", "k1"]).run().assert_error("KEYPAL_PEPPER");
    keypal(&["hash", "abc", "-a", "hmac-sha256"]).env("KEYPAL_PEPPER", PEPPER).run().assert_error("--pepper-id");
    let short =
        keypal(&["hash", "abc", "-a", "hmac-sha256", "--pepper-id", "k1"]).env("KEYPAL_PEPPER", "short-one").run();
    short.assert_error("shorter than 16 bytes");
    assert!(!short.all().contains("short-one"), "the pepper is never printed");
    let missing = temp_file("gone", "");
    std::fs::remove_file(&missing).unwrap();
    keypal(&["hash", "abc", "-a", "hmac-sha256", "--pepper-id", "k1", "--pepper-file", path_str(&missing)])
        .run()
        .assert_error("cannot read the pepper");
}

#[test]
fn hash_refuses_bad_input() {
    keypal(&["hash"]).stdin("").run().assert_error("the key is empty");
    keypal(&["hash"]).stdin("one\ntwo\n").run().assert_error("line break");
    keypal(&["hash", "abc", "-a", "bcrypt", "--cost", "3"]).run().assert_error("outside 4..=31");
    keypal(&["hash", "abc", "--cost", "4"]).run().assert_error("--cost only applies to bcrypt");
    keypal(&["hash", "abc", "--memory-kib", "64"]).run().assert_error("--memory-kib only applies to argon2id");
    keypal(&["hash", "abc", "-a", "md5"]).run().assert_error("invalid value 'md5'");
    let long = "k".repeat(80);
    keypal(&["hash", &long, "-a", "bcrypt", "--cost", "4"]).run().assert_error("bcrypt reads only 72 bytes");
}

// ---------------------------------------------------------------- verify

#[test]
fn verify_answers_by_exit_code() {
    let stored = keypal(&["hash", "sk_live_abc"]).run().stdout.trim_end().to_owned();

    let valid = keypal(&["verify", "sk_live_abc", "--hash", &stored]).run();
    valid.assert_code(0);
    assert_eq!(valid.stdout, "valid\n");
    assert!(valid.stderr.is_empty());

    let invalid = keypal(&["verify", "sk_live_abd", "--hash", &stored]).run();
    invalid.assert_code(1);
    assert_eq!(invalid.stdout, "invalid\n");
    assert!(invalid.stderr.is_empty());

    let from_stdin = keypal(&["verify", "-", "--hash", &stored]).stdin("sk_live_abc\n").run();
    from_stdin.assert_code(0);

    // A hash of the right kind but garbled is simply invalid.
    let garbled = keypal(&["verify", "sk_live_abc", "--hash", "$sha256$abc"]).run();
    garbled.assert_code(1);
}

#[test]
fn verify_usage_errors_exit_2() {
    keypal(&["verify", "sk_live_abc", "--hash", "not-a-hash"]).run().assert_error("not a stored hash");
    keypal(&["verify", "sk_live_abc"]).run().assert_error("--hash");
    keypal(&["verify"]).run().assert_error("KEY");
    let hmac = keypal(&["hash", "abc", "-a", "hmac-sha256", "--pepper-id", "k9"]).env("KEYPAL_PEPPER", PEPPER).run();
    let stored = hmac.stdout.trim_end();
    keypal(&["verify", "abc", "--hash", stored]).run().assert_error("pepper of id `k9`");
    keypal(&["verify", "abc", "--hash", stored]).env("KEYPAL_PEPPER", PEPPER).run().assert_code(0);
    keypal(&["verify", "abc", "--hash", stored]).env("KEYPAL_PEPPER", "another-pepper-of-length").run().assert_code(1);
}

// ---------------------------------------------------------------- inspect

#[test]
fn inspect_shows_segments_but_never_the_secret() {
    let key = tiered_key("team");
    let secret = tiered_secret(&key, "team");
    let out = keypal(&["inspect", &key, "--template", TIERED, "--tier", "free", "--tier", "team"]).run();
    out.assert_code(0);
    assert!(out.stderr.is_empty(), "{out:#?}");
    let lines = out.lines();
    assert!(lines.contains(&"prefix    kota_"), "{out:#?}");
    assert!(lines.contains(&"tier      team"), "{out:#?}");
    assert!(lines.contains(&format!("id        {}", &key[10..22]).as_str()), "{out:#?}");
    assert!(lines.contains(&"secret    36 characters, hex (not shown)"), "{out:#?}");
    assert!(lines.contains(&"checksum  valid"), "{out:#?}");
    assert!(!out.all().contains(secret), "the secret must never be printed: {out:#?}");
    assert!(!out.all().contains(&key), "nor the whole key: {out:#?}");

    let json = keypal(&["inspect", "-", "--template", TIERED, "--tier", "team", "--json"]).stdin(&key).run();
    json.assert_code(0);
    let value: serde_json::Value = serde_json::from_str(json.stdout.trim_end()).unwrap();
    assert_eq!(value["tier"], "team");
    assert_eq!(value["id"], &key[10..22]);
    assert_eq!(value["secret"]["length"], 36);
    assert_eq!(value["secret"]["encoding"], "hex");
    assert_eq!(value["checksum"], "valid");
    assert_eq!(value["valid"], true);
    assert!(!json.all().contains(secret));
}

#[test]
fn inspect_the_default_and_simple_formats() {
    let key = keypal(&["generate"]).run().stdout;
    let out = keypal(&["inspect", key.trim_end()]).run();
    out.assert_code(0);
    assert!(out.stdout.contains("secret    32 characters, base62 (not shown)"), "{out:#?}");
    assert!(out.stdout.contains("checksum  none"), "{out:#?}");

    let key = keypal(&["generate", "--prefix", "sk_live"]).run().stdout;
    let out = keypal(&["inspect", "-", "--prefix", "sk_live"]).stdin(&key).run();
    out.assert_code(0);
    assert!(out.stdout.contains("prefix    sk_live_"), "{out:#?}");
    assert!(!out.all().contains(&key.trim_end()["sk_live_".len()..]));
}

#[test]
fn inspect_rejects_a_key_of_another_format() {
    let key = keypal(&["generate", "--prefix", "sk_live"]).run().stdout.trim_end().to_owned();
    let out = keypal(&["inspect", &format!("{key}x"), "--prefix", "sk_live"]).run();
    out.assert_code(1);
    assert!(out.stdout.is_empty(), "{out:#?}");
    assert!(out.stderr.starts_with("error: the key is not of the format `sk_live_{secret:32:base62}`"), "{out:#?}");
    assert!(out.stderr.contains("40 characters long, this one is 41"), "{out:#?}");
    assert!(!out.all().contains(&key["sk_live_".len()..]), "{out:#?}");

    let out = keypal(&["inspect", &key, "--prefix", "sk_test"]).run();
    out.assert_code(1);

    let tiered = tiered_key("team");
    let out = keypal(&["inspect", &tiered, "--template", TIERED, "--tier", "free"]).run();
    out.assert_code(1);
    assert!(out.stderr.contains("with the tier texts free"), "{out:#?}");

    keypal(&["inspect", &tiered, "--template", TIERED]).run().assert_error("--tier");
}

#[test]
fn inspect_reports_a_checksum_that_does_not_match() {
    let key = tiered_key("free");
    let secret = tiered_secret(&key, "free").to_owned();
    // Change the last checksum character.
    let last = key.chars().last().unwrap();
    let typo = format!("{}{}", &key[..key.len() - 1], if last == 'A' { 'B' } else { 'A' });
    let out = keypal(&["inspect", &typo, "--template", TIERED, "--tier", "free"]).run();
    out.assert_code(1);
    assert!(out.stdout.contains("tier      free"), "{out:#?}");
    assert!(out.stdout.contains("checksum  invalid"), "{out:#?}");
    assert!(out.stderr.starts_with("error: the checksum does not match"), "{out:#?}");
    assert!(!out.all().contains(&secret), "{out:#?}");

    // A typo in the secret is caught by the checksum too.
    let mut chars: Vec<char> = key.chars().collect();
    let at = "kota_free_".len() + 13;
    chars[at] = if chars[at] == '0' { '1' } else { '0' };
    let typo: String = chars.into_iter().collect();
    let out = keypal(&["inspect", &typo, "--template", TIERED, "--tier", "free", "--json"]).run();
    out.assert_code(1);
    let value: serde_json::Value = serde_json::from_str(out.stdout.trim_end()).unwrap();
    assert_eq!(value["checksum"], "invalid");
    assert_eq!(value["valid"], false);
}

// ---------------------------------------------------------------- config

#[test]
fn config_schema_is_the_committed_schema() {
    let out = keypal(&["config", "schema"]).run();
    out.assert_code(0);
    let parsed: serde_json::Value = serde_json::from_str(&out.stdout).expect("the schema is JSON");
    assert!(parsed.is_object());
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schema/keypal.schema.json"))
        .expect("schema/keypal.schema.json");
    assert_eq!(out.stdout, committed);
}

#[test]
fn config_check_accepts_a_good_file() {
    let file = temp_file(
        "good.toml",
        r#"
        template = "kota_{tier}_{id:12:base32}_{secret:36:hex}"
        default_tier = "free"
        [tiers.free]
        rate_limit = "100/hour"
        [hash]
        algorithm = "hmac-sha256"
        [hash.peppers]
        2025 = "a long random server-side secret"
        "#,
    );
    let out = keypal(&["config", "check", path_str(&file)]).run();
    out.assert_code(0);
    assert_eq!(out.stdout, format!("{}: ok\n", file.display()));
    assert!(!out.all().contains("server-side secret"));

    let json = temp_file("good.json", r#"{"prefix": "sk_live", "length": 40}"#);
    keypal(&["config", "check", path_str(&json)]).run().assert_code(0);
    keypal(&["config", "check", "-"]).stdin("prefix = \"sk_live\"\n").run().assert_code(0);
}

#[test]
fn config_check_lists_every_problem_with_its_path() {
    let file = temp_file(
        "bad.toml",
        r#"
        prefix = "sk live"
        length = 8
        default_tier = "gold"
        [hash]
        algorithm = "bcrypt"
        bcrypt_cost = 99
        [policy]
        max_active_keys_per_owner = 0
        [cache]
        capacity = 0
        "#,
    );
    let out = keypal(&["config", "check", path_str(&file)]).run();
    out.assert_code(1);
    let paths: Vec<&str> = out.lines().iter().filter_map(|line| line.split_once(": ").map(|(path, _)| path)).collect();
    for expected in
        ["length", "prefix", "hash.bcrypt_cost", "default_tier", "policy.max_active_keys_per_owner", "cache.capacity"]
    {
        assert!(paths.contains(&expected), "{expected} missing: {out:#?}");
    }
    assert!(out.stderr.starts_with("error: ") && out.stderr.contains("problem(s)"), "{out:#?}");
}

#[test]
fn config_check_reports_syntax_errors_without_echoing_secrets() {
    let typo = temp_file("typo.toml", "prefx = \"sk_live\"\n");
    let out = keypal(&["config", "check", path_str(&typo)]).run();
    out.assert_code(1);
    assert!(out.stdout.starts_with("line 1, column 1: unknown field `prefx`"), "{out:#?}");

    let broken = temp_file("broken.toml", "[hash.peppers]\nk1 = \"the-secret-pepper-value\n");
    let out = keypal(&["config", "check", path_str(&broken)]).run();
    out.assert_code(1);
    assert!(out.stdout.starts_with("line 2"), "{out:#?}");
    assert!(!out.all().contains("the-secret-pepper-value"), "{out:#?}");
}

#[test]
fn config_check_of_a_missing_file_is_an_error() {
    keypal(&["config", "check", "/nonexistent/keypal.toml"]).run().assert_error("cannot read /nonexistent/keypal.toml");
    keypal(&["config"]).run().assert_code(2);
}

// ---------------------------------------------------------------- completions, help, usage

#[test]
fn completions_for_every_shell() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let out = keypal(&["completions", shell]).run();
        out.assert_code(0);
        assert!(out.stdout.contains("keypal"), "{shell}: {out:#?}");
        assert!(out.stdout.contains("generate") && out.stdout.contains("inspect"), "{shell}");
    }
    keypal(&["completions", "tcsh"]).run().assert_error("invalid value 'tcsh'");
}

#[test]
fn help_everywhere() {
    for args in [
        &["--help"][..],
        &["generate", "--help"],
        &["hash", "--help"],
        &["verify", "--help"],
        &["inspect", "--help"],
        &["config", "--help"],
        &["config", "schema", "--help"],
        &["config", "check", "--help"],
        &["completions", "--help"],
        &["serve", "--help"],
        &["tokens", "--help"],
        &["tokens", "create", "--help"],
        &["tokens", "list", "--help"],
        &["tokens", "revoke", "--help"],
    ] {
        let out = keypal(args).run();
        out.assert_code(0);
        assert!(out.stdout.contains("Usage: keypal"), "{args:?}: {out:#?}");
    }
    let version = keypal(&["--version"]).run();
    version.assert_code(0);
    assert!(version.stdout.starts_with("keypal "), "{version:#?}");
}

#[test]
fn unknown_subcommand_and_missing_subcommand_are_usage_errors() {
    keypal(&["frobnicate"]).run().assert_error("unrecognized subcommand 'frobnicate'");
    let out = keypal(&[]).run();
    out.assert_code(2);
    assert!(out.stderr.contains("Usage: keypal"), "{out:#?}");
    keypal(&["generate", "--frobnicate"]).run().assert_error("unexpected argument '--frobnicate'");
}

// ---------------------------------------------------------------- serve

#[test]
fn serve_check_prints_the_defaults() {
    let out = keypal(&["serve", "--check"]).run();
    out.assert_code(0);
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let hash_workers = format!("hash_workers          {cores} (one per core)");
    assert_eq!(
        out.lines(),
        [
            "listen                127.0.0.1:8080",
            "database_url          sqlite://keypal.db",
            "database_schema       unset",
            "max_connections       10",
            "key_file              keypal.key",
            "master_key            unset",
            "admin_password        unset",
            "service_key           unset",
            "redis_url             unset",
            "redis_prefix          keypal:",
            "rate_limit_fail_open  false",
            "rate_limit_timeout    200ms",
            "cache_ttl             10s",
            "cache_capacity        100000",
            &hash_workers,
            "hash_wait             1s",
            "usage_counting        true",
            "usage_minute_retention 2days",
            "usage_hour_retention  90days",
            "usage_day_retention   forever",
            "webhooks_allow_private false",
            "webhook_expiry_warnings 7days,1day",
            "webhook_scan_interval 1m",
            "log                   info",
        ]
    );
}

#[test]
fn serve_settings_precedence_is_option_then_env_then_file_then_default() {
    let file = temp_file(
        "serve.toml",
        r#"
        listen = "0.0.0.0:9000"
        database_url = "postgres://keypal:db-password@db/keys"
        max_connections = 20
        cache_ttl = "30s"
        log = "debug"
        master_key = "file-master-key"
        hash_workers = 4
        hash_wait = "2s"
        "#,
    );
    let out =
        keypal(&["serve", "--check", "--config", path_str(&file), "--max-connections", "3", "--hash-wait", "250ms"])
            .env("KEYPAL_LISTEN", "127.0.0.1:7000")
            .env("KEYPAL_MAX_CONNECTIONS", "5")
            .env("KEYPAL_REDIS_URL", "redis://:redis-password@cache:6379")
            .env("KEYPAL_ADMIN_PASSWORD", "env-admin-password")
            .env("KEYPAL_SERVICE_KEY", "")
            .env("KEYPAL_DATABASE_SCHEMA", "keypal")
            .env("KEYPAL_HASH_WORKERS", "3")
            .env("KEYPAL_HASH_WAIT", "5s")
            .run();
    out.assert_code(0);
    let lines = out.lines();
    assert!(lines.contains(&"listen                127.0.0.1:7000"), "env over file: {out:#?}");
    assert!(lines.contains(&"max_connections       3"), "option over env: {out:#?}");
    assert!(lines.contains(&"database_url          postgres://keypal:[redacted]@db/keys"), "file: {out:#?}");
    assert!(lines.contains(&"log                   debug"), "file over default: {out:#?}");
    assert!(lines.contains(&"cache_ttl             30s"), "file over default: {out:#?}");
    assert!(lines.contains(&"database_schema       keypal"), "env: {out:#?}");
    assert!(lines.contains(&"hash_workers          3"), "env over file: {out:#?}");
    assert!(lines.contains(&"hash_wait             250ms"), "option over env: {out:#?}");
    assert!(lines.contains(&"key_file              keypal.key"), "default: {out:#?}");
    assert!(lines.contains(&"master_key            set"), "secret from the file: {out:#?}");
    assert!(lines.contains(&"admin_password        set"), "secret from env: {out:#?}");
    assert!(lines.contains(&"service_key           unset"), "an empty variable is unset: {out:#?}");
    assert!(lines.contains(&"redis_url             redis://:[redacted]@cache:6379"), "{out:#?}");
    for secret in ["db-password", "file-master-key", "redis-password", "env-admin-password"] {
        assert!(!out.all().contains(secret), "{secret} printed: {out:#?}");
    }

    let config_from_env = keypal(&["serve", "--check", "--listen", "127.0.0.1:6000"])
        .env("KEYPAL_CONFIG", path_str(&file))
        .env("KEYPAL_LISTEN", "127.0.0.1:7000")
        .run();
    config_from_env.assert_code(0);
    assert!(config_from_env.lines().contains(&"listen                127.0.0.1:6000"), "{config_from_env:#?}");
    assert!(config_from_env.lines().contains(&"max_connections       20"), "{config_from_env:#?}");
    assert!(config_from_env.lines().contains(&"hash_workers          4"), "{config_from_env:#?}");
    assert!(config_from_env.lines().contains(&"hash_wait             2s"), "{config_from_env:#?}");
}

#[test]
fn serve_refuses_bad_settings() {
    keypal(&["serve", "--check", "--config", "/nonexistent/serve.toml"]).run().assert_error("--config: cannot read");
    let unknown = temp_file("unknown.toml", "listen = \"127.0.0.1:1\"\nmaster_kee = \"x\"\n");
    keypal(&["serve", "--check", "--config", path_str(&unknown)]).run().assert_error("master_kee");
    // A syntax error on a secret's line is reported by its line, without the line.
    let broken = temp_file("broken-serve.toml", "listen = \"127.0.0.1:1\"\nadmin_password = \"hunter2-secret\n");
    let out = keypal(&["serve", "--check", "--config", path_str(&broken)]).run();
    out.assert_error("line 2");
    assert!(!out.all().contains("hunter2-secret"), "{out:#?}");
    keypal(&["serve", "--listen", "not-an-address"]).run().assert_error("--listen");
    keypal(&["serve"]).env("KEYPAL_LISTEN", "not-an-address").run().assert_error("--listen");
    keypal(&["serve", "--max-connections", "0"]).run().assert_error("--max-connections");
    keypal(&["serve", "--hash-workers", "0"]).run().assert_error("--hash-workers");
    keypal(&["serve", "--hash-wait", "soon"]).run().assert_error("--hash-wait");
    let no_workers = temp_file("no-workers.toml", "hash_workers = 0\n");
    keypal(&["serve", "--check", "--config", path_str(&no_workers)]).run().assert_error("line 1");
    keypal(&["serve", "--check", "--log", "x=[[["]).run().assert_error("--log");
    keypal(&["serve", "--check", "--cache-ttl", "soon"]).run().assert_error("--cache-ttl");
    keypal(&["serve", "--cache-capacity", "0"]).run().assert_error("--cache-capacity");
    // In range for the parser, not for a cache: refused before anything is opened.
    let dir = temp_file("cache-ttl-dir", "");
    std::fs::remove_file(&dir).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    let database = format!("sqlite://{}", path_str(&dir.join("keypal.db")));
    let out = keypal(&["serve", "--cache-ttl", "2days", "--database-url", &database]).run();
    out.assert_error("INVALID_SETTING");
    assert!(out.stderr.contains("cache_ttl"), "{out:#?}");
    assert!(!dir.join("keypal.db").exists(), "nothing created");
    // Secrets are never options.
    keypal(&["serve", "--master-key", "abc"]).run().assert_error("unexpected argument '--master-key'");
    keypal(&["serve", "--admin-password", "abc"]).run().assert_error("unexpected argument");
}

#[test]
fn serve_help_names_every_variable() {
    let out = keypal(&["serve", "--help"]).env("KEYPAL_DATABASE_URL", "postgres://u:help-password@h/db").run();
    out.assert_code(0);
    for name in [
        "KEYPAL_LISTEN",
        "KEYPAL_DATABASE_URL",
        "KEYPAL_DATABASE_SCHEMA",
        "KEYPAL_CONFIG",
        "KEYPAL_KEY_FILE",
        "KEYPAL_REDIS_URL",
        "KEYPAL_MAX_CONNECTIONS",
        "KEYPAL_LOG",
        "KEYPAL_CACHE_TTL",
        "KEYPAL_RATE_LIMIT_TIMEOUT",
        "KEYPAL_CACHE_CAPACITY",
        "KEYPAL_MASTER_KEY",
        "KEYPAL_ADMIN_PASSWORD",
        "KEYPAL_SERVICE_KEY",
    ] {
        assert!(out.stdout.contains(name), "{name} missing from help: {out:#?}");
    }
    assert!(!out.stdout.contains("help-password"), "help never shows variable values");
}

#[test]
fn serve_runs_the_service_until_stopped() {
    use std::io::{BufRead, BufReader};

    let dir = temp_file("serve-dir", "");
    std::fs::remove_file(&dir).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    let database = format!("sqlite://{}", path_str(&dir.join("keypal.db")));
    let mut child = Command::new(env!("CARGO_BIN_EXE_keypal"))
        .env_clear()
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &database])
        .args(["--key-file", path_str(&dir.join("keypal.key")), "--log", "warn"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the keypal binary runs");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut listening = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("stdout is UTF-8");
        if let Some(addr) = line.strip_prefix("keypal: listening on http://") {
            listening = Some(addr.to_owned());
            break;
        }
    }
    let still_running = child.try_wait().expect("the child can be polled").is_none();
    child.kill().expect("the child can be stopped");
    let out = child.wait_with_output().expect("the child ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let addr = listening.unwrap_or_else(|| panic!("never listened; stderr: {stderr}"));
    assert!(addr.parse::<std::net::SocketAddr>().is_ok(), "{addr}");
    assert!(still_running, "the service keeps running; stderr: {stderr}");
    assert!(dir.join("keypal.key").exists(), "the master key file is created on first start");
}

#[test]
fn serve_failures_are_reported_with_their_code() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = temp_file("serve-fail", "");
    std::fs::remove_file(&dir).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    let database = format!("sqlite://{}", path_str(&dir.join("keypal.db")));
    let key_file = dir.join("keypal.key");
    let out = keypal(&["serve", "--listen", &addr, "--database-url", &database, "--key-file", path_str(&key_file)])
        .env("KEYPAL_LOG", "off")
        .run();
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(out.stderr.contains("error: keypal serve [LISTEN_FAILED]: cannot listen on"), "{out:#?}");

    // A new database (the one above has recorded its master key) whose key file cannot be created.
    let database = format!("sqlite://{}", path_str(&dir.join("other.db")));
    let out = keypal(&["serve", "--database-url", &database, "--key-file", "/nonexistent/dir/keypal.key"])
        .env("KEYPAL_LOG", "off")
        .run();
    out.assert_error("[MASTER_KEY_INVALID]");
}

/// Runs `keypal serve` on `database` with the master key `master_key` until it listens, then stops it.
fn serve_once(database: &str, master_key: &str) {
    use std::io::{BufRead, BufReader};

    let mut child = Command::new(env!("CARGO_BIN_EXE_keypal"))
        .env_clear()
        .env("KEYPAL_MASTER_KEY", master_key)
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", database, "--log", "off"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the keypal binary runs");
    let stdout = child.stdout.take().expect("stdout is piped");
    let listened = BufReader::new(stdout).lines().map_while(Result::ok).any(|l| l.starts_with("keypal: listening on"));
    child.kill().expect("the child can be stopped");
    child.wait().expect("the child ends");
    assert!(listened, "keypal serve did not start on {database}");
}

#[test]
fn serve_refuses_a_database_of_another_master_key() {
    let dir = temp_file("serve-master-key", "");
    std::fs::remove_file(&dir).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    let database = format!("sqlite://{}", path_str(&dir.join("keypal.db")));
    serve_once(&database, &"11".repeat(32));

    let key_file = dir.join("keypal.key");
    // A port that is taken: were the master key not checked first, the run would end with
    // LISTEN_FAILED (and would not serve forever).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let serve = ["serve", "--listen", &addr, "--database-url", &database, "--key-file", path_str(&key_file)];
    let out = keypal(&serve).env("KEYPAL_MASTER_KEY", &"22".repeat(32)).env("KEYPAL_LOG", "off").run();
    out.assert_error("error: keypal serve [MASTER_KEY_MISMATCH]: the master key from KEYPAL_MASTER_KEY does not match");
    assert!(out.stderr.contains("set KEYPAL_MASTER_KEY"), "{out:#?}");
    assert!(!out.stderr.contains(&"22".repeat(32)), "never the key: {out:#?}");

    // Unset, with no key file: a new key would not do for this database.
    let out = keypal(&serve).env("KEYPAL_LOG", "off").run();
    out.assert_error("error: keypal serve [MASTER_KEY_MISSING]: this database was created with a master key");
    assert!(!key_file.exists(), "no key file is created for a database in use");
}

#[test]
fn serve_takes_the_redis_prefix_and_fail_open_from_flags_and_environment() {
    let out = keypal(&["serve", "--check", "--redis-prefix", "kp1:", "--rate-limit-fail-open"]).run();
    out.assert_code(0);
    assert!(out.lines().contains(&"redis_prefix          kp1:"), "{out:#?}");
    assert!(out.lines().contains(&"rate_limit_fail_open  true"), "{out:#?}");
    let out = keypal(&["serve", "--check"]).env("KEYPAL_RATE_LIMIT_FAIL_OPEN", "false").run();
    assert!(out.lines().contains(&"rate_limit_fail_open  false"), "{out:#?}");
}

// ---------------------------------------------------------------- tokens

#[test]
fn a_token_made_on_the_command_line_manages_a_running_server_until_revoked() {
    let dir = scratch_dir("tokens-dir");
    let database = format!("sqlite://{}", path_str(&dir.join("keypal.db")));
    let master_key = "33".repeat(32);
    let tokens = |args: &[&str]| {
        let mut all = vec!["tokens"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--database-url", &database]);
        keypal(&all).env("KEYPAL_MASTER_KEY", &master_key).run()
    };

    // Made before any server started: the token alone on stdout.
    let out = tokens(&["create", "--name", "ci", "--expires-in-days", "30"]);
    out.assert_code(0);
    assert_eq!(out.lines().len(), 1, "{out:#?}");
    let token = out.stdout.trim_end().to_owned();
    assert!(token.starts_with("kp_mgmt_") && token.len() == 48, "{out:#?}");
    assert!(out.stderr.contains("created management token ci") && !out.stderr.contains(&token), "{out:#?}");

    // Listed as a table, and as the JSON of GET /v1/tokens; never the token.
    let out = tokens(&["list"]);
    out.assert_code(0);
    let lines = out.lines();
    assert!(lines[0].starts_with("ID") && lines[0].contains("NAME") && lines[0].contains("LAST USED"), "{out:#?}");
    assert_eq!(lines.len(), 2, "{out:#?}");
    assert!(lines[1].contains(" ci ") && lines[1].trim_end().ends_with("never"), "never used yet: {out:#?}");
    let out = tokens(&["list", "--json"]);
    out.assert_code(0);
    let list: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(list["tokens"][0]["name"], "ci", "{list}");
    assert!(list["tokens"][0]["expires_at"].is_string(), "{list}");
    let id = list["tokens"][0]["id"].as_str().unwrap().to_owned();
    assert!(!out.all().contains(&token));

    // A server on the same database takes it; revoked on the command line while it runs,
    // it is refused at its next request.
    let (mut server, addr) = serve_in_background(&database, &master_key);
    let with_token = status_with_token(&addr, "/v1/apps", &token);
    let without = status_with_token(&addr, "/v1/apps", "kp_mgmt_not-a-token");
    let used = tokens(&["list", "--json"]);
    let revoked = tokens(&["revoke", &id]);
    let after = status_with_token(&addr, "/v1/apps", &token);
    server.kill().expect("the server can be stopped");
    server.wait().expect("the server ends");
    assert_eq!((with_token, without), (200, 401));
    let used: serde_json::Value = serde_json::from_str(&used.stdout).unwrap();
    assert!(used["tokens"][0]["last_used_at"].is_string(), "its use is recorded: {used}");
    revoked.assert_code(0);
    assert!(revoked.stdout.is_empty() && revoked.stderr.contains("revoked management token ci"), "{revoked:#?}");
    assert_eq!(after, 401, "refused at once after the revocation");

    let out = tokens(&["list"]);
    assert_eq!(out.lines().len(), 1, "only the header once revoked: {out:#?}");
    tokens(&["revoke", &id]).assert_error("[NOT_FOUND] no such management token");
    // Its name is free again.
    tokens(&["create", "--name", "ci"]).assert_code(0);
}

#[test]
fn tokens_refuse_bad_input_and_another_master_key() {
    let dir = scratch_dir("tokens-refusals");
    let database = format!("sqlite://{}", path_str(&dir.join("keypal.db")));
    let config =
        temp_file("tokens.toml", &format!("database_url = \"{database}\"\nmaster_key = \"{}\"\n", "44".repeat(32)));
    // The deployment named by a --config file, as keypal serve reads it.
    let tokens = |args: &[&str]| {
        let mut all = vec!["tokens"];
        all.extend_from_slice(args);
        keypal(&all).env("KEYPAL_CONFIG", path_str(&config)).run()
    };
    tokens(&["create", "--name", "ci"]).assert_code(0);
    tokens(&["create", "--name", "ci"]).assert_error("[TOKEN_NAME_TAKEN]");
    tokens(&["create", "--name", "with space"]).assert_error("[INVALID_INPUT] name: must be 1-64 of");
    tokens(&["create", "--name", "n", "--expires-in-days", "0"]).assert_error("[INVALID_INPUT] expires_in_days");
    tokens(&["create", "--name", "n", "--expires-in-days", "3651"]).assert_error("expires_in_days");
    tokens(&["create"]).assert_error("--name");
    tokens(&["revoke", "not-an-id"]).assert_error("invalid value 'not-an-id'");
    tokens(&["revoke", "0190f3c2-7c1e-7d3a-9b5e-2f4c6a8e0b1d"]).assert_error("[NOT_FOUND]");
    assert_eq!(tokens(&["list"]).lines().len(), 2, "nothing refused was made");

    // Another master key: refused before anything is read or written.
    let wrong = keypal(&["tokens", "create", "--name", "other", "--config", path_str(&config)])
        .env("KEYPAL_MASTER_KEY", &"55".repeat(32))
        .run();
    wrong.assert_error("[MASTER_KEY_MISMATCH]");
    assert!(!wrong.all().contains(&"55".repeat(32)), "never the key: {wrong:#?}");
    assert_eq!(tokens(&["list"]).lines().len(), 2);
}

// ---------------------------------------------------------------- apps and keys

/// A table's lines with ids, times and masked keys replaced by placeholders and the
/// columns one space apart; each line's cells start where its header's do.
#[track_caller]
fn normalised(table: &str) -> Vec<String> {
    let lines: Vec<&str> = table.lines().collect();
    let starts = |line: &str| -> Vec<usize> {
        let chars: Vec<char> = line.chars().collect();
        (0..chars.len()).filter(|&i| chars[i] != ' ' && (i == 0 || (i >= 2 && chars[i - 2..i] == [' ', ' ']))).collect()
    };
    let header = starts(lines[0]);
    for line in &lines[1..] {
        assert_eq!(starts(line), header, "columns aligned: {table}");
    }
    let rfc3339 = &time::format_description::well_known::Rfc3339;
    lines
        .iter()
        .map(|line| {
            line.split("  ")
                .map(str::trim)
                .filter(|cell| !cell.is_empty())
                .map(|cell| {
                    if uuid::Uuid::parse_str(cell).is_ok() {
                        "[ID]"
                    } else if time::OffsetDateTime::parse(cell, rfc3339).is_ok() {
                        "[TIME]"
                    } else if cell.contains('…') {
                        "[KEY]"
                    } else {
                        cell
                    }
                })
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect()
}

#[test]
fn apps_and_keys_are_managed_on_the_command_line() {
    let dir = scratch_dir("apps-keys");
    let database = format!("sqlite://{}", path_str(&dir.join("keypal.db")));
    let master_key = "66".repeat(32);
    let cli = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--database-url", &database]);
        keypal(&all).env("KEYPAL_MASTER_KEY", &master_key).run()
    };

    // The client secret alone on stdout.
    let out = cli(&["apps", "create", "--name", "Billing", "--label", "billing", "--tier", "free=100/hour"]);
    out.assert_code(0);
    assert_eq!(out.lines().len(), 1, "{out:#?}");
    let client_secret = out.stdout.trim_end().to_owned();
    assert!(client_secret.starts_with("cs-"), "{out:#?}");
    assert!(out.stderr.contains("created application billing") && !out.stderr.contains(&client_secret));
    cli(&["apps", "create", "--name", "Other", "--label", "billing"]).assert_error("[LABEL_TAKEN]");
    cli(&["apps", "create", "--name", "Bad", "--label", "Not A Label"]).assert_error("[INVALID_INPUT] label:");
    cli(&["apps", "create", "--name", "Bad", "--label", "bad", "--hash", "md5"]).assert_error("[INVALID_INPUT] hash:");

    // Keys: made by the application's label, the key alone on stdout.
    let out =
        cli(&["keys", "create", "--app", "billing", "--owner", "user-1", "--name", "ci", "--scopes", "read,write"]);
    out.assert_code(0);
    assert_eq!(out.lines().len(), 1, "{out:#?}");
    let key = out.stdout.trim_end().to_owned();
    assert!(key.starts_with("sk-proj-") && key.contains("-billing-"), "{out:#?}");
    let out = cli(&["keys", "create", "--app", "billing", "--owner", "user-2", "--json"]);
    out.assert_code(0);
    let created: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let other_id = created["record"]["id"].as_str().unwrap().to_owned();
    assert!(created["key"].as_str().unwrap().starts_with("sk-proj-"), "{created}");
    cli(&["keys", "create", "--app", "nope"]).assert_error("[NOT_FOUND]");
    cli(&["keys", "create", "--app", "billing", "--tier", "gold"]).assert_error("[INVALID_INPUT]");
    cli(&["keys", "create", "--app", "billing", "--expires-in-days", "0"]).assert_error("expires_in_days");

    // The tables, ids, times and masked keys aside.
    let out = cli(&["apps", "list"]);
    out.assert_code(0);
    assert_eq!(
        normalised(&out.stdout),
        [
            "ID | LABEL | NAME | HASH | ACTIVE KEYS | TOTAL KEYS | CREATED",
            "[ID] | billing | Billing | sha256 | 2 | 2 | [TIME]"
        ],
        "{out:#?}"
    );
    let out = cli(&["keys", "list", "--app", "billing", "--owner", "user-1"]);
    out.assert_code(0);
    assert_eq!(
        normalised(&out.stdout),
        [
            "ID | NAME | OWNER | KEY | TIER | SCOPES | STATUS | EXPIRES | LAST USED",
            "[ID] | ci | user-1 | [KEY] | - | read,write | active | never | never"
        ],
        "{out:#?}"
    );
    assert!(!out.all().contains(&key), "never the key");
    let out = cli(&["keys", "list", "--app", "billing", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(list["keys"].as_array().map(Vec::len), Some(2), "{list}");
    let app_id = list["keys"][0]["app_id"].as_str().unwrap().to_owned();
    let id = list["keys"].as_array().unwrap().iter().find(|k| k["owner_id"] == "user-1").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // By id as well as by label.
    let out = cli(&["apps", "show", &app_id, "--json"]);
    let shown: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!((shown["app"]["label"].as_str(), shown["app"]["active_keys"].as_u64()), (Some("billing"), Some(2)));
    let out = cli(&["apps", "show", "billing"]);
    assert!(out.lines().contains(&"tiers                      free=100/hour"), "{out:#?}");

    // Update, show, rotate (the new key alone), revoke.
    let out = cli(&["keys", "update", &id, "--name", "deploy", "--disable", "--remaining", "5"]);
    out.assert_code(0);
    let out = cli(&["keys", "show", &id, "--json"]);
    let shown: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        (shown["name"].as_str(), shown["enabled"].as_bool(), shown["remaining"].as_u64()),
        (Some("deploy"), Some(false), Some(5))
    );
    // Credits that refill, and changes of credits.
    cli(&["keys", "update", &id, "--refill", "100/monthly:15"]).assert_code(0);
    let out = cli(&["keys", "credits", &id, "--decrement", "30", "--json"]);
    out.assert_code(0);
    let shown: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(shown["refill"], serde_json::json!({"interval": "monthly", "day": 15, "amount": 100}), "{shown}");
    assert_eq!(shown["remaining"], 70, "{shown}");
    let out = cli(&["keys", "show", &id]);
    assert!(out.lines().contains(&"refill        100/monthly:15"), "{out:#?}");
    cli(&["keys", "update", &id, "--refill", "10/fortnightly"]).assert_error("--refill");
    cli(&["keys", "credits", &id]).assert_error("--set");
    cli(&["keys", "update", &id, "--enable", "--unlimited", "--no-refill"]).assert_code(0);
    let out = cli(&["keys", "show", &id]);
    assert!(
        out.lines().contains(&"status        active") && out.lines().contains(&"remaining     unlimited"),
        "{out:#?}"
    );
    let out = cli(&["keys", "rotate", &id]);
    out.assert_code(0);
    assert_eq!(out.lines().len(), 1, "{out:#?}");
    let rotated = out.stdout.trim_end().to_owned();
    assert!(rotated.starts_with("sk-proj-") && rotated != key);
    cli(&["keys", "rotate", &id]).assert_error("[ALREADY_REVOKED]");
    let out = cli(&["keys", "revoke", &other_id]);
    out.assert_code(0);
    assert!(out.stdout.is_empty() && out.stderr.contains("revoked key"), "{out:#?}");
    cli(&["keys", "revoke", &other_id]).assert_error("[ALREADY_REVOKED]");
    cli(&["keys", "show", "0190f3c2-7c1e-7d3a-9b5e-2f4c6a8e0b1d"]).assert_error("[NOT_FOUND]");

    // A server on the same database takes the client secret and the rotated key.
    let service_key = format!("kp_svc_{}", "s".repeat(40));
    let (mut server, addr) = serve_with(&database, &master_key, &[("KEYPAL_SERVICE_KEY", &service_key)]);
    let codes = [&rotated, &key].map(|k| verify_code(&addr, &service_key, &client_secret, k));
    server.kill().expect("the server can be stopped");
    server.wait().expect("the server ends");
    assert_eq!(codes, ["VALID".to_owned(), "REVOKED".to_owned()]);
}

#[test]
fn a_key_revoked_on_the_command_line_is_refused_by_a_running_server_at_once() {
    let Some(postgres) = keypal_testing::PostgresServer::shared() else { return };
    let schema = keypal_testing::PostgresServer::fresh_schema();
    let database = postgres.url().to_owned();
    let master_key = "77".repeat(32);
    let cli = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--database-url", &database, "--database-schema", &schema]);
        keypal(&all).env("KEYPAL_MASTER_KEY", &master_key).run()
    };
    let out = cli(&["apps", "create", "--name", "Billing", "--label", "billing"]);
    out.assert_code(0);
    let client_secret = out.stdout.trim_end().to_owned();
    let out = cli(&["keys", "create", "--app", "billing", "--json"]);
    out.assert_code(0);
    let created: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let (key, id) = (created["key"].as_str().unwrap().to_owned(), created["record"]["id"].as_str().unwrap().to_owned());

    let service_key = format!("kp_svc_{}", "t".repeat(40));
    let (mut server, addr) = serve_with(
        &database,
        &master_key,
        &[("KEYPAL_SERVICE_KEY", &service_key), ("KEYPAL_DATABASE_SCHEMA", &schema), ("KEYPAL_CACHE_TTL", "1h")],
    );
    // Verified twice: the second answer comes from the server's cache.
    let before = [0, 1].map(|_| verify_code(&addr, &service_key, &client_secret, &key));
    let revoked = cli(&["keys", "revoke", &id]);
    // The announcement travels through PostgreSQL: give it a moment, far below the cache's hour.
    let mut after = String::new();
    for _ in 0..50 {
        after = verify_code(&addr, &service_key, &client_secret, &key);
        if after != "VALID" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    server.kill().expect("the server can be stopped");
    server.wait().expect("the server ends");
    assert_eq!(before, ["VALID".to_owned(), "VALID".to_owned()]);
    revoked.assert_code(0);
    assert_eq!(after, "REVOKED", "refused once the revocation is announced");
}

// ---------------------------------------------------------------- export and import

#[test]
fn a_sqlite_deployment_exported_and_imported_into_postgres_verifies_every_key() {
    let Some(postgres) = keypal_testing::PostgresServer::shared() else { return };
    let dir = scratch_dir("export");
    let sqlite = format!("sqlite://{}", path_str(&dir.join("keypal.db")));
    let schema = keypal_testing::PostgresServer::fresh_schema();
    let pg = postgres.url().to_owned();
    let master_key = "88".repeat(32);
    let on_sqlite = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--database-url", &sqlite]);
        keypal(&all).env("KEYPAL_MASTER_KEY", &master_key).run()
    };
    let on_postgres = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--database-url", &pg, "--database-schema", &schema]);
        keypal(&all).env("KEYPAL_MASTER_KEY", &master_key).run()
    };

    // Applications of three hashes, one recoverable, and their keys, on SQLite.
    let mut secrets = Vec::new();
    for args in [
        &["--name", "Billing", "--label", "billing"][..],
        &["--name", "Vault", "--label", "vault", "--recoverable"],
        &["--name", "Peppered", "--label", "peppered", "--hash", "hmac-sha256"],
    ] {
        let mut all = vec!["apps", "create"];
        all.extend_from_slice(args);
        let out = on_sqlite(&all);
        out.assert_code(0);
        secrets.push((args[3].to_owned(), out.stdout.trim_end().to_owned()));
    }
    let mut keys = Vec::new(); // (key, its id, its app's client secret)
    for (label, secret) in &secrets {
        for owner in ["user-1", "user-2"] {
            let out = on_sqlite(&["keys", "create", "--app", label, "--owner", owner, "--json"]);
            out.assert_code(0);
            let created: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
            let key = created["key"].as_str().unwrap().to_owned();
            keys.push((key, created["record"]["id"].as_str().unwrap().to_owned(), secret.clone()));
        }
    }
    let out = on_sqlite(&["tokens", "create", "--name", "ops"]);
    out.assert_code(0);
    let token = out.stdout.trim_end().to_owned();

    // The export: a header, then documents and keys; never a plaintext key or secret.
    let out = on_sqlite(&["export", "--audit"]);
    out.assert_code(0);
    let dump = out.stdout.clone();
    assert!(out.stderr.contains("exported") && out.stderr.contains("6 keys"), "{out:#?}");
    let lines: Vec<serde_json::Value> = dump.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[0]["type"], "header", "{dump}");
    assert_eq!(lines.iter().filter(|l| l["type"] == "key").count(), 6, "{dump}");
    assert_eq!(lines.iter().filter(|l| l["type"] == "object" && l["kind"] == "app").count(), 3, "{dump}");
    assert!(lines.iter().any(|l| l["type"] == "audit"), "{dump}");
    for (key, _, secret) in &keys {
        assert!(!dump.contains(key.as_str()) && !dump.contains(secret.as_str()), "a plaintext key or secret in {dump}");
    }
    assert!(!dump.contains(&token), "a management token in clear in {dump}");
    let file = temp_file("dump.ndjson", &dump);

    // Imported into PostgreSQL with the same master key.
    let out = on_postgres(&["import", path_str(&file)]);
    out.assert_code(0);
    assert!(out.stderr.contains("6 keys (0 already present)") && out.stderr.contains("0 lines failed"), "{out:#?}");
    let out = on_postgres(&["keys", "list", "--app", "vault"]);
    assert_eq!(out.lines().len(), 3, "two keys and the header: {out:#?}");

    // A server on PostgreSQL verifies every key with its application's client secret,
    // takes the management token, and reveals the recoverable key.
    let service_key = format!("kp_svc_{}", "e".repeat(40));
    let (mut server, addr) =
        serve_with(&pg, &master_key, &[("KEYPAL_SERVICE_KEY", &service_key), ("KEYPAL_DATABASE_SCHEMA", &schema)]);
    let codes: Vec<String> =
        keys.iter().map(|(key, _, secret)| verify_code(&addr, &service_key, secret, key)).collect();
    let wrong_app = verify_code(&addr, &service_key, &secrets[0].1, &keys[2].0);
    let (vault_key, vault_id, _) = &keys[2];
    let revealed = post_with_token(&addr, &format!("/v1/keys/{vault_id}/reveal"), &token);
    let not_recoverable = post_with_token(&addr, &format!("/v1/keys/{}/reveal", keys[0].1), &token);
    server.kill().expect("the server can be stopped");
    server.wait().expect("the server ends");
    assert_eq!(codes, vec!["VALID".to_owned(); 6]);
    assert_ne!(wrong_app, "VALID", "a key verifies with its own application's secret only");
    assert_eq!(revealed.0, 200, "{revealed:?}");
    assert_eq!(revealed.1["key"].as_str(), Some(vault_key.as_str()));
    assert_eq!(not_recoverable.0, 409, "{not_recoverable:?}");

    // Importing again changes nothing.
    let out = on_postgres(&["import", path_str(&file)]);
    out.assert_code(0);
    assert!(
        out.stderr.contains("imported 0 documents") && out.stderr.contains("0 keys (6 already present)"),
        "{out:#?}"
    );
    assert!(out.stderr.contains("0 audit events"), "{out:#?}");
    let out = on_postgres(&["keys", "list", "--app", "vault"]);
    assert_eq!(out.lines().len(), 3, "{out:#?}");
}

#[test]
fn an_import_reports_a_corrupt_line_by_number_and_imports_the_others() {
    let dir = scratch_dir("import-corrupt");
    let source = format!("sqlite://{}", path_str(&dir.join("source.db")));
    let target = format!("sqlite://{}", path_str(&dir.join("target.db")));
    let master_key = "99".repeat(32);
    let cli = |database: &str, args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--database-url", database]);
        keypal(&all).env("KEYPAL_MASTER_KEY", &master_key).run()
    };
    cli(&source, &["apps", "create", "--name", "Billing", "--label", "billing"]).assert_code(0);
    for owner in ["a", "b", "c"] {
        cli(&source, &["keys", "create", "--app", "billing", "--owner", owner]).assert_code(0);
    }
    let out = cli(&source, &["export"]);
    out.assert_code(0);
    let mut lines: Vec<String> = out.stdout.lines().map(str::to_owned).collect();
    let first_key = lines.iter().position(|l| l.contains(r#""type":"key""#)).unwrap();
    lines[first_key] = r#"{"type":"key","record":{"id":"not a key"}}"#.to_owned();
    let file = temp_file("corrupt.ndjson", &(lines.join("\n") + "\n"));

    let out = cli(&target, &["import", path_str(&file)]);
    out.assert_code(1);
    assert!(out.stderr.contains(&format!("error: line {}: ", first_key + 1)), "{out:#?}");
    assert!(out.stderr.contains("2 keys (0 already present)") && out.stderr.contains("1 lines failed"), "{out:#?}");
    let listed = cli(&target, &["keys", "list", "--app", "billing"]);
    assert_eq!(listed.lines().len(), 3, "the two good keys and the header: {listed:#?}");

    // Not an export at all: refused before anything is written.
    let other = temp_file("not-a-dump.ndjson", "{\"type\":\"key\"}\n");
    cli(&target, &["import", path_str(&other)]).assert_error("line 1 is not a keypal export header");
    cli(&target, &["import", "/nonexistent/dump.ndjson"]).assert_error("cannot read /nonexistent/dump.ndjson");
}

#[test]
fn an_import_never_adds_an_application_whose_label_another_one_holds() {
    let dir = scratch_dir("import-label-taken");
    let source = format!("sqlite://{}", path_str(&dir.join("source.db")));
    let target = format!("sqlite://{}", path_str(&dir.join("target.db")));
    let master_key = "77".repeat(32);
    let cli = |database: &str, args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--database-url", database]);
        keypal(&all).env("KEYPAL_MASTER_KEY", &master_key).run()
    };
    cli(&source, &["apps", "create", "--name", "Billing", "--label", "billing"]).assert_code(0);
    cli(&target, &["apps", "create", "--name", "Other billing", "--label", "billing"]).assert_code(0);
    let out = cli(&source, &["export"]);
    out.assert_code(0);
    let file = temp_file("label-taken.ndjson", &out.stdout);

    let out = cli(&target, &["import", path_str(&file)]);
    out.assert_code(1);
    assert!(
        out.stderr.contains(r#"its label "billing" or client secret belongs to another application here"#),
        "{out:#?}"
    );
    // The target keeps one application with that label: its own.
    let listed = cli(&target, &["apps", "list"]);
    assert_eq!(listed.lines().len(), 2, "the header and the target's own application: {listed:#?}");
    assert!(listed.stdout.contains("Other billing"), "{listed:#?}");
}
