//! Usage: verification counts per key per minute, aggregated in memory and written
//! in batches (never one row per request).
//!
//! A [`UsageCounter`] is an [`EventSink`]: give it to a manager, and flush what it
//! counted to the store now and then (the server writes each closed minute a few
//! seconds after it ends, and everything before a read and on shutdown). A flush adds
//! each key's counts to the minute rows (`keypal_minutes`, migration 8) of the key, its
//! owner and its application, for all its verifications and for each of their tags
//! ([`crate::AnalyticsQuery`] reads them). Only minute rows, keyed by the minute first so
//! that one flush's rows go in side by side: that is what keeps counting cheap.
//! [`DialectStore::roll_up_usage`] later adds closed minutes into the hour and day rows
//! of `keypal_counts` (and, for keys and owners, the 7- and 30-day rows that rank them
//! over long ranges), once each, and reads add the minutes not rolled up yet, so every
//! read is exact at once. [`DialectStore::prune_usage`] rolls up first, then drops
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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use foldhash::fast::RandomState;
use keypal::{Action, Code, Event, EventSink, KeyId, StoreError, Tags, VerificationEvent};
use smallvec::SmallVec;
use sqlx::QueryBuilder;
use time::OffsetDateTime;

use crate::DialectStore;
use crate::analytics::{Recent, end_of, push_counts};
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
        let index = code_index(code)?;
        let UsageCounts { valid, revoked, disabled, expired, insufficient_scope, rate_limited, usage_exceeded } = self;
        [valid, revoked, disabled, expired, insufficient_scope, rate_limited, usage_exceeded].into_iter().nth(index)
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
    bucket_of_second(at.unix_timestamp(), seconds)
}

/// The start of the bucket the Unix second `second` falls in.
fn bucket_of_second(second: i64, seconds: i64) -> i64 {
    second.div_euclid(seconds) * seconds
}

/// One minute's counts by code, in [`UsageCounts::by_code`] order, 32 bits each (no key
/// verifies four billion times in a minute): half the memory of a [`UsageCounts`], so
/// that a key's minute, its tags included, sits in a few neighbouring cache lines.
type MinuteCounts = [u32; 7];

/// The index of `code` in [`MinuteCounts`], for the codes that name a key.
fn code_index(code: Code) -> Option<usize> {
    match code {
        Code::Valid => Some(0),
        Code::Revoked => Some(1),
        Code::Disabled => Some(2),
        Code::Expired => Some(3),
        Code::InsufficientScope => Some(4),
        Code::RateLimited => Some(5),
        Code::UsageExceeded => Some(6),
        _ => None,
    }
}

/// `counts` as [`UsageCounts`].
fn widened(counts: &MinuteCounts) -> UsageCounts {
    let [valid, revoked, disabled, expired, insufficient_scope, rate_limited, usage_exceeded] = counts.map(u64::from);
    UsageCounts { valid, revoked, disabled, expired, insufficient_scope, rate_limited, usage_exceeded }
}

/// Adds `more` to `counts` (saturating: a count past 32 bits stays at its maximum).
fn add_to(counts: &mut MinuteCounts, more: &UsageCounts) {
    for (slot, (_, n)) in counts.iter_mut().zip(more.by_code()) {
        *slot = u32::try_from(u64::from(*slot).saturating_add(n)).unwrap_or(u32::MAX);
    }
}

/// The id of an interned tag (its place in [`Interned::names`]).
type TagId = u32;

/// What was counted for one key in one minute. Laid out in this order (`repr(C)`) so
/// that what a verification touches (the counts and the tags, three of them inline)
/// comes first and the namespace and owner, read only when written, last.
#[derive(Debug, Default)]
#[repr(C)]
struct Counted {
    counts: MinuteCounts,
    /// Per tag, by id.
    tags: SmallVec<[(TagId, MinuteCounts); 3]>,
    namespace: Option<String>,
    owner_id: Option<String>,
}

impl Counted {
    fn tag(&mut self, id: TagId) -> &mut MinuteCounts {
        match self.tags.iter().position(|(t, _)| *t == id) {
            Some(at) => &mut self.tags[at].1,
            None => {
                self.tags.push((id, MinuteCounts::default()));
                let last = self.tags.len() - 1;
                &mut self.tags[last].1
            }
        }
    }
}

/// What is counted per key in one minute. Hashed with foldhash (randomly seeded,
/// several times faster than the standard library's SipHash on these short keys): it
/// is looked up on every verification.
type CountedMap = HashMap<KeyId, Counted, RandomState>;

/// Counted minutes, each a map, by minute start (Unix seconds), oldest first: the
/// current minute and, until a take writes it, the one before (and any later minute a
/// restore put back).
type Minutes = Vec<(i64, CountedMap)>;

