//! The `pgpolyglot` command: `serve`, `demo`, `check-policies`, `plan`.

use clap::{Args, Parser, Subcommand};
use pgpolyglot::config::{policy, Config};
use std::path::PathBuf;
use std::process::ExitCode;
use tracing::{error, info};

#[derive(Parser)]
#[command(
    name = "pgpolyglot",
    version,
    about = "A PostgreSQL-wire proxy that keeps Postgres the source of truth"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve(ServeArgs),
    /// Start a throwaway PostgreSQL with sample data and the proxy in front of it; prints the
    /// psql command to connect. Ctrl-C stops and removes everything.
    Demo {
        /// Address for the proxy (a free port is chosen if this one is taken).
        #[arg(long, default_value = "127.0.0.1:6432")]
        listen: String,
    },
    /// Validate placement policies; errors name the file and line.
    CheckPolicies {
        /// Directory of *.toml policies.
        #[arg(default_value = "policies")]
        dir: PathBuf,
    },
    /// Dry run of placement: what the policies on disk and the running proxy's live
    /// statistics (read from its HTTP endpoint) would place right now.
    Plan(PlanArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// Config file (default: ./pgpolyglot.toml when it exists).
    #[arg(long, env = "PGPOLYGLOT_CONFIG")]
    config: Option<PathBuf>,
    /// Address to accept clients on [default: 127.0.0.1:6432].
    #[arg(long, env = "PGPOLYGLOT_LISTEN")]
    listen: Option<String>,
    /// Upstream PostgreSQL URL, e.g. postgres://app@127.0.0.1:5432/app?sslmode=prefer.
    #[arg(long, env = "PGPOLYGLOT_UPSTREAM")]
    upstream: Option<String>,
    /// Directory of *.toml placement policies [default: policies].
    #[arg(long, env = "PGPOLYGLOT_POLICIES")]
    policies: Option<PathBuf>,
    /// Address of the HTTP endpoint (/health, /metrics); "" disables [default: 127.0.0.1:9930].
    #[arg(long, env = "PGPOLYGLOT_HTTP")]
    http: Option<String>,
}

impl ServeArgs {
    /// flag > environment (both via clap) > file > default.
    fn resolve(self) -> Result<Config, String> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path).map_err(|e| e.to_string())?,
            None => {
                let default = PathBuf::from("pgpolyglot.toml");
                if default.exists() {
                    Config::from_file(&default).map_err(|e| e.to_string())?
                } else {
                    Config::default()
                }
            }
        };
        if let Some(v) = self.listen {
            config.listen = v;
        }
        if let Some(v) = self.upstream {
            config.upstream = v;
        }
        if let Some(v) = self.policies {
            config.policies = v;
        }
        if let Some(v) = self.http {
            config.http = v;
        }
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }
}

#[derive(Args)]
struct PlanArgs {
    /// Config file of the running proxy (default: ./pgpolyglot.toml when it exists).
    #[arg(long, env = "PGPOLYGLOT_CONFIG")]
    config: Option<PathBuf>,
    /// Directory of *.toml placement policies [default: from the config].
    #[arg(long, env = "PGPOLYGLOT_POLICIES")]
    policies: Option<PathBuf>,
    /// HTTP endpoint of the running proxy [default: from the config].
    #[arg(long, env = "PGPOLYGLOT_HTTP")]
    http: Option<String>,
}

impl PlanArgs {
    /// The same precedence as `serve`, so `plan` finds what the proxy was started with.
    fn resolve(self) -> Result<Config, String> {
        ServeArgs {
            config: self.config,
            listen: None,
            upstream: None,
            policies: self.policies,
            http: self.http,
        }
        .resolve()
    }
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PGPOLYGLOT_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckPolicies { dir } => check_policies(&dir),
        Command::Serve(args) => {
            let config = match args.resolve() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("pgpolyglot: {e}");
                    return ExitCode::from(2);
                }
            };
            init_tracing(config.log_format == "json");
            let runtime =
                pgpolyglot::runtime::build(config.worker_threads, config.thread_scheduling);
            run_on(runtime, serve(config))
        }
        Command::Plan(args) => plan(args),
        Command::Demo { listen } => {
            init_tracing(false);
            run_async(pgpolyglot::demo::run(listen))
        }
    }
}

