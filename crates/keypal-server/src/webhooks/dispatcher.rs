//! The dispatcher: turns outbox events into deliveries, one per enabled webhook that
//! wants the event, in the transaction that takes the events out of the outbox
//! ([`keypal_sql::SqlStore::dispatch_outbox`]; on PostgreSQL each instance claims
//! different rows). The payload is made here, once per event, and stored with each
//! delivery: every attempt sends the same bytes under the same `webhook-id`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use keypal_sql::{NewDelivery, OutboxEvent};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::Webhook;
use crate::keys::KeyView;
use crate::state::State;

/// How often the outbox is looked at when it was empty.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// Events taken per transaction.
const BATCH: u32 = 100;
/// Finished deliveries are kept this long (then pruned).
const KEEP_DELIVERIES: time::Duration = time::Duration::days(30);
/// How often finished deliveries are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// A time as RFC 3339 text.
pub(crate) fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

/// The payload of an event: `{type, timestamp, data: {key?, app?, ...}}`. The key is its
/// public view as the API shows it; never the key, its hash or a secret.
pub fn payload(event: &OutboxEvent, app_names: &HashMap<String, String>) -> Value {
    let mut data = serde_json::Map::new();
    if let Some(record) = &event.key {
        data.insert("key".into(), serde_json::to_value(KeyView::from(record)).unwrap_or(Value::Null));
    }
    if let Some(namespace) = &event.namespace {
        data.insert("app".into(), json!({ "id": namespace, "name": app_names.get(namespace) }));
    }
    if let Some(Value::Object(details)) = &event.details {
        for name in ["threshold", "new_key_id"] {
            if let Some(value) = details.get(name) {
                data.insert(name.into(), value.clone());
            }
        }
    }
    json!({ "type": event.event_type, "timestamp": rfc3339(event.at), "data": data })
}

/// The deliveries of `events` to `webhooks`.
pub fn plan(events: &[OutboxEvent], webhooks: &[Webhook], app_names: &HashMap<String, String>) -> Vec<NewDelivery> {
    let mut deliveries = Vec::new();
    for event in events {
        let wanting: Vec<&Webhook> =
            webhooks.iter().filter(|w| w.wants(&event.event_type, event.namespace.as_deref())).collect();
        if wanting.is_empty() {
            continue;
        }
        let body = payload(event, app_names).to_string();
        deliveries.extend(wanting.into_iter().map(|webhook| NewDelivery {
            webhook_id: webhook.id.to_string(),
            event_id: event.id,
            event_type: event.event_type.clone(),
            body: body.clone(),
        }));
    }
    deliveries
}

/// Dispatches what the outbox holds now; how many events were taken.
pub async fn dispatch_once(state: &State) -> Result<usize, keypal::StoreError> {
    let webhooks = super::all(state).await?;
    state.webhooks.any.store(!webhooks.is_empty(), Ordering::Relaxed);
    let app_names: HashMap<String, String> =
        state.apps().iter().map(|r| (r.app.id.to_string(), r.app.name.clone())).collect();
    let mut taken = 0;
    loop {
        let n = state.store.dispatch_outbox(BATCH, |events| plan(events, &webhooks, &app_names)).await?;
        taken += n;
        if n < BATCH as usize {
            break;
        }
    }
    if taken > 0 {
        state.webhooks.wake_sender.notify_one();
    }
    Ok(taken)
}

/// Runs the dispatcher until the task is aborted; prunes finished deliveries hourly.
pub async fn run(state: Arc<State>) {
    let mut pruned_at = tokio::time::Instant::now();
    loop {
        match dispatch_once(&state).await {
            Ok(n) if n > 0 => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "dispatching webhook events failed; will retry"),
        }
        if pruned_at.elapsed() >= PRUNE_EVERY {
            pruned_at = tokio::time::Instant::now();
            if let Err(e) = state.store.prune_deliveries(OffsetDateTime::now_utc() - KEEP_DELIVERIES).await {
                tracing::warn!(error = %e, "pruning old webhook deliveries failed");
            }
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}
