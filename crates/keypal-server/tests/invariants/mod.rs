//! What must hold whatever JSON a client sends to `POST /v1/verify` and to key creation
//! (`POST /v1/apps/{id}/keys` as admin, `POST /v1/owners/{owner_id}/keys` with a client
//! secret), sent through the real router in-process, over an in-memory SQLite database.
//!
//! One definition, used twice: the property tests (`tests/properties.rs`, under
//! `cargo test`) and the fuzz targets (`fuzz/`, which include this file by path; see
//! docs/FUZZING.md). Each check panics when an invariant fails.
#![allow(dead_code, clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use keypal_server::{ServeConfig, Server};
use serde_json::{Value, json};
use tower::ServiceExt;

/// The service key callers of `/v1/verify` present.
const SERVICE_KEY: &str = "kp_svc_fuzzing-service-key-0123456789";
/// The owner of the keys made through `/v1/owners/{owner_id}/keys`.
pub const OWNER: &str = "owner-1";

/// Every code a verification answers.
const CODES: [&str; 9] = [
    "VALID",
    "MALFORMED",
    "NOT_FOUND",
    "REVOKED",
    "DISABLED",
    "EXPIRED",
    "INSUFFICIENT_SCOPE",
    "RATE_LIMITED",
    "USAGE_EXCEEDED",
];

/// An application of the fixture.
pub struct FixtureApp {
    /// Its id.
    pub id: String,
    /// Its client secret.
    pub client_secret: String,
    /// Keys it issued: the first has no scopes, credits or rate limit (always valid).
    pub keys: Vec<String>,
}

/// A server with three applications, one per format kind, and a few keys each.
pub struct Fixture {
    /// Every route, to send requests to with `oneshot`.
    pub router: Router,
    /// The admin session cookie.
    cookie: String,
    /// The applications: `{id}` with tiers and a checksum, no `{id}` (the default
    /// template), and a bare legacy format with a current `{id}` one.
    pub apps: Vec<FixtureApp>,
    _server: Server,
}

/// A response: its status and JSON body (`Null` when empty).
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The body.
    pub body: Value,
}

impl Fixture {
    /// Starts the server on a new in-memory database and creates the applications.
    pub async fn new() -> Fixture {
        let mut config = ServeConfig::default();
        config.listen = ([127, 0, 0, 1], 0).into();
        config.database_url = "sqlite::memory:".into();
        config.master_key = Some("5a".repeat(32));
        config.admin_password = Some("fuzzing admin password".into());
        config.service_key = Some(SERVICE_KEY.into());
        let server = Server::bind(&config).await.unwrap_or_else(|e| panic!("the server did not start: {e}"));
        let router = server.router();
        let mut fixture = Fixture { router, cookie: String::new(), apps: Vec::new(), _server: server };
        fixture.login().await;
        let with_id = json!({"name": "With id", "label": "with-id",
            "template": "kp_{tier}_{id:8:base32}_{secret:24:base62}{checksum}",
            "tiers": {"free": {}, "pro": {"segment": "p", "rate_limit": "5/second"}}, "default_tier": "free"});
        let without_id = json!({"name": "Without id", "label": "without-id", "recoverable": true,
            "default_metadata": {"plan": "free"}});
        let legacy = json!({"name": "Legacy", "label": "legacy", "template": "{secret:43:base64url}"});
        for body in [with_id, without_id, legacy] {
            let app = fixture.create_app(body).await;
            fixture.apps.push(app);
        }
        // The legacy application moves to a new format: its old keys keep verifying.
        let legacy = &fixture.apps[2].id;
        let patch = json!({"template": "lg_{id:12:hex}_{secret:32:base62}"});
        let answer = fixture.send(Method::PATCH, &format!("/v1/apps/{legacy}"), Auth::Admin, patch.to_string()).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        for i in 0..fixture.apps.len() {
            let id = fixture.apps[i].id.clone();
            let key = fixture.create_key(&id, json!({"owner_id": OWNER, "name": "more"})).await;
            fixture.apps[i].keys.push(key);
            let key = fixture.create_key(&id, json!({"scopes": ["read", "write:*"], "remaining": 1000})).await;
            fixture.apps[i].keys.push(key);
        }
        fixture
    }

