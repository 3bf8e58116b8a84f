//! The connect path against a real server on 127.0.0.1:0 and a real database file: every error of
//! docs/protocol.md §2, the rows of §4, and what was (or was not) written to the store.

mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use pairgate::domain::{RequestStatus, Role, ScopeSet};
use pairgate::server::Config;
use pairgate::store::{Actor, Location};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

fn with_proxy() -> Config {
    Config { trusted_proxies: vec!["127.0.0.1".parse().unwrap()], ..Config::default() }
}

/// Rows written anywhere: devices, pending requests, audit events.
async fn written(server: &Server) -> (usize, usize, usize) {
    let devices = server.store.paired_devices().await.unwrap().len();
    let pending = server.store.pending_requests(server.now()).await.unwrap().len();
    let audit = server.store.audit_page(None, 1000).await.unwrap().len();
    (devices, pending, audit)
}

fn scopes(names: &[&str]) -> ScopeSet {
    ScopeSet::parse(names).unwrap()
}

#[tokio::test]
async fn local_cli_without_device_gets_hello_ok_with_its_scopes() {
    let server = Server::start().await;
    let (hello, _ws) = connect(&server, &Connect::cli().scopes(&["operator.pairing", "operator.read"])).await.hello();
    assert_eq!(hello["protocol"], 4);
    assert!(hello["server"]["connId"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(hello["policy"], json!({"maxPayload": 26214400, "maxBufferedBytes": 52428800, "tickIntervalMs": 30000}));
    assert_eq!(
        hello["auth"],
        json!({"method": "token", "role": "operator", "scopes": ["operator.pairing", "operator.read"]})
    );
    let methods: Vec<&str> =
        hello["features"]["methods"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
    assert_eq!(methods, pairgate::gateway::methods::Method::names(), "features.methods lists exactly the method table");
    for method in
        ["health", "device.pair.list", "device.pair.approve", "sessions.patch", "agent.wait", "subagents.register"]
    {
        assert!(methods.contains(&method), "{method} is advertised");
    }
    // Every advertised method is dispatched: none answers "unknown method".
    let (_, mut admin) = connect(&server, &Connect::cli().scopes(&["operator.admin"])).await.hello();
    for method in &methods {
        let reply = call(&mut admin, method, method, json!({})).await;
        let message = reply["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.starts_with("unknown method"), "{method}: {reply}");
    }
    assert!(hello["snapshot"]["presence"].is_array());
    assert_eq!(written(&server).await, (0, 0, 0), "neither the device-less CLI nor malformed calls write anything");
}

#[tokio::test]
async fn protocol_3_client_with_v2_signature_is_served_protocol_3() {
    let server = Server::start().await;
    let device = Device::new(3);
    let attempt = Connect { protocol: (3, 3), signature_version: 2, ..Connect::cli().device(&device) };
    let (hello, _ws) = connect(&server, &attempt).await.hello();
    assert_eq!(hello["protocol"], 3);
    let both = Connect { protocol: (3, 4), ..Connect::cli().device(&device) };
    assert_eq!(connect(&server, &both).await.hello().0["protocol"], 4);
}

#[tokio::test]
async fn protocol_mismatch_closes_with_1002() {
    let server = Server::start().await;
    let (error, close) = connect(&server, &Connect { protocol: (5, 6), ..Connect::cli() }).await.refused();
    assert_eq!(error["code"], "INVALID_REQUEST");
    assert_eq!(error["message"], "protocol mismatch");
    assert_eq!(
        error["details"],
        json!({"code": "PROTOCOL_MISMATCH", "clientMinProtocol": 5, "clientMaxProtocol": 6, "expectedProtocol": 4})
    );
    assert_eq!(close.unwrap().0, 1002);
}

#[tokio::test]
async fn wrong_or_missing_gateway_token_is_refused_and_nothing_is_written() {
    let server = Server::start().await;
    let device = Device::new(4);
    let (error, close) = connect(&server, &Connect::cli().device(&device).token(Some("wrong"))).await.refused();
    assert_eq!(error["code"], "INVALID_REQUEST");
    assert!(error["message"].as_str().unwrap().starts_with("unauthorized: gateway token mismatch"));
    assert_eq!(
        error["details"],
        json!({"code": "AUTH_TOKEN_MISMATCH", "authReason": "token_mismatch", "canRetryWithDeviceToken": true,
               "recommendedNextStep": "retry_with_device_token"})
    );
    assert_eq!(close.unwrap().0, 1008);

    let (error, close) = connect(&server, &Connect::cli().device(&device).token(None)).await.refused();
    assert_eq!(error["details"]["code"], "AUTH_TOKEN_MISSING");
    assert_eq!(close.unwrap().0, 1008);
    assert_eq!(written(&server).await, (0, 0, 0));
}

#[tokio::test]
async fn every_device_proof_failure_has_its_code_and_writes_nothing() {
    let server = Server::start().await;
    let device = Device::new(5);
    let base = Connect::cli().device(&device);
    let cases: Vec<(Connect, &str, &str)> = vec![
        (Connect { signature_version: 1, ..base.clone() }, "DEVICE_AUTH_SIGNATURE_INVALID", "device signature invalid"),
        (
            Connect { nonce_override: Some("not-the-challenge".into()), ..base.clone() },
            "DEVICE_AUTH_NONCE_MISMATCH",
            "device nonce mismatch",
        ),
        (
            Connect { signed_at_offset_ms: -120_001, ..base.clone() },
            "DEVICE_AUTH_SIGNATURE_EXPIRED",
            "device signature expired",
        ),
        (
            Connect { signed_at_offset_ms: 120_001, ..base.clone() },
            "DEVICE_AUTH_SIGNATURE_EXPIRED",
            "device signature expired",
        ),
        (
            Connect { id_override: Some("ab".repeat(32)), ..base.clone() },
            "DEVICE_AUTH_DEVICE_ID_MISMATCH",
            "device identity mismatch",
        ),
    ];
    for (attempt, code, message) in cases {
        let (error, close) = connect(&server, &attempt).await.refused();
        assert_eq!(error["details"]["code"], code);
        assert_eq!(error["message"], message);
        assert_eq!(close.unwrap().0, 1008);
    }
    // A malformed key: sent by hand, since the client helper always sends the real key.
    let (mut ws, nonce) = open(&server.url(), &[]).await.unwrap();
    let mut params = base.params(&nonce, server.now());
    params["device"]["publicKey"] = json!("not-a-key");
    send_json(&mut ws, &json!({"type": "req", "id": "1", "method": "connect", "params": params})).await;
    let reply = next_json(&mut ws).await.unwrap();
    assert_eq!(reply["error"]["details"]["code"], "DEVICE_AUTH_PUBLIC_KEY_INVALID");
    assert_eq!(expect_close(&mut ws).await.unwrap().0, 1008);
    assert_eq!(written(&server).await, (0, 0, 0));
}

#[tokio::test]
async fn device_token_without_device_identity_is_refused() {
    let server = Server::start().await;
    let (error, close) = connect(&server, &Connect::cli().token(None).device_token("whatever")).await.refused();
    assert_eq!(error["message"], "device identity required");
    assert_eq!(error["details"]["code"], "DEVICE_IDENTITY_REQUIRED");
    assert_eq!(close.unwrap().0, 1008);
}

#[tokio::test]
async fn local_device_is_approved_silently_and_its_token_works_alone() {
    let server = Server::start().await;
    let device = Device::new(6);
    let (hello, _ws) = connect(&server, &Connect::cli().device(&device).scopes(&["operator.read"])).await.hello();
    let token = hello["auth"]["deviceToken"].as_str().expect("a device token is minted").to_owned();
    assert_eq!(token.len(), 43, "256 bits, base64url");
    assert!(hello["auth"]["issuedAtMs"].is_i64());

    // Stored: the grant and the token's digest, never its value.
    let record = server.store.device(&device.id()).await.unwrap().unwrap();
    assert_eq!(record.grant(Role::Operator).unwrap().scopes, scopes(&["operator.read"]));
    assert_eq!(record.approved_via.as_deref(), Some("silent"));
    let live = record.live_token(Role::Operator).unwrap();
    assert!(live.digest.ct_eq(&pairgate::domain::TokenSecret::from_presented(token.clone()).digest()));
    let stored = match test_location(server.dir.path()) {
        // Every byte of the file and its WAL, free pages included.
        Location::Sqlite(path) => {
            let wal = std::fs::read(pairgate::store::sibling_path(&path, "-wal")).unwrap_or_default();
            [wal, std::fs::read(&path).unwrap()].concat()
        }
        // Every row of every table.
        Location::Postgres(_) => server.store.export_json(server.now()).await.unwrap().to_string().into_bytes(),
    };
    assert!(!stored.windows(token.len()).any(|w| w == token.as_bytes()), "the token value is not in the database");
    let audit = server.store.audit_page(None, 10).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].action, "device.approve.silent");
    assert_eq!(audit[0].subject.as_deref(), Some(device.id().as_str()));

    // The device token alone authenticates, and is echoed back.
    let (hello, _ws) = connect(&server, &Connect::cli().device(&device).token(None).device_token(&token)).await.hello();
    assert_eq!(hello["auth"]["method"], "device-token");
    assert_eq!(hello["auth"]["deviceToken"], token);
    // With the shared secret and a live token, nothing new is minted.
    let (hello, _ws) = connect(&server, &Connect::cli().device(&device)).await.hello();
    assert!(hello["auth"].get("deviceToken").is_none());
    assert_eq!(server.store.audit_page(None, 10).await.unwrap().len(), 1, "plain reconnects write nothing");

    // A wrong device token is refused.
    let (error, close) =
        connect(&server, &Connect::cli().device(&device).token(None).device_token("nope")).await.refused();
    assert_eq!(error["details"]["code"], "AUTH_DEVICE_TOKEN_MISMATCH");
    assert_eq!(error["details"]["recommendedNextStep"], "update_auth_credentials");
    assert_eq!(close.unwrap().0, 1008);
}

#[tokio::test]
async fn remote_device_gets_a_pairing_request_that_dedupes_supersedes_and_can_be_approved() {
    let server = Server::start_with(with_proxy()).await;
    let device = Device::new(7);
    let ask = Connect::cli().device(&device).via_proxy_for("203.0.113.10");

    let (error, close) = connect(&server, &ask).await.refused();
    assert_eq!(error["code"], "NOT_PAIRED");
    assert_eq!(error["message"], "pairing required: device is not approved yet");
    let details = &error["details"];
    assert_eq!(details["code"], "PAIRING_REQUIRED");
    assert_eq!(details["reason"], "not-paired");
    assert_eq!(details["deviceId"], device.id().as_str());
    assert_eq!(details["requestedRole"], "operator");
    assert_eq!(details["requestedScopes"], json!(["operator.read"]));
    let first_id = details["requestId"].as_str().unwrap().to_owned();
    let (code, reason) = close.unwrap();
    assert_eq!(code, 1008);
    assert_eq!(reason, format!("pairing required: device is not approved yet (requestId: {first_id})"));
    let stored = server.store.pairing_request(&first_id).await.unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.remote_ip.as_deref(), stored.is_local),
        (RequestStatus::Pending, Some("203.0.113.10"), false)
    );

    // Same ask → same request id.
    let (error, _) = connect(&server, &ask).await.refused();
    assert_eq!(error["details"]["requestId"], first_id);

    // A different ask supersedes: new id, scopes unioned.
    let (error, _) = connect(&server, &ask.clone().scopes(&["operator.write"])).await.refused();
    let second_id = error["details"]["requestId"].as_str().unwrap().to_owned();
    assert_ne!(second_id, first_id);
    assert_eq!(server.store.pairing_request(&first_id).await.unwrap().unwrap().status, RequestStatus::Superseded);
    let pending = server.store.pending_requests(server.now()).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].scopes, scopes(&["operator.read", "operator.write"]));
    assert_eq!(pending[0].request_id, second_id);

    // Approved through the store, the next connect is let in and given a token.
    server.store.approve_request(&second_id, None, &Actor::local_cli(), server.now()).await.unwrap();
    let (hello, _ws) = connect(&server, &ask.clone().scopes(&["operator.write"])).await.hello();
    assert!(hello["auth"]["deviceToken"].is_string());
    let actions: Vec<String> =
        server.store.audit_page(None, 20).await.unwrap().into_iter().map(|row| row.action).collect();
    assert_eq!(actions, ["token.issue", "pairing.approve", "pairing.request", "pairing.request"]);
}

