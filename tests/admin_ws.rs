//! Device administration over the WebSocket: the pairing methods the real CLI calls, events, and
//! revocation that closes live sockets.

mod common;

use common::*;
use pairgate::domain::{RequestStatus, Role};
use pairgate::server::Config;
use serde_json::{Value, json};

fn with_proxy() -> Config {
    Config { trusted_proxies: vec!["127.0.0.1".parse().unwrap()], ..Config::default() }
}

/// An operator socket like the CLI's: no device identity, local, pairing + read (+ more).
async fn operator(server: &Server, scopes: &[&str]) -> Ws {
    connect(server, &Connect::cli().scopes(scopes)).await.hello().1
}

/// A remote device asks to pair; returns its request id.
async fn remote_ask(server: &Server, device: &Device, scopes: &[&str]) -> String {
    let (error, _) =
        connect(server, &Connect::cli().device(device).scopes(scopes).via_proxy_for("203.0.113.20")).await.refused();
    error["details"]["requestId"].as_str().unwrap().to_owned()
}

async fn next_event(ws: &mut Ws) -> Value {
    let frame = next_json(ws).await.expect("an event");
    assert_eq!(frame["type"], "event", "{frame}");
    frame
}

#[tokio::test]
async fn approval_is_announced_in_order_only_to_pairing_sockets() {
    let server = Server::start_with(with_proxy()).await;
    let mut watcher = operator(&server, &["operator.pairing", "operator.read"]).await;
    let mut bystander = operator(&server, &["operator.read"]).await;
    let device = Device::new(20);

    let request_id = remote_ask(&server, &device, &["operator.read"]).await;
    let requested = next_event(&mut watcher).await;
    assert_eq!(requested["event"], "device.pair.requested");
    assert_eq!(requested["seq"], 1);
    assert_eq!(requested["payload"]["requestId"], request_id);
    assert_eq!(requested["payload"]["deviceId"], device.id().as_str());
    assert_eq!(requested["payload"]["remoteIp"], "203.0.113.20");
    // Asking again is the same request: no new event (the next frame is the approval's).

    remote_ask(&server, &device, &["operator.read"]).await;
    let mut approver = operator(&server, &["operator.pairing", "operator.read"]).await;
    let reply = call(&mut approver, "a1", "device.pair.approve", json!({"requestId": request_id})).await;
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["payload"]["requestId"], request_id);
    assert_eq!(reply["payload"]["device"]["deviceId"], device.id().as_str());
    assert_eq!(reply["payload"]["device"]["scopes"], json!(["operator.read"]));
    assert!(!reply.to_string().contains("deviceToken"), "no token value in any payload");

    let resolved = next_event(&mut watcher).await;
    assert_eq!(resolved["event"], "device.pair.resolved");
    assert_eq!(resolved["seq"], 2);
    assert_eq!(resolved["payload"]["decision"], "approved");
    assert_eq!(resolved["payload"]["requestId"], request_id);

    // The bystander (no operator.pairing) got neither event: its next frame is its own reply.
    let reply = call(&mut bystander, "b1", "health", json!({})).await;
    assert_eq!(reply["ok"], true);

    // Approving again: the CLI's "unknown requestId".
    let reply = call(&mut approver, "a2", "device.pair.approve", json!({"requestId": request_id})).await;
    assert_eq!(reply["error"]["code"], "INVALID_REQUEST");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("unknown requestId") && message.contains("already approved"), "{message}");
    let reply = call(&mut approver, "a3", "device.pair.approve", json!({"requestId": "nope"})).await;
    assert_eq!(reply["error"]["message"], "unknown requestId: nope");
    let reply = call(&mut approver, "a4", "device.pair.approve", json!({})).await;
    assert_eq!(reply["error"]["message"], "invalid params: missing field `requestId`");

    connect(&server, &Connect::cli().device(&device).via_proxy_for("203.0.113.20")).await.hello();
}

