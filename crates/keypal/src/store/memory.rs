//! [`MemoryStore`]: everything in process memory, behind one lock.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use time::OffsetDateTime;
use uuid::Uuid;

use super::{CreditOp, Credits, ListQuery, Page, Store, StoreError};
use crate::event::{AuditQuery, Event};
use crate::random_bits::RandomBits;
use crate::record::{KeyId, KeyPatch, KeyRecord, Lookup};

/// A store in process memory: for tests, examples and single-process services that
/// can lose their keys on restart. Every operation holds one lock, so each is atomic.
///
/// ```
/// use keypal::{KeyManager, MemoryStore, NewKey};
/// # pollster::block_on(async {
/// let keys = KeyManager::builder().prefix("sk_test").store(MemoryStore::new()).build()?;
/// let created = keys.create(NewKey::new().owner_id("user_1")).await?;
/// assert!(keys.verify(created.key.expose()).await?.is_valid());
/// # Ok::<(), keypal::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    records: HashMap<KeyId, Arc<KeyRecord>, RandomBits>,
    /// Digest lookups: unique. Digests are random, so they hash by their own bits.
    by_digest: HashMap<[u8; 32], Arc<KeyRecord>, RandomBits>,
    /// Id lookups: unique.
    by_id: HashMap<String, Arc<KeyRecord>>,
    /// Hint lookups: several keys per hint.
    hints: HashMap<String, BTreeSet<KeyId>>,
    /// Every id, in creation order (UUID v7).
    ids: BTreeSet<KeyId>,
    /// Ids per owner, in creation order.
    by_owner: HashMap<String, BTreeSet<KeyId>>,
    /// The audit log, sorted by event id (oldest first): reads page by id, so the
    /// order must be the id order even when events are appended out of order.
    audit: Vec<Event>,
}

impl Inner {
    /// Stores a new version of a record everywhere it is indexed.
    fn put(&mut self, record: Arc<KeyRecord>) {
        match &record.lookup {
            Lookup::Digest(digest) => {
                self.by_digest.insert(*digest, record.clone());
            }
            Lookup::Id(id) => {
                self.by_id.insert(id.clone(), record.clone());
            }
            Lookup::Hint(_) => {}
        }
        self.records.insert(record.id, record);
    }

    fn find_unique(&self, lookup: &Lookup) -> Option<&Arc<KeyRecord>> {
        match lookup {
            Lookup::Digest(digest) => self.by_digest.get(digest),
            Lookup::Id(id) => self.by_id.get(id),
            Lookup::Hint(_) => None,
        }
    }

    /// Whether a new record would collide with a stored one (unique lookup or id).
    fn taken(&self, record: &KeyRecord) -> bool {
        self.find_unique(&record.lookup).is_some() || self.records.contains_key(&record.id)
    }

    fn add(&mut self, record: Arc<KeyRecord>) {
        if let Lookup::Hint(hint) = &record.lookup {
            self.hints.entry(hint.clone()).or_default().insert(record.id);
        }
        if let Some(owner) = &record.owner_id {
            self.by_owner.entry(owner.clone()).or_default().insert(record.id);
        }
        self.ids.insert(record.id);
        self.put(record);
    }

    fn remove(&mut self, id: KeyId) -> Option<Arc<KeyRecord>> {
        let record = self.records.remove(&id)?;
        match &record.lookup {
            Lookup::Hint(hint) => {
                if let Some(set) = self.hints.get_mut(hint) {
                    set.remove(&id);
                    if set.is_empty() {
                        self.hints.remove(hint);
                    }
                }
            }
            Lookup::Digest(digest) => {
                self.by_digest.remove(digest);
            }
            Lookup::Id(id) => {
                self.by_id.remove(id);
            }
        }
        if let Some(owner) = &record.owner_id
            && let Some(set) = self.by_owner.get_mut(owner)
        {
            set.remove(&id);
            if set.is_empty() {
                self.by_owner.remove(owner);
            }
        }
        self.ids.remove(&id);
        Some(record)
    }

    /// Applies `change` to a copy of the record and stores it, bumping `version`.
    fn modify(&mut self, id: KeyId, change: impl FnOnce(&mut KeyRecord)) -> Result<Arc<KeyRecord>, StoreError> {
        let current = self.records.get(&id).ok_or(StoreError::NotFound)?;
        let mut next = KeyRecord::clone(current);
        change(&mut next);
        next.version += 1;
        let next = Arc::new(next);
        self.put(next.clone());
        Ok(next)
    }

    fn owner_ids(&self, owner: &str) -> impl DoubleEndedIterator<Item = &KeyId> {
        self.by_owner.get(owner).into_iter().flatten()
    }

