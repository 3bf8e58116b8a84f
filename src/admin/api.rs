//! REST admin API under `/api/v1`: JSON, bearer auth with the gateway secret, one error shape
//! `{code, message, details}`. Decisions go through the application layer, as the WebSocket methods do.
//! The router and its OpenAPI description are built together from the same handlers, so neither can list
//! an endpoint the other lacks.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use crate::app::setup::MintRequest;
use crate::app::views::{
    Approved, DeviceRemoved, DeviceRenamed, DeviceView, Rejected, RequestView, RunsKilled, SetupCodeView, TokenRevoked,
    TokenRotated,
};
use crate::app::{App, Caller};
use crate::auth::locality;
use crate::domain::{DeviceId, RequestStatus, Role, ScopeSet, SetupAccess};
use crate::store::{Actor, AuditFilter, AuditRow, DeviceFilter, Run, SessionEntry};

const MAX_PAGE: i64 = 200;
const DEFAULT_PAGE: i64 = 50;

/// The header in which a caller names the operator behind it (the admin page sends the name given at
/// sign-in), percent-encoded UTF-8: recorded with its decisions in the audit trail.
pub const OPERATOR_HEADER: &str = "x-pairgate-operator";
/// The longest operator name, in characters.
const MAX_OPERATOR_CHARS: usize = 64;

/// An authenticated REST caller: the bearer token is the gateway secret.
pub struct RestCaller {
    remote_addr: String,
    operator: Option<String>,
}

/// The operator name of `X-Pairgate-Operator`: `None` when absent or empty; refused when it is not
/// percent-encoded UTF-8, is longer than 64 characters or holds a control character.
fn operator_name(headers: &axum::http::HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(OPERATOR_HEADER) else { return Ok(None) };
    let invalid = || {
        ApiError::invalid(format!(
            "{OPERATOR_HEADER} must be a percent-encoded UTF-8 name of 1 to {MAX_OPERATOR_CHARS} characters"
        ))
    };
    let encoded = value.to_str().map_err(|_| invalid())?;
    let name = percent_encoding::percent_decode_str(encoded).decode_utf8().map_err(|_| invalid())?;
    let name = name.trim();
    if name.is_empty() {
        return Ok(None);
    }
    if name.chars().count() > MAX_OPERATOR_CHARS || name.chars().any(char::is_control) {
        return Err(invalid());
    }
    Ok(Some(name.to_owned()))
}

/// Whether a browser's request comes from a page of pairgate's own origin: the browser itself says so in
/// `Sec-Fetch-Site` (a page cannot set it), and an `Origin`, when sent, names the host the request was
/// sent to. A page of any other site gets `cross-site` (and could not send the bearer header without a
/// CORS preflight, which pairgate never answers).
fn same_origin(headers: &axum::http::HeaderMap) -> bool {
    let site = headers.get("sec-fetch-site").and_then(|value| value.to_str().ok());
    let host = headers.get(header::HOST).and_then(|value| value.to_str().ok());
    let origin_host = headers
        .get(header::ORIGIN)
        .map(|value| value.to_str().ok().and_then(|origin| origin.split_once("://")).map(|(_, host)| host));
    site == Some("same-origin")
        && match origin_host {
            None => true,
            Some(origin_host) => origin_host.is_some() && origin_host == host,
        }
}

impl RestCaller {
    fn caller(&self) -> Caller<'_> {
        Caller {
            actor: Actor::Rest { token_id: "gateway".into(), operator: self.operator.clone() },
            remote_addr: Some(self.remote_addr.clone()),
            device_id: None,
            conn_id: None,
            scopes: None,
        }
    }
}

