//! Assembly: one axum Router (WebSocket at "/", HTTP beside it) over one application, served until
//! shutdown. The only module that knows every front end.
//!
//! Connections are accepted here, not by `axum::serve`: each gets a deadline for its request head (a
//! silent or trickling client holds nothing for long), all of them together a cap (upgraded WebSockets
//! included), accept errors such as running out of file descriptors are waited out, and at shutdown a
//! connection gets a bounded time to finish before it is dropped.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::connect_info::IntoMakeServiceWithConnectInfo;
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::trace::TraceLayer;

use crate::app::{App, AppConfig};
use crate::auth::policy::PolicyConfig;
use crate::auth::ratelimit::RateLimitConfig;
use crate::auth::secrets::SharedSecret;
use crate::clock::SharedClock;
use crate::gateway::{self, Gateway, GatewayConfig};
use crate::store::{SpawnLimits, Store};

pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Every setting of a running server, from flags or tests.
#[derive(Clone, Debug)]
pub struct Config {
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
    pub spawn_limits: SpawnLimits,
    /// A run registered this long ago that never started is failed.
    pub unstarted_run_ttl: Duration,
    /// A connection that has not sent a whole request head by then is closed (a silent or trickling
    /// client holds nothing for longer).
    pub header_read_timeout: Duration,
    /// Open TCP connections, upgraded WebSockets included; beyond it new connections are closed at once.
    pub max_connections: usize,
    /// The OpenClaw gateway behind pairgate (`serve --upstream`), if any.
    pub upstream: Option<crate::gateway::upstream::UpstreamConfig>,
    /// On PostgreSQL, this node's lease: silent for that long, it is taken for dead and its runs ended.
    pub node_lease: Duration,
    /// Where setup codes point devices (`--public-url`, the listener), and how long they last.
    pub setup: crate::app::setup::SetupConfig,
}

impl Default for Config {
    fn default() -> Self {
        let gateway = GatewayConfig::default();
        let app = AppConfig::default();
        Config {
            policy: gateway.policy,
            trusted_proxies: app.trusted_proxies,
            handshake_timeout: gateway.handshake_timeout,
            tick_interval: gateway.tick_interval,
            max_payload_bytes: gateway.max_payload_bytes,
            max_buffered_bytes: gateway.max_buffered_bytes,
            rate_limit: app.rate_limit,
            last_seen_flush: gateway.last_seen_flush,
            metrics_open: app.metrics_open,
            spawn_limits: app.spawn_limits,
            unstarted_run_ttl: app.unstarted_run_ttl,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            upstream: gateway.upstream,
            node_lease: app.node_lease,
            setup: app.setup,
        }
    }
}

impl Config {
    fn split(self) -> (AppConfig, GatewayConfig, TransportConfig) {
        let app = AppConfig {
            trusted_proxies: self.trusted_proxies,
            rate_limit: self.rate_limit,
            spawn_limits: self.spawn_limits,
            metrics_open: self.metrics_open,
            unstarted_run_ttl: self.unstarted_run_ttl,
            node_lease: self.node_lease,
            setup: self.setup,
        };
        let gateway = GatewayConfig {
            policy: self.policy,
            handshake_timeout: self.handshake_timeout,
            tick_interval: self.tick_interval,
            max_payload_bytes: self.max_payload_bytes,
            max_buffered_bytes: self.max_buffered_bytes,
            last_seen_flush: self.last_seen_flush,
            upstream: self.upstream,
        };
        let transport = TransportConfig {
            header_read_timeout: self.header_read_timeout,
            max_connections: self.max_connections.max(1),
        };
        (app, gateway, transport)
    }
}

/// Settings of the connections under both front ends.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
}

/// One server: the application and the front ends over it.
#[derive(Clone)]
pub struct Server {
    pub app: Arc<App>,
    pub gateway: Arc<Gateway>,
    pub transport: TransportConfig,
}

impl Server {
    pub fn new(store: Store, clock: SharedClock, secret: Arc<SharedSecret>, config: Config) -> Server {
        let (app_config, gateway_config, transport) = config.split();
        let app = Arc::new(App::new(store, clock, secret, app_config));
        let gateway = Arc::new(Gateway::new(app.clone(), gateway_config));
        Server { app, gateway, transport }
    }

    /// Asks the server to stop: sockets close with 1001, then `run` returns.
    pub fn shut_down(&self) {
        self.app.shutdown.cancel();
    }
}