    /// Ids matching the query, newest first.
    fn candidates<'a>(&'a self, query: &'a ListQuery) -> Box<dyn Iterator<Item = &'a Arc<KeyRecord>> + 'a> {
        let ids: Box<dyn DoubleEndedIterator<Item = &KeyId>> = match &query.owner_id {
            Some(owner) => Box::new(self.owner_ids(owner)),
            None => Box::new(self.ids.iter()),
        };
        Box::new(ids.rev().filter_map(|id| self.records.get(id)))
    }

    fn log(&mut self, event: Event, record: &KeyRecord) {
        let mut event = event;
        event.key_id = Some(record.id);
        event.namespace.clone_from(&record.namespace);
        event.owner_id.clone_from(&record.owner_id);
        // Ids are UUID v7, created by callers before they take the lock: nearly always
        // the newest, so this is nearly always a push.
        let at = self.audit.partition_point(|e| e.id <= event.id);
        self.audit.insert(at, event);
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

fn now_of(query: &ListQuery) -> OffsetDateTime {
    query.at.unwrap_or_else(OffsetDateTime::now_utc)
}

impl Store for MemoryStore {
    const IN_MEMORY: bool = true;

    async fn insert(
        &self,
        record: KeyRecord,
        max_active_per_owner: Option<u32>,
        event: Event,
    ) -> Result<Arc<KeyRecord>, StoreError> {
        let mut inner = self.write();
        if inner.taken(&record) {
            return Err(StoreError::Duplicate);
        }
        if let (Some(limit), Some(owner)) = (max_active_per_owner, &record.owner_id) {
            let now = record.created_at;
            let active = inner
                .owner_ids(owner)
                .filter_map(|id| inner.records.get(id))
                .filter(|r| r.namespace == record.namespace && r.is_active_at(now))
                .count();
            if active >= limit as usize {
                return Err(StoreError::LimitReached { limit });
            }
        }
        let record = Arc::new(record);
        inner.log(event, &record);
        inner.add(record.clone());
        Ok(record)
    }

    async fn find(&self, lookup: &Lookup) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        Ok(self.read().find_unique(lookup).cloned())
    }

    async fn find_by_hint(&self, hint: &str) -> Result<Vec<Arc<KeyRecord>>, StoreError> {
        let inner = self.read();
        Ok(inner.hints.get(hint).into_iter().flatten().filter_map(|id| inner.records.get(id).cloned()).collect())
    }

    async fn get(&self, id: KeyId) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        Ok(self.read().records.get(&id).cloned())
    }

    async fn list(&self, query: &ListQuery) -> Result<Page<Arc<KeyRecord>>, StoreError> {
        let now = now_of(query);
        let inner = self.read();
        let limit = query.limit.clamp(1, 1000) as usize;
        let mut items: Vec<Arc<KeyRecord>> =
            inner.candidates(query).filter(|r| query.matches(r, now)).take(limit + 1).cloned().collect();
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|r| r.id.0)
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    async fn count(&self, query: &ListQuery) -> Result<u64, StoreError> {
        let now = now_of(query);
        let query = ListQuery { cursor: None, ..query.clone() };
        let inner = self.read();
        Ok(inner.candidates(&query).filter(|r| query.matches(r, now)).count() as u64)
    }

    async fn update(&self, id: KeyId, patch: &KeyPatch, event: Event) -> Result<Arc<KeyRecord>, StoreError> {
        let mut inner = self.write();
        let record = inner.modify(id, |r| patch.apply_to(r))?;
        inner.log(event, &record);
        Ok(record)
    }

    async fn set_enabled(&self, id: KeyId, enabled: bool, event: Event) -> Result<Arc<KeyRecord>, StoreError> {
        let mut inner = self.write();
        let record = inner.modify(id, |r| r.enabled = enabled)?;
        inner.log(event, &record);
        Ok(record)
    }

    async fn revoke(&self, id: KeyId, at: OffsetDateTime, event: Event) -> Result<Arc<KeyRecord>, StoreError> {
        let mut inner = self.write();
        let current = inner.records.get(&id).ok_or(StoreError::NotFound)?;
        if current.is_revoked_at(at) {
            return Err(StoreError::AlreadyRevoked);
        }
        let record = inner.modify(id, |r| r.revoked_at = Some(at))?;
        inner.log(event, &record);
        Ok(record)
    }

    async fn revoke_owner(
        &self,
        namespace: Option<&str>,
        owner: &str,
        at: OffsetDateTime,
        event: Event,
    ) -> Result<Vec<Arc<KeyRecord>>, StoreError> {
        let mut inner = self.write();
        let ids: Vec<KeyId> = inner
            .owner_ids(owner)
            .filter_map(|id| inner.records.get(id))
            .filter(|r| r.namespace.as_deref() == namespace && !r.is_revoked_at(at))
            .map(|r| r.id)
            .collect();
        let mut revoked = Vec::with_capacity(ids.len());
        for id in ids {
            let record = inner.modify(id, |r| r.revoked_at = Some(at))?;
            // One event per key, each with its own id (audit pages by event id).
            let mut copy = event.clone();
            if !revoked.is_empty() {
                copy.id = Uuid::now_v7();
            }
            inner.log(copy, &record);
            revoked.push(record);
        }
        Ok(revoked)
    }

    async fn rotate(
        &self,
        old: KeyId,
        replacement: KeyRecord,
        old_revoked_at: OffsetDateTime,
        event: Event,
    ) -> Result<(Arc<KeyRecord>, Arc<KeyRecord>), StoreError> {
        let mut inner = self.write();
        let current = inner.records.get(&old).ok_or(StoreError::NotFound)?;
        if current.revoked_at.is_some() {
            return Err(StoreError::AlreadyRevoked);
        }
        if inner.taken(&replacement) {
            return Err(StoreError::Duplicate);
        }
        let new_id = replacement.id;
        let old_record = inner.modify(old, |r| {
            r.rotated_to = Some(new_id);
            r.revoked_at = Some(old_revoked_at);
        })?;
        inner.log(event, &old_record);
        let new_record = Arc::new(replacement);
        inner.add(new_record.clone());
        Ok((old_record, new_record))
    }

    async fn delete(&self, id: KeyId, event: Event) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        let mut inner = self.write();
        let removed = inner.remove(id);
        if let Some(record) = &removed {
            inner.log(event, record);
        }
        Ok(removed)
    }

    async fn consume(&self, id: KeyId, cost: u64, refill_due: Option<OffsetDateTime>) -> Result<Credits, StoreError> {
        let mut inner = self.write();
        let current = inner.records.get(&id).ok_or(StoreError::NotFound)?;
        let mut next = KeyRecord::clone(current);
        let topped_up = next.top_up(refill_due);
        let credits = match next.remaining {
            None => Credits::Unlimited,
            Some(left) if left < cost => Credits::Exhausted { remaining: left },
            Some(left) => {
                next.remaining = Some(left - cost);
                Credits::Spent { remaining: left - cost }
            }
        };
        if topped_up || matches!(credits, Credits::Spent { .. }) {
            inner.put(Arc::new(next));
        }
        Ok(credits)
    }

    async fn adjust_credits(
        &self,
        id: KeyId,
        op: CreditOp,
        refill_due: Option<OffsetDateTime>,
        event: Event,
    ) -> Result<Arc<KeyRecord>, StoreError> {
        let mut inner = self.write();
        let current = inner.records.get(&id).ok_or(StoreError::NotFound)?;
        let mut next = KeyRecord::clone(current);
        next.top_up(refill_due);
        next.remaining = Some(op.apply(next.remaining).ok_or(StoreError::CreditsUnchangeable)?);
        let record = inner.modify(id, |r| *r = next)?;
        inner.log(event, &record);
        Ok(record)
    }

    async fn touch(&self, used: &[(KeyId, OffsetDateTime)]) -> Result<(), StoreError> {
        let mut inner = self.write();
        for &(id, at) in used {
            let Some(current) = inner.records.get(&id) else {
                continue;
            };
            if current.last_used_at.is_some_and(|last| last >= at) {
                continue;
            }
            let mut next = KeyRecord::clone(current);
            next.last_used_at = Some(at);
            inner.put(Arc::new(next));
        }
        Ok(())
    }

    async fn replace_hash(
        &self,
        id: KeyId,
        expected: &str,
        new_hash: &str,
        new_lookup: &Lookup,
    ) -> Result<bool, StoreError> {
        let mut inner = self.write();
        let Some(current) = inner.records.get(&id).filter(|r| r.hash == expected) else {
            return Ok(false);
        };
        if inner.find_unique(new_lookup).is_some_and(|holder| holder.id != id) {
            return Err(StoreError::Duplicate);
        }
        let mut next = KeyRecord::clone(current);
        next.hash = new_hash.to_owned();
        next.lookup = new_lookup.clone();
        next.version += 1;
        // Out of the old lookup's index, into the new one's.
        inner.remove(id);
        inner.add(Arc::new(next));
        Ok(true)
    }

    async fn audit(&self, query: &AuditQuery) -> Result<Page<Event>, StoreError> {
        let inner = self.read();
        let limit = query.limit.clamp(1, 1000) as usize;
        let mut items: Vec<Event> = inner
            .audit
            .iter()
            .rev()
            .filter(|e| query.cursor.is_none_or(|c| e.id < c))
            .filter(|e| query.matches(e))
            .take(limit + 1)
            .cloned()
            .collect();
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|e| e.id)
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }
}
