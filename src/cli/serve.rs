//! `pairgate serve`: open (create, migrate) the database, take the single-server lock, prepare the
//! gateway secret, and serve until SIGINT/SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::args::{SecretArg, ServeArgs};
use super::lock::ServerLock;
use crate::app::setup::SetupConfig;
use crate::auth::policy::PolicyConfig;
use crate::auth::secrets::{SecretKind, SharedSecret};
use crate::clock::{SharedClock, SystemClock};
use crate::server::{self, Config, Server};
use crate::store::{Location, MigratePolicy, SpawnLimits, Store};

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Registered before anything is served: a server that could not hear SIGTERM must not start.
    let signals = Signals::register()?;
    // Secrets first: a file that cannot be read stops the start before the database is touched.
    let configured = configured_secret(&args)?;
    let location = args.db.location()?;
    // One serve per SQLite file; a PostgreSQL database is served by as many nodes as the operator runs.
    let _lock = match &location {
        Location::Sqlite(path) => Some(ServerLock::acquire(path)?),
        Location::Postgres(url) => {
            if configured.is_none() {
                anyhow::bail!(
                    "{url}: on PostgreSQL every node takes the gateway token from --token-file FILE (the same \
                     file on every node) or PAIRGATE_TOKEN; pairgate keeps no token file beside a database URL"
                );
            }
            if args.upstream.is_some() && args.upstream_key_file.is_none() {
                anyhow::bail!(
                    "{url}: on PostgreSQL the front door's master key is shared by every node: pass \
                     --upstream-key-file FILE (the same file on every node)"
                );
            }
            None
        }
    };
    let policy = if args.no_auto_migrate {
        MigratePolicy::Refuse
    } else {
        MigratePolicy::Apply { backup_exists: args.backup_exists }
    };
    let (store, report) = Store::open(&location, policy).await?;
    store.set_device_cache_capacity(args.device_cache);
    if let Some(backup) = &report.backup {
        tracing::info!(backup = %backup.display(), "migrated; the database before migrating is kept in the backup");
    }
    tracing::info!(
        db = %store.shown(),
        created = report.created,
        schema_version = report.schema_version,
        applied = ?report.applied_migrations,
        engine = %report.engine,
        "database ready"
    );
    let clock: SharedClock = Arc::new(SystemClock);
    let secret = match (configured, store.sqlite_path()) {
        (Some(secret), _) => secret,
        (None, Some(db_path)) => super::gateway_token::load_or_create(&store, db_path, clock.now_ms()).await?,
        (None, None) => unreachable!("a PostgreSQL store is refused above without a configured secret"),
    };
    let config = Config {
        policy: PolicyConfig { auto_approve_local: args.auto_approve_local },
        trusted_proxies: args.trusted_proxies.clone(),
        handshake_timeout: Duration::from_millis(args.handshake_timeout_ms),
        tick_interval: Duration::from_millis(args.tick_interval_ms.max(1)),
        metrics_open: args.metrics_open,
        header_read_timeout: Duration::from_millis(args.header_read_timeout_ms.max(1)),
        max_connections: args.max_connections.max(1),
        spawn_limits: SpawnLimits {
            max_depth: args.max_spawn_depth,
            max_children_per_requester: args.max_children,
            max_concurrent_runs: args.max_concurrent_runs,
        },
        unstarted_run_ttl: Duration::from_secs(args.unstarted_run_timeout_secs),
        node_lease: Duration::from_millis(args.node_lease_ms),
        upstream: upstream_config(&args, store.sqlite_path())?,
        setup: SetupConfig { public_url: public_url(&args)?, listen: Some(args.listen), ..SetupConfig::default() },
        ..Config::default()
    };
    if let Some(upstream) = &config.upstream {
        tracing::info!(upstream = %upstream.url, "front door: every connect pairgate allows gets a session on this gateway");
    }
    let server = Server::new(store, clock, Arc::new(secret), config);

    let listener =
        TcpListener::bind(args.listen).await.map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    let local_addr = listener.local_addr()?;
    tracing::info!(%local_addr, "listening");
    // One plain line on stdout, for scripts and tests that start pairgate on port 0. Not println!, which
    // panics when nobody reads stdout: a server never stops for its output.
    {
        use std::io::Write;
        let mut stdout = std::io::stdout();
        let _ =
            writeln!(stdout, "pairgate listening on {local_addr} (ws://{local_addr}/)").and_then(|()| stdout.flush());
    }

    let shutdown = server.app.shutdown.clone();
    server.app.tracker.spawn(async move {
        tokio::select! {
            _ = signals.received() => {
                tracing::info!("shutting down: closing sockets with 1001");
                shutdown.cancel();
            }
            _ = shutdown.cancelled() => {}
        }
    });
    server::run(listener, server).await?;
    tracing::info!("stopped");
    Ok(())
}

/// The gateway secret given by flag, file or environment; `None` when pairgate is to make its own.
fn configured_secret(args: &ServeArgs) -> anyhow::Result<Option<SharedSecret>> {
    let token = match &args.token_file {
        Some(path) => Some(SecretArg::from_file(path)?),
        None => args.token.clone(),
    };
    let password = match &args.password_file {
        Some(path) => Some(SecretArg::from_file(path)?),
        None => args.password.clone(),
    };
    Ok(match (token, password) {
        (Some(token), _) => Some(SharedSecret::from_plaintext(SecretKind::Token, token.expose())),
        (None, Some(password)) => Some(SharedSecret::from_plaintext(SecretKind::Password, password.expose())),
        (None, None) => None,
    })
}

