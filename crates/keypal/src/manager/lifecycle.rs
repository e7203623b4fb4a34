//! Creating, reading, changing and retiring keys.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use super::{Format, KeyManager, LookupStrategy};
use crate::clock::truncate_to_micros;
use crate::config::LONGEST_DURATION;
use crate::event::{Action, AuditQuery, Event};
use crate::hash::{Hashing, sha256};
use crate::record::{
    Created, Expiry, HashCovers, ImportAlgorithm, ImportKey, ImportSource, ImportedHash, KeyId, KeyPatch, KeyRecord,
    Lookup, NewKey, NotedIn,
};
use crate::scope;
use crate::store::{Insertion, ListQuery, NamespaceFilter, Page, Store, StoreError};
use crate::{Error, PlainKey};

/// How many times a create or rotate draws a new key after a lookup collision.
const ATTEMPTS: u32 = 3;

/// The result of a rotation: the new key (shown once), its record, and the old record.
#[derive(Debug, Clone)]
pub struct Rotated {
    /// The new plaintext key.
    pub key: PlainKey,
    /// The new key's record.
    pub record: KeyRecord,
    /// The old key's record: `rotated_to` names the new key, `revoked_at` ends its grace window.
    pub previous: KeyRecord,
}

/// An import checked and ready to store.
struct Prepared {
    insertion: Insertion,
    lookup: Lookup,
}

/// A state change of one key.
enum Change {
    Update(KeyPatch),
    Enable(bool),
    Revoke,
}

/// The checked fields of a new key.
struct Fields {
    name: Option<String>,
    owner_id: Option<String>,
    scopes: Vec<String>,
    metadata: Option<serde_json::Value>,
    tier: Option<String>,
    expires_at: Option<OffsetDateTime>,
    remaining: Option<u64>,
    refill: Option<crate::Refill>,
    /// When the credits were last refilled (a rotated key keeps the old key's).
    refilled_at: Option<OffsetDateTime>,
    rate_limit: Option<crate::RateLimit>,
}

impl<S: Store> KeyManager<S> {
    /// Creates a key: checks the request against the policies, generates the key,
    /// stores its hash and returns the plaintext once.
    ///
    /// A generated id or digest that collides with an existing key is drawn again
    /// (3 attempts). Owner limits are enforced by the store in the same atomic unit
    /// as the insert.
    pub async fn create(&self, request: NewKey) -> Result<Created, Error> {
        let now = self.inner.clock.now();
        let fields = self.check_new(request, now)?;
        let format = self.inner.current();
        for _ in 0..ATTEMPTS {
            let key = format.formatter.generate(fields.tier.as_deref())?;
            let record = self.new_record(&key, format, &fields, now).await?;
            let event = self.event(Action::Created, now);
            match self.inner.store.insert(record, self.inner.policy.max_active_keys_per_owner, event.clone()).await {
                Ok(record) => {
                    self.emit_about(event, &record);
                    return Ok(Created { key, record: KeyRecord::clone(&record) });
                }
                Err(StoreError::Duplicate) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Collision { attempts: ATTEMPTS })
    }

    /// The key with this id (in this manager's namespace).
    pub async fn get(&self, id: &KeyId) -> Result<KeyRecord, Error> {
        Ok(KeyRecord::clone(&*self.owned(*id).await?))
    }

    /// A page of this manager's keys, newest first. The query's namespace is set to
    /// the manager's.
    ///
    /// ```
    /// use keypal::{KeyManager, ListQuery, MemoryStore, NewKey};
    /// # pollster::block_on(async {
    /// let keys = KeyManager::builder().store(MemoryStore::new()).build()?;
    /// for _ in 0..3 { keys.create(NewKey::new().owner_id("u1")).await?; }
    /// let first = keys.list(ListQuery::new().owner_id("u1").limit(2)).await?;
    /// assert_eq!(first.items.len(), 2);
    /// let rest = keys.list(ListQuery::new().owner_id("u1").limit(2).cursor(first.next_cursor.unwrap())).await?;
    /// assert_eq!(rest.items.len(), 1);
    /// assert!(rest.next_cursor.is_none());
    /// # Ok::<(), keypal::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn list(&self, query: ListQuery) -> Result<Page<KeyRecord>, Error> {
        let query = self.scoped(query);
        let page = self.inner.store.list(&query).await?;
        Ok(Page { items: page.items.iter().map(|r| KeyRecord::clone(r)).collect(), next_cursor: page.next_cursor })
    }

    /// Counts this manager's keys matching the query (owner, revoked included or not).
    pub async fn count(&self, query: ListQuery) -> Result<u64, Error> {
        Ok(self.inner.store.count(&self.scoped(query)).await?)
    }

