//! Property tests of the whole manager: whatever a client sends, verify answers
//! with a code and never panics; a stored key verifies and any change to it does not.

#![allow(clippy::panic)] // test helpers: a panic is a failed test

use keypal::{Code, KeyManager, MemoryStore, NewKey};
use proptest::prelude::*;

fn manager() -> KeyManager<MemoryStore> {
    KeyManager::builder()
        .template("kp_{id:8:base32}_{secret:24:base62}{checksum}")
        .store(MemoryStore::new())
        .build()
        .unwrap_or_else(|e| panic!("test manager: {e}"))
}

proptest! {
    #[test]
    fn verify_of_arbitrary_text_is_a_rejection_not_a_panic(text in any::<String>()) {
        let keys = manager();
        let v = pollster::block_on(keys.verify(&text));
        let code = v.map(|v| v.code()).unwrap_or(Code::Valid);
        prop_assert!(matches!(code, Code::Malformed | Code::NotFound), "{code:?}");
    }

    #[test]
    fn a_stored_key_verifies_and_no_single_character_change_does(position in 0usize..64, replacement in 0x21u8..0x7f) {
        let keys = manager();
        let created = pollster::block_on(keys.create(NewKey::new())).unwrap_or_else(|e| panic!("{e}"));
        let key = created.key.expose();
        prop_assert!(pollster::block_on(keys.verify(key)).map(|v| v.is_valid()).unwrap_or(false));
        let position = position % key.len();
        prop_assume!(key.as_bytes()[position] != replacement);
        let mut changed = key.as_bytes().to_vec();
        changed[position] = replacement;
        let changed = String::from_utf8(changed).unwrap_or_default();
        let code = pollster::block_on(keys.verify(&changed)).map(|v| v.code()).unwrap_or(Code::Valid);
        // The checksum catches it before any storage read.
        prop_assert_eq!(code, Code::Malformed);
    }
}

// The invariants the fuzz targets check (fuzz/, docs/FUZZING.md), on generated cases.

mod invariants;

use invariants::{KeyKind, KeyKit};

/// A piece of a template: literal text (any, braces and non-ASCII included) or a segment.
fn template_piece() -> impl Strategy<Value = String> {
    let encoding =
        prop_oneof![Just("base62"), Just("alnum"), Just("base64url"), Just("base32"), Just("hex"), Just("b")];
    prop_oneof![
        "[a-z_\\-]{1,6}",
        "\\PC{1,4}",
        Just("{prefix}".to_owned()),
        Just("{app}".to_owned()),
        Just("{label}".to_owned()),
        Just("{tier}".to_owned()),
        Just("{checksum}".to_owned()),
        (0usize..80, encoding.clone()).prop_map(|(n, e)| format!("{{id:{n}:{e}}}")),
        (0usize..300, encoding).prop_map(|(n, e)| format!("{{secret:{n}:{e}}}")),
        "\\{[a-z:0-9]{0,12}\\}?",
    ]
}

/// A template case as the fuzz target reads it: template, prefix, app, label, tiers.
fn template_case() -> impl Strategy<Value = String> {
    // Mostly well-formed: a start (literal text, non-ASCII included, or a fixed-text
    // segment), maybe an id, one secret, maybe a checksum; else any pieces.
    let start = prop_oneof![
        "[a-z_]{1,6}",
        "[^{}\\s]{1,4}_",
        Just("{prefix}_".to_owned()),
        Just("{tier}_".to_owned()),
        Just("{app}-{label}-".to_owned()),
    ];
    let id = prop::option::of(
        (1usize..=64, prop_oneof![Just("base32"), Just("hex")]).prop_map(|(n, e)| format!("{{id:{n}:{e}}}_")),
    );
    let secret = (16usize..=64, prop_oneof![Just("base62"), Just("base64url"), Just("alnum")])
        .prop_map(|(n, e)| format!("{{secret:{n}:{e}}}"));
    let checksum = prop_oneof![Just(""), Just("{checksum}")];
    let well_formed = (start, id, secret, checksum)
        .prop_map(|(start, id, secret, checksum)| format!("{start}{}{secret}{checksum}", id.unwrap_or_default()));
    let pieces = prop::collection::vec(template_piece(), 1..6).prop_map(|pieces| pieces.concat());
    let template = prop_oneof![2 => well_formed, 1 => pieces];
    let value = prop_oneof![Just(String::new()), "[a-z]{1,8}", "[^{}\\s]{1,6}", "\\PC{1,6}"];
    let tier = prop_oneof!["[a-z]{1,5}", "[a-z]{1,5}=[a-z]{1,3}", "\\PC{1,4}=\\PC{0,3}"];
    (template, value.clone(), value.clone(), value, prop::collection::vec(tier, 0..3)).prop_map(
        |(template, prefix, app, label, tiers)| {
            let mut lines = vec![template, prefix, app, label];
            lines.extend(tiers);
            lines.join("\n")
        },
    )
}

