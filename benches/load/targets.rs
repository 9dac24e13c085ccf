//! The things pgbench is pointed at: Postgres itself, PgBouncer (session and transaction
//! pooling), HAProxy in TCP mode, and pgpolyglot.
//!
//! Each is a [`Target`]: a name, a loopback port, what it cannot do, and a way to stop. All
//! of them front the same embedded PostgreSQL (owned by the runner, so every target sees the
//! same data and the same buffer cache). A new comparison point (e.g. "pgpolyglot with the
//! cache on") is a new [`TargetKind`] with a `start` arm; nothing else changes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pgpolyglot::config::{Config, ThreadScheduling};
use pgpolyglot::server::ServerHandle;
use tempfile::TempDir;

use crate::pgbench::Mode;
use crate::process::{
    find_program, free_port, version_line, work_dir, write_owned, BenchResult, ChildGuard, Context,
};

/// How long a target may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long pgpolyglot's graceful shutdown may take before its runtime is dropped anyway.
const PROXY_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// PgBouncer's server connections per (user, database): at least the most clients we run.
const PGBOUNCER_POOL_SIZE: u32 = 40;

/// A cache target's counters at one moment.
#[derive(Clone, Copy, Debug)]
pub struct CacheCounts {
    /// Reads served from the cache.
    pub hits: u64,
    pub misses: u64,
    /// Entries placed.
    pub entries: u64,
}

impl CacheCounts {
    /// Percent of reads served from the cache (0 without reads).
    pub fn hit_percent(self) -> f64 {
        let reads = self.hits + self.misses;
        if reads == 0 {
            0.0
        } else {
            self.hits as f64 * 100.0 / reads as f64
        }
    }

    /// What was counted after `earlier`.
    pub fn since(self, earlier: CacheCounts) -> CacheCounts {
        CacheCounts {
            hits: self.hits.saturating_sub(earlier.hits),
            misses: self.misses.saturating_sub(earlier.misses),
            entries: self.entries,
        }
    }
}

/// A running target. Dropping it stops it.
pub trait Target {
    fn name(&self) -> &str;
    /// The loopback port pgbench connects to.
    fn port(&self) -> u16;
    /// Why this target cannot serve `mode`, when it cannot (reported as "n/a (reason)").
    fn unsupported(&self, _mode: Mode) -> Option<&'static str> {
        None
    }
    /// Stops the target; idempotent, also done on drop.
    fn stop(&mut self);
    /// For a pgpolyglot with a cache: the change feed's commit-to-applied delay since the
    /// last call (which resets it).
    fn apply_delay(&self) -> Option<pgpolyglot::cache::service::ApplyDelay> {
        None
    }
    /// For a pgpolyglot with a cache: what the cache did over the whole run, one line.
    fn cache_summary(&self) -> Option<String> {
        None
    }
    /// For a pgpolyglot with a cache: what the cache has done so far.
    fn cache_counts(&self) -> Option<CacheCounts> {
        None
    }
    /// For a pgpolyglot with a search policy: (index complete, rows backfilled so far).
    fn search_progress(&self) -> Option<(bool, u64)> {
        None
    }
    /// For a pgpolyglot with a search policy: what the search store did, one line.
    fn search_summary(&self) -> Option<String> {
        None
    }
}

/// Every target the runner knows, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    Direct,
    PgbouncerSession,
    PgbouncerTransaction,
    Haproxy,
    Pgpolyglot,
    /// pgpolyglot on tokio's default runtime (one worker per core, normal scheduling), which
    /// `serve` used before its own defaults (see `pgpolyglot::runtime`).
    PgpolyglotPerCore,
    /// pgpolyglot with `[stats] enabled = false`: the statistics' cost is the ratio between
    /// the two.
    PgpolyglotStatsOff,
    /// pgpolyglot with a cache policy on `pgbench_accounts` (in-process L1).
    PgpolyglotCache,
    /// The L1 target on tokio's default runtime (as `PgpolyglotPerCore`).
    PgpolyglotCachePerCore,
    /// The same with `store = "redis"`: L1 plus a shared L2 in a redis-server of its own.
    PgpolyglotCacheRedis,
    /// The L1 target with `coalesce_misses = true`: misses fetched together on the proxy's
    /// own connection.
    PgpolyglotCacheCoalesced,
    /// pgpolyglot with a search policy on the search benchmark's `docs` (embedded tantivy).
    PgpolyglotSearch,
    PgpolyglotSearchOsmem,
}

