//! Storage: the [`Store`] trait every backend implements, and [`MemoryStore`].
//!
//! Every operation is atomic by design: an insert counts the owner's active keys in
//! the same critical section (transaction) as it inserts, state changes are
//! conditional column updates, rotation is one unit, credits are spent with a
//! guarded decrement, and `last_used_at` writes touch that column only. A store is
//! correct when it passes the shared conformance suite (`keypal-conformance`).

mod memory;

use std::future::Future;
use std::sync::Arc;

use time::OffsetDateTime;
use uuid::Uuid;

pub use memory::MemoryStore;

use crate::event::{AuditQuery, Event};
use crate::record::{KeyId, KeyPatch, KeyRecord, Lookup};

/// A record to insert with [`Store::insert_many`]: what [`Store::insert`] takes.
#[derive(Debug, Clone)]
pub struct Insertion {
    /// The new record.
    pub record: KeyRecord,
    /// Refuse it when its owner already has this many active keys.
    pub max_active_per_owner: Option<u32>,
    /// The audit event appended with it.
    pub event: Event,
}

/// What [`Store::insert_many`] did with each record, in order.
pub type Inserted = Vec<Result<Arc<KeyRecord>, StoreError>>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No record with that id.
    #[error("no such key")]
    NotFound,
    /// Another record already has this unique lookup value (id or digest).
    #[error("another key already has this lookup value")]
    Duplicate,
    /// The owner already has `limit` active keys.
    #[error("the owner already has the maximum of {limit} active keys")]
    LimitReached {
        /// The limit in force.
        limit: u32,
    },
    /// The key is already revoked.
    #[error("the key is already revoked")]
    AlreadyRevoked,
    /// A credit change that does not apply: an increment or decrement of a key with
    /// unlimited credits, or a result past [`CreditOp::MAX`].
    #[error("the key's credits cannot be changed this way (unlimited, or past the maximum)")]
    CreditsUnchangeable,
    /// The backend failed (connection, I/O, corrupt row).
    #[error("storage backend error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// Wraps a backend error.
    pub fn backend(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Backend(Box::new(error))
    }
}

/// What a guarded credit decrement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credits {
    /// The key has no credit limit.
    Unlimited,
    /// Spent; this many are left.
    Spent {
        /// Credits left.
        remaining: u64,
    },
    /// Not enough credits: nothing was spent.
    Exhausted {
        /// Credits left (fewer than the cost).
        remaining: u64,
    },
}

/// A change of a key's credits by [`Store::adjust_credits`].
///
/// ```
/// use keypal::CreditOp;
/// assert_eq!(CreditOp::Increment(5).apply(Some(10)), Some(15));
/// assert_eq!(CreditOp::Decrement(50).apply(Some(10)), Some(0));
/// assert_eq!(CreditOp::Set(7).apply(None), Some(7));
/// assert_eq!(CreditOp::Increment(1).apply(Some(CreditOp::MAX)), None);
/// assert_eq!(CreditOp::Increment(1).apply(None), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CreditOp {
    /// Sets the credits to this many (an unlimited key gets a limit).
    Set(u64),
    /// Adds this many.
    Increment(u64),
    /// Takes this many away, down to zero at most.
    Decrement(u64),
}

impl CreditOp {
    /// The most credits a key holds (a signed 64-bit integer, for every store).
    pub const MAX: u64 = i64::MAX as u64;

    /// The credits after the change of `current` (`None`: unlimited); `None` when the
    /// change does not apply: an increment or decrement of an unlimited key, or an
    /// amount past [`CreditOp::MAX`].
    pub fn apply(self, current: Option<u64>) -> Option<u64> {
        match (self, current) {
            (CreditOp::Set(n), _) => Some(n).filter(|&n| n <= Self::MAX),
            (CreditOp::Increment(n), Some(c)) => c.checked_add(n).filter(|&n| n <= Self::MAX),
            (CreditOp::Decrement(n), Some(c)) => Some(c.saturating_sub(n)),
            (_, None) => None,
        }
    }
}

/// A page of results, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass this back as the cursor for the next page; `None` on the last page.
    pub next_cursor: Option<Uuid>,
}

