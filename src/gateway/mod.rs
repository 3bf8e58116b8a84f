//! The WebSocket front end: one socket's life from challenge to close.

pub mod frames;
pub mod handshake;
mod last_seen;
pub mod methods;
pub mod ops;
pub mod ratelimit;
pub mod registry;
mod sessions;
pub mod views;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::locality::{self, ClientAddr};
use crate::auth::policy::PolicyConfig;
use crate::auth::secrets::SharedSecret;
use crate::clock::{Millis, SharedClock};
use crate::domain::Scope;
use crate::store::{Actor, AuditEvent, Store};
use frames::{ErrorShape, RequestFrame, close};
use handshake::Session;
use ratelimit::{FailedAuthLimiter, FailureOutcome, RateLimitConfig};
use registry::{CloseOrder, Event, Registration};

/// Settings of the WebSocket front end.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    pub policy: PolicyConfig,
    pub trusted_proxies: Vec<IpAddr>,
    /// A socket that has not completed `connect` by then is closed.
    pub handshake_timeout: Duration,
    pub tick_interval: Duration,
    pub max_payload_bytes: usize,
    pub max_buffered_bytes: usize,
    pub rate_limit: RateLimitConfig,
    /// How often `last_seen` notes are written (one transaction per flush).
    pub last_seen_flush: Duration,
    /// Serve `/metrics` without the bearer token (for a scraper that cannot send one).
    pub metrics_open: bool,
    pub spawn_limits: crate::store::SpawnLimits,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            policy: PolicyConfig::default(),
            trusted_proxies: Vec::new(),
            handshake_timeout: Duration::from_secs(10),
            tick_interval: Duration::from_secs(30),
            max_payload_bytes: 25 * 1024 * 1024,
            max_buffered_bytes: 50 * 1024 * 1024,
            rate_limit: RateLimitConfig::default(),
            last_seen_flush: Duration::from_secs(5),
            metrics_open: false,
            spawn_limits: crate::store::SpawnLimits::default(),
        }
    }
}

/// Who is on the other end of one socket.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub conn_id: String,
    pub peer: SocketAddr,
    pub client: ClientAddr,
}

/// Shared state of the WebSocket front end.
pub struct Gateway {
    pub store: Store,
    pub clock: SharedClock,
    pub secret: Arc<SharedSecret>,
    pub config: GatewayConfig,
    pub limiter: FailedAuthLimiter,
    pub live: registry::Registry,
    pub last_seen: last_seen::LastSeen,
    pub metrics: crate::metrics::Metrics,
    /// Bumped whenever a run starts or ends, to wake `agent.wait` callers.
    runs_version: tokio::sync::watch::Sender<u64>,
    pub started_at_ms: Millis,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
}

impl Gateway {
    pub fn new(
        store: Store,
        clock: SharedClock,
        secret: Arc<SharedSecret>,
        config: GatewayConfig,
        shutdown: CancellationToken,
    ) -> Self {
        let started_at_ms = clock.now_ms();
        let tracker = TaskTracker::new();
        let last_seen = last_seen::LastSeen::start(store.clone(), config.last_seen_flush, shutdown.clone(), &tracker);
        let metrics = crate::metrics::Metrics::new(store.metrics());
        Gateway {
            limiter: FailedAuthLimiter::new(config.rate_limit),
            store,
            clock,
            secret,
            config,
            live: registry::Registry::default(),
            last_seen,
            metrics,
            runs_version: tokio::sync::watch::Sender::new(0),
            started_at_ms,
            shutdown,
            tracker,
        }
    }

    /// Counts a failed authentication from a non-local address; the one that locks it out is audited.
    pub(crate) async fn record_auth_failure(&self, client_ip: IpAddr, now: Millis) {
        if self.limiter.record_failure(client_ip, now) == FailureOutcome::LockedOut {
            let ip = client_ip.to_string();
            tracing::warn!(client = %ip, "failed-auth limit reached; address locked out");
            let event = AuditEvent::new(&Actor::System, "auth.lockout", now)
                .subject(ip.clone())
                .remote(Some(&ip))
                .details(json!({ "lockoutMs": self.config.rate_limit.lockout_ms }));
            if let Err(error) = self.store.record_audit(&event).await {
                tracing::error!(%error, "could not audit a lockout");
            }
        }
    }
}

