//! Webhooks end to end, on SQLite and PostgreSQL: real receivers on loopback get signed
//! deliveries of key and application events (checked with the Standard Webhooks
//! reference library), failures are retried and listed, an endpoint failing for days
//! is disabled, scanned events fire once, and two instances deliver each event once.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use common::{Db, TestServer, config, json_of, on_both};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

on_both!(
    events_arrive_signed_with_the_public_view_of_the_key,
    webhooks_are_managed_and_bad_input_is_refused,
    failed_deliveries_are_retried_and_listed,
    an_endpoint_failing_for_three_days_is_disabled,
    expiry_and_credit_events_fire_once_per_key,
    an_operator_lowering_credits_fires_the_credit_events_once,
);

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Received {
    headers: HashMap<String, String>,
    body: String,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

/// An HTTP endpoint on loopback that records what it is sent and answers the statuses
/// it is given in turn (then 200), each with 1000 bytes of body.
#[derive(Clone)]
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
    answers: Arc<Mutex<Vec<u16>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::serve(listener)
    }

    fn serve(listener: tokio::net::TcpListener) -> Receiver {
        let url = format!("http://{}/hook", listener.local_addr().expect("address"));
        let got = Arc::new(Mutex::new(Vec::new()));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let (g, a) = (got.clone(), answers.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let (g, a) = (g.clone(), a.clone());
                async move {
                    let headers = headers
                        .iter()
                        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
                        .collect();
                    g.lock().unwrap().push(Received { headers, body: String::from_utf8_lossy(&body).into_owned() });
                    let mut answers = a.lock().unwrap();
                    let status = if answers.is_empty() { 200 } else { answers.remove(0) };
                    (AxumStatus::from_u16(status).unwrap(), "x".repeat(1000))
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.expect("receiver") });
        Receiver { url, got, answers }
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    fn of_type(&self, kind: &str) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.json()["type"] == kind).collect()
    }

    /// Waits (up to `secs`) until `done` holds of what was received.
    async fn wait_for(&self, secs: u64, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        for _ in 0..secs * 10 {
            let got = self.received();
            if done(&got) {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let got = self.received();
        let types: Vec<Value> = got.iter().map(|r| r.json()["type"].clone()).collect();
        panic!("the receiver did not get what was expected in {secs}s; it got {types:?}");
    }
}

/// A server that may deliver to loopback, scanning every second.
async fn server(db: Db) -> TestServer {
    let mut config = config(db);
    config.webhooks_allow_private = true;
    config.webhook_scan_interval = keypal::config::HumanDuration(Duration::from_secs(1));
    let mut server = TestServer::start_with(config).await;
    server.login().await;
    server
}

async fn create_webhook(server: &TestServer, body: Value) -> (Value, String) {
    let response = server.admin(Method::POST, "/v1/webhooks").json(&body).send().await.unwrap();
    let (status, body) = json_of(response).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (body["webhook"].clone(), body["secret"].as_str().unwrap().to_owned())
}

/// The signature keypal computes, checked here with the crate's own function.
fn signed_by(secret: &str, received: &Received) -> bool {
    let key = keypal_server::webhook_signing::key_of(secret).expect("a whsec_ secret");
    let id = &received.headers["webhook-id"];
    let timestamp: i64 = received.headers["webhook-timestamp"].parse().expect("a Unix time");
    let expected = keypal_server::webhook_signing::signature(&key, id, timestamp, received.body.as_bytes());
    received.headers["webhook-signature"].split(' ').any(|s| s == expected)
}

/// The Python of a virtual environment with the `standardwebhooks` package
/// (`KEYPAL_STANDARDWEBHOOKS_PYTHON`, else target/webhooks-venv as .ci/run makes it).
fn reference_python() -> Option<std::path::PathBuf> {
    if let Ok(python) = std::env::var("KEYPAL_STANDARDWEBHOOKS_PYTHON") {
        return Some(python.into());
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let venv = root.join("target/webhooks-venv/bin/python");
    venv.exists().then_some(venv)
}

/// Verifies deliveries with the Standard Webhooks reference library (PyPI
/// `standardwebhooks`, through scripts/webhooks/verify.py). Without it, the check is
/// skipped with a line saying so, unless `CI=true`, where it fails.
fn verify_with_reference_library(secret: &str, deliveries: &[Received]) {
    let Some(python) = reference_python() else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("KEYPAL_STANDARDWEBHOOKS_PYTHON is not set and target/webhooks-venv is missing (see .ci/run)");
        }
        eprintln!("skipped: the standardwebhooks check (set KEYPAL_STANDARDWEBHOOKS_PYTHON to a Python that has it)");
        return;
    };
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/webhooks/verify.py");
    let items: Vec<Value> =
        deliveries.iter().map(|d| json!({"secret": secret, "headers": d.headers, "body": d.body})).collect();
    let mut child = std::process::Command::new(&python)
        .arg(&script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run the verifier");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(Value::Array(items).to_string().as_bytes()).expect("write");
    }
    let output = child.wait_with_output().expect("the verifier");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "the reference library refused a delivery: {text}");
    assert_eq!(text.lines().filter(|l| *l == "ok").count(), deliveries.len(), "{text}");
    // And a tampered body is refused by it (the check can fail).
    let mut tampered = deliveries[0].clone();
    tampered.body.push(' ');
    let item = json!([{"secret": secret, "headers": tampered.headers, "body": tampered.body}]);
    let mut child = std::process::Command::new(&python)
        .arg(&script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run the verifier");
    {
        use std::io::Write;
        child.stdin.take().expect("stdin").write_all(item.to_string().as_bytes()).expect("write");
    }
    assert!(!child.wait_with_output().expect("the verifier").status.success(), "a tampered body must not verify");
}

