//! Webhooks: endpoints that are told about keys and applications, signed as the
//! Standard Webhooks specification says, delivered at least once.
//!
//! - A webhook is a document (`keypal_objects`, kind [`KIND`]): its URL, the events it
//!   wants, an optional application, and its signing secret sealed under the master key
//!   ([`crate::secrets::Secrets::seal`]); this module makes, changes and deletes them (the
//!   HTTP handlers are in [`crate::routes::webhooks`], the panel calls those).
//! - Events come from the outbox the SQL store writes in the transaction of each change
//!   (the server turns it on: [`keypal_sql::SqlStore::with_webhook_outbox`]), and from the
//!   scans of [`scan`] (keys expiring or expired; credits low or exhausted and rate
//!   limits, seen by `POST /v1/verify`), which fire each threshold once per key.
//! - [`dispatcher`] turns outbox events into one delivery per matching webhook;
//!   [`delivery`] sends them (leases, retries with backoff, disabling an endpoint that
//!   has failed for days) through a client that refuses private addresses.

pub mod delivery;
pub mod dispatcher;
pub mod scan;
pub mod signing;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use keypal::{Action, AuditContext, Event, StoreError};
use keypal_sql::{Delivery, NewDelivery, ObjectRef};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::Notify;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::State;

/// The document kind of webhooks.
pub const KIND: &str = keypal_sql::WEBHOOK_KIND;

/// Every event a webhook may ask for.
pub const EVENT_TYPES: [&str; 11] = [
    "key.created",
    "key.updated",
    "key.revoked",
    "key.rotated",
    "key.deleted",
    "key.expiring",
    "key.expired",
    "key.credits_low",
    "key.credits_exhausted",
    "key.rate_limited",
    "app.client_secret_rotated",
];

/// The type of the event `POST /v1/webhooks/{id}/test` sends (to that webhook only).
pub const TEST_EVENT: &str = "webhook.test";

/// The longest URL.
const MAX_URL_LENGTH: usize = 2048;
/// The longest description.
const MAX_DESCRIPTION_LENGTH: usize = 500;
/// Webhooks at most (each one is read by every dispatch).
const MAX_WEBHOOKS: usize = 100;

/// How webhooks run: set from the configuration (`webhooks_allow_private`,
/// `webhook_expiry_warnings`, `webhook_scan_interval`).
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Deliver to loopback, private, link-local and unique-local addresses too.
    pub allow_private: bool,
    /// How long before a key's expiry `key.expiring` fires (default 7 days and 1 day).
    pub expiry_warnings: Vec<Duration>,
    /// How often keys are scanned for expiry (default a minute).
    pub scan_every: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            allow_private: false,
            expiry_warnings: vec![Duration::from_secs(7 * 86_400), Duration::from_secs(86_400)],
            scan_every: Duration::from_secs(60),
        }
    }
}

/// What the server's webhook tasks share with the request handlers.
pub struct Webhooks {
    /// The settings.
    pub settings: WebhookSettings,
    /// Whether any webhook exists (refreshed by the dispatcher): when none does, the
    /// verify path does not even look at its results.
    pub(crate) any: AtomicBool,
    /// Wakes the sender (a delivery was made or retried).
    pub(crate) wake_sender: Notify,
    /// Signals from verifications (credits low or exhausted, rate limited).
    pub(crate) signals: scan::Signals,
}

impl Webhooks {
    /// The webhook state of a server with `settings`, and the receiving end of its signals.
    pub fn new(settings: WebhookSettings) -> (Arc<Self>, scan::SignalReceiver) {
        let (signals, receiver) = scan::Signals::new();
        // None until the dispatcher's first look (within a second of starting) or a create.
        let any = AtomicBool::new(false);
        let webhooks = Arc::new(Webhooks { settings, any, wake_sender: Notify::new(), signals });
        (webhooks, receiver)
    }

    /// Whether any webhook exists (as last seen).
    pub fn any(&self) -> bool {
        self.any.load(Ordering::Relaxed)
    }
}

