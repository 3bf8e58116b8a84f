//! The one error shape of the HTTP API, `{code, message, details}`, and the one conversion of application
//! errors to it. Internal failures are logged, never shown.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::app::AppError;
use crate::domain::Refusal;
use crate::store::StoreError;

/// The one error shape of the REST API.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiError {
    #[serde(skip)]
    pub(crate) status: StatusCode,
    /// unauthorized, forbidden, not_found, conflict, gone, invalid_request, rate_limited, unavailable, internal.
    pub(crate) code: &'static str,
    pub(crate) message: String,
    #[schema(value_type = Object)]
    pub(crate) details: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), details: json!({}) }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "code": self.code, "message": self.message, "details": self.details })))
            .into_response()
    }
}

impl From<AppError> for ApiError {
    fn from(error: AppError) -> Self {
        match error {
            AppError::Refused(refusal) => refusal_error(refusal),
            AppError::Store(StoreError::Busy) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the database is busy; try again")
            }
            AppError::Store(error) => {
                tracing::error!(%error, "store failed in the REST API");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        ApiError::from(AppError::from(error))
    }
}

fn refusal_error(refusal: Refusal) -> ApiError {
    let conflict = |refusal: &Refusal| ApiError::new(StatusCode::CONFLICT, "conflict", refusal.to_string());
    let forbidden = |refusal: &Refusal| ApiError::new(StatusCode::FORBIDDEN, "forbidden", refusal.to_string());
    match &refusal {
        Refusal::UnknownRequest { request_id } => ApiError::not_found(format!("no pairing request {request_id}")),
        Refusal::UnknownDevice { device_id } => ApiError::not_found(format!("no paired device {device_id}")),
        Refusal::NoGrant { device_id, role } => ApiError::not_found(format!("no role {role} of device {device_id}")),
        Refusal::NoLiveToken { device_id, role } => {
            ApiError::not_found(format!("no live {role} token of device {device_id}"))
        }
        Refusal::UnknownSession { key } => ApiError::not_found(format!("no session {key}")),
        Refusal::UnknownRun { run_id } => ApiError::not_found(format!("no run {run_id}")),
        Refusal::UnknownSetupCode { setup_id } => ApiError::not_found(format!("no setup code {setup_id}")),
        Refusal::Expired { .. } => ApiError::new(StatusCode::GONE, "gone", refusal.to_string()),
        Refusal::AlreadyDecided { .. }
        | Refusal::IllegalTransition { .. }
        | Refusal::ImmutableField { .. }
        | Refusal::SessionHasActiveRuns { .. }
        | Refusal::SessionHasChildren { .. }
        | Refusal::SetupCodeSettled { .. } => conflict(&refusal),
        Refusal::MissingScope { .. }
        | Refusal::NodeNeedsAdmin { .. }
        | Refusal::SpawnLimit { .. }
        | Refusal::RenameDenied => forbidden(&refusal),
        Refusal::ScopeNotAsked { .. }
        | Refusal::ScopeNotGranted { .. }
        | Refusal::NotAnAgentKey { .. }
        | Refusal::LineageOnMainSession { .. }
        | Refusal::OwnParent
        | Refusal::MainSessionUndeletable { .. }
        | Refusal::DuplicateRun { .. }
        | Refusal::InvalidField { .. }
        | Refusal::TooLong { .. }
        | Refusal::TooManyPendingRequests { .. }
        | Refusal::SetupCodeInvalid { .. }
        | Refusal::TooManySetupCodes { .. }
        | Refusal::NoPublicUrl { .. }
        | Refusal::BadPublicUrl { .. }
        | Refusal::JoinNeedsTls
        | Refusal::JoinNeedsNodeAccess
        | Refusal::BadLabel
        | Refusal::InvalidSessionOrRun => ApiError::invalid(refusal.to_string()),
    }
}

/// Gives every error answer of the HTTP API the one shape, also those made below the handlers: a query
/// string that does not parse (400), a method the path does not take (405), a body over the limit (413), a
/// request that took too long (408). Their text becomes the message.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let code = match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        status if status.is_server_error() => "internal",
        _ => "invalid_request",
    };
    // These bodies are the framework's own short texts, never a client's input echoed at length.
    let body = axum::body::to_bytes(response.into_body(), 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&body).trim().to_owned();
    let message = if text.is_empty() { status.canonical_reason().unwrap_or("error").to_lowercase() } else { text };
    ApiError::new(status, code, message).into_response()
}
