//! Coalesced `last_used_at` writes: verifications note the time in memory and one
//! batched write per interval records them, touching only that column.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use time::OffsetDateTime;

use crate::random_bits::spread;
use crate::record::KeyId;

/// Slots of the "already noted in this interval" filter, in sets of [`WAYS`].
const SLOTS: usize = 4_096;
/// Slots per set: a key may sit in any slot of its set, so a few keys sharing a
/// set do not keep evicting each other.
const WAYS: usize = 4;
/// `pending` is never compacted below this length (2 MiB of entries): up to this
/// many uses are kept as noted, duplicates and all, until the flush.
const MIN_COMPACT_ABOVE: usize = 65_536;

#[derive(Debug)]
pub(crate) struct LastUsed {
    interval: Duration,
    /// A lossy, lock-free memory of which keys were noted in the current interval:
    /// a slot of the key's set holds `the id's random bits | interval number`. A hit
    /// skips the lock; a miss (or a set shared by more keys than it has slots) only
    /// costs the locked path.
    noted: Box<[AtomicU64]>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Uses noted since the last flush: a prefix sorted by key id with one entry per
    /// key (after a compaction), then the uses noted since, in the order noted. A key
    /// is noted more than once when the filter forgot it; compaction keeps its latest use.
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

/// A key's identity in the "already noted" filter: 64 uniformly random bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fingerprint(u64);

impl Fingerprint {
    /// From the SHA-256 of the presented key, which is known before the store is read:
    /// the filter can then be checked while the lookup is under way.
    pub(crate) fn of_digest(digest: &[u8; 32]) -> Self {
        Self(digest.first_chunk::<8>().map_or(0, |bytes| u64::from_le_bytes(*bytes)))
    }