    async fn login(&mut self) {
        let body = json!({"password": "fuzzing admin password"}).to_string();
        let response = self.request(Method::POST, "/v1/session", Auth::None, body).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "login");
        let cookie = response.headers().get(header::SET_COOKIE).and_then(|v| v.to_str().ok()).unwrap_or_default();
        self.cookie = cookie.split(';').next().unwrap_or_default().to_owned();
    }

    async fn create_app(&self, body: Value) -> FixtureApp {
        let answer = self.send(Method::POST, "/v1/apps", Auth::Admin, body.to_string()).await;
        assert_eq!(answer.status, StatusCode::CREATED, "create app: {}", answer.body);
        let id = answer.body["app"]["id"].as_str().unwrap_or_default().to_owned();
        let client_secret = answer.body["client_secret"].as_str().unwrap_or_default().to_owned();
        let mut app = FixtureApp { id, client_secret, keys: Vec::new() };
        app.keys.push(self.create_key(&app.id, json!({})).await);
        app
    }

    async fn create_key(&self, app: &str, body: Value) -> String {
        let answer = self.send(Method::POST, &format!("/v1/apps/{app}/keys"), Auth::Admin, body.to_string()).await;
        assert_eq!(answer.status, StatusCode::CREATED, "create key: {}", answer.body);
        answer.body["key"].as_str().unwrap_or_default().to_owned()
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        body: impl Into<Body>,
    ) -> axum::response::Response {
        let mut request = Request::builder().method(method).uri(path).header(header::CONTENT_TYPE, "application/json");
        request = match auth {
            Auth::None => request,
            Auth::Admin => request.header(header::COOKIE, &self.cookie),
            Auth::Bearer(token) => request.header(header::AUTHORIZATION, format!("Bearer {token}")),
        };
        let request = request.body(body.into()).unwrap_or_else(|e| panic!("request to {path}: {e}"));
        match self.router.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }

    /// Sends a request and reads its answer, which is JSON (or empty) whatever was sent.
    pub async fn send(&self, method: Method, path: &str, auth: Auth<'_>, body: impl Into<Body>) -> Answer {
        let response = self.request(method, path, auth, body).await;
        let status = response.status();
        let bytes = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{path} answered {status} with a body that is not JSON ({e}): {bytes:?}"))
        };
        Answer { status, body }
    }

    /// The body with its placeholders replaced: `@secretN@` by application N's client
    /// secret, `@keyN@` by the N-th fixture key (applications in order, three keys
    /// each). So a fuzzer's mutations of a seed reach real applications and keys.
    pub fn fill(&self, body: &[u8]) -> Vec<u8> {
        let mut filled = body.to_vec();
        let keys = self.apps.iter().flat_map(|app| &app.keys);
        let placeholders = self
            .apps
            .iter()
            .enumerate()
            .map(|(i, app)| (format!("@secret{i}@"), app.client_secret.as_str()))
            .chain(keys.enumerate().map(|(i, key)| (format!("@key{i}@"), key.as_str())));
        for (placeholder, value) in placeholders {
            filled = replace(&filled, placeholder.as_bytes(), value.as_bytes());
        }
        filled
    }

    /// The application whose client secret is `secret`, if any.
    fn app_of_secret(&self, secret: &str) -> Option<&FixtureApp> {
        self.apps.iter().find(|app| app.client_secret == secret)
    }
}

/// How a request authenticates.
#[derive(Debug, Clone, Copy)]
pub enum Auth<'a> {
    /// Not at all.
    None,
    /// With the admin session.
    Admin,
    /// `Authorization: Bearer <token>`.
    Bearer(&'a str),
}

fn replace(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while !rest.is_empty() {
        if rest.starts_with(needle) {
            out.extend_from_slice(with);
            rest = &rest[needle.len()..];
        } else {
            out.push(rest[0]);
            rest = &rest[1..];
        }
    }
    out
}

/// An error answer has the error shape with one of the codes its status allows.
fn assert_error(answer: &Answer, allowed: &[(StatusCode, &str)], what: &str) {
    let code =
        answer.body["error"]["code"].as_str().unwrap_or_else(|| panic!("{what}: no error code in {}", answer.body));
    assert!(answer.body["error"]["message"].is_string(), "{what}: no message in {}", answer.body);
    assert!(
        allowed.iter().any(|(status, allowed)| *status == answer.status && *allowed == code),
        "{what}: {} {code} is not an answer this request may get: {}",
        answer.status,
        answer.body
    );
}