/// Runs `f` on the runtime `serve` uses with its default worker count, under normal
/// scheduling: `demo` starts PostgreSQL from these threads, and a child inherits its
/// parent's scheduling policy.
fn run_async<F: std::future::Future<Output = Result<(), String>>>(f: F) -> ExitCode {
    let defaults = Config::default();
    run_on(
        pgpolyglot::runtime::build(
            defaults.worker_threads,
            pgpolyglot::config::ThreadScheduling::Normal,
        ),
        f,
    )
}

/// Runs `f` on `runtime`, once it was built.
fn run_on<F: std::future::Future<Output = Result<(), String>>>(
    runtime: std::io::Result<pgpolyglot::runtime::ProxyRuntime>,
    f: F,
) -> ExitCode {
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pgpolyglot: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(f) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            eprintln!("pgpolyglot: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check_policies(dir: &std::path::Path) -> ExitCode {
    match policy::load_dir(dir) {
        Ok(policies) => {
            for p in &policies {
                println!(
                    "{}: ok (tables {:?}{}{})",
                    p.file.display(),
                    p.tables,
                    if p.cache.is_some() { ", cache" } else { "" },
                    if p.search.is_some() { ", search" } else { "" }
                );
            }
            println!(
                "{} polic{} valid in {}",
                policies.len(),
                if policies.len() == 1 { "y" } else { "ies" },
                dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for issue in &errors.0 {
                eprintln!("{issue}");
            }
            ExitCode::from(1)
        }
    }
}

/// `pgpolyglot plan`: exit 0 with the plan printed; 1 when the policies are invalid or the
/// proxy cannot be asked for its statistics; 2 when the configuration is invalid.
fn plan(args: PlanArgs) -> ExitCode {
    use pgpolyglot::placement::{planner, PolicySet};
    let config = match args.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pgpolyglot: {e}");
            return ExitCode::from(2);
        }
    };
    let policies = match PolicySet::load(&config.policies, 0) {
        Ok(p) => p,
        Err(errors) => {
            for issue in &errors.0 {
                eprintln!("{issue}");
            }
            return ExitCode::from(1);
        }
    };
    if config.http.is_empty() {
        eprintln!(
            "pgpolyglot: the HTTP endpoint is disabled (http = \"\"); plan reads the live \
             statistics from it: set http or pass --http ADDR"
        );
        return ExitCode::from(1);
    }
    let hot_keys = match http_get::json(&config.http, "/api/hot_keys?limit=1000")
        .map_err(|e| e.to_string())
        .and_then(|v| planner::hot_keys_from_json(&v).map_err(|e| e.to_string()))
    {
        Ok(k) => k,
        Err(e) => {
            eprintln!(
                "pgpolyglot: cannot read statistics from the proxy at http://{}: {e}",
                config.http
            );
            return ExitCode::from(1);
        }
    };
    let plan = planner::plan(&policies, &hot_keys, config.stats.half_life);
    println!(
        "plan for {} polic{} in {} against http://{} (half-life {:?})\n",
        policies.policies.len(),
        if policies.policies.len() == 1 {
            "y"
        } else {
            "ies"
        },
        config.policies.display(),
        config.http,
        config.stats.half_life,
    );
    print!("{}", plan.to_text());
    ExitCode::SUCCESS
}

/// A minimal HTTP/1.1 GET for `plan`: the proxy's own endpoint on a trusted address, one
/// small JSON response, so a blocking socket and `Connection: close` do (no HTTP client
/// dependency for one request).
mod http_get {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
    use std::time::Duration;

    const TIMEOUT: Duration = Duration::from_secs(10);
    /// Largest response read (the hot keys of 1000 keys are well under 1 MiB).
    const MAX_RESPONSE: u64 = 64 << 20;

