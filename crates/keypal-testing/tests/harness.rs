//! The harness itself: private servers answer on ports of their own and are gone once
//! their test binary ends, even by SIGKILL; missing programs skip (one line naming the
//! package) or, under `CI=true`, fail; a paused proxy makes its server look hung.
//!
//! Each case runs this test binary again as a child, to run one ignored probe in a
//! process of its own with the environment the case sets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keypal_testing::{PostgresServer, Proxy, RedisServer};

const PROBE_ENV: &str = "KEYPAL_TESTING_PROBE_END";

/// Runs one ignored probe of this binary in a child process, with `env` set (a `None`
/// value removes the variable).
fn probe(name: &str, env: &[(&str, Option<&str>)]) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args([name, "--exact", "--ignored", "--nocapture", "--test-threads=1"]);
    for (key, value) in env {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    command
}

/// The port of a `scheme://...host:port/...` URL.
fn port_of(url: &str) -> u16 {
    let rest = url.split_once("://").unwrap().1;
    let authority = rest.split(['/', '?']).next().unwrap();
    authority.rsplit_once(':').unwrap().1.parse().unwrap()
}

fn listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// A Redis command over a raw connection; the first line of the answer.
fn redis_command(port: u16, command: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.write_all(format!("{command}\r\n").as_bytes()).unwrap();
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).unwrap();
    answer.trim_end().to_owned()
}

/// The folder of the private PostgreSQL listening on `port`.
fn postgres_dir(port: u16) -> PathBuf {
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.file_name().unwrap().to_string_lossy().starts_with("keypal-test-postgres-"))
        .find(|path| {
            std::fs::read_to_string(path.join("data/postmaster.pid"))
                .is_ok_and(|pid| pid.lines().nth(3) == Some(port.to_string().as_str()))
        })
        .expect("the private server's folder")
}

/// The folder of the private Redis listening on `port` (`CONFIG GET dir`).
fn redis_dir(port: u16) -> PathBuf {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.write_all(b"CONFIG GET dir\r\n").unwrap();
    let mut lines = BufReader::new(stream).lines();
    // *2, $3, dir, $<n>, <path>
    let answer: Vec<String> = (0..5).map(|_| lines.next().unwrap().unwrap()).collect();
    PathBuf::from(&answer[4])
}

/// Probe: starts the shared servers, prints `URL <url>` and `DIR <folder>` for each,
/// then ends as `KEYPAL_TESTING_PROBE_END` says: `exit`, or `hang` (to be killed).
#[test]
#[ignore = "run by the tests below as a child process"]
fn probe_start_servers() {
    let postgres = PostgresServer::shared().expect("PostgreSQL");
    let redis = RedisServer::shared().expect("Redis");
    let mut out = std::io::stdout().lock();
    for (url, dir) in
        [(postgres.url(), postgres_dir(port_of(postgres.url()))), (redis.url(), redis_dir(port_of(redis.url())))]
    {
        writeln!(out, "URL {url}").unwrap();
        writeln!(out, "DIR {}", dir.display()).unwrap();
    }
    out.flush().unwrap();
    drop(out);
    if std::env::var(PROBE_ENV).as_deref() == Ok("hang") {
        loop {
            std::thread::sleep(Duration::from_secs(60));
        }
    }
}

/// Probe: asks for both shared servers and says what it got.
#[test]
#[ignore = "run by the tests below as a child process"]
fn probe_ask_for_servers() {
    println!("postgres: {}", PostgresServer::shared().is_some());
    println!("redis: {}", RedisServer::shared().is_some());
    println!("postgres again: {}", PostgresServer::shared().is_some());
}

