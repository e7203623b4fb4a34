//! `cargo bench -p keypal-sql --bench analytics`: usage analytics reads over 10 000 keys ×
//! 30 days of hour buckets, on SQLite (a file under `target/`) and the benches'
//! PostgreSQL (schema `keypal_analytics_bench`, recreated per run).
//!
//! The fixture is what a month of flushes leaves in `keypal_counts` and `keypal_minutes` for one application
//! of 10 000 keys (1 000 owners of 10 keys each) that each verified every hour: 7.2 M
//! key-hour rows, 300 000 key-day rows, 720 000 owner-hour rows, the 7-day and 30-day
//! rows of keys and owners, the application's hour, day and minute rows, and 20 tags'
//! hour rows, and the minute rows of the last seven minutes for every key and owner, which
//! the roll-up has not added to the coarser rows yet (reads add them). It is written by SQL (a generated series
//! and sums of it), not by flushes, to build in a minute; the bench reports how long.
//!
//! Each sample is one query, so divan's median is the p50 latency.

// Benchmark set-up: a failure to build the fixture aborts the run, which is what it should do.
#![allow(clippy::panic, clippy::expect_used)]

use std::sync::LazyLock;
use std::time::Instant;

use divan::Bencher;
use keypal::KeyId;
use keypal_sql::{AnalyticsQuery, Granularity, GroupBy, SqlOptions, SqlStore};
use time::OffsetDateTime;
use tokio::runtime::Runtime;

fn main() {
    divan::main();
}

const KEYS: i64 = 10_000;
const HOURS: i64 = 720;
const APP: &str = "bench_app";

/// The first hour of the fixture: 2026-01-01T00:00:00Z.
const START: i64 = 1_767_225_600;

static RUNTIME: LazyLock<Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
});

