//! Where the native futures run. A call first polls its future once on the calling
//! (JavaScript) thread: when nothing in it waits for I/O (a `MemoryStore`, a cached
//! verification) it is done there and then, with no thread hop. Otherwise the future
//! goes on on a small tokio runtime, and a promise is settled from it.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use keypal::offload::{Completion, Job, Offload, OffloadError};
use napi::{Env, JsObject, JsUnknown};
use tokio::runtime::Runtime;

use crate::failure::Failure;

/// A native operation in progress.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Failure>> + Send + 'static>>;

/// Turns an operation's result into a JavaScript value (on the JavaScript thread).
pub type ToJs<T> = fn(&Env, T) -> napi::Result<JsUnknown>;

/// The runtime of the stores' I/O (sqlx, redis) and of the slow hashes.
pub fn runtime() -> Result<&'static Runtime, Failure> {
    static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .thread_name("keypal")
                .max_blocking_threads(16)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Failure::Runtime(e.clone()))
}

/// Runs slow hashes (bcrypt, argon2id) on the runtime's blocking threads, never on the
/// JavaScript thread.
pub struct Blocking;

impl Offload for Blocking {
    fn run(&self, job: Job) -> Completion {
        match runtime() {
            Ok(runtime) => {
                let done = runtime.spawn_blocking(job);
                Box::pin(async move { done.await.map_err(|_| OffloadError::Failed) })
            }
            Err(_) => Box::pin(std::future::ready(Err(OffloadError::Failed))),
        }
    }
}

/// An operation polled once: done, or going on in the background behind a promise.
pub enum Polled<T> {
    Ready(T),
    Pending(JsObject),
}

/// Polls `operation` once here; if it has to wait, drives it to its end on the runtime
/// and settles the returned promise from there (with `to_js`). A failure found at once is
/// an `Err`.
pub fn start<T: Send + 'static>(env: &Env, mut operation: BoxFuture<T>, to_js: ToJs<T>) -> napi::Result<Polled<T>> {
    let runtime = runtime()?;
    let polled = {
        let _context = runtime.enter();
        operation.as_mut().poll(&mut Context::from_waker(Waker::noop()))
    };
    match polled {
        Poll::Ready(Ok(value)) => Ok(Polled::Ready(value)),
        Poll::Ready(Err(failure)) => Err(failure.into_napi()),
        Poll::Pending => {
            let (deferred, promise) = env.create_deferred()?;
            runtime.spawn(async move {
                match operation.await {
                    Ok(value) => deferred.resolve(move |env| to_js(&env, value)),
                    Err(failure) => deferred.reject(failure.into_napi()),
                }
            });
            Ok(Polled::Pending(promise))
        }
    }
}

/// The value of a finished operation, or a promise of it (see [`start`]); `index.js`
/// turns either, and a thrown failure, into a settled promise.
pub fn settle<T: Send + 'static>(env: &Env, operation: BoxFuture<T>, to_js: ToJs<T>) -> napi::Result<JsUnknown> {
    match start(env, operation, to_js)? {
        Polled::Ready(value) => to_js(env, value),
        Polled::Pending(promise) => Ok(promise.into_unknown()),
    }
}

/// Wakes the thread that waits in [`block_on`].
struct Unpark(std::thread::Thread);

impl std::task::Wake for Unpark {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.unpark();
    }
}

/// Drives a future to its end on this thread (for one that is not expected to wait at
/// all; if it does, the thread sleeps until it is woken).
pub fn block_on<F: Future>(mut future: Pin<&mut F>) -> F::Output {
    if let Poll::Ready(value) = future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        return value;
    }
    let waker = Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(value) = future.as_mut().poll(&mut context) {
            return value;
        }
        std::thread::park();
    }
}
