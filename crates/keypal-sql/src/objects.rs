//! Small JSON documents of the service built on keypal (applications, settings, admin
//! sessions), kept in the same database as the keys (`keypal_objects`).

use keypal::{Event, StoreError};
use serde_json::Value;
use sqlx::Transaction;
use time::OffsetDateTime;

use crate::DialectStore;
use crate::codec::{backend, duplicate_or_backend, with_detail};
use crate::dialect::{Arg, Dialect, Timestamp};
use crate::rows::{self, append_event};

/// A stored document: addressed by `kind` and `id`, optionally found by a `lookup`
/// value that is unique within its kind (a client secret's digest, a session token's digest).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Object {
    /// What it is (`app`, `setting`, `session`, ...).
    pub kind: String,
    /// Its id within the kind.
    pub id: String,
    /// The unique lookup value, if any.
    pub lookup: Option<String>,
    /// The document.
    pub body: Value,
    /// When it was first stored.
    pub created_at: OffsetDateTime,
    /// When it was last changed.
    pub updated_at: OffsetDateTime,
}

/// A document to store with [`SqlStore::insert_objects`](crate::SqlStore::insert_objects).
#[derive(Debug, Clone, Copy)]
pub struct NewObject<'a> {
    /// What it is.
    pub kind: &'a str,
    /// Its id within the kind.
    pub id: &'a str,
    /// The unique lookup value, if any.
    pub lookup: Option<&'a str>,
    /// The document.
    pub body: &'a Value,
}

/// A document to delete with [`SqlStore::delete_objects`](crate::SqlStore::delete_objects):
/// `kind`/`id`, and, when `body` is given, only while the stored document is that one.
#[derive(Debug, Clone, Copy)]
pub struct ObjectRef<'a> {
    /// What it is.
    pub kind: &'a str,
    /// Its id within the kind.
    pub id: &'a str,
    /// The document it must still be, if any.
    pub body: Option<&'a Value>,
}

impl<D: Dialect> DialectStore<D> {
    /// Stores new documents and `event` (when given) in one transaction: all or
    /// nothing. [`StoreError::Duplicate`] when an id or a lookup is taken in its kind.
    pub async fn insert_objects(&self, objects: &[NewObject<'_>], event: Option<&Event>) -> Result<(), StoreError> {
        let now = Timestamp(OffsetDateTime::now_utc());
        let mut tx = self.write().await?;
        for object in objects {
            sqlx::query(
                "INSERT INTO keypal_objects (kind, id, lookup, body, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)",
            )
            .arg(object.kind)
            .arg(object.id)
            .arg(object.lookup.map(str::to_owned))
            .arg(object.body.to_string())
            .arg(now)
            .execute(D::executor(&mut tx))
            .await
            .map_err(duplicate_or_backend)?;
        }
        commit_object_change(tx, 1, event, self.outbox).await.map(drop)
    }

    /// Appends an event read back from an export, as it was (its id, time and actor).
    /// [`StoreError::Duplicate`] when the audit log already holds an event with its id.
    pub async fn restore_event(&self, event: &Event) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        let taken = sqlx::query("SELECT 1 FROM keypal_audit WHERE id = $1")
            .arg(event.id)
            .fetch_optional(D::executor(&mut tx))
            .await
            .map_err(backend)?;
        if taken.is_some() {
            return Err(StoreError::Duplicate);
        }
        rows::insert_audit(&mut tx, &[rows::EventRow::named(event)]).await?;
        tx.commit().await.map_err(backend)
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
        let mut tx = self.write().await?;
        let rows = replace_body(&mut tx, kind, id, body).await?;
        commit_object_change(tx, rows, event, self.outbox).await
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
        let mut tx = self.write().await?;
        if replace_body(&mut tx, kind, id, body).await? != 1 {
            return Ok(None);
        }
        let done = sqlx::query(
            "UPDATE keypal_keys SET encrypted_key = NULL, version = version + 1 \
             WHERE namespace = $1 AND encrypted_key IS NOT NULL",
        )
        .arg(namespace)
        .execute(D::executor(&mut tx))
        .await
        .map_err(backend)?;
        let forgotten = D::rows_affected(&done);
        let event = with_detail(event, "sealed_copies_deleted", forgotten.into());
        append_event(&mut tx, &event, self.outbox).await?;
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
        let mut tx = self.write().await?;
        let done = sqlx::query("UPDATE keypal_objects SET lookup = $3, updated_at = $4 WHERE kind = $1 AND id = $2")
            .arg(kind)
            .arg(id)
            .arg(lookup.map(str::to_owned))
            .arg(Timestamp(OffsetDateTime::now_utc()))
            .execute(D::executor(&mut tx))
            .await
            .map_err(duplicate_or_backend)?;
        commit_object_change(tx, D::rows_affected(&done), event, self.outbox).await
    }

