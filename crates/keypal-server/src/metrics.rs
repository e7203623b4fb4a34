//! Prometheus metrics: verifications by result code and a verification latency histogram.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use keypal::Code;

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 12] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// Counters, updated lock-free on every verification.
#[derive(Debug, Default)]
pub struct Metrics {
    by_code: [AtomicU64; Code::ALL.len()],
    /// Cumulative counts per bucket (the last slot is +Inf).
    latency: [AtomicU64; BUCKETS.len() + 1],
    latency_sum_micros: AtomicU64,
    rejected_callers: AtomicU64,
}

impl Metrics {
    /// Records one verification.
    pub fn observe(&self, code: Code, took: Duration) {
        if let Some(i) = Code::ALL.iter().position(|c| *c == code) {
            self.by_code[i].fetch_add(1, Ordering::Relaxed);
        }
        let seconds = took.as_secs_f64();
        let slot = BUCKETS.iter().position(|b| seconds <= *b).unwrap_or(BUCKETS.len());
        self.latency[slot].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros.fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Records a verify request refused before verifying (bad service key or client secret).
    pub fn reject_caller(&self) {
        self.rejected_callers.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    ///
    /// ```
    /// let metrics = keypal_server::Metrics::default();
    /// metrics.observe(keypal::Code::Valid, std::time::Duration::from_micros(300));
    /// let text = metrics.render();
    /// assert!(text.contains("keypal_verifications_total{code=\"VALID\"} 1"));
    /// assert!(text.contains("keypal_verify_duration_seconds_bucket{le=\"0.0005\"} 1"));
    /// ```
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP keypal_verifications_total Keys verified, by result code.\n");
        out.push_str("# TYPE keypal_verifications_total counter\n");
        for (code, count) in Code::ALL.iter().zip(&self.by_code) {
            let _ = writeln!(out, "keypal_verifications_total{{code=\"{code}\"}} {}", count.load(Ordering::Relaxed));
        }
        out.push_str("# HELP keypal_verify_callers_rejected_total Verify requests refused for a bad service key or client secret.\n");
        out.push_str("# TYPE keypal_verify_callers_rejected_total counter\n");
        let _ = writeln!(out, "keypal_verify_callers_rejected_total {}", self.rejected_callers.load(Ordering::Relaxed));
        out.push_str("# HELP keypal_verify_duration_seconds Time to verify a key, from request to answer.\n");
        out.push_str("# TYPE keypal_verify_duration_seconds histogram\n");
        let mut cumulative = 0;
        for (i, count) in self.latency.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let le = BUCKETS.get(i).map_or("+Inf".to_owned(), |b| b.to_string());
            let _ = writeln!(out, "keypal_verify_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let sum = self.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "keypal_verify_duration_seconds_sum {sum}");
        let _ = writeln!(out, "keypal_verify_duration_seconds_count {cumulative}");
        out
    }
}
