//! The WebSocket front end: the OpenClaw gateway protocol (docs/protocol.md), one socket's life from
//! challenge to close. It translates frames to application calls and back; it never imports another
//! front end (`admin`, `cli`, `server`).

mod dispatch;
mod errors;
pub mod frames;
pub mod handshake;
mod last_seen;
pub mod methods;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::app::App;
use crate::app::live::{CloseOrder, Disconnect, Event, Registration};
use crate::auth::locality::{self, ClientAddr};
use crate::auth::policy::PolicyConfig;
use crate::domain::Scope;
use frames::{ErrorShape, RequestFrame, close};
use handshake::Authenticated;

/// Settings of the WebSocket front end.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    pub policy: PolicyConfig,
    /// A socket that has not completed `connect` by then is closed.
    pub handshake_timeout: Duration,
    pub tick_interval: Duration,
    pub max_payload_bytes: usize,
    pub max_buffered_bytes: usize,
    /// How often `last_seen` notes are written (one transaction per flush).
    pub last_seen_flush: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            policy: PolicyConfig::default(),
            handshake_timeout: Duration::from_secs(10),
            tick_interval: Duration::from_secs(30),
            max_payload_bytes: 25 * 1024 * 1024,
            max_buffered_bytes: 50 * 1024 * 1024,
            last_seen_flush: Duration::from_secs(5),
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

/// The WebSocket front end's state.
pub struct Gateway {
    pub app: Arc<App>,
    pub config: GatewayConfig,
    last_seen: last_seen::LastSeen,
}

impl Gateway {
    pub fn new(app: Arc<App>, config: GatewayConfig) -> Self {
        let last_seen =
            last_seen::LastSeen::start(app.store.clone(), config.last_seen_flush, app.shutdown.clone(), &app.tracker);
        Gateway { app, config, last_seen }
    }
}

/// The close frame of a close order.
fn disconnect_close(why: Disconnect) -> (u16, &'static str) {
    match why {
        Disconnect::DeviceRevoked => (close::DEVICE_REMOVED, "device removed"),
    }
}

/// `GET /` with an upgrade: the gateway WebSocket.
pub async fn ws_handler(
    State(gateway): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let app = &gateway.app;
    let client = match locality::resolve(peer.ip(), &headers, &app.config.trusted_proxies) {
        Ok(client) => client,
        Err(refused) => {
            tracing::warn!(%peer, reason = refused.message(), "upgrade refused");
            return (StatusCode::FORBIDDEN, refused.message()).into_response();
        }
    };
    if app.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    let conn = ConnInfo { conn_id: uuid::Uuid::new_v4().to_string(), peer, client };
    let limit = gateway.config.max_payload_bytes;
    let tracker = app.tracker.clone();
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
    let app = &gateway.app;
    let challenge = frames::event("connect.challenge", json!({ "nonce": nonce, "ts": app.clock.now_ms() }), None);
    if !send_text(&mut socket, challenge).await {
        return;
    }
    // Boxed, like method calls below: a future held across an idle socket's whole life should not carry
    // the space of the handshake it is done with (this keeps 10k idle sockets small).
    let who = Box::pin(handshake(&gateway, &mut socket, &conn, &nonce)).await;
    let Some(who) = who else { return };
    let subscribe = who.scopes.allows(Scope::Pairing);
    let registration = app.live.register(&conn.conn_id, who.device_id.as_ref(), subscribe);
    app.metrics.socket_opened(who.role.as_str());
    serve_connected(&gateway, &mut socket, &who, registration).await;
    app.metrics.socket_closed(who.role.as_str());
    app.live.unregister(&conn.conn_id);
}

/// Waits for `connect` and answers it; `None` when the socket was closed.
async fn handshake(gateway: &Gateway, socket: &mut WebSocket, conn: &ConnInfo, nonce: &str) -> Option<Authenticated> {
    let app = &gateway.app;
    // Only the wait for the first frame is bounded; once `connect` is in, it runs to its end, so that a
    // store transaction is never cut in half.
    let first = tokio::select! {
        first = tokio::time::timeout(gateway.config.handshake_timeout, next_text(socket)) => first,
        _ = app.shutdown.cancelled() => Ok(Err("server shutting down".to_owned())),
    };
    let text = match first {
        Ok(Ok(Some(text))) => text,
        Ok(Ok(None)) => return None,
        Ok(Err(reason)) => {
            let code = if app.shutdown.is_cancelled() { close::GOING_AWAY } else { close::POLICY };
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
    app.metrics.connect(code.as_deref(), started.elapsed().as_secs_f64());
    match outcome {
        Ok((who, hello)) => send_text(socket, frames::response_ok(&frame.id, hello.0)).await.then_some(who),
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
async fn serve_connected(gateway: &Gateway, socket: &mut WebSocket, who: &Authenticated, registration: Registration) {
    let app = &gateway.app;
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
            _ = app.shutdown.cancelled() => Wake::ShuttingDown,
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
                let (code, reason) = disconnect_close(order.why);
                close_with(socket, code, reason).await;
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
                let frame = frames::event("tick", json!({ "ts": app.clock.now_ms() }), None);
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
            match Box::pin(gateway.call(who, &frame.method, frame.params)).await {
                Ok(payload) => frames::response_ok(&frame.id, payload),
                Err(error) => frames::response_error(&frame.id, &error),
            }
        };
        if !send_text(socket, reply).await {
            return;
        }
    }
}
