//! The command line: every flag also comes from a `PAIRGATE_*` environment variable.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::clock::{Clock, SystemClock};
use crate::domain::{DeviceId, Role, ScopeSet};
use crate::store::{Actor, Store};

#[derive(Debug, Parser)]
#[command(name = "pairgate", version, about = "Durable pairing and session store for OpenClaw-compatible gateways")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway: WebSocket at "/", health at /healthz and /readyz.
    Serve(ServeArgs),
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
    /// Sub-agent sessions and runs, offline on the database file.
    Sessions {
        #[command(subcommand)]
        action: SessionsAction,
        #[command(flatten)]
        db: DbArg,
    },
    /// The audit trail, newest first.
    Audit {
        /// How many events.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArg,
    },
}

#[derive(Debug, Clone, Args)]
pub struct DbArg {
    /// The database file; created and migrated when it does not exist.
    /// [default: the platform data directory, e.g. ~/.local/share/pairgate/pairgate.db]
    #[arg(long, env = "PAIRGATE_DB", global = true)]
    pub db: Option<PathBuf>,
}

impl DbArg {
    pub fn path(&self) -> anyhow::Result<PathBuf> {
        match &self.db {
            Some(path) => Ok(path.clone()),
            None => default_db_path(),
        }
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
    /// and writes it once to a 0600 file next to the database.
    #[arg(long, env = "PAIRGATE_TOKEN", hide_env_values = true, conflicts_with = "password")]
    pub token: Option<SecretArg>,
    /// Use password auth (`auth.password`) with this password instead of a token.
    #[arg(long, env = "PAIRGATE_PASSWORD", hide_env_values = true)]
    pub password: Option<SecretArg>,
    /// A reverse proxy whose X-Forwarded-For is believed (repeatable; env: comma-separated).
    #[arg(long = "trusted-proxy", env = "PAIRGATE_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<IpAddr>,
    /// Approve pairing asks from local, non-browser clients without an operator.
    #[arg(long, env = "PAIRGATE_AUTO_APPROVE_LOCAL", default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_approve_local: bool,
    /// Close sockets that have not sent `connect` within this many milliseconds.
    #[arg(long, env = "PAIRGATE_HANDSHAKE_TIMEOUT_MS", default_value_t = 10_000)]
    pub handshake_timeout_ms: u64,
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
    /// Refuse to start on a database with pending migrations instead of backing up and applying them.
    #[arg(long, env = "PAIRGATE_NO_AUTO_MIGRATE", default_value_t = false)]
    pub no_auto_migrate: bool,
    /// Interval of `tick` events on connected sockets.
    #[arg(long, env = "PAIRGATE_TICK_INTERVAL_MS", default_value_t = 30_000)]
    pub tick_interval_ms: u64,
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

impl std::fmt::Debug for SecretArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Subcommand)]
pub enum MigrateAction {
    /// Show the schema version and the applied (with checksums) and pending migrations.
    Status,
    /// Back up, then apply pending migrations.
    Up,
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

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => crate::server::serve(args).await,
        Command::Migrate { action, db } => migrate(action, &db).await,
        Command::Backup { to, db } => backup(&to, &db).await,
        Command::Export { format: _, out, db } => export(out.as_deref(), &db).await,
        Command::Import(args) => import(args).await,
        Command::Restore { from, db } => restore(&from, &db).await,
        Command::Devices { action, db } => devices(action, &db).await,
        Command::Tokens { action, db } => tokens(action, &db).await,
        Command::Sessions { action, db } => sessions(action, &db).await,
        Command::Audit { limit, json, db } => audit(limit, json, &db).await,
    }
}

async fn open(db: &DbArg) -> anyhow::Result<Store> {
    let path = db.path()?;
    let (store, report) = Store::open(&path).await?;
    if report.created {
        eprintln!("created database {}", path.display());
    }
    Ok(store)
}