/// `POST /v1/verify` with `body` (placeholders filled): a 200 verdict with a known code
/// for the application whose client secret was sent, or a 400/403 error; never a 5xx.
/// A fixture key sent plainly to its own application is `VALID`; to another, `NOT_FOUND`.
pub async fn verify_body(fixture: &Fixture, body: &[u8]) {
    let body = fixture.fill(body);
    let answer = fixture.send(Method::POST, "/v1/verify", Auth::Bearer(SERVICE_KEY), body.clone()).await;
    let request: Option<Value> = serde_json::from_slice(&body).ok();
    let what = format!("verify {}", String::from_utf8_lossy(&body));
    if answer.status != StatusCode::OK {
        let allowed = [
            (StatusCode::BAD_REQUEST, "INVALID_JSON"),
            (StatusCode::BAD_REQUEST, "INVALID_INPUT"),
            (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
            (StatusCode::FORBIDDEN, "INVALID_CLIENT_SECRET"),
        ];
        assert_error(&answer, &allowed, &what);
        return;
    }
    let verdict = &answer.body;
    let code = verdict["code"].as_str().unwrap_or_else(|| panic!("{what}: no code in {verdict}"));
    assert!(CODES.contains(&code), "{what}: unknown code {code}");
    assert_eq!(verdict["valid"].as_bool(), Some(code == "VALID"), "{what}: {verdict}");
    assert_eq!(verdict["message"].is_string(), code != "VALID", "{what}: {verdict}");
    if code == "VALID" {
        assert!(verdict["key"]["id"].is_string(), "{what}: a valid key is described: {verdict}");
    }
    // The request was a JSON object naming an application: the verdict is for that one.
    let request = request.unwrap_or_else(|| panic!("{what}: answered 200 to a body that is not JSON"));
    let secret = request["client_secret"].as_str().unwrap_or_default();
    let app = fixture.app_of_secret(secret).unwrap_or_else(|| panic!("{what}: 200 for an unknown client secret"));
    assert_eq!(verdict["app"]["id"].as_str(), Some(app.id.as_str()), "{what}: {verdict}");
    let plain = request.as_object().is_some_and(|o| o.len() == 2);
    let key = request["key"].as_str().unwrap_or_default();
    if plain && app.keys.first().is_some_and(|first| first == key) {
        assert_eq!(code, "VALID", "{what}: the application's plain key: {verdict}");
    }
    let others = fixture.apps.iter().filter(|other| other.id != app.id);
    if plain && others.flat_map(|other| &other.keys).any(|other| other == key) {
        assert_eq!(code, "NOT_FOUND", "{what}: another application's key: {verdict}");
    }
}

/// A key creation with `body` (placeholders filled), as admin (`selector` even) or for
/// an owner with the client secret (odd), in the application `selector / 2` picks:
/// 201 with a key that verifies and a record that says what was asked, or a 400 naming
/// the problem (403 at the owner's limit); never a 5xx. A created key is deleted after.
pub async fn create_key_body(fixture: &Fixture, selector: u8, body: &[u8]) {
    let app = &fixture.apps[usize::from(selector / 2) % fixture.apps.len()];
    let as_admin = selector.is_multiple_of(2);
    let body = fixture.fill(body);
    let (path, auth) = if as_admin {
        (format!("/v1/apps/{}/keys", app.id), Auth::Admin)
    } else {
        (format!("/v1/owners/{OWNER}/keys"), Auth::Bearer(&app.client_secret))
    };
    let answer = fixture.send(Method::POST, &path, auth, body.clone()).await;
    let what = format!("{path} {}", String::from_utf8_lossy(&body));
    if answer.status != StatusCode::CREATED {
        let allowed = [
            (StatusCode::BAD_REQUEST, "INVALID_JSON"),
            (StatusCode::BAD_REQUEST, "INVALID_INPUT"),
            (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
            (StatusCode::FORBIDDEN, "KEY_LIMIT_REACHED"),
        ];
        assert_error(&answer, &allowed, &what);
        return;
    }
    let request: Value =
        serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{what}: 201 for a body that is not JSON: {e}"));
    let record = &answer.body["record"];
    let key = answer.body["key"].as_str().unwrap_or_else(|| panic!("{what}: no key in {}", answer.body));
    let id = record["id"].as_str().unwrap_or_else(|| panic!("{what}: no id in {record}"));
    assert_eq!(record["app_id"].as_str(), Some(app.id.as_str()), "{what}: {record}");
    let owner = if as_admin { request.get("owner_id").cloned().unwrap_or(Value::Null) } else { json!(OWNER) };
    assert_eq!(record["owner_id"], owner, "{what}: {record}");
    let name = request["name"].as_str().map(|name| json!(name.trim())).unwrap_or(Value::Null);
    assert_eq!(record["name"], name, "{what}: {record}");
    if let Some(scopes) = request["scopes"].as_array() {
        let granted = record["scopes"].as_array().cloned().unwrap_or_default();
        assert!(
            scopes.iter().all(|s| granted.contains(s)) && granted.iter().all(|s| scopes.contains(s)),
            "{what}: {record}"
        );
    }
    if let Some(metadata) = request.get("metadata").filter(|m| !m.is_null()) {
        assert_eq!(&record["metadata"], metadata, "{what}: {record}");
    }
    if let Some(remaining) = request.get("remaining").filter(|r| !r.is_null()) {
        assert_eq!(&record["remaining"], remaining, "{what}: {record}");
    }

    let verify = json!({"key": key, "client_secret": app.client_secret}).to_string();
    let verdict = fixture.send(Method::POST, "/v1/verify", Auth::Bearer(SERVICE_KEY), verify).await;
    let code = verdict.body["code"].as_str().unwrap_or_default();
    // Unless it has no credits, or expires within moments.
    let spent = record["remaining"] == json!(0) && code == "USAGE_EXCEEDED";
    let expired = !record["expires_at"].is_null() && code == "EXPIRED";
    assert!(code == "VALID" || spent || expired, "{what}: the new key verifies {}", verdict.body);
    assert_eq!(verdict.body["key"]["id"].as_str(), Some(id), "{what}: {}", verdict.body);

    let deleted = fixture.send(Method::DELETE, &format!("/v1/keys/{id}"), Auth::Admin, Body::empty()).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{what}: delete {id}: {}", deleted.body);
}
