//! Where the key comes from (first match wins), the extractors and the per-route cost,
//! over real HTTP.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, missing_docs)]

mod common;

use axum::Router;
use axum::http::Uri;
use axum::routing::get;
use common::{answer, serve};
use keypal::{KeyManager, MemoryStore, NewKey, RateLimit};
use keypal_axum::{ApiKeyLayer, Cost, KeySource, RequireScopes, VerifiedKey};
use reqwest::StatusCode;
use serde_json::{Value, json};

type Keys = KeyManager<MemoryStore>;

fn manager() -> Keys {
    KeyManager::builder().prefix("sk_test").store(MemoryStore::new()).build().unwrap()
}

async fn owner(key: VerifiedKey) -> String {
    key.owner_id().unwrap_or("").to_owned()
}

#[tokio::test]
async fn bearer_wins_over_x_api_key_and_other_schemes_are_skipped() {
    let keys = manager();
    let alice = keys.create(NewKey::new().owner_id("alice")).await.unwrap();
    let bob = keys.create(NewKey::new().owner_id("bob")).await.unwrap();
    let base = serve(Router::new().route("/", get(owner)).layer(ApiKeyLayer::new(keys.clone()))).await;
    let http = reqwest::Client::new();

    let both = http.get(&base).bearer_auth(alice.key.expose()).header("x-api-key", bob.key.expose());
    let (status, _, body) = answer(both.send().await.unwrap()).await;
    assert_eq!((status, body), (StatusCode::OK, json!("alice")));

    // First match wins: a bad bearer key is refused even beside a good X-API-Key.
    let bad_first = http.get(&base).bearer_auth("garbage").header("x-api-key", bob.key.expose());
    let (status, _, body) = answer(bad_first.send().await.unwrap()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("MALFORMED")));

    let basic = http.get(&base).basic_auth("user", Some("password")).header("x-api-key", bob.key.expose());
    let (status, _, body) = answer(basic.send().await.unwrap()).await;
    assert_eq!((status, body), (StatusCode::OK, json!("bob")), "Basic is not a key: X-API-Key is next");

    let scheme_case = http.get(&base).header("authorization", format!("bearer {}", bob.key.expose()));
    assert_eq!(answer(scheme_case.send().await.unwrap()).await.2, json!("bob"));
}

