//! Throughput of a trivial handler behind `ApiKeyLayer` against the same handler with no
//! layer, in one run, over loopback HTTP/1.1.
//!
//! Three servers in this process, each on `127.0.0.1:0`, each answering `GET /` with
//! `ok`:
//!
//! - **bare**: no layer;
//! - **layer**: `ApiKeyLayer` over a `KeyManager` on a `MemoryStore`;
//! - **remote**: `ApiKeyLayer` over a `RemoteVerifier` with its cache warm, calling a
//!   `keypal serve` (also in this process, on SQLite under `target/tmp`).
//!
//! A closed loop of `KEYPAL_BENCH_CONNECTIONS` keep-alive connections (hyper, no
//! pipelining) runs against each in turn, `KEYPAL_BENCH_ROUNDS` times for
//! `KEYPAL_BENCH_SECS` each (alternating, so other work on a busy machine weighs on all
//! alike), after an unmeasured warm-up. Every answer must be a 200. Prints requests per
//! second of each and the ratios the issue sets targets for (layer ≥ 85% of bare,
//! remote ≥ 80% of layer).
//!
//! ```sh
//! cargo bench -p keypal-axum
//! ```
//!
//! Settings (environment): `KEYPAL_BENCH_CONNECTIONS` (32), `KEYPAL_BENCH_SECS` (1),
//! `KEYPAL_BENCH_ROUNDS` (10), `KEYPAL_BENCH_WARMUP_SECS` (1), `KEYPAL_BENCH_THREADS`
//! (the runtime's worker threads; default one per core), `KEYPAL_BENCH_ONLY` (`bare`,
//! `layer`, `remote`, comma-separated: measure only those, for a profiler).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{AUTHORIZATION, HOST, HeaderValue};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use keypal::{KeyManager, MemoryStore, NewKey};
use keypal_axum::{ApiKeyLayer, RemoteVerifier};
use keypal_server::{ServeConfig, Server};
use tokio::net::{TcpListener, TcpStream};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn handler_app() -> Router {
    Router::new().route("/", get(|| async { "ok" }))
}

