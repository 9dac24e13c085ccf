//! One client connection, from its first byte to its close.
//!
//! [`serve`] runs the start-up exchange (SSLRequest → TLS, GSSENCRequest → 'N', CancelRequest
//! → forwarded through the proxy's key table, StartupMessage), connects to the upstream,
//! relays the StartupMessage unchanged, and hands both streams to [`relay::run`]. The
//! authentication exchange (trust, md5, SCRAM-SHA-256) is relayed like any other frame, so
//! Postgres itself accepts or rejects the client's credentials with its own error. (SCRAM
//! with channel binding cannot cross the proxy when both legs use TLS: the client binds to
//! the proxy's certificate; such clients need `channel_binding=disable`.)

pub mod admin;
pub mod batch;
pub mod bind;
pub mod cache_serve;
pub mod error;
pub mod explain;
pub mod keys;
pub mod pair;
pub mod registry;
pub mod relay;
pub mod search_serve;
pub mod state;
pub mod statements;
pub mod tracker;
pub mod upstream;

use crate::admin::metrics::ActiveConnection;
use crate::context::ProxyContext;
use crate::protocol::cancel::send_cancel;
use crate::protocol::messages::{sqlstate, ErrorResponse};
use crate::protocol::startup::{read_startup_packet, StartupMessage, StartupPacket};
use crate::protocol::stream::ClientStream;
use crate::protocol::ProtocolError;
use error::SessionError;
use registry::NewSession;
use state::SharedState;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::{debug, info, warn, Instrument};

/// Start-up packets a client may send before its StartupMessage (GSSENC, SSL, then startup).
const MAX_STARTUP_PACKETS: usize = 3;

/// Serve one client connection until it ends. Never panics on input; logs the reason it ended.
///
/// The session's span (with the peer address) covers the start-up, the connection to the
/// upstream and the log line that ends the session, not the relay: a span entered on every
/// poll costs the fmt subscriber a thread-local stack push and pop and a filter lookup,
/// about 7 % of the proxy's own CPU per relayed statement. What the relay logs is about the
/// stores (Redis, the search store), not the session.
pub async fn serve(tcp: TcpStream, peer: SocketAddr, ctx: Arc<ProxyContext>) {
    let span = tracing::info_span!("session", %peer);
    let _active = ActiveConnection::new(&ctx.metrics);
    let mut client = None;
    let result = serve_inner(tcp, peer, &ctx, &mut client, &span).await;
    if let Err(e) = result {
        if let (Some(resp), Some(c)) = (e.client_response(), client.as_mut()) {
            let _ = c.write_all(&resp.to_bytes()).await;
            let _ = c.shutdown().await;
        }
        let _entered = span.enter();
        if e.is_client_gone() {
            debug!(error = %e, "client went away");
        } else if matches!(e, SessionError::Protocol(_) | SessionError::ClientTls(_)) {
            ctx.metrics.client_protocol_errors.fetch_add(1, Relaxed);
            info!(error = %e, "client connection rejected");
        } else {
            warn!(error = %e, "session ended with an error");
        }
    }
}

/// Everything after accept. `client` holds the client stream whenever an error may still be
/// reported to it.
async fn serve_inner(
    tcp: TcpStream,
    peer: SocketAddr,
    ctx: &ProxyContext,
    client: &mut Option<ClientStream>,
    span: &tracing::Span,
) -> Result<(), SessionError> {
    let Some((stream, startup)) = handshake(tcp, ctx, client).instrument(span.clone()).await?
    else {
        return Ok(());
    };
    let database = startup.database();
    span.in_scope(|| debug!(user = %startup.user(), %database, "startup"));
    let shared = Arc::new(SharedState::default());
    let admin = database == admin::ADMIN_DATABASE;
    let _registered = ctx.sessions.register(
        NewSession {
            peer,
            user: startup.user(),
            database: database.clone(),
            application_name: startup.param("application_name").unwrap_or_default(),
            tls: matches!(stream, ClientStream::Tls(_)),
            admin,
        },
        Arc::clone(&shared),
    );
    *client = Some(stream);
    if admin {
        return match client.as_mut() {
            Some(c) => {
                admin::serve(c, &startup, ctx)
                    .instrument(span.clone())
                    .await
            }
            None => Ok(()),
        };
    }
    let mut upstream = match upstream::connect(ctx).instrument(span.clone()).await {
        Ok(u) => {
            ctx.metrics
                .upstream_last_connect_failed
                .store(false, Relaxed);
            u
        }
        Err(e) => {
            ctx.metrics.upstream_connect_errors.fetch_add(1, Relaxed);
            ctx.metrics
                .upstream_last_connect_failed
                .store(true, Relaxed);
            return Err(e);
        }
    };
    upstream
        .write_all(&startup.raw)
        .await
        .map_err(SessionError::UpstreamIo)?;
    let Some(client_stream) = client.take() else {
        return Ok(());
    };
    let cache = cache_serve::CacheSession::new(&startup);
    relay::run(client_stream, upstream, ctx, &shared, &database, cache).await
}

