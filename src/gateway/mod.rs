//! The WebSocket front end: the OpenClaw gateway protocol (docs/protocol.md), one socket's life from
//! challenge to close. It translates frames to application calls and back; it never imports another
//! front end (`admin`, `cli`, `server`).

mod dispatch;
mod errors;
pub mod frames;
pub mod handshake;
mod last_seen;
pub mod methods;
pub mod transport;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

use crate::app::App;
use crate::app::live::{CloseOrder, Disconnect, Event, Registration};
use crate::auth::locality::{self, ClientAddr};
use crate::auth::policy::PolicyConfig;
use crate::domain::Scope;
use frames::{ErrorShape, RequestFrame, close, decode_params};
use handshake::Authenticated;
use transport::{FrameLimits, LimitedFrames, MessageTooBig, Socket, WsUpgrade};
use upstream::{Upstream, UpstreamConfig, UpstreamSocket};

/// The largest message a client may send before its `connect` succeeded (docs/protocol.md §1).
pub const PRE_CONNECT_MAX_PAYLOAD: usize = 64 * 1024;
/// How long a closing socket may spend on what it still owes (a reply, its close frame) before its
/// connection is dropped: a client that stopped reading holds a close order or shutdown no longer.
pub const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_millis(300);
/// How long a call may take to finish once its socket is told to close; if it does, its reply is sent
/// before the close frame (a device that removes itself hears that it did).
const CALL_GRACE: Duration = Duration::from_millis(200);
/// How long a slow consumer has, once its queue overflowed, to take what was sent and queued before its
/// 4008; a client that does not read that long is dropped without it.
pub const SLOW_CONSUMER_GRACE: Duration = Duration::from_secs(2);

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
    /// The OpenClaw gateway behind pairgate (the front door), if any.
    pub upstream: Option<UpstreamConfig>,
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
            upstream: None,
        }
    }
}

/// Who is on the other end of one socket.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub conn_id: String,
    pub peer: SocketAddr,
    pub client: ClientAddr,
    /// `scheme://host[:port]` the client reached pairgate at (its `Host`; `https` when a trusted proxy
    /// says so), for the gateway's URLs in a front door's hello-ok; `None` without a usable `Host`.
    pub reached_at: Option<String>,
}

/// The WebSocket front end's state.
pub struct Gateway {
    pub app: Arc<App>,
    pub config: GatewayConfig,
    last_seen: last_seen::LastSeen,
    /// The gateway behind pairgate: every allowed connect gets a session there, and frames are relayed.
    pub upstream: Option<Arc<Upstream>>,
}

impl Gateway {
    pub fn new(app: Arc<App>, config: GatewayConfig) -> Self {
        let last_seen =
            last_seen::LastSeen::start(app.store.clone(), config.last_seen_flush, app.shutdown.clone(), &app.tracker);
        let upstream = config.upstream.clone().map(Upstream::new);
        if let Some(upstream) = &upstream {
            app.upstream_seen(false);
            app.tracker.spawn(watch_upstream(app.clone(), upstream.clone()));
        }
        Gateway { app, config, last_seen, upstream }
    }
}

/// How long a client's frame may wait for the gateway behind pairgate to take it.
const UPSTREAM_WRITE_WAIT: Duration = Duration::from_secs(10);

/// How often the gateway behind pairgate is tried, for `/readyz`.
const UPSTREAM_PROBE: Duration = Duration::from_secs(2);