    /// Changes some fields of a key, each an atomic column update.
    pub async fn update(&self, id: &KeyId, patch: KeyPatch) -> Result<KeyRecord, Error> {
        let mut patch = patch;
        if let Some(expires_at) = patch.expires_at {
            let current = self.get(id).await?;
            if expires_at.map(truncate_to_micros) == current.expires_at {
                // Sent back unchanged (a form that always sends every field): no change,
                // and not held to the expiry policy, so a key close to its expiry, or
                // past it, can still be renamed.
                patch.expires_at = None;
            } else if current.is_expired_at(self.inner.clock.now()) {
                // An expired key no longer counts against its owner's limit of active
                // keys; a new expiry would make it count again without that check.
                return Err(Error::invalid("expires_at", "the key has expired and stays expired: create a new key"));
            }
        }
        let patch = self.check_patch(patch)?;
        self.change(*id, Change::Update(patch)).await
    }

    /// Enables a disabled key.
    pub async fn enable(&self, id: &KeyId) -> Result<KeyRecord, Error> {
        self.change(*id, Change::Enable(true)).await
    }

    /// Disables a key: it is refused with `DISABLED` until enabled again.
    pub async fn disable(&self, id: &KeyId) -> Result<KeyRecord, Error> {
        self.change(*id, Change::Enable(false)).await
    }

    /// Revokes a key for good. The record stays for audit. A second revoke is
    /// [`Error::AlreadyRevoked`]; revoking a rotated key inside its grace window ends the window now.
    pub async fn revoke(&self, id: &KeyId) -> Result<KeyRecord, Error> {
        self.change(*id, Change::Revoke).await
    }

    /// Revokes every active key of an owner (in this manager's namespace). Returns the revoked keys.
    pub async fn revoke_all(&self, owner_id: &str) -> Result<Vec<KeyRecord>, Error> {
        let now = self.inner.clock.now();
        let event = self.event(Action::Revoked, now);
        let revoked =
            self.inner.store.revoke_owner(self.inner.namespace.as_deref(), owner_id, now, event.clone()).await?;
        for record in &revoked {
            self.invalidate(&record.id);
            self.emit_about(event.clone(), record);
        }
        Ok(revoked.iter().map(|r| KeyRecord::clone(r)).collect())
    }

