//! No key appears in what the layer traces, at any level: valid, refused, unknown and
//! malformed keys, from every source, verified in process and through `keypal serve`,
//! with a logging layer inside that prints request headers.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, missing_docs)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::routing::get;
use common::{KeypalServe, serve};
use keypal::{KeyManager, MemoryStore, NewKey, RateLimit};
use keypal_axum::{ApiKeyLayer, RemoteVerifier, RequireScopes, VerifiedKey};
use serde_json::json;

/// Everything written by the subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A logging layer inside the key layer, as services write them: it prints the headers
/// with their `Debug`, which shows a sensitive value as `Sensitive`.
async fn log_headers(request: Request, next: Next) -> axum::response::Response {
    tracing::info!(headers = ?request.headers(), uri = %request.uri(), "request");
    next.run(request).await
}

fn app<V: keypal_axum::Verifier>(verifier: V) -> Router {
    Router::new()
        .route("/me", get(|key: VerifiedKey| async move { key.owner_id().unwrap_or("").to_owned() }))
        .route("/admin", get(|| async { "admin" }).route_layer(RequireScopes::all(["admin"])))
        .layer(middleware::from_fn(log_headers))
        .layer(ApiKeyLayer::new(verifier).sources([
            keypal_axum::KeySource::bearer(),
            keypal_axum::KeySource::header("x-api-key"),
            keypal_axum::KeySource::header("x-custom-key"),
            keypal_axum::KeySource::query("api_key"),
        ]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_reaches_the_trace() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let keys = KeyManager::builder().prefix("sk_test").store(MemoryStore::new()).build().unwrap();
    let valid = keys.create(NewKey::new().owner_id("acme")).await.unwrap().key.expose().to_owned();
    let revoked = keys.create(NewKey::new()).await.unwrap();
    keys.revoke(&revoked.record.id).await.unwrap();
    let limited = keys.create(NewKey::new().rate_limit(RateLimit::per_hour(1))).await.unwrap().key.expose().to_owned();
    let unknown = keys.generate_key().expose().to_owned();
    let mut presented =
        vec![valid, revoked.key.expose().to_owned(), limited.clone(), limited, unknown, "sk_test_malformed".to_owned()];

    let keypal = KeypalServe::start(json!({"name": "Billing", "label": "billing"})).await;
    let (remote_key, _) = keypal.create_key(json!({"owner_id": "acme"})).await;
    let remote = RemoteVerifier::new(&keypal.base, &keypal.service_key, keypal.client_secret.clone());
    let wrong_secret = RemoteVerifier::new(&keypal.base, &keypal.service_key, "cs-wrong");

    let bases = [serve(app(keys.clone())).await, serve(app(remote)).await, serve(app(wrong_secret)).await];
    presented.push(remote_key);
    let http = reqwest::Client::new();
    for base in &bases {
        for key in &presented {
            for path in ["/me", "/admin"] {
                let url = format!("{base}{path}");
                http.get(&url).bearer_auth(key).send().await.unwrap();
                http.get(&url).header("x-api-key", key).send().await.unwrap();
                http.get(&url).header("x-custom-key", key).send().await.unwrap();
                http.get(format!("{url}?api_key={key}")).send().await.unwrap();
            }
        }
    }

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("API key refused"), "the capture works: {}", &text[..text.len().min(2000)]);
    assert!(text.contains("verification failed"), "the 503s are logged");
    assert!(text.contains("Sensitive"), "the logging layer saw the headers, marked sensitive");
    for key in presented.iter().chain([&keypal.client_secret, &keypal.service_key]) {
        assert!(!text.contains(key.as_str()), "a secret reached the trace");
    }
}