/// Tries the gateway behind pairgate now and then, for the rest of the server's life.
async fn watch_upstream(app: Arc<App>, upstream: Arc<Upstream>) {
    let mut ticker = tokio::time::interval(UPSTREAM_PROBE);
    loop {
        tokio::select! {
            _ = ticker.tick() => app.upstream_seen(upstream.reachable().await),
            _ = app.shutdown.cancelled() => return,
        }
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
    ws: WsUpgrade,
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
    let via_proxy = app.config.trusted_proxies.contains(&peer.ip());
    let conn = ConnInfo {
        conn_id: uuid::Uuid::new_v4().to_string(),
        peer,
        client,
        reached_at: upstream::reached_at(&headers, via_proxy),
    };
    let (response, upgraded) = ws.accept();
    let tracker = app.tracker.clone();
    tracker.spawn(async move {
        if let Some(io) = upgraded.await {
            run_socket(gateway, io, conn).await;
        }
    });
    response
}

/// The socket over an upgraded connection: frames checked against the pre-connect limit until the first
/// message (the `connect`) is through, against the configured one after.
async fn open_socket(gateway: &Gateway, io: hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>) -> Socket {
    let max = gateway.config.max_payload_bytes;
    let limits = FrameLimits { first: PRE_CONNECT_MAX_PAYLOAD.min(max) as u64, later: max as u64 };
    // tungstenite zeroes its whole read buffer before every read (128 KiB by default): a 1 KiB buffer keeps
    // that cheap and an idle socket small (10k idle sockets: 80 MB instead of 170 MB). Larger frames still
    // arrive whole: the buffer grows to the frame's announced length, which `LimitedFrames` checked.
    let config = WebSocketConfig::default()
        .read_buffer_size(1024)
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
        .max_write_buffer_size(gateway.config.max_buffered_bytes);
    WebSocketStream::from_raw_socket(LimitedFrames::new(io, limits), Role::Server, Some(config)).await
}

/// Close reasons are limited to 123 bytes by the WebSocket protocol.
fn close_message(code: u16, reason: &str) -> Message {
    let reason = crate::domain::prefix_within(reason, 123);
    Message::Close(Some(CloseFrame { code: code.into(), reason: reason.into() }))
}

/// Why a socket stops, and so what it still sends.
#[derive(Debug)]
enum Stop {
    /// The server shuts down: 1001.
    Shutdown,
    /// The application ordered the close (revocation): its close code, then the acknowledgement.
    Order(CloseOrder),
    /// The event queue overflowed: what is queued, then 4008.
    SlowConsumer,
    /// A close frame of the protocol (bad frames, a refused connect, the handshake timeout).
    Close(u16, String),
    /// The client closed (its close frame was answered) or the connection failed: nothing to send.
    Gone,
}

impl Stop {
    fn policy(reason: impl Into<String>) -> Stop {
        Stop::Close(close::POLICY, reason.into())
    }
}

/// Reads frames until one is a text frame. A client's close frame is answered (the closing handshake
/// completes) before `Stop::Gone`.
async fn next_text(socket: &mut Socket) -> Result<Utf8Bytes, Stop> {
    loop {
        match socket.next().await {
            None => return Err(Stop::Gone),
            Some(Ok(Message::Text(text))) => return Ok(text),
            Some(Ok(Message::Close(_))) => {
                // tungstenite queued the reply to the close frame; this sends it.
                let _ = timeout(CLOSE_WRITE_TIMEOUT, socket.flush()).await;
                return Err(Stop::Gone);
            }
            Some(Ok(Message::Binary(_))) => return Err(Stop::policy("invalid frame: binary frames are not supported")),
            Some(Ok(_)) => continue, // pings are answered by tungstenite; pongs need nothing
            Some(Err(tungstenite::Error::Io(error))) if MessageTooBig::of(&error).is_some() => {
                let too_big = MessageTooBig::of(&error).expect("checked");
                return Err(Stop::policy(too_big.to_string()));
            }
            Some(Err(error)) => return Err(Stop::policy(format!("invalid frame: {error}"))),
        }
    }
}

/// Receives from a oneshot at most once: `None` if its sender was dropped. After either, the slot is
/// empty and waits forever (so a `select!` branch over it goes quiet).
async fn recv_once<T>(slot: &mut Option<oneshot::Receiver<T>>) -> Option<T> {
    let Some(receiver) = slot.as_mut() else { return std::future::pending().await };
    let received = receiver.await.ok();
    *slot = None;
    received
}

/// Writes the reply a socket still owes, if any, and its close frame, before `deadline`; a client that
/// does not read by then is given up on (the caller drops the connection).
async fn close_before(socket: &mut Socket, deadline: Instant, owed: Option<String>, code: u16, reason: &str) {
    let _ = timeout_at(deadline, async {
        if let Some(text) = owed {
            socket.send(Message::Text(text.into())).await?;
        }
        socket.send(close_message(code, reason)).await
    })
    .await;
}

async fn run_socket(gateway: Arc<Gateway>, io: hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>, conn: ConnInfo) {
    let mut socket = open_socket(&gateway, io).await;
    let nonce = uuid::Uuid::new_v4().to_string();
    let app = &gateway.app;
    // The handshake may claim the socket's device in the registry: forgotten however the socket ends.
    let _forget = Forget { live: &app.live, conn_id: &conn.conn_id };
    // Boxed, like method calls below: a future held across an idle socket's whole life should not carry
    // the space of the handshake it is done with (this keeps 10k idle sockets small).
    let (who, upstream) = match Box::pin(handshake(&gateway, &mut socket, &conn, &nonce)).await {
        Ok((who, upstream)) => (Arc::new(who), upstream),
        Err((stop, owed)) => {
            let (code, reason) = match stop {
                Stop::Shutdown => (close::GOING_AWAY, "server shutting down".to_owned()),
                Stop::Close(code, reason) => (code, reason),
                _ => return,
            };
            close_before(&mut socket, Instant::now() + CLOSE_WRITE_TIMEOUT, owed, code, &reason).await;
            return;
        }
    };
    let subscribe = who.scopes.allows(Scope::Pairing);
    let registration = app.live.register(&conn.conn_id, who.device_id.as_ref(), subscribe);
    app.metrics.socket_opened(who.role.as_str());
    let Registration { close_order, events, overflowed } = registration;
    let mut connected = Connected {
        gateway: gateway.clone(),
        who: who.clone(),
        socket,
        close_order: Some(close_order),
        overflowed,
        events,
        seq: 0,
        upstream,
    };
    let (stop, owed) = match connected.serve().await {
        Ok(never) => match never {},
        Err(stopped) => stopped,
    };
    let ack = connected.finish(stop, owed).await;
    // Closed before it is acknowledged: whoever ordered the close answers only after this.
    drop(connected);
    app.metrics.socket_closed(who.role.as_str());
    app.live.unregister(&conn.conn_id);
    if let Some(ack) = ack {
        let _ = ack.send(());
    }
}

/// Unregisters a socket from the live registry when dropped, on every way out of `run_socket`.
struct Forget<'a> {
    live: &'a crate::app::live::Registry,
    conn_id: &'a str,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.live.unregister(self.conn_id);
    }
}

