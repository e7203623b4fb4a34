//! The storage side of webhooks (the server sends them): the outbox written in the
//! transaction of each change, the deliveries the dispatcher makes of it, and the
//! once-only marks of scanned events.
//!
//! - **Outbox.** Every key change and client-secret rotation appends its audit event in
//!   its transaction (`rows::insert_events`); the same statement batch adds a row to
//!   `keypal_outbox` for the changes that cause a webhook event ([`event_type`]), but only
//!   while a webhook exists (a document of kind [`WEBHOOK_KIND`]): a library user without
//!   webhooks never accumulates rows. An acknowledged change therefore has its outbox row
//!   committed with it, whatever happens to the process afterwards.
//! - **Dispatch.** [`DialectStore::dispatch_outbox`] claims outbox rows (PostgreSQL:
//!   `FOR UPDATE SKIP LOCKED`, so instances take different rows), lets the caller plan
//!   one delivery per matching webhook, inserts them and deletes the rows, in one
//!   transaction.
//! - **Deliveries** are claimed with a lease ([`DialectStore::claim_deliveries`]): a claim
//!   sets `locked_until`, and a result is recorded only by the claim that still holds it
//!   ([`DialectStore::finish_delivery`]); a crashed instance's claims are due again when
//!   their lease ends.
//! - **Once-only events** ([`DialectStore::fire_once`]): a row of `keypal_webhook_fired`
//!   per key, kind and threshold, inserted with the outbox row; the insert that conflicts
//!   inserts nothing.

use std::sync::Arc;
use std::time::Duration;

use keypal::{Action, KeyId, KeyRecord, Lookup, Page, StoreError};
use serde_json::{Value, json};
use sqlx::{QueryBuilder, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::DialectStore;
use crate::codec::{self, backend, to_u64};
use crate::dialect::{Arg, Dialect, PushArg, Timestamp};
use crate::dialect_store::first;
use crate::rows::{self, Columns, EventRow};

/// The document kind of webhooks (`keypal_objects`): while none exists, no outbox row is written.
pub const WEBHOOK_KIND: &str = "webhook";

/// The columns of a delivery row, as [`delivery`] reads them.
macro_rules! delivery_columns {
    () => {
        "id, webhook_id, event_id, event_type, body, status, attempts, next_attempt_at, locked_until, created_at, \
         first_failed_at, last_attempt_at, last_status, last_response"
    };
}

/// The webhook event type a change's audit action causes, if any.
///
/// ```
/// use keypal::Action;
/// assert_eq!(keypal_sql::webhook_event_type(Action::Revoked), Some("key.revoked"));
/// assert_eq!(keypal_sql::webhook_event_type(Action::CreditsChanged), Some("key.updated"));
/// assert_eq!(keypal_sql::webhook_event_type(Action::TokenCreated), None);
/// ```
pub fn event_type(action: Action) -> Option<&'static str> {
    match action {
        Action::Created | Action::Imported => Some("key.created"),
        Action::Updated | Action::Enabled | Action::Disabled | Action::CreditsChanged => Some("key.updated"),
        Action::Revoked => Some("key.revoked"),
        Action::Rotated => Some("key.rotated"),
        Action::Deleted => Some("key.deleted"),
        Action::ClientSecretRotated => Some("app.client_secret_rotated"),
        _ => None,
    }
}

/// The key's public fields as they were, for the outbox: no hash, no sealed copy, and its
/// lookup replaced by its id (a digest lookup is a hash of the key).
fn snapshot(record: &KeyRecord) -> Value {
    let mut public = record.clone();
    public.hash = String::new();
    public.encrypted_key = None;
    public.lookup = Lookup::Id(record.id.to_string());
    serde_json::to_value(&public).unwrap_or(Value::Null)
}

