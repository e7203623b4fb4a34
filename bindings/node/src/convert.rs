//! The core's results as plain JavaScript objects: camelCase fields, `Date` values,
//! `null` for what is absent. A record never carries its stored hash, its lookup value
//! or an encrypted copy of the key: only what is safe to log and show.

use keypal::{Created, Event, KeyRecord, Page, RateLimitStatus, Rotated, Verification};
use napi::{Env, JsObject, JsUnknown, Result};
use time::OffsetDateTime;

fn ms(at: OffsetDateTime) -> f64 {
    (at.unix_timestamp_nanos() / 1_000) as f64 / 1_000.0
}

fn date(env: &Env, at: Option<OffsetDateTime>) -> Result<JsUnknown> {
    match at {
        Some(at) => Ok(env.create_date(ms(at))?.into_unknown()),
        None => Ok(env.get_null()?.into_unknown()),
    }
}

fn strings(env: &Env, items: &[String]) -> Result<JsObject> {
    let mut array = env.create_array_with_length(items.len())?;
    for (i, item) in items.iter().enumerate() {
        array.set_element(i as u32, env.create_string(item)?)?;
    }
    Ok(array)
}

fn json(env: &Env, value: &Option<serde_json::Value>) -> Result<JsUnknown> {
    match value {
        Some(value) => env.to_js_value(value),
        None => Ok(env.get_null()?.into_unknown()),
    }
}

pub fn record(env: &Env, record: &KeyRecord) -> Result<JsObject> {
    let mut o = env.create_object()?;
    o.set_named_property("id", record.id.to_string())?;
    o.set_named_property("namespace", record.namespace.as_deref())?;
    o.set_named_property("name", record.name.as_deref())?;
    o.set_named_property("ownerId", record.owner_id.as_deref())?;
    o.set_named_property("start", record.start.as_str())?;
    o.set_named_property("last4", record.last4.as_str())?;
    o.set_named_property("scopes", strings(env, &record.scopes)?)?;
    o.set_named_property("metadata", json(env, &record.metadata)?)?;
    o.set_named_property("tier", record.tier.as_deref())?;
    o.set_named_property("enabled", record.enabled)?;
    o.set_named_property("createdAt", date(env, Some(record.created_at))?)?;
    o.set_named_property("expiresAt", date(env, record.expires_at)?)?;
    o.set_named_property("lastUsedAt", date(env, record.last_used_at)?)?;
    o.set_named_property("revokedAt", date(env, record.revoked_at)?)?;
    o.set_named_property("rotatedFrom", record.rotated_from.map(|id| id.to_string()))?;
    o.set_named_property("rotatedTo", record.rotated_to.map(|id| id.to_string()))?;
    o.set_named_property("remaining", record.remaining.map(|n| n as f64))?;
    o.set_named_property("rateLimit", record.rate_limit.map(|limit| limit.to_string()))?;
    o.set_named_property("recoverable", record.encrypted_key.is_some())?;
    o.set_named_property("version", record.version as f64)?;
    Ok(o)
}

/// The rate limit's state; `window` is the limit's period in seconds.
pub fn rate_limit(env: &Env, status: Option<&RateLimitStatus>, window: Option<u64>) -> Result<JsUnknown> {
    let Some(status) = status else { return Ok(env.get_null()?.into_unknown()) };
    let mut o = env.create_object()?;
    o.set_named_property("allowed", status.allowed)?;
    o.set_named_property("limit", status.limit)?;
    o.set_named_property("remaining", status.remaining)?;
    o.set_named_property("resetAt", date(env, Some(status.reset_at))?)?;
    o.set_named_property("retryAfter", status.retry_after.map(|d| d.as_secs_f64()))?;
    o.set_named_property("window", window.map(|w| w as f64))?;
    Ok(o.into_unknown())
}