/// The cache target's policy: every key the statistics call hot is placed.
const CACHE_POLICY: &str =
    "tables = [\"public.pgbench_accounts\"]\n\n[cache]\nstore = \"memory\"\n\
promote_after = 1\nwindow = \"5m\"\ndemote_after_idle = \"10m\"\nmax_keys = 200000\n\
max_bytes = \"512MiB\"\nmax_staleness = \"250ms\"\n";

/// The coalescing target's policy: [`CACHE_POLICY`] with misses fetched together.
const CACHE_COALESCED_POLICY: &str =
    "tables = [\"public.pgbench_accounts\"]\n\n[cache]\nstore = \"memory\"\n\
promote_after = 1\nwindow = \"5m\"\ndemote_after_idle = \"10m\"\nmax_keys = 200000\n\
max_bytes = \"512MiB\"\nmax_staleness = \"250ms\"\ncoalesce_misses = true\n";

/// The L1+Redis target's policy.
const CACHE_REDIS_POLICY: &str =
    "tables = [\"public.pgbench_accounts\"]\n\n[cache]\nstore = \"redis\"\n\
promote_after = 1\nwindow = \"5m\"\ndemote_after_idle = \"10m\"\nmax_keys = 200000\n\
max_bytes = \"512MiB\"\nmax_staleness = \"250ms\"\n";

/// Hot keys tracked per table by the cache target's statistics (the default, 1000, covers
/// ~69 % of Zipf(1.1) accesses over 1M keys; 200000 covers ~95 %, about 20 MB of counters).
/// With the policy's "read once a minute" threshold, about 100k keys get placed (~92 %).
const CACHE_TOP_K: usize = 200_000;

/// Which runtime an in-process proxy target runs on.
#[derive(Clone, Copy)]
enum Runtime {
    /// What `serve` builds from the config (overridable by environment knobs).
    Serve,
    /// tokio's default: one worker per core, normal scheduling (`serve` before 2026-12-05).
    PerCore,
}

/// How an in-process proxy target differs from the plain passthrough one.
#[derive(Clone, Copy)]
struct ProxyOpts {
    stats: bool,
    runtime: Runtime,
}

impl ProxyOpts {
    const SERVE: ProxyOpts = ProxyOpts {
        stats: true,
        runtime: Runtime::Serve,
    };
    const PER_CORE: ProxyOpts = ProxyOpts {
        stats: true,
        runtime: Runtime::PerCore,
    };
}

/// What starting a target needs: where Postgres is and which user may run daemons.
pub struct TargetEnv {
    pub pg_port: u16,
    /// The unprivileged user for daemons that refuse root (PgBouncer), when we are root.
    pub run_as: Option<(u32, u32)>,
}

