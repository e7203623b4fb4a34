//! keypal's rows: the columns of keys, audit events and documents, how each is read
//! back into keypal's types, and the statements that insert them. Written once for
//! both dialects.

use keypal::{AuditContext, Event, KeyId, KeyRecord, StoreError};
use std::collections::HashSet;

use sqlx::{Database, QueryBuilder, Transaction};
use uuid::Uuid;

use crate::codec::{self, backend, duplicate_or_backend, to_i64, to_u64};
use crate::dialect::{Dialect, JsonValue, PushArg, Read, Scopes, Timestamp, Unreadable};
use crate::objects::Object;

/// The columns of a key row but those of refills (migration 4).
macro_rules! base_key_columns {
    () => {
        "id, namespace, lookup_kind, lookup_value, hash, start, last4, name, owner_id, tier, scopes, metadata, \
         created_at, expires_at, last_used_at, revoked_at, enabled, rotated_from, rotated_to, remaining, \
         rate_limit, encrypted_key, version"
    };
}

/// The columns of a key row, in the order [`record`] reads them.
macro_rules! key_columns {
    () => {
        concat!(base_key_columns!(), ", refill, refill_amount, refilled_at")
    };
}

/// `SELECT <key columns> FROM keypal_keys <rest>`.
macro_rules! select_keys {
    ($rest:literal) => {
        concat!("SELECT ", key_columns!(), " FROM keypal_keys ", $rest)
    };
}

/// `SELECT <object columns> FROM keypal_objects <rest>`, as [`object`] reads them.
macro_rules! select_objects {
    ($rest:literal) => {
        concat!("SELECT kind, id, lookup, body, created_at, updated_at FROM keypal_objects ", $rest)
    };
}

/// The columns of an audit row, as [`event`] reads them.
macro_rules! audit_columns {
    () => {
        "id, at, action, key_id, namespace, owner_id, code, actor, ip, user_agent, details"
    };
}

/// The columns of one row, read by name into keypal's types.
pub(crate) struct Columns<'r, D: Database>(pub &'r D::Row);

impl<D: Database> Columns<'_, D> {
    /// The value of `column`; a value that is not one of `T` is a [`CorruptRow`](crate::CorruptRow).
    pub(crate) fn get<T>(&self, column: &'static str) -> Result<T, StoreError>
    where
        D: Read<T>,
    {
        D::read(self.0, column).map_err(|error| match error {
            sqlx::Error::ColumnDecode { source, .. } => codec::corrupt(column, source),
            other => backend(other),
        })
    }
}

/// Reads a document row (columns as in [`select_objects!`]).
pub(crate) fn object<D: Dialect>(row: &D::Row) -> Result<Object, StoreError> {
    let c = Columns::<D>(row);
    let body: String = c.get("body")?;
    Ok(Object {
        kind: c.get("kind")?,
        id: c.get("id")?,
        lookup: c.get("lookup")?,
        body: serde_json::from_str(&body).map_err(|e| codec::corrupt("body", e))?,
        created_at: c.get::<Timestamp>("created_at")?.0,
        updated_at: c.get::<Timestamp>("updated_at")?.0,
    })
}

/// Reads a key row (columns as in [`key_columns!`]).
pub(crate) fn record<D: Dialect>(row: &D::Row) -> Result<KeyRecord, StoreError> {
    let c = Columns::<D>(row);
    let kind: String = c.get("lookup_kind")?;
    let value: String = c.get("lookup_value")?;
    let hash: String = c.get("hash")?;
    let created_at = c.get::<Timestamp>("created_at")?.0;
    let mut r = KeyRecord::new(KeyId(c.get("id")?), codec::lookup(&kind, &value)?, hash, created_at);
    r.namespace = c.get("namespace")?;
    r.start = c.get("start")?;
    r.last4 = c.get("last4")?;
    r.name = c.get("name")?;
    r.owner_id = c.get("owner_id")?;
    r.tier = c.get("tier")?;
    r.scopes = c.get::<Scopes>("scopes")?.0;
    r.metadata = c.get::<Option<JsonValue>>("metadata")?.map(|j| j.0);
    r.expires_at = c.get::<Option<Timestamp>>("expires_at")?.map(|t| t.0);
    r.last_used_at = c.get::<Option<Timestamp>>("last_used_at")?.map(|t| t.0);
    r.revoked_at = c.get::<Option<Timestamp>>("revoked_at")?.map(|t| t.0);
    r.enabled = c.get("enabled")?;
    r.rotated_from = c.get::<Option<Uuid>>("rotated_from")?.map(KeyId);
    r.rotated_to = c.get::<Option<Uuid>>("rotated_to")?.map(KeyId);
    r.remaining = c.get::<Option<i64>>("remaining")?.map(|n| to_u64("remaining", n)).transpose()?;
    r.rate_limit = codec::rate_limit(c.get("rate_limit")?)?;
    r.encrypted_key = c.get("encrypted_key")?;
    r.version = to_u64("version", c.get("version")?)?;
    r.refill = codec::refill(c.get("refill")?, c.get("refill_amount")?)?;
    r.refilled_at = c.get::<Option<Timestamp>>("refilled_at")?.map(|t| t.0);
    Ok(r)
}