    /// Replaces a key with a new secret, keeping its name, owner, scopes, metadata,
    /// tier, expiry, credits and rate limit. The old key stays valid for `grace`
    /// (never beyond its own expiry); with a zero grace it is refused at once.
    ///
    /// ```
    /// use keypal::{Code, KeyManager, MemoryStore, NewKey};
    /// use std::time::Duration;
    /// # pollster::block_on(async {
    /// let keys = KeyManager::builder().store(MemoryStore::new()).build()?;
    /// let old = keys.create(NewKey::new().owner_id("u1")).await?;
    /// let new = keys.rotate(&old.record.id, Duration::ZERO).await?;
    /// assert_eq!(keys.verify(old.key.expose()).await?.code(), Code::Revoked);
    /// assert!(keys.verify(new.key.expose()).await?.is_valid());
    /// assert_eq!(new.record.rotated_from, Some(old.record.id));
    /// # Ok::<(), keypal::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn rotate(&self, id: &KeyId, grace: Duration) -> Result<Rotated, Error> {
        let now = self.inner.clock.now();
        let old = self.owned(*id).await?;
        // Revoked, or already rotated and in its grace window: one replacement only.
        if old.revoked_at.is_some() {
            return Err(Error::AlreadyRevoked(*id));
        }
        if grace > LONGEST_DURATION {
            return Err(too_far("grace"));
        }
        let grace_end = truncate_to_micros(now + grace);
        let old_revoked_at = old.expires_at.map_or(grace_end, |exp| grace_end.min(exp.max(now)));
        let fields = Fields {
            name: old.name.clone(),
            owner_id: old.owner_id.clone(),
            scopes: old.scopes.clone(),
            metadata: old.metadata.clone(),
            tier: old.tier.clone(),
            expires_at: old.expires_at,
            remaining: old.remaining,
            refill: old.refill,
            refilled_at: old.refilled_at,
            rate_limit: old.rate_limit,
        };
        // The new key carries the old one's tier, which configuration may have removed since.
        if let Some(tier) = fields.tier.as_deref().filter(|t| !self.inner.tiers.contains_key(*t)) {
            return Err(Error::invalid(
                "tier",
                format!("the key's tier {tier:?} is no longer configured: give the key a configured tier first"),
            ));
        }
        let format = self.inner.current();
        for _ in 0..ATTEMPTS {
            let key = format.formatter.generate(fields.tier.as_deref().or(self.inner.default_tier.as_deref()))?;
            let mut record = self.new_record(&key, format, &fields, now).await?;
            record.rotated_from = Some(*id);
            let mut event = self.event(Action::Rotated, now);
            event.details =
                Some(serde_json::json!({ "new_key_id": record.id, "grace_until": old_revoked_at.unix_timestamp() }));
            match self.inner.store.rotate(*id, record, old_revoked_at, event.clone()).await {
                Ok((previous, record)) => {
                    self.invalidate(id);
                    self.emit_about(event, &previous);
                    return Ok(Rotated {
                        key,
                        record: KeyRecord::clone(&record),
                        previous: KeyRecord::clone(&previous),
                    });
                }
                Err(StoreError::Duplicate) => continue,
                Err(e) => return Err(Error::from_store(e, *id)),
            }
        }
        Err(Error::Collision { attempts: ATTEMPTS })
    }

    /// Deletes a key and its record for good (the audit log keeps the deletion).
    pub async fn delete(&self, id: &KeyId) -> Result<KeyRecord, Error> {
        self.owned(*id).await?;
        let now = self.inner.clock.now();
        let event = self.event(Action::Deleted, now);
        let deleted = self.inner.store.delete(*id, event.clone()).await?.ok_or(Error::NotFound(*id))?;
        self.invalidate(id);
        self.emit_about(event, &deleted);
        Ok(KeyRecord::clone(&deleted))
    }

    /// Imports a key issued elsewhere so it keeps working: its plaintext (which must
    /// parse under an accepted format), or a hash of it ([`ImportedHash`]: SHA-256 or
    /// SHA-512 in hex, base64 or base64url, salted or not, bcrypt, argon2id; of the
    /// whole key or of its secret segment).
    ///
    /// A hash is found by the key's id or first characters (`hint`), given with it; a
    /// plain SHA-256 of the whole key may also be found by its digest. The first
    /// successful verification of an imported key re-hashes it under the manager's
    /// policy when its hash is of another algorithm or covers only the secret.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] when the key is already stored: its id or digest is
    /// taken, a key under the same hint has the same stored hash, or (for a plaintext)
    /// the key already verifies. [`Error::Hash`] for a hash that is not what it claims,
    /// [`Error::Invalid`] for a missing lookup (`hint`) or a request field. Nothing is
    /// stored on any error.
    ///
    /// ```
    /// use keypal::{ImportKey, KeyManager, MemoryStore, NewKey};
    /// # pollster::block_on(async {
    /// // Keys issued before a prefix existed: bare 43-character base64url.
    /// let keys = KeyManager::builder()
    ///     .template("sprint_{secret:43:base64url}")
    ///     .legacy_template("{secret:43:base64url}")
    ///     .store(MemoryStore::new())
    ///     .build()?;
    /// let old_key = "fqz9XjX6ytY0jAqZDjR1OeL12rbmZrF6P0pB5oU3qZ0";
    /// keys.import(ImportKey::plaintext(old_key).with(NewKey::new().owner_id("u1"))).await?;
    /// assert!(keys.verify(old_key).await?.is_valid());
    /// let again = keys.import(ImportKey::plaintext(old_key)).await;
    /// assert_eq!(again.unwrap_err().code(), "ALREADY_EXISTS");
    /// # Ok::<(), keypal::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn import(&self, import: ImportKey) -> Result<KeyRecord, Error> {
        let Prepared { insertion, lookup } = self.prepare_import(import).await?;
        let event = insertion.event.clone();
        let result = self.inner.store.insert(insertion.record, insertion.max_active_per_owner, insertion.event).await;
        self.imported(result, &lookup, event).await
    }

    /// Imports several keys as [`KeyManager::import`] does, each standing alone (one
    /// refused does not keep the others out), in as few store transactions as the store
    /// allows ([`Store::insert_many`]): the way to bring in many keys. Answers one result
    /// per import, in order; two imports of one key in the same call are the first
    /// `created` and the second [`Error::AlreadyExists`].
    ///
    /// # Errors
    /// A store failure: then none of the keys was stored by a store that groups its
    /// inserts (SQL), and the keys stored before it by one that does not, each whole.
    ///
    /// ```
    /// use keypal::{ImportKey, KeyManager, MemoryStore};
    /// # pollster::block_on(async {
    /// let keys = KeyManager::builder().template("sk_{secret:32:base62}").store(MemoryStore::new()).build()?;
    /// let old = "sk_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    /// let results = keys
    ///     .import_many(vec![ImportKey::plaintext(old), ImportKey::plaintext("not a key"), ImportKey::plaintext(old)])
    ///     .await?;
    /// assert!(results[0].is_ok());
    /// assert_eq!(results[1].as_ref().unwrap_err().code(), "INVALID_INPUT");
    /// assert_eq!(results[2].as_ref().unwrap_err().code(), "ALREADY_EXISTS");
    /// assert!(keys.verify(old).await?.is_valid());
    /// # Ok::<(), keypal::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn import_many(&self, imports: Vec<ImportKey>) -> Result<Vec<Result<KeyRecord, Error>>, Error> {
        let mut results: Vec<Option<Result<KeyRecord, Error>>> = Vec::with_capacity(imports.len());
        let mut batch = Vec::new();
        let mut pending = Vec::new();
        // A hint is no unique index: a key given twice under a hint is caught here.
        let mut by_hint: HashMap<(String, String), KeyId> = HashMap::new();
        for import in imports {
            match self.prepare_import(import).await {
                Ok(Prepared { insertion, lookup }) => {
                    if let Lookup::Hint(hint) = &lookup {
                        match by_hint.entry((hint.clone(), insertion.record.hash.clone())) {
                            Entry::Occupied(earlier) => {
                                results.push(Some(Err(Error::AlreadyExists { existing: Some(*earlier.get()) })));
                                continue;
                            }
                            Entry::Vacant(first) => {
                                first.insert(insertion.record.id);
                            }
                        }
                    }
                    pending.push((results.len(), lookup, insertion.event.clone()));
                    batch.push(insertion);
                    results.push(None);
                }
                Err(error) => results.push(Some(Err(error))),
            }
        }
        let stored = self.inner.store.insert_many(batch).await?;
        if stored.len() != pending.len() {
            return Err(StoreError::backend(std::io::Error::other(format!(
                "the store answered {} results for {} records",
                stored.len(),
                pending.len()
            )))
            .into());
        }
        for ((place, lookup, event), result) in pending.into_iter().zip(stored) {
            if let Some(slot) = results.get_mut(place) {
                *slot = Some(self.imported(result, &lookup, event).await);
            }
        }
        Ok(results.into_iter().flatten().collect())
    }

    /// Checks an import as [`KeyManager::import`] would, storing nothing: the error the
    /// import would answer, [`Error::AlreadyExists`] for a key stored already included
    /// (the owner limit is not checked: it depends on what is stored first). A dry run.
    ///
    /// ```
    /// use keypal::{ImportKey, KeyManager, MemoryStore};
    /// # pollster::block_on(async {
    /// let keys = KeyManager::builder().template("sk_{secret:32:base62}").store(MemoryStore::new()).build()?;
    /// let old = "sk_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    /// keys.check_import(ImportKey::plaintext(old)).await?;
    /// assert_eq!(keys.verify(old).await?.code(), keypal::Code::NotFound, "nothing was stored");
    /// keys.import(ImportKey::plaintext(old)).await?;
    /// assert_eq!(keys.check_import(ImportKey::plaintext(old)).await.unwrap_err().code(), "ALREADY_EXISTS");
    /// # Ok::<(), keypal::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn check_import(&self, import: ImportKey) -> Result<(), Error> {
        let Prepared { lookup, .. } = self.prepare_import(import).await?;
        if !matches!(lookup, Lookup::Hint(_))
            && let Some(holder) = self.inner.store.find(&lookup).await?
        {
            return Err(Error::AlreadyExists { existing: self.owns_record(&holder).then_some(holder.id) });
        }
        Ok(())
    }

    /// An import checked and ready to store: its record, with the store's unique
    /// lookups checked at the insert.
    async fn prepare_import(&self, import: ImportKey) -> Result<Prepared, Error> {
        let now = self.inner.clock.now();
        let created_at = import.created_at.map_or(now, truncate_to_micros);
        let mut fields = self.check_new(import.details.clone(), now)?;
        let (lookup, hash, start, last4) = match &import.source {
            ImportSource::Plaintext(key) => {
                let text = key.expose();
                let Some((format, parsed)) = self.parse(text) else {
                    return Err(Error::invalid("key", "does not parse under any accepted format"));
                };
                if fields.tier.is_none() {
                    fields.tier = parsed.tier.map(str::to_owned);
                }
                let lookup = self.lookup_of(key, format)?;
                let digest = sha256(text.as_bytes());
                if let Some(existing) = self.find_matching(text, format.strategy, parsed.id, Some(&digest)).await? {
                    return Err(Error::AlreadyExists { existing: Some(existing.id) });
                }
                let hash = self.hash_new(text.as_bytes()).await?;
                (lookup, hash, self.start_of(key), key.end(4).to_owned())
            }
            ImportSource::Sha256Hex(hex) => {
                self.hash_import(&import, &ImportedHash::new(ImportAlgorithm::Sha256, hex.as_str())).await?
            }
            ImportSource::Bcrypt(mcf) => {
                self.hash_import(&import, &ImportedHash::new(ImportAlgorithm::Bcrypt, mcf.as_str())).await?
            }
            ImportSource::Hash(hash) => self.hash_import(&import, hash).await?,
        };
        let mut record = self.record_from(KeyId::new(), lookup, hash, start, last4, &fields, created_at);
        record.last_used_at = import.last_used_at.map(truncate_to_micros);
        record.enabled = import.enabled;
        if let ImportSource::Plaintext(key) = &import.source {
            record.encrypted_key = self.seal(record.id, key)?;
        }
        let event = self.event(Action::Imported, now);
        let limit = if import.skip_owner_limit { None } else { self.inner.policy.max_active_keys_per_owner };
        let lookup = record.lookup.clone();
        Ok(Prepared { insertion: Insertion { record, max_active_per_owner: limit, event }, lookup })
    }

    /// An import's answer from its insert's.
    async fn imported(
        &self,
        result: Result<Arc<KeyRecord>, StoreError>,
        lookup: &Lookup,
        event: Event,
    ) -> Result<KeyRecord, Error> {
        match result {
            Ok(record) => {
                self.emit_about(event, &record);
                Ok(KeyRecord::clone(&record))
            }
            Err(StoreError::Duplicate) => {
                // Its id or digest is taken: named when the holder is this namespace's.
                let holder = self.inner.store.find(lookup).await?;
                Err(Error::AlreadyExists { existing: holder.filter(|r| self.owns_record(r)).map(|r| r.id) })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Reads this manager's audit log, newest first.
    pub async fn audit(&self, query: AuditQuery) -> Result<Page<Event>, Error> {
        let mut query = query;
        query.namespace.clone_from(&self.inner.namespace);
        Ok(self.inner.store.audit(&query).await?)
    }

    // ---- helpers ----

    /// The record, if it exists in this manager's namespace.
    async fn owned(&self, id: KeyId) -> Result<Arc<KeyRecord>, Error> {
        match self.inner.store.get(id).await? {
            Some(record) if self.owns_record(&record) => Ok(record),
            _ => Err(Error::NotFound(id)),
        }
    }

    fn owns_record(&self, record: &KeyRecord) -> bool {
        record.namespace == self.inner.namespace
    }

    fn scoped(&self, query: ListQuery) -> ListQuery {
        let mut query = query;
        query.namespace = NamespaceFilter::exactly(self.inner.namespace.as_deref());
        query.at = Some(query.at.unwrap_or_else(|| self.inner.clock.now()));
        query
    }

    /// Runs a state change on a key of this namespace, then drops its cache entry and emits the event.
    async fn change(&self, id: KeyId, change: Change) -> Result<KeyRecord, Error> {
        self.owned(id).await?;
        let now = self.inner.clock.now();
        let store = &self.inner.store;
        let action = match change {
            Change::Update(_) => Action::Updated,
            Change::Enable(true) => Action::Enabled,
            Change::Enable(false) => Action::Disabled,
            Change::Revoke => Action::Revoked,
        };
        let event = self.event(action, now);
        let result = match change {
            Change::Update(patch) => store.update(id, &patch, event.clone()).await,
            Change::Enable(enabled) => store.set_enabled(id, enabled, event.clone()).await,
            Change::Revoke => store.revoke(id, now, event.clone()).await,
        };
        let record = result.map_err(|e| Error::from_store(e, id))?;
        self.invalidate(&id);
        self.emit_about(event, &record);
        Ok(KeyRecord::clone(&record))
    }

    fn event(&self, action: Action, at: OffsetDateTime) -> Event {
        Event::new(action, at, (*self.context).clone())
    }

    fn emit_about(&self, mut event: Event, record: &KeyRecord) {
        if self.inner.sinks.is_empty() {
            return;
        }
        event.key_id = Some(record.id);
        event.namespace.clone_from(&record.namespace);
        event.owner_id.clone_from(&record.owner_id);
        self.emit(&event);
    }

    fn start_of(&self, key: &PlainKey) -> String {
        key.start(self.inner.hint_len).to_owned()
    }

    fn lookup_of(&self, key: &PlainKey, format: &Format) -> Result<Lookup, Error> {
        let text = key.expose();
        Ok(match format.strategy {
            LookupStrategy::Digest => Lookup::Digest(sha256(text.as_bytes())),
            LookupStrategy::Hint => Lookup::Hint(self.start_of(key)),
            LookupStrategy::Id => {
                let id =
                    format.formatter.parse(text).and_then(|p| p.id).ok_or_else(|| {
                        Error::invalid("key", "the format promised an id segment but the key has none")
                    })?;
                Lookup::Id(id.to_owned())
            }
        })
    }

    /// The lookup, stored hash, start and last four characters of a key imported by
    /// its hash. Refuses a hash already stored under the same hint (the store's
    /// unique index refuses a taken id or digest).
    async fn hash_import(
        &self,
        import: &ImportKey,
        hash: &ImportedHash,
    ) -> Result<(Lookup, String, String, String), Error> {
        let stored = Hashing::import(hash)?;
        if hash.covers == HashCovers::Secret
            && !self
                .inner
                .formats
                .iter()
                .any(|f| f.formatter.has_secret() && (import.id.is_none() || f.formatter.has_id()))
        {
            return Err(Error::invalid(
                "covers",
                "a hash of the secret alone needs a key format with a {secret} segment (and an {id} segment when \
                 the key is found by its id): no accepted format has one",
            ));
        }
        let lookup = match (&import.id, &import.hint) {
            (Some(id), _) => Lookup::Id(id.clone()),
            (None, Some(hint)) if hint.chars().count() == self.inner.hint_len => Lookup::Hint(hint.clone()),
            (None, Some(_)) => {
                return Err(Error::invalid(
                    "hint",
                    format!("must be the key's first {} characters", self.inner.hint_len),
                ));
            }
            // Only a plain SHA-256 of the whole key is the digest keys are found by.
            (None, None) => {
                stored.strip_prefix("$sha256$").and_then(|hex| Lookup::from_parts("digest", hex)).ok_or_else(|| {
                    Error::invalid(
                        "hint",
                        format!(
                            "this hash needs the key's id or its first {} characters (hint) to be found: only a \
                             SHA-256 of the whole key, without salt, is found by its digest",
                            self.inner.hint_len
                        ),
                    )
                })?
            }
        };
        // A key is looked up by id under a format with an id, else by digest or hint:
        // stored under a lookup no accepted format uses, it would never be found.
        let by_id = matches!(lookup, Lookup::Id(_));
        if !self.inner.formats.iter().any(|f| (f.strategy == LookupStrategy::Id) == by_id) {
            return Err(if by_id {
                let hint = self.inner.hint_len;
                Error::invalid(
                    "id",
                    format!(
                        "no accepted key format has an {{id}} segment: give the key's first {hint} characters (hint)"
                    ),
                )
            } else {
                Error::invalid("id", "keys of the accepted formats are found by their {id} segment: give it")
            });
        }
        if let Lookup::Hint(hint) = &lookup {
            let candidates = self.inner.store.find_by_hint(hint).await?;
            if let Some(existing) = candidates.iter().find(|r| self.owns_record(r) && r.hash == stored) {
                return Err(Error::AlreadyExists { existing: Some(existing.id) });
            }
        }
        Ok((lookup, stored, import.hint.clone().unwrap_or_default(), import.last4.clone().unwrap_or_default()))
    }

    async fn new_record(
        &self,
        key: &PlainKey,
        format: &Format,
        fields: &Fields,
        now: OffsetDateTime,
    ) -> Result<KeyRecord, Error> {
        let lookup = self.lookup_of(key, format)?;
        let hash = self.hash_new(key.expose().as_bytes()).await?;
        let mut record =
            self.record_from(KeyId::new(), lookup, hash, self.start_of(key), key.end(4).to_owned(), fields, now);
        record.encrypted_key = self.seal(record.id, key)?;
        Ok(record)
    }

    /// The sealer's encrypted copy of a new key, when a sealer is configured.
    fn seal(&self, id: KeyId, key: &PlainKey) -> Result<Option<String>, Error> {
        Ok(self.inner.sealer.as_ref().map(|sealer| sealer.seal(id, key)).transpose()?)
    }

    #[allow(clippy::too_many_arguments)]
    fn record_from(
        &self,
        id: KeyId,
        lookup: Lookup,
        hash: String,
        start: String,
        last4: String,
        fields: &Fields,
        created_at: OffsetDateTime,
    ) -> KeyRecord {
        KeyRecord {
            id,
            namespace: self.inner.namespace.clone(),
            lookup,
            hash,
            start,
            last4,
            name: fields.name.clone(),
            owner_id: fields.owner_id.clone(),
            tier: fields.tier.clone(),
            scopes: fields.scopes.clone(),
            metadata: fields.metadata.clone(),
            created_at,
            expires_at: fields.expires_at,
            last_used_at: None,
            revoked_at: None,
            enabled: true,
            noted_in: NotedIn::default(),
            rotated_from: None,
            rotated_to: None,
            remaining: fields.remaining,
            refill: fields.refill,
            refilled_at: fields.refilled_at,
            rate_limit: fields.rate_limit,
            encrypted_key: None,
            version: 1,
        }
    }

    /// Checks a create request against the policies.
    fn check_new(&self, request: NewKey, now: OffsetDateTime) -> Result<Fields, Error> {
        let policy = &self.inner.policy;
        let name = self.check_name(request.name)?;
        if policy.name.required && name.is_none() {
            return Err(Error::invalid("name", "is required"));
        }
        let owner_id = match request.owner_id {
            Some(owner) if owner.is_empty() || owner.chars().count() > 256 => {
                return Err(Error::invalid("owner_id", "must be 1 to 256 characters"));
            }
            other => other,
        };
        let scopes = self.check_scopes(request.scopes)?;
        let tier = request.tier.or_else(|| self.inner.default_tier.clone());
        self.check_tier(tier.as_deref())?;

        let expires_at = match request.expiry {
            Some(Expiry::In(after)) if after > LONGEST_DURATION => return Err(too_far("expires_at")),
            Some(Expiry::In(after)) => Some(now + after),
            Some(Expiry::At(at)) => Some(at),
            Some(Expiry::Never) => None,
            None => policy.expiry.default.map(|d| now + d.0),
        }
        .map(truncate_to_micros);
        self.check_expires_at(expires_at, now)?;
        let refill = request.refill.or_else(|| self.tier_refill(tier.as_deref()));
        check_refill(refill.as_ref())?;
        Ok(Fields {
            name,
            owner_id,
            scopes,
            metadata: request.metadata,
            tier,
            expires_at,
            remaining: request.remaining.or(refill.map(|r| r.amount)),
            refill,
            // The first period starts with the request (an imported key keeps the credits it
            // comes with until the first boundary after its import).
            refilled_at: refill.map(|_| now),
            rate_limit: request.rate_limit,
        })
    }

    /// A new expiry, of a new key or set by an update, against the expiry policy:
    /// in the future, and as far from `now` as the bounds allow (a key that must
    /// expire cannot be made to live forever, nor beyond the longest lifetime).
    fn check_expires_at(&self, expires_at: Option<OffsetDateTime>, now: OffsetDateTime) -> Result<(), Error> {
        let expiry = &self.inner.policy.expiry;
        match expires_at {
            Some(at) if at <= now => Err(Error::invalid("expires_at", "is in the past")),
            Some(at) if at - now > LONGEST_DURATION => Err(too_far("expires_at")),
            Some(at) => {
                let lifetime = at - now;
                if let Some(min) = expiry.min
                    && lifetime < min.0
                {
                    return Err(Error::invalid(
                        "expires_at",
                        format!("keys live at least {}", humantime::format_duration(min.0)),
                    ));
                }
                if let Some(max) = expiry.max
                    && lifetime > max.0
                {
                    return Err(Error::invalid(
                        "expires_at",
                        format!("keys live at most {}", humantime::format_duration(max.0)),
                    ));
                }
                Ok(())
            }
            None if expiry.max.is_some() => Err(Error::invalid("expires_at", "keys must expire")),
            None => Ok(()),
        }
    }

    fn check_patch(&self, patch: KeyPatch) -> Result<KeyPatch, Error> {
        let mut patch = patch;
        if let Some(name) = patch.name.take() {
            let name = self.check_name(name)?;
            if self.inner.policy.name.required && name.is_none() {
                return Err(Error::invalid("name", "is required"));
            }
            patch.name = Some(name);
        }
        if let Some(scopes) = patch.scopes.take() {
            patch.scopes = Some(self.check_scopes(scopes)?);
        }
        if let Some(tier) = &patch.tier {
            self.check_tier(tier.as_deref())?;
        }
        if let Some(expires_at) = patch.expires_at {
            let expires_at = expires_at.map(truncate_to_micros);
            self.check_expires_at(expires_at, self.inner.clock.now())?;
            patch.expires_at = Some(expires_at);
        }
        if let Some(refill) = patch.refill {
            check_refill(refill.as_ref())?;
            // A new refill starts its first period now, with full credits (unless the
            // same patch sets them); removing it keeps the credits left.
            patch.refilled_at = Some(refill.map(|_| self.inner.clock.now()));
            if let Some(refill) = refill
                && patch.remaining.is_none()
            {
                patch.remaining = Some(Some(refill.amount));
            }
        } else {
            patch.refilled_at = None;
        }
        if let Some(Some(remaining)) = patch.remaining
            && remaining > crate::CreditOp::MAX
        {
            return Err(Error::invalid("remaining", format!("must be at most {}", crate::CreditOp::MAX)));
        }
        Ok(patch)
    }

    /// The refill a tier gives its keys by default.
    fn tier_refill(&self, tier: Option<&str>) -> Option<crate::Refill> {
        self.inner.tiers.get(tier?)?.refill
    }

    /// Changes a key's credits in one atomic step (audited as `credits_changed`, with
    /// the operation and amount in `details`), after any refill top-up due now.
    /// Incrementing or decrementing a key with unlimited credits is
    /// [`Error::Invalid`]; a decrement stops at zero.
    ///
    /// ```
    /// use keypal::{CreditOp, KeyManager, MemoryStore, NewKey};
    /// # pollster::block_on(async {
    /// let keys = KeyManager::builder().store(MemoryStore::new()).build()?;
    /// let created = keys.create(NewKey::new().remaining(10)).await?;
    /// let id = created.record.id;
    /// assert_eq!(keys.adjust_credits(&id, CreditOp::Increment(5)).await?.remaining, Some(15));
    /// assert_eq!(keys.adjust_credits(&id, CreditOp::Decrement(20)).await?.remaining, Some(0));
    /// assert_eq!(keys.adjust_credits(&id, CreditOp::Set(3)).await?.remaining, Some(3));
    /// let unlimited = keys.create(NewKey::new()).await?.record.id;
    /// assert!(keys.adjust_credits(&unlimited, CreditOp::Increment(1)).await.is_err());
    /// # Ok::<(), keypal::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn adjust_credits(&self, id: &KeyId, op: crate::CreditOp) -> Result<KeyRecord, Error> {
        let current = self.owned(*id).await?;
        let now = self.inner.clock.now();
        let (name, amount) = match op {
            crate::CreditOp::Set(n) => ("set", n),
            crate::CreditOp::Increment(n) => ("increment", n),
            crate::CreditOp::Decrement(n) => ("decrement", n),
        };
        let mut event = self.event(Action::CreditsChanged, now);
        event.details = Some(serde_json::json!({"op": name, "amount": amount}));
        let record = match self.inner.store.adjust_credits(*id, op, current.refill_due(now), event.clone()).await {
            Err(StoreError::CreditsUnchangeable) => {
                return Err(Error::invalid(
                    "amount",
                    match (op, current.remaining) {
                        (crate::CreditOp::Increment(_) | crate::CreditOp::Decrement(_), None) => {
                            "the key has unlimited credits: set them first".to_owned()
                        }
                        _ => format!("credits are at most {}", crate::CreditOp::MAX),
                    },
                ));
            }
            other => other.map_err(|e| Error::from_store(e, *id))?,
        };
        self.invalidate(id);
        self.emit_about(event, &record);
        Ok(KeyRecord::clone(&record))
    }

    fn check_name(&self, name: Option<String>) -> Result<Option<String>, Error> {
        let Some(name) = name else { return Ok(None) };
        let rules = &self.inner.policy.name;
        let trimmed = name.trim();
        let length = trimmed.chars().count();
        if length < rules.min_length.max(1) || length > rules.max_length {
            return Err(Error::invalid(
                "name",
                format!("must be {} to {} characters after trimming", rules.min_length.max(1), rules.max_length),
            ));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(Error::invalid("name", "must not contain control characters"));
        }
        Ok(Some(trimmed.to_owned()))
    }

    fn check_scopes(&self, scopes: Vec<String>) -> Result<Vec<String>, Error> {
        if scopes.len() > 256 {
            return Err(Error::invalid("scopes", "at most 256 scopes"));
        }
        let mut out: Vec<String> = Vec::with_capacity(scopes.len());
        for (i, s) in scopes.into_iter().enumerate() {
            scope::validate(&s).map_err(|message| Error::invalid(format!("scopes[{i}]"), message))?;
            if !out.contains(&s) {
                out.push(s);
            }
        }
        Ok(out)
    }

    fn check_tier(&self, tier: Option<&str>) -> Result<(), Error> {
        match tier {
            Some(t) if !self.inner.tiers.contains_key(t) => {
                Err(Error::invalid("tier", format!("{t:?} is not a configured tier")))
            }
            _ => Ok(()),
        }
    }
}

/// A refill's amount and duration, as every store holds them.
fn check_refill(refill: Option<&crate::Refill>) -> Result<(), Error> {
    match refill.map(crate::Refill::check) {
        Some(Err(e)) => Err(Error::invalid("refill", e.to_string())),
        _ => Ok(()),
    }
}

/// The refusal of a time further than [`LONGEST_DURATION`] from now: an expiry or the
/// end of a grace period (much further would overflow the calendar's arithmetic).
fn too_far(field: &str) -> Error {
    Error::invalid(field, "must be at most 100 years from now")
}
