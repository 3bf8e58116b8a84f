//! The command line's definitions (clap): every flag also comes from a `PAIRGATE_*` environment variable.
//! What each command does is in the modules beside this one.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::store::Location;

#[derive(Debug, Parser)]
#[command(name = "pairgate", version, about = "Durable pairing and session store for OpenClaw-compatible gateways")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway: WebSocket at "/", health at /healthz and /readyz.
    Serve(Box<ServeArgs>),
    /// Schema migrations.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
        #[command(flatten)]
        db: DbArg,
    },
    /// An online, consistent copy of the database (safe while `serve` runs).
    Backup {
        /// The new file to write.
        #[arg(long)]
        to: PathBuf,
        #[command(flatten)]
        db: DbArg,
    },
    /// Replace the database with a backup (refused while a server holds it).
    Restore {
        #[arg(long)]
        from: PathBuf,
        #[command(flatten)]
        db: DbArg,
    },
    /// Every device, grant, token digest, request, session, run and audit row as JSON (no token values).
    Export {
        #[arg(long, value_parser = ["json"], default_value = "json")]
        format: String,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        db: DbArg,
    },
    /// Load state: a pairgate export (`--format json`), or an OpenClaw state directory (`import openclaw`).
    Import(ImportArgs),
    /// Devices and pairing requests, offline on the database file (safe while `serve` runs).
    Devices {
        #[command(subcommand)]
        action: DevicesAction,
        #[command(flatten)]
        db: DbArg,
    },
    /// Device tokens, offline on the database file.
    Tokens {
        #[command(subcommand)]
        action: TokensAction,
        #[command(flatten)]
        db: DbArg,
    },
    /// The gateway token pairgate keeps when serve runs without --token/--password: its hash in the
    /// database, its value in a 0600 file beside it (<db>.gateway-token).
    GatewayToken {
        #[command(subcommand)]
        action: GatewayTokenAction,
        #[command(flatten)]
        db: DbArg,
    },
    /// Sub-agent sessions and runs, offline on the database file.
    Sessions {
        #[command(subcommand)]
        action: SessionsAction,
        #[command(flatten)]
        db: DbArg,
    },
    /// Mint a setup code: a short-lived, single-use credential that pairs the device redeeming it
    /// (`openclaw node run --pair <code>`, or a phone scanning the QR code) with the access it carries.
    /// Prints the code and its QR code; the code is shown this once (only its digest is stored).
    SetupCode {
        /// What the device gets: node (the node role alone), voice (node, operator.read and .talk),
        /// limited (node, and operator without admin) or full (node, and operator with admin).
        #[arg(long, default_value = "node", value_parser = ["full", "limited", "node", "voice", "voice-node"])]
        access: String,
        /// The ws:// or wss:// (or http(s)://) address devices reach the server at.
        #[arg(long, env = "PAIRGATE_PUBLIC_URL")]
        url: Option<String>,
        /// Also make a one-time join URL for `openclaw connect <url>` (node access; TLS or loopback).
        #[arg(long)]
        join: bool,
        /// Leave out the terminal QR code.
        #[arg(long)]
        no_qr: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArg,
    },
    /// Setup codes: list them (never their secret) or revoke an unused one.
    SetupCodes {
        #[command(subcommand)]
        action: SetupCodesAction,
        #[command(flatten)]
        db: DbArg,
    },
    /// The audit trail, newest first.
    Audit {
        /// How many events.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Only this device's events.
        #[arg(long)]
        device: Option<String>,
        /// Only this action (`pairing.approve`), or a family: a prefix ending in a dot (`pairing.`).
        #[arg(long)]
        action: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArg,
    },
}

#[derive(Clone, Args)]
pub struct DbArg {
    /// The database: a SQLite file (or a sqlite: URL), created and migrated when it does not exist; or a
    /// PostgreSQL URL (postgres://user@host/db), its password from PGPASSWORD, PGPASSFILE or ~/.pgpass,
    /// never in the URL a process list shows.
    /// [default: the platform data directory, e.g. ~/.local/share/pairgate/pairgate.db]
    #[arg(long, env = "PAIRGATE_DB", global = true)]
    pub db: Option<PathBuf>,
}

