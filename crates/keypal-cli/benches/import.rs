//! `keypal keys import` of SHA-256-hashed keys, as an operator runs it: the binary on
//! NDJSON files of 10 000 and 100 000 keys (each of its own owner, so the owner limit
//! is checked for every key), into a new SQLite file and a new PostgreSQL schema (a
//! private server). Reports per store and size the median wall time of three runs, keys
//! per second, the CPU time of the process (user + system, read every 5 ms: what the
//! import costs, apart from waiting on a busy machine) and its peak memory (resident set), which should not
//! grow with the number of keys.
//!
//! `cargo bench -p keypal-cli --bench import`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const KEYPAL: &str = env!("CARGO_BIN_EXE_keypal");
const TEMPLATE: &str = "sk_{secret:32:base62}";
const MASTER_KEY: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
const RUNS: usize = 3;

/// A place to import into: the variables naming it.
struct Target {
    env: Vec<(&'static str, String)>,
}

/// One import's figures.
struct Run {
    wall: Duration,
    cpu: Duration,
    peak_rss_kib: u64,
}

fn keypal(target: &Target, args: &[&str]) -> Command {
    let mut command = Command::new(KEYPAL);
    command.env_clear().env("KEYPAL_MASTER_KEY", MASTER_KEY).args(args);
    for (name, value) in &target.env {
        command.env(name, value);
    }
    command
}

/// An NDJSON file of `n` import items: SHA-256 digests of new keys, one owner each.
fn items(dir: &Path, n: usize) -> PathBuf {
    let out = Command::new(KEYPAL)
        .args(["generate", "--json", "--template", TEMPLATE, "--count", &n.to_string()])
        .output()
        .expect("keypal generate runs");
    assert!(out.status.success(), "keypal generate failed");
    let mut text = String::with_capacity(n * 160);
    for (i, line) in String::from_utf8(out.stdout).unwrap().lines().enumerate() {
        let pair: Value = serde_json::from_str(line).unwrap();
        let digest = pair["hash"].as_str().unwrap().strip_prefix("$sha256$").unwrap();
        let item = json!({
            "hash": {"algorithm": "sha256", "value": digest},
            "owner_id": format!("user_{i}"),
            "name": "imported",
        });
        text.push_str(&item.to_string());
        text.push('\n');
    }
    let path = dir.join(format!("items-{n}.ndjson"));
    std::fs::write(&path, text).unwrap();
    path
}

/// The peak resident set of a running process, in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The CPU time (user + system) a running process has used so far, from
/// `/proc/PID/stat` (in clock ticks, 100 a second on Linux).
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    Some(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

/// Imports `file` into a new application of `target`.
fn import(target: &Target, file: &Path) -> Run {
    let created = keypal(target, &["apps", "create", "--name", "Bench", "--label", "bench", "--template", TEMPLATE])
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let started = Instant::now();
    let mut child = keypal(target, &["keys", "import", "--app", "bench", file.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut peak, mut cpu) = (0, Duration::ZERO);
    let status = loop {
        if let Some(kib) = peak_rss_kib(child.id()) {
            peak = peak.max(kib);
        }
        if let Some(used) = cpu_time(child.id()) {
            cpu = cpu.max(used);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let wall = started.elapsed();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success() && stderr.contains(" 0 refused"), "the import failed: {stderr}");
    Run { wall, cpu, peak_rss_kib: peak }
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; a filter selects stores by name.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("import-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sizes = [10_000, 100_000];
    let files: Vec<(usize, PathBuf)> = sizes.iter().map(|&n| (n, items(&dir, n))).collect();
    let postgres = keypal_testing::PostgresServer::shared();

    println!("store       keys   wall (median of {RUNS})   keys/s   CPU (user+sys)   peak RSS");
    let mut run = 0;
    for store in ["sqlite", "postgres"] {
        if filter.as_deref().is_some_and(|f| !store.contains(f)) {
            continue;
        }
        for (n, file) in &files {
            let mut runs = Vec::new();
            for _ in 0..RUNS {
                run += 1;
                let target = match store {
                    "sqlite" => Target {
                        env: vec![(
                            "KEYPAL_DATABASE_URL",
                            format!("sqlite://{}", dir.join(format!("run-{run}.db")).display()),
                        )],
                    },
                    _ => {
                        let Some(server) = postgres else {
                            println!("postgres    (no PostgreSQL: skipped)");
                            break;
                        };
                        Target {
                            env: vec![
                                ("KEYPAL_DATABASE_URL", server.url().to_owned()),
                                ("KEYPAL_DATABASE_SCHEMA", keypal_testing::PostgresServer::fresh_schema()),
                            ],
                        }
                    }
                };
                runs.push(import(&target, file));
            }
            if runs.is_empty() {
                continue;
            }
            let wall = median(runs.iter().map(|r| r.wall).collect());
            let cpu = median(runs.iter().map(|r| r.cpu).collect());
            let peak = runs.iter().map(|r| r.peak_rss_kib).max().unwrap_or(0);
            println!(
                "{store:<8} {n:>8}   {:>10.2} s   {:>14.0}   {:>11.2} s   {:>6.1} MiB",
                wall.as_secs_f64(),
                *n as f64 / wall.as_secs_f64(),
                cpu.as_secs_f64(),
                peak as f64 / 1024.0
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
