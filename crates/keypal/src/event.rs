//! Events: the audit log and analytics hooks.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::clock::Clock;
use crate::record::KeyId;
use crate::tags::Tags;
use crate::verification::{Code, Verification};

/// What happened: to a key, or, for the `app_*` and `*_rotated` secrets actions that
/// `keypal serve` records, to an application or the service's secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Action {
    /// A key was created.
    Created,
    /// A key issued elsewhere was imported.
    Imported,
    /// A key was presented (sent to event sinks only, not written to the audit log).
    Verified,
    /// A key was revoked.
    Revoked,
    /// A key was rotated (the event is about the old key; `details.new_key_id` names the new one).
    Rotated,
    /// A key was enabled.
    Enabled,
    /// A key was disabled.
    Disabled,
    /// Some fields of a key changed.
    Updated,
    /// A key was deleted.
    Deleted,
    /// An application (a namespace of keys) was created; `namespace` names it.
    AppCreated,
    /// An application's settings changed; `details.fields` names which.
    AppUpdated,
    /// An application was deleted (its keys revoked first, each with its own event).
    AppDeleted,
    /// An application's client secret was replaced.
    ClientSecretRotated,
    /// The service key was replaced.
    ServiceKeyRotated,
    /// A management token was made; `details` names it (never the token).
    TokenCreated,
    /// A management token was revoked; `details` names it.
    TokenRevoked,
    /// A key's credits were set, incremented or decremented; `details` holds `op` and `amount`.
    CreditsChanged,
    /// A webhook was made; `details` names its id and URL.
    WebhookCreated,
    /// A webhook's settings changed (`details.fields` names which), or it was disabled
    /// after failing for days (`details.disabled`).
    WebhookUpdated,
    /// A webhook was deleted.
    WebhookDeleted,
    /// A webhook's signing secret was replaced.
    WebhookSecretRotated,
}

impl Action {
    /// Every action, in the order above.
    ///
    /// ```
    /// use keypal::Action;
    /// for action in Action::ALL {
    ///     assert_eq!(action.as_str().parse::<Action>(), Ok(action));
    /// }
    /// ```
    pub const ALL: [Action; 21] = [
        Action::Created,
        Action::Imported,
        Action::Verified,
        Action::Revoked,
        Action::Rotated,
        Action::Enabled,
        Action::Disabled,
        Action::Updated,
        Action::Deleted,
        Action::AppCreated,
        Action::AppUpdated,
        Action::AppDeleted,
        Action::ClientSecretRotated,
        Action::ServiceKeyRotated,
        Action::TokenCreated,
        Action::TokenRevoked,
        Action::CreditsChanged,
        Action::WebhookCreated,
        Action::WebhookUpdated,
        Action::WebhookDeleted,
        Action::WebhookSecretRotated,
    ];

    /// The stable text: `created`, `revoked`, `app_deleted`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Imported => "imported",
            Action::Verified => "verified",
            Action::Revoked => "revoked",
            Action::Rotated => "rotated",
            Action::Enabled => "enabled",
            Action::Disabled => "disabled",
            Action::Updated => "updated",
            Action::Deleted => "deleted",
            Action::AppCreated => "app_created",
            Action::AppUpdated => "app_updated",
            Action::AppDeleted => "app_deleted",
            Action::ClientSecretRotated => "client_secret_rotated",
            Action::ServiceKeyRotated => "service_key_rotated",
            Action::TokenCreated => "token_created",
            Action::TokenRevoked => "token_revoked",
            Action::CreditsChanged => "credits_changed",
            Action::WebhookCreated => "webhook_created",
            Action::WebhookUpdated => "webhook_updated",
            Action::WebhookDeleted => "webhook_deleted",
            Action::WebhookSecretRotated => "webhook_secret_rotated",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An action name that keypal does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown action {0:?}")]
pub struct UnknownAction(pub String);

impl FromStr for Action {
    type Err = UnknownAction;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::ALL.into_iter().find(|a| a.as_str() == s).ok_or_else(|| UnknownAction(s.to_owned()))
    }
}