/// The expiry scan's page: keys not revoked expiring in `($1, $2]`, after the key `$4`
/// expiring at `$3`, whose `$5` event of threshold `$6` has not fired, by expiry then id,
/// `$7` of them: one range of the `(expires_at, id)` index, and a primary-key probe of
/// `keypal_webhook_fired` per key in the range.
pub(crate) const EXPIRY_SCAN: &str = select_keys!(
    "WHERE expires_at > $1 AND expires_at <= $2 AND revoked_at IS NULL \
     AND (expires_at > $3 OR (expires_at = $3 AND id > $4)) \
     AND NOT EXISTS (SELECT 1 FROM keypal_webhook_fired f WHERE f.key_id = keypal_keys.id AND f.kind = $5 \
     AND f.threshold = $6) ORDER BY expires_at, id LIMIT $7"
);

/// `WHERE EXISTS (a webhook)`: the condition of every outbox insert.
const WHILE_A_WEBHOOK_EXISTS: &str = " WHERE EXISTS (SELECT 1 FROM keypal_objects WHERE kind = 'webhook')";

/// Adds the outbox rows of `events` that cause a webhook event (one statement; none
/// while no webhook exists).
pub(crate) async fn insert_outbox<D: Dialect>(
    tx: &mut Transaction<'static, D>,
    events: &[EventRow<'_>],
) -> Result<(), StoreError> {
    let due: Vec<(&EventRow<'_>, &'static str)> =
        events.iter().filter_map(|row| event_type(row.event.action).map(|t| (row, t))).collect();
    if due.is_empty() {
        return Ok(());
    }
    let mut q = QueryBuilder::<D>::new(
        "INSERT INTO keypal_outbox (id, type, at, key_id, namespace, data) SELECT * FROM (VALUES ",
    );
    for (i, (row, kind)) in due.iter().enumerate() {
        let data = json!({ "key": row.record.map(snapshot), "details": row.event.details });
        q.push(if i == 0 { "(" } else { ", (" });
        q.push_arg(row.event.id).push(", ");
        q.push_arg(*kind).push(", ");
        q.push_arg(Timestamp(row.event.at)).push(", ");
        q.push_arg(row.key_id.map(|id| id.0)).push(", ");
        q.push_arg(row.namespace.clone()).push(", ");
        q.push_arg(data.to_string()).push(")");
    }
    q.push(") AS v").push(WHILE_A_WEBHOOK_EXISTS);
    q.build().execute(D::executor(tx)).await.map_err(backend)?;
    Ok(())
}

/// An event waiting in the outbox.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct OutboxEvent {
    /// Its id: the `webhook-id` of every delivery of it.
    pub id: Uuid,
    /// `key.revoked`, `key.expiring`, ...
    pub event_type: String,
    /// When it happened.
    pub at: OffsetDateTime,
    /// The key it is about.
    pub key_id: Option<KeyId>,
    /// The key's or application's namespace.
    pub namespace: Option<String>,
    /// The key as the change left it (public fields only: no hash, no sealed copy).
    pub key: Option<KeyRecord>,
    /// The audit event's details, or the scan's (the threshold).
    pub details: Option<Value>,
}

/// A delivery to make: one event to one webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// The webhook's id.
    pub webhook_id: String,
    /// The event's id (the `webhook-id` header).
    pub event_id: Uuid,
    /// The event's type.
    pub event_type: String,
    /// The payload, as it will be signed and sent.
    pub body: String,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeliveryStatus {
    /// Waiting for its next attempt.
    Pending,
    /// An attempt was answered with a 2xx.
    Succeeded,
    /// Every attempt failed; no more are made (but a retry may be asked for).
    Failed,
}

impl DeliveryStatus {
    /// `pending`, `succeeded` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
        }
    }
}

/// A stored delivery.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Delivery {
    /// Its id.
    pub id: Uuid,
    /// The webhook it goes to.
    pub webhook_id: String,
    /// The event's id (the `webhook-id` header, the same on every attempt).
    pub event_id: Uuid,
    /// The event's type.
    pub event_type: String,
    /// The payload.
    pub body: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempts: u32,
    /// When the next attempt is due (while pending).
    pub next_attempt_at: Option<OffsetDateTime>,
    /// Until when an instance holds it (while it sends it).
    pub locked_until: Option<OffsetDateTime>,
    /// When it was made.
    pub created_at: OffsetDateTime,
    /// When its first attempt failed.
    pub first_failed_at: Option<OffsetDateTime>,
    /// When the last attempt was made.
    pub last_attempt_at: Option<OffsetDateTime>,
    /// The last HTTP status answered.
    pub last_status: Option<u16>,
    /// The start of the last answer (at most 256 bytes), or why there was none.
    pub last_response: Option<String>,
}