/// The counts of `minute`, made on first use (a search among a few minutes: a
/// verification is almost always in the newest).
fn minute_in(minutes: &mut Minutes, minute: i64) -> &mut CountedMap {
    let at = minutes.partition_point(|(start, _)| *start < minute);
    if minutes.get(at).is_none_or(|(start, _)| *start != minute) {
        minutes.insert(at, (minute, CountedMap::default()));
    }
    &mut minutes[at].1
}

/// Every tag counted, once, by id: a verification's tags are looked up here (one hash
/// each) and then found in its key's minute by id.
#[derive(Debug, Default)]
struct Interned {
    ids: HashMap<Arc<str>, TagId, RandomState>,
    names: Vec<Arc<str>>,
}

impl Interned {
    /// Past this many tags, a take forgets those no longer counted anywhere.
    const KEPT: usize = 1_024;

    fn id(&mut self, tag: &str) -> TagId {
        if let Some(id) = self.ids.get(tag) {
            return *id;
        }
        let id = TagId::try_from(self.names.len()).unwrap_or(TagId::MAX);
        let tag: Arc<str> = Arc::from(tag);
        self.names.push(tag.clone());
        self.ids.insert(tag, id);
        id
    }

    /// Keeps only the tags `minutes` use, renumbered.
    fn keep_only_used_by(&mut self, minutes: &mut Minutes) {
        let old = std::mem::take(self);
        let mut renumbered: HashMap<TagId, TagId, RandomState> = HashMap::default();
        for entry in minutes.iter_mut().flat_map(|(_, counted)| counted.values_mut()) {
            for (id, _) in &mut entry.tags {
                *id = *renumbered
                    .entry(*id)
                    .or_insert_with(|| self.id(old.names.get(*id as usize).map_or("", |name| &**name)));
            }
        }
    }
}

/// Counts waiting to be written. A take moves whole minutes out: the lock is held for
/// a few moves, whatever the number of keys counted.
#[derive(Debug, Default)]
struct Pending {
    minutes: Minutes,
    tags: Interned,
}

/// `key_id`'s counts in `minute`, made on first use.
fn counted_in<'a>(
    minutes: &'a mut Minutes,
    key_id: KeyId,
    minute: i64,
    namespace: &Option<String>,
    owner_id: &Option<String>,
) -> &'a mut Counted {
    minute_in(minutes, minute).entry(key_id).or_insert_with(|| Counted {
        namespace: namespace.clone(),
        owner_id: owner_id.clone(),
        ..Counted::default()
    })
}

/// Pending counts as deltas to write, their tags named from `names`.
fn deltas_of(minutes: Minutes, names: &[Arc<str>]) -> Vec<UsageDelta> {
    minutes
        .into_iter()
        .flat_map(|(minute, counted)| counted.into_iter().map(move |(key_id, counted)| (key_id, minute, counted)))
        .filter_map(|(key_id, minute, counted)| {
            let minute = OffsetDateTime::from_unix_timestamp(minute).ok()?;
            let tags = counted
                .tags
                .iter()
                .filter_map(|(id, counts)| names.get(*id as usize).map(|name| (name.to_string(), widened(counts))));
            Some(UsageDelta {
                key_id,
                minute,
                counts: widened(&counted.counts),
                tags: tags.collect(),
                namespace: counted.namespace,
                owner_id: counted.owner_id,
            })
        })
        .collect()
}

/// Deltas of the same key and minute, counted on different threads, as one.
fn merged(deltas: Vec<UsageDelta>) -> Vec<UsageDelta> {
    let mut places: HashMap<(KeyId, i64), usize, RandomState> = HashMap::default();
    let mut out: Vec<UsageDelta> = Vec::with_capacity(deltas.len());
    for delta in deltas {
        match places.entry((delta.key_id, delta.minute.unix_timestamp())) {
            std::collections::hash_map::Entry::Occupied(place) => out[*place.get()].add(delta),
            std::collections::hash_map::Entry::Vacant(place) => {
                place.insert(out.len());
                out.push(delta);
            }
        }
    }
    out
}

impl UsageDelta {
    /// Adds `other`'s counts (of the same key and minute) to these.
    fn add(&mut self, other: UsageDelta) {
        self.counts.merge(&other.counts);
        for (tag, counts) in other.tags {
            match self.tags.iter_mut().find(|(mine, _)| *mine == tag) {
                Some((_, mine)) => mine.merge(&counts),
                None => self.tags.push((tag, counts)),
            }
        }
    }
}

/// The pending counts of the threads that count into one [`Shard`]. Aligned to its own
/// cache lines, so that threads counting into neighbouring shards do not share one.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard(Mutex<Pending>);

/// Gives each thread that counts its place among the shards, in the order they first count.
static NEXT_THREAD: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

