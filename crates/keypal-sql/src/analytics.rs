//! Usage analytics: reading the counts a [`UsageCounter`](crate::UsageCounter) flushed
//! (`keypal_minutes`, migration 8, and the coarser rows of `keypal_counts`, migration 5),
//! and dropping expired minute and hour rows.
//!
//! Every read touches one scope's rows at one granularity: hour and wider rows through
//! `keypal_counts`' primary key `(span, scope, namespace, subject, tag, bucket)` (an
//! application's hourly counts over 30 days are about 720 rows, whatever its number of
//! keys), minute rows one probe per minute of `keypal_minutes`' key `(bucket, scope,
//! namespace, subject, tag)`. Reads of hours and wider add the minute rows not rolled up
//! yet (the last few minutes: the server rolls up every five minutes, see
//! [`DialectStore::roll_up_usage`]). Ranking the top keys or owners of an application
//! scans its day, 7-day or 30-day rows over the range (the partial index
//! `keypal_counts_ranks`), then reads the buckets of the chosen few by primary key.
//!
//! ```
//! use std::sync::Arc;
//! use keypal::{KeyManager, NewKey, Tags, VerifyOptions};
//! use keypal_sql::{AnalyticsQuery, Granularity, GroupBy, SqliteStore, UsageCounter};
//! use time::{Duration, OffsetDateTime};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = Arc::new(SqliteStore::connect("sqlite::memory:").await?);
//! let counter = Arc::new(UsageCounter::new());
//! let keys = KeyManager::builder().namespace("app_1").store(store.clone()).event_sink(counter.clone()).build()?;
//! let created = keys.create(NewKey::new().owner_id("user_1")).await?;
//! let tagged = VerifyOptions::new().tags(Tags::new(["GET /orders"])?);
//! keys.verify_with(created.key.expose(), &tagged).await?;
//! keys.verify(created.key.expose()).await?;
//! store.record_usage(&counter.take()).await?;
//!
//! let now = OffsetDateTime::now_utc();
//! let day = AnalyticsQuery::new(Some("app_1"), now - Duration::hours(1), now + Duration::minutes(1), Granularity::Hour);
//! let buckets = store.analytics(&day).await?;
//! assert_eq!(buckets.iter().map(|b| b.counts.valid).sum::<u64>(), 2);
//! let by_tag = store.analytics(&day.clone().owner("user_1").group_by(GroupBy::Tag)).await?;
//! assert_eq!(by_tag[0].group.as_deref(), Some("GET /orders"));
//! assert_eq!(by_tag[0].counts.valid, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

use std::time::Duration;

use keypal::{KeyId, StoreError, Tags};
use sqlx::QueryBuilder;
use time::OffsetDateTime;

use crate::DialectStore;
use crate::codec::{backend, corrupt};
use crate::dialect::{Dialect, PushArg};
use crate::usage::{COUNTERS, Granularity, SUMS, UsageCounts, bucket_start, counts_of};

/// Whose counts a query reads.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Subject {
    /// The whole application (namespace).
    App,
    /// One owner's keys in the application.
    Owner(String),
    /// One key.
    Key(KeyId),
}

/// How a query splits each bucket's counts beside the result codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GroupBy {
    /// The top keys of the application (only with [`Subject::App`]).
    Key,
    /// The top owners of the application (only with [`Subject::App`]).
    Owner,
    /// The top tags of the subject (not with a tag filter).
    Tag,
}

impl GroupBy {
    /// `key`, `owner` or `tag`.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Key => "key",
            GroupBy::Owner => "owner",
            GroupBy::Tag => "tag",
        }
    }
}

