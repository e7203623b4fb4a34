//! Several instances on one database: changes are announced on a bus (Redis pub/sub
//! with `--redis-url`, else PostgreSQL `LISTEN/NOTIFY`), and each instance applies
//! what the others announce: a changed key leaves its verified-result cache, a changed
//! application or service key is reloaded from the database, and after a lost
//! subscription everything is dropped and reloaded.

use std::sync::{Arc, Weak};

use keypal::{EventSink, Invalidation};
use keypal_redis::RedisBus;
use keypal_sql::{PgBus, SqlStore};
use uuid::Uuid;

use crate::config::ServeConfig;
use crate::serve::ServeError;
use crate::state::State;

/// Where changes are announced.
#[derive(Debug, Clone)]
pub enum Bus {
    /// Redis pub/sub.
    Redis(RedisBus),
    /// PostgreSQL `LISTEN/NOTIFY`.
    Postgres(PgBus),
}

/// A live subscription; dropping it stops listening.
pub struct Subscription {
    _redis: Option<keypal_redis::BusSubscription>,
    _postgres: Option<keypal_sql::BusSubscription>,
}

impl Bus {
    /// The bus for this configuration: Redis when configured, else PostgreSQL when the
    /// store is PostgreSQL, else none (SQLite serves one instance).
    pub async fn for_config(config: &ServeConfig, store: &SqlStore) -> Result<Option<Bus>, ServeError> {
        if let Some(url) = &config.redis_url {
            return Ok(Some(Bus::Redis(RedisBus::connect(url, &config.redis_prefix).await?)));
        }
        match store {
            SqlStore::Postgres(pg) => {
                let prefix = config.database_schema.as_deref().map_or_else(|| "keypal_".to_owned(), channel_prefix);
                Ok(Some(Bus::Postgres(PgBus::new(pg.pool().clone(), &prefix).map_err(ServeError::Bus)?)))
            }
            _ => Ok(None),
        }
    }

    /// The sink that announces every change to a key.
    pub fn sink(&self) -> Arc<dyn EventSink> {
        match self {
            Bus::Redis(bus) => Arc::new(bus.event_sink()),
            Bus::Postgres(bus) => Arc::new(bus.event_sink()),
        }
    }

    /// Announces a change (best effort: other instances' caches also expire on their own).
    pub async fn announce(&self, message: &Invalidation) {
        let sent = match self {
            Bus::Redis(bus) => bus.publish(message).await.map_err(|e| e.to_string()),
            Bus::Postgres(bus) => bus.publish(message).await.map_err(|e| e.to_string()),
        };
        if let Err(error) = sent {
            tracing::warn!(%error, %message, "announcing a change to other instances failed");
        }
    }

    /// Applies what other instances announce to `state`, until the subscription is dropped.
    pub async fn subscribe(&self, state: Weak<State>) -> Result<Subscription, ServeError> {
        let handler = move |message: Invalidation| apply(&state, message);
        match self {
            Bus::Redis(bus) => {
                let subscription = bus.subscribe(handler).await.map_err(|e| ServeError::BusSubscribe(Box::new(e)))?;
                Ok(Subscription { _redis: Some(subscription), _postgres: None })
            }
            Bus::Postgres(bus) => {
                let subscription = bus.subscribe(handler).await.map_err(|e| ServeError::BusSubscribe(Box::new(e)))?;
                Ok(Subscription { _redis: None, _postgres: Some(subscription) })
            }
        }
    }
}

/// One announcement, applied to this instance.
fn apply(state: &Weak<State>, message: Invalidation) {
    let Some(state) = state.upgrade() else { return };
    match message {
        Invalidation::Key(id) => {
            for runtime in state.apps() {
                runtime.keys.invalidate(&id);
            }
        }
        Invalidation::App(id) => {
            if let Ok(id) = id.parse::<Uuid>() {
                tokio::spawn(async move {
                    if let Err(e) = state.reload_app(id).await {
                        tracing::warn!(error = %e.message, app = %id, "reloading a changed application failed");
                    }
                });
            }
        }
        Invalidation::Settings => {
            tokio::spawn(async move {
                if let Err(e) = state.reload_service_key().await {
                    tracing::warn!(error = %e.message, "reloading the service key failed");
                }
            });
        }
        // `All`, and anything this version does not know: drop and reload everything.
        _ => {
            for runtime in state.apps() {
                runtime.keys.clear_cache();
            }
            tokio::spawn(async move {
                let ids: Vec<Uuid> = state.apps().iter().map(|r| r.app.id).collect();
                for id in ids {
                    let _ = state.reload_app(id).await;
                }
                let _ = state.reload_service_key().await;
            });
        }
    }
}

/// The PostgreSQL channel prefix of instances sharing `schema`: `keypal_{schema}_`, or,
/// when that would make a channel name longer than PostgreSQL's 63 bytes,
/// `keypal_{the first 16 hex digits of the schema's SHA-256}_` (the same on every instance).
fn channel_prefix(schema: &str) -> String {
    use sha2::Digest;
    const LONGEST: usize = 63 - "invalidate".len();
    let plain = format!("keypal_{schema}_");
    if plain.len() <= LONGEST {
        return plain;
    }
    let digest = sha2::Sha256::digest(schema.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("keypal_{hex}_")
}

#[cfg(test)]
mod tests {
    use super::channel_prefix;

    #[test]
    fn every_schema_name_gives_a_channel_postgres_accepts() {
        assert_eq!(channel_prefix("tenant_a"), "keypal_tenant_a_");
        let long = "s".repeat(63);
        let prefix = channel_prefix(&long);
        assert!(prefix.len() + "invalidate".len() <= 63, "{prefix}");
        assert_ne!(channel_prefix(&"t".repeat(63)), prefix, "schemas keep apart");
    }
}