impl DbArg {
    /// What `--db` names: a SQLite file (the default's too) or a database URL. A URL with a password on
    /// the command line is refused: every local user can read a command line (`ps`); the password goes
    /// in `PGPASSWORD`, a password file (`PGPASSFILE`, `~/.pgpass`), or the URL in `PAIRGATE_DB`.
    pub fn location(&self) -> anyhow::Result<Location> {
        let location = match &self.db {
            // A URL is text; a path that is not UTF-8 is a path.
            Some(given) => match given.to_str() {
                Some(text) => Location::parse(text)?,
                None => Location::Sqlite(given.clone()),
            },
            None => Location::Sqlite(default_db_path()?),
        };
        if let (Location::Postgres(url), Some(given)) = (&location, &self.db)
            && url.has_password()
            && std::env::args_os()
                .any(|arg| arg.as_os_str() == given.as_os_str() || arg.to_string_lossy().ends_with(url.expose()))
        {
            anyhow::bail!(
                "--db {url}: a password on the command line can be read by every local user (ps); give it in \
                 PGPASSWORD or a password file (PGPASSFILE, ~/.pgpass), or put the whole URL in PAIRGATE_DB"
            );
        }
        Ok(location)
    }

    /// The SQLite database file; a URL of an engine this pairgate cannot serve is refused.
    pub fn path(&self) -> anyhow::Result<PathBuf> {
        Ok(self.location()?.sqlite_path()?.to_path_buf())
    }
}

/// Shows a database URL's password as `***`.
impl std::fmt::Debug for DbArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = self.db.as_ref().map(|db| match db.to_str().map(Location::parse) {
            Some(Ok(location)) => location.to_string(),
            Some(Err(_)) => crate::store::location::redact_url(&db.to_string_lossy()),
            None => db.display().to_string(),
        });
        f.debug_struct("DbArg").field("db", &shown).finish()
    }
}