/// A question to the usage counts: whose, which tag, which range, at which
/// granularity, grouped how. Check it with [`AnalyticsQuery::check`] (the store does).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AnalyticsQuery {
    /// The application; `None` for keys without one.
    pub namespace: Option<String>,
    /// Whose counts.
    pub subject: Subject,
    /// Only verifications carrying this tag.
    pub tag: Option<String>,
    /// From (rounded down to its bucket).
    pub since: OffsetDateTime,
    /// Until (buckets starting before it).
    pub until: OffsetDateTime,
    /// The bucket size.
    pub granularity: Granularity,
    /// The split, besides the result codes.
    pub group_by: Option<GroupBy>,
    /// How many groups (keys, owners, tags) at most: 1 to [`AnalyticsQuery::MAX_GROUPS`].
    pub limit: u32,
}

/// Why an [`AnalyticsQuery`] cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidQuery {
    /// `until` is not after `since`.
    #[error("`to` must be after `from`")]
    EmptyRange,
    /// The range is longer than the granularity allows ([`Granularity::max_range`]).
    #[error("a range of {granularity} buckets may cover at most {max_hours} hours")]
    RangeTooLong {
        /// The granularity asked for.
        granularity: &'static str,
        /// Its longest range, in hours.
        max_hours: i64,
    },
    /// This grouping does not go with these filters.
    #[error("group_by={group_by} {reason}")]
    Grouping {
        /// The grouping.
        group_by: &'static str,
        /// Why not.
        reason: &'static str,
    },
    /// The tag filter is not a valid tag.
    #[error("tag must be 1 to 64 characters without control characters")]
    Tag,
    /// The limit is out of range.
    #[error("limit must be 1 to {max}", max = AnalyticsQuery::MAX_GROUPS)]
    Limit,
}

/// An analytics read failed: the query (a caller's mistake) or the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnalyticsError {
    /// The query cannot be answered.
    #[error(transparent)]
    Invalid(#[from] InvalidQuery),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AnalyticsQuery {
    /// The most groups one query returns.
    pub const MAX_GROUPS: u32 = 100;

    /// An application's counts (all its keys) in `[since, until)`, per `granularity`,
    /// by result code; at most 10 groups when grouped.
    pub fn new(
        namespace: Option<&str>,
        since: OffsetDateTime,
        until: OffsetDateTime,
        granularity: Granularity,
    ) -> Self {
        Self {
            namespace: namespace.map(str::to_owned),
            subject: Subject::App,
            tag: None,
            since,
            until,
            granularity,
            group_by: None,
            limit: 10,
        }
    }
    /// Only this owner's keys.
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.subject = Subject::Owner(owner.into());
        self
    }
    /// Only this key.
    pub fn key(mut self, key: KeyId) -> Self {
        self.subject = Subject::Key(key);
        self
    }
    /// Only verifications carrying `tag`.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tag = Some(tag.into());
        self
    }
    /// Splits each bucket by key, owner or tag.
    pub fn group_by(mut self, group_by: GroupBy) -> Self {
        self.group_by = Some(group_by);
        self
    }
    /// At most `limit` groups.
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = limit;
        self
    }

    /// Whether the store can answer: a range that is not empty nor longer than the
    /// granularity allows, a valid tag, a limit of 1 to 100, and a grouping that goes
    /// with the filters (`key` and `owner` only over a whole application, `tag` not
    /// with a tag filter).
    ///
    /// ```
    /// use keypal_sql::{AnalyticsQuery, Granularity, GroupBy, InvalidQuery};
    /// use time::{Duration, OffsetDateTime};
    /// let now = OffsetDateTime::now_utc();
    /// let q = AnalyticsQuery::new(Some("app"), now - Duration::hours(49), now, Granularity::Minute);
    /// assert!(matches!(q.check(), Err(InvalidQuery::RangeTooLong { .. })));
    /// let q = AnalyticsQuery::new(Some("app"), now - Duration::days(2), now, Granularity::Hour).owner("u1");
    /// assert!(q.clone().check().is_ok());
    /// assert!(q.group_by(GroupBy::Key).check().is_err());
    /// ```
    pub fn check(&self) -> Result<(), InvalidQuery> {
        if self.until <= self.since {
            return Err(InvalidQuery::EmptyRange);
        }
        let max = self.granularity.max_range();
        if self.until - self.since > max {
            return Err(InvalidQuery::RangeTooLong {
                granularity: self.granularity.as_str(),
                max_hours: max.whole_hours(),
            });
        }
        if self.tag.as_deref().is_some_and(|tag| !Tags::is_valid(tag)) {
            return Err(InvalidQuery::Tag);
        }
        if !(1..=Self::MAX_GROUPS).contains(&self.limit) {
            return Err(InvalidQuery::Limit);
        }
        match (self.group_by, &self.subject) {
            (Some(g @ (GroupBy::Key | GroupBy::Owner)), Subject::Owner(_) | Subject::Key(_)) => {
                Err(InvalidQuery::Grouping {
                    group_by: g.as_str(),
                    reason: "ranks a whole application: it cannot be combined with owner_id or key_id",
                })
            }
            (Some(GroupBy::Tag), _) if self.tag.is_some() => {
                Err(InvalidQuery::Grouping { group_by: "tag", reason: "cannot be combined with a tag filter" })
            }
            _ => Ok(()),
        }
    }
}

