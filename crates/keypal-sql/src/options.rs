//! Pool sizes and timeouts, shared by both stores.

use std::time::Duration;

/// How a store connects: pool size, timeouts, and whether to migrate on connect.
///
/// ```
/// use keypal_sql::SqlOptions;
/// use std::time::Duration;
/// let options = SqlOptions::new().max_connections(20).acquire_timeout(Duration::from_secs(2));
/// assert_eq!(options.max_connections, 20);
/// assert!(options.migrate);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqlOptions {
    /// Most connections the pool opens (default 10; an in-memory SQLite database uses 1).
    pub max_connections: u32,
    /// Connections kept open when idle (default 0).
    pub min_connections: u32,
    /// How long an operation waits for a free connection, and how long connecting may take (default 5 s).
    pub acquire_timeout: Duration,
    /// Idle connections above `min_connections` are closed after this long (default 10 min).
    pub idle_timeout: Option<Duration>,
    /// SQLite: how long a write waits for another writer's lock before failing (default 5 s).
    pub busy_timeout: Duration,
    /// PostgreSQL: statements running longer are cancelled (default 30 s).
    pub statement_timeout: Duration,
    /// Apply keypal's migrations on connect (default true). Without it, call `migrate()` yourself.
    pub migrate: bool,
    /// PostgreSQL: keep keypal's tables in this schema (created if missing) instead of
    /// the connection's default search path.
    pub schema: Option<String>,
}

impl Default for SqlOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            min_connections: 0,
            acquire_timeout: Duration::from_secs(5),
            idle_timeout: Some(Duration::from_secs(600)),
            busy_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            migrate: true,
            schema: None,
        }
    }
}

impl SqlOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the largest pool size (at least 1).
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }
    /// Sets how many idle connections stay open.
    pub fn min_connections(mut self, n: u32) -> Self {
        self.min_connections = n;
        self
    }
    /// Sets how long to wait for a connection.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }
    /// Sets when idle connections close (`None`: never).
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }
    /// Sets SQLite's wait for a busy database.
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }
    /// Sets PostgreSQL's statement timeout.
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout;
        self
    }
    /// Sets the PostgreSQL schema for keypal's tables.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }
    /// Whether to migrate on connect.
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }
}
