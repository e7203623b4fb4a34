//! The self-service router over real HTTP: its limits, shapes and ownership checks.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, missing_docs)]

mod common;

use axum::Router;
use axum::http::StatusCode as Status;
use axum::http::request::Parts;
use axum::routing::get;
use common::{answer, serve};
use keypal::{KeyManager, MemoryStore};
use keypal_axum::{ApiKeyLayer, SelfService, VerifiedKey};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The toy login: the signed-in user is the `x-user` header.
fn signed_in(parts: &Parts) -> impl Future<Output = Result<String, Status>> + Send + use<> {
    let user = parts.headers.get("x-user").and_then(|v| v.to_str().ok()).map(str::to_owned);
    async move { user.ok_or(Status::UNAUTHORIZED) }
}

struct App {
    base: String,
    http: reqwest::Client,
}

impl App {
    async fn start(max_keys: u32) -> App {
        let keys = KeyManager::builder()
            .prefix("sk_test")
            .max_active_keys_per_owner(max_keys)
            .store(MemoryStore::new())
            .build()
            .unwrap();
        let api = Router::new()
            .route("/me", get(|key: VerifiedKey| async move { key.owner_id().unwrap_or("").to_owned() }))
            .layer(ApiKeyLayer::new(keys.clone()));
        let app = Router::new()
            .nest(
                "/account/keys",
                SelfService::new(keys, signed_in).scopes(["invoices:read", "invoices:write"]).router(),
            )
            .nest("/api", api);
        App { base: serve(app).await, http: reqwest::Client::new() }
    }

    async fn send(&self, user: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}/account/keys{path}", self.base)).header("x-user", user);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let (status, _, body) = answer(request.send().await.unwrap()).await;
        (status, body)
    }

    async fn create(&self, user: &str, body: Value) -> (StatusCode, Value) {
        self.send(user, reqwest::Method::POST, "", Some(body)).await
    }

    async fn list(&self, user: &str, query: &str) -> (StatusCode, Value) {
        self.send(user, reqwest::Method::GET, query, None).await
    }
}