impl FromRequestParts<Arc<App>> for RestCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Self::Rejection> {
        let ConnectInfo(peer) = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .copied()
            .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "no peer address"))?;
        let client = locality::resolve(peer.ip(), &parts.headers, &app.config.trusted_proxies)
            .map_err(|refused| ApiError::new(StatusCode::FORBIDDEN, "forbidden", refused.message()))?;
        let now = app.clock.now_ms();
        // Local clients are exempt from the lockout; browsers on loopback are not.
        if let Some(retry_after_ms) = app.auth_locked_for(&client, now) {
            let error =
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many failed authentication attempts");
            return Err(error.with_details(json!({ "retryAfterMs": retry_after_ms })));
        }
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, secret)| secret);
        let valid = match presented {
            Some(secret) => app.secret.verify(secret.trim()).await,
            None => false,
        };
        if !valid {
            app.record_auth_failure(&client, now).await;
            let message = if presented.is_some() { "bearer token mismatch" } else { "bearer token required" };
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message));
        }
        let operator = operator_name(&parts.headers)?;
        // The REST API has no device identity, and a browser gets no scopes without one (docs/protocol.md §3):
        // the bearer token in another site's page is not the operator's. The one exception is pairgate's
        // own admin page: same origin, and an operator named at its sign-in.
        if client.browser && !(operator.is_some() && same_origin(&parts.headers)) {
            let message = "browser requests get no access without a device identity";
            return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", message));
        }
        Ok(RestCaller { remote_addr: client.ip.to_string(), operator })
    }
}

/// An application failure as the API answers it, for handlers outside this module.
pub(super) fn unavailable(error: crate::app::AppError) -> axum::response::Response {
    use axum::response::IntoResponse;
    ApiError::from(error).into_response()
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

/// The optional `{"scopes": [...]}` body of an approval or a rotation: the scopes to narrow to.
fn narrower_scopes(body: &Bytes) -> Result<Option<ScopeSet>, ApiError> {
    let body: Option<ApproveBody> = optional_body(body)?;
    let names = body.and_then(|body| body.scopes);
    names.map(|names| ScopeSet::parse(&names)).transpose().map_err(|e| ApiError::invalid(e.to_string()))
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
    State(app): State<Arc<App>>,
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
    let devices = app.store.devices_page(filter, after.as_ref(), limit).await?;
    let next_cursor =
        (devices.len() as i64 == limit).then(|| devices.last().map(|d| d.device_id.to_string())).flatten();
    let items = devices.iter().map(|d| DeviceView::new(d, app.live.is_connected(&d.device_id))).collect();
    Ok(Json(Page { items, next_cursor }))
}

/// One device, removed or not.
#[utoipa::path(get, path = "/api/v1/devices/{id}", params(("id" = String, Path)),
    responses((status = 200, body = DeviceView), (status = 401, body = ApiError), (status = 404, body = ApiError)))]
async fn get_device(
    State(app): State<Arc<App>>,
    _caller: RestCaller,
    Path(id): Path<String>,
) -> Result<Json<DeviceView>, ApiError> {
    let id = device_id(&id)?;
    let device = app
        .store
        .device(&id)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no device {id}")))?;
    Ok(Json(DeviceView::new(&device, app.live.is_connected(&id))))
}

/// Remove a device: its grants go, its tokens are revoked, its live sockets are closed (4001).
#[utoipa::path(delete, path = "/api/v1/devices/{id}", params(("id" = String, Path)),
    responses((status = 200, body = DeviceRemoved), (status = 401, body = ApiError), (status = 404, body = ApiError)))]
async fn remove_device(
    State(app): State<Arc<App>>,
    caller: RestCaller,
    Path(id): Path<String>,
) -> Result<Json<DeviceRemoved>, ApiError> {
    let id = device_id(&id)?;
    Ok(Json(app.remove_device(&caller.caller(), &id).await?))
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
    State(app): State<Arc<App>>,
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
    let (requests, next) = app.store.requests_page(status, before, limit).await?;
    Ok(Json(Page { items: requests.iter().map(RequestView::from).collect(), next_cursor: next.map(|n| n.to_string()) }))
}

/// Body of an approval: optionally a narrower scope list than was asked.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ApproveBody {
    scopes: Option<Vec<String>>,
}

/// Approve a pending request (409 when it was decided already, 410 when it expired).
#[utoipa::path(post, path = "/api/v1/requests/{id}/approve", params(("id" = String, Path)), request_body(content = Option<ApproveBody>),
    responses((status = 200, body = Approved), (status = 401, body = ApiError), (status = 404, body = ApiError),
              (status = 409, body = ApiError), (status = 410, body = ApiError), (status = 422, body = ApiError)))]
