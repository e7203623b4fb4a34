//! Services for keypal's own tests and benchmarks: a private PostgreSQL, a private Redis,
//! and a TCP [`Proxy`] that can be paused to make a server look hung.
//!
//! Tests never depend on a server someone started at a fixed port, and never touch a
//! developer's own databases. A test asks for the server of its test binary:
//!
//! - with `KEYPAL_TEST_POSTGRES_URL` / `KEYPAL_TEST_REDIS_URL` set, that server is used;
//! - otherwise a private one is started on first use, on a free loopback port: `initdb` and
//!   `postgres` in a temporary folder (as the `postgres` user when the tests run as root,
//!   since `initdb` refuses root), or `redis-server` with no persistence. It is shared by
//!   the tests of that binary and removed when the binary ends, however it ends: a
//!   watcher process stops the server and deletes its folder when the test process's
//!   end of a pipe closes, which happens even when the test process is killed;
//! - when the programs are not installed, the tests that need them fail under `CI=true`
//!   and otherwise are skipped, with one line on stderr naming the Debian package to
//!   install (`postgresql`, `redis-server`).
//!
//! ```no_run
//! use keypal_testing::PostgresServer;
//!
//! // In a test: `None` means the test is skipped (the reason was printed).
//! let Some(server) = PostgresServer::shared() else { return };
//! let url = server.url(); // postgres://postgres@127.0.0.1:<port>/postgres
//! let schema = PostgresServer::fresh_schema(); // a schema no other test uses
//! # let _ = (url, schema);
//! ```
//!
//! PostgreSQL's programs are looked for in `KEYPAL_TEST_POSTGRES_BIN` when it is set,
//! else on `PATH`, else in Debian's `/usr/lib/postgresql/<version>/bin` (the newest).
//! `redis-server` is looked for on `PATH`.

mod postgres;
mod process;
mod proxy;
mod redis;

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub use postgres::PostgresServer;
pub use proxy::Proxy;
pub use redis::RedisServer;

/// Why a test service could not be provided.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// The server's programs are not installed, or cannot run here. Tests that need the
    /// service are skipped, or fail under `CI=true`.
    #[error(
        "{service} is not available for the tests: {reason}. Install the Debian package `{package}` \
         (or set {url_env} to a server of your own)"
    )]
    Unavailable {
        /// The service, as people name it (`PostgreSQL`, `Redis`).
        service: &'static str,
        /// The Debian package that brings the programs.
        package: &'static str,
        /// The variable that names an existing server instead.
        url_env: &'static str,
        /// What is missing.
        reason: String,
    },
    /// The programs are there but the private server did not start. Tests fail.
    #[error("the private {service} server for the tests did not start: {detail}")]
    DidNotStart {
        /// The service, as people name it.
        service: &'static str,
        /// What went wrong, with the server's own output when there is some.
        detail: String,
    },
}

/// A kind of service the harness provides.
pub(crate) struct Service {
    pub name: &'static str,
    pub package: &'static str,
    pub url_env: &'static str,
    /// Set once the skip line was printed, so a test binary prints it once.
    said: AtomicBool,
}

impl Service {
    pub(crate) const fn new(name: &'static str, package: &'static str, url_env: &'static str) -> Service {
        Service { name, package, url_env, said: AtomicBool::new(false) }
    }

    pub(crate) fn unavailable(&self, reason: impl Into<String>) -> HarnessError {
        HarnessError::Unavailable {
            service: self.name,
            package: self.package,
            url_env: self.url_env,
            reason: reason.into(),
        }
    }

    pub(crate) fn did_not_start(&self, detail: impl Into<String>) -> HarnessError {
        HarnessError::DidNotStart { service: self.name, detail: detail.into() }
    }

    /// The URL of an existing server named by this service's variable, if set.
    pub(crate) fn url_from_env(&self) -> Option<String> {
        std::env::var(self.url_env).ok().filter(|url| !url.is_empty())
    }

    /// What a test gets: the server, or `None` after the skip line, or a panic (the
    /// server did not start, or it is missing under `CI=true`).
    #[allow(clippy::panic, reason = "failing the calling test is this function's job")]
    pub(crate) fn provide<'a, T>(&self, outcome: &'a Result<T, HarnessError>) -> Option<&'a T> {
        match outcome {
            Ok(server) => Some(server),
            Err(HarnessError::Unavailable { reason, .. }) if !in_ci() => {
                if !self.said.swap(true, Ordering::Relaxed) {
                    // Straight to the process's stderr, which `cargo test` does not capture.
                    let _ = writeln!(
                        std::io::stderr(),
                        "skipped: the tests that need {} ({reason}): install the Debian package `{}`, or set {}",
                        self.name,
                        self.package,
                        self.url_env
                    );
                }
                None
            }
            Err(error @ HarnessError::Unavailable { .. }) => {
                panic!("{error}. Under CI=true the tests that need {} fail instead of skipping.", self.name)
            }
            Err(error) => panic!("{error}"),
        }
    }

    /// [`Service::provide`] for the server a test binary shares, started on first use.
    pub(crate) fn shared<T>(
        &self,
        cell: &'static OnceLock<Result<T, HarnessError>>,
        start: impl FnOnce() -> Result<T, HarnessError>,
    ) -> Option<&'static T> {
        self.provide(cell.get_or_init(start))
    }

    /// The shared server, for a program that cannot do without it (a benchmark): panics
    /// when it is not available, in or out of CI.
    #[allow(clippy::panic, reason = "a benchmark without its server cannot run")]
    pub(crate) fn required<T>(
        &self,
        cell: &'static OnceLock<Result<T, HarnessError>>,
        start: impl FnOnce() -> Result<T, HarnessError>,
    ) -> &'static T {
        match cell.get_or_init(start) {
            Ok(server) => server,
            Err(error) => panic!("{error}"),
        }
    }
}

/// Whether the tests run in CI (`CI=true`), where a missing service fails them.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|ci| ci == "true" || ci == "1")
}

/// `<unix seconds>_<12 hex digits>`: unique across tests and runs, and dated so that a
/// cleanup can tell leftovers of old runs on a long-lived server.
pub(crate) fn fresh_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    hasher.write_u128(now.as_nanos());
    format!("{}_{:012x}", now.as_secs(), hasher.finish() & 0xffff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_names_differ_and_start_with_the_time() {
        let (a, b) = (fresh_name(), fresh_name());
        assert_ne!(a, b);
        let (secs, random) = a.split_once('_').unwrap();
        assert!(secs.parse::<u64>().unwrap() > 1_700_000_000);
        assert_eq!(random.len(), 12);
        assert!(random.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
