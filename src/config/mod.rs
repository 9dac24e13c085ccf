//! Configuration: `pgpolyglot.toml`, environment variables and command-line flags.
//!
//! Why a layer of its own: every other module reads a validated, immutable [`Config`] and never
//! parses strings. Precedence is flag > environment > file > default (see `main.rs`, which
//! applies the first two on top of what [`Config::from_file`] returns). Every key is optional and
//! unknown keys are rejected, so a typo in a config file is an error at start-up rather than a
//! silently ignored setting.

mod duration;
pub mod policy;
mod upstream;

pub use duration::{parse_duration, DurationParseError};
pub use upstream::{SslMode, UpstreamError, UpstreamTarget};

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Errors raised while loading or validating configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value for {key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

/// The proxy's settings. Field comments give the documented default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the proxy accepts PostgreSQL clients on. Default `127.0.0.1:6432`.
    pub listen: String,
    /// The PostgreSQL server that is the source of truth. Host, port and `sslmode`/`sslrootcert`
    /// are used for every relayed connection; clients authenticate as themselves (their own user
    /// and database from their startup packet). Default `postgres://postgres@127.0.0.1:5432/postgres`.
    pub upstream: String,
    /// Directory of `*.toml` placement policies, validated at start-up. Default `policies`.
    pub policies: PathBuf,
    /// Address of the HTTP endpoint (`/health`, `/metrics`); empty string disables it.
    /// Default `127.0.0.1:9930`.
    pub http: String,
    /// Most client connections served at once; more are answered with SQLSTATE 53300
    /// "sorry, too many clients already". Default 1000.
    pub max_client_conn: usize,
    /// Largest frontend message accepted, in bytes (declared length). A larger one gets a FATAL
    /// 08P01 error and the connection is closed, as Postgres does. Default 64 MiB.
    pub max_message_bytes: usize,
    /// How long to wait for the upstream to accept a TCP connection. Default `5s`.
    #[serde(with = "duration::serde_str")]
    pub connect_timeout: Duration,
    /// On SIGTERM/SIGINT, how long open sessions may run before they are closed. Default `30s`.
    #[serde(with = "duration::serde_str")]
    pub shutdown_grace: Duration,
    /// How many distinct statement shapes the classifier keeps parsed. Default 10000.
    pub statement_cache_entries: usize,
    /// PEM certificate chain for TLS towards clients; with `tls_key`, SSLRequest is answered 'S'.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Log format: "text" (default) or "json".
    pub log_format: String,
    /// Users who may open the admin console (database `pgpolyglot`). Their password is
    /// checked by the upstream Postgres, exactly as for any other connection. Default
    /// `["postgres"]`.
    pub admin_users: Vec<String>,
    /// How often the policy directory is checked for changes (hot reload); `0s` disables
    /// watching (SIGHUP and the admin `RELOAD` still work). Default `2s`.
    #[serde(with = "duration::serde_str")]
    pub policy_watch_interval: Duration,
    /// Runtime worker threads for `serve`; 0 means half the CPU cores, at least one (the
    /// proxy usually shares the machine with its clients or Postgres; see [`crate::runtime`]).
    /// One worker runs tokio's current-thread scheduler (cheaper per message), more the
    /// multi-thread one. A proxy that mostly answers from its cache, or has cores of its own,
    /// is faster with one per core. Default 0.
    pub worker_threads: usize,
    /// How the kernel schedules the runtime's threads: "batch" (`SCHED_BATCH`: the proxy's
    /// wake-ups do not preempt running processes, so it batches its work behind them) or
    /// "normal". Default "batch".
    pub thread_scheduling: ThreadScheduling,
    /// Access statistics (`[stats]`).
    pub stats: StatsSettings,
    /// The logical replication consumer (`[change_feed]`).
    pub change_feed: ChangeFeedSettings,
    /// Stores outside the proxy (`[stores.redis]`).
    pub stores: StoresSettings,
}

/// `thread_scheduling`: the kernel scheduling policy of the runtime's threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThreadScheduling {
    /// `SCHED_BATCH` (Linux; elsewhere the same as `Normal`).
    #[default]
    Batch,
    /// The default policy (`SCHED_OTHER`).
    Normal,
}

/// `[stores]`: where the external stores are.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoresSettings {
    /// `[stores.redis]`: the shared L2 of policies with `store = "redis"`. Without it those
    /// policies are served from the in-process L1 only (logged at start-up).
    pub redis: Option<RedisSettings>,
    /// `[stores.embedded]`: the on-disk search indexes (tantivy).
    pub embedded: EmbeddedSettings,
    /// `[stores.elasticsearch]`: the search store of policies with `store =
    /// "elasticsearch"`. Without it those policies' tables are not indexed (`SHOW
    /// PLACEMENTS` says so) and their text predicates go to Postgres.
    pub elasticsearch: Option<ElasticsearchSettings>,
}

