//! Usage analytics over a real socket, on SQLite and PostgreSQL: verifications with
//! tags are counted and answered by `GET /v1/analytics/verifications` and, for one
//! application's owners, `GET /v1/owners/{owner_id}/usage`; the limits answer 400.

// Test helpers assert by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{Db, TestServer, json_of};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

common::on_both!(
    verifications_are_counted_per_application_key_owner_and_tag,
    an_owners_usage_is_its_applications_only,
    ranges_groupings_and_tags_past_their_limits_are_400,
);

async fn server(db: Db) -> TestServer {
    let mut server = TestServer::start(db).await;
    server.login().await;
    server
}

/// `GET path` as admin: (status, body).
async fn get(server: &TestServer, path: &str) -> (StatusCode, Value) {
    json_of(server.admin(Method::GET, path).send().await.unwrap()).await
}

/// The buckets of an analytics answer, asserting a 200.
async fn buckets(server: &TestServer, path: &str) -> Vec<Value> {
    let (status, body) = get(server, path).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body["buckets"].as_array().cloned().unwrap_or_default()
}

/// Counts by code summed over buckets (of one group, when given).
fn sum(buckets: &[Value], group: Option<&str>) -> Value {
    let mut out = serde_json::Map::new();
    for bucket in buckets.iter().filter(|b| group.is_none_or(|g| b["group"] == g)) {
        for (code, n) in bucket["counts"].as_object().unwrap() {
            let total = out.get(code).and_then(Value::as_u64).unwrap_or(0) + n.as_u64().unwrap();
            out.insert(code.clone(), json!(total));
        }
    }
    Value::Object(out)
}

fn total(counts: &Value) -> u64 {
    counts.as_object().map_or(0, |c| c.values().filter_map(Value::as_u64).sum())
}