    #[derive(Debug, thiserror::Error)]
    pub enum HttpError {
        #[error("invalid address: {0}")]
        Address(String),
        #[error("{0}")]
        Io(#[from] std::io::Error),
        #[error("malformed HTTP response: {0}")]
        Malformed(&'static str),
        #[error("HTTP status {0}: {1}")]
        Status(u16, String),
        #[error("invalid JSON: {0}")]
        Json(#[from] serde_json::Error),
    }

    /// GET `path` from `addr` (`host:port`; an unspecified address such as `0.0.0.0`
    /// means this machine) and parse the body as JSON.
    pub fn json(addr: &str, path: &str) -> Result<serde_json::Value, HttpError> {
        let mut target: SocketAddr = addr
            .to_socket_addrs()
            .map_err(|e| HttpError::Address(format!("{addr}: {e}")))?
            .next()
            .ok_or_else(|| HttpError::Address(addr.to_string()))?;
        if target.ip().is_unspecified() {
            target.set_ip(match target {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let mut stream = TcpStream::connect_timeout(&target, TIMEOUT)?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_write_timeout(Some(TIMEOUT))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {target}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
        )?;
        let mut response = Vec::new();
        stream.take(MAX_RESPONSE).read_to_end(&mut response)?;
        let body = body(&response)?;
        Ok(serde_json::from_slice(&body)?)
    }

    /// The body of a complete HTTP/1.1 response, de-chunked; an error for a non-2xx status.
    fn body(response: &[u8]) -> Result<Vec<u8>, HttpError> {
        let end = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or(HttpError::Malformed("no end of headers"))?;
        let head = std::str::from_utf8(&response[..end])
            .map_err(|_| HttpError::Malformed("headers are not UTF-8"))?;
        let rest = &response[end + 4..];
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or(HttpError::Malformed("no status line"))?;
        let header = |name: &str| {
            head.split("\r\n").skip(1).find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let chunked =
            header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let body = if chunked {
            dechunk(rest)?
        } else {
            match header("content-length").and_then(|v| v.parse::<usize>().ok()) {
                Some(n) => rest
                    .get(..n)
                    .ok_or(HttpError::Malformed("body shorter than Content-Length"))?
                    .to_vec(),
                None => rest.to_vec(),
            }
        };
        if !(200..300).contains(&status) {
            let text = String::from_utf8_lossy(&body).chars().take(200).collect();
            return Err(HttpError::Status(status, text));
        }
        Ok(body)
    }

    fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, HttpError> {
        let mut out = Vec::new();
        loop {
            let line_end = data
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or(HttpError::Malformed("truncated chunk size"))?;
            let size_text = std::str::from_utf8(&data[..line_end])
                .map_err(|_| HttpError::Malformed("bad chunk size"))?;
            let size_text = size_text.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| HttpError::Malformed("bad chunk size"))?;
            data = &data[line_end + 2..];
            if size == 0 {
                return Ok(out);
            }
            let chunk = data
                .get(..size)
                .ok_or(HttpError::Malformed("truncated chunk"))?;
            out.extend_from_slice(chunk);
            data = data.get(size + 2..).unwrap_or(&[]);
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn parses_responses() {
            let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n[]";
            assert_eq!(body(ok).unwrap(), b"[]");
            let chunked =
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n[1\r\n1;x=y\r\n]\r\n0\r\n\r\n";
            assert_eq!(body(chunked).unwrap(), b"[1]");
            let missing = b"HTTP/1.1 404 Not Found\r\ncontent-length: 3\r\n\r\nnop";
            assert_eq!(
                body(missing).unwrap_err().to_string(),
                "HTTP status 404: nop"
            );
            assert!(body(b"garbage").is_err());
            assert!(body(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err());
        }
    }
}

async fn serve(config: Config) -> Result<(), String> {
    let handle = pgpolyglot::server::start(config)
        .await
        .map_err(|e| e.to_string())?;
    wait_for_signal().await?;
    info!("signal received: shutting down (a second signal exits at once)");
    tokio::select! {
        _ = handle.shutdown() => Ok(()),
        _ = wait_for_signal() => {
            info!("second signal: exiting now");
            Ok(())
        }
    }
}

async fn wait_for_signal() -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
