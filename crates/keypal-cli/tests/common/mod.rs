//! What the `keypal` binary's tests share: running it as a user runs it (arguments,
//! stdin and environment in; exit code, stdout and stderr out), scratch files, and
//! talking to a `keypal serve` it started.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// One run of the binary: a clean environment (no `KEYPAL_*` from the caller), the
/// given arguments, variables and stdin.
pub struct Run {
    command: Command,
    stdin: Option<String>,
}

/// What a run gave.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    /// Everything the run printed.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "unexpected exit code; {self:#?}");
        self
    }

    /// A clean error: exit 2, nothing on stdout, `error: ...` on stderr.
    #[track_caller]
    pub fn assert_error(&self, needle: &str) -> &Self {
        assert_eq!(self.code, 2, "expected exit code 2; {self:#?}");
        assert!(self.stderr.starts_with("error: "), "stderr should start with `error: `; {self:#?}");
        assert!(self.stderr.contains(needle), "stderr should mention {needle:?}; {self:#?}");
        assert!(self.stdout.is_empty(), "nothing on stdout on error; {self:#?}");
        self
    }
}

pub fn keypal(args: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keypal"));
    command.env_clear().args(args);
    Run { command, stdin: None }
}

impl Run {
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.command.env(name, value);
        self
    }

    pub fn stdin(mut self, text: &str) -> Self {
        self.stdin = Some(text.to_owned());
        self
    }

    pub fn run(mut self) -> Output {
        self.command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = self.command.spawn().expect("the keypal binary runs");
        let mut stdin = child.stdin.take().expect("stdin is piped");
        if let Some(text) = &self.stdin {
            stdin.write_all(text.as_bytes()).expect("writing stdin");
        }
        drop(stdin);
        let out = child.wait_with_output().expect("the keypal binary ends");
        Output {
            code: out.status.code().expect("exited, not killed by a signal"),
            stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
        }
    }
}

/// A new file holding `contents` in this test target's scratch directory.
pub fn temp_file(name: &str, contents: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}-{name}", NEXT.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&path, contents).unwrap();
    path
}

pub fn path_str(path: &std::path::Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

/// A new empty directory.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = temp_file(name, "");
    std::fs::remove_file(&dir).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `keypal serve` on `database` with `master_key`, running until killed; and its address.
pub fn serve_in_background(database: &str, master_key: &str) -> (std::process::Child, String) {
    serve_with(database, master_key, &[])
}

/// `keypal serve` as [`serve_in_background`], with more `KEYPAL_*` variables.
pub fn serve_with(database: &str, master_key: &str, env: &[(&str, &str)]) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};

    let mut child = Command::new(env!("CARGO_BIN_EXE_keypal"))
        .env_clear()
        .env("KEYPAL_MASTER_KEY", master_key)
        .envs(env.iter().copied())
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", database, "--log", "off"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the keypal binary runs");
    let stdout = child.stdout.take().expect("stdout is piped");
    let addr = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| line.strip_prefix("keypal: listening on http://").map(str::to_owned));
    let Some(addr) = addr else {
        child.kill().expect("the child can be stopped");
        panic!("keypal serve did not start on {database}");
    };
    (child, addr)
}

/// The status of `GET path` at `addr` with `Authorization: Bearer token`.
pub fn status_with_token(addr: &str, path: &str, token: &str) -> u16 {
    use std::io::Read;

    let mut stream = std::net::TcpStream::connect(addr).expect("the server answers");
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("the request is sent");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("the answer is read");
    response.split(' ').nth(1).and_then(|status| status.parse().ok()).unwrap_or_else(|| panic!("{response}"))
}

