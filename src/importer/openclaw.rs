//! `pairgate import openclaw`: OpenClaw's pairing and sub-agent state (docs/protocol.md §9) into pairgate.
//!
//! Reads whichever exist of the ≤ 2026.4 JSON files (`devices/paired.json`, `devices/pending.json`,
//! `subagents/runs.json`) and the 2026.9 SQLite database (`state/openclaw.sqlite`, opened read-only), turns
//! both into the same records, and writes them in one store transaction. A malformed entry is skipped and
//! reported; a file that cannot be read at all stops the import before anything is written. The source is
//! never modified. Live tokens are kept as digests, so every client keeps working with the token it has.
//! (The SQL below reads OpenClaw's database, not pairgate's: pairgate's own SQL stays in `store`.)

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::clock::Millis;
use crate::domain::{ClientMeta, TokenInfo};
use crate::domain::{DeviceId, PAIRING_REQUEST_TTL_MS, PublicKey, Role, RunState, Scope, ScopeSet, TokenSecret};
use crate::store::{ImportCounts, ImportedDevice, ImportedRequest};
use crate::store::{Run, Store};

/// An entry left out, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub source: String,
    pub entry: String,
    pub reason: String,
}

/// Everything read from a state directory.
#[derive(Debug, Default)]
pub struct ImportPlan {
    pub sources: Vec<String>,
    pub devices: Vec<ImportedDevice>,
    pub requests: Vec<ImportedRequest>,
    pub runs: Vec<Run>,
    pub skipped: Vec<Skipped>,
}

/// What an import did (or, dry, would do).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportReport {
    pub state_dir: String,
    pub sources: Vec<String>,
    pub dry_run: bool,
    pub found: Value,
    pub imported: ImportCounts,
    pub skipped: Vec<Skipped>,
}

fn text(entry: &Value, field: &str) -> Option<String> {
    entry.get(field).and_then(Value::as_str).map(str::to_owned).filter(|s| !s.is_empty())
}

fn millis(entry: &Value, field: &str) -> Option<Millis> {
    entry.get(field).and_then(Value::as_i64)
}

fn meta(entry: &Value) -> ClientMeta {
    ClientMeta {
        client_id: text(entry, "clientId"),
        client_mode: text(entry, "clientMode"),
        platform: text(entry, "platform"),
        device_family: text(entry, "deviceFamily"),
        display_name: text(entry, "displayName").or_else(|| text(entry, "operatorLabel")),
    }
}

/// The device id and key of an entry; the id must be the key's hash.
fn identity(entry: &Value) -> Result<(DeviceId, PublicKey), String> {
    let key = text(entry, "publicKey").ok_or("no publicKey")?;
    let key = PublicKey::from_base64url(&key).ok_or("publicKey is not a base64url Ed25519 key")?;
    let derived = DeviceId::from_public_key(&key);
    match text(entry, "deviceId") {
        Some(id) if id != derived.as_str() => Err("deviceId does not match its public key".into()),
        _ => Ok((derived, key)),
    }
}

