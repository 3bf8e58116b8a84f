//! Assembly: one axum Router (WebSocket at "/", HTTP beside it) over one application, served until
//! shutdown. The only module that knows every front end.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;

use crate::app::{App, AppConfig};
use crate::auth::policy::PolicyConfig;
use crate::auth::ratelimit::RateLimitConfig;
use crate::auth::secrets::SharedSecret;
use crate::clock::SharedClock;
use crate::gateway::{self, Gateway, GatewayConfig};
use crate::store::{SpawnLimits, Store};

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
        }
    }
}

impl Config {
    fn split(self) -> (AppConfig, GatewayConfig) {
        let app = AppConfig {
            trusted_proxies: self.trusted_proxies,
            rate_limit: self.rate_limit,
            spawn_limits: self.spawn_limits,
            metrics_open: self.metrics_open,
            unstarted_run_ttl: self.unstarted_run_ttl,
        };
        let gateway = GatewayConfig {
            policy: self.policy,
            handshake_timeout: self.handshake_timeout,
            tick_interval: self.tick_interval,
            max_payload_bytes: self.max_payload_bytes,
            max_buffered_bytes: self.max_buffered_bytes,
            last_seen_flush: self.last_seen_flush,
        };
        (app, gateway)
    }
}

/// One server: the application and the front ends over it.
#[derive(Clone)]
pub struct Server {
    pub app: Arc<App>,
    pub gateway: Arc<Gateway>,
}

impl Server {
    pub fn new(store: Store, clock: SharedClock, secret: Arc<SharedSecret>, config: Config) -> Server {
        let (app_config, gateway_config) = config.split();
        let app = Arc::new(App::new(store, clock, secret, app_config));
        let gateway = Arc::new(Gateway::new(app.clone(), gateway_config));
        Server { app, gateway }
    }

    /// Asks the server to stop: sockets close with 1001, then `run` returns.
    pub fn shut_down(&self) {
        self.app.shutdown.cancel();
    }
}

/// The WebSocket at "/", the HTTP endpoints beside it, and the layers every request passes.
pub fn router(server: &Server) -> Router {
    Router::new()
        .route("/", get(gateway::ws_handler))
        .with_state(server.gateway.clone())
        .merge(crate::admin::router().with_state(server.app.clone()))
        .layer(TraceLayer::new_for_http())
}

/// Serves until the application's shutdown is cancelled, then closes every WebSocket with 1001, waits
/// for every tracked task (axum does not track upgraded connections; the application's tracker does),
/// and closes the store.
pub async fn run(listener: TcpListener, server: Server) -> std::io::Result<()> {
    let app = server.app.clone();
    // Runs a crash left running are ended before anyone can wait on them.
    app.recover_runs().await.map_err(std::io::Error::other)?;
    app.tracker.spawn(sweep(app.clone()));
    app.tracker.spawn(app.clone().watch_offline_revocations());
    let service = router(&server).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, service).with_graceful_shutdown(app.shutdown.clone().cancelled_owned()).await?;
    app.tracker.close();
    app.tracker.wait().await;
    app.store.close().await;
    Ok(())
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