thread_local! {
    /// This thread's place among the shards (see [`NEXT_THREAD`]).
    static THREAD: usize = NEXT_THREAD.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// An [`EventSink`] counting verifications per key per minute (and per tag), in
/// memory, until [`UsageCounter::take`].
///
/// Each thread counts into its own shard (four per core; threads past that share), so
/// the threads verifying side by side neither wait on one lock nor pass one map's
/// memory between their cores on every verification. A take gathers every shard and
/// merges what two threads counted for the same key and minute.
#[derive(Debug)]
pub struct UsageCounter {
    shards: Box<[Shard]>,
}

impl Default for UsageCounter {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Self { shards: (0..cores.saturating_mul(4).clamp(1, 256)).map(|_| Shard::default()).collect() }
    }
}

impl UsageCounter {
    /// An empty counter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything counted since the last take, for `record_usage`. A failed write can
    /// hand the deltas back with [`UsageCounter::restore`].
    pub fn take(&self) -> Vec<UsageDelta> {
        self.take_where(|_| true)
    }

    /// What was counted in the minutes that ended before `now`'s minute, for
    /// `record_usage`; the current minute stays (so each key's minute is usually
    /// written once, not at every flush). [`UsageCounter::take`] takes everything.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use keypal::{KeyManager, MemoryStore, NewKey};
    /// use keypal_sql::UsageCounter;
    /// use time::{Duration, OffsetDateTime};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let counter = Arc::new(UsageCounter::new());
    /// let keys = KeyManager::builder().store(Arc::new(MemoryStore::new())).event_sink(counter.clone()).build()?;
    /// let created = keys.create(NewKey::new()).await?;
    /// keys.verify(created.key.expose()).await?;
    /// let now = OffsetDateTime::now_utc();
    /// assert!(counter.take_closed(now).is_empty(), "this minute is still open");
    /// assert_eq!(counter.take_closed(now + Duration::minutes(1)).len(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub fn take_closed(&self, now: OffsetDateTime) -> Vec<UsageDelta> {
        let open = bucket_start(now, 60);
        self.take_where(|minute| minute < open)
    }

    /// What every shard counted in the minutes that pass `taken`, as deltas, one per
    /// key and minute.
    fn take_where(&self, taken: impl Fn(i64) -> bool) -> Vec<UsageDelta> {
        let mut deltas = Vec::new();
        let mut shards_taken_from = 0;
        for shard in &self.shards {
            let taken = Self::take_from(shard, &taken);
            shards_taken_from += usize::from(!taken.is_empty());
            deltas.extend(taken);
        }
        if shards_taken_from > 1 { merged(deltas) } else { deltas }
    }

    /// What `shard` counted in the minutes that pass `taken`, as deltas (made after its
    /// lock is released: verifications wait only for whole minutes to be moved). When
    /// nothing is left, or more than [`Interned::KEPT`] tags are known, the tags no
    /// longer counted are forgotten.
    fn take_from(shard: &Shard, taken: &impl Fn(i64) -> bool) -> Vec<UsageDelta> {
        let (out, names) = {
            let mut pending = shard.0.lock().unwrap_or_else(|e| e.into_inner());
            let Pending { minutes, tags } = &mut *pending;
            let (out, mut kept): (Minutes, Minutes) =
                std::mem::take(minutes).into_iter().partition(|(minute, _)| taken(*minute));
            let names = tags.names.clone();
            if kept.is_empty() {
                *tags = Interned::default();
            } else if tags.names.len() > Interned::KEPT {
                tags.keep_only_used_by(&mut kept);
            }
            *minutes = kept;
            (out, names)
        };
        deltas_of(out, &names)
    }

    /// Puts deltas back (after a failed write), merged with what was counted since.
    pub fn restore(&self, deltas: Vec<UsageDelta>) {
        let mut pending = self.lock();
        let Pending { minutes, tags } = &mut *pending;
        for delta in deltas {
            let minute = bucket_start(delta.minute, 60);
            let entry = counted_in(minutes, delta.key_id, minute, &delta.namespace, &delta.owner_id);
            add_to(&mut entry.counts, &delta.counts);
            for (tag, counts) in &delta.tags {
                add_to(entry.tag(tags.id(tag)), counts);
            }
        }
    }

    /// This thread's shard, locked.
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        let shard = THREAD.with(|thread| *thread) % self.shards.len();
        self.shards[shard].0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl UsageCounter {
    /// Counts one verification of `key_id` at the Unix second `second`, in its minute.
    fn count(
        &self,
        key_id: KeyId,
        second: i64,
        namespace: &Option<String>,
        owner_id: &Option<String>,
        code: Code,
        verification_tags: &Tags,
    ) {
        let Some(index) = code_index(code) else { return };
        let mut pending = self.lock();
        let Pending { minutes, tags } = &mut *pending;
        let entry = counted_in(minutes, key_id, bucket_of_second(second, 60), namespace, owner_id);
        entry.counts[index] = entry.counts[index].saturating_add(1);
        for tag in verification_tags.iter() {
            let counts = entry.tag(tags.id(tag));
            counts[index] = counts[index].saturating_add(1);
        }
    }
}