/// The answer of `POST /v1/verify` at `addr` for `key` and `client_secret`: its `code`.
pub fn verify_code(addr: &str, service_key: &str, client_secret: &str, key: &str) -> String {
    use std::io::Read;

    let body = serde_json::json!({ "key": key, "client_secret": client_secret }).to_string();
    let mut stream = std::net::TcpStream::connect(addr).expect("the server answers");
    let request = format!(
        "POST /v1/verify HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {service_key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("the request is sent");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("the answer is read");
    let json = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let answer: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|_| panic!("{response}"));
    answer["code"].as_str().unwrap_or_else(|| panic!("{response}")).to_owned()
}

/// The status and body of `POST path` at `addr` with `Authorization: Bearer token`.
pub fn post_with_token(addr: &str, path: &str, token: &str) -> (u16, serde_json::Value) {
    use std::io::Read;

    let mut stream = std::net::TcpStream::connect(addr).expect("the server answers");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).expect("the request is sent");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("the answer is read");
    let status =
        response.split(' ').nth(1).and_then(|status| status.parse().ok()).unwrap_or_else(|| panic!("{response}"));
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, serde_json::from_str(body).unwrap_or(serde_json::Value::Null))
}

/// A deployment the operator's commands run on: a database (a new SQLite file, or a new
/// schema of the tests' PostgreSQL) and its master key.
pub struct Deployment {
    pub database: String,
    pub schema: Option<String>,
    pub master_key: String,
}

/// A `keypal serve` on a [`Deployment`], stopped when dropped.
pub struct Server {
    child: std::process::Child,
    pub addr: String,
    pub service_key: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// The `code` of `POST /v1/verify` for `key` of the application of `client_secret`.
    pub fn verify(&self, client_secret: &str, key: &str) -> String {
        verify_code(&self.addr, &self.service_key, client_secret, key)
    }
}

impl Deployment {
    /// A new SQLite deployment in a scratch directory.
    pub fn sqlite(name: &str) -> Self {
        let dir = scratch_dir(name);
        let database = format!("sqlite://{}", path_str(&dir.join("keypal.db")));
        Deployment { database, schema: None, master_key: "5a".repeat(32) }
    }

    /// A new schema of the tests' PostgreSQL; `None` when there is none (the test is skipped,
    /// or fails under CI).
    pub fn postgres() -> Option<Self> {
        let postgres = keypal_testing::PostgresServer::shared()?;
        let schema = keypal_testing::PostgresServer::fresh_schema();
        Some(Deployment { database: postgres.url().to_owned(), schema: Some(schema), master_key: "5a".repeat(32) })
    }

    /// `keypal ARGS` on this deployment.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.command(args).run()
    }

    /// `keypal ARGS` on this deployment, with `stdin`.
    pub fn cli_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        self.command(args).stdin(stdin).run()
    }

    fn command(&self, args: &[&str]) -> Run {
        let mut run =
            keypal(args).env("KEYPAL_MASTER_KEY", &self.master_key).env("KEYPAL_DATABASE_URL", &self.database);
        if let Some(schema) = &self.schema {
            run = run.env("KEYPAL_DATABASE_SCHEMA", schema);
        }
        run
    }

    /// Creates an application with `args` (`--name`, `--label`, ...): its client secret.
    pub fn create_app(&self, args: &[&str]) -> String {
        let mut all = vec!["apps", "create"];
        all.extend_from_slice(args);
        let out = self.cli(&all);
        out.assert_code(0);
        out.stdout.trim_end().to_owned()
    }

    /// `keypal serve` on this deployment.
    pub fn serve(&self) -> Server {
        self.serve_with(&[])
    }

    /// `keypal serve` on this deployment, with more `KEYPAL_*` variables.
    pub fn serve_with(&self, more: &[(&str, &str)]) -> Server {
        let service_key = format!("kp_svc_{}", "v".repeat(40));
        let mut env = vec![("KEYPAL_SERVICE_KEY", service_key.as_str())];
        env.extend_from_slice(more);
        if let Some(schema) = &self.schema {
            env.push(("KEYPAL_DATABASE_SCHEMA", schema));
        }
        let (child, addr) = serve_with(&self.database, &self.master_key, &env);
        Server { child, addr, service_key }
    }
}
