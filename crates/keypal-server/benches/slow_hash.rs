//! Slow hashes and the rest of the service: does a flood of bcrypt work stall
//! `/healthz` and other applications, and do concurrent first verifies of one key
//! share their bcrypt?
//!
//! Starts `keypal serve` in this process on `127.0.0.1:0` with a new SQLite file under
//! `target/tmp`, creates a SHA-256 application and a bcrypt application (cost
//! `KEYPAL_BENCH_BCRYPT_COST`, 10), then measures:
//!
//! 1. **Idle:** `/healthz` and a SHA-256 verify (a valid key, cached), each probed by
//!    one connection every 5 ms, for `KEYPAL_BENCH_SECS` (10) in all.
//! 2. **Flood:** the same probes while `KEYPAL_BENCH_FLOODERS` (8) connections send
//!    well-formed unknown keys to the bcrypt application in a closed loop (each costs
//!    a dummy bcrypt, by design; every one is a different key, so none is shared).
//!    Target: the probes' p99 within 2x of idle. Idle and flood alternate in
//!    `KEYPAL_BENCH_SLICES` (5) slices each, so that other work on a busy machine
//!    weighs on both alike.
//! 3. **Burst:** `KEYPAL_BENCH_BURST` (32) connections send the first verification of
//!    one new bcrypt key at once, `KEYPAL_BENCH_ROUNDS` (5) times with a new key each
//!    time; the time until the last answer, against one first verification alone
//!    (one bcrypt). Target: about one hash's time.
//!
//! ```sh
//! cargo bench -p keypal-server --bench slow_hash
//! ```
//!
//! Settings (environment): `KEYPAL_BENCH_SECS` (10), `KEYPAL_BENCH_SLICES` (5), `KEYPAL_BENCH_FLOODERS` (8),
//! `KEYPAL_BENCH_BURST` (32), `KEYPAL_BENCH_ROUNDS` (5), `KEYPAL_BENCH_BCRYPT_COST` (10),
//! `KEYPAL_BENCH_HASH_WORKERS` (the server's default: one per core),
//! `KEYPAL_BENCH_SERVER_THREADS` (one per core, as `keypal serve`).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, missing_docs)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use keypal_server::{ServeConfig, Server};
use serde_json::{Value, json};
use tokio::net::TcpStream;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| panic!("{name}={text} is not a valid value")),
        Err(_) => default,
    }
}

/// What every request needs: the server's address and the service key.
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    service_key: HeaderValue,
}

impl Target {
    async fn connect(&self) -> SendRequest<Full<Bytes>> {
        let stream = TcpStream::connect(self.addr).await.expect("connect");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("HTTP/1.1 handshake");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        sender
    }

    /// One request on `sender`: its status, body and latency.
    async fn call(&self, sender: &mut SendRequest<Full<Bytes>>, body: Option<&Value>) -> (StatusCode, Bytes, Duration) {
        let host = HeaderValue::from_str(&self.addr.to_string()).expect("host header");
        let request = match body {
            None => Request::builder().method(Method::GET).uri("/healthz").header(HOST, host).body(Full::default()),
            Some(body) => Request::builder()
                .method(Method::POST)
                .uri("/v1/verify")
                .header(HOST, host)
                .header(AUTHORIZATION, &self.service_key)
                .header(CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body.to_string()))),
        };
        let request = request.expect("request");
        let started = Instant::now();
        sender.ready().await.expect("connection ready");
        let response = sender.send_request(request).await.expect("response");
        let status = response.status();
        let answer = response.into_body().collect().await.expect("response body").to_bytes();
        (status, answer, started.elapsed())
    }
}

/// Latencies in microseconds, sorted.
struct Latencies(Vec<u64>);

impl Latencies {
    fn new(mut micros: Vec<u64>) -> Self {
        micros.sort_unstable();
        Self(micros)
    }

    /// The latency at quantile `q` (nearest rank), in milliseconds.
    fn ms(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        let rank = ((q * self.0.len() as f64).ceil() as usize).clamp(1, self.0.len());
        self.0[rank - 1] as f64 / 1000.0
    }
}

