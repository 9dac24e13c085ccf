//! A throwaway PostgreSQL cluster built from the system's server binaries.
//!
//! `pgpolyglot demo` and every end-to-end test need a real Postgres that nobody else uses:
//! the proxy's whole promise is "what Postgres would have said", so the tests compare against
//! the real thing, never a mock. This module runs `initdb` into a fresh temporary directory,
//! starts the server on a random loopback port with its Unix socket inside that directory
//! (never `/var/run/postgresql`, never the system cluster on 5432), and tears everything down
//! on [`Drop`], including when a test panics.
//!
//! Why it looks the way it does:
//! - `initdb` refuses to run as root. When the effective uid is 0 the cluster is owned by and
//!   run as the `postgres` system user; otherwise it runs as the current user.
//! - Several test binaries run in parallel, each with its own cluster: every cluster has its
//!   own directory, socket folder and port. A port is picked by binding `127.0.0.1:0`; if
//!   another process grabs it before Postgres binds it, start-up retries with a new one.
//! - Durability is switched off (`fsync`, `synchronous_commit`, `full_page_writes`): the data
//!   is thrown away anyway, and tests on two cores should not wait for disks.
//! - `wal_level = logical` so the change feed can be tested against the same cluster.
//! - The server log is kept in the cluster directory, and a failed start quotes its tail,
//!   because "could not start" without the reason wastes everybody's time.

use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Binaries the cluster cannot live without.
const REQUIRED_BINARIES: [&str; 3] = ["initdb", "pg_ctl", "postgres"];
/// Start attempts (each with a fresh port) before giving up on a port race.
const START_ATTEMPTS: usize = 5;
/// How much of the server log a start failure quotes.
const LOG_TAIL_BYTES: u64 = 4096;

/// Why a throwaway cluster could not be created, started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedPgError {
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found (looked in: {searched}); \
         install them with: apt-get install postgresql \
         (or point PGPOLYGLOT_PG_BIN at the directory that holds them)"
    )]
    BinariesNotFound { searched: String },
    #[error("PGPOLYGLOT_PG_BIN={dir} does not contain `{missing}`; point it at PostgreSQL's bin directory (e.g. /usr/lib/postgresql/15/bin)")]
    BadBinDir { dir: String, missing: String },
    #[error(
        "running as root, but there is no `postgres` system user to run initdb/postgres as \
         (initdb refuses to run as root); install the server with: apt-get install postgresql \
         (it creates that user), or run as a non-root user"
    )]
    NoPostgresUser,
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("initdb failed ({status}):\n{output}")]
    Initdb { status: String, output: String },
    #[error(
        "PostgreSQL failed to start on 127.0.0.1:{port} ({status}):\n{output}\n\
         --- server log tail ({log}) ---\n{log_tail}"
    )]
    Start {
        port: u16,
        status: String,
        output: String,
        log: String,
        log_tail: String,
    },
    #[error(
        "PostgreSQL failed to stop ({status}):\n{output}\n--- server log tail ---\n{log_tail}"
    )]
    Stop {
        status: String,
        output: String,
        log_tail: String,
    },
    #[error("connecting to the embedded PostgreSQL failed: {}", error_chain(.0))]
    Connect(#[from] tokio_postgres::Error),
}

/// `err` and its sources (tokio-postgres's own `Display` says only "db error").
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> EmbeddedPgError {
    let context = context.into();
    move |source| EmbeddedPgError::Io { context, source }
}