/// Who did it, and from where. Set on a manager with [`crate::KeyManager::with_context`].
///
/// ```
/// use keypal::AuditContext;
/// let ctx = AuditContext::new("admin").ip("203.0.113.7").user_agent("curl/8");
/// assert_eq!(ctx.actor, "admin");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditContext {
    /// Who: `system` (the default), `admin`, `service`, `app:<id>`, `owner:<id>` or any label.
    pub actor: String,
    /// The client address.
    pub ip: Option<String>,
    /// The client's user agent.
    pub user_agent: Option<String>,
}

impl Default for AuditContext {
    fn default() -> Self {
        Self::new("system")
    }
}

impl AuditContext {
    /// A context for `actor`.
    pub fn new(actor: impl Into<String>) -> Self {
        Self { actor: actor.into(), ip: None, user_agent: None }
    }
    /// Sets the client address.
    pub fn ip(mut self, ip: impl Into<String>) -> Self {
        self.ip = Some(ip.into());
        self
    }
    /// Sets the user agent.
    pub fn user_agent(mut self, agent: impl Into<String>) -> Self {
        self.user_agent = Some(agent.into());
        self
    }
}

/// One event: who did what to which key, when and from where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Event {
    /// The event's id (UUID v7: sorts by time).
    pub id: Uuid,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// What.
    pub action: Action,
    /// Which key.
    pub key_id: Option<KeyId>,
    /// The key's namespace (application).
    pub namespace: Option<String>,
    /// The key's owner.
    pub owner_id: Option<String>,
    /// For `verified` events: the result.
    pub code: Option<Code>,
    /// Who, and from where.
    pub context: AuditContext,
    /// Anything else worth keeping (never key material).
    pub details: Option<Value>,
    /// For `verified` events: the tags of the verification ([`crate::VerifyOptions::tags`]).
    #[serde(default, skip_serializing_if = "Tags::is_empty")]
    pub tags: Tags,
}

impl Event {
    /// A new event.
    pub fn new(action: Action, at: OffsetDateTime, context: AuditContext) -> Self {
        Self {
            id: Uuid::now_v7(),
            at,
            action,
            key_id: None,
            namespace: None,
            owner_id: None,
            code: None,
            context,
            details: None,
            tags: Tags::none(),
        }
    }
}

/// Receives events as they happen: created, verified (with its code), revoked,
/// rotated, enabled, disabled, updated, deleted, imported.
///
/// Called inline: keep it fast and never block (hand the event to a channel or a counter).
///
/// ```
/// use keypal::{Event, EventSink};
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// #[derive(Default)]
/// struct Counter(AtomicU64);
/// impl EventSink for Counter {
///     fn record(&self, _event: &Event) { self.0.fetch_add(1, Ordering::Relaxed); }
/// }
/// ```
pub trait EventSink: Send + Sync + 'static {
    /// Receives one event.
    fn record(&self, event: &Event);

    /// Receives one verification, borrowed from the verify path. The default makes its
    /// `verified` [`Event`] ([`VerificationEvent::to_event`]) and hands it to
    /// [`EventSink::record`]; a sink that sees every verification (usage counting) or
    /// none (change announcements) overrides it to skip making the event.
    ///
    /// ```
    /// use keypal::{Code, Event, EventSink, KeyManager, MemoryStore, NewKey, VerificationEvent};
    /// use std::sync::{Arc, atomic::{AtomicU64, Ordering}};
    ///
    /// #[derive(Default)]
    /// struct ValidCount(AtomicU64);
    /// impl EventSink for ValidCount {
    ///     fn record(&self, _event: &Event) {}
    ///     fn record_verification(&self, verified: &VerificationEvent<'_>) {
    ///         if verified.verification.code() == Code::Valid {
    ///             self.0.fetch_add(1, Ordering::Relaxed);
    ///         }
    ///     }
    /// }
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let counter = Arc::new(ValidCount::default());
    /// let keys = KeyManager::builder().store(Arc::new(MemoryStore::new())).event_sink(counter.clone()).build()?;
    /// let created = keys.create(NewKey::new()).await?;
    /// keys.verify(created.key.expose()).await?;
    /// assert_eq!(counter.0.load(Ordering::Relaxed), 1);
    /// # Ok::<(), keypal::Error>(())
    /// # }).unwrap();
    /// ```
    fn record_verification(&self, verified: &VerificationEvent<'_>) {
        self.record(&verified.to_event());
    }
}

