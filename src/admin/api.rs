//! REST admin API under `/api/v1`: JSON, bearer auth with the gateway secret, one error shape
//! `{code, message, details}`. Decisions go through the same operations as the WebSocket methods.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::auth::locality;
use crate::domain::{DeviceId, RequestStatus, Role, ScopeSet};
use crate::gateway::Gateway;
use crate::gateway::ops::{Caller, OpError};
use crate::gateway::views::{DeviceView, RequestView};
use crate::store::{Actor, AuditRow, DeviceFilter, Run, SessionEntry, StoreError};

const MAX_PAGE: i64 = 200;
const DEFAULT_PAGE: i64 = 50;

/// The one error shape of the REST API.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiError {
    #[serde(skip)]
    status: StatusCode,
    /// unauthorized, forbidden, not_found, conflict, gone, invalid_request, rate_limited, unavailable, internal.
    code: &'static str,
    message: String,
    #[schema(value_type = Object)]
    details: Value,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), details: json!({}) }
    }

    fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "code": self.code, "message": self.message, "details": self.details })))
            .into_response()
    }
}

impl From<OpError> for ApiError {
    fn from(error: OpError) -> Self {
        match error {
            OpError::UnknownRequest(id) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no pairing request {id}"))
            }
            OpError::UnknownDevice(id) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no paired device {id}"))
            }
            OpError::UnknownToken(what) => ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no {what}")),
            OpError::Decided(why) => ApiError::new(StatusCode::CONFLICT, "conflict", why),
            OpError::Expired(why) => ApiError::new(StatusCode::GONE, "gone", why),
            OpError::Denied(why) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", why),
            OpError::Invalid(why) => ApiError::invalid(why),
            OpError::Store(error) => ApiError::from(error),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Busy => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the database is busy; try again")
            }
            other => {
                tracing::error!(error = %other, "store failed in the REST API");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
            }
        }
    }
}

/// An authenticated REST caller: the bearer token is the gateway secret.
pub struct RestCaller {
    remote_addr: String,
}

impl RestCaller {
    fn caller(&self) -> Caller<'_> {
        Caller {
            actor: Actor::Rest { token_id: "gateway".into() },
            remote_addr: Some(self.remote_addr.clone()),
            conn_id: None,
            scopes: None,
        }
    }
}

impl FromRequestParts<Arc<Gateway>> for RestCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gateway: &Arc<Gateway>) -> Result<Self, Self::Rejection> {
        let ConnectInfo(peer) = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .copied()
            .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "no peer address"))?;
        let client = locality::resolve(peer.ip(), &parts.headers, &gateway.config.trusted_proxies).map_err(|_| {
            ApiError::new(StatusCode::FORBIDDEN, "forbidden", "forwarding headers from an untrusted proxy")
        })?;
        let now = gateway.clock.now_ms();
        if !client.local
            && let Some(retry_after_ms) = gateway.limiter.locked_for(client.ip, now)
        {
            let mut error =
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many failed authentication attempts");
            error.details = json!({ "retryAfterMs": retry_after_ms });
            return Err(error);
        }
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        let valid = match presented {
            Some(secret) => gateway.secret.verify(secret.trim()).await,
            None => false,
        };
        if !valid {
            if !client.local {
                gateway.record_auth_failure(client.ip, now).await;
            }
            let message = if presented.is_some() { "bearer token mismatch" } else { "bearer token required" };
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message));
        }
        Ok(RestCaller { remote_addr: client.ip.to_string() })
    }
}

/// A page of results and the cursor of the next one.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    match limit.unwrap_or(DEFAULT_PAGE) {
        n @ 1..=MAX_PAGE => Ok(n),
        n => Err(ApiError::invalid(format!("limit must be between 1 and {MAX_PAGE}, got {n}"))),
    }
}

