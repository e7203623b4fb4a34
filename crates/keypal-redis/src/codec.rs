//! Records and events as Redis hash fields, timestamps as microseconds, and the
//! shapes of script replies.
//!
//! Every field is a string: text as given, JSON for scopes, metadata and details,
//! integer microseconds since the Unix epoch for timestamps, canonical decimal for
//! counters. An absent optional field is an absent hash field (so `Some("")` and
//! `None` stay apart).

use std::collections::HashMap;

use keypal::{Action, AuditContext, Code, Event, KeyId, KeyRecord, Lookup, Refill, StoreError};
use redis::Value;
use serde_json::Value as Json;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{CorruptData, OutOfRange};

/// The largest `version` stored (Redis increments it as a signed 64-bit integer).
const MAX_VERSION: u64 = 999_999_999_999_999_999;

pub(crate) fn corrupt(what: &'static str, reason: impl ToString) -> StoreError {
    StoreError::backend(CorruptData { what, reason: reason.to_string() })
}

/// Microseconds since the Unix epoch, rounded down (times are whole microseconds in keypal).
pub(crate) fn micros(at: OffsetDateTime) -> i64 {
    let m = at.unix_timestamp_nanos().div_euclid(1_000);
    i64::try_from(m).unwrap_or(if m < 0 { i64::MIN } else { i64::MAX })
}

/// Microseconds since the Unix epoch, rounded up: for a whole-microsecond `t`,
/// `t >= at` exactly when `micros(t) >= micros_ceil(at)`, and likewise for `<`.
pub(crate) fn micros_ceil(at: OffsetDateTime) -> i64 {
    let nanos = at.unix_timestamp_nanos();
    let m = nanos.div_euclid(1_000) + i128::from(nanos.rem_euclid(1_000) != 0);
    i64::try_from(m).unwrap_or(if m < 0 { i64::MIN } else { i64::MAX })
}

fn time(what: &'static str, text: &str) -> Result<OffsetDateTime, StoreError> {
    let m: i64 = text.parse().map_err(|e| corrupt(what, format!("{text:?} is not microseconds: {e}")))?;
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(m) * 1_000).map_err(|e| corrupt(what, e))
}

/// The fields of a record as stored.
pub(crate) fn record_fields(r: &KeyRecord) -> Result<Vec<(&'static str, String)>, StoreError> {
    if r.version > MAX_VERSION {
        return Err(StoreError::backend(OutOfRange { what: "version", value: r.version }));
    }
    let mut f = vec![
        ("id", r.id.to_string()),
        ("lookup_kind", r.lookup.kind().to_owned()),
        ("lookup_value", r.lookup.value()),
        ("hash", r.hash.clone()),
        ("start", r.start.clone()),
        ("last4", r.last4.clone()),
        ("scopes", serde_json::to_string(&r.scopes).map_err(StoreError::backend)?),
        ("created_at", micros(r.created_at).to_string()),
        ("enabled", bool_text(r.enabled).to_owned()),
        ("version", r.version.to_string()),
    ];
    let mut opt = |name: &'static str, value: Option<String>| {
        if let Some(v) = value {
            f.push((name, v));
        }
    };
    opt("namespace", r.namespace.clone());
    opt("name", r.name.clone());
    opt("owner_id", r.owner_id.clone());
    opt("tier", r.tier.clone());
    opt("metadata", r.metadata.as_ref().map(Json::to_string));
    opt("expires_at", r.expires_at.map(|t| micros(t).to_string()));
    opt("last_used_at", r.last_used_at.map(|t| micros(t).to_string()));
    opt("revoked_at", r.revoked_at.map(|t| micros(t).to_string()));
    opt("rotated_from", r.rotated_from.map(|id| id.to_string()));
    opt("rotated_to", r.rotated_to.map(|id| id.to_string()));
    opt("remaining", r.remaining.map(|n| n.to_string()));
    opt("rate_limit", r.rate_limit.map(|l| l.to_string()));
    opt("encrypted_key", r.encrypted_key.clone());
    opt("refill", r.refill.map(|f| f.interval.to_string()));
    opt("refill_amount", r.refill.map(|f| f.amount.to_string()));
    opt("refilled_at", r.refilled_at.map(|t| micros(t).to_string()));
    Ok(f)
}

pub(crate) fn bool_text(b: bool) -> &'static str {
    if b { "1" } else { "0" }
}

