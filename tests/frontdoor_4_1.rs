//! The front door before a real OpenClaw **2026.4.1** gateway: the version with the seed bug. On its own it
//! grants a device-less token connect no scopes, pairs a new loopback device silently with what it first
//! asks, and refuses every later loopback scope upgrade (`NOT_PAIRED` / `PAIRING_REQUIRED`, close 1008),
//! which is how a sub-agent spawn asking `operator.read → operator.admin` gets stuck for ever. Behind
//! pairgate, pairgate decides, and every grant gets an upstream identity of its own, which the gateway pairs
//! as a first ask. The gateway's own clients (the sub-agent spawn among them) are sent to pairgate too
//! (`OPENCLAW_GATEWAY_URL`), and a stub model provider makes its agent spawn sub-agents for real. One gateway
//! for this test binary.

mod common;
mod real_gateway;

use std::time::Duration;

use common::*;
use pairgate::clock::{Clock, SystemClock};
use pairgate::gateway::upstream::{MasterKey, UpstreamConfig, UpstreamSecret};
use pairgate::server::Config;
use real_gateway::stub_model::StubModel;
use real_gateway::*;
use serde_json::json;

/// The first agent run of a new gateway warms its runtime up (about 4 s here); a spawn follows at once.
const SPAWN_WAIT: Duration = Duration::from_secs(90);

/// pairgate's count of connects it let in, from its `/metrics`.
async fn connects_let_in(server: &Server) -> f64 {
    let answer =
        reqwest::Client::new().get(format!("http://{}/metrics", server.addr)).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let samples = metric_samples(&answer.text().await.unwrap());
    samples.get(r#"pairgate_connects_total{outcome="ok",code="none"}"#).copied().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2026_4_gateway_behind_pairgate_serves_clients_and_the_seed_spawn_is_never_stuck() {
    let Some(tools) = Tools::find(Version::V2026_4) else { return };
    // pairgate first (its URL is where the gateway's own clients go), then the gateway it stands before.
    let (port, token) = (free_port(), format!("upstream-{}", uuid::Uuid::new_v4().simple()));
    let upstream = UpstreamConfig {
        url: format!("ws://127.0.0.1:{port}"),
        secret: UpstreamSecret::Token(token.clone()),
        master_key: MasterKey::from_bytes(rand::random()),
        max_handshakes: 16,
        handshake_timeout: Duration::from_secs(10),
    };
    let server = Server::start_with(Config { upstream: Some(upstream), ..Config::default() }).await;
    server.clock.set_ms(SystemClock.now_ms());
    let stub = StubModel::start().await;
    let options = GatewayOptions {
        port: Some(port),
        token: Some(token),
        config: stub.gateway_config().as_object().unwrap().clone(),
        env: vec![
            ("OPENCLAW_GATEWAY_URL".into(), format!("ws://{}", server.addr)),
            ("OPENCLAW_GATEWAY_TOKEN".into(), TOKEN.into()),
        ],
    };
    let gateway = RealGateway::start_with(&tools, options);
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

    // The gateway's own sub-agent spawn, through pairgate. Its internal client opens a connect per call, with
    // the scope that call needs: `operator.admin` first (`sessions.patch`), then `operator.write`, then
    // `operator.read`. 2026.4.1 names the scopes of an identity's device token in hello-ok, not those of
    // the session: once pairgate's identity for that device is paired at admin, a later narrower ask looks
    // granted more; pairgate then opens the session with the grant's own identity. A plain spawn first
    // (the internal client's first ask is admin), then the seed's order (read first, then admin).
    let let_in = connects_let_in(&server).await;
    let agent = Connect { protocol: (3, 3), ..Connect::cli() }
        .device(&Device::new(152))
        .token(Some(&gateway.token))
        .scopes(&["operator.admin", "operator.read", "operator.write"]);
    let (_, mut operator) = connect_url(&gateway.url(), &agent, SystemClock.now_ms()).await.hello();
    for (spawned, plan) in [(1, "PLAN:sessions_spawn"), (2, "PLAN:sessions_list,sessions_spawn")] {
        let params = json!({"message": format!("hi {plan}"), "sessionKey": "agent:main:main",
            "idempotencyKey": uuid::Uuid::new_v4().to_string(), "deliver": false});
        let accepted = call(&mut operator, plan, "agent", params).await;
        assert_eq!(accepted["payload"]["status"], "accepted", "{accepted}");
        let done = tokio::time::timeout(SPAWN_WAIT, async {
            loop {
                let frame = next_json(&mut operator).await.expect("the agent's answer");
                if frame["type"] == "res" && frame["id"] == plan {
                    return frame;
                }
            }
        });
        let done = done.await.expect("the agent run ends");
        assert_eq!(done["payload"]["status"], "ok", "{plan}: {}", done["payload"]["summary"]);
        assert!(
            stub.wait_for("[Subagent Task]", spawned, SPAWN_WAIT).await,
            "{plan}: no sub-agent ran (its first model request never came):\n{}",
            gateway.log()
        );
    }
    // Each spawn's internal client connects at least for admin, write and read.
    let internal = connects_let_in(&server).await - let_in;
    assert!(internal >= 6.0, "the gateway's own clients came through pairgate: {internal} connects");

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
