//! Workloads and one pgbench run: the command line, its output, its per-transaction log.
//!
//! pgbench is the load generator because it is what people quote for Postgres poolers, so
//! numbers from here compare with numbers elsewhere. Throughput comes from pgbench's own
//! "tps = ... (without initial connection time)" line; latency percentiles are computed here
//! from the per-transaction log (`-l`), because pgbench itself prints only the average.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::process::{clean_command, BenchResult, Context};

/// Extra time a run may take beyond its `-T` duration (connecting 32 clients, writing logs)
/// before it is killed and counted as failed.
const RUN_SLACK: Duration = Duration::from_secs(60);

/// pgbench's `-M`: which protocol the clients speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Simple query protocol: one `Query` message per statement.
    Simple,
    /// Extended protocol with unnamed statements: Parse/Bind/Execute every time.
    Extended,
    /// Extended protocol with named prepared statements: Bind/Execute after the first time.
    Prepared,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Simple => "simple",
            Mode::Extended => "extended",
            Mode::Prepared => "prepared",
        }
    }

    pub fn parse(text: &str) -> BenchResult<Mode> {
        match text {
            "simple" => Ok(Mode::Simple),
            "extended" => Ok(Mode::Extended),
            "prepared" => Ok(Mode::Prepared),
            other => Err(format!(
                "unknown pgbench mode {other:?} (expected simple, extended or prepared)"
            )),
        }
    }
}

/// One step that prepares the database for a workload, run once, directly against Postgres,
/// before anything is measured.
#[derive(Debug, Clone)]
pub enum SetupStep {
    /// `pgbench -i -s SCALE` (pgbench vacuums what it creates).
    PgbenchInit { scale: u32 },
    /// SQL sent as one simple query, e.g. tables for a cache workload. Several statements
    /// are allowed but run as one implicit transaction.
    Sql(String),
}

/// A custom pgbench script file, passed as `-f FILE@WEIGHT`.
#[derive(Debug, Clone)]
pub struct Script {
    pub file_name: String,
    pub text: String,
    pub weight: u32,
}

/// What the clients do. New benchmarks (hot-key cache, text search) add a `Workload` with
/// their own setup and scripts; the runner, the targets and the report stay as they are.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Short name used in file names, the JSON and the report (`select-only`).
    pub name: &'static str,
    /// One sentence for the report.
    pub description: &'static str,
    /// pgbench arguments that define the transactions (e.g. `-S`), besides the scripts.
    pub pgbench_args: Vec<String>,
    /// Script files written to the run directory and passed with `-f`.
    pub scripts: Vec<Script>,
    /// Run once before the first measurement.
    pub setup: Vec<SetupStep>,
}

impl Workload {
    /// `pgbench -S` on a scale-10 database: one primary-key lookup per transaction, the
    /// standard measure of what a hop costs.
    pub fn select_only() -> Workload {
        Workload {
            name: "select-only",
            description:
                "pgbench -S (one SELECT by primary key on pgbench_accounts), scale 10, prewarmed",
            pgbench_args: vec!["-S".into()],
            scripts: Vec::new(),
            // Runs use `-n` (no vacuum before each run), so analyze once here; prewarm so the
            // first measured runs do not pay for buffer misses the later ones do not see.
            setup: vec![
                SetupStep::PgbenchInit { scale: 10 },
                // Separate steps: several statements in one simple query form one implicit
                // transaction, and VACUUM refuses to run in one.
                SetupStep::Sql("VACUUM ANALYZE".into()),
                SetupStep::Sql("CREATE EXTENSION IF NOT EXISTS pg_prewarm".into()),
                SetupStep::Sql(
                    "SELECT pg_prewarm(c.oid) FROM pg_class c \
                     WHERE c.relname LIKE 'pgbench\\_%' AND c.relkind IN ('r', 'i')"
                        .into(),
                ),
            ],
        }
    }
}

/// Rows in `pgbench_accounts` at scale 10 (the Zipf workloads draw keys from all of them).
pub const ACCOUNTS: u32 = 1_000_000;

/// Fraction of transactions pgbench writes to its latency log (`--sampling-rate`): a log
/// line per transaction costs the client a measurable share of its CPU on two cores (the
/// same for every target, which narrows every ratio); a tenth of a 10 s run still gives
/// tens of thousands of latencies per percentile.
pub const LATENCY_SAMPLING: f64 = 0.1;

