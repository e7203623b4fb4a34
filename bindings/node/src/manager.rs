//! `NativeManager`: one `KeyManager` over whichever store it was given.

use std::sync::Arc;

use keypal::{Config, KeyManager, MemoryStore, VerifyOptions};
use napi::{Env, JsUnknown};
use napi_derive::napi;
use tokio::sync::OnceCell;

use crate::convert;
use crate::failure::Failure;
use crate::input::{key_id, read, AuditInput, ImportInput, ListInput, NewKeyInput, PatchInput};
use crate::runtime::{settle, Blocking, BoxFuture};
use crate::stores::{Connect, Lazy, NativeMemoryStore, NativeRedisStore, NativeSqlStore, RedisConnect, SqlConnect};

/// A manager whose store connects on first use; built then, from the checked config.
struct Deferred<C: Connect> {
    store: Lazy<C>,
    config: Config,
    manager: OnceCell<KeyManager<C::Store>>,
}

impl<C: Connect> Deferred<C> {
    async fn get(&self) -> Result<KeyManager<C::Store>, Failure> {
        let manager = self
            .manager
            .get_or_try_init(|| async {
                let store = self.store.get().await?;
                Ok::<_, Failure>(build(self.config.clone(), store)?)
            })
            .await?;
        Ok(manager.clone())
    }
}

enum Managed {
    Memory(KeyManager<Arc<MemoryStore>>),
    Sql(Arc<Deferred<SqlConnect>>),
    Redis(Arc<Deferred<RedisConnect>>),
}

fn build<S: keypal::Store>(config: Config, store: S) -> Result<KeyManager<S>, keypal::Error> {
    KeyManager::builder().config(config).offload(Blocking).store(store).build()
}

/// Runs `$body` (an expression of type `Result<T, Failure>` that may `.await`) with `$m`
/// bound to the manager, whichever store it has: a `BoxFuture<T>`.
macro_rules! dispatch {
    ($self:ident, |$m:ident| $body:expr) => {{
        let operation: BoxFuture<_> = match &$self.managed {
            Managed::Memory(manager) => {
                let $m = manager.clone();
                Box::pin(async move { $body })
            }
            Managed::Sql(deferred) => {
                let deferred = deferred.clone();
                Box::pin(async move {
                    let $m = deferred.get().await?;
                    $body
                })
            }
            Managed::Redis(deferred) => {
                let deferred = deferred.clone();
                Box::pin(async move {
                    let $m = deferred.get().await?;
                    $body
                })
            }
        };
        operation
    }};
}

/// The key manager behind `createApiKeyManager`.
#[napi]
pub struct NativeManager {
    /// Generates, hashes and validates keys (no store needed); for a `MemoryStore`, the manager itself.
    local: KeyManager<Arc<MemoryStore>>,
    managed: Managed,
}

fn checked(config_json: &str) -> Result<(Config, KeyManager<Arc<MemoryStore>>), Failure> {
    let config = crate::config::parse(config_json)?;
    let local = build(config.clone(), Arc::new(MemoryStore::new()))?;
    Ok((config, local))
}

fn cost(cost: Option<f64>) -> Result<u64, Failure> {
    match cost {
        None => Ok(1),
        Some(c) if c.fract() == 0.0 && (0.0..=9_007_199_254_740_991.0).contains(&c) => Ok(c as u64),
        Some(_) => Err(Failure::invalid("cost", "a whole number, zero or more")),
    }
}

#[napi]
impl NativeManager {
    /// A manager over a `MemoryStore`.
    #[napi(factory)]
    pub fn with_memory(config: String, store: &NativeMemoryStore) -> napi::Result<Self> {
        let config = crate::config::parse(&config)?;
        let manager = build(config, store.store.clone()).map_err(Failure::from)?;
        Ok(Self { local: manager.clone(), managed: Managed::Memory(manager) })
    }

    /// A manager over an SQLite or PostgreSQL store.
    #[napi(factory)]
    pub fn with_sql(config: String, store: &NativeSqlStore) -> napi::Result<Self> {
        let (config, local) = checked(&config)?;
        let deferred = Deferred { store: store.lazy.clone(), config, manager: OnceCell::new() };
        Ok(Self { local, managed: Managed::Sql(Arc::new(deferred)) })
    }

    /// A manager over a Redis store.
    #[napi(factory)]
    pub fn with_redis(config: String, store: &NativeRedisStore) -> napi::Result<Self> {
        let (config, local) = checked(&config)?;
        let deferred = Deferred { store: store.lazy.clone(), config, manager: OnceCell::new() };
        Ok(Self { local, managed: Managed::Redis(Arc::new(deferred)) })
    }

    #[napi]
    pub fn generate_key(&self) -> napi::Result<String> {
        let key = self.local.try_generate_key().map_err(Failure::from)?;
        Ok(key.expose().to_owned())
    }

    #[napi]
    pub fn hash_key(&self, key: String) -> String {
        self.local.hash_key(key.as_str())
    }

    #[napi]
    pub fn validate_key(&self, key: String, hash: String) -> bool {
        self.local.validate_key(key.as_str(), &hash)
    }

    /// Whether the key is well formed under an accepted format (reads no store).
    #[napi]
    pub fn accepts(&self, key: String) -> bool {
        self.local.accepts(&key)
    }

    #[napi(ts_return_type = "any")]
    pub fn verify(
        &self,
        env: Env,
        key: String,
        scopes: Option<Vec<String>>,
        cost: Option<f64>,
    ) -> napi::Result<JsUnknown> {
        let options = VerifyOptions::new().scopes(scopes.unwrap_or_default()).cost(self::cost(cost)?);
        let operation = dispatch!(self, |m| Ok(m.verify_with(&key, &options).await?));
        settle(&env, operation, convert::verification)
    }