pub fn verification(env: &Env, verification: Verification, window: Option<u64>) -> Result<JsUnknown> {
    let mut o = env.create_object()?;
    o.set_named_property("valid", verification.is_valid())?;
    o.set_named_property("code", verification.code().as_str())?;
    match verification.record() {
        Some(r) => o.set_named_property("record", record(env, r)?)?,
        None => o.set_named_property("record", env.get_null()?)?,
    }
    o.set_named_property("rateLimit", rate_limit(env, verification.rate_limit(), window)?)?;
    o.set_named_property("remaining", verification.remaining().map(|n| n as f64))?;
    Ok(o.into_unknown())
}

/// A verification and its rate limit's period, as a background verification settles.
pub fn verified(env: &Env, (verification, window): (Verification, Option<u64>)) -> Result<JsUnknown> {
    self::verification(env, verification, window)
}

pub fn one(env: &Env, r: KeyRecord) -> Result<JsUnknown> {
    Ok(record(env, &r)?.into_unknown())
}

pub fn many(env: &Env, records: Vec<KeyRecord>) -> Result<JsUnknown> {
    let mut array = env.create_array_with_length(records.len())?;
    for (i, r) in records.iter().enumerate() {
        array.set_element(i as u32, record(env, r)?)?;
    }
    Ok(array.into_unknown())
}

pub fn page(env: &Env, page: Page<KeyRecord>) -> Result<JsUnknown> {
    let mut o = env.create_object()?;
    o.set_named_property("items", many(env, page.items)?)?;
    o.set_named_property("nextCursor", page.next_cursor.map(|c| c.to_string()))?;
    Ok(o.into_unknown())
}

pub fn created(env: &Env, created: Created) -> Result<JsUnknown> {
    let mut o = env.create_object()?;
    o.set_named_property("key", created.key.expose())?;
    o.set_named_property("record", record(env, &created.record)?)?;
    Ok(o.into_unknown())
}

pub fn rotated(env: &Env, rotated: Rotated) -> Result<JsUnknown> {
    let mut o = env.create_object()?;
    o.set_named_property("key", rotated.key.expose())?;
    o.set_named_property("record", record(env, &rotated.record)?)?;
    o.set_named_property("previous", record(env, &rotated.previous)?)?;
    Ok(o.into_unknown())
}

fn event(env: &Env, event: &Event) -> Result<JsObject> {
    let mut o = env.create_object()?;
    o.set_named_property("id", event.id.to_string())?;
    o.set_named_property("at", date(env, Some(event.at))?)?;
    o.set_named_property("action", event.action.as_str())?;
    o.set_named_property("keyId", event.key_id.map(|id| id.to_string()))?;
    o.set_named_property("namespace", event.namespace.as_deref())?;
    o.set_named_property("ownerId", event.owner_id.as_deref())?;
    o.set_named_property("code", event.code.map(|c| c.as_str()))?;
    o.set_named_property("actor", event.context.actor.as_str())?;
    o.set_named_property("ip", event.context.ip.as_deref())?;
    o.set_named_property("userAgent", event.context.user_agent.as_deref())?;
    o.set_named_property("details", json(env, &event.details)?)?;
    Ok(o)
}

pub fn events(env: &Env, page: Page<Event>) -> Result<JsUnknown> {
    let mut items = env.create_array_with_length(page.items.len())?;
    for (i, e) in page.items.iter().enumerate() {
        items.set_element(i as u32, event(env, e)?)?;
    }
    let mut o = env.create_object()?;
    o.set_named_property("items", items)?;
    o.set_named_property("nextCursor", page.next_cursor.map(|c| c.to_string()))?;
    Ok(o.into_unknown())
}

pub fn count(env: &Env, n: u64) -> Result<JsUnknown> {
    Ok(env.create_double(n as f64)?.into_unknown())
}

pub fn nothing(env: &Env, (): ()) -> Result<JsUnknown> {
    Ok(env.get_undefined()?.into_unknown())
}
