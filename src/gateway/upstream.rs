//! The front door (`serve --upstream`): a real OpenClaw gateway behind pairgate, on loopback. pairgate
//! decides every connect; each connect it allows gets a session of its own on the gateway, opened with the
//! gateway's shared secret and capped at the scopes pairgate granted, and the frames after hello-ok are
//! relayed both ways (docs/protocol.md §11).
//!
//! Facts measured on OpenClaw 2026.9.6 that shape this: a loopback connect with the gateway token, no
//! device identity and client `cli`/`cli` is granted exactly the operator scopes it asks for; the gateway
//! takes at most 32 unfinished handshakes per client address (HTTP 503 beyond), so pairgate opens at most
//! `max_handshakes` at once and the rest wait in line; the upstream speaks protocol 4 only.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{
    Message,
    protocol::{Role, WebSocketConfig},
};

use super::handshake::Authenticated;
use super::transport::{Recording, unread_after};
use crate::client::{ConnectSpec, DeviceIdentity};
use crate::clock::Clock;

/// A session on the upstream gateway (`ws://` only: it is on loopback).
pub type UpstreamSocket = WebSocketStream<Recording<TcpStream>>;

/// How long to wait before opening a session again on a gateway that answered 503 (busy).
const BUSY_RETRY: Duration = Duration::from_millis(100);

/// The protocol versions offered to the upstream gateway: OpenClaw 2026.9 picks 4, 2026.4 picks 3.
const UPSTREAM_PROTOCOLS: (i64, i64) = (3, 4);

/// The gateway's shared secret; `Debug` never shows it.
#[derive(Clone)]
pub enum UpstreamSecret {
    Token(String),
    Password(String),
}

impl std::fmt::Debug for UpstreamSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamSecret::Token(_) => f.write_str("Token(<redacted>)"),
            UpstreamSecret::Password(_) => f.write_str("Password(<redacted>)"),
        }
    }
}

/// The key every upstream device identity is derived from: 32 random bytes, kept in a `0600` file (never
/// in the database, an export or a backup); nodes of a fleet share the file. `Debug` never shows it.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> MasterKey {
        MasterKey(bytes)
    }

    /// The upstream identity of one (device, role): the gateway sees one stable device per client device
    /// and role, and pairgate can make it again from the key alone.
    pub fn identity(&self, device_id: &crate::domain::DeviceId, role: crate::domain::Role) -> DeviceIdentity {
        self.derive(&[device_id.as_str(), role.as_str()])
    }

    /// The upstream identity of one grant: (device, or `-` for a client without one, role, scopes). For a
    /// gateway that pairs a new loopback device silently with what it first asks but refuses a later scope
    /// upgrade (OpenClaw 2026.4), every grant pairgate makes is a first ask.
    pub fn identity_for_grant(
        &self,
        device_id: Option<&crate::domain::DeviceId>,
        role: crate::domain::Role,
        scopes: &[&str],
    ) -> DeviceIdentity {
        let mut sorted = scopes.to_vec();
        sorted.sort_unstable();
        let scopes = sorted.join(",");
        self.derive(&["grant", device_id.map_or("-", |id| id.as_str()), role.as_str(), &scopes])
    }

    fn derive(&self, parts: &[&str]) -> DeviceIdentity {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(b"pairgate upstream identity v1");
        for part in parts {
            mac.update(b"\0");
            mac.update(part.as_bytes());
        }
        DeviceIdentity::from_seed(mac.finalize().into_bytes().into())
    }
}

#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    /// `ws://127.0.0.1:PORT` of the gateway.
    pub url: String,
    pub secret: UpstreamSecret,
    /// Derives the upstream identity of each client device (see [`MasterKey::identity`]).
    pub master_key: MasterKey,
    /// Upstream handshakes in flight at most; the others wait in line (OpenClaw refuses a 33rd).
    pub max_handshakes: usize,
    /// How long an upstream handshake may take, waiting in line included.
    pub handshake_timeout: Duration,
}

/// Why no upstream session could be opened.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("the upstream gateway is unreachable: {0}")]
    Unreachable(String),
    #[error("the upstream gateway did not answer in time")]
    Timeout,
    #[error("the upstream gateway refused the session: {code}: {message}")]
    Refused { code: String, message: String, retryable: bool },
}

impl UpstreamError {
    /// Whether a client may simply connect again: the gateway was away or busy, not refusing.
    pub fn retryable(&self) -> bool {
        match self {
            UpstreamError::Unreachable(_) | UpstreamError::Timeout => true,
            UpstreamError::Refused { retryable, .. } => *retryable,
        }
    }

    /// What the client is told: the kind of failure, never the gateway's own words.
    pub fn client_message(&self) -> String {
        match self {
            UpstreamError::Unreachable(_) => "upstream gateway unavailable".to_owned(),
            UpstreamError::Timeout => "upstream gateway unavailable: it did not answer in time".to_owned(),
            UpstreamError::Refused { code, .. } => format!("upstream gateway refused the session ({code})"),
        }
    }
}

