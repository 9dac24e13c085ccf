//! What every session shares: validated config, TLS set-up, the cancel-key table, the
//! statement classifier and the metrics. Built once at start-up, then read-only (`Arc`).

use crate::admin::metrics::Metrics;
use crate::config::{Config, ConfigError, UpstreamTarget};
use crate::protocol::cancel::CancelRegistry;
use crate::protocol::{tls, ProtocolError};
use crate::sql::Classifier;
use std::sync::Arc;

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
}

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tls(#[from] ProtocolError),
}

impl ProxyContext {
    pub fn new(config: Config) -> Result<Self, ContextError> {
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
        Ok(ProxyContext {
            classifier: Classifier::new(config.statement_cache_entries),
            config,
            upstream,
            client_tls,
            upstream_tls,
            cancel: Arc::new(CancelRegistry::default()),
            metrics: Metrics::default(),
        })
    }
}
