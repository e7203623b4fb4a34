//! Cross-node cache invalidation: the message several keypal instances exchange so
//! that a change made on one of them reaches the verified-result caches of the others.
//!
//! A [`KeyManager`] drops its own cache entry when a change goes through it; other
//! instances on the same store only learn about it from a message. This module holds
//! the message, [`Invalidation`], and its text form; the transports (Redis pub/sub in
//! `keypal-redis`, PostgreSQL `LISTEN`/`NOTIFY` in `keypal-sql`) carry that text.
//!
//! | message | text | meaning |
//! |---|---|---|
//! | [`Invalidation::Key`] | `key:<uuid>` | one key changed (revoked, rotated, enabled, disabled, updated, deleted) |
//! | [`Invalidation::App`] | `app:<id>` | one application's settings changed |
//! | [`Invalidation::Settings`] | `settings` | instance-wide settings changed |
//! | [`Invalidation::All`] | `all` | anything may have changed: drop every cached result |
//!
//! `All` is what a subscriber hands its handler after it lost its subscription and
//! subscribed again (messages may have been missed meanwhile); a transport may also
//! publish it when it had to drop messages of its own.
//!
//! ```
//! use keypal::{Invalidation, KeyId};
//!
//! let id = KeyId::new();
//! let text = Invalidation::Key(id).to_string();
//! assert_eq!(text, format!("key:{id}"));
//! assert_eq!(text.parse::<Invalidation>()?, Invalidation::Key(id));
//! assert_eq!("app:billing".parse::<Invalidation>()?, Invalidation::App("billing".into()));
//! assert_eq!("settings".parse::<Invalidation>()?, Invalidation::Settings);
//! assert!("key:not-a-uuid".parse::<Invalidation>().is_err());
//! # Ok::<(), keypal::invalidation::InvalidInvalidation>(())
//! ```

use std::fmt;
use std::str::FromStr;

use crate::event::{Action, Event};
use crate::manager::KeyManager;
use crate::record::KeyId;
use crate::store::Store;

/// What changed, as announced to the other instances.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Invalidation {
    /// One key changed: drop its cached verification (`key:<uuid>`).
    Key(KeyId),
    /// One application's settings changed (`app:<id>`); what to reload is the caller's business.
    App(String),
    /// Instance-wide settings changed (`settings`).
    Settings,
    /// Anything may have changed (`all`): drop every cached result. Handed to
    /// subscribers after a reconnect, when messages may have been missed.
    All,
}

impl Invalidation {
    /// The message announcing `event`, if other instances need one: `key:<id>` for a
    /// change to an existing key (revoked, rotated, enabled, disabled, updated, deleted,
    /// and any action added later). `None` for `verified` (one per request, changes
    /// nothing) and for `created`/`imported` (a new id no cache can hold yet), and for
    /// an event without a key id.
    ///
    /// ```
    /// use keypal::{Action, AuditContext, Event, Invalidation, KeyId};
    /// use time::OffsetDateTime;
    ///
    /// let id = KeyId::new();
    /// let mut event = Event::new(Action::Revoked, OffsetDateTime::now_utc(), AuditContext::default());
    /// event.key_id = Some(id);
    /// assert_eq!(Invalidation::from_event(&event), Some(Invalidation::Key(id)));
    /// event.action = Action::Verified;
    /// assert_eq!(Invalidation::from_event(&event), None);
    /// ```
    pub fn from_event(event: &Event) -> Option<Self> {
        match event.action {
            Action::Verified | Action::Created | Action::Imported => None,
            _ => event.key_id.map(Invalidation::Key),
        }
    }

