//! A fleet: two or more `pairgate serve` processes on one PostgreSQL database (a real cluster from
//! `pairgate-testkit`, one per test binary, a database per test). What one node decides, every node acts
//! on: revocations close sockets everywhere, pairing events reach every node's operators, a run ended on
//! one node wakes its waiters on another; a node's restart leaves the others' runs alone, and a killed
//! node's runs are ended by the fleet once its lease expires. The database's password reaches the nodes
//! through `PGPASSWORD`, never their command line.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::processes::*;
use common::*;
use pairgate_testkit::postgres::{Cluster, PASSWORD};
use serde_json::{Value, json};

fn now_ms() -> i64 {
    use pairgate::clock::Clock;
    pairgate::clock::SystemClock.now_ms()
}

/// One database, one shared token file, and the nodes started on them.
struct Fleet {
    cluster: &'static Cluster,
    url: String,
    home: tempfile::TempDir,
    token_file: PathBuf,
}

impl Fleet {
    /// A fleet on a new database of the shared cluster; `None` (having said why) without PostgreSQL.
    fn new(name: &str) -> Option<Fleet> {
        let cluster = Cluster::for_tests()?;
        let database = cluster.new_database(name);
        let home = tempfile::tempdir().unwrap();
        let token_file = home.path().join("gateway-token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        Some(Fleet { cluster, url: cluster.url(&database), home, token_file })
    }

    /// A node: `serve` on the database with the shared token, trusting loopback as a proxy (so tests can
    /// ask from "remote" addresses), with a short lease.
    async fn node(&self, log: &str) -> Running {
        self.node_with(log, &[]).await
    }

    /// A node with more flags.
    async fn node_with(&self, log: &str, extra: &[&str]) -> Running {
        let mut command = command(self.home.path());
        command.env("PGPASSWORD", PASSWORD);
        let token_file = self.token_file.to_str().unwrap();
        let mut args = vec![
            "--db",
            &self.url,
            "--token-file",
            token_file,
            "--trusted-proxy",
            "127.0.0.1",
            "--node-lease-ms",
            "1500",
        ];
        args.extend_from_slice(extra);
        let node = serve_from(command, self.home.path(), &args, log).await;
        node.wait_for_log("joined the fleet").await;
        node
    }
}

async fn rest(node: &Running, method: reqwest::Method, path: &str) -> (u16, Value) {
    rest_as(node, TOKEN, method, path).await
}

async fn rest_as(node: &Running, bearer: &str, method: reqwest::Method, path: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .request(method, format!("http://{}{path}", node.addr))
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn ok(ws: &mut Ws, method: &str, params: Value) -> Value {
    let reply = call(ws, "r", method, params).await;
    assert_eq!(reply["ok"], true, "{method}: {reply}");
    reply["payload"].clone()
}

async fn next_event(ws: &mut Ws) -> Value {
    let frame = next_json(ws).await.expect("an event");
    assert_eq!(frame["type"], "event", "{frame}");
    frame
}

#[tokio::test]
async fn a_revocation_on_one_node_closes_the_devices_sockets_on_the_other() {
    let Some(fleet) = Fleet::new("revoke") else { return };
    let (a, b) = (fleet.node("a.log").await, fleet.node("b.log").await);
    assert!(!a.stderr().contains(PASSWORD) && !std::fs::read_to_string(&b.stderr_path).unwrap().contains(PASSWORD));

    // Paired through B (a local CLI is approved silently); its socket stays on B.
    let device = Device::new(61);
    let (hello, mut on_b) = connect_url(&b.url(), &Connect::cli().device(&device), now_ms()).await.hello();
    let token = hello["auth"]["deviceToken"].as_str().unwrap().to_owned();
    // The grant made on B is honoured by A's next connect.
    let with_token = Connect::cli().device(&device).token(None).device_token(&token);
    connect_url(&a.url(), &with_token, now_ms()).await.hello();

    let path = format!("/api/v1/devices/{}/tokens/operator/revoke", device.id());
    let (status, body) = rest(&a, reqwest::Method::POST, &path).await;
    assert_eq!(status, 200, "{body}");
    let answered = Instant::now();
    let closed = expect_close(&mut on_b).await;
    eprintln!("revoked on A; B closed the device's socket {:?} after A answered", answered.elapsed());
    assert_eq!(closed.map(|(code, _)| code), Some(4001), "closed as revoked");
    // Neither node accepts the old token again.
    for node in [&a, &b] {
        let (error, _) = connect_url(&node.url(), &with_token, now_ms()).await.refused();
        assert_eq!(error["details"]["code"], "AUTH_DEVICE_TOKEN_MISMATCH", "{error}");
    }
}

#[tokio::test]
async fn pairing_events_reach_the_operators_of_every_node() {
    let Some(fleet) = Fleet::new("events") else { return };
    let (a, b) = (fleet.node("a.log").await, fleet.node("b.log").await);
    let operator = Connect::cli().scopes(&["operator.pairing", "operator.read"]);
    let (_, mut watcher_on_a) = connect_url(&a.url(), &operator, now_ms()).await.hello();

    let device = Device::new(62);
    let ask = Connect::cli().device(&device).via_proxy_for("203.0.113.62");
    let (error, _) = connect_url(&b.url(), &ask, now_ms()).await.refused();
    let request_id = error["details"]["requestId"].as_str().unwrap().to_owned();
    let requested = next_event(&mut watcher_on_a).await;
    assert_eq!(requested["event"], "device.pair.requested", "{requested}");
    assert_eq!(requested["payload"]["requestId"], request_id);
    assert_eq!(requested["payload"]["remoteIp"], "203.0.113.62");

    let (_, mut approver_on_b) = connect_url(&b.url(), &operator, now_ms()).await.hello();
    ok(&mut approver_on_b, "device.pair.approve", json!({"requestId": request_id})).await;
    let resolved = next_event(&mut watcher_on_a).await;
    assert_eq!(resolved["event"], "device.pair.resolved", "{resolved}");
    assert_eq!(resolved["payload"]["requestId"], request_id);
    assert_eq!(resolved["payload"]["decision"], "approved");
    // The approval made on B lets the device in through A.
    connect_url(&a.url(), &ask, now_ms()).await.hello();

    // A setup code minted on B and redeemed on B: A's operators hear of it too.
    let (_, mut admin_on_b) =
        connect_url(&b.url(), &Connect::cli().scopes(&["operator.admin"]), now_ms()).await.hello();
    let minted =
        ok(&mut admin_on_b, "device.pair.setupCode", json!({"publicUrl": b.url(), "bootstrapProfile": "node"})).await;
    let code = minted["setupCode"].as_str().unwrap();
    let token = pairgate::domain::setup::SetupPayload::decode(code).unwrap().bootstrap_token;
    let node =
        Connect { client_id: "node-host".into(), client_mode: "node".into(), role: "node".into(), ..Connect::cli() };
    let pi = Device::new(63);
    connect_url(&b.url(), &node.device(&pi).scopes(&[]).bootstrap_token(&token), now_ms()).await.hello();
    let completed = next_event(&mut watcher_on_a).await;
    assert_eq!(completed["event"], "device.pair.setup.completed", "{completed}");
    assert_eq!(completed["payload"]["setupId"], minted["setupId"]);
    assert_eq!(completed["payload"]["deviceId"], pi.id().as_str());
}

/// A sub-agent run registered and started through `ws`, as a gateway's spawn does; returns its id.
async fn start_run(ws: &mut Ws, key: &str) -> String {
    ok(ws, "sessions.patch", json!({"key": key, "spawnedBy": "agent:main:main"})).await;
    let params = json!({"childSessionKey": key, "requesterSessionKey": "agent:main:main", "task": "t"});
    let run = ok(ws, "subagents.register", params).await;
    let run_id = run["runId"].as_str().unwrap().to_owned();
    ok(ws, "subagents.start", json!({"runId": run_id})).await;
    run_id
}

/// A spawn registered on node A: waited for on B and ended on A; B's restart leaves A's runs alone; A
/// killed with `-9`, B ends A's runs once A's lease has expired, and B's waiters hear of it.
#[tokio::test]
async fn runs_belong_to_their_node_and_a_dead_nodes_runs_are_ended_by_the_fleet() {
    let Some(fleet) = Fleet::new("runs") else { return };
    let (a, b) = (fleet.node("a.log").await, fleet.node("b1.log").await);
    let backend = Connect::backend().device(&Device::new(63)).scopes(&["operator.admin"]);
    let (_, mut on_a) = connect_url(&a.url(), &backend, now_ms()).await.hello();
    let first = start_run(&mut on_a, "agent:main:subagent:first").await;

    // Waited for on B, ended on A: B's waiter is woken by A's commit.
    let (_, mut waiter) = connect_url(&b.url(), &backend, now_ms()).await.hello();
    let waited_id = first.clone();
    let waiting = tokio::spawn(async move {
        call(&mut waiter, "w", "agent.wait", json!({"runId": waited_id, "timeoutMs": 20_000})).await
    });
    let second = start_run(&mut on_a, "agent:main:subagent:second").await;
    ok(&mut on_a, "subagents.end", json!({"runId": first, "status": "ok"})).await;
    let waited = waiting.await.unwrap();
    assert_eq!(waited["payload"]["status"], "ok", "{waited}");

    // B restarts: A's running run is untouched.
    assert!(b.terminate().await.success());
    let b = fleet.node("b2.log").await;
    let (_, mut on_b) = connect_url(&b.url(), &backend, now_ms()).await.hello();
    let still = ok(&mut on_b, "agent.wait", json!({"runId": second, "timeoutMs": 0})).await;
    assert_eq!(still["status"], "timeout", "A's run is still running after B's restart: {still}");

    // A dies: once its lease (1.5 s) has expired, B ends its run, and a waiter on B hears of it.
    a.kill9().await;
    let ended = ok(&mut on_b, "agent.wait", json!({"runId": second, "timeoutMs": 20_000})).await;
    assert_eq!(ended["status"], "error", "{ended}");
    b.wait_for_log("runs whose server is gone").await;
    let runs = fleet.cluster.psql(
        fleet.url.rsplit('/').next().unwrap(),
        &format!("SELECT state || ' ' || ended_reason FROM runs WHERE run_id = '{second}'"),
    );
    assert_eq!(runs, "interrupted node-lost");
}

/// PostgreSQL stopped under a running node: connects fail at once with UNAVAILABLE (1013) and `/readyz`
/// says the database is unavailable; once it is back, the node serves again by itself.
#[tokio::test]
async fn the_database_going_away_and_coming_back() {
    if Cluster::for_tests().is_none() {
        return;
    }
    // A cluster of its own: stopping the shared one would stop the other tests'.
    let cluster = Cluster::start();
    let database = cluster.new_database("outage");
    let home = tempfile::tempdir().unwrap();
    let token_file = home.path().join("gateway-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    // This node's password comes from a libpq password file (PGPASSFILE), the others' from PGPASSWORD.
    let passfile = home.path().join("pgpass");
    std::fs::write(&passfile, format!("127.0.0.1:*:*:postgres:{PASSWORD}\n")).unwrap();
    std::fs::set_permissions(&passfile, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut command = command(home.path());
    command.env("PGPASSFILE", &passfile);
    let args = ["--db", &cluster.url(&database), "--token-file", token_file.to_str().unwrap()];
    let node = serve_from(command, home.path(), &args, "node.log").await;
    let device = Device::new(64);
    connect_url(&node.url(), &Connect::cli().device(&device), now_ms()).await.hello();

    cluster.stop();
    let started = Instant::now();
    let (error, close) = connect_url(&node.url(), &Connect::cli().device(&device), now_ms()).await.refused();
    eprintln!("a connect with the database down was refused after {:?}", started.elapsed());
    assert_eq!(error["code"], "UNAVAILABLE", "{error}");
    assert_eq!(close.map(|(code, _)| code), Some(1013));
    let (status, body) = rest(&node, reqwest::Method::GET, "/readyz").await;
    assert_eq!((status, body["reason"].as_str()), (503, Some("database unavailable or schema not current")));

    cluster.restart();
    // Polled (bounded): the node notices by itself, on its next use of the database.
    let deadline = Instant::now() + Duration::from_secs(30);
    while rest(&node, reqwest::Method::GET, "/readyz").await.0 != 200 {
        assert!(Instant::now() < deadline, "ready again once PostgreSQL is back:\n{}", node.stderr());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    connect_url(&node.url(), &Connect::cli().device(&device), now_ms()).await.hello();
    assert!(node.terminate().await.success());
}

/// Growing from one node on SQLite to a fleet: export, import into PostgreSQL, and the token file the
/// SQLite node made becomes every node's `--token-file`. Every row arrives; the device connects with the
/// token it already had, with no re-pairing; the pending request is still there to decide.
#[tokio::test]
async fn a_sqlite_node_moves_to_postgres_with_every_row_and_token() {
    let Some(cluster) = Cluster::for_tests() else { return };
    let home = tempfile::tempdir().unwrap();
    let sqlite = home.path().join("one.db");
    let sqlite_arg = sqlite.to_str().unwrap().to_owned();
    let one = serve(home.path(), &["--db", &sqlite_arg, "--trusted-proxy", "127.0.0.1"], "one.log").await;
    let token_file = pairgate::store::sibling_path(&sqlite, ".gateway-token");
    let gateway_token = std::fs::read_to_string(&token_file).unwrap().trim().to_owned();
    let device = Device::new(65);
    let (hello, _) =
        connect_url(&one.url(), &Connect::cli().token(Some(&gateway_token)).device(&device), now_ms()).await.hello();
    let device_token = hello["auth"]["deviceToken"].as_str().unwrap().to_owned();
    let asking = Connect::cli().token(Some(&gateway_token)).device(&Device::new(66)).via_proxy_for("203.0.113.66");
    connect_url(&one.url(), &asking, now_ms()).await.refused();
    // A different ask supersedes the first request: the older row points at the newer one.
    let asking = asking.scopes(&["operator.read", "operator.write"]);
    let (error, _) = connect_url(&one.url(), &asking, now_ms()).await.refused();
    let request_id = error["details"]["requestId"].as_str().unwrap().to_owned();
    assert!(one.terminate().await.success());

    let export = home.path().join("export.json").display().to_string();
    let run = |args: Vec<String>| {
        let mut command = command(home.path());
        command.env("PGPASSWORD", PASSWORD).args(args);
        async move {
            let output = command.output().await.unwrap();
            let stderr = String::from_utf8(output.stderr).unwrap();
            assert!(output.status.success(), "{stderr}");
            String::from_utf8(output.stdout).unwrap()
        }
    };
    // An operator's label moves too (the offline CLI names the device on the SQLite file).
    let device_id = device.id().to_string();
    let rename = ["devices", "rename", device_id.as_str(), "Front desk", "--db", sqlite_arg.as_str()];
    run(rename.into_iter().map(str::to_owned).collect()).await;
    run(vec!["export".into(), "--out".into(), export.clone(), "--db".into(), sqlite_arg.clone()]).await;
    let url = cluster.url(&cluster.new_database("moved"));
    let imported = run(vec![
        "import".into(),
        "--format".into(),
        "json".into(),
        "--from".into(),
        export.clone(),
        "--db".into(),
        url.clone(),
    ])
    .await;
    assert!(imported.contains("--token-file"), "the import says where the gateway token comes from: {imported}");
    // Every table's rows arrived.
    let counts = |export: &Value| -> Vec<(String, usize)> {
        let tables = export["tables"].as_object().unwrap();
        tables.iter().map(|(name, rows)| (name.clone(), rows.as_array().unwrap().len())).collect()
    };
    let before: Value = serde_json::from_str(&std::fs::read_to_string(&export).unwrap()).unwrap();
    let after: Value = serde_json::from_str(&run(vec!["export".into(), "--db".into(), url.clone()]).await).unwrap();
    // All but the SQLite node's gateway token hash: on PostgreSQL the nodes take the token from the file.
    let mut expected = counts(&before);
    expected.iter_mut().filter(|(table, _)| table == "meta").for_each(|(_, rows)| *rows -= 1);
    assert_eq!(counts(&after), expected);
    let superseded =
        &after["tables"]["pairing_requests"].as_array().unwrap().iter().find(|r| r["status"] == "superseded");
    assert_eq!(superseded.expect("the superseded request")["superseded_by"], request_id);
    let meta = after["tables"]["meta"].to_string();
    assert!(meta.contains("last_migrated_by") && !meta.contains("gateway_token"), "{meta}");
    assert_eq!(after["tables"]["device_labels"][0]["label"], "Front desk");
    assert!(counts(&before).iter().all(|(table, rows)| *rows > 0 || ["sessions", "runs"].contains(&table.as_str())));

    let mut command = command(home.path());
    command.env("PGPASSWORD", PASSWORD);
    let args = ["--db", url.as_str(), "--token-file", token_file.to_str().unwrap()];
    let node = serve_from(command, home.path(), &args, "fleet.log").await;
    let with_device_token = Connect::cli().token(None).device(&device).device_token(&device_token);
    connect_url(&node.url(), &with_device_token, now_ms()).await.hello();
    connect_url(&node.url(), &Connect::cli().token(Some(&gateway_token)), now_ms()).await.hello();
    let (status, pending) =
        rest_as(&node, &gateway_token, reqwest::Method::GET, "/api/v1/requests?status=pending").await;
    assert_eq!(status, 200);
    assert!(pending.to_string().contains(&request_id), "{pending}");
    assert!(node.terminate().await.success());
}

/// Ten failed authentications from one network on node A lock it out on node B as well (the nodes share
/// their counts about once a second; B refuses even the right token from it).
#[tokio::test]
async fn a_lockout_on_one_node_holds_on_every_node() {
    let Some(fleet) = Fleet::new("lockout") else { return };
    let (a, b) = (fleet.node("a.log").await, fleet.node("b.log").await);
    let right = Connect::cli().via_proxy_for("198.51.100.7");
    connect_url(&b.url(), &right, now_ms()).await.hello();
    let wrong = Connect::cli().token(Some("a-wrong-guess")).via_proxy_for("198.51.100.7");
    for _ in 0..10 {
        connect_url(&a.url(), &wrong, now_ms()).await.refused();
    }
    let (error, _) = connect_url(&a.url(), &right, now_ms()).await.refused();
    assert_eq!(error["details"]["code"], "AUTH_RATE_LIMITED", "{error}");
    // Polled (bounded): B learns of it at its next sharing round.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match connect_url(&b.url(), &right, now_ms()).await {
            Outcome::Refused { error, .. } => {
                assert_eq!(error["details"]["code"], "AUTH_RATE_LIMITED", "{error}");
                break;
            }
            Outcome::Hello { .. } => assert!(Instant::now() < deadline, "B never locked out the network A locked out"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Other networks are not affected.
    connect_url(&b.url(), &Connect::cli().via_proxy_for("198.51.100.8"), now_ms()).await.hello();
}

/// Limits with two processes: 20 spawns for one requester at once, half on each node, with a limit of 5:
/// exactly 5 are accepted; one request approved ten times at once over both nodes: exactly one approval.
#[tokio::test]
async fn limits_hold_across_two_serve_processes() {
    let Some(fleet) = Fleet::new("limits") else { return };
    let limits = ["--max-children", "5", "--max-concurrent-runs", "100"];
    let (a, b) = (fleet.node_with("a.log", &limits).await, fleet.node_with("b.log", &limits).await);
    let backend = Connect::backend().device(&Device::new(67)).scopes(&["operator.admin"]);
    let mut sockets = Vec::new();
    for n in 0..20 {
        let node = if n % 2 == 0 { &a } else { &b };
        let (_, mut ws) = connect_url(&node.url(), &backend, now_ms()).await.hello();
        let key = format!("agent:main:subagent:limit{n}");
        ok(&mut ws, "sessions.patch", json!({"key": key, "spawnedBy": "agent:main:main"})).await;
        sockets.push((ws, key));
    }
    let spawns = sockets.into_iter().map(|(mut ws, key)| {
        tokio::spawn(async move {
            let params = json!({"childSessionKey": key, "requesterSessionKey": "agent:main:main", "task": "t"});
            call(&mut ws, "s", "subagents.register", params).await
        })
    });
    let mut accepted = 0;
    for spawn in spawns.collect::<Vec<_>>() {
        let reply = spawn.await.unwrap();
        if reply["ok"] == true {
            accepted += 1;
        } else {
            assert!(reply["error"]["message"].as_str().unwrap_or("").contains("5"), "{reply}");
        }
    }
    assert_eq!(accepted, 5);

    let device = Device::new(68);
    let ask = Connect::cli().device(&device).via_proxy_for("203.0.113.68");
    let (error, _) = connect_url(&a.url(), &ask, now_ms()).await.refused();
    let request_id = error["details"]["requestId"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/requests/{request_id}/approve");
    let approvals = (0..10).map(|n| {
        let (node, path) = (if n % 2 == 0 { a.addr } else { b.addr }, path.clone());
        tokio::spawn(async move {
            let response =
                reqwest::Client::new().post(format!("http://{node}{path}")).bearer_auth(TOKEN).send().await.unwrap();
            response.status().as_u16()
        })
    });
    let mut statuses = Vec::new();
    for approval in approvals.collect::<Vec<_>>() {
        statuses.push(approval.await.unwrap());
    }
    statuses.sort();
    assert_eq!(statuses, [200, 409, 409, 409, 409, 409, 409, 409, 409, 409], "exactly one approval wins");
}

/// Every command works on a PostgreSQL database: migrations, the offline CLI, export, the OpenClaw
/// importer; backup, restore and the gateway-token file say what to use instead.
#[tokio::test]
async fn every_command_works_on_postgres() {
    let Some(cluster) = Cluster::for_tests() else { return };
    let home = tempfile::tempdir().unwrap();
    let url = cluster.url(&cluster.new_database("commands"));
    let pairgate = |args: &[&str]| {
        let mut command = command(home.path());
        command.env("PGPASSWORD", PASSWORD).env("PAIRGATE_DB", &url).args(args);
        async move {
            let output = command.output().await.unwrap();
            let (stdout, stderr) =
                (String::from_utf8(output.stdout).unwrap(), String::from_utf8(output.stderr).unwrap());
            (output.status.success(), stdout, stderr)
        }
    };
    let (ok, _, err) = pairgate(&["devices", "list"]).await;
    assert!(!ok && err.contains("has no pairgate schema"), "{err}");
    let (ok, out, err) = pairgate(&["migrate", "up"]).await;
    assert!(ok && out.contains("applied migrations [1, 2]"), "{out}{err}");
    let (ok, out, _) = pairgate(&["migrate", "up"]).await;
    assert!(ok && out.contains("nothing to apply"), "{out}");
    let (ok, out, _) = pairgate(&["migrate", "status"]).await;
    assert!(ok && out.contains("engine: PostgreSQL 1") && out.contains("0001 initial schema"), "{out}");
    assert!(out.contains("applied  checksum") && !out.contains(PASSWORD), "{out}");
    let (ok, out, err) = pairgate(&["migrate", "verify"]).await;
    assert!(ok && out.contains(": ok (checksums, schema objects)"), "{out}{err}");

    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/openclaw-2026.9.6");
    let state = home.path().join("openclaw");
    std::fs::create_dir_all(state.join("state")).unwrap();
    std::fs::copy(fixture.join("state/openclaw.sqlite"), state.join("state/openclaw.sqlite")).unwrap();
    let state_dir = state.to_str().unwrap();
    let (ok, out, err) = pairgate(&["import", "openclaw", "--state-dir", state_dir, "--dry-run"]).await;
    assert!(ok && out.contains("would import: 2 devices"), "{out}{err}");
    let (ok, out, _) = pairgate(&["devices", "list", "--json"]).await;
    assert!(ok && serde_json::from_str::<Value>(&out).unwrap()["paired"].as_array().unwrap().is_empty(), "{out}");
    let (ok, out, err) = pairgate(&["import", "openclaw", "--state-dir", state_dir]).await;
    assert!(ok && out.contains("imported: 2 devices"), "{out}{err}");
    let (ok, out, _) = pairgate(&["devices", "list", "--json"]).await;
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert!(ok && listed["paired"].as_array().unwrap().len() == 2, "{out}");
    let device = listed["paired"][0]["deviceId"].as_str().unwrap().to_owned();
    let (ok, out, err) = pairgate(&["tokens", "revoke", "--device", &device, "--role", "operator", "--json"]).await;
    assert!(ok, "{out}{err}");
    let (ok, out, _) = pairgate(&["audit", "--json", "--limit", "1"]).await;
    assert!(ok && out.contains("token.revoke"), "{out}");
    let (ok, out, _) = pairgate(&["sessions", "list", "--json"]).await;
    assert!(ok, "{out}");
    let (ok, out, _) = pairgate(&["export"]).await;
    assert!(ok && serde_json::from_str::<Value>(&out).unwrap()["engine"] == "postgres", "{out}");

    let (ok, _, err) = pairgate(&["backup", "--to", "copy.db"]).await;
    assert!(!ok && err.contains("pg_dump"), "{err}");
    let (ok, _, err) = pairgate(&["restore", "--from", "copy.dump"]).await;
    assert!(!ok && err.contains("pg_restore"), "{err}");
    let (ok, _, err) = pairgate(&["gateway-token", "check"]).await;
    assert!(!ok && err.contains("--token-file"), "{err}");
    let (ok, _, err) = pairgate(&["serve", "--listen", "127.0.0.1:0"]).await;
    assert!(!ok && err.contains("--token-file"), "serve needs the token from a file or the environment: {err}");
}
