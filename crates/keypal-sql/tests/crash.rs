//! Durability: a writer process creating keys as fast as it can is killed with SIGKILL
//! mid-stream; every create it acknowledged before dying is in the database afterwards.
//!
//! The writer is this test binary itself, started again to run only `crash_writer`
//! (ignored in normal runs) with the database named in the environment.

// Test helpers assert by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use keypal::{KeyId, KeyManager, NewKey, Store};
use keypal_sql::{SqlOptions, SqlStore};

const URL_ENV: &str = "KEYPAL_CRASH_WRITER_URL";
const SCHEMA_ENV: &str = "KEYPAL_CRASH_WRITER_SCHEMA";
/// Acknowledged creates to wait for before the kill.
const ACKS_BEFORE_KILL: usize = 300;

fn options(schema: Option<String>) -> SqlOptions {
    match schema {
        Some(schema) => common::postgres_options(&schema),
        None => SqlOptions::new(),
    }
}

/// The writer half, run in a child process: creates keys forever, printing `ACK <id>`
/// after each create returned success.
#[tokio::test]
#[ignore = "started by the crash tests as a child process"]
async fn crash_writer() {
    let url = std::env::var(URL_ENV).expect("the crash writer runs only as a child of a crash test");
    let store = SqlStore::connect_with(&url, &options(std::env::var(SCHEMA_ENV).ok())).await.expect("connect");
    let keys = KeyManager::builder().store(store).build().expect("manager");
    for i in 0u64.. {
        let created = keys.create(NewKey::new().owner_id(format!("owner_{}", i % 10))).await.expect("create");
        // println! flushes each line on a pipe only when stdout is line-buffered; write explicitly.
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "ACK {}", created.record.id).expect("stdout");
        out.flush().expect("flush");
    }
}

/// Starts the writer, kills it after `ACKS_BEFORE_KILL` acknowledgements, and returns
/// every id it acknowledged (including those read after the kill, still in the pipe).
fn acknowledged_before_kill(url: &str, schema: Option<&str>) -> Vec<KeyId> {
    let mut command = Command::new(std::env::current_exe().expect("test binary"));
    command
        .args(["crash_writer", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(URL_ENV, url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(schema) = schema {
        command.env(SCHEMA_ENV, schema);
    }
    let mut child = command.spawn().expect("start the writer");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut acked = Vec::new();
    let mut killed = false;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(id) = line.strip_prefix("ACK ") {
            acked.push(id.parse::<KeyId>().expect("an id"));
        }
        if acked.len() == ACKS_BEFORE_KILL && !killed {
            child.kill().expect("SIGKILL the writer"); // SIGKILL on Unix: no cleanup, no flush
            killed = true;
        }
    }
    let status = child.wait().expect("reap the writer");
    assert!(killed, "the writer stopped by itself after {} acks ({status})", acked.len());
    acked
}

async fn assert_all_present(store: &SqlStore, acked: &[KeyId]) {
    for id in acked {
        assert!(store.get(*id).await.expect("get").is_some(), "acknowledged key {id} was lost in the crash");
    }
    let stored = store.count(&keypal::ListQuery::new()).await.expect("count");
    assert!(stored >= acked.len() as u64, "{stored} stored < {} acknowledged", acked.len());
}

#[test]
fn sqlite_keeps_every_acknowledged_create_across_kill_9() {
    let url = common::sqlite_url();
    let acked = acknowledged_before_kill(&url, None);
    tokio::runtime::Runtime::new().expect("runtime").block_on(async {
        // Reopening recovers from the write-ahead log the dead writer left.
        let store = SqlStore::connect(&url).await.expect("reopen after the crash");
        assert_all_present(&store, &acked).await;
    });
}

#[test]
fn postgres_keeps_every_acknowledged_create_across_kill_9() {
    let Some(url) = common::postgres_url() else { return };
    let schema = common::fresh_schema();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    // Create the schema first so the writer only inserts.
    runtime.block_on(async {
        drop(common::postgres_store().await);
        SqlStore::connect_with(url, &options(Some(schema.clone()))).await.expect("create the schema").close().await;
    });
    let acked = acknowledged_before_kill(url, Some(&schema));
    runtime.block_on(async {
        let store = SqlStore::connect_with(url, &options(Some(schema))).await.expect("reconnect");
        assert_all_present(&store, &acked).await;
    });
}