#[tokio::test]
async fn a_caller_cannot_approve_more_than_it_holds() {
    let server = Server::start_with(with_proxy()).await;
    let device = Device::new(21);
    let request_id = remote_ask(&server, &device, &["operator.admin"]).await;
    let mut approver = operator(&server, &["operator.pairing", "operator.read"]).await;
    let reply = call(&mut approver, "1", "device.pair.approve", json!({"requestId": request_id})).await;
    assert_eq!(reply["error"]["message"], "missing scope: operator.admin");
    let request = server.store.pairing_request(&request_id).await.unwrap().unwrap();
    assert_eq!(request.status, RequestStatus::Pending, "nothing was written");

    let node = Device::new(22);
    let node_ask =
        Connect { role: "node".into(), client_id: "node-host".into(), client_mode: "node".into(), ..Connect::cli() };
    let (error, _) =
        connect(&server, &node_ask.device(&node).scopes(&[]).via_proxy_for("203.0.113.21")).await.refused();
    let node_request = error["details"]["requestId"].as_str().unwrap();
    let reply = call(&mut approver, "2", "device.pair.approve", json!({"requestId": node_request})).await;
    assert_eq!(reply["error"]["message"], "device pairing approval denied: role node requires operator.admin");

    let mut admin = operator(&server, &["operator.admin"]).await;
    for id in [request_id.as_str(), node_request] {
        let reply = call(&mut admin, id, "device.pair.approve", json!({"requestId": id})).await;
        assert_eq!(reply["ok"], true, "{reply}");
    }
}

/// A device that manages another device (removing it, rotating or revoking its tokens) needs the same
/// ceiling as approving it: every scope that device holds, and `operator.admin` for an admin or node device.
/// (A caller without a device identity holds the gateway secret, locally: it may ask for any scope.)
#[tokio::test]
async fn a_device_managing_another_device_needs_every_scope_it_holds() {
    let server = Server::start().await;
    let admin_device = Device::new(30);
    connect(&server, &Connect::cli().device(&admin_device).scopes(&["operator.admin"])).await.hello();
    let reader_device = Device::new(31);
    connect(&server, &Connect::cli().device(&reader_device).scopes(&["operator.read"])).await.hello();

    let manager = Connect::cli().device(&Device::new(32)).scopes(&["operator.pairing"]);
    let mut pairing_only = connect(&server, &manager).await.hello().1;
    let admin_id = admin_device.id().to_string();
    let attempts = [
        ("device.pair.remove", json!({"deviceId": admin_id})),
        ("device.token.rotate", json!({"deviceId": admin_id, "role": "operator", "scopes": []})),
        ("device.token.revoke", json!({"deviceId": admin_id, "role": "operator"})),
    ];
    for (id, (method, params)) in attempts.into_iter().enumerate() {
        let reply = call(&mut pairing_only, &id.to_string(), method, params).await;
        assert_eq!(reply["error"]["message"], "missing scope: operator.admin", "{method}: {reply}");
    }
    let reply = call(&mut pairing_only, "r", "device.pair.remove", json!({"deviceId": reader_device.id()})).await;
    assert_eq!(reply["error"]["message"], "missing scope: operator.read", "{reply}");
    let admin = server.store.device(&admin_device.id()).await.unwrap().unwrap();
    assert!(admin.removed_at_ms.is_none() && admin.live_token(Role::Operator).is_some(), "nothing was written");

    let manager = Connect::cli().device(&Device::new(33)).scopes(&["operator.pairing", "operator.read"]);
    let mut pairing_and_read = connect(&server, &manager).await.hello().1;
    let reply = call(&mut pairing_and_read, "ok", "device.pair.remove", json!({"deviceId": reader_device.id()})).await;
    assert_eq!(reply["ok"], true, "{reply}");
}

