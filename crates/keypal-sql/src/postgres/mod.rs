//! [`PostgresStore`]: keys in PostgreSQL, for several `keypal serve` instances on one database.
//!
//! Ordinary commits (durable once acknowledged). Per-owner limits take a
//! transaction-scoped advisory lock on (namespace, owner) before counting, so
//! concurrent creates for one owner queue while other owners proceed.
//!
//! PostgreSQL keeps timestamps as `TIMESTAMPTZ`, JSON values as `JSONB` and scope
//! lists as `TEXT[]`.

use std::future::Future;
use std::str::FromStr;

use keypal::Lookup;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{
    PgArgumentBuffer, PgConnectOptions, PgConnection, PgPoolOptions, PgQueryResult, PgTypeInfo, PgValueRef,
};
use sqlx::query::Query;
use sqlx::types::Json;
use sqlx::{Decode, Encode, Executor, Pool, Postgres, QueryBuilder, Transaction, Type};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::dialect::{Arg, Dialect, JsonValue, Scopes, Seam, Timestamp};
use crate::migrate::{Source, migrator};
use crate::{DialectStore, SqlError, SqlOptions};

/// keypal's store on PostgreSQL: [`DialectStore`] over sqlx's `Postgres`.
///
/// ```no_run
/// use keypal::KeyManager;
/// use keypal_sql::{PostgresStore, SqlOptions};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let options = SqlOptions::new().max_connections(20).schema("keypal");
/// let store = PostgresStore::connect_with("postgres://keypal@db.internal/keys", &options).await?;
/// let keys = KeyManager::builder().store(store).build()?;
/// # Ok(())
/// # }
/// ```
pub type PostgresStore = DialectStore<Postgres>;

/// The PostgreSQL migrations, oldest first.
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

/// The verify path's lookups: one index probe each (see the EXPLAIN tests).
pub(crate) const FIND: &str = select_keys!("WHERE lookup_value = $1 AND lookup_kind = $2 AND lookup_kind <> 'hint'");

/// A batch of `last_used_at` writes: that column only, only forward.
pub(crate) const TOUCH: &str = "UPDATE keypal_keys AS k SET last_used_at = u.at \
     FROM UNNEST($1::uuid[], $2::timestamptz[]) AS u(id, at) \
     WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.at)";

/// Whether `schema` is a plain lowercase identifier (it is interpolated into `CREATE SCHEMA`).
fn valid_schema(schema: &str) -> bool {
    let mut chars = schema.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && schema.len() <= 63
}

impl DialectStore<Postgres> {
    /// Connects to `url` (`postgres://user:password@host:port/database`) with default options, and migrates.
    pub async fn connect(url: &str) -> Result<Self, SqlError> {
        Self::connect_with(url, &SqlOptions::default()).await
    }

    /// Connects to `url` with `options`.
    pub async fn connect_with(url: &str, options: &SqlOptions) -> Result<Self, SqlError> {
        let connect = PgConnectOptions::from_str(url).map_err(SqlError::InvalidUrl)?;
        Self::connect_options(connect, options).await
    }

    /// Connects with sqlx's own connection options (for settings a URL cannot carry).
    pub async fn connect_options(connect: PgConnectOptions, options: &SqlOptions) -> Result<Self, SqlError> {
        let timeout_ms = options.statement_timeout.as_millis().to_string();
        let mut settings = vec![("statement_timeout", timeout_ms)];
        if let Some(schema) = &options.schema {
            if !valid_schema(schema) {
                return Err(SqlError::InvalidSchema { schema: schema.clone() });
            }
            settings.push(("search_path", schema.clone()));
        }
        let connect = connect.options(settings);
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .min_connections(options.min_connections)
            .acquire_timeout(options.acquire_timeout)
            .idle_timeout(options.idle_timeout)
            .connect_with(connect)
            .await
            .map_err(SqlError::Unreachable)?;
        if let Some(schema) = &options.schema {
            // Checked above: a plain identifier.
            let create = format!("CREATE SCHEMA IF NOT EXISTS {schema}");
            sqlx::query(sqlx::AssertSqlSafe(create)).execute(&pool).await.map_err(SqlError::Unreachable)?;
        }
        let store = Self::from_pool(pool);
        if options.migrate {
            store.migrate().await?;
        }
        Ok(store)
    }
}

