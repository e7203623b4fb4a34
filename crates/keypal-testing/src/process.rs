//! A server process under a watcher, a temporary folder, a free port.

use std::ffi::OsString;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// The watcher: starts the server (`$3...`, output to `$1/server.log`), and sends it
/// signal `$2` when its standard input closes, that is when the test process that holds
/// the other end of the pipe is gone, however it ended. Once the server has exited it
/// prints the server's log, deletes the folder `$1`, and exits with the server's status.
/// It ignores the signals a terminal or a group kill sends, so that it lives to clean up.
const WATCHER: &str = r#"trap '' INT HUP TERM
dir=$1 signal=$2
shift 2
"$@" >"$dir/server.log" 2>&1 &
server=$!
exec 3<&0
{ read -r _ <&3; kill -s "$signal" "$server" 2>/dev/null; } &
exec 3<&-
wait "$server"
status=$?
cat "$dir/server.log" 2>/dev/null
rm -rf "$dir"
exit "$status"
"#;

/// A user and group to run a program as.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

impl RunAs {
    pub(crate) fn apply(this: Option<RunAs>, command: &mut Command) {
        if let Some(RunAs { uid, gid }) = this {
            command.uid(uid).gid(gid);
        }
    }
}

/// A server running under its watcher. Dropping it (or the end of the test process)
/// stops the server and deletes its folder.
#[derive(Debug)]
pub(crate) struct Watched {
    watcher: Child,
    /// The test process's end of the pipe the watcher waits on.
    stdin: Option<ChildStdin>,
    /// The server's log, printed by the watcher once the server is gone.
    stdout: Option<ChildStdout>,
}

/// How waiting for a server to become ready ended.
pub(crate) enum Readiness {
    Ready,
    /// The server exited; its log.
    Exited(String),
    TimedOut,
}

impl Watched {
    /// Starts `program args` in `dir` under a watcher (as `run_as` when given); `signal`
    /// is the one that stops the server quickly and cleanly (`INT` for PostgreSQL).
    pub(crate) fn spawn(
        dir: &Path,
        signal: &str,
        program: &Path,
        args: &[OsString],
        run_as: Option<RunAs>,
    ) -> std::io::Result<Watched> {
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(WATCHER)
            .arg("keypal-test-watcher")
            .arg(dir)
            .arg(signal)
            .arg(program)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        RunAs::apply(run_as, &mut command);
        let mut watcher = command.spawn()?;
        let stdin = watcher.stdin.take();
        let stdout = watcher.stdout.take();
        Ok(Watched { watcher, stdin, stdout })
    }

    /// Polls `ready` until it says yes, the server exits, or `patience` runs out.
    pub(crate) fn wait_ready(&mut self, patience: Duration, mut ready: impl FnMut() -> bool) -> Readiness {
        let deadline = Instant::now() + patience;
        loop {
            if ready() {
                return Readiness::Ready;
            }
            if let Ok(Some(status)) = self.watcher.try_wait() {
                let mut log = String::new();
                if let Some(mut stdout) = self.stdout.take() {
                    let _ = stdout.read_to_string(&mut log);
                }
                return Readiness::Exited(format!("{status}; its log:\n{}", log.trim_end()));
            }
            if Instant::now() >= deadline {
                return Readiness::TimedOut;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server and waits until it is gone and its folder deleted.
    pub(crate) fn stop(&mut self) {
        self.stdout = None;
        self.stdin = None;
        let _ = self.watcher.wait();
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A new empty folder under the system's temporary folder, private to its owner.
pub(crate) fn temp_dir(service: &str) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("keypal-test-{service}-{}", crate::fresh_name()));
    std::fs::create_dir(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

/// A loopback port nothing listens on right now.
pub(crate) fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// `name` in one of `dirs`, if it is a file there.
pub(crate) fn find_in(dirs: impl IntoIterator<Item = PathBuf>, name: &str) -> Option<PathBuf> {
    dirs.into_iter().map(|dir| dir.join(name)).find(|path| path.is_file())
}

/// The folders of `PATH`.
pub(crate) fn path_dirs() -> Vec<PathBuf> {
    std::env::var_os("PATH").map(|path| std::env::split_paths(&path).collect()).unwrap_or_default()
}
