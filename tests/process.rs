//! The real binary: start with no configuration, refuse bad databases and a second server, stop
//! cleanly on SIGTERM, and keep everything across SIGKILL restarts (the seed scenario, end to end).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::processes::*;
use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

/// The load generator is a crate of its own (`crates/loadgen`); `cargo test --workspace` builds its binary
/// beside this package's, because that crate has an integration test of its own.
fn loadgen_bin() -> PathBuf {
    let bin = Path::new(BIN).with_file_name("pairgate-loadgen");
    assert!(
        bin.exists(),
        "{} is missing: run the suite with `cargo test --workspace` (bash scripts/test)",
        bin.display()
    );
    bin
}

async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response.split(' ').nth(1).unwrap().parse().unwrap();
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}

fn now_ms() -> i64 {
    use pairgate::clock::Clock;
    pairgate::clock::SystemClock.now_ms()
}

#[tokio::test]
async fn serve_without_configuration_creates_its_database_and_token_file() {
    let home = tempfile::tempdir().unwrap();
    let server = serve(home.path(), &[], "first.log").await;
    let db = home.path().join(".local/share/pairgate/pairgate.db");
    let token_file = home.path().join(".local/share/pairgate/pairgate.db.gateway-token");
    assert!(db.exists(), "the database is in the platform data directory");
    // Log lines are written by a thread of their own: wait for the last one of the start.
    server.wait_for_log("listening").await;
    let log = server.stderr();
    assert!(log.contains(&db.display().to_string()), "the log names the database: {log}");
    assert!(log.contains(&token_file.display().to_string()), "the log names the token file: {log}");

    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777, 0o600);
    let token = std::fs::read_to_string(&token_file).unwrap().trim().to_owned();
    assert_eq!(token.len(), 43);
    assert!(!log.contains(&token), "the token is never logged");
    let db_bytes = std::fs::read(&db).unwrap();
    assert!(!db_bytes.windows(token.len()).any(|w| w == token.as_bytes()), "only the token's hash is stored");

    assert_eq!(http_get(server.addr, "/healthz").await, (200, r#"{"ok":true}"#.to_owned()));
    assert_eq!(http_get(server.addr, "/readyz").await.0, 200);
    let attempt = Connect::cli().token(Some(&token));
    connect_url(&server.url(), &attempt, now_ms()).await.hello();
    let (error, _) = connect_url(&server.url(), &Connect::cli().token(Some("wrong")), now_ms()).await.refused();
    assert_eq!(error["details"]["code"], "AUTH_TOKEN_MISMATCH");

    // A second server on the same database is refused at once.
    let (ok, _, stderr) = pairgate(home.path(), &["serve", "--listen", "127.0.0.1:0"]).await;
    assert!(!ok);
    assert!(stderr.contains("another pairgate serve is running"), "{stderr}");

    // SIGTERM: live sockets are closed with 1001 and the process exits cleanly.
    let (_, mut ws) = connect_url(&server.url(), &attempt, now_ms()).await.hello();
    let status = server.terminate().await;
    assert_eq!(expect_close(&mut ws).await.map(|(code, _)| code), Some(1001));
    assert!(status.success());

    // After a restart the generated token still works (verified against its stored hash).
    let server = serve(home.path(), &[], "second.log").await;
    connect_url(&server.url(), &attempt, now_ms()).await.hello();
    assert_eq!(std::fs::read_to_string(&token_file).unwrap().trim(), token, "the token is not regenerated");
    server.kill9().await;
}

#[tokio::test]
async fn serve_refuses_bad_databases_with_one_clear_line() {
    let home = tempfile::tempdir().unwrap();
    let not_sqlite = home.path().join("notes.txt");
    std::fs::write(&not_sqlite, "hello").unwrap();
    let db_arg = not_sqlite.display().to_string();
    let (ok, _, stderr) =
        pairgate(home.path(), &["serve", "--db", &db_arg, "--listen", "127.0.0.1:0", "--token", "t"]).await;
    assert!(!ok);
    let last = stderr.lines().last().unwrap();
    assert_eq!(
        last,
        format!("pairgate: {db_arg} is not a SQLite database; point --db at a pairgate database or a new path")
    );
    assert_eq!(std::fs::read_to_string(&not_sqlite).unwrap(), "hello");

    // `migrate status` only looks: a mistyped path is an error naming it, and nothing is created.
    let new_db = home.path().join("new.db").display().to_string();
    let (ok, _, stderr) = pairgate(home.path(), &["migrate", "status", "--db", &new_db]).await;
    assert!(!ok);
    assert!(stderr.contains(&format!("there is no database at {new_db}")), "{stderr}");
    assert!(!home.path().join("new.db").exists());
    let (ok, _, stderr) = pairgate(home.path(), &["migrate", "up", "--db", &new_db]).await;
    assert!(ok, "{stderr}");
    let (ok, stdout, _) = pairgate(home.path(), &["migrate", "status", "--db", &new_db]).await;
    assert!(ok);
    assert!(stdout.contains("0001 initial schema") && stdout.contains("applied"), "{stdout}");
}

/// A database URL is never taken for a path (before PostgreSQL support, `postgres://…` made a directory
/// named `postgres:`): a PostgreSQL that cannot be reached, and a scheme pairgate does not know, are
/// refused by every command with one clear line; nothing is made, and the URL's password is never shown.
#[tokio::test]
async fn a_database_url_is_never_a_path_and_its_password_never_shows() {
    let home = tempfile::tempdir().unwrap();
    let password = "pw-never-shown-7731";
    // Port 9 (discard): nothing listens there.
    let postgres = format!("postgres://pairgate:{password}@127.0.0.1:9/pairgate");
    let mysql = format!("mysql://root:{password}@127.0.0.1/pairgate");
    let commands: &[&[&str]] = &[
        &["serve", "--listen", "127.0.0.1:0", "--token", "t-for-every-node"],
        &["migrate", "up"],
        &["migrate", "status"],
        &["devices", "list"],
        &["export"],
        &["backup", "--to", "b.db"],
        &["import", "openclaw", "--state-dir", "."],
    ];
    for url in [&postgres, &mysql] {
        for args in commands {
            // The URL in the environment: on the command line a password is refused (see below).
            let mut command = command(home.path());
            command.current_dir(home.path()).args(*args).env("PAIRGATE_DB", url.as_str());
            let output = command.output().await.unwrap();
            let stderr = String::from_utf8(output.stderr).unwrap();
            assert!(!output.status.success(), "{args:?} {url}");
            let wanted = match (url == &postgres, args[0]) {
                (true, "backup") => {
                    "pairgate: postgres://pairgate:***@127.0.0.1:9/pairgate: pairgate does not copy a \
                                     PostgreSQL database; back it up with PostgreSQL's own tools: pg_dump"
                }
                (true, _) => "pairgate: cannot reach postgres://pairgate:***@127.0.0.1:9/pairgate: ",
                (false, _) => {
                    "pairgate: --db mysql://root:***@127.0.0.1/pairgate: pairgate does not know the URL scheme `mysql:`"
                }
            };
            assert!(stderr.lines().last().unwrap_or("").starts_with(wanted), "{args:?}: {stderr}");
            assert!(!stderr.contains(password), "{args:?}: the password is shown: {stderr}");
            let made: Vec<_> = std::fs::read_dir(home.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert!(made.is_empty(), "{args:?} {url} made {made:?}");
        }
    }
    // A password on the command line is readable by every local user (ps): refused, saying where it goes.
    for db in [format!("--db={postgres}"), postgres.clone()] {
        let mut command = command(home.path());
        let args: Vec<&str> = if db.starts_with("--db=") { vec![db.as_str()] } else { vec!["--db", db.as_str()] };
        let output = command.current_dir(home.path()).args(["devices", "list"]).args(args).output().await.unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(!output.status.success());
        assert!(stderr.contains("PGPASSWORD") && !stderr.contains(password), "{stderr}");
    }
}

/// Looking changes nothing: on an older schema, `migrate status` and `migrate verify` report what is
/// pending and every other reading command refuses with one line, the file's bytes unchanged and no file
/// beside it; a mistyped path is an error naming it; a newer database refused by `serve` stays
/// byte-for-byte the same.
#[tokio::test]
async fn commands_that_only_read_change_nothing() {
    let home = tempfile::tempdir().unwrap();
    let db = home.path().join("v1.db");
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/schema-0001.db"), &db).unwrap();
    let db_arg = db.display().to_string();
    let before = std::fs::read(&db).unwrap();
    let listing = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| !name.ends_with("-wal") && !name.ends_with("-shm"))
            .collect();
        names.sort();
        names
    };
    let files_before = listing(home.path());

    let (ok, stdout, stderr) = pairgate(home.path(), &["migrate", "status", "--db", &db_arg]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("0002") && stdout.contains("pending"), "{stdout}");
    let (ok, stdout, stderr) = pairgate(home.path(), &["migrate", "verify", "--db", &db_arg]).await;
    assert!(ok, "{stdout}{stderr}");
    for args in [
        vec!["devices", "list"],
        vec!["sessions", "list"],
        vec!["audit"],
        vec!["export"],
        vec!["backup", "--to", "/nonexistent-dir/never.db"],
    ] {
        let mut full = args.clone();
        full.extend(["--db", db_arg.as_str()]);
        let (ok, _, stderr) = pairgate(home.path(), &full).await;
        assert!(!ok, "{args:?} refuses");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(last.contains("migration 0002") && last.contains("pairgate migrate up"), "{args:?}: {stderr}");
    }
    assert!(std::fs::read(&db).unwrap() == before, "the database's bytes are unchanged");
    assert_eq!(listing(home.path()), files_before, "no file appeared beside it (no backup, no lock)");

    let missing = home.path().join("typo/pairgate.db").display().to_string();
    for args in [vec!["devices", "list"], vec!["audit"], vec!["devices", "approve", "x"]] {
        let mut full = args.clone();
        full.extend(["--db", missing.as_str()]);
        let (ok, _, stderr) = pairgate(home.path(), &full).await;
        assert!(!ok);
        assert!(stderr.contains(&format!("there is no database at {missing}")), "{args:?}: {stderr}");
    }
    assert!(!home.path().join("typo").exists(), "nothing was created");

    // A newer database: refused by serve without a byte changed (it is not switched to WAL first).
    let newer = home.path().join("newer.db");
    std::fs::copy(&db, &newer).unwrap();
    let raw = sqlx::SqlitePool::connect(&format!("sqlite:{}", newer.display())).await.unwrap();
    sqlx::query("INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (9999, 'future', 1, x'00', 0)")
        .execute(&raw)
        .await
        .unwrap();
    raw.close().await;
    let newer_bytes = std::fs::read(&newer).unwrap();
    let newer_arg = newer.display().to_string();
    let (ok, _, stderr) =
        pairgate(home.path(), &["serve", "--db", &newer_arg, "--listen", "127.0.0.1:0", "--token", "t"]).await;
    assert!(!ok);
    assert!(stderr.contains("newer than this pairgate"), "{stderr}");
    assert!(std::fs::read(&newer).unwrap() == newer_bytes, "the newer database is untouched");
}