/// Read start-up packets until a StartupMessage; `None` when the connection was a cancel.
async fn handshake(
    tcp: TcpStream,
    ctx: &ProxyContext,
    slot: &mut Option<ClientStream>,
) -> Result<Option<(ClientStream, StartupMessage)>, SessionError> {
    let mut stream = ClientStream::Plain(tcp);
    for _ in 0..MAX_STARTUP_PACKETS {
        let packet = match read_startup_packet(&mut stream).await {
            Ok(p) => p,
            Err(e) => {
                *slot = Some(stream);
                return Err(e.into());
            }
        };
        match packet {
            StartupPacket::Startup(m) => return Ok(Some((stream, m))),
            StartupPacket::GssEncRequest => {
                stream
                    .write_all(b"N")
                    .await
                    .map_err(SessionError::ClientIo)?;
            }
            StartupPacket::SslRequest => {
                stream = match (stream, &ctx.client_tls) {
                    (ClientStream::Plain(mut tcp), Some(acceptor)) => {
                        tcp.write_all(b"S").await.map_err(SessionError::ClientIo)?;
                        let tls = acceptor
                            .accept(tcp)
                            .await
                            .map_err(SessionError::ClientTls)?;
                        ctx.metrics.client_tls_handshakes.fetch_add(1, Relaxed);
                        ClientStream::Tls(Box::new(tls))
                    }
                    (ClientStream::Tls(_), _) => {
                        return Err(ProtocolError::MalformedStartup("SSLRequest inside TLS").into());
                    }
                    (mut plain, None) => {
                        plain
                            .write_all(b"N")
                            .await
                            .map_err(SessionError::ClientIo)?;
                        plain
                    }
                };
            }
            StartupPacket::CancelRequest { pid, secret } => {
                forward_cancel(ctx, pid, secret).await;
                return Ok(None);
            }
        }
    }
    *slot = Some(stream);
    Err(ProtocolError::MalformedStartup("too many startup packets").into())
}

async fn forward_cancel(ctx: &ProxyContext, pid: u32, secret: u32) {
    match ctx.cancel.lookup(pid, secret) {
        Some(target) => {
            ctx.metrics.cancel_requests_forwarded.fetch_add(1, Relaxed);
            if let Err(e) = send_cancel(&target, Duration::from_secs(5)).await {
                warn!(pid, error = %e, "could not forward cancel request");
            } else {
                debug!(pid, "cancel request forwarded");
            }
        }
        None => {
            ctx.metrics.cancel_requests_unknown.fetch_add(1, Relaxed);
            debug!(pid, "cancel request for unknown key ignored");
        }
    }
}

/// Answer a connection beyond `max_client_conn` as Postgres does: read its start-up (answering
/// SSLRequest with 'N'), then FATAL 53300.
pub async fn reject_too_many(mut tcp: TcpStream, ctx: Arc<ProxyContext>) {
    ctx.metrics
        .client_connections_rejected_too_many
        .fetch_add(1, Relaxed);
    let fut = async {
        for _ in 0..MAX_STARTUP_PACKETS {
            match read_startup_packet(&mut tcp).await {
                Ok(StartupPacket::SslRequest) | Ok(StartupPacket::GssEncRequest) => {
                    tcp.write_all(b"N").await?;
                }
                Ok(StartupPacket::CancelRequest { pid, secret }) => {
                    forward_cancel(&ctx, pid, secret).await;
                    return Ok(());
                }
                Ok(StartupPacket::Startup(_)) | Err(_) => break,
            }
        }
        let resp = ErrorResponse::fatal(
            sqlstate::TOO_MANY_CONNECTIONS,
            "sorry, too many clients already",
        );
        tcp.write_all(&resp.to_bytes()).await?;
        tcp.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), fut).await;
}