/// The counts of one bucket (of one group, when grouped).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AnalyticsBucket {
    /// The start of the bucket.
    pub start: OffsetDateTime,
    /// The key id, owner id or tag, when grouped.
    pub group: Option<String>,
    /// The counts by result code.
    pub counts: UsageCounts,
}

/// How long minute, hour and day rows are kept (see [`DialectStore::prune_usage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retention {
    /// Minute rows: 48 hours by default.
    pub minutes: Duration,
    /// Hour rows: 90 days by default.
    pub hours: Duration,
    /// Day rows: kept forever (`None`) by default.
    pub days: Option<Duration>,
}

impl Default for Retention {
    fn default() -> Self {
        Self { minutes: Duration::from_secs(48 * 3_600), hours: Duration::from_secs(90 * 86_400), days: None }
    }
}

impl Retention {
    /// Keeps minute rows for `minutes`, hour rows for `hours`, day rows for `days` (`None`: forever).
    pub fn new(minutes: Duration, hours: Duration, days: Option<Duration>) -> Self {
        Self { minutes, hours, days }
    }
}

/// The bucket width a ranking of keys or owners over `[since, until)` reads: the finest
/// of a day, 7 days and 30 days (aligned to the Unix epoch) of which the range touches
/// at most 4 buckets, else 30 days. Such rows exist for keys and owners only.
///
/// ```
/// use keypal_sql::ranking_span;
/// use time::{Duration, macros::datetime};
/// let from = datetime!(2026-01-01 0:00 UTC);
/// assert_eq!(ranking_span(from, from + Duration::hours(1)), 86_400);
/// assert_eq!(ranking_span(from, from + Duration::days(7)), 604_800);
/// assert_eq!(ranking_span(from, from + Duration::days(30)), 2_592_000);
/// ```
pub fn ranking_span(since: OffsetDateTime, until: OffsetDateTime) -> i64 {
    const MOST: i64 = 4;
    let last = end_of(until) - 1;
    [86_400, 604_800]
        .into_iter()
        .find(|span| (last.div_euclid(*span) - since.unix_timestamp().div_euclid(*span)) < MOST)
        .unwrap_or(2_592_000)
}

/// The first second not in `[.., until)` for integer buckets: buckets starting before `until`.
pub(crate) fn end_of(until: OffsetDateTime) -> i64 {
    until.unix_timestamp() + i64::from(until.nanosecond() > 0)
}

