//! Frames of the OpenClaw gateway protocol (docs/protocol.md §1–2): what comes in, what goes out.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Close codes pairgate uses.
pub mod close {
    /// Going away: the server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol error (no common protocol version).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// Policy violation: bad frames, failed auth, pairing required.
    pub const POLICY: u16 = 1008;
    /// Try again later: the server is not ready.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// The device was removed, or its token rotated or revoked.
    pub const DEVICE_REMOVED: u16 = 4001;
    /// The socket did not read its events fast enough; its queue overflowed.
    pub const SLOW_CONSUMER: u16 = 4008;
}

/// A request frame, loosely parsed: `params` is decoded per method.
#[derive(Debug, Deserialize)]
pub struct RequestFrame {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    pub method: String,
    #[serde(default)]
    pub params: Value,
}

/// The `error` object of a failed response.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorShape {
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<i64>,
}

pub const INVALID_REQUEST: &str = "INVALID_REQUEST";
pub const NOT_PAIRED: &str = "NOT_PAIRED";
pub const UNAVAILABLE: &str = "UNAVAILABLE";

impl ErrorShape {
    pub fn invalid(message: impl Into<String>) -> Self {
        ErrorShape {
            code: INVALID_REQUEST,
            message: message.into(),
            details: None,
            retryable: None,
            retry_after_ms: None,
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        ErrorShape {
            code: UNAVAILABLE,
            message: message.into(),
            details: None,
            retryable: Some(true),
            retry_after_ms: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }
}

pub fn response_ok(id: &str, payload: Value) -> String {
    json!({ "type": "res", "id": id, "ok": true, "payload": payload }).to_string()
}

pub fn response_error(id: &str, error: &ErrorShape) -> String {
    json!({ "type": "res", "id": id, "ok": false, "error": error }).to_string()
}

pub fn event(name: &str, payload: Value, seq: Option<u64>) -> String {
    let mut frame = json!({ "type": "event", "event": name, "payload": payload });
    if let Some(seq) = seq {
        frame["seq"] = json!(seq);
    }
    frame.to_string()
}

/// `connect` params. Unknown fields are ignored, never rejected.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectParams {
    pub min_protocol: i64,
    pub max_protocol: i64,
    pub client: ClientInfo,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    #[serde(default)]
    pub auth: Option<ConnectAuth>,
    #[serde(default)]
    pub device: Option<DeviceParams>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientInfo {
    pub id: String,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub platform: Option<String>,
    #[serde(default)]
    pub device_family: Option<String>,
    pub mode: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub instance_id: Option<String>,
}

/// Credentials. `Debug` is hand-written: none of these may reach a log.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectAuth {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub device_token: Option<String>,
    #[serde(default)]
    pub bootstrap_token: Option<String>,
}

impl std::fmt::Debug for ConnectAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectAuth")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("device_token", &self.device_token.as_ref().map(|_| "<redacted>"))
            .field("bootstrap_token", &self.bootstrap_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl ConnectAuth {
    /// The token covered by the device signature: token ?? deviceToken ?? bootstrapToken ?? "".
    pub fn signed_token(&self) -> &str {
        self.token.as_deref().or(self.device_token.as_deref()).or(self.bootstrap_token.as_deref()).unwrap_or("")
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceParams {
    pub id: String,
    pub public_key: String,
    pub signature: String,
    pub signed_at: i64,
    pub nonce: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_params_ignore_unknown_fields() {
        let params: ConnectParams = serde_json::from_value(json!({
            "minProtocol": 4, "maxProtocol": 4,
            "client": {"id": "cli", "version": "1", "platform": "linux", "mode": "cli", "future": true},
            "caps": [], "commands": [], "permissions": {}, "locale": "en", "userAgent": "x", "pathEnv": "/bin",
            "auth": {"token": "t", "approvalRuntimeToken": "z"}
        }))
        .unwrap();
        assert_eq!(params.client.id, "cli");
        assert_eq!(params.auth.unwrap().signed_token(), "t");
    }

    #[test]
    fn auth_debug_redacts() {
        let auth = ConnectAuth { token: Some("very-secret".into()), ..ConnectAuth::default() };
        assert!(!format!("{auth:?}").contains("very-secret"));
    }

    #[test]
    fn error_frame_shape() {
        let frame = response_error("7", &ErrorShape::invalid("nope").with_details(json!({"code": "X"})));
        let value: Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(
            value,
            json!({"type": "res", "id": "7", "ok": false, "error": {"code": "INVALID_REQUEST", "message": "nope", "details": {"code": "X"}}})
        );
    }
}
