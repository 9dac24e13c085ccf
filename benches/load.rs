//! The load runner: what a pgpolyglot hop costs next to direct PostgreSQL, PgBouncer and
//! HAProxy, measured with pgbench on one machine, in one run, on the same data.
//!
//! ```text
//! cargo bench --bench load                                   # defaults: 10 s × 3 reps, ~25 min
//! PGPOLYGLOT_BENCH_SECS=3 PGPOLYGLOT_BENCH_REPS=1 cargo bench --bench load   # quick check
//! ```
//!
//! Knobs (environment): `PGPOLYGLOT_BENCH_SECS` (per run, default 10), `PGPOLYGLOT_BENCH_REPS`
//! (default 3), `PGPOLYGLOT_BENCH_CLIENTS` (default `1,8,32`), `PGPOLYGLOT_BENCH_MODES`
//! (default `simple,extended,prepared`), `PGPOLYGLOT_BENCH_TARGETS` (default all of `direct,
//! pgbouncer-session,pgbouncer-transaction,haproxy,pgpolyglot,pgpolyglot-stats-off,
//! pgpolyglot-cache,pgpolyglot-cache-redis,pgpolyglot-cache-coalesced,pgpolyglot-search,
//! pgpolyglot-search-osmem`), `PGPOLYGLOT_BENCH_WORKLOADS` (default `select-only`; also `zipf-reads`,
//! `zipf-90-10`), `PGPOLYGLOT_BENCH_OUT` (result file name, default `passthrough`).
//!
//! The hot-key cache benchmark:
//!
//! ```text
//! PGPOLYGLOT_BENCH_WORKLOADS=zipf-reads,zipf-90-10 PGPOLYGLOT_BENCH_CLIENTS=32 \
//!   PGPOLYGLOT_BENCH_MODES=simple,prepared \
//!   PGPOLYGLOT_BENCH_TARGETS=direct,pgbouncer-session,pgpolyglot,pgpolyglot-cache \
//!   PGPOLYGLOT_BENCH_OUT=cache cargo bench --bench load
//! ```
//!
//! With `pgpolyglot-cache` running, the runner also measures the change feed: Zipf updates
//! straight to Postgres at 1,000 per second, and the delay from each commit to its being
//! applied to the cache (p50/p99), reported under the table.
//!
//! Why it is built this way:
//! - Client, proxies and Postgres share two cores, so absolute numbers drift from run to run;
//!   only ratios from one run mean something. Hence every target runs in the same process
//!   lifetime against the same cluster, and targets are interleaved (in rotated order) within
//!   each repetition, so drift hits all of them alike. Medians over repetitions.
//! - The runner itself must stay out of the way: its own runtime has one thread and sleeps
//!   while pgbench runs; pgpolyglot gets a runtime of its own, as `pgpolyglot serve` would.
//! - Everything started is stopped on every path: targets and Postgres are dropped (their
//!   `Drop` stops them), pgbench is killed on timeout, and Ctrl-C/SIGTERM unwinds the same way.
//! - New benchmarks (hot-key cache, text search) plug in a [`pgbench::Workload`] and, if they
//!   need one, a [`targets::TargetKind`] (e.g. pgpolyglot with a cache policy).
//!
//! Results: a Markdown table on stdout and in `benches/results/passthrough.md`, raw numbers in
//! `benches/results/passthrough.json`.

#[path = "load/pgbench.rs"]
mod pgbench;
#[path = "load/process.rs"]
mod process;
#[path = "load/report.rs"]
mod report;
#[path = "load/search.rs"]
mod search;
#[path = "load/targets.rs"]
mod targets;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use pgpolyglot::embedded_pg::{EmbeddedPgOptions, EmbeddedPostgres};

use pgbench::{Mode, RunOutcome, RunSpec, Workload};
use process::{find_program, version_line, BenchResult, Context};
use report::{Header, Measurement, Section, Status};
use targets::{CacheCounts, Target, TargetEnv, TargetKind};

