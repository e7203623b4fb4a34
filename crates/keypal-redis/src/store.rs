//! [`RedisStore`]: keys in Redis, every multi-key change one Lua script.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use keypal::{
    AuditQuery, CreditOp, Credits, Event, KeyId, KeyPatch, KeyRecord, ListQuery, Lookup, NamespaceFilter, Page, Store,
    StoreError,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo, ProtocolVersion, RedisError, Script, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::codec::{self, array, corrupt, event_fields, int, micros, micros_ceil, record_fields, status, text};
use crate::error::{EventAlreadyLogged, RedisStoreError};
use crate::scripts::SCRIPTS;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one command or script may take to answer.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How many `touch` entries one script call takes.
const TOUCH_BATCH: usize = 256;

/// A [`Store`] on Redis. Cheap to clone (a shared auto-reconnecting connection).
///
/// Every key the store writes starts with its prefix, so several stores (tenants,
/// test runs) share one Redis without seeing each other's keys, provided no prefix is
/// a prefix of another (end them with `:`). Each change is one Lua script, so it is
/// atomic like a SQL transaction: per-owner limits are counted inside the insert
/// script, state changes are conditional, rotation is one unit and the audit event is
/// appended by the same script. Nothing expires by itself (no TTLs): revoked keys stay
/// until deleted, and the audit log is append-only.
///
/// Durability is Redis's own: a create that returned success survives a crash of
/// Redis only with AOF persistence (`appendonly yes`, `appendfsync always` for every
/// write), and only with `maxmemory-policy noeviction` (an evicting policy would
/// drop keys silently). A standalone server (or a replicated primary) is required:
/// the scripts reach keys derived from the prefix, which Redis Cluster does not route.
///
/// ```no_run
/// use keypal::{KeyManager, NewKey};
/// use keypal_redis::RedisStore;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let store = RedisStore::connect("redis://127.0.0.1:6379/0", "keypal:").await?;
/// assert_eq!(store.prefix(), "keypal:");
/// let keys = KeyManager::builder().prefix("sk_live").store(store).build()?;
/// let created = keys.create(NewKey::new().owner_id("user_1")).await?;
/// assert!(keys.verify(created.key.expose()).await?.is_valid());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: Arc<str>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

/// The arguments of a script call: the prefix first, then what the script takes.
struct Args(Vec<String>);

impl Args {
    fn push(&mut self, value: impl Into<String>) -> &mut Self {
        self.0.push(value.into());
        self
    }

    /// An optional value: a flag (`1` present, `0` absent) and the value.
    fn opt(&mut self, value: Option<&str>) -> &mut Self {
        match value {
            Some(v) => self.push("1").push(v),
            None => self.push("0").push(""),
        }
    }