/// Reads key rows.
pub(crate) fn records<D: Dialect>(rows: &[D::Row]) -> Result<Vec<std::sync::Arc<KeyRecord>>, StoreError> {
    rows.iter().map(|row| record::<D>(row).map(std::sync::Arc::new)).collect()
}

/// Reads an audit row (columns as in [`audit_columns!`]).
pub(crate) fn event<D: Dialect>(row: &D::Row) -> Result<Event, StoreError> {
    let c = Columns::<D>(row);
    let at = c.get::<Timestamp>("at")?.0;
    let action = codec::action(&c.get::<String>("action")?)?;
    let mut context = AuditContext::new(c.get::<String>("actor")?);
    context.ip = c.get("ip")?;
    context.user_agent = c.get("user_agent")?;
    let mut e = Event::new(action, at, context);
    e.id = c.get("id")?;
    e.key_id = c.get::<Option<Uuid>>("key_id")?.map(KeyId);
    e.namespace = c.get("namespace")?;
    e.owner_id = c.get("owner_id")?;
    e.code = codec::code(c.get("code")?)?;
    e.details = c.get::<Option<JsonValue>>("details")?.map(|j| j.0);
    Ok(e)
}

/// Inserts key rows in one statement, skipping each whose id or unique lookup is
/// taken (by a stored row or an earlier one of `records`): the ids of the rows
/// inserted. The transaction stays usable. When a row was skipped (rarely: imports of
/// keys already there), a second statement reads back which rows are these records.
pub(crate) async fn insert_records<D: Dialect>(
    tx: &mut Transaction<'static, D>,
    records: &[&KeyRecord],
) -> Result<HashSet<Uuid>, StoreError> {
    if records.is_empty() {
        return Ok(HashSet::new());
    }
    // Rows without a refill leave its columns to their default (NULL), so keys are
    // written the same way into a database of any version.
    let refills = records.iter().any(|r| r.refill.is_some() || r.refilled_at.is_some());
    let mut q = QueryBuilder::<D>::new(concat!("INSERT INTO keypal_keys (", base_key_columns!()));
    q.push(if refills { ", refill, refill_amount, refilled_at) VALUES " } else { ") VALUES " });
    for (i, r) in records.iter().enumerate() {
        q.push(if i == 0 { "(" } else { ", (" });
        q.push_arg(r.id.0).push(", ");
        q.push_arg(r.namespace.clone()).push(", ");
        q.push_arg(r.lookup.kind()).push(", ");
        q.push_arg(r.lookup.value()).push(", ");
        q.push_arg(r.hash.clone()).push(", ");
        q.push_arg(r.start.clone()).push(", ");
        q.push_arg(r.last4.clone()).push(", ");
        q.push_arg(r.name.clone()).push(", ");
        q.push_arg(r.owner_id.clone()).push(", ");
        q.push_arg(r.tier.clone()).push(", ");
        q.push_arg(Scopes(r.scopes.clone())).push(", ");
        q.push_arg(r.metadata.clone().map(JsonValue)).push(", ");
        q.push_arg(Timestamp(r.created_at)).push(", ");
        q.push_arg(r.expires_at.map(Timestamp)).push(", ");
        q.push_arg(r.last_used_at.map(Timestamp)).push(", ");
        q.push_arg(r.revoked_at.map(Timestamp)).push(", ");
        q.push_arg(r.enabled).push(", ");
        q.push_arg(r.rotated_from.map(|id| id.0)).push(", ");
        q.push_arg(r.rotated_to.map(|id| id.0)).push(", ");
        q.push_arg(r.remaining.map(|n| to_i64("remaining", n)).transpose()?).push(", ");
        q.push_arg(r.rate_limit.map(|l| l.to_string())).push(", ");
        q.push_arg(r.encrypted_key.clone()).push(", ");
        q.push_arg(to_i64("version", r.version)?);
        if refills {
            q.push(", ").push_arg(r.refill.map(|f| f.interval.to_string())).push(", ");
            q.push_arg(r.refill.map(|f| to_i64("refill_amount", f.amount)).transpose()?).push(", ");
            q.push_arg(r.refilled_at.map(Timestamp));
        }
        q.push(")");
    }
    q.push(" ON CONFLICT DO NOTHING");
    let result = q.build().execute(D::executor(&mut *tx)).await.map_err(duplicate_or_backend)?;
    let all: HashSet<Uuid> = records.iter().map(|r| r.id.0).collect();
    if usize::try_from(D::rows_affected(&result)).is_ok_and(|n| n == records.len()) {
        return Ok(all);
    }
    // A row with one of these ids is this record's only when it is this record: an id
    // taken before holds another.
    let mut q = QueryBuilder::<D>::new(select_keys!("WHERE id IN ("));
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            q.push(", ");
        }
        q.push_arg(r.id.0);
    }
    q.push(")");
    let rows = q.build().fetch_all(D::executor(tx)).await.map_err(backend)?;
    let mut inserted = HashSet::new();
    for row in &rows {
        let stored = record::<D>(row)?;
        if records.iter().any(|r| **r == stored) {
            inserted.insert(stored.id.0);
        }
    }
    Ok(inserted)
}

