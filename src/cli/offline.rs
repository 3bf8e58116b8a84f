//! Operator commands on the database file, safe while `serve` runs: devices, tokens, sessions, the audit
//! trail, export and import. Decisions go through the application layer, as they do over WebSocket and
//! REST; a running server sees them on its next read.

use std::path::Path;

use super::args::{DbArg, DevicesAction, ImportArgs, ImportSource, SessionsAction, SetupCodesAction, TokensAction};
use super::shown;
use crate::app::setup::MintRequest;
use crate::app::views::{DeviceRenamed, DeviceView, RequestView, SetupCodeView};
use crate::app::{App, Caller};
use crate::clock::{Clock, SystemClock};
use crate::domain::{DeviceId, Role, ScopeSet, SetupAccess};
use crate::importer::openclaw;
use crate::store::{Location, MigratePolicy, Store};

/// For a command that changes the database: it must exist (only `serve`, `migrate up` and the importers
/// create one); pending migrations are applied, after a backup (on PostgreSQL, one the operator took:
/// such a database is migrated by `migrate up --backup-exists`, not here).
pub(super) async fn open(db: &DbArg) -> anyhow::Result<Store> {
    let location = db.location()?;
    match &location {
        Location::Sqlite(path) if !path.exists() => {
            return Err(crate::store::sqlite::OpenError::Missing { path: path.clone() }.into());
        }
        Location::Sqlite(_) => {}
        // A read-only look first: a database with no pairgate schema is refused, not given one.
        Location::Postgres(_) => Store::open_read_only(&location, true).await?.0.close().await,
    }
    Ok(Store::open(&location, MigratePolicy::Apply { backup_exists: false }).await?.0)
}

/// For a command that only reads: the database is opened read-only, never created nor migrated.
pub(super) async fn open_for_reading(db: &DbArg) -> anyhow::Result<Store> {
    Ok(Store::open_read_only(&db.location()?, false).await?.0)
}

/// For an importer: the database is created when missing.
async fn open_or_create(db: &DbArg) -> anyhow::Result<Store> {
    let (store, report) = Store::open(&db.location()?, MigratePolicy::Apply { backup_exists: false }).await?;
    if report.created {
        eprintln!("created database {}", store.shown());
    }
    Ok(store)
}

pub(super) async fn devices(action: DevicesAction, db: &DbArg) -> anyhow::Result<()> {
    if let DevicesAction::List { json } = action {
        let store = open_for_reading(db).await?;
        let listed = list_devices(&store, json).await;
        store.close().await;
        return listed;
    }
    let app = App::offline(open(db).await?);
    let caller = Caller::local_cli();
    let result = match action {
        DevicesAction::List { .. } => unreachable!("listed above, read-only"),
        DevicesAction::Approve { request_id, scopes, json } => {
            let narrower = scopes.map(|names| ScopeSet::parse(&names)).transpose()?;
            let approved = app.approve_request(&caller, &request_id, narrower.as_ref()).await;
            approved.map_err(anyhow::Error::from).map(|approved| {
                let device_id = approved.device.map(|device| device.device_id).unwrap_or_default();
                report_decision(json, "approved", &approved.request_id, &device_id);
            })
        }
        DevicesAction::Reject { request_id, json } => {
            let rejected = app.reject_request(&caller, &request_id).await;
            rejected
                .map_err(anyhow::Error::from)
                .map(|r| report_decision(json, "rejected", &r.request_id, &r.device_id))
        }
        DevicesAction::Remove { device_id, json } => match parse_device_id(&device_id) {
            Ok(id) => app.remove_device(&caller, &id).await.map_err(anyhow::Error::from).map(|removed| {
                print_result(json, serde_json::json!(removed), &format!("removed device {id}"));
            }),
            Err(error) => Err(error),
        },
        DevicesAction::Rename { device_id, label, json } => match parse_device_id(&device_id) {
            Ok(id) => app.rename_device(&caller, &id, &label).await.map_err(anyhow::Error::from).map(|label| {
                let renamed = DeviceRenamed { device_id: id.to_string(), label };
                print_result(
                    json,
                    serde_json::json!(renamed),
                    &format!("device {id} is now {}", shown(&renamed.label)),
                );
            }),
            Err(error) => Err(error),
        },
    };
    app.store.close().await;
    result
}

