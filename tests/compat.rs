//! Compatibility with the real `openclaw` CLI (npm package): 2026.9.6 (protocol 4, no device identity)
//! and 2026.4.1 (protocol 3, with its own device identity), against a real pairgate server.
//!
//! `scripts/test` installs Node 24 and both CLIs into a cache directory and sets
//! `PAIRGATE_REQUIRE_COMPAT=1`; without them these tests say why they are skipped, and with
//! `PAIRGATE_REQUIRE_COMPAT=1` a missing install is a failure, not a skip.

mod common;
mod real_gateway;

use common::*;
use pairgate::clock::{Clock, SystemClock};
use pairgate::domain::Role;
use pairgate::server::Config;
use real_gateway::{Tools, Version, json_of, run_cli_of};
use serde_json::json;

/// Node 24 and both openclaw CLIs, as `scripts/test` installs them.
fn openclaw() -> Option<Tools> {
    Tools::find(Version::V2026_9)
}

/// The server's clock follows the wall clock: the real CLI signs with its own time.
async fn real_time_server(config: Config) -> Server {
    let server = Server::start_with(config).await;
    server.clock.set_ms(SystemClock.now_ms());
    server
}

#[tokio::test]
async fn openclaw_9_6_lists_devices_and_calls_health() {
    let Some(oc) = openclaw() else { return };
    let server =
        real_time_server(Config { trusted_proxies: vec!["127.0.0.1".parse().unwrap()], ..Config::default() }).await;
    // A remote-looking device asks to pair, so the list has something to show.
    let device = Device::new(60);
    let (error, _) = connect(&server, &Connect::cli().device(&device).via_proxy_for("203.0.113.60")).await.refused();
    let request_id = error["details"]["requestId"].as_str().unwrap().to_owned();

    let home = tempfile::tempdir().unwrap();
    let url = server.url();
    let (ok, stdout, stderr) =
        run_cli_of(&oc, &oc.openclaw_9_6, home.path(), &["devices", "list", "--url", &url, "--token", TOKEN, "--json"])
            .await;
    assert!(ok, "openclaw devices list failed:\n{stdout}\n{stderr}");
    let listing = json_of(&stdout);
    assert_eq!(listing["pending"][0]["requestId"], request_id);
    assert_eq!(listing["pending"][0]["deviceId"], device.id().as_str());
    assert_eq!(listing["pending"][0]["scopes"], json!(["operator.read"]));
    assert_eq!(listing["paired"], json!([]));

    let (ok, stdout, stderr) = run_cli_of(
        &oc,
        &oc.openclaw_9_6,
        home.path(),
        &["gateway", "call", "health", "--url", &url, "--token", TOKEN, "--json"],
    )
    .await;
    assert!(ok, "openclaw gateway call health failed:\n{stdout}\n{stderr}");
    assert_eq!(json_of(&stdout)["ok"], true);

    // The 9.6 CLI connects without a device identity: nothing is paired on its behalf.
    assert!(server.store.paired_devices().await.unwrap().is_empty());
}

#[tokio::test]
async fn openclaw_9_6_reports_a_wrong_token() {
    let Some(oc) = openclaw() else { return };
    let server = real_time_server(Config::default()).await;
    let home = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) = run_cli_of(
        &oc,
        &oc.openclaw_9_6,
        home.path(),
        &["devices", "list", "--url", &server.url(), "--token", "wrong", "--json"],
    )
    .await;
    assert!(!ok, "a wrong token must fail: {stdout}");
    let said = format!("{stdout}{stderr}");
    assert!(said.contains("token mismatch"), "{said}");
}

#[tokio::test]
async fn openclaw_4_1_speaks_protocol_3_with_its_device_identity() {
    let Some(oc) = openclaw() else { return };
    let server = real_time_server(Config::default()).await;
    let home = tempfile::tempdir().unwrap();
    let url = server.url();
    let (ok, stdout, stderr) =
        run_cli_of(&oc, &oc.openclaw_4_1, home.path(), &["devices", "list", "--url", &url, "--token", TOKEN, "--json"])
            .await;
    assert!(ok, "openclaw 2026.4.1 devices list failed:\n{stdout}\n{stderr}");
    let listing = json_of(&stdout);
    // Local and not a browser: its identity was approved silently with the scopes it asked for.
    let paired = listing["paired"].as_array().unwrap();
    assert_eq!(paired.len(), 1, "{listing}");
    let device_id = paired[0]["deviceId"].as_str().unwrap().to_owned();
    assert_eq!(
        paired[0]["scopes"],
        json!(["operator.admin", "operator.approvals", "operator.pairing", "operator.read", "operator.write"])
    );
    assert!(paired[0].to_string().find("deviceToken").is_none(), "no token value in any payload");
    let id = pairgate::domain::DeviceId::try_from(device_id).unwrap();
    let record = server.store.device(&id).await.unwrap().unwrap();
    assert!(record.live_token(Role::Operator).is_some(), "a device token was issued and stored as a digest");

    // Its second run reconnects with the same identity; nothing new is approved.
    server.clock.set_ms(SystemClock.now_ms());
    let (ok, stdout, stderr) =
        run_cli_of(&oc, &oc.openclaw_4_1, home.path(), &["devices", "list", "--url", &url, "--token", TOKEN, "--json"])
            .await;
    assert!(ok, "second run failed:\n{stdout}\n{stderr}");
    let approvals = server
        .store
        .audit_page(None, 100)
        .await
        .unwrap()
        .iter()
        .filter(|row| row.action == "device.approve.silent")
        .count();
    assert_eq!(approvals, 1);
}