#[tokio::test]
async fn reject_is_announced_and_the_device_stays_unpaired() {
    let server = Server::start_with(with_proxy()).await;
    let mut watcher = operator(&server, &["operator.admin"]).await;
    let device = Device::new(23);
    let request_id = remote_ask(&server, &device, &["operator.read"]).await;
    assert_eq!(next_event(&mut watcher).await["event"], "device.pair.requested");
    let reply = call(&mut watcher, "r", "device.pair.reject", json!({"requestId": request_id})).await;
    assert_eq!(reply["payload"], json!({"requestId": request_id, "deviceId": device.id().as_str()}));
    let resolved = next_event(&mut watcher).await;
    assert_eq!((resolved["payload"]["decision"].as_str(), resolved["seq"].as_u64()), (Some("rejected"), Some(2)));
    assert!(server.store.device(&device.id()).await.unwrap().is_none());
}

#[tokio::test]
async fn expiry_is_announced() {
    let server = Server::start_with(with_proxy()).await;
    let mut watcher = operator(&server, &["operator.pairing"]).await;
    let request_id = remote_ask(&server, &Device::new(24), &["operator.read"]).await;
    assert_eq!(next_event(&mut watcher).await["event"], "device.pair.requested");
    server.clock.advance_ms(5 * 60 * 1000);
    server.app.sweep_expired().await;
    let resolved = next_event(&mut watcher).await;
    assert_eq!(resolved["payload"]["decision"], "expired");
    assert_eq!(resolved["payload"]["requestId"], request_id);
    let audit = server.store.audit_page(None, 1).await.unwrap();
    assert_eq!(audit[0].action, "pairing.expire");
}

/// A paired device with a live socket and its device token.
async fn live_device(server: &Server, device: &Device) -> (Ws, String) {
    let (hello, _) =
        connect(server, &Connect::cli().device(device).scopes(&["operator.read", "operator.write"])).await.hello();
    let token = hello["auth"]["deviceToken"].as_str().unwrap().to_owned();
    let attempt = Connect::cli().device(device).token(None).device_token(&token);
    let (_, ws) = connect(server, &attempt).await.hello();
    (ws, token)
}

#[tokio::test]
async fn revoke_closes_live_sockets_before_the_reply_and_the_old_token_fails() {
    let server = Server::start().await;
    let device = Device::new(25);
    let (mut device_ws, token) = live_device(&server, &device).await;
    let mut admin = operator(&server, &["operator.pairing", "operator.read", "operator.write"]).await;

    let reply =
        call(&mut admin, "1", "device.token.revoke", json!({"deviceId": device.id(), "role": "operator"})).await;
    assert_eq!(reply["payload"]["deviceId"], device.id().as_str());
    assert_eq!(reply["payload"]["role"], "operator");
    assert_eq!(reply["payload"]["revokedAtMs"], server.now());
    assert_eq!(expect_close(&mut device_ws).await, Some((4001, "device removed".to_owned())));

    let (error, _) = connect(&server, &Connect::cli().device(&device).token(None).device_token(&token)).await.refused();
    assert_eq!(error["details"]["code"], "AUTH_DEVICE_TOKEN_MISMATCH");
    // With the gateway secret the still-paired device gets a fresh token.
    let (hello, _) = connect(&server, &Connect::cli().device(&device)).await.hello();
    assert_ne!(hello["auth"]["deviceToken"].as_str().unwrap(), token);

    let reply =
        call(&mut admin, "2", "device.token.revoke", json!({"deviceId": "0".repeat(64), "role": "operator"})).await;
    assert!(reply["error"]["message"].as_str().unwrap().starts_with("unknown device token"), "{reply}");
    let reply = call(&mut admin, "3", "device.token.revoke", json!({"deviceId": device.id(), "role": "root"})).await;
    assert_eq!(reply["error"]["message"], "invalid role");
}