/// The WebSocket at "/", the HTTP endpoints beside it, and the layers every request passes. In front of a
/// gateway, every other request goes to the gateway (`front_door`).
pub fn router(server: &Server) -> Router {
    let router = Router::new()
        .route("/", get(gateway::ws_handler))
        .with_state(server.gateway.clone())
        // The WebSocket route's own HTTP refusals (no upgrade, forwarding headers, shutting down) take the
        // one error shape too.
        .layer(axum::middleware::map_response(crate::admin::error::json_errors))
        .merge(crate::admin::router().with_state(server.app.clone()));
    let router = match &server.gateway.upstream {
        Some(_) => router.layer(axum::middleware::from_fn_with_state(Arc::new(FrontDoor::new(server)), front_door)),
        None => router,
    };
    router.layer(TraceLayer::new_for_http().make_span_with(request_span))
}

/// The span of an HTTP request: its method and path, but not a join URL's short code (a credential until
/// fetched) nor any query string.
fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let path = request.uri().path();
    let path = if path.starts_with("/j/") { "/j/<code>" } else { path };
    tracing::debug_span!("request", method = %request.method(), path = %path)
}

/// What the front door answers itself over HTTP: exact routes, never prefixes (the gateway serves paths
/// under `/api/v1/` too). Everything else goes to the gateway.
struct FrontDoor {
    gateway: Arc<Gateway>,
    /// pairgate's HTTP routes, from the one list its router and OpenAPI document are built from.
    owned: matchit::Router<()>,
    /// Requests being forwarded to the gateway: a slow gateway (or slow callers) can hold at most this many
    /// of pairgate's connections; beyond it, 503 at once.
    forwarding: Arc<Semaphore>,
}

/// HTTP requests forwarded to the gateway at once, at most.
const MAX_FORWARDED_REQUESTS: usize = 256;

impl FrontDoor {
    fn new(server: &Server) -> FrontDoor {
        let mut owned = matchit::Router::new();
        for path in crate::admin::openapi().paths.paths.keys() {
            owned.insert(path.as_str(), ()).expect("the OpenAPI paths are distinct routes");
        }
        FrontDoor {
            gateway: server.gateway.clone(),
            owned,
            forwarding: Arc::new(Semaphore::new(MAX_FORWARDED_REQUESTS)),
        }
    }

    /// Whether pairgate answers this request: the WebSocket upgrade at `/`, and its own HTTP routes.
    fn owns(&self, request: &axum::extract::Request) -> bool {
        let path = request.uri().path();
        let upgrade = request.headers().get(axum::http::header::UPGRADE);
        let websocket = upgrade.is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"websocket"));
        (path == "/" && websocket) || self.owned.at(path).is_ok()
    }
}