impl Workload {
    /// Point reads of `pgbench_accounts` by primary key with Zipf(s = 1.1) keys over its
    /// 1,000,000 rows: the hot-key cache's workload.
    pub fn zipf_reads() -> Workload {
        Workload {
            name: "zipf-reads",
            description: "SELECT abalance FROM pgbench_accounts WHERE aid = :aid, aid ~ Zipf(1.1) over 1,000,000 rows, scale 10, prewarmed",
            pgbench_args: Vec::new(),
            scripts: vec![Script {
                file_name: "zipf-read.sql".into(),
                text: zipf_read(),
                weight: 1,
            }],
            setup: Workload::select_only().setup,
        }
    }

    /// The same reads, 90 %, and 10 % single-row updates of Zipf keys (which the change feed
    /// must carry into the cache).
    pub fn zipf_90_10() -> Workload {
        Workload {
            name: "zipf-90-10",
            description: "90 % zipf-reads, 10 % UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid (same Zipf keys)",
            pgbench_args: Vec::new(),
            scripts: vec![
                Script {
                    file_name: "zipf-read.sql".into(),
                    text: zipf_read(),
                    weight: 9,
                },
                Script {
                    file_name: "zipf-write.sql".into(),
                    text: zipf_write(),
                    weight: 1,
                },
            ],
            setup: Workload::select_only().setup,
        }
    }

    /// Zipf updates only (the change feed's lag is measured under these, at a fixed rate).
    pub fn zipf_writes() -> Workload {
        Workload {
            name: "zipf-writes",
            description:
                "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid, Zipf keys",
            pgbench_args: Vec::new(),
            scripts: vec![Script {
                file_name: "zipf-write.sql".into(),
                text: zipf_write(),
                weight: 1,
            }],
            setup: Vec::new(),
        }
    }

    pub fn by_name(name: &str) -> BenchResult<Workload> {
        match name {
            "select-only" => Ok(Workload::select_only()),
            "zipf-reads" => Ok(Workload::zipf_reads()),
            "zipf-90-10" => Ok(Workload::zipf_90_10()),
            other => Err(format!(
                "unknown workload {other:?} (known: select-only, zipf-reads, zipf-90-10)"
            )),
        }
    }
}

fn zipf_read() -> String {
    format!(
        "\\set aid random_zipfian(1, {ACCOUNTS}, 1.1)\nSELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n"
    )
}

fn zipf_write() -> String {
    format!(
        "\\set aid random_zipfian(1, {ACCOUNTS}, 1.1)\nUPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;\n"
    )
}

/// Where and how one pgbench run connects and what it runs.
pub struct RunSpec<'a> {
    pub pgbench: &'a Path,
    pub port: u16,
    pub user: &'a str,
    pub db: &'a str,
    pub workload: &'a Workload,
    pub mode: Mode,
    pub clients: u32,
    pub secs: u64,
    /// Directory for the script files and the per-transaction logs (one per run, cleaned).
    pub dir: &'a Path,
    /// Unique per run: the per-transaction log prefix.
    pub tag: &'a str,
    /// Whether to write and read the per-transaction log (off for warm-up runs).
    pub latency_log: bool,
    /// `-R`: a fixed transaction rate (per second) instead of as fast as possible.
    pub rate: Option<u32>,
}

/// What one run measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOutcome {
    /// pgbench's tps excluding connection time.
    pub tps: f64,
    /// Median and 99th percentile of per-transaction latency, µs (0 without a log).
    pub p50_us: f64,
    pub p99_us: f64,
    /// Transactions in the (sampled) log (0 without a log).
    pub transactions: u64,
}

