//! Two `keypal serve` instances on one PostgreSQL (and one Redis): revocations reach the
//! other instance within a bound even when it had the key cached, rate limits are exact
//! across both, applications and secrets changed on one are seen by the other, and a
//! Redis restart in the middle of traffic loses no acknowledged key.

// Test helpers assert by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Db, TestServer, json_of};
use keypal_server::ServeConfig;
use keypal_testing::RedisServer;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// The URL of this test binary's Redis (see `keypal-testing`), or `None` when the test
/// is skipped.
fn redis_url() -> Option<String> {
    RedisServer::shared().map(|redis| redis.url().to_owned())
}

/// A config for a pair of instances on one fresh PostgreSQL schema, with Redis when given
/// (once the test has checked that PostgreSQL is available).
fn pair_config(redis: Option<String>) -> ServeConfig {
    let mut config = common::config(Db::Postgres);
    config.admin_password = Some("cluster-admin-password".to_owned());
    config.redis_prefix = format!("kpt:{}:", uuid::Uuid::new_v4().simple());
    config.redis_url = redis;
    // The tests count decisions, not their speed: a loaded machine must not turn a
    // decision into 503 RATE_LIMITER_UNAVAILABLE.
    config.rate_limit_timeout = keypal::config::HumanDuration(Duration::from_secs(10));
    config
}

async fn pair(config: &ServeConfig) -> (TestServer, TestServer) {
    // The service key is A's generated one: set by neither configuration, so it can be rotated.
    let mut a = TestServer::start_with(config.clone()).await;
    let mut b = TestServer::join(config.clone(), &a.service_key).await;
    a.login().await;
    b.login().await;
    (a, b)
}

