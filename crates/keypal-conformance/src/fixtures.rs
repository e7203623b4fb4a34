//! Builders for records and events, and small helpers the tests share.
//!
//! Every timestamp is truncated to whole microseconds (the precision of the SQL
//! stores), so a record written to any store reads back equal.

use std::sync::Arc;
use std::time::Duration;

use keypal::clock::truncate_to_micros;
use keypal::{
    Action, AuditContext, AuditQuery, Event, KeyId, KeyRecord, ListQuery, Lookup, RateLimit, Refill, RefillInterval,
    Store,
};
use serde_json::json;
use time::OffsetDateTime;

/// The current time, truncated to whole microseconds.
pub fn now() -> OffsetDateTime {
    truncate_to_micros(OffsetDateTime::now_utc())
}

/// `at` moved by `seconds` (negative: back), truncated to whole microseconds.
pub fn shift(at: OffsetDateTime, seconds: i64) -> OffsetDateTime {
    truncate_to_micros(at + time::Duration::seconds(seconds))
}

/// A digest lookup derived from a key id: unique per id, like a real SHA-256 of a key.
pub fn digest_for(id: KeyId) -> Lookup {
    let bytes = id.0.as_bytes();
    let mut digest = [0u8; 32];
    digest[..16].copy_from_slice(bytes);
    for (i, b) in bytes.iter().enumerate() {
        digest[16 + i] = b ^ 0xa5;
    }
    Lookup::Digest(digest)
}

/// An id lookup derived from a key id (unique per id).
pub fn id_lookup_for(id: KeyId) -> Lookup {
    Lookup::Id(format!("kid{}", id.0.simple()))
}

/// A minimal record created now: a fresh id, a unique digest lookup derived from it,
/// a hash, no owner, no namespace, enabled, version 1.
pub fn record() -> KeyRecord {
    record_at(now())
}

/// A minimal record (see [`record`]) created at `created_at`.
pub fn record_at(created_at: OffsetDateTime) -> KeyRecord {
    let id = KeyId::new();
    let mut record = KeyRecord::new(id, digest_for(id), format!("$sha256${}", id.0.simple()), created_at);
    record.start = "sk_test_conf".to_owned();
    record.last4 = "abcd".to_owned();
    record
}

/// A minimal record (see [`record`]) owned by `owner`, without a namespace.
pub fn record_for(owner: &str) -> KeyRecord {
    record_in(None, owner)
}

/// A minimal record (see [`record`]) owned by `owner` in `namespace`.
pub fn record_in(namespace: Option<&str>, owner: &str) -> KeyRecord {
    let mut record = record();
    record.namespace = namespace.map(str::to_owned);
    record.owner_id = Some(owner.to_owned());
    record
}

/// A minimal record (see [`record`]) found by `lookup`.
pub fn record_with_lookup(lookup: Lookup) -> KeyRecord {
    let mut record = record();
    record.lookup = lookup;
    record
}

/// A minimal record (see [`record`]) found by the hint `hint`.
pub fn record_with_hint(hint: &str) -> KeyRecord {
    record_with_lookup(Lookup::Hint(hint.to_owned()))
}

/// A record with every field a store persists set to a non-default value: id lookup,
/// namespace, display parts, name with quotes and a newline, owner, tier, scopes,
/// JSON object metadata with nesting, expiry, last use, credits, a refill, rate limit and an
/// encrypted copy. `revoked_at`, `rotated_from` and `rotated_to` stay `None` (they
/// are set by store operations and tested there).
pub fn full_record() -> KeyRecord {
    let created_at = now();
    let mut record = record_at(created_at);
    record.lookup = id_lookup_for(record.id);
    record.namespace = Some("app_conformance".to_owned());
    record.start = "sk_live_a1b2".to_owned();
    record.last4 = "wxyz".to_owned();
    record.name = Some("CI \"deploys\"\nline two\t\\ end".to_owned());
    record.owner_id = Some("user_full".to_owned());
    record.tier = Some("pro".to_owned());
    record.scopes = vec!["read".to_owned(), "write:all".to_owned(), "admin/*".to_owned()];
    record.metadata = Some(json!({
        "team": "infra",
        "quote": "say \"hi\"\nand go",
        "nested": {"list": [1, 2.5, "three", null, true, {"deep": []}], "empty": {}},
        "unicode": "ü 用户 🚀",
        "big": 9_007_199_254_740_993_u64,
    }));
    record.expires_at = Some(shift(created_at, 30 * 24 * 3600));
    record.last_used_at = Some(shift(created_at, 5));
    record.remaining = Some(1_000);
    record.refill = Some(Refill::new(RefillInterval::Monthly { day: 31 }, 5_000));
    record.refilled_at = Some(shift(created_at, -60));
    record.rate_limit = Some(RateLimit::new(10, Duration::from_secs(60)).expect("10/minute is a valid rate limit"));
    record.encrypted_key = Some("v1:kid_1:bm9uY2U=:Y2lwaGVydGV4dA==".to_owned());
    record
}