/// A duration as configs write them, from a few seconds to far more than a lifetime.
fn duration() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => (1u64..1_000).prop_map(|n| format!("{n}s")),
        2 => (0u64..200).prop_map(|n| format!("{n}y")),
        1 => (1u64..u64::MAX).prop_map(|n| format!("{n}s")),
        1 => Just("584942417y".to_owned()),
        1 => Just("10000000000000d".to_owned()),
    ]
}

/// A configuration in TOML: each field set or not, values valid or not.
fn config_text() -> impl Strategy<Value = String> {
    let prefix = prop::option::of(prop_oneof!["[a-z_]{1,8}", "[^{}\\s]{1,6}", "\\PC{1,6}"]);
    let template = prop::option::of(template_piece().prop_map(|p| format!("{p}_{{secret:32:base62}}")));
    let hash = prop_oneof![
        Just(String::new()),
        Just("algorithm = \"sha512\"".to_owned()),
        (3u32..7).prop_map(|cost| format!("algorithm = \"bcrypt\"\nbcrypt_cost = {cost}")),
        Just("algorithm = \"argon2id\"\nargon2 = { memory_kib = 64, iterations = 1, parallelism = 1 }".to_owned()),
        Just("algorithm = \"hmac-sha256\"\npeppers = { p1 = \"a-pepper-of-enough-length\" }".to_owned()),
    ];
    let durations = (prop::option::of(duration()), prop::option::of(duration()), duration(), duration());
    (prefix, template, hash, durations, prop::option::of(4usize..70), prop::option::of(0u32..3)).prop_map(
        |(prefix, template, hash, (expiry, max, ttl, interval), hint, owner_limit)| {
            let mut text = String::new();
            if let Some(prefix) = prefix {
                text += &format!("prefix = {prefix:?}\n");
            }
            if let Some(template) = template {
                text += &format!("template = {template:?}\n");
            }
            text += &format!("[hash]\n{hash}\n[cache]\nmode = \"on\"\nttl = \"{ttl}\"\n");
            text += &format!("[last_used]\ninterval = \"{interval}\"\n[policy]\n");
            if let Some(limit) = owner_limit {
                text += &format!("max_active_keys_per_owner = {limit}\n");
            }
            text += "[policy.expiry]\n";
            if let Some(expiry) = expiry {
                text += &format!("default = \"{expiry}\"\n");
            }
            if let Some(max) = max {
                text += &format!("max = \"{max}\"\n");
            }
            if let Some(hint) = hint {
                text += &format!("[lookup]\nhint_length = {hint}\n");
            }
            text
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn templates_parse_or_refuse_and_their_keys_verify(case in template_case()) {
        let (template, vars) = invariants::template_case(&case);
        invariants::template(&template, &vars);
    }

    #[test]
    fn configs_read_validate_and_build_consistently(text in config_text()) {
        invariants::config(&text);
    }

    #[test]
    fn arbitrary_config_text_is_read_or_refused(text in "\\PC{0,64}") {
        invariants::config(&text);
    }
}

thread_local! {
    static KITS: Vec<KeyKit> = [KeyKind::WithId, KeyKind::WithoutId, KeyKind::Legacy].map(KeyKit::new).into();
}

proptest! {
    #[test]
    fn keys_of_every_format_kind_parse_and_verify_consistently(data in prop::collection::vec(any::<u8>(), 0..80)) {
        KITS.with(|kits| {
            for kit in kits {
                invariants::key_text(kit, &kit.key_text(&data));
            }
        });
    }
}
