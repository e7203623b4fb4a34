//! Coalesced `last_used_at` writes: verifications note the time in memory and one
//! batched write per interval records them, touching only that column.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use time::OffsetDateTime;

use crate::random_bits::RandomBits;
use crate::record::{KeyId, KeyRecord};

#[derive(Debug)]
pub(crate) struct LastUsed {
    interval: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    pending: HashMap<KeyId, OffsetDateTime, RandomBits>,
    last_flush: Option<OffsetDateTime>,
}

impl LastUsed {
    pub(crate) fn new(interval: Duration) -> Self {
        Self { interval, state: Mutex::new(State { pending: HashMap::default(), last_flush: None }) }
    }

    /// Notes a use of `record` at `now`. Returns the batch to write when a flush is due.
    pub(crate) fn note(&self, record: &KeyRecord, now: OffsetDateTime) -> Option<Vec<(KeyId, OffsetDateTime)>> {
        // Already recorded recently enough: nothing to remember.
        if record.last_used_at.is_some_and(|last| now - last < self.interval) {
            return None;
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.pending.insert(record.id, now);
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
