//! The stores, as JavaScript objects. SQL and Redis stores connect on first use (a
//! JavaScript constructor cannot wait), once, however many managers share them; their
//! `connect()` opens them ahead of time and reports a failure there.

use std::sync::Arc;
use std::time::Duration;

use keypal::MemoryStore;
use keypal_redis::RedisStore;
use keypal_sql::{SqlOptions, SqlStore};
use napi::{Env, JsUnknown};
use napi_derive::napi;
use serde::Deserialize;
use tokio::sync::OnceCell;

use crate::convert;
use crate::failure::Failure;
use crate::input::read;
use crate::runtime::{settle, BoxFuture};

/// Keys in process memory.
#[napi]
pub struct NativeMemoryStore {
    pub(crate) store: Arc<MemoryStore>,
}

#[napi]
impl NativeMemoryStore {
    #[napi(constructor)]
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self { store: Arc::new(MemoryStore::new()) }
    }
}

/// Opens a store once, on first use.
pub trait Connect: Send + Sync + 'static {
    type Store: keypal::Store + Clone + Send + Sync + 'static;
    fn open(&self) -> BoxFuture<Self::Store>;
    fn cell(&self) -> &OnceCell<Self::Store>;
}

/// A store that connects on first use.
pub struct Lazy<C>(pub Arc<C>);

impl<C> Clone for Lazy<C> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<C: Connect> Lazy<C> {
    pub async fn get(&self) -> Result<C::Store, Failure> {
        self.0.cell().get_or_try_init(|| self.0.open()).await.cloned()
    }
}

/// Pool settings of a SQL store, as `index.js` passes them.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SqlOptionsInput {
    max_connections: Option<u32>,
    min_connections: Option<u32>,
    /// Seconds.
    acquire_timeout: Option<f64>,
    /// Seconds.
    busy_timeout: Option<f64>,
    /// Seconds.
    statement_timeout: Option<f64>,
    schema: Option<String>,
    migrate: Option<bool>,
}

fn seconds(field: &str, value: f64) -> Result<Duration, Failure> {
    Duration::try_from_secs_f64(value).map_err(|_| Failure::invalid(field, "a number of seconds, zero or more"))
}

impl SqlOptionsInput {
    fn into_options(self) -> Result<SqlOptions, Failure> {
        let mut options = SqlOptions::new();
        if let Some(n) = self.max_connections {
            options = options.max_connections(n);
        }
        if let Some(n) = self.min_connections {
            options = options.min_connections(n);
        }
        if let Some(s) = self.acquire_timeout {
            options = options.acquire_timeout(seconds("acquireTimeout", s)?);
        }
        if let Some(s) = self.busy_timeout {
            options = options.busy_timeout(seconds("busyTimeout", s)?);
        }
        if let Some(s) = self.statement_timeout {
            options = options.statement_timeout(seconds("statementTimeout", s)?);
        }
        if let Some(schema) = self.schema {
            options = options.schema(schema);
        }
        if let Some(migrate) = self.migrate {
            options = options.migrate(migrate);
        }
        Ok(options)
    }
}

pub struct SqlConnect {
    url: String,
    options: SqlOptions,
    cell: OnceCell<SqlStore>,
}

impl Connect for SqlConnect {
    type Store = SqlStore;
    fn open(&self) -> BoxFuture<SqlStore> {
        let (url, options) = (self.url.clone(), self.options.clone());
        Box::pin(async move { Ok(SqlStore::connect_with(&url, &options).await?) })
    }
    fn cell(&self) -> &OnceCell<SqlStore> {
        &self.cell
    }
}

/// An SQLite or PostgreSQL store (the URL's scheme decides).
#[napi]
pub struct NativeSqlStore {
    pub(crate) lazy: Lazy<SqlConnect>,
}

#[napi]
impl NativeSqlStore {
    /// `url`: `sqlite://path`, `sqlite::memory:` or `postgres://...`; `options`: JSON.
    #[napi(constructor)]
    pub fn new(url: String, options: Option<String>) -> napi::Result<Self> {
        let options = match options {
            Some(json) => read::<SqlOptionsInput>("options", &json)?.into_options()?,
            None => SqlOptions::new(),
        };
        Ok(Self { lazy: Lazy(Arc::new(SqlConnect { url, options, cell: OnceCell::new() })) })
    }

    /// Connects (and migrates) now; resolves when the database is ready.
    #[napi(ts_return_type = "Promise<void> | void")]
    pub fn connect(&self, env: Env) -> napi::Result<JsUnknown> {
        let lazy = self.lazy.clone();
        settle(&env, Box::pin(async move { lazy.get().await.map(|_| ()) }), convert::nothing)
    }

    /// Closes the pool (a store that was never opened has nothing to close).
    #[napi(ts_return_type = "Promise<void> | void")]
    pub fn close(&self, env: Env) -> napi::Result<JsUnknown> {
        let lazy = self.lazy.clone();
        settle(
            &env,
            Box::pin(async move {
                if let Some(store) = lazy.0.cell().get() {
                    store.close().await;
                }
                Ok(())
            }),
            convert::nothing,
        )
    }
}

pub struct RedisConnect {
    url: String,
    prefix: String,
    cell: OnceCell<RedisStore>,
}

impl Connect for RedisConnect {
    type Store = RedisStore;
    fn open(&self) -> BoxFuture<RedisStore> {
        let (url, prefix) = (self.url.clone(), self.prefix.clone());
        Box::pin(async move { Ok(RedisStore::connect(&url, prefix).await?) })
    }
    fn cell(&self) -> &OnceCell<RedisStore> {
        &self.cell
    }
}

/// A Redis store.
#[napi]
pub struct NativeRedisStore {
    pub(crate) lazy: Lazy<RedisConnect>,
}

#[napi]
impl NativeRedisStore {
    /// `url`: `redis://host:port/db`; every key is kept under `prefix` (default `keypal:`).
    #[napi(constructor)]
    pub fn new(url: String, prefix: Option<String>) -> Self {
        let prefix = prefix.unwrap_or_else(|| "keypal:".to_owned());
        Self { lazy: Lazy(Arc::new(RedisConnect { url, prefix, cell: OnceCell::new() })) }
    }

    /// Connects now; resolves when Redis answered.
    #[napi(ts_return_type = "Promise<void> | void")]
    pub fn connect(&self, env: Env) -> napi::Result<JsUnknown> {
        let lazy = self.lazy.clone();
        settle(&env, Box::pin(async move { lazy.get().await.map(|_| ()) }), convert::nothing)
    }
}
