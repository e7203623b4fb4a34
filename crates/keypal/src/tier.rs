//! Tiers and rate limits: `free`, `pro`, `100/hour`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A rate limit: at most `limit` requests per `period`, written `100/hour`.
///
/// Units: `second`, `minute`, `hour`, `day` (also `s`, `m`, `h`, `d`, `sec`, `min`).
///
/// ```
/// use keypal::RateLimit;
/// use std::time::Duration;
///
/// let limit: RateLimit = "100/hour".parse()?;
/// assert_eq!(limit.limit, 100);
/// assert_eq!(limit.period, Duration::from_secs(3600));
/// assert_eq!(limit.to_string(), "100/hour");
/// assert!("0/hour".parse::<RateLimit>().is_err());
/// # Ok::<(), keypal::InvalidRateLimit>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    /// Requests allowed per period (at least 1).
    pub limit: u32,
    /// The period (whole seconds, at least one second).
    pub period: Duration,
}

impl RateLimit {
    /// `limit` requests per `period`.
    ///
    /// ```
    /// use keypal::RateLimit;
    /// use std::time::Duration;
    /// assert_eq!(RateLimit::new(10, Duration::from_secs(60))?.to_string(), "10/minute");
    /// # Ok::<(), keypal::InvalidRateLimit>(())
    /// ```
    pub fn new(limit: u32, period: Duration) -> Result<Self, InvalidRateLimit> {
        if limit == 0 {
            return Err(InvalidRateLimit::ZeroLimit);
        }
        if period.as_secs() == 0 || period.subsec_nanos() != 0 {
            return Err(InvalidRateLimit::BadPeriod);
        }
        Ok(Self { limit, period })
    }

    /// Shorthand for `limit` requests per hour.
    ///
    /// ```
    /// assert_eq!(keypal::RateLimit::per_hour(100).to_string(), "100/hour");
    /// ```
    pub fn per_hour(limit: u32) -> Self {
        Self { limit: limit.max(1), period: Duration::from_secs(3600) }
    }
}

/// Why a rate limit text did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidRateLimit {
    /// Not of the form `N/unit`.
    #[error("a rate limit is written N/unit, like 100/hour or 10/30s (units: second, minute, hour, day)")]
    Syntax,
    /// The count is zero.
    #[error("a rate limit must allow at least one request")]
    ZeroLimit,
    /// The period is shorter than a second or not whole seconds.
    #[error("a rate limit period is a whole number of seconds, at least one")]
    BadPeriod,
}

impl FromStr for RateLimit {
    type Err = InvalidRateLimit;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (count, unit) = s.trim().split_once('/').ok_or(InvalidRateLimit::Syntax)?;
        let limit: u32 = count.trim().parse().map_err(|_| InvalidRateLimit::Syntax)?;
        // A unit, or a count of units without a space: `30s`, `5m` (what Display writes
        // for periods that are not one unit, so every limit reads back).
        let unit = unit.trim();
        let digits = unit.bytes().take_while(u8::is_ascii_digit).count();
        let (count, unit) = unit.split_at(digits);
        let count: u64 = if count.is_empty() { 1 } else { count.parse().map_err(|_| InvalidRateLimit::Syntax)? };
        let unit_seconds: u64 = match unit {
            "s" | "sec" | "second" => 1,
            "m" | "min" | "minute" => 60,
            "h" | "hour" => 3_600,
            "d" | "day" => 86_400,
            _ => return Err(InvalidRateLimit::Syntax),
        };
        let seconds = count.checked_mul(unit_seconds).ok_or(InvalidRateLimit::BadPeriod)?;
        Self::new(limit, Duration::from_secs(seconds))
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.period.as_secs();
        match secs {
            1 => write!(f, "{}/second", self.limit),
            60 => write!(f, "{}/minute", self.limit),
            3_600 => write!(f, "{}/hour", self.limit),
            86_400 => write!(f, "{}/day", self.limit),
            _ => write!(f, "{}/{}s", self.limit, secs),
        }
    }
}

impl Serialize for RateLimit {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RateLimit {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for RateLimit {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RateLimit".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "N requests per unit, like \"100/hour\" (units: second, minute, hour, day)",
            "pattern": "^\\s*[0-9]+\\s*/\\s*(s|sec|second|m|min|minute|h|hour|d|day)\\s*$"
        })
    }
}

/// A tier: the text its keys carry in a `{tier}` segment and its rate limit.
///
/// ```
/// use keypal::{RateLimit, Tier};
/// let pro = Tier::new().segment("pro").rate_limit(RateLimit::per_hour(2000));
/// assert_eq!(pro.segment.as_deref(), Some("pro"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// The text of the tier in a `{tier}` segment (defaults to the tier's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
    /// Requests allowed to keys of this tier, like `100/hour` (none: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Credits that refill, given to keys of this tier that have no refill of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refill: Option<crate::Refill>,
}

impl Tier {
    /// A tier with no segment text of its own and no rate limit.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the segment text.
    pub fn segment(mut self, text: impl Into<String>) -> Self {
        self.segment = Some(text.into());
        self
    }

    /// Sets the rate limit.
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// Sets the refill its keys get by default.
    ///
    /// ```
    /// use keypal::{Refill, RefillInterval, Tier};
    /// let free = Tier::new().refill(Refill::new(RefillInterval::Monthly { day: 1 }, 1_000));
    /// assert!(free.refill.is_some());
    /// ```
    pub fn refill(mut self, refill: crate::Refill) -> Self {
        self.refill = Some(refill);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_rejects_garbage() {
        assert_eq!("5/s".parse::<RateLimit>().map(|r| r.period.as_secs()), Ok(1));
        assert_eq!("5 / min".parse::<RateLimit>().map(|r| r.period.as_secs()), Ok(60));
        assert_eq!("1000/day".parse::<RateLimit>().map(|r| r.limit), Ok(1000));
        assert_eq!("10/30s".parse::<RateLimit>().map(|r| r.period.as_secs()), Ok(30));
        assert_eq!("10/5m".parse::<RateLimit>().map(|r| r.period.as_secs()), Ok(300));
        for bad in
            ["", "100", "100/week", "x/hour", "-1/hour", "0/s", "100/hour/2", "1/0s", "1/s5", "1/99999999999999999999d"]
        {
            assert!(bad.parse::<RateLimit>().is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn every_limit_reads_back_as_written() {
        for seconds in [1, 30, 60, 90, 3_600, 7_200, 86_400, 172_800] {
            let limit = RateLimit::new(10, Duration::from_secs(seconds)).unwrap_or(RateLimit::per_hour(1));
            assert_eq!(limit.to_string().parse::<RateLimit>(), Ok(limit), "{limit}");
        }
    }

    #[test]
    fn round_trips_through_serde() {
        let limit: RateLimit = serde_json::from_str("\"100/hour\"").unwrap_or(RateLimit::per_hour(1));
        assert_eq!(limit, RateLimit::per_hour(100));
        assert_eq!(serde_json::to_string(&limit).ok().as_deref(), Some("\"100/hour\""));
    }
}
