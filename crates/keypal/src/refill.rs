//! Credits that refill: a key's `remaining` set back to an amount at each interval
//! boundary (a quota, not an accumulation).
//!
//! Boundaries are instants in UTC:
//!
//! - `daily`: every midnight, 00:00 UTC;
//! - `weekly`: every Monday, 00:00 UTC;
//! - `monthly` (day `d`, default 1): 00:00 UTC of day `d` of each month, or of the
//!   month's last day when it is shorter;
//! - a duration `D` (like `90s` or `12h`, at least one second): `refilled_at + k·D`,
//!   counted from when the refill was set.
//!
//! Refills are applied lazily where credits are spent: the core computes the latest
//! boundary at or before now ([`Refill::boundary_at`]) and the store's guarded
//! decrement tops `remaining` up first when the record's `refilled_at` is earlier.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::{Date, Month, OffsetDateTime, Time};

/// How often credits refill.
///
/// Written `daily`, `weekly`, `monthly`, `monthly:15` (day 15 of each month, the last
/// day of shorter months) or a duration: a count and a unit `s`, `m`, `h` or `d`.
///
/// ```
/// use keypal::RefillInterval;
/// use std::time::Duration;
/// assert_eq!("monthly:31".parse::<RefillInterval>()?, RefillInterval::Monthly { day: 31 });
/// assert_eq!("12h".parse::<RefillInterval>()?, RefillInterval::Every(Duration::from_secs(43_200)));
/// assert_eq!(RefillInterval::Every(Duration::from_secs(90)).to_string(), "90s");
/// assert!("0s".parse::<RefillInterval>().is_err());
/// assert!("monthly:32".parse::<RefillInterval>().is_err());
/// # Ok::<(), keypal::InvalidRefill>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefillInterval {
    /// Every day at 00:00 UTC.
    Daily,
    /// Every Monday at 00:00 UTC.
    Weekly,
    /// Every month at 00:00 UTC of `day` (1 to 31), or of the month's last day when it is shorter.
    Monthly {
        /// The day of the month (1 to 31).
        day: u8,
    },
    /// Every this long (whole seconds, at least one), counted from `refilled_at`.
    Every(Duration),
}

/// Credits that refill: `remaining` is set back to `amount` at each boundary of `interval`.
///
/// ```
/// use keypal::{Refill, RefillInterval};
/// use time::macros::datetime;
/// let monthly = Refill::new(RefillInterval::Monthly { day: 31 }, 1_000);
/// let now = datetime!(2025-02-14 12:00 UTC);
/// assert_eq!(monthly.boundary_at(None, now), Some(datetime!(2025-01-31 0:00 UTC)));
/// assert_eq!(monthly.next_boundary(None, now), datetime!(2025-02-28 0:00 UTC));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Refill {
    /// How often.
    pub interval: RefillInterval,
    /// What `remaining` is set to at each boundary.
    pub amount: u64,
}

/// Why a refill did not parse or is out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidRefill {
    /// Not one of the written forms.
    #[error("a refill interval is daily, weekly, monthly, monthly:DAY (1 to 31) or a duration like 90s, 30m, 12h, 7d")]
    Syntax,
    /// A duration shorter than a second or too long.
    #[error("a refill duration is a whole number of seconds, from one second to 100 years")]
    BadDuration,
    /// A `day` given with an interval other than `monthly` (or out of 1 to 31).
    #[error("a refill's day is for the monthly interval only, 1 to 31")]
    DayWithoutMonthly,
    /// An amount beyond what stores hold.
    #[error("a refill amount is at most 9223372036854775807")]
    AmountTooLarge,
}

/// The longest refill duration: about a hundred years.
const LONGEST: u64 = 100 * 366 * 86_400;

impl Refill {
    /// A refill of `amount` credits every `interval`.
    pub fn new(interval: RefillInterval, amount: u64) -> Self {
        Self { interval, amount }
    }