/// The seed bug (docs/protocol.md §8) end to end, with a SIGKILL between every step.
#[tokio::test]
async fn seed_scenario_survives_sigkill_restarts() {
    let home = tempfile::tempdir().unwrap();
    let db = home.path().join("seed.db").display().to_string();
    let args = ["--db", db.as_str(), "--token", TOKEN, "--trusted-proxy", "127.0.0.1"];
    let device = Device::new(42);

    // An earlier call paired the gateway's shared identity at operator.read.
    let server = serve(home.path(), &args, "1.log").await;
    connect_url(&server.url(), &Connect::cli().device(&device), now_ms()).await.hello();
    server.kill9().await;

    // The sub-agent spawn: the loopback backend asks read, then admin; neither is blocked.
    let server = serve(home.path(), &args, "2.log").await;
    let backend = Connect::backend().device(&device);
    let (hello, _ws) = connect_url(&server.url(), &backend.clone().scopes(&["operator.read"]), now_ms()).await.hello();
    assert_eq!(hello["auth"]["scopes"], json!(["operator.read"]));
    let (hello, _ws) = connect_url(&server.url(), &backend.clone().scopes(&["operator.admin"]), now_ms()).await.hello();
    assert_eq!(hello["auth"]["scopes"], json!(["operator.admin"]));
    server.kill9().await;

    // The same upgrade from a remote address: an approvable request, not a dead end.
    let server = serve(home.path(), &args, "3.log").await;
    let remote = backend.clone().scopes(&["operator.admin"]).via_proxy_for("203.0.113.77");
    let (error, close) = connect_url(&server.url(), &remote, now_ms()).await.refused();
    assert_eq!(error["code"], "NOT_PAIRED");
    assert_eq!(error["details"]["reason"], "scope-upgrade");
    assert_eq!(close.unwrap().0, 1008);
    let request_id = error["details"]["requestId"].as_str().unwrap().to_owned();
    server.kill9().await;

    // After the crash the request is still there; the operator approves it with the offline CLI while
    // the server runs.
    let server = serve(home.path(), &args, "4.log").await;
    let (ok, listing, stderr) = pairgate(home.path(), &["devices", "list", "--json", "--db", &db]).await;
    assert!(ok, "{stderr}");
    let listing: Value = serde_json::from_str(&listing).unwrap();
    assert_eq!(listing["pending"][0]["requestId"], request_id);
    assert_eq!(listing["pending"][0]["scopes"], json!(["operator.admin"]));
    assert_eq!(listing["paired"][0]["scopes"], json!(["operator.read"]));
    let (ok, approved, stderr) =
        pairgate(home.path(), &["devices", "approve", &request_id, "--json", "--db", &db]).await;
    assert!(ok, "{stderr}");
    assert_eq!(serde_json::from_str::<Value>(&approved).unwrap()["decision"], "approved");
    // The running server sees the offline approval on the very next connect.
    connect_url(&server.url(), &remote, now_ms()).await.hello();
    server.kill9().await;

    // The approval survived the crash: the remote upgrade is let in, and nothing was lost.
    let server = serve(home.path(), &args, "5.log").await;
    let (hello, _ws) = connect_url(&server.url(), &remote, now_ms()).await.hello();
    assert_eq!(hello["auth"]["scopes"], json!(["operator.admin"]));
    let (ok, listing, _) = pairgate(home.path(), &["devices", "list", "--json", "--db", &db]).await;
    assert!(ok);
    let listing: Value = serde_json::from_str(&listing).unwrap();
    assert_eq!(listing["pending"], json!([]));
    assert_eq!(listing["paired"][0]["scopes"], json!(["operator.admin", "operator.read"]));
    server.kill9().await;
}