/// `[stores.elasticsearch]`: an Elasticsearch 8 / OpenSearch 2+ server (REST API).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ElasticsearchSettings {
    /// `http[s]://[user:password@]host:port` (basic auth from the URL; https via rustls
    /// with the webpki roots). Default `http://127.0.0.1:9200`.
    pub url: String,
    /// Prefix of every index the proxy creates (`<prefix>-<schema>.<table>-<oid>-<tag>`,
    /// the tag naming the upstream and slot). Default `pgpolyglot`.
    pub index_prefix: String,
    /// Longest wait for a candidate search; a slower one passes the statement through and
    /// opens the circuit until the store is re-validated. Default `1s`.
    #[serde(with = "duration::serde_str")]
    pub timeout: Duration,
    /// Longest wait for an indexing call (`_bulk`, `_refresh`, index creation). Default `30s`.
    #[serde(with = "duration::serde_str")]
    pub write_timeout: Duration,
    /// Backfill throttle: rows read from Postgres per second, per index. Default 20000.
    pub backfill_rows_per_second: u32,
}

impl Default for ElasticsearchSettings {
    fn default() -> Self {
        ElasticsearchSettings {
            url: "http://127.0.0.1:9200".into(),
            index_prefix: "pgpolyglot".into(),
            timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(30),
            backfill_rows_per_second: 20_000,
        }
    }
}

/// `[stores.embedded]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedSettings {
    /// Directory of the tantivy indexes (created when missing; relative to the working
    /// directory). Default `pgpolyglot-data`.
    pub dir: std::path::PathBuf,
    /// Backfill throttle: rows read from Postgres per second, per index. Default 50000.
    pub backfill_rows_per_second: u32,
}

impl Default for EmbeddedSettings {
    fn default() -> Self {
        EmbeddedSettings {
            dir: "pgpolyglot-data".into(),
            backfill_rows_per_second: 50_000,
        }
    }
}

/// `[stores.redis]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSettings {
    /// `redis://[:password@]host:port/db`. Default `redis://127.0.0.1:6379/0`.
    pub url: String,
    /// Prefix of every key the proxy writes; proxies that share a cache use the same one.
    /// Default `pgpolyglot`.
    pub namespace: String,
    /// Longest wait for one Redis call before it counts as failed (then Postgres answers).
    /// Default `50ms`.
    #[serde(with = "duration::serde_str")]
    pub timeout: Duration,
    /// Safety expiry of every image, behind invalidation. At least `10s`. Default `60s`.
    #[serde(with = "duration::serde_str")]
    pub ttl: Duration,
}

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings {
            url: "redis://127.0.0.1:6379/0".into(),
            namespace: "pgpolyglot".into(),
            timeout: Duration::from_millis(50),
            ttl: Duration::from_secs(60),
        }
    }
}

impl RedisSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.url.starts_with("redis://") || self.url.starts_with("rediss://")) {
            return Err(ConfigError::Invalid {
                key: "stores.redis.url",
                message: format!("{:?} is not a redis:// URL", self.url),
            });
        }
        if self.namespace.is_empty() || self.namespace.contains(':') {
            return Err(ConfigError::Invalid {
                key: "stores.redis.namespace",
                message: "must be non-empty and contain no ':'".into(),
            });
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::Invalid {
                key: "stores.redis.timeout",
                message: "must be greater than zero".into(),
            });
        }
        // A fill may take up to 5 s; an image's key must outlive it (see cache::l2).
        if self.ttl < Duration::from_secs(10) {
            return Err(ConfigError::Invalid {
                key: "stores.redis.ttl",
                message: "must be at least 10s".into(),
            });
        }
        Ok(())
    }
}

/// `[stats]`: the access statistics' limits and time constants (see [`crate::stats`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatsSettings {
    /// Record statistics at all. Default true.
    pub enabled: bool,
    /// Half-life of decayed counts. Default `60s`.
    #[serde(with = "duration::serde_str")]
    pub half_life: Duration,
    /// Keys tracked per table (Space-Saving counters). Default 1000.
    pub top_k_per_table: usize,
    /// Tables tracked at once. Default 1000.
    pub max_tables: usize,
    /// Query shapes tracked at once. Default 10000.
    pub max_shapes: usize,
    /// Events queued between sessions and the aggregator; beyond, dropped and counted.
    /// Default 65536.
    pub channel_capacity: usize,
    /// Latency window. Default `60s`.
    #[serde(with = "duration::serde_str")]
    pub window: Duration,
    /// How often the aggregator publishes a snapshot (it drains the queue every 50 ms, or
    /// this often if shorter). Default `1s`.
    #[serde(with = "duration::serde_str")]
    pub interval: Duration,
    /// Keys longer than this many bytes are not recorded. Default 128.
    pub max_key_len: usize,
}