pub struct Upstream {
    config: UpstreamConfig,
    pacing: Semaphore,
    /// Each grant opens its session with an identity of its own (see [`Upstream::open`]): set once the
    /// gateway showed it does not pair one identity per device at the scopes of each ask.
    grant_identities: AtomicBool,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("url", &self.config.url).finish()
    }
}

impl Upstream {
    pub fn new(config: UpstreamConfig) -> Arc<Upstream> {
        let pacing = Semaphore::new(config.max_handshakes.max(1));
        Arc::new(Upstream { config, pacing, grant_identities: AtomicBool::new(false) })
    }

    pub fn url(&self) -> &str {
        &self.config.url
    }

    /// Opens a session for a client pairgate allowed: its role's scopes, never more. `client` is the
    /// client's own `client` object of its connect (its id, mode, platform, version), `extra` the rest of
    /// its connect params that the gateway reads (`caps`, `commands`, `permissions`), `origin` a browser's
    /// `Origin`. Returns the socket and the gateway's hello-ok payload.
    pub async fn open(
        &self,
        who: &Authenticated,
        client: &Value,
        extra: &serde_json::Map<String, Value>,
        origin: Option<&str>,
    ) -> Result<(UpstreamSocket, Value), UpstreamError> {
        tokio::time::timeout(self.config.handshake_timeout, async {
            let _turn = self.pacing.acquire().await.expect("the pacing semaphore is never closed");
            let asked = who.scopes.names();
            let stable = who.device_id.as_ref().map(|device_id| self.config.master_key.identity(device_id, who.role));
            // A device-less session always tries without an identity first: it says nothing of how the
            // gateway pairs devices.
            let has_device = stable.is_some();
            if !has_device || !self.grant_identities.load(Ordering::Relaxed) {
                match self.handshake(who, client, extra, origin, stable).await {
                    Ok((socket, hello)) if covers(&hello, &asked) && within(&hello, who.role.as_str(), &asked) => {
                        return Ok((socket, hello));
                    }
                    // A hello-ok that grants less, or more, than was asked (OpenClaw 2026.4 names the scopes
                    // of the identity's device token there, not the session's, so it cannot be checked), or
                    // a refused scope upgrade (2026.4 again): from now on each grant has its own identity,
                    // a first ask, which such a gateway pairs silently with exactly what it asks.
                    Ok((mut socket, _)) => {
                        let _ = socket.close(None).await;
                    }
                    Err(UpstreamError::Refused { code, .. }) if code == "PAIRING_REQUIRED" => {}
                    Err(error) => return Err(error),
                }
                if has_device && !self.grant_identities.swap(true, Ordering::Relaxed) {
                    tracing::info!(
                        "the upstream gateway does not pair one identity per device at the scopes of each ask \
                         (OpenClaw 2026.4): each grant has an identity of its own from now on"
                    );
                }
            }
            let for_grant = self.config.master_key.identity_for_grant(who.device_id.as_ref(), who.role, &asked);
            let (mut socket, hello) = self.handshake(who, client, extra, origin, Some(for_grant)).await?;
            if !within(&hello, who.role.as_str(), &asked) {
                let _ = socket.close(None).await;
                return Err(UpstreamError::Refused {
                    code: "UPSTREAM_OVER_GRANT".into(),
                    message: format!("the gateway granted {} beyond {asked:?}", granted_scopes(&hello)),
                    retryable: false,
                });
            }
            if !covers(&hello, &asked) {
                let _ = socket.close(None).await;
                return Err(UpstreamError::Refused {
                    code: "SCOPES_NOT_GRANTED".into(),
                    message: format!("the gateway granted {} of {asked:?}", granted_scopes(&hello)),
                    retryable: false,
                });
            }
            Ok((socket, hello))
        })
        .await
        .map_err(|_| UpstreamError::Timeout)?
    }

    /// Whether the gateway is ready now (its own `GET /readyz` answers 200), for pairgate's `/readyz`. An
    /// HTTP probe leaves no half-open WebSocket in the gateway's log.
    pub async fn reachable(&self) -> bool {
        let probe = async {
            let authority = self.authority()?;
            let stream = TcpStream::connect(&authority).await.ok()?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.ok()?;
            tokio::spawn(connection);
            let request = axum::http::Request::get("/readyz")
                .header(axum::http::header::HOST, authority)
                .body(axum::body::Body::empty())
                .ok()?;
            Some(sender.send_request(request).await.ok()?.status() == axum::http::StatusCode::OK)
        };
        matches!(tokio::time::timeout(Duration::from_secs(2), probe).await, Ok(Some(true)))
    }