fn device_id(text: &str) -> Result<DeviceId, ApiError> {
    DeviceId::try_from(text.to_owned())
        .map_err(|_| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no paired device {text}")))
}

fn role(text: &str) -> Result<Role, ApiError> {
    Role::parse(text).ok_or_else(|| ApiError::invalid(format!("unknown role {text}: operator or node")))
}

/// An optional JSON body: empty means none.
fn optional_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<Option<T>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(body).map(Some).map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeviceQuery {
    /// paired (default), removed or all.
    status: Option<String>,
    /// Page size, 1 to 200 (default 50).
    limit: Option<i64>,
    cursor: Option<String>,
}

/// List devices.
#[utoipa::path(get, path = "/api/v1/devices", params(DeviceQuery),
    responses((status = 200, body = Page<DeviceView>), (status = 401, body = ApiError), (status = 422, body = ApiError)))]
async fn list_devices(
    State(gateway): State<Arc<Gateway>>,
    _caller: RestCaller,
    Query(query): Query<DeviceQuery>,
) -> Result<Json<Page<DeviceView>>, ApiError> {
    let filter = match query.status.as_deref() {
        None => DeviceFilter::Paired,
        Some(text) => {
            DeviceFilter::parse(text).ok_or_else(|| ApiError::invalid("status must be paired, removed or all"))?
        }
    };
    let limit = page_limit(query.limit)?;
    let after =
        query.cursor.as_deref().map(|c| DeviceId::try_from(c.to_owned())).transpose().map_err(ApiError::invalid)?;
    let devices = gateway.store.devices_page(filter, after.as_ref(), limit).await?;
    let next_cursor =
        (devices.len() as i64 == limit).then(|| devices.last().map(|d| d.device_id.to_string())).flatten();
    let items = devices.iter().map(|d| DeviceView::new(d, gateway.live.is_connected(&d.device_id))).collect();
    Ok(Json(Page { items, next_cursor }))
}

/// One device, removed or not.
#[utoipa::path(get, path = "/api/v1/devices/{id}", params(("id" = String, Path)),
    responses((status = 200, body = DeviceView), (status = 401, body = ApiError), (status = 404, body = ApiError)))]
async fn get_device(
    State(gateway): State<Arc<Gateway>>,
    _caller: RestCaller,
    Path(id): Path<String>,
) -> Result<Json<DeviceView>, ApiError> {
    let id = device_id(&id)?;
    let device = gateway
        .store
        .device(&id)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no device {id}")))?;
    Ok(Json(DeviceView::new(&device, gateway.live.is_connected(&id))))
}

/// Remove a device: its grants go, its tokens are revoked, its live sockets are closed (4001).
#[utoipa::path(delete, path = "/api/v1/devices/{id}", params(("id" = String, Path)),
    responses((status = 200, body = Object), (status = 401, body = ApiError), (status = 404, body = ApiError)))]
async fn remove_device(
    State(gateway): State<Arc<Gateway>>,
    caller: RestCaller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = device_id(&id)?;
    gateway.remove_device(&caller.caller(), &id).await?;
    Ok(Json(json!({ "deviceId": id })))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RequestQuery {
    /// pending, approved, rejected, expired or superseded; all when absent.
    status: Option<String>,
    /// Page size, 1 to 200 (default 50).
    limit: Option<i64>,
    cursor: Option<String>,
}

/// List pairing requests, newest first.
#[utoipa::path(get, path = "/api/v1/requests", params(RequestQuery),
    responses((status = 200, body = Page<RequestView>), (status = 401, body = ApiError), (status = 422, body = ApiError)))]
async fn list_requests(
    State(gateway): State<Arc<Gateway>>,
    _caller: RestCaller,
    Query(query): Query<RequestQuery>,
) -> Result<Json<Page<RequestView>>, ApiError> {
    let status = query
        .status
        .as_deref()
        .map(|text| RequestStatus::parse(text).ok_or_else(|| ApiError::invalid(format!("unknown status {text}"))))
        .transpose()?;
    let limit = page_limit(query.limit)?;
    let before =
        query.cursor.as_deref().map(str::parse::<i64>).transpose().map_err(|_| ApiError::invalid("bad cursor"))?;
    let (requests, next) = gateway.store.requests_page(status, before, limit).await?;
    Ok(Json(Page { items: requests.iter().map(RequestView::from).collect(), next_cursor: next.map(|n| n.to_string()) }))
}

/// Body of an approval: optionally a narrower scope list than was asked.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ApproveBody {
    scopes: Option<Vec<String>>,
}

