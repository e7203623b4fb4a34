//! Tests of the format module against the formats of DESIGN.md, and property tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;

use super::*;

fn tiers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|&(name, text)| (name.to_owned(), text.to_owned())).collect()
}

fn sprint_vars() -> FormatVars {
    FormatVars {
        tiers: tiers(&[("free", "free"), ("pro", "pro"), ("enterprise", "ent"), ("enterprise_plus", "entplus")]),
        ..FormatVars::default()
    }
}

fn kota() -> Template {
    let vars =
        FormatVars { tiers: tiers(&[("free", "free"), ("solo", "solo"), ("team", "team")]), ..FormatVars::default() };
    Template::parse("kota_{tier}_{id:12:base32}_{secret:36:hex}", &vars).unwrap()
}

fn generate(format: &impl Formatter, tier: Option<&str>) -> String {
    format.generate(tier).unwrap().expose().to_owned()
}

fn untiered(parsed: Option<ParsedKey<'_>>) -> bool {
    parsed == Some(ParsedKey { id: None, tier: None })
}

fn all_in(text: &str, encoding: Encoding) -> bool {
    text.bytes().all(|b| encoding.contains(b))
}

// ---- the five formats of DESIGN.md ----

#[test]
fn prd_simple_prefix_and_length() {
    let format = Template::simple(Some("sk_live"), 32, Encoding::Base62).unwrap();
    assert_eq!(format.source(), "sk_live_{secret:32:base62}");
    assert_eq!(format.describe(), format.to_string());
    assert_eq!(format.fixed_prefix_len(), 8);
    assert!(!format.has_id() && !format.has_tier() && !format.has_checksum());
    assert_eq!((format.secret_len(), format.secret_encoding()), (32, Encoding::Base62));

    let key = generate(&format, None);
    assert_eq!(key.len(), 40);
    assert!(key.starts_with("sk_live_"));
    assert!(all_in(&key[8..], Encoding::Base62));
    assert!(untiered(format.parse(&key)));

    let bare = Template::simple(None, 43, Encoding::Base64Url).unwrap();
    assert_eq!(bare.source(), "{secret:43:base64url}");
    assert_eq!(bare.fixed_prefix_len(), 0);
    assert_eq!(generate(&bare, None).len(), 43);
}

#[test]
fn sprint_tiers_and_untiered_and_legacy() {
    let format = Template::parse("sprint-{tier}_{secret:43:base64url}", &sprint_vars()).unwrap();
    assert!(format.has_tier());
    assert_eq!(format.fixed_prefix_len(), "sprint-".len());
    for (name, text) in &sprint_vars().tiers {
        let key = generate(&format, Some(name));
        assert_eq!(key.len(), "sprint-".len() + text.len() + 1 + 43);
        assert!(key.starts_with(&format!("sprint-{text}_")));
        let parsed = format.parse(&key).unwrap();
        assert_eq!(parsed, ParsedKey { id: None, tier: Some(name.as_str()) });
    }

    let secret = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ-_01234";
    assert_eq!(secret.len(), 43);
    let entplus = format!("sprint-entplus_{secret}");
    assert_eq!(format.parse(&entplus).unwrap().tier, Some("enterprise_plus"));
    let ent = format!("sprint-ent_{secret}");
    assert_eq!(format.parse(&ent).unwrap().tier, Some("enterprise"));
    // An "entplus" key with a secret 4 characters short has the length of an "ent" key:
    // it must not parse as one.
    let shifted = format!("sprint-entplus_{}", &secret[4..]);
    assert_eq!(format.parse(&shifted), None);
    assert_eq!(format.parse(&format!("sprint-gold_{secret}")), None);
    assert_eq!(format.parse(&format!("sprint-_{secret}")), None);

    let plain = Template::parse("sprint_{secret:43:base64url}", &FormatVars::default()).unwrap();
    let key = generate(&plain, Some("pro")); // no tier segment: the tier is not in the key
    assert_eq!(key.len(), 50);
    assert!(untiered(plain.parse(&key)));
    assert_eq!(plain.parse(&entplus), None);

    let legacy = Template::parse("{secret:43:base64url}", &FormatVars::default()).unwrap();
    assert!(untiered(legacy.parse(secret)));
    assert_eq!(legacy.parse(&key), None);
}

