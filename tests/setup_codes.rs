//! Setup codes (issue 18, docs/protocol.md §12): minted over WebSocket, REST and the CLI, redeemed by the
//! real `openclaw node run --pair` and `openclaw connect <joinUrl>` (2026.9.6, each in an empty home of its
//! own), single use under races, expiry by the injected clock, revocation, the lockout, labels that survive
//! re-pairing, and no secret kept anywhere.

mod common;
mod real_gateway;

use base64::Engine as _;
use common::*;
use pairgate::clock::{Clock, SystemClock};
use pairgate::domain::Role;
use pairgate::domain::setup::SETUP_CODE_TTL_MS;
use pairgate::server::Config;
use real_gateway::{CLI_WAIT, NodeHost, Tools, Version};
use reqwest::StatusCode;
use serde_json::{Value, json};

const REFUSED: &str = "unauthorized: setup code invalid, expired, revoked, or already used (create a new code; review `openclaw devices list`)";

/// A node host as `openclaw node run --pair` connects: node role, no scopes, the bootstrap token alone.
fn node_host(device: &Device, bootstrap: &str) -> Connect {
    Connect {
        client_id: "node-host".into(),
        client_mode: "node".into(),
        role: "node".into(),
        scopes: vec![],
        ..Connect::cli()
    }
    .device(device)
    .bootstrap_token(bootstrap)
}

/// The bootstrap token inside a setup code.
fn token_of(setup_code: &str) -> String {
    let payload = pairgate::domain::setup::SetupPayload::decode(setup_code).expect("a setup code");
    payload.bootstrap_token
}

