//! # keypal
//!
//! API keys done right: generate, hash, verify and manage API keys.
//!
//! A [`KeyManager`] is configured once — key format, hashing, store, policies — and
//! then creates keys and verifies them on every request, in constant time and
//! without scanning storage.
//!
//! ```
//! use keypal::{Code, KeyManager, MemoryStore, NewKey};
//! use std::time::Duration;
//!
//! # pollster::block_on(async {
//! let keys = KeyManager::builder()
//!     .prefix("sk_live")
//!     .length(32)
//!     .store(MemoryStore::new())
//!     .build()?;
//!
//! let key = keys.generate_key();            // PlainKey: Debug/Display redacted, zeroized on drop
//! let hash = keys.hash_key(&key);           // String: self-describing stored hash
//! assert!(keys.validate_key(&key, &hash));  // constant-time
//!
//! let created = keys
//!     .create(NewKey::new().owner_id("user_123").scopes(["read", "write"]).expires_in(Duration::from_secs(3600)))
//!     .await?;                              // Created { key: PlainKey, record: KeyRecord }
//! let v = keys.verify(created.key.expose()).await?;   // Verification
//! assert!(v.is_valid() && v.code() == Code::Valid);
//! assert_eq!(v.record().unwrap().owner_id.as_deref(), Some("user_123"));
//! keys.revoke(&created.record.id).await?;
//! assert_eq!(keys.verify(created.key.expose()).await?.code(), Code::Revoked);
//! # Ok::<(), keypal::Error>(())
//! # }).unwrap();
//! ```
//!
//! The crate is runtime-agnostic: its futures run on any executor, and it starts
//! no background task (coalesced `last_used_at` writes are flushed by the
//! verification that finds them due, or by [`KeyManager::flush_last_used`]).
#![forbid(unsafe_code)]

mod cache;
pub mod clock;
pub mod config;
mod error;
pub mod event;
pub mod format;
pub mod hash;
pub mod invalidation;
mod last_used;
mod manager;
pub mod offload;
mod random_bits;
pub mod ratelimit;
mod record;
mod refill;
pub mod scope;
mod secret;
pub mod store;
pub mod tags;
mod tier;
mod verification;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{CacheMode, Config, ConfigError, ConfigProblem, HashAlgorithm};
pub use error::Error;
pub use event::{Action, AuditContext, AuditQuery, Event, EventSink, VerificationEvent};
pub use format::{Encoding, Formatter, ParsedKey, Template};
pub use hash::{Hasher, Hashing};
pub use invalidation::{InvalidInvalidation, Invalidation};
pub use manager::{KeyManager, KeyManagerBuilder, LookupStrategy, Rotated};
pub use offload::{Offload, OffloadError};
pub use ratelimit::{GcraLimiter, RateLimitStatus, RateLimiter, RateLimiterError};
pub use record::{
    Created, DigestEncoding, Expiry, HashCovers, ImportAlgorithm, ImportKey, ImportSource, ImportedHash, InvalidKeyId,
    KeyId, KeyPatch, KeyRecord, Lookup, NewKey,
};
pub use refill::{InvalidRefill, Refill, RefillInterval};
pub use secret::{AsKey, KeySealer, PlainKey, SealError};
pub use store::{
    CreditOp, Credits, Inserted, Insertion, ListQuery, MemoryStore, NamespaceFilter, Page, Store, StoreError,
};
pub use tags::{InvalidTags, Tags};
pub use tier::{InvalidRateLimit, RateLimit, Tier};
pub use verification::{Code, Verification, VerifyOptions};
