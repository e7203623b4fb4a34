//! How the admin panel shows times, states and usage.

use std::fmt::Write;

use keypal::KeyRecord;
use time::OffsetDateTime;
use time::macros::format_description;

/// `Oct 18, 2025`.
pub fn date(at: OffsetDateTime) -> String {
    at.format(format_description!("[month repr:short] [day padding:none], [year]")).unwrap_or_else(|_| at.to_string())
}

/// `2025-10-18 14:03 UTC`.
pub fn date_time(at: OffsetDateTime) -> String {
    at.format(format_description!("[year]-[month]-[day] [hour]:[minute] UTC")).unwrap_or_else(|_| at.to_string())
}

/// "Expires Oct 18, 2025", "Expired Oct 18, 2025" or "Never expires", with a badge class.
pub fn expiry(expires_at: Option<OffsetDateTime>, now: OffsetDateTime) -> (String, &'static str) {
    match expires_at {
        None => ("Never expires".to_owned(), ""),
        Some(at) if at <= now => (format!("Expired {}", date(at)), "bad"),
        Some(at) if at - now < time::Duration::days(7) => (format!("Expires {}", date(at)), "warn"),
        Some(at) => (format!("Expires {}", date(at)), ""),
    }
}

/// "Never used", "just now", "5m ago", "2h ago", "3d ago", or the date after 30 days.
pub fn last_used(at: Option<OffsetDateTime>, now: OffsetDateTime) -> String {
    let Some(at) = at else { return "Never used".to_owned() };
    let ago = now - at;
    if ago < time::Duration::minutes(1) {
        "just now".to_owned()
    } else if ago < time::Duration::hours(1) {
        format!("{}m ago", ago.whole_minutes())
    } else if ago < time::Duration::days(1) {
        format!("{}h ago", ago.whole_hours())
    } else if ago < time::Duration::days(30) {
        format!("{}d ago", ago.whole_days())
    } else {
        date(at)
    }
}

/// The key's state at `now`, with a badge class.
pub fn status(record: &KeyRecord, now: OffsetDateTime) -> (&'static str, &'static str) {
    if record.is_revoked_at(now) {
        ("Revoked", "bad")
    } else if record.is_expired_at(now) {
        ("Expired", "bad")
    } else if !record.enabled {
        ("Disabled", "warn")
    } else if record.revoked_at.is_some() {
        ("Rotating", "warn")
    } else {
        ("Active", "ok")
    }
}

/// A bar chart of hourly counts as inline SVG (built from numbers only, so safe to embed).
pub fn sparkline(counts: &[u64]) -> String {
    const HEIGHT: u64 = 20;
    let max = counts.iter().copied().max().unwrap_or(0).max(1);
    let total: u64 = counts.iter().sum();
    let width = counts.len() * 3;
    let mut svg = format!(
        "<svg class=\"spark\" width=\"{width}\" height=\"{HEIGHT}\" viewBox=\"0 0 {width} {HEIGHT}\" role=\"img\">\
         <title>{total} verifications in the last 24 hours</title>"
    );
    for (i, &n) in counts.iter().enumerate() {
        let h = if n == 0 { 0 } else { (n * HEIGHT).div_ceil(max).max(1) };
        let _ = write!(svg, "<rect x=\"{}\" y=\"{}\" width=\"2\" height=\"{h}\"></rect>", i * 3, HEIGHT - h);
    }
    svg.push_str("</svg>");
    svg
}

/// One bar of an outcome chart: a bucket's verifications by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcomes {
    /// `VALID`.
    pub valid: u64,
    /// `RATE_LIMITED`.
    pub rate_limited: u64,
    /// `USAGE_EXCEEDED`.
    pub out_of_credits: u64,
    /// `REVOKED`, `DISABLED`, `EXPIRED`, `INSUFFICIENT_SCOPE`.
    pub refused: u64,
}

impl Outcomes {
    /// The outcomes of `counts`.
    pub fn of(counts: &keypal_sql::UsageCounts) -> Self {
        Outcomes {
            valid: counts.valid,
            rate_limited: counts.rate_limited,
            out_of_credits: counts.usage_exceeded,
            refused: counts.revoked + counts.disabled + counts.expired + counts.insufficient_scope,
        }
    }

    /// Adds `other`.
    pub fn add(&mut self, other: Outcomes) {
        self.valid += other.valid;
        self.rate_limited += other.rate_limited;
        self.out_of_credits += other.out_of_credits;
        self.refused += other.refused;
    }

    /// Every verification.
    pub fn total(&self) -> u64 {
        self.valid + self.rate_limited + self.out_of_credits + self.refused
    }