/// The load generator must keep working against a real server (its figures are reported, not asserted).
#[tokio::test]
async fn load_generator_smoke_run() {
    let home = tempfile::tempdir().unwrap();
    let db = home.path().join("load.db").display().to_string();
    let server = serve(
        home.path(),
        &["--db", &db, "--token", TOKEN, "--trusted-proxy", "127.0.0.1", "--tick-interval-ms", "200"],
        "load.log",
    )
    .await;
    let url = server.url();
    let loadgen = || {
        let mut command = Command::new(loadgen_bin());
        command.args(["--token", TOKEN, "--max-seconds", "30"]);
        command
    };
    let output = Command::new(loadgen_bin())
        .args(["--url", &url, "--token", TOKEN, "--devices", "4", "--concurrency", "4", "--count", "40"])
        .args(["--max-seconds", "30", "--json"])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["handshakes"], 40, "{report}");
    assert_eq!(report["errors"], json!({}));
    assert!(report["latencyMs"]["p50"].as_f64().unwrap() > 0.0);

    for mode in [["--mode", "rate", "--rate", "200"], ["--mode", "approvals", "--rate", "0"]] {
        let output = Command::new(loadgen_bin())
            .args(["--url", &url, "--token", TOKEN, "--devices", "2", "--concurrency", "2", "--count", "10"])
            .args(mode)
            .args(["--max-seconds", "30", "--json"])
            .output()
            .await
            .unwrap();
        assert!(output.status.success(), "{mode:?}: {}", String::from_utf8_lossy(&output.stderr));
        let report: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!((report["completed"].as_u64(), &report["errors"]), (Some(10), &json!({})), "{mode:?}: {report}");
    }

    // Idle sockets: all open, all ticked while held, the server's memory and CPU read from /proc.
    let pid = server.child.id().unwrap().to_string();
    let output = loadgen()
        .args(["--url", &url, "--mode", "idle", "--devices", "2", "--count", "20", "--hold-seconds", "1"])
        .args(["--server-pid", &pid])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "idle: {}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!((report["sockets"].as_u64(), &report["errors"]), (Some(20), &json!({})), "{report}");
    assert!(report["ticksReceived"].as_u64().unwrap() >= 20, "every idle socket was ticked: {report}");
    assert!(report["serverRssKiB"]["allOpen"].as_u64().unwrap() > 0, "{report}");
    assert!(report["serverCpuPercentWhileIdle"].as_f64().is_some(), "{report}");

    // Seeding a database through the store's import API, in transactions of 10,000.
    let seeded = home.path().join("seeded.db");
    let output = loadgen()
        .args(["--mode", "seed", "--count", "12000", "--db", seeded.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "seed: {}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["added"], 12000, "{report}");
    let (ok, out, err) = pairgate(home.path(), &["migrate", "verify", "--db", seeded.to_str().unwrap()]).await;
    assert!(ok, "{out}{err}");

    // Cold start: the generator starts the server itself, twice, and stops it after its first hello-ok.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cold_db = home.path().join("cold.db");
    let spawn = format!("{BIN} serve --db {} --listen 127.0.0.1:{port} --token {TOKEN}", cold_db.display());
    let output = loadgen()
        .args(["--url", &format!("ws://127.0.0.1:{port}/"), "--mode", "cold-start", "--runs", "2", "--spawn", &spawn])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "cold-start: {}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{report}");
    assert!(runs.iter().all(|run| run["ms"].as_f64().unwrap() > 0.0 && run["exit"] == 0), "{report}");

    server.kill9().await;
}

/// An approval acknowledged by the REST API survives a SIGKILL right after the 200.
#[tokio::test]
async fn a_rest_approval_survives_sigkill_right_after_the_reply() {
    let home = tempfile::tempdir().unwrap();
    let db = home.path().join("durable.db").display().to_string();
    let args = ["--db", db.as_str(), "--token", TOKEN, "--trusted-proxy", "127.0.0.1"];
    let device = Device::new(90);
    let remote = Connect::cli().device(&device).via_proxy_for("203.0.113.90");

    let server = serve(home.path(), &args, "1.log").await;
    let (error, _) = connect_url(&server.url(), &remote, now_ms()).await.refused();
    let request_id = error["details"]["requestId"].as_str().unwrap().to_owned();
    let response = reqwest::Client::new()
        .post(format!("http://{}/api/v1/requests/{request_id}/approve", server.addr))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.kill9().await;

    let server = serve(home.path(), &args, "2.log").await;
    connect_url(&server.url(), &remote, now_ms()).await.hello();
    server.kill9().await;
}