    async fn handshake(
        &self,
        who: &Authenticated,
        client: &Value,
        extra: &serde_json::Map<String, Value>,
        origin: Option<&str>,
        identity: Option<DeviceIdentity>,
    ) -> Result<(UpstreamSocket, Value), UpstreamError> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        // A small read buffer, as on pairgate's own sockets: tungstenite allocates (and zeroes) the whole
        // buffer, 128 KiB by default, which idle relayed sessions would each hold. Larger frames still
        // arrive whole.
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .max_message_size(Some(64 << 20))
            .max_frame_size(Some(64 << 20));
        let unreachable = |error: &dyn std::fmt::Display| UpstreamError::Unreachable(error.to_string());
        let mut request = self.config.url.as_str().into_client_request().map_err(|e| unreachable(&e))?;
        // A browser's session carries its `Origin`: the gateway checks the Control UI's origin (and, seeing
        // a browser, gives it no local trust), as it would for the browser itself.
        if let Some(origin) = origin {
            let origin = origin.parse().map_err(|_| unreachable(&"an Origin that is not a header value"))?;
            request.headers_mut().insert(axum::http::header::ORIGIN, origin);
        }
        // Other loopback clients of the gateway share its limit of unfinished handshakes per address: a
        // 503 at the upgrade means "busy", and is tried again shortly (within the caller's timeout).
        let authority = self.authority().ok_or_else(|| unreachable(&"no host:port in the upstream URL"))?;
        let mut socket = loop {
            let stream = TcpStream::connect(&authority).await.map_err(|e| unreachable(&e))?;
            match tokio_tungstenite::client_async_with_config(request.clone(), Recording::new(stream), Some(config))
                .await
            {
                Ok((socket, _)) => break socket,
                Err(tokio_tungstenite::tungstenite::Error::Http(answer))
                    if answer.status() == axum::http::StatusCode::SERVICE_UNAVAILABLE =>
                {
                    tokio::time::sleep(BUSY_RETRY).await;
                }
                Err(error) => return Err(unreachable(&error)),
            }
        };
        // Every text message handed out so far, for `unread_after`; any other kind stops the remake.
        let mut received = Received::default();
        let nonce = loop {
            let frame = next_json(&mut socket, &mut received).await?;
            if frame["type"] == "event" && frame["event"] == "connect.challenge" {
                break frame["payload"]["nonce"].as_str().unwrap_or_default().to_owned();
            }
        };
        let (token, password) = match &self.config.secret {
            UpstreamSecret::Token(token) => (Some(token.clone()), None),
            UpstreamSecret::Password(password) => (None, Some(password.clone())),
        };
        let text = |field: &str| client.get(field).and_then(Value::as_str).map(str::to_owned);
        let mut spec = ConnectSpec {
            // Without a device, `cli`/`cli` from loopback with the shared secret is granted exactly the
            // operator scopes it asks for; with one, the client's own id and mode (a node stays a node).
            client_id: "cli".into(),
            client_mode: "cli".into(),
            platform: text("platform").unwrap_or_else(|| "linux".into()),
            device_family: text("deviceFamily"),
            role: who.role.as_str().into(),
            scopes: who.scopes.names().into_iter().map(str::to_owned).collect(),
            token,
            password,
            device_token: None,
            bootstrap_token: None,
            min_protocol: UPSTREAM_PROTOCOLS.0,
            max_protocol: UPSTREAM_PROTOCOLS.1,
        };
        if identity.is_some() {
            spec.client_id = text("id").unwrap_or(spec.client_id);
            spec.client_mode = text("mode").unwrap_or(spec.client_mode);
        }
        let signed_at = crate::clock::SystemClock.now_ms();
        let mut connect = spec.request("pairgate-connect", identity.as_ref(), &nonce, signed_at);
        let params = &mut connect["params"];
        for (field, value) in extra {
            params[field.as_str()] = value.clone();
        }
        if let Some(version) = text("version") {
            params["client"]["version"] = json!(version);
        }
        if let Some(name) = text("displayName") {
            params["client"]["displayName"] = json!(name);
        }
        socket
            .send(Message::Text(connect.to_string().into()))
            .await
            .map_err(|error| UpstreamError::Unreachable(error.to_string()))?;
        loop {
            let mut frame = next_json(&mut socket, &mut received).await?;
            if frame["type"] != "res" || frame["id"] != "pairgate-connect" {
                continue;
            }
            if frame["ok"] == true {
                let hello = frame.get_mut("payload").map(Value::take).unwrap_or(Value::Null);
                return Ok((remade(socket, received, config).await.unwrap_or_else(|kept| kept), hello));
            }
            let error = &frame["error"];
            return Err(UpstreamError::Refused {
                code: error["details"]["code"].as_str().or(error["code"].as_str()).unwrap_or("UNKNOWN").to_owned(),
                message: error["message"].as_str().unwrap_or_default().to_owned(),
                retryable: error["retryable"] == true,
            });
        }
    }
}

/// The scopes a hello-ok grants, for a message: only the list (its `auth` also holds the gateway's device
/// token for pairgate's identity, which no log line may show).
fn granted_scopes(hello: &Value) -> String {
    hello["auth"]["scopes"].to_string()
}