/// The gateway behind pairgate, with its secret from a flag, a file or the environment.
/// `--public-url`, checked now rather than at the first mint.
fn public_url(args: &ServeArgs) -> anyhow::Result<Option<String>> {
    let Some(url) = &args.public_url else { return Ok(None) };
    crate::domain::setup::GatewayUrl::parse(url).map_err(|error| anyhow::anyhow!("--public-url: {error}"))?;
    Ok(Some(url.clone()))
}

fn upstream_config(
    args: &ServeArgs,
    db_path: Option<&std::path::Path>,
) -> anyhow::Result<Option<crate::gateway::upstream::UpstreamConfig>> {
    use crate::gateway::upstream::{UpstreamConfig, UpstreamSecret};
    let Some(url) = &args.upstream else { return Ok(None) };
    // The gateway listens on loopback beside pairgate: plain ws:// with a port (no TLS is built in).
    let authority = url.strip_prefix("ws://").map(|rest| rest.split('/').next().unwrap_or_default());
    let with_port =
        authority.and_then(|authority| authority.rsplit_once(':')).is_some_and(|(_, port)| port.parse::<u16>().is_ok());
    if !with_port {
        anyhow::bail!("--upstream {url}: give the gateway's WebSocket URL with its port, e.g. ws://127.0.0.1:18790");
    }
    let read = |flag: &Option<SecretArg>, file: &Option<std::path::PathBuf>| -> anyhow::Result<Option<String>> {
        Ok(match file {
            Some(path) => Some(SecretArg::from_file(path)?.expose().to_owned()),
            None => flag.as_ref().map(|secret| secret.expose().to_owned()),
        })
    };
    let secret = match (
        read(&args.upstream_token, &args.upstream_token_file)?,
        read(&args.upstream_password, &args.upstream_password_file)?,
    ) {
        (Some(token), _) => UpstreamSecret::Token(token),
        (None, Some(password)) => UpstreamSecret::Password(password),
        (None, None) => anyhow::bail!(
            "--upstream needs the gateway's secret: --upstream-token-file, --upstream-password-file, or their \
             environment variables"
        ),
    };
    let key_file = match (&args.upstream_key_file, db_path) {
        (Some(path), _) => path.clone(),
        (None, Some(db_path)) => crate::store::sibling_path(db_path, ".upstream-key"),
        (None, None) => anyhow::bail!("--upstream needs --upstream-key-file FILE here (no file beside a database URL)"),
    };
    Ok(Some(UpstreamConfig {
        url: url.clone(),
        secret,
        master_key: master_key(&key_file)?,
        max_handshakes: args.upstream_max_handshakes.max(1),
        handshake_timeout: Duration::from_millis(args.upstream_timeout_ms.max(1)),
    }))
}

/// The upstream master key from its file, made (32 random bytes, `0600`) when the file does not exist. The
/// file is never read or written through a link, and a file others can read is refused.
fn master_key(path: &std::path::Path) -> anyhow::Result<crate::gateway::upstream::MasterKey> {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use std::io::{Read, Write};
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let shown = path.display();
    let read = || -> std::io::Result<(String, u32)> {
        let mut file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path)?;
        let mode = file.metadata()?.permissions().mode();
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        Ok((text, mode))
    };
    match read() {
        Ok((text, mode)) => {
            if mode & 0o077 != 0 {
                anyhow::bail!("{shown} holds the upstream master key but others may read it: chmod 600 {shown}");
            }
            let bytes = URL_SAFE_NO_PAD.decode(text.trim()).ok().and_then(|bytes| <[u8; 32]>::try_from(bytes).ok());
            let bytes =
                bytes.ok_or_else(|| anyhow::anyhow!("{shown} is not an upstream master key (32 bytes, base64url)"))?;
            Ok(crate::gateway::upstream::MasterKey::from_bytes(bytes))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let bytes: [u8; 32] = rand::random();
            // Written whole under a private random name, then linked into place (never over a file): a fleet
            // node starting at the same moment either wins the link or reads the winner's whole key.
            let dir = path.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
            let mut staged = tempfile::Builder::new().prefix(".upstream-key.").tempfile_in(dir)?;
            writeln!(staged, "{}", URL_SAFE_NO_PAD.encode(bytes))?;
            staged.as_file().sync_all()?;
            match std::fs::hard_link(staged.path(), path) {
                Ok(()) => std::fs::File::open(dir)?.sync_all()?,
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => return master_key(path),
                Err(error) => anyhow::bail!("cannot create {shown}: {error}"),
            }
            tracing::info!(key_file = %shown, "made the upstream master key; keep it with the gateway token, out of backups");
            Ok(crate::gateway::upstream::MasterKey::from_bytes(bytes))
        }
        Err(error) => anyhow::bail!("cannot read {shown}: {error}"),
    }
}

/// SIGINT and SIGTERM, listened for from the moment they are registered.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    fn register() -> anyhow::Result<Signals> {
        let listen = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|e| anyhow::anyhow!("cannot listen for {name}, so could not stop cleanly: {e}"))
        };
        Ok(Signals {
            interrupt: listen(SignalKind::interrupt(), "SIGINT")?,
            terminate: listen(SignalKind::terminate(), "SIGTERM")?,
        })
    }

    async fn received(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