async fn rest(server: &Server, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .request(method, format!("http://{}{path}", server.addr))
        .bearer_auth(TOKEN)
        .header("x-pairgate-operator", "Ada");
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn mint(server: &Server, body: Value) -> Value {
    let (status, minted) = rest(server, reqwest::Method::POST, "/api/v1/setup-codes", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{minted}");
    minted
}

async fn codes(server: &Server) -> Vec<Value> {
    let (status, page) = rest(server, reqwest::Method::GET, "/api/v1/setup-codes", None).await;
    assert_eq!(status, StatusCode::OK);
    page["items"].as_array().unwrap().clone()
}

async fn audit_actions(server: &Server) -> Vec<(String, Value)> {
    let rows = server.store.audit_page(None, 200).await.unwrap();
    rows.into_iter().map(|row| (row.action, row.details)).collect()
}

fn base64_png(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(text).unwrap()
}

/// The server's clock follows the wall clock: the real node host signs with its own time, and refuses a
/// code past its expiry by its own clock.
async fn real_time_server() -> Server {
    let server = Server::start().await;
    server.clock.set_ms(SystemClock.now_ms());
    server
}

#[tokio::test(flavor = "multi_thread")]
async fn the_real_node_host_redeems_a_code_once_and_its_qr_decodes_to_it() {
    let Some(oc) = Tools::find(Version::V2026_9) else { return };
    let server = real_time_server().await;
    let minted = mint(&server, json!({ "access": "node", "url": server.url() })).await;
    let code = minted["setupCode"].as_str().unwrap().to_owned();
    assert_eq!(decode_qr(&base64_png(minted["qrPng"].as_str().unwrap())), code);
    assert_eq!(minted["state"], "unused");

    let mut host = NodeHost::start(&oc, &["node", "run", "--pair", &code]);
    assert!(host.wait_for_stderr("node host gateway connected"), "{}", host.stderr());
    let paired = server.store.paired_devices().await.unwrap();
    assert_eq!(paired.len(), 1);
    assert_eq!(paired[0].roles(), [Role::Node]);
    assert_eq!(paired[0].meta.client_id.as_deref(), Some("node-host"));
    assert!(paired[0].live_token(Role::Node).is_some());
    host.group.stop();
    // Named by an operator, it shows under that name in the real CLI's list.
    let path = format!("/api/v1/devices/{}/label", paired[0].device_id.as_str());
    let (status, _) = rest(&server, reqwest::Method::PUT, &path, Some(json!({ "label": "Garage pi" }))).await;
    assert_eq!(status, StatusCode::OK);
    let cli_home = tempfile::tempdir().unwrap();
    let url = server.url();
    let (ok, out, err) =
        real_gateway::run_cli(&oc, cli_home.path(), &["devices", "list", "--url", &url, "--token", TOKEN]).await;
    assert!(ok && out.contains("Garage pi"), "{out}\n{err}");

    // The same code again, from another empty home: refused in OpenClaw's words, which make it exit 1.
    let mut second = NodeHost::start(&oc, &["node", "run", "--pair", &code]);
    let status = second.group.wait_exit(CLI_WAIT).expect("the second node host exits");
    assert_eq!(status.code(), Some(1), "{}", second.stderr());
    assert!(second.stderr().contains(REFUSED), "{}", second.stderr());
    assert!(second.stderr().contains("AUTH_BOOTSTRAP_TOKEN_INVALID"), "{}", second.stderr());
    assert_eq!(server.store.paired_devices().await.unwrap().len(), 1);
    let listed = codes(&server).await;
    assert_eq!(listed[0]["state"], "redeemed");
    assert_eq!(listed[0]["deviceId"], paired[0].device_id.as_str());
    let actions = audit_actions(&server).await;
    assert!(actions.iter().any(|(action, d)| action == "setup.refuse" && d["fault"] == "already-used"), "{actions:?}");
    assert!(actions.iter().any(|(action, d)| action == "setup.redeem" && d["access"] == "node"));
    assert!(actions.iter().any(|(action, _)| action == "setup.mint"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_real_openclaw_connect_redeems_a_join_url_fetched_once() {
    let Some(oc) = Tools::find(Version::V2026_9) else { return };
    let server = real_time_server().await;
    let minted = mint(&server, json!({ "access": "node", "url": server.url(), "join": true })).await;
    let join_url = minted["joinUrl"].as_str().unwrap().to_owned();
    assert!(join_url.starts_with(&format!("http://{}/j/", server.addr)), "{join_url}");

    let mut host = NodeHost::start(&oc, &["connect", &join_url]);
    assert!(host.wait_for_stderr("node host gateway connected"), "{}", host.stderr());
    host.group.stop();
    let paired = server.store.paired_devices().await.unwrap();
    assert_eq!(paired.iter().map(|d| d.roles()).collect::<Vec<_>>(), [[Role::Node]]);
    assert_eq!(codes(&server).await[0]["state"], "redeemed");

    // Fetched once: the real client is told so, and exits.
    let response = reqwest::get(&join_url).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({ "error": "not_found" }));
    let mut again = NodeHost::start(&oc, &["connect", &join_url]);
    let status = again.group.wait_exit(CLI_WAIT).expect("the second connect exits");
    assert_eq!(status.code(), Some(1), "{}", again.stderr());
    assert!(again.stderr().contains("join code was not found or has expired"), "{}", again.stderr());
}

/// Only real OpenClaw CLIs on the device side: `openclaw devices join-code` mints through pairgate's
/// `device.pair.setupCode` (its URL from `serve --public-url`), `openclaw connect` redeems it.
#[tokio::test(flavor = "multi_thread")]
async fn the_real_cli_mints_a_join_url_on_pairgate_and_the_real_node_host_redeems_it() {
    let Some(oc) = Tools::find(Version::V2026_9) else { return };
    let home = tempfile::tempdir().unwrap();
    let db = home.path().join("join.db").display().to_string();
    let listen = format!("127.0.0.1:{}", real_gateway::free_port());
    let public = format!("ws://{listen}");
    let args = ["--db", db.as_str(), "--token", TOKEN, "--listen", listen.as_str(), "--public-url", public.as_str()];
    // Debug logging: the request spans, which name every path, are written too.
    let mut command = common::processes::command(home.path());
    command.env("RUST_LOG", "debug");
    let server = common::processes::serve_from(command, home.path(), &args, "serve.log").await;
    let cli_home = tempfile::tempdir().unwrap();
    let (ok, out, err) = real_gateway::run_cli(
        &oc,
        cli_home.path(),
        &["devices", "join-code", "--url", &public, "--token", TOKEN, "--json"],
    )
    .await;
    assert!(ok, "openclaw devices join-code through pairgate:\n{out}\n{err}");
    let join_url = real_gateway::json_of(&out)["joinUrl"].as_str().unwrap().to_owned();
    assert!(join_url.starts_with(&format!("http://{listen}/j/")), "{join_url}");
    let mut host = NodeHost::start(&oc, &["connect", &join_url]);
    assert!(host.wait_for_stderr("node host gateway connected"), "{}", host.stderr());
    host.group.stop();
    let (ok, out, err) =
        common::processes::pairgate(home.path(), &["setup-codes", "list", "--json", "--db", &db]).await;
    assert!(ok, "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed[0]["state"], "redeemed", "{out}");
    assert_eq!(listed[0]["join"], true);
    let log = server.stderr();
    assert!(log.contains("/j/<code>"), "the fetch was logged, its code hidden");
    assert!(!log.contains(join_url.rsplit('/').next().unwrap()), "the short code is in no log line");
    server.kill9().await;
}

#[tokio::test]
async fn a_join_url_hands_out_its_payload_once_and_nothing_else() {
    let server = Server::start().await;
    let minted = mint(&server, json!({ "url": server.url(), "join": true })).await;
    let join_url = minted["joinUrl"].as_str().unwrap();
    // A query string or a malformed code is not found; another method is not allowed. None uses it up.
    for (method, url, status) in [
        (reqwest::Method::GET, format!("{join_url}?x=1"), StatusCode::NOT_FOUND),
        (reqwest::Method::POST, join_url.to_owned(), StatusCode::METHOD_NOT_ALLOWED),
        (reqwest::Method::GET, format!("http://{}/j/short", server.addr), StatusCode::NOT_FOUND),
        (reqwest::Method::GET, format!("http://{}/j/AAAAAAAAAAAAAAAAAAAAAA", server.addr), StatusCode::NOT_FOUND),
    ] {
        let response = reqwest::Client::new().request(method.clone(), &url).send().await.unwrap();
        assert_eq!(response.status(), status, "{method} {url}");
    }
    let response = reqwest::get(join_url).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    assert_eq!(response.headers()["cache-control"], "no-store");
    let payload: Value = response.json().await.unwrap();
    assert_eq!(payload["url"], server.url().trim_end_matches('/'));
    assert_eq!(payload["expiresAtMs"], minted["expiresAtMs"]);
    let second = reqwest::get(join_url).await.unwrap();
    assert_eq!(second.status(), StatusCode::NOT_FOUND);
    let actions = audit_actions(&server).await;
    assert_eq!(actions.iter().filter(|(action, _)| action == "setup.join.fetch").count(), 1);
    assert_eq!(actions.iter().filter(|(action, _)| action == "setup.join.refuse").count(), 4, "{actions:?}");

    // The fetch handed out a token made then: the code minted with the URL is spent, and the URL alone,
    // wherever it was seen since, is worth nothing.
    let minted_token = token_of(minted["setupCode"].as_str().unwrap());
    let (error, _) = connect(&server, &node_host(&Device::new(1), &minted_token)).await.refused();
    assert_eq!(error["message"], REFUSED);
    let token = payload["bootstrapToken"].as_str().unwrap();
    assert_ne!(token, minted_token);
    let (hello, _ws) = connect(&server, &node_host(&Device::new(1), token)).await.hello();
    assert_eq!(hello["auth"]["method"], "bootstrap-token");
    assert!(hello["auth"].get("deviceTokens").is_none(), "node access hands off nothing more");
}

#[tokio::test]
async fn a_code_past_its_expiry_is_refused_in_openclaws_words() {
    let server = Server::start().await;
    let minted = mint(&server, json!({ "url": server.url() })).await;
    assert_eq!(minted["expiresAtMs"].as_i64().unwrap() - minted["issuedAtMs"].as_i64().unwrap(), SETUP_CODE_TTL_MS);
    server.clock.advance_ms(SETUP_CODE_TTL_MS);
    let token = token_of(minted["setupCode"].as_str().unwrap());
    let (error, close) = connect(&server, &node_host(&Device::new(2), &token)).await.refused();
    assert_eq!(error["code"], "INVALID_REQUEST");
    assert_eq!(error["message"], REFUSED);
    assert_eq!(error["details"]["code"], "AUTH_BOOTSTRAP_TOKEN_INVALID");
    assert_eq!(error["details"]["authReason"], "bootstrap_token_invalid");
    assert_eq!(error["details"]["canRetryWithDeviceToken"], false);
    assert_eq!(close, Some((1008, REFUSED.to_owned())));
    assert!(server.store.paired_devices().await.unwrap().is_empty());
    assert_eq!(codes(&server).await[0]["state"], "expired");
    let actions = audit_actions(&server).await;
    assert!(actions.iter().any(|(action, d)| action == "setup.refuse" && d["fault"] == "expired"), "{actions:?}");
    // One millisecond earlier it would have been taken.
    let fresh = mint(&server, json!({ "url": server.url() })).await;
    server.clock.advance_ms(SETUP_CODE_TTL_MS - 1);
    let token = token_of(fresh["setupCode"].as_str().unwrap());
    connect(&server, &node_host(&Device::new(3), &token)).await.hello();
    // A day after their expiry, codes are forgotten by the sweep; their story stays in the audit trail.
    server.app.sweep_expired().await;
    assert_eq!(codes(&server).await.len(), 2);
    server.clock.advance_ms(pairgate::store::SETUP_CODE_RETENTION_MS + SETUP_CODE_TTL_MS);
    server.app.sweep_expired().await;
    assert_eq!(codes(&server).await, Vec::<Value>::new());
    assert!(audit_actions(&server).await.iter().any(|(action, _)| action == "setup.redeem"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_redemptions_of_one_code_pair_exactly_one_device() {
    const N: u8 = 16;
    let server = Server::start().await;
    let minted = mint(&server, json!({ "url": server.url() })).await;
    let token = token_of(minted["setupCode"].as_str().unwrap());
    // Every socket has its challenge before any connect is sent, so the connects race in the store.
    let mut sockets = Vec::new();
    for seed in 0..N {
        let (ws, nonce) = open(&server.url(), &[]).await.unwrap();
        sockets.push((ws, nonce, node_host(&Device::new(100 + seed), &token)));
    }
    let now = server.now();
    let outcomes = futures_util::future::join_all(
        sockets.into_iter().map(|(ws, nonce, attempt)| async move { connect_on(ws, &nonce, &attempt, now).await }),
    )
    .await;
    let mut hellos = 0;
    for outcome in outcomes {
        match outcome {
            Outcome::Hello { .. } => hellos += 1,
            Outcome::Refused { error, close } => {
                assert_eq!(error["details"]["code"], "AUTH_BOOTSTRAP_TOKEN_INVALID", "{error}");
                assert_eq!(close.map(|(code, _)| code), Some(1008));
            }
        }
    }
    assert_eq!(hellos, 1);
    assert_eq!(server.store.paired_devices().await.unwrap().len(), 1);
    let actions = audit_actions(&server).await;
    assert_eq!(actions.iter().filter(|(action, _)| action == "setup.redeem").count(), 1);
    let refused: Vec<_> = actions.iter().filter(|(action, _)| action == "setup.refuse").collect();
    assert_eq!(refused.len(), usize::from(N) - 1);
    assert!(refused.iter().all(|(_, d)| d["fault"] == "already-used"), "{refused:?}");
}

#[tokio::test]
async fn access_levels_hand_off_bounded_tokens_and_never_pairing() {
    let server = Server::start().await;
    let operator_scopes = |hello: &Value| hello["auth"]["deviceTokens"][0]["scopes"].clone();
    // Full: the node token, and an operator token with admin, never operator.pairing.
    let full = mint(&server, json!({ "access": "full", "url": server.url() })).await;
    assert_eq!(full["access"], "full");
    let phone = Device::new(10);
    let (hello, _ws) =
        connect(&server, &node_host(&phone, &token_of(full["setupCode"].as_str().unwrap()))).await.hello();
    assert_eq!(hello["auth"]["role"], "node");
    assert_eq!(hello["auth"]["deviceTokens"][0]["role"], "operator");
    let full_scopes = json!([
        "operator.admin",
        "operator.approvals",
        "operator.questions",
        "operator.read",
        "operator.talk.secrets",
        "operator.write"
    ]);
    assert_eq!(operator_scopes(&hello), full_scopes);
    assert_eq!(hello["auth"]["deviceTokens"].as_array().unwrap().len(), 1);
    // The handed-off operator token works on its own (operator.pairing only by admin's implication).
    let operator_token = hello["auth"]["deviceTokens"][0]["deviceToken"].as_str().unwrap();
    let as_operator = Connect::cli().device(&phone).token(None).device_token(operator_token);
    connect(&server, &as_operator.scopes(&["operator.admin"])).await.hello();
    let grant = server.store.device(&phone.id()).await.unwrap().unwrap().grant(Role::Operator).unwrap().clone();
    assert!(!grant.scopes.names().contains(&"operator.pairing"));

    // Limited: no admin, not even when the operator role redeems it asking for admin.
    let limited = mint(&server, json!({ "access": "limited", "url": server.url() })).await;
    let token = token_of(limited["setupCode"].as_str().unwrap());
    let asks_admin = Connect::cli().device(&Device::new(11)).scopes(&["operator.admin"]).bootstrap_token(&token);
    let (error, _) = connect(&server, &asks_admin).await.refused();
    assert_eq!(error["message"], REFUSED);
    let asks_read = Connect::cli().device(&Device::new(11)).scopes(&["operator.read"]).bootstrap_token(&token);
    let (hello, _ws) = connect(&server, &asks_read).await.hello();
    assert_eq!(hello["auth"]["role"], "operator");
    assert_eq!(hello["auth"]["scopes"], json!(["operator.read"]));
    assert_eq!(hello["auth"]["deviceTokens"][0]["role"], "node");
    let device = server.store.device(&Device::new(11).id()).await.unwrap().unwrap();
    assert!(!device.grant(Role::Operator).unwrap().scopes.names().contains(&"operator.admin"));
    assert_eq!(device.grant(Role::Operator).unwrap().scopes.names().len(), 5);
    // Its operator token cannot reach pairing mutations nor admin.
    let operator_token = hello["auth"]["deviceToken"].as_str().unwrap();
    for scope in ["operator.pairing", "operator.admin"] {
        let attempt = Connect::cli().device(&Device::new(11)).token(None).device_token(operator_token).scopes(&[scope]);
        let (error, _) = connect(&server, &attempt).await.refused();
        assert_eq!(error["details"]["code"], "AUTH_SCOPE_MISMATCH", "{scope}: {error}");
    }

    // Voice: reading and talking.
    let voice = mint(&server, json!({ "access": "voice-node", "url": server.url() })).await;
    let (hello, _ws) =
        connect(&server, &node_host(&Device::new(12), &token_of(voice["setupCode"].as_str().unwrap()))).await.hello();
    assert_eq!(operator_scopes(&hello), json!(["operator.read", "operator.talk"]));

    // Node: the node role only; an operator connect is outside it.
    let node = mint(&server, json!({ "access": "node", "url": server.url() })).await;
    let token = token_of(node["setupCode"].as_str().unwrap());
    let (error, _) = connect(&server, &Connect::cli().device(&Device::new(13)).bootstrap_token(&token)).await.refused();
    assert_eq!(error["details"]["code"], "AUTH_BOOTSTRAP_TOKEN_INVALID");
    let actions = audit_actions(&server).await;
    assert!(actions.iter().any(|(action, d)| action == "setup.refuse" && d["fault"] == "outside-access"));
    // A refusal outside the access left the code usable.
    connect(&server, &node_host(&Device::new(13), &token)).await.hello();
}

#[tokio::test]
async fn the_rpc_mints_in_openclaws_shape_and_reports_completion() {
    let server = Server::start().await;
    let (_, mut admin) = connect(&server, &Connect::cli().scopes(&["operator.admin"])).await.hello();
    // On a loopback-only listener without a public URL, minting is refused, saying what to set.
    let refused = call(&mut admin, "1", "device.pair.setupCode", json!({})).await;
    assert_eq!(refused["error"]["code"], "INVALID_REQUEST");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("only listening on loopback") && message.contains("--public-url"), "{message}");

    let minted = call(&mut admin, "2", "device.pair.setupCode", json!({ "publicUrl": server.url() })).await;
    let result = &minted["payload"];
    assert_eq!(minted["ok"], true, "{minted}");
    for field in ["setupId", "expiresAtMs", "setupCode", "qrDataUrl", "gatewayUrl", "auth", "urlSource", "access"] {
        assert!(!result[field].is_null(), "{field} in {result}");
    }
    assert_eq!(result["access"], "full", "no bootstrapProfile is full access");
    assert_eq!(result["auth"], "token");
    assert_eq!(result["urlSource"], "request.publicUrl");
    assert_eq!(result["gatewayUrl"], server.url().trim_end_matches('/'));
    let qr = result["qrDataUrl"].as_str().unwrap().strip_prefix("data:image/png;base64,").unwrap();
    assert!(result["qrDataUrl"].as_str().unwrap().len() <= 16_384);
    assert_eq!(decode_qr(&base64_png(qr)), result["setupCode"].as_str().unwrap());
    let setup_id = result["setupId"].as_str().unwrap();
    let status = call(&mut admin, "3", "device.pair.setupStatus", json!({ "setupId": setup_id })).await;
    assert_eq!(status["payload"], json!({}));

    // Params as OpenClaw checks them.
    for (params, words) in [
        (
            json!({ "publicUrl": server.url(), "joinUrl": true, "bootstrapProfile": "limited" }),
            "Join URLs require bootstrapProfile=node.",
        ),
        (
            json!({ "publicUrl": server.url(), "bootstrapProfile": "admin" }),
            "bootstrapProfile must be limited, node or voice-node",
        ),
        (json!({ "publicUrl": server.url(), "extra": 1 }), "unknown field `extra`"),
        (json!({ "publicUrl": "ws://gateway.example.com" }), "use wss://"),
    ] {
        let reply = call(&mut admin, "4", "device.pair.setupCode", params.clone()).await;
        let message = reply["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(words), "{params}: {reply}");
    }
    let (_, mut reader) =
        connect(&server, &Connect::cli().scopes(&["operator.read", "operator.pairing"])).await.hello();
    let denied = call(&mut reader, "5", "device.pair.setupCode", json!({ "publicUrl": server.url() })).await;
    assert_eq!(denied["error"]["message"], "missing scope: operator.admin");

    // Redeemed: the pairing socket hears of it, and the status says who.
    let device = Device::new(20);
    let token = token_of(result["setupCode"].as_str().unwrap());
    let (_hello, _ws) = connect(&server, &node_host(&device, &token).display_name("kitchen pi")).await.hello();
    let event = loop {
        let frame = tokio::time::timeout(FRAME_WAIT, next_json(&mut reader)).await.unwrap().unwrap();
        if frame["event"] == "device.pair.setup.completed" {
            break frame["payload"].clone();
        }
    };
    assert_eq!(event["setupId"], setup_id);
    assert_eq!(event["deviceId"], device.id().as_str());
    assert_eq!(event["deviceName"], "kitchen pi", "{event}");
    assert_eq!(event["access"], "full");
    assert!(!event.to_string().contains(&token), "no token in the event");
    let status = call(&mut admin, "6", "device.pair.setupStatus", json!({ "setupId": setup_id })).await;
    assert_eq!(status["payload"]["completion"]["deviceId"], device.id().as_str());
    assert_eq!(status["payload"]["completion"]["deviceName"], "kitchen pi", "{status}");
}

#[tokio::test]
async fn codes_are_listed_and_revoked_and_a_revoked_one_is_refused() {
    let server = Server::start().await;
    let minted = mint(&server, json!({ "url": server.url() })).await;
    let id = minted["setupId"].as_str().unwrap();
    let listed = codes(&server).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["state"], "unused");
    assert_eq!(listed[0]["issuedBy"], "rest:gateway/operator:Ada");
    assert!(listed[0].get("setupCode").is_none(), "a listing never shows the code");
    let path = format!("/api/v1/setup-codes/{id}/revoke");
    let (status, revoked) = rest(&server, reqwest::Method::POST, &path, None).await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert_eq!(revoked["state"], "revoked");
    assert_eq!(revoked["revokedBy"], "rest:gateway/operator:Ada");
    let (status, again) = rest(&server, reqwest::Method::POST, &path, None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    let (status, _) = rest(&server, reqwest::Method::POST, "/api/v1/setup-codes/nope/revoke", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let token = token_of(minted["setupCode"].as_str().unwrap());
    let (error, _) = connect(&server, &node_host(&Device::new(30), &token)).await.refused();
    assert_eq!(error["message"], REFUSED);
    let actions = audit_actions(&server).await;
    assert!(actions.iter().any(|(action, d)| action == "setup.refuse" && d["fault"] == "revoked"));
    assert!(actions.iter().any(|(action, _)| action == "setup.revoke"));
    // A bad access level or URL is refused in words.
    let (status, error) =
        rest(&server, reqwest::Method::POST, "/api/v1/setup-codes", Some(json!({ "access": "admin" }))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    let (status, error) = rest(&server, reqwest::Method::POST, "/api/v1/setup-codes", Some(json!({}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert!(error["message"].as_str().unwrap().contains("--public-url"), "{error}");
    let long = format!("{}{}", server.url(), "a".repeat(2000));
    let (status, error) =
        rest(&server, reqwest::Method::POST, "/api/v1/setup-codes", Some(json!({ "url": long }))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert!(error["message"].as_str().unwrap().contains("too long"), "{error}");
    // A revoked code has no completion to report.
    let (_, mut admin) = connect(&server, &Connect::cli().scopes(&["operator.admin"])).await.hello();
    let status = call(&mut admin, "1", "device.pair.setupStatus", json!({ "setupId": id })).await;
    assert_eq!(status["payload"], json!({}));
}

#[tokio::test]
async fn failed_redemptions_count_toward_the_lockout() {
    let config = Config { trusted_proxies: vec!["127.0.0.1".parse().unwrap()], ..Config::default() };
    let server = Server::start_with(config).await;
    let minted = mint(&server, json!({ "url": server.url() })).await;
    let remote = |seed: u8, token: &str| node_host(&Device::new(seed), token).via_proxy_for("203.0.113.9");
    for attempt in 0..10 {
        let (error, _) = connect(&server, &remote(40, "guessed-token")).await.refused();
        assert_eq!(error["details"]["code"], "AUTH_BOOTSTRAP_TOKEN_INVALID", "attempt {attempt}: {error}");
    }
    // Locked out: even the right code is not tried.
    let token = token_of(minted["setupCode"].as_str().unwrap());
    let (error, _) = connect(&server, &remote(41, &token)).await.refused();
    assert_eq!(error["details"]["code"], "AUTH_RATE_LIMITED", "{error}");
    assert_eq!(codes(&server).await[0]["state"], "unused");
    let actions = audit_actions(&server).await;
    assert!(actions.iter().any(|(action, _)| action == "auth.lockout"));
    // Local clients are exempt, as on OpenClaw.
    connect(&server, &node_host(&Device::new(41), &token)).await.hello();
}

#[tokio::test]
async fn a_label_survives_removal_and_re_pairing() {
    let server = Server::start().await;
    let device = Device::new(50);
    let first = mint(&server, json!({ "url": server.url() })).await;
    connect(&server, &node_host(&device, &token_of(first["setupCode"].as_str().unwrap()))).await.hello();
    let (_, mut admin) = connect(&server, &Connect::cli().scopes(&["operator.admin"])).await.hello();
    let renamed =
        call(&mut admin, "1", "device.pair.rename", json!({ "deviceId": device.id().as_str(), "label": "  Garage  " }))
            .await;
    assert_eq!(renamed["payload"], json!({ "deviceId": device.id().as_str(), "label": "Garage" }), "{renamed}");
    for (label, words) in [("", "label must be 1 to 64 characters"), ("a\u{7}b", "without control characters")] {
        let reply =
            call(&mut admin, "2", "device.pair.rename", json!({ "deviceId": device.id().as_str(), "label": label }))
                .await;
        assert!(reply["error"]["message"].as_str().unwrap().contains(words), "{reply}");
    }
    let unknown =
        call(&mut admin, "3", "device.pair.rename", json!({ "deviceId": Device::new(51).id().as_str(), "label": "x" }))
            .await;
    assert!(unknown["error"]["message"].as_str().unwrap().starts_with("unknown deviceId"), "{unknown}");
    // A device without operator.admin renames itself only.
    let own = Device::new(52);
    let (_, mut own_ws) = connect(&server, &Connect::cli().device(&own).scopes(&["operator.pairing"])).await.hello();
    let params = json!({ "deviceId": device.id().as_str(), "label": "Mine" });
    let denied = call(&mut own_ws, "4", "device.pair.rename", params).await;
    assert_eq!(denied["error"]["message"], "device pairing rename denied", "{denied}");
    let params = json!({ "deviceId": own.id().as_str(), "label": "Me" });
    let allowed = call(&mut own_ws, "5", "device.pair.rename", params).await;
    assert_eq!(allowed["payload"]["label"], "Me", "{allowed}");

    let path = format!("/api/v1/devices/{}", device.id().as_str());
    let (status, _) = rest(&server, reqwest::Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::OK);
    let second = mint(&server, json!({ "url": server.url() })).await;
    connect(&server, &node_host(&device, &token_of(second["setupCode"].as_str().unwrap()))).await.hello();
    let (status, shown) = rest(&server, reqwest::Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["operatorLabel"], "Garage");
    assert_eq!(shown["roles"], json!(["node"]));
    // Over REST too.
    let (status, renamed) =
        rest(&server, reqwest::Method::PUT, &format!("{path}/label"), Some(json!({ "label": "Shed" }))).await;
    assert_eq!((status, renamed["label"].clone()), (StatusCode::OK, json!("Shed")));
    let actions = audit_actions(&server).await;
    let renames: Vec<_> = actions.iter().filter(|(action, _)| action == "device.rename").collect();
    assert_eq!(renames.len(), 3, "{renames:?}");
}

#[tokio::test]
async fn a_redemption_settles_the_devices_pending_request_only_when_it_grants_all_it_asked() {
    let config = Config { trusted_proxies: vec!["127.0.0.1".parse().unwrap()], ..Config::default() };
    let server = Server::start_with(config).await;
    let (_, mut operator) = connect(&server, &Connect::cli().scopes(&["operator.pairing"])).await.hello();
    let ask = |device: &Device| {
        Connect { client_id: "node-host".into(), client_mode: "node".into(), role: "node".into(), ..Connect::cli() }
            .device(device)
            .scopes(&[])
            .via_proxy_for("198.51.100.30")
    };
    // A node asked to pair and waits; its setup code (node access) grants what it asked: settled, announced.
    let pi = Device::new(70);
    let (error, _) = connect(&server, &ask(&pi)).await.refused();
    let request_id = error["details"]["requestId"].as_str().unwrap().to_owned();
    let minted = mint(&server, json!({ "url": server.url() })).await;
    let redeem = node_host(&pi, &token_of(minted["setupCode"].as_str().unwrap())).via_proxy_for("198.51.100.30");
    connect(&server, &redeem).await.hello();
    let resolved = loop {
        let frame = tokio::time::timeout(FRAME_WAIT, next_json(&mut operator)).await.unwrap().unwrap();
        if frame["event"] == "device.pair.resolved" {
            break frame["payload"].clone();
        }
    };
    assert_eq!(
        (resolved["requestId"].as_str(), resolved["decision"].as_str()),
        (Some(request_id.as_str()), Some("approved"))
    );
    let request = server.store.pairing_request(&request_id).await.unwrap().unwrap();
    assert_eq!(request.status, pairgate::domain::RequestStatus::Approved);

    // An operator asked for admin; a node code grants less: its request stays for an operator to decide.
    let laptop = Device::new(71);
    let asking = Connect::cli().device(&laptop).scopes(&["operator.admin"]).via_proxy_for("198.51.100.31");
    let (error, _) = connect(&server, &asking).await.refused();
    let request_id = error["details"]["requestId"].as_str().unwrap().to_owned();
    let minted = mint(&server, json!({ "url": server.url() })).await;
    connect(&server, &node_host(&laptop, &token_of(minted["setupCode"].as_str().unwrap()))).await.hello();
    let request = server.store.pairing_request(&request_id).await.unwrap().unwrap();
    assert_eq!(request.status, pairgate::domain::RequestStatus::Pending);
}

#[tokio::test]
async fn no_secret_of_a_code_is_stored_or_exported() {
    let server = Server::start().await;
    let minted = mint(&server, json!({ "url": server.url(), "join": true })).await;
    let code = minted["setupCode"].as_str().unwrap();
    let token = token_of(code);
    let shortcode = minted["joinUrl"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
    connect(&server, &node_host(&Device::new(60), &token)).await.hello();
    let export = server.store.export_json(server.now()).await.unwrap().to_string();
    let audit = serde_json::to_string(&audit_actions(&server).await).unwrap();
    for secret in [code, token.as_str(), shortcode.as_str()] {
        assert!(!audit.contains(secret), "a secret in the audit trail");
    }
    for secret in [code, token.as_str(), shortcode.as_str()] {
        assert!(!export.contains(secret), "a secret in the export");
    }
    let setup_id = minted["setupId"].as_str().unwrap().to_owned();
    let dir = server.stop().await;
    // The database's own files, byte for byte (on PostgreSQL they are the server's: the export and the audit
    // trail above stand for them).
    if test_engine_is_postgres() {
        return;
    }
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        stored.extend(std::fs::read(entry.unwrap().path()).unwrap_or_default());
    }
    let stored = String::from_utf8_lossy(&stored);
    assert!(stored.contains(&setup_id), "the scan reads the code's row");
    for secret in [code, token.as_str(), shortcode.as_str()] {
        assert!(!stored.contains(secret), "a secret in the database files");
    }
}

#[tokio::test]
async fn live_codes_are_capped_and_a_revoked_or_expired_one_makes_room() {
    let server = Server::start().await;
    let max = pairgate::store::MAX_UNUSED_SETUP_CODES;
    let mut first = None;
    for _ in 0..max {
        first.get_or_insert(mint(&server, json!({ "url": server.url() })).await);
    }
    let (status, error) =
        rest(&server, reqwest::Method::POST, "/api/v1/setup-codes", Some(json!({ "url": server.url() }))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert!(error["message"].as_str().unwrap().contains("too many unused setup codes"), "{error}");
    let path = format!("/api/v1/setup-codes/{}/revoke", first.unwrap()["setupId"].as_str().unwrap());
    assert_eq!(rest(&server, reqwest::Method::POST, &path, None).await.0, StatusCode::OK);
    mint(&server, json!({ "url": server.url() })).await;
    server.clock.advance_ms(SETUP_CODE_TTL_MS);
    mint(&server, json!({ "url": server.url() })).await;
}