/// A count of seconds as a signed number of seconds (saturating).
fn seconds(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

impl<D: Dialect> DialectStore<D> {
    /// Answers an analytics query (checked first: [`AnalyticsQuery::check`]), oldest
    /// bucket first (then by group); buckets without verifications are left out.
    ///
    /// Grouped by key or owner, the groups are the `limit` keys or owners with the most
    /// verifications in the coarse buckets the range touches ([`ranking_span`]: UTC
    /// days, or 7-day or 30-day periods from the Unix epoch; ties by id), as rolled up
    /// (a few minutes behind; with the minutes not rolled up yet when the rolled-up
    /// counts name fewer than `limit`), each group's buckets exact; grouped by
    /// tag, the `limit` tags with the most verifications in the range.
    pub async fn analytics(&self, query: &AnalyticsQuery) -> Result<Vec<AnalyticsBucket>, AnalyticsError> {
        query.check()?;
        let span = query.granularity.seconds();
        let namespace = query.namespace.clone().unwrap_or_default();
        let (scope, subject) = match &query.subject {
            Subject::App => ("app", String::new()),
            Subject::Owner(owner) => ("owner", owner.clone()),
            Subject::Key(key) => ("key", key.0.to_string()),
        };
        let tag = query.tag.clone().unwrap_or_default();
        let from = bucket_start(query.since, span);
        let to = end_of(query.until);
        let limit = i64::from(query.limit);

        // The column a bucket is split by, and the conditions that pick the rows.
        let (group, filter): (&str, Filter<D>) = match query.group_by {
            None => {
                let filter = move |q: &mut QueryBuilder<D>| {
                    push_subject(q, scope, &namespace, &subject);
                    q.push(" AND tag = ").push_arg(tag.clone());
                };
                ("NULL", Box::new(filter))
            }
            Some(GroupBy::Tag) => {
                // The top tags, then their buckets.
                let tags = |q: &mut QueryBuilder<D>| {
                    push_subject(q, scope, &namespace, &subject);
                    q.push(" AND tag <> ''");
                };
                let mut top = QueryBuilder::<D>::new("SELECT tag FROM ");
                push_counts(&mut top, span, from, to, &tags, Recent::Add);
                top.push(" GROUP BY tag ORDER BY SUM(").push(TOTAL).push(") DESC, tag LIMIT ").push_arg(limit);
                let groups = self.strings(top).await?;
                if groups.is_empty() {
                    return Ok(Vec::new());
                }
                let filter = move |q: &mut QueryBuilder<D>| {
                    push_subject(q, scope, &namespace, &subject);
                    q.push(" AND tag IN (");
                    push_list(q, &groups);
                    q.push(")");
                };
                ("tag", Box::new(filter))
            }
            Some(GroupBy::Key | GroupBy::Owner) => {
                let scope = if query.group_by == Some(GroupBy::Key) { "key" } else { "owner" };
                // The top subjects in the coarse buckets the range touches, then their buckets.
                let rank = ranking_span(query.since, query.until);
                let ranked = |q: &mut QueryBuilder<D>| {
                    q.push("scope = ").push_arg(scope).push(" AND namespace = ").push_arg(namespace.clone());
                    q.push(" AND tag = ").push_arg(tag.clone());
                };
                // On the rolled-up counts (a few minutes behind, over ranges of a day or more);
                // with the minutes not rolled up yet only if they name fewer than `limit`,
                // as in a deployment's first minutes, since those rows cost most to read.
                let mut groups = Vec::new();
                for recent in [Recent::Skip, Recent::Add] {
                    let mut top = QueryBuilder::<D>::new("SELECT subject FROM ");
                    push_counts(&mut top, rank, bucket_start(query.since, rank), to, &ranked, recent);
                    top.push(" GROUP BY subject ORDER BY SUM(").push(TOTAL).push(") DESC, subject LIMIT ");
                    top.push_arg(limit);
                    groups = self.strings(top).await?;
                    if groups.len() == usize::try_from(limit).unwrap_or(usize::MAX) {
                        break;
                    }
                }
                if groups.is_empty() {
                    return Ok(Vec::new());
                }
                let filter = move |q: &mut QueryBuilder<D>| {
                    q.push("scope = ").push_arg(scope).push(" AND namespace = ").push_arg(namespace.clone());
                    q.push(" AND subject IN (");
                    push_list(q, &groups);
                    q.push(") AND tag = ").push_arg(tag.clone());
                };
                ("subject", Box::new(filter))
            }
        };
        let mut q = QueryBuilder::<D>::new("SELECT bucket, ");
        q.push(group).push(", ").push(SUMS).push(" FROM ");
        push_counts(&mut q, span, from, to, &*filter, Recent::Add);
        q.push(" GROUP BY bucket");
        if query.group_by.is_some() {
            q.push(", ").push(group).push(" ORDER BY bucket, ").push(group);
        } else {
            q.push(" ORDER BY bucket");
        }
        let rows = self.fetch_all(q.build()).await?;
        let buckets = rows
            .iter()
            .map(|row| {
                let start: i64 = D::read_at(row, 0).map_err(backend)?;
                let start = OffsetDateTime::from_unix_timestamp(start).map_err(|e| corrupt("bucket", e))?;
                let group: Option<String> =
                    if query.group_by.is_some() { Some(D::read_at(row, 1).map_err(backend)?) } else { None };
                Ok(AnalyticsBucket { start, group, counts: counts_of::<D>(row, 2)? })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(buckets)
    }

    /// Rolls up the closed minutes ([`DialectStore::roll_up_usage`]), then drops minute
    /// and hour rows (and day rows, with the keys' and owners' 7-day and 30-day rows once
    /// they end, when a day retention is set) whose bucket started before `now` minus
    /// their retention, in one transaction; returns how many rows went. Nothing is lost:
    /// only rolled-up minutes go, whose counts are in the hour and day rows, and every
    /// hour's counts are in its day's row. Running it again, or on several instances at
    /// once, only deletes what is still there.
    pub async fn prune_usage(&self, retention: &Retention, now: OffsetDateTime) -> Result<u64, StoreError> {
        self.roll_up_usage(now).await?;
        let now = now.unix_timestamp();
        let mut cutoffs = vec![(60_i64, now.saturating_sub(seconds(retention.minutes)))];
        cutoffs.push((3_600, now.saturating_sub(seconds(retention.hours))));
        if let Some(days) = retention.days {
            let cutoff = now.saturating_sub(seconds(days));
            // Day rows, and the 7-day and 30-day rows of keys and owners once their whole period is past.
            cutoffs.push((86_400, cutoff));
            for span in crate::usage::RANKING_SPANS {
                cutoffs.push((span, cutoff.saturating_sub(span)));
            }
        }
        let mut tx = self.write().await?;
        let mut deleted = 0;
        for (span, cutoff) in cutoffs {
            let mut q = if span == 60 {
                QueryBuilder::<D>::new(
                    "DELETE FROM keypal_minutes WHERE bucket < (SELECT rolled_until FROM keypal_rollup WHERE id = 1)",
                )
            } else {
                let mut q = QueryBuilder::<D>::new("DELETE FROM keypal_counts WHERE span = ");
                q.push_arg(span);
                q
            };
            q.push(" AND bucket < ").push_arg(cutoff);
            let done = q.build().execute(D::executor(&mut tx)).await.map_err(backend)?;
            deleted += D::rows_affected(&done);
        }
        tx.commit().await.map_err(backend)?;
        Ok(deleted)
    }

    /// The first column of each row of `query`, as text.
    async fn strings(&self, mut query: QueryBuilder<D>) -> Result<Vec<String>, StoreError> {
        let rows = self.fetch_all(query.build()).await?;
        rows.iter().map(|row| D::read_at(row, 0).map_err(backend)).collect()
    }
}

/// Appends `values` as a comma-separated list of parameters.
fn push_list<D: Dialect>(q: &mut QueryBuilder<D>, values: &[String]) {
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            q.push(", ");
        }
        q.push_arg(value.clone());
    }
}

/// Appends the conditions picking one subject's rows: its scope, application and id.
fn push_subject<D: Dialect>(q: &mut QueryBuilder<D>, scope: &'static str, namespace: &str, subject: &str) {
    q.push("scope = ").push_arg(scope).push(" AND namespace = ").push_arg(namespace.to_owned());
    q.push(" AND subject = ").push_arg(subject.to_owned());
}

/// Appends the conditions that pick the rows of a read (see [`push_counts`]).
type Filter<D> = Box<dyn Fn(&mut QueryBuilder<D>) + Send + Sync>;

/// Every verification of a row: the seven counters added.
const TOTAL: &str = "valid + revoked + disabled + expired + insufficient_scope + rate_limited + usage_exceeded";

/// Whether a read of buckets wider than a minute adds the minute rows not rolled up yet
/// (see [`push_counts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recent {
    /// Adds them: the read is exact.
    Add,
    /// Only rolled-up counts (a ranking's first, cheap pass).
    Skip,
}