/// Approve a pending request (409 when it was decided already, 410 when it expired).
#[utoipa::path(post, path = "/api/v1/requests/{id}/approve", params(("id" = String, Path)), request_body(content = Option<ApproveBody>),
    responses((status = 200, body = Object), (status = 401, body = ApiError), (status = 404, body = ApiError),
              (status = 409, body = ApiError), (status = 410, body = ApiError), (status = 422, body = ApiError)))]
async fn approve_request(
    State(gateway): State<Arc<Gateway>>,
    caller: RestCaller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body: Option<ApproveBody> = optional_body(&body)?;
    let narrower = body
        .and_then(|b| b.scopes)
        .map(|names| ScopeSet::parse(&names))
        .transpose()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let (request, device) = gateway.approve_request(&caller.caller(), &id, narrower.as_ref()).await?;
    let device = device.map(|d| DeviceView::new(&d, gateway.live.is_connected(&d.device_id)));
    Ok(Json(json!({ "requestId": request.request_id, "device": device })))
}

/// Reject a pending request.
#[utoipa::path(post, path = "/api/v1/requests/{id}/reject", params(("id" = String, Path)),
    responses((status = 200, body = Object), (status = 401, body = ApiError), (status = 404, body = ApiError),
              (status = 409, body = ApiError), (status = 410, body = ApiError)))]
async fn reject_request(
    State(gateway): State<Arc<Gateway>>,
    caller: RestCaller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let request = gateway.reject_request(&caller.caller(), &id).await?;
    Ok(Json(json!({ "requestId": request.request_id, "deviceId": request.device_id })))
}

/// Rotate a device's token: the live one is revoked now, the device gets a new one on its next connect.
#[utoipa::path(post, path = "/api/v1/devices/{id}/tokens/{role}/rotate", params(("id" = String, Path), ("role" = String, Path)),
    request_body(content = Option<ApproveBody>),
    responses((status = 200, body = Object), (status = 401, body = ApiError), (status = 404, body = ApiError), (status = 422, body = ApiError)))]
async fn rotate_token(
    State(gateway): State<Arc<Gateway>>,
    caller: RestCaller,
    Path((id, role_name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let (id, role) = (device_id(&id)?, role(&role_name)?);
    let body: Option<ApproveBody> = optional_body(&body)?;
    let narrower = body
        .and_then(|b| b.scopes)
        .map(|n| ScopeSet::parse(&n))
        .transpose()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let change = gateway.rotate_token(&caller.caller(), &id, role, narrower.as_ref()).await?;
    Ok(Json(json!({
        "deviceId": id, "role": role, "scopes": change.scopes.names(), "rotatedAtMs": change.at_ms,
        "tokenDelivery": "withheld-cross-device",
    })))
}

/// Revoke a device's live token for a role.
#[utoipa::path(post, path = "/api/v1/devices/{id}/tokens/{role}/revoke", params(("id" = String, Path), ("role" = String, Path)),
    responses((status = 200, body = Object), (status = 401, body = ApiError), (status = 404, body = ApiError)))]
async fn revoke_token(
    State(gateway): State<Arc<Gateway>>,
    caller: RestCaller,
    Path((id, role_name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (id, role) = (device_id(&id)?, role(&role_name)?);
    let change = gateway.revoke_token(&caller.caller(), &id, role).await?;
    Ok(Json(json!({ "deviceId": id, "role": role, "revokedAtMs": change.at_ms })))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Page size, 1 to 200 (default 50).
    limit: Option<i64>,
    cursor: Option<String>,
}

/// The audit trail, newest first.
#[utoipa::path(get, path = "/api/v1/audit", params(AuditQuery),
    responses((status = 200, body = Page<AuditRow>), (status = 401, body = ApiError), (status = 422, body = ApiError)))]
