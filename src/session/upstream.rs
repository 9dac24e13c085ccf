//! Opening the connection to the upstream PostgreSQL: TCP, then TLS as `sslmode` asks.

use super::error::SessionError;
use crate::config::SslMode;
use crate::context::ProxyContext;
use crate::protocol::messages::ssl_request;
use crate::protocol::stream::UpstreamStream;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub async fn connect(ctx: &ProxyContext) -> Result<UpstreamStream, SessionError> {
    let addr = ctx.upstream.addr();
    let timeout = ctx.config.connect_timeout;
    let mut tcp = match tokio::time::timeout(timeout, TcpStream::connect(&addr)).await {
        Err(_) => return Err(SessionError::UpstreamTimeout { addr, timeout }),
        Ok(Err(source)) => return Err(SessionError::UpstreamConnect { addr, source }),
        Ok(Ok(s)) => s,
    };
    let _ = tcp.set_nodelay(true);
    let Some(connector) = &ctx.upstream_tls else {
        return Ok(UpstreamStream::Plain(tcp));
    };
    let io = |source| SessionError::UpstreamConnect {
        addr: addr.clone(),
        source,
    };
    tcp.write_all(&ssl_request()).await.map_err(io)?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.map_err(io)?;
    match answer[0] {
        b'S' => {
            let name = ServerName::try_from(ctx.upstream.host.clone()).map_err(|e| {
                SessionError::UpstreamTls {
                    addr: addr.clone(),
                    message: e.to_string(),
                }
            })?;
            let tls =
                connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| SessionError::UpstreamTls {
                        addr: addr.clone(),
                        message: e.to_string(),
                    })?;
            Ok(UpstreamStream::Tls(Box::new(tls)))
        }
        b'N' if ctx.upstream.sslmode == SslMode::Prefer => Ok(UpstreamStream::Plain(tcp)),
        _ => Err(SessionError::UpstreamNoSsl { addr }),
    }
}
