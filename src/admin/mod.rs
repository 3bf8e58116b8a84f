//! HTTP endpoints beside the WebSocket: health, readiness and the REST admin API.

pub mod api;

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::gateway::Gateway;

pub fn router() -> Router<Arc<Gateway>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(api::router())
}

/// The process is up.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "ok": true }))
}

/// The database answers and its schema is current.
async fn readyz(State(gateway): State<Arc<Gateway>>) -> (StatusCode, Json<serde_json::Value>) {
    if gateway.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "ok": false, "reason": "shutting down" })));
    }
    if gateway.store.is_ready().await {
        (StatusCode::OK, Json(json!({ "ok": true, "schemaVersion": crate::store::latest_known_version() })))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ok": false, "reason": "database unavailable or schema not current" })),
        )
    }
}

/// Prometheus text format; behind the bearer token unless the gateway is configured with `metrics_open`.
async fn metrics(State(gateway): State<Arc<Gateway>>, request: axum::extract::Request) -> axum::response::Response {
    use axum::extract::FromRequestParts;
    use axum::response::IntoResponse;
    if !gateway.config.metrics_open {
        let (mut parts, _) = request.into_parts();
        if let Err(error) = api::RestCaller::from_request_parts(&mut parts, &gateway).await {
            return error.into_response();
        }
    }
    let pending = gateway.store.pending_count(gateway.clock.now_ms()).await.unwrap_or(-1);
    let body = gateway.metrics.render(pending);
    ([(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
        .into_response()
}
