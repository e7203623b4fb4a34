//! Usage: verification counts per key per minute, aggregated in memory and written
//! in batches (never one row per request).
//!
//! A [`UsageCounter`] is an [`EventSink`]: give it to a manager, and flush what it
//! counted to the store now and then (the server does every few seconds, and on shutdown).
//! A flush adds each key's counts to the `keypal_counts` rows of its minute, hour and
//! day (and, for the key and its owner, of its 7 and 30 days, to rank them over long
//! ranges), for the key, its owner and its application, for all its verifications and for
//! each of their tags (migration 5; [`crate::AnalyticsQuery`] reads them). Since the
//! coarser rows are written with the finer ones, [`DialectStore::prune_usage`] drops
//! expired minute and hour rows without losing a count.
//!
//! ```
//! use std::sync::Arc;
//! use keypal::{KeyManager, NewKey};
//! use keypal_sql::{Granularity, SqliteStore, UsageCounter};
//! use time::{Duration, OffsetDateTime};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = Arc::new(SqliteStore::connect("sqlite::memory:").await?);
//! let counter = Arc::new(UsageCounter::new());
//! let keys = KeyManager::builder().store(store.clone()).event_sink(counter.clone()).build()?;
//! let created = keys.create(NewKey::new()).await?;
//! keys.verify(created.key.expose()).await?;
//! keys.verify(created.key.expose()).await?;
//!
//! store.record_usage(&counter.take()).await?;
//! let now = OffsetDateTime::now_utc();
//! let hours = store.usage(created.record.id, now - Duration::hours(24), now + Duration::minutes(1), Granularity::Hour).await?;
//! assert_eq!(hours.iter().map(|b| b.counts.valid).sum::<u64>(), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use keypal::{Action, Code, Event, EventSink, KeyId, StoreError};
use sqlx::QueryBuilder;
use time::OffsetDateTime;

use crate::DialectStore;
use crate::codec::{backend, corrupt, to_i64, to_u64};
use crate::dialect::{Arg, Dialect, PushArg};

/// Verification counts by result code, for the codes that name a key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UsageCounts {
    /// `VALID`.
    pub valid: u64,
    /// `REVOKED`.
    pub revoked: u64,
    /// `DISABLED`.
    pub disabled: u64,
    /// `EXPIRED`.
    pub expired: u64,
    /// `INSUFFICIENT_SCOPE`.
    pub insufficient_scope: u64,
    /// `RATE_LIMITED`.
    pub rate_limited: u64,
    /// `USAGE_EXCEEDED`.
    pub usage_exceeded: u64,
}

impl UsageCounts {
    /// Counts one verification with `code`; codes that name no key (`MALFORMED`, `NOT_FOUND`) are ignored.
    pub fn add(&mut self, code: Code) {
        if let Some(slot) = self.slot(code) {
            *slot += 1;
        }
    }

    /// The count for `code` (0 for codes that name no key).
    ///
    /// ```
    /// use keypal::Code;
    /// let mut counts = keypal_sql::UsageCounts::default();
    /// counts.add(Code::Valid);
    /// counts.add(Code::RateLimited);
    /// assert_eq!((counts.get(Code::Valid), counts.total()), (1, 2));
    /// ```
    pub fn get(&self, code: Code) -> u64 {
        let mut copy = *self;
        copy.slot(code).map_or(0, |n| *n)
    }

    /// Every verification counted.
    pub fn total(&self) -> u64 {
        self.valid
            + self.revoked
            + self.disabled
            + self.expired
            + self.insufficient_scope
            + self.rate_limited
            + self.usage_exceeded
    }

    /// The counts as `(code, count)` pairs, in pipeline order.
    pub fn by_code(&self) -> [(Code, u64); 7] {
        [
            (Code::Valid, self.valid),
            (Code::Revoked, self.revoked),
            (Code::Disabled, self.disabled),
            (Code::Expired, self.expired),
            (Code::InsufficientScope, self.insufficient_scope),
            (Code::RateLimited, self.rate_limited),
            (Code::UsageExceeded, self.usage_exceeded),
        ]
    }

    pub(crate) fn merge(&mut self, other: &UsageCounts) {
        for (code, n) in other.by_code() {
            if let Some(slot) = self.slot(code) {
                *slot += n;
            }
        }
    }

    fn slot(&mut self, code: Code) -> Option<&mut u64> {
        match code {
            Code::Valid => Some(&mut self.valid),
            Code::Revoked => Some(&mut self.revoked),
            Code::Disabled => Some(&mut self.disabled),
            Code::Expired => Some(&mut self.expired),
            Code::InsufficientScope => Some(&mut self.insufficient_scope),
            Code::RateLimited => Some(&mut self.rate_limited),
            Code::UsageExceeded => Some(&mut self.usage_exceeded),
            _ => None,
        }
    }
}