#[test]
fn admin_service_app_and_label() {
    let vars = FormatVars { app: Some("a1b2".into()), label: Some("ci".into()), ..FormatVars::default() };
    let format = Template::parse("sk-proj-{app}-{label}-{secret:32:base64url}", &vars).unwrap();
    assert_eq!(format.fixed_prefix_len(), "sk-proj-a1b2-ci-".len());
    let key = generate(&format, None);
    assert_eq!(key.len(), 16 + 32);
    assert!(key.starts_with("sk-proj-a1b2-ci-"));
    assert!(untiered(format.parse(&key)));
    assert_eq!(format.parse(&key.replacen("a1b2", "a1b3", 1)), None);
}

#[test]
fn per_user_alnum() {
    let format = Template::parse("brdnv_sk_{secret:32:alnum}", &FormatVars::default()).unwrap();
    let key = generate(&format, None);
    // DESIGN.md says "42 chars", but "brdnv_sk_" is 9 characters: 9 + 32 = 41. (The source
    // document's 42 comes from a 10-character "brndnv_sk_" in its example.)
    assert_eq!(key.len(), 41);
    assert_eq!(format.fixed_prefix_len(), 9);
    assert!(all_in(&key[9..], Encoding::Alnum));
    assert!(untiered(format.parse(&key)));
}

#[test]
fn kota_tier_and_id() {
    let format = kota();
    assert!(format.has_id());
    assert_eq!(format.fixed_prefix_len(), 5);
    for tier in ["free", "solo", "team"] {
        let key = generate(&format, Some(tier));
        assert_eq!(key.len(), 5 + 4 + 1 + 12 + 1 + 36);
        let parsed = format.parse(&key).unwrap();
        assert_eq!(parsed.tier, Some(tier));
        assert_eq!(parsed.id, Some(&key[10..22]));
        assert!(all_in(&key[10..22], Encoding::Base32));
        assert!(all_in(&key[23..], Encoding::Hex));
        assert_eq!(format.secret(&key), Some(&key[23..]));
    }
}

#[test]
fn the_secret_segment_is_found_where_the_template_puts_it() {
    let format = kota();
    assert!(format.has_secret());
    let key = "kota_team_abcdefgh2345_0123456789abcdef0123456789abcdef0123";
    assert_eq!(format.secret(key), Some("0123456789abcdef0123456789abcdef0123"));
    // Only of a key of the format.
    assert_eq!(format.secret(&key[..key.len() - 1]), None);
    assert_eq!(format.secret(&key.replacen("team", "gold", 1)), None);
    // Anywhere in the key: before a checksum, after a tier of any length.
    let vars = FormatVars { tiers: tiers(&[("free", "f"), ("enterprise", "ent")]), ..FormatVars::default() };
    let format = Template::parse("{tier}-{secret:16:base62}.{checksum}", &vars).unwrap();
    for tier in ["free", "enterprise"] {
        let key = generate(&format, Some(tier));
        let secret = format.secret(&key).unwrap();
        assert_eq!(secret.len(), 16);
        assert!(key.ends_with(&format!("-{secret}.{}", &key[key.len() - 6..])));
    }
}

// ---- rejection ----

#[test]
fn malformed_keys_are_rejected() {
    let format = kota();
    let key = "kota_team_abcdefgh2345_0123456789abcdef0123456789abcdef0123";
    assert_eq!(format.parse(key), Some(ParsedKey { id: Some("abcdefgh2345"), tier: Some("team") }));
    let rejected = [
        String::new(),
        key[..key.len() - 1].to_owned(),                                 // too short
        format!("{key}0"),                                               // trailing char
        format!("{key}\n"),                                              // trailing newline
        format!(" {key}"),                                               // leading space
        key.replacen("kota_", "kotb_", 1),                               // wrong literal
        key.replacen("_abc", "-abc", 1),                                 // wrong separator
        key.replacen("team", "gold", 1),                                 // unknown tier
        key.replacen("team", "TEAM", 1),                                 // tiers are case-sensitive
        key.replacen("abcdefgh2345", "abcdefgh2341", 1),                 // '1' is not base32
        key.replacen("abcdefgh2345", "Abcdefgh2345", 1),                 // base32 is lowercase
        key.replacen("0123456789abcdef0123", "0123456789abcdeg0123", 1), // 'g' not hex
        key.replacen("0123456789abcdef0123", "0123456789abcdé0123", 1),  // non-ASCII
        key.replacen("team_", "team", 1) + "0",                          // separator moved
    ];
    for bad in &rejected {
        assert_eq!(format.parse(bad), None, "{bad:?}");
    }
}

#[test]
fn generate_tier_errors() {
    let format = kota();
    assert!(matches!(format.generate(None), Err(FormatError::MissingTier)));
    assert!(matches!(
        format.generate(Some("gold")),
        Err(FormatError::UnknownTier { tier }) if tier == "gold"
    ));
    // Segment texts are not names.
    let sprint = Template::parse("sprint-{tier}_{secret:43:base64url}", &sprint_vars()).unwrap();
    assert!(sprint.generate(Some("ent")).is_err());
    assert!(FormatError::MissingTier.to_string().contains("tier"));
}

