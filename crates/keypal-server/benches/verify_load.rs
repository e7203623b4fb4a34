//! Load benchmark of `POST /v1/verify` beside `GET /healthz`, on one warm server.
//!
//! Starts `keypal serve` on `127.0.0.1:0` with a new SQLite file under `target/tmp`
//! (in this process by default; as a separate process when `KEYPAL_BENCH_SERVER_BIN`
//! names a built `keypal` binary), logs in, creates one application holding
//! `KEYPAL_BENCH_KEYS` keys, verifies every key once (the verified-result cache and
//! SQLite's pages are warm), then runs a closed loop of `KEYPAL_BENCH_CONNECTIONS`
//! keep-alive HTTP/1.1 connections (hyper, no pipelining), first against `GET /healthz`,
//! then against `POST /v1/verify` cycling through every key. Every latency is recorded;
//! every verify answer must be a 200 with `"code":"VALID"`. Besides throughput and
//! latency it reports the on-CPU time per request of the server's threads and of the
//! load generator's (both share the machine's cores).
//!
//! ```sh
//! cargo bench -p keypal-server --bench verify_load
//! scripts/load-verify.sh             # the same; --process runs the server as its own process
//! ```
//!
//! Settings (environment):
//!
//! - `KEYPAL_BENCH_KEYS` (10000): keys in the application.
//! - `KEYPAL_BENCH_CONNECTIONS` (32): concurrent connections; a comma-separated list
//!   (`1,8,32`) measures both endpoints once per value.
//! - `KEYPAL_BENCH_SECS` (10): measured time per endpoint. Keep it at least the
//!   verified-result cache's lifetime (10 s), so the verify window holds the steady
//!   state's re-reads of every key from SQLite.
//! - `KEYPAL_BENCH_WARMUP_SECS` (2): unmeasured load on the same connections first.
//! - `KEYPAL_BENCH_ROUNDS` (1): split each endpoint's time into this many alternating
//!   slices (healthz, verify, healthz, ...), so that other work on a busy machine weighs
//!   on both alike. Between verify slices cached results age without being used, so
//!   more rounds mean more re-reads per verify than in a steady state.
//! - `KEYPAL_BENCH_CLIENT_THREADS` (1): the load generator's tokio worker threads.
//! - `KEYPAL_BENCH_SERVER_THREADS` (in-process only; default one per core, as `keypal serve`).
//! - `KEYPAL_BENCH_MAX_CONNECTIONS`: the server's database pool (default: the server's, 10).
//! - `KEYPAL_BENCH_SERVER_BIN`: run this `keypal` binary as the server instead.
//! - `KEYPAL_BENCH_COMPARE=usage`: instead of healthz against verify, verify against
//!   verify: one server counting usage, each request with three tags (an endpoint of 20,
//!   a region of 4, a plan of 3), and one server with `usage_counting = false` and no tags,
//!   each with its own SQLite file and `KEYPAL_BENCH_KEYS` keys, measured in alternating
//!   slices like the endpoints above. The target: counting costs at most 5% of throughput
//!   (over all the slices); each round's on / off is printed too, to show the machine's noise.
//!   On a shared machine, short slices (`KEYPAL_BENCH_SECS=180 KEYPAL_BENCH_ROUNDS=90`: 2 s
//!   each) keep the two servers' slices close in time, so the other guests' swings weigh
//!   on both more evenly; slices shorter than the cache's lifetime make both servers
//!   re-read each key about twice as often per verification as in a steady state.
//! - `KEYPAL_BENCH_WEBHOOK` (0): with 1, a webhook wanting every event exists during the
//!   load (made after the keys), so each verification is looked at for the webhooks'
//!   credit and rate-limit events: compare a run with 0 and one with 1.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, missing_docs)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use keypal_server::{ServeConfig, Server};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

/// The issue's targets.
const TARGET_RATIO: f64 = 0.60;
const TARGET_P99_MICROS: u32 = 2_000;
/// Verify throughput with usage counting and tags, over without (`KEYPAL_BENCH_COMPARE=usage`).
const TARGET_USAGE_RATIO: f64 = 0.95;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| panic!("{name}={text} is not a valid value")),
        Err(_) => default,
    }
}

struct Settings {
    keys: usize,
    connections: Vec<usize>,
    measure: Duration,
    warmup: Duration,
    rounds: usize,
    client_threads: usize,
    server_threads: usize,
    max_connections: Option<u32>,
    server_bin: Option<PathBuf>,
    /// Compare verify with usage counting and tags against verify without.
    compare_usage: bool,
}