/// An audit event to append, about the key, namespace and owner given with it.
pub(crate) struct EventRow<'a> {
    pub(crate) event: &'a Event,
    /// The key as the change left it (its public fields go into the webhook outbox).
    pub(crate) record: Option<&'a KeyRecord>,
    pub(crate) key_id: Option<KeyId>,
    pub(crate) namespace: Option<String>,
    pub(crate) owner_id: Option<String>,
}

impl<'a> EventRow<'a> {
    /// `event` about what it names itself (an application, a setting): no key record.
    pub(crate) fn named(event: &'a Event) -> Self {
        EventRow {
            event,
            record: None,
            key_id: event.key_id,
            namespace: event.namespace.clone(),
            owner_id: event.owner_id.clone(),
        }
    }

    /// `event` about `record`.
    pub(crate) fn about(event: &'a Event, record: &'a KeyRecord) -> Self {
        EventRow {
            event,
            record: Some(record),
            key_id: Some(record.id),
            namespace: record.namespace.clone(),
            owner_id: record.owner_id.clone(),
        }
    }
}

/// Appends audit events in one statement and, for those that cause a webhook event,
/// their rows of the webhook outbox in another (written only while a webhook exists:
/// see [`crate::webhooks`]).
pub(crate) async fn insert_events<D: Dialect>(
    tx: &mut Transaction<'static, D>,
    events: &[EventRow<'_>],
    outbox: bool,
) -> Result<(), StoreError> {
    insert_audit(tx, events).await?;
    if outbox {
        crate::webhooks::insert_outbox(tx, events).await?;
    }
    Ok(())
}

/// Appends audit events in one statement (no outbox row: for events restored from an export).
pub(crate) async fn insert_audit<D: Dialect>(
    tx: &mut Transaction<'static, D>,
    events: &[EventRow<'_>],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut q = QueryBuilder::<D>::new(concat!("INSERT INTO keypal_audit (", audit_columns!(), ") VALUES "));
    for (i, row) in events.iter().enumerate() {
        let event = row.event;
        q.push(if i == 0 { "(" } else { ", (" });
        q.push_arg(event.id).push(", ");
        q.push_arg(Timestamp(event.at)).push(", ");
        q.push_arg(event.action.as_str()).push(", ");
        q.push_arg(row.key_id.map(|id| id.0)).push(", ");
        q.push_arg(row.namespace.clone()).push(", ");
        q.push_arg(row.owner_id.clone()).push(", ");
        q.push_arg(event.code.map(|c| c.as_str().to_owned())).push(", ");
        q.push_arg(event.context.actor.clone()).push(", ");
        q.push_arg(event.context.ip.clone()).push(", ");
        q.push_arg(event.context.user_agent.clone()).push(", ");
        q.push_arg(event.details.clone().map(JsonValue)).push(")");
    }
    q.build().execute(D::executor(tx)).await.map_err(backend)?;
    Ok(())
}

/// Appends `event` about `record` (key, namespace and owner filled in from it), and its
/// outbox row when `outbox` is on.
pub(crate) async fn append<D: Dialect>(
    tx: &mut Transaction<'static, D>,
    event: &Event,
    record: &KeyRecord,
    outbox: bool,
) -> Result<(), StoreError> {
    insert_events(tx, &[EventRow::about(event, record)], outbox).await
}

/// Appends `event` about what it names itself (an application, a setting): no key.
pub(crate) async fn append_event<D: Dialect>(
    tx: &mut Transaction<'static, D>,
    event: &Event,
    outbox: bool,
) -> Result<(), StoreError> {
    insert_events(tx, &[EventRow::named(event)], outbox).await
}

/// A value that is not what its column should hold.
pub(crate) fn unreadable(reason: impl ToString) -> sqlx::error::BoxDynError {
    Box::new(Unreadable(reason.to_string()))
}
