//! A private PostgreSQL: `initdb` and `postgres` in a temporary folder.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::process::{Readiness, RunAs, Watched, find_in, free_port, path_dirs, temp_dir};
use crate::{HarnessError, Service};

static POSTGRES: Service = Service::new("PostgreSQL", "postgresql", "KEYPAL_TEST_POSTGRES_URL");

/// Where Debian installs each major version's programs (`<version>/bin`).
const DEBIAN_LIB: &str = "/usr/lib/postgresql";
/// The variable naming the folder of `initdb` and `postgres`, instead of the search.
const BIN_ENV: &str = "KEYPAL_TEST_POSTGRES_BIN";
/// How long a server may take to start on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(60);

/// The PostgreSQL server of a test binary: `KEYPAL_TEST_POSTGRES_URL` when set, else a
/// private server started on first use and removed when the test binary ends.
///
/// The private server trusts every local connection (any role, no password) and is
/// otherwise configured as PostgreSQL ships (durable commits included, so that
/// benchmarks on it measure what a deployment gets).
///
/// ```no_run
/// use keypal_testing::PostgresServer;
///
/// let Some(server) = PostgresServer::shared() else { return }; // skipped
/// assert!(server.url().starts_with("postgres://"));
/// ```
#[derive(Debug)]
pub struct PostgresServer {
    url: String,
    /// The private server's process; `None` for a server named by the variable.
    _process: Option<Watched>,
}

impl PostgresServer {
    /// The server this test binary shares, or `None` when the test is to be skipped
    /// (PostgreSQL is not installed; one line on stderr says so).
    ///
    /// # Panics
    ///
    /// When the private server does not start, or PostgreSQL is not installed and
    /// `CI=true`: the calling test fails.
    pub fn shared() -> Option<&'static PostgresServer> {
        POSTGRES.shared(&SHARED, shared_server)
    }

    /// The server this binary shares, for a benchmark: as [`PostgresServer::shared`], but
    /// a missing PostgreSQL is an error in or out of CI.
    ///
    /// # Panics
    ///
    /// When PostgreSQL is not installed or the private server does not start.
    pub fn required() -> &'static PostgresServer {
        POSTGRES.required(&SHARED, shared_server)
    }

    /// The URL to connect to, as the superuser `postgres`, database `postgres`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A schema name no other test uses: `kpt_<unix seconds>_<12 hex digits>`.
    ///
    /// ```
    /// let schema = keypal_testing::PostgresServer::fresh_schema();
    /// assert!(schema.starts_with("kpt_"));
    /// assert_ne!(schema, keypal_testing::PostgresServer::fresh_schema());
    /// ```
    pub fn fresh_schema() -> String {
        format!("kpt_{}", crate::fresh_name())
    }
}

/// The folder holding `initdb` and `postgres`, or what was searched.
fn bin_dir() -> Result<PathBuf, String> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(dir) = std::env::var_os(BIN_ENV) {
        let dir = PathBuf::from(dir);
        return if has_both(&dir) {
            Ok(dir)
        } else {
            Err(format!("no `initdb` and `postgres` in {BIN_ENV}={}", dir.display()))
        };
    }
    if let Some(initdb) = find_in(path_dirs(), "initdb") {
        if let Some(dir) = initdb.parent().filter(|dir| has_both(dir)) {
            return Ok(dir.to_path_buf());
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(DEBIAN_LIB)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| Some((entry.file_name().to_str()?.parse().ok()?, entry.path().join("bin"))))
        .filter(|(_, bin)| has_both(bin))
        .collect();
    versions.sort_by_key(|(version, _)| *version);
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| format!("no `initdb` and `postgres` on PATH nor in {DEBIAN_LIB}/<version>/bin"))
}

/// Who runs the server: `initdb` refuses root, so as root, the `postgres` user.
fn run_as() -> Result<Option<RunAs>, String> {
    if !rustix::process::geteuid().is_root() {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&"postgres"))
        .and_then(|fields| Some(RunAs { uid: fields.get(2)?.parse().ok()?, gid: fields.get(3)?.parse().ok()? }))
        .map(Some)
        .ok_or_else(|| "the tests run as root, which initdb refuses, and there is no `postgres` user".to_owned())
}

static SHARED: OnceLock<Result<PostgresServer, HarnessError>> = OnceLock::new();

fn shared_server() -> Result<PostgresServer, HarnessError> {
    match POSTGRES.url_from_env() {
        Some(url) => Ok(PostgresServer { url, _process: None }),
        None => start_private(),
    }
}

fn start_private() -> Result<PostgresServer, HarnessError> {
    let bin = bin_dir().map_err(|reason| POSTGRES.unavailable(reason))?;
    let run_as = run_as().map_err(|reason| POSTGRES.unavailable(reason))?;
    let mut last = String::new();
    // A port found free may be taken before the server binds it: then try another.
    for _ in 0..3 {
        let (dir, port) = prepare(&bin, run_as)?;
        let data = dir.join("data");
        let args: Vec<OsString> = [
            "-D".into(),
            data.clone().into_os_string(),
            "-p".into(),
            port.to_string().into(),
            "-k".into(),
            dir.clone().into_os_string(),
            "-c".into(),
            "listen_addresses=127.0.0.1".into(),
            "-c".into(),
            "max_connections=300".into(),
        ]
        .into();
        let mut process = Watched::spawn(&dir, "INT", &bin.join("postgres"), &args, run_as)
            .map_err(|e| POSTGRES.did_not_start(format!("starting {}: {e}", bin.join("postgres").display())))?;
        match process.wait_ready(PATIENCE, || accepts_connections(&data)) {
            Readiness::Ready => {
                let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
                return Ok(PostgresServer { url, _process: Some(process) });
            }
            Readiness::Exited(log) => last = format!("postgres exited: {log}"),
            Readiness::TimedOut => {
                return Err(POSTGRES.did_not_start(format!("not ready after {} s", PATIENCE.as_secs())));
            }
        }
    }
    Err(POSTGRES.did_not_start(last))
}

/// A new folder (owned by `run_as`) with a fresh cluster in `data`, and a port for it.
fn prepare(bin: &Path, run_as: Option<RunAs>) -> Result<(PathBuf, u16), HarnessError> {
    let failed = |what: &str, e: std::io::Error| POSTGRES.did_not_start(format!("{what}: {e}"));
    let dir = temp_dir("postgres").map_err(|e| failed("creating a temporary folder", e))?;
    if let Some(RunAs { uid, gid }) = run_as {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(|e| failed("handing it to `postgres`", e))?;
    }
    let mut initdb = Command::new(bin.join("initdb"));
    initdb
        .arg("-D")
        .arg(dir.join("data"))
        .args(["--username=postgres", "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync"])
        .current_dir(&dir)
        .stdin(Stdio::null());
    RunAs::apply(run_as, &mut initdb);
    match initdb.output() {
        Ok(output) if output.status.success() => {}
        Ok(output) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(POSTGRES.did_not_start(format!(
                "initdb failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(failed("running initdb", e));
        }
    }
    let port = free_port().map_err(|e| failed("finding a free port", e))?;
    Ok((dir, port))
}

/// Whether the server in `data` says it accepts connections: the eighth line of
/// `postmaster.pid` reads `ready` (what `pg_ctl start --wait` looks at).
fn accepts_connections(data: &Path) -> bool {
    std::fs::read_to_string(data.join("postmaster.pid"))
        .is_ok_and(|pid_file| pid_file.lines().nth(7).is_some_and(|status| status.trim() == "ready"))
}
