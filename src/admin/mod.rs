//! HTTP endpoints beside the WebSocket: health, readiness, metrics and the REST admin API. Never imports
//! another front end (`gateway`, `cli`, `server`).

pub mod api;
pub mod error;
pub mod page;

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Json, Router};
use serde_json::json;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::App;

/// Every HTTP endpoint, each with its description: the one list both the router and the OpenAPI
/// document come from.
fn documented() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::with_openapi(api::ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(page::admin_page))
        .routes(routes!(page::admin_js))
        .routes(routes!(page::admin_css))
        .routes(routes!(join_code))
        .merge(api::documented())
}

/// The OpenAPI description of the HTTP API, generated from its router.
pub fn openapi() -> utoipa::openapi::OpenApi {
    documented().split_for_parts().1
}

/// Request bodies of the HTTP endpoints; WebSocket frames have their own limit.
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// The longest an HTTP request may take.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub fn router() -> Router<Arc<App>> {
    documented()
        .split_for_parts()
        .0
        .layer(tower_http::limit::RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT))
        .layer(axum::middleware::map_response(error::json_errors))
        .layer(axum::middleware::map_response(page::security_headers))
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Object)))]
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "ok": true }))
}

/// The database answers and its schema is current; in front of a gateway, whether that answers too.
#[utoipa::path(get, path = "/readyz", responses((status = 200, body = Object), (status = 503, body = Object)))]
async fn readyz(State(app): State<Arc<App>>) -> (StatusCode, Json<serde_json::Value>) {
    if app.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "ok": false, "reason": "shutting down" })));
    }
    if app.store.is_ready().await {
        let mut ready = json!({ "ok": true, "schemaVersion": app.store.latest_known_version() });
        // In front of a gateway: whether it answers. pairgate stays ready without it (REST, the offline CLI
        // and pairing decisions work); WebSocket connects get a retryable UNAVAILABLE meanwhile.
        if let Some(seen) = *app.upstream.read().expect("upstream lock") {
            ready["upstream"] = json!({ "reachable": seen.reachable, "checkedAtMs": seen.checked_at_ms });
        }
        (StatusCode::OK, Json(ready))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ok": false, "reason": "database unavailable or schema not current" })),
        )
    }
}

/// Prometheus text format; behind the bearer token unless the gateway is configured with `metrics_open`.
#[utoipa::path(get, path = "/metrics", responses((status = 200, body = String, content_type = "application/openmetrics-text"), (status = 401, body = error::ApiError)))]
async fn metrics(State(app): State<Arc<App>>, request: axum::extract::Request) -> axum::response::Response {
    use axum::extract::FromRequestParts;
    use axum::response::IntoResponse;
    if !app.config.metrics_open {
        let (mut parts, _) = request.into_parts();
        if let Err(error) = api::RestCaller::from_request_parts(&mut parts, &app).await {
            return error.into_response();
        }
    }
    let pending = app.store.pending_count(app.clock.now_ms()).await.unwrap_or(-1);
    let body = app.metrics.render(pending);
    ([(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
        .into_response()
}

/// A join code's setup payload (`{url, bootstrapToken, expiresAtMs}`), handed out once, for
/// `openclaw connect <joinUrl>`. No bearer: the 128-bit short code is the secret. Anything else, a query
/// string, a second fetch, or an unknown, used, revoked or expired code, is `404 {"error":"not_found"}`,
/// as OpenClaw answers, and counts as a failed authentication (429 `rate_limited` once locked out).
#[utoipa::path(get, path = "/j/{code}", params(("code" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = Object), (status = 429, body = Object)))]
async fn join_code(
    State(app): State<Arc<App>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: axum::http::HeaderMap,
    axum::extract::Path(code): axum::extract::Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> axum::response::Response {
    use axum::http::header;
    use axum::response::IntoResponse;
    let not_found = || (StatusCode::NOT_FOUND, Json(json!({ "error": "not_found" }))).into_response();
    let Ok(client) = crate::auth::locality::resolve(peer.ip(), &headers, &app.config.trusted_proxies) else {
        return not_found();
    };
    let now = app.clock.now_ms();
    if let Some(retry_after_ms) = app.auth_locked_for(&client, now) {
        let seconds = (retry_after_ms + 999) / 1000;
        let headers = [(header::RETRY_AFTER, seconds.to_string())];
        return (StatusCode::TOO_MANY_REQUESTS, headers, Json(json!({ "error": "rate_limited" }))).into_response();
    }
    let payload = match query {
        Some(_) => None,
        None => match app.fetch_join_code(&code, &client).await {
            Ok(payload) => payload,
            Err(error) => return api::unavailable(error),
        },
    };
    match payload {
        Some(payload) => ([(header::CACHE_CONTROL, "no-store")], Json(payload)).into_response(),
        None => {
            app.join_fetch_refused(&client).await;
            not_found()
        }
    }
}