    /// From the key's id, once its record is found (a UUID v7 ends in random bits).
    pub(crate) fn of_id(id: KeyId) -> Self {
        Self(spread(u64::from_le_bytes(*id.0.as_bytes().last_chunk::<8>().unwrap_or(&[0; 8]))))
    }
}

impl LastUsed {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            noted: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            state: Mutex::new(State { pending: Vec::new(), compact_above: MIN_COMPACT_ABOVE, next_flush: None }),
        }
    }

    /// Whether the key was noted in the interval holding the Unix second `now` (as
    /// far as the filter remembers): if so, a use now needs no note.
    ///
    /// `now` may come from [`Clock::coarse_unix_seconds`](crate::Clock::coarse_unix_seconds):
    /// read a clock tick late, it can count the first milliseconds of an interval to
    /// the one before, which delays that use's note to the next use, so `last_used_at`
    /// lags real use by at most one interval and a tick.
    pub(crate) fn seen(&self, key: Fingerprint, now: i64) -> bool {
        let (slots, mark) = self.slots(key, now);
        slots.iter().any(|slot| slot.load(Ordering::Relaxed) == mark)
    }

    /// Notes a use at `now` of the key `id` (whose stored `last_used_at` is
    /// `last_used_at`), known to the filter as `key`. Returns the batch to write when a
    /// flush is due. A key is noted once per interval, so `last_used_at` lags real use
    /// by at most one interval.
    pub(crate) fn note(
        &self,
        key: Fingerprint,
        id: KeyId,
        last_used_at: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> Option<Vec<(KeyId, OffsetDateTime)>> {
        let (slots, mark) = self.slots(key, now.unix_timestamp());
        if slots.iter().any(|slot| slot.load(Ordering::Relaxed) == mark) {
            return None;
        }
        // After the filter: the filter is cheaper than time arithmetic, and either one
        // saying "recent" is enough.
        if last_used_at.is_some_and(|last| now - last < self.interval) {
            return None;
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.pending.push((id, now));
        if state.pending.len() > state.compact_above {
            state.compact();
        }
        // A slot not yet used in this interval, else any: the clock picks, so that
        // keys taking turns in a full set do not evict each other every time.
        let interval_number = mark & 0xffff_ffff;
        let free = slots.iter().find(|slot| slot.load(Ordering::Relaxed) & 0xffff_ffff != interval_number);
        if let Some(slot) = free.or_else(|| slots.get(now.microsecond() as usize % WAYS)) {
            slot.store(mark, Ordering::Relaxed);
        }
        // A comparison, not a subtraction of date-times: this runs on every miss.
        let due = state.next_flush.is_none_or(|at| now >= at);
        if due {
            state.next_flush = self.after_interval(now);
            Some(state.drain())
        } else {
            None
        }
    }

    /// The filter slots of `key`, and the mark it leaves there in the interval of the
    /// Unix second `now`: its random bits above, the interval number below.
    fn slots(&self, key: Fingerprint, now: i64) -> (&[AtomicU64], u64) {
        let interval_secs = self.interval.as_secs().max(1);
        let interval_number = (now as u64 / interval_secs) & 0xffff_ffff;
        let set = (key.0 >> 52) as usize % (SLOTS / WAYS) * WAYS;
        let slots = self.noted.get(set..set + WAYS).unwrap_or_default();
        (slots, (key.0 & !0xffff_ffff) | interval_number)
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

    /// `secs` after a time that starts an interval of 30 s (and of an hour).
    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_749_996_000 + secs).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    fn note(
        last_used: &LastUsed,
        id: KeyId,
        last_used_at: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> Option<Vec<(KeyId, OffsetDateTime)>> {
        last_used.note(Fingerprint::of_id(id), id, last_used_at, now)
    }

    fn sorted(mut batch: Vec<(KeyId, OffsetDateTime)>) -> Vec<(KeyId, OffsetDateTime)> {
        batch.sort();
        batch
    }

    #[test]
    fn first_use_flushes_then_one_batch_per_interval() {
        let last_used = LastUsed::new(Duration::from_secs(30));
        let (a, b) = (KeyId::new(), KeyId::new());
        assert_eq!(note(&last_used, a, None, at(0)), Some(vec![(a, at(0))]));
        assert_eq!(note(&last_used, b, None, at(1)), None);
        // Already noted in this interval: not noted again.
        assert_eq!(note(&last_used, a, None, at(2)), None);
        assert_eq!(note(&last_used, b, None, at(3)), None);
        // A new interval: `b` is noted again and the flush is due; `b` is in the
        // batch once, at its latest use.
        assert_eq!(note(&last_used, b, None, at(31)), Some(vec![(b, at(31))]));
        assert_eq!(last_used.take(at(32)), vec![]);
    }

    #[test]
    fn a_recent_stored_last_use_is_not_noted() {
        let last_used = LastUsed::new(Duration::from_secs(30));
        let a = KeyId::new();
        assert_eq!(note(&last_used, a, Some(at(0)), at(10)), None);
        assert_eq!(last_used.take(at(11)), vec![]);
        assert_eq!(note(&last_used, a, Some(at(0)), at(30)), None);
        assert_eq!(last_used.take(at(31)), vec![(a, at(30))]);
    }

    #[test]
    fn keys_sharing_a_set_are_all_remembered() {
        let last_used = LastUsed::new(Duration::from_secs(3_600));
        assert!(note(&last_used, KeyId::new(), None, at(0)).is_some());
        let ids: Vec<KeyId> = (0..SLOTS / WAYS).map(|_| KeyId::new()).collect();
        for id in &ids {
            note(&last_used, *id, None, at(1));
        }
        // With a quarter of the slots used, nearly every key is still remembered
        // (a key is forgotten only when more than `WAYS` keys share its set).
        let before = last_used.state.lock().map(|s| s.pending.len()).unwrap_or(0);
        for id in &ids {
            note(&last_used, *id, None, at(2));
        }
        let after = last_used.state.lock().map(|s| s.pending.len()).unwrap_or(0);
        assert!(after - before < ids.len() / 20, "{} of {} noted again", after - before, ids.len());
    }

    #[test]
    fn compaction_bounds_pending_and_keeps_the_latest_use() {
        let last_used = LastUsed::new(Duration::from_secs(3_600));
        assert!(note(&last_used, KeyId::new(), None, at(0)).is_some());
        let ids: Vec<KeyId> = (0..3).map(|_| KeyId::new()).collect();
        let rounds = MIN_COMPACT_ABOVE as i64;
        for round in 0..rounds {
            for id in &ids {
                // Make the filter forget the key: every note goes to `pending`.
                last_used
                    .slots(Fingerprint::of_id(*id), at(0).unix_timestamp())
                    .0
                    .iter()
                    .for_each(|slot| slot.store(0, Ordering::Relaxed));
                assert_eq!(note(&last_used, *id, None, at(round / 1_000)), None);
            }
            let state = last_used.state.lock().unwrap_or_else(|e| e.into_inner());
            assert!(state.pending.len() <= MIN_COMPACT_ABOVE);
        }
        let latest = at((rounds - 1) / 1_000);
        let expected = sorted(ids.iter().map(|id| (*id, latest)).collect());
        assert_eq!(last_used.take(at(100)), expected);
    }

    #[test]
    fn restore_keeps_the_newer_use() {
        let last_used = LastUsed::new(Duration::from_secs(30));
        let (a, b) = (KeyId::new(), KeyId::new());
        assert!(note(&last_used, a, None, at(0)).is_some());
        assert!(note(&last_used, a, None, at(40)).is_some());
        last_used.restore(vec![(a, at(35)), (b, at(36))]);
        last_used.restore(vec![(a, at(45))]);
        assert_eq!(last_used.take(at(41)), sorted(vec![(a, at(45)), (b, at(36))]));
    }
}