impl EventSink for UsageCounter {
    fn record(&self, event: &Event) {
        if let (Action::Verified, Some(key_id), Some(code)) = (event.action, event.key_id, event.code) {
            self.count(key_id, event.at.unix_timestamp(), &event.namespace, &event.owner_id, code, &event.tags);
        }
    }

    /// Counts the verification from the verify path's own data: no event is made, and
    /// the minute comes from the coarse second (no precise clock read).
    fn record_verification(&self, verified: &VerificationEvent<'_>) {
        if let Some(record) = verified.verification.record() {
            let code = verified.verification.code();
            self.count(record.id, verified.unix_second, &record.namespace, &record.owner_id, code, verified.tags);
        }
    }
}

/// The start of the minute of `at`.
fn minute_of(at: OffsetDateTime) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp(bucket_start(at, 60)).map_err(|e| corrupt("bucket", e))
}

/// The bucket widths of every scope, in seconds: minute, hour, day.
pub(crate) const SPANS: [i64; 3] = [60, 3_600, 86_400];

/// The coarser bucket widths of keys and owners only, to rank them over long ranges:
/// 7 and 30 days (aligned to the Unix epoch).
pub(crate) const RANKING_SPANS: [i64; 2] = [604_800, 2_592_000];

/// The bucket widths of `scope` (`key`, `owner` or `app`), finest first.
fn spans_of(scope: &str) -> impl Iterator<Item = i64> {
    let ranked = scope != "app";
    SPANS.into_iter().chain(RANKING_SPANS.into_iter().filter(move |_| ranked))
}

/// How long after a minute ends the roll-up waits before adding it to the coarser rows,
/// in seconds: the flushes of that minute are normally in by then. A flush that comes
/// later still counts (it writes every width itself), so this only saves work.
const ROLLUP_DELAY: i64 = 120;

/// The seven counters, in [`UsageCounts::by_code`] order.
pub(crate) const COUNTERS: &str = "valid, revoked, disabled, expired, insufficient_scope, rate_limited, usage_exceeded";

/// Ends an insert into `keypal_counts AS c` or `keypal_minutes AS c` after its
/// conflict target: adds to a row that is already there.
const ADD_TO_EXISTING: &str = " DO UPDATE SET \
     valid = c.valid + excluded.valid, revoked = c.revoked + excluded.revoked, \
     disabled = c.disabled + excluded.disabled, expired = c.expired + excluded.expired, \
     insufficient_scope = c.insufficient_scope + excluded.insufficient_scope, \
     rate_limited = c.rate_limited + excluded.rate_limited, usage_exceeded = c.usage_exceeded + excluded.usage_exceeded";

/// The primary key of `keypal_counts` (the hour and wider rows).
const COUNTS_KEY: &str = "(span, scope, namespace, subject, tag, bucket)";

/// The primary key of `keypal_minutes` (migration 8): the minute first, so that a
/// flush's rows go in side by side at the end of the table.
const MINUTES_KEY: &str = "(bucket, scope, namespace, subject, tag)";

/// One row a flush adds to: (span, bucket, scope, namespace, subject, tag). In this
/// order, a flush's minute rows (span 60) come first, in `keypal_minutes`' key order.
/// The text is shared ([`Texts`]): a row costs no allocation of its own, and binds its
/// text to a statement without copying it.
type RowKey = (i64, i64, Arc<str>, Arc<str>, Arc<str>, Arc<str>);

/// The order of [`RowKey`]s, comparing shared text by address first (text from one
/// [`Texts`] is equal exactly when it is the same allocation, so most comparisons of
/// the namespace, scope and tag need no byte comparison).
fn row_order(a: &RowKey, b: &RowKey) -> std::cmp::Ordering {
    let text = |x: &Arc<str>, y: &Arc<str>| if Arc::ptr_eq(x, y) { std::cmp::Ordering::Equal } else { x.cmp(y) };
    (a.0, a.1)
        .cmp(&(b.0, b.1))
        .then_with(|| text(&a.2, &b.2))
        .then_with(|| text(&a.3, &b.3))
        .then_with(|| text(&a.4, &b.4))
        .then_with(|| text(&a.5, &b.5))
}

/// The text of one flush's rows, each distinct string allocated once.
#[derive(Default)]
struct Texts(std::collections::HashSet<Arc<str>, RandomState>);

impl Texts {
    fn of(&mut self, text: &str) -> Arc<str> {
        if let Some(shared) = self.0.get(text) {
            return shared.clone();
        }
        let shared: Arc<str> = Arc::from(text);
        self.0.insert(shared.clone());
        shared
    }
}

/// Rows per upsert statement (13 parameters each: under SQLite's 32 766).
const ROWS_PER_STATEMENT: usize = 500;