/// The statements that fill the fixture, in order (`$START` replaced). The key rows
/// come first, generated; every other row is a sum of them, as a flush would have written.
fn fill(key_rows: &str, sixty: &str) -> Vec<String> {
    let sums = "SUM(valid), SUM(revoked), SUM(disabled), SUM(expired), SUM(insufficient_scope), SUM(rate_limited), SUM(usage_exceeded)";
    let columns = "span, scope, namespace, subject, tag, bucket, valid, revoked, disabled, expired, insufficient_scope, rate_limited, usage_exceeded";
    let minute_columns = "bucket, scope, namespace, subject, tag, valid, revoked, disabled, expired, insufficient_scope, rate_limited, usage_exceeded";
    let key_hours = "FROM keypal_counts WHERE span = 3600 AND scope = 'key'";
    let from_counts = "FROM keypal_counts c";
    vec![
        key_rows.to_owned(),
        // The keys' days.
        format!("INSERT INTO keypal_counts ({columns}) SELECT 86400, 'key', namespace, subject, '', (bucket / 86400) * 86400, {sums} {key_hours} GROUP BY namespace, subject, (bucket / 86400) * 86400"),
        // The keys' 7-day and 30-day periods (what ranking them over long ranges reads): sums
        // of their days, since both are whole days from the epoch.
        format!("INSERT INTO keypal_counts ({columns}) SELECT s.span, 'key', namespace, subject, '', (bucket / s.span) * s.span, {sums} {from_counts} CROSS JOIN (SELECT 604800 AS span UNION ALL SELECT 2592000) s WHERE c.span = 86400 AND c.scope = 'key' GROUP BY s.span, namespace, subject, (bucket / s.span) * s.span"),
        // The owners' hours and days (key ...000000004242 belongs to owner-00000000424).
        format!("INSERT INTO keypal_counts ({columns}) SELECT 3600, 'owner', namespace, 'owner-' || substr(subject, 25, 11), '', bucket, {sums} {key_hours} GROUP BY namespace, substr(subject, 25, 11), bucket"),
        format!("INSERT INTO keypal_counts ({columns}) SELECT 86400, 'owner', namespace, subject, '', (bucket / 86400) * 86400, {sums} FROM keypal_counts WHERE span = 3600 AND scope = 'owner' GROUP BY namespace, subject, (bucket / 86400) * 86400"),
        format!("INSERT INTO keypal_counts ({columns}) SELECT s.span, 'owner', namespace, subject, '', (bucket / s.span) * s.span, {sums} {from_counts} CROSS JOIN (SELECT 604800 AS span UNION ALL SELECT 2592000) s WHERE c.span = 86400 AND c.scope = 'owner' GROUP BY s.span, namespace, subject, (bucket / s.span) * s.span"),
        // The application's hours and days.
        format!("INSERT INTO keypal_counts ({columns}) SELECT 3600, 'app', namespace, '', '', bucket, {sums} {key_hours} GROUP BY namespace, bucket"),
        format!("INSERT INTO keypal_counts ({columns}) SELECT 86400, 'app', namespace, '', '', (bucket / 86400) * 86400, {sums} FROM keypal_counts WHERE span = 3600 AND scope = 'app' GROUP BY namespace, (bucket / 86400) * 86400"),
        // 20 tags' hours: each hour's verifications spread over them.
        format!("INSERT INTO keypal_counts ({columns}) SELECT 3600, 'app', namespace, '', 'GET /v1/endpoint-' || t.n, bucket, valid / (t.n + 2), 0, 0, 0, 0, rate_limited / (t.n + 2), 0 \
                 FROM keypal_counts CROSS JOIN (SELECT 0 AS n UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9 \
                 UNION ALL SELECT 10 UNION ALL SELECT 11 UNION ALL SELECT 12 UNION ALL SELECT 13 UNION ALL SELECT 14 UNION ALL SELECT 15 UNION ALL SELECT 16 UNION ALL SELECT 17 UNION ALL SELECT 18 UNION ALL SELECT 19) t \
                 WHERE span = 3600 AND scope = 'app' AND tag = ''"),
        // The application's minutes over the last 48 hours of the month.
        format!("INSERT INTO keypal_minutes ({minute_columns}) SELECT bucket + m.n * 60, 'app', namespace, '', '', valid / 60, 0, 0, 0, 0, rate_limited / 60, 0 \
                 FROM keypal_counts CROSS JOIN {sixty} m WHERE span = 3600 AND scope = 'app' AND tag = '' AND bucket >= $START + {}", (HOURS - 48) * 3600),
        // The month's last seven minutes are not rolled up yet (as in a running service, where
        // the roll-up runs every five minutes, two minutes behind): every key's and owner's minute rows,
        // which reads add to the coarser rows.
        format!("INSERT INTO keypal_minutes ({minute_columns}) SELECT $END - 420 + m.n * 60, scope, namespace, subject, '', 1, 0, 0, 0, 0, 0, 0 \
                 FROM keypal_counts CROSS JOIN {sixty} m WHERE span = 86400 AND scope IN ('key', 'owner') AND bucket = $END - 86400 AND m.n < 7"),
        "UPDATE keypal_rollup SET rolled_until = $END - 420".to_owned(),
    ]
    .into_iter()
    .map(|sql| sql.replace("$START", &START.to_string()).replace("$END", &(START + HOURS * 3600).to_string()))
    .collect()
}

/// The numbers 0 to 59, as a table `n`.
const SQLITE_SIXTY: &str =
    "(WITH RECURSIVE s(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM s WHERE n < 59) SELECT n FROM s)";
const POSTGRES_SIXTY: &str = "(SELECT generate_series(0, 59) AS n)";

/// 7.2 M key-hour rows: key `i` (id `00000000-0000-7000-8000-` and `i` in 12 digits; owner
/// `owner-` and `i / 10` in 11 digits) in hour `j` has `10 + (7i + j) % 50` valid verifications,
/// `(i + j) % 3` rate-limited ones and `(i * j) % 2` out of credits.
fn sqlite_key_rows() -> String {
    format!(
        "INSERT INTO keypal_counts (span, scope, namespace, subject, tag, bucket, valid, rate_limited, usage_exceeded) \
         WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i < {}), \
         h(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM h WHERE j < {}) \
         SELECT 3600, 'key', '{APP}', printf('00000000-0000-7000-8000-%012d', i), '', {START} + j * 3600, 10 + (i * 7 + j) % 50, (i + j) % 3, (i * j) % 2 \
         FROM k CROSS JOIN h",
        KEYS - 1,
        HOURS - 1
    )
}

fn postgres_key_rows() -> String {
    format!(
        "INSERT INTO keypal_counts (span, scope, namespace, subject, tag, bucket, valid, rate_limited, usage_exceeded) \
         SELECT 3600, 'key', '{APP}', '00000000-0000-7000-8000-' || lpad(i::text, 12, '0'), '', {START} + j * 3600, 10 + (i * 7 + j) % 50, (i + j) % 3, (i * j) % 2 \
         FROM generate_series(0, {}) i CROSS JOIN generate_series(0, {}) j",
        KEYS - 1,
        HOURS - 1
    )
}