/// A stored webhook.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Webhook {
    /// Its id.
    pub id: Uuid,
    /// Where deliveries are POSTed.
    pub url: String,
    /// The event types it wants.
    pub events: Vec<String>,
    /// Only the events of this application's keys (none: every application's).
    pub app_id: Option<Uuid>,
    /// What it is for.
    pub description: Option<String>,
    /// Whether deliveries are made to it.
    pub enabled: bool,
    /// Why it was disabled.
    pub disabled_reason: Option<String>,
    /// When it was disabled.
    #[serde(with = "time::serde::rfc3339::option")]
    pub disabled_at: Option<OffsetDateTime>,
    /// The signing secret, sealed under the master key.
    pub secret: String,
    /// The secret before the last rotation, sealed: it signs too until
    /// `previous_secret_until`, so receivers can move to the new one at their pace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret: Option<String>,
    /// Until when the previous secret signs.
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub previous_secret_until: Option<OffsetDateTime>,
    /// When it was made.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl Webhook {
    /// Whether it wants an event of `event_type` about `namespace`.
    pub fn wants(&self, event_type: &str, namespace: Option<&str>) -> bool {
        self.enabled
            && self.events.iter().any(|e| e == event_type)
            && self.app_id.is_none_or(|app| namespace == Some(app.to_string().as_str()))
    }

    /// The API view.
    pub fn view(&self) -> WebhookView {
        WebhookView {
            id: self.id,
            url: self.url.clone(),
            events: self.events.clone(),
            app_id: self.app_id,
            description: self.description.clone(),
            enabled: self.enabled,
            disabled_reason: self.disabled_reason.clone(),
            disabled_at: self.disabled_at,
            created_at: self.created_at,
        }
    }

    /// The sealing context of its secret.
    fn secret_context(id: Uuid) -> String {
        format!("webhook:{id}")
    }

    /// Its signing keys, unsealed: the secret's, then the previous secret's while that
    /// still signs ([`SECRET_OVERLAP`] after a rotation).
    pub fn signing_keys(&self, state: &State) -> Result<Vec<zeroize::Zeroizing<Vec<u8>>>, ApiError> {
        let previous = self
            .previous_secret
            .as_ref()
            .filter(|_| self.previous_secret_until.is_some_and(|until| until > OffsetDateTime::now_utc()));
        std::iter::once(&self.secret)
            .chain(previous)
            .map(|sealed| {
                let secret =
                    state.secrets.open(&Self::secret_context(self.id), sealed).map_err(|e| ApiError::internal(&e))?;
                signing::key_of(&secret).ok_or_else(|| ApiError::internal(&"a stored webhook secret is not one"))
            })
            .collect()
    }
}

/// A webhook as the API shows it: never its secret.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebhookView {
    /// Its id.
    #[schema(example = crate::extract::example_id)]
    pub id: Uuid,
    /// Where deliveries are POSTed.
    #[schema(example = "https://hooks.example.com/keypal")]
    pub url: String,
    /// The event types it wants.
    #[schema(example = json!(["key.revoked", "key.expiring"]))]
    pub events: Vec<String>,
    /// Only the events of this application's keys (`null`: every application's).
    pub app_id: Option<Uuid>,
    /// What it is for.
    pub description: Option<String>,
    /// Whether deliveries are made to it (an endpoint failing for 3 days is disabled;
    /// `PATCH` with `enabled: true` enables it again).
    pub enabled: bool,
    /// Why it was disabled.
    pub disabled_reason: Option<String>,
    /// When it was disabled.
    #[serde(with = "time::serde::rfc3339::option")]
    pub disabled_at: Option<OffsetDateTime>,
    /// When it was made.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// `POST /v1/webhooks`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// An `http` or `https` URL, at most 2048 characters, without credentials. Loopback
    /// and private addresses are refused unless the server runs with `--webhooks-allow-private`.
    #[schema(example = "https://hooks.example.com/keypal")]
    pub url: String,
    /// The event types it wants (at least one; see the list in the description of `WebhookView`).
    #[schema(value_type = Vec<EventTypeName>, min_items = 1, example = json!(["key.revoked"]))]
    pub events: Vec<String>,
    /// Only the events of this application's keys (default: every application's).
    pub app_id: Option<Uuid>,
    /// What it is for (at most 500 characters).
    #[schema(max_length = 500)]
    pub description: Option<String>,
}