/// Starts `keypal serve` with one application and one key; returns (base URL, service
/// key, client secret, key).
async fn keypal_serve() -> (String, String, String, String) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("keypal-axum-bench")
        .join(uuid::Uuid::now_v7().simple().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    let mut config = ServeConfig::default();
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.key_file = dir.join("keypal.key");
    config.database_url = format!("sqlite://{}", dir.join("keypal.db").display());
    let server = Server::bind(&config).await.unwrap();
    let base = format!("http://{}", server.local_addr().unwrap());
    let password = server.generated().admin_password.clone().unwrap();
    let service_key = server.generated().service_key.clone().unwrap();
    tokio::spawn(async move { server.run(std::future::pending::<()>()).await.unwrap() });
    let http = reqwest::Client::new();
    let login =
        http.post(format!("{base}/v1/session")).json(&serde_json::json!({"password": password})).send().await.unwrap();
    let cookie = login.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let app: serde_json::Value = http
        .post(format!("{base}/v1/apps"))
        .header("cookie", &cookie)
        .json(&serde_json::json!({"name": "Bench", "label": "bench"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let app_id = app["app"]["id"].as_str().unwrap();
    let key: serde_json::Value = http
        .post(format!("{base}/v1/apps/{app_id}/keys"))
        .header("cookie", &cookie)
        .json(&serde_json::json!({"owner_id": "bench"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (base, service_key, app["client_secret"].as_str().unwrap().to_owned(), key["key"].as_str().unwrap().to_owned())
}

/// Runs `connections` closed-loop connections against `addr` until `until`; returns the
/// requests answered.
async fn load(addr: SocketAddr, key: Option<&str>, connections: usize, until: Instant) -> u64 {
    let done = Arc::new(AtomicU64::new(0));
    let authorization = key.map(|k| HeaderValue::from_str(&format!("Bearer {k}")).unwrap());
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let done = done.clone();
        let authorization = authorization.clone();
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await.unwrap();
            tokio::spawn(connection);
            let host = HeaderValue::from_str(&addr.to_string()).unwrap();
            while Instant::now() < until {
                let mut request = Request::get("/").header(HOST, host.clone());
                if let Some(authorization) = &authorization {
                    request = request.header(AUTHORIZATION, authorization.clone());
                }
                let response = sender.send_request(request.body(Empty::new()).unwrap()).await.unwrap();
                assert_eq!(response.status(), StatusCode::OK);
                response.into_body().collect().await.unwrap();
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    done.load(Ordering::Relaxed)
}

fn main() {
    let connections: usize = env_or("KEYPAL_BENCH_CONNECTIONS", 32);
    let secs: f64 = env_or("KEYPAL_BENCH_SECS", 1.0);
    let rounds: u32 = env_or("KEYPAL_BENCH_ROUNDS", 10);
    let warmup: f64 = env_or("KEYPAL_BENCH_WARMUP_SECS", 1.0);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = std::env::var("KEYPAL_BENCH_THREADS").ok().and_then(|t| t.parse().ok()) {
        runtime.worker_threads(threads);
    }
    let runtime = runtime.enable_all().build().unwrap();
    runtime.block_on(async move {
        let keys = KeyManager::builder().prefix("sk_bench").store(MemoryStore::new()).build().unwrap();
        let local_key = keys.create(NewKey::new().owner_id("bench")).await.unwrap().key.expose().to_owned();
        let (base, service_key, client_secret, remote_key) = keypal_serve().await;
        let remote = RemoteVerifier::new(&base, &service_key, client_secret).cache(Duration::from_secs(60));

        let bare = serve(handler_app()).await;
        let layered = serve(handler_app().layer(ApiKeyLayer::new(keys))).await;
        let remoted = serve(handler_app().layer(ApiKeyLayer::new(remote))).await;
        let targets: [(&str, SocketAddr, Option<&str>); 3] =
            [("bare", bare, None), ("layer", layered, Some(&local_key)), ("remote", remoted, Some(&remote_key))];

        // `KEYPAL_BENCH_ONLY=layer` (a comma-separated list) measures only those, for a profiler.
        let only: Option<String> = std::env::var("KEYPAL_BENCH_ONLY").ok();
        let measured = |name: &str| only.as_deref().is_none_or(|list| list.split(',').any(|n| n == name));
        for (_, addr, key) in &targets {
            load(*addr, *key, connections, Instant::now() + Duration::from_secs_f64(warmup)).await;
        }
        let mut totals = [(0_u64, Duration::ZERO); 3];
        for _ in 0..rounds {
            for (i, (name, addr, key)) in targets.iter().enumerate() {
                if !measured(name) {
                    continue;
                }
                let started = Instant::now();
                let done = load(*addr, *key, connections, started + Duration::from_secs_f64(secs)).await;
                totals[i].0 += done;
                totals[i].1 += started.elapsed();
            }
        }
        let rate = |i: usize| totals[i].0 as f64 / totals[i].1.as_secs_f64().max(f64::MIN_POSITIVE);
        println!(
            "keypal-axum layer throughput: {connections} connections, {rounds} rounds of {secs} s, {} cores",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
        for (i, (name, _, _)) in targets.iter().enumerate() {
            println!("  {name:<7} {:>9.0} requests/s ({} requests)", rate(i), totals[i].0);
        }
        let layer_ratio = rate(1) / rate(0);
        let remote_ratio = rate(2) / rate(1);
        println!("  layer / bare   = {:.3} (target >= 0.85: the layer costs at most 15%)", layer_ratio);
        println!("  remote / layer = {:.3} (target >= 0.80, RemoteVerifier with its cache warm)", remote_ratio);
    });
}