/// The database the workloads live in (created by the runner, never `postgres`).
const DB: &str = "bench";
/// The user every client connects as (the embedded cluster's superuser, trust auth).
const USER: &str = "postgres";
/// How long the embedded cluster may take to come up and be set up.
const PG_START_TIMEOUT: Duration = Duration::from_secs(120);
/// Warm-up per target: fills PgBouncer's pools and the caches, and proves the target works
/// before the long matrix starts. Not recorded.
const WARMUP_SECS: u64 = 2;
const WARMUP_CLIENTS: u32 = 8;
/// A cache target's warm-up, by default: its statistics need about half a minute of the
/// workload before the placement settles (with Zipf(1.1) keys, ~160k keys placed and ~91 %
/// of reads hit after 30 s at 32 clients, 67 % in the first 5 s). The matrix measures that
/// steady state; the warm-up's own throughput and hit rate are reported as the cold start.
const CACHE_WARMUP_SECS: &str = "40";

/// The settings of one run, from the environment.
struct Knobs {
    secs: u64,
    reps: u32,
    clients: Vec<u32>,
    modes: Vec<Mode>,
    targets: Vec<TargetKind>,
    workloads: Vec<Workload>,
    out: String,
    /// Warm-up of targets with a cache (`PGPOLYGLOT_BENCH_CACHE_WARMUP_SECS`).
    cache_warmup_secs: u64,
}

impl Knobs {
    fn from_env() -> BenchResult<Knobs> {
        let secs = env_or("PGPOLYGLOT_BENCH_SECS", "10")?;
        let reps = env_or("PGPOLYGLOT_BENCH_REPS", "3")?;
        let clients = env_or("PGPOLYGLOT_BENCH_CLIENTS", "1,8,32")?;
        let modes = env_or("PGPOLYGLOT_BENCH_MODES", "simple,extended,prepared")?;
        let all: Vec<&str> = TargetKind::ALL.iter().map(|k| k.name()).collect();
        let targets = env_or("PGPOLYGLOT_BENCH_TARGETS", &all.join(","))?;
        let workloads = env_or("PGPOLYGLOT_BENCH_WORKLOADS", "select-only")?;
        let out = env_or("PGPOLYGLOT_BENCH_OUT", "passthrough")?;
        let cache_warmup = env_or("PGPOLYGLOT_BENCH_CACHE_WARMUP_SECS", CACHE_WARMUP_SECS)?;
        if out.is_empty()
            || !out
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "PGPOLYGLOT_BENCH_OUT={out:?}: letters, digits, - and _ only"
            ));
        }
        let knobs = Knobs {
            workloads: list(&workloads)
                .map(Workload::by_name)
                .collect::<BenchResult<_>>()?,
            out,
            cache_warmup_secs: cache_warmup
                .parse()
                .context(|| format!("PGPOLYGLOT_BENCH_CACHE_WARMUP_SECS={cache_warmup:?}"))?,
            secs: secs
                .parse()
                .context(|| format!("PGPOLYGLOT_BENCH_SECS={secs:?}"))?,
            reps: reps
                .parse()
                .context(|| format!("PGPOLYGLOT_BENCH_REPS={reps:?}"))?,
            clients: list(&clients)
                .map(|c| {
                    c.parse::<u32>()
                        .context(|| format!("PGPOLYGLOT_BENCH_CLIENTS item {c:?}"))
                })
                .collect::<BenchResult<_>>()?,
            modes: list(&modes).map(Mode::parse).collect::<BenchResult<_>>()?,
            targets: list(&targets)
                .map(TargetKind::parse)
                .collect::<BenchResult<_>>()?,
        };
        if knobs.secs == 0 || knobs.reps == 0 {
            return Err(
                "PGPOLYGLOT_BENCH_SECS and PGPOLYGLOT_BENCH_REPS must be at least 1".into(),
            );
        }
        if knobs.clients.is_empty()
            || knobs.clients.contains(&0)
            || knobs.clients.iter().any(|&c| c > 100)
        {
            return Err(
                "PGPOLYGLOT_BENCH_CLIENTS: give 1 to 100 clients per item (PgBouncer's \
                        max_client_conn and Postgres's max_connections are sized for that)"
                    .into(),
            );
        }
        if knobs.modes.is_empty() || knobs.targets.is_empty() || knobs.workloads.is_empty() {
            return Err("PGPOLYGLOT_BENCH_MODES, _TARGETS and _WORKLOADS must not be empty".into());
        }
        Ok(knobs)
    }

    /// The knobs as the report prints them.
    fn describe(&self) -> Vec<(String, String)> {
        let join = |items: Vec<String>| items.join(",");
        vec![
            ("PGPOLYGLOT_BENCH_SECS".into(), self.secs.to_string()),
            ("PGPOLYGLOT_BENCH_REPS".into(), self.reps.to_string()),
            (
                "PGPOLYGLOT_BENCH_CLIENTS".into(),
                join(self.clients.iter().map(|c| c.to_string()).collect()),
            ),
            (
                "PGPOLYGLOT_BENCH_MODES".into(),
                join(self.modes.iter().map(|m| m.as_str().to_string()).collect()),
            ),
            (
                "PGPOLYGLOT_BENCH_TARGETS".into(),
                join(self.targets.iter().map(|t| t.name().to_string()).collect()),
            ),
            (
                "PGPOLYGLOT_BENCH_WORKLOADS".into(),
                join(self.workloads.iter().map(|w| w.name.to_string()).collect()),
            ),
            (
                "PGPOLYGLOT_BENCH_CACHE_WARMUP_SECS".into(),
                self.cache_warmup_secs.to_string(),
            ),
        ]
    }
}

