//! Usage analytics on both databases: counts per key, owner, application and tag at
//! each granularity, the groupings, pruning expired rows without losing a count (run
//! twice), rankings over rolled-up and recent minutes, and migration 5 moving the
//! per-minute counts of migration 2.

// Test helpers assert by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::{postgres_options, postgres_store, postgres_url, sqlite_store, sqlite_url};
use keypal::{Action, AuditContext, Code, Event, EventSink, KeyId, KeyManager, NewKey, Tags, VerifyOptions};
use keypal_sql::testing::{migrate_postgres_to, migrate_sqlite_to};
use keypal_sql::{
    AnalyticsError, AnalyticsQuery, Granularity, GroupBy, InvalidQuery, PostgresStore, Retention, SqlOptions, SqlStore,
    SqliteStore, UsageCounter, UsageCounts,
};
use time::{Duration, OffsetDateTime};

/// Both stores, fresh (SQLite only when the PostgreSQL tests are skipped).
async fn both() -> Vec<SqlStore> {
    let mut stores = vec![SqlStore::Sqlite(sqlite_store().await)];
    stores.extend(postgres_store().await.map(SqlStore::Postgres));
    stores
}

/// Runs one SQL statement returning a single integer, on either store.
async fn scalar(store: &SqlStore, sql: &'static str) -> i64 {
    match store {
        SqlStore::Sqlite(s) => sqlx::query_scalar(sql).fetch_one(s.pool()).await.expect(sql),
        SqlStore::Postgres(s) => sqlx::query_scalar(sql).fetch_one(s.pool()).await.expect(sql),
        _ => unreachable!("both dialects are built"),
    }
}

/// The sum of every bucket a query answers.
async fn total(store: &SqlStore, query: &AnalyticsQuery) -> UsageCounts {
    let mut sum = UsageCounts::default();
    for bucket in store.analytics(query).await.expect("analytics") {
        for (code, n) in bucket.counts.by_code() {
            for _ in 0..n {
                sum.add(code);
            }
        }
    }
    sum
}

/// Each group's total over the range, in the order of first appearance.
async fn groups(store: &SqlStore, query: &AnalyticsQuery) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    for bucket in store.analytics(query).await.expect("analytics") {
        let group = bucket.group.expect("a grouped query names each bucket's group");
        match out.iter_mut().find(|(g, _)| *g == group) {
            Some((_, n)) => *n += bucket.counts.total(),
            None => out.push((group, bucket.counts.total())),
        }
    }
    out.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

fn tags(list: &[&str]) -> VerifyOptions {
    VerifyOptions::new().tags(Tags::new(list.iter().copied()).expect("valid tags"))
}

