//! Coalesced `last_used_at` writes: verifications note the time in memory and one
//! batched write per interval records them, touching only that column.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use time::OffsetDateTime;

use crate::random_bits::{RandomBits, spread};
use crate::record::{KeyId, KeyRecord};

/// Slots of the "already noted in this interval" filter.
const SLOTS: usize = 4_096;

#[derive(Debug)]
pub(crate) struct LastUsed {
    interval: Duration,
    /// A lossy, lock-free memory of which keys were noted in the current interval:
    /// slot `id % SLOTS` holds `id's random bits | interval number`. A hit skips the
    /// lock; a miss (or two keys sharing a slot) only costs the locked path.
    noted: Box<[AtomicU64]>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    pending: HashMap<KeyId, OffsetDateTime, RandomBits>,
    last_flush: Option<OffsetDateTime>,
}

impl LastUsed {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            noted: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            state: Mutex::new(State { pending: HashMap::default(), last_flush: None }),
        }
    }

    /// Notes a use of `record` at `now`. Returns the batch to write when a flush is due.
    /// A key is noted once per interval, so `last_used_at` lags real use by at most one interval.
    pub(crate) fn note(&self, record: &KeyRecord, now: OffsetDateTime) -> Option<Vec<(KeyId, OffsetDateTime)>> {
        if record.last_used_at.is_some_and(|last| now - last < self.interval) {
            return None;
        }
        let interval_secs = self.interval.as_secs().max(1);
        let interval_number = (now.unix_timestamp() as u64 / interval_secs) & 0xffff_ffff;
        let random = spread(u64::from_le_bytes(*record.id.0.as_bytes().last_chunk::<8>().unwrap_or(&[0; 8])));
        let mark = (random & !0xffff_ffff) | interval_number;
        let slot = &self.noted[(random >> 52) as usize % SLOTS];
        if slot.load(Ordering::Relaxed) == mark {
            return None;
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.pending.insert(record.id, now);
        slot.store(mark, Ordering::Relaxed);
        let due = state.last_flush.is_none_or(|last| now - last >= self.interval);
        if due {
            state.last_flush = Some(now);
            Some(state.pending.drain().collect())
        } else {
            None
        }
    }

    /// Takes everything pending.
    pub(crate) fn take(&self, now: OffsetDateTime) -> Vec<(KeyId, OffsetDateTime)> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.last_flush = Some(now);
        state.pending.drain().collect()
    }

    /// Puts a batch back after a failed write (newer notes win).
    pub(crate) fn restore(&self, batch: Vec<(KeyId, OffsetDateTime)>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for (id, at) in batch {
            let slot = state.pending.entry(id).or_insert(at);
            if *slot < at {
                *slot = at;
            }
        }
    }
}