#[test]
fn checksum_segment() {
    let format = Template::parse("ghp_{secret:30:base62}{checksum}", &FormatVars::default()).unwrap();
    assert!(format.has_checksum());
    let key = generate(&format, None);
    assert_eq!(key.len(), 4 + 30 + 6);
    assert!(checksum::verify(&key[..34], &key.as_bytes()[34..]));
    assert!(untiered(format.parse(&key)));

    // The right shape but a wrong checksum.
    let mut wrong = key[..34].to_owned();
    wrong.push_str(if key.ends_with("000000") { "000001" } else { "000000" });
    assert_eq!(format.parse(&wrong), None);
}

// ---- template errors ----

#[test]
fn template_errors() {
    use TemplateError as E;
    let none = FormatVars::default();
    let err = |template: &str| Template::parse(template, &none).unwrap_err();
    let segment = |text: &str| text.to_owned();

    assert_eq!(err(""), E::Empty);
    assert_eq!(err("sk_{secret:32:hex"), E::Unclosed { position: 3 });
    assert_eq!(err("sk_{secret:32:{hex}"), E::Unclosed { position: 3 });
    assert_eq!(err("sk}_{secret:32:hex}"), E::StrayBrace { position: 2 });
    assert_eq!(err("{secret:32:hex}}"), E::StrayBrace { position: 15 });
    assert_eq!(err("x_{foo}_{secret:32:hex}"), E::UnknownSegment { segment: segment("foo"), position: 2 });
    assert_eq!(err("{}{secret:32:hex}"), E::UnknownSegment { segment: segment(""), position: 0 });
    for (template, expected) in [
        ("{secret:32}", "{secret:LENGTH:ENCODING}"),
        ("{secret}", "{secret:LENGTH:ENCODING}"),
        ("{id}{secret:32:hex}", "{id:LENGTH:ENCODING}"),
        ("{checksum:6}", "no arguments"),
        ("{prefix:x}", "no arguments"),
    ] {
        assert!(
            matches!(err(template), E::BadArguments { expected: e, position: 0, .. } if e == expected),
            "{template}"
        );
    }
    for (template, min, max) in [
        ("{secret:abc:hex}", 16, 256),
        ("{secret::hex}", 16, 256),
        ("{secret:+32:hex}", 16, 256),
        ("{secret:15:hex}", 16, 256),
        ("{secret:257:hex}", 16, 256),
        ("{secret:99999999999999999999999:hex}", 16, 256),
        ("{id:0:hex}", 1, 64),
        ("{id:65:hex}", 1, 64),
    ] {
        assert!(
            matches!(err(template), E::BadLength { min: a, max: b, position: 0, .. } if (a, b) == (min, max)),
            "{template}"
        );
    }
    assert_eq!(
        err("k_{secret:32:base58}"),
        E::UnknownEncoding { segment: segment("secret:32:base58"), position: 2, encoding: "base58".into() }
    );
    assert!(err("{secret:32:HEX}").to_string().contains("HEX"));
    assert_eq!(err("sk_live_"), E::MissingSecret);
    assert_eq!(err("{id:8:hex}"), E::MissingSecret);
    assert_eq!(err("{secret:32:hex}_{secret:32:hex}"), E::Duplicate { segment: "secret", position: 16 });
    assert_eq!(err("{id:4:hex}{id:4:hex}{secret:32:hex}"), E::Duplicate { segment: "id", position: 10 });
    assert_eq!(err("{secret:32:hex}{checksum}{checksum}"), E::Duplicate { segment: "checksum", position: 25 });
    assert_eq!(err("{secret:32:hex}{checksum}_"), E::ChecksumNotLast { position: 15 });
    assert_eq!(err("{checksum}{secret:32:hex}"), E::ChecksumNotLast { position: 0 });
    assert_eq!(err("sk_{prefix}{secret:32:hex}"), E::MissingVar { segment: "prefix", position: 3 });
    assert_eq!(err("{app}{secret:32:hex}"), E::MissingVar { segment: "app", position: 0 });
    assert_eq!(err("{label}{secret:32:hex}"), E::MissingVar { segment: "label", position: 0 });
    assert_eq!(err("{tier}{secret:32:hex}"), E::MissingVar { segment: "tier", position: 0 });
}