/// Sends `body` (or `GET /healthz`) every 5 ms for `secs`; every answer must contain `expect`.
async fn probe(target: Target, body: Option<Value>, expect: &'static str, secs: Duration) -> Latencies {
    let mut sender = target.connect().await;
    let mut latencies = Vec::new();
    let until = Instant::now() + secs;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while Instant::now() < until {
        tick.tick().await;
        let (status, answer, took) = target.call(&mut sender, body.as_ref()).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(status == StatusCode::OK && text.contains(expect), "probe: {status} {text}");
        latencies.push(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
    }
    Latencies::new(latencies)
}

/// Probes `/healthz` and the fast verify side by side.
async fn probe_both(target: &Target, fast: &Value, secs: Duration) -> (Latencies, Latencies) {
    let health = tokio::spawn(probe(target.clone(), None, "ok", secs));
    let verify = tokio::spawn(probe(target.clone(), Some(fast.clone()), "\"code\":\"VALID\"", secs));
    (health.await.unwrap(), verify.await.unwrap())
}

/// The answers of the flood: checked (NOT_FOUND) and refused (HASHING_BUSY).
#[derive(Default)]
struct Flood {
    checked: AtomicU64,
    refused: AtomicU64,
}

/// Sends a different well-formed unknown key to the slow application until `stop`.
async fn flooder(target: Target, template: String, secret: String, n: usize, stop: Arc<AtomicBool>, flood: Arc<Flood>) {
    let mut sender = target.connect().await;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // The template's last 12 characters replaced (base64url digits): never a stored key.
        let key = format!("{}{n:02}{i:010}", &template[..template.len() - 12]);
        i += 1;
        let body = json!({"key": key, "client_secret": secret});
        let (status, answer, _) = target.call(&mut sender, Some(&body)).await;
        let text = String::from_utf8_lossy(&answer);
        if status == StatusCode::OK && text.contains("\"code\":\"NOT_FOUND\"") {
            flood.checked.fetch_add(1, Ordering::Relaxed);
        } else if status == StatusCode::SERVICE_UNAVAILABLE && text.contains("HASHING_BUSY") {
            flood.refused.fetch_add(1, Ordering::Relaxed);
        } else {
            panic!("flood: {status} {text}");
        }
    }
}

/// A logged-in admin client that creates applications and keys.
struct Admin {
    http: reqwest::Client,
    base: String,
    cookie: String,
}

impl Admin {
    async fn login(base: &str, password: &str) -> Self {
        let http = reqwest::Client::new();
        let response = http.post(format!("{base}/v1/session")).json(&json!({"password": password})).send().await;
        let response = response.expect("login");
        assert_eq!(response.status(), reqwest::StatusCode::NO_CONTENT, "login");
        let cookie = response.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
        Self { http, base: base.to_owned(), cookie }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let response = self.http.post(format!("{}{path}", self.base)).header("cookie", &self.cookie).json(&body);
        let response = response.send().await.expect(path);
        assert_eq!(response.status(), reqwest::StatusCode::CREATED, "{path}");
        response.json().await.expect("JSON")
    }

    /// Creates an application; returns its id and client secret.
    async fn app(&self, body: Value) -> (String, String) {
        let created = self.post("/v1/apps", body).await;
        (created["app"]["id"].as_str().unwrap().to_owned(), created["client_secret"].as_str().unwrap().to_owned())
    }

    async fn key(&self, app_id: &str) -> String {
        self.post(&format!("/v1/apps/{app_id}/keys"), json!({})).await["key"].as_str().unwrap().to_owned()
    }
}