async fn migrate(action: MigrateAction, db: &DbArg) -> anyhow::Result<()> {
    let path = db.path()?;
    let (store, report) = Store::open(&path).await?;
    let result = match action {
        MigrateAction::Up => {
            match (&report.applied_migrations[..], &report.backup) {
                ([], _) => println!(
                    "{}: schema version {} is current; nothing to apply",
                    path.display(),
                    report.schema_version
                ),
                (applied, Some(backup)) => println!(
                    "{}: backed up to {}; applied migrations {applied:?}; schema version {}",
                    path.display(),
                    backup.display(),
                    report.schema_version
                ),
                (applied, None) => {
                    println!(
                        "{}: applied migrations {applied:?}; schema version {}",
                        path.display(),
                        report.schema_version
                    )
                }
            }
            Ok(())
        }
        MigrateAction::Status => {
            println!("database: {}", path.display());
            println!("sqlite: {}", report.sqlite_version);
            println!(
                "schema version: {} (this pairgate knows up to {})",
                report.schema_version,
                crate::store::latest_known_version()
            );
            let applied = store.migration_status().await?;
            for migration in crate::store::MIGRATOR.iter() {
                let state = match applied.iter().find(|a| a.version == migration.version) {
                    Some(a) if a.checksum_matches => format!("applied  checksum {}", &a.checksum[..16]),
                    Some(a) => format!("applied  CHECKSUM MISMATCH {}", &a.checksum[..16]),
                    None => "pending".to_owned(),
                };
                println!("  {:04} {:<40} {state}", migration.version, migration.description);
            }
            Ok(())
        }
        MigrateAction::Verify => {
            let mut problems: Vec<String> = store
                .migration_status()
                .await?
                .into_iter()
                .filter(|m| !m.checksum_matches || !m.success)
                .map(|m| {
                    format!("migration {:04} {}: checksum does not match this pairgate's", m.version, m.description)
                })
                .collect();
            problems.extend(store.verify().await?);
            if problems.is_empty() {
                println!("{}: ok (checksums, integrity_check, foreign_key_check)", path.display());
                Ok(())
            } else {
                for problem in &problems {
                    println!("{problem}");
                }
                Err(anyhow::anyhow!("{}: {} problem(s) found", path.display(), problems.len()))
            }
        }
    };
    store.close().await;
    result
}

async fn backup(to: &std::path::Path, db: &DbArg) -> anyhow::Result<()> {
    let store = open(db).await?;
    let result = store.backup_to(to).await;
    store.close().await;
    result?;
    println!("backed up {} to {}", db.path()?.display(), to.display());
    Ok(())
}

/// Replaces the database with a backup: refused while a server holds the lock; the current database is
/// itself kept first, so a restore can be undone.
async fn restore(from: &std::path::Path, db: &DbArg) -> anyhow::Result<()> {
    let path = db.path()?;
    let _lock = crate::lock::ServerLock::acquire(&path).map_err(|e| anyhow::anyhow!("cannot restore: {e}"))?;
    // The backup must be a sound pairgate database this binary can open: check a scratch copy of it.
    let scratch = tempfile::Builder::new().prefix("pairgate-restore-").tempdir()?;
    let probe = scratch.path().join("probe.db");
    std::fs::copy(from, &probe).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", from.display()))?;
    let (store, _) =
        Store::open(&probe).await.map_err(|e| anyhow::anyhow!("{} is not a usable backup: {e}", from.display()))?;
    let problems = store.verify().await?;
    store.close().await;
    if !problems.is_empty() {
        anyhow::bail!("{} is damaged: {}", from.display(), problems.join("; "));
    }
    let mut kept = None;
    if path.exists() {
        let (current, _) = Store::open(&path).await?;
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".before-restore-{}.db", SystemClock.now_ms()));
        let target = PathBuf::from(name);
        current.backup_to(&target).await?;
        current.close().await;
        kept = Some(target);
    }
    let staged = path.with_extension("restoring");
    std::fs::copy(&probe, &staged)?;
    for suffix in ["-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(name));
    }
    std::fs::rename(&staged, &path)?;
    println!("restored {} from {}", path.display(), from.display());
    if let Some(kept) = kept {
        println!("the database it replaced is kept in {}", kept.display());
    }
    Ok(())
}

