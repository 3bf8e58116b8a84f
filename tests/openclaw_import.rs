//! Importing OpenClaw state: 2026.4 JSON files and a 2026.9 SQLite database, each in the documented format
//! (docs/protocol.md §9). Imported devices connect to pairgate with the tokens they already have.

mod common;

use std::path::Path;

use common::*;
use pairgate::clock::Clock;
use pairgate::importer::openclaw;
use serde_json::{Value, json};

/// A paired.json entry for `device` with an operator token (and a node one for `node`).
fn paired_entry(device: &Device, scopes: &[&str], operator_token: &str, node: bool) -> Value {
    let mut tokens = json!({
        "operator": {"token": operator_token, "role": "operator", "scopes": scopes, "createdAtMs": 1_700_000_000_000i64}
    });
    let mut roles = vec!["operator"];
    if node {
        tokens["node"] = json!({"token": format!("{operator_token}-node"), "role": "node", "scopes": [], "createdAtMs": 1_700_000_000_000i64});
        roles.push("node");
    }
    json!({
        "deviceId": device.id(), "publicKey": device.public_key().to_base64url(), "displayName": "laptop",
        "platform": "linux", "clientId": "cli", "clientMode": "cli", "role": "operator", "roles": roles,
        "scopes": scopes, "approvedScopes": scopes, "remoteIp": "203.0.113.5", "tokens": tokens,
        "createdAtMs": 1_700_000_000_000i64, "approvedAtMs": 1_700_000_000_500i64,
    })
}

fn pending_entry(device: &Device, request_id: &str, ts: i64) -> Value {
    json!({
        "requestId": request_id, "deviceId": device.id(), "publicKey": device.public_key().to_base64url(),
        "platform": "linux", "deviceFamily": "", "clientId": "cli", "clientMode": "cli", "role": "operator",
        "roles": ["operator"], "scopes": ["operator.read"], "remoteIp": "203.0.113.9", "silent": false,
        "isRepair": false, "ts": ts,
    })
}

fn run_record(run_id: &str, child: &str, ended: bool) -> Value {
    let mut record = json!({
        "runId": run_id, "childSessionKey": child, "requesterSessionKey": "agent:main:main", "task": "summarize",
        "cleanup": "keep", "spawnMode": "run", "runTimeoutSeconds": 600, "createdAt": 1_700_000_001_000i64,
        "startedAt": 1_700_000_001_100i64,
    });
    if ended {
        record["endedAt"] = json!(1_700_000_002_000i64);
        record["endedReason"] = json!("subagent-complete");
        record["outcome"] = json!({"status": "ok"});
    }
    record
}

fn write(path: &Path, value: &Value) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_string_pretty(value).unwrap()).unwrap();
}

fn digest_of_dir(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for entry in walk(dir) {
        files.push((entry.display().to_string(), std::fs::read(&entry).unwrap()));
    }
    files.sort();
    files
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { out.extend(walk(&path)) } else { out.push(path) }
    }
    out
}

/// The imported devices connect with their OpenClaw tokens alone, with the scopes they had.
async fn assert_devices_keep_working(server: &Server, devices: &[(&Device, &str, &[&str])]) {
    for (device, token, scopes) in devices {
        let attempt = Connect::cli().device(device).scopes(scopes).token(None).device_token(token);
        let (hello, _) = connect(server, &attempt.via_proxy_for("198.51.100.1")).await.hello();
        assert_eq!(hello["auth"]["method"], "device-token");
        assert_eq!(hello["auth"]["scopes"], json!(scopes));
    }
}