    /// Drops from `manager`'s cache what this message makes stale: the key's entry for
    /// [`Invalidation::Key`], everything for [`Invalidation::All`]. Application and
    /// settings messages leave the cache alone (the caller reloads what they name).
    ///
    /// ```
    /// use keypal::{Invalidation, KeyId, KeyManager, MemoryStore};
    ///
    /// let keys = KeyManager::builder().store(MemoryStore::new()).build()?;
    /// Invalidation::Key(KeyId::new()).apply(&keys);
    /// Invalidation::All.apply(&keys);
    /// # Ok::<(), keypal::Error>(())
    /// ```
    pub fn apply<S: Store>(&self, manager: &KeyManager<S>) {
        match self {
            Invalidation::Key(id) => manager.invalidate(id),
            Invalidation::All => manager.clear_cache(),
            Invalidation::App(_) | Invalidation::Settings => {}
        }
    }
}

impl fmt::Display for Invalidation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalidation::Key(id) => write!(f, "key:{id}"),
            Invalidation::App(app) => write!(f, "app:{app}"),
            Invalidation::Settings => f.write_str("settings"),
            Invalidation::All => f.write_str("all"),
        }
    }
}

/// A text that is not an invalidation message (`key:<uuid>`, `app:<id>`, `settings`, `all`).
/// Holds at most the first 64 bytes of the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an invalidation message: {0:?}")]
pub struct InvalidInvalidation(pub String);

impl FromStr for Invalidation {
    type Err = InvalidInvalidation;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || {
            let mut end = s.len().min(64);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            InvalidInvalidation(s[..end].to_owned())
        };
        match s {
            "settings" => Ok(Invalidation::Settings),
            "all" => Ok(Invalidation::All),
            _ => match s.split_once(':') {
                Some(("key", id)) => id.parse().map(Invalidation::Key).map_err(|_| invalid()),
                Some(("app", app)) if !app.is_empty() => Ok(Invalidation::App(app.to_owned())),
                _ => Err(invalid()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::AuditContext;
    use time::OffsetDateTime;

    #[test]
    fn every_message_round_trips_through_its_text() {
        for message in [
            Invalidation::Key(KeyId::new()),
            Invalidation::App("billing".into()),
            Invalidation::App("a:b".into()),
            Invalidation::Settings,
            Invalidation::All,
        ] {
            let text = message.to_string();
            assert_eq!(text.parse::<Invalidation>(), Ok(message), "{text}");
        }
    }

    #[test]
    fn the_text_forms_are_stable() {
        let id: KeyId = "0190a0f2-7c4e-7d2a-9b1e-3f5c2a9d8e71".parse().unwrap_or_default();
        assert_eq!(Invalidation::Key(id).to_string(), "key:0190a0f2-7c4e-7d2a-9b1e-3f5c2a9d8e71");
        assert_eq!(Invalidation::App("x".into()).to_string(), "app:x");
        assert_eq!(Invalidation::Settings.to_string(), "settings");
        assert_eq!(Invalidation::All.to_string(), "all");
    }

    #[test]
    fn malformed_texts_are_refused() {
        for text in ["", "key:", "key:nope", "app:", "app", "Settings", "ALL", "user:1", "key :x"] {
            assert!(text.parse::<Invalidation>().is_err(), "{text:?}");
        }
        let long = "é".repeat(100);
        let error = long.parse::<Invalidation>().err();
        assert!(error.is_some_and(|e| e.0.len() <= 64));
    }

    #[test]
    fn only_changes_to_existing_keys_are_announced() {
        let id = KeyId::new();
        let event = |action| {
            let mut e = Event::new(action, OffsetDateTime::UNIX_EPOCH, AuditContext::default());
            e.key_id = Some(id);
            e
        };
        for action in
            [Action::Revoked, Action::Rotated, Action::Enabled, Action::Disabled, Action::Updated, Action::Deleted]
        {
            assert_eq!(Invalidation::from_event(&event(action)), Some(Invalidation::Key(id)), "{action}");
        }
        for action in [Action::Verified, Action::Created, Action::Imported] {
            assert_eq!(Invalidation::from_event(&event(action)), None, "{action}");
        }
        let mut keyless = event(Action::Revoked);
        keyless.key_id = None;
        assert_eq!(Invalidation::from_event(&keyless), None);
    }
}
