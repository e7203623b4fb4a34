//! Slow hashes run on the hashing threads: when every thread stays busy, a request
//! that needs one is refused with 503 `HASHING_BUSY` and `Retry-After: 1`, and the
//! rest of the service keeps answering.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Db, TestServer, json_of};
use keypal::config::HumanDuration;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_hashing_pool_answers_503_hashing_busy_with_retry_after() {
    let mut config = common::config(Db::Sqlite);
    config.hash_workers = std::num::NonZeroUsize::new(1);
    config.hash_wait = HumanDuration(Duration::ZERO);
    let mut server = TestServer::start_with(config).await;
    server.login().await;
    let (app, secret) =
        server.create_app(json!({"name": "Slow", "label": "slow", "hash": "bcrypt", "bcrypt_cost": 10})).await;
    let (key, _) = server.create_key(app["id"].as_str().unwrap(), json!({})).await;
    let (fast_app, fast_secret) = server.create_app(json!({"name": "Fast", "label": "fast"})).await;
    let (fast_key, _) = server.create_key(fast_app["id"].as_str().unwrap(), json!({})).await;

    // Eight unknown keys at once, each costing a dummy bcrypt, on one hashing thread
    // that never waits: some get it, the others are refused.
    let last = if key.ends_with('A') { 'B' } else { 'A' };
    let unknown: Vec<String> = (0..8).map(|i| format!("{}{i}{last}", &key[..key.len() - 2])).collect();
    let answers = futures::future::join_all(unknown.iter().map(|k| {
        server
            .anon(Method::POST, "/v1/verify")
            .bearer_auth(&server.service_key)
            .json(&json!({"key": k, "client_secret": secret}))
            .send()
    }))
    .await;
    let (mut checked, mut refused) = (0, 0);
    for answer in answers {
        let answer = answer.unwrap();
        let retry_after = answer.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
        let (status, body) = json_of(answer).await;
        match status {
            StatusCode::OK => {
                assert_eq!(body["code"], "NOT_FOUND", "{body}");
                checked += 1;
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(body["error"]["code"], "HASHING_BUSY", "{body}");
                assert_eq!(retry_after.as_deref(), Some("1"));
                refused += 1;
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert!(checked >= 1 && refused >= 1, "{checked} checked, {refused} refused");

    // Fast hashes never wait for the hashing threads, and the slow ones work again.
    assert_eq!(server.verify(&fast_key, &fast_secret, json!({})).await["code"], "VALID");
    assert_eq!(server.verify(&key, &secret, json!({})).await["code"], "VALID");
    let metrics = server.anon(Method::GET, "/metrics").send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("keypal_hashing_workers 1\n"), "{metrics}");
    assert!(metrics.contains(&format!("keypal_hashing_busy_total {refused}\n")), "{metrics}");
    server.stop().await;
}