/// `GET /` with an upgrade: the gateway WebSocket.
pub async fn ws_handler(
    State(gateway): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let client = match locality::resolve(peer.ip(), &headers, &gateway.config.trusted_proxies) {
        Ok(client) => client,
        Err(_) => {
            tracing::warn!(%peer, "forwarding headers from an untrusted peer; upgrade refused");
            return (StatusCode::FORBIDDEN, "forwarding headers from an untrusted proxy").into_response();
        }
    };
    if gateway.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    let conn = ConnInfo { conn_id: uuid::Uuid::new_v4().to_string(), peer, client };
    let limit = gateway.config.max_payload_bytes;
    let tracker = gateway.tracker.clone();
    // tungstenite zeroes its whole read buffer before every read (128 KiB by default): a 1 KiB buffer keeps
    // that cheap and an idle socket small (10k idle sockets: 80 MB instead of 170 MB). Larger frames still
    // arrive whole: the buffer grows to the frame's announced length.
    ws.read_buffer_size(1024)
        .max_message_size(limit)
        .max_frame_size(limit)
        .max_write_buffer_size(gateway.config.max_buffered_bytes)
        .on_upgrade(move |socket| tracker.track_future(run_socket(gateway, socket, conn)))
}

/// Close reasons are limited to 123 bytes by the WebSocket protocol.
fn close_message(code: u16, reason: &str) -> Message {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::Close(Some(CloseFrame { code, reason: reason[..end].into() }))
}

async fn send_text(socket: &mut WebSocket, text: String) -> bool {
    socket.send(Message::Text(text.into())).await.is_ok()
}

async fn close_with(socket: &mut WebSocket, code: u16, reason: &str) {
    let _ = socket.send(close_message(code, reason)).await;
}

/// What a text frame turned out to be.
enum Incoming {
    Request(RequestFrame),
    /// Not a request frame: the reason to close with.
    Invalid(String),
}

fn parse_frame(text: &str) -> Incoming {
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(_) => return Incoming::Invalid("invalid frame: not JSON".into()),
    };
    if value.get("type").and_then(Value::as_str) != Some("req") {
        return Incoming::Invalid("invalid frame: expected a request (type \"req\")".into());
    }
    match serde_json::from_value::<RequestFrame>(value) {
        Ok(frame) => Incoming::Request(frame),
        Err(error) => Incoming::Invalid(format!("invalid request frame: {error}")),
    }
}

/// Reads frames until one is a text frame; `Err(reason)` when the socket must close with 1008,
/// `Ok(None)` when the client went away.
async fn next_text(socket: &mut WebSocket) -> Result<Option<String>, String> {
    loop {
        match socket.recv().await {
            None | Some(Ok(Message::Close(_))) => return Ok(None),
            Some(Ok(Message::Text(text))) => return Ok(Some(text.to_string())),
            Some(Ok(Message::Binary(_))) => return Err("invalid frame: binary frames are not supported".into()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Err(error)) => return Err(format!("invalid frame: {error}")),
        }
    }
}

async fn run_socket(gateway: Arc<Gateway>, mut socket: WebSocket, conn: ConnInfo) {
    let nonce = uuid::Uuid::new_v4().to_string();
    let challenge = frames::event("connect.challenge", json!({ "nonce": nonce, "ts": gateway.clock.now_ms() }), None);
    if !send_text(&mut socket, challenge).await {
        return;
    }
    // Boxed, like method calls below: a future held across an idle socket's whole life should not carry
    // the space of the handshake it is done with (this keeps 10k idle sockets small).
    let session = Box::pin(handshake(&gateway, &mut socket, &conn, &nonce)).await;
    let Some(session) = session else { return };
    let subscribe = session.scopes.allows(Scope::Pairing);
    let registration = gateway.live.register(&conn.conn_id, session.device_id.as_ref(), subscribe);
    gateway.metrics.socket_opened(session.role.as_str());
    serve_connected(&gateway, &mut socket, &session, registration).await;
    gateway.metrics.socket_closed(session.role.as_str());
    gateway.live.unregister(&conn.conn_id);
}