#[tokio::test]
async fn counts_per_key_owner_application_and_tag_at_every_granularity() {
    for store in both().await {
        let dialect = store.dialect();
        let counter = Arc::new(UsageCounter::new());
        let manager = |namespace: &str| {
            KeyManager::builder()
                .namespace(namespace)
                .store(store.clone())
                .event_sink(counter.clone())
                .build()
                .expect("manager")
        };
        let (a, b) = (manager("app_a"), manager("app_b"));
        let k1 = a.create(NewKey::new().owner_id("u1")).await.expect("k1");
        let k2 = a.create(NewKey::new().owner_id("u1")).await.expect("k2");
        let k3 = a.create(NewKey::new().owner_id("u2")).await.expect("k3");
        let k4 = a.create(NewKey::new()).await.expect("k4");
        let other = b.create(NewKey::new().owner_id("u1")).await.expect("other");
        for _ in 0..5 {
            a.verify_with(k1.key.expose(), &tags(&["GET /a"])).await.expect("verify");
        }
        for _ in 0..2 {
            a.verify_with(k1.key.expose(), &tags(&["GET /a", "eu"])).await.expect("verify");
        }
        for _ in 0..3 {
            a.verify(k2.key.expose()).await.expect("verify");
        }
        a.revoke(&k3.record.id).await.expect("revoke");
        for _ in 0..4 {
            a.verify_with(k3.key.expose(), &tags(&["GET /a"])).await.expect("verify");
        }
        a.verify_with(k4.key.expose(), &tags(&["eu"])).await.expect("verify");
        for _ in 0..7 {
            b.verify_with(other.key.expose(), &tags(&["eu"])).await.expect("verify");
        }
        // Two flushes adding to the same rows.
        let deltas = counter.take();
        let (first, second) = deltas.split_at(2);
        store.record_usage(first).await.expect("flush 1");
        store.record_usage(second).await.expect("flush 2");

        let now = OffsetDateTime::now_utc();
        let (since, until) = (now - Duration::hours(1), now + Duration::minutes(1));
        for granularity in Granularity::ALL {
            let app = AnalyticsQuery::new(Some("app_a"), since, until, granularity);
            let sum = total(&store, &app).await;
            assert_eq!((sum.valid, sum.revoked, sum.total()), (11, 4, 15), "{dialect} {granularity:?}: application");
            assert_eq!(total(&store, &app.clone().owner("u1")).await.valid, 10, "{dialect}: owner u1 in app_a only");
            assert_eq!(total(&store, &app.clone().owner("u2")).await.revoked, 4, "{dialect}: owner u2");
            assert_eq!(total(&store, &app.clone().key(k1.record.id)).await.valid, 7, "{dialect}: key");
            assert_eq!(total(&store, &app.clone().key(k1.record.id).tag("eu")).await.valid, 2, "{dialect}: key + tag");
            assert_eq!(total(&store, &app.clone().tag("eu")).await.valid, 3, "{dialect}: tag");
            assert_eq!(total(&store, &app.clone().tag("GET /a")).await.total(), 11, "{dialect}: tag");
            let b_app = AnalyticsQuery::new(Some("app_b"), since, until, granularity);
            assert_eq!(total(&store, &b_app).await.total(), 7, "{dialect}: another application apart");
            assert_eq!(total(&store, &b_app.owner("u1")).await.total(), 7, "{dialect}: the same owner id elsewhere");

            let by_tag = groups(&store, &app.clone().group_by(GroupBy::Tag)).await;
            assert_eq!(by_tag, [("GET /a".to_owned(), 11), ("eu".to_owned(), 3)], "{dialect}: by tag");
            let by_key = groups(&store, &app.clone().group_by(GroupBy::Key)).await;
            let ids = |list: &[(&KeyId, u64)]| list.iter().map(|(id, n)| (id.0.to_string(), *n)).collect::<Vec<_>>();
            let mut expected = ids(&[(&k1.record.id, 7), (&k3.record.id, 4), (&k2.record.id, 3), (&k4.record.id, 1)]);
            assert_eq!(by_key, expected, "{dialect}: by key");
            expected.truncate(2);
            assert_eq!(
                groups(&store, &app.clone().group_by(GroupBy::Key).limit(2)).await,
                expected,
                "{dialect}: top 2"
            );
            let by_owner = groups(&store, &app.clone().group_by(GroupBy::Owner)).await;
            assert_eq!(by_owner, [("u1".to_owned(), 10), ("u2".to_owned(), 4)], "{dialect}: by owner");
            let owner_tags = groups(&store, &app.clone().owner("u1").group_by(GroupBy::Tag)).await;
            assert_eq!(owner_tags, [("GET /a".to_owned(), 7), ("eu".to_owned(), 2)], "{dialect}: an owner's tags");
        }
        // Over long ranges keys and owners are ranked on their 7-day or 30-day rows: the same order.
        for days in [6, 29, 89] {
            let long = AnalyticsQuery::new(Some("app_a"), now - Duration::days(days), until, Granularity::Day);
            let by_key = groups(&store, &long.clone().group_by(GroupBy::Key).limit(2)).await;
            assert_eq!(by_key[0], (k1.record.id.0.to_string(), 7), "{dialect}: {days} days");
            assert_eq!(by_key[1], (k3.record.id.0.to_string(), 4), "{dialect}: {days} days");
            let by_owner = groups(&store, &long.group_by(GroupBy::Owner)).await;
            assert_eq!(by_owner, [("u1".to_owned(), 10), ("u2".to_owned(), 4)], "{dialect}: {days} days");
        }
        // The existing readers see the same counts.
        let hours = store.usage(k1.record.id, since, until, Granularity::Hour).await.expect("usage");
        assert_eq!(hours.iter().map(|h| h.counts.valid).sum::<u64>(), 7, "{dialect}");
        let totals = store.usage_totals(Some("app_a"), since, until).await.expect("totals");
        assert_eq!(totals.total(), 15, "{dialect}");
        // Buckets are aligned to their granularity.
        let days =
            store.analytics(&AnalyticsQuery::new(Some("app_a"), since, until, Granularity::Day)).await.expect("a");
        assert!(days.iter().all(|d| d.start.unix_timestamp() % 86_400 == 0), "{dialect}: day buckets");
    }
}