fn roles(entry: &Value) -> Result<Vec<Role>, String> {
    let mut names: Vec<String> = match entry.get("roles") {
        Some(Value::Array(list)) => list
            .iter()
            .map(|r| r.as_str().map(str::to_owned).ok_or("roles must be strings"))
            .collect::<Result<_, _>>()?,
        None | Some(Value::Null) => Vec::new(),
        Some(_) => return Err("roles must be a list".into()),
    };
    names.extend(text(entry, "role"));
    let mut roles = Vec::new();
    for name in names {
        let role = Role::parse(&name).ok_or_else(|| format!("unknown role {name}"))?;
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    roles.sort();
    Ok(roles)
}

/// Operator scopes of a list; unknown names are dropped and reported.
fn scopes(value: Option<&Value>, notes: &mut Vec<String>) -> Result<ScopeSet, String> {
    let list = match value {
        None | Some(Value::Null) => return Ok(ScopeSet::new()),
        Some(Value::Array(list)) => list,
        Some(_) => return Err("scopes must be a list".into()),
    };
    let mut set = Vec::new();
    for name in list {
        let name = name.as_str().ok_or("scopes must be strings")?;
        match Scope::parse(name) {
            Ok(scope) => set.push(scope),
            Err(_) => notes.push(format!("scope {name} is not an operator scope; dropped")),
        }
    }
    Ok(set.into_iter().collect())
}

fn device(entry: &Value, now: Millis, notes: &mut Vec<String>) -> Result<ImportedDevice, String> {
    let (device_id, public_key) = identity(entry)?;
    let mut roles = roles(entry)?;
    let tokens_value = entry.get("tokens").cloned().unwrap_or(Value::Null);
    let token_map = match &tokens_value {
        Value::Object(map) => map.clone(),
        Value::Null => Map::new(),
        _ => return Err("tokens must be an object keyed by role".into()),
    };
    for role_name in token_map.keys() {
        if let Some(role) = Role::parse(role_name)
            && !roles.contains(&role)
        {
            roles.push(role);
        }
    }
    if roles.is_empty() {
        return Err("no approved role".into());
    }
    let approved = scopes(entry.get("approvedScopes").filter(|v| !v.is_null()).or(entry.get("scopes")), notes)?;
    let grants = roles
        .iter()
        .map(|role| (*role, if *role == Role::Operator { approved.clone() } else { ScopeSet::new() }))
        .collect();
    let mut tokens = Vec::new();
    for (role_name, token) in &token_map {
        let role = Role::parse(role_name).ok_or_else(|| format!("token for unknown role {role_name}"))?;
        let value = text(token, "token").ok_or_else(|| format!("{role_name} token has no value"))?;
        let token_scopes = scopes(token.get("scopes"), notes)?;
        tokens.push(TokenInfo {
            role,
            digest: TokenSecret::from_presented(value).digest(),
            scopes: if role == Role::Operator { token_scopes } else { ScopeSet::new() },
            issued_at_ms: millis(token, "createdAtMs").unwrap_or(now),
            rotated_at_ms: millis(token, "rotatedAtMs"),
            revoked_at_ms: millis(token, "revokedAtMs"),
            last_used_at_ms: millis(token, "lastUsedAtMs"),
        });
    }
    let created = millis(entry, "createdAtMs").unwrap_or(now);
    Ok(ImportedDevice {
        device_id,
        public_key,
        meta: meta(entry),
        remote_ip: text(entry, "remoteIp"),
        created_at_ms: created,
        approved_at_ms: millis(entry, "approvedAtMs").unwrap_or(created),
        last_seen_at_ms: millis(entry, "lastSeenAtMs"),
        grants,
        tokens,
    })
}

fn request(id: &str, entry: &Value, now: Millis, notes: &mut Vec<String>) -> Result<Option<ImportedRequest>, String> {
    let (device_id, public_key) = identity(entry)?;
    let ts = millis(entry, "ts").ok_or("no ts")?;
    if ts + PAIRING_REQUEST_TTL_MS <= now {
        return Ok(None);
    }
    let roles = roles(entry)?;
    let role = text(entry, "role").and_then(|r| Role::parse(&r)).or(roles.first().copied()).ok_or("no role")?;
    Ok(Some(ImportedRequest {
        request_id: text(entry, "requestId").unwrap_or_else(|| id.to_owned()),
        device_id,
        public_key,
        role,
        roles: if roles.is_empty() { vec![role] } else { roles },
        scopes: scopes(entry.get("scopes"), notes)?,
        is_repair: entry.get("isRepair").and_then(Value::as_bool).unwrap_or(false),
        meta: meta(entry),
        remote_ip: text(entry, "remoteIp"),
        ts_ms: ts,
    }))
}

fn run_record(id: &str, entry: &Value, now: Millis) -> Result<Run, String> {
    let child = text(entry, "childSessionKey").ok_or("no childSessionKey")?;
    let requester = text(entry, "requesterSessionKey").ok_or("no requesterSessionKey")?;
    let ended_at = millis(entry, "endedAt");
    let ended_reason = text(entry, "endedReason");
    let outcome_status = entry.pointer("/outcome/status").and_then(Value::as_str).map(str::to_owned);
    let mut outcome_error = entry.pointer("/outcome/error").and_then(Value::as_str).map(str::to_owned);
    let state = match (ended_at, outcome_status.as_deref(), ended_reason.as_deref()) {
        // Still running when OpenClaw stopped: it is not running now.
        (None, _, _) => RunState::Interrupted,
        (Some(_), _, Some("subagent-killed")) => RunState::Killed,
        (Some(_), Some("ok"), _) => RunState::Done,
        (Some(_), Some("timeout"), _) => RunState::Timeout,
        (Some(_), _, _) => RunState::Failed,
    };
    let ended_reason = if ended_at.is_none() { Some("gateway-restart".to_owned()) } else { ended_reason };
    if ended_at.is_none() {
        outcome_error = Some("interrupted".into());
    }
    let cleanup = text(entry, "cleanup").filter(|c| c == "keep" || c == "delete").unwrap_or_else(|| "keep".into());
    let spawn_mode = text(entry, "spawnMode").filter(|m| m == "run" || m == "session").unwrap_or_else(|| "run".into());
    Ok(Run {
        run_id: text(entry, "runId").unwrap_or_else(|| id.to_owned()),
        child_session_key: child,
        requester_session_key: requester,
        controller_session_key: text(entry, "controllerSessionKey"),
        task: text(entry, "task").unwrap_or_default(),
        label: text(entry, "label"),
        model: text(entry, "model"),
        cleanup,
        spawn_mode,
        run_timeout_seconds: entry.get("runTimeoutSeconds").and_then(Value::as_i64).filter(|s| *s >= 0),
        state,
        created_at: millis(entry, "createdAt").ok_or("no createdAt")?,
        started_at: millis(entry, "startedAt"),
        ended_at: ended_at.or(Some(now)),
        ended_reason,
        outcome_status: outcome_status.or(Some("error".into())).filter(|_| state != RunState::Pending),
        outcome_error,
        archive_at_ms: millis(entry, "archiveAtMs"),
    })
}

impl ImportPlan {
    fn skip(&mut self, source: &str, entry: &str, reason: impl Into<String>) {
        self.skipped.push(Skipped { source: source.to_owned(), entry: entry.to_owned(), reason: reason.into() });
    }

    fn add_devices(&mut self, source: &str, entries: Vec<(String, Value)>, now: Millis) {
        for (id, entry) in entries {
            let mut notes = Vec::new();
            match device(&entry, now, &mut notes) {
                Ok(device) => self.devices.push(device),
                Err(reason) => self.skip(source, &id, reason),
            }
            notes.dedup();
            for note in notes {
                self.skip(source, &id, note);
            }
        }
    }

    fn add_requests(&mut self, source: &str, entries: Vec<(String, Value)>, now: Millis) {
        for (id, entry) in entries {
            let mut notes = Vec::new();
            match request(&id, &entry, now, &mut notes) {
                Ok(Some(request)) => self.requests.push(request),
                Ok(None) => self.skip(source, &id, "older than 5 minutes (stale)"),
                Err(reason) => self.skip(source, &id, reason),
            }
            for note in notes {
                self.skip(source, &id, note);
            }
        }
    }

    fn add_runs(&mut self, source: &str, entries: Vec<(String, Value)>, now: Millis) {
        for (id, entry) in entries {
            match run_record(&id, &entry, now) {
                Ok(run) => self.runs.push(run),
                Err(reason) => self.skip(source, &id, reason),
            }
        }
    }
}

/// A JSON file's entries keyed by id; `None` when it does not exist; an error when it cannot be read.
fn read_json_object(path: &Path, inner: Option<&str>) -> anyhow::Result<Option<Vec<(String, Value)>>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
    };
    let value: Value =
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{} is not valid JSON: {e}", path.display()))?;
    let object = match inner {
        Some(field) => value.get(field).cloned().unwrap_or(Value::Null),
        None => value,
    };
    match object {
        Value::Object(map) => Ok(Some(map.into_iter().collect())),
        _ => anyhow::bail!("{} is not an object keyed by id", path.display()),
    }
}