impl TargetKind {
    pub const ALL: [TargetKind; 13] = [
        TargetKind::Direct,
        TargetKind::PgbouncerSession,
        TargetKind::PgbouncerTransaction,
        TargetKind::Haproxy,
        TargetKind::Pgpolyglot,
        TargetKind::PgpolyglotPerCore,
        TargetKind::PgpolyglotStatsOff,
        TargetKind::PgpolyglotCache,
        TargetKind::PgpolyglotCachePerCore,
        TargetKind::PgpolyglotCacheRedis,
        TargetKind::PgpolyglotCacheCoalesced,
        TargetKind::PgpolyglotSearch,
        TargetKind::PgpolyglotSearchOsmem,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Direct => "direct",
            TargetKind::PgbouncerSession => "pgbouncer-session",
            TargetKind::PgbouncerTransaction => "pgbouncer-transaction",
            TargetKind::Haproxy => "haproxy",
            TargetKind::Pgpolyglot => "pgpolyglot",
            TargetKind::PgpolyglotPerCore => "pgpolyglot-per-core",
            TargetKind::PgpolyglotStatsOff => "pgpolyglot-stats-off",
            TargetKind::PgpolyglotCache => "pgpolyglot-cache",
            TargetKind::PgpolyglotCachePerCore => "pgpolyglot-cache-per-core",
            TargetKind::PgpolyglotCacheRedis => "pgpolyglot-cache-redis",
            TargetKind::PgpolyglotCacheCoalesced => "pgpolyglot-cache-coalesced",
            TargetKind::PgpolyglotSearch => "pgpolyglot-search",
            TargetKind::PgpolyglotSearchOsmem => "pgpolyglot-search-osmem",
        }
    }

    pub fn parse(text: &str) -> BenchResult<TargetKind> {
        TargetKind::ALL
            .into_iter()
            .find(|k| k.name() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = TargetKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown target {text:?} (known: {})", names.join(", "))
            })
    }

    /// Starts the target and waits until it accepts connections.
    pub async fn start(self, env: &TargetEnv) -> BenchResult<Box<dyn Target>> {
        let target: Box<dyn Target> = match self {
            TargetKind::Direct => Box::new(Direct { port: env.pg_port }),
            TargetKind::PgbouncerSession => Box::new(PgBouncer::start(env, PoolMode::Session)?),
            TargetKind::PgbouncerTransaction => {
                Box::new(PgBouncer::start(env, PoolMode::Transaction)?)
            }
            TargetKind::Haproxy => Box::new(Haproxy::start(env)?),
            TargetKind::Pgpolyglot => {
                Box::new(Pgpolyglot::start(env, "pgpolyglot", &[], true, None).await?)
            }
            TargetKind::PgpolyglotPerCore => Box::new(
                Pgpolyglot::start_full(
                    env,
                    "pgpolyglot-per-core",
                    &[],
                    ProxyOpts::PER_CORE,
                    None,
                    None,
                    None,
                )
                .await?,
            ),
            TargetKind::PgpolyglotStatsOff => {
                Box::new(Pgpolyglot::start(env, "pgpolyglot-stats-off", &[], false, None).await?)
            }
            TargetKind::PgpolyglotCachePerCore => Box::new(
                Pgpolyglot::start_full(
                    env,
                    "pgpolyglot-cache-per-core",
                    &[("bench.toml", CACHE_POLICY)],
                    ProxyOpts::PER_CORE,
                    Some(crate::DB),
                    None,
                    None,
                )
                .await?,
            ),
            TargetKind::PgpolyglotCache => Box::new(
                Pgpolyglot::start(
                    env,
                    "pgpolyglot-cache",
                    &[("bench.toml", CACHE_POLICY)],
                    true,
                    Some(crate::DB),
                )
                .await?,
            ),
            TargetKind::PgpolyglotCacheCoalesced => Box::new(
                Pgpolyglot::start(
                    env,
                    "pgpolyglot-cache-coalesced",
                    &[("bench.toml", CACHE_COALESCED_POLICY)],
                    true,
                    Some(crate::DB),
                )
                .await?,
            ),
            TargetKind::PgpolyglotCacheRedis => {
                let redis = RedisServer::start()?;
                let mut target = Pgpolyglot::start_with_redis(
                    env,
                    "pgpolyglot-cache-redis",
                    &[("bench.toml", CACHE_REDIS_POLICY)],
                    Some(redis.port),
                )
                .await?;
                target.redis = Some(redis);
                Box::new(target)
            }
            TargetKind::PgpolyglotSearch => Box::new(
                Pgpolyglot::start(
                    env,
                    "pgpolyglot-search",
                    &[("docs.toml", crate::search::SEARCH_POLICY)],
                    true,
                    Some(crate::search::SEARCH_DB),
                )
                .await?,
            ),
            TargetKind::PgpolyglotSearchOsmem => {
                use pgpolyglot::es_server::{EsKind, EsServer};
                let es = EsServer::start(EsKind::Osmem)
                    .await
                    .map_err(|e| e.to_string())?;
                let policy = crate::search::SEARCH_POLICY
                    .replace("store = \"embedded\"", "store = \"elasticsearch\"");
                let mut t = Pgpolyglot::start_full(
                    env,
                    "pgpolyglot-search-osmem",
                    &[("docs.toml", &policy)],
                    ProxyOpts::SERVE,
                    Some(crate::search::SEARCH_DB),
                    None,
                    Some(es.url()),
                )
                .await?;
                t.elastic = Some(es);
                Box::new(t)
            }
        };
        Ok(target)
    }

    /// The version line of the software behind this target, for the report.
    pub fn version(self) -> Option<String> {
        match self {
            TargetKind::Direct => None,
            TargetKind::PgbouncerSession | TargetKind::PgbouncerTransaction => pgbouncer_binary()
                .ok()
                .map(|p| version_line(&p, &["--version"])),
            TargetKind::Haproxy => haproxy_binary().ok().map(|p| version_line(&p, &["-v"])),
            TargetKind::Pgpolyglot
            | TargetKind::PgpolyglotPerCore
            | TargetKind::PgpolyglotStatsOff
            | TargetKind::PgpolyglotCache
            | TargetKind::PgpolyglotCachePerCore
            | TargetKind::PgpolyglotCacheRedis
            | TargetKind::PgpolyglotCacheCoalesced
            | TargetKind::PgpolyglotSearch
            | TargetKind::PgpolyglotSearchOsmem => Some(format!(
                "pgpolyglot {} (in-process, release build)",
                env!("CARGO_PKG_VERSION")
            )),
        }
    }
}