    /// A count, then that many field/value pairs.
    fn pairs(&mut self, fields: Vec<(&'static str, String)>) -> &mut Self {
        self.push(fields.len().to_string());
        for (name, value) in fields {
            self.push(name).push(value);
        }
        self
    }

    /// A count, then that many values.
    fn list(&mut self, items: impl ExactSizeIterator<Item = String>) -> &mut Self {
        self.push(items.len().to_string());
        self.0.extend(items);
        self
    }

    /// A listing's namespace and owner filters.
    /// A listing's filters: namespace, owner, then state, time and search
    /// (`take_listing_filter` in prelude.lua).
    fn filters(&mut self, query: &ListQuery) -> &mut Self {
        match &query.namespace {
            NamespaceFilter::Any => self.push("any").push(""),
            NamespaceFilter::None => self.push("none").push(""),
            NamespaceFilter::Is(ns) => self.push("is").push(ns.as_str()),
        };
        self.opt(query.owner_id.as_deref());
        let state = if query.active_only {
            "active"
        } else if query.include_revoked {
            "all"
        } else {
            "live"
        };
        self.push(state).push(micros(now_of(query)).to_string());
        self.opt(query.search_text().map(str::to_ascii_lowercase).as_deref())
    }
}

/// Whether an error means the connection was lost (the manager reconnects; a read can be retried).
fn connection_lost(error: &RedisError) -> bool {
    error.is_unrecoverable_error() || error.is_connection_dropped() || error.is_timeout()
}

fn backend(error: RedisError) -> StoreError {
    StoreError::backend(error)
}

/// A record a script returned (HGETALL's shape); it must exist.
fn returned_record(value: Option<Value>) -> Result<Arc<KeyRecord>, StoreError> {
    let value = value.ok_or_else(|| corrupt("reply", "a script reply without its record"))?;
    codec::record(value)?.map(Arc::new).ok_or_else(|| corrupt("reply", "a script returned an empty record"))
}

/// The error of a refusing script status.
/// How many times [`Store::adjust_credits`] reads and sets again when the credits
/// moved in between.
const CREDIT_ATTEMPTS: usize = 1_000;

/// The credits of a key kept changing while [`Store::adjust_credits`] changed them.
#[derive(Debug, thiserror::Error)]
#[error("the key's credits kept changing: try again")]
struct CreditsContended;

fn refused(status: &str) -> StoreError {
    match status {
        "not_found" => StoreError::NotFound,
        "duplicate" => StoreError::Duplicate,
        "already_revoked" => StoreError::AlreadyRevoked,
        "event_logged" => StoreError::backend(EventAlreadyLogged),
        other => corrupt("reply", format!("unexpected script status {other:?}")),
    }
}

fn now_of(query: &ListQuery) -> OffsetDateTime {
    query.at.unwrap_or_else(OffsetDateTime::now_utc)
}

impl RedisStore {
    /// Connects to `url` (`redis://[user:password@]host[:port][/db]`, or
    /// `redis+unix:///path/to/socket`) and keeps every key under `prefix`.
    ///
    /// Needs Redis 6 or later: the connection speaks RESP3 unless the URL names a
    /// protocol (`?protocol=resp2`), so that a dropped connection is noticed as it
    /// happens and re-established in the background before the next command.
    ///
    /// Fails at once when Redis cannot be reached. Once connected, reads that meet a
    /// lost connection are retried once on the new one; a change that was in flight
    /// fails with [`StoreError::Backend`] and may or may not have happened, as with a
    /// SQL commit whose answer was lost.
    pub async fn connect(url: &str, prefix: impl Into<String>) -> Result<Self, RedisStoreError> {
        let mut info = url.into_connection_info().map_err(RedisStoreError::InvalidUrl)?;
        // RESP3 unless the URL names a protocol: on RESP3 the manager hears of a dropped
        // connection as it happens and reconnects at once, instead of on the next command
        // (which would fail, and a change cannot be retried blindly).
        if !url.contains("protocol=") {
            let settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
            info = info.set_redis_settings(settings);
        }
        let client = Client::open(info).map_err(RedisStoreError::InvalidUrl)?;
        // One plain attempt first: an unreachable server is reported now, not after the
        // manager's reconnection backoff.
        let probe_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let mut probe = client
            .get_multiplexed_async_connection_with_config(&probe_config)
            .await
            .map_err(RedisStoreError::Unreachable)?;
        redis::cmd("PING").query_async::<()>(&mut probe).await.map_err(RedisStoreError::Unreachable)?;
        drop(probe);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(6)
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_with_config(client, config).await.map_err(RedisStoreError::Unreachable)?;
        Ok(Self::from_manager(conn, prefix))
    }

    /// A store on an existing connection manager (configured as the caller likes).
    pub fn from_manager(conn: ConnectionManager, prefix: impl Into<String>) -> Self {
        Self { conn, prefix: Arc::from(prefix.into()) }
    }

