//! Assembly: one axum Router (WebSocket at "/", HTTP beside it) served until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::gateway::{self, Gateway};
use crate::store::MigratePolicy;

/// Request bodies of the HTTP endpoints; WebSocket frames have their own limit.
const MAX_HTTP_BODY_BYTES: usize = 1024 * 1024;
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/", get(gateway::ws_handler))
        .merge(crate::admin::router())
        .layer(TraceLayer::new_for_http())
        .layer(RequestBodyLimitLayer::new(MAX_HTTP_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(axum::http::StatusCode::REQUEST_TIMEOUT, HTTP_TIMEOUT))
        .with_state(gateway)
}

/// Serves until `gateway.shutdown` is cancelled, then closes every WebSocket with 1001 and waits for
/// their tasks (axum does not track upgraded connections; the gateway's tracker does).
pub async fn run(listener: TcpListener, gateway: Arc<Gateway>) -> std::io::Result<()> {
    let shutdown: CancellationToken = gateway.shutdown.clone();
    // Runs a crash left running are ended before anyone can wait on them.
    gateway.recover_runs().await.map_err(std::io::Error::other)?;
    gateway.tracker.spawn(sweep(gateway.clone()));
    let app = router(gateway.clone()).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await?;
    gateway.tracker.close();
    gateway.tracker.wait().await;
    gateway.store.close().await;
    Ok(())
}

/// How often pending pairing requests past their 5 minutes are expired (and announced), and the sessions
/// of ended `cleanup: delete` runs are archived.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

async fn sweep(gateway: Arc<Gateway>) {
    let mut ticker = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                gateway.sweep_expired().await;
                if let Err(error) = gateway.store.archive_due_sessions(gateway.clock.now_ms()).await {
                    tracing::warn!(%error, "could not archive sessions");
                }
            }
            _ = gateway.shutdown.cancelled() => return,
        }
    }
}

/// `pairgate serve`: open (create, migrate) the database, take the single-server lock, prepare the
/// gateway secret, and serve until SIGINT/SIGTERM.
pub async fn serve(args: crate::cli::ServeArgs) -> anyhow::Result<()> {
    use crate::auth::secrets::{SecretKind, SharedSecret};
    use crate::clock::{SharedClock, SystemClock};
    use crate::gateway::GatewayConfig;

    let db_path = args.db.path()?;
    let _lock = crate::lock::ServerLock::acquire(&db_path)?;
    let policy = if args.no_auto_migrate { MigratePolicy::Refuse } else { MigratePolicy::Apply };
    let (store, report) = crate::store::Store::open_with(&db_path, policy, &crate::store::MIGRATOR).await?;
    store.set_device_cache_capacity(args.device_cache);
    if let Some(backup) = &report.backup {
        tracing::info!(backup = %backup.display(), "migrated; the database before migrating is kept in the backup");
    }
    tracing::info!(
        db = %db_path.display(),
        created = report.created,
        schema_version = report.schema_version,
        applied = ?report.applied_migrations,
        sqlite = %report.sqlite_version,
        "database ready"
    );
    let clock: SharedClock = Arc::new(SystemClock);
    let secret = match (&args.token, &args.password) {
        (Some(token), _) => SharedSecret::from_plaintext(SecretKind::Token, token.expose()),
        (None, Some(password)) => SharedSecret::from_plaintext(SecretKind::Password, password.expose()),
        (None, None) => generated_token::load_or_create(&store, &db_path, clock.now_ms()).await?,
    };
    let config = GatewayConfig {
        policy: crate::auth::policy::PolicyConfig { auto_approve_local: args.auto_approve_local },
        trusted_proxies: args.trusted_proxies.clone(),
        handshake_timeout: Duration::from_millis(args.handshake_timeout_ms),
        tick_interval: Duration::from_millis(args.tick_interval_ms.max(1)),
        metrics_open: args.metrics_open,
        spawn_limits: crate::store::SpawnLimits {
            max_depth: args.max_spawn_depth,
            max_children_per_requester: args.max_children,
            max_concurrent_runs: args.max_concurrent_runs,
        },
        ..GatewayConfig::default()
    };
    let shutdown = CancellationToken::new();
    let gateway = Arc::new(Gateway::new(store, clock, Arc::new(secret), config, shutdown.clone()));

    let listener =
        TcpListener::bind(args.listen).await.map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    let local_addr = listener.local_addr()?;
    tracing::info!(%local_addr, "listening");
    // One plain line on stdout, for scripts and tests that start pairgate on port 0.
    println!("pairgate listening on {local_addr} (ws://{local_addr}/)");

    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: closing sockets with 1001");
        shutdown.cancel();
    });
    run(listener, gateway).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

/// The gateway token pairgate makes when none is configured.
mod generated_token {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    use std::path::{Path, PathBuf};

    use crate::auth::secrets::{SecretKind, SharedSecret, hash_secret};
    use crate::clock::Millis;
    use crate::domain::TokenSecret;
    use crate::store::{Actor, Store};

    pub fn token_file(db_path: &Path) -> PathBuf {
        let mut name = db_path.as_os_str().to_owned();
        name.push(".gateway-token");
        PathBuf::from(name)
    }

    /// Loads the stored hash, or generates a token, writes it once to a 0600 file and stores its hash.
    pub async fn load_or_create(store: &Store, db_path: &Path, now_ms: Millis) -> anyhow::Result<SharedSecret> {
        let file = token_file(db_path);
        if let Some(phc) = store.gateway_token_hash().await? {
            tracing::info!(token_file = %file.display(), "gateway token: generated earlier; its value is in the token file");
            return SharedSecret::from_argon2(SecretKind::Token, phc).map_err(anyhow::Error::msg);
        }
        let token = TokenSecret::generate();
        // The file first: a crash between the two steps leaves a file that the next start replaces,
        // never a stored hash whose token nobody has.
        write_private(&file, token.expose())?;
        let phc = tokio::task::spawn_blocking({
            let token = token.clone();
            move || hash_secret(token.expose())
        })
        .await?;
        if !store.init_gateway_token_hash(&phc, &Actor::System, now_ms).await? {
            anyhow::bail!("another process initialized the gateway token at the same time; start again");
        }
        tracing::info!(token_file = %file.display(), "gateway token generated; clients use the value in the token file");
        SharedSecret::from_argon2(SecretKind::Token, phc).map_err(anyhow::Error::msg)
    }

    fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        writeln!(file, "{contents}")?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}