async fn devices(action: DevicesAction, db: &DbArg) -> anyhow::Result<()> {
    let store = open(db).await?;
    let now = SystemClock.now_ms();
    let actor = Actor::local_cli();
    let result = match action {
        DevicesAction::List { json } => {
            let pending = store.pending_requests(now).await?;
            let paired = store.paired_devices().await?;
            if json {
                let value = serde_json::json!({
                    "pending": pending.iter().map(crate::gateway::methods::request_view).collect::<Vec<_>>(),
                    "paired": paired.iter().map(|d| crate::gateway::methods::device_view(d, false)).collect::<Vec<_>>(),
                });
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                println!("Pending ({}):", pending.len());
                for request in &pending {
                    println!(
                        "  {}  device {}…  {} {}  [{}]  from {}",
                        request.request_id,
                        &request.device_id.as_str()[..12],
                        request.reason.as_str(),
                        request.role,
                        request.scopes.names().join(","),
                        request.remote_ip.as_deref().unwrap_or("?")
                    );
                }
                println!("Paired ({}):", paired.len());
                for device in &paired {
                    let grants: Vec<String> =
                        device.grants.iter().map(|g| format!("{}[{}]", g.role, g.scopes.names().join(","))).collect();
                    println!(
                        "  {}  {}  {}",
                        device.device_id,
                        device.meta.client_id.as_deref().unwrap_or("-"),
                        grants.join(" ")
                    );
                }
            }
            Ok(())
        }
        DevicesAction::Approve { request_id, scopes, json } => {
            let narrower = scopes.map(|names| ScopeSet::parse(&names)).transpose()?;
            let request = store.approve_request(&request_id, narrower.as_ref(), &actor, now).await?;
            report_decision(json, "approved", &request)
        }
        DevicesAction::Reject { request_id, json } => {
            let request = store.reject_request(&request_id, &actor, now).await?;
            report_decision(json, "rejected", &request)
        }
        DevicesAction::Remove { device_id, json } => {
            let id = parse_device_id(&device_id)?;
            store.remove_device(&id, &actor, None, now).await?;
            print_result(json, serde_json::json!({ "deviceId": id }), &format!("removed device {id}"));
            Ok(())
        }
    };
    store.close().await;
    result
}

fn parse_device_id(text: &str) -> anyhow::Result<DeviceId> {
    DeviceId::try_from(text.to_owned()).map_err(|e| anyhow::anyhow!("{text}: {e}"))
}

fn parse_role(text: &str) -> anyhow::Result<Role> {
    Role::parse(text).ok_or_else(|| anyhow::anyhow!("unknown role {text}: operator or node"))
}

fn print_result(json: bool, value: serde_json::Value, human: &str) {
    if json {
        println!("{value}");
    } else {
        println!("{human}");
    }
}

async fn tokens(action: TokensAction, db: &DbArg) -> anyhow::Result<()> {
    let store = open(db).await?;
    let now = SystemClock.now_ms();
    let actor = Actor::local_cli();
    let result = match action {
        TokensAction::Rotate { device, role, scopes, json } => {
            let (id, role) = (parse_device_id(&device)?, parse_role(&role)?);
            let narrower = scopes.map(|names| ScopeSet::parse(&names)).transpose()?;
            let change = store.rotate_token(&id, role, narrower.as_ref(), &actor, None, now).await?;
            let value = serde_json::json!({
                "deviceId": id, "role": role, "scopes": change.scopes.names(), "rotatedAtMs": change.at_ms,
                "tokenDelivery": "withheld-cross-device",
            });
            print_result(
                json,
                value,
                &format!("rotated the {role} token of {id}; the device gets a new one on its next connect"),
            );
            Ok(())
        }
        TokensAction::Revoke { device, role, json } => {
            let (id, role) = (parse_device_id(&device)?, parse_role(&role)?);
            let change = store.revoke_token(&id, role, &actor, None, now).await?;
            let value = serde_json::json!({ "deviceId": id, "role": role, "revokedAtMs": change.at_ms });
            print_result(json, value, &format!("revoked the {role} token of {id}"));
            Ok(())
        }
    };
    store.close().await;
    result
}