/// How many deltas a flush turns into rows before letting the runtime's other tasks
/// run: a flush of 10 000 keys is tens of milliseconds of work, which would otherwise
/// hold up the verifications waiting on the same worker thread.
const DELTAS_PER_TURN: usize = 500;

/// The rows a flush adds to, merged and sorted (which is also the order concurrent
/// flushes take their row locks in, so they cannot deadlock): the minute rows, and for
/// a minute before `rolled_until` (already rolled up) every width. Made
/// [`DELTAS_PER_TURN`] deltas at a time, yielding between; sorted and merged on a
/// blocking thread (tens of milliseconds in one stretch for a minute of 10 000 keys,
/// which the verifications queued on this worker would otherwise wait for).
async fn rows_of(deltas: &[UsageDelta], rolled_until: i64) -> Result<Vec<(RowKey, UsageCounts)>, StoreError> {
    let mut texts = Texts::default();
    let mut rows: Vec<(RowKey, UsageCounts)> = Vec::new();
    for turn in deltas.chunks(DELTAS_PER_TURN) {
        add_rows(&mut rows, &mut texts, turn, rolled_until);
        tokio::task::yield_now().await;
    }
    tokio::task::spawn_blocking(move || sorted_and_merged(rows)).await.map_err(StoreError::backend)
}

/// `rows` sorted, each row once with its counts summed.
fn sorted_and_merged(mut rows: Vec<(RowKey, UsageCounts)>) -> Vec<(RowKey, UsageCounts)> {
    rows.sort_unstable_by(|a, b| row_order(&a.0, &b.0));
    let mut merged: Vec<(RowKey, UsageCounts)> = Vec::with_capacity(rows.len());
    for (key, counts) in rows {
        match merged.last_mut() {
            Some((last, sum)) if row_order(last, &key).is_eq() => sum.merge(&counts),
            _ => merged.push((key, counts)),
        }
    }
    merged
}

/// Adds the rows of `deltas` to `rows`, unmerged (see [`rows_of`]).
fn add_rows(rows: &mut Vec<(RowKey, UsageCounts)>, texts: &mut Texts, deltas: &[UsageDelta], rolled_until: i64) {
    let [key_scope, owner_scope, app_scope, none] = ["key", "owner", "app", ""].map(|text| texts.of(text));
    let mut key_id = uuid::Uuid::encode_buffer();
    for delta in deltas {
        let namespace = texts.of(delta.namespace.as_deref().unwrap_or_default());
        // A key's id is in no other delta of the flush: not worth looking up.
        let key: Arc<str> = Arc::from(&*delta.key_id.0.hyphenated().encode_lower(&mut key_id));
        let owner = delta.owner_id.as_deref().map(|owner| texts.of(owner));
        let minute = bucket_start(delta.minute, 60);
        let late = minute < rolled_until;
        let tagged = delta.tags.iter().map(|(tag, counts)| (texts.of(tag), counts));
        for (tag, counts) in std::iter::once((none.clone(), &delta.counts)).chain(tagged) {
            let mut add = |scope: &Arc<str>, subject: &Arc<str>| {
                for span in spans_of(scope).take(if late { usize::MAX } else { 1 }) {
                    let bucket = minute.div_euclid(span) * span;
                    let row = (span, bucket, scope.clone(), namespace.clone(), subject.clone(), tag.clone());
                    rows.push((row, *counts));
                }
            };
            add(&key_scope, &key);
            if let Some(owner) = &owner {
                add(&owner_scope, owner);
            }
            add(&app_scope, &none);
        }
    }
}

/// Adds `rows` (all minute rows, or all wider ones) to `keypal_minutes` or
/// `keypal_counts`, in batched upserts.
async fn upsert<D: Dialect>(
    tx: &mut sqlx::Transaction<'static, D>,
    rows: &[(RowKey, UsageCounts)],
    minutes: bool,
) -> Result<(), StoreError> {
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<D>::new(if minutes {
            "INSERT INTO keypal_minutes AS c (bucket, scope, namespace, subject, tag, "
        } else {
            "INSERT INTO keypal_counts AS c (span, bucket, scope, namespace, subject, tag, "
        });
        q.push(COUNTERS).push(") VALUES ");
        for (i, ((span, bucket, scope, namespace, subject, tag), counts)) in chunk.iter().enumerate() {
            q.push(if i == 0 { "(" } else { ", (" });
            if !minutes {
                q.push_arg(*span).push(", ");
            }
            q.push_arg(*bucket).push(", ");
            q.push_arg(scope.clone()).push(", ");
            q.push_arg(namespace.clone()).push(", ");
            q.push_arg(subject.clone()).push(", ");
            q.push_arg(tag.clone());
            for (_, n) in counts.by_code() {
                q.push(", ").push_arg(to_i64("count", n)?);
            }
            q.push(")");
        }
        q.push(" ON CONFLICT ").push(if minutes { MINUTES_KEY } else { COUNTS_KEY }).push(ADD_TO_EXISTING);
        q.build().execute(D::executor(tx)).await.map_err(backend)?;
    }
    Ok(())
}