async fn events_arrive_signed_with_the_public_view_of_the_key(db: Db) {
    let server = server(db).await;
    let receiver = Receiver::start().await;
    let (app, client_secret) = server.create_app(json!({"name": "Billing", "label": "billing"})).await;
    let app_id = app["id"].as_str().unwrap();
    let events =
        json!(["key.created", "key.updated", "key.revoked", "key.rotated", "key.deleted", "app.client_secret_rotated"]);
    let (webhook, secret) = create_webhook(&server, json!({"url": receiver.url, "events": events})).await;
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(webhook["enabled"], true);

    let (key, record) = server.create_key(app_id, json!({"name": "ci", "owner_id": "u1"})).await;
    let id = record["id"].as_str().unwrap();
    let patched = server.admin(Method::PATCH, &format!("/v1/keys/{id}")).json(&json!({"name": "ci-2"})).send().await;
    assert_eq!(patched.unwrap().status(), StatusCode::OK);
    let rotated = server.admin(Method::POST, &format!("/v1/keys/{id}/rotate")).json(&json!({})).send().await.unwrap();
    let (status, rotated) = json_of(rotated).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new_id = rotated["record"]["id"].as_str().unwrap().to_owned();
    let revoked = server.admin(Method::POST, &format!("/v1/keys/{new_id}/revoke")).send().await.unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    let deleted = server.admin(Method::DELETE, &format!("/v1/keys/{new_id}")).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let regenerated = server.admin(Method::POST, &format!("/v1/apps/{app_id}/client-secret")).send().await.unwrap();
    assert_eq!(regenerated.status(), StatusCode::OK);

    let got = receiver.wait_for(20, |got| got.len() >= 6).await;
    // Deliveries are concurrent: each event once, in no promised order.
    let mut types: Vec<String> = got.iter().map(|r| r.json()["type"].as_str().unwrap().to_owned()).collect();
    types.sort();
    assert_eq!(
        types,
        ["app.client_secret_rotated", "key.created", "key.deleted", "key.revoked", "key.rotated", "key.updated"],
    );
    let by_type = |kind: &str| got.iter().find(|r| r.json()["type"] == kind).unwrap().json();
    for received in &got {
        assert!(signed_by(&secret, received), "signed: {received:?}");
        assert_eq!(received.headers["content-type"], "application/json");
        for secret_text in [key.as_str(), secret.as_str(), client_secret.as_str()] {
            assert!(!received.body.contains(secret_text), "no key or secret in a payload: {}", received.body);
        }
        assert!(!received.body.contains("\"hash\""), "no hash: {}", received.body);
        let body = received.json();
        assert!(body["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{body}");
        assert_eq!(body["data"]["app"], json!({"id": app_id, "name": "Billing"}), "{body}");
    }
    let created = by_type("key.created");
    assert_eq!(created["data"]["key"]["id"], id);
    assert_eq!(created["data"]["key"]["name"], "ci");
    assert_eq!(created["data"]["key"]["owner_id"], "u1");
    assert!(created["data"]["key"]["masked"].as_str().is_some_and(|m| m.contains('…')), "{created}");
    assert_eq!(by_type("key.updated")["data"]["key"]["name"], "ci-2");
    assert_eq!(by_type("key.rotated")["data"]["new_key_id"], new_id.as_str());
    assert!(by_type("key.revoked")["data"]["key"]["revoked_at"].is_string());
    assert_eq!(by_type("key.deleted")["data"]["key"]["id"], new_id.as_str(), "the deleted key as it was");
    assert!(by_type("app.client_secret_rotated")["data"].get("key").is_none());
    let ids: std::collections::HashSet<&String> = got.iter().map(|r| &r.headers["webhook-id"]).collect();
    assert_eq!(ids.len(), got.len(), "each event has its own webhook-id");
    verify_with_reference_library(&secret, &got);

    // The deliveries are listed, succeeded, with the answer's start (256 bytes at most).
    let webhook_id = webhook["id"].as_str().unwrap();
    let listed = server.admin(Method::GET, &format!("/v1/webhooks/{webhook_id}/deliveries")).send().await.unwrap();
    let (status, listed) = json_of(listed).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let deliveries = listed["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 6);
    for d in deliveries {
        assert_eq!(
            (d["status"].as_str(), d["attempts"].as_u64(), d["last_status"].as_u64()),
            (Some("succeeded"), Some(1), Some(200))
        );
        assert_eq!(d["last_response"].as_str().map(str::len), Some(256), "{d}");
    }

    // A webhook of another application gets nothing of this one's keys.
    let other = Receiver::start().await;
    let (other_app, _) = server.create_app(json!({"name": "Other", "label": "other"})).await;
    create_webhook(&server, json!({"url": other.url, "events": ["key.created"], "app_id": other_app["id"]})).await;
    server.create_key(app_id, json!({})).await;
    server.create_key(other_app["id"].as_str().unwrap(), json!({})).await;
    let got = other.wait_for(10, |got| !got.is_empty()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(other.received().len(), 1, "only its application's key: {got:?}");
    assert_eq!(other.received()[0].json()["data"]["app"]["id"], other_app["id"]);
    server.stop().await;
}

async fn webhooks_are_managed_and_bad_input_is_refused(db: Db) {
    let server = server(db).await;
    let receiver = Receiver::start().await;
    let (webhook, secret) =
        create_webhook(&server, json!({"url": receiver.url, "events": ["key.revoked"], "description": "ops"})).await;
    let id = webhook["id"].as_str().unwrap();
    let path = format!("/v1/webhooks/{id}");

    let listed = json_of(server.admin(Method::GET, "/v1/webhooks").send().await.unwrap()).await;
    assert_eq!(listed.0, StatusCode::OK);
    assert_eq!(listed.1["webhooks"].as_array().unwrap().len(), 1);
    assert!(!listed.1.to_string().contains("whsec_"), "never the secret again: {}", listed.1);
    let got = json_of(server.admin(Method::GET, &path).send().await.unwrap()).await;
    assert_eq!((got.0, got.1["description"].as_str()), (StatusCode::OK, Some("ops")));

    let patch = json!({"events": ["key.revoked", "key.created", "key.created"], "description": null});
    let patched = json_of(server.admin(Method::PATCH, &path).json(&patch).send().await.unwrap()).await;
    assert_eq!(patched.0, StatusCode::OK, "{}", patched.1);
    assert_eq!(patched.1["events"], json!(["key.revoked", "key.created"]));
    assert_eq!(patched.1["description"], Value::Null);

    // Bad input: 400 naming the field, nothing made.
    let bad = [
        (json!({"url": "ftp://example.com/x", "events": ["key.created"]}), "url"),
        (json!({"url": "not a url", "events": ["key.created"]}), "url"),
        (json!({"url": "https://user:pw@example.com/", "events": ["key.created"]}), "url"),
        (json!({"url": "https://example.com/", "events": []}), "events"),
        (json!({"url": "https://example.com/", "events": ["key.exploded"]}), "events"),
        (json!({"url": "https://example.com/", "events": ["key.created"], "app_id": uuid::Uuid::now_v7()}), "app_id"),
        (
            json!({"url": "https://example.com/", "events": ["key.created"], "description": "x".repeat(501)}),
            "description",
        ),
    ];
    for (body, field) in bad {
        let (status, answer) =
            json_of(server.admin(Method::POST, "/v1/webhooks").json(&body).send().await.unwrap()).await;
        assert_eq!(
            (status, answer["error"]["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some(field)),
            "{body}: {answer}"
        );
        assert_eq!(answer["error"]["code"], "INVALID_INPUT");
    }
    let unknown = json!({"url": "https://example.com/", "events": ["key.created"], "secret": "mine"});
    let (status, answer) =
        json_of(server.admin(Method::POST, "/v1/webhooks").json(&unknown).send().await.unwrap()).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_JSON")));
    let listed = json_of(server.admin(Method::GET, "/v1/webhooks").send().await.unwrap()).await;
    assert_eq!(listed.1["webhooks"].as_array().unwrap().len(), 1, "nothing made");
    // Without a session or token: 401.
    assert_eq!(server.anon(Method::GET, "/v1/webhooks").send().await.unwrap().status(), StatusCode::UNAUTHORIZED);

    // The test event, signed with the secret; after a rotation both secrets sign for a
    // day (the receiver moves to the new one at its pace), each verifying alone.
    let sent = json_of(server.admin(Method::POST, &format!("{path}/test")).send().await.unwrap()).await;
    assert_eq!(sent.0, StatusCode::ACCEPTED, "{}", sent.1);
    let got = receiver.wait_for(10, |got| got.len() == 1).await;
    assert_eq!(got[0].json()["type"], "webhook.test");
    assert!(signed_by(&secret, &got[0]));
    let rotated = json_of(server.admin(Method::POST, &format!("{path}/secret")).send().await.unwrap()).await;
    assert_eq!(rotated.0, StatusCode::OK);
    let new_secret = rotated.1["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    server.admin(Method::POST, &format!("{path}/test")).send().await.unwrap();
    let until = time::OffsetDateTime::parse(
        rotated.1["previous_secret_until"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let overlap = until - time::OffsetDateTime::now_utc();
    assert!(overlap > time::Duration::hours(23) && overlap <= time::Duration::hours(24), "{overlap}");
    let got = receiver.wait_for(10, |got| got.len() == 2).await;
    assert!(signed_by(&new_secret, &got[1]) && signed_by(&secret, &got[1]), "signed with both secrets");
    assert_eq!(got[1].headers["webhook-signature"].split(' ').count(), 2);
    assert!(!signed_by("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &got[1]), "and no other");
    verify_with_reference_library(&secret, &got[1..]);
    verify_with_reference_library(&new_secret, &got[1..]);
    // A second rotation: the first secret stops signing, the one before it signs beside the newest.
    let newest = json_of(server.admin(Method::POST, &format!("{path}/secret")).send().await.unwrap()).await;
    let newest = newest.1["secret"].as_str().unwrap().to_owned();
    server.admin(Method::POST, &format!("{path}/test")).send().await.unwrap();
    let got = receiver.wait_for(10, |got| got.len() == 3).await;
    assert!(signed_by(&newest, &got[2]) && signed_by(&new_secret, &got[2]) && !signed_by(&secret, &got[2]));

    // Deleted: 404 after, and for ids that name nothing.
    assert_eq!(server.admin(Method::DELETE, &path).send().await.unwrap().status(), StatusCode::NO_CONTENT);
    for (method, p) in
        [(Method::GET, path.clone()), (Method::DELETE, path.clone()), (Method::POST, format!("{path}/test"))]
    {
        let (status, answer) = json_of(server.admin(method, &p).send().await.unwrap()).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("NOT_FOUND")), "{p}");
    }
    let bad_id = json_of(server.admin(Method::GET, "/v1/webhooks/nope").send().await.unwrap()).await;
    assert_eq!(bad_id.0, StatusCode::BAD_REQUEST);
    server.stop().await;

    // Without --webhooks-allow-private, loopback and private addresses are refused.
    let mut strict = config(db);
    strict.admin_password = Some("correct horse battery staple".into());
    let mut server = TestServer::start_with(strict).await;
    server.login().await;
    for url in
        ["http://127.0.0.1:9/x", "http://10.0.0.1/x", "http://[::1]/x", "http://169.254.169.254/", "http://localhost/x"]
    {
        let body = json!({"url": url, "events": ["key.created"]});
        let (status, answer) =
            json_of(server.admin(Method::POST, "/v1/webhooks").json(&body).send().await.unwrap()).await;
        assert_eq!(
            (status, answer["error"]["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some("url")),
            "{url}: {answer}"
        );
    }
    server.stop().await;
}

/// The webhook's deliveries once the first has been attempted.
async fn wait_for_attempt(server: &TestServer, webhook_id: &str) -> Vec<Value> {
    for _ in 0..100 {
        let listed = server.admin(Method::GET, &format!("/v1/webhooks/{webhook_id}/deliveries")).send().await.unwrap();
        let (_, listed) = json_of(listed).await;
        let deliveries = listed["deliveries"].as_array().cloned().unwrap_or_default();
        if deliveries.first().is_some_and(|d| d["attempts"].as_u64() >= Some(1)) {
            return deliveries;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no attempt was made");
}

async fn failed_deliveries_are_retried_and_listed(db: Db) {
    let server = server(db).await;
    let receiver = Receiver::start().await;
    receiver.answers.lock().unwrap().extend([500, 503]);
    let (webhook, _) = create_webhook(&server, json!({"url": receiver.url, "events": ["key.created"]})).await;
    let id = webhook["id"].as_str().unwrap();
    let (app, _) = server.create_app(json!({"name": "A", "label": "a"})).await;
    server.create_key(app["id"].as_str().unwrap(), json!({})).await;
    let deliveries = wait_for_attempt(&server, id).await;
    let first = &deliveries[0];
    assert_eq!(
        (first["status"].as_str(), first["attempts"].as_u64(), first["last_status"].as_u64()),
        (Some("pending"), Some(1), Some(500))
    );
    assert!(first["next_attempt_at"].is_string(), "a retry is scheduled: {first}");
    // The second attempt comes after 5 seconds by itself: it fails again (503).
    let got = receiver.wait_for(15, |got| got.len() == 2).await;
    assert_eq!(got[0].headers["webhook-id"], got[1].headers["webhook-id"], "the same webhook-id on every attempt");
    assert_eq!(got[0].body, got[1].body, "the same body");
    // A retry asked for is made at once (the next answer is 200).
    let delivery_id = first["id"].as_str().unwrap();
    let retried =
        server.admin(Method::POST, &format!("/v1/webhooks/{id}/deliveries/{delivery_id}/retry")).send().await.unwrap();
    assert_eq!(retried.status(), StatusCode::ACCEPTED);
    receiver.wait_for(10, |got| got.len() == 3).await;
    for _ in 0..50 {
        let (_, listed) =
            json_of(server.admin(Method::GET, &format!("/v1/webhooks/{id}/deliveries")).send().await.unwrap()).await;
        if listed["deliveries"][0]["status"] == "succeeded" {
            assert_eq!(listed["deliveries"][0]["attempts"], 3);
            let missing = server
                .admin(Method::POST, &format!("/v1/webhooks/{id}/deliveries/{}/retry", uuid::Uuid::now_v7()))
                .send()
                .await
                .unwrap();
            assert_eq!(missing.status(), StatusCode::NOT_FOUND);
            server.stop().await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the retried delivery did not succeed");
}

/// Runs SQL on the server's database (to age a failure by days).
async fn execute(server: &TestServer, sql: &str) {
    let url = &server.config.database_url;
    if url.starts_with("sqlite") {
        let pool = keypal_sql::sqlx::SqlitePool::connect(url).await.expect("sqlite");
        keypal_sql::sqlx::raw_sql(keypal_sql::sqlx::AssertSqlSafe(sql.to_owned())).execute(&pool).await.expect(sql);
    } else {
        let schema = server.config.database_schema.clone().unwrap();
        let pool = keypal_sql::sqlx::PgPool::connect(url).await.expect("postgres");
        let sql = format!("SET search_path TO {schema}; {sql}");
        keypal_sql::sqlx::raw_sql(keypal_sql::sqlx::AssertSqlSafe(sql)).execute(&pool).await.expect("sql");
    }
}

async fn an_endpoint_failing_for_three_days_is_disabled(db: Db) {
    let server = server(db).await;
    let receiver = Receiver::start().await;
    receiver.answers.lock().unwrap().extend([500; 10]);
    let (webhook, _) = create_webhook(&server, json!({"url": receiver.url, "events": ["key.created"]})).await;
    let id = webhook["id"].as_str().unwrap();
    server.admin(Method::POST, &format!("/v1/webhooks/{id}/test")).send().await.unwrap();
    wait_for_attempt(&server, id).await;
    let got = json_of(server.admin(Method::GET, &format!("/v1/webhooks/{id}")).send().await.unwrap()).await.1;
    assert_eq!(got["enabled"], true, "one failure disables nothing");
    // Its first failure, four days ago (no success since): the next failure disables it.
    let four_days_ago = match db {
        Db::Sqlite => {
            ((time::OffsetDateTime::now_utc() - time::Duration::days(4)).unix_timestamp() * 1_000_000).to_string()
        }
        Db::Postgres => "now() - interval '4 days'".to_owned(),
    };
    execute(&server, &format!("UPDATE keypal_webhook_deliveries SET first_failed_at = {four_days_ago}")).await;
    server.admin(Method::POST, &format!("/v1/webhooks/{id}/test")).send().await.unwrap();
    for _ in 0..100 {
        let got = json_of(server.admin(Method::GET, &format!("/v1/webhooks/{id}")).send().await.unwrap()).await.1;
        if got["enabled"] == false {
            assert!(got["disabled_reason"].as_str().unwrap().contains("failed since"), "{got}");
            let (_, audit) =
                json_of(server.admin(Method::GET, "/v1/audit?action=webhook_updated").send().await.unwrap()).await;
            let event = &audit["events"][0];
            assert_eq!(event["actor"], "system", "{audit}");
            assert!(event["details"]["disabled"].is_string(), "{audit}");
            // Enabled again by PATCH.
            let patched = server
                .admin(Method::PATCH, &format!("/v1/webhooks/{id}"))
                .json(&json!({"enabled": true}))
                .send()
                .await
                .unwrap();
            let (_, patched) = json_of(patched).await;
            assert_eq!((patched["enabled"].as_bool(), &patched["disabled_reason"]), (Some(true), &Value::Null));
            server.stop().await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the webhook was not disabled");
}

async fn expiry_and_credit_events_fire_once_per_key(db: Db) {
    let server = server(db).await;
    let receiver = Receiver::start().await;
    let events = json!(["key.expiring", "key.credits_low", "key.credits_exhausted", "key.rate_limited"]);
    // `key.rate_limited` fires once per key and window of its limit (an hour here),
    // counted from the epoch: start well inside one so the test cannot span two.
    let into_hour = time::OffsetDateTime::now_utc().unix_timestamp().rem_euclid(3600);
    if into_hour > 3600 - 90 {
        tokio::time::sleep(Duration::from_secs((3601 - into_hour).unsigned_abs())).await;
    }
    create_webhook(&server, json!({"url": receiver.url, "events": events})).await;
    let (app, client_secret) = server
        .create_app(
            json!({"name": "A", "label": "a", "credits_low_threshold": 3, "tiers": {"free": {"rate_limit": "2/hour"}}}),
        )
        .await;
    let app_id = app["id"].as_str().unwrap();
    assert_eq!(app["credits_low_threshold"], 3);
    let soon = (time::OffsetDateTime::now_utc() + time::Duration::hours(2))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (_, expiring) = server.create_key(app_id, json!({"expires_at": soon})).await;
    let (credits_key, credits) = server.create_key(app_id, json!({"remaining": 4})).await;
    let (limited_key, limited) = server.create_key(app_id, json!({"tier": "free"})).await;
    for _ in 0..5 {
        server.verify(&credits_key, &client_secret, json!({})).await;
    }
    for _ in 0..5 {
        server.verify(&limited_key, &client_secret, json!({})).await;
    }
    let got = receiver
        .wait_for(20, |got| {
            let kinds: Vec<Value> = got.iter().map(|r| r.json()["type"].clone()).collect();
            ["key.expiring", "key.credits_low", "key.credits_exhausted", "key.rate_limited"]
                .iter()
                .all(|k| kinds.contains(&json!(k)))
        })
        .await;
    // Let more scans and verifications pass: nothing fires twice.
    for _ in 0..3 {
        server.verify(&limited_key, &client_secret, json!({})).await;
        server.verify(&credits_key, &client_secret, json!({})).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got_now = receiver.received();
    assert_eq!(
        got_now.len(),
        4,
        "each fired once: {:?}",
        got_now.iter().map(|r| r.json()["type"].clone()).collect::<Vec<_>>()
    );
    let of = |kind: &str| got.iter().find(|r| r.json()["type"] == kind).unwrap().json();
    let expiring_event = of("key.expiring");
    assert_eq!(expiring_event["data"]["key"]["id"], expiring["id"]);
    assert_eq!(expiring_event["data"]["threshold"], "1d", "the smallest warning it is within");
    assert_eq!(of("key.credits_low")["data"]["key"]["id"], credits["id"]);
    assert_eq!(of("key.credits_low")["data"]["threshold"], "3");
    assert_eq!(of("key.credits_exhausted")["data"]["key"]["id"], credits["id"]);
    assert_eq!(of("key.rate_limited")["data"]["key"]["id"], limited["id"]);
    assert_eq!(receiver.of_type("key.rate_limited").len(), 1);
    server.stop().await;
}

/// Credits set or decremented by an operator (`POST /v1/keys/{id}/credits`, `PATCH`)
/// fire `key.credits_low` and `key.credits_exhausted` as verifications finding them
/// would, once each; an increment above the threshold fires nothing.
async fn an_operator_lowering_credits_fires_the_credit_events_once(db: Db) {
    let server = server(db).await;
    let receiver = Receiver::start().await;
    create_webhook(&server, json!({"url": receiver.url, "events": ["key.credits_low", "key.credits_exhausted"]})).await;
    let (app, _) = server.create_app(json!({"name": "A", "label": "a", "credits_low_threshold": 5})).await;
    let (_, key) = server.create_key(app["id"].as_str().unwrap(), json!({"remaining": 20})).await;
    let id = key["id"].as_str().unwrap();
    let credits = |body: Value| {
        let server = &server;
        async move {
            let response =
                server.admin(Method::POST, &format!("/v1/keys/{id}/credits")).json(&body).send().await.unwrap();
            let (status, key) = json_of(response).await;
            assert_eq!(status, StatusCode::OK, "{key}");
            key["remaining"].clone()
        }
    };
    assert_eq!(credits(json!({"op": "increment", "amount": 5})).await, 25);
    assert_eq!(credits(json!({"op": "decrement", "amount": 22})).await, 3);
    assert_eq!(credits(json!({"op": "decrement", "amount": 1})).await, 2, "low once, not at every change");
    let patched =
        server.admin(Method::PATCH, &format!("/v1/keys/{id}")).json(&json!({"remaining": 0})).send().await.unwrap();
    assert_eq!(json_of(patched).await.1["remaining"], 0);
    let got = receiver.wait_for(20, |got| got.len() >= 2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kinds: Vec<Value> = receiver.received().iter().map(|r| r.json()["type"].clone()).collect();
    assert_eq!(kinds.len(), 2, "each once: {kinds:?}");
    let of = |kind: &str| got.iter().find(|r| r.json()["type"] == kind).unwrap().json();
    assert_eq!(of("key.credits_low")["data"]["key"]["id"], key["id"]);
    assert_eq!(of("key.credits_low")["data"]["threshold"], "5");
    assert_eq!(of("key.credits_low")["data"]["key"]["remaining"], 3);
    assert_eq!(of("key.credits_exhausted")["data"]["key"]["remaining"], 0);
    server.stop().await;
}

/// Several instances share a PostgreSQL (docs/DEPLOYMENT.md): each event is delivered
/// by one of them, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_postgres_deliver_each_event_once() {
    if !common::available(Db::Postgres) {
        return;
    }
    let a = server(Db::Postgres).await;
    let mut b_config = a.config.clone();
    b_config.admin_password = Some(a.admin_password.clone());
    let mut b = TestServer::join(b_config, &a.service_key).await;
    b.login().await;
    let receiver = Receiver::start().await;
    create_webhook(&a, json!({"url": receiver.url, "events": ["key.created", "key.revoked"]})).await;
    let (app, _) = a.create_app(json!({"name": "A", "label": "a"})).await;
    let app_id = app["id"].as_str().unwrap().to_owned();
    // B learns of the application through the database.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n = 30;
    for i in 0..n {
        let server = if i % 2 == 0 { &a } else { &b };
        let response =
            server.admin(Method::POST, &format!("/v1/apps/{app_id}/keys")).json(&json!({})).send().await.unwrap();
        let (status, created) = json_of(response).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let id = created["record"]["id"].as_str().unwrap();
        let other = if i % 2 == 0 { &b } else { &a };
        let revoked = other.admin(Method::POST, &format!("/v1/keys/{id}/revoke")).send().await.unwrap();
        assert_eq!(revoked.status(), StatusCode::OK);
    }
    let got = receiver.wait_for(30, |got| got.len() >= 2 * n).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got_now = receiver.received();
    assert_eq!(got_now.len(), 2 * n, "no event twice: {} deliveries for {} events", got_now.len(), 2 * n);
    let ids: std::collections::HashSet<&String> = got.iter().map(|r| &r.headers["webhook-id"]).collect();
    assert_eq!(ids.len(), 2 * n, "each event once");
    b.stop().await;
    a.stop().await;
}
