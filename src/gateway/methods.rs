//! Methods a connected socket may call, with the scope each needs (PROTOCOL.md §5). The table is data:
//! a new method is one row here and one arm in `call`.

use serde_json::{Value, json};

use super::Gateway;
use super::frames::ErrorShape;
use super::handshake::Session;
use crate::domain::Scope;
use crate::store::{DeviceRecord, PairingRequest};

/// Method name → the scope it needs.
pub const METHODS: &[(&str, Scope)] =
    &[("health", Scope::Read), ("status", Scope::Read), ("device.pair.list", Scope::Pairing)];

/// Events a client may receive.
pub const EVENTS: &[&str] = &["connect.challenge", "tick"];

pub fn names() -> Vec<&'static str> {
    METHODS.iter().map(|(name, _)| *name).collect()
}

pub fn required_scope(method: &str) -> Option<Scope> {
    METHODS.iter().find(|(name, _)| *name == method).map(|(_, scope)| *scope)
}

impl Gateway {
    /// Runs one request of a connected socket.
    pub async fn call(&self, session: &Session, method: &str, _params: Value) -> Result<Value, ErrorShape> {
        let Some(needed) = required_scope(method) else {
            return Err(ErrorShape::invalid(format!("unknown method: {}", truncate(method, 64))));
        };
        if !session.scopes.allows(needed) {
            return Err(ErrorShape::invalid(format!("missing scope: {needed}")));
        }
        let now = self.clock.now_ms();
        match method {
            "health" => Ok(json!({ "ok": true, "ts": now })),
            "status" => Ok(json!({
                "ok": true,
                "ts": now,
                "version": env!("CARGO_PKG_VERSION"),
                "uptimeMs": (now - self.started_at_ms).max(0),
                "liveSockets": self.live.socket_count(),
            })),
            "device.pair.list" => {
                let store_error = |e| {
                    tracing::error!(error = %e, "device.pair.list failed");
                    ErrorShape::unavailable("gateway store unavailable, try again")
                };
                let pending = self.store.pending_requests(now).await.map_err(store_error)?;
                let paired = self.store.paired_devices().await.map_err(store_error)?;
                Ok(json!({
                    "pending": pending.iter().map(request_view).collect::<Vec<_>>(),
                    "paired": paired.iter().map(|device| device_view(device, self.live.is_connected(&device.device_id))).collect::<Vec<_>>(),
                }))
            }
            _ => unreachable!("every method in METHODS has an arm"),
        }
    }
}

fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The request object of PROTOCOL.md §5.
pub fn request_view(request: &PairingRequest) -> Value {
    let mut view = json!({
        "requestId": request.request_id,
        "deviceId": request.device_id,
        "publicKey": request.public_key.to_base64url(),
        "platform": request.meta.platform.clone().unwrap_or_default(),
        "deviceFamily": request.meta.device_family.clone().unwrap_or_default(),
        "clientId": request.meta.client_id,
        "clientMode": request.meta.client_mode,
        "role": request.role,
        "roles": request.roles,
        "scopes": request.scopes.names(),
        "remoteIp": request.remote_ip,
        "silent": false,
        "isRepair": request.is_repair,
        "reason": request.reason.as_str(),
        "ts": request.refreshed_at_ms,
        "createdAtMs": request.created_at_ms,
        "expiresAtMs": request.expires_at_ms,
    });
    if let Some(name) = &request.meta.display_name {
        view["displayName"] = json!(name);
    }
    view
}

/// The device object of PROTOCOL.md §5. Never a token value.
pub fn device_view(device: &DeviceRecord, connected: bool) -> Value {
    let roles = device.roles();
    let scopes: crate::domain::ScopeSet = device.grants.iter().flat_map(|grant| grant.scopes.iter()).collect();
    let mut view = json!({
        "deviceId": device.device_id,
        "publicKey": device.public_key.to_base64url(),
        "platform": device.meta.platform.clone().unwrap_or_default(),
        "deviceFamily": device.meta.device_family.clone().unwrap_or_default(),
        "clientId": device.meta.client_id,
        "clientMode": device.meta.client_mode,
        "role": roles.first(),
        "roles": roles,
        "scopes": scopes.names(),
        "approvedScopes": scopes.names(),
        "approvedVia": device.approved_via,
        "createdAtMs": device.created_at_ms,
        "approvedAtMs": device.approved_at_ms,
        "connected": connected,
        "tokens": device.tokens.iter().map(|token| {
            let mut summary = json!({ "role": token.role, "scopes": token.scopes.names(), "createdAtMs": token.issued_at_ms });
            if let Some(at) = token.rotated_at_ms { summary["rotatedAtMs"] = json!(at); }
            if let Some(at) = token.revoked_at_ms { summary["revokedAtMs"] = json!(at); }
            if let Some(at) = token.last_used_at_ms { summary["lastUsedAtMs"] = json!(at); }
            summary
        }).collect::<Vec<_>>(),
    });
    if let Some(name) = &device.meta.display_name {
        view["displayName"] = json!(name);
    }
    if let Some(ip) = &device.remote_ip {
        view["remoteIp"] = json!(ip);
    }
    if let Some(at) = device.last_seen_at_ms {
        view["lastSeenAtMs"] = json!(at);
    }
    view
}