/// Whether an upstream hello-ok grants every scope asked (`operator.admin` covers all; so does
/// `operator.write` cover `operator.read`). A gateway that sends no `auth` granted nothing.
fn covers(hello: &Value, asked: &[&str]) -> bool {
    let granted: Vec<&str> =
        hello["auth"]["scopes"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let has = |scope: &str| granted.contains(&scope) || granted.contains(&"operator.admin");
    asked.iter().all(|scope| has(scope) || (*scope == "operator.read" && has("operator.write")))
        && (asked.is_empty() || hello["auth"].is_object())
}

/// Whether an upstream hello-ok grants nothing beyond what was asked (an upstream session never holds
/// more than pairgate granted) and the role asked. A gateway that sends no `auth` granted nothing.
fn within(hello: &Value, role: &str, asked: &[&str]) -> bool {
    let auth = &hello["auth"];
    if !auth.is_object() {
        return true;
    }
    let implied = |scope: &str| {
        asked.contains(&scope)
            || asked.contains(&"operator.admin")
            || (scope == "operator.read" && asked.contains(&"operator.write"))
    };
    auth["role"].as_str().is_none_or(|granted| granted == role)
        && auth["scopes"].as_array().into_iter().flatten().filter_map(Value::as_str).all(implied)
}

/// Headers that belong to one hop, never forwarded (RFC 9110 §7.6.1), with any the `Connection` header
/// names.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether a request header is a claim about the client or its identity that only a proxy may make:
/// forwarding (`Forwarded`, `X-Forwarded-*`, `X-Real-IP`) and identity headers (`X-Forwarded-User`,
/// Tailscale's, `Remote-User`). pairgate drops what the client sent and says itself who the client is.
fn is_client_claim(name: &str) -> bool {
    name == "forwarded"
        || name == "x-real-ip"
        || name == "remote-user"
        || name.starts_with("x-forwarded-")
        || name.starts_with("tailscale-")
}

/// Removes the hop-by-hop headers (and those `Connection` names) from a request or response.
fn strip_hop_by_hop(headers: &mut axum::http::HeaderMap) {
    let named: Vec<String> = headers
        .get_all(axum::http::header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(',').map(|name| name.trim().to_ascii_lowercase()))
        .filter(|name| !name.is_empty())
        .collect();
    for name in HOP_BY_HOP.iter().copied().chain(named.iter().map(String::as_str)) {
        headers.remove(name);
    }
}

/// How long the gateway may take to answer a forwarded HTTP request with its head.
const HTTP_ANSWER_WAIT: Duration = Duration::from_secs(30);

impl Upstream {
    /// `host:port` of the gateway, from its WebSocket URL.
    fn authority(&self) -> Option<String> {
        let rest = self.config.url.split_once("://")?.1;
        Some(rest.split('/').next()?.to_owned())
    }

    /// Forwards an HTTP request that pairgate does not answer itself to the gateway, as the caller sent it
    /// (its own credential, if any, untouched; never the gateway's secret), and streams the answer back.
    /// A caller that is not local is named in `X-Forwarded-For`, so that the gateway (with pairgate's
    /// address in its `gateway.trustedProxies`) never takes it for a local client, and refuses it
    /// (`proxy_attribution_required`) until it is told to trust pairgate; a local caller is sent as what
    /// it is, local.
    pub async fn forward_http(
        &self,
        request: axum::extract::Request,
        client: Option<std::net::IpAddr>,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        let unavailable = |why: String| {
            tracing::warn!(%why, "cannot forward an HTTP request to the upstream gateway");
            let body = json!({ "code": "unavailable", "message": "upstream gateway unavailable", "details": {} });
            (axum::http::StatusCode::BAD_GATEWAY, axum::Json(body)).into_response()
        };
        let Some(authority) = self.authority() else { return unavailable("no host in the upstream URL".into()) };
        let stream = match TcpStream::connect(&authority).await {
            Ok(stream) => stream,
            Err(error) => return unavailable(error.to_string()),
        };
        let (mut sender, connection) =
            match hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await {
                Ok(pair) => pair,
                Err(error) => return unavailable(error.to_string()),
            };
        tokio::spawn(connection);
        let (mut parts, body) = request.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        parts.uri = match path.parse() {
            Ok(uri) => uri,
            Err(_) => return unavailable("a request path hyper cannot send".into()),
        };
        strip_hop_by_hop(&mut parts.headers);
        let claims: Vec<axum::http::HeaderName> =
            parts.headers.keys().filter(|name| is_client_claim(name.as_str())).cloned().collect();
        for name in claims {
            parts.headers.remove(name);
        }
        if let Some(ip) = client
            && let Ok(value) = ip.to_string().parse()
        {
            parts.headers.insert("x-forwarded-for", value);
        }
        if let Ok(host) = authority.parse() {
            parts.headers.insert(axum::http::header::HOST, host);
        }
        let answer = tokio::time::timeout(
            HTTP_ANSWER_WAIT,
            sender.send_request(axum::extract::Request::from_parts(parts, body)),
        );
        match answer.await {
            Ok(Ok(response)) => {
                let mut response = response.map(axum::body::Body::new);
                strip_hop_by_hop(response.headers_mut());
                response
            }
            Ok(Err(error)) => unavailable(error.to_string()),
            Err(_) => unavailable("no answer in time".into()),
        }
    }
}

/// What the upstream handshake's socket handed out: how many text messages, and whether anything else.
#[derive(Default)]
struct Received {
    texts: usize,
    other: bool,
}

/// The socket of a session whose handshake is done, made again over the same connection with nothing of
/// the handshake's buffers: the read buffer grew to the gateway's hello-ok (about 20 KB from 2026.9.6)
/// and would keep that size for the session's life. What the old socket had read and not yet handed out
/// (an event right behind hello-ok) is given to the new one. A handshake that saw anything but whole
/// text messages keeps its socket (`Err`).
async fn remade(
    mut socket: UpstreamSocket,
    received: Received,
    config: WebSocketConfig,
) -> Result<UpstreamSocket, UpstreamSocket> {
    let Some(recorded) = socket.get_mut().stop() else { return Err(socket) };
    let unread = match unread_after(&recorded, received.texts) {
        Some(unread) if !received.other => unread.to_vec(),
        _ => return Err(socket),
    };
    drop(recorded);
    Ok(WebSocketStream::from_partially_read(socket.into_inner(), unread, Role::Client, Some(config)).await)
}

/// The next text frame of the upstream handshake, as JSON.
async fn next_json(socket: &mut UpstreamSocket, received: &mut Received) -> Result<Value, UpstreamError> {
    loop {
        let next = socket.next().await;
        match &next {
            Some(Ok(Message::Text(_))) => received.texts += 1,
            Some(Ok(_)) => received.other = true,
            _ => {}
        }
        match next {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(&text)
                    .map_err(|error| UpstreamError::Unreachable(format!("not a gateway frame: {error}")));
            }
            Some(Ok(Message::Close(frame))) => {
                let why = frame.map(|f| format!("{} {}", u16::from(f.code), f.reason)).unwrap_or_default();
                return Err(UpstreamError::Unreachable(format!("closed the connection {why}")));
            }
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Err(UpstreamError::Unreachable(error.to_string())),
            None => return Err(UpstreamError::Unreachable("closed the connection".to_owned())),
        }
    }
}