impl Default for StatsSettings {
    fn default() -> Self {
        let d = crate::stats::StatsConfig::default();
        StatsSettings {
            enabled: true,
            half_life: d.half_life,
            top_k_per_table: d.top_k_per_table,
            max_tables: d.max_tables,
            max_shapes: d.max_shapes,
            channel_capacity: d.channel_capacity,
            window: d.window,
            interval: Duration::from_secs(1),
            max_key_len: d.max_key_len,
        }
    }
}

impl StatsSettings {
    pub fn to_stats_config(&self) -> crate::stats::StatsConfig {
        crate::stats::StatsConfig {
            half_life: self.half_life,
            top_k_per_table: self.top_k_per_table,
            max_tables: self.max_tables,
            max_shapes: self.max_shapes,
            channel_capacity: self.channel_capacity,
            window: self.window,
            max_key_len: self.max_key_len,
            // The planner places from the published snapshot: publish every tracked key.
            snapshot_keys_per_table: self.top_k_per_table,
        }
    }
}

/// `[change_feed]`: the logical replication consumer that keeps the stores fresh (see
/// [`crate::cdc`]). The proxy creates and owns the slot and the publication named here.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChangeFeedSettings {
    /// Logical replication slot (plugin `pgoutput`), created when missing. While it exists the
    /// server keeps WAL the feed has not confirmed, so one slot per proxy deployment.
    /// Lowercase letters, digits and `_`, at most 63 characters. Default `pgpolyglot`.
    pub slot: String,
    /// Publication listing the watched tables, created when missing and kept in step with the
    /// policies. Same character rules as `slot`. Default `pgpolyglot`.
    pub publication: String,
    /// How often the feed confirms progress to the server (and pings it). Default `1s`.
    #[serde(with = "duration::serde_str")]
    pub status_interval: Duration,
    /// A feed that hears nothing from the server for this long (despite its pings) is treated
    /// as broken and reconnects. Must exceed `status_interval`. Default `30s`.
    #[serde(with = "duration::serde_str")]
    pub timeout: Duration,
    /// Changes buffered for one transaction; a larger transaction is reported as one
    /// invalidation per table it touched instead. Default 100000.
    pub max_transaction_changes: usize,
}

impl Default for ChangeFeedSettings {
    fn default() -> Self {
        ChangeFeedSettings {
            slot: "pgpolyglot".into(),
            publication: "pgpolyglot".into(),
            status_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(30),
            max_transaction_changes: 100_000,
        }
    }
}

impl ChangeFeedSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, name) in [
            ("change_feed.slot", &self.slot),
            ("change_feed.publication", &self.publication),
        ] {
            let ok_chars = name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            let starts_ok = name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
            if !ok_chars || !starts_ok || name.len() > 63 {
                return Err(ConfigError::Invalid {
                    key,
                    message: format!(
                        "{name:?}: use 1 to 63 lowercase letters, digits and underscores, \
                         starting with a letter or underscore"
                    ),
                });
            }
        }
        if self.status_interval.is_zero() {
            return Err(ConfigError::Invalid {
                key: "change_feed.status_interval",
                message: "must be greater than zero".into(),
            });
        }
        if self.timeout <= self.status_interval {
            return Err(ConfigError::Invalid {
                key: "change_feed.timeout",
                message: format!(
                    "{:?} must be longer than status_interval ({:?})",
                    self.timeout, self.status_interval
                ),
            });
        }
        if self.max_transaction_changes == 0 {
            return Err(ConfigError::Invalid {
                key: "change_feed.max_transaction_changes",
                message: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:6432".into(),
            upstream: "postgres://postgres@127.0.0.1:5432/postgres".into(),
            policies: PathBuf::from("policies"),
            http: "127.0.0.1:9930".into(),
            max_client_conn: 1000,
            max_message_bytes: 64 * 1024 * 1024,
            connect_timeout: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(30),
            statement_cache_entries: 10_000,
            tls_cert: None,
            tls_key: None,
            log_format: "text".into(),
            admin_users: vec!["postgres".into()],
            policy_watch_interval: Duration::from_secs(2),
            worker_threads: 0,
            thread_scheduling: ThreadScheduling::Batch,
            stats: StatsSettings::default(),
            change_feed: ChangeFeedSettings::default(),
            stores: StoresSettings::default(),
        }
    }
}

