//! The threads slow hashes run on: bcrypt and argon2id checks and new hashes of every
//! application, and the admin password's argon2id check.
//!
//! A slow hash takes tens of milliseconds of one core. On the async runtime's worker
//! threads, eight clients sending unknown keys to a bcrypt application (each costs a
//! dummy bcrypt, by design) would hold every worker and stall every other request,
//! `/healthz` included. Here they run on dedicated threads at a lower scheduling
//! priority (Linux: nice +10), at most one per thread at a time; a slow hash that
//! finds every thread busy waits up to `hash_wait` for one, and is then refused with
//! 503 `HASHING_BUSY` (`Retry-After: 1`). Fast work never waits for them.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keypal::offload::{Completion, Job, Offload, OffloadError};
use tokio::sync::{Semaphore, oneshot};

/// How much lower than the rest of the server the hashing threads run (Linux nice).
const NICENESS: i32 = 10;

/// A pool of threads for slow hashes, with a bound on the work handed to it.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use keypal::Offload;
/// use keypal_server::HashPool;
///
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let pool = HashPool::start(2, Duration::from_secs(1))?;
/// let offload: Arc<dyn Offload> = pool.clone();
/// assert_eq!(offload.compute(|| 6 * 7).await, Ok(42));
/// assert_eq!(pool.workers(), 2);
/// # Ok::<(), std::io::Error>(())
/// # })?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct HashPool {
    jobs: Sender<Job>,
    /// One per thread: the work handed to the threads, running or about to.
    permits: Arc<Semaphore>,
    wait: Duration,
    workers: usize,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    /// Slow hashes waiting for a thread now.
    waiting: AtomicUsize,
    /// Slow hashes refused with `HASHING_BUSY` so far.
    refused: AtomicU64,
}

impl HashPool {
    /// Starts `workers` threads (at least one). A slow hash waits up to `wait` for one
    /// of them before it is refused.
    ///
    /// # Errors
    /// The operating system refused to start a thread.
    pub fn start(workers: usize, wait: Duration) -> std::io::Result<Arc<Self>> {
        let workers = workers.max(1);
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..workers {
            let queue = queue.clone();
            std::thread::Builder::new().name(format!("keypal-hash-{n}")).spawn(move || work(&queue))?;
        }
        Ok(Arc::new(Self { jobs, permits: Arc::new(Semaphore::new(workers)), wait, workers, counts: Arc::default() }))
    }

    /// How many threads run slow hashes.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Slow hashes refused with `HASHING_BUSY` since the start.
    pub fn refused(&self) -> u64 {
        self.counts.refused.load(Ordering::Relaxed)
    }

    /// Slow hashes running on a thread now (or handed to one).
    pub fn running(&self) -> usize {
        self.workers.saturating_sub(self.permits.available_permits())
    }

    /// Slow hashes waiting for a free thread now.
    pub fn waiting(&self) -> usize {
        self.counts.waiting.load(Ordering::Relaxed)
    }

    /// The pool's Prometheus metrics.
    pub fn render_metrics(&self) -> String {
        format!(
            "# HELP keypal_hashing_workers Threads that run slow hashes (bcrypt, argon2id).\n\
             # TYPE keypal_hashing_workers gauge\n\
             keypal_hashing_workers {}\n\
             # HELP keypal_hashing_running Slow hashes running on a hashing thread.\n\
             # TYPE keypal_hashing_running gauge\n\
             keypal_hashing_running {}\n\
             # HELP keypal_hashing_waiting Slow hashes waiting for a free hashing thread.\n\
             # TYPE keypal_hashing_waiting gauge\n\
             keypal_hashing_waiting {}\n\
             # HELP keypal_hashing_busy_total Slow hashes refused with HASHING_BUSY (no thread free within --hash-wait).\n\
             # TYPE keypal_hashing_busy_total counter\n\
             keypal_hashing_busy_total {}\n",
            self.workers,
            self.running(),
            self.waiting(),
            self.refused(),
        )
    }
}