#[tokio::test]
async fn openclaw_2026_4_json_state_is_imported_and_its_tokens_keep_working() {
    let state = tempfile::tempdir().unwrap();
    let (alice, bob, mallory) = (Device::new(110), Device::new(111), Device::new(112));
    let now = pairgate::clock::SystemClock.now_ms();
    let mut broken = paired_entry(&mallory, &["operator.read"], "t3", false);
    broken["deviceId"] = json!("f".repeat(64));
    write(
        &state.path().join("devices/paired.json"),
        &json!({
            alice.id().to_string(): paired_entry(&alice, &["operator.admin", "operator.read"], "oc-alice-token", false),
            bob.id().to_string(): paired_entry(&bob, &["operator.read", "operator.unknown"], "oc-bob-token", true),
            "f".repeat(64): broken,
            "wrong-types": {"deviceId": 42, "publicKey": ["no"]},
        }),
    );
    let (fresh, stale) = (Device::new(113), Device::new(114));
    write(
        &state.path().join("devices/pending.json"),
        &json!({
            "req-fresh": pending_entry(&fresh, "req-fresh", now - 60_000),
            "req-stale": pending_entry(&stale, "req-stale", now - 10 * 60_000),
        }),
    );
    write(
        &state.path().join("subagents/runs.json"),
        &json!({"version": 2, "runs": {
            "run-done": run_record("run-done", "agent:main:subagent:d", true),
            "run-live": run_record("run-live", "agent:main:subagent:l", false),
            "run-bad": {"runId": "run-bad"},
        }}),
    );
    let before = digest_of_dir(state.path());

    let server = Server::start_with(pairgate::server::Config {
        trusted_proxies: vec!["127.0.0.1".parse().unwrap()],
        ..Default::default()
    })
    .await;
    let dry = openclaw::import(&server.store, state.path(), true, now).await.unwrap();
    assert_eq!(dry.imported.devices, 2, "{dry:?}");
    assert!(server.store.paired_devices().await.unwrap().is_empty(), "a dry run writes nothing");

    let report = openclaw::import(&server.store, state.path(), false, now).await.unwrap();
    println!("import report (2026.4 JSON): {}", serde_json::to_string(&report).unwrap());
    assert_eq!(report.sources, ["devices/paired.json", "devices/pending.json", "subagents/runs.json"]);
    let counts = serde_json::to_value(&report.imported).unwrap();
    assert_eq!(counts, json!({"devices": 2, "grants": 3, "tokens": 3, "requests": 1, "sessions": 3, "runs": 2}));
    let reasons: Vec<(&str, &str)> = report.skipped.iter().map(|s| (s.entry.as_str(), s.reason.as_str())).collect();
    let f64s = "f".repeat(64);
    for expected in [
        (f64s.as_str(), "deviceId does not match its public key"),
        ("wrong-types", "no publicKey"),
        ("req-stale", "older than 5 minutes (stale)"),
        ("run-bad", "no childSessionKey"),
    ] {
        assert!(reasons.contains(&expected), "{expected:?} in {reasons:?}");
    }
    assert!(reasons.iter().any(|(_, reason)| reason.contains("operator.unknown")), "{reasons:?}");

    assert_devices_keep_working(
        &server,
        &[(&alice, "oc-alice-token", &["operator.admin", "operator.read"]), (&bob, "oc-bob-token", &["operator.read"])],
    )
    .await;
    let (_, mut operator) = connect(&server, &Connect::cli().scopes(&["operator.pairing"])).await.hello();
    let listed = call(&mut operator, "l", "device.pair.list", json!({})).await;
    assert_eq!(listed["payload"]["pending"][0]["requestId"], "req-fresh");
    let live = server.store.run("run-live").await.unwrap().unwrap();
    assert_eq!((live.state.as_str(), live.ended_reason.as_deref()), ("interrupted", Some("gateway-restart")));
    assert_eq!(server.store.run("run-done").await.unwrap().unwrap().state.as_str(), "done");

    // Idempotent: a second run changes nothing; the source was never modified.
    let again = openclaw::import(&server.store, state.path(), false, now).await.unwrap();
    assert!(again.imported.is_empty(), "{:?}", again.imported);
    assert!(digest_of_dir(state.path()) == before, "the OpenClaw state directory is untouched");

    // Once pairgate knows a device, pairgate decides: an operator's removal is not undone by importing
    // the same OpenClaw state again, nor is a narrowed grant widened.
    server.store.remove_device(&alice.id(), &pairgate::store::Actor::System, None, now).await.unwrap();
    let after_removal = openclaw::import(&server.store, state.path(), false, now).await.unwrap();
    assert!(after_removal.imported.is_empty(), "{:?}", after_removal.imported);
    let alice_now = server.store.device(&alice.id()).await.unwrap().unwrap();
    assert!(alice_now.removed_at_ms.is_some() && alice_now.grants.is_empty(), "{alice_now:?}");
    assert!(alice_now.live_token(pairgate::domain::Role::Operator).is_none());
}