/// The offline CLI changes the database of a running server, which sees each change on the next connect.
#[tokio::test]
async fn offline_cli_manages_tokens_devices_and_audit_while_serving() {
    let home = tempfile::tempdir().unwrap();
    let db = home.path().join("offline.db").display().to_string();
    let server = serve(home.path(), &["--db", &db, "--token", TOKEN, "--metrics-open", "true"], "serve.log").await;
    let device = Device::new(91);
    let id = device.id().to_string();
    let (hello, _) = connect_url(&server.url(), &Connect::cli().device(&device), now_ms()).await.hello();
    let token = hello["auth"]["deviceToken"].as_str().unwrap().to_owned();
    let with_token = Connect::cli().device(&device).token(None).device_token(&token);
    // Connected twice more, the device's record is now answered from the server's cache...
    connect_url(&server.url(), &with_token, now_ms()).await.hello();
    connect_url(&server.url(), &with_token, now_ms()).await.hello();
    let (_, metrics) = http_get(server.addr, "/metrics").await;
    let hits = metrics.lines().find_map(|line| line.strip_prefix("pairgate_device_cache_hits_total "));
    assert!(hits.is_some_and(|hits| hits.trim().parse::<u64>().unwrap() >= 1), "{metrics}");
    // ...and a revocation by another process is still seen on the next connect.

    let (ok, out, err) =
        pairgate(home.path(), &["tokens", "revoke", "--device", &id, "--role", "operator", "--json", "--db", &db])
            .await;
    assert!(ok, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["role"], "operator");
    let (error, _) = connect_url(&server.url(), &with_token, now_ms()).await.refused();
    assert_eq!(error["details"]["code"], "AUTH_DEVICE_TOKEN_MISMATCH");

    let (ok, out, err) = pairgate(
        home.path(),
        &["tokens", "rotate", "--device", &id, "--role", "operator", "--scopes", "operator.read", "--db", &db],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("gets a new one on its next connect"), "{out}");
    let (ok, _, err) =
        pairgate(home.path(), &["tokens", "revoke", "--device", &id, "--role", "node", "--db", &db]).await;
    assert!(!ok);
    assert!(err.contains("not found"), "{err}");

    let (ok, out, err) = pairgate(home.path(), &["devices", "remove", &id, "--json", "--db", &db]).await;
    assert!(ok, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["deviceId"], id.as_str());
    let (ok, _, err) = pairgate(home.path(), &["devices", "remove", &id, "--db", &db]).await;
    assert!(!ok && err.contains("not found"), "{err}");

    let (ok, out, _) = pairgate(home.path(), &["audit", "--json", "--limit", "3", "--db", &db]).await;
    assert!(ok);
    let audit: Value = serde_json::from_str(&out).unwrap();
    let actions: Vec<&str> = audit.as_array().unwrap().iter().map(|row| row["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["device.remove", "token.rotate", "token.revoke"]);
    // The OS account of the process's uid, though the command ran with no USER or LOGNAME at all (or
    // `uid:N` for a uid without an account).
    let id = |flag: &str| std::process::Command::new("id").arg(flag).output().unwrap();
    let (named, uid) = (id("-un"), id("-u"));
    let account = match named.status.success() {
        true => String::from_utf8(named.stdout).unwrap().trim().to_owned(),
        false => format!("uid:{}", String::from_utf8(uid.stdout).unwrap().trim()),
    };
    assert_eq!(audit[0]["actor"], format!("cli:{account}"));
    let (ok, out, _) = pairgate(home.path(), &["audit", "--db", &db]).await;
    assert!(ok && out.lines().count() >= 4 && out.contains("device.approve.silent"), "{out}");
    // Filtered as the REST API filters: by device, and by an action's family.
    let device_id = device.id().to_string();
    let filtered = ["audit", "--json", "--device", &device_id, "--action", "token.", "--db", &db];
    let (ok, out, err) = pairgate(home.path(), &filtered).await;
    assert!(ok, "{err}");
    let audit: Value = serde_json::from_str(&out).unwrap();
    let actions: Vec<&str> = audit.as_array().unwrap().iter().map(|row| row["action"].as_str().unwrap()).collect();
    assert_eq!(actions.first(), Some(&"token.rotate"), "{out}");
    assert!(actions.iter().all(|action| action.starts_with("token.")), "{out}");
    assert!(audit.as_array().unwrap().iter().all(|row| row["subject"] == device_id.as_str()), "{out}");
    server.kill9().await;
}

/// `pairgate setup-code`, `setup-codes list|revoke` and `devices rename` on the database of a running
/// server: the code printed (with a terminal QR code) pairs a device through the server, and the secret is in
/// no log line of either process.
#[tokio::test]
async fn the_offline_cli_mints_lists_and_revokes_setup_codes_and_names_devices() {
    let home = tempfile::tempdir().unwrap();
    let db = home.path().join("setup.db").display().to_string();
    let server = serve(home.path(), &["--db", &db, "--token", TOKEN], "serve.log").await;
    let public_url = server.url();
    let (ok, _, err) = pairgate(home.path(), &["setup-code", "--db", &db]).await;
    assert!(!ok && err.contains("--url") && err.contains("PAIRGATE_PUBLIC_URL"), "{err}");

    let output = command(home.path())
        .env("PAIRGATE_PUBLIC_URL", &public_url)
        .args(["setup-code", "--access", "node", "--db", &db])
        .output()
        .await
        .unwrap();
    let (printed, cli_log) = (String::from_utf8(output.stdout).unwrap(), String::from_utf8(output.stderr).unwrap());
    assert!(output.status.success(), "{cli_log}");
    assert!(printed.contains('█') && printed.contains("openclaw node run --pair"), "{printed}");
    let code = printed.lines().map(str::trim).find(|line| line.starts_with("eyJ")).expect("the code").to_owned();
    let token = pairgate::domain::setup::SetupPayload::decode(&code).unwrap().bootstrap_token;

    let node =
        Connect { client_id: "node-host".into(), client_mode: "node".into(), role: "node".into(), ..Connect::cli() };
    let pi = Device::new(96);
    let (hello, _pi) =
        connect_url(&server.url(), &node.device(&pi).scopes(&[]).bootstrap_token(&token), now_ms()).await.hello();
    assert_eq!(hello["auth"]["method"], "bootstrap-token");

    let (ok, out, err) =
        pairgate(home.path(), &["setup-code", "--url", &public_url, "--access", "voice", "--json", "--db", &db]).await;
    assert!(ok, "{err}");
    let second: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(second["access"], "voice-node");
    let second_id = second["setupId"].as_str().unwrap();
    let (ok, out, err) = pairgate(home.path(), &["setup-codes", "list", "--json", "--db", &db]).await;
    assert!(ok, "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    let states: Vec<&str> = listed.as_array().unwrap().iter().map(|code| code["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["unused", "redeemed"], "{out}");
    assert!(!out.contains(&token), "a listing never shows a code");
    let (ok, out, err) = pairgate(home.path(), &["setup-codes", "revoke", second_id, "--db", &db]).await;
    assert!(ok && out.contains("revoked setup code"), "{out}{err}");
    let (ok, _, err) = pairgate(home.path(), &["setup-codes", "revoke", second_id, "--db", &db]).await;
    assert!(!ok && err.contains("already revoked"), "{err}");

    let id = pi.id().to_string();
    let (ok, out, err) = pairgate(home.path(), &["devices", "rename", &id, "Bench pi", "--db", &db]).await;
    assert!(ok && out.contains("Bench pi"), "{out}{err}");
    let (ok, out, _) = pairgate(home.path(), &["devices", "list", "--json", "--db", &db]).await;
    assert!(ok);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["paired"][0]["operatorLabel"], "Bench pi", "{out}");

    let server_log = server.stderr();
    assert!(server_log.contains("setup code redeemed"), "{server_log}");
    for log in [&server_log, &cli_log] {
        assert!(!log.contains(&code) && !log.contains(&token), "a secret in a log: {log}");
    }
    server.kill9().await;

    // A --public-url that cannot go in a code stops the server at its start, saying why.
    let (ok, _, err) =
        pairgate(home.path(), &["serve", "--db", &db, "--token", TOKEN, "--public-url", "ws://gw.example.com"]).await;
    assert!(!ok && err.contains("--public-url") && err.contains("wss://"), "{err}");
}

/// A crash while runs are running: after the restart they are interrupted (once), and a waiter that
/// reconnects gets that outcome.
#[tokio::test]
async fn runs_left_running_by_a_crash_are_interrupted_on_restart() {
    let home = tempfile::tempdir().unwrap();
    let db = home.path().join("runs.db").display().to_string();
    let args = ["--db", db.as_str(), "--token", TOKEN];
    let backend = Connect::backend().device(&Device::new(95)).scopes(&["operator.admin"]);
    let server = serve(home.path(), &args, "1.log").await;
    let (_, mut ws) = connect_url(&server.url(), &backend, now_ms()).await.hello();
    let mut run_ids = Vec::new();
    for name in ["one", "two"] {
        let key = format!("agent:main:subagent:{name}");
        let reply = call(&mut ws, "p", "sessions.patch", json!({"key": key, "spawnedBy": "agent:main:main"})).await;
        assert_eq!(reply["ok"], true, "{reply}");
        let params = json!({"childSessionKey": key, "requesterSessionKey": "agent:main:main", "task": "t"});
        let reply = call(&mut ws, "r", "subagents.register", params).await;
        let run_id = reply["payload"]["runId"].as_str().unwrap().to_owned();
        call(&mut ws, "s", "subagents.start", json!({"runId": run_id})).await;
        run_ids.push(run_id);
    }
    // A waiter is parked on the first run when the gateway dies.
    let (_, mut waiter) = connect_url(&server.url(), &backend, now_ms()).await.hello();
    send_json(&mut waiter, &json!({"type": "req", "id": "w", "method": "agent.wait", "params": {"runId": run_ids[0], "timeoutMs": 60_000}})).await;
    server.kill9().await;
    assert!(next_json(&mut waiter).await.is_none(), "the waiter's socket died with the gateway");

    let server = serve(home.path(), &args, "2.log").await;
    let (_, mut ws) = connect_url(&server.url(), &backend, now_ms()).await.hello();
    let waited = call(&mut ws, "w", "agent.wait", json!({"runId": run_ids[0], "timeoutMs": 60_000})).await;
    assert_eq!(waited["payload"]["status"], "error");
    assert_eq!(waited["payload"]["error"], "interrupted");
    assert_eq!(waited["payload"]["endedReason"], "gateway-restart");
    let listed = call(&mut ws, "l", "subagents.list", json!({"state": "interrupted"})).await;
    assert_eq!(listed["payload"]["runs"].as_array().unwrap().len(), 2);
    server.kill9().await;

    // A second restart finds nothing to recover: nothing is interrupted twice.
    let server = serve(home.path(), &args, "3.log").await;
    server.kill9().await;
    let (ok, audit, _) = pairgate(home.path(), &["audit", "--json", "--limit", "100", "--db", &db]).await;
    assert!(ok);
    let audit: Value = serde_json::from_str(&audit).unwrap();
    let interrupts: Vec<&Value> =
        audit.as_array().unwrap().iter().filter(|row| row["action"] == "run.interrupt").collect();
    assert_eq!(interrupts.len(), 1);
    assert_eq!(interrupts[0]["details"]["runs"].as_array().unwrap().len(), 2);
    println!("crash recovery: {}", interrupts[0]);

    // The offline CLI shows the sessions and their runs.
    let (ok, out, _) = pairgate(home.path(), &["sessions", "list", "--json", "--db", &db]).await;
    assert!(ok);
    let keys: Vec<String> = serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys, ["agent:main:main", "agent:main:subagent:one", "agent:main:subagent:two"]);
    let (ok, out, _) = pairgate(home.path(), &["sessions", "show", "agent:main:subagent:one", "--db", &db]).await;
    assert!(ok && out.contains("interrupted") && out.contains("gateway-restart"), "{out}");
    let (ok, _, err) = pairgate(home.path(), &["sessions", "kill", &run_ids[0], "--db", &db]).await;
    assert!(!ok && err.contains("cannot become killed"), "an ended run cannot be killed: {err}");
}