/// The result of one attempt, as [`DialectStore::finish_delivery`] records it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Attempt {
    /// Answered with a 2xx.
    Succeeded {
        /// The status.
        status: u16,
        /// The start of the answer.
        excerpt: String,
    },
    /// Not answered with a 2xx.
    Failed {
        /// The status, when there was an answer.
        status: Option<u16>,
        /// The start of the answer, or the error.
        excerpt: String,
        /// When to try again; `None`: no more attempts (the delivery has failed).
        retry_at: Option<OffsetDateTime>,
    },
}

fn status_of(text: &str) -> Result<DeliveryStatus, StoreError> {
    match text {
        "pending" => Ok(DeliveryStatus::Pending),
        "succeeded" => Ok(DeliveryStatus::Succeeded),
        "failed" => Ok(DeliveryStatus::Failed),
        other => Err(codec::corrupt("status", format!("unknown delivery status {other:?}"))),
    }
}

/// Reads a delivery row (columns as in [`delivery_columns!`]).
fn delivery<D: Dialect>(row: &D::Row) -> Result<Delivery, StoreError> {
    let c = Columns::<D>(row);
    let attempts = to_u64("attempts", c.get("attempts")?)?;
    let last_status = c.get::<Option<i64>>("last_status")?;
    Ok(Delivery {
        id: c.get("id")?,
        webhook_id: c.get("webhook_id")?,
        event_id: c.get("event_id")?,
        event_type: c.get("event_type")?,
        body: c.get("body")?,
        status: status_of(&c.get::<String>("status")?)?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        next_attempt_at: c.get::<Option<Timestamp>>("next_attempt_at")?.map(|t| t.0),
        locked_until: c.get::<Option<Timestamp>>("locked_until")?.map(|t| t.0),
        created_at: c.get::<Timestamp>("created_at")?.0,
        first_failed_at: c.get::<Option<Timestamp>>("first_failed_at")?.map(|t| t.0),
        last_attempt_at: c.get::<Option<Timestamp>>("last_attempt_at")?.map(|t| t.0),
        last_status: last_status.and_then(|s| u16::try_from(s).ok()),
        last_response: c.get("last_response")?,
    })
}

/// Reads an outbox row.
fn outbox_event<D: Dialect>(row: &D::Row) -> Result<OutboxEvent, StoreError> {
    let c = Columns::<D>(row);
    let data: Value = serde_json::from_str(&c.get::<String>("data")?).map_err(|e| codec::corrupt("data", e))?;
    let key = match data.get("key") {
        Some(Value::Null) | None => None,
        Some(key) => Some(serde_json::from_value(key.clone()).map_err(|e| codec::corrupt("data", e))?),
    };
    let details = data.get("details").filter(|d| !d.is_null()).cloned();
    Ok(OutboxEvent {
        id: c.get("id")?,
        event_type: c.get("type")?,
        at: c.get::<Timestamp>("at")?.0,
        key_id: c.get::<Option<Uuid>>("key_id")?.map(KeyId),
        namespace: c.get("namespace")?,
        key,
        details,
    })
}

/// A lease's end, kept to the microsecond both databases store.
fn lease_end(now: OffsetDateTime, lease: Duration) -> OffsetDateTime {
    let end = now + lease;
    end.replace_nanosecond(end.nanosecond() / 1000 * 1000).unwrap_or(end)
}