/// Writes one message of the handshake, bounded by the handshake timeout and shutdown. A long one (a
/// front door's hello-ok) goes in fragments, so that it leaves no large write buffer behind; a socket
/// whose write fails or is cut here ends (only a close frame may follow, which may come between
/// fragments).
async fn handshake_send(gateway: &Gateway, socket: &mut Socket, text: String) -> Result<(), Stop> {
    let send_all = async {
        for fragment in transport::fragments(text) {
            socket.send(fragment).await?;
        }
        Ok::<(), tungstenite::Error>(())
    };
    tokio::select! {
        sent = timeout(gateway.config.handshake_timeout, send_all) => match sent {
            Ok(Ok(())) => Ok(()),
            _ => Err(Stop::Gone),
        },
        _ = gateway.app.shutdown.cancelled() => Err(Stop::Shutdown),
    }
}

/// The challenge, then the wait for `connect`, then its answer. `Err` says how the socket ends, with the
/// error reply it still owes.
async fn handshake(
    gateway: &Gateway,
    socket: &mut Socket,
    conn: &ConnInfo,
    nonce: &str,
) -> Result<(Authenticated, Option<UpstreamSocket>), (Stop, Option<String>)> {
    let app = &gateway.app;
    let challenge = frames::event("connect.challenge", json!({ "nonce": nonce, "ts": app.clock.now_ms() }), None);
    handshake_send(gateway, socket, challenge).await.map_err(|stop| (stop, None))?;
    // Only the wait for the first frame is bounded; once `connect` is in, it runs to its end, so that a
    // store transaction is never cut in half.
    let first = tokio::select! {
        first = timeout(gateway.config.handshake_timeout, next_text(socket)) => first,
        _ = app.shutdown.cancelled() => return Err((Stop::Shutdown, None)),
    };
    let text = match first {
        Ok(Ok(text)) => text,
        Ok(Err(stop)) => return Err((stop, None)),
        Err(_elapsed) => return Err((Stop::policy("handshake timeout"), None)),
    };
    let frame = RequestFrame::parse(&text).map_err(|reason| (Stop::policy(reason), None))?;
    drop(text);
    let refuse = |error: ErrorShape| {
        let reply = frames::response_error(&frame.id, &error);
        (Stop::policy(error.message), Some(reply))
    };
    if frame.method != "connect" {
        return Err(refuse(ErrorShape::invalid("invalid handshake: first request must be connect")));
    }
    let params = match decode_params(frame.params.as_deref()) {
        Ok(params) => params,
        Err(error) => return Err(refuse(ErrorShape::invalid(format!("invalid connect params: {error}")))),
    };
    let started = std::time::Instant::now();
    let outcome = gateway.connect(conn, nonce, params).await;
    let code = outcome.as_ref().err().map(|refused| {
        refused.error.details.as_ref().and_then(|d| d["code"].as_str()).unwrap_or(refused.error.code).to_owned()
    });
    app.metrics.connect(code.as_deref(), started.elapsed().as_secs_f64());
    match outcome {
        Ok((who, hello)) => {
            let (hello, upstream) = match &gateway.upstream {
                None => (hello.0, None),
                Some(upstream) => match tokio::select! {
                    opened = open_upstream(upstream, &who, conn, frame.params.as_deref()) => opened,
                    _ = app.shutdown.cancelled() => return Err((Stop::Shutdown, None)),
                } {
                    Ok((session, upstream_hello)) => {
                        let own = upstream::answered_by_pairgate;
                        let own_methods: Vec<&str> =
                            methods::Method::names().into_iter().filter(|name| own(name)).collect();
                        let mut merged = upstream::merge_hello(upstream_hello, &hello.0, &own_methods);
                        upstream.rebase_surface_urls(&mut merged, conn.reached_at.as_deref());
                        (merged, Some(session))
                    }
                    Err(error) => {
                        tracing::warn!(conn = %conn.conn_id, %error, "no upstream session for an allowed connect");
                        let mut refused = ErrorShape::unavailable(error.client_message())
                            .with_details(json!({ "code": "UPSTREAM_UNAVAILABLE" }));
                        refused.retryable = Some(error.retryable());
                        let reply = frames::response_error(&frame.id, &refused);
                        return Err((
                            Stop::Close(close::TRY_AGAIN_LATER, "upstream gateway unavailable".into()),
                            Some(reply),
                        ));
                    }
                },
            };
            if let Err(stop) = handshake_send(gateway, socket, frames::response_ok(&frame.id, hello)).await {
                if let Some(mut session) = upstream {
                    let _ = timeout(CLOSE_WRITE_TIMEOUT, session.close(None)).await;
                }
                return Err((stop, None));
            }
            Ok((who, upstream))
        }
        Err(refused) => {
            let request = refused.error.details.as_ref().and_then(|d| d["requestId"].as_str()).unwrap_or("-");
            tracing::info!(conn = %conn.conn_id, client = %conn.client.ip, code = refused.error.code, request = %request,
                message = %refused.error.message, "connect refused");
            let reply = frames::response_error(&frame.id, &refused.error);
            Err((Stop::Close(refused.close_code, refused.close_reason), Some(reply)))
        }
    }
}