fn env_or(name: &str, default: &str) -> BenchResult<String> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(v),
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok(default.to_string()),
        Err(e) => Err(format!("{name}: {e}")),
    }
}

fn list(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn main() -> ExitCode {
    // `cargo test --all-targets` also executes harness-less benches; only `cargo bench`
    // passes `--bench`. A 25-minute load run has no place in a test run.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("load: not run (use `cargo bench --bench load`)");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("load: cannot build the runner's runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        tokio::select! {
            result = run() => result,
            signal = interrupted() => Err(format!("interrupted by {signal}; everything started was stopped")),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM, so that dropping the `run` future stops what it started.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        },
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}

async fn run() -> BenchResult<()> {
    if std::env::var("PGPOLYGLOT_BENCH_WORKLOADS").is_ok_and(|w| w.trim() == "search") {
        return run_search().await;
    }
    let knobs = Knobs::from_env()?;
    let load_before = process::load_average();
    let workloads = knobs.workloads.clone();
    let mut notes = Vec::new();

    eprintln!("load: starting PostgreSQL");
    let pg = tokio::time::timeout(
        PG_START_TIMEOUT,
        EmbeddedPostgres::start(EmbeddedPgOptions {
            // Room for every target's connections (PgBouncer keeps its pools open), and
            // shared buffers that hold all of scale 10 (~150 MB), so runs measure the hop
            // rather than buffer misses.
            extra_conf: vec![
                ("max_connections".into(), "200".into()),
                ("shared_buffers".into(), "256MB".into()),
                // Postgres's default (the embedded cluster turns it off for test speed):
                // with it off, WAL reaches the change feed only every wal_writer_delay.
                ("synchronous_commit".into(), "on".into()),
            ],
            ..EmbeddedPgOptions::default()
        }),
    )
    .await
    .map_err(|_| format!("PostgreSQL did not start within {PG_START_TIMEOUT:?}"))?
    .context(|| "starting the embedded PostgreSQL".to_string())?;
    let pgbench = find_program(
        "pgbench",
        &[pg.bin_dir()],
        "apt-get install postgresql (pgbench ships with the server)",
    )?;
    prepare_database(&pg, &pgbench, &workloads).await?;

    let env = TargetEnv {
        pg_port: pg.port(),
        run_as: process::unprivileged_user()?,
    };
    let mut running = start_targets(&knobs.targets, &env, &mut notes).await;
    let log_dir = process::work_dir("pgpolyglot-bench-pgbench-", None)?;
    let warm = WarmUp {
        pgbench: &pgbench,
        workload: &workloads[0],
        dir: log_dir.path(),
        cache_secs: knobs.cache_warmup_secs,
        cache_clients: knobs
            .clients
            .iter()
            .copied()
            .max()
            .unwrap_or(WARMUP_CLIENTS),
    };
    let warmed = warm_up(&mut running, &warm, &mut notes).await;

    let mut runs = Vec::new();
    for workload in &workloads {
        run_matrix(
            &knobs,
            workload,
            &running,
            &pgbench,
            log_dir.path(),
            &mut runs,
        )
        .await;
    }
    for target in &running {
        if let Some(mut line) = target.cache_summary() {
            let before = warmed.iter().find(|(name, _)| name == target.name());
            if let (Some((_, before)), Some(now)) = (before, target.cache_counts()) {
                let after = now.since(*before);
                line.push_str(&format!(
                    "; after the warm-up (the measured runs and the change feed's lag run): {} hits, {} misses ({:.1} % hits)",
                    after.hits,
                    after.misses,
                    after.hit_percent()
                ));
            }
            eprintln!("load: {line}");
            notes.push(line);
        }
    }
    if let Some(line) = feed_lag(&running, &pgbench, pg.port(), knobs.secs, log_dir.path()).await {
        eprintln!("load: {line}");
        notes.push(line);
    }
    for target in running.iter_mut() {
        target.stop();
    }
    drop(running);

    let header = Header {
        date: process::utc_now(),
        nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu: cpu_model(),
        load_before,
        load_after: process::load_average(),
        versions: versions(&pg, &pgbench, &knobs.targets),
        knobs: knobs.describe(),
        notes,
    };
    drop(pg);
    let names: Vec<String> = knobs.targets.iter().map(|t| t.name().to_string()).collect();
    let sections: Vec<Section<'_>> = workloads
        .iter()
        .map(|w| Section {
            workload: w.name,
            description: w.description,
            modes: &knobs.modes,
            clients: &knobs.clients,
        })
        .collect();
    let markdown = report::markdown(&header, &sections, &names, &runs, knobs.reps as usize);
    let json = report::json(&header, &sections, &names, &runs);
    println!("{markdown}");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/results");
    std::fs::create_dir_all(&dir).context(|| format!("creating {}", dir.display()))?;
    write(&dir.join(format!("{}.md", knobs.out)), &markdown)?;
    write(&dir.join(format!("{}.json", knobs.out)), &json)?;
    eprintln!("load: wrote {}/{}.{{md,json}}", dir.display(), knobs.out);
    Ok(())
}