#[tokio::test]
async fn queries_past_the_limits_are_refused_before_reading() {
    let store = SqlStore::Sqlite(sqlite_store().await);
    let now = OffsetDateTime::now_utc();
    let refused = |query: AnalyticsQuery| {
        let store = store.clone();
        async move {
            match store.analytics(&query).await {
                Err(AnalyticsError::Invalid(e)) => e,
                other => panic!("expected a refusal, got {other:?}"),
            }
        }
    };
    let q = |hours: i64, g| AnalyticsQuery::new(Some("a"), now - Duration::hours(hours), now, g);
    assert!(store.analytics(&q(48, Granularity::Minute)).await.is_ok(), "48 hours of minutes is the limit");
    assert!(matches!(refused(q(49, Granularity::Minute)).await, InvalidQuery::RangeTooLong { max_hours: 48, .. }));
    assert!(store.analytics(&q(90 * 24, Granularity::Hour)).await.is_ok());
    assert!(matches!(refused(q(91 * 24, Granularity::Hour)).await, InvalidQuery::RangeTooLong { .. }));
    assert!(store.analytics(&q(1_096 * 24, Granularity::Day)).await.is_ok());
    assert!(matches!(refused(q(1_097 * 24, Granularity::Day)).await, InvalidQuery::RangeTooLong { .. }));
    assert_eq!(refused(q(0, Granularity::Hour)).await, InvalidQuery::EmptyRange);
    assert_eq!(refused(q(1, Granularity::Hour).tag("")).await, InvalidQuery::Tag);
    assert_eq!(refused(q(1, Granularity::Hour).limit(0)).await, InvalidQuery::Limit);
    assert_eq!(refused(q(1, Granularity::Hour).limit(101)).await, InvalidQuery::Limit);
    assert!(matches!(
        refused(q(1, Granularity::Hour).owner("u").group_by(GroupBy::Key)).await,
        InvalidQuery::Grouping { .. }
    ));
    assert!(matches!(
        refused(q(1, Granularity::Hour).tag("t").group_by(GroupBy::Tag)).await,
        InvalidQuery::Grouping { .. }
    ));
}

/// A verification of `key` (of `app_p`, owner `u1`) at `at`, with a tag.
fn verified_at(key: KeyId, at: OffsetDateTime, code: Code) -> Event {
    let mut event = Event::new(Action::Verified, at, AuditContext::default());
    event.key_id = Some(key);
    event.namespace = Some("app_p".to_owned());
    event.owner_id = Some("u1".to_owned());
    event.code = Some(code);
    event.tags = Tags::new(["t"]).expect("tag");
    event
}

/// What every granularity answers over the widest range it allows that ends now.
async fn per_granularity(store: &SqlStore, now: OffsetDateTime) -> Vec<(Granularity, u64, u64)> {
    let mut out = Vec::new();
    for g in Granularity::ALL {
        let until = now + Duration::minutes(1);
        let query = AnalyticsQuery::new(Some("app_p"), until - g.max_range(), until, g);
        let app = total(store, &query).await.total();
        let tagged = total(store, &query.owner("u1").tag("t")).await.total();
        out.push((g, app, tagged));
    }
    out
}

