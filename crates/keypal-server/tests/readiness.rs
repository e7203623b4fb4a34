//! `GET /readyz`: 200 while the database and (when configured) Redis answer; 503 naming
//! what failed when one does not, within its bound even when the dependency hangs (a
//! paused proxy); `/healthz` stays 200 throughout. The OpenAPI document lists both answers.

// Test helpers assert by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Db, TestServer, json_of};
use keypal_server::ServeConfig;
use keypal_testing::{Proxy, RedisServer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Longer than any check may take (1 s each, run together): past it, readiness hangs.
const NO_HANG: Duration = Duration::from_secs(10);

/// `GET /readyz`: the status and JSON body, failing the test if it does not answer.
async fn readyz(server: &TestServer) -> (StatusCode, Value) {
    let request = server.anon(Method::GET, "/readyz").timeout(NO_HANG).send();
    let response = request.await.unwrap_or_else(|e| panic!("/readyz did not answer: {e}"));
    assert_eq!(response.headers()["cache-control"], "no-store");
    json_of(response).await
}

async fn healthz(server: &TestServer) -> StatusCode {
    server.anon(Method::GET, "/healthz").timeout(NO_HANG).send().await.unwrap().status()
}

/// The check statuses by name, e.g. `{"database": "ok"}`.
fn statuses(body: &Value) -> Value {
    let checks = body["checks"].as_object().unwrap_or_else(|| panic!("no checks: {body}"));
    checks.iter().map(|(name, check)| (name.clone(), check["status"].clone())).collect()
}

/// Asks until `/readyz` says `status`, for a dependency that comes back.
async fn until(server: &TestServer, status: StatusCode) -> Value {
    for _ in 0..100 {
        let (now, body) = readyz(server).await;
        if now == status {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("/readyz never answered {status}");
}

/// A config on PostgreSQL reached through `proxy`, once PostgreSQL is available.
fn through(proxy: &Proxy) -> ServeConfig {
    let mut config = common::config(Db::Postgres);
    config.database_url = proxy.url().to_owned();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_on_sqlite_without_redis_checks_the_database_only() {
    let server = TestServer::start(Db::Sqlite).await;
    let (status, body) = readyz(&server).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ready"], true);
    assert_eq!(body["failed"], json!([]));
    assert_eq!(statuses(&body), json!({"database": "ok"}), "no Redis configured, none checked");
    assert!(body["checks"]["database"]["duration_ms"].is_u64(), "{body}");
    assert_eq!(healthz(&server).await, StatusCode::OK);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_on_postgres_with_redis_checks_both() {
    let Some(redis) = RedisServer::shared() else { return };
    if !common::available(Db::Postgres) {
        return;
    }
    let mut config = common::config(Db::Postgres);
    config.redis_url = Some(redis.url().to_owned());
    config.redis_prefix = RedisServer::fresh_prefix();
    let server = TestServer::start_with(config).await;
    let (status, body) = readyz(&server).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((&body["ready"], &body["failed"]), (&json!(true), &json!([])));
    assert_eq!(statuses(&body), json!({"database": "ok", "redis": "ok"}));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_hangs_is_named_within_the_bound_and_liveness_stays_up() {
    if !common::available(Db::Postgres) {
        return;
    }
    let proxy = Proxy::start(common::postgres_url()).unwrap();
    let server = TestServer::start_with(through(&proxy)).await;
    assert_eq!(readyz(&server).await.0, StatusCode::OK);

    proxy.pause();
    let (status, body) = readyz(&server).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["ready"], false);
    assert_eq!(body["failed"], json!(["database"]));
    assert_eq!(statuses(&body), json!({"database": "timeout"}));
    assert_eq!(healthz(&server).await, StatusCode::OK, "liveness does not touch the database");

    proxy.resume();
    let body = until(&server, StatusCode::OK).await;
    assert_eq!(statuses(&body), json!({"database": "ok"}));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_hangs_is_named_and_the_database_still_answers() {
    let Some(redis) = RedisServer::shared() else { return };
    let proxy = Proxy::start(redis.url()).unwrap();
    let mut config = common::config(Db::Sqlite);
    config.redis_url = Some(proxy.url().to_owned());
    config.redis_prefix = RedisServer::fresh_prefix();
    let server = TestServer::start_with(config).await;
    assert_eq!(readyz(&server).await.0, StatusCode::OK);

    proxy.pause();
    let (status, body) = readyz(&server).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["failed"], json!(["redis"]));
    assert_eq!(statuses(&body), json!({"database": "ok", "redis": "timeout"}));
    assert_eq!(healthz(&server).await, StatusCode::OK);

    proxy.resume();
    until(&server, StatusCode::OK).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_redis_is_an_error_and_both_failures_are_named() {
    let Some(mut redis) = RedisServer::start() else { return };
    if !common::available(Db::Postgres) {
        return;
    }
    let proxy = Proxy::start(common::postgres_url()).unwrap();
    let mut config = through(&proxy);
    config.redis_url = Some(redis.url().to_owned());
    config.redis_prefix = RedisServer::fresh_prefix();
    let server = TestServer::start_with(config).await;
    assert_eq!(readyz(&server).await.0, StatusCode::OK);

    redis.stop();
    let (status, body) = readyz(&server).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["failed"], json!(["redis"]));
    assert_eq!(statuses(&body), json!({"database": "ok", "redis": "error"}), "refused, not hung");

    proxy.pause();
    let (status, body) = readyz(&server).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["failed"], json!(["database", "redis"]));
    assert_eq!(body["checks"]["database"]["status"], "timeout");

    proxy.resume();
    redis.restart();
    until(&server, StatusCode::OK).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_readyz_with_both_answers() {
    let server = TestServer::start(Db::Sqlite).await;
    let (status, document) = json_of(server.anon(Method::GET, "/openapi.json").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let responses = &document["paths"]["/readyz"]["get"]["responses"];
    for code in ["200", "503"] {
        let schema = &responses[code]["content"]["application/json"]["schema"]["$ref"];
        assert_eq!(schema, "#/components/schemas/Readiness", "{code}: {responses}");
    }
    let readiness = &document["components"]["schemas"]["Readiness"]["properties"];
    for field in ["ready", "failed", "checks"] {
        assert!(readiness.get(field).is_some(), "Readiness.{field}: {readiness}");
    }
    server.stop().await;
}
