//! PATCH bodies: an absent field leaves a value alone, `null` clears it.

use serde::{Deserialize, Deserializer};

/// Deserializes a present field (even `null`) as `Some(..)`; with `#[serde(default)]`
/// an absent field stays `None`.
pub fn double_option<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// [`double_option`] for RFC 3339 timestamps.
pub fn double_option_time<'de, D>(deserializer: D) -> Result<Option<Option<time::OffsetDateTime>>, D::Error>
where
    D: Deserializer<'de>,
{
    time::serde::rfc3339::option::deserialize(deserializer).map(Some)
}
