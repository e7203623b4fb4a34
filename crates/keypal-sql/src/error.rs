//! Errors of connecting to a database and migrating it.

/// Why a store could not be opened or migrated. Operations on an open store fail with
/// [`keypal::StoreError`] instead.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let error = keypal_sql::SqlStore::connect("mysql://localhost/keys").await.unwrap_err();
/// assert_eq!(error.code(), "DATABASE_URL_UNSUPPORTED");
/// # });
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqlError {
    /// The URL names a database keypal has no store for (or one this build leaves out).
    #[error("unsupported database URL scheme {scheme:?}: use sqlite://PATH or postgres://USER@HOST/DATABASE")]
    UnsupportedUrl {
        /// The scheme of the URL (never the rest, which may hold a password).
        scheme: String,
    },
    /// The URL could not be parsed.
    #[error("invalid database URL: {0}")]
    InvalidUrl(#[source] sqlx::Error),
    /// The database could not be reached or opened (connection refused, timeout, bad credentials, unwritable file).
    #[error("cannot reach the database: {0}")]
    Unreachable(#[source] sqlx::Error),
    /// A PostgreSQL schema name that is not a plain lowercase identifier (`[a-z_][a-z0-9_]*`, at most 63 bytes).
    #[error("invalid schema name {schema:?}: use lowercase letters, digits and underscores")]
    InvalidSchema {
        /// The name given.
        schema: String,
    },
    /// Applying keypal's migrations failed; the database is left at the last migration that succeeded.
    #[error("migrating the keypal schema failed: {0}")]
    Migration(#[source] sqlx::migrate::MigrateError),
}

impl SqlError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            SqlError::UnsupportedUrl { .. } => "DATABASE_URL_UNSUPPORTED",
            SqlError::InvalidUrl(_) => "DATABASE_URL_INVALID",
            SqlError::Unreachable(_) => "DATABASE_UNREACHABLE",
            SqlError::InvalidSchema { .. } => "DATABASE_SCHEMA_INVALID",
            SqlError::Migration(_) => "MIGRATION_FAILED",
        }
    }
}

/// A stored row that keypal cannot read back (edited by hand, or written by a newer version).
#[derive(Debug, thiserror::Error)]
#[error("corrupt {column} in a keypal row: {reason}")]
pub struct CorruptRow {
    /// The column.
    pub column: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

/// A value keypal cannot store in a column (credits above `i64::MAX`).
#[derive(Debug, thiserror::Error)]
#[error("{column} of {value} does not fit in a 64-bit signed database integer")]
pub struct OutOfRange {
    /// The column.
    pub column: &'static str,
    /// The value.
    pub value: u64,
}