/// Revokes on A a key B has cached as valid, and returns how long until B refuses it.
async fn revocation_reaches_b(a: &TestServer, b: &TestServer) -> Duration {
    let (app, secret) = a
        .create_app(json!({"name": "Shared", "label": format!("l{}", &uuid::Uuid::new_v4().simple().to_string()[..8])}))
        .await;
    let (key, record) = a.create_key(app["id"].as_str().unwrap(), json!({})).await;
    // B learns the application from the database on first use and caches the verified key.
    for _ in 0..3 {
        assert_eq!(b.verify(&key, &secret, json!({})).await["code"], "VALID");
    }
    let url = format!("/v1/keys/{}/revoke", record["id"].as_str().unwrap());
    let response = a.admin(Method::POST, &url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let revoked = Instant::now();
    assert_eq!(a.verify(&key, &secret, json!({})).await["code"], "REVOKED", "refused on A before the call returned");
    loop {
        if b.verify(&key, &secret, json!({})).await["code"] == "REVOKED" {
            return revoked.elapsed();
        }
        assert!(revoked.elapsed() < Duration::from_secs(2), "B still accepts a key revoked on A 2 s ago");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_one_instance_reaches_the_other_through_redis() {
    let Some(redis) = redis_url().filter(|_| common::available(Db::Postgres)) else { return };
    let (a, b) = pair(&pair_config(Some(redis))).await;
    let took = revocation_reaches_b(&a, &b).await;
    println!("revocation A → B through Redis pub/sub: {took:?}");
    assert!(took < Duration::from_millis(500), "took {took:?}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_one_instance_reaches_the_other_through_postgres_notify() {
    if !common::available(Db::Postgres) {
        return;
    }
    let (a, b) = pair(&pair_config(None)).await;
    let took = revocation_reaches_b(&a, &b).await;
    println!("revocation A → B through PostgreSQL LISTEN/NOTIFY: {took:?}");
    assert!(took < Duration::from_millis(500), "took {took:?}");
    a.stop().await;
    b.stop().await;
}

/// Without Redis or PostgreSQL to announce changes (two instances on one SQLite file),
/// `cache_ttl` bounds how long the other instance keeps answering from its cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_announcements_the_cache_ttl_bounds_how_stale_the_other_instance_is() {
    let mut config = common::config(Db::Sqlite);
    config.admin_password = Some("cluster-admin-password".to_owned());
    config.service_key = Some("kp_svc_clusterservicekey0123456789abcdef".to_owned());
    config.cache_ttl = keypal::config::HumanDuration(Duration::from_millis(300));
    let (a, b) = pair(&config).await;
    // Well under the default 10 s, well over 300 ms.
    assert!(revocation_reaches_b(&a, &b).await < Duration::from_secs(2));
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_and_secret_changes_on_one_instance_apply_on_the_other() {
    let Some(redis) = redis_url().filter(|_| common::available(Db::Postgres)) else { return };
    let (a, b) = pair(&pair_config(Some(redis))).await;
    let (app, old_secret) = a.create_app(json!({"name": "Moving", "label": "moving"})).await;
    let app_id = app["id"].as_str().unwrap();
    let (key, _) = a.create_key(app_id, json!({})).await;
    assert_eq!(b.verify(&key, &old_secret, json!({})).await["code"], "VALID");

    let (_, body) =
        json_of(a.admin(Method::POST, &format!("/v1/apps/{app_id}/client-secret")).send().await.unwrap()).await;
    let new_secret = body["client_secret"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let response = b
            .anon(Method::POST, "/v1/verify")
            .bearer_auth(&b.service_key)
            .json(&json!({"key": key, "client_secret": old_secret}))
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::FORBIDDEN {
            break;
        }
        assert!(Instant::now() < deadline, "B still takes the old client secret");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(b.verify(&key, &new_secret, json!({})).await["code"], "VALID");

    // The service key rotated on A stops working on B.
    let (_, rotated) = json_of(a.admin(Method::POST, "/v1/service-key/rotate").send().await.unwrap()).await;
    let new_service_key = rotated["service_key"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let response = b
            .anon(Method::POST, "/v1/verify")
            .bearer_auth(&b.service_key)
            .json(&json!({"key": key, "client_secret": new_secret}))
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(Instant::now() < deadline, "B still takes the old service key");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let response = b
        .anon(Method::POST, "/v1/verify")
        .bearer_auth(&new_service_key)
        .json(&json!({"key": key, "client_secret": new_secret}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rate_limit_is_exact_across_two_instances() {
    let Some(redis) = redis_url().filter(|_| common::available(Db::Postgres)) else { return };
    let (a, b) = pair(&pair_config(Some(redis))).await;
    let (app, secret) = a
        .create_app(json!({"name": "Limited", "label": "limited", "tiers": {"free": {"rate_limit": "100/hour"}}, "default_tier": "free"}))
        .await;
    let (key, _) = a.create_key(app["id"].as_str().unwrap(), json!({"tier": "free"})).await;
    let servers = Arc::new([a, b]);
    let tasks: Vec<_> = (0..160)
        .map(|i| {
            let servers = servers.clone();
            let (key, secret) = (key.clone(), secret.clone());
            tokio::spawn(async move {
                servers[i % 2].verify(&key, &secret, json!({})).await["code"].as_str().unwrap().to_owned()
            })
        })
        .collect();
    let mut valid = 0;
    let mut limited = 0;
    for task in tasks {
        match task.await.unwrap().as_str() {
            "VALID" => valid += 1,
            "RATE_LIMITED" => limited += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((valid, limited), (100, 60), "exactly the limit, whichever instance each request reached");
    let [a, b] = Arc::try_unwrap(servers).unwrap_or_else(|_| panic!("servers still shared"));
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_restart_in_the_middle_of_traffic_loses_no_acknowledged_key() {
    // A Redis server of this test's own, so restarting it disturbs no other test.
    let Some(mut redis) = RedisServer::start().filter(|_| common::available(Db::Postgres)) else { return };
    let (a, b) = pair(&pair_config(Some(redis.url().to_owned()))).await;
    let (app, secret) = a.create_app(json!({"name": "Busy", "label": "busy"})).await;
    let app_id = app["id"].as_str().unwrap().to_owned();
    let servers = Arc::new([a, b]);

    // Creates through both instances while Redis goes away and comes back.
    let writers: Vec<_> = (0..2)
        .map(|i| {
            let servers = servers.clone();
            let app_id = app_id.clone();
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                let started = Instant::now();
                while started.elapsed() < Duration::from_millis(1500) {
                    let response = servers[i]
                        .admin(Method::POST, &format!("/v1/apps/{app_id}/keys"))
                        .json(&json!({"owner_id": format!("writer-{i}")}))
                        .send()
                        .await
                        .unwrap();
                    let (status, body) = json_of(response).await;
                    if status == StatusCode::CREATED {
                        acknowledged.push(body["key"].as_str().unwrap().to_owned());
                    }
                }
                acknowledged
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    redis.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.restart();

    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await.unwrap());
    }
    assert!(acknowledged.len() > 10, "traffic flowed: {} creates", acknowledged.len());
    // After the restart, both instances see every acknowledged key.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, key) in acknowledged.iter().enumerate() {
        let code = servers[i % 2].verify(key, &secret, json!({})).await["code"].clone();
        assert_eq!(code, "VALID", "acknowledged key #{i} lost after the Redis restart");
    }
    let [a, b] = Arc::try_unwrap(servers).unwrap_or_else(|_| panic!("servers still shared"));
    a.stop().await;
    b.stop().await;
}