#[tokio::test]
async fn pruning_drops_only_expired_minute_and_hour_rows_and_no_count_twice_over() {
    for store in both().await {
        let dialect = store.dialect();
        let counter = UsageCounter::new();
        let key = KeyId(uuid::Uuid::now_v7());
        let now = OffsetDateTime::now_utc();
        // Counts 100 days, 10 days, 3 days and 1 hour ago.
        for (ago, n) in
            [(Duration::days(100), 5), (Duration::days(10), 4), (Duration::days(3), 3), (Duration::hours(1), 2)]
        {
            for _ in 0..n {
                counter.record(&verified_at(key, now - ago, Code::Valid));
            }
            counter.record(&verified_at(key, now - ago, Code::RateLimited));
        }
        store.record_usage(&counter.take()).await.expect("flush");
        let before = per_granularity(&store, now).await;
        assert_eq!(
            before,
            [(Granularity::Minute, 3, 3), (Granularity::Hour, 4 + 5 + 3, 12), (Granularity::Day, 18, 18)],
            "{dialect}: before"
        );
        let rows_before =
            scalar(&store, "SELECT (SELECT COUNT(*) FROM keypal_counts) + (SELECT COUNT(*) FROM keypal_minutes)").await;

        let first = store.prune_usage(&Retention::default(), now).await.expect("prune");
        let rows_after =
            scalar(&store, "SELECT (SELECT COUNT(*) FROM keypal_counts) + (SELECT COUNT(*) FROM keypal_minutes)").await;
        assert_eq!(rows_before - rows_after, i64::try_from(first).expect("count"), "{dialect}");
        // Minute rows of 100, 10 and 3 days ago, hour rows of 100 days ago; for the key,
        // owner and application, with and without the tag: (3 + 1) * 3 * 2 = 24.
        assert_eq!(first, 24, "{dialect}: what expired went");
        assert_eq!(per_granularity(&store, now).await, before, "{dialect}: every count kept at every granularity");
        let second = store.prune_usage(&Retention::default(), now).await.expect("prune again");
        assert_eq!(second, 0, "{dialect}: pruning twice changes nothing");
        assert_eq!(per_granularity(&store, now).await, before, "{dialect}: still");
        let old_minutes = scalar(&store, "SELECT COUNT(*) FROM keypal_minutes").await;
        assert_eq!(old_minutes, 6, "{dialect}: only the last hour's minute rows are left");
        // The counts of 100 days ago stay in their day row.
        let old_day =
            AnalyticsQuery::new(Some("app_p"), now - Duration::days(101), now - Duration::days(99), Granularity::Day);
        assert_eq!(total(&store, &old_day).await.total(), 6, "{dialect}: rolled up into its day");
        // A shorter configured retention drops more; day rows go only when a day retention is set.
        let short = Retention::new(std::time::Duration::from_secs(60), std::time::Duration::from_secs(7_200), None);
        store.prune_usage(&short, now + Duration::hours(3)).await.expect("prune");
        assert_eq!(
            scalar(
                &store,
                "SELECT (SELECT COUNT(*) FROM keypal_counts WHERE span < 86400) + (SELECT COUNT(*) FROM keypal_minutes)"
            )
            .await,
            0,
            "{dialect}"
        );
        assert_eq!(total(&store, &old_day).await.total(), 6, "{dialect}");
    }
}