/// What `pairgate setup-code` asks for.
pub(super) struct SetupCodeArgs {
    pub access: String,
    pub url: Option<String>,
    pub join: bool,
    pub no_qr: bool,
    pub json: bool,
}

/// `pairgate setup-code`: mints a code and prints it, with its QR code, once.
pub(super) async fn setup_code(args: SetupCodeArgs, db: &DbArg) -> anyhow::Result<()> {
    let access = SetupAccess::parse(&args.access).ok_or_else(|| anyhow::anyhow!("unknown access {}", args.access))?;
    let url = args.url.ok_or_else(|| {
        anyhow::anyhow!(
            "no URL for the setup code: pass --url (or set PAIRGATE_PUBLIC_URL) to the ws:// or wss:// address devices reach the server at"
        )
    })?;
    let app = App::offline(open(db).await?);
    let minted =
        app.mint_setup_code(&Caller::local_cli(), &MintRequest { access, url: Some(url), join: args.join }).await;
    app.store.close().await;
    let minted = minted?;
    let code = &minted.code;
    if args.json {
        let mut value = serde_json::json!(SetupCodeView::new(code, SystemClock.now_ms()));
        value["setupCode"] = serde_json::json!(minted.setup_code);
        value["accessDowngraded"] = serde_json::json!(minted.access_downgraded);
        if let Some(join_url) = &minted.join_url {
            value["joinUrl"] = serde_json::json!(join_url);
        }
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let minutes = (code.expires_at_ms - code.issued_at_ms) / 60_000;
    println!(
        "Setup code {} ({} access, for {} at {}; single use, expires in {minutes} minutes):",
        code.setup_id,
        code.access,
        code.gateway_url,
        shown(&code.issued_by)
    );
    if minted.access_downgraded {
        println!("(full access needs wss:// or loopback: this plaintext URL gets limited access)");
    }
    println!("\n{}\n", minted.setup_code);
    if let (false, Some(qr)) = (args.no_qr, crate::app::qr_terminal(&minted.setup_code)) {
        println!("{qr}");
    }
    println!("On the device:  openclaw node run --pair \"{}\"", minted.setup_code);
    if let Some(join_url) = &minted.join_url {
        println!("Or, once:       openclaw connect {join_url}");
    }
    println!("Revoke it:      pairgate setup-codes revoke {}", code.setup_id);
    Ok(())
}

pub(super) async fn setup_codes(action: SetupCodesAction, db: &DbArg) -> anyhow::Result<()> {
    let now = SystemClock.now_ms();
    match action {
        SetupCodesAction::List { limit, json } => {
            let store = open_for_reading(db).await?;
            let codes = store.setup_codes(limit.clamp(1, 10_000)).await;
            store.close().await;
            let views: Vec<SetupCodeView> = codes?.iter().map(|code| SetupCodeView::new(code, now)).collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&views)?);
                return Ok(());
            }
            println!("Setup codes ({}):", views.len());
            for view in &views {
                let redeemed = view.device_id.as_deref().map(|id| format!("  by device {}…", &id[..id.len().min(12)]));
                println!(
                    "  {}  {:<10} {:<8}  {}  by {}{}",
                    view.setup_id,
                    view.access,
                    view.state,
                    view.gateway_url,
                    shown(&view.issued_by),
                    redeemed.unwrap_or_default()
                );
            }
            Ok(())
        }
        SetupCodesAction::Revoke { setup_id, json } => {
            let app = App::offline(open(db).await?);
            let revoked = app.revoke_setup_code(&Caller::local_cli(), &setup_id).await;
            app.store.close().await;
            let view = SetupCodeView::new(&revoked?, now);
            print_result(json, serde_json::json!(view), &format!("revoked setup code {setup_id}"));
            Ok(())
        }
    }
}

