//! [`SqlStore`]: the store a database URL names.

use std::sync::Arc;

use keypal::{
    AuditQuery, CreditOp, Credits, Event, Inserted, Insertion, KeyId, KeyPatch, KeyRecord, ListQuery, Lookup, Page,
    Store, StoreError,
};
use serde_json::Value;
use time::OffsetDateTime;

#[cfg(feature = "postgres")]
use crate::PostgresStore;
#[cfg(feature = "sqlite")]
use crate::SqliteStore;
use crate::analytics::{AnalyticsBucket, AnalyticsError, AnalyticsQuery, Retention};
use crate::objects::{NewObject, Object, ObjectRef};
use crate::usage::{Granularity, UsageBucket, UsageCounts, UsageDelta};
use crate::{SqlError, SqlOptions};

/// SQLite or PostgreSQL, chosen by the URL's scheme (`sqlite:` or `postgres:`/`postgresql:`).
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = keypal_sql::SqlStore::connect("sqlite::memory:").await?;
/// assert_eq!(store.dialect(), "sqlite");
/// # Ok::<(), keypal_sql::SqlError>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SqlStore {
    /// An SQLite database.
    #[cfg(feature = "sqlite")]
    Sqlite(SqliteStore),
    /// A PostgreSQL database.
    #[cfg(feature = "postgres")]
    Postgres(PostgresStore),
}

/// Runs the same expression on whichever store this is.
macro_rules! dispatch {
    ($self:expr, $store:ident => $body:expr) => {
        match $self {
            #[cfg(feature = "sqlite")]
            SqlStore::Sqlite($store) => $body,
            #[cfg(feature = "postgres")]
            SqlStore::Postgres($store) => $body,
        }
    };
}

impl SqlStore {
    /// Connects to `url` with default options, and migrates.
    pub async fn connect(url: &str) -> Result<Self, SqlError> {
        Self::connect_with(url, &SqlOptions::default()).await
    }

    /// Connects to `url` with `options`, and migrates unless told not to.
    pub async fn connect_with(url: &str, options: &SqlOptions) -> Result<Self, SqlError> {
        let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
        match scheme {
            #[cfg(feature = "sqlite")]
            "sqlite" => Ok(SqlStore::Sqlite(SqliteStore::connect_with(url, options).await?)),
            #[cfg(feature = "postgres")]
            "postgres" | "postgresql" => Ok(SqlStore::Postgres(PostgresStore::connect_with(url, options).await?)),
            _ => Err(SqlError::UnsupportedUrl { scheme: scheme.chars().take(32).collect() }),
        }
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn dialect(&self) -> &'static str {
        match self {
            #[cfg(feature = "sqlite")]
            SqlStore::Sqlite(_) => "sqlite",
            #[cfg(feature = "postgres")]
            SqlStore::Postgres(_) => "postgres",
        }
    }

    /// Applies keypal's pending migrations.
    pub async fn migrate(&self) -> Result<(), SqlError> {
        dispatch!(self, s => s.migrate().await)
    }

    /// Closes every connection.
    pub async fn close(&self) {
        dispatch!(self, s => s.close().await)
    }

