//! The proxy's own connections to the upstream (catalog reads now; the change feed and the
//! migrator later): tokio-postgres over the same TCP and TLS set-up as relayed sessions,
//! authenticating with the user, password and database of the upstream URL.

use crate::context::ProxyContext;
use crate::session::error::SessionError;
use tracing::debug;

#[derive(Debug, thiserror::Error)]
pub enum SideError {
    #[error("cannot reach the upstream: {0}")]
    Connect(#[from] SessionError),
    #[error("upstream side connection: {0}")]
    Postgres(#[from] tokio_postgres::Error),
}

/// Opens a side connection; the connection task runs until the client is dropped.
pub async fn connect(ctx: &ProxyContext) -> Result<tokio_postgres::Client, SideError> {
    let stream = crate::session::upstream::connect(ctx).await?;
    let up = &ctx.upstream;
    let mut config = tokio_postgres::Config::new();
    config
        .user(&up.user)
        .dbname(&up.database)
        .application_name("pgpolyglot")
        // TLS, when configured, is already set up on `stream`.
        .ssl_mode(tokio_postgres::config::SslMode::Disable)
        .connect_timeout(ctx.config.connect_timeout);
    if let Some(p) = &up.password {
        config.password(p);
    }
    let (client, connection) = config.connect_raw(stream, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            debug!(error = %e, "side connection ended");
        }
    });
    Ok(client)
}