#[tokio::test]
async fn an_owner_creates_lists_rotates_and_revokes_their_keys() {
    let app = App::start(10).await;
    let (status, created) = app.create("alice", json!({"name": "  laptop  ", "expires_in_days": 30})).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    let record = &created["record"];
    assert_eq!(record["name"], "laptop", "names are trimmed");
    assert_eq!(record["owner_id"], "alice");
    assert_eq!(record["scopes"], json!(["invoices:read", "invoices:write"]), "all allowed scopes by default");
    assert!(record["expires_at"].is_string());
    let masked = record["masked"].as_str().unwrap();
    assert!(masked.contains('…') && !masked.contains(&key[12..key.len() - 4]), "{masked}");
    for field in [
        "id",
        "app_id",
        "tier",
        "metadata",
        "created_at",
        "last_used_at",
        "revoked_at",
        "enabled",
        "remaining",
        "rate_limit",
        "rotated_from",
    ] {
        assert!(record.get(field).is_some(), "the KeyView of keypal serve has {field}");
    }
    // The key works on the API.
    let me = app.http.get(format!("{}/api/me", app.base)).bearer_auth(&key).send().await.unwrap();
    assert_eq!(me.text().await.unwrap(), "alice");

    let (_, second) = app.create("alice", json!({"name": "ci", "scopes": ["invoices:read"]})).await;
    assert_eq!(second["record"]["scopes"], json!(["invoices:read"]));
    let (status, list) = app.list("alice", "").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = list["keys"].as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["ci", "laptop"], "newest first");
    assert!(list["next_cursor"].is_null());
    assert!(!list.to_string().contains(&key), "the list never shows a key");

    let id = record["id"].as_str().unwrap();
    let (status, rotated) =
        app.send("alice", reqwest::Method::POST, &format!("/{id}/rotate"), Some(json!({"grace_seconds": 60}))).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    assert_eq!(rotated["record"]["rotated_from"], id);
    assert_eq!(rotated["record"]["name"], "laptop");
    let new_id = rotated["record"]["id"].as_str().unwrap();

    let (status, revoked) = app.send("alice", reqwest::Method::POST, &format!("/{new_id}/revoke"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(revoked["revoked_at"].is_string());
    let (status, again) = app.send("alice", reqwest::Method::POST, &format!("/{new_id}/revoke"), None).await;
    assert_eq!((status, again["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("ALREADY_REVOKED")));

    let (_, active) = app.list("alice", "").await;
    let (_, every) = app.list("alice", "?include_revoked=true").await;
    assert!(every["keys"].as_array().unwrap().len() > active["keys"].as_array().unwrap().len());
    assert!(every["keys"].as_array().unwrap().iter().any(|k| k["id"] == new_id));
}

#[tokio::test]
async fn another_owners_key_is_not_found() {
    let app = App::start(10).await;
    let (_, created) = app.create("alice", json!({"name": "laptop"})).await;
    let id = created["record"]["id"].as_str().unwrap();
    for action in ["revoke", "rotate"] {
        let (status, body) = app.send("bob", reqwest::Method::POST, &format!("/{id}/{action}"), None).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("NOT_FOUND")), "{action}");
    }
    let unknown = uuid::Uuid::now_v7();
    let (status, _) = app.send("bob", reqwest::Method::POST, &format!("/{unknown}/revoke"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "unknown and foreign keys alike");
    let (status, _) = app.send("bob", reqwest::Method::POST, "/not-a-uuid/revoke", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, bobs) = app.list("bob", "?include_revoked=true").await;
    assert_eq!(bobs["keys"], json!([]), "bob sees none of alice's keys");
    let (_, alices) = app.list("alice", "").await;
    assert!(alices["keys"][0]["revoked_at"].is_null(), "alice's key is untouched");
}

#[tokio::test]
async fn the_owner_limit_and_the_field_rules_hold() {
    let app = App::start(2).await;
    assert_eq!(app.create("alice", json!({"name": "one"})).await.0, StatusCode::CREATED);
    assert_eq!(app.create("alice", json!({"name": "two"})).await.0, StatusCode::CREATED);
    let (status, body) = app.create("alice", json!({"name": "three"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("KEY_LIMIT_REACHED")));
    assert_eq!(app.create("bob", json!({"name": "one"})).await.0, StatusCode::CREATED, "the limit is per owner");

    let bad = [
        (json!({"name": ""}), "name"),
        (json!({"name": "   "}), "name"),
        (json!({"name": "x".repeat(101)}), "name"),
        (json!({"name": "ok", "expires_in_days": 0}), "expires_in_days"),
        (json!({"name": "ok", "expires_in_days": 366}), "expires_in_days"),
        (json!({"name": "ok", "scopes": ["admin"]}), "scopes"),
    ];
    for (body, field) in bad {
        let (status, answer) = app.create("carol", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "INVALID_INPUT");
        assert_eq!(answer["error"]["field"], field, "{body}");
    }
    assert_eq!(app.create("carol", json!({"name": "x".repeat(100)})).await.0, StatusCode::CREATED, "100 is fine");
    let (status, body) = app.create("carol", json!({"name": "ok", "owner_id": "alice"})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_INPUT")),
        "unknown fields"
    );
    let (status, _) = app.list("carol", "?limit=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, created) = app.create("dave", json!({"name": "ok"})).await;
    let id = created["record"]["id"].as_str().unwrap();
    let (status, body) = app
        .send("dave", reqwest::Method::POST, &format!("/{id}/rotate"), Some(json!({"grace_seconds": 2_592_001})))
        .await;
    assert_eq!((status, body["error"]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("grace_seconds")));
}

#[tokio::test]
async fn requests_nobody_signed_in_to_or_from_another_site_are_refused() {
    let app = App::start(10).await;
    let url = format!("{}/account/keys", app.base);
    let anonymous = app.http.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED, "the host's own refusal");

    let cross = app
        .http
        .post(&url)
        .header("x-user", "alice")
        .header("origin", "https://evil.example")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    let (status, _, body) = answer(cross).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("CROSS_SITE")));
    let (_, list) = app.list("alice", "").await;
    assert_eq!(list["keys"], json!([]), "nothing was created");

    let same = app
        .http
        .post(&url)
        .header("x-user", "alice")
        .header("origin", app.base.clone())
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(same.status(), StatusCode::CREATED);

    let form =
        app.http.post(&url).header("x-user", "alice").header("content-type", "text/plain").body(r#"{"name":"x"}"#);
    assert_eq!(form.send().await.unwrap().status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
}