/// Whether a method is pairgate's own in front of a gateway: pairing and device tokens, which pairgate
/// decides from its store. Everything else is the gateway's.
pub fn answered_by_pairgate(method: &str) -> bool {
    method.starts_with("device.pair.") || method.starts_with("device.token.")
}

/// Whether an upstream event stays upstream: the gateway's device-pairing events are about pairgate's own
/// upstream identities, never the client's business (pairgate sends its own). Node pairing (`node.pair.*`)
/// stays the gateway's, like everything else about nodes.
pub fn withheld_event(event: &str) -> bool {
    event.starts_with("device.pair.")
}

/// `scheme://host[:port]` a client reached pairgate at: its `Host` (only the characters of a host and
/// port), with `https` when a trusted proxy in front says `X-Forwarded-Proto: https`.
pub fn reached_at(headers: &axum::http::HeaderMap, via_trusted_proxy: bool) -> Option<String> {
    let host = headers.get(axum::http::header::HOST)?.to_str().ok()?;
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']');
    if host.is_empty() || host.len() > 255 || !host.chars().all(plain) {
        return None;
    }
    let forwarded_https = headers
        .get("x-forwarded-proto")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"));
    let scheme = if via_trusted_proxy && forwarded_https { "https" } else { "http" };
    Some(format!("{scheme}://{host}"))
}

impl Upstream {
    /// The gateway's URLs in hello-ok's `pluginSurfaceUrls` (OpenClaw 2026.9: the canvas, a capability URL
    /// on the gateway's own loopback port) as the client reaches them: through pairgate, which passes
    /// those paths on to the gateway. One that cannot be rebased (no usable `Host`) is left out: a URL
    /// past pairgate is never handed to a client.
    pub fn rebase_surface_urls(&self, hello: &mut Value, reached_at: Option<&str>) {
        let Some(urls) = hello.get_mut("pluginSurfaceUrls").and_then(Value::as_object_mut) else { return };
        let gateway = self.authority().map(|authority| format!("http://{authority}"));
        urls.retain(|_, url| {
            let rebased = url.as_str().and_then(|text| {
                let path = text.strip_prefix(gateway.as_deref()?)?;
                let origin = reached_at.filter(|_| path.is_empty() || path.starts_with('/'))?;
                Some(format!("{origin}{path}"))
            });
            match rebased {
                Some(rebased) => {
                    *url = Value::String(rebased);
                    true
                }
                None => false,
            }
        });
    }
}

/// An upstream frame as the client gets it: responses unchanged; events renumbered into the socket's one
/// `seq` (pairgate's own pairing events share it), the gateway's device-pairing events withheld.
pub fn relayed(text: &str, seq: &mut u64) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Head<'a> {
        #[serde(rename = "type", borrow)]
        kind: std::borrow::Cow<'a, str>,
        #[serde(default, borrow)]
        event: Option<std::borrow::Cow<'a, str>>,
    }
    let Ok(head) = serde_json::from_str::<Head>(text) else { return Some(text.to_owned()) };
    if head.kind != "event" {
        return Some(text.to_owned());
    }
    if head.event.as_deref().is_some_and(withheld_event) {
        return None;
    }
    let mut event: Value = serde_json::from_str(text).ok()?;
    if event.get("seq").is_some() {
        *seq += 1;
        event["seq"] = json!(*seq);
    }
    Some(event.to_string())
}

