//! Errors of connecting to Redis, and the backend errors of a connected store.

/// Why a [`RedisStore`](crate::RedisStore) could not be opened. Operations on an open
/// store fail with [`keypal::StoreError`] instead.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let error = keypal_redis::RedisStore::connect("mysql://localhost/0", "keypal:").await.unwrap_err();
/// assert_eq!(error.code(), "REDIS_URL_INVALID");
/// # });
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisStoreError {
    /// The URL could not be parsed (`redis://[user:password@]host[:port][/db]` or `redis+unix:///path`).
    #[error("invalid Redis URL: {0}")]
    InvalidUrl(#[source] redis::RedisError),
    /// Redis could not be reached, or refused the connection (authentication, database index).
    #[error("cannot reach Redis: {0}")]
    Unreachable(#[source] redis::RedisError),
}

impl RedisStoreError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            RedisStoreError::InvalidUrl(_) => "REDIS_URL_INVALID",
            RedisStoreError::Unreachable(_) => "REDIS_UNREACHABLE",
        }
    }
}

/// Data read back from Redis that keypal cannot understand (edited by hand, written by
/// a newer version, or a key of another application under keypal's prefix). Reported
/// as [`keypal::StoreError::Backend`].
#[derive(Debug, thiserror::Error)]
#[error("corrupt keypal data in Redis ({what}): {reason}")]
pub struct CorruptData {
    /// What was being read (a field name, or `reply`).
    pub what: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

/// A value keypal will not store in Redis (a record `version` of 10^18 or more, which
/// Redis could no longer increment). Reported as [`keypal::StoreError::Backend`].
#[derive(Debug, thiserror::Error)]
#[error("{what} of {value} is out of the range keypal stores in Redis")]
pub struct OutOfRange {
    /// The field.
    pub what: &'static str,
    /// The value.
    pub value: u64,
}

/// The audit event's id is already in the log (the log is append-only: every event
/// needs its own id). Reported as [`keypal::StoreError::Backend`]; nothing changed.
#[derive(Debug, thiserror::Error)]
#[error("an audit event with this id is already logged")]
pub struct EventAlreadyLogged;