/// Knobs for [`EmbeddedPostgres::start`]. `Default` gives a trust-everything local cluster.
#[derive(Debug, Clone, Default)]
pub struct EmbeddedPgOptions {
    /// Extra `postgresql.conf` settings, written after the built-in ones (so they win).
    /// Values are written single-quoted, which Postgres accepts for every setting type:
    /// `("log_statement".into(), "all".into())`.
    pub extra_conf: Vec<(String, String)>,
    /// Full `pg_hba.conf` text. `None`: trust for local sockets and host 127.0.0.1/32, ::1/128
    /// (normal and replication connections).
    pub hba: Option<String>,
    /// `(certificate, private key)` PEM files; when set the server runs with `ssl = on`.
    /// Both are copied into the data directory with owner-only permissions.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// The `pg_hba.conf` used when [`EmbeddedPgOptions::hba`] is `None`.
pub const DEFAULT_HBA: &str = "\
local all all trust
host all all 127.0.0.1/32 trust
host all all ::1/128 trust
local replication all trust
host replication all 127.0.0.1/32 trust
host replication all ::1/128 trust
";

/// A running (or stopped, restartable) throwaway PostgreSQL cluster.
///
/// Dropping it stops the server immediately (`pg_ctl stop -m immediate`, synchronously) and
/// deletes the cluster directory.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    /// Owns the cluster directory: `data/`, `sock/`, `postgres.log`. Removed on drop.
    root: Option<TempDir>,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_file: PathBuf,
    bin_dir: PathBuf,
    port: u16,
    /// `(uid, gid)` to run the server binaries as, when we are root.
    run_as: Option<(u32, u32)>,
    /// Whether we believe a postmaster is up (decides what `Drop` must do).
    running: bool,
}

impl EmbeddedPostgres {
    /// Creates a cluster in a new temporary directory and starts it on a free loopback port.
    pub async fn start(opts: EmbeddedPgOptions) -> Result<Self, EmbeddedPgError> {
        let bin_dir = find_bin_dir()?;
        let run_as = run_as_user()?;
        let parent = temp_parent(run_as.is_some());
        let root = tempfile::Builder::new()
            .prefix("pgpolyglot-pg-")
            .tempdir_in(&parent)
            .map_err(io_err(format!(
                "creating a temp dir in {}",
                parent.display()
            )))?;
        let data_dir = root.path().join("data");
        let socket_dir = root.path().join("sock");
        let log_file = root.path().join("postgres.log");
        std::fs::create_dir(&socket_dir).map_err(io_err("creating the socket dir"))?;
        let mut pg = EmbeddedPostgres {
            root: Some(root),
            data_dir,
            socket_dir,
            log_file,
            bin_dir,
            port: 0,
            run_as,
            running: false,
        };
        pg.chown(pg.root_path())?;
        pg.chown(&pg.socket_dir)?;
        pg.initdb().await?;
        pg.configure(&opts)?;
        pg.start_on_free_port().await?;
        Ok(pg)
    }

    /// The TCP port the server listens on (loopback only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Always `"127.0.0.1"`: the server listens on loopback only.
    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    /// `postgres://user@127.0.0.1:port/db`
    pub fn url(&self, user: &str, db: &str) -> String {
        format!("postgres://{user}@{}:{}/{db}", self.host(), self.port)
    }

    /// Directory holding `initdb`, `pg_ctl`, `postgres` (and usually `psql`, `pg_dump`, ...).
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The cluster's data directory (`PGDATA`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory holding this cluster's Unix socket (`.s.PGSQL.<port>`).
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The server log file.
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// The last `bytes` of the server log, for failure messages.
    pub fn log_tail(&self, bytes: u64) -> String {
        read_tail(&self.log_file, 0, bytes)
    }