/// Backups are taken online; a restore is refused while a server holds the database and works after.
#[tokio::test]
async fn backup_while_serving_and_restore_after_stopping() {
    let home = tempfile::tempdir().unwrap();
    let db = home.path().join("live.db").display().to_string();
    let backup = home.path().join("copy.db").display().to_string();
    let server = serve(home.path(), &["--db", &db, "--token", TOKEN], "serve.log").await;
    let early = Device::new(96);
    connect_url(&server.url(), &Connect::cli().device(&early), now_ms()).await.hello();

    let (ok, out, err) = pairgate(home.path(), &["backup", "--to", &backup, "--db", &db]).await;
    assert!(ok, "{err}");
    assert!(out.contains("backed up"), "{out}");
    let (ok, _, err) = pairgate(home.path(), &["backup", "--to", &backup, "--db", &db]).await;
    assert!(!ok && err.contains("exists already"), "{err}");
    // Approved after the backup: gone once the backup is restored.
    let late = Device::new(97);
    connect_url(&server.url(), &Connect::cli().device(&late), now_ms()).await.hello();

    let (ok, _, err) = pairgate(home.path(), &["restore", "--from", &backup, "--db", &db]).await;
    assert!(!ok && err.contains("another pairgate serve is running"), "{err}");
    let (ok, out, _) = pairgate(home.path(), &["migrate", "verify", "--db", &db]).await;
    assert!(ok && out.contains("ok (checksums, integrity_check, foreign_key_check, schema objects)"), "{out}");
    server.terminate().await;

    let (ok, out, err) = pairgate(home.path(), &["restore", "--from", &backup, "--db", &db]).await;
    assert!(ok, "{err}");
    assert!(out.contains("is kept in"), "the replaced database is kept: {out}");
    let (ok, listing, _) = pairgate(home.path(), &["devices", "list", "--json", "--db", &db]).await;
    assert!(ok);
    let listing: Value = serde_json::from_str(&listing).unwrap();
    let ids: Vec<&str> =
        listing["paired"].as_array().unwrap().iter().map(|d| d["deviceId"].as_str().unwrap()).collect();
    assert_eq!(ids, [early.id().as_str()]);

    let not_a_db = home.path().join("junk.db");
    std::fs::write(&not_a_db, "junk").unwrap();
    let (ok, _, err) =
        pairgate(home.path(), &["restore", "--from", &not_a_db.display().to_string(), "--db", &db]).await;
    assert!(!ok && err.contains("is not a usable backup"), "{err}");
}

/// Everything pairgate writes that holds a secret or a digest is 0600 whatever the umask: the database and
/// its -wal and -shm, the token file, backups (the automatic one too), exports and restored databases.
#[tokio::test]
async fn files_with_secrets_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("data");
    let db = dir.join("pairgate.db");
    let db_arg = db.display().to_string();
    let server =
        serve_from(command_under_umask(home.path(), "000"), home.path(), &["--db", &db_arg], "umask.log").await;
    for suffix in ["", "-wal", "-shm", ".gateway-token"] {
        let file = PathBuf::from(format!("{db_arg}{suffix}"));
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    let run = |args: Vec<String>| {
        let mut command = command_under_umask(home.path(), "000");
        command.args(args);
        async move {
            let output = command.output().await.unwrap();
            assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        }
    };
    let backup = home.path().join("backup.db");
    run(vec!["backup".into(), "--to".into(), backup.display().to_string(), "--db".into(), db_arg.clone()]).await;
    assert_eq!(mode(&backup), 0o600, "backup");
    let export = home.path().join("export.json");
    run(vec!["export".into(), "--out".into(), export.display().to_string(), "--db".into(), db_arg.clone()]).await;
    assert_eq!(mode(&export), 0o600, "export");
    server.kill9().await;

    let restored = home.path().join("restored.db");
    let (from, to) = (backup.display().to_string(), restored.display().to_string());
    run(vec!["restore".into(), "--from".into(), from, "--db".into(), to]).await;
    assert_eq!(mode(&restored), 0o600, "restored database");

    // An export never writes through a planted link, nor over an existing file.
    let planted = home.path().join("planted.json");
    std::os::unix::fs::symlink(home.path().join("elsewhere"), &planted).unwrap();
    let output = command(home.path())
        .args(["export", "--out", planted.to_str().unwrap(), "--db", &db_arg])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(!home.path().join("elsewhere").exists());
}

/// No log level prints a secret: not the gateway token a client presents, not a device token.
#[tokio::test]
async fn no_log_level_prints_a_token() {
    for (run, rust_log) in ["trace", "tungstenite=trace,tokio_tungstenite=trace,trace"].into_iter().enumerate() {
        let home = tempfile::tempdir().unwrap();
        let db = home.path().join("trace.db").display().to_string();
        let mut command = command(home.path());
        command.env("RUST_LOG", rust_log);
        let server = serve_from(command, home.path(), &["--db", &db, "--token", TOKEN], "trace.log").await;
        let device = Device::new(95 + run as u8);
        let (hello, ws) = connect_url(&server.url(), &Connect::cli().device(&device), now_ms()).await.hello();
        drop(ws);
        let device_token = hello["auth"]["deviceToken"].as_str().unwrap().to_owned();
        let again = Connect::cli().device(&device).token(None).device_token(&device_token);
        connect_url(&server.url(), &again, now_ms()).await.hello();
        let (status, _) = http_get_with_bearer(server.addr, "/api/v1/devices", TOKEN).await;
        assert_eq!(status, 200);
        // The log's writer runs behind: everything up to the last request is written once it is.
        server.wait_for_log("/api/v1/devices").await;
        let log = server.stderr();
        assert!(log.len() > 1000, "RUST_LOG={rust_log}: trace logging is on: {} bytes", log.len());
        let leaks: Vec<&str> =
            log.lines().filter(|line| line.contains(TOKEN) || line.contains(&device_token)).collect();
        assert!(leaks.is_empty(), "RUST_LOG={rust_log}: a token is in the log:\n{}", leaks.join("\n"));
        server.kill9().await;
    }
}

async fn http_get_with_bearer(addr: SocketAddr, path: &str, token: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response.split(' ').nth(1).unwrap().parse().unwrap();
    (status, response.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned())
}

/// A secret can come from a file, so that no command line (which `ps` shows every local user) holds it.
#[tokio::test]
async fn the_gateway_token_can_come_from_a_file() {
    let home = tempfile::tempdir().unwrap();
    let token_file = home.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let db = home.path().join("file.db").display().to_string();
    let server = serve(home.path(), &["--db", &db, "--token-file", token_file.to_str().unwrap()], "file.log").await;
    connect_url(&server.url(), &Connect::cli(), now_ms()).await.hello();
    let wrong = Connect::cli().token(Some("not-the-token"));
    let (error, _) = connect_url(&server.url(), &wrong, now_ms()).await.refused();
    assert_eq!(error["details"]["code"], "AUTH_TOKEN_MISMATCH");
    assert!(!home.path().join("file.db.gateway-token").exists(), "no token is generated");
    server.kill9().await;

    std::fs::write(&token_file, "\n").unwrap();
    let (ok, _, stderr) =
        pairgate(home.path(), &["serve", "--db", &db, "--token-file", token_file.to_str().unwrap()]).await;
    assert!(!ok);
    assert!(stderr.contains("is empty"), "{stderr}");
}

/// A backup doctored with an extra trigger (one that would grant admin on every new pairing request) is
/// refused by `restore`, and `migrate verify` names it.
#[tokio::test]
async fn a_doctored_backup_is_refused_and_verify_names_the_extra_object() {
    let home = tempfile::tempdir().unwrap();
    let (db, doctored) = (home.path().join("live.db"), home.path().join("doctored.db"));
    let (db_arg, doctored_arg) = (db.display().to_string(), doctored.display().to_string());
    let (ok, _, stderr) = pairgate(home.path(), &["migrate", "up", "--db", &doctored_arg]).await;
    assert!(ok, "{stderr}");
    let raw = sqlx::SqlitePool::connect(&format!("sqlite:{doctored_arg}")).await.unwrap();
    // Also under names a careless filter would skip: a LIKE pattern's `_` matches any character, and a
    // trigger may share the migrator's table's name.
    for name in ["grant_admin", "sqliteXgrant", "_sqlx_migrations"] {
        sqlx::query(&format!(
            "CREATE TRIGGER \"{name}\" AFTER INSERT ON pairing_requests
             BEGIN UPDATE pairing_requests SET scopes = '[\"operator.admin\"]' WHERE request_id = NEW.request_id; END"
        ))
        .execute(&raw)
        .await
        .unwrap();
    }
    raw.close().await;

    let (ok, out, _) = pairgate(home.path(), &["migrate", "verify", "--db", &doctored_arg]).await;
    assert!(!ok);
    for name in ["grant_admin", "sqliteXgrant", "_sqlx_migrations"] {
        assert!(out.contains(&format!("trigger {name} is not made by any migration")), "{name}: {out}");
    }
    let (ok, _, stderr) = pairgate(home.path(), &["restore", "--from", &doctored_arg, "--db", &db_arg]).await;
    assert!(!ok, "a doctored backup is not restored");
    assert!(stderr.contains("grant_admin"), "{stderr}");
    assert!(!db.exists(), "nothing was restored");
}