    /// Checks the amount fits every store (a signed 64-bit integer).
    ///
    /// ```
    /// use keypal::{Refill, RefillInterval};
    /// assert!(Refill::new(RefillInterval::Daily, u64::MAX).check().is_err());
    /// assert!(Refill::new(RefillInterval::Daily, 100).check().is_ok());
    /// ```
    pub fn check(&self) -> Result<(), InvalidRefill> {
        if self.amount > i64::MAX as u64 {
            return Err(InvalidRefill::AmountTooLarge);
        }
        if let RefillInterval::Every(d) = self.interval {
            check_duration(d)?;
        }
        Ok(())
    }

    /// The latest boundary at or before `now`, given when the credits were last
    /// refilled (the anchor of a duration interval; a duration refill never refilled
    /// has no boundary yet: `None`). A store tops the credits up when its record's
    /// `refilled_at` is earlier than this boundary.
    ///
    /// ```
    /// use keypal::{Refill, RefillInterval};
    /// use std::time::Duration;
    /// use time::macros::datetime;
    /// let every = Refill::new(RefillInterval::Every(Duration::from_secs(90)), 5);
    /// let set = datetime!(2025-01-01 0:00 UTC);
    /// assert_eq!(every.boundary_at(Some(set), datetime!(2025-01-01 0:01 UTC)), Some(set));
    /// assert_eq!(every.boundary_at(Some(set), datetime!(2025-01-01 0:04 UTC)), Some(datetime!(2025-01-01 0:03 UTC)));
    /// let weekly = Refill::new(RefillInterval::Weekly, 5);
    /// // 2025-01-01 is a Wednesday: the last Monday is 2024-12-30.
    /// assert_eq!(weekly.boundary_at(None, datetime!(2025-01-01 9:00 UTC)), Some(datetime!(2024-12-30 0:00 UTC)));
    /// ```
    pub fn boundary_at(&self, refilled_at: Option<OffsetDateTime>, now: OffsetDateTime) -> Option<OffsetDateTime> {
        let now = now.to_offset(time::UtcOffset::UTC);
        let today = now.date();
        Some(match self.interval {
            RefillInterval::Daily => midnight(today),
            RefillInterval::Weekly => {
                midnight(today - time::Duration::days(i64::from(today.weekday().number_days_from_monday())))
            }
            RefillInterval::Monthly { day } => {
                let this = midnight(day_of(today.year(), today.month(), day));
                if this <= now {
                    this
                } else {
                    let (year, month) = previous_month(today.year(), today.month());
                    midnight(day_of(year, month, day))
                }
            }
            RefillInterval::Every(period) => {
                let anchor = refilled_at?;
                let period = i128::from(period.as_secs().max(1)) * 1_000_000_000;
                let since = (now - anchor).whole_nanoseconds();
                if since <= 0 {
                    return Some(anchor);
                }
                let steps = since / period;
                let nanos = i64::try_from(steps * period).ok()?;
                anchor + time::Duration::nanoseconds(nanos)
            }
        })
    }

    /// The first boundary after `now`: when the credits next refill (the `refill_at`
    /// of a verification).
    ///
    /// ```
    /// use keypal::{Refill, RefillInterval};
    /// use time::macros::datetime;
    /// let daily = Refill::new(RefillInterval::Daily, 10);
    /// assert_eq!(daily.next_boundary(None, datetime!(2025-03-09 23:59 UTC)), datetime!(2025-03-10 0:00 UTC));
    /// ```
    pub fn next_boundary(&self, refilled_at: Option<OffsetDateTime>, now: OffsetDateTime) -> OffsetDateTime {
        let last = self.boundary_at(refilled_at, now).unwrap_or(now);
        match self.interval {
            RefillInterval::Daily => last + time::Duration::days(1),
            RefillInterval::Weekly => last + time::Duration::days(7),
            RefillInterval::Monthly { day } => {
                let (year, month) = next_month(last.year(), last.month());
                midnight(day_of(year, month, day))
            }
            RefillInterval::Every(period) => last + period,
        }
    }

