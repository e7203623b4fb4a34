//! [`DialectStore`]: keypal's SQL store, written once over a [`Dialect`]. The public
//! names are [`SqliteStore`](crate::SqliteStore) and [`PostgresStore`](crate::PostgresStore).
//!
//! Every state change is one transaction: the guarded `UPDATE ... RETURNING` (or the
//! insert) and its audit event commit together or not at all. Per-owner limits count
//! the owner's active keys inside the insert's transaction, after the dialect has
//! serialised creates for that owner. Credits are spent with one guarded decrement.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use keypal::{
    AuditQuery, CreditOp, Credits, Event, Inserted, Insertion, KeyId, KeyPatch, KeyRecord, ListQuery, Lookup,
    NamespaceFilter, Page, Store, StoreError,
};
use sqlx::{Pool, QueryBuilder, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::SqlError;
use crate::codec::{backend, duplicate_or_backend, like_pattern, to_i64, to_u64};
use crate::dialect::{Arg, Dialect, JsonValue, PushArg, Read, Scopes, Timestamp};
use crate::rows::{self, EventRow, append};

/// Candidates of a hint lookup.
pub(crate) const FIND_BY_HINT: &str = select_keys!("WHERE lookup_value = $1 AND lookup_kind = 'hint'");
/// A record by id.
pub(crate) const GET: &str = select_keys!("WHERE id = $1");
/// Whether a refill top-up is due: the row has a refill and was last refilled before
/// the boundary bound as `$n` (NULL: none due).
macro_rules! refill_due {
    ($n:literal) => {
        // `refilled_at < $n` first: it gives the parameter its type (PostgreSQL reads
        // types in order, and `IS NOT NULL` alone tells none).
        concat!(
            "refill_amount IS NOT NULL AND (refilled_at IS NULL OR refilled_at < ",
            $n,
            ") AND ",
            $n,
            " IS NOT NULL"
        )
    };
}

/// The credits after a due top-up, with the boundary bound as `$n`.
macro_rules! topped_up {
    ($n:literal) => {
        concat!("(CASE WHEN ", refill_due!($n), " THEN refill_amount ELSE remaining END)")
    };
}

/// The guarded credit decrement, after the top-up a refill boundary `$3` calls for.
pub(crate) const CONSUME: &str = concat!(
    "UPDATE keypal_keys SET remaining = ",
    topped_up!("$3"),
    " - $2, refilled_at = CASE WHEN ",
    refill_due!("$3"),
    " THEN $3 ELSE refilled_at END WHERE id = $1 AND ",
    topped_up!("$3"),
    " >= $2 RETURNING remaining"
);

/// The credits a key holds after the top-up a refill boundary `$2` calls for.
const CREDITS: &str = concat!("SELECT ", topped_up!("$2"), " FROM keypal_keys WHERE id = $1");

/// Records inserted per statement by [`insert_all`] (26 parameters each, far below
/// the databases' limits).
const CHUNK: usize = 100;

/// Inserts records and their events in `tx`, each standing alone ([`Store::insert_many`]):
/// a record whose owner is at its limit is [`StoreError::LimitReached`], one whose id or
/// unique lookup is taken [`StoreError::Duplicate`], and `tx` stays usable. A few
/// statements per [`CHUNK`] records: the owners' locks, their counts, the rows, the
/// events. An owner's count is that of its active keys at the record's `created_at`,
/// records inserted before it included.
async fn insert_all<D: Dialect>(
    tx: &mut Transaction<'static, D>,
    items: Vec<Insertion>,
    outbox: bool,
) -> Result<Inserted, StoreError> {
    let limited = |item: &Insertion| item.max_active_per_owner.and(item.record.owner_id.as_ref()).is_some();
    let mut owners: Vec<(Option<String>, String)> = items
        .iter()
        .filter(|item| limited(item))
        .filter_map(|item| item.record.owner_id.clone().map(|owner| (item.record.namespace.clone(), owner)))
        .collect();
    owners.sort();
    owners.dedup();
    D::lock_owners(tx, &owners).await.map_err(backend)?;

    let mut results = Vec::with_capacity(items.len());
    let mut rest = items.as_slice();
    while !rest.is_empty() {
        // An owner with a limit appears once in a chunk: its count must see the
        // records of the chunks before.
        let mut seen = HashSet::new();
        let size = rest
            .iter()
            .take(CHUNK)
            .position(|item| limited(item) && !seen.insert((&item.record.namespace, &item.record.owner_id)))
            .unwrap_or_else(|| rest.len().min(CHUNK));
        let (chunk, after) = rest.split_at(size);
        rest = after;
        let mut outcome: Vec<Option<StoreError>> = at_limit(tx, chunk, limited)
            .await?
            .into_iter()
            .map(|limit| limit.map(|limit| StoreError::LimitReached { limit }))
            .collect();
        let candidates: Vec<&KeyRecord> =
            chunk.iter().zip(&outcome).filter(|(_, refused)| refused.is_none()).map(|(item, _)| &item.record).collect();
        let inserted = rows::insert_records(tx, &candidates).await?;
        let events: Vec<EventRow<'_>> = chunk
            .iter()
            .filter(|item| inserted.contains(&item.record.id.0))
            .map(|item| EventRow::about(&item.event, &item.record))
            .collect();
        rows::insert_events(tx, &events, outbox).await?;
        for (item, refused) in chunk.iter().zip(outcome.iter_mut()) {
            results.push(match refused.take() {
                Some(error) => Err(error),
                None if inserted.contains(&item.record.id.0) => Ok(Arc::new(item.record.clone())),
                None => Err(StoreError::Duplicate),
            });
        }
    }
    Ok(results)
}

/// For each item of `chunk` whose owner is at its limit, the limit (one statement for
/// the chunk, answering with those items only); `limited` says which items are counted.
/// An owner's count is that of its active keys at the item's `created_at`.
async fn at_limit<D: Dialect>(
    tx: &mut Transaction<'static, D>,
    chunk: &[Insertion],
    limited: impl Fn(&Insertion) -> bool,
) -> Result<Vec<Option<u32>>, StoreError> {
    let mut refused = vec![None; chunk.len()];
    if !chunk.iter().any(&limited) {
        return Ok(refused);
    }
    let mut q = QueryBuilder::<D>::new("SELECT v.column1 FROM (VALUES ");
    let mut first = true;
    for (place, item) in (0i64..).zip(chunk) {
        if let (true, Some(limit)) = (limited(item), item.max_active_per_owner) {
            q.push(if first { "(" } else { ", (" });
            first = false;
            q.push_arg(place).push(", ");
            q.push_arg(item.record.namespace.clone()).push(", ");
            q.push_arg(item.record.owner_id.clone()).push(", ");
            q.push_arg(Timestamp(item.record.created_at)).push(", ");
            q.push_arg(i64::from(limit)).push(")");
        }
    }
    q.push(
        ") AS v WHERE (SELECT COUNT(*) FROM keypal_keys k \
         WHERE k.namespace IS NOT DISTINCT FROM v.column2 AND k.owner_id = v.column3 AND k.revoked_at IS NULL \
         AND (k.expires_at IS NULL OR k.expires_at > v.column4)) >= v.column5",
    );
    for row in q.build().fetch_all(D::executor(tx)).await.map_err(backend)? {
        let place: i64 = D::read_at(&row, 0).map_err(backend)?;
        let item = usize::try_from(place).ok().and_then(|place| chunk.get(place).zip(refused.get_mut(place)));
        if let Some((item, refused)) = item {
            *refused = item.max_active_per_owner;
        }
    }
    Ok(refused)
}

/// keypal's store on an SQL database `D`: sqlx's `Sqlite` ([`SqliteStore`](crate::SqliteStore))
/// or `Postgres` ([`PostgresStore`](crate::PostgresStore)). Cheap to clone (a pool handle).
///
/// ```
/// use keypal::{KeyManager, NewKey};
/// use keypal_sql::SqliteStore;
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = SqliteStore::connect("sqlite::memory:").await?;
/// let keys = KeyManager::builder().store(store).build()?;
/// let created = keys.create(NewKey::new().owner_id("user_1")).await?;
/// assert!(keys.verify(created.key.expose()).await?.is_valid());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct DialectStore<D: Dialect> {
    pub(crate) pool: Pool<D>,
    /// Whether changes write the webhook outbox (see [`DialectStore::with_webhook_outbox`]).
    pub(crate) outbox: bool,
}