impl Config {
    /// Parse a config file's text; `origin` names it in error messages.
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Read and parse a config file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&text, path)
    }

    /// Check every value that can be checked without I/O; called before the server starts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| ConfigError::Invalid {
                key: "listen",
                message: format!(
                    "{:?}: {e} (expected host:port, e.g. 127.0.0.1:6432)",
                    self.listen
                ),
            })?;
        if !self.http.is_empty() {
            self.http
                .parse::<std::net::SocketAddr>()
                .map_err(|e| ConfigError::Invalid {
                    key: "http",
                    message: format!("{:?}: {e}", self.http),
                })?;
        }
        UpstreamTarget::parse(&self.upstream)?;
        if self.max_client_conn == 0 {
            return Err(ConfigError::Invalid {
                key: "max_client_conn",
                message: "must be at least 1".into(),
            });
        }
        if self.max_message_bytes < 1024 {
            return Err(ConfigError::Invalid {
                key: "max_message_bytes",
                message: "must be at least 1024".into(),
            });
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::Invalid {
                key: "tls_cert",
                message: "tls_cert and tls_key must be given together".into(),
            });
        }
        if self.log_format != "text" && self.log_format != "json" {
            return Err(ConfigError::Invalid {
                key: "log_format",
                message: format!("{:?}: expected \"text\" or \"json\"", self.log_format),
            });
        }
        if self.stats.interval.is_zero() {
            return Err(ConfigError::Invalid {
                key: "stats.interval",
                message: "must be greater than zero".into(),
            });
        }
        self.stats
            .to_stats_config()
            .validate()
            .map_err(|e| ConfigError::Invalid {
                key: "stats",
                message: e.to_string(),
            })?;
        self.change_feed.validate()?;
        if let Some(r) = &self.stores.redis {
            r.validate()?;
        }
        Ok(())
    }

    /// The parsed upstream target (validated by [`Config::validate`]).
    pub fn upstream_target(&self) -> Result<UpstreamTarget, ConfigError> {
        Ok(UpstreamTarget::parse(&self.upstream)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Config::from_toml_str(
            "listen = \"127.0.0.1:1\"\nlisten_typo = 3\n",
            Path::new("x.toml"),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("listen_typo"), "{text}");
        assert!(text.contains("x.toml"), "{text}");
    }

    #[test]
    fn durations_and_values_parse() {
        let c = Config::from_toml_str(
            "shutdown_grace = \"250ms\"\nconnect_timeout = \"2s\"\nmax_client_conn = 7\n",
            Path::new("x.toml"),
        )
        .unwrap();
        assert_eq!(c.shutdown_grace, Duration::from_millis(250));
        assert_eq!(c.connect_timeout, Duration::from_secs(2));
        assert_eq!(c.max_client_conn, 7);
        c.validate().unwrap();
    }

    #[test]
    fn thread_scheduling_parses_and_rejects_other_words() {
        assert_eq!(Config::default().thread_scheduling, ThreadScheduling::Batch);
        let c =
            Config::from_toml_str("thread_scheduling = \"normal\"\n", Path::new("x.toml")).unwrap();
        assert_eq!(c.thread_scheduling, ThreadScheduling::Normal);
        let err = Config::from_toml_str("thread_scheduling = \"fifo\"\n", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("fifo") && err.contains("batch"), "{err}");
    }

    #[test]
    fn invalid_values_are_explained() {
        let c = Config {
            listen: "nope".into(),
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("listen"));
        let c = Config {
            tls_cert: Some("a".into()),
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("together"));
    }

    #[test]
    fn change_feed_section_parses_and_validates() {
        let c = Config::from_toml_str(
            "[change_feed]\nslot = \"s_1\"\npublication = \"p\"\nstatus_interval = \"250ms\"\n",
            Path::new("x.toml"),
        )
        .unwrap();
        assert_eq!(c.change_feed.slot, "s_1");
        assert_eq!(c.change_feed.publication, "p");
        assert_eq!(c.change_feed.status_interval, Duration::from_millis(250));
        assert_eq!(c.change_feed.timeout, Duration::from_secs(30));
        c.validate().unwrap();
        let err = Config::from_toml_str("[change_feed]\nslots = \"x\"\n", Path::new("x.toml"))
            .unwrap_err();
        assert!(err.to_string().contains("slots"), "{err}");
        for bad in ["", "Upper", "has-dash", "9lead", &"x".repeat(64)] {
            let mut c = Config::default();
            c.change_feed.slot = bad.to_string();
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains("change_feed.slot"), "{bad}: {err}");
        }
        let mut c = Config::default();
        c.change_feed.timeout = c.change_feed.status_interval;
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.change_feed.status_interval = Duration::ZERO;
        assert!(c.validate().is_err());
    }
}
