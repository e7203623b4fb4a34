//! No key, client secret, service key, password, session or management token ever
//! reaches the logs, even at the most verbose level with request headers in every span.

// Test helpers assert by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{Db, TestServer, json_of};
use reqwest::Method;
use serde_json::json;

/// Everything logged, in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn secrets_never_reach_the_logs_even_at_trace_level() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let mut server = TestServer::start(Db::Sqlite).await;
    server.login().await;
    let (app, secret) = server.create_app(json!({"name": "Logged", "label": "logged"})).await;
    let (key, record) = server.create_key(app["id"].as_str().unwrap(), json!({"owner_id": "u1"})).await;
    server.verify(&key, &secret, json!({})).await;
    let (_, body) =
        json_of(server.anon(Method::GET, "/v1/owners/u1/keys").bearer_auth(&secret).send().await.unwrap()).await;
    assert_eq!(body["keys"][0]["id"], record["id"]);
    let wrong_password = "hunter2-not-the-password";
    server.anon(Method::POST, "/v1/session").json(&json!({"password": wrong_password})).send().await.unwrap();
    let request = server.admin(Method::POST, "/v1/tokens").json(&json!({"name": "ci"}));
    let (_, created) = json_of(request.send().await.unwrap()).await;
    let token = created["token"].as_str().unwrap().to_owned();
    let (_, apps) = json_of(server.anon(Method::GET, "/v1/apps").bearer_auth(&token).send().await.unwrap()).await;
    assert_eq!(apps["apps"][0]["id"], app["id"], "the token works");
    let cookie = server.cookie.clone().unwrap();
    let session_token = cookie.split_once('=').unwrap().1.to_owned();
    let (service_key, admin_password) = (server.service_key.clone(), server.admin_password.clone());
    server.stop().await;

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("/v1/verify") && logs.contains("authorization"), "request spans with headers are logged");
    assert!(logs.contains("Sensitive"), "credential headers show as Sensitive");
    for (what, secret) in [
        ("key", key.as_str()),
        ("client secret", secret.as_str()),
        ("service key", service_key.as_str()),
        ("admin password", admin_password.as_str()),
        ("wrong password", wrong_password),
        ("session token", session_token.as_str()),
        ("management token", token.as_str()),
    ] {
        assert!(!logs.contains(secret), "the {what} appears in the logs");
    }
}