impl<D: Dialect> DialectStore<D> {
    /// Claims up to `limit` outbox events, oldest first (on PostgreSQL, rows another
    /// instance holds are skipped), hands them to `plan`, inserts the deliveries it
    /// returns (a delivery of an event to a webhook that already has one is skipped) and
    /// deletes the events, in one transaction. Returns how many events were taken.
    ///
    /// ```
    /// use keypal::{KeyManager, NewKey};
    /// use keypal_sql::{Attempt, DeliveryStatus, NewDelivery, SqliteStore, WEBHOOK_KIND};
    /// use std::time::Duration;
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let store = SqliteStore::connect("sqlite::memory:").await?.with_webhook_outbox();
    /// store.insert_objects(&[keypal_sql::NewObject {
    ///     kind: WEBHOOK_KIND, id: "w1", lookup: None, body: &serde_json::json!({}),
    /// }], None).await?;
    /// let keys = KeyManager::builder().store(store.clone()).build()?;
    /// let created = keys.create(NewKey::new()).await?;
    /// keys.revoke(&created.record.id).await?;
    /// // Two events (key.created, key.revoked): one delivery each to w1.
    /// let taken = store.dispatch_outbox(100, |events| {
    ///     events.iter().map(|e| NewDelivery {
    ///         webhook_id: "w1".into(), event_id: e.id, event_type: e.event_type.clone(), body: "{}".into(),
    ///     }).collect()
    /// }).await?;
    /// assert_eq!(taken, 2);
    /// // A sender claims them under a lease and records each attempt.
    /// let now = time::OffsetDateTime::now_utc() + Duration::from_secs(1);
    /// for delivery in store.claim_deliveries(now, Duration::from_secs(60), 10).await? {
    ///     let ok = Attempt::Succeeded { status: 200, excerpt: String::new() };
    ///     assert!(store.finish_delivery(delivery.id, delivery.locked_until.unwrap(), &ok).await?);
    /// }
    /// let page = store.deliveries("w1", None, 10).await?;
    /// assert!(page.items.iter().all(|d| d.status == DeliveryStatus::Succeeded));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn dispatch_outbox(
        &self,
        limit: u32,
        plan: impl FnOnce(&[OutboxEvent]) -> Vec<NewDelivery> + Send,
    ) -> Result<usize, StoreError> {
        // A read first: an empty outbox (the usual case) takes no write lock.
        if self.fetch_optional(sqlx::query("SELECT id FROM keypal_outbox LIMIT 1")).await?.is_none() {
            return Ok(0);
        }
        let mut tx = self.write().await?;
        let mut q = QueryBuilder::<D>::new(
            "SELECT id, type, at, key_id, namespace, data FROM keypal_outbox ORDER BY id LIMIT ",
        );
        q.push_arg(i64::from(limit.max(1))).push(D::SKIP_LOCKED);
        let rows = q.build().fetch_all(D::executor(&mut tx)).await.map_err(backend)?;
        if rows.is_empty() {
            return Ok(0);
        }
        let events = rows.iter().map(outbox_event::<D>).collect::<Result<Vec<_>, _>>()?;
        let deliveries = plan(&events);
        let now = Timestamp(OffsetDateTime::now_utc());
        for chunk in deliveries.chunks(100) {
            let mut q = QueryBuilder::<D>::new(
                "INSERT INTO keypal_webhook_deliveries \
                 (id, webhook_id, event_id, event_type, body, status, attempts, next_attempt_at, created_at) VALUES ",
            );
            for (i, d) in chunk.iter().enumerate() {
                q.push(if i == 0 { "(" } else { ", (" });
                q.push_arg(Uuid::now_v7()).push(", ");
                q.push_arg(d.webhook_id.clone()).push(", ");
                q.push_arg(d.event_id).push(", ");
                q.push_arg(d.event_type.clone()).push(", ");
                q.push_arg(d.body.clone()).push(", 'pending', 0, ");
                q.push_arg(now).push(", ");
                q.push_arg(now).push(")");
            }
            q.push(" ON CONFLICT DO NOTHING");
            q.build().execute(D::executor(&mut tx)).await.map_err(backend)?;
        }
        let mut q = QueryBuilder::<D>::new("DELETE FROM keypal_outbox WHERE id IN (");
        for (i, event) in events.iter().enumerate() {
            if i > 0 {
                q.push(", ");
            }
            q.push_arg(event.id);
        }
        q.push(")");
        q.build().execute(D::executor(&mut tx)).await.map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(events.len())
    }

    /// The events waiting in the outbox.
    pub async fn outbox_len(&self) -> Result<u64, StoreError> {
        let rows = self.fetch_all(sqlx::query("SELECT COUNT(*) FROM keypal_outbox")).await?;
        to_u64("count", rows.first().map(first::<D, i64>).transpose()?.unwrap_or(0))
    }

    /// Puts a `kind` event about `record` (the key as it is now) into the outbox unless
    /// this key's `threshold` of `kind` has fired before, on any instance: the mark and
    /// the event are written together. Nothing is written while no webhook exists.
    /// Returns whether the event was put in.
    ///
    /// ```
    /// use keypal::{KeyManager, NewKey};
    /// use keypal_sql::{SqliteStore, WEBHOOK_KIND};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let store = SqliteStore::connect("sqlite::memory:").await?;
    /// store.insert_objects(&[keypal_sql::NewObject {
    ///     kind: WEBHOOK_KIND, id: "w1", lookup: None, body: &serde_json::json!({}),
    /// }], None).await?;
    /// let keys = KeyManager::builder().store(store.clone()).build()?;
    /// let key = keys.create(NewKey::new()).await?.record;
    /// assert!(store.fire_once("key.expiring", "7d", &key, None).await?);
    /// assert!(!store.fire_once("key.expiring", "7d", &key, None).await?, "once");
    /// assert_eq!(store.outbox_len().await?, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn fire_once(
        &self,
        kind: &str,
        threshold: &str,
        record: &KeyRecord,
        details: Option<Value>,
    ) -> Result<bool, StoreError> {
        let now = OffsetDateTime::now_utc();
        let mut tx = self.write().await?;
        let mut q = QueryBuilder::<D>::new("INSERT INTO keypal_webhook_fired (key_id, kind, threshold, at) SELECT ");
        q.push_arg(record.id.0).push(", ").push_arg(kind.to_owned()).push(", ").push_arg(threshold.to_owned());
        q.push(", ").push_arg(Timestamp(now)).push(WHILE_A_WEBHOOK_EXISTS).push(" ON CONFLICT DO NOTHING");
        let done = q.build().execute(D::executor(&mut tx)).await.map_err(backend)?;
        if D::rows_affected(&done) != 1 {
            return Ok(false);
        }
        let data = json!({ "key": snapshot(record), "details": details });
        sqlx::query(
            "INSERT INTO keypal_outbox (id, type, at, key_id, namespace, data) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .arg(Uuid::now_v7())
        .arg(kind)
        .arg(Timestamp(now))
        .arg(Some(record.id.0))
        .arg(record.namespace.clone())
        .arg(data.to_string())
        .execute(D::executor(&mut tx))
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }

    /// Keys that are not revoked, expire in `(from, to]` and have not fired `kind` at
    /// `threshold` (see [`DialectStore::fire_once`]), by expiry then id, after `after`
    /// (the last key of the previous page): a range of the `expires_at` index.
    pub async fn keys_expiring(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
        unfired: (&str, &str),
        after: Option<(OffsetDateTime, KeyId)>,
        limit: u32,
    ) -> Result<Vec<Arc<KeyRecord>>, StoreError> {
        let (at, id) = after.unwrap_or((from, KeyId(Uuid::nil())));
        let (kind, threshold) = unfired;
        let query = sqlx::query(EXPIRY_SCAN).arg(Timestamp(from)).arg(Timestamp(to)).arg(Timestamp(at)).arg(id.0);
        let query = query.arg(kind.to_owned()).arg(threshold.to_owned()).arg(i64::from(limit.max(1)));
        let rows = self.fetch_all(query).await?;
        rows::records::<D>(&rows)
    }

    /// Makes a delivery due now (a test event, say); `Duplicate` when the webhook already
    /// has a delivery of this event.
    pub async fn insert_delivery(&self, new: &NewDelivery) -> Result<Delivery, StoreError> {
        let now = Timestamp(OffsetDateTime::now_utc());
        let mut tx = self.write().await?;
        let row = sqlx::query(concat!(
            "INSERT INTO keypal_webhook_deliveries \
             (id, webhook_id, event_id, event_type, body, status, attempts, next_attempt_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6) RETURNING ",
            delivery_columns!()
        ))
        .arg(Uuid::now_v7())
        .arg(new.webhook_id.clone())
        .arg(new.event_id)
        .arg(new.event_type.clone())
        .arg(new.body.clone())
        .arg(now)
        .fetch_one(D::executor(&mut tx))
        .await
        .map_err(codec::duplicate_or_backend)?;
        let delivery = delivery::<D>(&row)?;
        tx.commit().await.map_err(backend)?;
        Ok(delivery)
    }

    /// Claims up to `limit` pending deliveries due at `now` that no live lease holds (on
    /// PostgreSQL, rows another instance is claiming are skipped): each is held until
    /// `now + lease`, its `locked_until`, which [`DialectStore::finish_delivery`] is given back.
    pub async fn claim_deliveries(
        &self,
        now: OffsetDateTime,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        // A read first: with nothing due (the usual case) no write lock is taken.
        let due = sqlx::query(
            "SELECT id FROM keypal_webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= $1 \
             AND (locked_until IS NULL OR locked_until <= $1) LIMIT 1",
        )
        .arg(Timestamp(now));
        if self.fetch_optional(due).await?.is_none() {
            return Ok(Vec::new());
        }
        let until = lease_end(now, lease);
        let mut q = QueryBuilder::<D>::new("UPDATE keypal_webhook_deliveries SET locked_until = ");
        q.push_arg(Timestamp(until));
        q.push(
            " WHERE id IN (SELECT id FROM keypal_webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= ",
        );
        q.push_arg(Timestamp(now)).push(" AND (locked_until IS NULL OR locked_until <= ").push_arg(Timestamp(now));
        q.push(") ORDER BY next_attempt_at LIMIT ").push_arg(i64::from(limit.max(1))).push(D::SKIP_LOCKED);
        q.push(concat!(") RETURNING ", delivery_columns!()));
        let mut tx = self.write().await?;
        let rows = q.build().fetch_all(D::executor(&mut tx)).await.map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        let mut claimed = rows.iter().map(delivery::<D>).collect::<Result<Vec<_>, _>>()?;
        claimed.sort_by_key(|d| (d.next_attempt_at, d.id));
        Ok(claimed)
    }

    /// Records an attempt of delivery `id`, made under the lease that ends at
    /// `locked_until` (as claimed). Returns `false`, writing nothing, when that lease is no
    /// longer the delivery's (it ran out and another claim took it).
    pub async fn finish_delivery(
        &self,
        id: Uuid,
        locked_until: OffsetDateTime,
        attempt: &Attempt,
    ) -> Result<bool, StoreError> {
        let now = Timestamp(OffsetDateTime::now_utc());
        let (status, next, code, excerpt, failed) = match attempt {
            Attempt::Succeeded { status, excerpt } => ("succeeded", None, Some(*status), excerpt, false),
            Attempt::Failed { status, excerpt, retry_at: Some(at) } => ("pending", Some(*at), *status, excerpt, true),
            Attempt::Failed { status, excerpt, retry_at: None } => ("failed", None, *status, excerpt, true),
        };
        let mut q = QueryBuilder::<D>::new("UPDATE keypal_webhook_deliveries SET attempts = attempts + 1, status = ");
        q.push_arg(status).push(", next_attempt_at = ").push_arg(next.map(Timestamp));
        q.push(", locked_until = NULL, last_attempt_at = ").push_arg(now);
        q.push(", last_status = ").push_arg(code.map(i64::from));
        q.push(", last_response = ").push_arg(excerpt.clone());
        if failed {
            q.push(", first_failed_at = COALESCE(first_failed_at, ").push_arg(now).push(")");
        }
        q.push(" WHERE id = ").push_arg(id).push(" AND locked_until = ").push_arg(Timestamp(locked_until));
        let mut tx = self.write().await?;
        let done = q.build().execute(D::executor(&mut tx)).await.map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(D::rows_affected(&done) == 1)
    }

    /// A webhook's deliveries, newest first, a page of `limit` after `cursor`.
    pub async fn deliveries(
        &self,
        webhook_id: &str,
        cursor: Option<Uuid>,
        limit: u32,
    ) -> Result<Page<Delivery>, StoreError> {
        let limit = limit.clamp(1, 1000);
        let mut q = QueryBuilder::<D>::new(concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM keypal_webhook_deliveries WHERE webhook_id = "
        ));
        q.push_arg(webhook_id.to_owned());
        if let Some(cursor) = cursor {
            q.push(" AND id < ").push_arg(cursor);
        }
        q.push(" ORDER BY id DESC LIMIT ").push_arg(i64::from(limit) + 1);
        let rows = self.fetch_all(q.build()).await?;
        let mut items = rows.iter().map(delivery::<D>).collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|d| d.id)
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    /// Makes a webhook's delivery due now (whatever its state: a succeeded or failed one
    /// is sent again, with the same `webhook-id`). `None` when the webhook has no such delivery.
    pub async fn retry_delivery(&self, webhook_id: &str, id: Uuid) -> Result<Option<Delivery>, StoreError> {
        let now = Timestamp(OffsetDateTime::now_utc());
        let mut tx = self.write().await?;
        let row = sqlx::query(concat!(
            "UPDATE keypal_webhook_deliveries SET status = 'pending', next_attempt_at = $3, locked_until = NULL \
             WHERE webhook_id = $1 AND id = $2 RETURNING ",
            delivery_columns!()
        ))
        .arg(webhook_id)
        .arg(id)
        .arg(now)
        .fetch_optional(D::executor(&mut tx))
        .await
        .map_err(backend)?;
        let found = row.map(|r| delivery::<D>(&r)).transpose()?;
        tx.commit().await.map_err(backend)?;
        Ok(found)
    }

    /// Since when a webhook has been failing: the first failure of its deliveries that
    /// no success followed. `None` when it is not failing.
    pub async fn webhook_failing_since(&self, webhook_id: &str) -> Result<Option<OffsetDateTime>, StoreError> {
        let query = sqlx::query(
            "SELECT MIN(d.first_failed_at) FROM keypal_webhook_deliveries d WHERE d.webhook_id = $1 \
             AND d.first_failed_at IS NOT NULL AND d.status <> 'succeeded' AND NOT EXISTS (\
             SELECT 1 FROM keypal_webhook_deliveries s WHERE s.webhook_id = $1 AND s.status = 'succeeded' \
             AND s.last_attempt_at >= d.first_failed_at)",
        )
        .arg(webhook_id);
        let rows = self.fetch_all(query).await?;
        Ok(rows.first().map(first::<D, Option<Timestamp>>).transpose()?.flatten().map(|t| t.0))
    }

    /// Deletes a webhook's deliveries (after the webhook itself); how many.
    pub async fn delete_deliveries(&self, webhook_id: &str) -> Result<u64, StoreError> {
        let mut tx = self.write().await?;
        let done = sqlx::query("DELETE FROM keypal_webhook_deliveries WHERE webhook_id = $1")
            .arg(webhook_id)
            .execute(D::executor(&mut tx))
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(D::rows_affected(&done))
    }

    /// Deletes finished deliveries (succeeded or failed) made before `before`; how many.
    pub async fn prune_deliveries(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        let mut tx = self.write().await?;
        let done = sqlx::query("DELETE FROM keypal_webhook_deliveries WHERE status <> 'pending' AND created_at < $1")
            .arg(Timestamp(before))
            .execute(D::executor(&mut tx))
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(D::rows_affected(&done))
    }
}