/// The client's hello-ok: the gateway's, with pairgate's `auth` (role, granted scopes, pairgate's device
/// token) and pairgate's methods added to the gateway's.
pub fn merge_hello(mut upstream: Value, own: &Value, own_methods: &[&str]) -> Value {
    upstream["auth"] = own["auth"].clone();
    upstream["protocol"] = own["protocol"].clone();
    // A frame must fit both pairgate's limits and the gateway's: the smaller of each is announced.
    for limit in ["maxPayload", "maxBufferedBytes"] {
        let smaller = [&upstream["policy"][limit], &own["policy"][limit]].into_iter().filter_map(Value::as_u64).min();
        if let (Some(smaller), Some(policy)) = (smaller, upstream.get_mut("policy").and_then(Value::as_object_mut)) {
            policy.insert(limit.to_owned(), json!(smaller));
        }
    }
    if let Some(methods) = upstream.pointer_mut("/features/methods").and_then(Value::as_array_mut) {
        // The pairing and token methods are pairgate's: only those it serves are announced.
        methods
            .retain(|name| name.as_str().is_none_or(|name| !answered_by_pairgate(name) || own_methods.contains(&name)));
        for name in own_methods {
            if !methods.iter().any(|known| known == name) {
                methods.push(json!(name));
            }
        }
    }
    upstream
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_merged_hello_is_the_gateways_with_pairgates_auth_and_methods() {
        let upstream = json!({
            "type": "hello-ok", "protocol": 4, "features": {"methods": ["status", "device.pair.list", "device.pair.setup"]},
            "auth": {"method": "token", "role": "operator", "scopes": ["operator.read"], "deviceToken": "upstream's"},
            "policy": {"maxPayload": 26214400, "maxBufferedBytes": 52428800, "tickIntervalMs": 30000},
        });
        let own = json!({
            "protocol": 3, "auth": {"role": "operator", "scopes": ["operator.read"], "deviceToken": "t"},
            "policy": {"maxPayload": 1048576, "maxBufferedBytes": 52428800, "tickIntervalMs": 15000},
        });
        let merged = merge_hello(upstream, &own, &["device.pair.list", "device.token.rotate"]);
        assert_eq!(merged["auth"], own["auth"], "pairgate's auth; the gateway's device token never reaches the client");
        assert_eq!(merged["protocol"], 3);
        assert_eq!(
            merged["policy"],
            json!({"maxPayload": 1048576, "maxBufferedBytes": 52428800, "tickIntervalMs": 30000})
        );
        assert_eq!(merged["features"]["methods"], json!(["status", "device.pair.list", "device.token.rotate"]));
    }

    #[test]
    fn a_hello_covers_what_was_asked_only_if_it_grants_it() {
        let hello = |scopes: Value| json!({"auth": {"role": "operator", "scopes": scopes}});
        assert!(covers(&hello(json!(["operator.read"])), &["operator.read"]));
        assert!(covers(&hello(json!(["operator.admin"])), &["operator.read", "operator.pairing"]));
        assert!(covers(&hello(json!(["operator.write"])), &["operator.read"]));
        assert!(!covers(&hello(json!(["operator.read"])), &["operator.read", "operator.admin"]));
        assert!(!covers(&json!({"type": "hello-ok"}), &["operator.read"]), "no auth: nothing granted (2026.4)");
        assert!(covers(&json!({"type": "hello-ok"}), &[]), "a node asks no scopes");
    }

    #[test]
    fn a_hello_is_within_what_was_asked_only_if_it_grants_no_more() {
        let hello = |role: &str, scopes: Value| json!({"auth": {"role": role, "scopes": scopes}});
        assert!(within(&hello("operator", json!(["operator.read"])), "operator", &["operator.read"]));
        assert!(within(&hello("operator", json!(["operator.read"])), "operator", &["operator.write"]));
        assert!(within(&hello("operator", json!(["operator.pairing"])), "operator", &["operator.admin"]));
        assert!(!within(&hello("operator", json!(["operator.admin"])), "operator", &["operator.read"]));
        assert!(!within(&hello("node", json!([])), "operator", &[]), "another role");
        assert!(within(&json!({"type": "hello-ok"}), "operator", &["operator.read"]), "no auth grants nothing");
    }

    #[test]
    fn every_grant_has_its_own_upstream_identity_and_each_is_stable() {
        use crate::domain::{DeviceId, Role};
        let key = MasterKey::from_bytes([7; 32]);
        let device = DeviceId::try_from("a".repeat(64)).unwrap();
        let read = key.identity_for_grant(Some(&device), Role::Operator, &["operator.read"]).id();
        let admin = key.identity_for_grant(Some(&device), Role::Operator, &["operator.admin"]).id();
        assert_ne!(read, admin);
        let both = key.identity_for_grant(Some(&device), Role::Operator, &["operator.read", "operator.write"]).id();
        let again = key.identity_for_grant(Some(&device), Role::Operator, &["operator.write", "operator.read"]).id();
        assert_eq!(both, again, "the order of scopes does not matter");
        assert_eq!(key.identity(&device, Role::Node).id(), key.identity(&device, Role::Node).id());
        assert_ne!(key.identity(&device, Role::Node).id(), key.identity(&device, Role::Operator).id());
        assert_ne!(
            MasterKey::from_bytes([8; 32]).identity(&device, Role::Node).id(),
            key.identity(&device, Role::Node).id()
        );
    }

    #[test]
    fn pairing_and_device_tokens_are_pairgates() {
        assert!(answered_by_pairgate("device.pair.approve") && answered_by_pairgate("device.token.revoke"));
        assert!(!answered_by_pairgate("status") && !answered_by_pairgate("sessions.list"));
        assert!(withheld_event("device.pair.resolved") && !withheld_event("node.pair.requested"));
        assert!(!withheld_event("tick") && !withheld_event("presence"));
    }

    /// A gateway on a loopback port that sends a challenge, answers the connect with a 20 KB hello-ok and
    /// an event right behind it in the same write, then a second event later.
    async fn chatty_gateway() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let serve = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut socket = tokio_tungstenite::accept_async(stream).await.unwrap();
            let challenge = json!({"type": "event", "event": "connect.challenge", "payload": {"nonce": "n"}});
            socket.send(Message::Text(challenge.to_string().into())).await.unwrap();
            let _connect = socket.next().await.unwrap().unwrap();
            let hello =
                json!({"type": "res", "id": "pairgate-connect", "ok": true, "payload": {"pad": "x".repeat(20_000)}});
            socket.feed(Message::Text(hello.to_string().into())).await.unwrap();
            socket.feed(Message::Text(r#"{"type":"event","event":"presence","seq":1}"#.into())).await.unwrap();
            socket.flush().await.unwrap();
            socket.send(Message::Text(r#"{"type":"event","event":"tick","seq":2}"#.into())).await.unwrap();
            let _ = socket.next().await; // until the client closes
        });
        (address, serve)
    }

    #[tokio::test]
    async fn a_remade_session_socket_keeps_what_arrived_behind_hello_ok() {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let (address, serve) = chatty_gateway().await;
        let config = WebSocketConfig::default().read_buffer_size(4096);
        let request = format!("ws://{address}").into_client_request().unwrap();
        let stream = TcpStream::connect(address).await.unwrap();
        let (mut socket, _) =
            tokio_tungstenite::client_async_with_config(request, Recording::new(stream), Some(config)).await.unwrap();
        let mut received = Received::default();
        let challenge = next_json(&mut socket, &mut received).await.unwrap();
        assert_eq!(challenge["event"], "connect.challenge");
        socket.send(Message::Text("{}".into())).await.unwrap();
        let hello = next_json(&mut socket, &mut received).await.unwrap();
        assert_eq!(hello["id"], "pairgate-connect");
        assert_eq!((received.texts, received.other), (2, false));

        let mut socket = remade(socket, received, config).await.expect("the socket is made again");
        assert!(socket.get_mut().stop().is_none(), "the remade socket records nothing");
        for expected in ["presence", "tick"] {
            let next = tokio::time::timeout(Duration::from_secs(10), socket.next()).await;
            let Ok(Some(Ok(Message::Text(text)))) = next else { panic!("no {expected} event") };
            assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["event"], expected);
        }
        socket.close(None).await.unwrap();
        serve.await.unwrap();
    }

    /// A gateway that grants every connect `operator.admin` and a device token, whatever it asks, and
    /// counts the connects.
    async fn over_granting_gateway() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}", listener.local_addr().unwrap());
        let connects = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = connects.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    let mut socket = tokio_tungstenite::accept_async(stream).await.unwrap();
                    let challenge = json!({"type": "event", "event": "connect.challenge", "payload": {"nonce": "n"}});
                    socket.send(Message::Text(challenge.to_string().into())).await.unwrap();
                    let Some(Ok(Message::Text(_connect))) = socket.next().await else { return };
                    counted.fetch_add(1, Ordering::SeqCst);
                    let auth =
                        json!({"role": "operator", "scopes": ["operator.admin"], "deviceToken": "DEVICE-TOKEN-SECRET"});
                    let hello = json!({"type": "res", "id": "pairgate-connect", "ok": true, "payload": {"auth": auth}});
                    let _ = socket.send(Message::Text(hello.to_string().into())).await;
                    while let Some(Ok(_)) = socket.next().await {}
                });
            }
        });
        (url, connects)
    }

    #[tokio::test]
    async fn a_gateway_that_grants_more_than_asked_is_refused_after_the_grants_own_identity_and_its_token_is_never_told()
     {
        let (url, connects) = over_granting_gateway().await;
        let upstream = Upstream::new(UpstreamConfig {
            url,
            secret: UpstreamSecret::Token("gateway-secret".into()),
            master_key: MasterKey::from_bytes([7; 32]),
            max_handshakes: 4,
            handshake_timeout: Duration::from_secs(10),
        });
        let device = crate::client::DeviceIdentity::from_seed([1; 32]).id();
        let who = Authenticated {
            conn_id: "c".into(),
            client_ip: "127.0.0.1".into(),
            role: crate::domain::Role::Operator,
            scopes: crate::domain::ScopeSet::parse(&["operator.read"]).unwrap(),
            device_id: Some(device),
            client_id: "cli".into(),
        };
        let client = json!({"id": "cli", "mode": "cli"});
        let refused = upstream.open(&who, &client, &Default::default(), None).await.unwrap_err();
        let UpstreamError::Refused { code, message, retryable } = &refused else { panic!("{refused}") };
        assert_eq!((code.as_str(), *retryable), ("UPSTREAM_OVER_GRANT", false));
        assert_eq!(message, r#"the gateway granted ["operator.admin"] beyond ["operator.read"]"#);
        for told in [refused.to_string(), format!("{refused:?}"), refused.client_message()] {
            assert!(!told.contains("DEVICE-TOKEN-SECRET"), "{told}");
        }
        // The device's own identity, then the grant's; after that, the grant's alone.
        assert_eq!(connects.load(Ordering::SeqCst), 2);
        upstream.open(&who, &client, &Default::default(), None).await.unwrap_err();
        assert_eq!(connects.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn the_gateways_surface_urls_point_through_pairgate_or_are_left_out() {
        let upstream = Upstream::new(UpstreamConfig {
            url: "ws://127.0.0.1:18790".into(),
            secret: UpstreamSecret::Token("t".into()),
            master_key: MasterKey::from_bytes([0; 32]),
            max_handshakes: 1,
            handshake_timeout: Duration::from_secs(1),
        });
        let hello = || {
            json!({"pluginSurfaceUrls": {
                "canvas": "http://127.0.0.1:18790/__openclaw__/cap/abc",
                "elsewhere": "https://example.com/x",
                "lookalike": "http://127.0.0.1:187901/x",
            }})
        };
        let mut rebased = hello();
        upstream.rebase_surface_urls(&mut rebased, Some("https://gw.example.org"));
        assert_eq!(
            rebased["pluginSurfaceUrls"],
            json!({"canvas": "https://gw.example.org/__openclaw__/cap/abc"}),
            "only the gateway's own URLs are kept, rebased"
        );
        let mut unknown = hello();
        upstream.rebase_surface_urls(&mut unknown, None);
        assert_eq!(unknown["pluginSurfaceUrls"], json!({}));
        let mut none = json!({"auth": {}});
        upstream.rebase_surface_urls(&mut none, Some("http://h"));
        assert_eq!(none, json!({"auth": {}}));
    }

    #[test]
    fn a_client_reached_pairgate_at_its_host_with_https_only_from_a_trusted_proxy() {
        use axum::http::{HeaderMap, HeaderValue};
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, HeaderValue::from_str(value).unwrap());
            }
            map
        };
        let plain = headers(&[("host", "127.0.0.1:18789")]);
        assert_eq!(reached_at(&plain, false).as_deref(), Some("http://127.0.0.1:18789"));
        let proxied = headers(&[("host", "gw.example.org"), ("x-forwarded-proto", "https")]);
        assert_eq!(reached_at(&proxied, true).as_deref(), Some("https://gw.example.org"));
        assert_eq!(reached_at(&proxied, false).as_deref(), Some("http://gw.example.org"), "only a trusted proxy");
        assert_eq!(reached_at(&headers(&[("host", "evil.example/path?")]), false), None);
        assert_eq!(reached_at(&HeaderMap::new(), false), None);
        assert_eq!(reached_at(&headers(&[("host", "[::1]:18789")]), false).as_deref(), Some("http://[::1]:18789"));
    }

    #[test]
    fn relayed_events_share_the_sockets_seq_and_the_gateways_device_pairing_events_stay_upstream() {
        let mut seq = 7; // pairgate's own events took 1..=7
        let response = r#"{"type":"res","id":"1","ok":true,"payload":{"seq":99}}"#;
        assert_eq!(relayed(response, &mut seq).as_deref(), Some(response), "responses pass unchanged");
        let event = relayed(r#"{"type":"event","event":"presence","seq":41,"payload":{}}"#, &mut seq).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&event).unwrap()["seq"], 8);
        assert_eq!(relayed(r#"{"type":"event","event":"device.pair.requested","seq":42}"#, &mut seq), None);
        let node = relayed(r#"{"type":"event","event":"node.pair.requested","seq":43}"#, &mut seq).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&node).unwrap()["seq"], 9, "node pairing stays the gateway's");
        let unnumbered = r#"{"type":"event","event":"tick","payload":{"ts":1}}"#;
        assert_eq!(serde_json::from_str::<Value>(&relayed(unnumbered, &mut seq).unwrap()).unwrap()["seq"], Value::Null);
        assert_eq!(seq, 9);
        assert_eq!(relayed("not json", &mut seq).as_deref(), Some("not json"));
    }
}