/// The connect params the gateway reads besides identity and auth, passed on as the client sent them.
const PASSED_UPSTREAM: [&str; 5] = ["caps", "commands", "permissions", "locale", "userAgent"];

/// Opens the upstream session of an allowed connect, with what the client said of itself.
async fn open_upstream(
    upstream: &Upstream,
    who: &Authenticated,
    conn: &ConnInfo,
    params: Option<&serde_json::value::RawValue>,
) -> Result<(UpstreamSocket, serde_json::Value), upstream::UpstreamError> {
    let mut params: serde_json::Map<String, serde_json::Value> =
        params.and_then(|raw| serde_json::from_str(raw.get()).ok()).unwrap_or_default();
    let client = params.remove("client").unwrap_or_default();
    params.retain(|field, _| PASSED_UPSTREAM.contains(&field.as_str()));
    let origin = conn.client.browser.then_some(conn.client.origin.as_deref()).flatten();
    upstream.open(who, &client, &params, origin).await
}

/// The next pairing event for a subscribed socket; never, for one that is not subscribed.
async fn next_event(events: &mut Option<mpsc::Receiver<Arc<Event>>>) -> Option<Arc<Event>> {
    match events {
        Some(events) => events.recv().await,
        None => std::future::pending().await,
    }
}

/// A socket after hello-ok: requests, ticks, events, close orders and shutdown. Whatever it waits for
/// (a frame, a call, a write to a client that stopped reading), a close order, an overflow and shutdown
/// are heard at once.
struct Connected {
    gateway: Arc<Gateway>,
    who: Arc<Authenticated>,
    socket: Socket,
    close_order: Option<oneshot::Receiver<CloseOrder>>,
    overflowed: Option<oneshot::Receiver<()>>,
    events: Option<mpsc::Receiver<Arc<Event>>>,
    seq: u64,
    /// The session on the gateway behind pairgate, whose frames are relayed (front door only).
    upstream: Option<UpstreamSocket>,
}