#[tokio::test]
async fn rotate_narrows_scopes_and_the_next_connect_gets_the_new_token() {
    let server = Server::start().await;
    let device = Device::new(26);
    let (mut device_ws, token) = live_device(&server, &device).await;
    let mut admin = operator(&server, &["operator.pairing", "operator.read"]).await;

    // The caller holds read but not write: it may not hand out write again.
    let params = json!({"deviceId": device.id(), "role": "operator"});
    let reply = call(&mut admin, "1", "device.token.rotate", params).await;
    assert_eq!(reply["error"]["message"], "missing scope: operator.write");

    let params = json!({"deviceId": device.id(), "role": "operator", "scopes": ["operator.read"]});
    let reply = call(&mut admin, "2", "device.token.rotate", params).await;
    assert_eq!(
        reply["payload"],
        json!({"deviceId": device.id(), "role": "operator", "scopes": ["operator.read"], "rotatedAtMs": server.now(),
               "tokenDelivery": "withheld-cross-device"})
    );
    assert_eq!(expect_close(&mut device_ws).await.map(|(code, _)| code), Some(4001));
    let (error, _) = connect(&server, &Connect::cli().device(&device).token(None).device_token(&token)).await.refused();
    assert_eq!(error["details"]["code"], "AUTH_DEVICE_TOKEN_MISMATCH");
    let (hello, _) = connect(&server, &Connect::cli().device(&device)).await.hello();
    assert!(hello["auth"]["deviceToken"].is_string());
    let record = server.store.device(&device.id()).await.unwrap().unwrap();
    assert_eq!(record.grant(Role::Operator).unwrap().scopes.names(), ["operator.read"]);
}

#[tokio::test]
async fn remove_closes_sockets_and_unpairs() {
    let server = Server::start_with(with_proxy()).await;
    let device = Device::new(27);
    let (mut device_ws, _) = live_device(&server, &device).await;
    let mut admin = operator(&server, &["operator.pairing"]).await;
    let reply = call(&mut admin, "1", "device.pair.list", json!({})).await;
    assert_eq!(reply["payload"]["paired"][0]["connected"], true);

    let reply = call(&mut admin, "2", "device.pair.remove", json!({"deviceId": device.id()})).await;
    assert_eq!(reply["payload"], json!({"deviceId": device.id()}));
    assert_eq!(expect_close(&mut device_ws).await.map(|(code, _)| code), Some(4001));
    let reply = call(&mut admin, "3", "device.pair.list", json!({})).await;
    assert_eq!(reply["payload"]["paired"], json!([]));
    let reply = call(&mut admin, "4", "device.pair.remove", json!({"deviceId": device.id()})).await;
    assert_eq!(reply["error"]["message"], format!("unknown deviceId: {}", device.id()));

    // From afar it must pair again.
    let (error, _) = connect(&server, &Connect::cli().device(&device).via_proxy_for("203.0.113.30")).await.refused();
    assert_eq!(error["details"]["reason"], "not-paired");
    let actions: Vec<String> =
        server.store.audit_page(None, 3).await.unwrap().into_iter().map(|row| row.action).collect();
    assert_eq!(actions, ["pairing.request", "device.remove", "device.approve.silent"]);
}

#[tokio::test(flavor = "current_thread")]
async fn a_slow_event_consumer_is_closed_with_4008() {
    let server = Server::start().await;
    let mut slow = operator(&server, &["operator.pairing"]).await;
    // On this single-threaded runtime the socket's task cannot drain its queue while this loop runs,
    // so the queue fills deterministically.
    for i in 0..(pairgate::app::live::EVENT_QUEUE_CAPACITY + 1) {
        server.app.live.broadcast("device.pair.requested", json!({ "n": i }));
    }
    let mut received = 0;
    let close = loop {
        match tokio::time::timeout(FRAME_WAIT, futures_util::StreamExt::next(&mut slow)).await.unwrap() {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(_))) => received += 1,
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(frame)))) => {
                break (u16::from(frame.code), frame.reason.to_string());
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(close, (4008, "slow consumer: event queue full".to_owned()));
    assert_eq!(received, pairgate::app::live::EVENT_QUEUE_CAPACITY, "what was queued is delivered, then the close");
    // Others are unaffected.
    operator(&server, &["operator.pairing"]).await;
}

