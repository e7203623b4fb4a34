//! # keypal-sql
//!
//! Durable stores for keypal on real databases, through sqlx: [`SqliteStore`] (an
//! embedded file, the default of `keypal serve`) and [`PostgresStore`]. Both implement
//! [`keypal::Store`] and pass the shared conformance suite.
//!
//! - **Migrations** are embedded, one set per dialect, applied on connect (or by an
//!   explicit `migrate()`), and recorded in keypal's own `keypal_migrations` table,
//!   apart from the host application's.
//! - **Atomicity is the database's**: per-owner limits are counted in the insert's
//!   transaction (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: a transaction-scoped advisory
//!   lock per owner), state changes are conditional column updates, rotation is one
//!   transaction, credits are spent with a guarded `UPDATE ... RETURNING`.
//! - **Audit and usage**: the audit log is its own append-only table; verification
//!   counts are aggregated per key, owner and application, per minute, hour and day,
//!   per result code and tag ([`UsageCounter`], `record_usage`, `usage`, `analytics`,
//!   `prune_usage`).
//!
//! [`SqlStore::connect`] picks the store from the URL:
//!
//! ```
//! use keypal::{KeyManager, NewKey};
//! use keypal_sql::SqlStore;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = SqlStore::connect("sqlite::memory:").await?; // or "postgres://user@host/db"
//! let keys = KeyManager::builder().store(store).build()?;
//! let created = keys.create(NewKey::new()).await?;
//! assert!(keys.verify(created.key.expose()).await?.is_valid());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

// The row codec first: its column macros serve the modules after it.
#[macro_use]
mod rows;
mod analytics;
#[cfg(feature = "postgres")]
mod bus;
mod codec;
mod dialect;
mod dialect_store;
mod error;
mod migrate;
mod objects;
mod options;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;
mod store;
mod usage;

pub use analytics::{
    AnalyticsBucket, AnalyticsError, AnalyticsQuery, GroupBy, InvalidQuery, Retention, Subject, ranking_span,
};
#[cfg(feature = "postgres")]
pub use bus::{BusSubscription, PgBus, PgBusError, PgBusSink};
pub use dialect::Dialect;
pub use dialect_store::DialectStore;
pub use error::{CorruptRow, OutOfRange, SqlError};
pub use migrate::MIGRATIONS_TABLE;
pub use objects::{NewObject, Object, ObjectRef};
pub use options::SqlOptions;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;
pub use store::SqlStore;
pub use usage::{Granularity, UsageBucket, UsageCounter, UsageCounts, UsageDelta};

/// Re-exported for callers that build pools themselves.
pub use sqlx;

/// Test support: keypal's migrations up to a version, to build databases as older
/// versions of keypal left them. Not for production use.
#[doc(hidden)]
pub mod testing {
    /// The SQL of the SQLite store's verify path: `(name, sql)`.
    #[cfg(feature = "sqlite")]
    pub const SQLITE_VERIFY_PATH: &[(&str, &str)] = &[
        ("find_by_digest", crate::sqlite::FIND_BY_DIGEST),
        ("find_by_id", crate::sqlite::FIND_BY_ID),
        ("find_by_hint", crate::dialect_store::FIND_BY_HINT),
        ("get", crate::dialect_store::GET),
        ("consume", crate::dialect_store::CONSUME),
        ("touch", crate::sqlite::TOUCH),
    ];

    /// The SQL of the PostgreSQL store's verify path: `(name, sql)`.
    #[cfg(feature = "postgres")]
    pub const POSTGRES_VERIFY_PATH: &[(&str, &str)] = &[
        ("find", crate::postgres::FIND),
        ("find_by_hint", crate::dialect_store::FIND_BY_HINT),
        ("get", crate::dialect_store::GET),
        ("consume", crate::dialect_store::CONSUME),
        ("touch", crate::postgres::TOUCH),
    ];

    /// Applies only the first `count` SQLite migrations.
    #[cfg(feature = "sqlite")]
    pub async fn migrate_sqlite_to(pool: &sqlx::SqlitePool, count: usize) -> Result<(), crate::SqlError> {
        let sources = &crate::sqlite::MIGRATIONS[..count.min(crate::sqlite::MIGRATIONS.len())];
        crate::migrate::migrator(sources).run(pool).await.map_err(crate::SqlError::Migration)
    }

    /// Applies only the first `count` PostgreSQL migrations.
    #[cfg(feature = "postgres")]
    pub async fn migrate_postgres_to(pool: &sqlx::PgPool, count: usize) -> Result<(), crate::SqlError> {
        let sources = &crate::postgres::MIGRATIONS[..count.min(crate::postgres::MIGRATIONS.len())];
        crate::migrate::migrator(sources).run(pool).await.map_err(crate::SqlError::Migration)
    }
}

/// The storage guide's examples run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/STORAGE.md")]
struct StorageGuideDoctests;

/// The README's examples (they use the core and this crate), compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