/// Which keys to list. Newest first; ids are UUID v7, so "newest first" is "highest id first".
///
/// ```
/// use keypal::ListQuery;
/// let q = ListQuery::new().owner_id("user_1").include_revoked(true).limit(50);
/// assert_eq!(q.limit, 50);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListQuery {
    /// Which namespaces (default: every namespace).
    pub namespace: NamespaceFilter,
    /// Only this owner.
    pub owner_id: Option<String>,
    /// Include revoked keys (revoked at or before `at`).
    pub include_revoked: bool,
    /// Only active keys ([`KeyRecord::is_active_at`]: neither revoked nor scheduled to be,
    /// as a rotated key in its grace window is, and not expired). Overrides `include_revoked`.
    pub active_only: bool,
    /// Only keys whose name or owner id contains this text, ignoring the case of ASCII
    /// letters (`None` or empty: every key).
    pub search: Option<String>,
    /// Page size (1..=1000).
    pub limit: u32,
    /// Continue after this key id (the previous page's `next_cursor`).
    pub cursor: Option<Uuid>,
    /// The time "revoked" is judged at (a rotated key in its grace window is not yet revoked).
    pub at: Option<OffsetDateTime>,
}

/// Which namespaces a listing covers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NamespaceFilter {
    /// Every namespace.
    #[default]
    Any,
    /// Keys with no namespace.
    None,
    /// Keys of this namespace.
    Is(String),
}

impl NamespaceFilter {
    /// Whether a record's namespace passes.
    pub fn matches(&self, namespace: Option<&str>) -> bool {
        match self {
            NamespaceFilter::Any => true,
            NamespaceFilter::None => namespace.is_none(),
            NamespaceFilter::Is(n) => namespace == Some(n.as_str()),
        }
    }

    /// The filter that selects exactly `namespace`.
    pub fn exactly(namespace: Option<&str>) -> Self {
        namespace.map_or(NamespaceFilter::None, |n| NamespaceFilter::Is(n.to_owned()))
    }
}

impl Default for ListQuery {
    fn default() -> Self {
        Self {
            namespace: NamespaceFilter::Any,
            owner_id: None,
            include_revoked: false,
            active_only: false,
            search: None,
            limit: 100,
            cursor: None,
            at: None,
        }
    }
}

impl ListQuery {
    /// Keys not yet revoked (expired ones included) of every owner, 100 per page.
    pub fn new() -> Self {
        Self::default()
    }
    /// Only this owner.
    pub fn owner_id(mut self, owner: impl Into<String>) -> Self {
        self.owner_id = Some(owner.into());
        self
    }
    /// Only this namespace.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = NamespaceFilter::Is(namespace.into());
        self
    }
    /// Every namespace.
    pub fn any_namespace(mut self) -> Self {
        self.namespace = NamespaceFilter::Any;
        self
    }
    /// Include revoked keys.
    pub fn include_revoked(mut self, include: bool) -> Self {
        self.include_revoked = include;
        self
    }
    /// Only active keys: the keys that count against their owner's limit (neither
    /// revoked nor scheduled to be, not expired). A disabled key is active: it can be
    /// enabled again.
    ///
    /// ```
    /// use keypal::ListQuery;
    /// let active = ListQuery::new().namespace("billing").active_only(true);
    /// assert!(active.active_only);
    /// ```
    pub fn active_only(mut self, active: bool) -> Self {
        self.active_only = active;
        self
    }
    /// Only keys whose name or owner id contains `text` (ASCII letters in any case).
    ///
    /// ```
    /// use keypal::ListQuery;
    /// let q = ListQuery::new().search("ci");
    /// assert_eq!(q.search.as_deref(), Some("ci"));
    /// ```
    pub fn search(mut self, text: impl Into<String>) -> Self {
        let text = text.into();
        self.search = (!text.is_empty()).then_some(text);
        self
    }
    /// Page size (clamped to 1..=1000).
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = limit.clamp(1, 1000);
        self
    }
    /// Continue after this key.
    pub fn cursor(mut self, cursor: Uuid) -> Self {
        self.cursor = Some(cursor);
        self
    }
    /// Judge "revoked" at this time (default: now).
    pub fn at(mut self, at: OffsetDateTime) -> Self {
        self.at = Some(at);
        self
    }

    /// Whether a record passes the filters (cursor and limit aside), judged at `now`.
    pub fn matches(&self, record: &KeyRecord, now: OffsetDateTime) -> bool {
        self.namespace.matches(record.namespace.as_deref())
            && self.owner_id.as_ref().is_none_or(|o| record.owner_id.as_ref() == Some(o))
            && if self.active_only {
                record.is_active_at(now)
            } else {
                self.include_revoked || !record.is_revoked_at(now)
            }
            && self.search_text().is_none_or(|text| record.matches_search(text))
            && self.cursor.is_none_or(|c| record.id.0 < c)
    }

    /// The search text, when there is one: `None` for `None` and for an empty text.
    pub fn search_text(&self) -> Option<&str> {
        self.search.as_deref().filter(|t| !t.is_empty())
    }
}

