//! The verification pipeline: parse → lookup (cache, then store) → constant-time
//! hash check → state → scopes → rate limit → credits → last used → event.

use std::sync::Arc;

use time::OffsetDateTime;

use super::{Format, KeyManager, Limiter, LookupStrategy};
use crate::event::{Action, Event};
use crate::format::ParsedKey;
use crate::hash::sha256;
use crate::ratelimit::RateLimiter;
use crate::record::{KeyRecord, Lookup};
use crate::scope;
use crate::store::{Credits, Store};
use crate::verification::{Code, Verification, VerifyOptions};
use crate::{Error, StoreError};

impl<S: Store> KeyManager<S> {
    /// Verifies a presented key. Every rejection is a [`Verification`] with a
    /// [`Code`]; `Err` means the store (or a shared rate limiter) failed.
    pub async fn verify(&self, key: &str) -> Result<Verification, Error> {
        self.verify_with(key, &VerifyOptions::default()).await
    }

    /// Verifies a presented key, requiring scopes and spending `cost` credits.
    ///
    /// ```
    /// use keypal::{Code, KeyManager, MemoryStore, NewKey, VerifyOptions};
    /// # pollster::block_on(async {
    /// let keys = KeyManager::builder().store(MemoryStore::new()).build()?;
    /// let created = keys.create(NewKey::new().scopes(["billing:*"]).remaining(2)).await?;
    /// let key = created.key.expose();
    ///
    /// let read = VerifyOptions::new().scopes(["billing:read"]);
    /// assert_eq!(keys.verify_with(key, &read).await?.remaining(), Some(1));
    /// let admin = VerifyOptions::new().scopes(["admin"]);
    /// assert_eq!(keys.verify_with(key, &admin).await?.code(), Code::InsufficientScope);
    /// assert_eq!(keys.verify_with(key, &read.clone().cost(5)).await?.code(), Code::UsageExceeded);
    /// # Ok::<(), keypal::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn verify_with(&self, key: &str, options: &VerifyOptions) -> Result<Verification, Error> {
        let verification = self.check(key, options).await?;
        if !self.inner.sinks.is_empty() {
            let mut event = Event::new(Action::Verified, self.inner.clock.now(), (*self.context).clone());
            event.code = Some(verification.code());
            if let Some(record) = verification.record() {
                event.key_id = Some(record.id);
                event.namespace.clone_from(&record.namespace);
                event.owner_id.clone_from(&record.owner_id);
            }
            self.emit(&event);
        }
        Ok(verification)
    }

    async fn check(&self, key: &str, options: &VerifyOptions) -> Result<Verification, Error> {
        let Some((format, parsed)) = self.parse(key) else {
            return Ok(Verification::rejected(Code::Malformed));
        };
        let Some(record) = self.find_verified(key, format, parsed).await? else {
            return Ok(Verification::rejected(Code::NotFound));
        };
        // Read after the lookup: a state change that completed before the store answered is judged as done.
        let now = self.inner.clock.now();
        self.judge(record, options, now).await
    }

    /// The first accepted format the key parses under.
    pub(super) fn parse<'k>(&'k self, key: &'k str) -> Option<(&'k Format, ParsedKey<'k>)> {
        self.inner.formats.iter().find_map(|f| f.formatter.parse(key).map(|p| (f, p)))
    }

    /// The record whose hash matches the key, from the cache or the store.
    async fn find_verified(
        &self,
        key: &str,
        format: &Format,
        parsed: ParsedKey<'_>,
    ) -> Result<Option<Arc<KeyRecord>>, Error> {
        let inner = &*self.inner;
        let bytes = key.as_bytes();
        let digest = (inner.cache.is_some() || format.strategy == LookupStrategy::Digest).then(|| sha256(bytes));
        let mut generation = 0;
        if let (Some(cache), Some(digest)) = (&inner.cache, &digest) {
            if let Some(record) = cache.get(digest) {
                return Ok(Some(record));
            }
            generation = cache.generation();
        }
        let found = match (format.strategy, digest) {
            (LookupStrategy::Digest, Some(digest)) => {
                let record = inner.store.find(&Lookup::Digest(digest)).await?;
                record.filter(|r| self.owns(r) && inner.hashing.verify_with_sha256(bytes, &digest, &r.hash))
            }
            (LookupStrategy::Id, _) => {
                let record = match parsed.id {
                    Some(id) => inner.store.find(&Lookup::Id(id.to_owned())).await?,
                    None => None,
                };
                match record.filter(|r| self.owns(r)) {
                    Some(r) => inner.hashing.verify(bytes, &r.hash).then_some(r),
                    None => {
                        inner.hashing.dummy_verify(bytes);
                        None
                    }
                }
            }
            _ => {
                let hint = key.get(..inner.hint_len).unwrap_or(key);
                let candidates = inner.store.find_by_hint(hint).await?;
                let mut candidates = candidates.into_iter().filter(|r| self.owns(r)).peekable();
                if candidates.peek().is_none() {
                    inner.hashing.dummy_verify(bytes);
                }
                candidates.find(|r| inner.hashing.verify(bytes, &r.hash))
            }
        };
        let Some(record) = found else { return Ok(None) };
        let record = self.rehash_if_needed(bytes, record).await;
        if let (Some(cache), Some(digest)) = (&inner.cache, digest) {
            cache.insert(digest, record.clone(), generation);
        }
        Ok(Some(record))
    }

    /// Whether a record belongs to this manager's namespace.
    fn owns(&self, record: &KeyRecord) -> bool {
        record.namespace == self.inner.namespace
    }

    /// Re-hashes under the current policy after a successful verify of an outdated
    /// hash (compare-and-swap). Best effort: if the store refuses, the next verify tries again.
    async fn rehash_if_needed(&self, key: &[u8], record: Arc<KeyRecord>) -> Arc<KeyRecord> {
        let hashing = &self.inner.hashing;
        if !hashing.needs_rehash(&record.hash) {
            return record;
        }
        let new_hash = hashing.hash(key);
        match self.inner.store.replace_hash(record.id, &record.hash, &new_hash).await {
            Ok(true) => {
                let mut updated = KeyRecord::clone(&record);
                updated.hash = new_hash;
                updated.version += 1;
                Arc::new(updated)
            }
            _ => record,
        }
    }

    /// The checks after the hash matched, in pipeline order.
    async fn judge(
        &self,
        record: Arc<KeyRecord>,
        options: &VerifyOptions,
        now: OffsetDateTime,
    ) -> Result<Verification, Error> {
        if record.is_revoked_at(now) {
            return Ok(Verification::of(Code::Revoked, record));
        }
        if !record.enabled {
            return Ok(Verification::of(Code::Disabled, record));
        }
        if record.is_expired_at(now) {
            return Ok(Verification::of(Code::Expired, record));
        }
        if !scope::grants_all(&record.scopes, &options.scopes) {
            return Ok(Verification::of(Code::InsufficientScope, record));
        }
        let mut rate_limit = None;
        let limit = record
            .rate_limit
            .or_else(|| record.tier.as_ref().and_then(|t| self.inner.tiers.get(t)).and_then(|t| t.rate_limit));
        if let Some(limit) = limit {
            let status = match &self.inner.limiter {
                Limiter::Local(local) => local.check(record.id, limit, now).await?,
                Limiter::Shared(shared) => shared.check_boxed(record.id, limit, now).await?,
            };
            rate_limit = Some(status);
            if !status.allowed {
                let mut v = Verification::of(Code::RateLimited, record);
                v.rate_limit = rate_limit;
                return Ok(v);
            }
        }
        let mut remaining = None;
        if record.remaining.is_some() {
            match self.inner.store.consume(record.id, options.cost).await {
                Ok(Credits::Unlimited) => {}
                Ok(Credits::Spent { remaining: left }) => remaining = Some(left),
                Ok(Credits::Exhausted { remaining: left }) => {
                    let mut v = Verification::of(Code::UsageExceeded, record);
                    v.rate_limit = rate_limit;
                    v.remaining = Some(left);
                    return Ok(v);
                }
                // Deleted between lookup and now.
                Err(StoreError::NotFound) => return Ok(Verification::rejected(Code::NotFound)),
                Err(e) => return Err(e.into()),
            }
        }
        self.note_use(&record, now).await;
        let mut v = Verification::of(Code::Valid, record);
        v.rate_limit = rate_limit;
        v.remaining = remaining;
        Ok(v)
    }

    async fn note_use(&self, record: &KeyRecord, now: OffsetDateTime) {
        if let Some(batch) = self.inner.last_used.note(record, now) {
            self.write_last_used(batch).await;
        }
    }

    async fn write_last_used(&self, batch: Vec<(crate::KeyId, OffsetDateTime)>) -> Option<StoreError> {
        if batch.is_empty() {
            return None;
        }
        match self.inner.store.touch(&batch).await {
            Ok(()) => None,
            Err(e) => {
                // Kept for the next flush: a failed write loses nothing.
                self.inner.last_used.restore(batch);
                Some(e)
            }
        }
    }

    /// Writes every pending `last_used_at` now (call it on shutdown).
    pub async fn flush_last_used(&self) -> Result<(), Error> {
        let batch = self.inner.last_used.take(self.inner.clock.now());
        match self.write_last_used(batch).await {
            None => Ok(()),
            Some(e) => Err(Error::Store(e)),
        }
    }
}