    /// The credits a record holds at `now`: the refill's amount when a boundary has
    /// passed since `refilled_at` (what the next spend tops up to), else `remaining`.
    ///
    /// ```
    /// use keypal::{Refill, RefillInterval};
    /// use time::macros::datetime;
    /// let daily = Refill::new(RefillInterval::Daily, 10);
    /// let yesterday = datetime!(2025-03-09 8:00 UTC);
    /// assert_eq!(daily.remaining_at(Some(3), Some(yesterday), datetime!(2025-03-10 1:00 UTC)), Some(10));
    /// assert_eq!(daily.remaining_at(Some(3), Some(yesterday), datetime!(2025-03-09 9:00 UTC)), Some(3));
    /// ```
    pub fn remaining_at(
        &self,
        remaining: Option<u64>,
        refilled_at: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> Option<u64> {
        match self.boundary_at(refilled_at, now) {
            Some(boundary) if refilled_at.is_none_or(|at| at < boundary) => Some(self.amount),
            _ => remaining,
        }
    }
}

/// A refill written `AMOUNT/INTERVAL`, as command lines and forms take it: `1000/monthly`,
/// `1000/monthly:15`, `100/daily`, `50/12h`.
///
/// ```
/// use keypal::{Refill, RefillInterval};
/// let refill: Refill = "1000/monthly:15".parse()?;
/// assert_eq!(refill, Refill::new(RefillInterval::Monthly { day: 15 }, 1000));
/// assert_eq!(refill.to_string(), "1000/monthly:15");
/// assert!("1000".parse::<Refill>().is_err());
/// # Ok::<(), keypal::InvalidRefill>(())
/// ```
impl FromStr for Refill {
    type Err = InvalidRefill;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (amount, interval) = s.trim().split_once('/').ok_or(InvalidRefill::Syntax)?;
        let amount: u64 = amount.trim().parse().map_err(|_| InvalidRefill::Syntax)?;
        let refill = Refill::new(interval.parse()?, amount);
        refill.check()?;
        Ok(refill)
    }
}

impl fmt::Display for Refill {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.amount, self.interval)
    }
}

fn check_duration(d: Duration) -> Result<(), InvalidRefill> {
    if d.as_secs() == 0 || d.subsec_nanos() != 0 || d.as_secs() > LONGEST {
        return Err(InvalidRefill::BadDuration);
    }
    Ok(())
}

fn midnight(date: Date) -> OffsetDateTime {
    date.with_time(Time::MIDNIGHT).assume_utc()
}

/// Day `day` of the month, or its last day when the month is shorter.
fn day_of(year: i32, month: Month, day: u8) -> Date {
    let last = time::util::days_in_month(month, year);
    Date::from_calendar_date(year, month, day.clamp(1, last)).unwrap_or(Date::MIN)
}

fn previous_month(year: i32, month: Month) -> (i32, Month) {
    if month == Month::January { (year - 1, Month::December) } else { (year, month.previous()) }
}

fn next_month(year: i32, month: Month) -> (i32, Month) {
    if month == Month::December { (year + 1, Month::January) } else { (year, month.next()) }
}

impl FromStr for RefillInterval {
    type Err = InvalidRefill;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        match s {
            "daily" => return Ok(Self::Daily),
            "weekly" => return Ok(Self::Weekly),
            "monthly" => return Ok(Self::Monthly { day: 1 }),
            _ => {}
        }
        if let Some(day) = s.strip_prefix("monthly:") {
            let day: u8 = day.trim().parse().map_err(|_| InvalidRefill::Syntax)?;
            return if (1..=31).contains(&day) { Ok(Self::Monthly { day }) } else { Err(InvalidRefill::Syntax) };
        }
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        let (count, unit) = s.split_at(digits);
        let count: u64 = count.parse().map_err(|_| InvalidRefill::Syntax)?;
        let unit: u64 = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            _ => return Err(InvalidRefill::Syntax),
        };
        let d = Duration::from_secs(count.checked_mul(unit).ok_or(InvalidRefill::BadDuration)?);
        check_duration(d)?;
        Ok(Self::Every(d))
    }
}

