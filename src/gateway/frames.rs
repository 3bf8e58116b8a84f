//! Frames of the OpenClaw gateway protocol (docs/protocol.md §1–2): what comes in, what goes out.

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

/// Close codes pairgate uses.
pub mod close {
    /// Going away: the server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol error (no common protocol version).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// Policy violation: bad frames, failed auth, pairing required.
    pub const POLICY: u16 = 1008;
    /// Service restart: the gateway behind pairgate ended the session (front door); reconnect.
    pub const SERVICE_RESTART: u16 = 1012;
    /// Try again later: the server is not ready.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// The device was removed, or its token rotated or revoked.
    pub const DEVICE_REMOVED: u16 = 4001;
    /// The socket did not read its events fast enough; its queue overflowed.
    pub const SLOW_CONSUMER: u16 = 4008;
}

/// A request frame. `params` stays raw JSON text: each method decodes it into its own type (or never looks
/// at it), so no JSON tree is built from a client's frame and memory stays proportional to the frame.
pub struct RequestFrame {
    pub id: String,
    pub method: String,
    pub params: Option<Box<RawValue>>,
}

/// Hand-written: a `connect` frame's params hold the gateway token, a password or a device token, so
/// `Debug` shows only their size.
impl std::fmt::Debug for RequestFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let params = self.params.as_ref().map(|params| format!("<{} bytes>", params.get().len()));
        f.debug_struct("RequestFrame")
            .field("id", &self.id)
            .field("method", &self.method)
            .field("params", &params)
            .finish()
    }
}

/// The fields a request is read from; every other field is skipped unread.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<&'a RawValue>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
}

impl RequestFrame {
    /// Parses a text frame; `Err` holds the reason of the 1008 close (docs/protocol.md §1).
    pub fn parse(text: &str) -> Result<RequestFrame, String> {
        // A syntax check that builds nothing: "not JSON" is told apart from "not a request".
        if serde_json::from_str::<IgnoredAny>(text).is_err() {
            return Err("invalid frame: not JSON".into());
        }
        let not_a_request = || "invalid frame: expected a request (type \"req\")".to_owned();
        let envelope: Envelope<'_> = serde_json::from_str(text).map_err(|_| not_a_request())?;
        let kind = envelope.kind.map(|raw| serde_json::from_str::<String>(raw.get()));
        if !matches!(kind, Some(Ok(kind)) if kind == "req") {
            return Err(not_a_request());
        }
        let string = |raw: Option<&RawValue>, name: &'static str| match raw {
            None => Err(format!("invalid request frame: missing field `{name}`")),
            Some(raw) => serde_json::from_str::<String>(raw.get())
                .map_err(|error| format!("invalid request frame: {}", error_text(&error))),
        };
        Ok(RequestFrame {
            id: string(envelope.id, "id")?,
            method: string(envelope.method, "method")?,
            params: envelope.params.map(RawValue::to_owned),
        })
    }
}

/// Decodes a request's `params` (absent: `null`) as `T`.
pub fn decode_params<T: serde::de::DeserializeOwned>(params: Option<&RawValue>) -> Result<T, String> {
    serde_json::from_str(params.map_or("null", RawValue::get)).map_err(|error| error_text(&error))
}

/// A decoding error's message without its position: params are decoded from a slice of the frame, so
/// "line 1 column 7" would point nowhere the client can see.
fn error_text(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let position = format!(" at line {} column {}", error.line(), error.column());
    match text.strip_suffix(&position) {
        Some(message) => message.to_owned(),
        None => text,
    }
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
    fn request_frames_parse_without_a_tree_and_name_what_is_wrong() {
        let frame =
            RequestFrame::parse(r#"{"type":"req","id":"7","method":"m","params":{"a":[1,2]},"x":[0,0]}"#).unwrap();
        assert_eq!((frame.id.as_str(), frame.method.as_str()), ("7", "m"));
        assert_eq!(frame.params.unwrap().get(), r#"{"a":[1,2]}"#);
        assert!(RequestFrame::parse(r#"{"type":"req","id":"7","method":"m","params":null}"#).unwrap().params.is_none());
        for (text, reason) in [
            ("not json", "invalid frame: not JSON"),
            (r#"{"type":"req","id":1"#, "invalid frame: not JSON"),
            ("[0,0,0]", "invalid frame: expected a request (type \"req\")"),
            (r#"{"type":"event"}"#, "invalid frame: expected a request (type \"req\")"),
            (r#"{"type":"req","method":"m"}"#, "invalid request frame: missing field `id`"),
            (r#"{"type":"req","id":"1"}"#, "invalid request frame: missing field `method`"),
            (
                r#"{"type":"req","id":5,"method":"m"}"#,
                "invalid request frame: invalid type: integer `5`, expected a string",
            ),
        ] {
            assert_eq!(RequestFrame::parse(text).unwrap_err(), reason, "{text}");
        }
    }

    #[test]
    fn params_errors_carry_no_position() {
        #[derive(Debug, Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct P {
            #[allow(dead_code)]
            run_id: String,
        }
        let raw = RawValue::from_string(r#"{"runId": 5}"#.into()).unwrap();
        assert_eq!(decode_params::<P>(Some(&raw)).unwrap_err(), "invalid type: integer `5`, expected a string");
        assert_eq!(decode_params::<P>(None).unwrap_err(), "invalid type: null, expected struct P");
    }

    #[test]
    fn request_frame_debug_shows_no_params() {
        let params = RawValue::from_string(r#"{"auth":{"token":"very-secret"}}"#.to_owned()).unwrap();
        let frame = RequestFrame { id: "1".into(), method: "connect".into(), params: Some(params) };
        assert!(!format!("{frame:?}").contains("very-secret"));
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