async fn list_devices(store: &Store, json: bool) -> anyhow::Result<()> {
    let now = SystemClock.now_ms();
    let pending = store.pending_requests(now).await?;
    let paired = store.paired_devices().await?;
    if json {
        let value = serde_json::json!({
            "pending": pending.iter().map(RequestView::from).collect::<Vec<_>>(),
            "paired": paired.iter().map(|d| DeviceView::new(d, false)).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
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
        let client = shown(device.meta.client_id.as_deref().unwrap_or("-")).into_owned();
        println!("  {}  {client}  {}", device.device_id, grants.join(" "));
    }
    Ok(())
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

pub(super) async fn tokens(action: TokensAction, db: &DbArg) -> anyhow::Result<()> {
    let app = App::offline(open(db).await?);
    let result = tokens_on(&app, action).await;
    app.store.close().await;
    result
}

async fn tokens_on(app: &App, action: TokensAction) -> anyhow::Result<()> {
    let caller = Caller::local_cli();
    match action {
        TokensAction::Rotate { device, role, scopes, json } => {
            let (id, role) = (parse_device_id(&device)?, parse_role(&role)?);
            let narrower = scopes.map(|names| ScopeSet::parse(&names)).transpose()?;
            let rotated = app.rotate_token(&caller, &id, role, narrower.as_ref()).await?;
            let human = format!("rotated the {role} token of {id}; the device gets a new one on its next connect");
            print_result(json, serde_json::json!(rotated), &human);
        }
        TokensAction::Revoke { device, role, json } => {
            let (id, role) = (parse_device_id(&device)?, parse_role(&role)?);
            let revoked = app.revoke_token(&caller, &id, role).await?;
            print_result(json, serde_json::json!(revoked), &format!("revoked the {role} token of {id}"));
        }
    }
    Ok(())
}

pub(super) async fn audit(
    filter: &crate::store::AuditFilter,
    limit: i64,
    json: bool,
    db: &DbArg,
) -> anyhow::Result<()> {
    let store = open_for_reading(db).await?;
    let rows = store.audit_matching(filter, None, limit.clamp(1, 10_000)).await?;
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
                shown(&row.actor),
                shown(row.remote_addr.as_deref().unwrap_or("-")),
                shown(row.subject.as_deref().unwrap_or("-")),
                row.details
            );
        }
    }
    store.close().await;
    Ok(())
}

fn report_decision(json: bool, decision: &str, request_id: &str, device_id: &str) {
    if json {
        println!("{}", serde_json::json!({ "requestId": request_id, "deviceId": device_id, "decision": decision }));
    } else {
        println!("{decision} pairing request {request_id} (device {device_id})");
    }
}

pub(super) async fn sessions(action: SessionsAction, db: &DbArg) -> anyhow::Result<()> {
    let store = match action {
        SessionsAction::Kill { .. } => open(db).await?,
        SessionsAction::List { .. } | SessionsAction::Show { .. } => open_for_reading(db).await?,
    };
    let result = match action {
        SessionsAction::List { spawned_by, limit, json } => {
            let entries = store.sessions_page(spawned_by.as_deref(), None, limit.clamp(1, 10_000)).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
            } else {
                for entry in &entries {
                    println!(
                        "{:<60} depth {}  parent {}{}",
                        shown(&entry.key),
                        entry.spawn_depth,
                        shown(entry.spawned_by.as_deref().unwrap_or("-")),
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
                    shown(&entry.key),
                    shown(&entry.agent_id),
                    entry.spawn_depth,
                    shown(entry.spawned_by.as_deref().unwrap_or("-"))
                );
                for run in &runs {
                    println!(
                        "  run {}  {:<11} {}  {}",
                        shown(&run.run_id),
                        run.state.as_str(),
                        shown(run.ended_reason.as_deref().unwrap_or("-")),
                        shown(&run.task)
                    );
                }
                for child in &children {
                    println!("  child {}", shown(&child.key));
                }
            }
            Ok(())
        }
        SessionsAction::Kill { run_id, json } => {
            let app = App::offline(store.clone());
            let killed = app.kill_run(&Caller::local_cli().actor, &run_id).await?;
            print_result(json, serde_json::json!(killed), &format!("killed {}", shown(&killed.killed.join(", "))));
            Ok(())
        }
    };
    store.close().await;
    result
}