#[tokio::test]
async fn a_truncated_file_stops_the_import_before_anything_is_written() {
    let state = tempfile::tempdir().unwrap();
    let alice = Device::new(115);
    write(
        &state.path().join("devices/paired.json"),
        &json!({alice.id().to_string(): paired_entry(&alice, &["operator.read"], "t", false)}),
    );
    std::fs::write(state.path().join("devices/pending.json"), "{\"req\": {\"requestId\": ").unwrap();
    let server = Server::start().await;
    let error = openclaw::import(&server.store, state.path(), false, server.now()).await.unwrap_err();
    assert!(error.to_string().contains("devices/pending.json is not valid JSON"), "{error}");
    assert!(server.store.paired_devices().await.unwrap().is_empty(), "no half-import");

    let empty = tempfile::tempdir().unwrap();
    let error = openclaw::import(&server.store, empty.path(), false, server.now()).await.unwrap_err();
    assert!(error.to_string().contains("holds no OpenClaw state"), "{error}");
    std::fs::create_dir_all(empty.path().join("state")).unwrap();
    std::fs::write(empty.path().join("state/openclaw.sqlite"), "not sqlite at all, not even close").unwrap();
    let error = openclaw::import(&server.store, empty.path(), false, server.now()).await.unwrap_err();
    assert!(error.to_string().contains("openclaw.sqlite"), "{error}");
}

/// OpenClaw 2026.9 keeps the same records in SQLite, tokens in plaintext in `tokens_json`.
#[tokio::test]
async fn openclaw_2026_9_sqlite_state_is_imported_read_only() {
    let state = tempfile::tempdir().unwrap();
    let db = state.path().join("state/openclaw.sqlite");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let (carol, dave) = (Device::new(116), Device::new(117));
    let now = pairgate::clock::SystemClock.now_ms();
    {
        use sqlx::{ConnectOptions, sqlite::SqliteConnectOptions};
        let mut conn = SqliteConnectOptions::new()
            .filename(&db)
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .connect()
            .await
            .unwrap();
        for ddl in [
            "CREATE TABLE device_pairing_paired (device_id TEXT PRIMARY KEY, public_key TEXT NOT NULL, display_name TEXT, operator_label TEXT, platform TEXT, device_family TEXT, client_id TEXT, client_mode TEXT, browser_origin TEXT, role TEXT, roles_json TEXT, scopes_json TEXT, approved_scopes_json TEXT, remote_ip TEXT, tokens_json TEXT, approved_via TEXT, created_at_ms INTEGER NOT NULL, approved_at_ms INTEGER NOT NULL, last_seen_at_ms INTEGER, last_seen_reason TEXT) STRICT",
            "CREATE TABLE device_pairing_pending (request_id TEXT PRIMARY KEY, device_id TEXT NOT NULL, public_key TEXT NOT NULL, display_name TEXT, platform TEXT, device_family TEXT, client_id TEXT, client_mode TEXT, browser_origin TEXT, role TEXT, roles_json TEXT, scopes_json TEXT, remote_ip TEXT, silent INTEGER, is_repair INTEGER, ts INTEGER NOT NULL, refreshed_at_ms INTEGER) STRICT",
            "CREATE TABLE subagent_runs (run_id TEXT PRIMARY KEY, child_session_key TEXT, controller_session_key TEXT, requester_session_key TEXT, created_at INTEGER, payload_json TEXT NOT NULL) STRICT",
        ] {
            sqlx::query(ddl).execute(&mut conn).await.unwrap();
        }
        for (device, token, scopes) in
            [(&carol, "oc-carol", json!(["operator.write"])), (&dave, "oc-dave", json!(["operator.pairing"]))]
        {
            let tokens = json!({"operator": {"token": token, "role": "operator", "scopes": scopes, "createdAtMs": 1_700_000_000_000i64}});
            sqlx::query("INSERT INTO device_pairing_paired (device_id, public_key, platform, client_id, client_mode, role, roles_json, scopes_json, approved_scopes_json, tokens_json, approved_via, created_at_ms, approved_at_ms) VALUES (?, ?, 'linux', 'cli', 'cli', 'operator', '[\"operator\"]', ?, ?, ?, 'operator', 1700000000000, 1700000000001)")
                .bind(device.id().to_string()).bind(device.public_key().to_base64url()).bind(scopes.to_string()).bind(scopes.to_string()).bind(tokens.to_string())
                .execute(&mut conn).await.unwrap();
        }
        let erin = Device::new(118);
        sqlx::query("INSERT INTO device_pairing_pending (request_id, device_id, public_key, platform, client_id, client_mode, role, roles_json, scopes_json, remote_ip, silent, is_repair, ts) VALUES ('req-sql', ?, ?, 'linux', 'cli', 'cli', 'operator', '[\"operator\"]', '[\"operator.read\"]', '203.0.113.7', 0, 0, ?)")
            .bind(erin.id().to_string()).bind(erin.public_key().to_base64url()).bind(now - 1_000)
            .execute(&mut conn).await.unwrap();
        sqlx::query("INSERT INTO subagent_runs (run_id, child_session_key, requester_session_key, created_at, payload_json) VALUES ('run-sql', 'agent:main:subagent:s', 'agent:main:main', 1700000001000, ?)")
            .bind(run_record("run-sql", "agent:main:subagent:s", true).to_string())
            .execute(&mut conn).await.unwrap();
        // Closed, not dropped: the checkpoint into the main file happens now, before the snapshot below.
        sqlx::Connection::close(conn).await.unwrap();
    }
    let before = std::fs::read(&db).unwrap();
    let server = Server::start_with(pairgate::server::Config {
        trusted_proxies: vec!["127.0.0.1".parse().unwrap()],
        ..Default::default()
    })
    .await;
    let report = openclaw::import(&server.store, state.path(), false, now).await.unwrap();
    println!("import report (2026.9 SQLite): {}", serde_json::to_string(&report).unwrap());
    assert_eq!(report.sources, ["state/openclaw.sqlite"]);
    let counts = serde_json::to_value(&report.imported).unwrap();
    assert_eq!(counts, json!({"devices": 2, "grants": 2, "tokens": 2, "requests": 1, "sessions": 2, "runs": 1}));
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_devices_keep_working(
        &server,
        &[(&carol, "oc-carol", &["operator.write"]), (&dave, "oc-dave", &["operator.pairing"])],
    )
    .await;
    assert!(std::fs::read(&db).unwrap() == before, "the OpenClaw database was opened read-only");
    assert!(openclaw::import(&server.store, state.path(), false, now).await.unwrap().imported.is_empty());
    let files: Vec<String> = std::fs::read_dir(db.parent().unwrap())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, ["openclaw.sqlite"], "nothing was written beside the WAL-mode source (no -wal, no -shm)");
}