impl<D: Dialect> Clone for DialectStore<D> {
    fn clone(&self) -> Self {
        Self { pool: self.pool.clone(), outbox: self.outbox }
    }
}

impl<D: Dialect> DialectStore<D> {
    /// A store on an existing pool (not migrated: call [`DialectStore::migrate`]).
    pub fn from_pool(pool: Pool<D>) -> Self {
        Self { pool, outbox: false }
    }

    /// Applies keypal's migrations that are not applied yet (recorded in
    /// `keypal_migrations`). Concurrent PostgreSQL instances take turns (sqlx holds an
    /// advisory lock while migrating).
    pub async fn migrate(&self) -> Result<(), SqlError> {
        D::migrate(&self.pool).await.map_err(SqlError::Migration)
    }

    /// This store, writing the webhook outbox with each change that causes a webhook
    /// event (while a webhook exists): what `keypal serve`, which delivers them, turns
    /// on. Off by default: a library user who delivers no webhooks writes no outbox, and
    /// a database migrated only to an older version (without the outbox table) works.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let store = keypal_sql::SqliteStore::connect("sqlite::memory:").await?.with_webhook_outbox();
    /// assert!(store.writes_webhook_outbox());
    /// # Ok::<(), keypal_sql::SqlError>(())
    /// # }).unwrap();
    /// ```
    pub fn with_webhook_outbox(mut self) -> Self {
        self.outbox = true;
        self
    }

