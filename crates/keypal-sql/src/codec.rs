//! Conversions between keypal's types and column values, shared by both dialects.

use keypal::{Action, Code, Lookup, RateLimit, StoreError};
use serde_json::Value;
use time::OffsetDateTime;

use crate::error::{CorruptRow, OutOfRange};
use crate::usage::UsageCounts;

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

pub(crate) fn action(text: &str) -> Result<Action, StoreError> {
    text.parse().map_err(|e| corrupt("action", e))
}

pub(crate) fn code(text: Option<String>) -> Result<Option<Code>, StoreError> {
    text.map(|t| Code::ALL.into_iter().find(|c| c.as_str() == t).ok_or_else(|| corrupt("code", format!("{t:?}"))))
        .transpose()
}

/// JSON text (SQLite keeps JSON as text).
pub(crate) fn json_text(value: &Value) -> String {
    value.to_string()
}

pub(crate) fn parse_json(column: &'static str, text: Option<String>) -> Result<Option<Value>, StoreError> {
    text.map(|t| serde_json::from_str(&t).map_err(|e| corrupt(column, e))).transpose()
}

pub(crate) fn parse_scopes(text: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(text).map_err(|e| corrupt("scopes", e))
}

/// SQLite keeps timestamps as integer microseconds since the Unix epoch.
pub(crate) fn micros(at: OffsetDateTime) -> i64 {
    // Every representable OffsetDateTime fits: i64 microseconds span ±292 000 years.
    i64::try_from(at.unix_timestamp_nanos() / 1_000).unwrap_or(if at.year() < 0 { i64::MIN } else { i64::MAX })
}

pub(crate) fn from_micros(column: &'static str, micros: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000).map_err(|e| corrupt(column, e))
}

pub(crate) fn from_micros_opt(column: &'static str, micros: Option<i64>) -> Result<Option<OffsetDateTime>, StoreError> {
    micros.map(|m| from_micros(column, m)).transpose()
}

/// Reads seven counters (in [`UsageCounts::by_code`] order) starting at column `first`.
pub(crate) fn usage_counts<'r, R>(row: &'r R, first: usize) -> Result<UsageCounts, StoreError>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let get = |i: usize, column: &'static str| -> Result<u64, StoreError> {
        to_u64(column, row.try_get::<i64, _>(first + i).map_err(backend)?)
    };
    Ok(UsageCounts {
        valid: get(0, "valid")?,
        revoked: get(1, "revoked")?,
        disabled: get(2, "disabled")?,
        expired: get(3, "expired")?,
        insufficient_scope: get(4, "insufficient_scope")?,
        rate_limited: get(5, "rate_limited")?,
        usage_exceeded: get(6, "usage_exceeded")?,
    })
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