fn parse_json_column(row: &Map<String, Value>, column: &str) -> Value {
    row.get(column).and_then(Value::as_str).and_then(|text| serde_json::from_str(text).ok()).unwrap_or(Value::Null)
}

/// Says what is wrong with OpenClaw's database in terms an operator can act on.
fn source_error(path: &Path, error: sqlx::Error) -> anyhow::Error {
    use crate::store::StoreError;
    use crate::store::sqlite::OpenError;
    match OpenError::classify(error, path) {
        OpenError::Store(StoreError::Busy) => anyhow::anyhow!(
            "{} is locked by another process (is OpenClaw writing to it?); nothing was imported — try again",
            path.display()
        ),
        OpenError::NotSqlite { .. } | OpenError::Corrupt { .. } => {
            anyhow::anyhow!("{} is not a readable SQLite database; nothing was imported", path.display())
        }
        other => anyhow::anyhow!("cannot read {}: {other}; nothing was imported", path.display()),
    }
}

/// Whether the database at `path` is in WAL mode: its header's read and write versions are 2.
fn wal_mode(path: &Path) -> std::io::Result<bool> {
    use std::io::Read;
    let mut header = [0u8; 20];
    std::fs::File::open(path)?.read_exact(&mut header)?;
    Ok(header[18] == 2 && header[19] == 2)
}