async fn approve_request(
    State(app): State<Arc<App>>,
    caller: RestCaller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Approved>, ApiError> {
    let narrower = narrower_scopes(&body)?;
    Ok(Json(app.approve_request(&caller.caller(), &id, narrower.as_ref()).await?))
}

/// Reject a pending request.
#[utoipa::path(post, path = "/api/v1/requests/{id}/reject", params(("id" = String, Path)),
    responses((status = 200, body = Rejected), (status = 401, body = ApiError), (status = 404, body = ApiError),
              (status = 409, body = ApiError), (status = 410, body = ApiError)))]
async fn reject_request(
    State(app): State<Arc<App>>,
    caller: RestCaller,
    Path(id): Path<String>,
) -> Result<Json<Rejected>, ApiError> {
    Ok(Json(app.reject_request(&caller.caller(), &id).await?))
}

/// Rotate a device's token: the live one is revoked now, the device gets a new one on its next connect.
#[utoipa::path(post, path = "/api/v1/devices/{id}/tokens/{role}/rotate", params(("id" = String, Path), ("role" = String, Path)),
    request_body(content = Option<ApproveBody>),
    responses((status = 200, body = TokenRotated), (status = 401, body = ApiError), (status = 404, body = ApiError), (status = 422, body = ApiError)))]
async fn rotate_token(
    State(app): State<Arc<App>>,
    caller: RestCaller,
    Path((id, role_name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<TokenRotated>, ApiError> {
    let (id, role) = (device_id(&id)?, role(&role_name)?);
    let narrower = narrower_scopes(&body)?;
    Ok(Json(app.rotate_token(&caller.caller(), &id, role, narrower.as_ref()).await?))
}

/// Revoke a device's live token for a role.
#[utoipa::path(post, path = "/api/v1/devices/{id}/tokens/{role}/revoke", params(("id" = String, Path), ("role" = String, Path)),
    responses((status = 200, body = TokenRevoked), (status = 401, body = ApiError), (status = 404, body = ApiError)))]
async fn revoke_token(
    State(app): State<Arc<App>>,
    caller: RestCaller,
    Path((id, role_name)): Path<(String, String)>,
) -> Result<Json<TokenRevoked>, ApiError> {
    let (id, role) = (device_id(&id)?, role(&role_name)?);
    Ok(Json(app.revoke_token(&caller.caller(), &id, role).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only the events of this device (their subject).
    device: Option<String>,
    /// Only this action (`pairing.approve`), or a family of actions: a prefix ending in a dot (`pairing.`).
    action: Option<String>,
    /// Page size, 1 to 200 (default 50).
    limit: Option<i64>,
    cursor: Option<String>,
}

/// The longest `device` or `action` filter accepted.
const MAX_FILTER_BYTES: usize = 128;

/// The audit trail, newest first; optionally one device's events, one action's or one family's.
#[utoipa::path(get, path = "/api/v1/audit", params(AuditQuery),
    responses((status = 200, body = Page<AuditRow>), (status = 401, body = ApiError), (status = 422, body = ApiError)))]
async fn audit(
    State(app): State<Arc<App>>,
    _caller: RestCaller,
    Query(query): Query<AuditQuery>,
) -> Result<Json<Page<AuditRow>>, ApiError> {
    let limit = page_limit(query.limit)?;
    let before =
        query.cursor.as_deref().map(str::parse::<i64>).transpose().map_err(|_| ApiError::invalid("bad cursor"))?;
    let filter = AuditFilter::new(query.device, query.action);
    for (name, value) in [("device", &filter.subject), ("action", &filter.action)] {
        if value.as_ref().is_some_and(|value| value.len() > MAX_FILTER_BYTES) {
            return Err(ApiError::invalid(format!("{name} is longer than {MAX_FILTER_BYTES} bytes")));
        }
    }
    let rows = app.store.audit_matching(&filter, before, limit).await?;
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
    State(app): State<Arc<App>>,
    _caller: RestCaller,
    Query(query): Query<SessionQuery>,
) -> Result<Json<Page<SessionEntry>>, ApiError> {
    let limit = page_limit(query.limit)?;
    let items = app.store.sessions_page(query.spawned_by.as_deref(), query.cursor.as_deref(), limit).await?;
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
    State(app): State<Arc<App>>,
    _caller: RestCaller,
    Path(key): Path<String>,
) -> Result<Json<SessionDetail>, ApiError> {
    let entry = app
        .store
        .session(&key)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no session {key}")))?;
    let runs = app.store.runs_page(None, Some(&key), None, MAX_PAGE).await?;
    let children = app.store.sessions_page(Some(&key), None, MAX_PAGE).await?;
    Ok(Json(SessionDetail { entry, runs, children }))
}

/// Kill a run and every active run below it.
#[utoipa::path(post, path = "/api/v1/runs/{id}/kill", params(("id" = String, Path)),
    responses((status = 200, body = RunsKilled), (status = 401, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn kill_run(
    State(app): State<Arc<App>>,
    caller: RestCaller,
    Path(id): Path<String>,
) -> Result<Json<RunsKilled>, ApiError> {
    Ok(Json(app.kill_run(&caller.caller().actor, &id).await?))
}

/// Pairing events as they happen, for the admin page: a `text/event-stream` (read it with `fetch()`, which
/// can send the bearer header; `EventSource` cannot). Each event is named as on the WebSocket
/// (`device.pair.requested`, `device.pair.resolved`) with the same payload. A stream that falls behind
/// is ended; the reader reconnects and reloads what it shows.
#[utoipa::path(get, path = "/api/v1/events",
    responses((status = 200, body = String, content_type = "text/event-stream"), (status = 401, body = ApiError)))]
async fn events(State(app): State<Arc<App>>, _caller: RestCaller) -> axum::response::Response {
    use axum::response::IntoResponse;
    use axum::response::sse::{Event, KeepAlive, Sse};
    use futures_util::StreamExt;
    let receiver = app.live.subscribe_stream();
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        let event = receiver.recv().await?;
        let frame = Event::default().event(event.name).json_data(&event.payload).unwrap_or_default();
        Some((Ok::<_, std::convert::Infallible>(frame), receiver))
    });
    // Ends at shutdown, so that draining connections does not wait for a reader that never leaves.
    let stream = stream.take_until(app.shutdown.clone().cancelled_owned());
    let mut response = Sse::new(stream).keep_alive(KeepAlive::default()).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
    response
}