/// The next frame from the upstream gateway; never, without one.
async fn next_upstream(upstream: &mut Option<UpstreamSocket>) -> Option<Result<Message, tungstenite::Error>> {
    match upstream {
        Some(upstream) => upstream.next().await,
        None => std::future::pending().await,
    }
}

/// What interrupted a socket, with the reply it still owes (a call that finished as it was told to
/// close).
type Stopped = (Stop, Option<String>);

impl Connected {
    /// Serves until something stops the socket.
    async fn serve(&mut self) -> Result<std::convert::Infallible, Stopped> {
        let app = self.gateway.app.clone();
        let mut tick = tokio::time::interval(self.gateway.config.tick_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick fires at once; hello-ok was just sent
        enum Wake {
            Event(Option<Arc<Event>>),
            Tick,
            Frame(Utf8Bytes),
            Upstream(Option<Result<Message, tungstenite::Error>>),
        }
        // In front of a gateway, its ticks are relayed: pairgate sends none of its own.
        let relaying = self.upstream.is_some();
        loop {
            let wake = tokio::select! {
                // Shutdown and close orders first: no frame is relayed once either is in.
                biased;
                _ = app.shutdown.cancelled() => return Err((Stop::Shutdown, None)),
                order = recv_once(&mut self.close_order) => return Err((order.map_or(Stop::Gone, Stop::Order), None)),
                Some(()) = recv_once(&mut self.overflowed) => return Err((Stop::SlowConsumer, None)),
                event = next_event(&mut self.events) => Wake::Event(event),
                _ = tick.tick(), if !relaying => Wake::Tick,
                incoming = next_text(&mut self.socket) => Wake::Frame(incoming.map_err(|stop| (stop, None))?),
                from_upstream = next_upstream(&mut self.upstream) => Wake::Upstream(from_upstream),
            };
            match wake {
                Wake::Event(Some(event)) => {
                    let frame = self.event_frame(&event);
                    self.write(frame).await?;
                }
                Wake::Event(None) => return Err((Stop::SlowConsumer, None)),
                Wake::Tick => self.write(frames::event("tick", json!({ "ts": app.clock.now_ms() }), None)).await?,
                Wake::Upstream(Some(Ok(Message::Text(text)))) => {
                    if let Some(frame) = upstream::relayed(&text, &mut self.seq) {
                        self.write(frame).await?;
                    }
                }
                Wake::Upstream(Some(Ok(Message::Close(_)) | Err(_)) | None) => {
                    return Err((
                        Stop::Close(close::SERVICE_RESTART, "upstream gateway closed the session".into()),
                        None,
                    ));
                }
                Wake::Upstream(Some(Ok(_))) => {} // pings are answered by tungstenite
                Wake::Frame(text) => {
                    let frame = RequestFrame::parse(&text).map_err(|reason| (Stop::policy(reason), None))?;
                    if self.upstream.is_some()
                        && frame.method != "connect"
                        && !upstream::answered_by_pairgate(&frame.method)
                    {
                        // The gateway's method: the frame goes on as the client sent it.
                        self.send_upstream(text).await?;
                        continue;
                    }
                    drop(text);
                    let reply = if frame.method == "connect" {
                        frames::response_error(
                            &frame.id,
                            &ErrorShape::invalid("connect already completed on this socket"),
                        )
                    } else {
                        self.call(frame).await?
                    };
                    self.write(reply).await?;
                }
            }
        }
    }

    /// Sends a client's frame to the gateway. A gateway that stops reading gives way to shutdown, a close
    /// order or an overflow at once, and ends the session (1012) after `UPSTREAM_WRITE_WAIT`.
    async fn send_upstream(&mut self, text: Utf8Bytes) -> Result<(), Stopped> {
        let Connected { upstream, close_order, overflowed, gateway, .. } = self;
        let Some(upstream) = upstream.as_mut() else { return Ok(()) };
        let gone = || Stop::Close(close::SERVICE_RESTART, "upstream gateway closed the session".into());
        let stop = tokio::select! {
            biased;
            _ = gateway.app.shutdown.cancelled() => Stop::Shutdown,
            order = recv_once(close_order) => order.map_or(Stop::Gone, Stop::Order),
            Some(()) = recv_once(overflowed) => Stop::SlowConsumer,
            sent = timeout(UPSTREAM_WRITE_WAIT, upstream.send(Message::Text(text))) => match sent {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(_)) => gone(),
                Err(_elapsed) => Stop::Close(close::SERVICE_RESTART, "upstream gateway stopped reading".into()),
            },
        };
        Err((stop, None))
    }

