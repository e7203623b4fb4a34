//! Every answer of point 3 of the contract, with its headers, over real HTTP: the layer
//! over an in-process `KeyManager` on a bound loopback socket.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, missing_docs)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::get;
use common::{answer, header, serve};
use keypal::{KeyManager, KeyPatch, ManualClock, MemoryStore, NewKey, RateLimit, VerifyOptions};
use keypal_axum::{ApiKeyLayer, RequireScopes, Verdict, VerifiedKey, Verifier, VerifierError};
use reqwest::StatusCode;

type Keys = KeyManager<MemoryStore>;

fn manager() -> Keys {
    KeyManager::builder().prefix("sk_test").store(MemoryStore::new()).build().unwrap()
}

fn app(keys: &Keys) -> Router {
    Router::new()
        .route("/me", get(|key: VerifiedKey| async move { key.owner_id().unwrap_or("").to_owned() }))
        .route("/invoices", get(|| async { "[]" }).route_layer(RequireScopes::all(["invoices:read"])))
        .layer(ApiKeyLayer::new(keys.clone()).realm("billing"))
}

async fn get_with(
    base: &str,
    path: &str,
    key: Option<&str>,
) -> (StatusCode, reqwest::header::HeaderMap, serde_json::Value) {
    let mut request = reqwest::Client::new().get(format!("{base}{path}"));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    answer(request.send().await.unwrap()).await
}

const INVALID_TOKEN: &str = r#"Bearer realm="billing", error="invalid_token""#;