/// Sends what pairgate does not own to the gateway, with no more authority than the caller proved: its own
/// credential untouched, never the gateway's secret. A caller that keeps failing the gateway's auth is
/// locked out by pairgate's failed-auth limiter (the gateway sees every request as local and would never
/// lock it out).
async fn front_door(
    axum::extract::State(door): axum::extract::State<Arc<FrontDoor>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if door.owns(&request) {
        return next.run(request).await;
    }
    let app = &door.gateway.app;
    let client = match crate::auth::locality::resolve(peer.ip(), request.headers(), &app.config.trusted_proxies) {
        Ok(client) => client,
        Err(refused) => {
            let body = serde_json::json!({ "code": "forbidden", "message": refused.message(), "details": {} });
            return (axum::http::StatusCode::FORBIDDEN, axum::Json(body)).into_response();
        }
    };
    let now = app.clock.now_ms();
    let bearer = request.headers().get(axum::http::header::AUTHORIZATION).and_then(|value| value.to_str().ok());
    let credentialed = bearer.is_some();
    // pairgate's own token (the Control UI sends it on its HTTP calls) is no failed guess when the gateway
    // refuses it: the caller proved what pairgate asks.
    let pairgates_own =
        match bearer.and_then(|value| value.get(7..).filter(|_| value[..7].eq_ignore_ascii_case("bearer "))) {
            Some(token) => app.secret.verify(token.trim()).await,
            None => false,
        };
    if credentialed && let Some(wait_ms) = app.auth_locked_for(&client, now) {
        let body = serde_json::json!({ "code": "rate_limited", "message": "too many failed attempts; try again later",
            "details": { "retryAfterMs": wait_ms } });
        return (axum::http::StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
    }
    let Ok(_slot) = door.forwarding.clone().try_acquire_owned() else {
        let body = serde_json::json!({ "code": "unavailable", "message": "too many requests to the upstream gateway at once; try again", "details": {} });
        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    };
    let upstream = door.gateway.upstream.as_ref().expect("the front door is layered only with an upstream");
    let response = upstream.forward_http(request, (!client.local).then_some(client.ip)).await;
    if credentialed && !pairgates_own && response.status() == axum::http::StatusCode::UNAUTHORIZED {
        app.record_auth_failure(&client, now).await;
    }
    response
}

/// Serves until the application's shutdown is cancelled, then closes every WebSocket with 1001, waits
/// for every tracked task (connections are tracked here; upgraded sockets by the application's tracker),
/// and closes the store.
pub async fn run(listener: TcpListener, server: Server) -> std::io::Result<()> {
    let app = server.app.clone();
    // On PostgreSQL, a node of the fleet from here on; the runs it registers are its own.
    let node = app.join_fleet().await.map_err(std::io::Error::other)?;
    // On SQLite, runs a crash left running are ended before anyone can wait on them. On PostgreSQL other
    // nodes may be serving theirs: the lease holder ends those of lost nodes (`hold_lease`).
    if node.is_none() {
        app.recover_runs().await.map_err(std::io::Error::other)?;
    }
    app.tracker.spawn(sweep(app.clone()));
    if node.is_some() {
        app.tracker.spawn(app.clone().hold_lease());
        app.tracker.spawn(app.clone().share_auth_failures());
    }
    app.tracker.spawn(app.clone().watch_changes_elsewhere());
    let service = router(&server).into_make_service_with_connect_info::<SocketAddr>();
    serve_connections(listener, service, &server.transport, &app.shutdown).await;
    app.tracker.close();
    app.tracker.wait().await;
    app.leave_fleet().await;
    app.store.close().await;
    Ok(())
}

/// At shutdown, how long a connection may take to finish the request it is serving.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// After an accept error (out of file descriptors, out of memory), the first pause; it doubles up to the
/// longest while the errors go on.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Errors of one connection that came and went before it was accepted; the next accept may well work.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// Accepts and serves connections until `shutdown`, then waits (bounded) for the open ones.
async fn serve_connections(
    listener: TcpListener,
    mut service: IntoMakeServiceWithConnectInfo<Router, SocketAddr>,
    config: &TransportConfig,
    shutdown: &CancellationToken,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(config.header_read_timeout);
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let connections = TaskTracker::new();
    let mut backoff = ACCEPT_BACKOFF;
    // Connections closed at once since the cap was reached (0: below the cap).
    let mut refused: u64 = 0;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                tracing::error!(%error, retry_in_ms = backoff.as_millis() as u64,
                    "cannot accept a connection (out of file descriptors?); serving the open ones and trying again");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => break,
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        backoff = ACCEPT_BACKOFF;
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if refused == 0 {
                tracing::warn!(
                    max = config.max_connections,
                    "connection limit reached ({} open): new connections are closed at once until some close (--max-connections)",
                    config.max_connections
                );
            }
            refused += 1;
            drop(stream);
            continue;
        };
        if refused > 0 {
            tracing::info!(refused, "below the connection limit again; {refused} connections were closed meanwhile");
            refused = 0;
        }
        let _ = stream.set_nodelay(true);
        let connect_info = match tower_service::Service::call(&mut service, peer).await {
            Ok(connect_info) => connect_info,
            Err(never) => match never {},
        };
        let io = TokioIo::new(Counted { stream, _permit: permit });
        let connection = http.serve_connection(io, TowerToHyperService::new(connect_info)).with_upgrades();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    match tokio::time::timeout(DRAIN_TIMEOUT, connection).await {
                        Ok(result) => result,
                        Err(_) => return tracing::debug!(%peer, "connection still busy at shutdown; dropped"),
                    }
                }
            };
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// A connection that holds its place under the cap for as long as it is open, also after an upgrade
/// (hyper hands this very stream to the WebSocket).
struct Counted {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Counted {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, bytes)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// How often pending pairing requests past their 5 minutes are expired (and announced), runs that never
/// started are failed, and the sessions of ended `cleanup: delete` runs are archived.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

async fn sweep(app: Arc<App>) {
    let mut ticker = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                app.sweep_expired().await;
                app.expire_unstarted_runs().await;
                if let Err(error) = app.store.archive_due_sessions(app.clock.now_ms()).await {
                    tracing::warn!(%error, "could not archive sessions");
                }
            }
            _ = app.shutdown.cancelled() => return,
        }
    }
}
