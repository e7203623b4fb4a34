//! [`SqliteStore`]: keys in an embedded SQLite file (the default store of `keypal serve`).
//!
//! The file runs in WAL mode with `synchronous = FULL`: a write is acknowledged only
//! once it is in the write-ahead log on disk, so it survives a crash of the process
//! (and of the machine). Write transactions start with `BEGIN IMMEDIATE`, taking
//! SQLite's write lock before they read, so a count-then-insert cannot race another
//! writer; waiting writers queue for up to `busy_timeout`.
//!
//! SQLite keeps timestamps as integer microseconds since the Unix epoch (usage
//! buckets as whole seconds), JSON values and scope lists as JSON text.

use std::future::Future;
use std::str::FromStr;

use keypal::Lookup;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::query::Query;
use sqlx::sqlite::{
    SqliteArgumentsBuffer, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions,
    SqliteQueryResult, SqliteSynchronous, SqliteTypeInfo, SqliteValueRef,
};
use sqlx::{Decode, Encode, Executor, Pool, QueryBuilder, Sqlite, Transaction, Type};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::dialect::{Arg, Dialect, JsonValue, Scopes, Seam, Timestamp};
use crate::migrate::{Source, migrator};
use crate::rows::unreadable;
use crate::{DialectStore, SqlError, SqlOptions};

/// keypal's store on SQLite: [`DialectStore`] over sqlx's `Sqlite`.
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
pub type SqliteStore = DialectStore<Sqlite>;

/// The SQLite migrations, oldest first.
pub(crate) const MIGRATIONS: &[Source] = &[
    (1, "keys and audit", include_str!("migrations/0001_keys_and_audit.sql")),
    (2, "usage", include_str!("migrations/0002_usage.sql")),
    (3, "objects", include_str!("migrations/0003_objects.sql")),
    (4, "refill", include_str!("migrations/0004_refill.sql")),
    (5, "analytics", include_str!("migrations/0005_analytics.sql")),
    (6, "webhooks", include_str!("migrations/0006_webhooks.sql")),
    (7, "usage roll-up", include_str!("migrations/0007_usage_rollup.sql")),
    (8, "usage minutes", include_str!("migrations/0008_usage_minutes.sql")),
];

/// The verify path's lookup by digest: one index probe (see the EXPLAIN tests).
///
/// The kind is written into the statement, not bound: SQLite compares a bound value
/// with the partial indexes' `lookup_kind = 'hint'` when it plans, and then re-plans
/// (parses the SQL again) every time that parameter is bound, which on every lookup
/// cost more than the lookup itself.
pub(crate) const FIND_BY_DIGEST: &str =
    select_keys!("WHERE lookup_value = $1 AND lookup_kind = 'digest' AND lookup_kind <> 'hint'");
/// [`FIND_BY_DIGEST`] for id lookups.
pub(crate) const FIND_BY_ID: &str =
    select_keys!("WHERE lookup_value = $1 AND lookup_kind = 'id' AND lookup_kind <> 'hint'");

/// A `last_used_at` write: that column only, only forward.
pub(crate) const TOUCH: &str =
    "UPDATE keypal_keys SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)";

/// Whether `url` names an in-memory database: `sqlite::memory:` or `sqlite://:memory:`
/// (which sqlx opens as a shared-cache database named `file:sqlx-in-memory-N`), or
/// `mode=memory`.
fn names_memory(url: &str) -> bool {
    let rest = url.strip_prefix("sqlite:").unwrap_or(url);
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let (database, params) = rest.split_once('?').unwrap_or((rest, ""));
    database == ":memory:" || params.split('&').any(|param| param == "mode=memory")
}

impl DialectStore<Sqlite> {
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
        let store = Self::from_pool(pool);
        if options.migrate {
            store.migrate().await?;
        }
        Ok(store)
    }
}

impl Dialect for Sqlite {}