#[tokio::test]
async fn remote_upgrades_name_their_reason_and_what_is_approved() {
    let server = Server::start_with(with_proxy()).await;
    let device = Device::new(8);
    // Paired locally first, at operator.read, platform linux.
    connect(&server, &Connect::cli().device(&device)).await.hello();
    let remote = Connect::cli().device(&device).via_proxy_for("198.51.100.20");

    let (error, _) = connect(&server, &remote.clone().scopes(&["operator.admin"])).await.refused();
    assert_eq!(error["details"]["reason"], "scope-upgrade");
    assert_eq!(error["message"], "pairing required: device is asking for more scopes than currently approved");
    assert_eq!(error["details"]["approvedRoles"], json!(["operator"]));
    assert_eq!(error["details"]["approvedScopes"], json!(["operator.read"]));

    let (error, _) = connect(&server, &Connect { platform: "darwin".into(), ..remote.clone() }).await.refused();
    assert_eq!(error["details"]["reason"], "metadata-upgrade");

    let node =
        Connect { role: "node".into(), client_id: "node-host".into(), client_mode: "node".into(), ..remote.clone() }
            .scopes(&[]);
    let (error, _) = connect(&server, &node).await.refused();
    assert_eq!(error["details"]["reason"], "role-upgrade");
    assert_eq!(error["message"], "pairing required: device is asking for a role that is not approved");

    // Within what was approved, the remote device is let in.
    connect(&server, &remote).await.hello();
}

