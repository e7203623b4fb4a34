//! A private Redis: `redis-server` with no persistence, in a temporary folder.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use crate::process::{Readiness, Watched, find_in, free_port, path_dirs, temp_dir};
use crate::{HarnessError, Service};

static REDIS: Service = Service::new("Redis", "redis-server", "KEYPAL_TEST_REDIS_URL");

/// How long a server may take to start on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(30);

/// A Redis server for tests: the one a test binary shares ([`RedisServer::shared`]:
/// `KEYPAL_TEST_REDIS_URL` when set, else a private server started on first use), or
/// one of a test's own that it may stop and restart ([`RedisServer::start`]). Private
/// servers keep nothing on disk and are removed when their test binary ends.
///
/// ```no_run
/// use keypal_testing::RedisServer;
///
/// let Some(server) = RedisServer::shared() else { return }; // skipped
/// let prefix = RedisServer::fresh_prefix(); // keys no other test uses
/// # let _ = (server.url(), prefix);
/// ```
#[derive(Debug)]
pub struct RedisServer {
    url: String,
    /// The private server's program, port and process (`None` for a server named by the
    /// variable).
    private: Option<Private>,
}

#[derive(Debug)]
struct Private {
    program: PathBuf,
    port: u16,
    /// `None` while stopped.
    process: Option<Watched>,
}

impl RedisServer {
    /// The server this test binary shares, or `None` when the test is to be skipped
    /// (`redis-server` is not installed; one line on stderr says so).
    ///
    /// # Panics
    ///
    /// When the private server does not start, or `redis-server` is not installed and
    /// `CI=true`: the calling test fails.
    pub fn shared() -> Option<&'static RedisServer> {
        REDIS.shared(&SHARED, shared_server)
    }

    /// The server this binary shares, for a benchmark: as [`RedisServer::shared`], but a
    /// missing `redis-server` is an error in or out of CI.
    ///
    /// # Panics
    ///
    /// When `redis-server` is not installed or the private server does not start.
    pub fn required() -> &'static RedisServer {
        REDIS.required(&SHARED, shared_server)
    }

    /// A private server of the caller's own, always started here (whatever
    /// `KEYPAL_TEST_REDIS_URL` says), for a test that stops or restarts it. `None` when
    /// the test is to be skipped, as with [`RedisServer::shared`].
    ///
    /// # Panics
    ///
    /// As [`RedisServer::shared`].
    ///
    /// ```no_run
    /// let Some(mut redis) = keypal_testing::RedisServer::start() else { return };
    /// redis.stop(); // connections to redis.url() are now refused
    /// redis.restart(); // same URL, empty
    /// ```
    pub fn start() -> Option<RedisServer> {
        let outcome = start_private();
        REDIS.provide(&outcome)?;
        outcome.ok()
    }

    /// The URL to connect to (`redis://127.0.0.1:<port>` for a private server).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops a private server (a no-op for a server named by the variable, or one
    /// already stopped). Its data is gone.
    pub fn stop(&mut self) {
        if let Some(private) = &mut self.private {
            private.process = None;
        }
    }

    /// Starts a stopped private server again, empty, on the same port.
    ///
    /// # Panics
    ///
    /// When it does not start (the port was taken meanwhile, for one), or this is not a
    /// private server: the calling test fails.
    #[allow(clippy::panic, reason = "failing the calling test is this function's job")]
    pub fn restart(&mut self) {
        let Some(private) = &mut self.private else { panic!("only a private Redis server can be restarted") };
        private.process = None;
        match run(&private.program, private.port) {
            Ok(process) => private.process = Some(process),
            Err(e) => panic!("{e}"),
        }
    }

    /// A key prefix no other test uses: `kpt:<unix seconds>_<12 hex digits>:`.
    ///
    /// ```
    /// let prefix = keypal_testing::RedisServer::fresh_prefix();
    /// assert!(prefix.starts_with("kpt:") && prefix.ends_with(':'));
    /// ```
    pub fn fresh_prefix() -> String {
        format!("kpt:{}:", crate::fresh_name())
    }
}

static SHARED: OnceLock<Result<RedisServer, HarnessError>> = OnceLock::new();

fn shared_server() -> Result<RedisServer, HarnessError> {
    match REDIS.url_from_env() {
        Some(url) => Ok(RedisServer { url, private: None }),
        None => start_private(),
    }
}

fn start_private() -> Result<RedisServer, HarnessError> {
    let program = find_in(path_dirs(), "redis-server").ok_or_else(|| REDIS.unavailable("no `redis-server` on PATH"))?;
    let mut last = None;
    // A port found free may be taken before the server binds it: then try another.
    for _ in 0..3 {
        let port = free_port().map_err(|e| REDIS.did_not_start(format!("finding a free port: {e}")))?;
        match run(&program, port) {
            Ok(process) => {
                let url = format!("redis://127.0.0.1:{port}");
                return Ok(RedisServer { url, private: Some(Private { program, port, process: Some(process) }) });
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| REDIS.did_not_start("no attempt")))
}

/// Runs `redis-server` on `port` in a new temporary folder, and waits until it answers.
fn run(program: &std::path::Path, port: u16) -> Result<Watched, HarnessError> {
    let dir = temp_dir("redis").map_err(|e| REDIS.did_not_start(format!("creating a temporary folder: {e}")))?;
    let args: Vec<OsString> = [
        "--port".into(),
        port.to_string().into(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--save".into(),
        "".into(),
        "--appendonly".into(),
        "no".into(),
        "--daemonize".into(),
        "no".into(),
        "--dir".into(),
        dir.clone().into_os_string(),
    ]
    .into();
    let mut process = Watched::spawn(&dir, "TERM", program, &args, None)
        .map_err(|e| REDIS.did_not_start(format!("starting {}: {e}", program.display())))?;
    match process.wait_ready(PATIENCE, || answers_ping(port)) {
        Readiness::Ready => Ok(process),
        Readiness::Exited(log) => Err(REDIS.did_not_start(format!("redis-server exited: {log}"))),
        Readiness::TimedOut => Err(REDIS.did_not_start(format!("not ready after {} s", PATIENCE.as_secs()))),
    }
}

/// Whether a Redis on `port` answers `PING` with `PONG`.
fn answers_ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut answer = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
}