#[test]
fn template_var_errors() {
    use TemplateError as E;
    let parse = |template: &str, vars: FormatVars| Template::parse(template, &vars);
    let prefix = |p: &str| FormatVars { prefix: Some(p.into()), ..FormatVars::default() };
    let with_tiers = |pairs: &[(&str, &str)]| FormatVars { tiers: tiers(pairs), ..FormatVars::default() };
    let tiered = "{tier}_{secret:32:hex}";

    assert_eq!(
        parse("{prefix}_{secret:32:hex}", prefix("")).unwrap_err(),
        E::MissingVar { segment: "prefix", position: 0 }
    );
    assert!(matches!(
        parse("{prefix}_{secret:32:hex}", prefix("a{b")),
        Err(E::InvalidVar { name, .. }) if name == "prefix"
    ));
    for bad in [
        &[("free", "x"), ("pro", "x")][..],
        &[("free", "x"), ("free", "y")],
        &[("free", "")],
        &[("", "x")],
        &[("free", "}")],
    ] {
        assert!(matches!(parse(tiered, with_tiers(bad)), Err(E::InvalidVar { .. })), "{bad:?}");
    }
    assert_eq!(
        parse("{tier}{tier}{secret:32:hex}", with_tiers(&[("a", "a")])).unwrap_err(),
        E::Duplicate { segment: "tier", position: 6 }
    );
    // Unused variables are fine, used ones are merged into the literal prefix.
    let format = parse("{prefix}_{secret:16:hex}", FormatVars { app: Some("{".into()), ..prefix("pk") }).unwrap();
    assert_eq!(format.fixed_prefix_len(), 3);

    assert!(matches!(Template::simple(Some("sk_live"), 8, Encoding::Hex), Err(E::BadLength { min: 16, .. })));
    assert!(matches!(Template::simple(Some("a}"), 32, Encoding::Hex), Err(E::InvalidVar { .. })));
    assert!(matches!(Template::simple(Some(""), 32, Encoding::Hex), Err(E::MissingVar { .. })));
}

#[test]
fn error_messages_name_the_problem_and_position() {
    let none = FormatVars::default();
    let message = |template: &str| Template::parse(template, &none).unwrap_err().to_string();
    assert_eq!(
        message("sk_{secret:8:hex}"),
        "segment `{secret:8:hex}` at byte 3: the length must be a number in 16..=256"
    );
    assert_eq!(message("x{checksum}{secret:16:hex}"), "`{checksum}` at byte 1 must be the last segment");
    assert!(message("ab{nope}").contains("unknown segment `{nope}` at byte 2"));
    assert!(message("ab}").contains("byte 2"));
}

// ---- custom formats ----

/// A custom format written with the plain `&self` receiver.
#[derive(Debug)]
struct Digits;

impl Formatter for Digits {
    fn generate(&self, _tier: Option<&str>) -> Result<crate::PlainKey, FormatError> {
        Ok(crate::PlainKey::new(random_string(Encoding::Hex, 20)?))
    }
    fn parse<'k>(&self, key: &'k str) -> Option<ParsedKey<'k>> {
        (key.len() == 20 && all_in(key, Encoding::Hex)).then_some(ParsedKey { id: Some(&key[..4]), tier: None })
    }
    fn has_id(&self) -> bool {
        true
    }
    fn fixed_prefix_len(&self) -> usize {
        0
    }
    fn describe(&self) -> String {
        "20 hex digits".into()
    }
}

#[test]
fn formatters_are_object_safe() {
    let formats: Vec<Box<dyn Formatter>> = vec![Box::new(kota()), Box::new(Digits)];
    let key = formats[1].generate(None).unwrap();
    assert!(formats[1].parse(key.expose()).is_some());
    assert!(formats[0].parse(key.expose()).is_none());
}

// ---- properties ----

/// A random template, the variables it needs, and its tier names.
fn any_template() -> impl Strategy<Value = (String, FormatVars, Vec<String>)> {
    let encoding = prop::sample::select(Encoding::ALL.to_vec());
    (
        prop::option::of("[a-z]{1,6}"),
        prop::option::of(prop::collection::btree_set("[a-z]{1,5}", 1..5)),
        prop::option::of((1..=64usize, encoding.clone())),
        (16..=256usize, encoding),
        any::<bool>(),
        "[_-]{0,2}",
    )
        .prop_map(|(prefix, tier_texts, id, (secret_len, secret_enc), checksum, sep)| {
            let mut template = String::new();
            let mut vars = FormatVars::default();
            if let Some(prefix) = prefix {
                template.push_str(&format!("{{prefix}}{sep}"));
                vars.prefix = Some(prefix);
            }
            if let Some(texts) = tier_texts {
                template.push_str(&format!("{{tier}}{sep}"));
                vars.tiers = texts.into_iter().enumerate().map(|(i, t)| (format!("t{i}"), t)).collect();
            }
            if let Some((len, enc)) = id {
                template.push_str(&format!("{{id:{len}:{enc}}}{sep}"));
            }
            template.push_str(&format!("{{secret:{secret_len}:{secret_enc}}}"));
            if checksum {
                template.push_str("{checksum}");
            }
            let names = vars.tiers.iter().map(|(name, _)| name.clone()).collect();
            (template, vars, names)
        })
}