pub(super) async fn export(out: Option<&Path>, db: &DbArg) -> anyhow::Result<()> {
    let store = open_for_reading(db).await?;
    let export = store.export_json(SystemClock.now_ms()).await;
    store.close().await;
    let text = serde_json::to_string_pretty(&export?)?;
    match out {
        Some(path) => {
            // An export holds token digests: private, and never over an existing file or through a link.
            let write = || -> std::io::Result<()> {
                use std::io::Write;
                let mut file = crate::store::create_private(path)?;
                file.write_all(text.as_bytes())?;
                file.write_all(b"\n")?;
                file.sync_all()
            };
            write().map_err(|e| {
                anyhow::anyhow!("cannot write {}: {e} (an export never replaces a file)", path.display())
            })?
        }
        None => println!("{text}"),
    }
    Ok(())
}

pub(super) async fn import(args: ImportArgs) -> anyhow::Result<()> {
    match args.source {
        Some(ImportSource::Openclaw { state_dir, dry_run, json }) => {
            import_openclaw(&state_dir, &args.db, dry_run, json).await
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
            let store = open_or_create(&args.db).await?;
            let counts = store.import_json(&export, args.replace_gateway_token).await;
            let told = match counts {
                Ok(counts) => {
                    for (table, count) in counts {
                        println!("{table}: {count}");
                    }
                    super::gateway_token::tell(&store).await;
                    Ok(())
                }
                Err(error) => Err(error.into()),
            };
            store.close().await;
            told
        }
    }
}

/// `pairgate import openclaw`: imports (or, with `dry_run`, only reports) and prints the report.
async fn import_openclaw(state_dir: &Path, db: &DbArg, dry_run: bool, json: bool) -> anyhow::Result<()> {
    // A dry run changes nothing: on SQLite it imports into a scratch copy of the database (or into an empty
    // scratch database when there is none yet), which is then thrown away; on PostgreSQL, into the
    // database itself in a transaction that is rolled back (a database with no pairgate schema is refused).
    let scratch = tempfile::tempdir()?;
    let location = db.location()?;
    let store = match (&location, dry_run) {
        (Location::Sqlite(path), true) => {
            let copy = scratch.path().join("dry-run.db");
            if path.exists() {
                let original = open_for_reading(db).await?;
                let copied = original.backup_to(&copy).await;
                original.close().await;
                copied?;
            }
            Store::open(&Location::Sqlite(copy), MigratePolicy::Apply { backup_exists: false }).await?.0
        }
        (Location::Postgres(_), true) => {
            Store::open_read_only(&location, false).await?.0.close().await;
            Store::open(&location, MigratePolicy::Refuse).await?.0
        }
        (_, false) => open_or_create(db).await?,
    };
    let report = openclaw::import(&store, state_dir, dry_run, SystemClock.now_ms()).await;
    store.close().await;
    let report = report?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("OpenClaw state in {} ({})", report.state_dir, report.sources.join(", "));
    println!(
        "found: {} devices, {} pending requests, {} runs",
        report.found["devices"], report.found["requests"], report.found["runs"]
    );
    let counts = &report.imported;
    let verb = if dry_run { "would import" } else { "imported" };
    if counts.is_empty() {
        println!("nothing to import: all of it is already in pairgate");
    } else {
        println!(
            "{verb}: {} devices, {} grants, {} tokens (as digests), {} requests, {} sessions, {} runs",
            counts.devices, counts.grants, counts.tokens, counts.requests, counts.sessions, counts.runs
        );
    }
    for skipped in &report.skipped {
        println!("skipped {} {}: {}", shown(&skipped.source), shown(&skipped.entry), shown(&skipped.reason));
    }
    Ok(())
}