/// Runs the same expression on whichever store this is.
macro_rules! on_store {
    ($self:expr, $store:ident => $body:expr) => {
        match $self {
            #[cfg(feature = "sqlite")]
            crate::SqlStore::Sqlite($store) => $body,
            #[cfg(feature = "postgres")]
            crate::SqlStore::Postgres($store) => $body,
        }
    };
}

/// The webhook storage of whichever database this is (see [`DialectStore`]'s methods of
/// the same names).
impl crate::SqlStore {
    /// This store, writing the webhook outbox with each change (see
    /// [`DialectStore::with_webhook_outbox`]).
    pub fn with_webhook_outbox(self) -> Self {
        match self {
            #[cfg(feature = "sqlite")]
            crate::SqlStore::Sqlite(s) => crate::SqlStore::Sqlite(s.with_webhook_outbox()),
            #[cfg(feature = "postgres")]
            crate::SqlStore::Postgres(s) => crate::SqlStore::Postgres(s.with_webhook_outbox()),
        }
    }

    /// Whether changes write the webhook outbox.
    pub fn writes_webhook_outbox(&self) -> bool {
        on_store!(self, s => s.writes_webhook_outbox())
    }

    /// See [`DialectStore::dispatch_outbox`].
    pub async fn dispatch_outbox(
        &self,
        limit: u32,
        plan: impl FnOnce(&[OutboxEvent]) -> Vec<NewDelivery> + Send,
    ) -> Result<usize, StoreError> {
        on_store!(self, s => s.dispatch_outbox(limit, plan).await)
    }