/// Postgres itself: the reference every ratio is taken against.
struct Direct {
    port: u16,
}

impl Target for Direct {
    fn name(&self) -> &str {
        "direct"
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn stop(&mut self) {}
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PoolMode {
    Session,
    Transaction,
}

fn pgbouncer_binary() -> BenchResult<PathBuf> {
    find_program("pgbouncer", &[], "apt-get install pgbouncer")
}

fn haproxy_binary() -> BenchResult<PathBuf> {
    find_program("haproxy", &[], "apt-get install haproxy")
}

/// PgBouncer, the pooler people compare against. Runs in the foreground as a child; its
/// config, log and pid file live in a temp dir owned by the user it runs as.
struct PgBouncer {
    name: &'static str,
    mode: PoolMode,
    port: u16,
    child: ChildGuard,
    _dir: TempDir,
}

impl PgBouncer {
    fn start(env: &TargetEnv, mode: PoolMode) -> BenchResult<PgBouncer> {
        let binary = pgbouncer_binary()?;
        let (name, mode_word) = match mode {
            PoolMode::Session => ("pgbouncer-session", "session"),
            PoolMode::Transaction => ("pgbouncer-transaction", "transaction"),
        };
        let dir = work_dir(&format!("pgpolyglot-bench-{name}-"), env.run_as)?;
        let port = free_port()?;
        let userlist = dir.path().join("userlist.txt");
        // `trust` still looks the user up in auth_file, so list the one pgbench uses.
        write_owned(&userlist, "\"postgres\" \"\"\n", env.run_as)?;
        let config = pgbouncer_ini(dir.path(), port, env.pg_port, mode_word);
        let config_path = dir.path().join("pgbouncer.ini");
        write_owned(&config_path, &config, env.run_as)?;
        let mut cmd = Command::new(&binary);
        cmd.arg(&config_path).current_dir(dir.path());
        let log = dir.path().join("stderr.log");
        let mut child = ChildGuard::spawn(name, cmd, &log, env.run_as)?;
        child.wait_for_port(port, START_TIMEOUT)?;
        Ok(PgBouncer {
            name,
            mode,
            port,
            child,
            _dir: dir,
        })
    }
}

/// The PgBouncer configuration: every setting the comparison depends on is spelled out.
fn pgbouncer_ini(dir: &Path, port: u16, pg_port: u16, pool_mode: &str) -> String {
    let dir = dir.display();
    format!(
        "[databases]\n\
         * = host=127.0.0.1 port={pg_port}\n\
         \n\
         [pgbouncer]\n\
         listen_addr = 127.0.0.1\n\
         listen_port = {port}\n\
         unix_socket_dir =\n\
         auth_type = trust\n\
         auth_file = {dir}/userlist.txt\n\
         pool_mode = {pool_mode}\n\
         default_pool_size = {PGBOUNCER_POOL_SIZE}\n\
         max_client_conn = 200\n\
         ignore_startup_parameters = extra_float_digits,options\n\
         server_tls_sslmode = disable\n\
         client_tls_sslmode = disable\n\
         log_connections = 0\n\
         log_disconnections = 0\n\
         logfile = {dir}/pgbouncer.log\n\
         pidfile = {dir}/pgbouncer.pid\n"
    )
}

impl Target for PgBouncer {
    fn name(&self) -> &str {
        self.name
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn unsupported(&self, mode: Mode) -> Option<&'static str> {
        // PgBouncer 1.18 forwards Parse to whichever server connection the transaction
        // got; a later Bind on another connection finds no such statement.
        (self.mode == PoolMode::Transaction && mode == Mode::Prepared)
            .then_some("prepared statements unsupported in transaction pooling")
    }
    fn stop(&mut self) {
        self.child.stop();
    }
}

/// HAProxy in `mode tcp`: copies bytes and parses nothing, so it is the floor for what a
/// passthrough hop costs on this machine (DESIGN.md, "Performance reference points").
struct Haproxy {
    port: u16,
    child: ChildGuard,
    _dir: TempDir,
}

impl Haproxy {
    fn start(env: &TargetEnv) -> BenchResult<Haproxy> {
        let binary = haproxy_binary()?;
        let dir = work_dir("pgpolyglot-bench-haproxy-", None)?;
        let port = free_port()?;
        let pg_port = env.pg_port;
        // Default thread count (one per CPU), like pgpolyglot's runtime; long client and
        // server timeouts so idle pgbench connections are never cut.
        let config = format!(
            "global\n\
             \x20   maxconn 1000\n\
             defaults\n\
             \x20   mode tcp\n\
             \x20   timeout connect 5s\n\
             \x20   timeout client 1h\n\
             \x20   timeout server 1h\n\
             listen postgres\n\
             \x20   bind 127.0.0.1:{port}\n\
             \x20   server pg 127.0.0.1:{pg_port}\n"
        );
        let config_path = dir.path().join("haproxy.cfg");
        write_owned(&config_path, &config, None)?;
        let mut cmd = Command::new(&binary);
        cmd.arg("-db").arg("-f").arg(&config_path);
        let log = dir.path().join("haproxy.log");
        let mut child = ChildGuard::spawn("haproxy", cmd, &log, None)?;
        child.wait_for_port(port, START_TIMEOUT)?;
        Ok(Haproxy {
            port,
            child,
            _dir: dir,
        })
    }
}

impl Target for Haproxy {
    fn name(&self) -> &str {
        "haproxy"
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn stop(&mut self) {
        self.child.stop();
    }
}

/// pgpolyglot, in-process, on a runtime of its own, built as `pgpolyglot serve` builds it and
/// driven by threads of its own: the runner's own runtime (one thread, mostly asleep while
/// pgbench runs) never shares a worker with it.
pub struct Pgpolyglot {
    name: String,
    port: u16,
    runtime: Option<pgpolyglot::runtime::BackgroundRuntime>,
    handle: Option<ServerHandle>,
    /// Policies directory (empty for pure passthrough).
    _policies: TempDir,
    /// The redis-server of the L1+Redis target (stopped with it).
    redis: Option<RedisServer>,
    /// The Elasticsearch-API server of the search-on-Elasticsearch target (stopped with it).
    elastic: Option<pgpolyglot::es_server::EsServer>,
}

/// A redis-server of the benchmark's own (no persistence), for the L1+Redis target.
pub struct RedisServer {
    port: u16,
    child: ChildGuard,
    _dir: TempDir,
}

impl RedisServer {
    fn start() -> BenchResult<RedisServer> {
        let binary = find_program("redis-server", &[], "apt-get install redis-server")?;
        let dir = work_dir("pgpolyglot-bench-redis-", None)?;
        let port = free_port()?;
        let mut cmd = Command::new(&binary);
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path());
        let log = dir.path().join("redis.log");
        let mut child = ChildGuard::spawn("redis-server", cmd, &log, None)?;
        child.wait_for_port(port, START_TIMEOUT)?;
        Ok(RedisServer {
            port,
            child,
            _dir: dir,
        })
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.child.stop();
    }
}

impl Pgpolyglot {
    /// Starts a proxy named `name` with the given policy files (`(file name, TOML)`),
    /// recording access statistics or not. `policy_db`: the upstream URL's database (the one
    /// policies apply to); `None` keeps `postgres`, so no policy applies to the workload.
    pub async fn start(
        env: &TargetEnv,
        name: &str,
        policies: &[(&str, &str)],
        stats: bool,
        policy_db: Option<&str>,
    ) -> BenchResult<Pgpolyglot> {
        let opts = ProxyOpts {
            stats,
            ..ProxyOpts::SERVE
        };
        Self::start_full(env, name, policies, opts, policy_db, None, None).await
    }

    /// A cache target on the benchmark database whose Redis tier is the server on `redis`.
    async fn start_with_redis(
        env: &TargetEnv,
        name: &str,
        policies: &[(&str, &str)],
        redis: Option<u16>,
    ) -> BenchResult<Pgpolyglot> {
        Self::start_full(
            env,
            name,
            policies,
            ProxyOpts::SERVE,
            Some(crate::DB),
            redis,
            None,
        )
        .await
    }

    async fn start_full(
        env: &TargetEnv,
        name: &str,
        policies: &[(&str, &str)],
        opts: ProxyOpts,
        policy_db: Option<&str>,
        redis: Option<u16>,
        elastic: Option<String>,
    ) -> BenchResult<Pgpolyglot> {
        let stats = opts.stats;
        let policy_dir = work_dir("pgpolyglot-bench-policies-", None)?;
        for (file, text) in policies {
            write_owned(&policy_dir.path().join(file), text, None)?;
        }
        let config = Config {
            listen: "127.0.0.1:0".into(),
            upstream: format!(
                "postgres://postgres@127.0.0.1:{}/{}",
                env.pg_port,
                policy_db.unwrap_or("postgres")
            ),
            policies: policy_dir.path().to_path_buf(),
            http: String::new(),
            shutdown_grace: Duration::from_secs(2),
            // Every cache target streams changes on a slot of its own.
            change_feed: pgpolyglot::config::ChangeFeedSettings {
                slot: format!("bench_{}", name.replace('-', "_")),
                publication: format!("bench_{}", name.replace('-', "_")),
                ..Default::default()
            },
            stores: pgpolyglot::config::StoresSettings {
                redis: redis.map(|port| pgpolyglot::config::RedisSettings {
                    url: format!("redis://127.0.0.1:{port}/0"),
                    ..Default::default()
                }),
                // Search indexes live (and die) with the target's temporary directory.
                embedded: pgpolyglot::config::EmbeddedSettings {
                    dir: policy_dir.path().join("search-data"),
                    ..Default::default()
                },
                elasticsearch: elastic.map(|url| pgpolyglot::config::ElasticsearchSettings {
                    url,
                    index_prefix: format!("bench-{name}"),
                    ..Default::default()
                }),
            },
            stats: pgpolyglot::config::StatsSettings {
                enabled: stats,
                top_k_per_table: if policies.is_empty() {
                    pgpolyglot::config::StatsSettings::default().top_k_per_table
                } else {
                    CACHE_TOP_K
                },
                ..Default::default()
            },
            ..Config::default()
        };
        // The runtime `serve` builds. PGPOLYGLOT_BENCH_PROXY_THREADS and
        // PGPOLYGLOT_BENCH_PROXY_SCHEDULING ("batch" / "normal") override its defaults for
        // every target but the `-per-core` ones, which keep tokio's own default (one worker
        // per core, normal scheduling) to compare with.
        let (threads, scheduling) = match opts.runtime {
            Runtime::Serve => (
                std::env::var("PGPOLYGLOT_BENCH_PROXY_THREADS")
                    .ok()
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(config.worker_threads),
                match std::env::var("PGPOLYGLOT_BENCH_PROXY_SCHEDULING").as_deref() {
                    Ok("normal") => ThreadScheduling::Normal,
                    Ok("batch") => ThreadScheduling::Batch,
                    Ok(other) => {
                        return Err(format!(
                            "PGPOLYGLOT_BENCH_PROXY_SCHEDULING={other:?}: expected batch or normal"
                        ))
                    }
                    Err(_) => config.thread_scheduling,
                },
            ),
            Runtime::PerCore => (
                std::thread::available_parallelism().map_or(1, |n| n.get()),
                ThreadScheduling::Normal,
            ),
        };
        let runtime = pgpolyglot::runtime::build(threads, scheduling)
            .and_then(|r| r.start_background())
            .context(|| "building the proxy's runtime".to_string())?;
        let started = runtime.handle().spawn(async move {
            pgpolyglot::server::start(config)
                .await
                .map_err(|e| e.to_string())
        });
        let handle = match tokio::time::timeout(START_TIMEOUT, started).await {
            Ok(Ok(Ok(handle))) => handle,
            Ok(Ok(Err(e))) => return Err(format!("starting pgpolyglot: {e}")),
            Ok(Err(e)) => return Err(format!("starting pgpolyglot: task failed: {e}")),
            Err(_) => return Err(format!("pgpolyglot did not start within {START_TIMEOUT:?}")),
        };
        Ok(Pgpolyglot {
            name: name.to_string(),
            port: handle.local_addr().port(),
            runtime: Some(runtime),
            handle: Some(handle),
            _policies: policy_dir,
            redis: None,
            elastic: None,
        })
    }
}

impl Target for Pgpolyglot {
    fn name(&self) -> &str {
        &self.name
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn apply_delay(&self) -> Option<pgpolyglot::cache::service::ApplyDelay> {
        let ctx = self.handle.as_ref()?.context();
        ctx.cache.feed()?;
        Some(ctx.cache.apply_delay(true))
    }
    fn search_progress(&self) -> Option<(bool, u64)> {
        use std::sync::atomic::Ordering::Relaxed;
        let ctx = self.handle.as_ref()?.context();
        let t = ctx.search.tables().into_iter().next()?;
        Some((t.ready.load(Relaxed), t.progress().backfilled_rows))
    }
    fn search_summary(&self) -> Option<String> {
        use std::sync::atomic::Ordering::Relaxed;
        let ctx = self.handle.as_ref()?.context();
        let c = &ctx.search.counters;
        Some(format!(
            "{}: {} statements narrowed ({} candidate keys in all), {} passed through with too many candidates, {} store errors",
            self.name,
            c.narrowed.load(Relaxed),
            c.candidates.load(Relaxed),
            c.too_many.load(Relaxed),
            c.store_errors.load(Relaxed)
        ))
    }
    fn cache_counts(&self) -> Option<CacheCounts> {
        use std::sync::atomic::Ordering::Relaxed;
        let ctx = self.handle.as_ref()?.context();
        ctx.cache.feed()?;
        Some(CacheCounts {
            hits: ctx.cache.counters.hits.load(Relaxed),
            misses: ctx.cache.counters.misses.load(Relaxed),
            entries: ctx.cache.store.totals.entries.load(Relaxed),
        })
    }
    fn cache_summary(&self) -> Option<String> {
        use std::sync::atomic::Ordering::Relaxed;
        let ctx = self.handle.as_ref()?.context();
        ctx.cache.feed()?;
        let c = &ctx.cache.counters;
        let t = &ctx.cache.store.totals;
        let reasons: Vec<String> = pgpolyglot::router::Reason::ALL
            .iter()
            .map(|r| (r, ctx.metrics.route_reasons[r.index()].load(Relaxed)))
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| format!("{} {n}", r.label()))
            .collect();
        let mut line = format!(
            "{}: {} served from the cache, {} cache misses ({} answered by {} coalesced fetches, {} failed); {} images ({} bytes), {} fill batches, {} fill errors, {} stale fills dropped, {} fences; decisions: {}",
            self.name,
            c.hits.load(Relaxed),
            c.misses.load(Relaxed),
            c.coalesced.load(Relaxed),
            c.coalesced_fetches.load(Relaxed),
            c.coalesce_errors.load(Relaxed),
            t.entries.load(Relaxed),
            t.bytes.load(Relaxed),
            c.fill_batches.load(Relaxed),
            c.fill_errors.load(Relaxed),
            t.fills_dropped_stale.load(Relaxed),
            c.fences.load(Relaxed),
            reasons.join(", ")
        );
        if let Some(l2) = ctx.cache.l2.as_ref() {
            let r = &l2.counters;
            line.push_str(&format!(
                "; Redis: {} hits, {} misses, {} puts, {} invalidations, {} errors",
                r.hits.load(Relaxed),
                r.misses.load(Relaxed),
                r.puts.load(Relaxed),
                r.invalidations.load(Relaxed),
                r.errors.load(Relaxed)
            ));
        }
        Some(line)
    }
    /// Graceful shutdown on the proxy's own runtime, waited for on a plain channel (this may
    /// run inside the runner's runtime, where `block_on` is not allowed), then the runtime
    /// is let go without blocking.
    fn stop(&mut self) {
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        if let Some(handle) = self.handle.take() {
            let (done, wait) = std::sync::mpsc::channel();
            runtime.handle().spawn(async move {
                handle.shutdown().await;
                let _ = done.send(());
            });
            let _ = wait.recv_timeout(PROXY_STOP_TIMEOUT);
        }
        // Dropping `runtime` stops it without waiting for its tasks.
    }
}

impl Drop for Pgpolyglot {
    fn drop(&mut self) {
        self.stop();
    }
}