/// Reads how far the roll-up has gone (`keypal_rollup.rolled_until`), locking it with `lock`.
async fn rolled_until<D: Dialect>(tx: &mut sqlx::Transaction<'static, D>, lock: &str) -> Result<i64, StoreError> {
    let mut q = QueryBuilder::<D>::new("SELECT rolled_until FROM keypal_rollup WHERE id = 1");
    q.push(lock);
    let row = q.build().fetch_one(D::executor(tx)).await.map_err(backend)?;
    D::read_at(&row, 0).map_err(backend)
}

/// The seven counters summed (0 without rows), as 64-bit integers on both dialects.
pub(crate) const SUMS: &str = "CAST(COALESCE(SUM(valid), 0) AS BIGINT), CAST(COALESCE(SUM(revoked), 0) AS BIGINT), \
     CAST(COALESCE(SUM(disabled), 0) AS BIGINT), CAST(COALESCE(SUM(expired), 0) AS BIGINT), \
     CAST(COALESCE(SUM(insufficient_scope), 0) AS BIGINT), CAST(COALESCE(SUM(rate_limited), 0) AS BIGINT), \
     CAST(COALESCE(SUM(usage_exceeded), 0) AS BIGINT)";

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
    /// Adds counted verifications (see [`UsageCounter`]) to the minute rows of each key,
    /// owner and application, per tag (and to every width for minutes already rolled up,
    /// see [`DialectStore::roll_up_usage`]): a few batched upserts in one transaction.
    pub async fn record_usage(&self, deltas: &[UsageDelta]) -> Result<(), StoreError> {
        if deltas.is_empty() {
            return Ok(());
        }
        let mut tx = self.write().await?;
        // Shared: flushes run side by side, and a roll-up waits for them (and they for it).
        let rolled_until = rolled_until::<D>(&mut tx, D::LOCK_SHARED).await?;
        let rows = rows_of(deltas, rolled_until).await?;
        let wider = rows.partition_point(|((span, ..), _)| *span == 60);
        upsert(&mut tx, &rows[..wider], true).await?;
        upsert(&mut tx, &rows[wider..], false).await?;
        tx.commit().await.map_err(backend)
    }

    /// Adds the minutes that ended at least two minutes before `now` and are not rolled
    /// up yet into the hour and day rows (and the 7- and 30-day rows of keys and owners),
    /// in one transaction that also moves `keypal_rollup.rolled_until` past them; returns
    /// how many minutes it rolled up. Each minute is added once, however many instances
    /// call it and however often: they take turns on `keypal_rollup`, and a flush waits
    /// for a roll-up in progress (and then writes a late minute at every width itself).
    /// [`DialectStore::prune_usage`] calls it; reads do not need it (they add the
    /// minutes not rolled up yet), it keeps them short.
    pub async fn roll_up_usage(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let until = bucket_start(now, 60) - ROLLUP_DELAY;
        let mut tx = self.write().await?;
        let from = rolled_until::<D>(&mut tx, D::LOCK_EXCLUSIVE).await?;
        if until <= from {
            return Ok(0);
        }
        for span in spans_of("key").skip(1) {
            let mut q = QueryBuilder::<D>::new(
                "INSERT INTO keypal_counts AS c (span, scope, namespace, subject, tag, bucket, ",
            );
            q.push(COUNTERS).push(") SELECT ").push(span).push(", scope, namespace, subject, tag, (bucket / ");
            q.push(span).push(") * ").push(span).push(", ").push(SUMS);
            q.push(" FROM keypal_minutes WHERE bucket >= ").push_arg(from);
            q.push(" AND bucket < ").push_arg(until);
            if !spans_of("app").any(|s| s == span) {
                q.push(" AND scope <> 'app'");
            }
            q.push(" GROUP BY scope, namespace, subject, tag, (bucket / ").push(span).push(") * ").push(span);
            q.push(" ON CONFLICT ").push(COUNTS_KEY).push(ADD_TO_EXISTING);
            q.build().execute(D::executor(&mut tx)).await.map_err(backend)?;
        }
        sqlx::query("UPDATE keypal_rollup SET rolled_until = $1 WHERE id = 1")
            .arg(until)
            .execute(D::executor(&mut tx))
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(u64::try_from((until - from) / 60).unwrap_or(0))
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
        let subject = key.0.to_string();
        let filter = |q: &mut QueryBuilder<D>| {
            q.push("scope = 'key' AND namespace = COALESCE((SELECT namespace FROM keypal_keys WHERE id = ");
            q.push_arg(key.0).push("), '') AND subject = ").push_arg(subject.clone()).push(" AND tag = ''");
        };
        let mut q = QueryBuilder::<D>::new("SELECT bucket, ");
        q.push(SUMS).push(" FROM ");
        push_counts(&mut q, span, bucket_start(since, span), end_of(until), &filter, Recent::Add);
        q.push(" GROUP BY bucket ORDER BY bucket");
        let rows = self.fetch_all(q.build()).await?;
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
        let namespace = namespace.unwrap_or_default().to_owned();
        let filter = |q: &mut QueryBuilder<D>| {
            q.push("scope = 'app' AND namespace = ").push_arg(namespace.clone()).push(" AND subject = '' AND tag = ''");
        };
        let mut q = QueryBuilder::<D>::new("SELECT ");
        q.push(SUMS).push(" FROM ");
        push_counts(&mut q, span, bucket_start(minute_of(since)?, span), end_of(until), &filter, Recent::Add);
        let rows = self.fetch_all(q.build()).await?;
        rows.first().map_or(Ok(UsageCounts::default()), |row| counts_of::<D>(row, 0))
    }
}

