//! `NativeManager`: one `KeyManager` over whichever store it was given.

use std::cell::RefCell;
use std::collections::HashMap;
use std::pin::pin;
use std::sync::Arc;

use keypal::{Code, Config, HashAlgorithm, KeyManager, KeyRecord, MemoryStore, Verification, VerifyOptions};
use napi::{Env, JsUnknown};
use napi_derive::napi;
use tokio::sync::OnceCell;

use crate::convert;
use crate::failure::Failure;
use crate::input::{key_id, read, AuditInput, ImportInput, ListInput, NewKeyInput, PatchInput};
use crate::runtime::{block_on, settle, start, Blocking, BoxFuture, Polled};
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
    /// A manager over a `MemoryStore` with a fast hash: its verifications never wait for
    /// anything, so they run right here, without a future of their own.
    inline: bool,
    /// The record states `index.js` already holds as objects (see [`Slots`]).
    slots: RefCell<Slots>,
}

/// What tells two states of one record apart: its version (bumped by every change but
/// these two), its `last_used_at` and its credits.
type State = (u64, Option<time::OffsetDateTime>, Option<u64>);

/// The record states of verifications answered on the calling thread, each numbered
/// (a slot): `index.js` keeps the record object of each slot, so a verification of a
/// state it has seen crosses over as one number instead of a new object of twenty fields.
/// Slots are not reused; when they run out, all are dropped at once (and `index.js` told).
#[derive(Default)]
struct Slots {
    /// The latest state of each key seen, and its slot.
    by_id: HashMap<u128, (State, u32), IdBits>,
    next: u32,
}

/// How many record states are numbered before they are all dropped.
const SLOTS: u32 = 1 << 17;

impl Slots {
    /// The record's slot, whether it is new, and whether the others were dropped for it.
    fn of(&mut self, record: &KeyRecord) -> (u32, bool, bool) {
        let id = record.id.0.as_u128();
        let state = (record.version, record.last_used_at, record.remaining);
        if let Some((seen, slot)) = self.by_id.get(&id) {
            if *seen == state {
                return (*slot, false, false);
            }
        }
        let reset = self.next >= SLOTS;
        if reset {
            self.by_id.clear();
            self.next = 0;
        }
        let slot = self.next;
        self.next += 1;
        self.by_id.insert(id, (state, slot));
        (slot, true, reset)
    }
}

/// Hashes a key id by its own bits (a UUID v7's low 64 bits are random).
#[derive(Default, Clone, Copy)]
struct IdBits;

impl std::hash::BuildHasher for IdBits {
    type Hasher = IdBitsHasher;
    fn build_hasher(&self) -> IdBitsHasher {
        IdBitsHasher(0)
    }
}

struct IdBitsHasher(u64);