/// A decision made with the offline CLI (another process, on the same database file) closes the device's
/// live sockets too, within 2 s.
#[tokio::test]
async fn offline_decisions_close_live_sockets() {
    let server = Server::start().await;
    let device = Device::new(34);
    let (mut device_ws, _) = live_device(&server, &device).await;

    // The offline CLI: its own store handle, its own application, no sockets of its own.
    let (offline_store, _) = common::open_test_store(server.dir.path()).await;
    let offline = pairgate::app::App::offline(offline_store);
    offline.revoke_token(&pairgate::app::Caller::local_cli(), &device.id(), Role::Operator).await.unwrap();
    // Right after the decision (most likely before the server notices it), the device connects again with
    // fresh credentials: that socket must stay open when the older one is closed.
    let (_, mut fresh) = connect(&server, &Connect::cli().device(&device).scopes(&["operator.read"])).await.hello();

    let closed = tokio::time::timeout(std::time::Duration::from_secs(2), expect_close(&mut device_ws)).await;
    assert_eq!(closed.expect("closed within 2 s").map(|(code, _)| code), Some(4001));
    offline.store.close().await;
    let reply = call(&mut fresh, "h", "health", json!({})).await;
    assert_eq!(reply["ok"], true, "the socket with fresh credentials stays open: {reply}");
}

/// A revocation that commits while a handshake is between its read of the device and the socket's
/// registration still closes that socket: the handshake claims the device before it reads it, and the
/// close order waits in the claim. The handshake and the registration are driven by hand here, so the
/// revocation lands exactly in between.
#[tokio::test]
async fn a_revocation_that_lands_during_a_handshake_closes_that_socket() {
    use pairgate::auth::locality::ClientAddr;
    use pairgate::gateway::ConnInfo;

    let server = Server::start().await;
    let device = Device::new(36);
    let (_, token) = live_device(&server, &device).await;
    let (nonce, conn_id) = ("nonce-of-the-race", "conn-of-the-race");
    let attempt = Connect::cli().device(&device).token(None).device_token(&token).scopes(&["operator.read"]);
    let params = serde_json::from_value(attempt.params(nonce, server.now())).unwrap();
    let loopback = "127.0.0.1".parse().unwrap();
    let conn = ConnInfo {
        conn_id: conn_id.to_owned(),
        peer: std::net::SocketAddr::new(loopback, 40_000),
        client: ClientAddr { ip: loopback, local: true, browser: false, origin: None },
        reached_at: None,
    };
    let (who, _hello) = server.gateway.connect(&conn, nonce, params).await.expect("the connect is allowed");

    let caller = pairgate::app::Caller::local_cli();
    server.app.revoke_token(&caller, &device.id(), Role::Operator).await.unwrap();

    let mut registration = server.app.live.register(conn_id, who.device_id.as_ref(), false);
    let order = registration.close_order.try_recv().expect("the revocation left a close order for the socket");
    assert_eq!(order.why, pairgate::app::live::Disconnect::DeviceRevoked);
    server.app.live.unregister(conn_id);
}

/// A run in `running` state, registered and started by a backend socket; its id.
async fn running_run(server: &Server, name: &str) -> String {
    let backend = Connect::backend().device(&Device::new(49)).scopes(&["operator.admin"]);
    let (_, mut ws) = connect(server, &backend).await.hello();
    let key = format!("agent:main:subagent:{name}");
    call(&mut ws, "p", "sessions.patch", json!({"key": key, "spawnedBy": "agent:main:main"})).await;
    let params = json!({"childSessionKey": key, "requesterSessionKey": "agent:main:main", "task": "t"});
    let run_id =
        call(&mut ws, "r", "subagents.register", params).await["payload"]["runId"].as_str().unwrap().to_owned();
    let reply = call(&mut ws, "s", "subagents.start", json!({"runId": run_id})).await;
    assert_eq!(reply["ok"], true, "{reply}");
    run_id
}

