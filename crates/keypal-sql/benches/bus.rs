//! `cargo bench -p keypal-sql --bench bus`: how fast a revocation on instance A reaches
//! instance B over [`PgBus`] (`LISTEN`/`NOTIFY`), on the benches' PostgreSQL (schema
//! `keypal_bench_bus`, recreated per run). A and B are two managers with the verified
//! cache on (60 s TTL), each on a pool of its own; B had the key cached as valid.
//!
//! - `revoke_alone`: A's revoke (the baseline the others include).
//! - `revoke_until_b_refuses`: A revokes, then B's subscription applies the
//!   announcement and B's next verify refuses the key (asserted): the end-to-end figure.
//! - `event_to_handler`: one key event handed to A's sink until B's handler has it:
//!   the bus alone (queue, `pg_notify`, delivery to the listener).
//!
//! Each sample is one operation, so divan's median is the p50 latency.

// Benchmark set-up: a failure to build the fixture aborts the run, which is what it should do.
#![allow(clippy::panic, clippy::expect_used)]

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use divan::Bencher;
use keypal::{Action, AuditContext, CacheMode, Code, Event, EventSink, Invalidation, KeyId, KeyManager, NewKey};
use keypal_sql::{BusSubscription, PgBus, PgBusSink, PostgresStore, SqlOptions};
use time::OffsetDateTime;
use tokio::runtime::Runtime;
use tokio::sync::{Mutex, mpsc};

fn main() {
    divan::main();
}

const SCHEMA: &str = "keypal_bench_bus";
const PREFIX: &str = "keypal_bench_bus_";

static RUNTIME: LazyLock<Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
});

/// The benches' PostgreSQL: `KEYPAL_TEST_POSTGRES_URL`, else a private server (see `keypal-testing`).
fn postgres_url() -> &'static str {
    keypal_testing::PostgresServer::required().url()
}

struct Fixture {
    a: KeyManager<PostgresStore>,
    b: Arc<KeyManager<PostgresStore>>,
    sink: PgBusSink,
    /// The key ids B's handler has applied, in order.
    heard: Mutex<mpsc::UnboundedReceiver<KeyId>>,
    _subscription: BusSubscription,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    RUNTIME.block_on(async {
        let admin = sqlx::PgPool::connect(postgres_url())
            .await
            .unwrap_or_else(|e| panic!("the benches' PostgreSQL does not answer: {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")))
            .execute(&admin)
            .await
            .expect("drop bench schema");
        admin.close().await;
        let options = SqlOptions::new().schema(SCHEMA);
        let store_a = PostgresStore::connect_with(postgres_url(), &options).await.expect("store A");
        let store_b = PostgresStore::connect_with(postgres_url(), &options).await.expect("store B");
        let bus_a = PgBus::connect(postgres_url(), PREFIX).await.expect("bus A");
        let bus_b = PgBus::connect(postgres_url(), PREFIX).await.expect("bus B");
        let ttl = Duration::from_secs(60);
        let sink = bus_a.event_sink();
        let a =
            KeyManager::builder().store(store_a).cache(CacheMode::On).cache_ttl(ttl).event_sink(sink.clone()).build();
        let b = KeyManager::builder().store(store_b).cache(CacheMode::On).cache_ttl(ttl).build();
        let (a, b) = (a.expect("manager A"), Arc::new(b.expect("manager B")));
        let (tx, rx) = mpsc::unbounded_channel();
        let cache = Arc::clone(&b);
        let subscription = bus_b
            .subscribe(move |message: Invalidation| {
                message.apply(&cache);
                if let Invalidation::Key(id) = message {
                    let _ = tx.send(id);
                }
            })
            .await
            .expect("subscribe B");
        Fixture { a, b, sink, heard: Mutex::new(rx), _subscription: subscription }
    })
});

impl Fixture {
    /// A key created on A and cached as valid on B: `(id, key)`.
    fn cached_on_b(&self) -> (KeyId, String) {
        RUNTIME.block_on(async {
            let created = self.a.create(NewKey::new()).await.expect("create on A");
            let key = created.key.expose().to_owned();
            for _ in 0..2 {
                assert_eq!(self.b.verify(&key).await.expect("verify on B").code(), Code::Valid);
            }
            (created.record.id, key)
        })
    }

    /// Waits until B's handler has applied `id`.
    async fn heard(&self, id: KeyId) {
        let mut heard = self.heard.lock().await;
        let wait = async { while heard.recv().await.expect("subscription alive") != id {} };
        tokio::time::timeout(Duration::from_secs(5), wait).await.expect("B heard nothing within 5 s");
    }
}

#[divan::bench(sample_count = 300, sample_size = 1)]
fn revoke_alone(bencher: Bencher) {
    let f = &*FIXTURE;
    bencher.with_inputs(|| f.cached_on_b()).bench_local_values(|(id, _key)| {
        RUNTIME.block_on(async { f.a.revoke(&id).await.expect("revoke on A") });
    });
}

#[divan::bench(sample_count = 300, sample_size = 1)]
fn revoke_until_b_refuses(bencher: Bencher) {
    let f = &*FIXTURE;
    bencher.with_inputs(|| f.cached_on_b()).bench_local_values(|(id, key)| {
        RUNTIME.block_on(async {
            f.a.revoke(&id).await.expect("revoke on A");
            f.heard(id).await;
            assert_eq!(f.b.verify(&key).await.expect("verify on B").code(), Code::Revoked);
        });
    });
}

#[divan::bench(sample_count = 1000, sample_size = 1)]
fn event_to_handler(bencher: Bencher) {
    let f = &*FIXTURE;
    bencher
        .with_inputs(|| {
            let mut event = Event::new(Action::Revoked, OffsetDateTime::now_utc(), AuditContext::new("bench"));
            event.key_id = Some(KeyId::new());
            event
        })
        .bench_local_values(|event| {
            f.sink.record(&event);
            RUNTIME.block_on(f.heard(event.key_id.expect("a key id")));
        });
}
