//! `RemoteVerifier` against a real `keypal serve` (its router in this process, on a
//! bound socket, over SQLite), through the layer on another bound socket.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, missing_docs)]

mod common;

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use common::{KeypalServe, answer, header, serve};
use keypal_axum::{ApiKeyLayer, Cost, RemoteVerifier, RequireScopes, VerifiedKey};
use reqwest::{Method, StatusCode};
use serde_json::json;

fn app(remote: RemoteVerifier) -> Router {
    Router::new()
        .route("/me", get(|key: VerifiedKey| async move { key.owner_id().unwrap_or("").to_owned() }))
        .route("/invoices", get(|| async { "[]" }).route_layer(RequireScopes::all(["invoices:read"])))
        .route(
            "/render",
            get(|key: VerifiedKey| async move { key.remaining().map(|n| n.to_string()).unwrap_or_default() })
                .route_layer(Cost::new(4)),
        )
        .layer(ApiKeyLayer::new(remote))
}

async fn call(base: &str, path: &str, key: &str) -> (StatusCode, reqwest::header::HeaderMap, serde_json::Value) {
    answer(reqwest::Client::new().get(format!("{base}{path}")).bearer_auth(key).send().await.unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remote_verifier_answers_as_the_in_process_one() {
    let keypal = KeypalServe::start(json!({"name": "Billing", "label": "billing"})).await;
    let remote = RemoteVerifier::new(&keypal.base, &keypal.service_key, keypal.client_secret.clone());
    let base = serve(app(remote)).await;

    let (key, id) = keypal.create_key(json!({"owner_id": "acme", "scopes": ["invoices:read"]})).await;
    let (status, headers, body) = call(&base, "/me", &key).await;
    assert_eq!((status, body), (StatusCode::OK, json!("acme")));
    assert!(headers.get("ratelimit").is_none());
    assert_eq!(call(&base, "/invoices", &key).await.0, StatusCode::OK);

    let (reader, _) = keypal.create_key(json!({"owner_id": "acme", "scopes": ["profile:read"]})).await;
    let (status, headers, body) = call(&base, "/invoices", &reader).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        header(&headers, "www-authenticate"),
        r#"Bearer realm="api", error="insufficient_scope", scope="invoices:read""#
    );
    assert_eq!(body["error"]["code"], "INSUFFICIENT_SCOPE");

    let (status, _, body) = call(&base, "/me", "garbage").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("MALFORMED")));

    let (status, _) = keypal.admin(Method::POST, &format!("/v1/keys/{id}/revoke"), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, headers, body) = call(&base, "/me", &key).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(header(&headers, "www-authenticate"), r#"Bearer realm="api", error="invalid_token""#);
    assert_eq!(body["error"]["code"], "REVOKED");
}

