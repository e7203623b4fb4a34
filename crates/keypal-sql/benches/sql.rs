//! `cargo bench -p keypal-sql`: cold verify (no cache: every verify reads the
//! database), create, and listing an owner's 10 000 keys, on SQLite (a file under
//! `target/`) and the benches' PostgreSQL (schema `keypal_bench`, recreated per run).
//!
//! Each sample is one operation, so divan's median is the p50 latency.

// Benchmark set-up: a failure to build the fixture aborts the run, which is what it should do.
#![allow(clippy::panic, clippy::expect_used)]

use std::hint::black_box;
use std::sync::LazyLock;

use divan::Bencher;
use keypal::{CacheMode, KeyManager, ListQuery, NewKey, PlainKey};
use keypal_sql::{SqlOptions, SqlStore};
use tokio::runtime::Runtime;

fn main() {
    divan::main();
}

/// Keys in each database, all of one owner.
const KEYS: usize = 10_000;
const OWNER: &str = "owner_with_10k_keys";

static RUNTIME: LazyLock<Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
});

struct Fixture {
    keys: KeyManager<SqlStore>,
    plain: Vec<PlainKey>,
}

/// The benches' PostgreSQL: `KEYPAL_TEST_POSTGRES_URL`, else a private server (see `keypal-testing`).
fn postgres_url() -> &'static str {
    keypal_testing::PostgresServer::required().url()
}

async fn fixture(store: SqlStore) -> Fixture {
    // No verified-result cache: every verify is a cold database read.
    let keys = KeyManager::builder().cache(CacheMode::Off).store(store).build().expect("manager");
    let mut plain = Vec::with_capacity(KEYS);
    // Creates in flight from several tasks: the fixture builds faster than one commit at a time.
    for _ in 0..KEYS / 100 {
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let keys = keys.clone();
                tokio::spawn(async move { keys.create(NewKey::new().owner_id(OWNER)).await })
            })
            .collect();
        for task in tasks {
            plain.push(task.await.expect("join").unwrap_or_else(|e| panic!("create: {e}")).key);
        }
    }
    Fixture { keys, plain }
}

static SQLITE: LazyLock<Fixture> = LazyLock::new(|| {
    RUNTIME.block_on(async {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("keypal-sql-bench");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("bench directory");
        let url = format!("sqlite://{}", dir.join("bench.db").display());
        fixture(SqlStore::connect(&url).await.expect("sqlite")).await
    })
});

static POSTGRES: LazyLock<Fixture> = LazyLock::new(|| {
    RUNTIME.block_on(async {
        let admin = sqlx::PgPool::connect(postgres_url()).await.expect("the benches' PostgreSQL answers");
        sqlx::query("DROP SCHEMA IF EXISTS keypal_bench CASCADE").execute(&admin).await.expect("drop bench schema");
        admin.close().await;
        let options = SqlOptions::new().schema("keypal_bench");
        let store = SqlStore::connect_with(postgres_url(), &options).await.expect("postgres");
        let fixture = fixture(store).await;
        if let SqlStore::Postgres(pg) = fixture.keys.store() {
            sqlx::query("ANALYZE").execute(pg.pool()).await.expect("analyze");
        }
        fixture
    })
});

fn fixture_of(dialect: &str) -> &'static Fixture {
    match dialect {
        "sqlite" => &SQLITE,
        _ => &POSTGRES,
    }
}

const DIALECTS: [&str; 2] = ["sqlite", "postgres"];

/// A valid SHA-256 key, verified with no cache: parse, one indexed lookup, hash check, state.
#[divan::bench(args = DIALECTS, sample_count = 2000, sample_size = 1)]
fn cold_verify_sha256(bencher: Bencher, dialect: &str) {
    let f = fixture_of(dialect);
    let mut i = 0usize;
    bencher.bench_local(|| {
        i = (i + 7919) % f.plain.len();
        let v = RUNTIME.block_on(f.keys.verify(f.plain[i].expose())).expect("verify");
        assert!(v.is_valid());
    });
}

/// A well-formed key that is not stored: one indexed probe that finds nothing.
#[divan::bench(args = DIALECTS, sample_count = 2000, sample_size = 1)]
fn cold_verify_not_found(bencher: Bencher, dialect: &str) {
    let f = fixture_of(dialect);
    bencher
        .with_inputs(|| f.keys.generate_key())
        .bench_local_refs(|key| black_box(RUNTIME.block_on(f.keys.verify(key.expose())).expect("verify")));
}

/// One create: generate, hash, and a transaction with the insert and its audit event
/// (durable on return: SQLite syncs its write-ahead log).
#[divan::bench(args = DIALECTS, sample_count = 500, sample_size = 1)]
fn create(bencher: Bencher, dialect: &str) {
    let f = fixture_of(dialect);
    bencher.bench_local(|| RUNTIME.block_on(f.keys.create(NewKey::new().owner_id("bench_creates"))).expect("create"));
}

/// The first page (100, newest first) of an owner with 10 000 keys.
#[divan::bench(args = DIALECTS, sample_count = 500, sample_size = 1)]
fn list_owner_first_page_of_100(bencher: Bencher, dialect: &str) {
    let f = fixture_of(dialect);
    bencher.bench_local(|| {
        let page = RUNTIME.block_on(f.keys.list(ListQuery::new().owner_id(OWNER).limit(100))).expect("list");
        assert_eq!(page.items.len(), 100);
    });
}

/// All 10 000 keys of an owner, 1 000 per page, following cursors.
#[divan::bench(args = DIALECTS, sample_count = 20, sample_size = 1)]
fn list_owner_all_10000(bencher: Bencher, dialect: &str) {
    let f = fixture_of(dialect);
    bencher.bench_local(|| {
        RUNTIME.block_on(async {
            let mut query = ListQuery::new().owner_id(OWNER).limit(1000);
            let mut n = 0;
            loop {
                let page = f.keys.list(query.clone()).await.expect("list");
                n += page.items.len();
                match page.next_cursor {
                    Some(c) => query = query.cursor(c),
                    None => break,
                }
            }
            assert_eq!(n, KEYS);
        })
    });
}