/// Counts of one key in one minute, waiting to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UsageDelta {
    /// The key.
    pub key_id: KeyId,
    /// The key's namespace (application).
    pub namespace: Option<String>,
    /// The key's owner.
    pub owner_id: Option<String>,
    /// The start of the minute.
    pub minute: OffsetDateTime,
    /// What to add.
    pub counts: UsageCounts,
    /// What to add per tag (each verification counts under each of its tags).
    pub tags: Vec<(String, UsageCounts)>,
}

/// Counts over one bucket of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct UsageBucket {
    /// The start of the bucket.
    pub start: OffsetDateTime,
    /// The counts.
    pub counts: UsageCounts,
}

/// The bucket size of a usage read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Granularity {
    /// Per minute.
    Minute,
    /// Per hour.
    Hour,
    /// Per day (UTC).
    Day,
}

impl Granularity {
    /// Every granularity, finest first.
    pub const ALL: [Granularity; 3] = [Granularity::Minute, Granularity::Hour, Granularity::Day];

    /// The bucket size in seconds.
    pub fn seconds(self) -> i64 {
        match self {
            Granularity::Minute => 60,
            Granularity::Hour => 3_600,
            Granularity::Day => 86_400,
        }
    }

    /// `minute`, `hour` or `day`.
    ///
    /// ```
    /// use keypal_sql::Granularity;
    /// for g in Granularity::ALL {
    ///     assert_eq!(Granularity::parse(g.as_str()), Some(g));
    /// }
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Minute => "minute",
            Granularity::Hour => "hour",
            Granularity::Day => "day",
        }
    }

    /// The granularity named `text` (`minute`, `hour`, `day`).
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.as_str() == text)
    }

    /// The longest range an analytics read at this granularity may cover: 48 hours of
    /// minutes, 90 days of hours, 1 096 days (three years) of days.
    pub fn max_range(self) -> time::Duration {
        match self {
            Granularity::Minute => time::Duration::hours(48),
            Granularity::Hour => time::Duration::days(90),
            Granularity::Day => time::Duration::days(1_096),
        }
    }
}

/// The start of the bucket `at` falls in, in seconds since the Unix epoch.
pub(crate) fn bucket_start(at: OffsetDateTime, seconds: i64) -> i64 {
    at.unix_timestamp().div_euclid(seconds) * seconds
}

/// What was counted for one key in one minute.
#[derive(Debug, Default)]
struct Counted {
    namespace: Option<String>,
    owner_id: Option<String>,
    counts: UsageCounts,
    tags: Vec<(String, UsageCounts)>,
}

impl Counted {
    fn add_tagged(&mut self, tag: &str, counts: &UsageCounts) {
        match self.tags.iter_mut().find(|(t, _)| t == tag) {
            Some((_, c)) => c.merge(counts),
            None => self.tags.push((tag.to_owned(), *counts)),
        }
    }
}

/// Counts waiting to be written, by (key, minute in Unix seconds).
type Pending = HashMap<(KeyId, i64), Counted>;

/// An [`EventSink`] counting verifications per key per minute (and per tag), in
/// memory, until [`UsageCounter::take`].
#[derive(Debug, Default)]
pub struct UsageCounter {
    pending: Mutex<Pending>,
}

impl UsageCounter {
    /// An empty counter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything counted since the last take, for `record_usage`. A failed write can
    /// hand the deltas back with [`UsageCounter::restore`].
    pub fn take(&self) -> Vec<UsageDelta> {
        let pending = std::mem::take(&mut *self.lock());
        pending
            .into_iter()
            .filter_map(|((key_id, minute), counted)| {
                let minute = OffsetDateTime::from_unix_timestamp(minute).ok()?;
                Some(UsageDelta {
                    key_id,
                    namespace: counted.namespace,
                    owner_id: counted.owner_id,
                    minute,
                    counts: counted.counts,
                    tags: counted.tags,
                })
            })
            .collect()
    }