/// What to mint: the access level (default `node`), a URL over the configured one, and whether to make
/// a one-time join URL too.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MintBody {
    /// `full`, `limited`, `node` (default) or `voice-node`.
    access: Option<String>,
    /// ws://, wss://, http:// or https:// URL devices reach pairgate at.
    url: Option<String>,
    /// Also make a one-time join URL (`openclaw connect <url>`; node access, TLS or loopback).
    join: Option<bool>,
}

/// A minted setup code. `setupCode` (and `joinUrl`) are secrets, shown this once: they are not stored.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MintedView {
    #[serde(flatten)]
    code: SetupCodeView,
    /// What the device redeems (`openclaw node run --pair <setupCode>`, or the app's QR scanner).
    setup_code: String,
    /// The QR code of `setupCode`, a PNG, base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    qr_png: Option<String>,
    /// The same PNG as a data URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    qr_data_url: Option<String>,
    /// `request.publicUrl`, `pairgate.publicUrl` or `pairgate.listen`.
    url_source: &'static str,
    /// Full access was asked for a plaintext URL off loopback and lowered to limited.
    access_downgraded: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    join_url: Option<String>,
}

/// Mint a setup code: a short-lived, single-use credential that pairs the device redeeming it with the
/// access it carries. The reply is the only copy of the code.
impl std::fmt::Debug for MintedView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedView").field("code", &self.code).field("setup_code", &"<redacted>").finish()
    }
}

#[utoipa::path(post, path = "/api/v1/setup-codes", request_body(content = Option<MintBody>),
    responses((status = 201, body = MintedView), (status = 401, body = ApiError), (status = 422, body = ApiError)))]
