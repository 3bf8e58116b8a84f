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
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).merge(api::router())
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