/// `import openclaw --dry-run` creates nothing: no database, no directory, when none existed.
#[tokio::test]
async fn an_import_dry_run_creates_nothing() {
    let home = tempfile::tempdir().unwrap();
    let state = home.path().join("openclaw");
    std::fs::create_dir_all(state.join("devices")).unwrap();
    std::fs::write(state.join("devices/paired.json"), "{}").unwrap();
    let db = home.path().join("not-yet/pairgate.db");
    let args =
        ["import", "openclaw", "--state-dir", state.to_str().unwrap(), "--dry-run", "--db", db.to_str().unwrap()];
    let (ok, out, err) = pairgate(home.path(), &args).await;
    assert!(ok, "{out}{err}");
    assert!(!home.path().join("not-yet").exists(), "the dry run made {}", db.display());
}

/// What clients chose is shown escaped in the CLI's tables: no escape sequence reaches the terminal.
#[tokio::test]
async fn cli_output_escapes_control_characters_from_clients() {
    let home = tempfile::tempdir().unwrap();
    let db = home.path().join("escape.db").display().to_string();
    let server = serve(home.path(), &["--db", &db, "--token", TOKEN], "escape.log").await;
    let hostile = Connect { client_id: "cli\u{1b}[2J".into(), ..Connect::cli().device(&Device::new(96)) };
    connect_url(&server.url(), &hostile, now_ms()).await.hello();
    let (ok, out, err) = pairgate(home.path(), &["devices", "list", "--db", &db]).await;
    assert!(ok, "{err}");
    assert!(!out.contains('\u{1b}'), "{out:?}");
    assert!(out.contains("cli\\u{1b}[2J"), "{out}");
    server.kill9().await;
}

/// SIGTERM ends the process within seconds, whatever its clients do: one stopped reading while the
/// server writes to it, one waits on a run, one never sent `connect`, one never sent a request.
#[tokio::test]
async fn sigterm_ends_the_process_within_seconds_whatever_clients_do() {
    let home = tempfile::tempdir().unwrap();
    let db = home.path().join("term.db").display().to_string();
    let server = serve(home.path(), &["--db", &db, "--token", TOKEN, "--tick-interval-ms", "600000"], "term.log").await;
    let url = server.url();

    let backend = Connect::backend().device(&Device::new(99)).scopes(&["operator.admin"]);
    let (_, mut waiter) = connect_url(&url, &backend, now_ms()).await.hello();
    let key = "agent:main:subagent:term";
    call(&mut waiter, "p", "sessions.patch", json!({"key": key, "spawnedBy": "agent:main:main"})).await;
    let params = json!({"childSessionKey": key, "requesterSessionKey": "agent:main:main", "task": "t"});
    let run_id = call(&mut waiter, "r", "subagents.register", params).await["payload"]["runId"].clone();
    call(&mut waiter, "s", "subagents.start", json!({"runId": run_id})).await;
    let wait =
        json!({"type": "req", "id": "w", "method": "agent.wait", "params": {"runId": run_id, "timeoutMs": 600_000}});
    send_json(&mut waiter, &wait).await;

    let (ws, nonce) = open_small_window(&url).await;
    let (_, mut stalled) = connect_on(ws, &nonce, &Connect::cli(), now_ms()).await.hello();
    stall_on_a_huge_reply(&mut stalled).await;
    let (_unconnected, _) = open(&url, &[]).await.unwrap();
    let _silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();

    let started = std::time::Instant::now();
    let status = server.terminate_within(Duration::from_secs(5)).await;
    let status = status.unwrap_or_else(|| panic!("still running 5 s after SIGTERM"));
    assert!(status.success(), "{status:?}");
    println!("exited {:?} after SIGTERM", started.elapsed());
    assert_eq!(expect_close(&mut waiter).await.map(|(code, _)| code), Some(1001));
}

/// When the process runs out of file descriptors, accept errors are logged and waited out (no spin,
/// no exit); connections that send nothing time out and give their descriptors back, and an honest
/// client is served again.
#[tokio::test]
async fn running_out_of_descriptors_neither_stops_nor_spins_the_server() {
    let home = tempfile::tempdir().unwrap();
    let db = home.path().join("fd.db").display().to_string();
    let args = ["--db", db.as_str(), "--token", TOKEN, "--header-read-timeout-ms", "500"];
    let server = serve_under(home.path(), Some("ulimit -n 64"), &args, "fd.log").await;
    let cpu_before = cpu_seconds(&server);
    let started = std::time::Instant::now();
    // More silent connections than the server has descriptors left.
    let mut silent = Vec::new();
    for _ in 0..100 {
        silent.push(tokio::net::TcpStream::connect(server.addr).await.unwrap());
    }
    server.wait_for_log("cannot accept a connection").await;
    // Still held by the client; yet the server serves again once their header timeout passes.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let answer = tokio::time::timeout(Duration::from_secs(5), async {
            let mut stream = tokio::net::TcpStream::connect(server.addr).await.ok()?;
            let request = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", server.addr);
            stream.write_all(request.as_bytes()).await.ok()?;
            let mut response = String::new();
            stream.read_to_string(&mut response).await.ok()?;
            Some(response)
        })
        .await;
        if let Ok(Some(response)) = answer
            && response.starts_with("HTTP/1.1 200")
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never served again:\n{}", server.stderr());
    }
    let cpu = cpu_seconds(&server) - cpu_before;
    let wall = started.elapsed().as_secs_f64();
    println!("out of descriptors for {wall:.1} s; the server used {cpu:.2} s of CPU");
    assert!(cpu < wall / 2.0, "the accept loop spun: {cpu:.2} s of CPU in {wall:.1} s");
    drop(silent);
    server.kill9().await;
}

/// Utime + stime of the server, in seconds (clock ticks of 100 Hz).
fn cpu_seconds(server: &Running) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", server.child.id().unwrap())).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// Connections beyond `--max-connections` are closed at once, with a log line saying why.
#[tokio::test]
async fn the_connection_cap_closes_extra_connections_and_says_so() {
    let home = tempfile::tempdir().unwrap();
    let db = home.path().join("cap.db").display().to_string();
    let server = serve(home.path(), &["--db", &db, "--token", TOKEN, "--max-connections", "1"], "cap.log").await;
    let _first = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut second = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(FRAME_WAIT, second.read(&mut buf)).await.expect("closed at once");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    server.wait_for_log("connection limit reached (1 open)").await;
    server.kill9().await;
}