impl<T: EventSink + ?Sized> EventSink for std::sync::Arc<T> {
    fn record(&self, event: &Event) {
        T::record(self, event);
    }

    fn record_verification(&self, verified: &VerificationEvent<'_>) {
        T::record_verification(self, verified);
    }
}

/// One verification as the verify path hands it to [`EventSink::record_verification`]:
/// borrowed, so a sink reads what it needs without an [`Event`] being made.
///
/// Its time comes two ways. [`unix_second`](Self::unix_second) is read from the
/// clock's cheap coarse reading ([`Clock::coarse_unix_seconds`]) and is enough to
/// place the verification in a minute or an hour; [`at`](Self::at) reads the precise
/// time, only for a sink that asks. Reading the precise clock on every verification
/// costs more than a sink that counts per minute needs.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct VerificationEvent<'a> {
    /// The Unix second of the verification, read coarsely: it may lag the precise time
    /// by the operating system's clock tick (a few milliseconds).
    pub unix_second: i64,
    /// The result, with the key's record once its hash matched.
    pub verification: &'a Verification,
    /// The verification's tags ([`crate::VerifyOptions::tags`]).
    pub tags: &'a Tags,
    /// Who asked, and from where.
    pub context: &'a AuditContext,
    /// Where [`at`](Self::at) reads the time.
    clock: &'a dyn Clock,
}

impl<'a> VerificationEvent<'a> {
    /// A verification now, on `clock`, by `context`, with `tags`.
    ///
    /// ```
    /// use keypal::{AuditContext, Clock, KeyManager, ManualClock, MemoryStore, Tags, VerificationEvent};
    /// use std::{sync::Arc, time::Duration};
    /// # pollster::block_on(async {
    /// let clock = Arc::new(ManualClock::new(time::macros::datetime!(2025-01-01 0:00:30.5 UTC)));
    /// let keys = KeyManager::builder().store(MemoryStore::new()).clock(clock.clone()).build()?;
    /// let verification = keys.verify("not a key").await?;
    /// let (tags, context) = (Tags::default(), AuditContext::default());
    ///
    /// let verified = VerificationEvent::new(&*clock, &verification, &tags, &context);
    /// assert_eq!(verified.unix_second, 1_735_689_630);
    /// clock.advance(Duration::from_millis(1));
    /// assert_eq!(verified.at(), clock.now()); // read when asked
    /// # Ok::<(), keypal::Error>(())
    /// # }).unwrap();
    /// ```
    pub fn new(
        clock: &'a dyn Clock,
        verification: &'a Verification,
        tags: &'a Tags,
        context: &'a AuditContext,
    ) -> Self {
        Self { unix_second: clock.coarse_unix_seconds(), verification, tags, context, clock }
    }

