//! The front door before a real OpenClaw **2026.4.1** gateway: the version with the seed bug. On its own it
//! grants a device-less token connect no scopes, pairs a new loopback device silently with what it first
//! asks, and refuses every later loopback scope upgrade (`NOT_PAIRED` / `PAIRING_REQUIRED`, close 1008),
//! which is how a sub-agent spawn asking `operator.read → operator.admin` gets stuck for ever. Behind
//! pairgate, pairgate decides, and every grant gets an upstream identity of its own, which the gateway pairs
//! as a first ask. One gateway for this test binary.

mod common;
mod real_gateway;

use std::time::Duration;

use common::*;
use pairgate::clock::{Clock, SystemClock};
use pairgate::gateway::upstream::{MasterKey, UpstreamConfig, UpstreamSecret};
use pairgate::server::Config;
use real_gateway::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2026_4_gateway_behind_pairgate_serves_clients_and_the_seed_spawn_is_never_stuck() {
    let Some(tools) = Tools::find(Version::V2026_4) else { return };
    let gateway = RealGateway::start(&tools);
    gateway.wait_ready().await;

    // The bug itself, straight at the gateway: a loopback backend device paired at operator.read asks
    // for operator.admin and is refused, every time.
    let backend = Device::new(150);
    let direct = Connect { protocol: (3, 3), ..Connect::backend() }.device(&backend).token(Some(&gateway.token));
    connect_url(&gateway.url(), &direct.clone().scopes(&["operator.read"]), SystemClock.now_ms()).await.hello();
    for _ in 0..2 {
        let admin = direct.clone().scopes(&["operator.admin"]);
        let (error, closed) = connect_url(&gateway.url(), &admin, SystemClock.now_ms()).await.refused();
        assert_eq!(error["code"], "NOT_PAIRED", "the 2026.4.1 gateway alone: {error}");
        assert_eq!(closed.map(|(code, _)| code), Some(1008));
    }

    let upstream = UpstreamConfig {
        url: gateway.url(),
        secret: UpstreamSecret::Token(gateway.token.clone()),
        master_key: MasterKey::from_bytes(rand::random()),
        max_handshakes: 16,
        handshake_timeout: Duration::from_secs(10),
    };
    let server = Server::start_with(Config { upstream: Some(upstream), ..Config::default() }).await;
    server.clock.set_ms(SystemClock.now_ms());

    // Through pairgate the same spawn passes: read, then admin, then read again, and admin calls work.
    let spawner = Device::new(151);
    let through = Connect::backend().device(&spawner);
    for scopes in [&["operator.read"][..], &["operator.admin"], &["operator.read"], &["operator.admin"]] {
        let (hello, mut ws) = connect(&server, &through.clone().scopes(scopes)).await.hello();
        assert_eq!(hello["auth"]["scopes"], json!(scopes), "{}", hello["auth"]);
        let reply = call(&mut ws, "s", "status", json!({})).await;
        assert_eq!(reply["payload"]["runtimeVersion"], "2026.4.1", "{scopes:?}: {reply}");
    }
    let (_, mut admin) = connect(&server, &through.clone().scopes(&["operator.admin"])).await.hello();
    let reply = call(&mut admin, "c", "config.get", json!({})).await;
    assert_eq!(reply["ok"], true, "an admin call reaches the 2026.4.1 gateway with admin: {reply}");

    // The real CLIs through pairgate: the 2026.4.1 CLI (protocol 3, its own device) and the 2026.9.6 CLI
    // (protocol 4, no device, which the gateway alone would grant nothing).
    let url = server.url();
    for cli in [&tools.openclaw_4_1, &tools.openclaw_9_6] {
        let home = tempfile::tempdir().unwrap();
        let args = ["gateway", "call", "status", "--url", &url, "--token", TOKEN, "--json"];
        let (ok, out, err) = run_cli_of(&tools, cli, home.path(), &args).await;
        assert!(ok, "{}: status through pairgate: {out}\n{err}", cli.display());
        assert_eq!(json_of(&out)["runtimeVersion"], "2026.4.1", "{}: {out}", cli.display());
    }
}