    /// Opens a tokio-postgres connection (no TLS) and drives it on a spawned task.
    pub async fn connect(
        &self,
        user: &str,
        db: &str,
    ) -> Result<tokio_postgres::Client, EmbeddedPgError> {
        let (client, connection) =
            tokio_postgres::connect(&self.url(user, db), tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Fast shutdown (`pg_ctl stop -m fast`); the cluster can be started again by [`restart`].
    ///
    /// [`restart`]: EmbeddedPostgres::restart
    pub async fn stop(&mut self) -> Result<(), EmbeddedPgError> {
        if !self.running {
            return Ok(());
        }
        let out = self
            .pg_ctl(&["stop", "-m", "fast", "-w", "-t", "60"])
            .await?;
        if !out.status.success() {
            return Err(EmbeddedPgError::Stop {
                status: out.status.to_string(),
                output: output_text(&out),
                log_tail: self.log_tail(LOG_TAIL_BYTES),
            });
        }
        self.running = false;
        Ok(())
    }

    /// Stops the server if it runs, then starts it again on the same port with the same data.
    pub async fn restart(&mut self) -> Result<(), EmbeddedPgError> {
        self.stop().await?;
        self.start_server().await
    }

    fn root_path(&self) -> &Path {
        self.root.as_ref().expect("cluster dir present").path()
    }

    /// Gives `path` to the user the server runs as (no-op when we are that user).
    fn chown(&self, path: &Path) -> Result<(), EmbeddedPgError> {
        if let Some((uid, gid)) = self.run_as {
            nix::unistd::chown(
                path,
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            )
            .map_err(|e| EmbeddedPgError::Io {
                context: format!("chown {}", path.display()),
                source: e.into(),
            })?;
        }
        Ok(())
    }

    /// A command for one of the server binaries, running as the right user, with a clean
    /// environment (no inherited `PG*` variables pointing at some other cluster).
    fn command(&self, binary: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(self.bin_dir.join(binary));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PG") {
                cmd.env_remove(&key);
            }
        }
        cmd.env("LC_ALL", "C").env("LANG", "C");
        cmd.current_dir(self.root_path());
        cmd.stdin(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd.kill_on_drop(true);
        cmd
    }

    async fn initdb(&self) -> Result<(), EmbeddedPgError> {
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(&self.data_dir)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "-N",
            ])
            .output()
            .await
            .map_err(io_err("running initdb"))?;
        if !out.status.success() {
            return Err(EmbeddedPgError::Initdb {
                status: out.status.to_string(),
                output: output_text(&out),
            });
        }
        Ok(())
    }

    /// Writes `pg_hba.conf`, the TLS files and `pgpolyglot.conf` (included from
    /// `postgresql.conf`). The port lives in `pgpolyglot-port.conf` so a retry can change it.
    fn configure(&self, opts: &EmbeddedPgOptions) -> Result<(), EmbeddedPgError> {
        let hba = opts.hba.as_deref().unwrap_or(DEFAULT_HBA);
        self.write_file("pg_hba.conf", hba.as_bytes(), 0o600)?;
        let mut conf = String::new();
        let socket_dir = self.socket_dir.display().to_string();
        let builtin = [
            ("listen_addresses", "127.0.0.1"),
            ("unix_socket_directories", socket_dir.as_str()),
            ("wal_level", "logical"),
            ("max_wal_senders", "10"),
            ("max_replication_slots", "10"),
            ("fsync", "off"),
            ("synchronous_commit", "off"),
            ("full_page_writes", "off"),
            ("max_connections", "300"),
            ("shared_buffers", "128MB"),
            ("logging_collector", "off"),
            ("log_destination", "stderr"),
            ("lc_messages", "C"),
        ];
        for (key, value) in builtin {
            conf.push_str(&conf_line(key, value));
        }
        if let Some((cert, key)) = &opts.tls {
            self.copy_private(cert, "server.crt")?;
            self.copy_private(key, "server.key")?;
            conf.push_str(&conf_line("ssl", "on"));
            conf.push_str(&conf_line("ssl_cert_file", "server.crt"));
            conf.push_str(&conf_line("ssl_key_file", "server.key"));
        }
        for (key, value) in &opts.extra_conf {
            conf.push_str(&conf_line(key, value));
        }
        self.write_file("pgpolyglot.conf", conf.as_bytes(), 0o600)?;
        let main_conf = self.data_dir.join("postgresql.conf");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&main_conf)
            .map_err(io_err(format!("opening {}", main_conf.display())))?;
        file.write_all(b"\ninclude 'pgpolyglot.conf'\ninclude 'pgpolyglot-port.conf'\n")
            .map_err(io_err(format!("writing {}", main_conf.display())))?;
        Ok(())
    }

    fn copy_private(&self, from: &Path, name: &str) -> Result<(), EmbeddedPgError> {
        let bytes =
            std::fs::read(from).map_err(io_err(format!("reading TLS file {}", from.display())))?;
        self.write_file(name, &bytes, 0o600)
    }

    /// Writes a file into the data directory, owned by the server's user with `mode`.
    fn write_file(&self, name: &str, bytes: &[u8], mode: u32) -> Result<(), EmbeddedPgError> {
        let path = self.data_dir.join(name);
        let ctx = || format!("writing {}", path.display());
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&path)
            .map_err(io_err(ctx()))?;
        file.write_all(bytes).map_err(io_err(ctx()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(io_err(ctx()))?;
        self.chown(&path)
    }

    /// Picks a free port and starts; retries with a new port when another process won the
    /// race for it between our probe and Postgres's bind.
    async fn start_on_free_port(&mut self) -> Result<(), EmbeddedPgError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.port = free_port()?;
            match self.start_server().await {
                Ok(()) => return Ok(()),
                Err(EmbeddedPgError::Start { ref log_tail, .. })
                    if attempt < START_ATTEMPTS && is_bind_failure(log_tail) =>
                {
                    continue
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `pg_ctl start -w` on `self.port`, then a TCP connect to be sure the port answers.
    async fn start_server(&mut self) -> Result<(), EmbeddedPgError> {
        self.write_file(
            "pgpolyglot-port.conf",
            conf_line("port", &self.port.to_string()).as_bytes(),
            0o600,
        )?;
        let log_start = std::fs::metadata(&self.log_file)
            .map(|m| m.len())
            .unwrap_or(0);
        let log = self.log_file.display().to_string();
        let out = self
            .pg_ctl(&["start", "-w", "-t", "60", "-l", &log])
            .await?;
        let failure = |status: String, output: String| EmbeddedPgError::Start {
            port: self.port,
            status,
            output,
            log: log.clone(),
            log_tail: read_tail(&self.log_file, log_start, LOG_TAIL_BYTES),
        };
        if !out.status.success() {
            let err = failure(out.status.to_string(), output_text(&out));
            // A timed-out start may leave a postmaster behind; make sure it is gone.
            let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w"]).await;
            return Err(err);
        }
        self.running = true;
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(failure(
                        "server does not accept TCP connections".into(),
                        e.to_string(),
                    ))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    async fn pg_ctl(&self, args: &[&str]) -> Result<Output, EmbeddedPgError> {
        self.command("pg_ctl")
            .arg("-D")
            .arg(&self.data_dir)
            .args(args)
            .output()
            .await
            .map_err(io_err(format!("running pg_ctl {}", args.join(" "))))
    }

    /// Synchronous immediate stop for `Drop`: pg_ctl first, the postmaster's pid as fallback.
    fn stop_immediately(&mut self) {
        let status = {
            let mut cmd = std::process::Command::new(self.bin_dir.join("pg_ctl"));
            cmd.arg("-D")
                .arg(&self.data_dir)
                .args(["stop", "-m", "immediate", "-w", "-t", "30"])
                .current_dir(self.root_path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if let Some((uid, gid)) = self.run_as {
                std::os::unix::process::CommandExt::uid(&mut cmd, uid);
                std::os::unix::process::CommandExt::gid(&mut cmd, gid);
            }
            cmd.status()
        };
        if !matches!(status, Ok(s) if s.success()) {
            self.kill_postmaster();
        }
        self.running = false;
    }

    /// SIGQUIT (immediate shutdown) to the pid in `postmaster.pid`, then wait for it to go.
    fn kill_postmaster(&self) {
        use nix::sys::signal::{kill, Signal};
        let Ok(pid_file) = std::fs::read_to_string(self.data_dir.join("postmaster.pid")) else {
            return;
        };
        let Some(pid) = pid_file
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<i32>().ok())
        else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(pid);
        if kill(pid, Signal::SIGQUIT).is_err() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while kill(pid, None).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = kill(pid, Signal::SIGKILL);
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        if self.running {
            self.stop_immediately();
        }
        if let Some(root) = self.root.take() {
            let _ = root.close();
        }
    }
}

fn conf_line(key: &str, value: &str) -> String {
    format!("{key} = '{}'\n", value.replace('\'', "''"))
}

fn output_text(out: &Output) -> String {
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    text.trim_end().to_string()
}

/// The last `max` bytes of `path` after byte offset `from` (lossy UTF-8).
fn read_tail(path: &Path, from: u64, max: u64) -> String {
    let Ok(mut file) = std::fs::File::open(path) else {
        return "(no server log)".into();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = from.max(len.saturating_sub(max));
    let mut buf = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut buf).is_err() {
        return "(unreadable server log)".into();
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn is_bind_failure(log: &str) -> bool {
    log.contains("could not bind")
        || log.contains("Address already in use")
        || log.contains("could not create any TCP/IP sockets")
        || (log.contains("lock file") && log.contains("already exists"))
}

fn free_port() -> Result<u16, EmbeddedPgError> {
    let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
        .map_err(io_err("binding 127.0.0.1:0 to find a free port"))?;
    let port = listener
        .local_addr()
        .map_err(io_err("reading the probe socket's port"))?
        .port();
    Ok(port)
}

fn has_binaries(dir: &Path) -> Option<&'static str> {
    REQUIRED_BINARIES
        .into_iter()
        .find(|b| !dir.join(b).is_file())
}

/// `$PGPOLYGLOT_PG_BIN`, else `pg_config --bindir`, else the highest
/// `/usr/lib/postgresql/*/bin`, else `$PATH`.
pub fn find_bin_dir() -> Result<PathBuf, EmbeddedPgError> {
    if let Some(dir) = std::env::var_os("PGPOLYGLOT_PG_BIN") {
        let dir = PathBuf::from(dir);
        return match has_binaries(&dir) {
            None => Ok(dir),
            Some(missing) => Err(EmbeddedPgError::BadBinDir {
                dir: dir.display().to_string(),
                missing: missing.into(),
            }),
        };
    }
    let mut searched = vec!["pg_config --bindir".to_string()];
    if let Ok(out) = std::process::Command::new("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_binaries(&dir).is_none() {
            return Ok(dir);
        }
    }
    searched.push("/usr/lib/postgresql/*/bin".into());
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            has_binaries(&bin).is_none().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Ok(dir);
    }
    searched.push("$PATH".into());
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(dir) = std::env::split_paths(&path).find(|d| has_binaries(d).is_none()) {
            return Ok(dir);
        }
    }
    Err(EmbeddedPgError::BinariesNotFound {
        searched: searched.join(", "),
    })
}

/// `Some((uid, gid))` of the `postgres` user when we run as root, else `None`.
fn run_as_user() -> Result<Option<(u32, u32)>, EmbeddedPgError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    match nix::unistd::User::from_name("postgres") {
        Ok(Some(user)) => Ok(Some((user.uid.as_raw(), user.gid.as_raw()))),
        _ => Err(EmbeddedPgError::NoPostgresUser),
    }
}