    /// (CSS class, count), bottom of the bar first.
    fn layers(&self) -> [(&'static str, u64); 4] {
        [
            ("valid", self.valid),
            ("limited", self.rate_limited),
            ("credits", self.out_of_credits),
            ("refused", self.refused),
        ]
    }
}

/// A stacked bar chart of verifications by outcome, one bar per bucket, as SVG that
/// scales to its container's width (built from numbers only, so safe to embed; colours
/// come from the stylesheet's classes, so it needs no inline style). `what` names the
/// buckets in its title, like "hours".
pub fn outcome_chart(bars: &[Outcomes], what: &str) -> String {
    const HEIGHT: u64 = 100;
    const STEP: usize = 10;
    let max = bars.iter().map(Outcomes::total).max().unwrap_or(0).max(1);
    let mut sum = Outcomes::default();
    for bar in bars {
        sum.add(*bar);
    }
    let width = (bars.len() * STEP).max(STEP);
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {width} {HEIGHT}\" preserveAspectRatio=\"none\" role=\"img\">\
         <title>{} verifications over {} {what}: {} valid, {} rate limited, {} out of credits, {} refused; \
         at most {max} in one</title>",
        sum.total(),
        bars.len(),
        sum.valid,
        sum.rate_limited,
        sum.out_of_credits,
        sum.refused,
    );
    for (i, bar) in bars.iter().enumerate() {
        let mut top = HEIGHT;
        let mut below = 0;
        for (class, n) in bar.layers() {
            if n == 0 {
                continue;
            }
            // Heights from the running total, so rounding never makes a bar taller than its total.
            below += n;
            let reached = HEIGHT - (below * HEIGHT).div_ceil(max).min(HEIGHT);
            let h = top.saturating_sub(reached).max(1);
            let y = top - h;
            let _ = write!(
                svg,
                "<rect class=\"{class}\" x=\"{}\" y=\"{y}\" width=\"{}\" height=\"{h}\"></rect>",
                i * STEP + 1,
                STEP - 2
            );
            top = y;
        }
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn times_read_like_people_write_them() {
        let now = datetime!(2025-10-18 12:00 UTC);
        assert_eq!(expiry(None, now).0, "Never expires");
        assert_eq!(expiry(Some(datetime!(2025-12-01 0:00 UTC)), now), ("Expires Dec 1, 2025".to_owned(), ""));
        assert_eq!(expiry(Some(datetime!(2025-10-20 0:00 UTC)), now).1, "warn");
        assert_eq!(expiry(Some(datetime!(2025-10-17 0:00 UTC)), now).0, "Expired Oct 17, 2025");
        assert_eq!(last_used(None, now), "Never used");
        assert_eq!(last_used(Some(datetime!(2025-10-18 11:59:30 UTC)), now), "just now");
        assert_eq!(last_used(Some(datetime!(2025-10-18 11:55 UTC)), now), "5m ago");
        assert_eq!(last_used(Some(datetime!(2025-10-18 10:00 UTC)), now), "2h ago");
        assert_eq!(last_used(Some(datetime!(2025-10-15 12:00 UTC)), now), "3d ago");
        assert_eq!(last_used(Some(datetime!(2025-01-02 12:00 UTC)), now), "Jan 2, 2025");
    }

    #[test]
    fn outcome_bars_stack_by_outcome_and_scale_to_the_busiest_bucket() {
        let bars = [
            Outcomes { valid: 50, rate_limited: 30, out_of_credits: 0, refused: 20 },
            Outcomes::default(),
            Outcomes { valid: 10, ..Outcomes::default() },
        ];
        let svg = outcome_chart(&bars, "hours");
        assert!(
            svg.contains(
                "<title>110 verifications over 3 hours: 60 valid, 30 rate limited, 0 out of credits, 20 refused"
            ),
            "{svg}"
        );
        // The busiest bar fills the height: 50 + 30 + 20 of 100.
        assert!(svg.contains("<rect class=\"valid\" x=\"1\" y=\"50\" width=\"8\" height=\"50\">"), "{svg}");
        assert!(svg.contains("<rect class=\"limited\" x=\"1\" y=\"20\" width=\"8\" height=\"30\">"), "{svg}");
        assert!(svg.contains("<rect class=\"refused\" x=\"1\" y=\"0\" width=\"8\" height=\"20\">"), "{svg}");
        assert!(svg.contains("<rect class=\"valid\" x=\"21\" y=\"90\" width=\"8\" height=\"10\">"), "{svg}");
        assert_eq!(svg.matches("<rect").count(), 4, "no rectangle for an empty bucket or outcome");
        assert!(!svg.contains("style"), "no inline style: the panel's CSP forbids it");
    }

    #[test]
    fn sparklines_scale_to_the_busiest_hour() {
        let svg = sparkline(&[0, 5, 10]);
        assert!(svg.contains("15 verifications"));
        assert!(svg.contains("height=\"20\"></rect>"), "the busiest hour is full height: {svg}");
        assert!(svg.contains("height=\"10\"></rect>"));
        assert!(svg.contains("height=\"0\"></rect>"));
        assert!(sparkline(&[0; 24]).contains("0 verifications"));
    }
}