#[tokio::test]
async fn pending_requests_expire_after_five_minutes() {
    let server = Server::start_with(with_proxy()).await;
    let device = Device::new(9);
    let ask = Connect::cli().device(&device).via_proxy_for("203.0.113.11");
    let (error, _) = connect(&server, &ask).await.refused();
    let old_id = error["details"]["requestId"].as_str().unwrap().to_owned();

    server.clock.advance_ms(5 * 60 * 1000);
    assert!(server.store.pending_requests(server.now()).await.unwrap().is_empty());
    let error = server.store.approve_request(&old_id, None, &Actor::local_cli(), server.now()).await.unwrap_err();
    assert!(matches!(error.refusal(), Some(pairgate::domain::Refusal::Expired { .. })), "{error}");
    assert_eq!(server.store.pairing_request(&old_id).await.unwrap().unwrap().status, RequestStatus::Expired);

    let (error, _) = connect(&server, &ask).await.refused();
    assert_ne!(error["details"]["requestId"], old_id.as_str(), "an expired request is not reused");
}

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_are_refused_with_403() {
    let server = Server::start().await;
    let error = open(&server.url(), &[("x-forwarded-for", "203.0.113.1".into())]).await.unwrap_err();
    match error {
        tokio_tungstenite::tungstenite::Error::Http(response) => assert_eq!(response.status(), 403),
        other => panic!("expected HTTP 403, got {other}"),
    }
}

#[tokio::test]
async fn browsers_and_disabled_auto_approval_are_never_silent() {
    let server = Server::start().await;
    let ui = Connect {
        client_id: "openclaw-control-ui".into(),
        client_mode: "ui".into(),
        headers: vec![("origin", "http://127.0.0.1:18789".into())],
        ..Connect::cli().device(&Device::new(10))
    };
    let (error, _) = connect(&server, &ui).await.refused();
    assert_eq!(error["details"]["reason"], "not-paired");

    let strict = Server::start_with(Config {
        policy: pairgate::auth::policy::PolicyConfig { auto_approve_local: false },
        ..Config::default()
    })
    .await;
    let (error, _) = connect(&strict, &Connect::cli().device(&Device::new(11))).await.refused();
    assert_eq!(error["code"], "NOT_PAIRED");
    let pending = strict.store.pending_requests(strict.now()).await.unwrap();
    assert!(pending[0].is_local);
}

#[tokio::test]
async fn failed_auth_from_remote_locks_out_and_loopback_is_exempt() {
    let server = Server::start_with(with_proxy()).await;
    let remote = Connect::cli().via_proxy_for("203.0.113.50");
    for _ in 0..10 {
        let (error, _) = connect(&server, &remote.clone().token(Some("wrong"))).await.refused();
        assert_eq!(error["details"]["code"], "AUTH_TOKEN_MISMATCH");
    }
    let (error, close) = connect(&server, &remote).await.refused();
    assert_eq!(error["message"], "unauthorized: too many failed authentication attempts (retry later)");
    assert_eq!(error["retryable"], true);
    assert_eq!(error["retryAfterMs"], 300_000);
    assert_eq!(error["details"]["code"], "AUTH_RATE_LIMITED");
    assert_eq!(close.unwrap().0, 1008);
    let audit = server.store.audit_page(None, 10).await.unwrap();
    assert_eq!(audit[0].action, "auth.lockout");
    assert_eq!(audit[0].remote_addr.as_deref(), Some("203.0.113.50"));

    // Another remote address is not affected; the lockout ends after 300 s.
    connect(&server, &Connect::cli().via_proxy_for("203.0.113.51")).await.hello();
    server.clock.advance_ms(300_000);
    connect(&server, &remote).await.hello();

    // Loopback failures are never counted.
    for _ in 0..15 {
        connect(&server, &Connect::cli().token(Some("wrong"))).await.refused();
    }
    connect(&server, &Connect::cli()).await.hello();
}