/// 100 sockets that each send a maximal frame (25 MiB of `[0,0,…]`) before `connect`, and then a connected
/// socket that sends one after it, leave the server's peak resident memory (VmHWM) below 300 MiB.
/// `PAIRGATE_FLOOD_SOCKETS=N cargo test --test process maximal_frames -- --nocapture` prints the figures.
#[tokio::test]
async fn maximal_frames_before_and_after_connect_leave_the_server_small() {
    const MAX_PAYLOAD: usize = 25 * 1024 * 1024;
    const LIMIT_KIB: u64 = 300 * 1024;
    let sockets: usize = std::env::var("PAIRGATE_FLOOD_SOCKETS").ok().and_then(|n| n.parse().ok()).unwrap_or(100);
    let home = tempfile::tempdir().unwrap();
    let db = home.path().join("flood.db").display().to_string();
    // 4 GiB of address space: a regression fails this test instead of taking the machine's memory.
    let args = ["--db", db.as_str(), "--token", TOKEN, "--tick-interval-ms", "600000"];
    let server = serve_under(home.path(), Some("ulimit -v 4194304"), &args, "flood.log").await;
    let url = server.url();
    let started_kib = server.status_kib("VmHWM");

    // `[0,0,…,0]`, exactly `len` bytes (blanks before the `]` make up an odd byte).
    let zeros = |len: usize| {
        let mut payload = Vec::with_capacity(len);
        payload.push(b'[');
        while len - payload.len() > 4 {
            payload.extend_from_slice(b"0,");
        }
        payload.push(b'0');
        payload.resize(len - 1, b' ');
        payload.push(b']');
        payload
    };
    let mut before = frame_header(0x1, true, MAX_PAYLOAD as u64);
    before.extend(zeros(MAX_PAYLOAD));
    let before = std::sync::Arc::new(before);
    let mut floods = Vec::new();
    for _ in 0..sockets {
        let (url, before) = (url.clone(), before.clone());
        floods.push(tokio::spawn(async move {
            let (mut ws, _) = open(&url, &[]).await.unwrap();
            // The server closes as soon as it has read the header; the rest may not be written.
            let _ = write_raw(&mut ws, &before).await;
            expect_close(&mut ws).await
        }));
    }
    let mut closes = std::collections::BTreeMap::<String, usize>::new();
    for flood in floods {
        let close = flood.await.unwrap().map(|(code, reason)| format!("{code} {reason}"));
        *closes.entry(close.unwrap_or_else(|| "no close frame".into())).or_default() += 1;
    }
    let flooded_kib = server.status_kib("VmHWM");
    println!("{sockets} sockets with a 25 MiB frame before connect: closes {closes:?}");
    println!("server VmHWM: {started_kib} KiB at start, {flooded_kib} KiB after the flood");
    assert!(server.child.id().is_some() && http_get(server.addr, "/healthz").await.0 == 200);
    assert!(flooded_kib < LIMIT_KIB, "VmHWM {flooded_kib} KiB after the flood");

    // Connected, the whole payload limit: a frame of 25 MiB (less the envelope) is parsed without a tree.
    let (_, mut ws) = connect_url(&url, &Connect::cli(), now_ms()).await.hello();
    let envelope = r#"{"type":"req","id":"f","method":"health","params":}"#.len();
    let mut after = br#"{"type":"req","id":"f","method":"health","params":"#.to_vec();
    after.extend(zeros(MAX_PAYLOAD - envelope));
    after.push(b'}');
    assert_eq!(after.len(), MAX_PAYLOAD);
    write_raw(&mut ws, &frame(0x1, true, &after)).await.unwrap();
    let reply = next_json(&mut ws).await.expect("the health reply");
    assert_eq!((&reply["id"], &reply["ok"]), (&json!("f"), &json!(true)), "{reply}");
    let connected_kib = server.status_kib("VmHWM");
    println!("server VmHWM after a 25 MiB request from a connected socket: {connected_kib} KiB");
    assert!(connected_kib < LIMIT_KIB, "VmHWM {connected_kib} KiB after a connected 25 MiB frame");
    server.kill9().await;
}

/// A reader that goes away ends a command quietly, as Unix tools do: no panic, no backtrace.
#[tokio::test]
async fn a_closed_stdout_ends_a_command_quietly() {
    let home = tempfile::tempdir().unwrap();
    let db = home.path().join("pipe.db").display().to_string();
    // Far more output than a pipe holds, so that the writer meets the closed pipe.
    let seeded = Command::new(loadgen_bin())
        .args(["--token", TOKEN, "--mode", "seed", "--count", "3000", "--db", &db])
        .output()
        .await
        .unwrap();
    assert!(seeded.status.success(), "{}", String::from_utf8_lossy(&seeded.stderr));
    let script = format!("\"$0\" devices list --db '{db}' | head -c 1 >/dev/null");
    let output = Command::new("sh")
        .env_clear()
        .env("HOME", home.path())
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(["-c", &script, BIN])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{stderr}");
}

/// Decisions are logged at info with who, what and from where, and audited with where they came from; a
/// refused connect's log line names its pairing request.
#[tokio::test]
async fn decisions_are_logged_and_audited_with_where_they_came_from() {
    let home = tempfile::tempdir().unwrap();
    let db = home.path().join("logs.db").display().to_string();
    let args = ["--db", db.as_str(), "--token", TOKEN, "--trusted-proxy", "127.0.0.1"];
    let server = serve(home.path(), &args, "logs.log").await;
    let asks = [Device::new(97), Device::new(98)];
    let mut ids = Vec::new();
    for (n, device) in asks.iter().enumerate() {
        let remote = Connect::cli().device(device).via_proxy_for(&format!("203.0.113.{}", 97 + n));
        let (error, _) = connect_url(&server.url(), &remote, now_ms()).await.refused();
        ids.push(error["details"]["requestId"].as_str().unwrap().to_owned());
    }
    let client = reqwest::Client::new();
    for (id, decision) in ids.iter().zip(["approve", "reject"]) {
        let url = format!("http://{}/api/v1/requests/{id}/{decision}", server.addr);
        let response = client.post(url).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(response.status(), 200, "{decision}");
    }
    let (mut operator, _) = (
        connect_url(&server.url(), &Connect::cli().scopes(&["operator.pairing", "operator.read"]), now_ms())
            .await
            .hello()
            .1,
        (),
    );
    let reply = call(&mut operator, "r", "device.pair.remove", json!({"deviceId": asks[0].id()})).await;
    assert_eq!(reply["ok"], true, "{reply}");

    // The log's writer runs behind: the last decision's line comes last.
    server.wait_for_log("device removed").await;
    let log = server.stderr();
    assert!(!log.contains('\u{1b}'), "no colour escapes when stderr is a file");
    let line = |needle: &str| log.lines().find(|line| line.contains(needle)).unwrap_or_default().to_owned();
    for id in &ids {
        assert!(line("connect refused").contains("request=") && log.contains(&format!("request={id}")), "{log}");
    }
    let approved = line("pairing request approved");
    assert!(approved.contains("actor=rest:gateway") && approved.contains("remote=127.0.0.1"), "{approved}");
    assert!(approved.contains(&ids[0]) && approved.contains(asks[0].id().as_str()), "{approved}");
    assert!(line("pairing request rejected").contains(&ids[1]), "{log}");
    let removed = line("device removed");
    assert!(removed.contains("actor=socket:") && removed.contains("remote=127.0.0.1"), "{removed}");
    server.kill9().await;

    let (ok, audit, stderr) = pairgate(home.path(), &["audit", "--json", "--db", &db]).await;
    assert!(ok, "{stderr}");
    let rows: Vec<Value> = serde_json::from_str(&audit).unwrap();
    for action in ["pairing.approve", "pairing.reject", "device.remove"] {
        let row = rows.iter().find(|row| row["action"] == action).unwrap_or_else(|| panic!("{action} audited"));
        assert_eq!(row["remoteAddr"], "127.0.0.1", "{action}: {row}");
    }
}