fn checksummed() -> Template {
    let vars = FormatVars {
        prefix: Some("kp".into()),
        tiers: tiers(&[("enterprise", "ent"), ("enterprise_plus", "entplus"), ("free", "free")]),
        ..FormatVars::default()
    };
    Template::parse("{prefix}_{tier}_{id:8:base32}_{secret:24:base64url}{checksum}", &vars).unwrap()
}

proptest! {
    #[test]
    fn every_template_round_trips(
        (template, vars, names) in any_template(),
        pick in any::<prop::sample::Index>(),
    ) {
        let format = Template::parse(&template, &vars).unwrap();
        prop_assert_eq!(format.source(), template.as_str());
        let tier = (!names.is_empty()).then(|| names[pick.index(names.len())].as_str());
        let key = format.generate(tier).unwrap();
        let parsed = format.parse(key.expose());
        prop_assert!(parsed.is_some(), "{} does not parse {}", template, key.expose());
        let parsed = parsed.unwrap();
        prop_assert_eq!(parsed.tier, tier);
        prop_assert_eq!(parsed.id.is_some(), format.has_id());
        if let Some(id) = parsed.id {
            prop_assert!(key.expose().contains(id));
        }
        // The constant start: the template up to its first random or tier segment.
        let head = ["{tier}", "{id:", "{secret:"].iter().filter_map(|s| template.find(s)).min().unwrap();
        let head = template[..head].replace("{prefix}", vars.prefix.as_deref().unwrap_or(""));
        prop_assert!(key.expose().starts_with(&head));
        prop_assert_eq!(format.fixed_prefix_len(), head.len());
        // Anything appended or removed breaks it.
        let appended = format!("{}a", key.expose());
        prop_assert!(format.parse(&appended).is_none());
        // A shorter string can only be a key of another tier, when one tier's text
        // ends another's (`ll` and `l` before a secret that may hold `l`).
        if let Some(shorter) = format.parse(&key.expose()[1..]) {
            prop_assert_ne!(shorter.tier, tier);
        }
    }

    #[test]
    fn any_single_substitution_breaks_the_checksum(
        tier in prop::sample::select(vec!["enterprise", "enterprise_plus", "free"]),
        at in any::<prop::sample::Index>(),
        with in 0x20u8..0x7f,
    ) {
        let format = checksummed();
        let key = format.generate(Some(tier)).unwrap();
        let mut bytes = key.expose().as_bytes().to_vec();
        let at = at.index(bytes.len());
        prop_assume!(bytes[at] != with);
        bytes[at] = with;
        let changed = String::from_utf8(bytes).unwrap();
        prop_assert_eq!(format.parse(&changed), None);
    }

    #[test]
    fn parse_never_panics(input in any::<String>(), ascii in "[ -~]{0,80}") {
        let formats = [checksummed(), kota(), Template::simple(Some("sk_live"), 32, Encoding::Base62).unwrap()];
        for format in &formats {
            let _ = format.parse(&input);
            let _ = format.parse(&ascii);
        }
    }

    #[test]
    fn parse_never_panics_near_valid_keys(
        insert in any::<char>(),
        at in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let format = checksummed();
        let key = generate(&format, Some("enterprise_plus"));
        let at = at.index(key.len() + 1);
        let mut changed = key.clone();
        changed.insert(at, insert);
        prop_assert_eq!(format.parse(&changed), None);
        let truncated = &key[..cut.index(key.len())];
        prop_assert_eq!(format.parse(truncated), None);
        // Replacing one ASCII character by a multi-byte one keeps the byte length
        // different, but dropping bytes to match must not panic either.
        let mut replaced = key.clone();
        replaced.replace_range(at.min(key.len() - 1)..at.min(key.len() - 1) + 1, &insert.to_string());
        let _ = format.parse(&replaced);
    }

    #[test]
    fn template_parse_never_panics(template in any::<String>(), braces in "[{}a-z:0-9_]{0,40}") {
        let vars = sprint_vars();
        let _ = Template::parse(&template, &vars);
        let _ = Template::parse(&braces, &vars);
    }
}