    fn event_frame(&mut self, event: &Event) -> String {
        self.seq += 1;
        frames::event(event.name, event.payload.clone(), Some(self.seq))
    }

    /// Writes one frame. A write blocked by a client that stopped reading gives way to shutdown, a close
    /// order or an overflow; what it had queued is sent first by whatever the socket writes next.
    async fn write(&mut self, text: String) -> Result<(), Stopped> {
        let Connected { socket, close_order, overflowed, gateway, .. } = self;
        let stop = tokio::select! {
            // First: a frame is always handed to tungstenite before anything else is looked at.
            biased;
            sent = socket.send(Message::Text(text.into())) => match sent {
                Ok(()) => return Ok(()),
                Err(_) => Stop::Gone,
            },
            _ = gateway.app.shutdown.cancelled() => Stop::Shutdown,
            order = recv_once(close_order) => order.map_or(Stop::Gone, Stop::Order),
            Some(()) = recv_once(overflowed) => Stop::SlowConsumer,
        };
        Err((stop, None))
    }

    /// Runs one request in a task of its own (so a store transaction always runs to its end) and waits
    /// for its reply, or for something that stops the socket.
    async fn call(&mut self, frame: RequestFrame) -> Result<String, Stopped> {
        let app = self.gateway.app.clone();
        let stop_call = app.shutdown.child_token();
        let RequestFrame { id, method, params } = frame;
        let mut call = app.tracker.spawn({
            let (gateway, who, stop_call) = (self.gateway.clone(), self.who.clone(), stop_call.clone());
            async move { gateway.call(&who, &method, params.as_deref(), &stop_call).await }
        });
        let reply = |done: Result<Result<serde_json::Value, ErrorShape>, tokio::task::JoinError>| match done {
            Ok(Ok(payload)) => frames::response_ok(&id, payload),
            Ok(Err(error)) => frames::response_error(&id, &error),
            Err(error) => {
                tracing::error!(%error, "a request's task failed");
                frames::response_error(&id, &ErrorShape::unavailable("internal error, try again"))
            }
        };
        let stop = tokio::select! {
            biased;
            done = &mut call => return Ok(reply(done)),
            _ = app.shutdown.cancelled() => Stop::Shutdown,
            order = recv_once(&mut self.close_order) => order.map_or(Stop::Gone, Stop::Order),
            Some(()) = recv_once(&mut self.overflowed) => Stop::SlowConsumer,
        };
        // A wait ends now; a change runs on, detached, and answers if it finishes in time.
        stop_call.cancel();
        let owed = timeout(CALL_GRACE, &mut call).await.ok().map(reply);
        Err((stop, owed))
    }