    /// The prefix of every key this store writes.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The connection (a clone: it is shared).
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Deletes every key under this store's prefix (records, indexes and the audit
    /// log) and returns how many there were. Not atomic: for tests and for tearing a
    /// tenant down, not while the store is in use.
    pub async fn clear(&self) -> Result<u64, StoreError> {
        let pattern = format!("{}*", glob_escape(&self.prefix));
        let mut conn = self.conn.clone();
        let mut cursor: u64 = 0;
        let mut deleted = 0;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(backend)?;
            if !keys.is_empty() {
                let n: u64 = redis::cmd("UNLINK").arg(&keys).query_async(&mut conn).await.map_err(backend)?;
                deleted += n;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    fn args(&self) -> Args {
        Args(vec![self.prefix.to_string()])
    }

    /// The key of a record's hash (as `k_rec` in `scripts/prelude.lua`).
    fn record_key(&self, id: KeyId) -> String {
        format!("{}key:{id}", self.prefix)
    }

    /// Runs a script that changes data: never retried (it may have run).
    async fn eval(&self, script: &Script, args: &Args) -> Result<Value, StoreError> {
        let mut invocation = script.prepare_invoke();
        for arg in &args.0 {
            invocation.arg(arg.as_str());
        }
        let mut conn = self.conn.clone();
        invocation.invoke_async(&mut conn).await.map_err(backend)
    }

    /// Runs a script that only reads (or an idempotent write): retried once when the
    /// connection was lost, on the connection the manager re-establishes.
    async fn eval_idempotent(&self, script: &Script, args: &Args) -> Result<Value, StoreError> {
        let mut invocation = script.prepare_invoke();
        for arg in &args.0 {
            invocation.arg(arg.as_str());
        }
        let mut conn = self.conn.clone();
        match invocation.invoke_async(&mut conn).await {
            Err(e) if connection_lost(&e) => invocation.invoke_async(&mut conn).await.map_err(backend),
            other => other.map_err(backend),
        }
    }

    /// A script's reply for a change that returns the changed record.
    async fn change(&self, script: &Script, args: &Args) -> Result<Arc<KeyRecord>, StoreError> {
        let (status, mut rest) = status(self.eval(script, args).await?)?;
        match status.as_str() {
            "ok" => returned_record(rest.next()),
            other => Err(refused(other)),
        }
    }
}

/// `text` with the glob characters of `SCAN MATCH` escaped.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Store for RedisStore {
    async fn insert(
        &self,
        record: KeyRecord,
        max_active_per_owner: Option<u32>,
        event: Event,
    ) -> Result<Arc<KeyRecord>, StoreError> {
        let mut args = self.args();
        args.push(max_active_per_owner.map(|n| n.to_string()).unwrap_or_default())
            .pairs(event_fields(&event))
            .pairs(record_fields(&record)?);
        let (status, _) = status(self.eval(&SCRIPTS.insert, &args).await?)?;
        match status.as_str() {
            "ok" => Ok(Arc::new(record)),
            "limit" => Err(StoreError::LimitReached { limit: max_active_per_owner.unwrap_or(0) }),
            other => Err(refused(other)),
        }
    }

    async fn find(&self, lookup: &Lookup) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        if !lookup.is_unique() {
            return Ok(None);
        }
        let mut args = self.args();
        args.push(lookup.kind()).push(lookup.value());
        let reply = self.eval_idempotent(&SCRIPTS.find, &args).await?;
        Ok(codec::record(reply)?.map(Arc::new))
    }

    async fn find_by_hint(&self, hint: &str) -> Result<Vec<Arc<KeyRecord>>, StoreError> {
        let mut args = self.args();
        args.push(hint);
        let reply = self.eval_idempotent(&SCRIPTS.find_by_hint, &args).await?;
        array(reply)?
            .into_iter()
            .map(|r| codec::record(r)?.map(Arc::new).ok_or_else(|| corrupt("reply", "an empty hint candidate")))
            .collect()
    }

