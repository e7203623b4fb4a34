//! The verification pipeline: parse → lookup (cache, then store) → constant-time
//! hash check → state → scopes → rate limit → credits → last used → event.
//!
//! The usual verification awaits once, for the store lookup; every other step is a
//! plain function. The steps that must await but seldom run (re-hashing, a shared
//! rate limiter, spending credits, the periodic `last_used_at` write) run in boxed
//! futures. So the future [`KeyManager::verify`] returns stays small, which matters
//! because a future is moved by value, all its bytes copied on every move.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use time::OffsetDateTime;

use super::{Format, KeyManager, Limiter, LookupStrategy};
use crate::clock::Clock;
use crate::event::VerificationEvent;
use crate::format::ParsedKey;
use crate::hash::sha256;
use crate::ratelimit::RateLimitStatus;
use crate::record::{KeyRecord, Lookup};
use crate::scope;
use crate::secret::first_chars;
use crate::store::{Credits, Store};
use crate::tags::Tags;
use crate::tier::RateLimit;
use crate::verification::{Code, Verification, VerifyOptions};
use crate::{Error, StoreError};

/// The options of [`KeyManager::verify`]: no required scopes, cost 1.
static DEFAULT_OPTIONS: VerifyOptions = VerifyOptions { scopes: Vec::new(), cost: 1, tags: Tags::none() };

/// A record whose hash matched the presented key, and whether it came from the
/// verified-result cache (whose copy keeps the credits it was cached with).
#[derive(Clone)]
pub(super) struct Found {
    pub(super) record: Arc<KeyRecord>,
    pub(super) cached: bool,
}

/// The rest of a verification that has to await, boxed.
type Pending<'a> = Pin<Box<dyn Future<Output = Result<Verification, Error>> + Send + 'a>>;

/// A verification decided at once, or the rest of it that has to await.
enum Judged<'a> {
    Done(Verification),
    Pending(Pending<'a>),
}

impl<S: Store> KeyManager<S> {
    /// Verifies a presented key. Every rejection is a [`Verification`] with a
    /// [`Code`]; `Err` means the store (or a shared rate limiter) failed.
    pub fn verify(&self, key: &str) -> impl Future<Output = Result<Verification, Error>> {
        // The future of `verify_with` itself, not an `async fn` awaiting it: one future
        // fewer, nested in nothing.
        self.verify_with(key, &DEFAULT_OPTIONS)
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
        let verification = match self.parse(key) {
            None => Verification::rejected(Code::Malformed),
            Some((format, parsed)) => {
                let inner = &*self.inner;
                // The second of the request, for the `last_used_at` filter: the coarse
                // clock, cheap to read (a precise time is read later, only when a step needs one).
                let second = inner.clock.coarse_unix_seconds();
                let digest = (inner.cache.is_some() || format.strategy == LookupStrategy::Digest)
                    .then(|| sha256(key.as_bytes()));
                let found = match (&inner.flights, &digest) {
                    (Some(flights), Some(digest)) => {
                        self.find_verified_once(flights, key, format.strategy, parsed.id, digest).await?
                    }
                    _ => self.find_verified(key, format.strategy, parsed.id, digest.as_ref()).await?,
                };
                match found {
                    None => Verification::rejected(Code::NotFound),
                    Some(Found { record, cached }) => {
                        let verification = match self.judge(record, options, second) {
                            Judged::Done(verification) => verification,
                            Judged::Pending(rest) => rest.await?,
                        };
                        if cached && reports_credits_of_the_record(&verification) {
                            // Boxed: rare, and it would otherwise grow every verification's future.
                            Box::pin(self.with_stored_credits(verification)).await?
                        } else {
                            verification
                        }
                    }
                }
            }
        };
        if !self.inner.sinks.is_empty() {
            self.emit_verified(&verification, &options.tags);
        }
        Ok(verification)
    }