#[tokio::test]
async fn methods_check_scopes_and_errors_keep_the_socket_open() {
    let server = Server::start().await;
    let (_, mut ws) = connect(&server, &Connect::cli().scopes(&["operator.pairing"])).await.hello();
    let reply = call(&mut ws, "1", "health", json!({})).await;
    assert_eq!(reply["ok"], false);
    assert_eq!(reply["error"], json!({"code": "INVALID_REQUEST", "message": "missing scope: operator.read"}));
    let reply = call(&mut ws, "2", "no.such.method", json!({})).await;
    assert_eq!(reply["error"]["message"], "unknown method: no.such.method");
    let reply = call(&mut ws, "3", "device.pair.list", json!({})).await;
    assert_eq!(reply["payload"], json!({"pending": [], "paired": []}));
    let reply = call(&mut ws, "4", "connect", json!({})).await;
    assert_eq!(reply["error"]["message"], "connect already completed on this socket");

    let (_, mut ws) = connect(&server, &Connect::cli().scopes(&["operator.write"])).await.hello();
    let reply = call(&mut ws, "5", "health", json!({})).await;
    assert_eq!(reply["payload"]["ok"], true, "write implies read");
    let reply = call(&mut ws, "6", "status", json!({})).await;
    assert_eq!(reply["payload"]["liveSockets"], 2);
}