/// Where keys live. Implementations must be atomic as described on each method and
/// pass the conformance suite. Futures are `Send` so managers work on any runtime.
///
/// Mutating operations receive the audit [`Event`] to append, and append it in the
/// same unit (transaction) as the change, only when the change happens. The store
/// fills in the event's `key_id`, `namespace` and `owner_id` from the record it
/// changed; an operation that changes several records appends one event per record,
/// each with its own id (the first keeps the given id, the others get new UUID v7s).
/// The audit log is ordered by event id.
///
/// Every change bumps the record's `version` by one (a no-op `set_enabled` too),
/// except `touch` (`last_used_at`) and `consume` (credits), which are counters.
pub trait Store: Send + Sync + 'static {
    /// Whether reads are in-process memory reads: a manager then skips its
    /// verified-result cache for fast hashes, which would only add work.
    const IN_MEMORY: bool = false;

    /// Inserts a new record. With `max_active_per_owner`, counts the owner's active
    /// keys (same namespace, [`KeyRecord::is_active_at`] the record's `created_at`)
    /// in the same atomic unit and refuses with [`StoreError::LimitReached`] at the
    /// limit. A unique lookup already taken is [`StoreError::Duplicate`].
    fn insert(
        &self,
        record: KeyRecord,
        max_active_per_owner: Option<u32>,
        event: Event,
    ) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send;

    /// Inserts several new records, each standing alone as with [`Store::insert`]: one
    /// refused ([`StoreError::Duplicate`], [`StoreError::LimitReached`], in its place of
    /// the answer) does not keep the others out, and the owner limit counts the records
    /// inserted before it in the same call. Stores that can group the inserts into one
    /// atomic unit do (far fewer commits than one `insert` each: bulk imports).
    ///
    /// `Err` is a backend failure: a store that groups stored none of the records, one
    /// that does not (the default, an `insert` each) may have stored the records before
    /// the failure, each whole with its event, so calling again with the same records
    /// answers `Duplicate` for those.
    fn insert_many(&self, items: Vec<Insertion>) -> impl Future<Output = Result<Inserted, StoreError>> + Send {
        async move {
            let mut results = Vec::with_capacity(items.len());
            for Insertion { record, max_active_per_owner, event } in items {
                match self.insert(record, max_active_per_owner, event).await {
                    Err(StoreError::Backend(error)) => return Err(StoreError::Backend(error)),
                    result => results.push(result),
                }
            }
            Ok(results)
        }
    }

    /// The record with this unique lookup value (id or digest).
    fn find(&self, lookup: &Lookup) -> impl Future<Output = Result<Option<Arc<KeyRecord>>, StoreError>> + Send;

    /// The records whose hint lookup is `hint` (any namespace).
    fn find_by_hint(&self, hint: &str) -> impl Future<Output = Result<Vec<Arc<KeyRecord>>, StoreError>> + Send;

    /// The record with this id.
    fn get(&self, id: KeyId) -> impl Future<Output = Result<Option<Arc<KeyRecord>>, StoreError>> + Send;

    /// A page of records, newest first.
    fn list(&self, query: &ListQuery) -> impl Future<Output = Result<Page<Arc<KeyRecord>>, StoreError>> + Send;

    /// Counts records matching the query's namespace, owner and revoked filters (no paging).
    fn count(&self, query: &ListQuery) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Sets the patch's fields (and only those), bumping `version`.
    fn update(
        &self,
        id: KeyId,
        patch: &KeyPatch,
        event: Event,
    ) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send;

    /// Sets `enabled`, bumping `version`. A no-op change still succeeds.
    fn set_enabled(
        &self,
        id: KeyId,
        enabled: bool,
        event: Event,
    ) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send;

    /// Revokes at `at`, only if not revoked yet (a key revoked in the future, i.e. a
    /// rotated key in its grace window, is revoked now). [`StoreError::AlreadyRevoked`] otherwise.
    fn revoke(
        &self,
        id: KeyId,
        at: OffsetDateTime,
        event: Event,
    ) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send;

    /// Revokes every not-yet-revoked key of `owner` in `namespace`; appends `event`
    /// once per key with its `key_id` set. Returns the revoked records.
    fn revoke_owner(
        &self,
        namespace: Option<&str>,
        owner: &str,
        at: OffsetDateTime,
        event: Event,
    ) -> impl Future<Output = Result<Vec<Arc<KeyRecord>>, StoreError>> + Send;

    /// In one unit: inserts `replacement` (its `rotated_from` names `old`), sets the
    /// old record's `rotated_to` and `revoked_at = old_revoked_at`, only if the old
    /// record has no `revoked_at` at all: a revoked key, or a rotated key in its grace
    /// window, is [`StoreError::AlreadyRevoked`] and nothing is inserted. Returns (old, new).
    fn rotate(
        &self,
        old: KeyId,
        replacement: KeyRecord,
        old_revoked_at: OffsetDateTime,
        event: Event,
    ) -> impl Future<Output = Result<(Arc<KeyRecord>, Arc<KeyRecord>), StoreError>> + Send;

    /// Deletes the record; returns it, or `None` when there was none.
    fn delete(
        &self,
        id: KeyId,
        event: Event,
    ) -> impl Future<Output = Result<Option<Arc<KeyRecord>>, StoreError>> + Send;

    /// Spends `cost` credits if at least that many are left (guarded decrement).
    ///
    /// `refill_due` is the latest refill boundary at or before now
    /// ([`KeyRecord::refill_due`]): when it is given and the stored record has a
    /// refill whose `refilled_at` is earlier (or unset), the credits are first set to
    /// the refill's amount and `refilled_at` to `refill_due`, in the same atomic unit,
    /// so each boundary refills once whatever the number of spenders. An exhausted
    /// answer reports the credits as topped up (the top-up may or may not be stored:
    /// the next spend stores it). Only `remaining` and `refilled_at` change.
    fn consume(
        &self,
        id: KeyId,
        cost: u64,
        refill_due: Option<OffsetDateTime>,
    ) -> impl Future<Output = Result<Credits, StoreError>> + Send;

    /// Changes the credits by `op` in one atomic unit, after the top-up `refill_due`
    /// calls for as [`Store::consume`] does (so a `Set` is not undone by a pending
    /// top-up), bumping `version` and appending `event`. An increment or decrement of
    /// an unlimited key, or a result past [`CreditOp::MAX`], is
    /// [`StoreError::CreditsUnchangeable`] and changes nothing.
    fn adjust_credits(
        &self,
        id: KeyId,
        op: CreditOp,
        refill_due: Option<OffsetDateTime>,
        event: Event,
    ) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send;

    /// Records `last_used_at` for many keys: sets only that column, only forward in
    /// time, and never on a record changed otherwise. Unknown ids are ignored.
    fn touch(&self, used: &[(KeyId, OffsetDateTime)]) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Replaces the stored hash and its lookup together, in one atomic unit, if the
    /// stored hash is still `expected` (compare-and-swap), bumping `version`. Returns
    /// whether they were replaced: `false` for an unknown id or another hash.
    ///
    /// The lookup moves with the hash because a hash's algorithm decides how its key
    /// is found (a digest for a fast hash, a hint for a slow one): after the swap the
    /// record is found by `new_lookup` only. A unique `new_lookup` (id or digest) that
    /// another record holds is [`StoreError::Duplicate`], and nothing changes.
    fn replace_hash(
        &self,
        id: KeyId,
        expected: &str,
        new_hash: &str,
        new_lookup: &Lookup,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Reads the audit log, newest first.
    fn audit(&self, query: &AuditQuery) -> impl Future<Output = Result<Page<Event>, StoreError>> + Send;
}