impl Settings {
    fn from_env() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let connections = std::env::var("KEYPAL_BENCH_CONNECTIONS").unwrap_or_else(|_| "32".to_owned());
        Settings {
            keys: env_or("KEYPAL_BENCH_KEYS", 10_000),
            connections: connections
                .split(',')
                .map(|n| n.trim().parse().expect("KEYPAL_BENCH_CONNECTIONS: numbers separated by commas"))
                .collect(),
            measure: Duration::from_secs_f64(env_or("KEYPAL_BENCH_SECS", 10.0)),
            warmup: Duration::from_secs_f64(env_or("KEYPAL_BENCH_WARMUP_SECS", 2.0)),
            rounds: env_or("KEYPAL_BENCH_ROUNDS", 1),
            client_threads: env_or("KEYPAL_BENCH_CLIENT_THREADS", 1),
            server_threads: env_or("KEYPAL_BENCH_SERVER_THREADS", cores),
            max_connections: std::env::var("KEYPAL_BENCH_MAX_CONNECTIONS")
                .ok()
                .map(|n| n.trim().parse().expect("KEYPAL_BENCH_MAX_CONNECTIONS: a number")),
            server_bin: std::env::var_os("KEYPAL_BENCH_SERVER_BIN").map(PathBuf::from),
            compare_usage: match std::env::var("KEYPAL_BENCH_COMPARE").as_deref() {
                Ok("usage") => true,
                Ok(other) => panic!("KEYPAL_BENCH_COMPARE={other}: only `usage` is known"),
                Err(_) => false,
            },
        }
    }
}

/// The server under load: in this process (its own runtime) or a child process.
enum Running {
    InProcess { runtime: Runtime, stop: oneshot::Sender<()>, handle: tokio::task::JoinHandle<()> },
    Process(Child),
}

struct Target {
    addr: SocketAddr,
    admin_password: String,
    service_key: String,
    running: Running,
}

fn scratch_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("keypal-verify-load")
        .join(uuid::Uuid::now_v7().simple().to_string());
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

fn start_in_process(settings: &Settings, dir: &Path, counting: bool) -> Target {
    // The same log filter as `keypal serve` (info): the trace layer's per-request spans
    // are at debug level, so they are built but not recorded, as in production.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.server_threads)
        .thread_name("keypal-server")
        .enable_all()
        .build()
        .expect("server runtime");
    let mut config = ServeConfig::default();
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.key_file = dir.join("keypal.key");
    config.database_url = format!("sqlite://{}", dir.join("keypal.db").display());
    config.usage_counting = counting;
    if let Some(max) = settings.max_connections {
        config.max_connections = max;
    }
    let server = runtime.block_on(Server::bind(&config)).expect("the server did not start");
    let addr = server.local_addr().expect("address");
    let admin_password = server.generated().admin_password.clone().expect("a generated admin password");
    let service_key = server.generated().service_key.clone().expect("a generated service key");
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = runtime.spawn(async move {
        server.run(async move { drop(stopped.await) }).await.expect("the server failed");
    });
    Target { addr, admin_password, service_key, running: Running::InProcess { runtime, stop, handle } }
}

fn random_token(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    getrandom::fill(&mut raw).expect("random bytes");
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

fn start_process(settings: &Settings, bin: &Path, dir: &Path, counting: bool) -> Target {
    use std::io::BufRead;
    let admin_password = random_token(16);
    let service_key = format!("kp_svc_{}", random_token(20));
    let log = std::fs::File::create(dir.join("server.log")).expect("server log file");
    let mut command = Command::new(bin);
    command.arg("serve");
    if let Some(max) = settings.max_connections {
        command.arg("--max-connections").arg(max.to_string());
    }
    let mut child = command
        .arg("--usage-counting")
        .arg(counting.to_string())
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--database-url")
        .arg(format!("sqlite://{}", dir.join("keypal.db").display()))
        .arg("--key-file")
        .arg(dir.join("keypal.key"))
        .env("KEYPAL_ADMIN_PASSWORD", &admin_password)
        .env("KEYPAL_SERVICE_KEY", &service_key)
        .env_remove("KEYPAL_MASTER_KEY")
        .env_remove("KEYPAL_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    let stdout = child.stdout.take().expect("the server's standard output");
    let mut lines = std::io::BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("the server exited; see {}", dir.join("server.log").display()))
            .expect("the server's standard output");
        if let Some(url) = line.strip_prefix("keypal: listening on http://") {
            break url.trim().parse().expect("the listen address");
        }
    };
    // Keep draining its standard output so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Target { addr, admin_password, service_key, running: Running::Process(child) }
}

