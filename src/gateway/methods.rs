//! Methods a connected socket may call, with the scope each needs (PROTOCOL.md §5). The table is data:
//! a new method is one row here and one arm in `call`.

use serde_json::{Value, json};

use serde::Deserialize;

use super::Gateway;
use super::frames::ErrorShape;
use super::handshake::Session;
use super::ops::{Caller, OpError};
use super::views::{DeviceView, RequestView};
use crate::domain::{DeviceId, Role, Scope, ScopeSet};
use crate::store::{Actor, DeviceRecord, PairingRequest, StoreError};

/// Method name → the scope it needs.
pub const METHODS: &[(&str, Scope)] = &[
    ("health", Scope::Read),
    ("status", Scope::Read),
    ("device.pair.list", Scope::Pairing),
    ("device.pair.approve", Scope::Pairing),
    ("device.pair.reject", Scope::Pairing),
    ("device.pair.remove", Scope::Pairing),
    ("device.token.rotate", Scope::Pairing),
    ("device.token.revoke", Scope::Pairing),
    ("sessions.list", Scope::Read),
    ("sessions.get", Scope::Read),
    ("sessions.patch", Scope::Admin),
    ("sessions.delete", Scope::Admin),
    ("agent.wait", Scope::Write),
    ("subagents.register", Scope::Write),
    ("subagents.start", Scope::Write),
    ("subagents.end", Scope::Write),
    ("subagents.kill", Scope::Admin),
    ("subagents.list", Scope::Read),
];

/// Events a client may receive.
pub const EVENTS: &[&str] = &["connect.challenge", "tick", "device.pair.requested", "device.pair.resolved"];

pub fn names() -> Vec<&'static str> {
    METHODS.iter().map(|(name, _)| *name).collect()
}

pub fn required_scope(method: &str) -> Option<Scope> {
    METHODS.iter().find(|(name, _)| *name == method).map(|(_, scope)| *scope)
}

impl Gateway {
    /// Runs one request of a connected socket.
    pub async fn call(&self, session: &Session, method: &str, params: Value) -> Result<Value, ErrorShape> {
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
            "device.pair.approve" => self.approve(session, parse(params)?).await,
            "device.pair.reject" => self.reject(session, parse(params)?).await,
            "device.pair.remove" => self.remove(session, parse(params)?).await,
            "device.token.rotate" => self.rotate(session, parse(params)?).await,
            "device.token.revoke" => self.revoke(session, parse(params)?).await,
            name if name.starts_with("sessions.") || name.starts_with("subagents.") || name == "agent.wait" => {
                self.call_sessions(session, name, params).await
            }
            _ => unreachable!("every method in METHODS has an arm"),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestIdParams {
    request_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeviceParams {
    device_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenParams {
    device_id: String,
    role: String,
    #[serde(default)]
    scopes: Option<Vec<String>>,
}

fn parse<T: serde::de::DeserializeOwned>(params: Value) -> Result<T, ErrorShape> {
    serde_json::from_value(params).map_err(|e| ErrorShape::invalid(format!("invalid params: {e}")))
}

fn store_unavailable(error: StoreError) -> ErrorShape {
    tracing::error!(%error, "store failed");
    ErrorShape::unavailable("gateway store unavailable, try again")
}

/// The wording the real CLI understands: "unknown requestId" means "no such pending request".
fn op_error(error: OpError) -> ErrorShape {
    match error {
        OpError::UnknownRequest(id) => ErrorShape::invalid(format!("unknown requestId: {}", truncate(&id, 64))),
        OpError::Decided(why) | OpError::Expired(why) => ErrorShape::invalid(format!("unknown requestId ({why})")),
        OpError::UnknownDevice(id) => ErrorShape::invalid(format!("unknown deviceId: {id}")),
        OpError::UnknownToken(what) => ErrorShape::invalid(format!("unknown device token: {what}")),
        OpError::Denied(why) | OpError::Invalid(why) => ErrorShape::invalid(why),
        OpError::Store(error) => store_unavailable(error),
    }
}

fn parse_device_id(text: &str) -> Result<DeviceId, ErrorShape> {
    DeviceId::try_from(text.to_owned())
        .map_err(|_| ErrorShape::invalid(format!("unknown deviceId: {}", truncate(text, 64))))
}

fn parse_role(text: &str) -> Result<Role, ErrorShape> {
    Role::parse(text).ok_or_else(|| ErrorShape::invalid("invalid role"))
}

fn parse_scopes(names: Option<&[String]>) -> Result<Option<ScopeSet>, ErrorShape> {
    names.map(ScopeSet::parse).transpose().map_err(|e| ErrorShape::invalid(e.to_string()))
}

fn caller(session: &Session) -> Caller<'_> {
    Caller {
        actor: Actor::Socket {
            conn_id: session.conn_id.clone(),
            device_id: session.device_id.as_ref().map(|id| id.to_string()),
        },
        remote_addr: Some(session.client_ip.clone()),
        conn_id: Some(&session.conn_id),
        scopes: Some(&session.scopes),
    }
}

impl Gateway {
    async fn approve(&self, session: &Session, params: RequestIdParams) -> Result<Value, ErrorShape> {
        let (request, device) =
            self.approve_request(&caller(session), &params.request_id, None).await.map_err(op_error)?;
        let connected = self.live.is_connected(&request.device_id);
        Ok(
            json!({ "requestId": request.request_id, "device": device.as_ref().map(|device| device_view(device, connected)) }),
        )
    }

    async fn reject(&self, session: &Session, params: RequestIdParams) -> Result<Value, ErrorShape> {
        let rejected = self.reject_request(&caller(session), &params.request_id).await.map_err(op_error)?;
        Ok(json!({ "requestId": rejected.request_id, "deviceId": rejected.device_id }))
    }

    async fn remove(&self, session: &Session, params: DeviceParams) -> Result<Value, ErrorShape> {
        let device_id = parse_device_id(&params.device_id)?;
        self.remove_device(&caller(session), &device_id).await.map_err(op_error)?;
        Ok(json!({ "deviceId": device_id }))
    }

    async fn rotate(&self, session: &Session, params: TokenParams) -> Result<Value, ErrorShape> {
        let (device_id, role) = (parse_device_id(&params.device_id)?, parse_role(&params.role)?);
        let narrower = parse_scopes(params.scopes.as_deref())?;
        let change =
            self.rotate_token(&caller(session), &device_id, role, narrower.as_ref()).await.map_err(op_error)?;
        Ok(json!({
            "deviceId": device_id, "role": role, "scopes": change.scopes.names(), "rotatedAtMs": change.at_ms,
            // The new token is handed to the device itself in hello-ok on its next connect, never here.
            "tokenDelivery": "withheld-cross-device",
        }))
    }

    async fn revoke(&self, session: &Session, params: TokenParams) -> Result<Value, ErrorShape> {
        let (device_id, role) = (parse_device_id(&params.device_id)?, parse_role(&params.role)?);
        let change = self.revoke_token(&caller(session), &device_id, role).await.map_err(op_error)?;
        Ok(json!({ "deviceId": device_id, "role": role, "revokedAtMs": change.at_ms }))
    }
}

fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The request object of PROTOCOL.md §5, as JSON.
pub fn request_view(request: &PairingRequest) -> Value {
    serde_json::to_value(RequestView::from(request)).expect("views serialize")
}

/// The device object of PROTOCOL.md §5, as JSON. Never a token value.
pub fn device_view(device: &DeviceRecord, connected: bool) -> Value {
    serde_json::to_value(DeviceView::new(device, connected)).expect("views serialize")
}