/// State written by the real OpenClaw 2026.9.6 gateway (see tests/fixtures/openclaw-2026.9.6/README.md):
/// after the import, its devices connect to pairgate with the tokens that gateway issued, no pairing.
#[tokio::test]
async fn state_made_by_the_real_openclaw_2026_9_6_gateway_imports_with_working_tokens() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/openclaw-2026.9.6");
    let state = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(state.path().join("state")).unwrap();
    std::fs::copy(fixture.join("state/openclaw.sqlite"), state.path().join("state/openclaw.sqlite")).unwrap();
    let devices: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("devices.json")).unwrap()).unwrap();

    let server = Server::start_with(pairgate::server::Config {
        trusted_proxies: vec!["127.0.0.1".parse().unwrap()],
        ..Default::default()
    })
    .await;
    let report = openclaw::import(&server.store, state.path(), false, server.now()).await.unwrap();
    println!("import report (real OpenClaw 2026.9.6 gateway): {}", serde_json::to_string(&report).unwrap());
    assert_eq!(report.sources, ["state/openclaw.sqlite"]);
    assert_eq!(report.imported.devices, 2, "{:?}", report);
    assert_eq!(report.imported.tokens, 2);
    for entry in &devices {
        let device = Device::new(entry["seed"].as_u64().unwrap() as u8);
        let scopes: Vec<&str> = entry["scopes"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
        let mut expected = scopes.clone();
        expected.sort();
        let token = entry["token"].as_str().unwrap();
        let attempt = Connect::cli().device(&device).scopes(&scopes).token(None).device_token(token);
        let (hello, _) = connect(&server, &attempt.via_proxy_for("198.51.100.2")).await.hello();
        assert_eq!(hello["auth"]["method"], "device-token");
        assert_eq!(hello["auth"]["scopes"], json!(expected), "the approved scopes are identical");
    }
    assert!(openclaw::import(&server.store, state.path(), false, server.now()).await.unwrap().imported.is_empty());
}

#[tokio::test]
async fn a_locked_openclaw_database_is_reported_and_nothing_is_written() {
    use sqlx::{ConnectOptions, Connection, sqlite::SqliteConnectOptions};
    let state = tempfile::tempdir().unwrap();
    let db = state.path().join("state/openclaw.sqlite");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    // A writer holding an exclusive lock (rollback journal, as a busy writer without WAL would).
    let mut holder = SqliteConnectOptions::new()
        .filename(&db)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Delete)
        .connect()
        .await
        .unwrap();
    sqlx::query("CREATE TABLE device_pairing_paired (device_id TEXT PRIMARY KEY)").execute(&mut holder).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE").execute(&mut holder).await.unwrap();
    let server = Server::start().await;
    let error = openclaw::import(&server.store, state.path(), false, server.now()).await.unwrap_err();
    assert!(error.to_string().contains("is locked by another process"), "{error}");
    assert!(error.to_string().contains("nothing was imported"), "{error}");
    assert!(server.store.paired_devices().await.unwrap().is_empty());
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    holder.close().await.unwrap();
}
