//! The application layer: the operator decisions and run control that every front end shares (WebSocket
//! methods, REST, the offline CLI). Each decision is one store transaction, then its announcement (events
//! to live sockets) and its bite (closing a revoked device's sockets), in that order, before the caller is
//! answered. Front ends only translate their wire format to and from these calls.
//!
//! Never imports a front end (`gateway`, `admin`, `cli`, `server`).

mod decisions;
pub mod error;
pub mod live;
mod qr;
pub mod runs;
pub mod setup;
pub mod views;

use std::net::IpAddr;
use std::sync::Arc;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use decisions::Caller;
pub use error::AppError;
pub use qr::{png as qr_png, terminal as qr_terminal};

use crate::auth::locality::ClientAddr;
use crate::auth::ratelimit::{FailedAuthLimiter, FailureOutcome, LimitKey, RateLimitConfig};
use crate::auth::secrets::{SecretKind, SharedSecret};
use crate::clock::{Millis, SharedClock, SystemClock};
use crate::metrics::Metrics;
use crate::store::{Actor, AuditEvent, SpawnLimits, Store};

/// How long a registered run may wait to be started before it is failed (`never-started`).
pub const UNSTARTED_RUN_TTL: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// A node's lease unless set otherwise.
pub const DEFAULT_NODE_LEASE: std::time::Duration = std::time::Duration::from_secs(30);

/// Settings every front end shares.
#[derive(Clone, Debug)]
pub struct AppConfig {
    /// Reverse proxies whose forwarding headers are believed.
    pub trusted_proxies: Vec<IpAddr>,
    pub rate_limit: RateLimitConfig,
    pub spawn_limits: SpawnLimits,
    /// Serve `/metrics` without the bearer token (for a scraper that cannot send one).
    pub metrics_open: bool,
    /// A run registered this long ago that never started is failed.
    pub unstarted_run_ttl: std::time::Duration,
    /// On PostgreSQL, how long this node's lease lasts unrenewed: a node silent for that long is taken
    /// for dead by the fleet, which ends its runs. Renewed three times per lease.
    pub node_lease: std::time::Duration,
    /// Where setup codes point devices, and how long they last.
    pub setup: setup::SetupConfig,
}

impl Default for AppConfig {
    fn default() -> Self {
        AppConfig {
            trusted_proxies: Vec::new(),
            rate_limit: RateLimitConfig::default(),
            node_lease: DEFAULT_NODE_LEASE,
            spawn_limits: SpawnLimits::default(),
            metrics_open: false,
            unstarted_run_ttl: UNSTARTED_RUN_TTL,
            setup: setup::SetupConfig::default(),
        }
    }
}

/// The shared state of one pairgate process: its store, clock, secret, live sockets and metrics.
pub struct App {
    pub store: Store,
    pub clock: SharedClock,
    /// The gateway secret: the shared token or password of WebSocket auth, and the REST bearer token.
    pub secret: Arc<SharedSecret>,
    pub config: AppConfig,
    pub limiter: FailedAuthLimiter,
    pub live: live::Registry,
    pub metrics: Metrics,
    /// Bumped whenever a run starts or ends, to wake `agent.wait` callers.
    runs_version: tokio::sync::watch::Sender<u64>,
    pub started_at_ms: Millis,
    /// Cancelled to shut down; every front end's long-lived task watches it.
    pub shutdown: CancellationToken,
    /// Every task that must end before the process does (sockets, flushers, sweeps).
    pub tracker: TaskTracker,
    /// The gateway behind pairgate (the front door) as last seen by its front end; `None` without one.
    pub upstream: std::sync::RwLock<Option<UpstreamSeen>>,
}

/// Whether the gateway behind pairgate answered when last tried, and when (ms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpstreamSeen {
    pub reachable: bool,
    pub checked_at_ms: Millis,
}

impl App {
    pub fn new(store: Store, clock: SharedClock, secret: Arc<SharedSecret>, config: AppConfig) -> Self {
        let metrics = Metrics::new(store.metrics());
        App {
            started_at_ms: clock.now_ms(),
            limiter: FailedAuthLimiter::new(config.rate_limit),
            store,
            clock,
            secret,
            config,
            live: live::Registry::default(),
            metrics,
            runs_version: tokio::sync::watch::Sender::new(0),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            upstream: std::sync::RwLock::new(None),
        }
    }

    /// Notes what the front end learnt of the gateway behind pairgate.
    pub fn upstream_seen(&self, reachable: bool) {
        let seen = UpstreamSeen { reachable, checked_at_ms: self.clock.now_ms() };
        *self.upstream.write().expect("upstream lock") = Some(seen);
    }

    /// The application over a database alone, for the offline CLI: no sockets are live, so decisions
    /// announce to no one and close nothing. Its secret is never checked.
    pub fn offline(store: Store) -> Self {
        let unguessable = crate::domain::TokenSecret::generate();
        let secret = Arc::new(SharedSecret::from_plaintext(SecretKind::Token, unguessable.expose()));
        App::new(store, Arc::new(SystemClock), secret, AppConfig::default())
    }

    /// Milliseconds until `client` may try to authenticate again, when it is locked out.
    pub fn auth_locked_for(&self, client: &ClientAddr, now: Millis) -> Option<Millis> {
        LimitKey::of(client).and_then(|key| self.limiter.locked_for(key, now))
    }

    /// Counts a failed authentication of `client`, unless it is exempt (local and not a browser); the one that
    /// locks it out is audited, its subject the address, /64 or browser origin that is locked out.
    pub async fn record_auth_failure(&self, client: &ClientAddr, now: Millis) {
        let Some(key) = LimitKey::of(client) else { return };
        if self.limiter.record_failure(key.clone(), now) == FailureOutcome::LockedOut {
            let ip = client.ip.to_string();
            tracing::warn!(client = %ip, locked = %key, "failed-auth limit reached; locked out");
            let event = AuditEvent::new(&Actor::System, "auth.lockout", now)
                .subject(key.to_string())
                .remote(Some(&ip))
                .details(json!({ "lockoutMs": self.config.rate_limit.lockout_ms }));
            if let Err(error) = self.store.record_audit(&event).await {
                tracing::error!(%error, "could not audit a lockout");
            }
        }
    }
}