    async fn get(&self, id: KeyId) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.record_key(id));
        let mut conn = self.conn.clone();
        let reply = match cmd.query_async::<Value>(&mut conn).await {
            Err(e) if connection_lost(&e) => cmd.query_async(&mut conn).await,
            other => other,
        }
        .map_err(backend)?;
        Ok(codec::record(reply)?.map(Arc::new))
    }

    async fn list(&self, query: &ListQuery) -> Result<Page<Arc<KeyRecord>>, StoreError> {
        let limit = query.limit.clamp(1, 1000) as usize;
        let mut cursor = query.cursor.map(|c| c.to_string()).unwrap_or_default();
        let mut items: Vec<Arc<KeyRecord>> = Vec::new();
        loop {
            let mut args = self.args();
            args.filters(query).push(cursor.as_str()).push((limit + 1 - items.len()).to_string());
            let mut parts = array(self.eval_idempotent(&SCRIPTS.list, &args).await?)?.into_iter();
            let resume = text(parts.next().ok_or_else(|| corrupt("reply", "a listing without its position"))?)?;
            let records = array(parts.next().ok_or_else(|| corrupt("reply", "a listing without its records"))?)?;
            for r in records {
                items.push(returned_record(Some(r))?);
            }
            if items.len() > limit || resume.is_empty() {
                break;
            }
            cursor = resume;
        }
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|r| r.id.0)
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    async fn count(&self, query: &ListQuery) -> Result<u64, StoreError> {
        let mut cursor = String::new();
        let mut total: u64 = 0;
        loop {
            let mut args = self.args();
            args.filters(query).push(cursor.as_str());
            let mut parts = array(self.eval_idempotent(&SCRIPTS.count, &args).await?)?.into_iter();
            let n = int(parts.next().ok_or_else(|| corrupt("reply", "a count without its number"))?)?;
            let resume = text(parts.next().ok_or_else(|| corrupt("reply", "a count without its position"))?)?;
            total += u64::try_from(n).map_err(|_| corrupt("reply", format!("a negative count {n}")))?;
            if resume.is_empty() {
                return Ok(total);
            }
            cursor = resume;
        }
    }

    async fn update(&self, id: KeyId, patch: &KeyPatch, event: Event) -> Result<Arc<KeyRecord>, StoreError> {
        let mut set: Vec<(&'static str, String)> = Vec::new();
        let mut clear: Vec<String> = Vec::new();
        let mut field = |name: &'static str, value: Option<String>| match value {
            Some(v) => set.push((name, v)),
            None => clear.push(name.to_owned()),
        };
        if let Some(name) = &patch.name {
            field("name", name.clone());
        }
        if let Some(metadata) = &patch.metadata {
            field("metadata", metadata.as_ref().map(ToString::to_string));
        }
        if let Some(scopes) = &patch.scopes {
            field("scopes", Some(serde_json::to_string(scopes).map_err(StoreError::backend)?));
        }
        if let Some(expires_at) = patch.expires_at {
            field("expires_at", expires_at.map(|t| micros(t).to_string()));
        }
        if let Some(tier) = &patch.tier {
            field("tier", tier.clone());
        }
        if let Some(remaining) = patch.remaining {
            field("remaining", remaining.map(|n| n.to_string()));
        }
        if let Some(rate_limit) = patch.rate_limit {
            field("rate_limit", rate_limit.map(|l| l.to_string()));
        }
        if let Some(refill) = patch.refill {
            field("refill", refill.map(|r| r.interval.to_string()));
            field("refill_amount", refill.map(|r| r.amount.to_string()));
        }
        if let Some(refilled_at) = patch.refilled_at {
            field("refilled_at", refilled_at.map(|t| micros(t).to_string()));
        }
        let mut args = self.args();
        args.push(id.to_string()).pairs(event_fields(&event)).pairs(set).list(clear.into_iter());
        self.change(&SCRIPTS.update, &args).await
    }

    async fn set_enabled(&self, id: KeyId, enabled: bool, event: Event) -> Result<Arc<KeyRecord>, StoreError> {
        let mut args = self.args();
        args.push(id.to_string()).push(codec::bool_text(enabled)).pairs(event_fields(&event));
        self.change(&SCRIPTS.set_enabled, &args).await
    }

    async fn revoke(&self, id: KeyId, at: OffsetDateTime, event: Event) -> Result<Arc<KeyRecord>, StoreError> {
        let mut args = self.args();
        args.push(id.to_string()).push(micros(at).to_string()).pairs(event_fields(&event));
        self.change(&SCRIPTS.revoke, &args).await
    }

    async fn revoke_owner(
        &self,
        namespace: Option<&str>,
        owner: &str,
        at: OffsetDateTime,
        event: Event,
    ) -> Result<Vec<Arc<KeyRecord>>, StoreError> {
        // The script needs one event id per revoked key; it says how many when it has
        // too few (and changes nothing), and the call is made again with enough.
        let mut wanted = 16;
        for _ in 0..8 {
            let mut ids = Vec::with_capacity(wanted);
            ids.push(event.id);
            let mut fresh: Vec<Uuid> = (1..wanted).map(|_| Uuid::now_v7()).collect();
            fresh.sort();
            ids.extend(fresh);
            let mut args = self.args();
            args.opt(namespace)
                .push(owner)
                .push(micros(at).to_string())
                .pairs(event_fields(&event))
                .list(ids.iter().map(Uuid::to_string));
            let (status, mut rest) = status(self.eval(&SCRIPTS.revoke_owner, &args).await?)?;
            match status.as_str() {
                "ok" => {
                    let records = array(rest.next().ok_or_else(|| corrupt("reply", "no revoked records"))?)?;
                    return records.into_iter().map(|r| returned_record(Some(r))).collect();
                }
                "more" => {
                    let needed = int(rest.next().ok_or_else(|| corrupt("reply", "no count of keys"))?)?;
                    wanted = usize::try_from(needed).map_err(|e| corrupt("reply", e))? + 16;
                }
                other => return Err(refused(other)),
            }
        }
        Err(corrupt("reply", "revoke_owner: keys kept being added while revoking them"))
    }

    async fn rotate(
        &self,
        old: KeyId,
        replacement: KeyRecord,
        old_revoked_at: OffsetDateTime,
        event: Event,
    ) -> Result<(Arc<KeyRecord>, Arc<KeyRecord>), StoreError> {
        let mut args = self.args();
        args.push(old.to_string())
            .push(micros(old_revoked_at).to_string())
            .pairs(event_fields(&event))
            .pairs(record_fields(&replacement)?);
        let old_record = self.change(&SCRIPTS.rotate, &args).await?;
        Ok((old_record, Arc::new(replacement)))
    }

    async fn delete(&self, id: KeyId, event: Event) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        let mut args = self.args();
        args.push(id.to_string()).pairs(event_fields(&event));
        match self.change(&SCRIPTS.delete, &args).await {
            Ok(record) => Ok(Some(record)),
            Err(StoreError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn consume(&self, id: KeyId, cost: u64, refill_due: Option<OffsetDateTime>) -> Result<Credits, StoreError> {
        let mut args = self.args();
        let due = refill_due.map(|t| micros_ceil(t).to_string());
        args.push(id.to_string()).push(cost.to_string()).opt(due.as_deref());
        let (status, mut rest) = status(self.eval(&SCRIPTS.consume, &args).await?)?;
        let mut left = || -> Result<u64, StoreError> {
            let t = text(rest.next().ok_or_else(|| corrupt("reply", "no credits left in the reply"))?)?;
            t.parse().map_err(|e| corrupt("remaining", format!("{t:?}: {e}")))
        };
        match status.as_str() {
            "spent" => Ok(Credits::Spent { remaining: left()? }),
            "exhausted" => Ok(Credits::Exhausted { remaining: left()? }),
            "unlimited" => Ok(Credits::Unlimited),
            other => Err(refused(other)),
        }
    }

    async fn adjust_credits(
        &self,
        id: KeyId,
        op: CreditOp,
        refill_due: Option<OffsetDateTime>,
        event: Event,
    ) -> Result<Arc<KeyRecord>, StoreError> {
        // Computed here from the stored values, then set if they have not moved since
        // (a spend, another change): read again when they have.
        for _ in 0..CREDIT_ATTEMPTS {
            let mut record = KeyRecord::clone(&*self.get(id).await?.ok_or(StoreError::NotFound)?);
            let (was_left, was_at) = (record.remaining.map(|n| n.to_string()), record.refilled_at.map(micros));
            record.top_up(refill_due);
            let left = op.apply(record.remaining).ok_or(StoreError::CreditsUnchangeable)?;
            let at = record.refilled_at.map(|t| micros(t).to_string());
            let mut args = self.args();
            args.push(id.to_string())
                .opt(was_left.as_deref())
                .opt(was_at.map(|t| t.to_string()).as_deref())
                .push(left.to_string())
                .opt(at.as_deref())
                .pairs(event_fields(&event));
            let (status, mut rest) = status(self.eval(&SCRIPTS.set_credits, &args).await?)?;
            match status.as_str() {
                "ok" => return returned_record(rest.next()),
                "changed" => continue,
                other => return Err(refused(other)),
            }
        }
        Err(StoreError::backend(CreditsContended))
    }

    async fn touch(&self, used: &[(KeyId, OffsetDateTime)]) -> Result<(), StoreError> {
        // The latest time per key; the script only moves forward, so a retry is harmless.
        let mut latest: HashMap<KeyId, i64> = HashMap::with_capacity(used.len());
        for &(id, at) in used {
            let at = micros(at);
            let slot = latest.entry(id).or_insert(at);
            *slot = (*slot).max(at);
        }
        let latest: Vec<(KeyId, i64)> = latest.into_iter().collect();
        for batch in latest.chunks(TOUCH_BATCH) {
            let mut args = self.args();
            for (id, at) in batch {
                args.push(id.to_string()).push(at.to_string());
            }
            self.eval_idempotent(&SCRIPTS.touch, &args).await?;
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
        let mut args = self.args();
        args.push(id.to_string()).push(expected).push(new_hash).push(new_lookup.kind()).push(new_lookup.value());
        let (status, _) = status(self.eval(&SCRIPTS.replace_hash, &args).await?)?;
        match status.as_str() {
            "ok" => Ok(true),
            "stale" => Ok(false),
            other => Err(refused(other)),
        }
    }

    async fn audit(&self, query: &AuditQuery) -> Result<Page<Event>, StoreError> {
        let limit = query.limit.clamp(1, 1000) as usize;
        let mut filters: Vec<(&'static str, String)> = Vec::new();
        if let Some(key) = query.key_id {
            filters.push(("key_id", key.to_string()));
        }
        if let Some(owner) = &query.owner_id {
            filters.push(("owner_id", owner.clone()));
        }
        if let Some(ns) = &query.namespace {
            filters.push(("namespace", ns.clone()));
        }
        if let Some(action) = query.action {
            filters.push(("action", action.as_str().to_owned()));
        }
        if let Some(since) = query.since {
            filters.push(("since", micros_ceil(since).to_string()));
        }
        if let Some(until) = query.until {
            filters.push(("until", micros_ceil(until).to_string()));
        }
        let mut cursor = query.cursor.map(|c| c.to_string()).unwrap_or_default();
        let mut items: Vec<Event> = Vec::new();
        loop {
            let mut args = self.args();
            args.push(cursor.as_str()).push((limit + 1 - items.len()).to_string()).pairs(filters.clone());
            let mut parts = array(self.eval_idempotent(&SCRIPTS.audit, &args).await?)?.into_iter();
            let resume = text(parts.next().ok_or_else(|| corrupt("reply", "an audit page without its position"))?)?;
            let events = array(parts.next().ok_or_else(|| corrupt("reply", "an audit page without its events"))?)?;
            for e in events {
                items.push(codec::decode_event(codec::hash(e)?)?);
            }
            if items.len() > limit || resume.is_empty() {
                break;
            }
            cursor = resume;
        }
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|e| e.id)
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }
}