/// A record read back from its hash fields.
pub(crate) fn decode_record(mut m: HashMap<String, String>) -> Result<KeyRecord, StoreError> {
    let mut need = |name: &'static str| m.remove(name).ok_or_else(|| corrupt(name, "missing"));
    let id: KeyId = need("id")?.parse().map_err(|e| corrupt("id", e))?;
    let kind = need("lookup_kind")?;
    let value = need("lookup_value")?;
    let lookup = Lookup::from_parts(&kind, &value)
        .ok_or_else(|| corrupt("lookup_value", format!("not a valid {kind:?} lookup")))?;
    let hash = need("hash")?;
    let created_at = time("created_at", &need("created_at")?)?;
    let start = need("start")?;
    let last4 = need("last4")?;
    let scopes = need("scopes")?;
    let enabled = need("enabled")?;
    let version = need("version")?;

    let mut r = KeyRecord::new(id, lookup, hash, created_at);
    r.start = start;
    r.last4 = last4;
    r.scopes = serde_json::from_str(&scopes).map_err(|e| corrupt("scopes", e))?;
    r.enabled = match enabled.as_str() {
        "1" => true,
        "0" => false,
        other => return Err(corrupt("enabled", format!("{other:?} is not 1 or 0"))),
    };
    r.version = version.parse().map_err(|e| corrupt("version", format!("{version:?}: {e}")))?;
    r.namespace = m.remove("namespace");
    r.name = m.remove("name");
    r.owner_id = m.remove("owner_id");
    r.tier = m.remove("tier");
    r.metadata = m
        .remove("metadata")
        .map(|t| serde_json::from_str::<Json>(&t))
        .transpose()
        .map_err(|e| corrupt("metadata", e))?;
    r.expires_at = m.remove("expires_at").map(|t| time("expires_at", &t)).transpose()?;
    r.last_used_at = m.remove("last_used_at").map(|t| time("last_used_at", &t)).transpose()?;
    r.revoked_at = m.remove("revoked_at").map(|t| time("revoked_at", &t)).transpose()?;
    r.rotated_from = m.remove("rotated_from").map(|t| t.parse().map_err(|e| corrupt("rotated_from", e))).transpose()?;
    r.rotated_to = m.remove("rotated_to").map(|t| t.parse().map_err(|e| corrupt("rotated_to", e))).transpose()?;
    r.remaining = m
        .remove("remaining")
        .map(|t| t.parse().map_err(|e| corrupt("remaining", format!("{t:?}: {e}"))))
        .transpose()?;
    r.rate_limit = m.remove("rate_limit").map(|t| t.parse().map_err(|e| corrupt("rate_limit", e))).transpose()?;
    r.encrypted_key = m.remove("encrypted_key");
    r.refill = match (m.remove("refill"), m.remove("refill_amount")) {
        (None, None) => None,
        (Some(interval), Some(amount)) => Some(Refill::new(
            interval.parse().map_err(|e| corrupt("refill", e))?,
            amount.parse().map_err(|e| corrupt("refill_amount", format!("{amount:?}: {e}")))?,
        )),
        _ => return Err(corrupt("refill", "refill and refill_amount are set together")),
    };
    r.refilled_at = m.remove("refilled_at").map(|t| time("refilled_at", &t)).transpose()?;
    Ok(r)
}

/// The fields of an event as passed to a script: everything but `key_id`, `namespace`
/// and `owner_id`, which the script fills in from the record it changed.
pub(crate) fn event_fields(e: &Event) -> Vec<(&'static str, String)> {
    let mut f = vec![
        ("id", e.id.to_string()),
        ("at", micros(e.at).to_string()),
        ("action", e.action.as_str().to_owned()),
        ("actor", e.context.actor.clone()),
    ];
    if let Some(code) = e.code {
        f.push(("code", code.as_str().to_owned()));
    }
    if let Some(ip) = &e.context.ip {
        f.push(("ip", ip.clone()));
    }
    if let Some(agent) = &e.context.user_agent {
        f.push(("user_agent", agent.clone()));
    }
    if let Some(details) = &e.details {
        f.push(("details", details.to_string()));
    }
    f
}

/// An event read back from its hash fields.
pub(crate) fn decode_event(mut m: HashMap<String, String>) -> Result<Event, StoreError> {
    let mut need = |name: &'static str| m.remove(name).ok_or_else(|| corrupt(name, "missing"));
    let id: Uuid = need("id")?.parse().map_err(|e| corrupt("event id", e))?;
    let at = time("at", &need("at")?)?;
    let action: Action = need("action")?.parse().map_err(|e| corrupt("action", e))?;
    let actor = need("actor")?;
    let mut context = AuditContext::new(actor);
    context.ip = m.remove("ip");
    context.user_agent = m.remove("user_agent");
    let mut e = Event::new(action, at, context);
    e.id = id;
    e.key_id = m.remove("key_id").map(|t| t.parse().map_err(|e| corrupt("key_id", e))).transpose()?;
    e.namespace = m.remove("namespace");
    e.owner_id = m.remove("owner_id");
    e.code = m
        .remove("code")
        .map(|t| Code::ALL.into_iter().find(|c| c.as_str() == t).ok_or_else(|| corrupt("code", format!("{t:?}"))))
        .transpose()?;
    e.details = m.remove("details").map(|t| serde_json::from_str(&t)).transpose().map_err(|e| corrupt("details", e))?;
    Ok(e)
}