/// Waits until the server answers `expected` verifications of the application (a read
/// first writes what is pending, at most every 5 s).
async fn flushed(server: &TestServer, app_id: &str, expected: u64) {
    let started = Instant::now();
    loop {
        let all = buckets(server, &format!("/v1/analytics/verifications?app_id={app_id}&granularity=minute")).await;
        let seen = total(&sum(&all, None));
        if seen == expected {
            return;
        }
        assert!(seen < expected && started.elapsed() < Duration::from_secs(20), "{seen} counted, {expected} expected");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn verifications_are_counted_per_application_key_owner_and_tag(db: Db) {
    let server = server(db).await;
    let (a, secret_a) = server.create_app(json!({"name": "A", "label": "a"})).await;
    let (b, secret_b) = server.create_app(json!({"name": "B", "label": "b"})).await;
    let (a, b) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    let (k1, r1) = server.create_key(a, json!({"owner_id": "u1"})).await;
    let (k2, r2) = server.create_key(a, json!({"owner_id": "u2", "remaining": 1})).await;
    let (k3, _) = server.create_key(b, json!({"owner_id": "u1"})).await;
    let (id1, id2) = (r1["id"].as_str().unwrap(), r2["id"].as_str().unwrap());
    for _ in 0..3 {
        assert_eq!(server.verify(&k1, &secret_a, json!({"tags": ["GET /a"]})).await["code"], "VALID");
    }
    server.verify(&k1, &secret_a, json!({"tags": ["GET /a", "eu", "eu"]})).await;
    assert_eq!(server.verify(&k2, &secret_a, json!({"tags": ["eu"]})).await["code"], "VALID");
    assert_eq!(server.verify(&k2, &secret_a, json!({})).await["code"], "USAGE_EXCEEDED");
    server.verify("sk-proj-nope", &secret_a, json!({"tags": ["GET /a"]})).await; // names no key: not counted
    for _ in 0..2 {
        server.verify(&k3, &secret_b, json!({"tags": ["GET /a"]})).await;
    }
    flushed(&server, a, 6).await;

    let path = |query: &str| format!("/v1/analytics/verifications?{query}");
    for granularity in ["minute", "hour", "day"] {
        let all = buckets(&server, &path(&format!("app_id={a}&granularity={granularity}"))).await;
        let counts = sum(&all, None);
        assert_eq!((counts["VALID"].as_u64(), counts["USAGE_EXCEEDED"].as_u64()), (Some(5), Some(1)), "{granularity}");
        assert_eq!(counts.as_object().unwrap().len(), 7, "every code is present: {counts}");
        assert!(all.iter().all(|b| b.get("group").is_none()), "no group unless grouped");
        let start = all[0]["start"].as_str().unwrap();
        assert!(start.ends_with(if granularity == "day" { "T00:00:00Z" } else { ":00Z" }), "{start}");

        let by_key = buckets(&server, &path(&format!("app_id={a}&granularity={granularity}&group_by=key"))).await;
        assert_eq!(total(&sum(&by_key, Some(id1))), 4, "{granularity}");
        assert_eq!(total(&sum(&by_key, Some(id2))), 2, "{granularity}");
        let top = buckets(&server, &path(&format!("app_id={a}&granularity={granularity}&group_by=key&limit=1"))).await;
        assert!(top.iter().all(|b| b["group"] == id1), "the top key only: {top:?}");
        let by_owner = buckets(&server, &path(&format!("app_id={a}&granularity={granularity}&group_by=owner"))).await;
        assert_eq!((total(&sum(&by_owner, Some("u1"))), total(&sum(&by_owner, Some("u2")))), (4, 2));
        let by_tag = buckets(&server, &path(&format!("app_id={a}&granularity={granularity}&group_by=tag"))).await;
        assert_eq!((total(&sum(&by_tag, Some("GET /a"))), total(&sum(&by_tag, Some("eu")))), (4, 2));

        let owner = buckets(&server, &path(&format!("app_id={a}&owner_id=u1&granularity={granularity}"))).await;
        assert_eq!(total(&sum(&owner, None)), 4, "owner u1 in A only");
        let key = buckets(&server, &path(&format!("key_id={id2}&granularity={granularity}"))).await;
        assert_eq!(sum(&key, None)["USAGE_EXCEEDED"], 1, "a key, its application found from it");
        let tagged = buckets(&server, &path(&format!("app_id={a}&tag=eu&granularity={granularity}"))).await;
        assert_eq!(total(&sum(&tagged, None)), 2);
        let key_tag = buckets(&server, &path(&format!("app_id={a}&key_id={id1}&tag=GET%20%2Fa"))).await;
        assert_eq!(total(&sum(&key_tag, None)), 4);
        let other = buckets(&server, &path(&format!("app_id={b}&granularity={granularity}"))).await;
        assert_eq!(total(&sum(&other, None)), 2, "application B apart");
    }
    // A range that ends before the verifications holds none.
    let empty = buckets(&server, &path(&format!("app_id={a}&from=2020-01-01T00:00:00Z&to=2020-01-02T00:00:00Z"))).await;
    assert!(empty.is_empty());
    // A management token reads them too; a caller without credentials cannot.
    let (status, _) = json_of(server.anon(Method::GET, &path(&format!("app_id={a}"))).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, token) =
        json_of(server.admin(Method::POST, "/v1/tokens").json(&json!({"name": "reports"})).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::CREATED, "{token}");
    let response =
        server.anon(Method::GET, &path(&format!("app_id={a}"))).bearer_auth(token["token"].as_str().unwrap()).send();
    assert_eq!(response.await.unwrap().status(), StatusCode::OK);
    server.stop().await;
}

async fn an_owners_usage_is_its_applications_only(db: Db) {
    let server = server(db).await;
    let (a, secret_a) = server.create_app(json!({"name": "A", "label": "a"})).await;
    let (b, secret_b) = server.create_app(json!({"name": "B", "label": "b"})).await;
    let (a, b) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    let (ka, _) = server.create_key(a, json!({"owner_id": "alice"})).await;
    let (kb, _) = server.create_key(b, json!({"owner_id": "alice"})).await;
    for _ in 0..3 {
        server.verify(&ka, &secret_a, json!({"tags": ["GET /x"]})).await;
    }
    server.verify(&kb, &secret_b, json!({})).await;
    flushed(&server, a, 3).await;
    let _ = b;
    let usage = |secret: &str, query: &str| {
        server.anon(Method::GET, &format!("/v1/owners/alice/usage{query}")).bearer_auth(secret).send()
    };
    let (status, body) = json_of(usage(&secret_a, "").await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(sum(body["buckets"].as_array().unwrap(), None)["VALID"], 3, "A's keys of alice: {body}");
    // B's flush may come a little later than A's.
    let started = Instant::now();
    loop {
        let (_, body) = json_of(usage(&secret_b, "?granularity=minute").await.unwrap()).await;
        let valid = sum(body["buckets"].as_array().unwrap(), None)["VALID"].as_u64().unwrap_or(0);
        if valid == 1 {
            break;
        }
        assert!(valid == 0 && started.elapsed() < Duration::from_secs(20), "B sees only B's: {body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (_, body) = json_of(usage(&secret_a, "?granularity=day&group_by=tag").await.unwrap()).await;
    assert_eq!(body["buckets"][0]["group"], "GET /x", "{body}");
    let (_, body) = json_of(usage(&secret_a, "?tag=nothing").await.unwrap()).await;
    assert_eq!(body["buckets"], json!([]));
    let (_, body) =
        json_of(server.anon(Method::GET, "/v1/owners/bob/usage").bearer_auth(&secret_a).send().await.unwrap()).await;
    assert_eq!(body["buckets"], json!([]), "another owner");
    let (status, _) = json_of(server.anon(Method::GET, "/v1/owners/alice/usage").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = json_of(usage("cs-wrong", "").await.unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = json_of(
        usage(&secret_a, "?granularity=minute&from=2026-01-01T00:00:00Z&to=2026-01-03T00:00:01Z").await.unwrap(),
    )
    .await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_INPUT")), "{body}");
    let (status, _) = json_of(usage(&secret_a, "?group_by=key").await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    server.stop().await;
}

async fn ranges_groupings_and_tags_past_their_limits_are_400(db: Db) {
    let server = server(db).await;
    let (a, secret) = server.create_app(json!({"name": "A", "label": "a"})).await;
    let (b, _) = server.create_app(json!({"name": "B", "label": "b"})).await;
    let (a, b) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    let (key, record) = server.create_key(a, json!({"owner_id": "u1"})).await;
    let id = record["id"].as_str().unwrap();
    let ok = |query: String| {
        let server = &server;
        async move {
            let (status, body) = get(server, &format!("/v1/analytics/verifications?{query}")).await;
            assert_eq!(status, StatusCode::OK, "{query}: {body}");
        }
    };
    let refused = |query: String, expected: StatusCode, field: &'static str| {
        let server = &server;
        async move {
            let (status, body) = get(server, &format!("/v1/analytics/verifications?{query}")).await;
            assert_eq!(status, expected, "{query}: {body}");
            let code = if expected == StatusCode::NOT_FOUND { "NOT_FOUND" } else { "INVALID_INPUT" };
            assert_eq!(body["error"]["code"], code, "{query}: {body}");
            assert!(body["error"]["message"].as_str().unwrap().starts_with(field), "{query}: {body}");
        }
    };
    let bad = StatusCode::BAD_REQUEST;
    let day = |n: u32| {
        format!(
            "from=2026-01-01T00:00:00Z&to={}",
            (time::macros::datetime!(2026-01-01 0:00 UTC) + time::Duration::days(i64::from(n)))
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        )
    };
    ok(format!("app_id={a}&granularity=minute&from=2026-01-01T00:00:00Z&to=2026-01-03T00:00:00Z")).await;
    refused(format!("app_id={a}&granularity=minute&from=2026-01-01T00:00:00Z&to=2026-01-03T00:00:01Z"), bad, "from")
        .await;
    ok(format!("app_id={a}&granularity=hour&{}", day(90))).await;
    refused(format!("app_id={a}&granularity=hour&{}", day(91)), bad, "from").await;
    ok(format!("app_id={a}&granularity=day&{}", day(1_096))).await;
    refused(format!("app_id={a}&granularity=day&{}", day(1_097)), bad, "from").await;
    refused(format!("app_id={a}&from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z"), bad, "to").await;
    refused(format!("app_id={a}&from=yesterday"), bad, "from").await;
    refused(format!("app_id={a}&granularity=week"), bad, "granularity").await;
    refused(format!("app_id={a}&group_by=region"), bad, "group_by").await;
    refused(format!("app_id={a}&group_by=key&owner_id=u1"), bad, "group_by").await;
    refused(format!("key_id={id}&group_by=owner"), bad, "group_by").await;
    refused(format!("app_id={a}&group_by=tag&tag=x"), bad, "group_by").await;
    refused(format!("app_id={a}&group_by=tag&limit=0"), bad, "limit").await;
    refused(format!("app_id={a}&group_by=tag&limit=101"), bad, "limit").await;
    refused(format!("app_id={a}&tag={}", "x".repeat(65)), bad, "tag").await;
    refused(format!("app_id={a}&tag=a%0Ab"), bad, "tag").await;
    refused(format!("app_id={a}&key_id={id}&owner_id=u1"), bad, "owner_id").await;
    refused("granularity=hour".to_owned(), bad, "app_id").await;
    let (status, body) = get(&server, &format!("/v1/analytics/verifications?app_id={a}&color=red")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (bad, Some("INVALID_QUERY")), "{body}");
    refused(format!("app_id={}", uuid::Uuid::now_v7()), StatusCode::NOT_FOUND, "").await;
    refused(format!("key_id={}", uuid::Uuid::now_v7()), StatusCode::NOT_FOUND, "").await;
    refused(format!("app_id={b}&key_id={id}"), StatusCode::NOT_FOUND, "").await;
    ok(format!("app_id={a}&key_id={id}&tag=x&group_by=code")).await;

    // Tags on POST /v1/verify: at most 10, each 1-64 characters without control characters.
    let verify = |tags: Value| {
        let body = json!({"key": key, "client_secret": secret, "tags": tags});
        let server = &server;
        async move {
            json_of(
                server
                    .anon(Method::POST, "/v1/verify")
                    .bearer_auth(&server.service_key)
                    .json(&body)
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    let ten: Vec<String> = (0..10).map(|i| format!("{i}{}", "é".repeat(63))).collect();
    let (status, body) = verify(json!(ten)).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::OK, Some("VALID")), "ten tags of 64 characters: {body}");
    for (tags, field) in [
        (json!((0..11).map(|i| i.to_string()).collect::<Vec<_>>()), "tags:"),
        (json!(["a".repeat(65)]), "tags[0]:"),
        (json!(["ok", ""]), "tags[1]:"),
        (json!(["new\nline"]), "tags[0]:"),
        (json!(["nul\u{0}"]), "tags[0]:"),
        (json!("GET /a"), "the body"),
        (json!([1]), "the body"),
    ] {
        let (status, body) = verify(tags.clone()).await;
        let code = if tags.is_string() || tags[0].is_number() { "INVALID_JSON" } else { "INVALID_INPUT" };
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some(code)), "{tags}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().starts_with(field), "{tags}: {body}");
    }
    server.stop().await;
}

/// Retentions that would drop fine buckets after coarse ones, or at once, are refused at start.
#[tokio::test]
async fn retention_settings_out_of_order_refuse_to_start() {
    let mut config = common::config(Db::Sqlite);
    config.usage_minute_retention = keypal::config::HumanDuration(Duration::from_secs(7_200));
    config.usage_hour_retention = keypal::config::HumanDuration(Duration::from_secs(3_600));
    let error = keypal_server::Server::bind(&config).await.err().expect("refused");
    assert_eq!(error.code(), "INVALID_SETTING");
    assert!(error.to_string().contains("usage_hour_retention"), "{error}");
    config.usage_hour_retention = keypal::config::HumanDuration(Duration::from_secs(86_400));
    config.usage_day_retention = Some(keypal::config::HumanDuration(Duration::from_secs(3_600)));
    let error = keypal_server::Server::bind(&config).await.err().expect("refused");
    assert!(error.to_string().contains("usage_day_retention"), "{error}");
    config.usage_minute_retention = keypal::config::HumanDuration(Duration::ZERO);
    let error = keypal_server::Server::bind(&config).await.err().expect("refused");
    assert!(error.to_string().contains("usage_minute_retention"), "{error}");
}