/// Writes at 1,000 per second straight to Postgres while the cache target's change feed
/// carries them into its cache; the commit-to-applied delay, as one line for the report.
async fn feed_lag(
    running: &[Box<dyn Target>],
    pgbench: &Path,
    pg_port: u16,
    secs: u64,
    dir: &Path,
) -> Option<String> {
    const RATE: u32 = 1000;
    let target = running.iter().find(|t| t.apply_delay().is_some())?;
    let workload = Workload::zipf_writes();
    let spec = RunSpec {
        pgbench,
        port: pg_port,
        user: USER,
        db: DB,
        workload: &workload,
        mode: Mode::Prepared,
        clients: 4,
        secs,
        dir,
        tag: "feed-lag",
        latency_log: false,
        rate: Some(RATE),
    };
    // Reset, run, read.
    target.apply_delay();
    let outcome = pgbench::run(&spec).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let d = target.apply_delay()?;
    Some(match outcome {
        Ok(o) => format!(
            "change feed lag ({}): {:.0} writes/s straight to Postgres for {secs} s (target {RATE}/s); \
             commit → applied in the cache: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} transactions",
            target.name(),
            o.tps,
            d.p50_ms,
            d.p99_ms,
            d.max_ms,
            d.transactions
        ),
        Err(e) => format!("change feed lag: the write run failed: {e}"),
    })
}

fn write(path: &PathBuf, text: &str) -> BenchResult<()> {
    std::fs::write(path, text).context(|| format!("writing {}", path.display()))
}