/// Runs pgbench once. Errors carry pgbench's own output, so a failing target explains itself.
pub async fn run(spec: &RunSpec<'_>) -> BenchResult<RunOutcome> {
    let mut cmd = tokio::process::Command::from(clean_command(spec.pgbench));
    cmd.env("PGSSLMODE", "disable")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &spec.port.to_string(),
            "-U",
            spec.user,
        ])
        .args(["-n", "-M", spec.mode.as_str()])
        .args(["-c", &spec.clients.to_string()])
        .args(["-j", &spec.clients.clamp(1, 2).to_string()])
        .args(["-T", &spec.secs.to_string()])
        .args(&spec.workload.pgbench_args);
    if let Some(rate) = spec.rate {
        cmd.args(["-R", &rate.to_string()]);
    }
    for script in &spec.workload.scripts {
        let path = spec.dir.join(&script.file_name);
        std::fs::write(&path, &script.text).context(|| format!("writing {}", path.display()))?;
        cmd.arg("-f")
            .arg(format!("{}@{}", path.display(), script.weight));
    }
    let prefix = spec.dir.join(spec.tag);
    if spec.latency_log {
        cmd.arg("-l")
            .arg(format!("--sampling-rate={LATENCY_SAMPLING}"))
            .arg(format!("--log-prefix={}", prefix.display()));
    }
    cmd.arg(spec.db)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let limit = Duration::from_secs(spec.secs) + RUN_SLACK;
    let output = tokio::time::timeout(limit, cmd.output())
        .await
        .map_err(|_| format!("pgbench did not finish within {limit:?}; killed"))?
        .context(|| format!("running {}", spec.pgbench.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let logs = log_files(spec.dir, spec.tag)?;
    let result = outcome(output.status.success(), &stdout, &stderr, &logs);
    for file in &logs {
        let _ = std::fs::remove_file(file);
    }
    result
}

/// Checks pgbench's verdict, parses tps and reads the latency logs.
fn outcome(success: bool, stdout: &str, stderr: &str, logs: &[PathBuf]) -> BenchResult<RunOutcome> {
    let aborted = stdout.contains("aborted") || stderr.contains("aborted in command");
    if !success || aborted {
        return Err(format!(
            "pgbench failed:\n{}",
            last_lines(&format!("{stdout}\n{stderr}"), 12)
        ));
    }
    let tps = parse_tps(stdout).ok_or_else(|| {
        format!(
            "no \"tps = ... (without initial connection time)\" line in pgbench's output:\n{}",
            last_lines(stdout, 12)
        )
    })?;
    let mut run = RunOutcome {
        tps,
        ..RunOutcome::default()
    };
    if !logs.is_empty() {
        let mut latencies = Vec::new();
        for file in logs {
            read_latencies(file, &mut latencies)?;
        }
        if latencies.is_empty() {
            return Err("pgbench's per-transaction log is empty".into());
        }
        latencies.sort_unstable();
        run.p50_us = percentile(&latencies, 0.50);
        run.p99_us = percentile(&latencies, 0.99);
        run.transactions = latencies.len() as u64;
    }
    Ok(run)
}

/// `tps = 24123.456789 (without initial connection time)` → 24123.456789.
pub fn parse_tps(stdout: &str) -> Option<f64> {
    stdout
        .lines()
        .find(|l| l.starts_with("tps = ") && l.contains("without initial connection time"))
        .and_then(|l| l["tps = ".len()..].split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// pgbench writes `PREFIX.PID` and, with `-j 2`, `PREFIX.PID.1` for the second thread.
fn log_files(dir: &Path, tag: &str) -> BenchResult<Vec<PathBuf>> {
    let wanted = format!("{tag}.");
    let entries = std::fs::read_dir(dir).context(|| format!("listing {}", dir.display()))?;
    Ok(entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&wanted))
        .map(|e| e.path())
        .collect())
}

/// Appends the latency column (3rd, µs) of a pgbench log. Lines whose 3rd column is not a
/// number (`failed`, `skipped`) are not latencies and are left out.
fn read_latencies(path: &Path, into: &mut Vec<u64>) -> BenchResult<()> {
    let text = std::fs::read_to_string(path).context(|| format!("reading {}", path.display()))?;
    into.extend(
        text.lines()
            .filter_map(|line| line.split_ascii_whitespace().nth(2))
            .filter_map(|field| field.parse::<u64>().ok()),
    );
    Ok(())
}

/// Nearest-rank percentile of sorted values (`q` in 0..=1).
pub fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Prepares the database: runs the workload's setup steps directly against Postgres.
pub async fn setup(
    workload: &Workload,
    pgbench: &Path,
    port: u16,
    user: &str,
    db: &str,
    client: &tokio_postgres::Client,
) -> BenchResult<()> {
    for step in &workload.setup {
        match step {
            SetupStep::PgbenchInit { scale } => {
                let mut cmd = tokio::process::Command::from(clean_command(pgbench));
                cmd.env("PGSSLMODE", "disable")
                    .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", user])
                    .args(["-i", "-q", "-s", &scale.to_string(), db])
                    .kill_on_drop(true);
                let limit = Duration::from_secs(600);
                let out = tokio::time::timeout(limit, cmd.output())
                    .await
                    .map_err(|_| format!("pgbench -i did not finish within {limit:?}"))?
                    .context(|| format!("running {} -i", pgbench.display()))?;
                if !out.status.success() {
                    return Err(format!(
                        "pgbench -i -s {scale} failed:\n{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
            }
            SetupStep::Sql(sql) => client
                .batch_execute(sql)
                .await
                .context(|| format!("setup SQL of workload {}", workload.name))?,
        }
    }
    Ok(())
}