fn stop(running: Running) {
    match running {
        Running::InProcess { runtime, stop, handle } => {
            let _ = stop.send(());
            runtime.block_on(handle).expect("server task");
        }
        Running::Process(mut child) => {
            // SIGTERM, so the server flushes and exits cleanly; `kill` only if it lingers.
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Logs in, creates one application and `count` keys; returns the client secret and the keys.
/// The application, its client secret and its keys (each with an owner of its own).
struct Populated {
    app_id: String,
    client_secret: String,
    keys: Vec<String>,
}

async fn populate(base: &str, admin_password: &str, count: usize) -> Populated {
    let http = reqwest::Client::new();
    let response = http.post(format!("{base}/v1/session")).json(&json!({"password": admin_password})).send().await;
    let response = response.expect("login");
    assert_eq!(response.status(), reqwest::StatusCode::NO_CONTENT, "login");
    let cookie = response.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();

    let response = http
        .post(format!("{base}/v1/apps"))
        .header("cookie", &cookie)
        .json(&json!({"name": "Load", "label": "load"}))
        .send()
        .await
        .expect("create app");
    assert_eq!(response.status(), reqwest::StatusCode::CREATED, "create app");
    let body: Value = response.json().await.expect("app JSON");
    let app_id = body["app"]["id"].as_str().unwrap().to_owned();
    let client_secret = body["client_secret"].as_str().unwrap().to_owned();

    let writers = 8;
    let url = Arc::new(format!("{base}/v1/apps/{app_id}/keys"));
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..writers {
        let (http, url, cookie) = (http.clone(), url.clone(), cookie.clone());
        tasks.spawn(async move {
            let mut keys = Vec::new();
            for i in (writer..count).step_by(writers) {
                let response = http
                    .post(url.as_str())
                    .header("cookie", &cookie)
                    .json(&json!({"name": format!("load-{i}"), "owner_id": format!("user-{i}")}))
                    .send()
                    .await
                    .expect("create key");
                assert_eq!(response.status(), reqwest::StatusCode::CREATED, "create key");
                let body: Value = response.json().await.expect("key JSON");
                keys.push(body["key"].as_str().unwrap().to_owned());
            }
            keys
        });
    }
    let mut keys = Vec::with_capacity(count);
    while let Some(batch) = tasks.join_next().await {
        keys.extend(batch.expect("key writer"));
    }
    if env_or("KEYPAL_BENCH_WEBHOOK", 0) == 1 {
        let events = keypal_server::EVENT_TYPES;
        let response = http
            .post(format!("{base}/v1/webhooks"))
            .header("cookie", &cookie)
            .json(&json!({"url": "https://webhooks.invalid/keypal", "events": events}))
            .send()
            .await
            .expect("create webhook");
        assert_eq!(response.status(), reqwest::StatusCode::CREATED, "create webhook");
    }
    Populated { app_id, client_secret, keys }
}

/// The verifications `target` has answered, whatever their code (its metrics).
async fn verifications(target: &Target) -> u64 {
    let text =
        reqwest::get(format!("http://{}/metrics", target.addr)).await.expect("metrics").text().await.expect("text");
    text.lines()
        .filter(|line| line.starts_with("keypal_verifications_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// One request kind: a method, a path and the bodies to cycle through.
#[derive(Clone)]
struct Workload {
    name: &'static str,
    method: Method,
    path: &'static str,
    authorization: Option<HeaderValue>,
    bodies: Arc<Vec<Bytes>>,
    /// The answer must be a 200 whose body contains this.
    expect: &'static [u8],
}

#[derive(Default)]
struct WorkerResult {
    latencies: Vec<u32>,
    failures: u64,
    first_failure: Option<String>,
    finished: Option<Instant>,
}

async fn connect(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("TCP_NODELAY");
    let (sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("HTTP/1.1 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender
}

/// A closed loop on one connection: send, await the whole answer, check it, repeat;
/// unmeasured until `measure_from`, measured until `until`.
async fn worker(
    addr: SocketAddr,
    workload: Workload,
    first: usize,
    measure_from: Instant,
    until: Instant,
) -> WorkerResult {
    let mut sender = connect(addr).await;
    let host = HeaderValue::from_str(&addr.to_string()).expect("host header");
    let json = HeaderValue::from_static("application/json");
    let mut result = WorkerResult { latencies: Vec::with_capacity(1 << 16), ..WorkerResult::default() };
    let mut next = first;
    loop {
        let started = Instant::now();
        if started >= until {
            break;
        }
        let body = workload.bodies[next % workload.bodies.len()].clone();
        next += 1;
        let mut request = Request::builder().method(workload.method.clone()).uri(workload.path).header(HOST, &host);
        if let Some(auth) = &workload.authorization {
            request = request.header(AUTHORIZATION, auth);
        }
        if !body.is_empty() {
            request = request.header(CONTENT_TYPE, &json);
        }
        let request = request.body(Full::new(body)).expect("request");
        sender.ready().await.expect("connection ready");
        let response = sender.send_request(request).await.expect("response");
        let status = response.status();
        let answer = response.into_body().collect().await.expect("response body").to_bytes();
        let took = started.elapsed();
        if started < measure_from {
            continue;
        }
        result.latencies.push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
        let good = status == StatusCode::OK && answer.windows(workload.expect.len()).any(|w| w == workload.expect);
        if !good {
            result.failures += 1;
            if result.first_failure.is_none() {
                result.first_failure = Some(format!("{status} {}", String::from_utf8_lossy(&answer)));
            }
        }
    }
    result.finished = Some(Instant::now());
    result
}

struct PhaseResult {
    name: &'static str,
    /// Each slice's throughput, in requests a second, in the order measured.
    slices: Vec<f64>,
    connections: usize,
    requests: usize,
    seconds: f64,
    sorted: Vec<u32>,
    failures: u64,
    first_failure: Option<String>,
    /// On-CPU time while measuring, in nanoseconds.
    server_cpu: u64,
    client_cpu: u64,
}

impl PhaseResult {
    /// Server CPU time per request, in microseconds.
    fn server_cpu_per_request(&self) -> f64 {
        self.server_cpu as f64 / 1000.0 / self.requests.max(1) as f64
    }

    /// Load generator CPU time per request, in microseconds.
    fn client_cpu_per_request(&self) -> f64 {
        self.client_cpu as f64 / 1000.0 / self.requests.max(1) as f64
    }

    fn throughput(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    /// The latency at quantile `q` (nearest rank), in microseconds.
    fn quantile(&self, q: f64) -> u32 {
        if self.sorted.is_empty() {
            return 0;
        }
        let rank = ((q * self.sorted.len() as f64).ceil() as usize).clamp(1, self.sorted.len());
        self.sorted[rank - 1]
    }
}

/// One slice: `connections` new connections, `warmup` of unmeasured load, then `measure`.
async fn run_slice(
    addr: SocketAddr,
    server_pid: Option<u32>,
    workload: &Workload,
    connections: usize,
    warmup: Duration,
    measure: Duration,
) -> PhaseResult {
    let measure_from = Instant::now() + warmup;
    let until = measure_from + measure;
    let stride = workload.bodies.len() / connections.max(1);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..connections {
        tasks.spawn(worker(addr, workload.clone(), c * stride, measure_from, until));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_before = cpu_times(server_pid);
    tokio::time::sleep_until(until.into()).await;
    let cpu_after = cpu_times(server_pid);
    let mut all = Vec::new();
    let mut failures = 0;
    let mut first_failure = None;
    let mut finished = measure_from;
    while let Some(result) = tasks.join_next().await {
        let result = result.expect("load worker");
        all.extend_from_slice(&result.latencies);
        failures += result.failures;
        first_failure = first_failure.or(result.first_failure);
        finished = finished.max(result.finished.unwrap_or(until));
    }
    let seconds = finished.duration_since(measure_from).as_secs_f64();
    PhaseResult {
        name: workload.name,
        slices: vec![all.len() as f64 / seconds],
        connections,
        requests: all.len(),
        seconds,
        sorted: all,
        failures,
        first_failure,
        server_cpu: cpu_after.server.saturating_sub(cpu_before.server),
        client_cpu: cpu_after.client.saturating_sub(cpu_before.client),
    }
}

/// Both endpoints, alternating in `rounds` slices each (healthz first), so that any
/// other work on the machine weighs on both alike; each endpoint is measured for
/// `settings.measure` in all.
async fn run_pair(
    server_pid: Option<u32>,
    first: (SocketAddr, &Workload),
    second: (SocketAddr, &Workload),
    connections: usize,
    settings: &Settings,
) -> (PhaseResult, PhaseResult) {
    let rounds = u32::try_from(settings.rounds.max(1)).unwrap_or(u32::MAX);
    let (warmup, measure) = (settings.warmup / rounds, settings.measure / rounds);
    let mut totals: [Option<PhaseResult>; 2] = [None, None];
    for _ in 0..rounds {
        for (total, (addr, workload)) in totals.iter_mut().zip([first, second]) {
            let slice = run_slice(addr, server_pid, workload, connections, warmup, measure).await;
            *total = Some(match total.take() {
                None => slice,
                Some(mut sum) => {
                    sum.slices.extend_from_slice(&slice.slices);
                    sum.requests += slice.requests;
                    sum.seconds += slice.seconds;
                    sum.sorted.extend_from_slice(&slice.sorted);
                    sum.failures += slice.failures;
                    sum.first_failure = sum.first_failure.or(slice.first_failure);
                    sum.server_cpu += slice.server_cpu;
                    sum.client_cpu += slice.client_cpu;
                    sum
                }
            });
        }
    }
    let [Some(mut a), Some(mut b)] = totals else { unreachable!("at least one round") };
    a.sorted.sort_unstable();
    b.sorted.sort_unstable();
    (a, b)
}

/// Verifies every key once, `connections` at a time; returns the failures.
async fn warm(addr: SocketAddr, workload: &Workload, connections: usize) -> u64 {
    let total = workload.bodies.len();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..connections {
        let workload = workload.clone();
        tasks.spawn(async move {
            let mut sender = connect(addr).await;
            let mut failures = 0;
            for i in (c..total).step_by(connections) {
                let request = Request::builder()
                    .method(Method::POST)
                    .uri(workload.path)
                    .header(HOST, addr.to_string())
                    .header(AUTHORIZATION, workload.authorization.clone().expect("authorization"))
                    .header(CONTENT_TYPE, "application/json")
                    .body(Full::new(workload.bodies[i].clone()))
                    .expect("request");
                sender.ready().await.expect("connection ready");
                let response = sender.send_request(request).await.expect("response");
                let status = response.status();
                let answer = response.into_body().collect().await.expect("body").to_bytes();
                if status != StatusCode::OK || !answer.windows(workload.expect.len()).any(|w| w == workload.expect) {
                    failures += 1;
                }
            }
            failures
        });
    }
    let mut failures = 0;
    while let Some(n) = tasks.join_next().await {
        failures += n.expect("warm-up worker");
    }
    failures
}

/// CPU time (Linux) of the server and of the load generator, in nanoseconds. A process's
/// user + system time (`/proc/<pid>/stat`, clock ticks) includes its threads that have
/// exited (the SQLite driver's connection threads come and go); the load generator's
/// threads (named `load-generator`, long-lived) are read from their `schedstat`. In-process,
/// the server is this process minus the load generator (its runtime, its SQLite threads);
/// with a separate server process, it is that process.
#[derive(Debug, Clone, Copy, Default)]
struct CpuTimes {
    server: u64,
    client: u64,
}

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`: 100 on Linux).
const USER_HZ: u64 = 100;

fn process_cpu(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0 };
    // The command may hold spaces and parentheses: fields start after the last `)`.
    let Some((_, rest)) = stat.rsplit_once(')') else { return 0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command.
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    ticks * (1_000_000_000 / USER_HZ)
}

fn load_generator_cpu() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    tasks
        .flatten()
        .filter_map(|task| {
            let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
            if comm.trim() != "load-generator" {
                return None;
            }
            let schedstat = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
            schedstat.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

fn cpu_times(server_pid: Option<u32>) -> CpuTimes {
    let client = load_generator_cpu();
    let server = match server_pid {
        Some(pid) => process_cpu(pid),
        None => process_cpu(std::process::id()).saturating_sub(client),
    };
    CpuTimes { server, client }
}

/// The 1-minute load average (Linux), to tell whether other work shared the cores.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

fn micros(us: u32) -> String {
    if us >= 10_000 { format!("{:.1} ms", f64::from(us) / 1000.0) } else { format!("{us} µs") }
}

fn print_table(results: &[&PhaseResult]) {
    println!(
        "| endpoint | connections | requests | req/s | p50 | p90 | p99 | p99.9 | max | failures | server CPU/req | load generator CPU/req |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in results {
        println!(
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {:.1} µs | {:.1} µs |",
            r.name,
            r.connections,
            r.requests,
            r.throughput(),
            micros(r.quantile(0.50)),
            micros(r.quantile(0.90)),
            micros(r.quantile(0.99)),
            micros(r.quantile(0.999)),
            micros(r.sorted.last().copied().unwrap_or(0)),
            r.failures,
            r.server_cpu_per_request(),
            r.client_cpu_per_request(),
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it without: then only a smoke run.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let mut settings = Settings::from_env();
    if smoke {
        settings.keys = settings.keys.min(200);
        settings.connections = vec![4];
        settings.measure = Duration::from_millis(500);
        settings.warmup = Duration::from_millis(100);
        settings.rounds = 1;
    }
    if settings.compare_usage {
        compare_usage(&settings, smoke);
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let dir = scratch_dir();
    let target = match &settings.server_bin {
        Some(bin) => start_process(&settings, bin, &dir, true),
        None => start_in_process(&settings, &dir, true),
    };
    let mode = match &settings.server_bin {
        Some(bin) => format!("separate process ({})", bin.display()),
        None => format!("in-process (own tokio runtime, {} worker threads)", settings.server_threads),
    };
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.client_threads)
        .thread_name("load-generator")
        .enable_all()
        .build()
        .expect("client runtime");
    let addr = target.addr;
    let server_pid = match &target.running {
        Running::Process(child) => Some(child.id()),
        Running::InProcess { .. } => None,
    };
    let base = format!("http://{addr}");

    println!("keypal verify load benchmark");
    if smoke {
        println!(
            "  SMOKE RUN (no --bench argument, as under `cargo test --benches`): a few keys, half a second; the figures mean nothing"
        );
    }
    println!("  server: {mode}, SQLite at {}", dir.join("keypal.db").display());
    println!(
        "  load generator: {} tokio worker thread(s), hyper HTTP/1.1 keep-alive, closed loop",
        settings.client_threads
    );
    println!(
        "  NOTE: the load generator and the server share this machine's {cores} core(s); \
         the figures are for both together, not for the server alone"
    );

    if let Some(load) = load_average() {
        println!(
            "  load average before the run (1 min): {load:.2}{}",
            if load > 0.5 { "  (other work is running: figures will be lower and noisier)" } else { "" }
        );
    }

    let created = Instant::now();
    let Populated { client_secret, keys, .. } = client.block_on(populate(&base, &target.admin_password, settings.keys));
    println!("  created 1 application and {} keys in {:.1} s", keys.len(), created.elapsed().as_secs_f64());
    let webhook = env_or("KEYPAL_BENCH_WEBHOOK", 0) == 1;
    println!("  webhooks: {}", if webhook { "one, wanting every event" } else { "none" });

    let verify = Workload {
        name: "POST /v1/verify",
        method: Method::POST,
        path: "/v1/verify",
        authorization: Some(HeaderValue::from_str(&format!("Bearer {}", target.service_key)).expect("header")),
        bodies: Arc::new(
            keys.iter()
                .map(|key| Bytes::from(json!({"key": key, "client_secret": client_secret}).to_string()))
                .collect(),
        ),
        expect: br#""code":"VALID""#,
    };
    let healthz = Workload {
        name: "GET /healthz",
        method: Method::GET,
        path: "/healthz",
        authorization: None,
        bodies: Arc::new(vec![Bytes::new()]),
        expect: b"ok",
    };

    let warmed = Instant::now();
    let warm_failures = client.block_on(warm(addr, &verify, 8));
    println!(
        "  warm-up: verified each of the {} keys once in {:.1} s ({warm_failures} failures)",
        keys.len(),
        warmed.elapsed().as_secs_f64()
    );
    let rounds = settings.rounds.max(1);
    if rounds == 1 {
        println!(
            "  per endpoint: {:.1} s unmeasured, then {:.1} s measured; healthz first, then verify (cycling through every key)",
            settings.warmup.as_secs_f64(),
            settings.measure.as_secs_f64(),
        );
    } else {
        println!(
            "  per endpoint: {:.1} s measured in {rounds} alternating slices (healthz, verify, healthz, ...), each on new \
             connections after {:.1} s unmeasured; verify cycles through every key",
            settings.measure.as_secs_f64(),
            settings.warmup.as_secs_f64() / rounds as f64,
        );
    }
    println!();

    let mut all_met = warm_failures == 0;
    for &connections in &settings.connections {
        let (health, verified) =
            client.block_on(run_pair(server_pid, (addr, &healthz), (addr, &verify), connections, &settings));
        print_table(&[&health, &verified]);
        let ratio = verified.throughput() / health.throughput();
        let p99 = verified.quantile(0.99);
        println!();
        println!(
            "  server CPU per request, verify / healthz: {:.2}x ({:.1} µs / {:.1} µs; CPU time of the \
             server's threads: less sensitive than throughput to other work on the machine, not immune)",
            verified.server_cpu_per_request() / health.server_cpu_per_request(),
            verified.server_cpu_per_request(),
            health.server_cpu_per_request()
        );
        let ratio_met = ratio >= TARGET_RATIO;
        let p99_met = p99 < TARGET_P99_MICROS;
        let clean = health.failures == 0 && verified.failures == 0;
        println!();
        println!(
            "  verify / healthz throughput: {ratio:.2} (target >= {TARGET_RATIO:.2}): {}",
            if ratio_met { "met" } else { "NOT met" }
        );
        println!(
            "  verify p99: {} (target < {}): {}",
            micros(p99),
            micros(TARGET_P99_MICROS),
            if p99_met { "met" } else { "NOT met" }
        );
        println!(
            "  every answer as expected (200, VALID / ok): {}",
            if clean { "yes".to_owned() } else { format!("NO ({} + {} failures)", health.failures, verified.failures) }
        );
        for failure in [&health.first_failure, &verified.first_failure].into_iter().flatten() {
            println!("    first failure: {failure}");
        }
        println!();
        all_met &= ratio_met && p99_met && clean;
    }
    if let Some(load) = load_average() {
        println!("load average after the run (1 min, includes this benchmark): {load:.2}");
    }
    println!("all targets met: {}", if all_met { "yes" } else { "no" });

    drop(client);
    stop(target.running);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The request bodies of `keys`, with three tags each when `tagged` (an endpoint of 20,
/// a region of 4, a plan of 3: 27 distinct tags).
fn verify_bodies(keys: &[String], client_secret: &str, tagged: bool) -> Arc<Vec<Bytes>> {
    Arc::new(
        keys.iter()
            .enumerate()
            .map(|(i, key)| {
                let mut body = json!({"key": key, "client_secret": client_secret});
                if tagged {
                    body["tags"] = json!([
                        format!("GET /v1/endpoint-{}", i % 20),
                        format!("region-{}", i % 4),
                        format!("plan-{}", i % 3)
                    ]);
                }
                Bytes::from(body.to_string())
            })
            .collect(),
    )
}

/// `KEYPAL_BENCH_COMPARE=usage`: verify with usage counting and tags against verify
/// without, on two servers measured in alternating slices.
fn compare_usage(settings: &Settings, smoke: bool) {
    let (dir_on, dir_off) = (scratch_dir(), scratch_dir());
    let start = |dir: &Path, counting| match &settings.server_bin {
        Some(bin) => start_process(settings, bin, dir, counting),
        None => start_in_process(settings, dir, counting),
    };
    let (on, off) = (start(&dir_on, true), start(&dir_off, false));
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.client_threads)
        .thread_name("load-generator")
        .enable_all()
        .build()
        .expect("client runtime");
    let pids = match (&on.running, &off.running) {
        (Running::Process(a), Running::Process(_)) => Some(a.id()),
        _ => None,
    };
    println!("keypal verify load benchmark: usage counting and tags, on against off");
    if smoke {
        println!("  SMOKE RUN (no --bench argument): a few keys, half a second; the figures mean nothing");
    }
    println!(
        "  two servers ({}), each with its own SQLite file and {} keys; load generator: {} tokio worker thread(s)",
        if settings.server_bin.is_some() { "separate processes" } else { "in this process, each with its own runtime" },
        settings.keys,
        settings.client_threads
    );
    if pids.is_some() {
        println!("  server CPU below is the counting server's process only");
    }
    if let Some(load) = load_average() {
        println!("  load average before the run (1 min): {load:.2}");
    }
    let workload = |target: &Target, name: &'static str, tagged: bool| {
        let populated =
            client.block_on(populate(&format!("http://{}", target.addr), &target.admin_password, settings.keys));
        let workload = Workload {
            name,
            method: Method::POST,
            path: "/v1/verify",
            authorization: Some(HeaderValue::from_str(&format!("Bearer {}", target.service_key)).expect("header")),
            bodies: verify_bodies(&populated.keys, &populated.client_secret, tagged),
            expect: br#""code":"VALID""#,
        };
        (workload, populated.app_id)
    };
    let (counted, counted_app) = workload(&on, "verify, counting on, 3 tags", true);
    let (uncounted, _) = workload(&off, "verify, counting off, no tags", false);
    // Whole-run figures, background work included (separate processes only).
    let whole_pids = match (&on.running, &off.running) {
        (Running::Process(a), Running::Process(b)) => Some((a.id(), b.id())),
        _ => None,
    };
    let failures = client.block_on(warm(on.addr, &counted, 8)) + client.block_on(warm(off.addr, &uncounted, 8));
    println!(
        "  {:.1} s measured per server in {} alternating slices (off first), after warming every key",
        settings.measure.as_secs_f64(),
        settings.rounds.max(1)
    );
    println!();
    let mut all_met = failures == 0;
    for &connections in &settings.connections {
        let before = whole_pids.map(|(a, b)| {
            let counts = client.block_on(async { (verifications(&on).await, verifications(&off).await) });
            (process_cpu(a), process_cpu(b), counts)
        });
        let (without, with) =
            client.block_on(run_pair(pids, (off.addr, &uncounted), (on.addr, &counted), connections, settings));
        if let (Some((a, b)), Some((cpu_on, cpu_off, (n_on, n_off)))) = (whole_pids, before) {
            // Write what the counting server holds (an analytics read does), so its cost is in.
            let url = format!("http://{}/v1/analytics/verifications?app_id={counted_app}&granularity=minute", on.addr);
            let read = client.block_on(async {
                let http = reqwest::Client::new();
                let login = http.post(format!("http://{}/v1/session", on.addr));
                let login = login.json(&json!({"password": on.admin_password})).send().await.expect("login");
                let cookie = login.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
                let response = http.get(url).header("cookie", cookie).send().await.expect("analytics");
                (response.status(), response.text().await.unwrap_or_default())
            });
            assert!(read.0.is_success(), "analytics read: {read:?}");
            let (after_on, after_off) =
                client.block_on(async { (verifications(&on).await, verifications(&off).await) });
            let per = |nanos: u64, n: u64| nanos as f64 / 1e3 / n.max(1) as f64;
            let (us_on, us_off) =
                (per(process_cpu(a) - cpu_on, after_on - n_on), per(process_cpu(b) - cpu_off, after_off - n_off));
            println!(
                "  whole run, each server's process CPU over every verification it answered, its background \
                 writes included (the counting server's pending counts written at the end): on {us_on:.1} µs, \
                 off {us_off:.1} µs: off / on {:.3}",
                us_off / us_on
            );
        }
        print_table(&[&without, &with]);
        let ratio = with.throughput() / without.throughput();
        let met = ratio >= TARGET_USAGE_RATIO && with.failures == 0 && without.failures == 0;
        // Each round's slices side by side: how much the machine's other work moved them.
        let mut rounds: Vec<f64> = with.slices.iter().zip(&without.slices).map(|(on, off)| on / off).collect();
        let listed: Vec<String> = rounds.iter().map(|r| format!("{r:.3}")).collect();
        rounds.sort_by(f64::total_cmp);
        println!();
        println!(
            "  each round, on / off: {} (median {:.3})",
            listed.join(", "),
            rounds.get(rounds.len() / 2).copied().unwrap_or(f64::NAN)
        );
        println!(
            "  throughput with counting and tags / without: {ratio:.3} (target >= {TARGET_USAGE_RATIO:.2}): {}",
            if met { "met" } else { "NOT met" }
        );
        println!();
        all_met &= met;
    }
    if let Some(load) = load_average() {
        println!("load average after the run (1 min, includes this benchmark): {load:.2}");
    }
    println!("all targets met: {}", if all_met { "yes" } else { "no" });
    drop(client);
    stop(on.running);
    stop(off.running);
    let _ = std::fs::remove_dir_all(&dir_on);
    let _ = std::fs::remove_dir_all(&dir_off);
}