/// Creates the benchmark database and runs every workload's setup, directly against Postgres.
async fn prepare_database(
    pg: &EmbeddedPostgres,
    pgbench: &Path,
    workloads: &[Workload],
) -> BenchResult<()> {
    let admin = pg
        .connect(USER, "postgres")
        .await
        .context(|| "connecting to the embedded PostgreSQL".to_string())?;
    admin
        .batch_execute(&format!("CREATE DATABASE {DB}"))
        .await
        .context(|| format!("CREATE DATABASE {DB}"))?;
    let client = pg
        .connect(USER, DB)
        .await
        .context(|| format!("connecting to database {DB}"))?;
    let mut done: Vec<String> = Vec::new();
    for workload in workloads {
        // Workloads on the same tables share one setup.
        let key = format!("{:?}", workload.setup);
        if done.contains(&key) {
            continue;
        }
        eprintln!("load: setting up workload {}", workload.name);
        pgbench::setup(workload, pgbench, pg.port(), USER, DB, &client).await?;
        done.push(key);
    }
    Ok(())
}

/// The text-search benchmark ([`search`]): its own tables, peers and report.
async fn run_search() -> BenchResult<()> {
    let out = env_or("PGPOLYGLOT_BENCH_OUT", "search")?;
    eprintln!("load: starting PostgreSQL");
    let pg = tokio::time::timeout(
        PG_START_TIMEOUT,
        EmbeddedPostgres::start(EmbeddedPgOptions {
            extra_conf: vec![
                ("max_connections".into(), "200".into()),
                ("shared_buffers".into(), "1GB".into()),
                ("synchronous_commit".into(), "on".into()),
            ],
            ..EmbeddedPgOptions::default()
        }),
    )
    .await
    .map_err(|_| format!("PostgreSQL did not start within {PG_START_TIMEOUT:?}"))?
    .context(|| "starting the embedded PostgreSQL".to_string())?;
    let env = TargetEnv {
        pg_port: pg.port(),
        run_as: process::unprivileged_user()?,
    };
    search::run(&pg, &env, &out).await
}

/// Starts the chosen targets. One that fails to start is left out with a note (its cells
/// read "—"), so a broken proxy build still yields the reference numbers.
async fn start_targets(
    kinds: &[TargetKind],
    env: &TargetEnv,
    notes: &mut Vec<String>,
) -> Vec<Box<dyn Target>> {
    let mut running = Vec::new();
    for kind in kinds {
        eprintln!("load: starting {}", kind.name());
        match kind.start(env).await {
            Ok(target) => running.push(target),
            Err(e) => {
                eprintln!("load: {} failed to start: {e}", kind.name());
                notes.push(format!("{} failed to start: {e}", kind.name()));
            }
        }
    }
    running
}

/// What the warm-up runs.
struct WarmUp<'a> {
    pgbench: &'a Path,
    workload: &'a Workload,
    dir: &'a Path,
    /// Seconds and clients for a target with a cache (others get [`WARMUP_SECS`] at
    /// [`WARMUP_CLIENTS`]).
    cache_secs: u64,
    cache_clients: u32,
}

/// An unrecorded run per target: short for most, long enough for a cache to settle (its
/// throughput and hit rate are noted as the cold start). A target that fails it is stopped
/// and left out. Returns each cache target's counters at the warm-up's end.
async fn warm_up(
    running: &mut Vec<Box<dyn Target>>,
    warm: &WarmUp<'_>,
    notes: &mut Vec<String>,
) -> Vec<(String, CacheCounts)> {
    let mut kept = Vec::new();
    let mut counts = Vec::new();
    for mut target in running.drain(..) {
        let cached = target.cache_counts().is_some() && warm.cache_secs > 0;
        let (clients, secs) = if cached {
            (warm.cache_clients, warm.cache_secs)
        } else {
            (WARMUP_CLIENTS, WARMUP_SECS)
        };
        let spec = RunSpec {
            pgbench: warm.pgbench,
            port: target.port(),
            user: USER,
            db: DB,
            workload: warm.workload,
            mode: Mode::Simple,
            clients,
            secs,
            dir: warm.dir,
            tag: "warmup",
            latency_log: false,
            rate: None,
        };
        eprintln!("load: warming up {} ({secs} s)", target.name());
        match pgbench::run(&spec).await {
            Ok(outcome) => {
                if let Some(c) = target.cache_counts().filter(|_| cached) {
                    notes.push(format!(
                        "{}: cache warm-up (cold start), {secs} s of {} at {clients} clients, simple protocol: {:.0} TPS, {:.1} % of reads from the cache, {} entries placed at its end",
                        target.name(),
                        warm.workload.name,
                        outcome.tps,
                        c.hit_percent(),
                        c.entries
                    ));
                    counts.push((target.name().to_string(), c));
                }
                kept.push(target)
            }
            Err(e) => {
                eprintln!("load: warm-up through {} failed: {e}", target.name());
                notes.push(format!(
                    "warm-up through {} failed, target left out: {e}",
                    target.name()
                ));
                target.stop();
            }
        }
    }
    *running = kept;
    counts
}