/// `PATCH /v1/webhooks/{id}`: every field optional; `null` clears `app_id` and `description`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookPatch {
    /// A new URL (the same rules as when made).
    pub url: Option<String>,
    /// New event types, replacing the old ones.
    #[schema(value_type = Option<Vec<EventTypeName>>, min_items = 1)]
    pub events: Option<Vec<String>>,
    /// A new application (`null`: every application's).
    #[serde(default, deserialize_with = "crate::patch::double_option")]
    pub app_id: Option<Option<Uuid>>,
    /// A new description (`null` clears it).
    #[serde(default, deserialize_with = "crate::patch::double_option")]
    #[schema(max_length = 500)]
    pub description: Option<Option<String>>,
    /// `true` enables a disabled webhook again; `false` disables it.
    pub enabled: Option<bool>,
}

impl WebhookPatch {
    fn fields(&self) -> Vec<&'static str> {
        [
            ("url", self.url.is_some()),
            ("events", self.events.is_some()),
            ("app_id", self.app_id.is_some()),
            ("description", self.description.is_some()),
            ("enabled", self.enabled.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }
}

/// The name of an event type, in the document.
pub struct EventTypeName;

impl utoipa::PartialSchema for EventTypeName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::schema::one_of(EVENT_TYPES)
    }
}

impl ToSchema for EventTypeName {}

/// `201` of `POST /v1/webhooks`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedWebhook {
    /// The webhook.
    pub webhook: WebhookView,
    /// Its signing secret (`whsec_…`): shown once.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    pub secret: String,
}

/// How long the secret before a rotation keeps signing beside the new one.
pub const SECRET_OVERLAP: time::Duration = time::Duration::hours(24);

/// `POST /v1/webhooks/{id}/secret`.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookSecret {
    /// The new signing secret: shown once. Deliveries carry a signature by each secret
    /// until `previous_secret_until`, then by the new one only.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    pub secret: String,
    /// Until when the secret before this rotation also signs (24 hours).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub previous_secret_until: OffsetDateTime,
}

/// `GET /v1/webhooks`.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    /// Every webhook, oldest first.
    pub webhooks: Vec<WebhookView>,
}

/// A delivery as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryView {
    /// Its id.
    pub id: Uuid,
    /// The event's id: the `webhook-id` header, the same on every attempt.
    pub event_id: Uuid,
    /// The event's type.
    #[schema(example = "key.revoked")]
    pub event_type: String,
    /// `pending`, `succeeded` or `failed` (no more attempts).
    #[schema(example = "succeeded")]
    pub status: &'static str,
    /// Attempts made.
    pub attempts: u32,
    /// When the next attempt is due (while pending).
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_attempt_at: Option<OffsetDateTime>,
    /// When it was made.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the last attempt was made.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_attempt_at: Option<OffsetDateTime>,
    /// The HTTP status of the last answer.
    pub last_status: Option<u16>,
    /// The start of the last answer (at most 256 bytes), or why there was none.
    pub last_response: Option<String>,
}

impl From<&Delivery> for DeliveryView {
    fn from(d: &Delivery) -> Self {
        DeliveryView {
            id: d.id,
            event_id: d.event_id,
            event_type: d.event_type.clone(),
            status: d.status.as_str(),
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at,
            created_at: d.created_at,
            last_attempt_at: d.last_attempt_at,
            last_status: d.last_status,
            last_response: d.last_response.clone(),
        }
    }
}

/// `GET /v1/webhooks/{id}/deliveries`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    /// Newest first.
    pub deliveries: Vec<DeliveryView>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<Uuid>,
}