/// Every way of reading one key's counts over `[now - 1 day, now + 1 day)`, at every
/// granularity: the application, the owner, the tag, the key, the key's usage and the
/// application's totals, and the ranking of keys and owners.
async fn every_read(store: &SqlStore, key: KeyId, now: OffsetDateTime) -> Vec<(Granularity, [u64; 7])> {
    let (since, until) = (now - Duration::days(1), now + Duration::days(1));
    let mut out = Vec::new();
    for g in Granularity::ALL {
        let (since, until) = if g == Granularity::Minute {
            (now - Duration::hours(1), now + Duration::hours(3))
        } else {
            (since, until)
        };
        let app = AnalyticsQuery::new(Some("app_p"), since, until, g);
        let usage: u64 = store.usage(key, since, until, g).await.expect("usage").iter().map(|b| b.counts.total()).sum();
        let top_keys = groups(store, &app.clone().group_by(GroupBy::Key)).await;
        let top_owners = groups(store, &app.clone().group_by(GroupBy::Owner)).await;
        assert!(top_keys.len() <= 1 && top_owners.len() <= 1, "{top_keys:?} {top_owners:?}");
        out.push((
            g,
            [
                total(store, &app).await.total(),
                total(store, &app.clone().owner("u1")).await.total(),
                total(store, &app.clone().tag("t")).await.total(),
                total(store, &app.clone().key(key)).await.total(),
                usage,
                top_keys.first().map_or(0, |(_, n)| *n),
                top_owners.first().map_or(0, |(_, n)| *n),
            ],
        ));
    }
    let totals =
        store.usage_totals(Some("app_p"), now - Duration::hours(1), now + Duration::hours(3)).await.expect("totals");
    out.push((Granularity::Minute, [totals.total(); 7]));
    out
}

/// A key of application `app_p` owned by `u1` (whose counts [`verified_at`] makes).
async fn key_of_app_p(store: &SqlStore) -> KeyId {
    let keys = KeyManager::builder().namespace("app_p").store(store.clone()).build().expect("manager");
    keys.create(NewKey::new().owner_id("u1")).await.expect("create").record.id
}

/// `n` of each granularity, for [`every_read`].
fn all(n: u64) -> Vec<(Granularity, [u64; 7])> {
    Granularity::ALL.into_iter().map(|g| (g, [n; 7])).chain([(Granularity::Minute, [n; 7])]).collect()
}

#[tokio::test]
async fn a_flush_writes_minutes_and_the_roll_up_adds_each_to_the_coarser_rows_once() {
    for store in both().await {
        let dialect = store.dialect();
        let counter = UsageCounter::new();
        let key = key_of_app_p(&store).await;
        let now = OffsetDateTime::now_utc();
        // Minutes not rolled up yet: ten and eleven minutes from now, and in an hour.
        for (later, n) in [(10, 3), (11, 2), (70, 1)] {
            for _ in 0..n {
                counter.record(&verified_at(key, now + Duration::minutes(later), Code::Valid));
            }
        }
        store.record_usage(&counter.take()).await.expect("flush");
        assert_eq!(
            scalar(&store, "SELECT COUNT(*) FROM keypal_counts WHERE span > 60").await,
            0,
            "{dialect}: minute rows only"
        );
        assert_eq!(every_read(&store, key, now).await, all(6), "{dialect}: reads add the minutes not rolled up");

        let rolled = store.roll_up_usage(now + Duration::minutes(15)).await.expect("roll up");
        assert!(rolled > 0, "{dialect}");
        assert!(scalar(&store, "SELECT COUNT(*) FROM keypal_counts WHERE span > 60").await > 0, "{dialect}");
        assert_eq!(every_read(&store, key, now).await, all(6), "{dialect}: the same after the roll-up");
        assert_eq!(store.roll_up_usage(now + Duration::minutes(15)).await.expect("again"), 0, "{dialect}");
        assert_eq!(every_read(&store, key, now).await, all(6), "{dialect}: a second roll-up adds nothing");

        // A late flush of a minute already rolled up writes every width itself.
        counter.record(&verified_at(key, now + Duration::minutes(10), Code::RateLimited));
        store.record_usage(&counter.take()).await.expect("late flush");
        assert_eq!(every_read(&store, key, now).await, all(7), "{dialect}: a late minute counts once");

        store.roll_up_usage(now + Duration::hours(3)).await.expect("roll up the rest");
        assert_eq!(every_read(&store, key, now).await, all(7), "{dialect}");
        // Pruning at the end of the minute retention keeps every count in the coarser rows.
        let short =
            Retention::new(std::time::Duration::from_secs(60), std::time::Duration::from_secs(90 * 86_400), None);
        store.prune_usage(&short, now + Duration::hours(3)).await.expect("prune");
        assert_eq!(scalar(&store, "SELECT COUNT(*) FROM keypal_minutes").await, 0, "{dialect}");
        let kept = every_read(&store, key, now).await;
        assert_eq!(kept[1..3], all(7)[1..3], "{dialect}: hours and days keep every count");
    }
}