    /// Sends what the socket still owes and its close frame, all bounded, and returns the acknowledgement
    /// a close order waits for (sent once the connection is dropped).
    async fn finish(&mut self, mut stop: Stop, mut owed: Option<String>) -> Option<oneshot::Sender<()>> {
        let mut deadline = Instant::now() + CLOSE_WRITE_TIMEOUT;
        if let Stop::SlowConsumer = stop {
            deadline = Instant::now() + SLOW_CONSUMER_GRACE;
            match timeout_at(deadline, self.drain(owed.take())).await {
                Ok(Ok(())) => {}
                // Shutdown or a close order while draining: their close, in their time.
                Ok(Err((other, _))) => {
                    stop = other;
                    deadline = deadline.min(Instant::now() + CLOSE_WRITE_TIMEOUT);
                }
                Err(_elapsed) => stop = Stop::Gone,
            }
        }
        let (code, reason, ack) = match stop {
            Stop::Gone => {
                self.close_upstream().await;
                return None;
            }
            Stop::Shutdown => (close::GOING_AWAY, "server shutting down".to_owned(), None),
            Stop::Order(order) => {
                let (code, reason) = disconnect_close(order.why);
                (code, reason.to_owned(), Some(order.ack))
            }
            Stop::SlowConsumer => (close::SLOW_CONSUMER, "slow consumer: event queue full".to_owned(), None),
            Stop::Close(code, reason) => (code, reason, None),
        };
        close_before(&mut self.socket, deadline, owed, code, &reason).await;
        self.close_upstream().await;
        ack
    }

    /// Ends the upstream session with the client's socket, however that ended, with a close frame (the
    /// gateway logs a session dropped without one as abnormal, 1006); a gateway that does not take it in
    /// time is dropped all the same.
    async fn close_upstream(&mut self) {
        if let Some(mut upstream) = self.upstream.take() {
            let _ = timeout(CLOSE_WRITE_TIMEOUT, upstream.close(None)).await;
        }
    }

    /// A slow consumer's last frames: the reply it is owed and the events already queued (nothing more is
    /// queued for it).
    async fn drain(&mut self, owed: Option<String>) -> Result<(), Stopped> {
        if let Some(reply) = owed {
            self.write(reply).await?;
        }
        while let Some(event) = self.events.as_mut().and_then(|events| events.try_recv().ok()) {
            let frame = self.event_frame(&event);
            self.write(frame).await?;
        }
        Ok(())
    }
}
