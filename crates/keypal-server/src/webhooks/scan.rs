//! Events no change causes, each fired once per key and threshold across instances
//! ([`keypal_sql::SqlStore::fire_once`]: a mark and the outbox event in one transaction;
//! the mark that is already there writes nothing):
//!
//! - `key.expiring` and `key.expired`, from a periodic scan of bands of `expires_at`
//!   (the index; never the whole table): a key expiring within the smallest warning
//!   fires that warning; one expiring between two warnings fires the larger one, so a
//!   key gets each warning it lives through, once. `key.expired` looks back a week.
//! - `key.credits_low`, `key.credits_exhausted` and `key.rate_limited`, from what
//!   `POST /v1/verify` answers ([`Signals::observe`]): no database write on the verify
//!   path; a signal is deduplicated in memory and written by a background task. Credits
//!   fire once per refill period (once for keys without a refill); a rate limit once per
//!   window of the key's limit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keypal::{Code, KeyId, KeyRecord, Verification};
use serde_json::json;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::apps::App;
use crate::state::State;

/// How far back `key.expired` looks (a key that expired while no instance ran for
/// longer is not announced).
const EXPIRED_LOOKBACK: Duration = Duration::from_secs(7 * 86_400);
/// Keys read per page of a scan.
const PAGE: u32 = 500;
/// Signals waiting for the background task at most (more are dropped, and logged).
const QUEUE: usize = 10_000;
/// Keys remembered per signal kind before the memory is cleared.
const REMEMBERED: usize = 100_000;

/// A threshold's text: `7d`, `1d`, `36h`.
fn label(warning: Duration) -> String {
    let secs = warning.as_secs();
    if secs.is_multiple_of(86_400) {
        format!("{}d", secs / 86_400)
    } else if secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else {
        format!("{secs}s")
    }
}