    /// Hands the verification, with its tags (borrowed, not copied), to the sinks.
    fn emit_verified(&self, verification: &Verification, tags: &Tags) {
        let verified = VerificationEvent::new(&*self.inner.clock, verification, tags, &self.context);
        for sink in &self.inner.sinks {
            sink.record_verification(&verified);
        }
    }

    /// The first accepted format the key parses under.
    pub(super) fn parse<'k>(&'k self, key: &'k str) -> Option<(&'k Format, ParsedKey<'k>)> {
        self.inner.formats.iter().find_map(|f| f.formatter.parse(key).map(|p| (f, p)))
    }

    /// The record whose hash matches the key, from the cache or the store. `id` is the
    /// key's id segment, if its format has one; `digest` is the key's SHA-256, computed
    /// when the cache or the lookup uses it. (Borrowed, not copied: this future is
    /// part of every verification's, and a future is moved by copying all its bytes.)
    pub(super) async fn find_verified(
        &self,
        key: &str,
        strategy: LookupStrategy,
        id: Option<&str>,
        digest: Option<&[u8; 32]>,
    ) -> Result<Option<Found>, Error> {
        let inner = &*self.inner;
        let bytes = key.as_bytes();
        let mut generation = 0;
        if let (Some(cache), Some(digest)) = (&inner.cache, digest) {
            if let Some(record) = cache.get(digest) {
                return Ok(Some(Found { record, cached: true }));
            }
            generation = cache.generation();
        }
        let found = self.find_matching(key, strategy, id, digest).await?;
        let Some(mut record) = found else { return Ok(None) };
        if inner.hashing.needs_rehash(&record.hash) || !self.is_current_lookup(&record.lookup, strategy, key, digest) {
            let lookup = self.current_lookup(&record, strategy, key, digest);
            // Boxed: rare, and it would otherwise grow every verification's future.
            record = Box::pin(self.rehash(bytes, record, lookup)).await;
        }
        if let (Some(cache), Some(digest)) = (&inner.cache, digest) {
            cache.insert(*digest, record.clone(), generation);
        }
        Ok(Some(Found { record, cached: false }))
    }

    /// The record of this namespace whose hash the key matches, found by the lookup
    /// `strategy` gives (by the other of digest and hint too, for a key stored before
    /// the hash changed between a fast and a slow algorithm). `digest` is the key's
    /// SHA-256, when computed (it is for the digest strategy).
    pub(super) async fn find_matching(
        &self,
        key: &str,
        strategy: LookupStrategy,
        id: Option<&str>,
        digest: Option<&[u8; 32]>,
    ) -> Result<Option<Arc<KeyRecord>>, Error> {
        Ok(match (strategy, digest) {
            (LookupStrategy::Digest, Some(digest)) => match self.match_by_digest(key.as_bytes(), digest).await? {
                Some(record) => Some(record),
                // Boxed: rare, and it would otherwise grow every verification's future.
                None => Box::pin(self.match_by_hint_after_hash_change(key)).await?,
            },
            (LookupStrategy::Id, _) => {
                let record = match id {
                    Some(id) => self.inner.store.find(&Lookup::Id(id.to_owned())).await?,
                    None => None,
                };
                self.matching(key, record.filter(|r| self.owns(r)).as_slice()).await?
            }
            _ => {
                match self.match_by_hint(key).await? {
                    Some(record) => Some(record),
                    // Boxed: rare, and it would otherwise grow every verification's future.
                    None => Box::pin(self.match_by_digest_after_hash_change(key, digest)).await?,
                }
            }
        })
    }

    /// The record stored under the key's digest, when it is this namespace's and its
    /// hash matches.
    async fn match_by_digest(&self, key: &[u8], digest: &[u8; 32]) -> Result<Option<Arc<KeyRecord>>, Error> {
        let inner = &*self.inner;
        let record = inner.store.find(&Lookup::Digest(*digest)).await?;
        Ok(record.filter(|r| self.owns(r) && inner.hashing.verify_with_sha256(key, digest, &r.hash)))
    }

    /// The record among the key's hint candidates (this namespace's) whose hash
    /// matches, checked through the offload when a hash is slow (a dummy check when
    /// there is no candidate, so an unknown key costs what a known one does).
    async fn match_by_hint(&self, key: &str) -> Result<Option<Arc<KeyRecord>>, Error> {
        let inner = &*self.inner;
        let candidates = inner.store.find_by_hint(first_chars(key, inner.hint_len)).await?;
        let candidates: Vec<_> = candidates.into_iter().filter(|r| self.owns(r)).collect();
        self.matching(key, &candidates).await
    }

    /// Under a fast hash (digest lookup), a key not found by its digest may have been
    /// stored while the hash was slow: found by its hint. Re-hashed once verified.
    async fn match_by_hint_after_hash_change(&self, key: &str) -> Result<Option<Arc<KeyRecord>>, Error> {
        self.match_by_hint(key).await
    }

    /// Under a slow hash (hint lookup), a key no hint candidate matches may have been
    /// stored while the hash was fast: found by its digest. Re-hashed once verified.
    async fn match_by_digest_after_hash_change(
        &self,
        key: &str,
        digest: Option<&[u8; 32]>,
    ) -> Result<Option<Arc<KeyRecord>>, Error> {
        let digest = digest.copied().unwrap_or_else(|| sha256(key.as_bytes()));
        self.match_by_digest(key.as_bytes(), &digest).await
    }

    /// Whether a record is stored under the lookup the key's format gives now: a
    /// record stored before the hash changed between a fast and a slow algorithm has
    /// the other one (a digest for a hint, or the reverse).
    fn is_current_lookup(
        &self,
        lookup: &Lookup,
        strategy: LookupStrategy,
        key: &str,
        digest: Option<&[u8; 32]>,
    ) -> bool {
        match (strategy, lookup) {
            (LookupStrategy::Id, _) => true,
            (LookupStrategy::Digest, Lookup::Digest(stored)) => digest.is_none_or(|d| d == stored),
            (LookupStrategy::Hint, Lookup::Hint(stored)) => stored == first_chars(key, self.inner.hint_len),
            _ => false,
        }
    }

    /// The lookup the key's format gives now (an id lookup stays as stored).
    fn current_lookup(
        &self,
        record: &KeyRecord,
        strategy: LookupStrategy,
        key: &str,
        digest: Option<&[u8; 32]>,
    ) -> Lookup {
        match strategy {
            LookupStrategy::Id => record.lookup.clone(),
            LookupStrategy::Digest => Lookup::Digest(digest.copied().unwrap_or_else(|| sha256(key.as_bytes()))),
            LookupStrategy::Hint => Lookup::Hint(first_chars(key, self.inner.hint_len).to_owned()),
        }
    }

    /// Whether a record belongs to this manager's namespace.
    fn owns(&self, record: &KeyRecord) -> bool {
        record.namespace == self.inner.namespace
    }

    /// Re-stores the key under the current policy after a successful verify of an
    /// outdated hash or lookup: hashed with the current hasher (through the offload
    /// when it is slow), found by `lookup`, both in one compare-and-swap. Best effort:
    /// if the store (or the offload) refuses, the next verify tries again.
    async fn rehash(&self, key: &[u8], record: Arc<KeyRecord>, lookup: Lookup) -> Arc<KeyRecord> {
        let Ok(new_hash) = self.hash_new(key).await else { return record };
        match self.inner.store.replace_hash(record.id, &record.hash, &new_hash, &lookup).await {
            Ok(true) => {
                let mut updated = KeyRecord::clone(&record);
                updated.hash = new_hash;
                updated.lookup = lookup;
                updated.version += 1;
                Arc::new(updated)
            }
            _ => record,
        }
    }

    /// A refusal judged on a cached record, with the credits the store holds now: the
    /// cached record's count is the one it was cached with, spent since by every
    /// verification that passed. A key deleted since is `NOT_FOUND`.
    async fn with_stored_credits(&self, verification: Verification) -> Result<Verification, Error> {
        let Some(id) = verification.record().map(|r| r.id) else { return Ok(verification) };
        match self.inner.store.get(id).await? {
            Some(stored) => {
                let mut verification = verification;
                verification.remaining = stored.remaining;
                Ok(verification)
            }
            None => Ok(Verification::rejected(Code::NotFound)),
        }
    }

    /// The checks after the hash matched, in pipeline order. Decided at once unless a
    /// step has to await: a shared rate limiter, spending credits, a due `last_used_at` write.
    ///
    /// The time is read here, after the lookup, and only when a step depends on it: a
    /// record that is revoked (or will be, once its rotation grace window ends) or that
    /// expires, a rate limit, a use to note. So a state change that completed before the
    /// store answered is judged as done, and the usual verification (no expiry, no rate
    /// limit, use already noted) reads no precise time at all.
    ///
    /// `second` is the Unix second of the request from the coarse clock: whether the
    /// use is noted in its `last_used_at` interval already needs no precise time.
    #[inline]
    fn judge<'a>(&'a self, record: Arc<KeyRecord>, options: &'a VerifyOptions, second: i64) -> Judged<'a> {
        let now = RequestTime::new(&*self.inner.clock);
        if let Some(code) = refusal(&record, options, &now) {
            return Judged::Done(Verification::of(code, record));
        }
        let limit = self.rate_limit_of(&record);
        let local = match &self.inner.limiter {
            Limiter::Local(local) => Some(local),
            Limiter::Shared(_) => None,
        };
        if record.remaining.is_some() || record.refill.is_some() || (limit.is_some() && local.is_none()) {
            return Judged::Pending(Box::pin(self.judge_awaiting(record, limit, options, now.get(), second)));
        }
        let rate_limit = limit.zip(local).map(|(limit, local)| local.decide(record.id, limit, now.get()));
        if let Some(refused) = rate_limit.filter(|status| !status.allowed) {
            return Judged::Done(rate_limited(record, refused));
        }
        self.valid(record, rate_limit, None, &now, second)
    }

    /// [`KeyManager::judge`] from the rate limit on, for the keys whose checks await.
    async fn judge_awaiting(
        &self,
        record: Arc<KeyRecord>,
        limit: Option<RateLimit>,
        options: &VerifyOptions,
        now: OffsetDateTime,
        second: i64,
    ) -> Result<Verification, Error> {
        let mut rate_limit = None;
        if let Some(limit) = limit {
            let status = match &self.inner.limiter {
                Limiter::Local(local) => local.decide(record.id, limit, now),
                Limiter::Shared(shared) => shared.check_boxed(record.id, limit, now).await?,
            };
            if !status.allowed {
                return Ok(rate_limited(record, status));
            }
            rate_limit = Some(status);
        }
        let mut remaining = None;
        if record.remaining.is_some() || record.refill.is_some() {
            match self.inner.store.consume(record.id, options.cost, record.refill_due(now)).await {
                Ok(Credits::Unlimited) => {}
                Ok(Credits::Spent { remaining: left }) => remaining = Some(left),
                Ok(Credits::Exhausted { remaining: left }) => {
                    let refill_at = record.refill_at(now);
                    let mut v = Verification::of(Code::UsageExceeded, record);
                    v.rate_limit = rate_limit;
                    v.remaining = Some(left);
                    v.refill_at = refill_at;
                    return Ok(v);
                }
                // Deleted between lookup and now.
                Err(StoreError::NotFound) => return Ok(Verification::rejected(Code::NotFound)),
                Err(e) => return Err(e.into()),
            }
        }
        let refill_at = record.refill_at(now);
        let judged = self.valid(record, rate_limit, remaining, &RequestTime::read_at(&*self.inner.clock, now), second);
        let mut verification = match judged {
            Judged::Done(verification) => verification,
            Judged::Pending(rest) => rest.await?,
        };
        verification.refill_at = refill_at;
        Ok(verification)
    }

    /// The rate limit a key is held to: its own, else its tier's; `None` is unlimited.
    ///
    /// ```
    /// use keypal::{KeyManager, MemoryStore, NewKey, RateLimit, Tier};
    /// # pollster::block_on(async {
    /// let keys = KeyManager::builder()
    ///     .tier("free", Tier::new().rate_limit(RateLimit::per_hour(100)))
    ///     .store(MemoryStore::new())
    ///     .build()?;
    /// let free = keys.create(NewKey::new().tier("free")).await?.record;
    /// assert_eq!(keys.rate_limit_of(&free), Some(RateLimit::per_hour(100)));
    /// let own = keys.create(NewKey::new().tier("free").rate_limit(RateLimit::per_hour(5))).await?.record;
    /// assert_eq!(keys.rate_limit_of(&own), Some(RateLimit::per_hour(5)));
    /// # Ok::<(), keypal::Error>(())
    /// # }).unwrap();
    /// ```
    pub fn rate_limit_of(&self, record: &KeyRecord) -> Option<RateLimit> {
        record.rate_limit.or_else(|| record.tier.as_ref().and_then(|t| self.inner.tiers.get(t)?.rate_limit))
    }

    /// The key passed every check: notes its use (unless its record says the use is
    /// noted in the interval of `second`), and returns it valid (after the
    /// `last_used_at` write, when one is due).
    #[inline]
    fn valid(
        &self,
        record: Arc<KeyRecord>,
        rate_limit: Option<RateLimitStatus>,
        remaining: Option<u64>,
        now: &RequestTime<'_>,
        second: i64,
    ) -> Judged<'_> {
        let last_used = &self.inner.last_used;
        let due = if last_used.is_noted(&record, second) { None } else { last_used.note(&record, now.get()) };
        let mut v = Verification::of(Code::Valid, record);
        v.rate_limit = rate_limit;
        v.remaining = remaining;
        match due {
            None => Judged::Done(v),
            Some(batch) => Judged::Pending(Box::pin(async move {
                self.write_last_used(batch).await;
                Ok(v)
            })),
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

/// The state checks that need no store or limiter (revoked, disabled, expired,
/// scopes), in pipeline order: the code of the first that fails. The time is read
/// only for a record with a revocation or an expiry.
#[inline]
fn refusal(record: &KeyRecord, options: &VerifyOptions, now: &RequestTime<'_>) -> Option<Code> {
    if record.revoked_at.is_some() && record.is_revoked_at(now.get()) {
        Some(Code::Revoked)
    } else if !record.enabled {
        Some(Code::Disabled)
    } else if record.expires_at.is_some() && record.is_expired_at(now.get()) {
        Some(Code::Expired)
    } else if !scope::grants_all(&record.scopes, &options.scopes) {
        Some(Code::InsufficientScope)
    } else {
        None
    }
}

/// Whether a verification reports the credits of its record as it was read (a
/// refusal before credits are spent), rather than what spending them left.
fn reports_credits_of_the_record(verification: &Verification) -> bool {
    verification.remaining.is_some() && !matches!(verification.code, Code::Valid | Code::UsageExceeded)
}

/// A refusal for being over the rate limit.
fn rate_limited(record: Arc<KeyRecord>, status: RateLimitStatus) -> Verification {
    let mut v = Verification::of(Code::RateLimited, record);
    v.rate_limit = Some(status);
    v
}

/// The time of a verification: read from the clock when a step first needs it, then
/// the same for every later step.
struct RequestTime<'c> {
    clock: &'c dyn Clock,
    at: Cell<Option<OffsetDateTime>>,
}

impl<'c> RequestTime<'c> {
    /// Not read yet.
    fn new(clock: &'c dyn Clock) -> Self {
        Self { clock, at: Cell::new(None) }
    }

    /// Already read from `clock`: `at`.
    fn read_at(clock: &'c dyn Clock, at: OffsetDateTime) -> Self {
        Self { clock, at: Cell::new(Some(at)) }
    }

    fn get(&self) -> OffsetDateTime {
        match self.at.get() {
            Some(at) => at,
            None => {
                let at = self.clock.now();
                self.at.set(Some(at));
                at
            }
        }
    }
}
