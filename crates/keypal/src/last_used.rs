//! Coalesced `last_used_at` writes: verifications note the time in memory and one
//! batched write per interval records them, touching only that column.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use time::OffsetDateTime;

use crate::record::{KeyId, KeyRecord};

/// `pending` is never compacted below this length (2 MiB of entries): up to this
/// many uses are kept as noted, duplicates and all, until the flush.
const MIN_COMPACT_ABOVE: usize = 65_536;
/// The next [`LastUsed`]'s tag. Records in memory may be shared by several managers
/// (on one `MemoryStore`): each marks them with its own tag, so that one manager's
/// note does not stand for another's, which writes its own batch.
static NEXT_TAG: AtomicU32 = AtomicU32::new(1);

#[derive(Debug)]
pub(crate) struct LastUsed {
    interval: Duration,
    /// `interval` in whole seconds (at least 1): interval numbers are Unix seconds
    /// divided by it.
    interval_secs: u64,
    /// This instance's tag, in the high half of the marks it leaves in records.
    tag: u64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Uses noted since the last flush: a prefix sorted by key id with one entry per
    /// key (after a compaction), then the uses noted since, in the order noted. A key
    /// is noted more than once when its record was read again from the store (a new
    /// copy knows nothing of earlier notes); compaction keeps its latest use.
    pending: Vec<(KeyId, OffsetDateTime)>,
    /// Compact `pending` when it grows past this: twice its length after the last
    /// compaction, so that keys noted once each (no duplicates to remove) cost few
    /// compactions, while `pending` stays within twice the keys it holds.
    compact_above: usize,
    /// When the next flush is due: one interval after the last one; `None` before
    /// the first (due at once).
    next_flush: Option<OffsetDateTime>,
}

impl State {
    /// One entry per key, its latest use; sorted by key id.
    ///
    /// The sort is a stable, run-adaptive one: it finds the sorted prefix as one run,
    /// sorts only the uses noted since and merges, so a compaction costs about the
    /// length of `pending` plus sorting half of it.
    fn compact(&mut self) {
        self.pending.sort_by_key(|(id, _)| id.0.as_u128());
        // `dedup_by` passes the later element first and keeps the earlier one.
        self.pending.dedup_by(|(id, at), (kept_id, kept_at)| {
            let same = id == kept_id;
            if same && *at > *kept_at {
                *kept_at = *at;
            }
            same
        });
        let len = self.pending.len();
        self.compact_above = MIN_COMPACT_ABOVE.max(2 * len);
    }

    /// Everything pending, compacted; `pending` starts over.
    fn drain(&mut self) -> Vec<(KeyId, OffsetDateTime)> {
        self.compact();
        self.compact_above = MIN_COMPACT_ABOVE;
        std::mem::take(&mut self.pending)
    }
}

