//! Usage: verification counts per key per minute, aggregated in memory and written
//! as one row per key per minute (never one row per request).
//!
//! A [`UsageCounter`] is an [`EventSink`]: give it to a manager, and flush what it
//! counted to the store now and then (the server does every few seconds, and on shutdown).
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

use std::collections::HashMap;
use std::sync::Mutex;

use keypal::{Action, Code, Event, EventSink, KeyId, StoreError};
use time::OffsetDateTime;

use crate::DialectStore;
use crate::codec::{backend, corrupt, to_i64, to_u64};
use crate::dialect::{Arg, Dialect, UsageTime};

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
    /// The start of the minute.
    pub minute: OffsetDateTime,
    /// What to add.
    pub counts: UsageCounts,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Granularity {
    /// Per minute (as stored).
    Minute,
    /// Per hour.
    Hour,
}

impl Granularity {
    /// The bucket size in seconds.
    pub fn seconds(self) -> i64 {
        match self {
            Granularity::Minute => 60,
            Granularity::Hour => 3_600,
        }
    }
}

/// The start of the bucket `at` falls in, in seconds since the Unix epoch.
pub(crate) fn bucket_start(at: OffsetDateTime, seconds: i64) -> i64 {
    at.unix_timestamp().div_euclid(seconds) * seconds
}

/// Counts waiting to be written, by (key, minute in Unix seconds), with the key's namespace.
type Pending = HashMap<(KeyId, i64), (Option<String>, UsageCounts)>;

/// An [`EventSink`] counting verifications per key per minute, in memory, until [`UsageCounter::take`].
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
            .filter_map(|((key_id, minute), (namespace, counts))| {
                let minute = OffsetDateTime::from_unix_timestamp(minute).ok()?;
                Some(UsageDelta { key_id, namespace, minute, counts })
            })
            .collect()
    }

    /// Puts deltas back (after a failed write), merged with what was counted since.
    pub fn restore(&self, deltas: Vec<UsageDelta>) {
        let mut pending = self.lock();
        for delta in deltas {
            let entry = pending
                .entry((delta.key_id, bucket_start(delta.minute, 60)))
                .or_insert_with(|| (delta.namespace.clone(), UsageCounts::default()));
            entry.1.merge(&delta.counts);
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
        let entry = pending
            .entry((key_id, bucket_start(event.at, 60)))
            .or_insert_with(|| (event.namespace.clone(), UsageCounts::default()));
        entry.1.add(code);
    }
}

/// The start of the minute of `at`.
fn minute_of(at: OffsetDateTime) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp(bucket_start(at, 60)).map_err(|e| corrupt("bucket", e))
}

/// Reads seven counters (in [`UsageCounts::by_code`] order) starting at column `first`.
fn counts_of<D: Dialect>(row: &D::Row, first: usize) -> Result<UsageCounts, StoreError> {
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
    /// Adds counted verifications (see [`UsageCounter`]): one upsert per key per minute.
    pub async fn record_usage(&self, deltas: &[UsageDelta]) -> Result<(), StoreError> {
        if deltas.is_empty() {
            return Ok(());
        }
        let mut tx = self.write().await?;
        for delta in deltas {
            let c = &delta.counts;
            sqlx::query(
                "INSERT INTO keypal_usage AS u (key_id, bucket, namespace, valid, revoked, disabled, expired, \
                 insufficient_scope, rate_limited, usage_exceeded) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (key_id, bucket) DO UPDATE SET valid = u.valid + excluded.valid, \
                 revoked = u.revoked + excluded.revoked, disabled = u.disabled + excluded.disabled, \
                 expired = u.expired + excluded.expired, insufficient_scope = u.insufficient_scope + excluded.insufficient_scope, \
                 rate_limited = u.rate_limited + excluded.rate_limited, usage_exceeded = u.usage_exceeded + excluded.usage_exceeded",
            )
            .arg(delta.key_id.0)
            .arg(UsageTime(minute_of(delta.minute)?))
            .arg(delta.namespace.clone())
            .arg(to_i64("valid", c.valid)?)
            .arg(to_i64("revoked", c.revoked)?)
            .arg(to_i64("disabled", c.disabled)?)
            .arg(to_i64("expired", c.expired)?)
            .arg(to_i64("insufficient_scope", c.insufficient_scope)?)
            .arg(to_i64("rate_limited", c.rate_limited)?)
            .arg(to_i64("usage_exceeded", c.usage_exceeded)?)
            .execute(D::executor(&mut tx))
            .await
            .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)
    }

    /// A key's verification counts in `[since, until)`, per minute or hour, oldest first
    /// (buckets without verifications are left out).
    pub async fn usage(
        &self,
        key: KeyId,
        since: OffsetDateTime,
        until: OffsetDateTime,
        per: Granularity,
    ) -> Result<Vec<UsageBucket>, StoreError> {
        let query = sqlx::query(D::USAGE_BY_BUCKET)
            .arg(key.0)
            .arg(UsageTime(minute_of(since)?))
            .arg(UsageTime(until))
            .arg(per.seconds());
        let rows = self.fetch_all(query).await?;
        rows.iter()
            .map(|row| {
                let start: i64 = D::read_at(row, 0).map_err(backend)?;
                let start = OffsetDateTime::from_unix_timestamp(start).map_err(|e| corrupt("bucket", e))?;
                Ok(UsageBucket { start, counts: counts_of::<D>(row, 1)? })
            })
            .collect()
    }

    /// The verification counts of every key of `namespace` in `[since, until)`, by code.
    pub async fn usage_totals(
        &self,
        namespace: Option<&str>,
        since: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<UsageCounts, StoreError> {
        let query = sqlx::query(
            "SELECT CAST(COALESCE(SUM(valid), 0) AS BIGINT), CAST(COALESCE(SUM(revoked), 0) AS BIGINT), \
             CAST(COALESCE(SUM(disabled), 0) AS BIGINT), CAST(COALESCE(SUM(expired), 0) AS BIGINT), \
             CAST(COALESCE(SUM(insufficient_scope), 0) AS BIGINT), CAST(COALESCE(SUM(rate_limited), 0) AS BIGINT), \
             CAST(COALESCE(SUM(usage_exceeded), 0) AS BIGINT) FROM keypal_usage \
             WHERE namespace IS NOT DISTINCT FROM $1 AND bucket >= $2 AND bucket < $3",
        )
        .arg(namespace.map(str::to_owned))
        .arg(UsageTime(minute_of(since)?))
        .arg(UsageTime(until));
        let rows = self.fetch_all(query).await?;
        rows.first().map_or(Ok(UsageCounts::default()), |row| counts_of::<D>(row, 0))
    }
}
