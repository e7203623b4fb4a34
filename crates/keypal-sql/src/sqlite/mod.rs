//! [`SqliteStore`]: keys in an embedded SQLite file (the default store of `keypal serve`).
//!
//! The file runs in WAL mode with `synchronous = FULL`: a write is acknowledged only
//! once it is in the write-ahead log on disk, so it survives a crash of the process
//! (and of the machine). Write transactions start with `BEGIN IMMEDIATE`, taking
//! SQLite's write lock before they read, so a count-then-insert cannot race another
//! writer; waiting writers queue for up to `busy_timeout`.

use std::str::FromStr;
use std::sync::Arc;

use keypal::{
    AuditQuery, Credits, Event, KeyId, KeyPatch, KeyRecord, ListQuery, Lookup, NamespaceFilter, Page, Store, StoreError,
};
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::codec::{
    self, backend, corrupt, duplicate_or_backend, from_micros, from_micros_opt, json_text, micros, to_i64, to_u64,
};
use crate::migrate::{Source, migrator};
use crate::objects::{NewObject, Object, ObjectRef};
use crate::usage::{Granularity, UsageBucket, UsageCounts, UsageDelta, bucket_start};
use crate::{SqlError, SqlOptions};

/// The SQLite migrations, oldest first.
pub(crate) const MIGRATIONS: &[Source] = &[
    (1, "keys and audit", include_str!("migrations/0001_keys_and_audit.sql")),
    (2, "usage", include_str!("migrations/0002_usage.sql")),
    (3, "objects", include_str!("migrations/0003_objects.sql")),
];

/// The columns of a key row, in the order [`record`] reads them.
macro_rules! key_columns {
    () => {
        "id, namespace, lookup_kind, lookup_value, hash, start, last4, name, owner_id, tier, scopes, metadata, \
         created_at, expires_at, last_used_at, revoked_at, enabled, rotated_from, rotated_to, remaining, \
         rate_limit, encrypted_key, version"
    };
}

/// `SELECT <key columns> FROM keypal_keys <rest>`.
macro_rules! select_keys {
    ($rest:literal) => {
        concat!("SELECT ", key_columns!(), " FROM keypal_keys ", $rest)
    };
}

/// The verify path's lookups: one index probe each (see the EXPLAIN tests).
///
/// The kind is written into the statement, not bound: SQLite compares a bound value
/// with the partial indexes' `lookup_kind = 'hint'` when it plans, and then re-plans
/// (parses the SQL again) every time that parameter is bound, which on every lookup
/// cost more than the lookup itself.
pub(crate) const FIND_BY_DIGEST: &str =
    select_keys!("WHERE lookup_value = ?1 AND lookup_kind = 'digest' AND lookup_kind <> 'hint'");
/// [`FIND_BY_DIGEST`] for id lookups.
pub(crate) const FIND_BY_ID: &str =
    select_keys!("WHERE lookup_value = ?1 AND lookup_kind = 'id' AND lookup_kind <> 'hint'");
/// Candidates of a hint lookup.
pub(crate) const FIND_BY_HINT: &str = select_keys!("WHERE lookup_value = ?1 AND lookup_kind = 'hint'");
/// A record by id.
pub(crate) const GET: &str = select_keys!("WHERE id = ?1");
/// The guarded credit decrement.
pub(crate) const CONSUME: &str =
    "UPDATE keypal_keys SET remaining = remaining - ?2 WHERE id = ?1 AND remaining >= ?2 RETURNING remaining";

/// A `last_used_at` write: that column only, only forward.
pub(crate) const TOUCH: &str =
    "UPDATE keypal_keys SET last_used_at = ?2 WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)";

/// `SELECT <object columns> FROM keypal_objects <rest>`, as [`object`] reads them.
macro_rules! select_objects {
    ($rest:literal) => {
        concat!("SELECT kind, id, lookup, body, created_at, updated_at FROM keypal_objects ", $rest)
    };
}

/// Whether `url` names an in-memory database: `sqlite::memory:` or `sqlite://:memory:`
/// (which sqlx opens as a shared-cache database named `file:sqlx-in-memory-N`), or
/// `mode=memory`.
fn names_memory(url: &str) -> bool {
    let rest = url.strip_prefix("sqlite:").unwrap_or(url);
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let (database, params) = rest.split_once('?').unwrap_or((rest, ""));
    database == ":memory:" || params.split('&').any(|param| param == "mode=memory")
}