/// The operator's whole cycle with the real CLI: a remote device asks, `openclaw devices approve` lets
/// it in, and rotate / revoke / remove close its live socket with 4001; reject declines another ask.
#[tokio::test]
async fn openclaw_9_6_drives_the_full_device_cycle() {
    let Some(oc) = openclaw() else { return };
    let server =
        real_time_server(Config { trusted_proxies: vec!["127.0.0.1".parse().unwrap()], ..Config::default() }).await;
    let home = tempfile::tempdir().unwrap();
    let url = server.url();
    // Runs `openclaw <args> --url … --token … --json` and returns its JSON output.
    let cli = |args: &[&str]| {
        let mut full: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
        full.extend(["--url".into(), url.clone(), "--token".into(), TOKEN.into(), "--json".into()]);
        let (oc, home) = (&oc, home.path().to_path_buf());
        async move {
            let refs: Vec<&str> = full.iter().map(String::as_str).collect();
            let (ok, stdout, stderr) = run_cli_of(oc, &oc.openclaw_9_6, &home, &refs).await;
            assert!(ok, "openclaw {refs:?} failed:\n{stdout}\n{stderr}");
            json_of(&stdout)
        }
    };

    let device = Device::new(70);
    let remote = Connect::cli().device(&device).scopes(&["operator.read"]).via_proxy_for("203.0.113.70");
    let (error, _) = connect(&server, &remote).await.refused();
    assert_eq!(error["code"], "NOT_PAIRED");
    let request_id = error["details"]["requestId"].as_str().unwrap().to_owned();

    let listing = cli(&["devices", "list"]).await;
    assert_eq!(listing["pending"][0]["requestId"], request_id);

    let approved = cli(&["devices", "approve", &request_id]).await;
    assert_eq!(approved["requestId"], request_id);
    assert_eq!(approved["device"]["deviceId"], device.id().as_str());
    let (_, mut live) = connect(&server, &remote).await.hello();

    let device_id = device.id().to_string();
    let rotated = cli(&["devices", "rotate", "--device", &device_id, "--role", "operator"]).await;
    assert_eq!(rotated["deviceId"], device_id.as_str());
    assert_eq!(rotated["tokenDelivery"], "withheld-cross-device");
    assert!(rotated.get("token").is_none());
    assert_eq!(expect_close(&mut live).await.map(|(code, _)| code), Some(4001));

    server.clock.set_ms(SystemClock.now_ms());
    let (_, mut live) = connect(&server, &remote).await.hello();
    let revoked = cli(&["devices", "revoke", "--device", &device_id, "--role", "operator"]).await;
    assert_eq!(revoked["deviceId"], device_id.as_str());
    assert!(revoked["revokedAtMs"].is_i64());
    assert_eq!(expect_close(&mut live).await.map(|(code, _)| code), Some(4001));

    server.clock.set_ms(SystemClock.now_ms());
    let (_, mut live) = connect(&server, &remote).await.hello();
    let removed = cli(&["devices", "remove", &device_id]).await;
    assert_eq!(removed["deviceId"], device_id.as_str());
    assert_eq!(expect_close(&mut live).await.map(|(code, _)| code), Some(4001));
    let listing = cli(&["devices", "list"]).await;
    assert_eq!(listing["paired"], json!([]));

    server.clock.set_ms(SystemClock.now_ms());
    let other = Device::new(71);
    let (error, _) = connect(&server, &Connect::cli().device(&other).via_proxy_for("203.0.113.71")).await.refused();
    let other_request = error["details"]["requestId"].as_str().unwrap().to_owned();
    let rejected = cli(&["devices", "reject", &other_request]).await;
    assert_eq!(rejected, json!({"requestId": other_request, "deviceId": other.id().as_str()}));
    let status = server.store.pairing_request(&other_request).await.unwrap().unwrap().status;
    assert_eq!(status, pairgate::domain::RequestStatus::Rejected);
}

/// Not part of the suite: pairs two known identities through a running real OpenClaw gateway and prints
/// their tokens, to make the `tests/fixtures/openclaw-2026.9.6` fixture (see its README).
#[tokio::test]
#[ignore = "run by hand against a real gateway to regenerate a fixture"]
async fn pair_fixture_devices_through_a_real_openclaw_gateway() {
    let url = std::env::var("OPENCLAW_URL").expect("OPENCLAW_URL of a running OpenClaw gateway");
    let token = std::env::var("OPENCLAW_TOKEN").expect("OPENCLAW_TOKEN");
    for (seed, scopes) in [(121u8, vec!["operator.read", "operator.write"]), (122u8, vec!["operator.pairing"])] {
        let attempt = Connect::cli().device(&Device::new(seed)).scopes(&scopes).token(Some(&token));
        let (hello, _) = connect_url(&url, &attempt, SystemClock.now_ms()).await.hello();
        println!("{}", json!({"seed": seed, "scopes": scopes, "token": hello["auth"]["deviceToken"]}));
    }
}
