//! Property tests of the JSON bodies of `/v1/verify` and key creation, through the real
//! router in-process: the invariants the fuzz targets check (fuzz/, docs/FUZZING.md),
//! on generated bodies.
#![allow(clippy::expect_used, clippy::panic)] // test helpers: a panic is a failed test

mod invariants;

use invariants::Fixture;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value, json};

/// A string a client might send: placeholders of the fixture's keys and secrets, text
/// of every kind, or nearly a key.
fn text(placeholder: &'static str, count: usize) -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => (0..count).prop_map(move |i| json!(format!("@{placeholder}{i}@"))),
        1 => (0..count, "\\PC{0,3}").prop_map(move |(i, extra)| json!(format!("@{placeholder}{i}@{extra}"))),
        1 => "\\PC{0,40}".prop_map(Value::from),
        1 => Just(json!("")),
        1 => Just(json!(null)),
        1 => any::<i64>().prop_map(Value::from),
        1 => Just(json!(["a"])),
    ]
}

/// Any JSON value, small.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn scopes() -> impl Strategy<Value = Value> {
    let scope = prop_oneof![Just("read"), Just("write:*"), Just("*"), Just("a b"), Just(""), Just("write:x")];
    prop_oneof![prop::collection::vec(scope.prop_map(Value::from), 0..4).prop_map(Value::Array), any_json(),]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0u64..10).prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        Just(json!(1.5)),
        Just(json!("1")),
        Just(json!(null)),
    ]
}

/// An object of some of `fields`, maybe with a field no request has, written as JSON,
/// sometimes cut short.
fn body(fields: Vec<(&'static str, BoxedStrategy<Value>)>) -> impl Strategy<Value = Vec<u8>> {
    let fields: Vec<_> = fields
        .into_iter()
        .map(|(name, value)| prop::option::weighted(0.7, value).prop_map(move |v| v.map(|v| (name, v))))
        .collect();
    (fields, prop::option::weighted(0.1, any_json()), prop::option::weighted(0.05, 0usize..64)).prop_map(
        |(fields, unknown, cut)| {
            let mut object: Map<String, Value> = fields.into_iter().flatten().map(|(k, v)| (k.to_owned(), v)).collect();
            if let Some(unknown) = unknown {
                object.insert("unknown".into(), unknown);
            }
            let mut bytes = Value::Object(object).to_string().into_bytes();
            if let Some(cut) = cut {
                bytes.truncate(cut);
            }
            bytes
        },
    )
}

fn verify_request() -> impl Strategy<Value = Vec<u8>> {
    // A fixture key sent alone with a fixture client secret: its own application's or another's.
    let pair = (0..9, 0..3).prop_map(|(key, secret)| {
        json!({"key": format!("@key{key}@"), "client_secret": format!("@secret{secret}@")}).to_string().into_bytes()
    });
    let any = body(vec![
        ("key", text("key", 9).boxed()),
        ("client_secret", text("secret", 3).boxed()),
        ("scopes", scopes().boxed()),
        ("cost", number().boxed()),
    ]);
    prop_oneof![1 => pair, 3 => any]
}

fn new_key_request() -> impl Strategy<Value = Vec<u8>> {
    let expires_at = prop_oneof![
        Just(json!("2999-01-01T00:00:00Z")),
        Just(json!("9999-12-31T23:59:59Z")),
        Just(json!("2001-01-01T00:00:00Z")),
        Just(json!("2099-01-01T00:00:00+14:00")),
        Just(json!("not a date")),
        any_json(),
    ];
    let rate_limit =
        prop_oneof![Just(json!("10/minute")), Just(json!("0/hour")), Just(json!("5/fortnight")), any_json()];
    let tier = prop_oneof![Just(json!("free")), Just(json!("pro")), Just(json!("gold")), any_json()];
    let name = prop_oneof![Just(json!("  a name  ")), "\\PC{0,120}".prop_map(Value::from), any_json()];
    let owner = prop_oneof![Just(json!("owner-2")), "\\PC{0,8}".prop_map(Value::from), any_json()];
    // Values each valid on its own (a tier only in the application that has tiers).
    let valid = body(vec![
        ("name", prop_oneof![Just(json!("  a name  ")), "[a-z]{1,20}".prop_map(Value::from)].boxed()),
        ("owner_id", Just(json!("owner-2")).boxed()),
        ("metadata", any_json().boxed()),
        ("scopes", Just(json!(["read", "write:*", "read"])).boxed()),
        ("tier", Just(json!("pro")).boxed()),
        ("expires_in_days", (1u32..=3650).prop_map(Value::from).boxed()),
        ("remaining", (0u64..5).prop_map(Value::from).boxed()),
        ("rate_limit", Just(json!("10/minute")).boxed()),
    ]);
    let any = body(vec![
        ("name", name.boxed()),
        ("owner_id", owner.boxed()),
        ("metadata", any_json().boxed()),
        ("scopes", scopes().boxed()),
        ("tier", tier.boxed()),
        ("expires_in_days", number().boxed()),
        ("expires_at", expires_at.boxed()),
        ("remaining", number().boxed()),
        ("rate_limit", rate_limit.boxed()),
    ]);
    prop_oneof![valid, any]
}

/// Runs `cases` cases of `strategy` through `check`, on a fixture of its own.
fn run<S: Strategy>(cases: u32, strategy: S, check: impl AsyncFn(&Fixture, S::Value)) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let fixture = runtime.block_on(Fixture::new());
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let result = runner.run(&strategy, |value| {
        runtime.block_on(check(&fixture, value));
        Ok(())
    });
    runtime.block_on(async move { drop(fixture) });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

#[test]
fn verify_answers_every_body_with_a_verdict_or_a_client_error() {
    run(200, verify_request(), async |fixture, body| invariants::verify_body(fixture, &body).await);
}

#[test]
fn key_creation_answers_every_body_with_a_key_that_verifies_or_a_client_error() {
    run(200, (any::<u8>(), new_key_request()), async |fixture, (selector, body)| {
        invariants::create_key_body(fixture, selector, &body).await;
    });
}