    /// See [`DialectStore::outbox_len`].
    pub async fn outbox_len(&self) -> Result<u64, StoreError> {
        on_store!(self, s => s.outbox_len().await)
    }

    /// See [`DialectStore::fire_once`].
    pub async fn fire_once(
        &self,
        kind: &str,
        threshold: &str,
        record: &KeyRecord,
        details: Option<Value>,
    ) -> Result<bool, StoreError> {
        on_store!(self, s => s.fire_once(kind, threshold, record, details).await)
    }

    /// See [`DialectStore::keys_expiring`].
    pub async fn keys_expiring(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
        unfired: (&str, &str),
        after: Option<(OffsetDateTime, KeyId)>,
        limit: u32,
    ) -> Result<Vec<Arc<KeyRecord>>, StoreError> {
        on_store!(self, s => s.keys_expiring(from, to, unfired, after, limit).await)
    }

    /// See [`DialectStore::insert_delivery`].
    pub async fn insert_delivery(&self, new: &NewDelivery) -> Result<Delivery, StoreError> {
        on_store!(self, s => s.insert_delivery(new).await)
    }

    /// See [`DialectStore::claim_deliveries`].
    pub async fn claim_deliveries(
        &self,
        now: OffsetDateTime,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        on_store!(self, s => s.claim_deliveries(now, lease, limit).await)
    }