/// Where to create the cluster directory: the usual temp dir, unless another user must
/// reach into it and some ancestor is not world-traversable (then `/tmp`).
fn temp_parent(other_user: bool) -> PathBuf {
    let dir = std::env::temp_dir();
    if !other_user {
        return dir;
    }
    let traversable = dir.ancestors().all(|p| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o001 != 0)
            .unwrap_or(false)
    });
    if traversable {
        dir
    } else {
        PathBuf::from("/tmp")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_values_are_quoted() {
        assert_eq!(conf_line("a", "it's"), "a = 'it''s'\n");
    }

    #[test]
    fn bind_failures_are_recognised() {
        assert!(is_bind_failure(
            "LOG:  could not bind IPv4 address \"127.0.0.1\": Address already in use"
        ));
        assert!(!is_bind_failure(
            "FATAL:  data directory has wrong ownership"
        ));
    }

    #[tokio::test]
    async fn starts_restarts_and_cleans_up() {
        let mut pg = EmbeddedPostgres::start(EmbeddedPgOptions::default())
            .await
            .expect("start");
        let root = pg.root_path().to_path_buf();
        let port = pg.port();
        let client = pg.connect("postgres", "postgres").await.expect("connect");
        let wal: String = client
            .query_one("SHOW wal_level", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(wal, "logical");
        client
            .batch_execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (7)")
            .await
            .unwrap();
        drop(client);
        pg.restart().await.expect("restart");
        assert_eq!(pg.port(), port);
        let client = pg.connect("postgres", "postgres").await.expect("reconnect");
        let x: i32 = client
            .query_one("SELECT x FROM kept", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(x, 7);
        drop(pg);
        assert!(!root.exists(), "cluster dir removed on drop");
    }
}