/// Starts the probe, reads the URLs and folders it prints.
fn start_probe(end: &str) -> (Child, Vec<(String, PathBuf)>) {
    let mut child = probe(
        "probe_start_servers",
        &[(PROBE_ENV, Some(end)), ("KEYPAL_TEST_POSTGRES_URL", None), ("KEYPAL_TEST_REDIS_URL", None)],
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut servers = Vec::new();
    while servers.len() < 2 {
        let Some(Ok(line)) = lines.next() else { panic!("the probe ended early: {:?}", child.wait()) };
        // libtest may print `test probe_start_servers ... ` before the probe's first line.
        if let Some((_, url)) = line.split_once("URL ") {
            let dir = lines.next().unwrap().unwrap();
            servers.push((url.to_owned(), PathBuf::from(dir.strip_prefix("DIR ").unwrap())));
        }
    }
    // The probe still writes libtest's closing lines: read them, so it can exit cleanly.
    std::thread::spawn(move || lines.for_each(drop));
    (child, servers)
}

/// Waits until nothing listens on `port` and `dir` is gone.
fn assert_removed(url: &str, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while listening(port_of(url)) || dir.exists() {
        assert!(Instant::now() < deadline, "{url} still answers or {} still exists", dir.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn installed() -> bool {
    PostgresServer::shared().is_some() && RedisServer::shared().is_some()
}

#[test]
fn private_servers_listen_on_ports_of_their_own_and_are_removed_when_the_binary_exits() {
    if !installed() {
        return;
    }
    let (mut child, servers) = start_probe("exit");
    for (url, dir) in &servers {
        assert!(url.starts_with("postgres://postgres@127.0.0.1:") || url.starts_with("redis://127.0.0.1:"), "{url}");
        assert!(![5432, 6379].contains(&port_of(url)), "a private server, not the usual one: {url}");
        assert!(dir.starts_with(std::env::temp_dir()), "{}", dir.display());
    }
    assert!(child.wait().unwrap().success());
    for (url, dir) in &servers {
        assert_removed(url, dir);
    }
}

#[test]
fn private_servers_are_removed_when_the_binary_is_killed() {
    if !installed() {
        return;
    }
    let (mut child, servers) = start_probe("hang");
    for (url, dir) in &servers {
        assert!(listening(port_of(url)), "{url} answers while its test binary runs");
        assert!(dir.is_dir());
    }
    child.kill().unwrap(); // SIGKILL: no destructor, no exit handler runs
    child.wait().unwrap();
    for (url, dir) in &servers {
        assert_removed(url, dir);
    }
}

#[test]
fn missing_programs_skip_with_one_line_naming_the_package() {
    let empty = Path::new(env!("CARGO_TARGET_TMPDIR")).join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let output = probe(
        "probe_ask_for_servers",
        &[
            ("CI", None),
            ("PATH", Some(empty.to_str().unwrap())),
            ("KEYPAL_TEST_POSTGRES_BIN", Some(empty.to_str().unwrap())),
            ("KEYPAL_TEST_POSTGRES_URL", None),
            ("KEYPAL_TEST_REDIS_URL", None),
        ],
    )
    .output()
    .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("postgres: false\nredis: false\npostgres again: false"), "{stdout}");
    let skipped: Vec<&str> = stderr.lines().filter(|line| line.starts_with("skipped:")).collect();
    assert_eq!(skipped.len(), 2, "one line per service, however often it is asked for: {stderr}");
    assert!(skipped[0].contains("Debian package `postgresql`"), "{}", skipped[0]);
    assert!(skipped[1].contains("Debian package `redis-server`"), "{}", skipped[1]);
}

#[test]
fn missing_programs_fail_the_tests_under_ci() {
    let empty = Path::new(env!("CARGO_TARGET_TMPDIR")).join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    for (service, package, env) in [
        ("postgres", "postgresql", ("KEYPAL_TEST_POSTGRES_BIN", Some(empty.to_str().unwrap()))),
        ("redis", "redis-server", ("PATH", Some(empty.to_str().unwrap()))),
    ] {
        let postgres_url = if service == "redis" { Some("postgres://unused.invalid/x") } else { None };
        let output = probe(
            "probe_ask_for_servers",
            &[("CI", Some("true")), env, ("KEYPAL_TEST_POSTGRES_URL", postgres_url), ("KEYPAL_TEST_REDIS_URL", None)],
        )
        .output()
        .unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(!output.status.success(), "{service} missing under CI=true must fail: {stdout}\n{stderr}");
        assert!(stderr.contains(&format!("Debian package `{package}`")), "{stdout}\n{stderr}");
        assert!(stderr.contains("CI=true"), "{stderr}");
    }
}

#[test]
fn a_url_in_the_environment_is_used_as_is() {
    let output = probe(
        "probe_ask_for_servers",
        &[
            ("CI", Some("true")),
            ("KEYPAL_TEST_POSTGRES_URL", Some("postgres://someone@db.invalid:5/x")),
            ("KEYPAL_TEST_REDIS_URL", Some("redis://cache.invalid:6")),
            ("PATH", Some("/nonexistent")),
        ],
    )
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("postgres: true\nredis: true"), "nothing to start, nothing missing: {stdout}");
}

#[test]
fn a_restarted_private_redis_is_back_on_its_port_and_empty() {
    let Some(mut redis) = RedisServer::start() else { return };
    let port = port_of(redis.url());
    assert_eq!(redis_command(port, "SET k v"), "+OK");
    redis.stop();
    assert!(!listening(port));
    redis.restart();
    assert_eq!(port_of(redis.url()), port);
    assert_eq!(redis_command(port, "EXISTS k"), ":0");
}

#[test]
fn a_paused_proxy_holds_traffic_until_resumed() {
    let Some(redis) = RedisServer::shared() else { return };
    let proxy = Proxy::start(redis.url()).unwrap();
    let port = port_of(proxy.url());
    assert_ne!(port, port_of(redis.url()));
    assert_eq!(redis_command(port, "PING"), "+PONG");

    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    proxy.pause();
    stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    stream.write_all(b"PING\r\n").unwrap();
    let mut answer = [0u8; 7];
    let error = stream.read_exact(&mut answer).unwrap_err();
    assert!(matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut), "{error}");
    proxy.resume();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"+PONG\r\n");

    drop(proxy);
    let mut rest = Vec::new();
    assert_eq!(stream.read_to_end(&mut rest).unwrap(), 0, "closed with the proxy");
}