#[tokio::test]
async fn a_request_without_a_key_is_401_with_a_bare_bearer_challenge() {
    let keys = manager();
    let base = serve(app(&keys)).await;
    let (status, headers, body) = get_with(&base, "/me", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(header(&headers, "www-authenticate"), r#"Bearer realm="billing""#, "no error attribute");
    assert_eq!(body["error"]["code"], "MISSING_KEY");
    assert!(body["error"]["message"].is_string());
    assert_eq!(header(&headers, "content-type"), "application/json");
}

#[tokio::test]
async fn malformed_and_unknown_keys_are_401_invalid_token_with_the_same_header() {
    let keys = manager();
    let base = serve(app(&keys)).await;
    let (status, malformed_headers, body) = get_with(&base, "/me", Some("not-a-key")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(header(&malformed_headers, "www-authenticate"), INVALID_TOKEN);
    assert_eq!(body["error"]["code"], "MALFORMED");

    let unknown = keys.generate_key();
    let (status, unknown_headers, body) = get_with(&base, "/me", Some(unknown.expose())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "NOT_FOUND");
    assert_eq!(
        unknown_headers.get("www-authenticate"),
        malformed_headers.get("www-authenticate"),
        "the header does not tell whether a key exists"
    );

    let (status, _, body) = get_with(&base, "/me", Some(&"k".repeat(4096))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("MALFORMED")));
}

#[tokio::test]
async fn revoked_disabled_and_expired_keys_are_401_invalid_token() {
    let clock = Arc::new(ManualClock::starting_now());
    let keys = KeyManager::builder().prefix("sk_test").store(MemoryStore::new()).clock(clock.clone()).build().unwrap();
    let base = serve(app(&keys)).await;

    let revoked = keys.create(NewKey::new()).await.unwrap();
    keys.revoke(&revoked.record.id).await.unwrap();
    let disabled = keys.create(NewKey::new()).await.unwrap();
    keys.disable(&disabled.record.id).await.unwrap();
    let expiring = keys.create(NewKey::new().expires_in(Duration::from_secs(60))).await.unwrap();
    clock.advance(Duration::from_secs(120));

    for (key, code) in [(&revoked.key, "REVOKED"), (&disabled.key, "DISABLED"), (&expiring.key, "EXPIRED")] {
        let (status, headers, body) = get_with(&base, "/me", Some(key.expose())).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{code}");
        assert_eq!(header(&headers, "www-authenticate"), INVALID_TOKEN, "{code}");
        assert_eq!(body["error"]["code"], code);
    }
}

#[tokio::test]
async fn a_missing_scope_is_403_insufficient_scope_naming_the_scope() {
    let keys = manager();
    let base = serve(app(&keys)).await;
    let reader = keys.create(NewKey::new().owner_id("u1").scopes(["invoices:*"])).await.unwrap();
    let other = keys.create(NewKey::new().owner_id("u2").scopes(["profile:read"])).await.unwrap();

    let (status, _, body) = get_with(&base, "/invoices", Some(reader.key.expose())).await;
    assert_eq!((status, body), (StatusCode::OK, serde_json::json!([])), "invoices:* grants invoices:read");

    let (status, headers, body) = get_with(&base, "/invoices", Some(other.key.expose())).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        header(&headers, "www-authenticate"),
        r#"Bearer realm="billing", error="insufficient_scope", scope="invoices:read""#
    );
    assert_eq!(body["error"]["code"], "INSUFFICIENT_SCOPE");

    // Scopes required by the layer itself are checked in the verification.
    let strict =
        Router::new().route("/", get(|| async { "ok" })).layer(ApiKeyLayer::new(keys.clone()).scopes(["admin"]));
    let strict = serve(strict).await;
    let (status, headers, body) = get_with(&strict, "/", Some(reader.key.expose())).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(header(&headers, "www-authenticate"), r#"Bearer realm="api", error="insufficient_scope""#);
    assert_eq!(body["error"]["code"], "INSUFFICIENT_SCOPE");
}

#[tokio::test]
async fn over_the_rate_limit_is_429_with_retry_after_and_ratelimit_headers() {
    let keys = manager();
    let base = serve(app(&keys)).await;
    let limited =
        keys.create(NewKey::new().rate_limit(RateLimit::new(2, Duration::from_secs(60)).unwrap())).await.unwrap();

    let (status, headers, _) = get_with(&base, "/me", Some(limited.key.expose())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "ratelimit-policy"), r#""default";q=2;w=60"#, "successes carry the headers too");
    assert!(header(&headers, "ratelimit").starts_with(r#""default";r=1;t="#), "{headers:?}");
    assert!(headers.get("retry-after").is_none());
    let (status, headers, _) = get_with(&base, "/me", Some(limited.key.expose())).await;
    assert_eq!(status, StatusCode::OK);
    assert!(header(&headers, "ratelimit").starts_with(r#""default";r=0;t="#));

    let (status, headers, body) = get_with(&base, "/me", Some(limited.key.expose())).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["code"], "RATE_LIMITED");
    let retry_after: u64 = header(&headers, "retry-after").parse().unwrap();
    assert!((1..=30).contains(&retry_after), "one request every 30 s: {retry_after}");
    assert_eq!(header(&headers, "ratelimit-policy"), r#""default";q=2;w=60"#);
    assert!(header(&headers, "ratelimit").starts_with(r#""default";r=0;t="#));
    assert!(headers.get("www-authenticate").is_none());

    let unlimited = keys.create(NewKey::new()).await.unwrap();
    let (status, headers, _) = get_with(&base, "/me", Some(unlimited.key.expose())).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.get("ratelimit").is_none() && headers.get("ratelimit-policy").is_none(), "no limit, no headers");
}

#[tokio::test]
async fn out_of_credits_is_429_usage_exceeded() {
    let keys = manager();
    let base = serve(app(&keys)).await;
    let key = keys.create(NewKey::new().remaining(1)).await.unwrap();
    assert_eq!(get_with(&base, "/me", Some(key.key.expose())).await.0, StatusCode::OK);
    let (status, headers, body) = get_with(&base, "/me", Some(key.key.expose())).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["code"], "USAGE_EXCEEDED");
    assert!(headers.get("www-authenticate").is_none());
}

/// A verifier whose backend is down.
#[derive(Clone)]
struct Down;

impl Verifier for Down {
    async fn verify(&self, _key: &str, _options: &VerifyOptions) -> Result<Verdict, VerifierError> {
        Err(VerifierError::Keys(keypal::Error::Store(keypal::StoreError::backend(std::io::Error::other("down")))))
    }
}

#[tokio::test]
async fn a_failing_verifier_is_503_never_a_pass() {
    let app = Router::new().route("/", get(|| async { "secret data" })).layer(ApiKeyLayer::new(Down));
    let base = serve(app).await;
    let (status, headers, body) = get_with(&base, "/", Some("sk_test_anything")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["code"], "VERIFICATION_UNAVAILABLE");
    assert_eq!(header(&headers, "retry-after"), "1");
}

#[tokio::test]
async fn a_failing_verifier_under_an_optional_key_is_503_for_a_request_with_a_key() {
    let greet = |key: Option<VerifiedKey>| async move { if key.is_some() { "customer" } else { "stranger" } };
    let app = Router::new().route("/", get(greet)).layer(ApiKeyLayer::new(Down).allow_anonymous());
    let base = serve(app).await;
    let (status, _, body) = get_with(&base, "/", None).await;
    assert_eq!((status, body), (StatusCode::OK, serde_json::json!("stranger")));
    let (status, _, body) = get_with(&base, "/", Some("sk_test_anything")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("VERIFICATION_UNAVAILABLE"))
    );
}

#[tokio::test]
async fn the_body_is_replaceable_and_the_headers_stay() {
    let keys = manager();
    let app = Router::new().route("/", get(|| async { "ok" })).layer(
        ApiKeyLayer::new(keys.clone())
            .error_body(|rejection| format!("<error code='{}'/>", rejection.code()).into_response()),
    );
    let base = serve(app).await;
    let response = reqwest::Client::new().get(&base).bearer_auth("garbage").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(header(response.headers(), "www-authenticate"), r#"Bearer realm="api", error="invalid_token""#);
    assert_eq!(response.text().await.unwrap(), "<error code='MALFORMED'/>");
}

#[tokio::test]
async fn a_valid_key_reaches_the_handler() {
    let keys = manager();
    let base = serve(app(&keys)).await;
    let created = keys.create(NewKey::new().owner_id("user_42")).await.unwrap();
    let (status, _, body) = get_with(&base, "/me", Some(created.key.expose())).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, Some("user_42")));
    // A change through the manager takes effect at once.
    keys.update(&created.record.id, KeyPatch::new().name("renamed")).await.unwrap();
    keys.revoke(&created.record.id).await.unwrap();
    assert_eq!(get_with(&base, "/me", Some(created.key.expose())).await.0, StatusCode::UNAUTHORIZED);
}