async fn audit(limit: i64, json: bool, db: &DbArg) -> anyhow::Result<()> {
    let store = open(db).await?;
    let rows = store.audit_page(None, limit.clamp(1, 10_000)).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        for row in rows {
            let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(row.at_ms) * 1_000_000)
                .ok()
                .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
                .unwrap_or_else(|| row.at_ms.to_string());
            println!(
                "{at}  {:<22} {:<40} {:<16} {}  {}",
                row.action,
                row.actor,
                row.remote_addr.as_deref().unwrap_or("-"),
                row.subject.as_deref().unwrap_or("-"),
                row.details
            );
        }
    }
    store.close().await;
    Ok(())
}

fn report_decision(json: bool, decision: &str, request: &crate::store::PairingRequest) -> anyhow::Result<()> {
    if json {
        println!(
            "{}",
            serde_json::json!({ "requestId": request.request_id, "deviceId": request.device_id, "decision": decision })
        );
    } else {
        println!("{decision} pairing request {} (device {})", request.request_id, request.device_id);
    }
    Ok(())
}

async fn sessions(action: SessionsAction, db: &DbArg) -> anyhow::Result<()> {
    let store = open(db).await?;
    let result = match action {
        SessionsAction::List { spawned_by, limit, json } => {
            let entries = store.sessions_page(spawned_by.as_deref(), None, limit.clamp(1, 10_000)).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
            } else {
                for entry in &entries {
                    println!(
                        "{:<60} depth {}  parent {}{}",
                        entry.key,
                        entry.spawn_depth,
                        entry.spawned_by.as_deref().unwrap_or("-"),
                        if entry.archived_at.is_some() { "  (archived)" } else { "" }
                    );
                }
            }
            Ok(())
        }
        SessionsAction::Show { key, json } => {
            let entry = store.session(&key).await?.ok_or_else(|| anyhow::anyhow!("no session {key}"))?;
            let runs = store.runs_page(None, Some(&key), None, 1000).await?;
            let children = store.sessions_page(Some(&key), None, 1000).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({ "entry": entry, "runs": runs, "children": children })
                    )?
                );
            } else {
                println!(
                    "{}  agent {}  depth {}  parent {}",
                    entry.key,
                    entry.agent_id,
                    entry.spawn_depth,
                    entry.spawned_by.as_deref().unwrap_or("-")
                );
                for run in &runs {
                    println!(
                        "  run {}  {:<11} {}  {}",
                        run.run_id,
                        run.state.as_str(),
                        run.ended_reason.as_deref().unwrap_or("-"),
                        run.task
                    );
                }
                for child in &children {
                    println!("  child {}", child.key);
                }
            }
            Ok(())
        }
        SessionsAction::Kill { run_id, json } => {
            let killed = store.kill_run(&run_id, &Actor::local_cli(), SystemClock.now_ms()).await?;
            let ids: Vec<&str> = killed.iter().map(|run| run.run_id.as_str()).collect();
            print_result(
                json,
                serde_json::json!({ "runId": run_id, "killed": ids }),
                &format!("killed {}", ids.join(", ")),
            );
            Ok(())
        }
    };
    store.close().await;
    result
}

async fn export(out: Option<&std::path::Path>, db: &DbArg) -> anyhow::Result<()> {
    let store = open(db).await?;
    let export = store.export_json(SystemClock.now_ms()).await;
    store.close().await;
    let text = serde_json::to_string_pretty(&export?)?;
    match out {
        Some(path) => {
            std::fs::write(path, text + "\n").map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?
        }
        None => println!("{text}"),
    }
    Ok(())
}

async fn import(args: ImportArgs) -> anyhow::Result<()> {
    match args.source {
        Some(ImportSource::Openclaw { state_dir, dry_run, json }) => {
            crate::migrate::openclaw::run(&state_dir, &args.db, dry_run, json).await
        }
        None => {
            if args.format.as_deref() != Some("json") {
                anyhow::bail!(
                    "say what to import: `pairgate import --format json [--from FILE]` or `pairgate import openclaw --state-dir DIR`"
                );
            }
            let text = match &args.from {
                Some(path) => {
                    std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?
                }
                None => std::io::read_to_string(std::io::stdin())?,
            };
            let export: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("not JSON: {e}"))?;
            let store = open(&args.db).await?;
            let counts = store.import_json(&export).await;
            store.close().await;
            for (table, count) in counts? {
                println!("{table}: {count}");
            }
            Ok(())
        }
    }
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
    }
}