async fn mint_setup_code(
    State(app): State<Arc<App>>,
    caller: RestCaller,
    body: Bytes,
) -> Result<(StatusCode, Json<MintedView>), ApiError> {
    use base64::Engine as _;
    let body: MintBody = optional_body(&body)?.unwrap_or_default();
    let access = match body.access.as_deref() {
        None => SetupAccess::Node,
        Some(name) => SetupAccess::parse(name)
            .ok_or_else(|| ApiError::invalid(format!("unknown access {name}: full, limited, node or voice-node")))?,
    };
    let request = MintRequest { access, url: body.url, join: body.join.unwrap_or(false) };
    let minted = app.mint_setup_code(&caller.caller(), &request).await?;
    let png = minted.qr_png.as_ref().map(|png| base64::engine::general_purpose::STANDARD.encode(png));
    let view = MintedView {
        code: SetupCodeView::new(&minted.code, app.clock.now_ms()),
        qr_data_url: png.as_ref().map(|png| format!("data:image/png;base64,{png}")),
        qr_png: png,
        setup_code: minted.setup_code,
        url_source: minted.url_source,
        access_downgraded: minted.access_downgraded,
        join_url: minted.join_url,
    };
    Ok((StatusCode::CREATED, Json(view)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SetupCodeQuery {
    /// How many, newest first, 1 to 200 (default 50).
    limit: Option<i64>,
}

/// Setup codes, newest first, with their state (`unused`, `redeemed`, `revoked`, `expired`). Never their
/// secret.
#[utoipa::path(get, path = "/api/v1/setup-codes", params(SetupCodeQuery),
    responses((status = 200, body = Page<SetupCodeView>), (status = 401, body = ApiError)))]
async fn list_setup_codes(
    State(app): State<Arc<App>>,
    _caller: RestCaller,
    Query(query): Query<SetupCodeQuery>,
) -> Result<Json<Page<SetupCodeView>>, ApiError> {
    let codes = app.store.setup_codes(page_limit(query.limit)?).await?;
    let now = app.clock.now_ms();
    Ok(Json(Page { items: codes.iter().map(|code| SetupCodeView::new(code, now)).collect(), next_cursor: None }))
}

/// Revoke an unused setup code (409 when it was used, revoked or expired already).
#[utoipa::path(post, path = "/api/v1/setup-codes/{id}/revoke", params(("id" = String, Path)),
    responses((status = 200, body = SetupCodeView), (status = 401, body = ApiError), (status = 404, body = ApiError),
              (status = 409, body = ApiError)))]
async fn revoke_setup_code(
    State(app): State<Arc<App>>,
    caller: RestCaller,
    Path(id): Path<String>,
) -> Result<Json<SetupCodeView>, ApiError> {
    let code = app.revoke_setup_code(&caller.caller(), &id).await?;
    Ok(Json(SetupCodeView::new(&code, app.clock.now_ms())))
}

/// Body of a rename.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelBody {
    /// 1 to 64 characters.
    label: String,
}

/// Set the operator's label of a device; it survives removal and re-pairing.
#[utoipa::path(put, path = "/api/v1/devices/{id}/label", params(("id" = String, Path)), request_body = LabelBody,
    responses((status = 200, body = DeviceRenamed), (status = 401, body = ApiError), (status = 404, body = ApiError),
              (status = 422, body = ApiError)))]
async fn rename_device(
    State(app): State<Arc<App>>,
    caller: RestCaller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<DeviceRenamed>, ApiError> {
    let id = device_id(&id)?;
    let body: LabelBody =
        optional_body(&body)?.ok_or_else(|| ApiError::invalid("a body {\"label\": …} is required"))?;
    let label = app.rename_device(&caller.caller(), &id, &body.label).await?;
    Ok(Json(DeviceRenamed { device_id: id.to_string(), label }))
}

#[derive(OpenApi)]
#[openapi(info(
    title = "pairgate admin API",
    description = "Devices, pairing requests, tokens, sessions and the audit trail. Bearer auth with the gateway token."
))]
pub(super) struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", responses((status = 200, body = Object)))]
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(super::openapi())
}

/// The endpoints under `/api/v1`, each with its description.
pub(super) fn documented() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new()
        .routes(routes!(openapi_json))
        .routes(routes!(list_devices))
        .routes(routes!(get_device, remove_device))
        .routes(routes!(rotate_token))
        .routes(routes!(revoke_token))
        .routes(routes!(list_requests))
        .routes(routes!(approve_request))
        .routes(routes!(reject_request))
        .routes(routes!(mint_setup_code, list_setup_codes))
        .routes(routes!(revoke_setup_code))
        .routes(routes!(rename_device))
        .routes(routes!(audit))
        .routes(routes!(events))
        .routes(routes!(list_sessions))
        .routes(routes!(get_session))
        .routes(routes!(kill_run))
}
