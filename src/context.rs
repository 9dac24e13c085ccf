//! What every session shares: validated config, TLS set-up, the cancel-key table, the
//! statement classifier, metrics, statistics, the policies in force and the session list. Built once at start-up, then read-only (`Arc`).

use crate::admin::metrics::Metrics;
use crate::catalog::Catalog;
use crate::config::{Config, ConfigError, UpstreamTarget};
use crate::placement::{PolicySet, PolicyStore};
use crate::protocol::cancel::CancelRegistry;
use crate::protocol::{tls, ProtocolError};
use crate::session::registry::SessionRegistry;
use crate::sql::Classifier;
use crate::stats::{StatsAggregator, StatsHandle, StatsRecorder};
use std::sync::Arc;
use std::time::SystemTime;

pub struct ProxyContext {
    pub config: Config,
    pub upstream: UpstreamTarget,
    /// Present when `tls_cert`/`tls_key` are configured: SSLRequest is answered 'S'.
    pub client_tls: Option<tokio_rustls::TlsAcceptor>,
    /// Present unless the upstream URL says `sslmode=disable` (the default).
    pub upstream_tls: Option<tokio_rustls::TlsConnector>,
    pub cancel: Arc<CancelRegistry>,
    pub classifier: Classifier,
    pub metrics: Metrics,
    /// Hot-path side of the access statistics (a no-op when `[stats] enabled = false`).
    pub stats: StatsRecorder,
    /// Read side of the statistics; `None` when they are off.
    pub stats_view: Option<StatsHandle>,
    /// The placement policies in force (swapped whole on reload).
    pub policies: Arc<PolicyStore>,
    /// Open client sessions.
    pub sessions: SessionRegistry,
    /// Primary keys of the upstream database's tables (loaded by `catalog::run`).
    pub catalog: Catalog,
    /// The cache store and its change feed (idle unless a policy has `[cache]`).
    pub cache: crate::cache::CacheService,
    /// Text predicates narrowed by the search store.
    pub search: crate::search::SearchService,
    pub started_at: SystemTime,
}

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tls(#[from] ProtocolError),
}

impl ProxyContext {
    /// A schema or privilege change may have happened (or has just committed): the key
    /// catalog and the cache's table descriptions and privilege answers are read again,
    /// and the cache serves nothing until they have been.
    pub fn schema_changed(&self) {
        self.catalog.schema_changed();
        self.cache.schema_changed();
    }

    /// Builds the shared context. The statistics aggregator, when statistics are on, is
    /// returned for the caller to run in a background task.
    pub fn new(
        config: Config,
        policies: PolicySet,
    ) -> Result<(Self, Option<StatsAggregator>), ContextError> {
        config.validate()?;
        let upstream = config.upstream_target()?;
        let client_tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(tokio_rustls::TlsAcceptor::from(tls::server_config(
                cert, key,
            )?)),
            _ => None,
        };
        let upstream_tls = tls::client_config(upstream.sslmode, upstream.sslrootcert.as_deref())?
            .map(tokio_rustls::TlsConnector::from);
        let (stats, aggregator) = if config.stats.enabled {
            let (recorder, aggregator) = crate::stats::new(config.stats.to_stats_config())
                .map_err(|e| ConfigError::Invalid {
                    key: "stats",
                    message: e.to_string(),
                })?;
            (recorder, Some(aggregator))
        } else {
            (StatsRecorder::disabled(), None)
        };
        let stats_view = aggregator.as_ref().map(StatsAggregator::handle);
        let cache = crate::cache::CacheService::new(&config).map_err(|e| ConfigError::Invalid {
            key: "stores.redis.url",
            message: e.to_string(),
        })?;
        let ctx = ProxyContext {
            classifier: Classifier::new(config.statement_cache_entries),
            config,
            upstream,
            client_tls,
            upstream_tls,
            cancel: Arc::new(CancelRegistry::default()),
            metrics: Metrics::default(),
            stats,
            stats_view,
            policies: Arc::new(PolicyStore::new(policies)),
            sessions: SessionRegistry::default(),
            catalog: Catalog::default(),
            cache,
            search: crate::search::SearchService::default(),
            started_at: SystemTime::now(),
        };
        Ok((ctx, aggregator))
    }
}