async fn audit(
    State(gateway): State<Arc<Gateway>>,
    _caller: RestCaller,
    Query(query): Query<AuditQuery>,
) -> Result<Json<Page<AuditRow>>, ApiError> {
    let limit = page_limit(query.limit)?;
    let before =
        query.cursor.as_deref().map(str::parse::<i64>).transpose().map_err(|_| ApiError::invalid("bad cursor"))?;
    let rows = gateway.store.audit_page(before, limit).await?;
    let next_cursor = (rows.len() as i64 == limit).then(|| rows.last().map(|row| row.event_id.to_string())).flatten();
    Ok(Json(Page { items: rows, next_cursor }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SessionQuery {
    /// Only the children of this session.
    #[serde(rename = "spawnedBy")]
    spawned_by: Option<String>,
    /// Page size, 1 to 200 (default 50).
    limit: Option<i64>,
    cursor: Option<String>,
}

/// List sessions by key.
#[utoipa::path(get, path = "/api/v1/sessions", params(SessionQuery),
    responses((status = 200, body = Page<SessionEntry>), (status = 401, body = ApiError), (status = 422, body = ApiError)))]
async fn list_sessions(
    State(gateway): State<Arc<Gateway>>,
    _caller: RestCaller,
    Query(query): Query<SessionQuery>,
) -> Result<Json<Page<SessionEntry>>, ApiError> {
    let limit = page_limit(query.limit)?;
    let items = gateway.store.sessions_page(query.spawned_by.as_deref(), query.cursor.as_deref(), limit).await?;
    let next_cursor = (items.len() as i64 == limit).then(|| items.last().map(|s| s.key.clone())).flatten();
    Ok(Json(Page { items, next_cursor }))
}

/// A session with its runs and its child sessions.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionDetail {
    entry: SessionEntry,
    runs: Vec<Run>,
    children: Vec<SessionEntry>,
}

/// One session, its runs (newest first) and its children.
#[utoipa::path(get, path = "/api/v1/sessions/{key}", params(("key" = String, Path)),
    responses((status = 200, body = SessionDetail), (status = 401, body = ApiError), (status = 404, body = ApiError)))]
async fn get_session(
    State(gateway): State<Arc<Gateway>>,
    _caller: RestCaller,
    Path(key): Path<String>,
) -> Result<Json<SessionDetail>, ApiError> {
    let entry = gateway
        .store
        .session(&key)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no session {key}")))?;
    let runs = gateway.store.runs_page(None, Some(&key), None, MAX_PAGE).await?;
    let children = gateway.store.sessions_page(Some(&key), None, MAX_PAGE).await?;
    Ok(Json(SessionDetail { entry, runs, children }))
}

/// Kill a run and every active run below it.
#[utoipa::path(post, path = "/api/v1/runs/{id}/kill", params(("id" = String, Path)),
    responses((status = 200, body = Object), (status = 401, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn kill_run(
    State(gateway): State<Arc<Gateway>>,
    caller: RestCaller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let killed = gateway.kill_run(&caller.caller().actor, &id).await.map_err(|error| match error {
        StoreError::NotFound(what) => ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no {what}")),
        StoreError::IllegalTransition { .. } => ApiError::new(StatusCode::CONFLICT, "conflict", error.to_string()),
        other => ApiError::from(other),
    })?;
    let ids: Vec<&str> = killed.iter().map(|run| run.run_id.as_str()).collect();
    Ok(Json(json!({ "runId": id, "killed": ids })))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "pairgate admin API",
        description = "Devices, pairing requests, tokens and the audit trail. Bearer auth with the gateway token."
    ),
    paths(
        list_devices,
        get_device,
        remove_device,
        list_requests,
        approve_request,
        reject_request,
        rotate_token,
        revoke_token,
        audit
    ),
    components(schemas(ApiError, DeviceView, RequestView, AuditRow, ApproveBody))
)]
pub struct ApiDoc;

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

pub fn router() -> Router<Arc<Gateway>> {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/devices", get(list_devices))
        .route("/api/v1/devices/{id}", get(get_device).merge(delete(remove_device)))
        .route("/api/v1/devices/{id}/tokens/{role}/rotate", post(rotate_token))
        .route("/api/v1/devices/{id}/tokens/{role}/revoke", post(revoke_token))
        .route("/api/v1/requests", get(list_requests))
        .route("/api/v1/requests/{id}/approve", post(approve_request))
        .route("/api/v1/requests/{id}/reject", post(reject_request))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/sessions", get(list_sessions))
        .route("/api/v1/sessions/{key}", get(get_session))
        .route("/api/v1/runs/{id}/kill", post(kill_run))
}
