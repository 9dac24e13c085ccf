//! The HTTP endpoint: `/health` (liveness and upstream reachability) and `/metrics`
//! (Prometheus text). Served by axum on its own listener, off the query path.

use crate::context::ProxyContext;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::sync::Arc;
use std::time::Duration;

pub fn router(ctx: Arc<ProxyContext>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(ctx)
}

async fn metrics(State(ctx): State<Arc<ProxyContext>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        ctx.metrics.render_prometheus(),
    )
}

/// 200 when the upstream accepts TCP connections, 503 otherwise; JSON body either way.
async fn health(State(ctx): State<Arc<ProxyContext>>) -> impl IntoResponse {
    let addr = ctx.upstream.addr();
    let reachable = matches!(
        tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(&addr)
        )
        .await,
        Ok(Ok(_))
    );
    let status = if reachable {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = format!(
        "{{\"status\":\"{}\",\"upstream\":\"{}\",\"upstream_reachable\":{}}}\n",
        if reachable { "ok" } else { "degraded" },
        addr.replace('"', ""),
        reachable
    );
    (status, [(header::CONTENT_TYPE, "application/json")], body)
}