#[tokio::test]
async fn flushes_racing_roll_ups_count_every_verification_once() {
    for store in both().await {
        let dialect = store.dialect();
        let key = key_of_app_p(&store).await;
        let now = OffsetDateTime::now_utc();
        // Eight flushers write minutes from five before now to twenty after, while roll-ups
        // move through the same minutes.
        let mut tasks = tokio::task::JoinSet::new();
        for flusher in 0..8_i64 {
            let store = store.clone();
            tasks.spawn(async move {
                for round in 0..10_i64 {
                    let counter = UsageCounter::new();
                    for minute in [-5, 0, 5, 10, 15, 20] {
                        let at = now + Duration::minutes(minute + (flusher + round) % 3);
                        counter.record(&verified_at(key, at, Code::Valid));
                    }
                    store.record_usage(&counter.take()).await.expect("flush");
                }
            });
        }
        let rolling = store.clone();
        tasks.spawn(async move {
            for minute in 0..30 {
                rolling.roll_up_usage(now + Duration::minutes(minute)).await.expect("roll up");
                tokio::task::yield_now().await;
            }
        });
        while let Some(done) = tasks.join_next().await {
            done.expect("task");
        }
        let expected = 8 * 10 * 6;
        assert_eq!(every_read(&store, key, now).await, all(expected), "{dialect}: during");
        store.roll_up_usage(now + Duration::hours(1)).await.expect("roll up the rest");
        assert_eq!(every_read(&store, key, now).await, all(expected), "{dialect}: after");
    }
}

/// The per-minute counts of migration 2, written as keypal 0.4 did.
const OLD_ROWS: &str =
    "INSERT INTO keypal_usage (key_id, bucket, namespace, valid, rate_limited) VALUES ($1, $2, 'app_m', $3, 1)";

#[tokio::test]
async fn migration_5_moves_the_per_minute_counts_of_migration_2() {
    let hour = OffsetDateTime::from_unix_timestamp(1_700_000_000 / 3_600 * 3_600).expect("time");
    let minutes = [hour + Duration::minutes(1), hour + Duration::minutes(2), hour + Duration::hours(1)];
    let check = |store: SqlStore, key: KeyId| async move {
        let dialect = store.dialect();
        let (since, until) = (hour - Duration::hours(1), hour + Duration::hours(3));
        for g in Granularity::ALL {
            let app = AnalyticsQuery::new(Some("app_m"), since, until, g);
            let sum = total(&store, &app).await;
            assert_eq!((sum.valid, sum.rate_limited), (6, 3), "{dialect} {g:?}: the application's counts");
            assert_eq!(total(&store, &app.clone().owner("u9")).await.valid, 6, "{dialect} {g:?}: the owner's");
            assert_eq!(total(&store, &app.key(key)).await.valid, 6, "{dialect} {g:?}: the key's");
        }
        let hours = store.usage(key, since, until, Granularity::Hour).await.expect("usage");
        let per_hour: Vec<u64> = hours.iter().map(|h| h.counts.valid).collect();
        assert_eq!(per_hour, [3, 3], "{dialect}: two hours");
        let gone = match &store {
            SqlStore::Sqlite(s) => sqlx::query("SELECT 1 FROM keypal_usage").fetch_all(s.pool()).await.is_err(),
            SqlStore::Postgres(s) => sqlx::query("SELECT 1 FROM keypal_usage").fetch_all(s.pool()).await.is_err(),
            _ => unreachable!(),
        };
        assert!(gone, "{dialect}: the table of migration 2 is dropped");
    };

    // SQLite: a database at migration 4 with counts in it.
    let url = sqlite_url();
    let old = SqliteStore::connect_with(&url, &SqlOptions::new().migrate(false)).await.expect("open");
    migrate_sqlite_to(old.pool(), 4).await.expect("migrations 1-4");
    let keys = KeyManager::builder().namespace("app_m").store(old.clone()).build().expect("manager");
    let key = keys.create(NewKey::new().owner_id("u9")).await.expect("create").record.id;
    for (i, minute) in minutes.iter().enumerate() {
        let valid = i64::try_from(i).expect("small") + 1;
        sqlx::query(OLD_ROWS)
            .bind(key.0)
            .bind(minute.unix_timestamp())
            .bind(valid)
            .execute(old.pool())
            .await
            .expect("row");
    }
    old.close().await;
    let new = SqliteStore::connect(&url).await.expect("reopen migrates to 5");
    check(SqlStore::Sqlite(new), key).await;

    // PostgreSQL
    let Some(url) = postgres_url() else { return };
    let options = postgres_options(&common::fresh_schema());
    let old = PostgresStore::connect_with(url, &options.clone().migrate(false)).await.expect("connect");
    migrate_postgres_to(old.pool(), 4).await.expect("migrations 1-4");
    let keys = KeyManager::builder().namespace("app_m").store(old.clone()).build().expect("manager");
    let key = keys.create(NewKey::new().owner_id("u9")).await.expect("create").record.id;
    for (i, minute) in minutes.iter().enumerate() {
        let valid = i64::try_from(i).expect("small") + 1;
        sqlx::query(OLD_ROWS).bind(key.0).bind(*minute).bind(valid).execute(old.pool()).await.expect("row");
    }
    old.close().await;
    let new = PostgresStore::connect_with(url, &options).await.expect("reconnect migrates to 5");
    check(SqlStore::Postgres(new), key).await;
}

