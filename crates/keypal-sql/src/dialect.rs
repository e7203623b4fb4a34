//! The seam between keypal's one SQL store ([`DialectStore`](crate::DialectStore)) and
//! the two databases it runs on. Everything the store does (transactions, counted
//! inserts, guarded updates, decoding, error mapping, paging) is written once over
//! [`Dialect`]; a dialect supplies only what truly differs:
//!
//! - how a write transaction starts (SQLite takes its write lock up front) and how
//!   creates for one owner are serialised (a PostgreSQL advisory lock);
//! - the few statements whose SQL differs (lookups on the verify path, the batched
//!   `last_used_at` write, ASCII lowercasing for search);
//! - how a timestamp, a JSON value and a scope list are stored: the column types
//!   [`Timestamp`], [`JsonValue`] and [`Scopes`] encode themselves for
//!   each database (PostgreSQL `TIMESTAMPTZ`, `JSONB`, `TEXT[]`; SQLite integers and
//!   JSON text).
//!
//! Placeholders are `$1`, `$2`, ... in both dialects (SQLite reads `$N` as the N-th argument).

use std::future::Future;

use keypal::Lookup;
use serde_json::Value;
use sqlx::query::Query;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, QueryBuilder, Transaction, Type};
use time::OffsetDateTime;
use uuid::Uuid;

/// A database keypal's SQL store runs on: sqlx's [`Sqlite`](sqlx::Sqlite) or
/// [`Postgres`](sqlx::Postgres), each behind a cargo feature of the same name. Sealed:
/// the two implementations are this crate's.
pub trait Dialect: seam::Seam {}

pub(crate) use seam::{Bind, Read, Seam};

/// `.arg(value)`: binds the next parameter of a statement, as sqlx's `bind` does, for
/// any value its dialect can bind (so code written over [`Dialect`] reads like sqlx's).
pub(crate) trait Arg<DB: Database> {
    /// Binds `value` as the next parameter.
    fn arg<T>(self, value: T) -> Self
    where
        DB: Bind<T>;
}

impl<DB: Database> Arg<DB> for Query<'_, DB, DB::Arguments> {
    fn arg<T>(self, value: T) -> Self
    where
        DB: Bind<T>,
    {
        DB::bind(self, value)
    }
}

/// `.push_arg(value)`: appends a parameter to a statement being built, as sqlx's
/// `push_bind` does, for any value its dialect can bind.
pub(crate) trait PushArg<DB: Database> {
    /// Appends `value` as a parameter, and its placeholder.
    fn push_arg<T>(&mut self, value: T) -> &mut Self
    where
        DB: Bind<T>;
}

impl<DB: Database> PushArg<DB> for QueryBuilder<DB> {
    fn push_arg<T>(&mut self, value: T) -> &mut Self
    where
        DB: Bind<T>,
    {
        DB::push_bind(self, value);
        self
    }
}

mod seam {
    use super::*;

    /// `T` can be bound as a parameter of this database's statements.
    pub trait Bind<T>: Database {
        /// `query` with `value` bound as its next parameter.
        fn bind(query: Query<'_, Self, Self::Arguments>, value: T) -> Query<'_, Self, Self::Arguments>;
        /// Appends `value` as a parameter (and its placeholder) to a statement being built.
        fn push_bind(builder: &mut QueryBuilder<Self>, value: T);
    }