/// How many times a copy of a database that changed while it was copied is taken again.
const COPY_ATTEMPTS: usize = 5;

/// Copies `from` to `to` and returns the digest of what was copied.
fn copy_hashed(from: &Path, to: &Path) -> std::io::Result<[u8; 32]> {
    use sha2::Digest;
    struct Hashing<W>(W, sha2::Sha256);
    impl<W: std::io::Write> std::io::Write for Hashing<W> {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let written = self.0.write(bytes)?;
            self.1.update(&bytes[..written]);
            Ok(written)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.0.flush()
        }
    }
    let mut source = std::fs::File::open(from)?;
    let mut sink = Hashing(std::fs::File::create(to)?, sha2::Sha256::new());
    std::io::copy(&mut source, &mut sink)?;
    Ok(sink.1.finalize().into())
}

/// The digest of a file's bytes, `None` if it does not exist.
fn digest_of(path: &Path) -> std::io::Result<Option<[u8; 32]>> {
    use sha2::Digest;
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(Some(hasher.finalize().into()))
}

/// Copies the database and its `-wal` (when there is one) into `dir`; returns the copy's path.
///
/// The two files are copied one after the other without a lock (taking SQLite's would write beside the
/// source), so a running OpenClaw that commits or checkpoints meanwhile could leave a copy whose parts do
/// not belong together. The copy counts only when both sources read the same again right after it;
/// otherwise it is taken again, a few times, before giving up with advice. `settle` runs between the copy
/// and that check (a test changes the source there).
fn copy_with_wal(path: &Path, dir: &Path, mut settle: impl FnMut()) -> anyhow::Result<PathBuf> {
    let copy = dir.join("openclaw.sqlite");
    let read = |e: std::io::Error| anyhow::anyhow!("cannot read {}: {e}; nothing was imported", path.display());
    let (wal, wal_copy) = (crate::store::sibling_path(path, "-wal"), crate::store::sibling_path(&copy, "-wal"));
    for _ in 0..COPY_ATTEMPTS {
        let copied_db = copy_hashed(path, &copy).map_err(read)?;
        let _ = std::fs::remove_file(&wal_copy);
        let copied_wal = match copy_hashed(&wal, &wal_copy) {
            Ok(digest) => Some(digest),
            // No log, or one removed since (SQLite deletes it when the last connection closes).
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => return Err(read(error)),
        };
        settle();
        if digest_of(path).map_err(read)? == Some(copied_db) && digest_of(&wal).map_err(read)? == copied_wal {
            return Ok(copy);
        }
    }
    anyhow::bail!(
        "{} kept changing while it was copied ({COPY_ATTEMPTS} tries); nothing was imported — stop OpenClaw's \
         gateway for a moment, or try again",
        path.display()
    )
}