impl std::hash::Hasher for IdBitsHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0 ^ u64::from_le_bytes(word)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u128(&mut self, id: u128) {
        self.0 = ((id as u64) ^ ((id >> 64) as u64)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A verification as one number: bits 0-3 the code's index in `Code::ALL`, bit 4 "the
/// slots were dropped", bits 5-24 the record's slot + 1 (0: no record), the rest the
/// credits left + 1 (0: unlimited). Exact in an `f64` (below 2^53).
fn encode(code: Code, slot: Option<u32>, reset: bool, remaining: u64) -> f64 {
    let index = Code::ALL.iter().position(|c| *c == code).unwrap_or(0) as u64;
    let slot = slot.map_or(0, |s| u64::from(s) + 1);
    (index + (u64::from(reset) << 4) + (slot << 5) + (remaining << 25)) as f64
}

/// The period in seconds of the rate limit a verification reports (the key's own, or its tier's).
fn window<S: keypal::Store>(manager: &KeyManager<S>, verification: &Verification) -> Option<u64> {
    verification.rate_limit()?;
    verification.record().and_then(|record| manager.rate_limit_of(record)).map(|limit| limit.period.as_secs())
}

/// The core names a rotation's grace `grace`; JavaScript passes it as `graceSeconds`.
fn renamed_grace(error: keypal::Error) -> Failure {
    match error {
        keypal::Error::Invalid { field, message } if field == "grace" => Failure::invalid("graceSeconds", message),
        other => other.into(),
    }
}

/// Credits that fit the number (2^28 - 2); more go as an object.
const MAX_ENCODED_CREDITS: u64 = (1 << 28) - 2;

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

impl NativeManager {
    /// A verification settled on the calling thread: a number when `index.js` holds the
    /// record's state already (or there is no record) and the key has no rate limit;
    /// otherwise `{ n, record, rateLimit }` with the record only when its state is new to
    /// `index.js` and the rate limit's state only when the key has one. Credits too many
    /// for the number come as the whole object.
    fn answer(&self, env: &Env, verification: Verification, window: Option<u64>) -> napi::Result<JsUnknown> {
        let remaining = match verification.remaining() {
            None => 0,
            Some(n) if n <= MAX_ENCODED_CREDITS => n + 1,
            Some(_) => return convert::verification(env, verification, window),
        };
        let code = verification.code();
        let (n, new_record) = match verification.record() {
            None => (encode(code, None, false, remaining), None),
            Some(record) => {
                let (slot, new, reset) = self.slots.borrow_mut().of(record);
                (encode(code, Some(slot), reset, remaining), new.then_some(record))
            }
        };
        if new_record.is_none() && verification.rate_limit().is_none() {
            return Ok(env.create_double(n)?.into_unknown());
        }
        let mut answer = env.create_object()?;
        answer.set_named_property("n", n)?;
        if let Some(record) = new_record {
            answer.set_named_property("record", convert::record(env, record)?)?;
        }
        if verification.rate_limit().is_some() {
            answer.set_named_property("rateLimit", convert::rate_limit(env, verification.rate_limit(), window)?)?;
        }
        Ok(answer.into_unknown())
    }
}

#[napi]
impl NativeManager {
    /// A manager over a `MemoryStore`.
    #[napi(factory)]
    pub fn with_memory(config: String, store: &NativeMemoryStore) -> napi::Result<Self> {
        let config = crate::config::parse(&config)?;
        let slow = matches!(config.hash.algorithm, HashAlgorithm::Bcrypt | HashAlgorithm::Argon2id);
        let manager = build(config, store.store.clone()).map_err(Failure::from)?;
        Ok(Self { local: manager.clone(), managed: Managed::Memory(manager), inline: !slow, slots: RefCell::default() })
    }

    /// A manager over an SQLite or PostgreSQL store.
    #[napi(factory)]
    pub fn with_sql(config: String, store: &NativeSqlStore) -> napi::Result<Self> {
        let (config, local) = checked(&config)?;
        let deferred = Deferred { store: store.lazy.clone(), config, manager: OnceCell::new() };
        Ok(Self { local, managed: Managed::Sql(Arc::new(deferred)), inline: false, slots: RefCell::default() })
    }

    /// A manager over a Redis store.
    #[napi(factory)]
    pub fn with_redis(config: String, store: &NativeRedisStore) -> napi::Result<Self> {
        let (config, local) = checked(&config)?;
        let deferred = Deferred { store: store.lazy.clone(), config, manager: OnceCell::new() };
        Ok(Self { local, managed: Managed::Redis(Arc::new(deferred)), inline: false, slots: RefCell::default() })
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
        if let (true, Managed::Memory(manager)) = (self.inline, &self.managed) {
            let verification = block_on(pin!(manager.verify_with(&key, &options))).map_err(Failure::from)?;
            let window = window(manager, &verification);
            return self.answer(&env, verification, window);
        }
        let operation = dispatch!(self, |m| {
            let verification = m.verify_with(&key, &options).await?;
            let window = window(&m, &verification);
            Ok((verification, window))
        });
        match start(&env, operation, convert::verified)? {
            Polled::Pending(promise) => Ok(promise.into_unknown()),
            Polled::Ready((verification, window)) => self.answer(&env, verification, window),
        }
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
        let operation = dispatch!(self, |m| m.rotate(&id, grace).await.map_err(renamed_grace));
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

#[cfg(test)]
mod tests {
    use super::*;
    use keypal::{KeyId, Lookup};

    fn record() -> KeyRecord {
        KeyRecord::new(KeyId::new(), Lookup::Hint("sk_test_abc".into()), "$sha256$00", time::OffsetDateTime::UNIX_EPOCH)
    }

    #[test]
    fn a_state_keeps_its_slot_and_a_change_gets_a_new_one() {
        let mut slots = Slots::default();
        let mut a = record();
        assert_eq!(slots.of(&a), (0, true, false));
        assert_eq!(slots.of(&a.clone()), (0, false, false));
        a.version += 1;
        assert_eq!(slots.of(&a), (1, true, false));
        a.remaining = Some(3);
        assert_eq!(slots.of(&a), (2, true, false));
        a.last_used_at = Some(time::OffsetDateTime::UNIX_EPOCH);
        assert_eq!(slots.of(&a), (3, true, false));
        assert_eq!(slots.of(&record()), (4, true, false));
    }

    #[test]
    fn when_the_slots_run_out_all_are_dropped_and_numbering_starts_again() {
        let mut slots = Slots::default();
        let first = record();
        for _ in 0..SLOTS {
            slots.of(&record());
        }
        assert_eq!(slots.of(&first), (0, true, true));
        assert_eq!(slots.of(&first), (0, false, false));
    }

    #[test]
    fn the_number_holds_code_slot_reset_and_credits() {
        let n = encode(Code::UsageExceeded, Some(SLOTS - 1), true, MAX_ENCODED_CREDITS + 1) as u64;
        assert_eq!(n & 15, Code::ALL.iter().position(|c| *c == Code::UsageExceeded).unwrap_or(99) as u64);
        assert_eq!((n >> 4) & 1, 1);
        assert_eq!((n >> 5) & 0xfffff, u64::from(SLOTS));
        assert_eq!(n >> 25, MAX_ENCODED_CREDITS + 1);
        assert!(n < 1 << 53);
    }
}