#[tokio::test]
async fn custom_headers_and_opt_in_query_parameters() {
    let keys = manager();
    let alice = keys.create(NewKey::new().owner_id("alice")).await.unwrap();
    let http = reqwest::Client::new();

    let custom = ApiKeyLayer::new(keys.clone()).sources([KeySource::header("x-billing-key")]);
    let base = serve(Router::new().route("/", get(owner)).layer(custom)).await;
    let (status, _, body) =
        answer(http.get(&base).header("x-billing-key", alice.key.expose()).send().await.unwrap()).await;
    assert_eq!((status, body), (StatusCode::OK, json!("alice")));
    let (status, _, body) = answer(http.get(&base).bearer_auth(alice.key.expose()).send().await.unwrap()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("MISSING_KEY")),
        "sources replaced"
    );

    // Without opting in, a key in the query is no key.
    let plain = serve(Router::new().route("/", get(owner)).layer(ApiKeyLayer::new(keys.clone()))).await;
    let url = format!("{plain}/?api_key={}", alice.key.expose());
    let (status, _, body) = answer(http.get(&url).send().await.unwrap()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("MISSING_KEY")));

    // Opted in: found, and removed from the URI the handler sees.
    let seen = |uri: Uri, key: VerifiedKey| async move {
        axum::Json(json!({"uri": uri.to_string(), "owner": key.owner_id()}))
    };
    let query =
        serve(Router::new().route("/search", get(seen)).layer(ApiKeyLayer::new(keys.clone()).query("api_key"))).await;
    let url = format!("{query}/search?q=rust&api_key={}&page=2", alice.key.expose());
    let (status, _, body) = answer(http.get(&url).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["owner"], "alice");
    assert_eq!(body["uri"], "/search?q=rust&page=2");
    assert!(!body.to_string().contains(alice.key.expose()), "{body}");
    // A header still comes first.
    let url = format!("{query}/search?api_key=garbage");
    let (status, _, _) = answer(http.get(&url).header("x-api-key", alice.key.expose()).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn an_optional_key_lets_anonymous_requests_through_but_not_bad_keys() {
    let keys = manager();
    let alice = keys.create(NewKey::new().owner_id("alice").scopes(["read"])).await.unwrap();
    let greet = |key: Option<VerifiedKey>| async move {
        match key {
            Some(key) => format!("hello {}", key.owner_id().unwrap_or("?")),
            None => "hello stranger".to_owned(),
        }
    };
    let app = Router::new()
        .route("/", get(greet))
        .route("/me", get(owner))
        .route("/read", get(|| async { "read" }).route_layer(RequireScopes::any(["read", "admin"])))
        .layer(ApiKeyLayer::new(keys.clone()).allow_anonymous());
    let base = serve(app).await;
    let http = reqwest::Client::new();

    assert_eq!(answer(http.get(&base).send().await.unwrap()).await.2, json!("hello stranger"));
    assert_eq!(
        answer(http.get(&base).bearer_auth(alice.key.expose()).send().await.unwrap()).await.2,
        json!("hello alice")
    );
    let (status, _, body) = answer(http.get(&base).bearer_auth("garbage").send().await.unwrap()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("MALFORMED")),
        "a bad key is refused"
    );

    // Routes that need a key still refuse anonymous requests.
    for path in ["/me", "/read"] {
        let (status, headers, body) = answer(http.get(format!("{base}{path}")).send().await.unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(common::header(&headers, "www-authenticate"), r#"Bearer realm="api""#);
        assert_eq!(body["error"]["code"], "MISSING_KEY");
    }
    let (status, _, _) =
        answer(http.get(format!("{base}/read")).bearer_auth(alice.key.expose()).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn the_verified_key_carries_its_fields_limit_and_credits() {
    let keys = KeyManager::builder()
        .prefix("sk_test")
        .tier("pro", keypal::Tier::new().rate_limit(RateLimit::per_hour(1000)))
        .store(MemoryStore::new())
        .build()
        .unwrap();
    let created = keys
        .create(
            NewKey::new()
                .owner_id("acme")
                .name("CI")
                .tier("pro")
                .scopes(["invoices:read"])
                .metadata(json!({"plan": "team"}))
                .remaining(10),
        )
        .await
        .unwrap();
    let show = |key: VerifiedKey| async move {
        let limit = key.rate_limit().unwrap();
        axum::Json(json!({
            "id": key.id().to_string(), "owner": key.owner_id(), "name": key.name(), "tier": key.tier(),
            "scopes": key.scopes(), "metadata": key.metadata(), "limit": limit.limit, "left": limit.remaining,
            "window": key.rate_limit_window().map(|w| w.as_secs()), "remaining": key.remaining(),
            "expires_at": key.expires_at().map(|t| t.to_string()),
        }))
    };
    let base = serve(Router::new().route("/", get(show)).layer(ApiKeyLayer::new(keys.clone()))).await;
    let (status, _, body) =
        answer(reqwest::Client::new().get(&base).bearer_auth(created.key.expose()).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let expected = json!({
        "id": created.record.id.to_string(), "owner": "acme", "name": "CI", "tier": "pro",
        "scopes": ["invoices:read"], "metadata": {"plan": "team"}, "limit": 1000, "left": 999,
        "window": 3600, "remaining": 9, "expires_at": Value::Null,
    });
    assert_eq!(body, expected);
}

#[tokio::test]
async fn costs_spend_credits_per_route() {
    let keys = manager();
    let key = keys.create(NewKey::new().remaining(10)).await.unwrap();
    let left = |key: VerifiedKey| async move { key.remaining().map(|n| n.to_string()).unwrap_or_default() };
    let app = Router::new()
        .route("/cheap", get(left))
        .route("/render", get(left).route_layer(Cost::new(4)))
        .layer(ApiKeyLayer::new(keys.clone()));
    let base = serve(app).await;
    let http = reqwest::Client::new();
    let call = |path: &'static str| {
        let request = http.get(format!("{base}{path}")).bearer_auth(key.key.expose());
        async move { answer(request.send().await.unwrap()).await }
    };
    assert_eq!(call("/cheap").await.2, json!(9));
    assert_eq!(call("/render").await.2, json!(5), "4 in all: 1 by the layer, 3 by the route");
    assert_eq!(call("/render").await.2, json!(1));
    let (status, _, body) = call("/render").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("USAGE_EXCEEDED")));
    assert_eq!(
        keys.get(&key.record.id).await.unwrap().remaining,
        Some(0),
        "the layer spent the last one; the route nothing"
    );

    // The layer's own cost.
    let pricey = keys.create(NewKey::new().remaining(10)).await.unwrap();
    let base = serve(Router::new().route("/", get(left)).layer(ApiKeyLayer::new(keys.clone()).cost(3))).await;
    let (_, _, body) = answer(http.get(&base).bearer_auth(pricey.key.expose()).send().await.unwrap()).await;
    assert_eq!(body, json!(7));

    // Keys without credits spend nothing and pass.
    let free = keys.create(NewKey::new()).await.unwrap();
    let base =
        serve(Router::new().route("/", get(left).route_layer(Cost::new(100))).layer(ApiKeyLayer::new(keys.clone())))
            .await;
    let (status, _, body) = answer(http.get(&base).bearer_auth(free.key.expose()).send().await.unwrap()).await;
    assert_eq!((status, body), (StatusCode::OK, Value::Null), "an empty body: unlimited");
}
