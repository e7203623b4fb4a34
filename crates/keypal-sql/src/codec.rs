//! Conversions between keypal's types and column values, shared by both dialects.

use keypal::{Action, Code, Lookup, RateLimit, Refill, StoreError};
use serde_json::Value;

use crate::error::{CorruptRow, OutOfRange};

/// A backend error from sqlx.
pub(crate) fn backend(error: sqlx::Error) -> StoreError {
    StoreError::backend(error)
}

/// Unique violations (a taken id or lookup value) are [`StoreError::Duplicate`].
pub(crate) fn duplicate_or_backend(error: sqlx::Error) -> StoreError {
    match error.as_database_error() {
        Some(db) if db.is_unique_violation() => StoreError::Duplicate,
        _ => backend(error),
    }
}

pub(crate) fn corrupt(column: &'static str, reason: impl ToString) -> StoreError {
    StoreError::backend(CorruptRow { column, reason: reason.to_string() })
}

/// Credits and counters are unsigned in keypal, signed 64-bit in SQL.
pub(crate) fn to_i64(column: &'static str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::backend(OutOfRange { column, value }))
}

pub(crate) fn to_u64(column: &'static str, value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| corrupt(column, format!("negative value {value}")))
}

pub(crate) fn lookup(kind: &str, value: &str) -> Result<Lookup, StoreError> {
    Lookup::from_parts(kind, value).ok_or_else(|| corrupt("lookup_value", format!("not a valid {kind} lookup")))
}

pub(crate) fn rate_limit(text: Option<String>) -> Result<Option<RateLimit>, StoreError> {
    text.map(|t| t.parse().map_err(|e| corrupt("rate_limit", e))).transpose()
}

/// A refill from its interval text and amount columns (both set, or neither).
pub(crate) fn refill(interval: Option<String>, amount: Option<i64>) -> Result<Option<Refill>, StoreError> {
    match (interval, amount) {
        (None, None) => Ok(None),
        (Some(interval), Some(amount)) => {
            Ok(Some(Refill::new(interval.parse().map_err(|e| corrupt("refill", e))?, to_u64("refill_amount", amount)?)))
        }
        _ => Err(corrupt("refill", "refill and refill_amount are set together")),
    }
}

pub(crate) fn action(text: &str) -> Result<Action, StoreError> {
    text.parse().map_err(|e| corrupt("action", e))
}

pub(crate) fn code(text: Option<String>) -> Result<Option<Code>, StoreError> {
    text.map(|t| Code::ALL.into_iter().find(|c| c.as_str() == t).ok_or_else(|| corrupt("code", format!("{t:?}"))))
        .transpose()
}

/// The `LIKE` pattern (escape character `\`) of a listing's search: `%text%`, the text
/// with its ASCII letters lowercased and `%`, `_` and `\` escaped.
pub(crate) fn like_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c.to_ascii_lowercase());
    }
    pattern.push('%');
    pattern
}

/// `event` with `name: value` added to its details (an object; other details are kept,
/// details that are not an object are kept under `details`).
pub(crate) fn with_detail(event: &keypal::Event, name: &str, value: Value) -> keypal::Event {
    let mut event = event.clone();
    let mut details = match event.details.take() {
        Some(Value::Object(map)) => map,
        Some(other) => serde_json::Map::from_iter([("details".to_owned(), other)]),
        None => serde_json::Map::new(),
    };
    details.insert(name.to_owned(), value);
    event.details = Some(Value::Object(details));
    event
}
