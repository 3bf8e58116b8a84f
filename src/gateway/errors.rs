//! The one conversion of application errors to the protocol's error object (docs/protocol.md §10). The
//! wording is what the real `openclaw` CLI understands: "unknown requestId" means "no such pending request".

use serde_json::json;

use super::frames::ErrorShape;
use crate::app::AppError;
use crate::domain::{Refusal, SpawnLimit};

impl From<AppError> for ErrorShape {
    fn from(error: AppError) -> Self {
        match error {
            AppError::Refused(refusal) => refusal_error(refusal),
            AppError::Store(error) => {
                tracing::error!(%error, "store failed");
                ErrorShape::unavailable("gateway store unavailable, try again")
            }
        }
    }
}

fn refusal_error(refusal: Refusal) -> ErrorShape {
    match refusal {
        Refusal::UnknownRequest { request_id } => {
            ErrorShape::invalid(format!("unknown requestId: {}", truncate(&request_id, 64)))
        }
        Refusal::AlreadyDecided { .. } | Refusal::Expired { .. } => {
            ErrorShape::invalid(format!("unknown requestId ({refusal})"))
        }
        Refusal::UnknownDevice { device_id } => ErrorShape::invalid(format!("unknown deviceId: {device_id}")),
        Refusal::NoGrant { device_id, role } => {
            ErrorShape::invalid(format!("unknown device token: role {role} of device {device_id}"))
        }
        Refusal::NoLiveToken { device_id, role } => {
            ErrorShape::invalid(format!("unknown device token: live {role} token of device {device_id}"))
        }
        Refusal::UnknownSession { key } => ErrorShape::invalid(format!("unknown session {key}")),
        Refusal::UnknownRun { run_id } => ErrorShape::invalid(format!("unknown run {run_id}")),
        Refusal::UnknownSetupCode { setup_id } => {
            ErrorShape::invalid(format!("unknown setupId: {}", truncate(&setup_id, 128)))
        }
        Refusal::SpawnLimit { limit, max, current } => ErrorShape {
            code: "FORBIDDEN",
            message: refusal.to_string(),
            details: Some(json!({ "code": "SPAWN_LIMIT", "limit": limit.as_str(), "max": max, "current": current })),
            retryable: Some(limit != SpawnLimit::Depth),
            retry_after_ms: None,
        },
        Refusal::IllegalTransition { from, to, .. } => ErrorShape::invalid(refusal.to_string())
            .with_details(json!({ "code": "ILLEGAL_TRANSITION", "from": from, "to": to })),
        Refusal::ScopeNotAsked { .. }
        | Refusal::ScopeNotGranted { .. }
        | Refusal::MissingScope { .. }
        | Refusal::NodeNeedsAdmin { .. }
        | Refusal::ImmutableField { .. }
        | Refusal::NotAnAgentKey { .. }
        | Refusal::LineageOnMainSession { .. }
        | Refusal::OwnParent
        | Refusal::MainSessionUndeletable { .. }
        | Refusal::SessionHasActiveRuns { .. }
        | Refusal::SessionHasChildren { .. }
        | Refusal::DuplicateRun { .. }
        | Refusal::InvalidField { .. }
        | Refusal::TooLong { .. }
        | Refusal::TooManyPendingRequests { .. }
        | Refusal::SetupCodeInvalid { .. }
        | Refusal::SetupCodeSettled { .. }
        | Refusal::TooManySetupCodes { .. }
        | Refusal::NoPublicUrl { .. }
        | Refusal::BadPublicUrl { .. }
        | Refusal::JoinNeedsTls
        | Refusal::JoinNeedsNodeAccess
        | Refusal::BadLabel
        | Refusal::RenameDenied
        | Refusal::InvalidSessionOrRun => ErrorShape::invalid(refusal.to_string()),
    }
}

pub use crate::domain::prefix_within as truncate;