/// A text reply (bulk or simple string, or an integer as its decimal text).
pub(crate) fn text(value: Value) -> Result<String, StoreError> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).map_err(|e| corrupt("reply", e)),
        Value::SimpleString(s) => Ok(s),
        Value::Int(n) => Ok(n.to_string()),
        Value::Okay => Ok("OK".to_owned()),
        other => Err(corrupt("reply", format!("expected text, got {other:?}"))),
    }
}

/// An integer reply.
pub(crate) fn int(value: Value) -> Result<i64, StoreError> {
    match value {
        Value::Int(n) => Ok(n),
        other => {
            let t = text(other)?;
            t.parse().map_err(|e| corrupt("reply", format!("expected an integer, got {t:?}: {e}")))
        }
    }
}

/// An array reply (nil is the empty array).
pub(crate) fn array(value: Value) -> Result<Vec<Value>, StoreError> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        other => Err(corrupt("reply", format!("expected an array, got {other:?}"))),
    }
}

/// A hash as HGETALL returns it (a flat array of fields and values, or a map in RESP3).
pub(crate) fn hash(value: Value) -> Result<HashMap<String, String>, StoreError> {
    if let Value::Map(pairs) = value {
        return pairs.into_iter().map(|(k, v)| Ok((text(k)?, text(v)?))).collect();
    }
    let items = array(value)?;
    if items.len() % 2 != 0 {
        return Err(corrupt("reply", "a hash with an odd number of fields and values"));
    }
    let mut m = HashMap::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        m.insert(text(k)?, text(v)?);
    }
    Ok(m)
}

/// A record as HGETALL returns it; `None` when the hash is empty (no such record).
pub(crate) fn record(value: Value) -> Result<Option<KeyRecord>, StoreError> {
    let m = hash(value)?;
    if m.is_empty() { Ok(None) } else { decode_record(m).map(Some) }
}

/// A script's reply `{status, rest...}`: the status and the rest.
pub(crate) fn status(value: Value) -> Result<(String, std::vec::IntoIter<Value>), StoreError> {
    let mut items = array(value)?.into_iter();
    let first = items.next().ok_or_else(|| corrupt("reply", "an empty script reply"))?;
    Ok((text(first)?, items))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micros_round_down_and_up() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_500).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        assert_eq!(micros(t), 1);
        assert_eq!(micros_ceil(t), 2);
        let before = OffsetDateTime::from_unix_timestamp_nanos(-1_500).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        assert_eq!(micros(before), -2);
        assert_eq!(micros_ceil(before), -1);
        let whole = OffsetDateTime::from_unix_timestamp_nanos(-3_000).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        assert_eq!((micros(whole), micros_ceil(whole)), (-3, -3));
    }

    #[test]
    fn a_record_with_every_field_round_trips() {
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let mut r = KeyRecord::new(KeyId::new(), Lookup::Hint("sk_".into()), "$h", at);
        r.namespace = Some(String::new());
        r.metadata = Some(serde_json::json!({"big": 9_007_199_254_740_993_u64}));
        r.remaining = Some(u64::MAX);
        r.revoked_at = Some(at);
        let fields = record_fields(&r).unwrap_or_default();
        let m = fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        assert_eq!(decode_record(m).ok(), Some(r));
    }

    #[test]
    fn a_missing_or_garbled_field_is_a_backend_error() {
        let at = OffsetDateTime::UNIX_EPOCH;
        let r = KeyRecord::new(KeyId::new(), Lookup::Id("x".into()), "$h", at);
        let fields: HashMap<String, String> =
            record_fields(&r).unwrap_or_default().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        for (field, garbage) in [("created_at", Some("yesterday")), ("enabled", Some("yes")), ("hash", None)] {
            let mut m = fields.clone();
            match garbage {
                Some(g) => m.insert(field.to_owned(), g.to_owned()),
                None => m.remove(field),
            };
            let error = decode_record(m).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(error.contains(field), "{field}: {error}");
        }
    }
}