/// Waits for `connect` and answers it; `None` when the socket was closed.
async fn handshake(gateway: &Gateway, socket: &mut WebSocket, conn: &ConnInfo, nonce: &str) -> Option<Session> {
    // Only the wait for the first frame is bounded; once `connect` is in, it runs to its end, so that a
    // store transaction is never cut in half.
    let first = tokio::select! {
        first = tokio::time::timeout(gateway.config.handshake_timeout, next_text(socket)) => first,
        _ = gateway.shutdown.cancelled() => Ok(Err("server shutting down".to_owned())),
    };
    let text = match first {
        Ok(Ok(Some(text))) => text,
        Ok(Ok(None)) => return None,
        Ok(Err(reason)) => {
            let code = if gateway.shutdown.is_cancelled() { close::GOING_AWAY } else { close::POLICY };
            close_with(socket, code, &reason).await;
            return None;
        }
        Err(_elapsed) => {
            close_with(socket, close::POLICY, "handshake timeout").await;
            return None;
        }
    };
    let frame = match parse_frame(&text) {
        Incoming::Request(frame) => frame,
        Incoming::Invalid(reason) => {
            close_with(socket, close::POLICY, &reason).await;
            return None;
        }
    };
    if frame.method != "connect" {
        let error = ErrorShape::invalid("invalid handshake: first request must be connect");
        send_text(socket, frames::response_error(&frame.id, &error)).await;
        close_with(socket, close::POLICY, &error.message).await;
        return None;
    }
    let params = match serde_json::from_value(frame.params) {
        Ok(params) => params,
        Err(error) => {
            let error = ErrorShape::invalid(format!("invalid connect params: {error}"));
            send_text(socket, frames::response_error(&frame.id, &error)).await;
            close_with(socket, close::POLICY, &error.message).await;
            return None;
        }
    };
    let started = std::time::Instant::now();
    let outcome = gateway.connect(conn, nonce, params).await;
    let code = outcome.as_ref().err().map(|refused| {
        refused.error.details.as_ref().and_then(|d| d["code"].as_str()).unwrap_or(refused.error.code).to_owned()
    });
    gateway.metrics.connect(code.as_deref(), started.elapsed().as_secs_f64());
    match outcome {
        Ok((session, hello)) => send_text(socket, frames::response_ok(&frame.id, hello.0)).await.then_some(session),
        Err(refused) => {
            tracing::info!(conn = %conn.conn_id, client = %conn.client.ip, code = refused.error.code, message = %refused.error.message, "connect refused");
            send_text(socket, frames::response_error(&frame.id, &refused.error)).await;
            close_with(socket, refused.close_code, &refused.close_reason).await;
            None
        }
    }
}

/// The next pairing event for a subscribed socket; never, for one that is not subscribed.
async fn next_event(events: &mut Option<tokio::sync::mpsc::Receiver<Arc<Event>>>) -> Option<Arc<Event>> {
    match events {
        Some(events) => events.recv().await,
        None => std::future::pending().await,
    }
}

/// The connected phase: requests, ticks, events, forced closes and shutdown.
async fn serve_connected(gateway: &Gateway, socket: &mut WebSocket, session: &Session, registration: Registration) {
    let mut tick = tokio::time::interval(gateway.config.tick_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick fires at once; hello-ok was just sent
    let Registration { mut close_order, mut events } = registration;
    let mut seq: u64 = 0;
    enum Wake {
        ShuttingDown,
        /// `None`: the registry dropped the order's sender (the socket is no longer registered).
        CloseOrder(Option<CloseOrder>),
        Event(Option<Arc<Event>>),
        Tick,
        Frame(Result<Option<String>, String>),
    }
    loop {
        let wake = tokio::select! {
            _ = gateway.shutdown.cancelled() => Wake::ShuttingDown,
            order = &mut close_order => Wake::CloseOrder(order.ok()),
            event = next_event(&mut events) => Wake::Event(event),
            _ = tick.tick() => Wake::Tick,
            incoming = next_text(socket) => Wake::Frame(incoming),
        };
        let text = match wake {
            Wake::ShuttingDown => {
                close_with(socket, close::GOING_AWAY, "server shutting down").await;
                return;
            }
            Wake::CloseOrder(Some(order)) => {
                close_with(socket, order.code, order.reason).await;
                let _ = order.ack.send(());
                return;
            }
            // The registry holds the sender for as long as the socket is registered.
            Wake::CloseOrder(None) => return,
            Wake::Event(Some(event)) => {
                seq += 1;
                if !send_text(socket, frames::event(event.name, event.payload.clone(), Some(seq))).await {
                    return;
                }
                continue;
            }
            Wake::Event(None) => {
                close_with(socket, close::SLOW_CONSUMER, "slow consumer: event queue full").await;
                return;
            }
            Wake::Tick => {
                let frame = frames::event("tick", json!({ "ts": gateway.clock.now_ms() }), None);
                if !send_text(socket, frame).await {
                    return;
                }
                continue;
            }
            Wake::Frame(Ok(Some(text))) => text,
            Wake::Frame(Ok(None)) => return,
            Wake::Frame(Err(reason)) => {
                close_with(socket, close::POLICY, &reason).await;
                return;
            }
        };
        let frame = match parse_frame(&text) {
            Incoming::Request(frame) => frame,
            Incoming::Invalid(reason) => {
                close_with(socket, close::POLICY, &reason).await;
                return;
            }
        };
        let reply = if frame.method == "connect" {
            frames::response_error(&frame.id, &ErrorShape::invalid("connect already completed on this socket"))
        } else {
            match Box::pin(gateway.call(session, &frame.method, frame.params)).await {
                Ok(payload) => frames::response_ok(&frame.id, payload),
                Err(error) => frames::response_error(&frame.id, &error),
            }
        };
        if !send_text(socket, reply).await {
            return;
        }
    }
}