/// Whether an address is one webhooks are not sent to (unless allowed): loopback,
/// private, link-local, unique-local, shared, documentation, multicast, unspecified
/// and reserved ranges, IPv4 inside IPv6 included.
///
/// ```
/// # use keypal_server::webhook_address_refused as refused;
/// assert!(refused("127.0.0.1".parse().unwrap()));
/// assert!(refused("10.1.2.3".parse().unwrap()));
/// assert!(refused("169.254.169.254".parse().unwrap()));
/// assert!(refused("::ffff:192.168.0.1".parse().unwrap()));
/// assert!(refused("fd00::1".parse().unwrap()));
/// assert!(!refused("93.184.216.34".parse().unwrap()));
/// assert!(!refused("2606:4700::1111".parse().unwrap()));
/// ```
pub fn address_refused(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && v4.octets()[2] == 0)
                || (a == 198 && (b == 18 || b == 19))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return address_refused(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first == 0x2001 && v6.segments()[1] == 0x0db8)
                || (first == 0x0064 && v6.segments()[1] == 0xff9b)
                || v6.segments()[..6] == [0; 6]
        }
    }
}

/// A checked webhook URL, or the `INVALID_INPUT` refusal of `field`.
pub fn check_url(field: &str, url: &str, allow_private: bool) -> Result<String, ApiError> {
    if url.len() > MAX_URL_LENGTH {
        return Err(ApiError::invalid(field, "must be at most 2048 characters"));
    }
    let parsed = url::Url::parse(url).map_err(|e| ApiError::invalid(field, format!("is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ApiError::invalid(field, "must be an http or https URL"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ApiError::invalid(
            field,
            "must not hold credentials (put them in the path or verify the signature)",
        ));
    }
    let Some(host) = parsed.host() else { return Err(ApiError::invalid(field, "must name a host")) };
    if !allow_private {
        let refused = match host {
            url::Host::Ipv4(ip) => address_refused(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => address_refused(IpAddr::V6(ip)),
            url::Host::Domain(name) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                name == "localhost" || name.ends_with(".localhost")
            }
        };
        if refused {
            return Err(ApiError::invalid(
                field,
                "must not name a loopback or private address (the server runs without --webhooks-allow-private)",
            ));
        }
    }
    Ok(parsed.to_string())
}

fn check_events(field: &str, events: Vec<String>) -> Result<Vec<String>, ApiError> {
    let mut checked: Vec<String> = Vec::with_capacity(events.len());
    for event in events {
        if !EVENT_TYPES.contains(&event.as_str()) {
            let known = EVENT_TYPES.join(", ");
            return Err(ApiError::invalid(field, format!("{event:?} is not an event type; one of {known}")));
        }
        if !checked.contains(&event) {
            checked.push(event);
        }
    }
    if checked.is_empty() {
        return Err(ApiError::invalid(field, "must name at least one event type"));
    }
    Ok(checked)
}

fn check_description(description: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(text) = description else { return Ok(None) };
    if text.chars().count() > MAX_DESCRIPTION_LENGTH {
        return Err(ApiError::invalid("description", "must be at most 500 characters"));
    }
    if text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(ApiError::invalid("description", "must not contain control characters"));
    }
    Ok(Some(text))
}

fn check_app(state: &State, app_id: Option<Uuid>) -> Result<Option<Uuid>, ApiError> {
    match app_id {
        Some(id) if state.app(id).is_none() => Err(ApiError::invalid("app_id", "no such application")),
        other => Ok(other),
    }
}

fn event(action: Action, context: AuditContext, webhook: &Webhook, details: Value) -> Event {
    let mut event = Event::new(action, OffsetDateTime::now_utc(), context);
    event.namespace = webhook.app_id.map(|id| id.to_string());
    let mut all = json!({ "webhook_id": webhook.id, "url": webhook.url });
    if let (Some(all), Value::Object(more)) = (all.as_object_mut(), details) {
        all.extend(more);
    }
    event.details = Some(all);
    event
}

fn body_of(webhook: &Webhook) -> Result<Value, ApiError> {
    serde_json::to_value(webhook).map_err(|e| ApiError::internal(&e))
}