/// `<data dir>/pairgate/pairgate.db`.
pub fn default_db_path() -> anyhow::Result<PathBuf> {
    let dirs = directories::ProjectDirs::from("", "", "pairgate")
        .ok_or_else(|| anyhow::anyhow!("no home directory to put the database in; pass --db PATH"))?;
    Ok(dirs.data_dir().join("pairgate.db"))
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub db: DbArg,
    /// Address to listen on (HTTP and WebSocket on one port; OpenClaw's gateway port by default).
    #[arg(long, env = "PAIRGATE_LISTEN", default_value = "127.0.0.1:18789")]
    pub listen: SocketAddr,
    /// Gateway token clients present as `auth.token`. Without it, pairgate generates one on first start
    /// and writes it once to a 0600 file next to the database. Prefer --token-file or the environment:
    /// every local user can read a command line.
    #[arg(long, env = "PAIRGATE_TOKEN", hide_env_values = true, conflicts_with_all = ["password", "password_file", "token_file"])]
    pub token: Option<SecretArg>,
    /// Read the gateway token from this file (its first line).
    #[arg(long, env = "PAIRGATE_TOKEN_FILE", conflicts_with_all = ["password", "password_file"])]
    pub token_file: Option<PathBuf>,
    /// Use password auth (`auth.password`) with this password instead of a token.
    #[arg(long, env = "PAIRGATE_PASSWORD", hide_env_values = true, conflicts_with = "password_file")]
    pub password: Option<SecretArg>,
    /// Read the password of password auth from this file (its first line).
    #[arg(long, env = "PAIRGATE_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// A reverse proxy whose X-Forwarded-For is believed (repeatable; env: comma-separated).
    #[arg(long = "trusted-proxy", env = "PAIRGATE_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<IpAddr>,
    /// The address devices reach this server at (ws://, wss://, or http(s):// behind a TLS proxy), put
    /// in setup codes. Without it, codes are minted only when --listen is a specific LAN address.
    #[arg(long, env = "PAIRGATE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Approve pairing asks from local, non-browser clients without an operator.
    #[arg(long, env = "PAIRGATE_AUTO_APPROVE_LOCAL", default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_approve_local: bool,
    /// Close sockets that have not sent `connect` within this many milliseconds.
    #[arg(long, env = "PAIRGATE_HANDSHAKE_TIMEOUT_MS", default_value_t = 10_000)]
    pub handshake_timeout_ms: u64,
    /// Close connections that have not sent a whole HTTP request head within this many milliseconds.
    #[arg(long, env = "PAIRGATE_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,
    /// Open connections (WebSockets included); connections beyond it are closed at once.
    #[arg(long, env = "PAIRGATE_MAX_CONNECTIONS", default_value_t = crate::server::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Serve /metrics without the bearer token (for a scraper on a trusted network).
    #[arg(long, env = "PAIRGATE_METRICS_OPEN", default_value_t = false, action = clap::ArgAction::Set)]
    pub metrics_open: bool,
    /// How deep sub-agents may nest (1: only children of a main session).
    #[arg(long, env = "PAIRGATE_MAX_SPAWN_DEPTH", default_value_t = 1)]
    pub max_spawn_depth: i64,
    /// Active sub-agent runs one requester session may have.
    #[arg(long, env = "PAIRGATE_MAX_CHILDREN", default_value_t = 5)]
    pub max_children: i64,
    /// Active sub-agent runs in all.
    #[arg(long, env = "PAIRGATE_MAX_CONCURRENT_RUNS", default_value_t = 8)]
    pub max_concurrent_runs: i64,
    /// A sub-agent run registered this many seconds ago that never started is failed (`never-started`),
    /// freeing its spawn slot.
    #[arg(long, env = "PAIRGATE_UNSTARTED_RUN_TIMEOUT_SECS", default_value_t = 300)]
    pub unstarted_run_timeout_secs: u64,
    /// Refuse to start on a database with pending migrations instead of backing up and applying them.
    #[arg(long, env = "PAIRGATE_NO_AUTO_MIGRATE", default_value_t = false)]
    pub no_auto_migrate: bool,
    /// On PostgreSQL, this node's lease: a node that has not renewed it for this long is taken for dead by
    /// the fleet, which ends its sub-agent runs (renewed three times per lease).
    #[arg(long, env = "PAIRGATE_NODE_LEASE_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(300..))]
    pub node_lease_ms: u64,
    /// A backup of this PostgreSQL database exists (pg_dump): starting may then migrate an existing schema.
    /// (SQLite backs its file up itself.)
    #[arg(long, env = "PAIRGATE_BACKUP_EXISTS", default_value_t = false)]
    pub backup_exists: bool,
    /// Interval of `tick` events on connected sockets.
    #[arg(long, env = "PAIRGATE_TICK_INTERVAL_MS", default_value_t = 30_000)]
    pub tick_interval_ms: u64,
    /// The OpenClaw gateway behind pairgate, e.g. ws://127.0.0.1:18790: every connect pairgate allows
    /// gets a session there, and frames are relayed (the front door). Without it, pairgate stands alone.
    #[arg(long, env = "PAIRGATE_UPSTREAM")]
    pub upstream: Option<String>,
    /// The upstream gateway's token. Prefer --upstream-token-file or the environment.
    #[arg(long, env = "PAIRGATE_UPSTREAM_TOKEN", hide_env_values = true, requires = "upstream",
          conflicts_with_all = ["upstream_token_file", "upstream_password", "upstream_password_file"])]
    pub upstream_token: Option<SecretArg>,
    /// Read the upstream gateway's token from this file (its first line).
    #[arg(long, env = "PAIRGATE_UPSTREAM_TOKEN_FILE", requires = "upstream",
          conflicts_with_all = ["upstream_password", "upstream_password_file"])]
    pub upstream_token_file: Option<PathBuf>,
    /// The upstream gateway's password (password auth). Prefer --upstream-password-file.
    #[arg(
        long,
        env = "PAIRGATE_UPSTREAM_PASSWORD",
        hide_env_values = true,
        requires = "upstream",
        conflicts_with = "upstream_password_file"
    )]
    pub upstream_password: Option<SecretArg>,
    /// Read the upstream gateway's password from this file (its first line).
    #[arg(long, env = "PAIRGATE_UPSTREAM_PASSWORD_FILE", requires = "upstream")]
    pub upstream_password_file: Option<PathBuf>,
    /// The key each client device's upstream identity is derived from (32 random bytes, 0600); made on
    /// first start when missing. Never in the database or a backup; a fleet shares the file.
    /// [default: <db>.upstream-key]
    #[arg(long, env = "PAIRGATE_UPSTREAM_KEY_FILE", requires = "upstream")]
    pub upstream_key_file: Option<PathBuf>,
    /// How long an allowed connect may wait for its upstream session, waiting in line included; then it
    /// is refused with a retryable UNAVAILABLE.
    #[arg(long, env = "PAIRGATE_UPSTREAM_TIMEOUT_MS", default_value_t = 30_000)]
    pub upstream_timeout_ms: u64,
    /// Upstream handshakes in flight at most; more connects wait in line (OpenClaw refuses a 33rd).
    #[arg(long, env = "PAIRGATE_UPSTREAM_MAX_HANDSHAKES", default_value_t = 16)]
    pub upstream_max_handshakes: usize,
    /// Device records kept in memory between database commits, for the connect path (0: none).
    #[arg(long, env = "PAIRGATE_DEVICE_CACHE", default_value_t = crate::store::DEVICE_CACHE_CAPACITY)]
    pub device_cache: usize,
}

/// A secret given on the command line or in the environment; `Debug` never shows it.
#[derive(Clone)]
pub struct SecretArg(String);

impl SecretArg {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for SecretArg {
    type Err = std::convert::Infallible;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(SecretArg(text.to_owned()))
    }
}

impl SecretArg {
    /// The secret on the first line of `path` (a trailing newline is not part of it).
    pub fn from_file(path: &std::path::Path) -> anyhow::Result<SecretArg> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let secret = text.lines().next().unwrap_or("").trim_end_matches('\r');
        if secret.trim().is_empty() {
            anyhow::bail!("{} is empty: put the secret on its first line", path.display());
        }
        Ok(SecretArg(secret.to_owned()))
    }
}

