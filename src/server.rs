//! The listener: accept loop, connection limit, graceful shutdown.
//!
//! Modelled on mini-redis's server: one accept loop, a semaphore for `max_client_conn`
//! (connections over it are answered with Postgres's "too many clients" error rather than
//! refused at TCP level), back-off on accept errors such as EMFILE, and a shutdown that stops
//! accepting, lets sessions finish within `shutdown_grace`, then closes what remains.

use crate::admin::http;
use crate::config::{policy, Config};
use crate::context::{ContextError, ProxyContext};
use crate::placement::PolicySet;
use crate::session;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error(transparent)]
    Policies(#[from] policy::PolicyErrors),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// A running proxy. Dropping it without [`ServerHandle::shutdown`] starts the same graceful
/// shutdown without waiting for it.
pub struct ServerHandle {
    addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    ctx: Arc<ProxyContext>,
    shutdown: watch::Sender<bool>,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl ServerHandle {
    /// The address clients connect to (useful with `listen = "127.0.0.1:0"`).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The HTTP endpoint's address, when enabled.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    pub fn context(&self) -> &Arc<ProxyContext> {
        &self.ctx
    }

    /// Stop accepting, wait up to `shutdown_grace` for sessions to end, then close the rest.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.accept_loop.await;
    }
}

/// Validate the configuration, load policies, bind the listeners and start accepting.
pub async fn start(config: Config) -> Result<ServerHandle, ServerError> {
    let policies = PolicySet::load(&config.policies, 1)?;
    let policy_count = policies.policies.len();
    if !config.policies.is_dir() {
        // Not an error (a proxy without policies relays everything), but a mistyped path
        // would otherwise look exactly like that.
        tracing::warn!(
            dir = %config.policies.display(),
            "the policies directory does not exist: no table is cached or indexed until it does (it is watched)"
        );
    }
    let (ctx, aggregator) = ProxyContext::new(config, policies)?;
    let ctx = Arc::new(ctx);
    let listen = ctx.config.listen.clone();
    let listener = TcpListener::bind(&listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: listen.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: listen,
        source,
    })?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    tokio::spawn(crate::catalog::run(ctx.clone(), shutdown_rx.clone()));
    tokio::spawn(crate::cache::service::run(ctx.clone(), shutdown_rx.clone()));
    tokio::spawn(crate::search::service::run(
        ctx.clone(),
        shutdown_rx.clone(),
    ));
    if let Some(aggregator) = aggregator {
        tokio::spawn(aggregator.run(ctx.config.stats.interval, shutdown_rx.clone()));
    }
    tokio::spawn(crate::placement::reload::watch(
        ctx.clone(),
        shutdown_rx.clone(),
    ));

    let http_addr = if ctx.config.http.is_empty() {
        None
    } else {
        let http_listener = TcpListener::bind(&ctx.config.http)
            .await
            .map_err(|source| ServerError::Bind {
                addr: ctx.config.http.clone(),
                source,
            })?;
        let http_addr = http_listener.local_addr().ok();
        // The dashboard's history is only read over HTTP, so it is sampled only when enabled.
        let history = crate::admin::history::History::new();
        tokio::spawn(crate::admin::history::run(
            history.clone(),
            ctx.clone(),
            shutdown_rx.clone(),
        ));
        let router = http::router(ctx.clone(), history);
        let mut rx = shutdown_rx.clone();
        tokio::spawn(async move {
            let serve = axum::serve(http_listener, router).with_graceful_shutdown(async move {
                let _ = rx.wait_for(|s| *s).await;
            });
            if let Err(e) = serve.await {
                error!(error = %e, "HTTP endpoint failed");
            }
        });
        http_addr
    };

    info!(
        %addr,
        upstream = %ctx.upstream.addr(),
        http = ?http_addr,
        tls = ctx.client_tls.is_some(),
        policies = policy_count,
        "pgpolyglot listening"
    );
    if ctx.cache.l2.is_none()
        && ctx.policies.current().policies.iter().any(|p| {
            p.cache
                .as_ref()
                .is_some_and(|c| c.store == crate::config::policy::CacheStoreKind::Redis)
        })
    {
        tracing::warn!(
            "a policy uses store = \"redis\" but [stores.redis] is not configured: its keys are served from the in-process cache only"
        );
    }
    let accept_loop = tokio::spawn(accept_loop(listener, ctx.clone(), shutdown_rx));
    Ok(ServerHandle {
        addr,
        http_addr,
        ctx,
        shutdown,
        accept_loop,
    })
}

async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<ProxyContext>,
    mut shutdown: watch::Receiver<bool>,
) {
    let limit = Arc::new(Semaphore::new(ctx.config.max_client_conn));
    let mut sessions = JoinSet::new();
    let mut backoff = Duration::from_millis(5);
    loop {
        tokio::select! {
            changed = shutdown.changed() => if changed.is_err() || *shutdown.borrow() { break },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    backoff = Duration::from_millis(5);
                    let _ = tcp.set_nodelay(true);
                    let ctx = ctx.clone();
                    match limit.clone().try_acquire_owned() {
                        Ok(permit) => {
                            sessions.spawn(async move {
                                session::serve(tcp, peer, ctx).await;
                                drop(permit);
                            });
                        }
                        Err(_) => {
                            sessions.spawn(session::reject_too_many(tcp, ctx));
                        }
                    }
                }
                Err(e) => {
                    // EMFILE and friends: wait instead of spinning; the listener stays open.
                    warn!(error = %e, ?backoff, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
    drop(listener);
    let open = sessions.len();
    let grace = ctx.config.shutdown_grace;
    info!(
        open,
        ?grace,
        "shutting down: no longer accepting; waiting for sessions"
    );
    let drained = tokio::time::timeout(grace, async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            remaining = sessions.len(),
            "grace period over: closing remaining sessions"
        );
        sessions.shutdown().await;
    }
    info!("shutdown complete");
}