/// Every stored webhook, oldest first.
pub async fn all(state: &State) -> Result<Vec<Webhook>, StoreError> {
    let objects = state.store.list_objects(KIND).await?;
    let mut webhooks = Vec::with_capacity(objects.len());
    for object in objects {
        match serde_json::from_value(object.body) {
            Ok(webhook) => webhooks.push(webhook),
            Err(e) => tracing::warn!(id = %object.id, error = %e, "a stored webhook cannot be read; it is skipped"),
        }
    }
    Ok(webhooks)
}

/// The webhook with this id (404 otherwise).
pub async fn find(state: &State, id: Uuid) -> Result<Webhook, ApiError> {
    let object = state.store.get_object(KIND, &id.to_string()).await?.ok_or_else(|| ApiError::not_found("webhook"))?;
    serde_json::from_value(object.body).map_err(|e| ApiError::internal(&e))
}

/// Makes a webhook; answers its secret once.
pub async fn create(state: &State, request: NewWebhook, context: AuditContext) -> Result<CreatedWebhook, ApiError> {
    let allow_private = state.webhooks.settings.allow_private;
    let url = check_url("url", &request.url, allow_private)?;
    let events = check_events("events", request.events)?;
    let app_id = check_app(state, request.app_id)?;
    let description = check_description(request.description)?;
    if state.store.list_objects(KIND).await?.len() >= MAX_WEBHOOKS {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "WEBHOOK_LIMIT_REACHED",
            "there are 100 webhooks already; delete one first",
        ));
    }
    let id = Uuid::now_v7();
    let secret = signing::new_secret().map_err(|e| ApiError::internal(&e))?;
    let sealed = state.secrets.seal(&Webhook::secret_context(id), &secret).map_err(|e| ApiError::internal(&e))?;
    let webhook = Webhook {
        id,
        url,
        events,
        app_id,
        description,
        enabled: true,
        disabled_reason: None,
        disabled_at: None,
        secret: sealed,
        previous_secret: None,
        previous_secret_until: None,
        created_at: OffsetDateTime::now_utc(),
    };
    let event = event(Action::WebhookCreated, context, &webhook, json!({ "events": webhook.events }));
    state.store.insert_object(KIND, &id.to_string(), None, &body_of(&webhook)?, Some(&event)).await?;
    state.webhooks.any.store(true, Ordering::Relaxed);
    Ok(CreatedWebhook { webhook: webhook.view(), secret: secret.to_string() })
}

/// Changes a webhook's settings.
pub async fn update(
    state: &State,
    id: Uuid,
    patch: WebhookPatch,
    context: AuditContext,
) -> Result<WebhookView, ApiError> {
    let mut webhook = find(state, id).await?;
    let fields = patch.fields();
    if let Some(url) = patch.url {
        webhook.url = check_url("url", &url, state.webhooks.settings.allow_private)?;
    }
    if let Some(events) = patch.events {
        webhook.events = check_events("events", events)?;
    }
    if let Some(app_id) = patch.app_id {
        webhook.app_id = check_app(state, app_id)?;
    }
    if let Some(description) = patch.description {
        webhook.description = check_description(description)?;
    }
    if let Some(enabled) = patch.enabled {
        if enabled != webhook.enabled {
            webhook.disabled_at = (!enabled).then(OffsetDateTime::now_utc);
            webhook.disabled_reason = (!enabled).then(|| "disabled by an administrator".to_owned());
        }
        webhook.enabled = enabled;
    }
    let event = event(Action::WebhookUpdated, context, &webhook, json!({ "fields": fields }));
    if !state.store.update_object(KIND, &id.to_string(), &body_of(&webhook)?, Some(&event)).await? {
        return Err(ApiError::not_found("webhook"));
    }
    state.webhooks.wake_sender.notify_one();
    Ok(webhook.view())
}

/// Deletes a webhook and its deliveries.
pub async fn delete(state: &State, id: Uuid, context: AuditContext) -> Result<(), ApiError> {
    let webhook = find(state, id).await?;
    let event = event(Action::WebhookDeleted, context, &webhook, json!({}));
    let text = id.to_string();
    if !state.store.delete_objects(&[ObjectRef { kind: KIND, id: &text, body: None }], Some(&event)).await? {
        return Err(ApiError::not_found("webhook"));
    }
    state.store.delete_deliveries(&text).await?;
    Ok(())
}