/// The time until every one of `senders` has its answer to the first verification of `key`.
async fn burst(target: &Target, senders: &mut [SendRequest<Full<Bytes>>], key: &str, secret: &str) -> Duration {
    let body = json!({"key": key, "client_secret": secret});
    let started = Instant::now();
    let calls = senders.iter_mut().map(|sender| {
        let (target, body) = (target.clone(), body.clone());
        async move { target.call(sender, Some(&body)).await }
    });
    for (status, answer, _) in futures::future::join_all(calls).await {
        let text = String::from_utf8_lossy(&answer);
        assert!(status == StatusCode::OK && text.contains("\"code\":\"VALID\""), "burst: {status} {text}");
    }
    started.elapsed()
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort_unstable();
    values[values.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let secs = Duration::from_secs_f64(env_or("KEYPAL_BENCH_SECS", 10.0));
    let slices: usize = env_or("KEYPAL_BENCH_SLICES", 5);
    let flooders: usize = env_or("KEYPAL_BENCH_FLOODERS", 8);
    let burst_size: usize = env_or("KEYPAL_BENCH_BURST", 32);
    let rounds: usize = env_or("KEYPAL_BENCH_ROUNDS", 5);
    let cost: u32 = env_or("KEYPAL_BENCH_BCRYPT_COST", 10);
    let server_threads: usize = env_or("KEYPAL_BENCH_SERVER_THREADS", cores);

    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("keypal-slow-hash").join(uuid::Uuid::now_v7().to_string());
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let mut config = ServeConfig::default();
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.key_file = dir.join("keypal.key");
    config.database_url = format!("sqlite://{}", dir.join("keypal.db").display());
    config.hash_workers = std::env::var("KEYPAL_BENCH_HASH_WORKERS").ok().map(|n| n.parse().expect("a number"));
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(server_threads)
        .thread_name("keypal-server")
        .enable_all()
        .build()
        .expect("server runtime");
    let server = server_runtime.block_on(Server::bind(&config)).expect("the server did not start");
    let addr = server.local_addr().expect("address");
    let password = server.generated().admin_password.clone().expect("admin password");
    let service_key = server.generated().service_key.clone().expect("service key");
    let (stop_server, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = server_runtime.spawn(async move {
        server.run(async move { drop(stopped.await) }).await.expect("the server failed");
    });

    let client = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("client");
    client.block_on(async {
        let target =
            Target { addr, service_key: HeaderValue::from_str(&format!("Bearer {service_key}")).expect("header") };
        let admin = Admin::login(&format!("http://{addr}"), &password).await;
        let (fast_app, fast_secret) = admin.app(json!({"name": "Fast", "label": "fast"})).await;
        let fast_key = admin.key(&fast_app).await;
        let fast = json!({"key": fast_key, "client_secret": fast_secret});
        let (slow_app, slow_secret) =
            admin.app(json!({"name": "Slow", "label": "slow", "hash": "bcrypt", "bcrypt_cost": cost})).await;
        let template = admin.key(&slow_app).await;

        println!(
            "slow_hash: {cores} cores, {server_threads} server threads, hash workers {}, bcrypt cost {cost}",
            config.hash_workers.map_or_else(|| "default".to_owned(), |n| n.to_string())
        );
        // Warm: the fast key cached, connections and pages warm.
        let _ = probe_both(&target, &fast, Duration::from_secs(1)).await;
        // Idle and flood slices alternate, so that other work on a busy machine weighs
        // on both alike.
        let slice = secs / u32::try_from(slices).expect("slices");
        let (mut idle_health, mut idle_verify, mut flood_health, mut flood_verify) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let flood = Arc::new(Flood::default());
        let (mut checked, mut refused) = (0, 0);
        for _ in 0..slices {
            let (health, verify) = probe_both(&target, &fast, slice).await;
            idle_health.extend(health.0);
            idle_verify.extend(verify.0);

            let stop = Arc::new(AtomicBool::new(false));
            let mut flooding = Vec::new();
            for n in 0..flooders {
                let task =
                    flooder(target.clone(), template.clone(), slow_secret.clone(), n, stop.clone(), flood.clone());
                flooding.push(tokio::spawn(task));
            }
            // The flood's own first requests take a moment to fill the hashing threads.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let before = (flood.checked.load(Ordering::Relaxed), flood.refused.load(Ordering::Relaxed));
            let (health, verify) = probe_both(&target, &fast, slice).await;
            checked += flood.checked.load(Ordering::Relaxed) - before.0;
            refused += flood.refused.load(Ordering::Relaxed) - before.1;
            flood_health.extend(health.0);
            flood_verify.extend(verify.0);
            stop.store(true, Ordering::Relaxed);
            for task in flooding {
                task.await.expect("flooder");
            }
        }
        let (idle_health, idle_verify) = (Latencies::new(idle_health), Latencies::new(idle_verify));
        let (flood_health, flood_verify) = (Latencies::new(flood_health), Latencies::new(flood_verify));

        println!("\n| probe | idle p50 | idle p99 | flood p50 | flood p99 | p99 flood/idle |");
        println!("|---|---|---|---|---|---|");
        for (name, idle, flooded) in
            [("GET /healthz", &idle_health, &flood_health), ("SHA-256 verify", &idle_verify, &flood_verify)]
        {
            println!(
                "| {name} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2}x |",
                idle.ms(0.5),
                idle.ms(0.99),
                flooded.ms(0.5),
                flooded.ms(0.99),
                flooded.ms(0.99) / idle.ms(0.99)
            );
        }
        let seconds = slice.as_secs_f64() * slices as f64;
        println!(
            "flood: {flooders} connections, {:.0} unknown keys checked/s, {:.0} refused/s (HASHING_BUSY)",
            checked as f64 / seconds,
            refused as f64 / seconds
        );

        let mut senders = Vec::new();
        for _ in 0..burst_size {
            senders.push(target.connect().await);
        }
        let (mut alone, mut together) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let key = admin.key(&slow_app).await;
            alone.push(burst(&target, &mut senders[..1], &key, &slow_secret).await);
            let key = admin.key(&slow_app).await;
            together.push(burst(&target, &mut senders, &key, &slow_secret).await);
        }
        println!(
            "\nfirst verification of a new bcrypt key: alone {} (median of {rounds}: {}); \
             {burst_size} at once {} (median: {})",
            alone.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", "),
            ms(median(alone.clone())),
            together.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", "),
            ms(median(together.clone())),
        );
    });

    let _ = stop_server.send(());
    server_runtime.block_on(handle).expect("server task");
    let _ = std::fs::remove_dir_all(&dir);
}
