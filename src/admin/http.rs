//! The HTTP endpoint: `/` (the dashboard, see [`super::dashboard`]), `/health` (liveness and
//! upstream reachability), `/metrics` (Prometheus text), `/api/<view>` (the admin views as
//! JSON: the same rows the admin console's `SHOW` commands print) and `/api/history` (the
//! last ten minutes of per-second samples, see [`super::history`]). Served by axum on its
//! own listener, off the query path.

use super::history::History;
use super::views::{self, View};
use crate::context::ProxyContext;
use axum::extract::{FromRef, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// What the handlers share. Each handler extracts only the part it needs (`FromRef`).
#[derive(Clone)]
struct AppState {
    ctx: Arc<ProxyContext>,
    history: Arc<History>,
}

impl FromRef<AppState> for Arc<ProxyContext> {
    fn from_ref(state: &AppState) -> Self {
        state.ctx.clone()
    }
}

impl FromRef<AppState> for Arc<History> {
    fn from_ref(state: &AppState) -> Self {
        state.history.clone()
    }
}

/// The endpoint's routes. `history` is the ring [`super::history::run`] fills; the caller
/// runs that sampler.
pub fn router(ctx: Arc<ProxyContext>, history: Arc<History>) -> Router {
    Router::new()
        .merge(super::dashboard::routes())
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/api", get(api_index))
        // Not an admin view (it has no `SHOW` form); a fixed segment wins over `:view`.
        .route("/api/history", get(api_history))
        .route("/api/:view", get(api_view))
        .with_state(AppState { ctx, history })
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

/// Everything under `/api/`, so a client can discover it: the view names and `history`.
async fn api_index() -> Json<Vec<&'static str>> {
    let mut names = View::NAMES.to_vec();
    names.push("history");
    Json(names)
}

/// `/api/history`: `{"interval_s": 1, "samples": [{"t", "routes", "hit_ratio", "dropped",
/// "connections"}, ...]}`, oldest first.
async fn api_history(State(history): State<Arc<History>>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "no-cache")],
        Json(history.to_json()),
    )
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