    /// Whether changes write the webhook outbox.
    pub fn writes_webhook_outbox(&self) -> bool {
        self.outbox
    }

    /// The connection pool.
    pub fn pool(&self) -> &Pool<D> {
        &self.pool
    }

    /// Closes every connection (waiting for operations in flight).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Checks that the database answers: one `SELECT 1` on a pooled connection. It waits
    /// as long as the pool lets it (for a connection) and the database takes: put a
    /// deadline of your own around it (a readiness probe does).
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut connection = self.pool.acquire().await.map_err(backend)?;
        sqlx::query("SELECT 1").execute(D::executor(&mut connection)).await.map(drop).map_err(backend)
    }

    /// A transaction that will write (see [`Dialect`]).
    pub(crate) async fn write(&self) -> Result<Transaction<'static, D>, StoreError> {
        D::begin_write(&self.pool).await.map_err(backend)
    }

    /// Reads the rows of `query` on a pooled connection.
    pub(crate) async fn fetch_all(
        &self,
        query: sqlx::query::Query<'_, D, D::Arguments>,
    ) -> Result<Vec<D::Row>, StoreError> {
        let mut connection = self.pool.acquire().await.map_err(backend)?;
        query.fetch_all(D::executor(&mut connection)).await.map_err(backend)
    }

    /// Reads the row of `query`, if any, on a pooled connection.
    pub(crate) async fn fetch_optional(
        &self,
        query: sqlx::query::Query<'_, D, D::Arguments>,
    ) -> Result<Option<D::Row>, StoreError> {
        let mut connection = self.pool.acquire().await.map_err(backend)?;
        query.fetch_optional(D::executor(&mut connection)).await.map_err(backend)
    }
}

/// The first column of `row` (a count, a sum, a number of credits).
pub(crate) fn first<D, T>(row: &D::Row) -> Result<T, StoreError>
where
    D: Dialect + Read<T>,
{
    D::read_at(row, 0).map_err(backend)
}

/// Whether a key with this id exists (to tell "not found" from "condition failed").
async fn exists<D: Dialect>(tx: &mut Transaction<'static, D>, id: KeyId) -> Result<bool, StoreError> {
    let row = sqlx::query("SELECT COUNT(*) FROM keypal_keys WHERE id = $1")
        .arg(id.0)
        .fetch_one(D::executor(tx))
        .await
        .map_err(backend)?;
    Ok(first::<D, i64>(&row)? > 0)
}

/// `namespace = $n` or `namespace IS NULL`: an equality the indexes can use (unlike `IS NOT DISTINCT FROM`).
fn push_namespace<D: Dialect>(q: &mut QueryBuilder<D>, namespace: Option<&str>) {
    match namespace {
        None => q.push(" namespace IS NULL"),
        Some(ns) => q.push(" namespace = ").push_arg(ns.to_owned()),
    };
}