/// The layer's tags reach `keypal serve` with each verification it asks for, and are
/// counted there: the usage analytics answer by tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layers_tags_are_counted_by_the_service() {
    let keypal = KeypalServe::start(json!({"name": "Billing", "label": "billing"})).await;
    let remote =
        RemoteVerifier::new(&keypal.base, &keypal.service_key, keypal.client_secret.clone()).cache(Duration::ZERO);
    let tags = keypal::Tags::new(["api:billing", "region:eu"]).unwrap();
    let base = serve(
        Router::new()
            .route("/me", get(|key: VerifiedKey| async move { key.owner_id().unwrap_or("").to_owned() }))
            .layer(ApiKeyLayer::new(remote).tags(tags)),
    )
    .await;
    let (key, _) = keypal.create_key(json!({"owner_id": "acme"})).await;
    for _ in 0..3 {
        assert_eq!(call(&base, "/me", &key).await.0, StatusCode::OK);
    }
    let path = |tag: &str| format!("/v1/analytics/verifications?app_id={}&tag={tag}&granularity=minute", keypal.app_id);
    for tag in ["api:billing", "region:eu"] {
        let (status, body) = keypal.admin(Method::GET, &path(tag), json!(null)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let valid: u64 = body["buckets"].as_array().unwrap().iter().filter_map(|b| b["counts"]["VALID"].as_u64()).sum();
        assert_eq!(valid, 3, "{tag}: {body}");
    }
    let (_, body) = keypal.admin(Method::GET, &path("api:other"), json!(null)).await;
    assert_eq!(body["buckets"], json!([]), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_credits_come_back_as_headers_and_429s() {
    let keypal = KeypalServe::start(json!({"name": "Billing", "label": "billing"})).await;
    let remote = RemoteVerifier::new(&keypal.base, &keypal.service_key, keypal.client_secret.clone())
        .cache(Duration::from_secs(60));
    let base = serve(app(remote)).await;

    let (limited, _) = keypal.create_key(json!({"rate_limit": "2/minute"})).await;
    let (status, headers, _) = call(&base, "/me", &limited).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "ratelimit-policy"), r#""default";q=2;w=60"#);
    assert!(header(&headers, "ratelimit").starts_with(r#""default";r=1;t="#), "{headers:?}");
    assert_eq!(call(&base, "/me", &limited).await.0, StatusCode::OK, "a limited key is never served from the cache");
    let (status, headers, body) = call(&base, "/me", &limited).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["code"], "RATE_LIMITED");
    let retry_after: u64 = header(&headers, "retry-after").parse().unwrap();
    assert!((1..=30).contains(&retry_after), "one request every 30 s: {retry_after}");
    assert!(header(&headers, "ratelimit").starts_with(r#""default";r=0;t="#));

    let (credits, _) = keypal.create_key(json!({"remaining": 10})).await;
    assert_eq!(call(&base, "/render", &credits).await.2, json!(6), "1 by the layer, 3 more by the route");
    assert_eq!(call(&base, "/render", &credits).await.2, json!(2));
    let (status, _, body) = call(&base, "/render", &credits).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("USAGE_EXCEEDED")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_keeps_valid_results_for_its_ttl_and_no_longer_than_documented() {
    let keypal = KeypalServe::start(json!({"name": "Billing", "label": "billing"})).await;
    let cached = serve(app(RemoteVerifier::new(&keypal.base, &keypal.service_key, keypal.client_secret.clone())
        .cache(Duration::from_secs(60))))
    .await;
    let uncached =
        serve(app(RemoteVerifier::new(&keypal.base, &keypal.service_key, keypal.client_secret.clone()))).await;

    let (key, id) = keypal.create_key(json!({"owner_id": "acme", "scopes": ["profile:read"]})).await;
    assert_eq!(call(&cached, "/me", &key).await.0, StatusCode::OK);
    // Scopes are checked against the cached key's own.
    assert_eq!(call(&cached, "/invoices", &key).await.0, StatusCode::FORBIDDEN);
    keypal.admin(Method::POST, &format!("/v1/keys/{id}/revoke"), json!({})).await;
    assert_eq!(call(&uncached, "/me", &key).await.0, StatusCode::UNAUTHORIZED, "without a cache: at once");
    let (status, _, body) = call(&cached, "/me", &key).await;
    assert_eq!((status, body), (StatusCode::OK, json!("acme")), "the documented bound: up to the TTL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_or_refusing_service_is_503_never_a_pass() {
    let keypal = KeypalServe::start(json!({"name": "Billing", "label": "billing"})).await;
    let (key, _) = keypal.create_key(json!({"owner_id": "acme"})).await;

    // A port nothing listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let verifiers = [
        RemoteVerifier::new(format!("http://{closed}"), &keypal.service_key, keypal.client_secret.clone()),
        RemoteVerifier::new(&keypal.base, "wrong service key", keypal.client_secret.clone()),
        RemoteVerifier::new(&keypal.base, &keypal.service_key, "cs-wrong"),
        RemoteVerifier::new("not a url", &keypal.service_key, keypal.client_secret.clone()),
    ];
    for remote in verifiers {
        let described = format!("{remote:?}");
        let base = serve(app(remote.cache(Duration::from_secs(60)))).await;
        let (status, headers, body) = call(&base, "/me", &key).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{described}");
        assert_eq!(body["error"]["code"], "VERIFICATION_UNAVAILABLE");
        assert_eq!(header(&headers, "retry-after"), "1");
    }

    // A service that accepts the connection but never answers: the timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let remote =
        RemoteVerifier::new(format!("http://{silent_addr}"), &keypal.service_key, keypal.client_secret.clone())
            .timeout(Duration::from_millis(200));
    let base = serve(app(remote)).await;
    assert_eq!(call(&base, "/me", &key).await.0, StatusCode::SERVICE_UNAVAILABLE);
}

/// The field names of a JSON object, sorted.
fn fields(value: &serde_json::Value) -> Vec<String> {
    let mut names: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_self_service_router_answers_in_keypal_serves_owner_shapes() {
    let keypal = KeypalServe::start(json!({"name": "Billing", "label": "billing"})).await;
    let http = reqwest::Client::new();
    let owner_url = format!("{}/v1/owners/alice/keys", keypal.base);
    let served =
        http.post(&owner_url).bearer_auth(&keypal.client_secret).json(&json!({"name": "laptop"})).send().await.unwrap();
    let (status, _, served) = answer(served).await;
    assert_eq!(status, StatusCode::CREATED, "{served}");
    let (_, _, served_list) =
        answer(http.get(&owner_url).bearer_auth(&keypal.client_secret).send().await.unwrap()).await;

    let keys = keypal::KeyManager::builder().store(keypal::MemoryStore::new()).build().unwrap();
    let owner_of = |_: &axum::http::request::Parts| async { Ok::<_, StatusCode>("alice".to_owned()) };
    let base = serve(Router::new().nest("/keys", keypal_axum::self_service(keys, owner_of))).await;
    let ours = http.post(format!("{base}/keys")).json(&json!({"name": "laptop"})).send().await.unwrap();
    let (status, _, ours) = answer(ours).await;
    assert_eq!(status, StatusCode::CREATED, "{ours}");
    let (_, _, our_list) = answer(http.get(format!("{base}/keys")).send().await.unwrap()).await;

    assert_eq!(fields(&ours), fields(&served));
    assert_eq!(fields(&ours["record"]), fields(&served["record"]));
    assert_eq!(fields(&our_list), fields(&served_list));
    assert_eq!(fields(&our_list["keys"][0]), fields(&served_list["keys"][0]));
}