/// The gateway token cannot be lost: after an import that brings another database's token hash, every
/// command and the server say that the token file does not hold it and how to make a new one;
/// `gateway-token new` writes a fresh token to the 0600 file (never printing it unless asked) and the
/// server takes it on its next start; `set` takes an operator's own value from standard input.
#[tokio::test]
async fn the_gateway_token_is_never_lost_and_can_be_made_again() {
    use std::os::unix::fs::PermissionsExt;
    let home = tempfile::tempdir().unwrap();
    let (first, second) = (home.path().join("first.db"), home.path().join("second.db"));
    let (first_db, second_db) = (first.display().to_string(), second.display().to_string());
    let second_file = home.path().join("second.db.gateway-token");
    let server = serve(home.path(), &["--db", &first_db], "first.log").await;
    let first_token = std::fs::read_to_string(home.path().join("first.db.gateway-token")).unwrap().trim().to_owned();
    server.terminate().await;
    let export = home.path().join("export.json").display().to_string();
    let (ok, _, err) = pairgate(home.path(), &["export", "--out", &export, "--db", &first_db]).await;
    assert!(ok, "{err}");

    // Imported with the export's token hash: no token file says so, at once and in the server's log.
    let args = ["import", "--format", "json", "--from", &export, "--replace-gateway-token", "--db", &second_db];
    let (ok, out, err) = pairgate(home.path(), &args).await;
    assert!(ok, "{err}");
    let missing = format!("its token file {} is missing", second_file.display());
    assert!(out.contains(&missing) && out.contains("pairgate gateway-token new --db"), "{out}");
    let (ok, _, err) = pairgate(home.path(), &["gateway-token", "check", "--db", &second_db]).await;
    assert!(!ok && err.contains(&missing), "{err}");
    let server = serve(home.path(), &["--db", &second_db], "imported.log").await;
    server.wait_for_log(&missing).await;
    assert!(!server.stderr().contains("its value is in the token file"), "{}", server.stderr());
    assert!(!second_file.exists(), "serve does not replace a token that clients may know");
    connect_url(&server.url(), &Connect::cli().token(Some(&first_token)), now_ms()).await.hello();
    server.terminate().await;

    // A new token: written to the file, 0600, never printed without --show.
    let (ok, out, err) = pairgate(home.path(), &["gateway-token", "new", "--db", &second_db]).await;
    assert!(ok, "{err}");
    let token = std::fs::read_to_string(&second_file).unwrap().trim().to_owned();
    assert_eq!(token.len(), 43);
    assert_eq!(std::fs::metadata(&second_file).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(out.contains(&second_file.display().to_string()) && !out.contains(&token) && !err.contains(&token));
    let (ok, out, _) = pairgate(home.path(), &["gateway-token", "check", "--db", &second_db]).await;
    assert!(ok && out.contains("holds this database's gateway token"), "{out}");
    let server = serve(home.path(), &["--db", &second_db], "renewed.log").await;
    server.wait_for_log("its value is in the token file").await;
    connect_url(&server.url(), &Connect::cli().token(Some(&token)), now_ms()).await.hello();
    let (error, _) = connect_url(&server.url(), &Connect::cli().token(Some(&first_token)), now_ms()).await.refused();
    assert_eq!(error["details"]["code"], "AUTH_TOKEN_MISMATCH", "the old token no longer works");
    server.terminate().await;

    // --show: the value alone on stdout, for a script.
    let (ok, out, err) = pairgate(home.path(), &["gateway-token", "new", "--show", "--db", &second_db]).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), std::fs::read_to_string(&second_file).unwrap().trim());
    assert!(err.contains(&second_file.display().to_string()), "{err}");

    // An operator's own value, from standard input; too short is refused and changes nothing.
    let set = |input: &'static str| {
        let mut command = command(home.path());
        command.args(["gateway-token", "set", "--from-file", "-", "--db", &second_db]);
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        async move {
            stdin.write_all(input.as_bytes()).await.unwrap();
            drop(stdin);
            let output = child.wait_with_output().await.unwrap();
            (output.status.success(), String::from_utf8(output.stderr).unwrap())
        }
    };
    let before = std::fs::read(&second_file).unwrap();
    let (ok, err) = set("short\n").await;
    assert!(!ok && err.contains("shorter than 16 characters"), "{err}");
    assert_eq!(std::fs::read(&second_file).unwrap(), before);
    let (ok, err) = set("my-own-long-gateway-token-value\n").await;
    assert!(ok, "{err}");
    let server = serve(home.path(), &["--db", &second_db], "own.log").await;
    connect_url(&server.url(), &Connect::cli().token(Some("my-own-long-gateway-token-value")), now_ms()).await.hello();
    server.terminate().await;

    // Restoring the first database brings its token hash back: the file beside it does not hold it.
    let (ok, out, err) = pairgate(home.path(), &["restore", "--from", &first_db, "--db", &second_db]).await;
    assert!(ok, "{err}");
    assert!(out.contains("does not hold this database's gateway token"), "{out}");

    // A mistyped path is an error that names it; nothing is created.
    let typo = home.path().join("typo.db").display().to_string();
    let (ok, _, err) = pairgate(home.path(), &["gateway-token", "new", "--db", &typo]).await;
    assert!(!ok && err.contains(&typo), "{err}");
    assert!(!home.path().join("typo.db").exists() && !home.path().join("typo.db.gateway-token").exists());
}

/// `serve` with stdout and stderr on one pipe (`pairgate serve 2>&1 | head -1`): the reader takes the first
/// line, then goes away (`head` exits) or stalls (a pager that stopped). Either way the server starts,
/// keeps serving while it logs far more than a pipe holds, and SIGTERM still ends it within seconds.
#[tokio::test]
async fn a_broken_or_stalled_log_pipe_neither_stops_nor_blocks_the_server() {
    use std::io::BufRead;
    for stalled in [false, true] {
        let home = tempfile::tempdir().unwrap();
        let db = home.path().join("piped.db").display().to_string();
        // The server's own line on stdout may never be read: it listens on a port chosen here.
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let (reader, writer) = std::io::pipe().unwrap();
        let mut command = command(home.path());
        command.env("RUST_LOG", "debug").args(["serve", "--db", &db, "--token", TOKEN, "--listen", &addr.to_string()]);
        command.stdout(writer.try_clone().unwrap()).stderr(writer).kill_on_drop(true);
        let mut child = command.spawn().unwrap();
        drop(command); // the parent's copies of the pipe's write end
        let reader = tokio::task::spawn_blocking(move || {
            let mut lines = std::io::BufReader::new(reader);
            lines.read_line(&mut String::new()).unwrap();
            lines
        })
        .await
        .unwrap();
        let kept = if stalled { Some(reader) } else { None };

        let serving = async {
            while tokio::net::TcpStream::connect(addr).await.is_err() {
                tokio::task::yield_now().await;
            }
            // Two log lines of about 160 bytes each per request: far more than a pipe's 64 KiB, and, with the
            // reader stalled, more than the log queue holds (which once made the process hang at exit).
            let requests = if stalled { pairgate::cli::logging::QUEUED_LINES } else { 500 };
            let client = reqwest::Client::new();
            let url = format!("http://{addr}/healthz");
            let mut pending = futures_util::stream::iter(0..requests)
                .map(|_| {
                    let (client, url) = (client.clone(), url.clone());
                    async move { client.get(&url).send().await.map(|answer| answer.status().as_u16()) }
                })
                .buffer_unordered(16);
            while let Some(status) = pending.next().await {
                assert_eq!(status.unwrap(), 200);
            }
            let (_, mut ws) = connect_url(&format!("ws://{addr}/"), &Connect::cli(), now_ms()).await.hello();
            assert_eq!(call(&mut ws, "h", "health", json!({})).await["ok"], true);
        };
        let served = tokio::time::timeout(START_WAIT, serving).await;
        assert!(served.is_ok(), "stalled: {stalled}: the server stopped answering while it logged");
        let pid = child.id().unwrap().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().await.unwrap().success());
        let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
        let status = status.unwrap_or_else(|_| panic!("stalled: {stalled}: still running 5 s after SIGTERM")).unwrap();
        assert!(status.success(), "stalled: {stalled}: {status}");
        drop(kept);
    }
}

/// A backup file whose last commits are still in its `-wal` (taken by copying a live database, say) is
/// restored whole: the restore reads it through SQLite, not by copying its main file.
#[tokio::test]
async fn a_restore_takes_what_is_still_in_the_backups_wal() {
    use pairgate::domain::{ClientMeta, DeviceId, PairingReason, PublicKey, Role, ScopeSet};
    use pairgate::store::{Actor, NewGrant};
    let home = tempfile::tempdir().unwrap();
    let (source, target) = (home.path().join("source.db"), home.path().join("target.db"));
    let store = open_sqlite(&source).await;
    let key = PublicKey::from_bytes([77; 32]);
    let device_id = DeviceId::from_public_key(&key);
    let grant = NewGrant {
        device_id: device_id.clone(),
        public_key: key,
        meta: ClientMeta { client_id: Some("cli".into()), ..ClientMeta::default() },
        remote_ip: None,
        role: Role::Operator,
        scopes: ScopeSet::parse(&["operator.read"]).unwrap(),
    };
    store.approve_silently(&grant, PairingReason::NotPaired, true, &Actor::System, now_ms()).await.unwrap();
    // The store stays open: the approval is in source.db-wal, not yet in source.db.
    assert!(std::fs::metadata(pairgate::store::sibling_path(&source, "-wal")).unwrap().len() > 0);

    let (from, db) = (source.display().to_string(), target.display().to_string());
    let (ok, out, err) = pairgate(home.path(), &["restore", "--from", &from, "--db", &db]).await;
    assert!(ok, "{out}\n{err}");
    store.close().await;
    let (ok, listing, err) = pairgate(home.path(), &["devices", "list", "--json", "--db", &db]).await;
    assert!(ok, "{err}");
    assert!(listing.contains(device_id.as_str()), "the approval that was only in the -wal is restored: {listing}");
}
