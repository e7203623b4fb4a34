//! The verified-result cache: a presented key whose hash already matched skips the
//! store read and the hash check until the entry expires or the key changes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::sync::Cache;

use crate::record::{KeyId, KeyRecord};

/// Entries keyed by SHA-256 of the presented key; a second map from key id to that
/// digest lets a change to the key drop its entry.
#[derive(Debug)]
pub(crate) struct VerifiedCache {
    by_digest: Cache<[u8; 32], Arc<KeyRecord>>,
    digest_of: Cache<KeyId, [u8; 32]>,
    /// Bumped by every invalidation. A verification that read the store before an
    /// invalidation must not cache what it read: it may be the state just replaced.
    generation: AtomicU64,
}

impl VerifiedCache {
    pub(crate) fn new(ttl: Duration, capacity: u64) -> Self {
        Self {
            by_digest: Cache::builder().max_capacity(capacity).time_to_live(ttl).build(),
            digest_of: Cache::builder().max_capacity(capacity).time_to_live(ttl).build(),
            generation: AtomicU64::new(0),
        }
    }

    pub(crate) fn get(&self, digest: &[u8; 32]) -> Option<Arc<KeyRecord>> {
        self.by_digest.get(digest)
    }

    /// The generation to pass to [`VerifiedCache::insert`]; read it before reading the store.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Caches `record` unless an invalidation happened since `generation` was read.
    pub(crate) fn insert(&self, digest: [u8; 32], record: Arc<KeyRecord>, generation: u64) {
        if self.generation() != generation {
            return;
        }
        self.digest_of.insert(record.id, digest);
        self.by_digest.insert(digest, record);
        // An invalidation that raced the two inserts may have missed them: undo.
        if self.generation() != generation {
            self.by_digest.invalidate(&digest);
        }
    }

    pub(crate) fn invalidate(&self, id: KeyId) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Some(digest) = self.digest_of.remove(&id) {
            self.by_digest.invalidate(&digest);
        }
    }

    pub(crate) fn clear(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.by_digest.invalidate_all();
        self.digest_of.invalidate_all();
    }
}
