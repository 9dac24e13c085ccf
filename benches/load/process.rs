//! Child processes, ports and the other small OS chores of the load runner.
//!
//! Everything the runner starts must go away again, also when a step fails half-way or the
//! run is interrupted: a stray PgBouncer or HAProxy left on a loopback port would quietly skew
//! the next run on a 2-core machine. So every long-lived child lives in a [`ChildGuard`] whose
//! `Drop` stops it (SIGTERM, a short grace, then SIGKILL), and every wait has a deadline.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The runner's error type: a message with the context it happened in. Nothing matches on
/// error kinds in a benchmark; what matters is that a failure says where and why.
pub type BenchResult<T> = Result<T, String>;

/// Adds "while doing X" to any error, with its whole `source()` chain: tokio-postgres says
/// only "db error" at the top and keeps Postgres's message in the source.
pub trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> BenchResult<T>;
}

impl<T, E: std::error::Error> Context<T> for Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> BenchResult<T> {
        self.map_err(|e| {
            let mut text = format!("{}: {e}", what());
            let mut source = e.source();
            while let Some(cause) = source {
                let cause_text = cause.to_string();
                if !text.contains(&cause_text) {
                    text.push_str(": ");
                    text.push_str(&cause_text);
                }
                source = cause.source();
            }
            text
        })
    }
}

/// How long a stopping child gets after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How much of a child's log a failure message quotes.
const LOG_TAIL_BYTES: u64 = 2048;

/// `(uid, gid)` of the `postgres` system user when we run as root, else `None`.
///
/// PgBouncer refuses to run as root, and the embedded cluster already runs as `postgres`
/// then, so the same user is the natural choice for anything that refuses root.
pub fn unprivileged_user() -> BenchResult<Option<(u32, u32)>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    match nix::unistd::User::from_name("postgres") {
        Ok(Some(user)) => Ok(Some((user.uid.as_raw(), user.gid.as_raw()))),
        Ok(None) => Err(
            "running as root but there is no `postgres` system user to run \
                         PgBouncer as (install it with: apt-get install postgresql)"
                .into(),
        ),
        Err(e) => Err(format!("looking up the `postgres` user: {e}")),
    }
}

/// A temporary directory the given user can read and write (it is chowned to them).
///
/// Created under `/tmp` rather than `$TMPDIR` when another user must reach it, because a
/// private `$TMPDIR` (e.g. under `/root`) is not traversable for them.
pub fn work_dir(prefix: &str, owner: Option<(u32, u32)>) -> BenchResult<tempfile::TempDir> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix);
    let dir = match owner {
        Some(_) => builder.tempdir_in("/tmp"),
        None => builder.tempdir(),
    }
    .context(|| format!("creating a temp dir {prefix}*"))?;
    if let Some((uid, gid)) = owner {
        chown(dir.path(), uid, gid)?;
    }
    Ok(dir)
}

/// Hands `path` to `uid:gid`.
pub fn chown(path: &Path, uid: u32, gid: u32) -> BenchResult<()> {
    nix::unistd::chown(
        path,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .context(|| format!("chown {}", path.display()))
}

/// Writes a file and hands it to `owner` (when given).
pub fn write_owned(path: &Path, text: &str, owner: Option<(u32, u32)>) -> BenchResult<()> {
    std::fs::write(path, text).context(|| format!("writing {}", path.display()))?;
    if let Some((uid, gid)) = owner {
        chown(path, uid, gid)?;
    }
    Ok(())
}

/// A port that was free a moment ago. Another process may take it before our child binds
/// it; the children's start-up checks catch that with a clear error.
pub fn free_port() -> BenchResult<u16> {
    let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
        .context(|| "binding 127.0.0.1:0 to find a free port".to_string())?;
    let port = listener
        .local_addr()
        .context(|| "reading the probe socket's port".to_string())?
        .port();
    Ok(port)
}

/// Finds a program: `preferred` directory first (e.g. PostgreSQL's bin dir), then `$PATH`.
pub fn find_program(name: &str, preferred: &[&Path], install_hint: &str) -> BenchResult<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    preferred
        .iter()
        .map(|d| d.to_path_buf())
        .chain(path_dirs)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("`{name}` not found; install it with: {install_hint}"))
}

/// First line of `program args` (stdout, else stderr): the version strings in the report.
pub fn version_line(program: &Path, args: &[&str]) -> String {
    match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => {
            let text = if out.stdout.is_empty() {
                String::from_utf8_lossy(&out.stderr).into_owned()
            } else {
                String::from_utf8_lossy(&out.stdout).into_owned()
            };
            text.lines().next().unwrap_or("").trim().to_string()
        }
        Err(e) => format!("unknown ({e})"),
    }
}

/// A command with a clean environment for the PostgreSQL tools: inherited `PG*` variables
/// would point pgbench or psql at some other server.
pub fn clean_command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("LC_ALL", "C").stdin(Stdio::null());
    cmd
}

/// A long-lived child (PgBouncer, HAProxy) that is stopped when the guard goes away.
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
    /// Where the child writes its output; quoted when it fails to start.
    log: PathBuf,
}

impl ChildGuard {
    /// Spawns `cmd` with stdout and stderr appended to `log`, as `run_as` when given.
    pub fn spawn(
        name: &str,
        mut cmd: Command,
        log: &Path,
        run_as: Option<(u32, u32)>,
    ) -> BenchResult<ChildGuard> {
        let out = File::create(log).context(|| format!("creating {}", log.display()))?;
        let err = out
            .try_clone()
            .context(|| format!("duplicating {}", log.display()))?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        if let Some((uid, gid)) = run_as {
            cmd.uid(uid).gid(gid);
        }
        let child = cmd.spawn().context(|| format!("starting {name}"))?;
        Ok(ChildGuard {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    /// Waits until `port` accepts TCP connections, failing early (with the child's log) if
    /// the child exits, and failing after `timeout` if it never listens.
    pub fn wait_for_port(&mut self, port: u16, timeout: Duration) -> BenchResult<()> {
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).into();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!(
                        "{} exited during start-up ({status}); its log ({}):\n{}",
                        self.name,
                        self.log.display(),
                        log_tail(&self.log)
                    ));
                }
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} did not listen on 127.0.0.1:{port} within {timeout:?}; its log ({}):\n{}",
                    self.name,
                    self.log.display(),
                    log_tail(&self.log)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, up to [`STOP_GRACE`] to exit, then SIGKILL. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let Ok(raw) = i32::try_from(child.id()) else {
            let _ = child.kill();
            let _ = child.wait();
            return;
        };
        let pid = Pid::from_raw(raw);
        if kill(pid, Signal::SIGTERM).is_ok() {
            let deadline = Instant::now() + STOP_GRACE;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last part of a log file, for failure messages.
pub fn log_tail(path: &Path) -> String {
    let Ok(mut file) = File::open(path) else {
        return "(no log)".into();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut buf = Vec::new();
    if file
        .seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))
        .is_err()
        || file.read_to_end(&mut buf).is_err()
    {
        return "(unreadable log)".into();
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// The 1-minute load average: how busy the machine was besides us (others' builds on the
/// same two cores show up here and explain noisy numbers).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

/// `YYYY-MM-DD HH:MM UTC` without a date crate (civil-from-days, H. Hinnant's algorithm).
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}