#[tokio::test]
async fn malformed_first_frames_close_with_1008() {
    let server = Server::start().await;
    let cases: Vec<(Message, &str)> = vec![
        (Message::text("not json"), "invalid frame: not JSON"),
        (Message::binary(vec![1u8, 2, 3]), "invalid frame: binary frames are not supported"),
        (Message::text(r#"{"type":"event","event":"x"}"#), "invalid frame: expected a request (type \"req\")"),
        (Message::text(r#"{"type":"req","method":"connect"}"#), "invalid request frame: missing field `id`"),
    ];
    for (message, reason) in cases {
        let (mut ws, _) = open(&server.url(), &[]).await.unwrap();
        ws.send(message).await.unwrap();
        assert_eq!(expect_close(&mut ws).await, Some((1008, reason.to_owned())));
    }
    assert_eq!(written(&server).await, (0, 0, 0));
}

#[tokio::test]
async fn requests_before_connect_and_bad_params_get_an_error_then_1008() {
    let server = Server::start().await;
    let bad: Vec<(Value, &str)> = vec![
        (
            json!({"type": "req", "id": "x", "method": "health", "params": {}}),
            "invalid handshake: first request must be connect",
        ),
        (
            json!({"type": "req", "id": "x", "method": "connect", "params": {"minProtocol": 4, "maxProtocol": 4}}),
            "invalid connect params: missing field `client`",
        ),
        (
            json!({"type": "req", "id": "x", "method": "connect", "params": {"minProtocol": "4", "maxProtocol": 4, "client": {"id": "cli", "mode": "cli"}}}),
            "invalid connect params: invalid type: string \"4\", expected i64",
        ),
        (
            json!({"type": "req", "id": "x", "method": "connect", "params": {"minProtocol": 4, "maxProtocol": 4, "client": {"id": "cli", "mode": "cli"}, "role": "root"}}),
            "invalid role",
        ),
        (
            json!({"type": "req", "id": "x", "method": "connect", "params": {"minProtocol": 4, "maxProtocol": 4, "client": {"id": "cli", "mode": "cli"}, "scopes": ["operator.root"]}}),
            "unknown scope: operator.root",
        ),
        (
            json!({"type": "req", "id": "x", "method": "connect", "params": {"minProtocol": 4, "maxProtocol": 4, "client": {"id": "n", "mode": "node"}, "role": "node", "scopes": ["operator.read"]}}),
            "role node takes no operator scopes",
        ),
    ];
    for (frame, message) in bad {
        let (mut ws, _) = open(&server.url(), &[]).await.unwrap();
        send_json(&mut ws, &frame).await;
        let reply = next_json(&mut ws).await.unwrap();
        assert_eq!(reply["error"]["code"], "INVALID_REQUEST");
        assert_eq!(reply["error"]["message"], message);
        assert_eq!(expect_close(&mut ws).await.unwrap().0, 1008);
    }
    assert_eq!(written(&server).await, (0, 0, 0));
}

/// Scope lists as large as a pre-connect frame may be (64 KiB) are refused by count or by name, and one
/// larger than that is refused as a frame; nothing is written either way.
#[tokio::test]
async fn a_huge_scope_list_is_refused_and_nothing_is_written() {
    let server = Server::start().await;
    let device = Device::new(12);
    let huge: Vec<String> = (0..3_500).map(|_| "operator.read".to_owned()).collect();
    assert!(serde_json::to_string(&huge).unwrap().len() > 50_000);
    let attempt = Connect { scopes: huge, ..Connect::cli().device(&device) };
    let (error, close) = connect(&server, &attempt).await.refused();
    assert_eq!(error["message"], "too many scopes: 3500 (at most 64)");
    assert_eq!(close.unwrap().0, 1008);
    // One unknown scope of 60 KB: refused, the echo truncated.
    let attempt = Connect { scopes: vec!["x".repeat(60_000)], ..Connect::cli().device(&device) };
    let (error, _) = connect(&server, &attempt).await.refused();
    assert!(error["message"].as_str().unwrap().len() < 100);
    // 100 KB of scopes: the frame itself is too big before connect, so there is no reply, only the close.
    let (mut ws, nonce) = open(&server.url(), &[]).await.unwrap();
    let attempt = Connect { scopes: vec!["x".repeat(100_000)], ..Connect::cli().device(&device) };
    send_json(
        &mut ws,
        &json!({"type": "req", "id": "c1", "method": "connect", "params": attempt.params(&nonce, server.now())}),
    )
    .await;
    let (code, reason) = expect_close(&mut ws).await.unwrap();
    assert_eq!((code, reason.as_str()), (1008, "message too big: the limit before connect is 65536 bytes"));
    assert_eq!(written(&server).await, (0, 0, 0));
}

#[tokio::test]
async fn a_30_mib_frame_is_refused_with_1008() {
    let server = Server::start().await;
    let (mut ws, _) = open(&server.url(), &[]).await.unwrap();
    let big = format!(
        r#"{{"type":"req","id":"1","method":"connect","params":{{"pad":"{}"}}}}"#,
        "a".repeat(30 * 1024 * 1024)
    );
    // The server may close while the frame is still being written; either way it must close with 1008.
    let _ = ws.send(Message::text(big)).await;
    let (code, reason) = expect_close(&mut ws).await.expect("a close frame");
    assert_eq!(code, 1008);
    assert!(reason.contains("too long") || reason.contains("limit"), "{reason}");
    // The server is still fine.
    connect(&server, &Connect::cli()).await.hello();
}

#[tokio::test]
async fn a_socket_that_never_connects_is_closed_after_the_handshake_timeout() {
    let server =
        Server::start_with(Config { handshake_timeout: Duration::from_millis(200), ..Config::default() }).await;
    let (mut ws, _) = open(&server.url(), &[]).await.unwrap();
    assert_eq!(expect_close(&mut ws).await, Some((1008, "handshake timeout".to_owned())));
}

#[tokio::test]
async fn connected_sockets_get_ticks_and_a_1001_on_shutdown() {
    let server = Server::start_with(Config { tick_interval: Duration::from_millis(20), ..Config::default() }).await;
    let (hello, mut ws) = connect(&server, &Connect::cli()).await.hello();
    assert_eq!(hello["policy"]["tickIntervalMs"], 20);
    let tick = loop {
        let message =
            tokio::time::timeout(FRAME_WAIT, futures_util::StreamExt::next(&mut ws)).await.unwrap().unwrap().unwrap();
        if let Message::Text(text) = message {
            break serde_json::from_str::<Value>(text.as_str()).unwrap();
        }
    };
    assert_eq!(tick["event"], "tick");
    assert!(tick["payload"]["ts"].is_i64());

    let stopping = tokio::spawn(server.stop());
    assert_eq!(expect_close(&mut ws).await.map(|(code, _)| code), Some(1001));
    stopping.await.unwrap();
}

/// The seed bug (docs/protocol.md §8), in process: the gateway's own backend upgrades read → admin on
/// loopback without pairing; the same upgrade from a remote address gets an approvable request.
#[tokio::test]
async fn seed_local_backend_upgrade_is_never_blocked_and_remote_upgrade_is_approvable() {
    let server = Server::start_with(with_proxy()).await;
    let device = Device::new(13);
    // An earlier call paired this identity at operator.read (OpenClaw 4.1's state).
    connect(&server, &Connect::cli().device(&device)).await.hello();

    let backend = Connect::backend().device(&device);
    let (hello, _ws) = connect(&server, &backend.clone().scopes(&["operator.read"])).await.hello();
    assert_eq!(hello["auth"]["scopes"], json!(["operator.read"]));
    let (hello, _ws) = connect(&server, &backend.clone().scopes(&["operator.admin"])).await.hello();
    assert_eq!(hello["auth"]["scopes"], json!(["operator.admin"]));
    assert!(hello["auth"].get("deviceToken").is_none(), "the backend path mints nothing");
    assert!(server.store.pending_requests(server.now()).await.unwrap().is_empty());

    let remote = backend.clone().scopes(&["operator.admin"]).via_proxy_for("198.51.100.9");
    let (error, close) = connect(&server, &remote).await.refused();
    assert_eq!(error["details"]["reason"], "scope-upgrade");
    let request_id = error["details"]["requestId"].as_str().unwrap().to_owned();
    assert_eq!(close.unwrap().0, 1008);
    server.store.approve_request(&request_id, None, &Actor::local_cli(), server.now()).await.unwrap();
    let (hello, _ws) = connect(&server, &remote).await.hello();
    assert_eq!(hello["auth"]["scopes"], json!(["operator.admin"]));
}

#[tokio::test]
async fn last_seen_is_recorded_off_the_connect_path_in_batches() {
    let server = Server::start().await;
    let device = Device::new(14);
    let (hello, _ws) = connect(&server, &Connect::cli().device(&device)).await.hello();
    let token = hello["auth"]["deviceToken"].as_str().unwrap().to_owned();
    server.clock.advance_ms(1_000);
    let seen_at = server.now();
    connect(&server, &Connect::cli().device(&device).token(None).device_token(&token)).await.hello();
    // Before a flush nothing is written on the connect path (the flush interval is 5 s).
    let record = server.store.device(&device.id()).await.unwrap().unwrap();
    assert_eq!(record.last_seen_at_ms, None);

    // Shutting down flushes what is pending.
    let dir = server.stop().await;
    let (store, _) = common::open_test_store(dir.path()).await;
    let record = store.device(&device.id()).await.unwrap().unwrap();
    assert_eq!(record.last_seen_at_ms, Some(seen_at));
    assert_eq!(record.live_token(Role::Operator).map(|t| t.last_used_at_ms), Some(Some(seen_at)), "{record:?}");
}

/// Client strings are stored with pairing requests and shown to every operator: one longer than pairgate
/// keeps is refused, naming the field, never truncated.
#[tokio::test]
async fn oversized_client_strings_are_refused_by_name() {
    let server = Server::start().await;
    let cases = [
        ("displayName", 256, "client.displayName"),
        ("platform", 64, "client.platform"),
        ("deviceFamily", 64, "client.deviceFamily"),
        ("id", 64, "client.id"),
        ("mode", 64, "client.mode"),
        ("version", 64, "client.version"),
    ];
    for (field, max, name) in cases {
        for (length, accepted) in [(max, true), (max + 1, false)] {
            let (mut ws, nonce) = open(&server.url(), &[]).await.unwrap();
            let mut params = Connect::cli().params(&nonce, server.now());
            params["client"][field] = json!("x".repeat(length));
            send_json(&mut ws, &json!({"type": "req", "id": "c", "method": "connect", "params": params})).await;
            let reply = next_json(&mut ws).await.unwrap();
            if accepted {
                assert_eq!(reply["ok"], true, "{field} of {length} bytes: {reply}");
                continue;
            }
            assert_eq!(reply["error"]["code"], "INVALID_REQUEST", "{reply}");
            let message = reply["error"]["message"].as_str().unwrap();
            assert_eq!(message, format!("{name} is too long: {length} bytes (at most {max})"));
            assert_eq!(expect_close(&mut ws).await.map(|(code, _)| code), Some(1008));
        }
    }
}

/// Past the cap on pending requests, a new ask is refused with a clear, retryable error (close 1013) and
/// nothing is stored; other addresses still ask.
#[tokio::test]
async fn a_pairing_ask_past_the_cap_is_refused_clearly() {
    let server = Server::start_with(with_proxy()).await;
    server.store.set_pending_caps(1, 100);
    let ask = |seed: u8, ip: &str| Connect::cli().device(&Device::new(seed)).via_proxy_for(ip);
    let (first, _) = connect(&server, &ask(110, "203.0.113.60")).await.refused();
    assert_eq!(first["code"], "NOT_PAIRED");
    let (error, close) = connect(&server, &ask(111, "203.0.113.60")).await.refused();
    assert_eq!(error["code"], "UNAVAILABLE", "{error}");
    assert_eq!(error["retryable"], true);
    assert_eq!(error["details"], json!({"code": "PAIRING_REQUESTS_FULL", "max": 1, "perAddress": true}));
    assert_eq!(
        error["message"],
        "too many pending pairing requests from this address (at most 1); try again once an operator decides them or they expire"
    );
    assert_eq!(close.map(|(code, _)| code), Some(1013));
    let (other, _) = connect(&server, &ask(112, "203.0.113.61")).await.refused();
    assert_eq!(other["code"], "NOT_PAIRED");
    assert_eq!(server.store.pending_requests(server.now()).await.unwrap().len(), 2);
}

/// Actions of the audit rows written after the first `skip` (oldest first).
async fn actions_after(server: &Server, skip: usize) -> Vec<String> {
    let mut rows = server.store.audit_page(None, 1000).await.unwrap();
    rows.reverse();
    rows.into_iter().skip(skip).map(|row| row.action).collect()
}

/// A connect authenticated only by a device token never widens what was approved, not even on loopback,
/// not even on the gateway's own backend path; the shared secret from loopback still may (docs/protocol.md §4).
#[tokio::test]
async fn a_device_token_alone_never_widens_the_grant_even_on_loopback() {
    let server = Server::start().await;
    let device = Device::new(15);
    let (hello, _ws) = connect(&server, &Connect::cli().device(&device)).await.hello();
    let token = hello["auth"]["deviceToken"].as_str().unwrap().to_owned();
    let before = server.store.audit_page(None, 1000).await.unwrap().len();
    let with_token = Connect::cli().device(&device).token(None).device_token(&token);
    let backend = Connect { client_id: "gateway-client".into(), client_mode: "backend".into(), ..with_token.clone() };

    for attempt in [with_token.clone(), backend.clone()] {
        let (error, close) = connect(&server, &attempt.scopes(&["operator.admin"])).await.refused();
        assert_eq!(error["details"]["code"], "AUTH_SCOPE_MISMATCH", "{error}");
        assert_eq!(close.unwrap().0, 1008);
    }
    // A changed platform is asked for, not approved silently.
    let (error, _) = connect(&server, &Connect { platform: "darwin".into(), ..with_token.clone() }).await.refused();
    assert_eq!(error["code"], "NOT_PAIRED");
    assert_eq!(error["details"]["reason"], "metadata-upgrade");

    let record = server.store.device(&device.id()).await.unwrap().unwrap();
    assert_eq!(record.grant(Role::Operator).unwrap().scopes, scopes(&["operator.read"]));
    assert_eq!(record.meta.platform.as_deref(), Some("linux"));
    assert_eq!(actions_after(&server, before).await, ["pairing.request"], "no silent approval");
    // Within the token's scopes it still connects, on either path.
    connect(&server, &with_token).await.hello();
    connect(&server, &backend).await.hello();

    // The shared secret from loopback may upgrade silently, as in OpenClaw (token, password or no auth).
    let (hello, _ws) = connect(&server, &Connect::cli().device(&device).scopes(&["operator.admin"])).await.hello();
    assert_eq!(hello["auth"]["scopes"], json!(["operator.admin"]));
    let record = server.store.device(&device.id()).await.unwrap().unwrap();
    assert_eq!(record.grant(Role::Operator).unwrap().scopes, scopes(&["operator.admin", "operator.read"]));
}

/// Imports one OpenClaw 2026.4 device whose grant is `granted` and whose operator token `token` carries
/// `token_scopes` (OpenClaw keeps a token's scopes apart from the grant; an operator may narrow them).
async fn import_openclaw_device(
    server: &Server,
    device: &Device,
    granted: &[&str],
    token: &str,
    token_scopes: &[&str],
) {
    let state = tempfile::tempdir().unwrap();
    let entry = json!({
        "deviceId": device.id(), "publicKey": device.public_key().to_base64url(), "platform": "linux",
        "clientId": "cli", "clientMode": "cli", "role": "operator", "roles": ["operator"], "scopes": granted,
        "approvedScopes": granted, "createdAtMs": 1_700_000_000_000i64, "approvedAtMs": 1_700_000_000_500i64,
        "tokens": {"operator": {"token": token, "role": "operator", "scopes": token_scopes,
                                "createdAtMs": 1_700_000_000_000i64}},
    });
    std::fs::create_dir_all(state.path().join("devices")).unwrap();
    std::fs::write(state.path().join("devices/paired.json"), json!({ device.id().to_string(): entry }).to_string())
        .unwrap();
    let report = pairgate::importer::openclaw::import(&server.store, state.path(), false, server.now()).await.unwrap();
    assert_eq!(report.imported.tokens, 1, "{report:?}");
}

/// A device token carries its own scopes: asking beyond them is an auth error naming the scope, whatever the
/// grant allows and wherever the client is (OpenClaw's verifyDeviceToken). The shared secret asks for the upgrade.
#[tokio::test]
async fn asking_beyond_a_device_tokens_scopes_is_an_auth_error_naming_the_scope() {
    let server = Server::start_with(with_proxy()).await;
    let narrowed = Device::new(16);
    import_openclaw_device(&server, &narrowed, &["operator.admin"], "oc-narrowed-token", &["operator.read"]).await;
    let with_token = Connect::cli().device(&narrowed).token(None).device_token("oc-narrowed-token");
    for attempt in [with_token.clone(), with_token.clone().via_proxy_for("198.51.100.30")] {
        let (hello, _ws) = connect(&server, &attempt).await.hello();
        assert_eq!(hello["auth"]["scopes"], json!(["operator.read"]));
        let (error, close) =
            connect(&server, &attempt.clone().scopes(&["operator.read", "operator.admin"])).await.refused();
        assert_eq!(error["code"], "INVALID_REQUEST");
        assert_eq!(
            error["message"],
            "unauthorized: device token scope mismatch: missing operator.admin (ask for it with the gateway token)"
        );
        assert_eq!(
            error["details"],
            json!({"code": "AUTH_SCOPE_MISMATCH", "authReason": "scope_mismatch", "canRetryWithDeviceToken": false,
                   "recommendedNextStep": "review_auth_configuration", "missingScope": "operator.admin"})
        );
        assert_eq!(close.unwrap().0, 1008);
    }
    let record = server.store.device(&narrowed.id()).await.unwrap().unwrap();
    assert_eq!(record.live_token(Role::Operator).unwrap().scopes, scopes(&["operator.read"]), "nothing changed");
    assert!(server.store.pending_requests(server.now()).await.unwrap().is_empty(), "no request either");
    // With the shared secret, the grant is what counts.
    let secret = Connect::cli().device(&narrowed).scopes(&["operator.admin"]).via_proxy_for("198.51.100.30");
    assert_eq!(connect(&server, &secret).await.hello().0["auth"]["scopes"], json!(["operator.admin"]));

    // A device approved for read, asking for admin from afar: with its token alone, an auth error; with the
    // shared secret, an approvable request, after which its token carries admin.
    let device = Device::new(17);
    let (hello, _ws) = connect(&server, &Connect::cli().device(&device)).await.hello();
    let token = hello["auth"]["deviceToken"].as_str().unwrap().to_owned();
    let remote = Connect::cli().device(&device).scopes(&["operator.admin"]).via_proxy_for("198.51.100.31");
    let (error, _) = connect(&server, &remote.clone().token(None).device_token(&token)).await.refused();
    assert_eq!(error["details"]["code"], "AUTH_SCOPE_MISMATCH");
    let (error, _) = connect(&server, &remote).await.refused();
    assert_eq!(error["details"]["reason"], "scope-upgrade");
    let request_id = error["details"]["requestId"].as_str().unwrap();
    server.store.approve_request(request_id, None, &Actor::local_cli(), server.now()).await.unwrap();
    let (hello, _ws) = connect(&server, &remote.clone().token(None).device_token(&token)).await.hello();
    assert_eq!(hello["auth"]["scopes"], json!(["operator.admin"]));
}
/// Behind a trusted proxy, any forwarding evidence names the client; evidence that conflicts or names
/// loopback is never local trust (docs/protocol.md §3).
#[tokio::test]
async fn a_trusted_proxys_forwarding_evidence_names_the_client_and_never_makes_it_local() {
    let server = Server::start_with(with_proxy()).await;
    let forwarded = vec![("forwarded", "for=203.0.113.9;proto=https".to_owned())];
    let ask = Connect { headers: forwarded.clone(), ..Connect::cli().device(&Device::new(18)) };
    let (error, _) = connect(&server, &ask).await.refused();
    assert_eq!(error["details"]["reason"], "not-paired", "remote: asked, not approved silently");
    let request = server.store.pairing_request(error["details"]["requestId"].as_str().unwrap()).await.unwrap().unwrap();
    assert_eq!((request.remote_ip.as_deref(), request.is_local), (Some("203.0.113.9"), false));
    let deviceless = Connect { headers: forwarded, ..Connect::cli().scopes(&["operator.admin"]) };
    assert_eq!(connect(&server, &deviceless).await.hello().0["auth"]["scopes"], json!([]));

    let refused: Vec<Vec<(&'static str, String)>> = vec![
        // The proxy sets X-Real-IP and passes the client's own X-Forwarded-For through.
        vec![("x-real-ip", "203.0.113.9".into()), ("x-forwarded-for", "::1".into())],
        vec![("x-forwarded-for", "127.0.0.1".into())],
        vec![("forwarded", "for=\"[::1]:4711\"".into())],
        vec![("forwarded", "for=203.0.113.9".into()), ("x-forwarded-for", "198.51.100.1".into())],
    ];
    for headers in refused {
        match open(&server.url(), &headers).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
            Err(other) => panic!("{headers:?}: expected HTTP 403, got {other}"),
            Ok(_) => panic!("{headers:?}: expected HTTP 403, got an upgrade"),
        }
    }
}
/// A browser on loopback (`Origin`, or `Sec-Fetch-*` without it) is never approved silently, gets no scopes
/// without a device identity, and is locked out after failed attempts like any remote client.
#[tokio::test]
async fn browsers_on_loopback_are_locked_out_get_no_scopes_without_identity_and_are_never_silent() {
    let server = Server::start().await;
    let evil = vec![("origin", "http://evil.example".to_owned())];
    for _ in 0..10 {
        let attempt = Connect { headers: evil.clone(), ..Connect::cli().token(Some("guess")) };
        assert_eq!(connect(&server, &attempt).await.refused().0["details"]["code"], "AUTH_TOKEN_MISMATCH");
    }
    let (error, close) = connect(&server, &Connect { headers: evil.clone(), ..Connect::cli() }).await.refused();
    assert_eq!(error["details"]["code"], "AUTH_RATE_LIMITED");
    assert_eq!(close.unwrap().0, 1008);
    assert_eq!(server.store.audit_page(None, 1).await.unwrap()[0].action, "auth.lockout");
    // A local process that is not a browser is still exempt.
    connect(&server, &Connect::cli()).await.hello();

    let marks: Vec<(&'static str, &str)> =
        vec![("origin", "http://127.0.0.1:18789"), ("sec-fetch-site", "same-origin"), ("sec-fetch-mode", "websocket")];
    for (name, value) in marks {
        let browser = Connect { headers: vec![(name, value.to_owned())], ..Connect::cli().scopes(&["operator.admin"]) };
        let (hello, _ws) = connect(&server, &browser).await.hello();
        assert_eq!(hello["auth"]["scopes"], json!([]), "{name}: no scopes without a device identity");
        let with_device =
            Connect { headers: vec![(name, value.to_owned())], ..Connect::cli().device(&Device::new(19)) };
        let (error, _) = connect(&server, &with_device).await.refused();
        assert_eq!(error["details"]["reason"], "not-paired", "{name}: never approved silently");
    }
}

/// A `connect` frame of exactly `size` bytes (padded with a field the server ignores).
fn connect_frame_of(size: usize, nonce: &str, now: i64) -> String {
    let mut params = Connect::cli().params(nonce, now);
    params["pad"] = json!("");
    let bare = json!({"type": "req", "id": "c1", "method": "connect", "params": params}).to_string();
    params["pad"] = json!("p".repeat(size - bare.len()));
    let frame = json!({"type": "req", "id": "c1", "method": "connect", "params": params}).to_string();
    assert_eq!(frame.len(), size);
    frame
}

/// Before `connect`, a message may hold 64 KiB (docs/protocol.md §1); a larger one is refused from its
/// frame header, before the server reads (or buffers) its payload.
#[tokio::test]
async fn frames_before_connect_are_limited_to_64_kib_from_their_header() {
    // The handshake timeout is long: only the frame limit may close these sockets.
    let server = Server::start_with(Config { handshake_timeout: Duration::from_secs(60), ..Config::default() }).await;
    let too_big = |close: Option<(u16, String)>| {
        let (code, reason) = close.expect("a close frame");
        assert_eq!(code, 1008, "{reason}");
        assert_eq!(reason, "message too big: the limit before connect is 65536 bytes");
    };

    // Exactly 64 KiB: served.
    let (mut ws, nonce) = open(&server.url(), &[]).await.unwrap();
    ws.send(Message::text(connect_frame_of(65536, &nonce, server.now()))).await.unwrap();
    assert_eq!(next_json(&mut ws).await.unwrap()["ok"], true);

    // One byte more: refused, with no reply.
    let (mut ws, nonce) = open(&server.url(), &[]).await.unwrap();
    ws.send(Message::text(connect_frame_of(65537, &nonce, server.now()))).await.unwrap();
    too_big(expect_close(&mut ws).await);

    // Only the header of a 25 MiB frame: the close comes without the server waiting for the payload.
    let (mut ws, _) = open(&server.url(), &[]).await.unwrap();
    let mut bytes = frame_header(0x1, true, 25 * 1024 * 1024);
    bytes.extend_from_slice(b"[0,0,0,0");
    write_raw(&mut ws, &bytes).await.unwrap();
    too_big(expect_close(&mut ws).await);

    // A message in fragments counts whole: 40 KiB + 40 KiB is refused at the second fragment's header.
    let (mut ws, _) = open(&server.url(), &[]).await.unwrap();
    let mut bytes = frame(0x1, false, &[b' '; 40 * 1024]);
    bytes.extend(frame_header(0x0, true, 40 * 1024));
    write_raw(&mut ws, &bytes).await.unwrap();
    too_big(expect_close(&mut ws).await);
    assert_eq!(written(&server).await, (0, 0, 0));
}

/// After hello-ok the configured 25 MiB applies, also to a request sent right behind `connect`.
#[tokio::test]
async fn after_connect_frames_may_be_as_large_as_the_configured_payload() {
    let server = Server::start().await;
    let (mut ws, nonce) = open(&server.url(), &[]).await.unwrap();
    let connect =
        json!({"type": "req", "id": "c1", "method": "connect", "params": Connect::cli().params(&nonce, server.now())});
    let big_id = "i".repeat(200 * 1024);
    let health = json!({"type": "req", "id": big_id, "method": "health", "params": {}});
    // Both frames in one write: the second may reach the server before hello-ok is sent.
    let mut bytes = frame(0x1, true, connect.to_string().as_bytes());
    bytes.extend(frame(0x1, true, health.to_string().as_bytes()));
    write_raw(&mut ws, &bytes).await.unwrap();
    assert_eq!(next_json(&mut ws).await.unwrap()["ok"], true, "hello-ok");
    let reply = next_json(&mut ws).await.unwrap();
    assert_eq!((reply["id"].as_str().map(str::len), &reply["ok"]), (Some(big_id.len()), &json!(true)));
    let reply = call(&mut ws, &"j".repeat(5 * 1024 * 1024), "health", json!({})).await;
    assert_eq!(reply["ok"], true);

    // Beyond the payload limit: refused from the header.
    write_raw(&mut ws, &frame_header(0x1, true, 25 * 1024 * 1024 + 1)).await.unwrap();
    let (code, reason) = expect_close(&mut ws).await.expect("a close frame");
    assert_eq!((code, reason.as_str()), (1008, "message too big: the limit is 26214400 bytes"));
}

/// A client's close frame is answered (the closing handshake completes), before and after `connect`.
#[tokio::test]
async fn the_server_answers_a_close_frame() {
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let server = Server::start().await;
    let (before, _) = open(&server.url(), &[]).await.unwrap();
    let (_, after) = connect(&server, &Connect::cli()).await.hello();
    for mut ws in [before, after] {
        ws.close(Some(CloseFrame { code: CloseCode::Normal, reason: "bye".into() })).await.unwrap();
        assert_eq!(expect_close(&mut ws).await, Some((1000, "bye".to_owned())));
    }
}