/// Fires the events of the keys in `(from, to]` that have not fired `kind` at `threshold`.
async fn fire_band(
    state: &State,
    kind: &str,
    threshold: &str,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Result<u64, keypal::StoreError> {
    let mut after = None;
    let mut fired = 0;
    loop {
        let page = state.store.keys_expiring(from, to, (kind, threshold), after, PAGE).await?;
        for record in &page {
            let details = json!({ "threshold": threshold });
            fired += u64::from(state.store.fire_once(kind, threshold, record, Some(details)).await?);
        }
        match page.last() {
            Some(last) if page.len() == PAGE as usize => after = last.expires_at.map(|at| (at, last.id)),
            _ => return Ok(fired),
        }
    }
}

/// One scan for expiry at `now`; how many events fired.
pub async fn scan_once(state: &State, now: OffsetDateTime) -> Result<u64, keypal::StoreError> {
    let mut warnings = state.webhooks.settings.expiry_warnings.clone();
    warnings.sort();
    warnings.dedup();
    let mut fired = fire_band(state, "key.expired", "expired", now - EXPIRED_LOOKBACK, now).await?;
    let mut lower = Duration::ZERO;
    for warning in warnings {
        fired += fire_band(state, "key.expiring", &label(warning), now + lower, now + warning).await?;
        lower = warning;
    }
    Ok(fired)
}

/// Scans for expiry every `scan_every` until the task is aborted (not while no webhook exists).
pub async fn run(state: Arc<State>) {
    let mut tick = tokio::time::interval(state.webhooks.settings.scan_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !state.webhooks.any() {
            continue;
        }
        if let Err(e) = scan_once(&state, OffsetDateTime::now_utc()).await {
            tracing::warn!(error = %e, "the webhook expiry scan failed; will retry");
        }
    }
}

/// One event a verification showed.
#[derive(Debug, Clone)]
pub struct Signal {
    kind: &'static str,
    threshold: String,
    key_id: KeyId,
}

/// The receiving end of [`Signals`], for [`run_signals`].
pub type SignalReceiver = mpsc::Receiver<Signal>;

/// What verifications showed, deduplicated in memory, for the background task.
pub struct Signals {
    sender: mpsc::Sender<Signal>,
    /// The last threshold sent per key and kind.
    seen: Mutex<HashMap<(KeyId, &'static str), String>>,
}

impl Signals {
    /// Signals and their receiving end.
    pub fn new() -> (Self, SignalReceiver) {
        let (sender, receiver) = mpsc::channel(QUEUE);
        (Signals { sender, seen: Mutex::new(HashMap::new()) }, receiver)
    }

    /// Looks at a verification's result: credits low (below the application's
    /// `credits_low_threshold`) or exhausted, or the key rate limited. Costs a few
    /// comparisons unless one of these holds; never waits.
    pub fn observe(&self, app: &App, verification: &Verification, window: Option<Duration>) {
        let Some(record) = verification.record() else { return };
        let event = match verification.code() {
            Code::RateLimited => {
                let window = window.map_or(60, |w| w.as_secs().max(1));
                let index = OffsetDateTime::now_utc().unix_timestamp().unsigned_abs() / window;
                Some(("key.rate_limited", format!("{window}s:{index}")))
            }
            Code::UsageExceeded => credits_event(Some(0), None, verification.refill_at()),
            Code::Valid => credits_event(verification.remaining(), app.credits_low_threshold, verification.refill_at()),
            _ => None,
        };
        let Some((kind, threshold)) = event else { return };
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.get(&(record.id, kind)) == Some(&threshold) {
                return;
            }
            if seen.len() >= REMEMBERED {
                seen.clear();
            }
            seen.insert((record.id, kind), threshold.clone());
        }
        if self.sender.try_send(Signal { kind, threshold, key_id: record.id }).is_err() {
            tracing::warn!(kind, "too many webhook signals waiting; one was dropped");
        }
    }
}

/// The credits event a key with `remaining` credits calls for, with its threshold
/// text (`<threshold>:<period>`): `key.credits_exhausted` at 0, `key.credits_low`
/// below the application's `low` threshold. The period is the next refill (`once`
/// without a refill), so each fires once per refill period.
fn credits_event(
    remaining: Option<u64>,
    low: Option<u64>,
    refill_at: Option<OffsetDateTime>,
) -> Option<(&'static str, String)> {
    let period = || refill_at.map_or_else(|| "once".to_owned(), |at| at.unix_timestamp().to_string());
    match (remaining?, low) {
        (0, _) => Some(("key.credits_exhausted", format!("0:{}", period()))),
        (left, Some(low)) if left < low => Some(("key.credits_low", format!("{low}:{}", period()))),
        _ => None,
    }
}

/// Fires `key.credits_low` or `key.credits_exhausted` for a key whose credits an
/// operator has just set or decremented (`POST /v1/keys/{id}/credits`, `PATCH`, the CLI),
/// once per threshold and refill period, as a verification finding them so would. Written
/// at once, not through the signals' queue: the CLI runs no background task. A failure is
/// logged; the change of credits stands.
pub async fn fire_credits(state: &State, app: &App, record: &KeyRecord) {
    let now = OffsetDateTime::now_utc();
    if let Some((kind, threshold)) = credits_event(record.remaining, app.credits_low_threshold, record.refill_at(now)) {
        fire(state, kind, &threshold, record).await;
    }
}

/// Writes one event for `record`, once per key, `kind` and `threshold` across instances.
async fn fire(state: &State, kind: &str, threshold: &str, record: &KeyRecord) {
    let details = json!({ "threshold": threshold.split(':').next().unwrap_or_default() });
    if let Err(e) = state.store.fire_once(kind, threshold, record, Some(details)).await {
        tracing::warn!(error = %e, "writing a webhook event failed");
    }
}

/// Writes the signals' events (each once per key and threshold) until the task is aborted.
pub async fn run_signals(state: Arc<State>, mut receiver: SignalReceiver) {
    while let Some(signal) = receiver.recv().await {
        let record = match keypal::Store::get(&*state.store, signal.key_id).await {
            Ok(Some(record)) => record,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "reading a key for a webhook event failed");
                continue;
            }
        };
        fire(&state, signal.kind, &signal.threshold, &record).await;
    }
}
