//! What every front end shows: the request and device objects of docs/protocol.md §5, and the answers to
//! operator decisions. Never a token value.

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::domain::{DeviceId, DeviceRecord, Role, ScopeSet};
use crate::store::{PairingRequest, SetupCode, TokenChange};

/// A pairing request.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestView {
    pub request_id: String,
    pub device_id: String,
    pub public_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub platform: String,
    pub device_family: String,
    pub client_id: Option<String>,
    pub client_mode: Option<String>,
    /// The role of the latest ask.
    pub role: String,
    /// Every role asked for while the request was pending.
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    pub remote_ip: Option<String>,
    pub silent: bool,
    pub is_repair: bool,
    /// not-paired, metadata-upgrade, role-upgrade or scope-upgrade.
    pub reason: String,
    /// pending, approved, rejected, expired or superseded.
    pub status: String,
    /// When the ask was last made (ms).
    pub ts: i64,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_at_ms: Option<i64>,
}

/// A token summary: its role, scopes and times.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenView {
    pub role: String,
    pub scopes: Vec<String>,
    pub created_at_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotated_at_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used_at_ms: Option<i64>,
}

/// A device, its approved roles and scopes, and its newest token per role.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceView {
    pub device_id: String,
    pub public_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// The operator's name for the device (`device.pair.rename`), which survives re-pairing. OpenClaw's
    /// name for the field, which its CLI shows in `openclaw devices list`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator_label: Option<String>,
    pub platform: String,
    pub device_family: String,
    pub client_id: Option<String>,
    pub client_mode: Option<String>,
    pub role: Option<String>,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    pub approved_scopes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_ip: Option<String>,
    pub approved_via: Option<String>,
    pub created_at_ms: i64,
    pub approved_at_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen_at_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed_at_ms: Option<i64>,
    pub connected: bool,
    pub tokens: Vec<TokenView>,
}

fn names(scopes: &ScopeSet) -> Vec<String> {
    scopes.names().into_iter().map(str::to_owned).collect()
}

impl From<&PairingRequest> for RequestView {
    fn from(request: &PairingRequest) -> Self {
        RequestView {
            request_id: request.request_id.clone(),
            device_id: request.device_id.to_string(),
            public_key: request.public_key.to_base64url(),
            display_name: request.meta.display_name.clone(),
            platform: request.meta.platform.clone().unwrap_or_default(),
            device_family: request.meta.device_family.clone().unwrap_or_default(),
            client_id: request.meta.client_id.clone(),
            client_mode: request.meta.client_mode.clone(),
            role: request.role.to_string(),
            roles: request.roles.iter().map(|role| role.to_string()).collect(),
            scopes: names(&request.scopes),
            remote_ip: request.remote_ip.clone(),
            silent: false,
            is_repair: request.is_repair,
            reason: request.reason.as_str().to_owned(),
            status: request.status.as_str().to_owned(),
            ts: request.refreshed_at_ms,
            created_at_ms: request.created_at_ms,
            expires_at_ms: request.expires_at_ms,
            resolved_at_ms: request.resolved_at_ms,
        }
    }
}

impl DeviceView {
    pub fn new(device: &DeviceRecord, connected: bool) -> Self {
        let roles = device.roles();
        let scopes: ScopeSet = device.grants.iter().flat_map(|grant| grant.scopes.iter()).collect();
        DeviceView {
            device_id: device.device_id.to_string(),
            public_key: device.public_key.to_base64url(),
            display_name: device.meta.display_name.clone(),
            operator_label: device.label.clone(),
            platform: device.meta.platform.clone().unwrap_or_default(),
            device_family: device.meta.device_family.clone().unwrap_or_default(),
            client_id: device.meta.client_id.clone(),
            client_mode: device.meta.client_mode.clone(),
            role: roles.first().map(|role| role.to_string()),
            roles: roles.iter().map(|role| role.to_string()).collect(),
            scopes: names(&scopes),
            approved_scopes: names(&scopes),
            remote_ip: device.remote_ip.clone(),
            approved_via: device.approved_via.clone(),
            created_at_ms: device.created_at_ms,
            approved_at_ms: device.approved_at_ms,
            last_seen_at_ms: device.last_seen_at_ms,
            removed_at_ms: device.removed_at_ms,
            connected,
            tokens: device
                .tokens
                .iter()
                .map(|token| TokenView {
                    role: token.role.to_string(),
                    scopes: names(&token.scopes),
                    created_at_ms: token.issued_at_ms,
                    rotated_at_ms: token.rotated_at_ms,
                    revoked_at_ms: token.revoked_at_ms,
                    last_used_at_ms: token.last_used_at_ms,
                })
                .collect(),
        }
    }
}