    /// The precise time, truncated to microseconds: read from the clock when asked.
    pub fn at(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// Its `verified` event: the code, the tags, and the key's id, namespace and owner
    /// when the key was found.
    ///
    /// ```
    /// use keypal::{Action, Code, Event, EventSink, KeyManager, MemoryStore, NewKey};
    /// use std::sync::{Arc, Mutex};
    ///
    /// // A sink that only implements `record` gets each verification as this event.
    /// #[derive(Default)]
    /// struct Log(Mutex<Vec<Event>>);
    /// impl EventSink for Log {
    ///     fn record(&self, event: &Event) { self.0.lock().unwrap().push(event.clone()); }
    /// }
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let log = Arc::new(Log::default());
    /// let keys = KeyManager::builder().store(Arc::new(MemoryStore::new())).event_sink(log.clone()).build()?;
    /// let created = keys.create(NewKey::new().owner_id("user_1")).await?;
    /// keys.verify(created.key.expose()).await?;
    /// let events = log.0.lock().unwrap();
    /// let verified = events.iter().find(|e| e.action == Action::Verified).unwrap();
    /// assert_eq!((verified.code, verified.key_id), (Some(Code::Valid), Some(created.record.id)));
    /// assert_eq!(verified.owner_id.as_deref(), Some("user_1"));
    /// # Ok::<(), keypal::Error>(())
    /// # }).unwrap();
    /// ```
    pub fn to_event(&self) -> Event {
        let mut event = Event::new(Action::Verified, self.at(), self.context.clone());
        event.code = Some(self.verification.code());
        event.tags = self.tags.clone();
        if let Some(record) = self.verification.record() {
            event.key_id = Some(record.id);
            event.namespace.clone_from(&record.namespace);
            event.owner_id.clone_from(&record.owner_id);
        }
        event
    }
}

/// Filters for reading the audit log. Newest first.
///
/// ```
/// use keypal::{Action, AuditQuery};
/// let q = AuditQuery::new().owner_id("user_1").action(Action::Revoked).limit(20);
/// assert_eq!(q.limit, 20);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditQuery {
    /// Only this namespace.
    pub namespace: Option<String>,
    /// Only this key.
    pub key_id: Option<KeyId>,
    /// Only this owner.
    pub owner_id: Option<String>,
    /// Only this action.
    pub action: Option<Action>,
    /// At or after.
    pub since: Option<OffsetDateTime>,
    /// Before.
    pub until: Option<OffsetDateTime>,
    /// Page size (1..=1000).
    pub limit: u32,
    /// Continue after this event (the previous page's `next_cursor`).
    pub cursor: Option<Uuid>,
}

impl Default for AuditQuery {
    fn default() -> Self {
        Self {
            namespace: None,
            key_id: None,
            owner_id: None,
            action: None,
            since: None,
            until: None,
            limit: 100,
            cursor: None,
        }
    }
}

impl AuditQuery {
    /// All events, 100 per page.
    pub fn new() -> Self {
        Self::default()
    }
    /// Only this namespace.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }
    /// Only this key.
    pub fn key_id(mut self, id: KeyId) -> Self {
        self.key_id = Some(id);
        self
    }
    /// Only this owner.
    pub fn owner_id(mut self, owner: impl Into<String>) -> Self {
        self.owner_id = Some(owner.into());
        self
    }
    /// Only this action.
    pub fn action(mut self, action: Action) -> Self {
        self.action = Some(action);
        self
    }
    /// At or after `since`, before `until`.
    pub fn between(mut self, since: OffsetDateTime, until: OffsetDateTime) -> Self {
        self.since = Some(since);
        self.until = Some(until);
        self
    }
    /// Page size (clamped to 1..=1000).
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = limit.clamp(1, 1000);
        self
    }
    /// Continue after this event.
    pub fn cursor(mut self, cursor: Uuid) -> Self {
        self.cursor = Some(cursor);
        self
    }

    /// Whether `event` passes the filters (cursor and limit aside).
    pub fn matches(&self, event: &Event) -> bool {
        self.namespace.as_ref().is_none_or(|n| event.namespace.as_ref() == Some(n))
            && self.key_id.is_none_or(|k| event.key_id == Some(k))
            && self.owner_id.as_ref().is_none_or(|o| event.owner_id.as_ref() == Some(o))
            && self.action.is_none_or(|a| event.action == a)
            && self.since.is_none_or(|s| event.at >= s)
            && self.until.is_none_or(|u| event.at < u)
    }
}