/// A [`Store`] on SQLite. Cheap to clone (a pool handle).
///
/// ```
/// use keypal::{KeyManager, NewKey};
/// use keypal_sql::SqliteStore;
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let dir = std::env::temp_dir().join(format!("keypal-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let url = format!("sqlite://{}", dir.join("keys.db").display());
///
/// let keys = KeyManager::builder().store(SqliteStore::connect(&url).await?).build()?;
/// let created = keys.create(NewKey::new().owner_id("user_1")).await?;
/// assert!(keys.verify(created.key.expose()).await?.is_valid());
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating it if missing) the database at `url` (`sqlite://path/to/file.db`,
    /// or `sqlite::memory:`) with default options, and migrates it.
    pub async fn connect(url: &str) -> Result<Self, SqlError> {
        Self::connect_with(url, &SqlOptions::default()).await
    }

    /// Opens the database at `url` with `options`.
    pub async fn connect_with(url: &str, options: &SqlOptions) -> Result<Self, SqlError> {
        let connect = SqliteConnectOptions::from_str(url)
            .map_err(SqlError::InvalidUrl)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(options.busy_timeout)
            .foreign_keys(true);
        // An in-memory database lives as long as a connection to it, and connections to
        // it lock each other out: keep exactly one, forever.
        let in_memory =
            connect.get_filename().to_str().is_none_or(|f| f.is_empty() || f == ":memory:") || names_memory(url);
        let pool = SqlitePoolOptions::new()
            .max_connections(if in_memory { 1 } else { options.max_connections })
            .min_connections(if in_memory { 1 } else { options.min_connections })
            .acquire_timeout(options.acquire_timeout)
            .idle_timeout(if in_memory { None } else { options.idle_timeout })
            .max_lifetime(if in_memory { None } else { Some(std::time::Duration::from_secs(1800)) })
            .connect_with(connect)
            .await
            .map_err(SqlError::Unreachable)?;
        let store = Self { pool };
        if options.migrate {
            store.migrate().await?;
        }
        Ok(store)
    }

    /// A store on an existing pool (not migrated: call [`SqliteStore::migrate`]).
    pub fn from_pool(pool: SqlitePool) -> Self {
        Self { pool }
    }

    /// Applies keypal's migrations that are not applied yet (recorded in `keypal_migrations`).
    pub async fn migrate(&self) -> Result<(), SqlError> {
        migrator(MIGRATIONS).run(&self.pool).await.map_err(SqlError::Migration)
    }

    /// The connection pool.
    pub fn pool(&self) -> &SqlitePool {
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
        sqlx::query("SELECT 1").execute(&self.pool).await.map(drop).map_err(backend)
    }

    async fn write(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(backend)
    }

    /// Stores new documents and `event` (when given) in one transaction: all or
    /// nothing. [`StoreError::Duplicate`] when an id or a lookup is taken in its kind.
    pub async fn insert_objects(&self, objects: &[NewObject<'_>], event: Option<&Event>) -> Result<(), StoreError> {
        let now = OffsetDateTime::now_utc();
        let mut tx = self.write().await?;
        for object in objects {
            sqlx::query(
                "INSERT INTO keypal_objects (kind, id, lookup, body, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            )
            .bind(object.kind)
            .bind(object.id)
            .bind(object.lookup)
            .bind(object.body.to_string())
            .bind(micros(now))
            .execute(&mut *tx)
            .await
            .map_err(duplicate_or_backend)?;
        }
        commit_object_change(tx, 1, event).await.map(drop)
    }

    /// Replaces a document's body (its lookup stays), with `event` in the audit log in
    /// the same transaction when one is given; returns whether it existed (nothing is
    /// written when it did not).
    pub async fn update_object(
        &self,
        kind: &str,
        id: &str,
        body: &Value,
        event: Option<&Event>,
    ) -> Result<bool, StoreError> {
        let now = OffsetDateTime::now_utc();
        let mut tx = self.write().await?;
        let done = sqlx::query("UPDATE keypal_objects SET body = ?3, updated_at = ?4 WHERE kind = ?1 AND id = ?2")
            .bind(kind)
            .bind(id)
            .bind(body.to_string())
            .bind(micros(now))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        commit_object_change(tx, done.rows_affected(), event).await
    }

    /// Replaces a document's body like `update_object` and, in the same transaction,
    /// deletes the sealed copy of every key of `namespace`; appends `event` with the
    /// number deleted added to its details as `sealed_copies_deleted`. `None` (nothing
    /// written) when the document does not exist.
    pub async fn update_object_forgetting_sealed_keys(
        &self,
        kind: &str,
        id: &str,
        body: &Value,
        namespace: &str,
        event: &Event,
    ) -> Result<Option<u64>, StoreError> {
        let now = OffsetDateTime::now_utc();
        let mut tx = self.write().await?;
        let done = sqlx::query("UPDATE keypal_objects SET body = ?3, updated_at = ?4 WHERE kind = ?1 AND id = ?2")
            .bind(kind)
            .bind(id)
            .bind(body.to_string())
            .bind(micros(now))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        if done.rows_affected() != 1 {
            return Ok(None);
        }
        let forgotten = sqlx::query(
            "UPDATE keypal_keys SET encrypted_key = NULL, version = version + 1 \
             WHERE namespace = ?1 AND encrypted_key IS NOT NULL",
        )
        .bind(namespace)
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected();
        let event = crate::codec::with_detail(event, "sealed_copies_deleted", forgotten.into());
        append_event(&mut tx, &event).await?;
        tx.commit().await.map_err(backend)?;
        Ok(Some(forgotten))
    }

    /// Replaces a document's lookup (its body stays), with `event` in the audit log in
    /// the same transaction when one is given; returns whether it existed (nothing is
    /// written when it did not). [`StoreError::Duplicate`] when the lookup is taken in its kind.
    pub async fn update_object_lookup(
        &self,
        kind: &str,
        id: &str,
        lookup: Option<&str>,
        event: Option<&Event>,
    ) -> Result<bool, StoreError> {
        let now = OffsetDateTime::now_utc();
        let mut tx = self.write().await?;
        let done = sqlx::query("UPDATE keypal_objects SET lookup = ?3, updated_at = ?4 WHERE kind = ?1 AND id = ?2")
            .bind(kind)
            .bind(id)
            .bind(lookup)
            .bind(micros(now))
            .execute(&mut *tx)
            .await
            .map_err(duplicate_or_backend)?;
        commit_object_change(tx, done.rows_affected(), event).await
    }

    /// The document `kind`/`id`.
    pub async fn get_object(&self, kind: &str, id: &str) -> Result<Option<Object>, StoreError> {
        let row = sqlx::query(select_objects!("WHERE kind = ?1 AND id = ?2"))
            .bind(kind)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.map(|r| object(&r)).transpose()
    }

    /// The document of `kind` whose lookup is `lookup`.
    pub async fn find_object(&self, kind: &str, lookup: &str) -> Result<Option<Object>, StoreError> {
        let row = sqlx::query(select_objects!("WHERE kind = ?1 AND lookup = ?2"))
            .bind(kind)
            .bind(lookup)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.map(|r| object(&r)).transpose()
    }

    /// Every document of `kind`, oldest first.
    pub async fn list_objects(&self, kind: &str) -> Result<Vec<Object>, StoreError> {
        let rows = sqlx::query(select_objects!("WHERE kind = ?1 ORDER BY created_at, id"))
            .bind(kind)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        rows.iter().map(object).collect()
    }

    /// Deletes the first of `objects` and, in the same transaction, each of the others
    /// that exists (and is still the body given), with `event` when given. Returns
    /// whether the first existed (and matched); when it did not, nothing is written.
    pub async fn delete_objects(&self, objects: &[ObjectRef<'_>], event: Option<&Event>) -> Result<bool, StoreError> {
        let mut tx = self.write().await?;
        let mut first = None;
        for object in objects {
            let done =
                sqlx::query("DELETE FROM keypal_objects WHERE kind = ?1 AND id = ?2 AND (?3 IS NULL OR body = ?3)")
                    .bind(object.kind)
                    .bind(object.id)
                    .bind(object.body.map(Value::to_string))
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
            first.get_or_insert(done.rows_affected());
        }
        commit_object_change(tx, first.unwrap_or(0), event).await
    }

    /// Adds counted verifications (see [`UsageCounter`](crate::UsageCounter)): one upsert per key per minute.
    pub async fn record_usage(&self, deltas: &[UsageDelta]) -> Result<(), StoreError> {
        if deltas.is_empty() {
            return Ok(());
        }
        let mut tx = self.write().await?;
        for delta in deltas {
            let c = &delta.counts;
            sqlx::query(
                "INSERT INTO keypal_usage (key_id, bucket, namespace, valid, revoked, disabled, expired, \
                 insufficient_scope, rate_limited, usage_exceeded) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
                 ON CONFLICT (key_id, bucket) DO UPDATE SET valid = valid + excluded.valid, \
                 revoked = revoked + excluded.revoked, disabled = disabled + excluded.disabled, \
                 expired = expired + excluded.expired, insufficient_scope = insufficient_scope + excluded.insufficient_scope, \
                 rate_limited = rate_limited + excluded.rate_limited, usage_exceeded = usage_exceeded + excluded.usage_exceeded",
            )
            .bind(delta.key_id.0)
            .bind(bucket_start(delta.minute, 60))
            .bind(&delta.namespace)
            .bind(to_i64("valid", c.valid)?)
            .bind(to_i64("revoked", c.revoked)?)
            .bind(to_i64("disabled", c.disabled)?)
            .bind(to_i64("expired", c.expired)?)
            .bind(to_i64("insufficient_scope", c.insufficient_scope)?)
            .bind(to_i64("rate_limited", c.rate_limited)?)
            .bind(to_i64("usage_exceeded", c.usage_exceeded)?)
            .execute(&mut *tx)
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
        let rows = sqlx::query(
            "SELECT (bucket / ?4) * ?4 AS start, SUM(valid), SUM(revoked), SUM(disabled), SUM(expired), \
             SUM(insufficient_scope), SUM(rate_limited), SUM(usage_exceeded) FROM keypal_usage \
             WHERE key_id = ?1 AND bucket >= ?2 AND bucket < ?3 GROUP BY start ORDER BY start",
        )
        .bind(key.0)
        .bind(bucket_start(since, 60))
        .bind(until.unix_timestamp())
        .bind(per.seconds())
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|row| {
                let start: i64 = row.try_get(0).map_err(backend)?;
                let start = OffsetDateTime::from_unix_timestamp(start).map_err(|e| corrupt("bucket", e))?;
                Ok(UsageBucket { start, counts: codec::usage_counts(row, 1)? })
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
        let row = sqlx::query(
            "SELECT COALESCE(SUM(valid), 0), COALESCE(SUM(revoked), 0), COALESCE(SUM(disabled), 0), \
             COALESCE(SUM(expired), 0), COALESCE(SUM(insufficient_scope), 0), COALESCE(SUM(rate_limited), 0), \
             COALESCE(SUM(usage_exceeded), 0) FROM keypal_usage WHERE namespace IS ?1 AND bucket >= ?2 AND bucket < ?3",
        )
        .bind(namespace)
        .bind(bucket_start(since, 60))
        .bind(until.unix_timestamp())
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?;
        codec::usage_counts(&row, 0)
    }
}

fn object(row: &SqliteRow) -> Result<Object, StoreError> {
    let body: String = row.try_get("body").map_err(backend)?;
    Ok(Object {
        kind: row.try_get("kind").map_err(backend)?,
        id: row.try_get("id").map_err(backend)?,
        lookup: row.try_get("lookup").map_err(backend)?,
        body: serde_json::from_str(&body).map_err(|e| codec::corrupt("body", e))?,
        created_at: from_micros("created_at", row.try_get("created_at").map_err(backend)?)?,
        updated_at: from_micros("updated_at", row.try_get("updated_at").map_err(backend)?)?,
    })
}

/// Reads a key row (columns as in [`key_columns!`]).
fn record(row: &SqliteRow) -> Result<KeyRecord, StoreError> {
    let id: Uuid = row.try_get("id").map_err(backend)?;
    let kind: String = row.try_get("lookup_kind").map_err(backend)?;
    let value: String = row.try_get("lookup_value").map_err(backend)?;
    let hash: String = row.try_get("hash").map_err(backend)?;
    let created_at = from_micros("created_at", row.try_get("created_at").map_err(backend)?)?;
    let mut r = KeyRecord::new(KeyId(id), codec::lookup(&kind, &value)?, hash, created_at);
    r.namespace = row.try_get("namespace").map_err(backend)?;
    r.start = row.try_get("start").map_err(backend)?;
    r.last4 = row.try_get("last4").map_err(backend)?;
    r.name = row.try_get("name").map_err(backend)?;
    r.owner_id = row.try_get("owner_id").map_err(backend)?;
    r.tier = row.try_get("tier").map_err(backend)?;
    r.scopes = codec::parse_scopes(row.try_get("scopes").map_err(backend)?)?;
    r.metadata = codec::parse_json("metadata", row.try_get("metadata").map_err(backend)?)?;
    r.expires_at = from_micros_opt("expires_at", row.try_get("expires_at").map_err(backend)?)?;
    r.last_used_at = from_micros_opt("last_used_at", row.try_get("last_used_at").map_err(backend)?)?;
    r.revoked_at = from_micros_opt("revoked_at", row.try_get("revoked_at").map_err(backend)?)?;
    r.enabled = row.try_get("enabled").map_err(backend)?;
    r.rotated_from = row.try_get::<Option<Uuid>, _>("rotated_from").map_err(backend)?.map(KeyId);
    r.rotated_to = row.try_get::<Option<Uuid>, _>("rotated_to").map_err(backend)?.map(KeyId);
    r.remaining =
        row.try_get::<Option<i64>, _>("remaining").map_err(backend)?.map(|n| to_u64("remaining", n)).transpose()?;
    r.rate_limit = codec::rate_limit(row.try_get("rate_limit").map_err(backend)?)?;
    r.encrypted_key = row.try_get("encrypted_key").map_err(backend)?;
    r.version = to_u64("version", row.try_get("version").map_err(backend)?)?;
    Ok(r)
}

fn records(rows: &[SqliteRow]) -> Result<Vec<Arc<KeyRecord>>, StoreError> {
    rows.iter().map(|row| record(row).map(Arc::new)).collect()
}

fn event(row: &SqliteRow) -> Result<Event, StoreError> {
    let at = from_micros("at", row.try_get("at").map_err(backend)?)?;
    let action = codec::action(row.try_get("action").map_err(backend)?)?;
    let mut context = keypal::AuditContext::new(row.try_get::<String, _>("actor").map_err(backend)?);
    context.ip = row.try_get("ip").map_err(backend)?;
    context.user_agent = row.try_get("user_agent").map_err(backend)?;
    let mut e = Event::new(action, at, context);
    e.id = row.try_get("id").map_err(backend)?;
    e.key_id = row.try_get::<Option<Uuid>, _>("key_id").map_err(backend)?.map(KeyId);
    e.namespace = row.try_get("namespace").map_err(backend)?;
    e.owner_id = row.try_get("owner_id").map_err(backend)?;
    e.code = codec::code(row.try_get("code").map_err(backend)?)?;
    e.details = codec::parse_json("details", row.try_get("details").map_err(backend)?)?;
    Ok(e)
}

async fn insert_record(tx: &mut Transaction<'static, Sqlite>, r: &KeyRecord) -> Result<(), StoreError> {
    sqlx::query(concat!(
        "INSERT INTO keypal_keys (",
        key_columns!(),
        ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23)"
    ))
    .bind(r.id.0)
    .bind(&r.namespace)
    .bind(r.lookup.kind())
    .bind(r.lookup.value())
    .bind(&r.hash)
    .bind(&r.start)
    .bind(&r.last4)
    .bind(&r.name)
    .bind(&r.owner_id)
    .bind(&r.tier)
    .bind(json_text(&serde_json::Value::from(r.scopes.clone())))
    .bind(r.metadata.as_ref().map(json_text))
    .bind(micros(r.created_at))
    .bind(r.expires_at.map(micros))
    .bind(r.last_used_at.map(micros))
    .bind(r.revoked_at.map(micros))
    .bind(r.enabled)
    .bind(r.rotated_from.map(|id| id.0))
    .bind(r.rotated_to.map(|id| id.0))
    .bind(r.remaining.map(|n| to_i64("remaining", n)).transpose()?)
    .bind(r.rate_limit.map(|l| l.to_string()))
    .bind(&r.encrypted_key)
    .bind(to_i64("version", r.version)?)
    .execute(&mut **tx)
    .await
    .map_err(duplicate_or_backend)?;
    Ok(())
}

/// Appends `event` about `record` (key, namespace and owner filled in from it).
async fn append(tx: &mut Transaction<'static, Sqlite>, event: &Event, record: &KeyRecord) -> Result<(), StoreError> {
    insert_event(tx, event, Some(record.id), record.namespace.as_deref(), record.owner_id.as_deref()).await
}

/// Ends a document change that touched `rows` rows: when it touched one, appends
/// `event` (if any) and commits; otherwise writes nothing (the dropped transaction
/// rolls back) and answers `false`.
async fn commit_object_change(
    mut tx: Transaction<'static, Sqlite>,
    rows: u64,
    event: Option<&Event>,
) -> Result<bool, StoreError> {
    if rows != 1 {
        return Ok(false);
    }
    if let Some(event) = event {
        append_event(&mut tx, event).await?;
    }
    tx.commit().await.map_err(backend)?;
    Ok(true)
}

/// Appends `event` about what it names itself (an application, a setting): no key.
async fn append_event(tx: &mut Transaction<'static, Sqlite>, event: &Event) -> Result<(), StoreError> {
    insert_event(tx, event, event.key_id, event.namespace.as_deref(), event.owner_id.as_deref()).await
}

async fn insert_event(
    tx: &mut Transaction<'static, Sqlite>,
    event: &Event,
    key_id: Option<KeyId>,
    namespace: Option<&str>,
    owner_id: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO keypal_audit (id, at, action, key_id, namespace, owner_id, code, actor, ip, user_agent, details) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )
    .bind(event.id)
    .bind(micros(event.at))
    .bind(event.action.as_str())
    .bind(key_id.map(|id| id.0))
    .bind(namespace)
    .bind(owner_id)
    .bind(event.code.map(|c| c.as_str()))
    .bind(&event.context.actor)
    .bind(&event.context.ip)
    .bind(&event.context.user_agent)
    .bind(event.details.as_ref().map(json_text))
    .execute(&mut **tx)
    .await
    .map_err(backend)?;
    Ok(())
}

/// Whether a key with this id exists (to tell "not found" from "condition failed").
async fn exists(tx: &mut Transaction<'static, Sqlite>, id: KeyId) -> Result<bool, StoreError> {
    let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM keypal_keys WHERE id = ?1")
        .bind(id.0)
        .fetch_optional(&mut **tx)
        .await
        .map_err(backend)?;
    Ok(found.is_some())
}

/// Adds the namespace, owner, revoked and cursor filters of a listing.
fn push_filters(q: &mut QueryBuilder<Sqlite>, query: &ListQuery, now: OffsetDateTime) {
    q.push(" WHERE 1 = 1");
    match &query.namespace {
        NamespaceFilter::Any => {}
        NamespaceFilter::None => {
            q.push(" AND namespace IS NULL");
        }
        NamespaceFilter::Is(ns) => {
            q.push(" AND namespace = ").push_bind(ns.clone());
        }
    }
    if let Some(owner) = &query.owner_id {
        q.push(" AND owner_id = ").push_bind(owner.clone());
    }
    if query.active_only {
        q.push(" AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ").push_bind(micros(now)).push(")");
    } else if !query.include_revoked {
        q.push(" AND (revoked_at IS NULL OR revoked_at > ").push_bind(micros(now)).push(")");
    }
    if let Some(text) = query.search_text() {
        // ASCII letters in any case, as `KeyRecord::matches_search`.
        let pattern = crate::codec::like_pattern(text);
        q.push(" AND (lower(name) LIKE ").push_bind(pattern.clone());
        q.push(" ESCAPE '\\' OR lower(owner_id) LIKE ").push_bind(pattern);
        q.push(" ESCAPE '\\')");
    }
}

fn now_of(query: &ListQuery) -> OffsetDateTime {
    query.at.unwrap_or_else(OffsetDateTime::now_utc)
}

impl Store for SqliteStore {
    async fn insert(
        &self,
        record: KeyRecord,
        max_active_per_owner: Option<u32>,
        event: Event,
    ) -> Result<Arc<KeyRecord>, StoreError> {
        let mut tx = self.write().await?;
        if let (Some(limit), Some(owner)) = (max_active_per_owner, &record.owner_id) {
            let active: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM keypal_keys WHERE namespace IS ?1 AND owner_id = ?2 \
                 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?3)",
            )
            .bind(&record.namespace)
            .bind(owner)
            .bind(micros(record.created_at))
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
            if active >= i64::from(limit) {
                return Err(StoreError::LimitReached { limit });
            }
        }
        insert_record(&mut tx, &record).await?;
        append(&mut tx, &event, &record).await?;
        tx.commit().await.map_err(backend)?;
        Ok(Arc::new(record))
    }

    async fn find(&self, lookup: &Lookup) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        let sql = match lookup {
            Lookup::Digest(_) => FIND_BY_DIGEST,
            Lookup::Id(_) => FIND_BY_ID,
            Lookup::Hint(_) => return Ok(None),
        };
        let row = sqlx::query(sql).bind(lookup.value()).fetch_optional(&self.pool).await.map_err(backend)?;
        row.map(|r| record(&r).map(Arc::new)).transpose()
    }

    async fn find_by_hint(&self, hint: &str) -> Result<Vec<Arc<KeyRecord>>, StoreError> {
        let rows = sqlx::query(FIND_BY_HINT).bind(hint).fetch_all(&self.pool).await.map_err(backend)?;
        records(&rows)
    }

    async fn get(&self, id: KeyId) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        let row = sqlx::query(GET).bind(id.0).fetch_optional(&self.pool).await.map_err(backend)?;
        row.map(|r| record(&r).map(Arc::new)).transpose()
    }

    async fn list(&self, query: &ListQuery) -> Result<Page<Arc<KeyRecord>>, StoreError> {
        let limit = query.limit.clamp(1, 1000);
        let mut q = QueryBuilder::new(concat!("SELECT ", key_columns!(), " FROM keypal_keys"));
        push_filters(&mut q, query, now_of(query));
        if let Some(cursor) = query.cursor {
            q.push(" AND id < ").push_bind(cursor);
        }
        q.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(limit) + 1);
        let rows = q.build().fetch_all(&self.pool).await.map_err(backend)?;
        let mut items = records(&rows)?;
        let next_cursor = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|r| r.id.0)
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    async fn count(&self, query: &ListQuery) -> Result<u64, StoreError> {
        let mut q = QueryBuilder::new("SELECT COUNT(*) FROM keypal_keys");
        push_filters(&mut q, query, now_of(query));
        let n: i64 = q.build_query_scalar().fetch_one(&self.pool).await.map_err(backend)?;
        to_u64("count", n)
    }

    async fn update(&self, id: KeyId, patch: &KeyPatch, event: Event) -> Result<Arc<KeyRecord>, StoreError> {
        let mut q = QueryBuilder::<Sqlite>::new("UPDATE keypal_keys SET version = version + 1");
        if let Some(name) = &patch.name {
            q.push(", name = ").push_bind(name.clone());
        }
        if let Some(metadata) = &patch.metadata {
            q.push(", metadata = ").push_bind(metadata.as_ref().map(json_text));
        }
        if let Some(scopes) = &patch.scopes {
            q.push(", scopes = ").push_bind(json_text(&serde_json::Value::from(scopes.clone())));
        }
        if let Some(expires_at) = &patch.expires_at {
            q.push(", expires_at = ").push_bind(expires_at.map(micros));
        }
        if let Some(tier) = &patch.tier {
            q.push(", tier = ").push_bind(tier.clone());
        }
        if let Some(remaining) = &patch.remaining {
            q.push(", remaining = ").push_bind(remaining.map(|n| to_i64("remaining", n)).transpose()?);
        }
        if let Some(rate_limit) = &patch.rate_limit {
            q.push(", rate_limit = ").push_bind(rate_limit.map(|l| l.to_string()));
        }
        q.push(" WHERE id = ").push_bind(id.0).push(concat!(" RETURNING ", key_columns!()));
        let mut tx = self.write().await?;
        let row = q.build().fetch_optional(&mut *tx).await.map_err(backend)?.ok_or(StoreError::NotFound)?;
        let record = record(&row)?;
        append(&mut tx, &event, &record).await?;
        tx.commit().await.map_err(backend)?;
        Ok(Arc::new(record))
    }

    async fn set_enabled(&self, id: KeyId, enabled: bool, event: Event) -> Result<Arc<KeyRecord>, StoreError> {
        let mut tx = self.write().await?;
        let row = sqlx::query(concat!(
            "UPDATE keypal_keys SET enabled = ?2, version = version + 1 WHERE id = ?1 RETURNING ",
            key_columns!()
        ))
        .bind(id.0)
        .bind(enabled)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?
        .ok_or(StoreError::NotFound)?;
        let record = record(&row)?;
        append(&mut tx, &event, &record).await?;
        tx.commit().await.map_err(backend)?;
        Ok(Arc::new(record))
    }

    async fn revoke(&self, id: KeyId, at: OffsetDateTime, event: Event) -> Result<Arc<KeyRecord>, StoreError> {
        let mut tx = self.write().await?;
        let row = sqlx::query(concat!(
            "UPDATE keypal_keys SET revoked_at = ?2, version = version + 1 \
             WHERE id = ?1 AND (revoked_at IS NULL OR revoked_at > ?2) RETURNING ",
            key_columns!()
        ))
        .bind(id.0)
        .bind(micros(at))
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        let Some(row) = row else {
            return Err(if exists(&mut tx, id).await? { StoreError::AlreadyRevoked } else { StoreError::NotFound });
        };
        let record = record(&row)?;
        append(&mut tx, &event, &record).await?;
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
        let mut tx = self.write().await?;
        let rows = sqlx::query(concat!(
            "UPDATE keypal_keys SET revoked_at = ?3, version = version + 1 \
             WHERE namespace IS ?1 AND owner_id = ?2 AND (revoked_at IS NULL OR revoked_at > ?3) RETURNING ",
            key_columns!()
        ))
        .bind(namespace)
        .bind(owner)
        .bind(micros(at))
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        let mut revoked = records(&rows)?;
        revoked.sort_by_key(|r| r.id);
        for (i, record) in revoked.iter().enumerate() {
            let mut copy = event.clone();
            if i > 0 {
                copy.id = Uuid::now_v7();
            }
            append(&mut tx, &copy, record).await?;
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
            "UPDATE keypal_keys SET rotated_to = ?2, revoked_at = ?3, version = version + 1 \
             WHERE id = ?1 AND revoked_at IS NULL RETURNING ",
            key_columns!()
        ))
        .bind(old.0)
        .bind(replacement.id.0)
        .bind(micros(old_revoked_at))
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        let Some(row) = row else {
            return Err(if exists(&mut tx, old).await? { StoreError::AlreadyRevoked } else { StoreError::NotFound });
        };
        let old_record = record(&row)?;
        // A taken id or lookup fails here; dropping the transaction rolls the old key back.
        insert_record(&mut tx, &replacement).await?;
        append(&mut tx, &event, &old_record).await?;
        tx.commit().await.map_err(backend)?;
        Ok((Arc::new(old_record), Arc::new(replacement)))
    }

    async fn delete(&self, id: KeyId, event: Event) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        let mut tx = self.write().await?;
        let row = sqlx::query(concat!("DELETE FROM keypal_keys WHERE id = ?1 RETURNING ", key_columns!()))
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        let Some(row) = row else { return Ok(None) };
        let record = record(&row)?;
        append(&mut tx, &event, &record).await?;
        tx.commit().await.map_err(backend)?;
        Ok(Some(Arc::new(record)))
    }

    async fn consume(&self, id: KeyId, cost: u64) -> Result<Credits, StoreError> {
        // A cost above i64::MAX is more than any stored credit count: nothing to spend.
        if let Ok(signed_cost) = i64::try_from(cost) {
            let left: Option<i64> = sqlx::query_scalar(CONSUME)
                .bind(id.0)
                .bind(signed_cost)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
            if let Some(left) = left {
                return Ok(Credits::Spent { remaining: to_u64("remaining", left)? });
            }
        }
        let current: Option<Option<i64>> = sqlx::query_scalar("SELECT remaining FROM keypal_keys WHERE id = ?1")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        match current {
            None => Err(StoreError::NotFound),
            Some(None) => Ok(Credits::Unlimited),
            Some(Some(left)) => Ok(Credits::Exhausted { remaining: to_u64("remaining", left)? }),
        }
    }

    async fn touch(&self, used: &[(KeyId, OffsetDateTime)]) -> Result<(), StoreError> {
        if used.is_empty() {
            return Ok(());
        }
        let mut tx = self.write().await?;
        for &(id, at) in used {
            sqlx::query(TOUCH).bind(id.0).bind(micros(at)).execute(&mut *tx).await.map_err(backend)?;
        }
        tx.commit().await.map_err(backend)
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
        let done = sqlx::query(
            "UPDATE keypal_keys SET hash = ?3, lookup_kind = ?4, lookup_value = ?5, version = version + 1 \
             WHERE id = ?1 AND hash = ?2",
        )
        .bind(id.0)
        .bind(expected)
        .bind(new_hash)
        .bind(new_lookup.kind())
        .bind(new_lookup.value())
        .execute(&self.pool)
        .await
        .map_err(duplicate_or_backend)?;
        Ok(done.rows_affected() == 1)
    }

    async fn audit(&self, query: &AuditQuery) -> Result<Page<Event>, StoreError> {
        let limit = query.limit.clamp(1, 1000);
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT id, at, action, key_id, namespace, owner_id, code, actor, ip, user_agent, details \
             FROM keypal_audit WHERE 1 = 1",
        );
        if let Some(ns) = &query.namespace {
            q.push(" AND namespace = ").push_bind(ns.clone());
        }
        if let Some(key) = query.key_id {
            q.push(" AND key_id = ").push_bind(key.0);
        }
        if let Some(owner) = &query.owner_id {
            q.push(" AND owner_id = ").push_bind(owner.clone());
        }
        if let Some(action) = query.action {
            q.push(" AND action = ").push_bind(action.as_str());
        }
        if let Some(since) = query.since {
            q.push(" AND at >= ").push_bind(micros(since));
        }
        if let Some(until) = query.until {
            q.push(" AND at < ").push_bind(micros(until));
        }
        if let Some(cursor) = query.cursor {
            q.push(" AND id < ").push_bind(cursor);
        }
        q.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(limit) + 1);
        let rows = q.build().fetch_all(&self.pool).await.map_err(backend)?;
        let mut items = rows.iter().map(event).collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|e| e.id)
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }
}