/// The benches' PostgreSQL: `KEYPAL_TEST_POSTGRES_URL`, else a private server (see `keypal-testing`).
fn postgres_url() -> &'static str {
    keypal_testing::PostgresServer::required().url()
}

static SQLITE: LazyLock<SqlStore> = LazyLock::new(|| {
    RUNTIME.block_on(async {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("keypal-analytics-bench");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("bench directory");
        let url = format!("sqlite://{}", dir.join("bench.db").display());
        let store = SqlStore::connect(&url).await.expect("sqlite");
        let SqlStore::Sqlite(s) = &store else { unreachable!() };
        let started = Instant::now();
        let mut tx = s.pool().begin().await.expect("begin");
        for sql in fill(&sqlite_key_rows(), SQLITE_SIXTY) {
            sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .execute(&mut *tx)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        tx.commit().await.expect("commit");
        sqlx::query("ANALYZE").execute(s.pool()).await.expect("analyze");
        report("sqlite", &store, started).await;
        store
    })
});

static POSTGRES: LazyLock<SqlStore> = LazyLock::new(|| {
    RUNTIME.block_on(async {
        let admin = sqlx::PgPool::connect(postgres_url()).await.expect("the benches' PostgreSQL answers");
        sqlx::query("DROP SCHEMA IF EXISTS keypal_analytics_bench CASCADE").execute(&admin).await.expect("drop schema");
        admin.close().await;
        // Filling takes longer than the default statement timeout (30 s).
        let options =
            SqlOptions::new().schema("keypal_analytics_bench").statement_timeout(std::time::Duration::from_secs(900));
        let store = SqlStore::connect_with(postgres_url(), &options).await.expect("postgres");
        let SqlStore::Postgres(s) = &store else { unreachable!() };
        let started = Instant::now();
        let mut tx = s.pool().begin().await.expect("begin");
        for sql in fill(&postgres_key_rows(), POSTGRES_SIXTY) {
            sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .execute(&mut *tx)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        tx.commit().await.expect("commit");
        sqlx::query("VACUUM ANALYZE keypal_counts, keypal_minutes").execute(s.pool()).await.expect("vacuum");
        report("postgres", &store, started).await;
        store
    })
});

/// Prints how many rows the fixture holds and how long it took to write.
async fn report(dialect: &str, store: &SqlStore, started: Instant) {
    let sql = "SELECT COUNT(*) FROM keypal_counts";
    let rows: i64 = match store {
        SqlStore::Sqlite(s) => sqlx::query_scalar(sql).fetch_one(s.pool()).await.expect("count"),
        SqlStore::Postgres(s) => sqlx::query_scalar(sql).fetch_one(s.pool()).await.expect("count"),
        _ => unreachable!(),
    };
    eprintln!("{dialect}: {rows} rows in keypal_counts, written in {:.1} s", started.elapsed().as_secs_f64());
}

fn store_of(dialect: &str) -> &'static SqlStore {
    match dialect {
        "sqlite" => &SQLITE,
        _ => &POSTGRES,
    }
}

const DIALECTS: [&str; 2] = ["sqlite", "postgres"];

fn at(seconds: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(seconds).expect("time")
}

/// The whole month, per hour.
fn month(granularity: Granularity) -> AnalyticsQuery {
    AnalyticsQuery::new(Some(APP), at(START), at(START + HOURS * 3600), granularity)
}

/// Runs `query` once per sample, checking how many buckets it answers.
fn run(bencher: Bencher, dialect: &str, query: AnalyticsQuery, buckets: usize) {
    let store = store_of(dialect);
    bencher.bench_local(|| {
        let answer = RUNTIME.block_on(store.analytics(&query)).expect("analytics");
        assert_eq!(answer.len(), buckets, "{query:?}");
    });
}

/// An application's 30 days per hour (all its 10 000 keys): its own 720 hour rows.
#[divan::bench(args = DIALECTS, sample_count = 50, sample_size = 1)]
fn application_30_days_per_hour(bencher: Bencher, dialect: &str) {
    run(bencher, dialect, month(Granularity::Hour), 720);
}

/// An application's 30 days per day.
#[divan::bench(args = DIALECTS, sample_count = 50, sample_size = 1)]
fn application_30_days_per_day(bencher: Bencher, dialect: &str) {
    run(bencher, dialect, month(Granularity::Day), 30);
}

/// The last 48 hours per minute.
#[divan::bench(args = DIALECTS, sample_count = 50, sample_size = 1)]
fn application_48_hours_per_minute(bencher: Bencher, dialect: &str) {
    let end = START + HOURS * 3600;
    let query = AnalyticsQuery::new(Some(APP), at(end - 48 * 3600), at(end), Granularity::Minute);
    run(bencher, dialect, query, 48 * 60);
}

/// One key's 30 days per hour.
#[divan::bench(args = DIALECTS, sample_count = 50, sample_size = 1)]
fn one_key_30_days_per_hour(bencher: Bencher, dialect: &str) {
    let key = KeyId(uuid::Uuid::parse_str("00000000-0000-7000-8000-000000004242").expect("uuid"));
    run(bencher, dialect, month(Granularity::Hour).key(key), 720);
}

/// One owner's (10 keys) 30 days per hour.
#[divan::bench(args = DIALECTS, sample_count = 50, sample_size = 1)]
fn one_owner_30_days_per_hour(bencher: Bencher, dialect: &str) {
    run(bencher, dialect, month(Granularity::Hour).owner("owner-00000000424"), 720);
}

/// The application's verifications with one tag, 30 days per hour.
#[divan::bench(args = DIALECTS, sample_count = 50, sample_size = 1)]
fn one_tag_30_days_per_hour(bencher: Bencher, dialect: &str) {
    run(bencher, dialect, month(Granularity::Hour).tag("GET /v1/endpoint-3"), 720);
}

/// The top 10 of 20 tags, 30 days per hour.
#[divan::bench(args = DIALECTS, sample_count = 50, sample_size = 1)]
fn top_10_tags_30_days_per_hour(bencher: Bencher, dialect: &str) {
    run(bencher, dialect, month(Granularity::Hour).group_by(GroupBy::Tag), 7_200);
}

/// The top 10 of 10 000 keys (ranked over their 20 000 rows of 30-day periods), 30 days per hour.
#[divan::bench(args = DIALECTS, sample_count = 50, sample_size = 1)]
fn top_10_keys_30_days_per_hour(bencher: Bencher, dialect: &str) {
    run(bencher, dialect, month(Granularity::Hour).group_by(GroupBy::Key), 7_200);
}

/// The top 10 of 10 000 keys over 7 days (ranked over their 10 000 rows of 7-day periods), per hour.
#[divan::bench(args = DIALECTS, sample_count = 50, sample_size = 1)]
fn top_10_keys_7_days_per_hour(bencher: Bencher, dialect: &str) {
    let query =
        AnalyticsQuery::new(Some(APP), at(START), at(START + 7 * 86_400), Granularity::Hour).group_by(GroupBy::Key);
    run(bencher, dialect, query, 10 * 168);
}

/// The top 10 of 10 000 keys, 30 days per day.
#[divan::bench(args = DIALECTS, sample_count = 50, sample_size = 1)]
fn top_10_keys_30_days_per_day(bencher: Bencher, dialect: &str) {
    run(bencher, dialect, month(Granularity::Day).group_by(GroupBy::Key), 300);
}

/// The top 10 of 1 000 owners (ranked over their 2 000 rows of 30-day periods), 30 days per hour.
#[divan::bench(args = DIALECTS, sample_count = 50, sample_size = 1)]
fn top_10_owners_30_days_per_hour(bencher: Bencher, dialect: &str) {
    run(bencher, dialect, month(Granularity::Hour).group_by(GroupBy::Owner), 7_200);
}

/// The top 10 keys of one hour (ranked over their 10 000 rows of that day).
#[divan::bench(args = DIALECTS, sample_count = 50, sample_size = 1)]
fn top_10_keys_one_hour(bencher: Bencher, dialect: &str) {
    let query = AnalyticsQuery::new(Some(APP), at(START), at(START + 3600), Granularity::Hour).group_by(GroupBy::Key);
    run(bencher, dialect, query, 10);
}

/// A fresh SQLite store (a file under `target/`) for the write benches, apart from the
/// read fixture so that rolling up does not change what the reads find.
static WRITES: LazyLock<SqlStore> = LazyLock::new(|| {
    RUNTIME.block_on(async {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("keypal-usage-writes-bench");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("bench directory");
        SqlStore::connect(&format!("sqlite://{}", dir.join("bench.db").display())).await.expect("sqlite")
    })
});

/// The next minute the write benches count in (each sample its own, after the last).
static NEXT_MINUTE: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// One verification of each of 10 000 keys (each with its own owner) in `minute`, with
/// three tags each, as the load benchmark sends them.
fn verifications_of_10_000_keys(minute: i64) -> Vec<keypal::Event> {
    use keypal::{Action, AuditContext, Code, Event, Tags};
    (0..KEYS)
        .map(|i| {
            let mut event = Event::new(Action::Verified, at(minute), AuditContext::default());
            event.key_id = Some(KeyId(uuid::Uuid::from_u128(0x7000_8000_0000_0000_0000 + i as u128)));
            event.namespace = Some(APP.to_owned());
            event.owner_id = Some(format!("user-{i}"));
            event.code = Some(Code::Valid);
            let tags = [format!("GET /v1/endpoint-{}", i % 20), format!("region-{}", i % 4), format!("plan-{}", i % 3)];
            event.tags = Tags::new(tags).expect("tags");
            event
        })
        .collect()
}

/// One minute of those verifications, counted: what one flush of an ended minute
/// writes (80 000 minute rows).
fn one_minute_of_10_000_keys() -> (Vec<keypal_sql::UsageDelta>, i64) {
    use keypal::EventSink;
    let base = OffsetDateTime::now_utc().unix_timestamp() / 60 * 60 + 3_600;
    let minute = base + 60 * NEXT_MINUTE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let counter = keypal_sql::UsageCounter::new();
    for event in verifications_of_10_000_keys(minute) {
        counter.record(&event);
    }
    (counter.take(), minute)
}

/// Counting one verification with three tags (what the verify path adds per request),
/// the counter already holding this minute of 10 000 keys: each sample counts one more
/// verification of every key, in turn.
#[divan::bench(sample_count = 20, sample_size = 1)]
fn count_10_000_verifications_of_10_000_keys(bencher: Bencher) {
    use keypal::EventSink;
    let events = verifications_of_10_000_keys(START);
    let counter = keypal_sql::UsageCounter::new();
    for event in &events {
        counter.record(event);
    }
    bencher.bench_local(|| {
        for event in &events {
            counter.record(divan::black_box(event));
        }
    });
}

/// The same on two threads at once, each counting every key in turn from its own
/// starting point, into one counter (as a server's two worker threads do): what the
/// threads cost each other.
#[divan::bench(sample_count = 20, sample_size = 1, threads = 2)]
fn count_10_000_verifications_of_10_000_keys_on_2_threads(bencher: Bencher) {
    use keypal::EventSink;
    static NEXT_START: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let events = verifications_of_10_000_keys(START);
    let counter = keypal_sql::UsageCounter::new();
    for event in &events {
        counter.record(event);
    }
    bencher.bench(|| {
        let start = NEXT_START.fetch_add(5_003, std::sync::atomic::Ordering::Relaxed) % events.len();
        let (later, earlier) = events.split_at(start);
        for event in earlier.iter().chain(later) {
            counter.record(divan::black_box(event));
        }
    });
}

/// Writing one ended minute of 10 000 keys × 3 tags (80 000 minute rows, one transaction).
#[divan::bench(sample_count = 10, sample_size = 1)]
fn write_one_minute_of_10_000_keys_sqlite(bencher: Bencher) {
    bencher.with_inputs(|| one_minute_of_10_000_keys().0).bench_local_values(|deltas| {
        RUNTIME.block_on(WRITES.record_usage(&deltas)).expect("record");
    });
}

/// Rolling one such minute up into the hour, day, 7- and 30-day rows.
#[divan::bench(sample_count = 10, sample_size = 1)]
fn roll_up_one_minute_of_10_000_keys_sqlite(bencher: Bencher) {
    bencher
        .with_inputs(|| {
            let (deltas, minute) = one_minute_of_10_000_keys();
            RUNTIME.block_on(WRITES.record_usage(&deltas)).expect("record");
            // Everything before this minute rolled up, so the sample rolls this minute only.
            RUNTIME.block_on(WRITES.roll_up_usage(at(minute + 120))).expect("roll up before");
            minute
        })
        .bench_local_values(|minute| {
            let rolled = RUNTIME.block_on(WRITES.roll_up_usage(at(minute + 180))).expect("roll up");
            assert_eq!(rolled, 1);
        });
}