/// A shared store is a store: several managers (one per namespace) can use one.
impl<T: Store> Store for Arc<T> {
    const IN_MEMORY: bool = T::IN_MEMORY;

    fn insert(
        &self,
        record: KeyRecord,
        max_active_per_owner: Option<u32>,
        event: Event,
    ) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send {
        T::insert(self, record, max_active_per_owner, event)
    }
    fn insert_many(&self, items: Vec<Insertion>) -> impl Future<Output = Result<Inserted, StoreError>> + Send {
        T::insert_many(self, items)
    }
    fn find(&self, lookup: &Lookup) -> impl Future<Output = Result<Option<Arc<KeyRecord>>, StoreError>> + Send {
        T::find(self, lookup)
    }
    fn find_by_hint(&self, hint: &str) -> impl Future<Output = Result<Vec<Arc<KeyRecord>>, StoreError>> + Send {
        T::find_by_hint(self, hint)
    }
    fn get(&self, id: KeyId) -> impl Future<Output = Result<Option<Arc<KeyRecord>>, StoreError>> + Send {
        T::get(self, id)
    }
    fn list(&self, query: &ListQuery) -> impl Future<Output = Result<Page<Arc<KeyRecord>>, StoreError>> + Send {
        T::list(self, query)
    }
    fn count(&self, query: &ListQuery) -> impl Future<Output = Result<u64, StoreError>> + Send {
        T::count(self, query)
    }
    fn update(
        &self,
        id: KeyId,
        patch: &KeyPatch,
        event: Event,
    ) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send {
        T::update(self, id, patch, event)
    }
    fn set_enabled(
        &self,
        id: KeyId,
        enabled: bool,
        event: Event,
    ) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send {
        T::set_enabled(self, id, enabled, event)
    }
    fn revoke(
        &self,
        id: KeyId,
        at: OffsetDateTime,
        event: Event,
    ) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send {
        T::revoke(self, id, at, event)
    }
    fn revoke_owner(
        &self,
        namespace: Option<&str>,
        owner: &str,
        at: OffsetDateTime,
        event: Event,
    ) -> impl Future<Output = Result<Vec<Arc<KeyRecord>>, StoreError>> + Send {
        T::revoke_owner(self, namespace, owner, at, event)
    }
    fn rotate(
        &self,
        old: KeyId,
        replacement: KeyRecord,
        old_revoked_at: OffsetDateTime,
        event: Event,
    ) -> impl Future<Output = Result<(Arc<KeyRecord>, Arc<KeyRecord>), StoreError>> + Send {
        T::rotate(self, old, replacement, old_revoked_at, event)
    }
    fn delete(
        &self,
        id: KeyId,
        event: Event,
    ) -> impl Future<Output = Result<Option<Arc<KeyRecord>>, StoreError>> + Send {
        T::delete(self, id, event)
    }
    fn consume(
        &self,
        id: KeyId,
        cost: u64,
        refill_due: Option<OffsetDateTime>,
    ) -> impl Future<Output = Result<Credits, StoreError>> + Send {
        T::consume(self, id, cost, refill_due)
    }
    fn adjust_credits(
        &self,
        id: KeyId,
        op: CreditOp,
        refill_due: Option<OffsetDateTime>,
        event: Event,
    ) -> impl Future<Output = Result<Arc<KeyRecord>, StoreError>> + Send {
        T::adjust_credits(self, id, op, refill_due, event)
    }
    fn touch(&self, used: &[(KeyId, OffsetDateTime)]) -> impl Future<Output = Result<(), StoreError>> + Send {
        T::touch(self, used)
    }
    fn replace_hash(
        &self,
        id: KeyId,
        expected: &str,
        new_hash: &str,
        new_lookup: &Lookup,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        T::replace_hash(self, id, expected, new_hash, new_lookup)
    }
    fn audit(&self, query: &AuditQuery) -> impl Future<Output = Result<Page<Event>, StoreError>> + Send {
        T::audit(self, query)
    }
}