impl LastUsed {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            interval_secs: interval.as_secs().max(1),
            tag: u64::from(NEXT_TAG.fetch_add(1, Ordering::Relaxed)) << 32,
            state: Mutex::new(State { pending: Vec::new(), compact_above: MIN_COMPACT_ABOVE, next_flush: None }),
        }
    }

    /// Whether the use of `record` was noted in the interval holding the Unix second
    /// `now`: if so, a use now needs no note. It asks the record itself (its
    /// `noted_in`), which the verification has just read: no other memory.
    ///
    /// `now` may come from [`Clock::coarse_unix_seconds`](crate::Clock::coarse_unix_seconds):
    /// read a clock tick late, it can count the first milliseconds of an interval to
    /// the one before, where the key may be noted already: that use is then not noted,
    /// so `last_used_at` lags real use by at most one interval and a tick.
    #[inline]
    pub(crate) fn is_noted(&self, record: &KeyRecord, now: i64) -> bool {
        record.noted_in.get() == self.mark(now)
    }

    /// Notes a use of `record` at `now`, unless its stored `last_used_at` is recent
    /// enough already. Returns the batch to write when a flush is due. A key is
    /// noted once per interval (per copy of its record read from the store), so
    /// `last_used_at` lags real use by at most one interval (and a tick, see
    /// [`LastUsed::is_noted`]).
    pub(crate) fn note(&self, record: &KeyRecord, now: OffsetDateTime) -> Option<Vec<(KeyId, OffsetDateTime)>> {
        record.noted_in.set(self.mark(now.unix_timestamp()));
        if record.last_used_at.is_some_and(|last| now - last < self.interval) {
            return None;
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.pending.push((record.id, now));
        if state.pending.len() > state.compact_above {
            state.compact();
        }
        // A comparison, not a subtraction of date-times: this runs once per key and interval.
        let due = state.next_flush.is_none_or(|at| now >= at);
        if due {
            state.next_flush = self.after_interval(now);
            Some(state.drain())
        } else {
            None
        }
    }

    /// The mark of this instance for the interval holding the Unix second `now`: the
    /// tag above, the interval's number below (never 0, so a record never noted is
    /// never taken for noted).
    fn mark(&self, now: i64) -> u64 {
        self.tag | ((now as u64 / self.interval_secs) & 0xffff_ffff).max(1)
    }

    /// One interval after `at`; `None` (a flush due at every note) past the end of time.
    fn after_interval(&self, at: OffsetDateTime) -> Option<OffsetDateTime> {
        at.checked_add(time::Duration::try_from(self.interval).ok()?)
    }

    /// Takes everything pending.
    pub(crate) fn take(&self, now: OffsetDateTime) -> Vec<(KeyId, OffsetDateTime)> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.next_flush = self.after_interval(now);
        state.drain()
    }

    /// Puts a batch back after a failed write (newer notes win).
    pub(crate) fn restore(&self, batch: Vec<(KeyId, OffsetDateTime)>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.pending.extend(batch);
        state.compact();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Lookup;

    /// `secs` after a time that starts an interval of 30 s (and of an hour).
    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_749_996_000 + secs).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// A key's record as read from a store, with its stored `last_used_at`.
    fn record(id: KeyId, last_used_at: Option<OffsetDateTime>) -> KeyRecord {
        let mut record = KeyRecord::new(id, Lookup::Digest([0; 32]), "$sha256$00", at(0));
        record.last_used_at = last_used_at;
        record
    }

    /// What a verification does: notes the use unless the record says it is noted.
    fn used(last_used: &LastUsed, record: &KeyRecord, now: OffsetDateTime) -> Option<Vec<(KeyId, OffsetDateTime)>> {
        if last_used.is_noted(record, now.unix_timestamp()) { None } else { last_used.note(record, now) }
    }

    fn pending(last_used: &LastUsed) -> usize {
        last_used.state.lock().map(|s| s.pending.len()).unwrap_or(0)
    }

    fn sorted(mut batch: Vec<(KeyId, OffsetDateTime)>) -> Vec<(KeyId, OffsetDateTime)> {
        batch.sort();
        batch
    }

    #[test]
    fn first_use_flushes_then_one_batch_per_interval() {
        let last_used = LastUsed::new(Duration::from_secs(30));
        let (a, b) = (record(KeyId::new(), None), record(KeyId::new(), None));
        assert_eq!(used(&last_used, &a, at(0)), Some(vec![(a.id, at(0))]));
        assert_eq!(used(&last_used, &b, at(1)), None);
        // Already noted in this interval: not noted again.
        assert_eq!(used(&last_used, &a, at(2)), None);
        assert_eq!(used(&last_used, &b, at(3)), None);
        assert_eq!(pending(&last_used), 1);
        // A new interval: `b` is noted again and the flush is due; `b` is in the
        // batch once, at its latest use.
        assert_eq!(used(&last_used, &b, at(31)), Some(vec![(b.id, at(31))]));
        assert_eq!(last_used.take(at(32)), vec![]);
    }

    #[test]
    fn a_recent_stored_last_use_is_not_noted() {
        let last_used = LastUsed::new(Duration::from_secs(30));
        let a = record(KeyId::new(), Some(at(0)));
        assert_eq!(used(&last_used, &a, at(10)), None);
        assert_eq!(last_used.take(at(11)), vec![]);
        assert_eq!(used(&last_used, &a, at(30)), None);
        assert_eq!(last_used.take(at(31)), vec![(a.id, at(30))]);
    }

    #[test]
    fn a_copy_keeps_the_mark_and_a_record_read_again_is_noted_again() {
        let last_used = LastUsed::new(Duration::from_secs(3_600));
        let id = KeyId::new();
        let first = record(id, None);
        assert!(used(&last_used, &first, at(0)).is_some());
        assert!(used(&last_used, &record(KeyId::new(), None), at(1)).is_none());
        // A copy of a noted record (a store changing another field) is noted already.
        assert!(last_used.is_noted(&first.clone(), at(2).unix_timestamp()));
        // The same key read again from the store is noted again, and the batch still
        // holds it once, at its latest use.
        assert!(used(&last_used, &record(id, None), at(3)).is_none());
        let batch = last_used.take(at(4));
        assert_eq!(batch.len(), 2);
        assert!(batch.contains(&(id, at(3))));
    }

    #[test]
    fn managers_sharing_a_record_each_note_its_use() {
        let (a, b) = (LastUsed::new(Duration::from_secs(30)), LastUsed::new(Duration::from_secs(30)));
        let shared = record(KeyId::new(), None);
        assert!(used(&a, &shared, at(0)).is_some());
        // `a`'s mark does not stand for `b`, which writes its own batch.
        assert!(!b.is_noted(&shared, at(1).unix_timestamp()));
        assert_eq!(used(&b, &shared, at(1)), Some(vec![(shared.id, at(1))]));
    }

    #[test]
    fn compaction_bounds_pending_and_keeps_the_latest_use() {
        let last_used = LastUsed::new(Duration::from_secs(3_600));
        assert!(used(&last_used, &record(KeyId::new(), None), at(0)).is_some());
        let ids: Vec<KeyId> = (0..3).map(|_| KeyId::new()).collect();
        let rounds = MIN_COMPACT_ABOVE as i64;
        for round in 0..rounds {
            for id in &ids {
                // A record read again from the store every time: every use is noted.
                assert_eq!(used(&last_used, &record(*id, None), at(round / 1_000)), None);
            }
            assert!(pending(&last_used) <= MIN_COMPACT_ABOVE);
        }
        let latest = at((rounds - 1) / 1_000);
        let expected = sorted(ids.iter().map(|id| (*id, latest)).collect());
        assert_eq!(last_used.take(at(100)), expected);
    }

    #[test]
    fn restore_keeps_the_newer_use() {
        let last_used = LastUsed::new(Duration::from_secs(30));
        let (a, b) = (KeyId::new(), KeyId::new());
        assert!(used(&last_used, &record(a, None), at(0)).is_some());
        assert!(used(&last_used, &record(a, None), at(40)).is_some());
        last_used.restore(vec![(a, at(35)), (b, at(36))]);
        last_used.restore(vec![(a, at(45))]);
        assert_eq!(last_used.take(at(41)), sorted(vec![(a, at(45)), (b, at(36))]));
    }
}