    /// Checks that the database answers (one `SELECT 1`); bound it with a deadline of
    /// your own, as a readiness probe does.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let store = keypal_sql::SqlStore::connect("sqlite::memory:").await?;
    /// let answered = tokio::time::timeout(std::time::Duration::from_secs(1), store.ping()).await;
    /// assert!(matches!(answered, Ok(Ok(()))));
    /// # Ok::<(), keypal_sql::SqlError>(())
    /// # }).unwrap();
    /// ```
    pub async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self, s => s.ping().await)
    }

    /// Stores a new document, and `event` in the audit log in the same transaction
    /// when one is given; [`StoreError::Duplicate`] when its id or lookup is taken in its kind.
    pub async fn insert_object(
        &self,
        kind: &str,
        id: &str,
        lookup: Option<&str>,
        body: &Value,
        event: Option<&Event>,
    ) -> Result<(), StoreError> {
        self.insert_objects(&[NewObject { kind, id, lookup, body }], event).await
    }

    /// Stores new documents, and `event` when given, in one transaction: all or
    /// nothing. [`StoreError::Duplicate`] when an id or a lookup is taken in its kind.
    pub async fn insert_objects(&self, objects: &[NewObject<'_>], event: Option<&Event>) -> Result<(), StoreError> {
        dispatch!(self, s => s.insert_objects(objects, event).await)
    }

    /// Appends an event read back from an export (`keypal import`), as it was: its id,
    /// time and actor. [`StoreError::Duplicate`] when the audit log already holds an
    /// event with its id, so restoring a log twice adds nothing.
    pub async fn restore_event(&self, event: &Event) -> Result<(), StoreError> {
        dispatch!(self, s => s.restore_event(event).await)
    }

    /// Replaces a document's body (its lookup stays), and appends `event` to the audit
    /// log in the same transaction when one is given; returns whether it existed
    /// (nothing is written when it did not).
    pub async fn update_object(
        &self,
        kind: &str,
        id: &str,
        body: &Value,
        event: Option<&Event>,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.update_object(kind, id, body, event).await)
    }

    /// Replaces a document's body like [`SqlStore::update_object`] and, in the same
    /// transaction, deletes the sealed copy (`encrypted_key`) of every key of
    /// `namespace`: what turning an application's `recoverable` off does. Appends
    /// `event` with the number deleted added to its details as `sealed_copies_deleted`.
    /// `None` (nothing written) when the document does not exist.
    pub async fn update_object_forgetting_sealed_keys(
        &self,
        kind: &str,
        id: &str,
        body: &Value,
        namespace: &str,
        event: &Event,
    ) -> Result<Option<u64>, StoreError> {
        dispatch!(self, s => s.update_object_forgetting_sealed_keys(kind, id, body, namespace, event).await)
    }

    /// Replaces a document's lookup (its body stays), and appends `event` to the audit
    /// log in the same transaction when one is given; returns whether it existed
    /// (nothing is written when it did not). [`StoreError::Duplicate`] when the lookup
    /// is taken in its kind. Body and lookup change apart, so that a change to one
    /// never writes back a stale copy of the other.
    pub async fn update_object_lookup(
        &self,
        kind: &str,
        id: &str,
        lookup: Option<&str>,
        event: Option<&Event>,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.update_object_lookup(kind, id, lookup, event).await)
    }

    /// The document `kind`/`id`.
    pub async fn get_object(&self, kind: &str, id: &str) -> Result<Option<Object>, StoreError> {
        dispatch!(self, s => s.get_object(kind, id).await)
    }

    /// The document of `kind` whose lookup is `lookup`.
    pub async fn find_object(&self, kind: &str, lookup: &str) -> Result<Option<Object>, StoreError> {
        dispatch!(self, s => s.find_object(kind, lookup).await)
    }

    /// Every document of `kind`, oldest first.
    pub async fn list_objects(&self, kind: &str) -> Result<Vec<Object>, StoreError> {
        dispatch!(self, s => s.list_objects(kind).await)
    }

    /// Deletes a document, and appends `event` to the audit log in the same
    /// transaction when one is given; returns whether it existed (nothing is written
    /// when it did not).
    pub async fn delete_object(&self, kind: &str, id: &str, event: Option<&Event>) -> Result<bool, StoreError> {
        self.delete_objects(&[ObjectRef { kind, id, body: None }], event).await
    }

    /// Deletes the first of `objects` and, in the same transaction, each of the others
    /// that exists (and is still the body given), with `event` when given: a document
    /// and what depends on it. Returns whether the first existed (and matched); when
    /// it did not, nothing is written.
    pub async fn delete_objects(&self, objects: &[ObjectRef<'_>], event: Option<&Event>) -> Result<bool, StoreError> {
        dispatch!(self, s => s.delete_objects(objects, event).await)
    }

    /// Adds counted verifications to the minute, hour and day rows of each key, owner
    /// and application (per tag), in batched upserts.
    pub async fn record_usage(&self, deltas: &[UsageDelta]) -> Result<(), StoreError> {
        dispatch!(self, s => s.record_usage(deltas).await)
    }

    /// A key's verification counts in `[since, until)`, per minute, hour or day, oldest first.
    pub async fn usage(
        &self,
        key: KeyId,
        since: OffsetDateTime,
        until: OffsetDateTime,
        per: Granularity,
    ) -> Result<Vec<UsageBucket>, StoreError> {
        dispatch!(self, s => s.usage(key, since, until, per).await)
    }

    /// The verification counts of every key of `namespace` in `[since, until)`, by code.
    pub async fn usage_totals(
        &self,
        namespace: Option<&str>,
        since: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<UsageCounts, StoreError> {
        dispatch!(self, s => s.usage_totals(namespace, since, until).await)
    }

    /// Answers an analytics query (see [`DialectStore::analytics`]).
    pub async fn analytics(&self, query: &AnalyticsQuery) -> Result<Vec<AnalyticsBucket>, AnalyticsError> {
        dispatch!(self, s => s.analytics(query).await)
    }

    /// Adds ended minutes into the coarser rows (see [`DialectStore::roll_up_usage`]).
    pub async fn roll_up_usage(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        dispatch!(self, s => s.roll_up_usage(now).await)
    }

    /// Rolls up, then drops expired minute and hour rows (see [`DialectStore::prune_usage`]).
    pub async fn prune_usage(&self, retention: &Retention, now: OffsetDateTime) -> Result<u64, StoreError> {
        dispatch!(self, s => s.prune_usage(retention, now).await)
    }
}

impl Store for SqlStore {
    async fn insert(
        &self,
        record: KeyRecord,
        max_active_per_owner: Option<u32>,
        event: Event,
    ) -> Result<Arc<KeyRecord>, StoreError> {
        dispatch!(self, s => s.insert(record, max_active_per_owner, event).await)
    }
    async fn insert_many(&self, items: Vec<Insertion>) -> Result<Inserted, StoreError> {
        dispatch!(self, s => s.insert_many(items).await)
    }
    async fn find(&self, lookup: &Lookup) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        dispatch!(self, s => s.find(lookup).await)
    }
    async fn find_by_hint(&self, hint: &str) -> Result<Vec<Arc<KeyRecord>>, StoreError> {
        dispatch!(self, s => s.find_by_hint(hint).await)
    }
    async fn get(&self, id: KeyId) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        dispatch!(self, s => s.get(id).await)
    }
    async fn list(&self, query: &ListQuery) -> Result<Page<Arc<KeyRecord>>, StoreError> {
        dispatch!(self, s => s.list(query).await)
    }
    async fn count(&self, query: &ListQuery) -> Result<u64, StoreError> {
        dispatch!(self, s => s.count(query).await)
    }
    async fn update(&self, id: KeyId, patch: &KeyPatch, event: Event) -> Result<Arc<KeyRecord>, StoreError> {
        dispatch!(self, s => s.update(id, patch, event).await)
    }
    async fn set_enabled(&self, id: KeyId, enabled: bool, event: Event) -> Result<Arc<KeyRecord>, StoreError> {
        dispatch!(self, s => s.set_enabled(id, enabled, event).await)
    }
    async fn revoke(&self, id: KeyId, at: OffsetDateTime, event: Event) -> Result<Arc<KeyRecord>, StoreError> {
        dispatch!(self, s => s.revoke(id, at, event).await)
    }
    async fn revoke_owner(
        &self,
        namespace: Option<&str>,
        owner: &str,
        at: OffsetDateTime,
        event: Event,
    ) -> Result<Vec<Arc<KeyRecord>>, StoreError> {
        dispatch!(self, s => s.revoke_owner(namespace, owner, at, event).await)
    }
    async fn rotate(
        &self,
        old: KeyId,
        replacement: KeyRecord,
        old_revoked_at: OffsetDateTime,
        event: Event,
    ) -> Result<(Arc<KeyRecord>, Arc<KeyRecord>), StoreError> {
        dispatch!(self, s => s.rotate(old, replacement, old_revoked_at, event).await)
    }
    async fn delete(&self, id: KeyId, event: Event) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        dispatch!(self, s => s.delete(id, event).await)
    }
    async fn consume(&self, id: KeyId, cost: u64, refill_due: Option<OffsetDateTime>) -> Result<Credits, StoreError> {
        dispatch!(self, s => s.consume(id, cost, refill_due).await)
    }

    async fn adjust_credits(
        &self,
        id: KeyId,
        op: CreditOp,
        refill_due: Option<OffsetDateTime>,
        event: Event,
    ) -> Result<Arc<KeyRecord>, StoreError> {
        dispatch!(self, s => s.adjust_credits(id, op, refill_due, event).await)
    }
    async fn touch(&self, used: &[(KeyId, OffsetDateTime)]) -> Result<(), StoreError> {
        dispatch!(self, s => s.touch(used).await)
    }
    async fn replace_hash(
        &self,
        id: KeyId,
        expected: &str,
        new_hash: &str,
        new_lookup: &Lookup,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.replace_hash(id, expected, new_hash, new_lookup).await)
    }
    async fn audit(&self, query: &AuditQuery) -> Result<Page<Event>, StoreError> {
        dispatch!(self, s => s.audit(query).await)
    }
}