impl fmt::Display for RefillInterval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Daily => f.write_str("daily"),
            Self::Weekly => f.write_str("weekly"),
            Self::Monthly { day: 1 } => f.write_str("monthly"),
            Self::Monthly { day } => write!(f, "monthly:{day}"),
            Self::Every(d) => {
                let secs = d.as_secs();
                match secs {
                    s if s % 86_400 == 0 => write!(f, "{}d", s / 86_400),
                    s if s % 3_600 == 0 => write!(f, "{}h", s / 3_600),
                    s if s % 60 == 0 => write!(f, "{}m", s / 60),
                    s => write!(f, "{s}s"),
                }
            }
        }
    }
}

/// A refill as JSON: `{"interval": "monthly", "day": 15, "amount": 1000}` or
/// `{"interval": "12h", "amount": 50}`.
#[derive(Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Refill")]
struct RefillJson {
    /// `daily`, `weekly`, `monthly`, or a duration like `90s`, `30m`, `12h`, `7d` (at least one second).
    interval: String,
    /// For `monthly`: the day of the month, 1 to 31 (the last day of shorter months; default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 31))]
    day: Option<u8>,
    /// What the key's credits are set back to at each boundary.
    #[schemars(range(max = 9_223_372_036_854_775_807u64))]
    amount: u64,
}

impl TryFrom<RefillJson> for Refill {
    type Error = InvalidRefill;

    fn try_from(json: RefillJson) -> Result<Self, Self::Error> {
        Refill::from_parts(&json.interval, json.day, json.amount)
    }
}

impl Refill {
    /// A refill as JSON and forms give it: an interval text, a day of the month (for
    /// `monthly` only) and an amount, checked ([`Refill::check`]).
    ///
    /// ```
    /// use keypal::{Refill, RefillInterval};
    /// assert_eq!(Refill::from_parts("monthly", Some(15), 10)?, Refill::new(RefillInterval::Monthly { day: 15 }, 10));
    /// assert!(Refill::from_parts("daily", Some(15), 10).is_err());
    /// # Ok::<(), keypal::InvalidRefill>(())
    /// ```
    pub fn from_parts(interval: &str, day: Option<u8>, amount: u64) -> Result<Self, InvalidRefill> {
        let interval = match (interval.parse::<RefillInterval>()?, day) {
            (RefillInterval::Monthly { day: 1 }, Some(day))
                if interval.trim() == "monthly" && (1..=31).contains(&day) =>
            {
                RefillInterval::Monthly { day }
            }
            (_, Some(_)) => return Err(InvalidRefill::DayWithoutMonthly),
            (interval, None) => interval,
        };
        let refill = Refill::new(interval, amount);
        refill.check()?;
        Ok(refill)
    }

    /// The parts [`Refill::from_parts`] takes: the interval text (`monthly` for every
    /// monthly refill), the day of a monthly refill other than the 1st, the amount.
    ///
    /// ```
    /// use keypal::{Refill, RefillInterval};
    /// let refill = Refill::new(RefillInterval::Monthly { day: 15 }, 10);
    /// assert_eq!(refill.parts(), ("monthly".to_owned(), Some(15), 10));
    /// ```
    pub fn parts(&self) -> (String, Option<u8>, u64) {
        match self.interval {
            RefillInterval::Monthly { day } => ("monthly".to_owned(), (day != 1).then_some(day), self.amount),
            other => (other.to_string(), None, self.amount),
        }
    }
}