#[cfg(test)]
mod tests {
    use keypal::{AuditContext, Tags};

    use super::*;

    fn verified(key: u128, at: i64, code: Code, tags: &[&str]) -> Event {
        let at = OffsetDateTime::from_unix_timestamp(at).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let mut event = Event::new(Action::Verified, at, AuditContext::default());
        event.key_id = Some(KeyId(uuid::Uuid::from_u128(key)));
        event.owner_id = Some(format!("owner-{key}"));
        event.code = Some(code);
        event.tags = Tags::new(tags.iter().map(|t| t.to_string())).unwrap_or_default();
        event
    }

    fn tagged(delta: &UsageDelta, tag: &str) -> Option<UsageCounts> {
        delta.tags.iter().find(|(t, _)| t == tag).map(|(_, counts)| *counts)
    }

    #[test]
    fn each_tag_is_counted_under_its_key_and_minute_and_forgotten_once_written() {
        let counter = UsageCounter::new();
        // The same tags arrive as new strings with every verification.
        counter.record(&verified(1, 60, Code::Valid, &["region-1", "plan-a"]));
        counter.record(&verified(1, 61, Code::RateLimited, &["plan-a"]));
        counter.record(&verified(2, 62, Code::Valid, &["plan-a"]));
        counter.record(&verified(1, 120, Code::Valid, &["plan-a"]));

        let closed =
            counter.take_closed(OffsetDateTime::from_unix_timestamp(125).unwrap_or(OffsetDateTime::UNIX_EPOCH));
        assert_eq!(closed.len(), 2, "keys 1 and 2 in the minute at 60; the minute at 120 is open");
        let Some(first) = closed.iter().find(|d| d.key_id.0 == uuid::Uuid::from_u128(1)) else {
            panic!("key 1's minute is missing")
        };
        assert_eq!((first.counts.valid, first.counts.rate_limited), (1, 1));
        assert_eq!(tagged(first, "plan-a").map(|c| (c.valid, c.rate_limited)), Some((1, 1)));
        assert_eq!(tagged(first, "region-1").map(|c| (c.valid, c.rate_limited)), Some((1, 0)));
        assert_eq!(first.tags.len(), 2);

        // A failed write is put back and merged with what was counted since.
        counter.restore(closed);
        counter.record(&verified(2, 63, Code::Valid, &["plan-a"]));
        let all = counter.take();
        let second = all.iter().find(|d| d.key_id.0 == uuid::Uuid::from_u128(2) && bucket_start(d.minute, 60) == 60);
        assert_eq!(second.and_then(|d| tagged(d, "plan-a")).map(|c| c.valid), Some(2));
        assert_eq!(all.len(), 3);
        assert!(counter.lock().tags.names.is_empty(), "nothing pending, no tag held");
    }

    #[test]
    fn a_verification_late_for_its_minute_is_counted_in_that_minute() {
        let counter = UsageCounter::new();
        let at = |s| OffsetDateTime::from_unix_timestamp(s).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        counter.record(&verified(1, 185, Code::Valid, &[]));
        // A slow request of the minute before, and one of two minutes before, answered after it.
        counter.record(&verified(1, 179, Code::Valid, &[]));
        counter.record(&verified(1, 61, Code::Valid, &[]));
        counter.record(&verified(2, 120, Code::Valid, &[]));
        let minutes = |deltas: &[UsageDelta]| {
            let mut minutes: Vec<(u128, i64, u64)> =
                deltas.iter().map(|d| (d.key_id.0.as_u128(), d.minute.unix_timestamp(), d.counts.valid)).collect();
            minutes.sort_unstable();
            minutes
        };
        assert_eq!(minutes(&counter.take_closed(at(150))), [(1, 60, 1)]);
        assert_eq!(minutes(&counter.take_closed(at(190))), [(1, 120, 1), (2, 120, 1)]);
        assert_eq!(minutes(&counter.take()), [(1, 180, 1)]);
    }