/// A socket busy in a long call (`agent.wait`) is closed with 4001 within a second of its device's
/// revocation, rotation or removal, and the decision's reply does not wait for the call.
#[tokio::test]
async fn a_device_waiting_on_a_run_is_closed_within_a_second_of_a_decision_against_it() {
    let server = Server::start().await;
    let run_id = running_run(&server, "long").await;
    let mut admin = operator(&server, &["operator.pairing", "operator.read", "operator.write"]).await;
    for (seed, method) in [(41, "device.token.revoke"), (42, "device.token.rotate"), (43, "device.pair.remove")] {
        let device = Device::new(seed);
        let (_, token) = live_device(&server, &device).await;
        let writer = Connect::cli().device(&device).token(None).device_token(&token);
        let (_, mut waiting) = connect(&server, &writer.scopes(&["operator.write"])).await.hello();
        let waiters = server.app.run_waiters();
        let wait = json!({"runId": run_id, "timeoutMs": 600_000});
        send_json(&mut waiting, &json!({"type": "req", "id": "w", "method": "agent.wait", "params": wait})).await;
        if !eventually(FRAME_WAIT, || server.app.run_waiters() > waiters).await {
            panic!("the wait is not parked: {:?}", next_json(&mut waiting).await);
        }

        let started = std::time::Instant::now();
        let params = match method {
            "device.pair.remove" => json!({"deviceId": device.id()}),
            _ => json!({"deviceId": device.id(), "role": "operator"}),
        };
        let reply = call(&mut admin, "d", method, params).await;
        assert_eq!(reply["ok"], true, "{method}: {reply}");
        assert_eq!(expect_close(&mut waiting).await.map(|(code, _)| code), Some(4001), "{method}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "{method}: {:?}", started.elapsed());
    }
}

/// A pairing socket whose client stops reading (the server's writes block) still overflows into its
/// 4008: read again, it gets what was sent, in order, then the close. One that never reads again is let
/// go all the same: the server holds no socket for it.
#[tokio::test]
async fn a_stalled_event_consumer_gets_its_4008_and_one_that_never_reads_is_let_go() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let server = Server::start().await;
    let pairing = Connect::cli().scopes(&["operator.pairing"]);
    let (ws, nonce) = open_small_window(&server.url()).await;
    let (_, mut slow) = connect_on(ws, &nonce, &pairing, server.now()).await.hello();
    let (ws, nonce) = open_small_window(&server.url()).await;
    let (_, never) = connect_on(ws, &nonce, &pairing, server.now()).await.hello();

    // More than both socket buffers and the queue hold; the sockets' tasks write between broadcasts.
    const EVENT_BYTES: usize = 16 * 1024;
    let payload = json!({ "pad": "e".repeat(EVENT_BYTES) });
    let events = more_than_socket_buffers() / EVENT_BYTES + 2 * pairgate::app::live::EVENT_QUEUE_CAPACITY;
    for _ in 0..events {
        server.app.live.broadcast("device.pair.requested", payload.clone());
        tokio::task::yield_now().await;
    }

    let mut seq = 0;
    let close = loop {
        match tokio::time::timeout(FRAME_WAIT, slow.next()).await.expect("a frame") {
            Some(Ok(Message::Text(text))) => {
                let event: Value = serde_json::from_str(text.as_str()).unwrap();
                seq += 1;
                assert_eq!(event["seq"], seq, "events arrive in order, none skipped");
            }
            Some(Ok(Message::Close(Some(frame)))) => break (u16::from(frame.code), frame.reason.to_string()),
            other => panic!("unexpected {other:?} after {seq} events"),
        }
    };
    assert_eq!(close, (4008, "slow consumer: event queue full".to_owned()));
    assert!(seq < events as u64, "the overflow was not delivered");
    let let_go = eventually(std::time::Duration::from_secs(5), || server.app.live.socket_count() == 0).await;
    assert!(let_go, "a consumer that never reads keeps its socket");
    drop(never);
}