    impl<DB, T> Bind<T> for DB
    where
        DB: Database,
        T: Encode<'static, DB> + Type<DB>,
    {
        fn bind(query: Query<'_, Self, Self::Arguments>, value: T) -> Query<'_, Self, Self::Arguments> {
            query.bind(value)
        }

        fn push_bind(builder: &mut QueryBuilder<Self>, value: T) {
            builder.push_bind(value);
        }
    }

    /// `T` can be read from a column of this database's rows.
    pub trait Read<T>: Database {
        /// The value of the column named `column`.
        fn read(row: &Self::Row, column: &str) -> Result<T, sqlx::Error>;
        /// The value of the `index`-th column (from 0).
        fn read_at(row: &Self::Row, index: usize) -> Result<T, sqlx::Error>;
    }

    impl<DB, T> Read<T> for DB
    where
        DB: Database,
        T: for<'r> Decode<'r, DB> + Type<DB>,
        for<'c> &'c str: ColumnIndex<DB::Row>,
        usize: ColumnIndex<DB::Row>,
    {
        fn read(row: &Self::Row, column: &str) -> Result<T, sqlx::Error> {
            sqlx::Row::try_get(row, column)
        }

        fn read_at(row: &Self::Row, index: usize) -> Result<T, sqlx::Error> {
            sqlx::Row::try_get(row, index)
        }
    }

    /// What a dialect supplies (see the module's documentation).
    pub trait Seam:
        Database<Arguments: IntoArguments<Self>>
        + Bind<i64>
        + Bind<Option<i64>>
        + Bind<bool>
        + for<'a> Bind<&'a str>
        + Bind<String>
        + Bind<Option<String>>
        + Bind<std::sync::Arc<str>>
        + Bind<Uuid>
        + Bind<Option<Uuid>>
        + Bind<Timestamp>
        + Bind<Option<Timestamp>>
        + Bind<Option<JsonValue>>
        + Bind<Scopes>
        + Read<i64>
        + Read<Option<i64>>
        + Read<bool>
        + Read<String>
        + Read<Option<String>>
        + Read<Uuid>
        + Read<Option<Uuid>>
        + Read<Timestamp>
        + Read<Option<Timestamp>>
        + Read<Option<JsonValue>>
        + Read<Scopes>
    {
        /// `"sqlite"` or `"postgres"`.
        const NAME: &'static str;

        /// What ends a `SELECT` that claims rows for this transaction: PostgreSQL
        /// ` FOR UPDATE SKIP LOCKED` (rows another transaction holds are passed over);
        /// nothing on SQLite, whose write transactions run one at a time.
        const SKIP_LOCKED: &'static str;

        /// What ends a `SELECT` of a row that must not change until this transaction
        /// ends, while other transactions may read it the same way: PostgreSQL
        /// ` FOR SHARE`; nothing on SQLite (write transactions run one at a time).
        const LOCK_SHARED: &'static str;

        /// What ends a `SELECT` of a row this transaction will change, that no other
        /// may read with [`Seam::LOCK_SHARED`] meanwhile: PostgreSQL ` FOR UPDATE`;
        /// nothing on SQLite.
        const LOCK_EXCLUSIVE: &'static str;

        /// Applies keypal's migrations of this dialect that are not applied yet.
        fn migrate(pool: &Pool<Self>) -> impl Future<Output = Result<(), sqlx::migrate::MigrateError>> + Send;

        /// How many rows a statement changed.
        fn rows_affected(result: &Self::QueryResult) -> u64;

        /// The executor of a connection (of the pool or of a transaction).
        fn executor(connection: &mut Self::Connection) -> impl Executor<'_, Database = Self>;

        /// Starts a transaction that will write.
        fn begin_write(
            pool: &Pool<Self>,
        ) -> impl Future<Output = Result<Transaction<'static, Self>, sqlx::Error>> + Send;

        /// Makes concurrent creates for each of these owners (of a namespace) wait for
        /// each other until the transaction ends (so counting an owner's keys cannot race).
        /// Owners are locked in one order, whatever the order given.
        fn lock_owners(
            tx: &mut Transaction<'static, Self>,
            owners: &[(Option<String>, String)],
        ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

        /// The statement finding the key whose unique lookup is `lookup`, with its
        /// parameters bound; `None` for a hint (not unique).
        fn find(lookup: &Lookup) -> Option<Query<'_, Self, Self::Arguments>>;

        /// Writes `last_used_at` of each key (one time per key), only forward.
        fn touch(
            pool: &Pool<Self>,
            latest: Vec<(Uuid, OffsetDateTime)>,
        ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

        /// `column` with its ASCII letters lowercased (and no other character changed).
        fn push_ascii_lower(builder: &mut QueryBuilder<Self>, column: &str);
    }
}

/// A point in time: PostgreSQL `TIMESTAMPTZ`, SQLite integer microseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub OffsetDateTime);

/// Any JSON value: PostgreSQL `JSONB`, SQLite JSON text.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonValue(pub Value);

/// A key's scopes: PostgreSQL `TEXT[]`, SQLite a JSON array of strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scopes(pub Vec<String>);

/// Why a stored value could not be read as keypal's type (reported as the column's
/// [`CorruptRow`](crate::CorruptRow)).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Unreadable(pub String);