    /// The verify path hands the counter its verifications directly: each lands in the
    /// minute of the manager's clock when it was verified.
    #[tokio::test]
    async fn a_managers_verifications_are_counted_in_the_minute_of_its_clock() -> Result<(), keypal::Error> {
        let clock = Arc::new(keypal::ManualClock::new(time::macros::datetime!(2025-01-01 0:00:59.999 UTC)));
        let counter = Arc::new(UsageCounter::new());
        let keys = keypal::KeyManager::builder()
            .store(keypal::MemoryStore::new())
            .clock(clock.clone())
            .event_sink(counter.clone())
            .build()?;
        let created = keys.create(keypal::NewKey::new().owner_id("owner-1")).await?;
        let options = keypal::VerifyOptions::new().tags(Tags::new(["GET /v1/orders"]).unwrap_or_default());
        keys.verify_with(created.key.expose(), &options).await?;
        clock.advance(std::time::Duration::from_millis(1));
        keys.verify_with(created.key.expose(), &options).await?;
        keys.verify_with(created.key.expose(), &options).await?;

        let mut taken = counter.take();
        taken.sort_by_key(|d| d.minute);
        let minutes: Vec<(i64, u64, Option<u64>)> = taken
            .iter()
            .map(|d| (d.minute.unix_timestamp() % 3_600, d.counts.valid, tagged(d, "GET /v1/orders").map(|c| c.valid)))
            .collect();
        assert_eq!(minutes, [(0, 1, Some(1)), (60, 2, Some(2))]);
        assert!(taken.iter().all(|d| d.owner_id.as_deref() == Some("owner-1") && d.key_id == created.record.id));
        Ok(())
    }

    #[test]
    fn what_several_threads_count_for_one_key_and_minute_is_taken_as_one_delta() {
        let counter = UsageCounter::new();
        std::thread::scope(|threads| {
            for _ in 0..4 {
                threads.spawn(|| {
                    for _ in 0..100 {
                        counter.record(&verified(1, 60, Code::Valid, &["plan-a"]));
                    }
                    counter.record(&verified(1, 61, Code::RateLimited, &["region-1"]));
                    counter.record(&verified(2, 62, Code::Valid, &[]));
                });
            }
        });
        let mut taken = counter.take();
        taken.sort_by_key(|d| d.key_id.0);
        assert_eq!(taken.len(), 2, "one delta per key and minute: {taken:?}");
        assert_eq!((taken[0].counts.valid, taken[0].counts.rate_limited), (400, 4));
        assert_eq!(tagged(&taken[0], "plan-a").map(|c| c.valid), Some(400));
        assert_eq!(tagged(&taken[0], "region-1").map(|c| c.rate_limited), Some(4));
        assert_eq!((taken[1].counts.valid, taken[1].tags.len()), (4, 0));
        assert!(counter.take().is_empty());
    }

    #[test]
    fn a_minute_counts_each_code_where_usage_counts_keeps_it() {
        for (index, (code, _)) in UsageCounts::default().by_code().into_iter().enumerate() {
            assert_eq!(code_index(code), Some(index), "{code:?}");
            let mut counts = MinuteCounts::default();
            counts[index] = 1;
            assert_eq!(widened(&counts).get(code), 1, "{code:?}");
        }
        assert_eq!(code_index(Code::NotFound), None);
    }

    #[test]
    fn past_its_limit_the_counter_forgets_the_tags_no_longer_counted() {
        let counter = UsageCounter::new();
        for n in 0..=Interned::KEPT {
            counter.record(&verified(1, 60, Code::Valid, &[&format!("closed-{n}")]));
        }
        counter.record(&verified(2, 120, Code::Valid, &["open", "closed-7"]));
        let at = |s| OffsetDateTime::from_unix_timestamp(s).unwrap_or(OffsetDateTime::UNIX_EPOCH);

        let closed = counter.take_closed(at(125));
        assert_eq!(closed.iter().map(|d| d.tags.len()).sum::<usize>(), Interned::KEPT + 1, "every tag written");
        let mut held: Vec<String> = counter.lock().tags.names.iter().map(|t| t.to_string()).collect();
        held.sort();
        assert_eq!(held, ["closed-7", "open"], "only the open minute's tags are still held");

        // The open minute's counts kept their tags through the renumbering.
        counter.record(&verified(2, 121, Code::RateLimited, &["open"]));
        let open = counter.take();
        assert_eq!(open.len(), 1);
        assert_eq!(tagged(&open[0], "open").map(|c| (c.valid, c.rate_limited)), Some((1, 1)));
        assert_eq!(tagged(&open[0], "closed-7").map(|c| (c.valid, c.rate_limited)), Some((1, 0)));
    }
}