/// Replaces a webhook's signing secret; answers the new one once.
pub async fn rotate_secret(state: &State, id: Uuid, context: AuditContext) -> Result<WebhookSecret, ApiError> {
    let mut webhook = find(state, id).await?;
    let secret = signing::new_secret().map_err(|e| ApiError::internal(&e))?;
    let sealed = state.secrets.seal(&Webhook::secret_context(id), &secret).map_err(|e| ApiError::internal(&e))?;
    let until = OffsetDateTime::now_utc() + SECRET_OVERLAP;
    webhook.previous_secret = Some(std::mem::replace(&mut webhook.secret, sealed));
    webhook.previous_secret_until = Some(until);
    let event = event(Action::WebhookSecretRotated, context, &webhook, json!({}));
    if !state.store.update_object(KIND, &id.to_string(), &body_of(&webhook)?, Some(&event)).await? {
        return Err(ApiError::not_found("webhook"));
    }
    Ok(WebhookSecret { secret: secret.to_string(), previous_secret_until: until })
}

/// Queues a `webhook.test` event to this webhook (sent within a second or two, enabled or not).
pub async fn send_test(state: &State, id: Uuid) -> Result<DeliveryView, ApiError> {
    let webhook = find(state, id).await?;
    let event_id = Uuid::now_v7();
    let body = json!({
        "type": TEST_EVENT,
        "timestamp": dispatcher::rfc3339(OffsetDateTime::now_utc()),
        "data": { "webhook": { "id": webhook.id, "url": webhook.url } },
    });
    let new =
        NewDelivery { webhook_id: id.to_string(), event_id, event_type: TEST_EVENT.to_owned(), body: body.to_string() };
    let delivery = state.store.insert_delivery(&new).await?;
    state.webhooks.wake_sender.notify_one();
    Ok(DeliveryView::from(&delivery))
}

/// A webhook's deliveries, newest first.
pub async fn deliveries(state: &State, id: Uuid, cursor: Option<Uuid>, limit: u32) -> Result<DeliveryList, ApiError> {
    find(state, id).await?;
    let page = state.store.deliveries(&id.to_string(), cursor, limit).await?;
    Ok(DeliveryList { deliveries: page.items.iter().map(DeliveryView::from).collect(), next_cursor: page.next_cursor })
}

/// Sends a delivery again (due now, with its `webhook-id`), whatever its state.
pub async fn retry(state: &State, id: Uuid, delivery_id: Uuid) -> Result<DeliveryView, ApiError> {
    find(state, id).await?;
    let delivery = state
        .store
        .retry_delivery(&id.to_string(), delivery_id)
        .await?
        .ok_or_else(|| ApiError::not_found("delivery"))?;
    state.webhooks.wake_sender.notify_one();
    Ok(DeliveryView::from(&delivery))
}

/// Disables a webhook that has been failing since `since` (audited as the system).
/// Does nothing when it is already disabled or gone.
pub(crate) async fn disable_failing(state: &State, id: Uuid, since: OffsetDateTime) -> Result<(), ApiError> {
    let mut webhook = match find(state, id).await {
        Ok(webhook) if webhook.enabled => webhook,
        _ => return Ok(()),
    };
    let reason = format!("every delivery failed since {}", dispatcher::rfc3339(since));
    webhook.enabled = false;
    webhook.disabled_at = Some(OffsetDateTime::now_utc());
    webhook.disabled_reason = Some(reason.clone());
    let details = json!({ "fields": ["enabled"], "disabled": reason });
    let event = event(Action::WebhookUpdated, AuditContext::new("system"), &webhook, details);
    state.store.update_object(KIND, &id.to_string(), &body_of(&webhook)?, Some(&event)).await?;
    tracing::warn!(webhook = %id, "disabled a webhook whose deliveries have failed for 3 days");
    Ok(())
}