    /// See [`DialectStore::finish_delivery`].
    pub async fn finish_delivery(
        &self,
        id: Uuid,
        locked_until: OffsetDateTime,
        attempt: &Attempt,
    ) -> Result<bool, StoreError> {
        on_store!(self, s => s.finish_delivery(id, locked_until, attempt).await)
    }

    /// See [`DialectStore::deliveries`].
    pub async fn deliveries(
        &self,
        webhook_id: &str,
        cursor: Option<Uuid>,
        limit: u32,
    ) -> Result<Page<Delivery>, StoreError> {
        on_store!(self, s => s.deliveries(webhook_id, cursor, limit).await)
    }

    /// See [`DialectStore::retry_delivery`].
    pub async fn retry_delivery(&self, webhook_id: &str, id: Uuid) -> Result<Option<Delivery>, StoreError> {
        on_store!(self, s => s.retry_delivery(webhook_id, id).await)
    }

    /// See [`DialectStore::webhook_failing_since`].
    pub async fn webhook_failing_since(&self, webhook_id: &str) -> Result<Option<OffsetDateTime>, StoreError> {
        on_store!(self, s => s.webhook_failing_since(webhook_id).await)
    }

    /// See [`DialectStore::delete_deliveries`].
    pub async fn delete_deliveries(&self, webhook_id: &str) -> Result<u64, StoreError> {
        on_store!(self, s => s.delete_deliveries(webhook_id).await)
    }

    /// See [`DialectStore::prune_deliveries`].
    pub async fn prune_deliveries(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        on_store!(self, s => s.prune_deliveries(before).await)
    }
}