/// Adds the namespace, owner, state and search filters of a listing.
fn push_filters<D: Dialect>(q: &mut QueryBuilder<D>, query: &ListQuery, now: OffsetDateTime) {
    q.push(" WHERE TRUE");
    match &query.namespace {
        NamespaceFilter::Any => {}
        NamespaceFilter::None => {
            q.push(" AND");
            push_namespace(q, None);
        }
        NamespaceFilter::Is(ns) => {
            q.push(" AND");
            push_namespace(q, Some(ns));
        }
    }
    if let Some(owner) = &query.owner_id {
        q.push(" AND owner_id = ").push_arg(owner.clone());
    }
    if query.active_only {
        q.push(" AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ").push_arg(Timestamp(now)).push(")");
    } else if !query.include_revoked {
        q.push(" AND (revoked_at IS NULL OR revoked_at > ").push_arg(Timestamp(now)).push(")");
    }
    if let Some(text) = query.search_text() {
        // ASCII letters in any case, as `KeyRecord::matches_search`.
        let pattern = like_pattern(text);
        q.push(" AND (");
        D::push_ascii_lower(q, "name");
        q.push(" LIKE ").push_arg(pattern.clone()).push(" ESCAPE '\\' OR ");
        D::push_ascii_lower(q, "owner_id");
        q.push(" LIKE ").push_arg(pattern).push(" ESCAPE '\\')");
    }
}

fn now_of(query: &ListQuery) -> OffsetDateTime {
    query.at.unwrap_or_else(OffsetDateTime::now_utc)
}

/// The page of `items` (fetched with one more than `limit` to know whether more follow).
fn page<T>(mut items: Vec<T>, limit: u32, cursor_of: impl Fn(&T) -> Uuid) -> Page<T> {
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(cursor_of)
    } else {
        None
    };
    Page { items, next_cursor }
}

/// Runs a guarded key update returning the row, appends `event` about it and commits;
/// `NotFound` when no row matched.
async fn update_returning<D: Dialect>(
    mut tx: Transaction<'static, D>,
    query: sqlx::query::Query<'_, D, D::Arguments>,
    event: &Event,
    outbox: bool,
) -> Result<Arc<KeyRecord>, StoreError> {
    let row = query.fetch_optional(D::executor(&mut tx)).await.map_err(backend)?.ok_or(StoreError::NotFound)?;
    let record = rows::record::<D>(&row)?;
    append(&mut tx, event, &record, outbox).await?;
    tx.commit().await.map_err(backend)?;
    Ok(Arc::new(record))
}

impl<D: Dialect> Store for DialectStore<D> {
    async fn insert(
        &self,
        record: KeyRecord,
        max_active_per_owner: Option<u32>,
        event: Event,
    ) -> Result<Arc<KeyRecord>, StoreError> {
        let mut tx = self.write().await?;
        let mut results =
            insert_all(&mut tx, vec![Insertion { record, max_active_per_owner, event }], self.outbox).await?;
        let result =
            results.pop().ok_or_else(|| StoreError::backend(std::io::Error::other("no result of an insert")))?;
        let record = result?;
        tx.commit().await.map_err(duplicate_or_backend)?;
        Ok(record)
    }

    /// One transaction for them all, a few statements per hundred records.
    async fn insert_many(&self, items: Vec<Insertion>) -> Result<Inserted, StoreError> {
        let mut tx = self.write().await?;
        let results = insert_all(&mut tx, items, self.outbox).await?;
        tx.commit().await.map_err(backend)?;
        Ok(results)
    }