impl std::fmt::Debug for SecretArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Subcommand)]
pub enum MigrateAction {
    /// Show the schema version and the applied (with checksums) and pending migrations.
    Status,
    /// Back up, then apply pending migrations (SQLite backs its file up itself; on PostgreSQL, back up
    /// with pg_dump first and say so with --backup-exists).
    Up {
        /// A backup of this PostgreSQL database exists (pg_dump): migrating an existing schema needs it.
        #[arg(long, env = "PAIRGATE_BACKUP_EXISTS", default_value_t = false)]
        backup_exists: bool,
    },
    /// Check migration checksums, `integrity_check` and `foreign_key_check`; fails on any problem.
    Verify,
}

#[derive(Debug, Subcommand)]
pub enum DevicesAction {
    /// List pending pairing requests and paired devices.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Approve a pending pairing request.
    Approve {
        request_id: String,
        /// Approve only these scopes (comma-separated; a subset of what was asked).
        #[arg(long, value_delimiter = ',')]
        scopes: Option<Vec<String>>,
        #[arg(long)]
        json: bool,
    },
    /// Reject a pending pairing request.
    Reject {
        request_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a paired device (its grants go, its tokens are revoked).
    Remove {
        device_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Name a device (1 to 64 characters); the name survives removal and re-pairing.
    Rename {
        device_id: String,
        label: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SetupCodesAction {
    /// Setup codes, newest first, with their state.
    List {
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Revoke an unused setup code by its id.
    Revoke {
        setup_id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ImportArgs {
    #[command(subcommand)]
    pub source: Option<ImportSource>,
    /// The format of a pairgate export.
    #[arg(long, value_parser = ["json"])]
    pub format: Option<String>,
    /// The export to read (standard input when absent).
    #[arg(long)]
    pub from: Option<PathBuf>,
    /// Take the export's gateway token hash instead of keeping this database's own (its token file, if
    /// any, then no longer matches).
    #[arg(long)]
    pub replace_gateway_token: bool,
    #[command(flatten)]
    pub db: DbArg,
}

#[derive(Debug, Subcommand)]
pub enum ImportSource {
    /// Import OpenClaw's pairing state (<= 2026.4 JSON files, 2026.9 SQLite), keeping every approval and
    /// every live token.
    Openclaw {
        /// OpenClaw's state directory (OPENCLAW_STATE_DIR, e.g. ~/.openclaw).
        #[arg(long)]
        state_dir: PathBuf,
        /// Report what would be imported; write nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionsAction {
    /// List sessions (the children of one with --spawned-by).
    List {
        #[arg(long)]
        spawned_by: Option<String>,
        #[arg(long, default_value_t = 200)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// One session with its runs and children.
    Show {
        key: String,
        #[arg(long)]
        json: bool,
    },
    /// Kill a run and every active run below it.
    Kill {
        run_id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum GatewayTokenAction {
    /// Make a new random gateway token: write it to the token file (0600) and store its hash. The old
    /// token stops working when serve next starts.
    New {
        /// Also print the new token on standard output (the message goes to standard error).
        #[arg(long)]
        show: bool,
    },
    /// Set the gateway token to a value of your own, read from a file (its first line) or from standard
    /// input; it is written to the token file (0600) and its hash stored. Never on the command line.
    Set {
        /// The file to read the token from; `-` for standard input.
        #[arg(long, value_name = "FILE")]
        from_file: PathBuf,
    },
    /// Say whether the token file holds the database's gateway token; exits 1 when it does not.
    Check,
}

#[derive(Debug, Subcommand)]
pub enum TokensAction {
    /// Revoke a device's token for a role; the device gets a new one on its next connect.
    Rotate {
        #[arg(long)]
        device: String,
        #[arg(long)]
        role: String,
        /// Narrow the role's scopes (comma-separated subset of what is approved).
        #[arg(long, value_delimiter = ',')]
        scopes: Option<Vec<String>>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a device's live token for a role.
    Revoke {
        #[arg(long)]
        device: String,
        #[arg(long)]
        role: String,
        #[arg(long)]
        json: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug_output() {
        let cli = Cli::parse_from(["pairgate", "serve", "--token", "hunter2-token", "--db", "/tmp/x.db"]);
        let shown = format!("{cli:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let Command::Serve(args) = cli.command else { panic!("serve") };
        assert_eq!(args.token.unwrap().expose(), "hunter2-token");
        for db in ["postgres://pairgate:hunter3@db/pairgate", "mysql://root:hunter3@db/x"] {
            let cli = Cli::parse_from(["pairgate", "devices", "list", "--db", db]);
            let shown = format!("{cli:?}");
            assert!(!shown.contains("hunter3") && shown.contains("***"), "{shown}");
        }
    }
}
