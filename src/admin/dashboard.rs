//! The dashboard page at `/`: one HTML page, one script and one stylesheet, compiled into
//! the binary so the page works on a machine without internet access and always matches
//! the proxy serving it. The script polls the JSON API (`/api/history`, `/api/hot_keys`,
//! `/api/routes`, `/api/stores`, `/api/queries`) and draws its charts as inline SVG itself;
//! nothing is fetched from anywhere but this endpoint, and the Content-Security-Policy
//! says so to the browser.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

pub const INDEX_HTML: &str = include_str!("dashboard/index.html");
pub const APP_JS: &str = include_str!("dashboard/app.js");
pub const STYLE_CSS: &str = include_str!("dashboard/style.css");

/// Only this origin may supply scripts, styles, data and images (plus `data:` images for
/// the favicon); inline scripts are not allowed at all.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// `/`, `/assets/app.js` and `/assets/style.css`, for any router state.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/assets/app.js", get(app_js))
        .route("/assets/style.css", get(style_css))
}

/// `no-cache` so a browser revalidates after an upgrade instead of running an old script
/// against a new API; the assets are small enough that revalidating costs nothing.
fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, CSP),
        ],
        body,
    )
}

async fn index() -> impl IntoResponse {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style_css() -> impl IntoResponse {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_references_only_embedded_assets() {
        assert!(INDEX_HTML.contains("/assets/app.js"));
        assert!(INDEX_HTML.contains("/assets/style.css"));
        for text in [INDEX_HTML, APP_JS, STYLE_CSS] {
            // The SVG namespace is a name, not something fetched.
            let text = text.replace("http://www.w3.org/2000/svg", "");
            assert!(!text.contains("http://"), "absolute URL in an asset");
            assert!(!text.contains("https://"), "absolute URL in an asset");
            assert!(!text.contains("//cdn"), "CDN reference in an asset");
        }
    }
}