/// Appends, as the `FROM` item `counts` (columns `subject, tag, bucket` and the seven
/// counters), the rows behind buckets `span` seconds wide starting in `[from, to)`.
/// For a minute read, the minute rows of the range. Wider, the `keypal_counts` rows of
/// that width (which hold every minute rolled up) and, unless `recent` skips them, the
/// minute rows not rolled up yet, each moved to the start of its `span` bucket.
/// `filter` appends the conditions on scope, namespace, subject and tag.
///
/// `keypal_minutes` is keyed by the minute first, so the minutes are listed (a
/// recursive query, up to the newest minute written) and each is looked up by that key
/// with the filter: one short probe per minute, however many other keys were counted in it.
pub(crate) fn push_counts<D: Dialect>(
    q: &mut QueryBuilder<D>,
    span: i64,
    from: i64,
    to: i64,
    filter: &dyn Fn(&mut QueryBuilder<D>),
    recent: Recent,
) {
    q.push("(");
    if span > 60 {
        q.push("SELECT subject, tag, bucket, ").push(COUNTERS).push(" FROM keypal_counts WHERE span = ");
        q.push_arg(span).push(" AND ");
        filter(q);
        q.push(" AND bucket >= ").push_arg(from).push(" AND bucket < ").push_arg(to);
        if recent == Recent::Skip {
            q.push(") counts");
            return;
        }
        q.push(" UNION ALL ");
    }
    // The minutes whose `span` bucket starts before `to`.
    let end = if span > 60 { to.div_euclid(span) * span + if to.rem_euclid(span) > 0 { span } else { 0 } } else { to };
    q.push("SELECT subject, tag, (bucket / ").push(span).push(") * ").push(span).push(" AS bucket, ");
    q.push(COUNTERS).push(" FROM (WITH RECURSIVE minutes(minute) AS (SELECT minute FROM (SELECT ");
    if span > 60 {
        // Not rolled up yet: from `rolled_until` on. (`WHERE id = 1`: PostgreSQL then
        // knows the list starts from one row, and probes each minute by key instead of
        // hashing a scan of the whole table.)
        q.push("CASE WHEN rolled_until > ").push_arg(from).push(" THEN rolled_until ELSE ").push_arg(from);
        q.push(" END AS minute FROM keypal_rollup WHERE id = 1");
    } else {
        q.push_arg(from).push(" AS minute");
    }
    q.push(") first WHERE minute < ").push_arg(end).push(" AND minute <= (SELECT MAX(bucket) FROM keypal_minutes)");
    q.push(" UNION ALL SELECT minute + 60 FROM minutes WHERE minute + 60 < ").push_arg(end);
    q.push(" AND minute + 60 <= (SELECT MAX(bucket) FROM keypal_minutes)) SELECT subject, tag, bucket, ");
    q.push(COUNTERS).push(" FROM minutes CROSS JOIN keypal_minutes WHERE bucket = minute AND ");
    filter(q);
    q.push(") recent) counts");
}