impl Offload for HashPool {
    fn run(&self, job: Job) -> Completion {
        let permits = self.permits.clone();
        let jobs = self.jobs.clone();
        let counts = self.counts.clone();
        let wait = self.wait;
        Box::pin(async move {
            let permit = match permits.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    counts.waiting.fetch_add(1, Ordering::Relaxed);
                    let acquired = tokio::time::timeout(wait, permits.acquire_owned()).await;
                    counts.waiting.fetch_sub(1, Ordering::Relaxed);
                    match acquired {
                        Ok(Ok(permit)) => permit,
                        Ok(Err(_closed)) => return Err(OffloadError::Failed),
                        Err(_elapsed) => {
                            counts.refused.fetch_add(1, Ordering::Relaxed);
                            return Err(OffloadError::Busy);
                        }
                    }
                }
            };
            let (done, finished) = oneshot::channel();
            let job: Job = Box::new(move || {
                let ran = std::panic::catch_unwind(AssertUnwindSafe(job)).is_ok();
                // The thread is free again before the waiter hears of it.
                drop(permit);
                let _ = done.send(ran);
            });
            jobs.send(job).map_err(|_| OffloadError::Failed)?;
            match finished.await {
                Ok(true) => Ok(()),
                // The job panicked, or its thread is gone.
                _ => Err(OffloadError::Failed),
            }
        })
    }
}

/// A hashing thread: lowers its priority, then runs jobs until the pool is dropped.
fn work(queue: &Mutex<Receiver<Job>>) {
    lower_priority();
    loop {
        let next = queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).recv();
        match next {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

/// Makes the calling thread yield to the runtime's threads when the cores are all
/// busy (on Linux the nice value is per thread). Best effort.
fn lower_priority() {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(e) = rustix::process::nice(NICENESS) {
        tracing::debug!(error = %e, "could not lower the priority of a hashing thread");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A job that runs until `release` is sent (or dropped).
    fn held(
        offload: &Arc<dyn Offload>,
    ) -> (std::sync::mpsc::Sender<()>, tokio::task::JoinHandle<Result<(), OffloadError>>) {
        let (release, released) = std::sync::mpsc::channel::<()>();
        let offload = offload.clone();
        let handle = tokio::spawn(async move {
            offload
                .compute(move || {
                    let _ = released.recv();
                })
                .await
        });
        (release, handle)
    }

    async fn until(condition: impl Fn() -> bool) {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test]
    async fn saturated_it_waits_then_refuses_and_counts_the_refusal() {
        let pool = HashPool::start(1, Duration::from_millis(50)).unwrap();
        let offload: Arc<dyn Offload> = pool.clone();
        let (release, running) = held(&offload);
        until(|| pool.running() == 1).await;

        assert_eq!(offload.compute(|| 1).await, Err(OffloadError::Busy));
        assert_eq!(pool.refused(), 1);
        assert!(pool.render_metrics().contains("keypal_hashing_busy_total 1\n"));

        // Freed within the wait: the next one waits for it and runs.
        let waiter = tokio::spawn({
            let offload = offload.clone();
            async move { offload.compute(|| 2).await }
        });
        until(|| pool.waiting() == 1).await;
        release.send(()).unwrap();
        assert_eq!(running.await.unwrap(), Ok(()));
        assert_eq!(waiter.await.unwrap(), Ok(2));
        assert_eq!(pool.refused(), 1);
        until(|| pool.running() == 0).await;
    }

    #[tokio::test]
    async fn a_panicking_job_fails_alone_and_the_thread_goes_on() {
        let pool = HashPool::start(1, Duration::from_secs(1)).unwrap();
        let offload: Arc<dyn Offload> = pool.clone();
        #[allow(clippy::panic)]
        let failed = offload.compute(|| panic!("a hasher bug")).await;
        assert_eq!(failed, Err::<(), _>(OffloadError::Failed));
        assert_eq!(offload.compute(|| 3).await, Ok(3));
    }

    #[tokio::test]
    async fn jobs_run_on_the_pool_s_threads_in_parallel() {
        let pool = HashPool::start(2, Duration::from_secs(5)).unwrap();
        let offload: Arc<dyn Offload> = pool.clone();
        let name = offload.compute(|| std::thread::current().name().map(str::to_owned)).await.unwrap();
        assert!(name.is_some_and(|n| n.starts_with("keypal-hash-")));
        // Two jobs that each wait for the other can only finish on two threads at once.
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let both = (0..2).map(|_| {
            let barrier = barrier.clone();
            let offload = offload.clone();
            tokio::spawn(async move { offload.compute(move || barrier.wait().is_leader()).await })
        });
        let mut leaders = 0;
        for handle in both.collect::<Vec<_>>() {
            leaders += usize::from(handle.await.unwrap().unwrap());
        }
        assert_eq!(leaders, 1);
    }
}