impl Seam for Sqlite {
    const NAME: &'static str = "sqlite";
    const SKIP_LOCKED: &'static str = "";
    const LOCK_SHARED: &'static str = "";
    const LOCK_EXCLUSIVE: &'static str = "";

    async fn migrate(pool: &Pool<Sqlite>) -> Result<(), sqlx::migrate::MigrateError> {
        migrator(MIGRATIONS).run(pool).await
    }

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }

    fn executor(connection: &mut SqliteConnection) -> impl Executor<'_, Database = Sqlite> {
        connection
    }

    fn begin_write(
        pool: &Pool<Sqlite>,
    ) -> impl Future<Output = Result<Transaction<'static, Sqlite>, sqlx::Error>> + Send {
        pool.begin_with("BEGIN IMMEDIATE")
    }

    async fn lock_owners(
        _tx: &mut Transaction<'static, Sqlite>,
        _owners: &[(Option<String>, String)],
    ) -> Result<(), sqlx::Error> {
        // `BEGIN IMMEDIATE` already holds the database's one write lock.
        Ok(())
    }

    fn find(lookup: &Lookup) -> Option<Query<'_, Sqlite, <Sqlite as sqlx::Database>::Arguments>> {
        let sql = match lookup {
            Lookup::Digest(_) => FIND_BY_DIGEST,
            Lookup::Id(_) => FIND_BY_ID,
            Lookup::Hint(_) => return None,
        };
        Some(sqlx::query(sql).arg(lookup.value()))
    }

    async fn touch(pool: &Pool<Sqlite>, latest: Vec<(Uuid, OffsetDateTime)>) -> Result<(), sqlx::Error> {
        let mut tx = Self::begin_write(pool).await?;
        for (id, at) in latest {
            sqlx::query(TOUCH).arg(id).arg(Timestamp(at)).execute(&mut *tx).await?;
        }
        tx.commit().await
    }

    fn push_ascii_lower(builder: &mut QueryBuilder<Sqlite>, column: &str) {
        // SQLite's lower() changes ASCII letters only.
        builder.push(format_args!("lower({column})"));
    }
}

/// Timestamps as integer microseconds since the Unix epoch.
fn micros(at: OffsetDateTime) -> i64 {
    // Every representable OffsetDateTime fits: i64 microseconds span ±292 000 years.
    i64::try_from(at.unix_timestamp_nanos() / 1_000).unwrap_or(if at.year() < 0 { i64::MIN } else { i64::MAX })
}

/// Implements `Type`, `Encode` and `Decode` for SQLite of a column type stored as `$stored`.
macro_rules! stored_as {
    ($column:ty, $stored:ty, encode: |$value:ident| $encode:expr, decode: |$raw:ident| $decode:expr) => {
        impl Type<Sqlite> for $column {
            fn type_info() -> SqliteTypeInfo {
                <$stored as Type<Sqlite>>::type_info()
            }
            fn compatible(ty: &SqliteTypeInfo) -> bool {
                <$stored as Type<Sqlite>>::compatible(ty)
            }
        }
        impl Encode<'_, Sqlite> for $column {
            fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
                let $value = self;
                <_ as Encode<Sqlite>>::encode_by_ref(&$encode, buf)
            }
        }
        impl<'r> Decode<'r, Sqlite> for $column {
            fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
                let $raw = <$stored as Decode<Sqlite>>::decode(value)?;
                $decode
            }
        }
    };
}

stored_as!(Timestamp, i64,
    encode: |t| micros(t.0),
    decode: |m| OffsetDateTime::from_unix_timestamp_nanos(i128::from(m) * 1_000).map(Timestamp).map_err(unreadable));
stored_as!(JsonValue, String,
    encode: |j| j.0.to_string(),
    decode: |text| serde_json::from_str(&text).map(JsonValue).map_err(unreadable));
stored_as!(Scopes, String,
    encode: |s| serde_json::Value::from(s.0.clone()).to_string(),
    decode: |text| serde_json::from_str(&text).map(Scopes).map_err(unreadable));