/// OpenClaw 2026.9's SQLite state, read-only: each row in the shape of the JSON files' entries.
async fn read_sqlite(
    path: &Path,
) -> anyhow::Result<(Vec<(String, Value)>, Vec<(String, Value)>, Vec<(String, Value)>)> {
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{Column, ConnectOptions, Row};
    // SQLite opens a WAL-mode database's `-shm` (creating it, and the `-wal`) even read-only: such a
    // database is read from a private copy, so that nothing is ever written beside the source. A
    // rollback-journal database is read in place, read-only (which also reports a writer's lock).
    let scratch = tempfile::tempdir()?;
    let source = match wal_mode(path) {
        Ok(true) => copy_with_wal(path, scratch.path(), || {})?,
        _ => path.to_path_buf(),
    };
    let options = SqliteConnectOptions::new()
        .filename(&source)
        .read_only(source == path)
        .busy_timeout(std::time::Duration::from_secs(5));
    let mut conn = options.connect().await.map_err(|e| source_error(path, e))?;
    let rows = |table: &'static str| format!("SELECT * FROM {table}");
    let mut fetch = async |table: &'static str| -> anyhow::Result<Vec<Map<String, Value>>> {
        let exists: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?")
            .bind(table)
            .fetch_one(&mut conn)
            .await
            .map_err(|e| source_error(path, e))?;
        if exists == 0 {
            return Ok(Vec::new());
        }
        let fetched = sqlx::query(&rows(table))
            .fetch_all(&mut conn)
            .await
            .map_err(|e| anyhow::anyhow!("{}: {table}: {e}", path.display()))?;
        Ok(fetched
            .iter()
            .map(|row| {
                row.columns()
                    .iter()
                    .map(|column| {
                        let i = column.ordinal();
                        let value = row
                            .try_get::<Option<i64>, _>(i)
                            .ok()
                            .flatten()
                            .map(Value::from)
                            .or_else(|| row.try_get::<Option<String>, _>(i).ok().flatten().map(Value::from))
                            .unwrap_or(Value::Null);
                        (column.name().to_owned(), value)
                    })
                    .collect()
            })
            .collect())
    };
    let paired = fetch("device_pairing_paired").await?;
    let pending = fetch("device_pairing_pending").await?;
    let runs = fetch("subagent_runs").await?;
    let camel = |row: &Map<String, Value>, pairs: &[(&str, &str)]| -> Value {
        let mut object = Map::new();
        for (column, field) in pairs {
            if let Some(value) = row.get(*column).filter(|v| !v.is_null()) {
                object.insert((*field).to_owned(), value.clone());
            }
        }
        Value::Object(object)
    };
    const COMMON: &[(&str, &str)] = &[
        ("device_id", "deviceId"),
        ("public_key", "publicKey"),
        ("display_name", "displayName"),
        ("operator_label", "operatorLabel"),
        ("platform", "platform"),
        ("device_family", "deviceFamily"),
        ("client_id", "clientId"),
        ("client_mode", "clientMode"),
        ("role", "role"),
        ("remote_ip", "remoteIp"),
        ("created_at_ms", "createdAtMs"),
        ("approved_at_ms", "approvedAtMs"),
        ("last_seen_at_ms", "lastSeenAtMs"),
        ("request_id", "requestId"),
        ("ts", "ts"),
    ];
    let devices = paired
        .iter()
        .map(|row| {
            let mut entry = camel(row, COMMON);
            entry["roles"] = parse_json_column(row, "roles_json");
            entry["scopes"] = parse_json_column(row, "scopes_json");
            entry["approvedScopes"] = parse_json_column(row, "approved_scopes_json");
            entry["tokens"] = parse_json_column(row, "tokens_json");
            (text(&entry, "deviceId").unwrap_or_default(), entry)
        })
        .collect();
    let requests = pending
        .iter()
        .map(|row| {
            let mut entry = camel(row, COMMON);
            entry["roles"] = parse_json_column(row, "roles_json");
            entry["scopes"] = parse_json_column(row, "scopes_json");
            entry["isRepair"] = json!(row.get("is_repair").and_then(Value::as_i64) == Some(1));
            (text(&entry, "requestId").unwrap_or_default(), entry)
        })
        .collect();
    let runs = runs
        .iter()
        .map(|row| {
            let id = row.get("run_id").and_then(Value::as_str).unwrap_or_default().to_owned();
            (id, parse_json_column(row, "payload_json"))
        })
        .collect();
    Ok((devices, requests, runs))
}

