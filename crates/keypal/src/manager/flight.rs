//! Single flight: concurrent verifications of one key that is not in the
//! verified-result cache share one lookup and one hash check.
//!
//! Without it, 32 requests arriving together with a new bcrypt key would each read the
//! store and each spend a bcrypt (32 times the work, all but one thrown away). With it
//! the first starts the lookup (a [`Flight`]) and the others await the same one; then
//! each request runs its own steps from the state checks on (scopes, rate limit,
//! credits), as if it had looked the key up itself.
//!
//! A flight is joined only while no invalidation happened since it started (the
//! cache's generation is unchanged): a verification that begins after a key was
//! revoked never shares a lookup that may have read the key before.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use futures_util::future::{Shared, WeakShared};
use zeroize::Zeroizing;

use super::{KeyManager, LookupStrategy};
use crate::Error;
use crate::store::{Store, StoreError};

/// What a flight finds: the record whose hash matched, if any. The error is shared
/// by every verification that awaited the flight.
type Found = Result<Option<super::verify::Found>, Arc<Error>>;

/// A lookup in progress, awaited by every verification of its key.
type Flight = Shared<Pin<Box<dyn Future<Output = Found> + Send>>>;

/// The flights in progress, by the SHA-256 of their key.
#[derive(Default)]
pub(crate) struct Flights {
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    by_digest: HashMap<[u8; 32], Entry>,
    /// Numbers the flights, so that one removes its own entry and no later one's.
    started: u64,
}

struct Entry {
    serial: u64,
    /// The cache's generation when the flight started.
    generation: u64,
    /// Weak: a flight every verification stopped awaiting is dropped, not kept here.
    flight: WeakShared<Pin<Box<dyn Future<Output = Found> + Send>>>,
}

/// Removes a flight's entry when the flight ends: it completed, or every verification
/// awaiting it was dropped.
struct Landing {
    flights: Arc<Flights>,
    digest: [u8; 32],
    serial: u64,
}

impl Drop for Landing {
    fn drop(&mut self) {
        let mut pending = self.flights.lock();
        if pending.by_digest.get(&self.digest).is_some_and(|e| e.serial == self.serial) {
            pending.by_digest.remove(&self.digest);
        }
    }
}

impl Flights {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The flight of `digest` started at cache generation `generation`, else a new
    /// one from `start` (given the [`Landing`] it must hold until it ends).
    fn join(
        self: &Arc<Self>,
        digest: [u8; 32],
        generation: u64,
        start: impl FnOnce(Landing) -> Pin<Box<dyn Future<Output = Found> + Send>>,
    ) -> Flight {
        let mut pending = self.lock();
        if let Some(flight) =
            pending.by_digest.get(&digest).filter(|e| e.generation == generation).and_then(|e| e.flight.upgrade())
        {
            return flight;
        }
        pending.started += 1;
        let serial = pending.started;
        let flight = start(Landing { flights: self.clone(), digest, serial }).shared();
        if let Some(weak) = flight.downgrade() {
            pending.by_digest.insert(digest, Entry { serial, generation, flight: weak });
        }
        flight
    }

    /// How many flights are in progress (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().by_digest.len()
    }
}

impl<S: Store> KeyManager<S> {
    /// [`KeyManager::find_verified`], from the cache or else once for all the
    /// concurrent verifications of the key whose SHA-256 is `digest`.
    pub(super) async fn find_verified_once(
        &self,
        flights: &Arc<Flights>,
        key: &str,
        strategy: LookupStrategy,
        id: Option<&str>,
        digest: &[u8; 32],
    ) -> Result<Option<super::verify::Found>, Error> {
        let cache = self.inner.cache.as_ref();
        if let Some(record) = cache.and_then(|c| c.get(digest)) {
            return Ok(Some(super::verify::Found { record, cached: true }));
        }
        let generation = cache.map_or(0, crate::cache::VerifiedCache::generation);
        let flight = flights.join(*digest, generation, |landing| {
            let manager = self.clone();
            let key = Zeroizing::new(key.to_owned());
            let id = id.map(str::to_owned);
            let digest = *digest;
            Box::pin(async move {
                let _landing = landing;
                manager.find_verified(&key, strategy, id.as_deref(), Some(&digest)).await.map_err(Arc::new)
            })
        });
        flight.await.map_err(unshare)
    }
}

/// A shared lookup's error, as one verification that awaited it reports it: the
/// error itself for the last one holding it, else an equal copy (the store's
/// backend error by its message).
fn unshare(error: Arc<Error>) -> Error {
    Arc::try_unwrap(error).unwrap_or_else(|shared| match &*shared {
        Error::Offload(e) => Error::Offload(*e),
        Error::Store(StoreError::Backend(e)) => Error::Store(StoreError::Backend(e.to_string().into())),
        other => Error::Store(StoreError::Backend(other.to_string().into())),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_flight_is_joined_only_in_its_generation() {
        let flights = Arc::new(Flights::default());
        let mut started = 0;
        let mut start = |landing: Landing| {
            started += 1;
            Box::pin(async move {
                let _landing = landing;
                std::future::pending::<()>().await;
                Ok(None)
            }) as Pin<Box<dyn Future<Output = Found> + Send>>
        };
        let first = flights.join([1; 32], 0, &mut start);
        let joined = flights.join([1; 32], 0, &mut start);
        assert!(first.ptr_eq(&joined));
        let other_key = flights.join([2; 32], 0, &mut start);
        assert!(!first.ptr_eq(&other_key));
        // An invalidation since: a new flight replaces the old one for later joins.
        let after_invalidation = flights.join([1; 32], 1, &mut start);
        assert!(!first.ptr_eq(&after_invalidation));
        assert_eq!(started, 3);
        assert_eq!(flights.len(), 2);

        // The replaced flight, dropped, does not remove its successor's entry.
        drop((first, joined));
        assert_eq!(flights.len(), 2);
        // A flight nobody awaits any more is dropped and forgotten.
        drop((other_key, after_invalidation));
        assert_eq!(flights.len(), 0);
    }

    #[test]
    fn a_completed_flight_is_forgotten() {
        let flights = Arc::new(Flights::default());
        let flight = flights.join([1; 32], 0, |landing| {
            Box::pin(async move {
                let _landing = landing;
                Ok(None)
            })
        });
        assert_eq!(flights.len(), 1);
        let kept = flight.clone();
        assert!(pollster::block_on(flight).unwrap().is_none());
        assert_eq!(flights.len(), 0);
        assert!(pollster::block_on(kept).unwrap().is_none());
    }

    #[test]
    fn errors_reach_every_verification_that_shared_them() {
        let shared = Arc::new(Error::Offload(crate::OffloadError::Busy));
        let kept = shared.clone();
        assert_eq!(unshare(shared).code(), "HASHING_BUSY");
        assert_eq!(unshare(kept).code(), "HASHING_BUSY");
        let backend = Arc::new(Error::Store(StoreError::Backend("connection refused".into())));
        let kept = backend.clone();
        let message = "storage failed: storage backend error: connection refused";
        assert_eq!(unshare(backend).to_string(), message);
        assert_eq!(unshare(kept).to_string(), message);
    }
}