/// The request object as JSON (for events).
pub fn request_json(request: &PairingRequest) -> Value {
    serde_json::to_value(RequestView::from(request)).expect("views serialize")
}

/// An approved request, and the device as it is now.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Approved {
    pub request_id: String,
    pub device: Option<DeviceView>,
}

impl Approved {
    pub fn new(request: &PairingRequest, device: Option<&DeviceRecord>, connected: bool) -> Self {
        Approved { request_id: request.request_id.clone(), device: device.map(|d| DeviceView::new(d, connected)) }
    }
}

/// A rejected request.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rejected {
    pub request_id: String,
    pub device_id: String,
}

/// A removed device.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRemoved {
    pub device_id: String,
}

/// A rotated token: the live one is revoked now; the device gets its new one in hello-ok on its next
/// connect, never here.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenRotated {
    pub device_id: String,
    pub role: &'static str,
    /// The role's scopes after the rotation.
    pub scopes: Vec<String>,
    pub rotated_at_ms: i64,
    /// Always `withheld-cross-device`.
    pub token_delivery: &'static str,
}

impl TokenRotated {
    pub fn new(device_id: &DeviceId, role: Role, change: &TokenChange) -> Self {
        TokenRotated {
            device_id: device_id.to_string(),
            role: role.as_str(),
            scopes: names(&change.scopes),
            rotated_at_ms: change.at_ms,
            token_delivery: "withheld-cross-device",
        }
    }
}

/// A revoked token.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenRevoked {
    pub device_id: String,
    pub role: &'static str,
    pub revoked_at_ms: i64,
}

/// A killed run, and every run killed with it (itself included).
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunsKilled {
    pub run_id: String,
    pub killed: Vec<String>,
}

/// A setup code as operators see it: never its secret.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SetupCodeView {
    pub setup_id: String,
    /// `full`, `limited`, `node` or `voice-node`.
    pub access: &'static str,
    /// `unused`, `redeemed`, `revoked` or `expired`.
    pub state: &'static str,
    pub gateway_url: String,
    pub issued_at_ms: i64,
    pub expires_at_ms: i64,
    pub issued_by: String,
    /// It has a one-time join URL; `joinFetchedAtMs` says whether it was fetched.
    pub join: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join_fetched_at_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redeemed_at_ms: Option<i64>,
    /// The device that redeemed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
}

impl SetupCodeView {
    pub fn new(code: &SetupCode, now_ms: i64) -> Self {
        SetupCodeView {
            setup_id: code.setup_id.clone(),
            access: code.access.as_str(),
            state: code.state(now_ms).as_str(),
            gateway_url: code.gateway_url.clone(),
            issued_at_ms: code.issued_at_ms,
            expires_at_ms: code.expires_at_ms,
            issued_by: code.issued_by.clone(),
            join: code.join,
            join_fetched_at_ms: code.join_fetched_at_ms,
            redeemed_at_ms: code.redeemed_at_ms,
            device_id: code.device_id.clone(),
            revoked_at_ms: code.revoked_at_ms,
            revoked_by: code.revoked_by.clone(),
        }
    }
}

/// A renamed device.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRenamed {
    pub device_id: String,
    pub label: String,
}