/// A verification of `key` (of `app_p`, owned by `owner`) at `at`.
fn verified_by(key: KeyId, owner: &str, at: OffsetDateTime) -> Event {
    let mut event = verified_at(key, at, Code::Valid);
    event.owner_id = Some(owner.to_owned());
    event
}

#[tokio::test]
async fn a_ranking_reads_the_minutes_not_rolled_up_only_when_the_rolled_up_counts_name_too_few() {
    for store in both().await {
        let dialect = store.dialect();
        let counter = UsageCounter::new();
        let now = OffsetDateTime::now_utc();
        let (a, b, newcomer) = (KeyId::new(), KeyId::new(), KeyId::new());
        // `a` and `b` verified ten minutes from now (rolled up below), the newcomer more
        // often twenty minutes from now (not rolled up yet).
        for (key, owner, later, n) in [(a, "ua", 10, 5), (b, "ub", 10, 3), (newcomer, "un", 20, 9)] {
            for _ in 0..n {
                counter.record(&verified_by(key, owner, now + Duration::minutes(later)));
            }
        }
        store.record_usage(&counter.take()).await.expect("flush");
        assert!(store.roll_up_usage(now + Duration::minutes(15)).await.expect("roll up") > 0, "{dialect}");

        let day =
            AnalyticsQuery::new(Some("app_p"), now - Duration::days(1), now + Duration::days(1), Granularity::Hour);
        let top = |limit: u32| day.clone().group_by(GroupBy::Key).limit(limit);
        let (a, b, newcomer) = (a.to_string(), b.to_string(), newcomer.to_string());
        // The rolled-up counts name as many keys as asked for: the ranking stops there,
        // a few minutes behind; the buckets of the keys it names are exact.
        assert_eq!(groups(&store, &top(2)).await, [(a.clone(), 5), (b.clone(), 3)], "{dialect}");
        // They name fewer: the minutes not rolled up yet are ranked too.
        assert_eq!(groups(&store, &top(3)).await, [(newcomer.clone(), 9), (a.clone(), 5), (b.clone(), 3)], "{dialect}");
        // Once rolled up, the newcomer ranks first at any limit; owners rank alike.
        store.roll_up_usage(now + Duration::minutes(25)).await.expect("roll up the newcomer");
        assert_eq!(groups(&store, &top(2)).await, [(newcomer, 9), (a, 5)], "{dialect}");
        let owners = day.group_by(GroupBy::Owner).limit(1);
        assert_eq!(groups(&store, &owners).await, [("un".to_owned(), 9)], "{dialect}");
    }
}