    async fn find(&self, lookup: &Lookup) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        let Some(query) = D::find(lookup) else { return Ok(None) };
        let row = self.fetch_optional(query).await?;
        row.map(|r| rows::record::<D>(&r).map(Arc::new)).transpose()
    }

    async fn find_by_hint(&self, hint: &str) -> Result<Vec<Arc<KeyRecord>>, StoreError> {
        let rows = self.fetch_all(sqlx::query(FIND_BY_HINT).arg(hint)).await?;
        rows::records::<D>(&rows)
    }

    async fn get(&self, id: KeyId) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        let row = self.fetch_optional(sqlx::query(GET).arg(id.0)).await?;
        row.map(|r| rows::record::<D>(&r).map(Arc::new)).transpose()
    }

    async fn list(&self, query: &ListQuery) -> Result<Page<Arc<KeyRecord>>, StoreError> {
        let limit = query.limit.clamp(1, 1000);
        let mut q = QueryBuilder::<D>::new(concat!("SELECT ", key_columns!(), " FROM keypal_keys"));
        push_filters(&mut q, query, now_of(query));
        if let Some(cursor) = query.cursor {
            q.push(" AND id < ").push_arg(cursor);
        }
        q.push(" ORDER BY id DESC LIMIT ").push_arg(i64::from(limit) + 1);
        let rows = self.fetch_all(q.build()).await?;
        Ok(page(rows::records::<D>(&rows)?, limit, |r| r.id.0))
    }

    async fn count(&self, query: &ListQuery) -> Result<u64, StoreError> {
        let mut q = QueryBuilder::<D>::new("SELECT COUNT(*) FROM keypal_keys");
        push_filters(&mut q, query, now_of(query));
        let rows = self.fetch_all(q.build()).await?;
        let n = rows.first().map(first::<D, i64>).transpose()?.unwrap_or(0);
        to_u64("count", n)
    }

    async fn update(&self, id: KeyId, patch: &KeyPatch, event: Event) -> Result<Arc<KeyRecord>, StoreError> {
        let mut q = QueryBuilder::<D>::new("UPDATE keypal_keys SET version = version + 1");
        if let Some(name) = &patch.name {
            q.push(", name = ").push_arg(name.clone());
        }
        if let Some(metadata) = &patch.metadata {
            q.push(", metadata = ").push_arg(metadata.clone().map(JsonValue));
        }
        if let Some(scopes) = &patch.scopes {
            q.push(", scopes = ").push_arg(Scopes(scopes.clone()));
        }
        if let Some(expires_at) = &patch.expires_at {
            q.push(", expires_at = ").push_arg(expires_at.map(Timestamp));
        }
        if let Some(tier) = &patch.tier {
            q.push(", tier = ").push_arg(tier.clone());
        }
        if let Some(remaining) = &patch.remaining {
            q.push(", remaining = ").push_arg(remaining.map(|n| to_i64("remaining", n)).transpose()?);
        }
        if let Some(rate_limit) = &patch.rate_limit {
            q.push(", rate_limit = ").push_arg(rate_limit.map(|l| l.to_string()));
        }
        if let Some(refill) = &patch.refill {
            q.push(", refill = ").push_arg(refill.map(|r| r.interval.to_string()));
            q.push(", refill_amount = ").push_arg(refill.map(|r| to_i64("refill_amount", r.amount)).transpose()?);
        }
        if let Some(refilled_at) = &patch.refilled_at {
            q.push(", refilled_at = ").push_arg(refilled_at.map(Timestamp));
        }
        q.push(" WHERE id = ").push_arg(id.0).push(concat!(" RETURNING ", key_columns!()));
        let tx = self.write().await?;
        update_returning(tx, q.build(), &event, self.outbox).await
    }

    async fn set_enabled(&self, id: KeyId, enabled: bool, event: Event) -> Result<Arc<KeyRecord>, StoreError> {
        let tx = self.write().await?;
        let query = sqlx::query(concat!(
            "UPDATE keypal_keys SET enabled = $2, version = version + 1 WHERE id = $1 RETURNING ",
            key_columns!()
        ))
        .arg(id.0)
        .arg(enabled);
        update_returning(tx, query, &event, self.outbox).await
    }

    async fn revoke(&self, id: KeyId, at: OffsetDateTime, event: Event) -> Result<Arc<KeyRecord>, StoreError> {
        let mut tx = self.write().await?;
        let row = sqlx::query(concat!(
            "UPDATE keypal_keys SET revoked_at = $2, version = version + 1 \
             WHERE id = $1 AND (revoked_at IS NULL OR revoked_at > $2) RETURNING ",
            key_columns!()
        ))
        .arg(id.0)
        .arg(Timestamp(at))
        .fetch_optional(D::executor(&mut tx))
        .await
        .map_err(backend)?;
        let Some(row) = row else {
            return Err(if exists(&mut tx, id).await? { StoreError::AlreadyRevoked } else { StoreError::NotFound });
        };
        let record = rows::record::<D>(&row)?;
        append(&mut tx, &event, &record, self.outbox).await?;
        tx.commit().await.map_err(backend)?;
        Ok(Arc::new(record))
    }

    async fn revoke_owner(
        &self,
        namespace: Option<&str>,
        owner: &str,
        at: OffsetDateTime,
        event: Event,
    ) -> Result<Vec<Arc<KeyRecord>>, StoreError> {
        let mut q = QueryBuilder::<D>::new("UPDATE keypal_keys SET revoked_at = ");
        q.push_arg(Timestamp(at)).push(", version = version + 1 WHERE");
        push_namespace(&mut q, namespace);
        q.push(" AND owner_id = ").push_arg(owner.to_owned());
        q.push(" AND (revoked_at IS NULL OR revoked_at > ").push_arg(Timestamp(at)).push(")");
        q.push(concat!(" RETURNING ", key_columns!()));
        let mut tx = self.write().await?;
        let rows = q.build().fetch_all(D::executor(&mut tx)).await.map_err(backend)?;
        let mut revoked = rows::records::<D>(&rows)?;
        revoked.sort_by_key(|r| r.id);
        for (i, record) in revoked.iter().enumerate() {
            let mut copy = event.clone();
            if i > 0 {
                copy.id = Uuid::now_v7();
            }
            append(&mut tx, &copy, record, self.outbox).await?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(revoked)
    }

    async fn rotate(
        &self,
        old: KeyId,
        replacement: KeyRecord,
        old_revoked_at: OffsetDateTime,
        event: Event,
    ) -> Result<(Arc<KeyRecord>, Arc<KeyRecord>), StoreError> {
        let mut tx = self.write().await?;
        let row = sqlx::query(concat!(
            "UPDATE keypal_keys SET rotated_to = $2, revoked_at = $3, version = version + 1 \
             WHERE id = $1 AND revoked_at IS NULL RETURNING ",
            key_columns!()
        ))
        .arg(old.0)
        .arg(replacement.id.0)
        .arg(Timestamp(old_revoked_at))
        .fetch_optional(D::executor(&mut tx))
        .await
        .map_err(backend)?;
        let Some(row) = row else {
            return Err(if exists(&mut tx, old).await? { StoreError::AlreadyRevoked } else { StoreError::NotFound });
        };
        let old_record = rows::record::<D>(&row)?;
        // A taken id or lookup is refused here; dropping the transaction rolls the old key back.
        if rows::insert_records(&mut tx, &[&replacement]).await?.is_empty() {
            return Err(StoreError::Duplicate);
        }
        append(&mut tx, &event, &old_record, self.outbox).await?;
        tx.commit().await.map_err(duplicate_or_backend)?;
        Ok((Arc::new(old_record), Arc::new(replacement)))
    }

    async fn delete(&self, id: KeyId, event: Event) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        let mut tx = self.write().await?;
        let row = sqlx::query(concat!("DELETE FROM keypal_keys WHERE id = $1 RETURNING ", key_columns!()))
            .arg(id.0)
            .fetch_optional(D::executor(&mut tx))
            .await
            .map_err(backend)?;
        let Some(row) = row else { return Ok(None) };
        let record = rows::record::<D>(&row)?;
        append(&mut tx, &event, &record, self.outbox).await?;
        tx.commit().await.map_err(backend)?;
        Ok(Some(Arc::new(record)))
    }

    async fn consume(&self, id: KeyId, cost: u64, refill_due: Option<OffsetDateTime>) -> Result<Credits, StoreError> {
        let due = refill_due.map(Timestamp);
        // A cost above i64::MAX is more than any stored credit count: nothing to spend.
        if let Ok(signed_cost) = i64::try_from(cost) {
            let row = self.fetch_optional(sqlx::query(CONSUME).arg(id.0).arg(signed_cost).arg(due)).await?;
            if let Some(row) = row {
                return Ok(Credits::Spent { remaining: to_u64("remaining", first::<D, i64>(&row)?)? });
            }
        }
        let row = self.fetch_optional(sqlx::query(CREDITS).arg(id.0).arg(due)).await?;
        match row.map(|row| first::<D, Option<i64>>(&row)).transpose()? {
            None => Err(StoreError::NotFound),
            Some(None) => Ok(Credits::Unlimited),
            Some(Some(left)) => Ok(Credits::Exhausted { remaining: to_u64("remaining", left)? }),
        }
    }

    async fn adjust_credits(
        &self,
        id: KeyId,
        op: CreditOp,
        refill_due: Option<OffsetDateTime>,
        event: Event,
    ) -> Result<Arc<KeyRecord>, StoreError> {
        let mut tx = self.write().await?;
        // The version bump takes the row's write lock for the rest of the transaction:
        // no spend nor other change comes between this read and the write below.
        let locked = sqlx::query(concat!(
            "UPDATE keypal_keys SET version = version + 1 WHERE id = $1 RETURNING ",
            key_columns!()
        ))
        .arg(id.0);
        let row = locked.fetch_optional(D::executor(&mut tx)).await.map_err(backend)?.ok_or(StoreError::NotFound)?;
        let mut record = rows::record::<D>(&row)?;
        record.top_up(refill_due);
        // Dropping the transaction rolls the version bump back.
        let remaining = op.apply(record.remaining).ok_or(StoreError::CreditsUnchangeable)?;
        record.remaining = Some(remaining);
        sqlx::query("UPDATE keypal_keys SET remaining = $2, refilled_at = $3 WHERE id = $1")
            .arg(id.0)
            .arg(to_i64("remaining", remaining)?)
            .arg(record.refilled_at.map(Timestamp))
            .execute(D::executor(&mut tx))
            .await
            .map_err(backend)?;
        append(&mut tx, &event, &record, self.outbox).await?;
        tx.commit().await.map_err(backend)?;
        Ok(Arc::new(record))
    }

    async fn touch(&self, used: &[(KeyId, OffsetDateTime)]) -> Result<(), StoreError> {
        // The latest time per key: one write per key of the batch.
        let mut latest: HashMap<Uuid, OffsetDateTime> = HashMap::with_capacity(used.len());
        for &(id, at) in used {
            let slot = latest.entry(id.0).or_insert(at);
            *slot = (*slot).max(at);
        }
        if latest.is_empty() {
            return Ok(());
        }
        D::touch(&self.pool, latest.into_iter().collect()).await.map_err(backend)
    }

    async fn replace_hash(
        &self,
        id: KeyId,
        expected: &str,
        new_hash: &str,
        new_lookup: &Lookup,
    ) -> Result<bool, StoreError> {
        // One statement: the hash and its lookup move together or not at all; a
        // unique lookup another key holds fails on the lookup index (Duplicate).
        let mut connection = self.pool.acquire().await.map_err(backend)?;
        let done = sqlx::query(
            "UPDATE keypal_keys SET hash = $3, lookup_kind = $4, lookup_value = $5, version = version + 1 \
             WHERE id = $1 AND hash = $2",
        )
        .arg(id.0)
        .arg(expected)
        .arg(new_hash)
        .arg(new_lookup.kind())
        .arg(new_lookup.value())
        .execute(D::executor(&mut connection))
        .await
        .map_err(duplicate_or_backend)?;
        Ok(D::rows_affected(&done) == 1)
    }

    async fn audit(&self, query: &AuditQuery) -> Result<Page<Event>, StoreError> {
        let limit = query.limit.clamp(1, 1000);
        let mut q = QueryBuilder::<D>::new(concat!("SELECT ", audit_columns!(), " FROM keypal_audit WHERE TRUE"));
        if let Some(ns) = &query.namespace {
            q.push(" AND namespace = ").push_arg(ns.clone());
        }
        if let Some(key) = query.key_id {
            q.push(" AND key_id = ").push_arg(key.0);
        }
        if let Some(owner) = &query.owner_id {
            q.push(" AND owner_id = ").push_arg(owner.clone());
        }
        if let Some(action) = query.action {
            q.push(" AND action = ").push_arg(action.as_str());
        }
        if let Some(since) = query.since {
            q.push(" AND at >= ").push_arg(Timestamp(since));
        }
        if let Some(until) = query.until {
            q.push(" AND at < ").push_arg(Timestamp(until));
        }
        if let Some(cursor) = query.cursor {
            q.push(" AND id < ").push_arg(cursor);
        }
        q.push(" ORDER BY id DESC LIMIT ").push_arg(i64::from(limit) + 1);
        let rows = self.fetch_all(q.build()).await?;
        let items = rows.iter().map(rows::event::<D>).collect::<Result<Vec<_>, _>>()?;
        Ok(page(items, limit, |e| e.id))
    }
}
