//! The HTTP endpoint: `/health` (liveness and upstream reachability), `/metrics`
//! (Prometheus text) and `/api/<view>` (the admin views as JSON: the same rows the admin
//! console's `SHOW` commands print). Served by axum on its own listener, off the query path.

use super::views::{self, View};
use crate::context::ProxyContext;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

pub fn router(ctx: Arc<ProxyContext>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/api", get(api_index))
        .route("/api/:view", get(api_view))
        .with_state(ctx)
}

async fn metrics(State(ctx): State<Arc<ProxyContext>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::admin::prometheus::render(&ctx),
    )
}

/// The view names, so a client can discover them.
async fn api_index() -> Json<&'static [&'static str]> {
    Json(&View::NAMES)
}

#[derive(Debug, Deserialize)]
struct ViewParams {
    table: Option<String>,
    limit: Option<usize>,
}

/// `/api/<view>?table=&limit=`: the view's rows as a JSON array of objects.
async fn api_view(
    State(ctx): State<Arc<ProxyContext>>,
    Path(name): Path<String>,
    Query(params): Query<ViewParams>,
) -> Response {
    match View::from_name(&name, params.table, params.limit) {
        Some(view) => Json(views::render(&ctx, &view).to_json()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({
                "error": format!("no view {name:?}"),
                "views": View::NAMES,
            })),
        )
            .into_response(),
    }
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
    let body = serde_json::json!({
        "status": if reachable { "ok" } else { "degraded" },
        "upstream": addr,
        "upstream_reachable": reachable,
    });
    (status, Json(body))
}
