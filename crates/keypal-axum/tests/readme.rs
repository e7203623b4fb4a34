//! The README's keypal-axum example, exactly as the README shows it (checked below), run
//! against an in-process `KeyManager` and a real `keypal serve` holding the same key.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, missing_docs)]

mod common;

use common::{KeypalServe, answer, serve};
use keypal::{ImportKey, KeyManager, MemoryStore, NewKey};
use reqwest::StatusCode;
use serde_json::json;

const TEMPLATE: &str = "sk_live_{secret:32:base62}";

async fn list_invoices() -> &'static str {
    "[]"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_example_runs() {
    let keys = KeyManager::builder().template(TEMPLATE).store(MemoryStore::new()).build().unwrap();
    let keypal = KeypalServe::start(json!({"name": "Billing", "label": "billing", "template": TEMPLATE})).await;
    let (service_key, client_secret) = (keypal.service_key.clone(), keypal.client_secret.clone());

    // README example begins
    use axum::{Router, routing::get};
    use keypal_axum::{ApiKeyLayer, RequireScopes, VerifiedKey};

    let app = Router::new()
        .route("/invoices", get(list_invoices).route_layer(RequireScopes::all(["invoices:read"])))
        .route("/me", get(|key: VerifiedKey| async move { key.owner_id().unwrap_or("").to_owned() }))
        .layer(ApiKeyLayer::new(keys.clone())); // keys: keypal::KeyManager<S>

    // A service that verifies through a running `keypal serve` instead of its own store:
    let remote = keypal_axum::RemoteVerifier::new("http://127.0.0.1:8080", service_key, client_secret);
    let app = app.layer(ApiKeyLayer::new(remote));
    // README example ends

    // The example names keypal serve's default address; this test's server is elsewhere,
    // so the outer layer fails closed...
    let base = serve(app).await;
    let (key, _) = keypal.create_key(json!({"owner_id": "acme", "scopes": ["invoices:read"]})).await;
    let http = reqwest::Client::new();
    let at_default = answer(http.get(format!("{base}/me")).bearer_auth(&key).send().await.unwrap()).await;
    if at_default.0 != StatusCode::OK {
        assert_eq!(at_default.0, StatusCode::SERVICE_UNAVAILABLE, "{:?}", at_default.2);
    }

    // ...and with the test server's address, both layers pass a key both stores hold.
    let remote = keypal_axum::RemoteVerifier::new(&keypal.base, &keypal.service_key, keypal.client_secret.clone());
    let app = Router::new()
        .route("/invoices", get(list_invoices).route_layer(RequireScopes::all(["invoices:read"])))
        .route("/me", get(|key: VerifiedKey| async move { key.owner_id().unwrap_or("").to_owned() }))
        .layer(ApiKeyLayer::new(keys.clone()))
        .layer(ApiKeyLayer::new(remote));
    let base = serve(app).await;
    keys.import(ImportKey::plaintext(key.as_str()).with(NewKey::new().owner_id("acme").scopes(["invoices:read"])))
        .await
        .unwrap();
    let (status, _, body) = answer(http.get(format!("{base}/me")).bearer_auth(&key).send().await.unwrap()).await;
    assert_eq!((status, body), (StatusCode::OK, json!("acme")));
    let (status, _, body) = answer(http.get(format!("{base}/invoices")).bearer_auth(&key).send().await.unwrap()).await;
    assert_eq!((status, body), (StatusCode::OK, json!([])));
    let only_here = keys.create(NewKey::new().scopes(["invoices:read"])).await.unwrap();
    let (status, _, body) =
        answer(http.get(format!("{base}/me")).bearer_auth(only_here.key.expose()).send().await.unwrap()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("NOT_FOUND")),
        "keypal serve does not hold it"
    );
}

/// The lines between the markers above, as the README shows them.
fn example_of_this_file() -> String {
    let source = include_str!("readme.rs");
    let begin = source.find("// README example begins\n").unwrap() + "// README example begins\n".len();
    let end = source.find("    // README example ends").unwrap();
    source[begin..end].lines().map(|line| line.strip_prefix("    ").unwrap_or(line)).collect::<Vec<_>>().join("\n")
}

#[test]
fn the_readme_shows_exactly_the_example_this_test_runs() {
    let readme = include_str!("../../../README.md");
    let fence = "```rust,ignore\n";
    let section = readme.find("## In an axum service").expect("the README's keypal-axum section");
    let begin = section + readme[section..].find(fence).unwrap() + fence.len();
    let end = begin + readme[begin..].find("```").unwrap();
    assert_eq!(readme[begin..end].trim_end(), example_of_this_file().trim_end());
}
