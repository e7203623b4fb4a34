//! Where CPU-heavy work runs: the slow hashes (bcrypt, argon2id) of verifications,
//! new keys and re-hashes.
//!
//! A slow hash takes tens of milliseconds of one core. Run on an async runtime's worker
//! threads, a handful of them at once stalls every other request those threads serve.
//! A [`KeyManager`](crate::KeyManager) therefore hands each slow hash to an
//! [`Offload`] and awaits it; fast hashes (SHA-256, SHA-512, HMAC) always run in
//! place. The crate stays runtime-agnostic: the default, [`Inline`], runs the work on
//! the caller's thread as if there were no offload, and a service plugs in its own
//! (`keypal serve` uses a bounded pool of dedicated threads).
//!
//! An offload may refuse work when it is saturated ([`OffloadError::Busy`]): the
//! operation then fails with [`Error::Offload`](crate::Error::Offload), code
//! `HASHING_BUSY`, and nothing is changed.
//!
//! ```
//! use keypal::offload::{Completion, Job, Offload, OffloadError};
//! use keypal::{HashAlgorithm, KeyManager, ListQuery, MemoryStore, NewKey};
//!
//! /// Refuses every piece of work, as a saturated pool would.
//! struct Saturated;
//!
//! impl Offload for Saturated {
//!     fn run(&self, _job: Job) -> Completion {
//!         Box::pin(std::future::ready(Err(OffloadError::Busy)))
//!     }
//! }
//!
//! # pollster::block_on(async {
//! let keys = KeyManager::builder()
//!     .hash(HashAlgorithm::Bcrypt)
//!     .bcrypt_cost(4)
//!     .offload(Saturated)
//!     .store(MemoryStore::new())
//!     .build()?;
//! let error = keys.create(NewKey::new()).await.unwrap_err();
//! assert_eq!(error.code(), "HASHING_BUSY");
//! assert_eq!(keys.count(ListQuery::new()).await?, 0); // nothing stored
//! # Ok::<(), keypal::Error>(())
//! # }).unwrap();
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// One piece of CPU-heavy work: run it once, to completion.
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// Completes when a [`Job`] handed to [`Offload::run`] has run, or will not run.
pub type Completion = Pin<Box<dyn Future<Output = Result<(), OffloadError>> + Send + 'static>>;

/// A way to run CPU-heavy work away from the caller's task (a thread pool, an async
/// runtime's blocking threads), so that slow hashes do not hold up other work.
///
/// Implementations for a reference-counted offload (`Arc<T>`) forward to it, so one
/// offload can serve many managers.
pub trait Offload: Send + Sync + 'static {
    /// Runs `job` and completes once it has run.
    ///
    /// # Errors
    /// [`OffloadError::Busy`] when the work is refused for load (it is dropped without
    /// running); [`OffloadError::Failed`] when it could not run or did not finish
    /// (a worker panicked, the pool was shut down).
    fn run(&self, job: Job) -> Completion;
}

impl<T: Offload + ?Sized> Offload for Arc<T> {
    fn run(&self, job: Job) -> Completion {
        (**self).run(job)
    }
}

impl dyn Offload {
    /// Runs `work` through this offload and returns what it returned.
    ///
    /// # Errors
    /// As [`Offload::run`]; also [`OffloadError::Failed`] when the offload reported
    /// the work done without having run it.
    ///
    /// ```
    /// use keypal::offload::{Inline, Offload};
    /// let offload: &dyn Offload = &Inline;
    /// assert_eq!(pollster::block_on(offload.compute(|| 6 * 7)), Ok(42));
    /// ```
    pub async fn compute<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, OffloadError> {
        let (result, received) = std::sync::mpsc::sync_channel(1);
        self.run(Box::new(move || {
            // The receiver is gone only if the caller stopped waiting: nothing to report.
            let _ = result.send(work());
        }))
        .await?;
        received.try_recv().map_err(|_| OffloadError::Failed)
    }
}

/// Runs the work at once on the caller's thread: no offload at all. The default of a
/// [`KeyManager`](crate::KeyManager), right for programs that verify a key now and
/// then, or that do not run on an async runtime.
#[derive(Debug, Clone, Copy, Default)]
pub struct Inline;

impl Offload for Inline {
    fn run(&self, job: Job) -> Completion {
        job();
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Why offloaded work did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OffloadError {
    /// Every worker was busy for longer than the offload waits: try again shortly.
    #[error("every hashing worker is busy; try again shortly")]
    Busy,
    /// The work could not run or did not finish (a worker panicked, the pool stopped).
    #[error("the hashing work could not run")]
    Failed,
}

impl OffloadError {
    /// The stable code: `HASHING_BUSY` or `HASHING_FAILED`.
    ///
    /// ```
    /// assert_eq!(keypal::offload::OffloadError::Busy.code(), "HASHING_BUSY");
    /// ```
    pub fn code(self) -> &'static str {
        match self {
            OffloadError::Busy => "HASHING_BUSY",
            OffloadError::Failed => "HASHING_FAILED",
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Claims every job done without running it.
    struct Liar;

    impl Offload for Liar {
        fn run(&self, _job: Job) -> Completion {
            Box::pin(std::future::ready(Ok(())))
        }
    }

    #[test]
    fn compute_returns_the_work_s_result() {
        let offload: Arc<dyn Offload> = Arc::new(Inline);
        assert_eq!(pollster::block_on(offload.compute(|| "done")), Ok("done"));
    }

    #[test]
    fn work_that_did_not_run_is_a_failure_not_a_result() {
        let offload: &dyn Offload = &Liar;
        assert_eq!(pollster::block_on(offload.compute(|| 1)), Err(OffloadError::Failed));
    }
}