    /// Puts deltas back (after a failed write), merged with what was counted since.
    pub fn restore(&self, deltas: Vec<UsageDelta>) {
        let mut pending = self.lock();
        for delta in deltas {
            let entry = pending.entry((delta.key_id, bucket_start(delta.minute, 60))).or_insert_with(|| Counted {
                namespace: delta.namespace.clone(),
                owner_id: delta.owner_id.clone(),
                ..Counted::default()
            });
            entry.counts.merge(&delta.counts);
            for (tag, counts) in &delta.tags {
                entry.add_tagged(tag, counts);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl EventSink for UsageCounter {
    fn record(&self, event: &Event) {
        let (Action::Verified, Some(key_id), Some(code)) = (event.action, event.key_id, event.code) else {
            return;
        };
        let mut pending = self.lock();
        let entry = pending.entry((key_id, bucket_start(event.at, 60))).or_insert_with(|| Counted {
            namespace: event.namespace.clone(),
            owner_id: event.owner_id.clone(),
            ..Counted::default()
        });
        entry.counts.add(code);
        for tag in event.tags.iter() {
            match entry.tags.iter_mut().find(|(t, _)| t == tag) {
                Some((_, counts)) => counts.add(code),
                None => {
                    let mut counts = UsageCounts::default();
                    counts.add(code);
                    entry.tags.push((tag.clone(), counts));
                }
            }
        }
    }
}

/// The start of the minute of `at`.
fn minute_of(at: OffsetDateTime) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp(bucket_start(at, 60)).map_err(|e| corrupt("bucket", e))
}

/// The bucket widths written by a flush, in seconds: minute, hour, day.
pub(crate) const SPANS: [i64; 3] = [60, 3_600, 86_400];

/// The coarser bucket widths written for keys and owners only, to rank them over long
/// ranges: 7 and 30 days (aligned to the Unix epoch).
pub(crate) const RANKING_SPANS: [i64; 2] = [604_800, 2_592_000];

/// One row of `keypal_counts`: (span, scope, namespace, subject, tag, bucket).
type RowKey = (i64, &'static str, String, String, String, i64);

/// Rows per upsert statement (13 parameters each: under SQLite's 32 766).
const ROWS_PER_STATEMENT: usize = 500;

/// The rows a flush adds to, merged (in primary-key order, which is also the order
/// concurrent flushes take their row locks in, so they cannot deadlock).
fn rows_of(deltas: &[UsageDelta]) -> BTreeMap<RowKey, UsageCounts> {
    let mut rows: BTreeMap<RowKey, UsageCounts> = BTreeMap::new();
    for delta in deltas {
        let namespace = delta.namespace.clone().unwrap_or_default();
        let key = delta.key_id.0.to_string();
        let minute = bucket_start(delta.minute, 60);
        let tagged = delta.tags.iter().map(|(tag, counts)| (tag.as_str(), counts));
        for (tag, counts) in std::iter::once(("", &delta.counts)).chain(tagged) {
            for span in SPANS.into_iter().chain(RANKING_SPANS) {
                let bucket = minute.div_euclid(span) * span;
                let mut add = |scope: &'static str, subject: &str| {
                    rows.entry((span, scope, namespace.clone(), subject.to_owned(), tag.to_owned(), bucket))
                        .or_default()
                        .merge(counts);
                };
                add("key", &key);
                if let Some(owner) = &delta.owner_id {
                    add("owner", owner);
                }
                if SPANS.contains(&span) {
                    add("app", "");
                }
            }
        }
    }
    rows
}

/// Reads seven counters (in [`UsageCounts::by_code`] order) starting at column `first`.
pub(crate) fn counts_of<D: Dialect>(row: &D::Row, first: usize) -> Result<UsageCounts, StoreError> {
    let get = |i: usize, column: &'static str| -> Result<u64, StoreError> {
        to_u64(column, D::read_at(row, first + i).map_err(backend)?)
    };
    Ok(UsageCounts {
        valid: get(0, "valid")?,
        revoked: get(1, "revoked")?,
        disabled: get(2, "disabled")?,
        expired: get(3, "expired")?,
        insufficient_scope: get(4, "insufficient_scope")?,
        rate_limited: get(5, "rate_limited")?,
        usage_exceeded: get(6, "usage_exceeded")?,
    })
}

impl<D: Dialect> DialectStore<D> {
    /// Adds counted verifications (see [`UsageCounter`]) to the minute, hour and day
    /// rows of each key, owner and application, per tag: a few batched upserts in one
    /// transaction.
    pub async fn record_usage(&self, deltas: &[UsageDelta]) -> Result<(), StoreError> {
        if deltas.is_empty() {
            return Ok(());
        }
        let rows: Vec<(RowKey, UsageCounts)> = rows_of(deltas).into_iter().collect();
        let mut tx = self.write().await?;
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<D>::new(
                "INSERT INTO keypal_counts AS c (span, scope, namespace, subject, tag, bucket, valid, revoked, \
                 disabled, expired, insufficient_scope, rate_limited, usage_exceeded) VALUES ",
            );
            for (i, ((span, scope, namespace, subject, tag, bucket), counts)) in chunk.iter().enumerate() {
                q.push(if i == 0 { "(" } else { ", (" });
                q.push_arg(*span).push(", ");
                q.push_arg(*scope).push(", ");
                q.push_arg(namespace.clone()).push(", ");
                q.push_arg(subject.clone()).push(", ");
                q.push_arg(tag.clone()).push(", ");
                q.push_arg(*bucket);
                for (_, n) in counts.by_code() {
                    q.push(", ").push_arg(to_i64("count", n)?);
                }
                q.push(")");
            }
            q.push(
                " ON CONFLICT (span, scope, namespace, subject, tag, bucket) DO UPDATE SET valid = c.valid + excluded.valid, \
                 revoked = c.revoked + excluded.revoked, disabled = c.disabled + excluded.disabled, \
                 expired = c.expired + excluded.expired, insufficient_scope = c.insufficient_scope + excluded.insufficient_scope, \
                 rate_limited = c.rate_limited + excluded.rate_limited, usage_exceeded = c.usage_exceeded + excluded.usage_exceeded",
            );
            q.build().execute(D::executor(&mut tx)).await.map_err(backend)?;
        }
        tx.commit().await.map_err(backend)
    }

    /// A key's verification counts in `[since, until)`, per minute, hour or day, oldest
    /// first (buckets without verifications are left out; minute and hour buckets older
    /// than their retention are gone, see [`DialectStore::prune_usage`]).
    pub async fn usage(
        &self,
        key: KeyId,
        since: OffsetDateTime,
        until: OffsetDateTime,
        per: Granularity,
    ) -> Result<Vec<UsageBucket>, StoreError> {
        let span = per.seconds();
        let query = sqlx::query(
            "SELECT bucket, valid, revoked, disabled, expired, insufficient_scope, rate_limited, usage_exceeded \
             FROM keypal_counts WHERE span = $1 AND scope = 'key' \
             AND namespace = COALESCE((SELECT namespace FROM keypal_keys WHERE id = $2), '') \
             AND subject = $3 AND tag = '' AND bucket >= $4 AND bucket < $5 ORDER BY bucket",
        )
        .arg(span)
        .arg(key.0)
        .arg(key.0.to_string())
        .arg(bucket_start(since, span))
        .arg(until.unix_timestamp() + i64::from(until.nanosecond() > 0));
        let rows = self.fetch_all(query).await?;
        rows.iter()
            .map(|row| {
                let start: i64 = D::read_at(row, 0).map_err(backend)?;
                let start = OffsetDateTime::from_unix_timestamp(start).map_err(|e| corrupt("bucket", e))?;
                Ok(UsageBucket { start, counts: counts_of::<D>(row, 1)? })
            })
            .collect()
    }

    /// The verification counts of every key of `namespace` in `[since, until)`, by code:
    /// summed from the application's day rows when both ends fall on a UTC midnight,
    /// else from its hour rows when both fall on an hour, else from its minute rows
    /// (`since` rounded down to its minute).
    pub async fn usage_totals(
        &self,
        namespace: Option<&str>,
        since: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<UsageCounts, StoreError> {
        let aligned = |span: i64| since.unix_timestamp() % span == 0 && until.unix_timestamp() % span == 0;
        let span = [86_400, 3_600].into_iter().find(|span| aligned(*span)).unwrap_or(60);
        let query = sqlx::query(
            "SELECT CAST(COALESCE(SUM(valid), 0) AS BIGINT), CAST(COALESCE(SUM(revoked), 0) AS BIGINT), \
             CAST(COALESCE(SUM(disabled), 0) AS BIGINT), CAST(COALESCE(SUM(expired), 0) AS BIGINT), \
             CAST(COALESCE(SUM(insufficient_scope), 0) AS BIGINT), CAST(COALESCE(SUM(rate_limited), 0) AS BIGINT), \
             CAST(COALESCE(SUM(usage_exceeded), 0) AS BIGINT) FROM keypal_counts \
             WHERE span = $1 AND scope = 'app' AND namespace = $2 AND subject = '' AND tag = '' \
             AND bucket >= $3 AND bucket < $4",
        )
        .arg(span)
        .arg(namespace.unwrap_or_default().to_owned())
        .arg(bucket_start(minute_of(since)?, span))
        .arg(until.unix_timestamp() + i64::from(until.nanosecond() > 0));
        let rows = self.fetch_all(query).await?;
        rows.first().map_or(Ok(UsageCounts::default()), |row| counts_of::<D>(row, 0))
    }
}