/// Every (repetition, mode, clients, target) of one workload. Targets are rotated per cell so
/// that no target always runs first (e.g. right after another target's heavy run).
async fn run_matrix(
    knobs: &Knobs,
    workload: &Workload,
    targets: &[Box<dyn Target>],
    pgbench: &Path,
    dir: &Path,
    runs: &mut Vec<Measurement>,
) {
    let mut cell = 0usize;
    for rep in 1..=knobs.reps {
        for &mode in &knobs.modes {
            for &clients in &knobs.clients {
                cell += 1;
                for i in 0..targets.len() {
                    let target = &targets[(i + cell + rep as usize) % targets.len()];
                    let status = measure(
                        target.as_ref(),
                        workload,
                        mode,
                        clients,
                        knobs.secs,
                        pgbench,
                        dir,
                    )
                    .await;
                    eprintln!(
                        "load: rep {rep}/{} {} {:<8} c={clients:<3} {:<22} {}",
                        knobs.reps,
                        workload.name,
                        mode.as_str(),
                        target.name(),
                        describe(&status)
                    );
                    runs.push(Measurement {
                        workload: workload.name,
                        mode,
                        clients,
                        target: target.name().to_string(),
                        rep,
                        status,
                    });
                }
            }
        }
    }
}

async fn measure(
    target: &dyn Target,
    workload: &Workload,
    mode: Mode,
    clients: u32,
    secs: u64,
    pgbench: &Path,
    dir: &Path,
) -> Status {
    if let Some(reason) = target.unsupported(mode) {
        return Status::NotApplicable(reason);
    }
    let tag = format!(
        "{}-{}-{}-{clients}",
        workload.name,
        target.name(),
        mode.as_str()
    );
    let spec = RunSpec {
        pgbench,
        port: target.port(),
        user: USER,
        db: DB,
        workload,
        mode,
        clients,
        secs,
        dir,
        tag: &tag,
        latency_log: true,
        rate: None,
    };
    match pgbench::run(&spec).await {
        Ok(outcome) => Status::Ok(outcome),
        Err(e) => Status::Failed(e),
    }
}

fn describe(status: &Status) -> String {
    match status {
        Status::Ok(RunOutcome {
            tps,
            p50_us,
            p99_us,
            ..
        }) => format!("{tps:>9.0} tps  p50 {p50_us:>6.0} µs  p99 {p99_us:>6.0} µs"),
        Status::NotApplicable(reason) => format!("n/a ({reason})"),
        Status::Failed(e) => format!("FAILED: {}", e.lines().last().unwrap_or("")),
    }
}

fn versions(pg: &EmbeddedPostgres, pgbench: &Path, kinds: &[TargetKind]) -> Vec<(String, String)> {
    let mut out = vec![
        (
            "postgres".to_string(),
            version_line(&pg.bin_dir().join("postgres"), &["--version"]),
        ),
        ("pgbench".to_string(), version_line(pgbench, &["--version"])),
    ];
    for kind in kinds {
        let what = match kind {
            TargetKind::PgbouncerSession | TargetKind::PgbouncerTransaction => "pgbouncer",
            other => other.name(),
        };
        if out.iter().any(|(w, _)| w == what) {
            continue;
        }
        if let Some(version) = kind.version() {
            out.push((what.to_string(), version));
        }
    }
    out
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