    #[napi(ts_return_type = "any")]
    pub fn create(&self, env: Env, request: String) -> napi::Result<JsUnknown> {
        let request = read::<NewKeyInput>("request", &request)?.into_new_key()?;
        let operation = dispatch!(self, |m| Ok(m.create(request).await?));
        settle(&env, operation, convert::created)
    }

    /// Stores a key generated elsewhere (`generateKey`, another system) with its details.
    #[napi(ts_return_type = "any")]
    pub fn store(&self, env: Env, key: String, details: String) -> napi::Result<JsUnknown> {
        let details = read::<NewKeyInput>("details", &details)?.into_new_key()?;
        let import = keypal::ImportKey::plaintext(key).with(details);
        let operation = dispatch!(self, |m| Ok(m.import(import).await?));
        settle(&env, operation, convert::one)
    }

    #[napi(ts_return_type = "any")]
    pub fn import(&self, env: Env, request: String) -> napi::Result<JsUnknown> {
        let import = read::<ImportInput>("request", &request)?.into_import()?;
        let operation = dispatch!(self, |m| Ok(m.import(import).await?));
        settle(&env, operation, convert::one)
    }

    #[napi(ts_return_type = "any")]
    pub fn get(&self, env: Env, id: String) -> napi::Result<JsUnknown> {
        let id = key_id(&id)?;
        let operation = dispatch!(self, |m| Ok(m.get(&id).await?));
        settle(&env, operation, convert::one)
    }

    #[napi(ts_return_type = "any")]
    pub fn list(&self, env: Env, query: String) -> napi::Result<JsUnknown> {
        let query = read::<ListInput>("query", &query)?.into_query()?;
        let operation = dispatch!(self, |m| Ok(m.list(query).await?));
        settle(&env, operation, convert::page)
    }

    #[napi(ts_return_type = "any")]
    pub fn count(&self, env: Env, query: String) -> napi::Result<JsUnknown> {
        let query = read::<ListInput>("query", &query)?.into_query()?;
        let operation = dispatch!(self, |m| Ok(m.count(query).await?));
        settle(&env, operation, convert::count)
    }

    #[napi(ts_return_type = "any")]
    pub fn update(&self, env: Env, id: String, patch: String) -> napi::Result<JsUnknown> {
        let id = key_id(&id)?;
        let patch = read::<PatchInput>("patch", &patch)?.into_patch()?;
        let operation = dispatch!(self, |m| Ok(m.update(&id, patch).await?));
        settle(&env, operation, convert::one)
    }

    #[napi(ts_return_type = "any")]
    pub fn enable(&self, env: Env, id: String) -> napi::Result<JsUnknown> {
        let id = key_id(&id)?;
        let operation = dispatch!(self, |m| Ok(m.enable(&id).await?));
        settle(&env, operation, convert::one)
    }

    #[napi(ts_return_type = "any")]
    pub fn disable(&self, env: Env, id: String) -> napi::Result<JsUnknown> {
        let id = key_id(&id)?;
        let operation = dispatch!(self, |m| Ok(m.disable(&id).await?));
        settle(&env, operation, convert::one)
    }

    #[napi(ts_return_type = "any")]
    pub fn revoke(&self, env: Env, id: String) -> napi::Result<JsUnknown> {
        let id = key_id(&id)?;
        let operation = dispatch!(self, |m| Ok(m.revoke(&id).await?));
        settle(&env, operation, convert::one)
    }

    #[napi(ts_return_type = "any")]
    pub fn revoke_all(&self, env: Env, owner_id: String) -> napi::Result<JsUnknown> {
        let operation = dispatch!(self, |m| Ok(m.revoke_all(&owner_id).await?));
        settle(&env, operation, convert::many)
    }

    /// `grace_seconds`: how long the old key keeps working (default 0).
    #[napi(ts_return_type = "any")]
    pub fn rotate(&self, env: Env, id: String, grace_seconds: Option<f64>) -> napi::Result<JsUnknown> {
        let id = key_id(&id)?;
        let grace = std::time::Duration::try_from_secs_f64(grace_seconds.unwrap_or(0.0))
            .map_err(|_| Failure::invalid("graceSeconds", "a number of seconds, zero or more"))?;
        let operation = dispatch!(self, |m| Ok(m.rotate(&id, grace).await?));
        settle(&env, operation, convert::rotated)
    }

    #[napi(ts_return_type = "any")]
    pub fn delete(&self, env: Env, id: String) -> napi::Result<JsUnknown> {
        let id = key_id(&id)?;
        let operation = dispatch!(self, |m| Ok(m.delete(&id).await?));
        settle(&env, operation, convert::one)
    }

    #[napi(ts_return_type = "any")]
    pub fn audit(&self, env: Env, query: String) -> napi::Result<JsUnknown> {
        let query = read::<AuditInput>("query", &query)?.into_query()?;
        let operation = dispatch!(self, |m| Ok(m.audit(query).await?));
        settle(&env, operation, convert::events)
    }

    /// Writes the pending `last_used_at` times now (call it before the process exits).
    #[napi(ts_return_type = "any")]
    pub fn flush_last_used(&self, env: Env) -> napi::Result<JsUnknown> {
        let operation = dispatch!(self, |m| Ok(m.flush_last_used().await?));
        settle(&env, operation, convert::nothing)
    }
}