impl Serialize for Refill {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (interval, day, amount) = self.parts();
        RefillJson { interval, day, amount }.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Refill {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Refill::try_from(RefillJson::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for Refill {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Refill".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        RefillJson::json_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn monthly(day: u8) -> Refill {
        Refill::new(RefillInterval::Monthly { day }, 1)
    }

    #[test]
    fn monthly_boundaries_clamp_to_the_last_day() {
        let r = monthly(31);
        assert_eq!(r.boundary_at(None, datetime!(2024-03-01 0:00 UTC)), Some(datetime!(2024-02-29 0:00 UTC)));
        assert_eq!(r.boundary_at(None, datetime!(2024-03-31 0:00 UTC)), Some(datetime!(2024-03-31 0:00 UTC)));
        assert_eq!(r.next_boundary(None, datetime!(2024-03-31 0:00 UTC)), datetime!(2024-04-30 0:00 UTC));
        assert_eq!(r.next_boundary(None, datetime!(2024-12-31 5:00 UTC)), datetime!(2025-01-31 0:00 UTC));
        let first = monthly(1);
        assert_eq!(first.boundary_at(None, datetime!(2025-01-15 0:00 UTC)), Some(datetime!(2025-01-01 0:00 UTC)));
        assert_eq!(first.next_boundary(None, datetime!(2025-12-15 0:00 UTC)), datetime!(2026-01-01 0:00 UTC));
        let mid = monthly(15);
        assert_eq!(mid.boundary_at(None, datetime!(2025-01-10 0:00 UTC)), Some(datetime!(2024-12-15 0:00 UTC)));
    }

    #[test]
    fn a_boundary_is_reached_at_its_instant_not_before() {
        let daily = Refill::new(RefillInterval::Daily, 1);
        let before = datetime!(2025-03-09 23:59:59.999999 UTC);
        assert_eq!(daily.boundary_at(None, before), Some(datetime!(2025-03-09 0:00 UTC)));
        assert_eq!(daily.boundary_at(None, datetime!(2025-03-10 0:00 UTC)), Some(datetime!(2025-03-10 0:00 UTC)));
        let weekly = Refill::new(RefillInterval::Weekly, 1);
        // 2025-03-10 is a Monday.
        assert_eq!(weekly.boundary_at(None, datetime!(2025-03-10 0:00 UTC)), Some(datetime!(2025-03-10 0:00 UTC)));
        assert_eq!(weekly.next_boundary(None, datetime!(2025-03-10 0:00 UTC)), datetime!(2025-03-17 0:00 UTC));
    }

    #[test]
    fn durations_count_from_the_last_refill() {
        let every = Refill::new(RefillInterval::Every(Duration::from_secs(90)), 1);
        let at = datetime!(2025-01-01 0:00:10 UTC);
        assert_eq!(every.boundary_at(None, at), None);
        assert_eq!(
            every.boundary_at(Some(at), datetime!(2025-01-01 0:01:40 UTC)),
            Some(datetime!(2025-01-01 0:01:40 UTC))
        );
        assert_eq!(every.next_boundary(Some(at), datetime!(2025-01-01 0:01:40 UTC)), datetime!(2025-01-01 0:03:10 UTC));
    }

    #[test]
    fn intervals_read_back_as_written_and_json_checks_them() {
        for text in ["daily", "weekly", "monthly", "monthly:15", "90s", "12h", "30m", "7d"] {
            let interval: RefillInterval = text.parse().unwrap_or(RefillInterval::Daily);
            assert_eq!(interval.to_string(), text);
        }
        for bad in ["", "hourly", "monthly:0", "0s", "1.5h", "-1s", "s", "99999999999999999999d", "40000d"] {
            assert!(bad.parse::<RefillInterval>().is_err(), "{bad} should not parse");
        }
        let r: Result<Refill, _> = serde_json::from_str(r#"{"interval": "monthly", "day": 31, "amount": 7}"#);
        assert_eq!(r.ok(), Some(Refill::new(RefillInterval::Monthly { day: 31 }, 7)));
        for bad in [
            r#"{"interval": "daily", "day": 3, "amount": 7}"#,
            r#"{"interval": "monthly", "day": 0, "amount": 7}"#,
            r#"{"interval": "daily", "amount": 9223372036854775808}"#,
            r#"{"interval": "daily"}"#,
        ] {
            assert!(serde_json::from_str::<Refill>(bad).is_err(), "{bad} should not parse");
        }
        let json = serde_json::to_value(Refill::new(RefillInterval::Monthly { day: 15 }, 3)).ok();
        assert_eq!(json, Some(serde_json::json!({"interval": "monthly", "day": 15, "amount": 3})));
    }
}