/// Reads a state directory into a plan. Nothing is written.
pub async fn read_state_dir(dir: &Path, now: Millis) -> anyhow::Result<ImportPlan> {
    if !dir.is_dir() {
        anyhow::bail!("{} is not a directory", dir.display());
    }
    let mut plan = ImportPlan::default();
    type AddEntries = fn(&mut ImportPlan, &str, Vec<(String, Value)>, Millis);
    let json_sources: [(&str, Option<&str>, AddEntries); 3] = [
        ("devices/paired.json", None, ImportPlan::add_devices),
        ("devices/pending.json", None, ImportPlan::add_requests),
        ("subagents/runs.json", Some("runs"), ImportPlan::add_runs),
    ];
    for (relative, inner, add) in json_sources {
        if let Some(entries) = read_json_object(&dir.join(relative), inner)? {
            plan.sources.push(relative.to_owned());
            add(&mut plan, relative, entries, now);
        }
    }
    let sqlite: PathBuf = dir.join("state/openclaw.sqlite");
    if sqlite.exists() {
        let (devices, requests, runs) = read_sqlite(&sqlite).await?;
        let source = "state/openclaw.sqlite";
        plan.sources.push(source.to_owned());
        plan.add_devices(source, devices, now);
        plan.add_requests(source, requests, now);
        plan.add_runs(source, runs, now);
    }
    if plan.sources.is_empty() {
        anyhow::bail!(
            "{} holds no OpenClaw state (devices/paired.json, devices/pending.json, subagents/runs.json or state/openclaw.sqlite)",
            dir.display()
        );
    }
    Ok(plan)
}

/// Reads, imports (or with `dry_run` only counts) and reports.
pub async fn import(store: &Store, dir: &Path, dry_run: bool, now: Millis) -> anyhow::Result<ImportReport> {
    let plan = read_state_dir(dir, now).await?;
    let source = format!("openclaw:{}", dir.display());
    let imported = store.apply_import(&plan.devices, &plan.requests, &plan.runs, &source, dry_run, now).await?;
    Ok(ImportReport {
        state_dir: dir.display().to_string(),
        sources: plan.sources,
        dry_run,
        found: json!({ "devices": plan.devices.len(), "requests": plan.requests.len(), "runs": plan.runs.len() }),
        imported,
        skipped: plan.skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source that changes between the copy and its check is copied again; the copy that counts is
    /// the one whose parts belong together.
    #[test]
    fn a_database_that_changes_while_it_is_copied_is_copied_again() {
        let (source, scratch) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let db = source.path().join("openclaw.sqlite");
        let wal = crate::store::sibling_path(&db, "-wal");
        std::fs::write(&db, b"main v1").unwrap();
        std::fs::write(&wal, b"wal v1").unwrap();
        let mut checks = 0;
        let copy = copy_with_wal(&db, scratch.path(), || {
            checks += 1;
            if checks == 1 {
                // A checkpoint between the copy and its check: pages move to the main file, the log restarts.
                std::fs::write(&db, b"main v2").unwrap();
                std::fs::write(&wal, b"").unwrap();
            }
        })
        .unwrap();
        assert_eq!(checks, 2);
        assert_eq!(std::fs::read(&copy).unwrap(), b"main v2");
        assert_eq!(std::fs::read(crate::store::sibling_path(&copy, "-wal")).unwrap(), b"");
    }

    #[test]
    fn a_database_that_never_settles_is_refused_with_advice() {
        let (source, scratch) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let db = source.path().join("openclaw.sqlite");
        std::fs::write(&db, b"0").unwrap();
        let mut version = 0u32;
        let error = copy_with_wal(&db, scratch.path(), || {
            version += 1;
            std::fs::write(&db, version.to_string()).unwrap();
        })
        .unwrap_err();
        assert_eq!(version as usize, COPY_ATTEMPTS);
        assert!(error.to_string().contains("kept changing while it was copied"), "{error}");
        assert!(error.to_string().contains("nothing was imported"), "{error}");
    }
}
