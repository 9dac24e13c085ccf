//! The `pgpolyglot` command: `serve`, `demo`, `check-policies`.

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
            run_async(serve(config))
        }
        Command::Demo { listen } => {
            init_tracing(false);
            run_async(pgpolyglot::demo::run(listen))
        }
    }
}

fn run_async<F: std::future::Future<Output = Result<(), String>>>(f: F) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
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
