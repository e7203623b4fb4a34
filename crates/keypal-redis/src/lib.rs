//! # keypal-redis
//!
//! [`RedisStore`]: keypal's [`Store`](keypal::Store) on Redis, passing the shared
//! conformance suite. Connections go through redis-rs's `ConnectionManager`, which
//! reconnects by itself; every operation that touches more than one key is one Lua
//! script (loaded once, then called by its SHA), so it is atomic the way a SQL
//! transaction is: Redis runs one script at a time.
//!
//! - **Per-owner limits**: the insert script counts the owner's active keys (same
//!   namespace, not revoked, not expired at the new key's creation) and inserts in the
//!   same script: 64 concurrent creates against a limit of 10 leave exactly 10.
//! - **State changes** are conditional field writes (`revoked_at` only when not revoked
//!   yet, `last_used_at` only forward, credits by a guarded decrement), never a rewrite
//!   of the whole record, so a `touch` cannot undo a revocation.
//! - **Audit**: each change appends its event in the same script; the log is append-only.
//! - **Rate limiting**: [`RedisRateLimiter`] keeps one exact GCRA limit per key for
//!   every instance, one script per decision on Redis's clock; [`FailMode`] says what
//!   happens when Redis is unreachable.
//!
//! ## Key layout
//!
//! Every key starts with the store's prefix `P` (for example `keypal:`). Ids are UUID
//! v7 in their hyphenated lowercase form, which sorts like the ids themselves, so the
//! sorted sets (all scores 0) are walked in id order with `ZRANGEBYLEX`. A namespace
//! inside a key is written `~` (none) or `<byte length>=<namespace>`.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P key:<id>` | hash | one record: text fields as given, `scopes`/`metadata` as JSON, timestamps as integer microseconds since the Unix epoch, `enabled` as `1`/`0`, absent field = `None` |
//! | `P lookup:<id\|digest>:<value>` | string | the record id of a unique lookup |
//! | `P hint:<hint>` | set | the record ids of a hint lookup |
//! | `P ix:all` | sorted set | every record id |
//! | `P ix:ns:<ns>` | sorted set | the record ids of a namespace |
//! | `P ix:owner:<owner>` | sorted set | the record ids of an owner (every namespace) |
//! | `P ix:nso:<ns>:<owner>` | sorted set | the record ids of an owner in a namespace |
//! | `P ev:<event id>` | hash | one audit event (`details` as JSON) |
//! | `P audit` | sorted set | every event id |
//! | `P audit:key:<id>`, `P audit:owner:<owner>`, `P audit:ns:<ns>`, `P audit:action:<action>` | sorted set | event ids by key, owner, namespace and action |
//! | `P rl:<id>` | string | [`RedisRateLimiter`]: a key's theoretical arrival time (integer microseconds), expiring at that time |
//!
//! (Written here with a space after `P` for readability; the keys have none.)
//!
//! Listings and audit reads walk the index that matches their filters, newest first,
//! in bounded steps (a few hundred members per script call), checking the remaining
//! filters (revocation time, audit time range) on the way. Nothing has a TTL except
//! the rate limiter's `rl:` keys.
//!
//! ```no_run
//! use keypal::{KeyManager, NewKey};
//! use keypal_redis::RedisStore;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = RedisStore::connect("redis://127.0.0.1:6379", "keypal:").await?;
//! let keys = KeyManager::builder().store(store).build()?;
//! let created = keys.create(NewKey::new().owner_id("user_1")).await?;
//! assert!(keys.verify(created.key.expose()).await?.is_valid());
//! # Ok(())
//! # }
//! ```

mod bus;
mod codec;
mod error;
mod ratelimit;
mod scripts;
mod store;

pub use bus::{BusSubscription, RedisBus, RedisBusSink};
pub use error::{CorruptData, EventAlreadyLogged, OutOfRange, RedisStoreError};
pub use ratelimit::{FailMode, RateLimitUnavailable, RedisRateLimiter, RedisRateLimiterBuilder};
pub use store::RedisStore;

/// Re-exported for callers that configure connections themselves ([`RedisStore::from_manager`]).
pub use redis;