impl Dialect for Postgres {}

impl Seam for Postgres {
    const NAME: &'static str = "postgres";
    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";
    const LOCK_SHARED: &'static str = " FOR SHARE";
    const LOCK_EXCLUSIVE: &'static str = " FOR UPDATE";

    async fn migrate(pool: &Pool<Postgres>) -> Result<(), sqlx::migrate::MigrateError> {
        migrator(MIGRATIONS).run(pool).await
    }

    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }

    fn executor(connection: &mut PgConnection) -> impl Executor<'_, Database = Postgres> {
        connection
    }

    fn begin_write(
        pool: &Pool<Postgres>,
    ) -> impl Future<Output = Result<Transaction<'static, Postgres>, sqlx::Error>> + Send {
        pool.begin()
    }

    async fn lock_owners(
        tx: &mut Transaction<'static, Postgres>,
        owners: &[(Option<String>, String)],
    ) -> Result<(), sqlx::Error> {
        if owners.is_empty() {
            return Ok(());
        }
        // One lock per (namespace, owner), held until commit: creates for one owner queue
        // here. Taken in the order of their hashes, so two transactions locking some of
        // the same owners cannot each wait for the other.
        let mut q = QueryBuilder::<Postgres>::new(
            "SELECT pg_advisory_xact_lock(h) FROM (SELECT DISTINCT \
             hashtextextended(coalesce(column1, '') || chr(1) || column2, 0) AS h FROM (VALUES ",
        );
        for (i, (namespace, owner)) in owners.iter().enumerate() {
            q.push(if i == 0 { "(" } else { ", (" });
            q.push_bind(namespace.clone()).push(", ").push_bind(owner.clone()).push(")");
        }
        q.push(") AS v ORDER BY h) AS s");
        q.build().execute(&mut **tx).await.map(drop)
    }

    fn find(lookup: &Lookup) -> Option<Query<'_, Postgres, <Postgres as sqlx::Database>::Arguments>> {
        lookup.is_unique().then(|| sqlx::query(FIND).arg(lookup.value()).arg(lookup.kind()))
    }

    async fn touch(pool: &Pool<Postgres>, latest: Vec<(Uuid, OffsetDateTime)>) -> Result<(), sqlx::Error> {
        // One statement for the whole batch.
        let (ids, times): (Vec<Uuid>, Vec<OffsetDateTime>) = latest.into_iter().unzip();
        sqlx::query(TOUCH).bind(ids).bind(times).execute(pool).await.map(drop)
    }

    fn push_ascii_lower(builder: &mut QueryBuilder<Postgres>, column: &str) {
        // translate(), not lower(): lower() would lowercase non-ASCII letters too.
        builder.push(format_args!("translate({column}, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')"));
    }
}

/// Implements `Type`, `Encode` and `Decode` for PostgreSQL of a column type stored as `$stored`.
macro_rules! stored_as {
    ($column:ty, $stored:ty, encode: |$value:ident| $encode:expr, decode: |$raw:ident| $decode:expr) => {
        impl Type<Postgres> for $column {
            fn type_info() -> PgTypeInfo {
                <$stored as Type<Postgres>>::type_info()
            }
            fn compatible(ty: &PgTypeInfo) -> bool {
                <$stored as Type<Postgres>>::compatible(ty)
            }
        }
        impl Encode<'_, Postgres> for $column {
            fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
                let $value = self;
                <_ as Encode<Postgres>>::encode_by_ref(&$encode, buf)
            }
        }
        impl<'r> Decode<'r, Postgres> for $column {
            fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
                let $raw = <$stored as Decode<Postgres>>::decode(value)?;
                Ok($decode)
            }
        }
    };
}

stored_as!(Timestamp, OffsetDateTime, encode: |t| t.0, decode: |t| Timestamp(t));
stored_as!(JsonValue, Json<serde_json::Value>, encode: |j| Json(&j.0), decode: |j| JsonValue(j.0));
stored_as!(Scopes, Vec<String>, encode: |s| s.0.as_slice(), decode: |s| Scopes(s));