/// A replacement for `old` as a manager builds it: new id, lookup and hash, the same
/// name, owner, namespace, scopes, metadata, tier, expiry, credits and rate limit,
/// `rotated_from` naming `old`, created at `at`.
pub fn replacement_for(old: &KeyRecord, at: OffsetDateTime) -> KeyRecord {
    let id = KeyId::new();
    let mut new = KeyRecord::new(id, id_lookup_for(id), format!("$sha256$rotated{}", id.0.simple()), at);
    new.namespace.clone_from(&old.namespace);
    new.start = "sk_live_n3w0".to_owned();
    new.last4 = "n3w4".to_owned();
    new.name.clone_from(&old.name);
    new.owner_id.clone_from(&old.owner_id);
    new.tier.clone_from(&old.tier);
    new.scopes.clone_from(&old.scopes);
    new.metadata.clone_from(&old.metadata);
    new.expires_at = old.expires_at;
    new.remaining = old.remaining;
    new.refill = old.refill;
    new.refilled_at = old.refilled_at;
    new.rate_limit = old.rate_limit;
    new.rotated_from = Some(old.id);
    new
}

/// The audit context the suite's events carry.
pub fn context() -> AuditContext {
    AuditContext::new("conformance").ip("203.0.113.7").user_agent("keypal-conformance/1 \"quoted\"")
}

/// An event of `action` now, without key, owner or namespace (the store fills those in
/// from the record, as it does for a manager's events).
pub fn event(action: Action) -> Event {
    event_at(action, now())
}

/// An event of `action` at `at` (see [`event`]).
pub fn event_at(action: Action, at: OffsetDateTime) -> Event {
    Event::new(action, truncate_to_micros(at), context())
}

/// Inserts `record` without an owner limit, panicking with `what` on failure.
pub async fn insert<S: Store>(store: &S, record: KeyRecord) -> Arc<KeyRecord> {
    let id = record.id;
    match store.insert(record, None, event(Action::Created)).await {
        Ok(stored) => stored,
        Err(e) => panic!("inserting record {id} failed: {e:?}"),
    }
}

/// The record with `id`, panicking when it is missing or the read fails.
pub async fn fetch<S: Store>(store: &S, id: KeyId) -> Arc<KeyRecord> {
    match store.get(id).await {
        Ok(Some(record)) => record,
        Ok(None) => panic!("record {id} should exist but get returned None"),
        Err(e) => panic!("get({id}) failed: {e:?}"),
    }
}

/// Every record matching `query`, following cursors page by page (the query's own
/// cursor and limit are replaced).
pub async fn list_all<S: Store>(store: &S, query: ListQuery) -> Vec<Arc<KeyRecord>> {
    let mut query = query.limit(1000);
    query.cursor = None;
    let mut all = Vec::new();
    loop {
        let page = store.list(&query).await.expect("list failed");
        all.extend(page.items);
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => return all,
        }
    }
}

/// Every audit event matching `query`, newest first, following cursors (the query's
/// own cursor and limit are replaced).
pub async fn audit_all<S: Store>(store: &S, query: AuditQuery) -> Vec<Event> {
    let mut query = query.limit(1000);
    query.cursor = None;
    let mut all = Vec::new();
    loop {
        let page = store.audit(&query).await.expect("audit failed");
        all.extend(page.items);
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => return all,
        }
    }
}

/// How many audit events the store holds.
pub async fn audit_len<S: Store>(store: &S) -> usize {
    audit_all(store, AuditQuery::new()).await.len()
}

/// The ids of `records`, in order.
pub fn ids(records: &[Arc<KeyRecord>]) -> Vec<KeyId> {
    records.iter().map(|r| r.id).collect()
}

/// The ids of `records`, sorted (for comparing sets of records).
pub fn sorted_ids(records: &[Arc<KeyRecord>]) -> Vec<KeyId> {
    let mut ids = ids(records);
    ids.sort();
    ids
}