    /// The document `kind`/`id`.
    pub async fn get_object(&self, kind: &str, id: &str) -> Result<Option<Object>, StoreError> {
        let row =
            self.fetch_optional(sqlx::query(select_objects!("WHERE kind = $1 AND id = $2")).arg(kind).arg(id)).await?;
        row.map(|r| rows::object::<D>(&r)).transpose()
    }

    /// The document of `kind` whose lookup is `lookup`.
    pub async fn find_object(&self, kind: &str, lookup: &str) -> Result<Option<Object>, StoreError> {
        let query = sqlx::query(select_objects!("WHERE kind = $1 AND lookup = $2")).arg(kind).arg(lookup);
        let row = self.fetch_optional(query).await?;
        row.map(|r| rows::object::<D>(&r)).transpose()
    }

    /// Every document of `kind`, oldest first.
    pub async fn list_objects(&self, kind: &str) -> Result<Vec<Object>, StoreError> {
        let rows =
            self.fetch_all(sqlx::query(select_objects!("WHERE kind = $1 ORDER BY created_at, id")).arg(kind)).await?;
        rows.iter().map(rows::object::<D>).collect()
    }

    /// Deletes the first of `objects` and, in the same transaction, each of the others
    /// that exists (and is still the body given), with `event` when given. Returns
    /// whether the first existed (and matched); when it did not, nothing is written.
    pub async fn delete_objects(&self, objects: &[ObjectRef<'_>], event: Option<&Event>) -> Result<bool, StoreError> {
        let mut tx = self.write().await?;
        let mut first = None;
        for object in objects {
            let done = sqlx::query(
                "DELETE FROM keypal_objects WHERE kind = $1 AND id = $2 AND (CAST($3 AS TEXT) IS NULL OR body = $3)",
            )
            .arg(object.kind)
            .arg(object.id)
            .arg(object.body.map(Value::to_string))
            .execute(D::executor(&mut tx))
            .await
            .map_err(backend)?;
            first.get_or_insert(D::rows_affected(&done));
        }
        commit_object_change(tx, first.unwrap_or(0), event, self.outbox).await
    }
}

/// Replaces the body of `kind`/`id`; the number of rows changed (0 or 1).
async fn replace_body<D: Dialect>(
    tx: &mut Transaction<'static, D>,
    kind: &str,
    id: &str,
    body: &Value,
) -> Result<u64, StoreError> {
    let done = sqlx::query("UPDATE keypal_objects SET body = $3, updated_at = $4 WHERE kind = $1 AND id = $2")
        .arg(kind)
        .arg(id)
        .arg(body.to_string())
        .arg(Timestamp(OffsetDateTime::now_utc()))
        .execute(D::executor(tx))
        .await
        .map_err(backend)?;
    Ok(D::rows_affected(&done))
}

/// Ends a document change that touched `rows` rows: when it touched one, appends
/// `event` (if any) and commits; otherwise writes nothing (the dropped transaction
/// rolls back) and answers `false`.
async fn commit_object_change<D: Dialect>(
    mut tx: Transaction<'static, D>,
    rows: u64,
    event: Option<&Event>,
    outbox: bool,
) -> Result<bool, StoreError> {
    if rows != 1 {
        return Ok(false);
    }
    if let Some(event) = event {
        append_event(&mut tx, event, outbox).await?;
    }
    tx.commit().await.map_err(backend)?;
    Ok(true)
}
