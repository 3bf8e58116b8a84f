//! A snapshot of every error the WebSocket methods and the REST API answer with today: the whole `error`
//! object of a failed response frame, and the status and body of a failed HTTP request. It pins the
//! current wording exactly, so that a change to the error conversions shows up here case by case.
//!
//! Values that vary per run (request ids) and long or noisy ones (device ids, truncated inputs) are
//! replaced by placeholders before the comparison; everything else is compared as is.

mod common;

use common::*;
use pairgate::server::Config;
use pairgate::store::Location;
use serde_json::{Value, json};

const MAIN: &str = "agent:main:main";

fn with_proxy() -> Config {
    Config { trusted_proxies: vec!["127.0.0.1".parse().unwrap()], ..Config::default() }
}

/// What was observed, case by case, and the text → placeholder substitutions applied to it.
#[derive(Default)]
struct Snapshot {
    cases: Vec<(&'static str, Value)>,
    placeholders: Vec<(String, String)>,
}

impl Snapshot {
    fn record(&mut self, name: &'static str, actual: Value) {
        assert!(self.cases.iter().all(|(seen, _)| *seen != name), "case {name} recorded twice");
        self.cases.push((name, actual));
    }

    /// Every occurrence of `text` in a recorded string becomes `placeholder`.
    fn placeholder(&mut self, text: impl Into<String>, placeholder: &str) {
        self.placeholders.push((text.into(), placeholder.to_owned()));
    }

    fn scrub(&self, value: &Value) -> Value {
        match value {
            Value::String(text) => {
                let mut text = text.clone();
                for (from, to) in &self.placeholders {
                    text = text.replace(from.as_str(), to);
                }
                Value::String(text)
            }
            Value::Array(items) => Value::Array(items.iter().map(|item| self.scrub(item)).collect()),
            Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), self.scrub(v))).collect()),
            other => other.clone(),
        }
    }

    /// Compares every recorded case with its expectation, in order; on any difference it fails naming
    /// each case that differs, with what was observed.
    fn check(self, expected: &[(&str, Value)]) {
        let mut failures = Vec::new();
        for (index, (name, actual)) in self.cases.iter().enumerate() {
            let actual = self.scrub(actual);
            match expected.get(index) {
                Some((expected_name, expected)) if expected_name == name => {
                    if *expected != actual {
                        failures.push(format!("case `{name}`:\n  expected {expected}\n  actual   {actual}"));
                    }
                }
                other => failures.push(format!(
                    "case `{name}` (#{index}) has no expectation (found {:?}); observed:\n  (\"{name}\", json!({actual})),",
                    other.map(|(n, _)| *n)
                )),
            }
        }
        for (name, _) in expected.iter().skip(self.cases.len()) {
            failures.push(format!("case `{name}` is expected but was not recorded"));
        }
        assert!(failures.is_empty(), "{} of {} cases differ:\n{}", failures.len(), expected.len(), failures.join("\n"));
    }
}

/// Sends one request and returns the `error` object of its response (the whole frame if it succeeded).
async fn ws_error(ws: &mut Ws, method: &str, params: Value) -> Value {
    let reply = call(ws, "e", method, params).await;
    if reply["ok"] == false { reply["error"].clone() } else { json!({ "unexpectedReply": reply }) }
}

async fn ws_ok(ws: &mut Ws, method: &str, params: Value) -> Value {
    let reply = call(ws, "ok", method, params).await;
    assert_eq!(reply["ok"], true, "{method}: {reply}");
    reply["payload"].clone()
}

/// An operator socket without a device identity, local, with these scopes.
async fn operator(server: &Server, scopes: &[&str]) -> Ws {
    connect(server, &Connect::cli().scopes(scopes)).await.hello().1
}

/// A remote device asks to pair (through the trusted proxy); returns its request id.
async fn remote_ask(server: &Server, attempt: Connect) -> String {
    let (error, _) = connect(server, &attempt.via_proxy_for("203.0.113.50")).await.refused();
    error["details"]["requestId"].as_str().expect("a pairing request").to_owned()
}

fn node() -> Connect {
    Connect { role: "node".into(), client_id: "node-host".into(), client_mode: "node".into(), ..Connect::cli() }
        .scopes(&[])
}

/// A device paired silently over loopback with `operator.read`.
async fn paired(server: &Server, device: &Device) {
    connect(server, &Connect::cli().device(device).scopes(&["operator.read"])).await.hello();
}

#[tokio::test]
async fn websocket_pairing_and_token_errors() {
    let server = Server::start_with(with_proxy()).await;
    let mut snap = Snapshot::default();
    let unknown_device = "0".repeat(64);
    snap.placeholder(&unknown_device, "<unknownDevice>");
    snap.placeholder("m".repeat(64), "<m×64>");
    snap.placeholder("r".repeat(64), "<r×64>");
    snap.placeholder("d".repeat(64), "<d×64>");
    snap.placeholder("s".repeat(64), "<s×64>");

    // Before connect: the first request must be connect, with valid params.
    for (name, frame) in [
        ("first request is not connect", json!({"type": "req", "id": "h", "method": "health", "params": {}})),
        (
            "connect params invalid",
            json!({"type": "req", "id": "h", "method": "connect", "params": {"minProtocol": 4}}),
        ),
    ] {
        let (mut ws, _) = open(&server.url(), &[]).await.unwrap();
        send_json(&mut ws, &frame).await;
        let reply = next_json(&mut ws).await.expect("a reply");
        let close = expect_close(&mut ws).await;
        snap.record(name, json!({ "reply": reply, "close": close }));
    }

    let mut admin = operator(&server, &["operator.admin"]).await;
    let mut pairing = operator(&server, &["operator.pairing"]).await;
    let mut reader = operator(&server, &["operator.read"]).await;

    // Dispatch.
    snap.record("unknown method", ws_error(&mut admin, "device.pair.nope", json!({})).await);
    snap.record("unknown method, truncated", ws_error(&mut admin, &"m".repeat(100), json!({})).await);
    snap.record("missing scope operator.pairing", ws_error(&mut reader, "device.pair.list", json!({})).await);
    snap.record("missing scope operator.admin", ws_error(&mut pairing, "sessions.patch", json!({"key": MAIN})).await);
    snap.record("missing scope operator.write", ws_error(&mut reader, "agent.wait", json!({"runId": "r"})).await);
    snap.record("missing scope operator.read", ws_error(&mut pairing, "status", json!({})).await);
    snap.record("connect again", ws_error(&mut admin, "connect", json!({})).await);

    // Params that do not parse.
    snap.record("approve: params missing", ws_error(&mut admin, "device.pair.approve", Value::Null).await);
    snap.record("approve: requestId missing", ws_error(&mut admin, "device.pair.approve", json!({})).await);
    snap.record(
        "approve: requestId not a string",
        ws_error(&mut admin, "device.pair.approve", json!({"requestId": 5})).await,
    );
    snap.record("reject: requestId missing", ws_error(&mut admin, "device.pair.reject", json!({})).await);
    snap.record("remove: deviceId missing", ws_error(&mut admin, "device.pair.remove", json!({})).await);
    snap.record(
        "rotate: role missing",
        ws_error(&mut admin, "device.token.rotate", json!({"deviceId": unknown_device})).await,
    );
    snap.record(
        "rotate: scopes not a list",
        ws_error(
            &mut admin,
            "device.token.rotate",
            json!({"deviceId": unknown_device, "role": "operator", "scopes": "operator.read"}),
        )
        .await,
    );
    snap.record("revoke: params not an object", ws_error(&mut admin, "device.token.revoke", json!([1, 2])).await);

    // Pairing requests.
    let approved = remote_ask(&server, Connect::cli().device(&Device::new(40))).await;
    let rejected = remote_ask(&server, Connect::cli().device(&Device::new(41))).await;
    let superseded = remote_ask(&server, Connect::cli().device(&Device::new(42))).await;
    let superseding =
        remote_ask(&server, Connect::cli().device(&Device::new(42)).scopes(&["operator.read", "operator.write"])).await;
    let node_ask = remote_ask(&server, node().device(&Device::new(43))).await;
    let expiring = remote_ask(&server, Connect::cli().device(&Device::new(44))).await;
    assert_ne!(superseded, superseding);
    for (id, name) in [
        (&approved, "<approved>"),
        (&rejected, "<rejected>"),
        (&superseded, "<superseded>"),
        (&superseding, "<superseding>"),
        (&node_ask, "<nodeAsk>"),
        (&expiring, "<expiring>"),
    ] {
        snap.placeholder(id.as_str(), name);
    }
    ws_ok(&mut admin, "device.pair.approve", json!({"requestId": approved})).await;
    ws_ok(&mut admin, "device.pair.reject", json!({"requestId": rejected})).await;

    snap.record(
        "approve: unknown requestId",
        ws_error(&mut admin, "device.pair.approve", json!({"requestId": "nope"})).await,
    );
    snap.record(
        "approve: unknown requestId, truncated",
        ws_error(&mut admin, "device.pair.approve", json!({"requestId": "r".repeat(100)})).await,
    );
    snap.record(
        "reject: unknown requestId",
        ws_error(&mut admin, "device.pair.reject", json!({"requestId": "nope"})).await,
    );
    snap.record(
        "approve: already approved",
        ws_error(&mut admin, "device.pair.approve", json!({"requestId": approved})).await,
    );
    snap.record(
        "reject: already approved",
        ws_error(&mut admin, "device.pair.reject", json!({"requestId": approved})).await,
    );
    snap.record(
        "approve: already rejected",
        ws_error(&mut admin, "device.pair.approve", json!({"requestId": rejected})).await,
    );
    snap.record(
        "reject: already rejected",
        ws_error(&mut admin, "device.pair.reject", json!({"requestId": rejected})).await,
    );
    snap.record(
        "approve: superseded",
        ws_error(&mut admin, "device.pair.approve", json!({"requestId": superseded})).await,
    );
    snap.record(
        "approve denied: missing scope",
        ws_error(&mut pairing, "device.pair.approve", json!({"requestId": superseding})).await,
    );
    snap.record(
        "approve denied: node needs admin",
        ws_error(&mut pairing, "device.pair.approve", json!({"requestId": node_ask})).await,
    );

    // Devices and tokens.
    let device = Device::new(45);
    paired(&server, &device).await;
    snap.placeholder(device.id().to_string(), "<device>");
    let id = device.id().to_string();
    snap.record(
        "remove: invalid deviceId",
        ws_error(&mut admin, "device.pair.remove", json!({"deviceId": "abc"})).await,
    );
    snap.record(
        "remove: invalid deviceId, truncated",
        ws_error(&mut admin, "device.pair.remove", json!({"deviceId": "d".repeat(100)})).await,
    );
    snap.record(
        "remove: unknown device",
        ws_error(&mut admin, "device.pair.remove", json!({"deviceId": unknown_device})).await,
    );
    snap.record(
        "rotate: invalid deviceId",
        ws_error(&mut admin, "device.token.rotate", json!({"deviceId": "abc", "role": "operator"})).await,
    );
    snap.record(
        "rotate: invalid role",
        ws_error(&mut admin, "device.token.rotate", json!({"deviceId": id, "role": "root"})).await,
    );
    snap.record(
        "rotate: unknown scope",
        ws_error(
            &mut admin,
            "device.token.rotate",
            json!({"deviceId": id, "role": "operator", "scopes": ["operator.root"]}),
        )
        .await,
    );
    snap.record(
        "rotate: unknown scope, truncated",
        ws_error(
            &mut admin,
            "device.token.rotate",
            json!({"deviceId": id, "role": "operator", "scopes": ["s".repeat(100)]}),
        )
        .await,
    );
    snap.record(
        "rotate: unknown device",
        ws_error(&mut admin, "device.token.rotate", json!({"deviceId": unknown_device, "role": "operator"})).await,
    );
    snap.record(
        "rotate: role not granted",
        ws_error(&mut admin, "device.token.rotate", json!({"deviceId": id, "role": "node"})).await,
    );
    snap.record(
        "rotate: scope not approved",
        ws_error(
            &mut admin,
            "device.token.rotate",
            json!({"deviceId": id, "role": "operator", "scopes": ["operator.write"]}),
        )
        .await,
    );
    snap.record(
        "rotate denied: missing scope",
        ws_error(&mut pairing, "device.token.rotate", json!({"deviceId": id, "role": "operator"})).await,
    );
    snap.record(
        "rotate denied: node needs admin",
        ws_error(&mut pairing, "device.token.rotate", json!({"deviceId": id, "role": "node"})).await,
    );
    snap.record(
        "revoke: invalid deviceId",
        ws_error(&mut admin, "device.token.revoke", json!({"deviceId": "abc", "role": "operator"})).await,
    );
    snap.record(
        "revoke: invalid role",
        ws_error(&mut admin, "device.token.revoke", json!({"deviceId": id, "role": "root"})).await,
    );
    snap.record(
        "revoke: no live token",
        ws_error(&mut admin, "device.token.revoke", json!({"deviceId": unknown_device, "role": "operator"})).await,
    );
    snap.record(
        "revoke denied: missing scope",
        ws_error(&mut pairing, "device.token.revoke", json!({"deviceId": id, "role": "operator"})).await,
    );
    snap.record(
        "revoke denied: node needs admin",
        ws_error(&mut pairing, "device.token.revoke", json!({"deviceId": id, "role": "node"})).await,
    );

    // Expiry (last: the clock moves past every pending request).
    server.clock.advance_ms(5 * 60 * 1000);
    snap.record("approve: expired", ws_error(&mut admin, "device.pair.approve", json!({"requestId": expiring})).await);
    snap.record("reject: expired", ws_error(&mut admin, "device.pair.reject", json!({"requestId": expiring})).await);

    snap.check(&[
        (
            "first request is not connect",
            json!({
                "close": [1008, "invalid handshake: first request must be connect"],
                "reply": {
                    "type": "res",
                    "id": "h",
                    "ok": false,
                    "error": {"code": "INVALID_REQUEST", "message": "invalid handshake: first request must be connect"}
                }
            }),
        ),
        (
            "connect params invalid",
            json!({
                "close": [1008, "invalid connect params: missing field `maxProtocol`"],
                "reply": {
                    "type": "res",
                    "id": "h",
                    "ok": false,
                    "error": {
                        "code": "INVALID_REQUEST",
                        "message": "invalid connect params: missing field `maxProtocol`"
                    }
                }
            }),
        ),
        ("unknown method", json!({"code": "INVALID_REQUEST", "message": "unknown method: device.pair.nope"})),
        ("unknown method, truncated", json!({"code": "INVALID_REQUEST", "message": "unknown method: <m×64>"})),
        (
            "missing scope operator.pairing",
            json!({"code": "INVALID_REQUEST", "message": "missing scope: operator.pairing"}),
        ),
        (
            "missing scope operator.admin",
            json!({"code": "INVALID_REQUEST", "message": "missing scope: operator.admin"}),
        ),
        (
            "missing scope operator.write",
            json!({"code": "INVALID_REQUEST", "message": "missing scope: operator.write"}),
        ),
        ("missing scope operator.read", json!({"code": "INVALID_REQUEST", "message": "missing scope: operator.read"})),
        ("connect again", json!({"code": "INVALID_REQUEST", "message": "connect already completed on this socket"})),
        (
            "approve: params missing",
            json!({
                "code": "INVALID_REQUEST",
                "message": "invalid params: invalid type: null, expected struct RequestIdParams"
            }),
        ),
        (
            "approve: requestId missing",
            json!({"code": "INVALID_REQUEST", "message": "invalid params: missing field `requestId`"}),
        ),
        (
            "approve: requestId not a string",
            json!({
                "code": "INVALID_REQUEST",
                "message": "invalid params: invalid type: integer `5`, expected a string"
            }),
        ),
        (
            "reject: requestId missing",
            json!({"code": "INVALID_REQUEST", "message": "invalid params: missing field `requestId`"}),
        ),
        (
            "remove: deviceId missing",
            json!({"code": "INVALID_REQUEST", "message": "invalid params: missing field `deviceId`"}),
        ),
        ("rotate: role missing", json!({"code": "INVALID_REQUEST", "message": "invalid params: missing field `role`"})),
        (
            "rotate: scopes not a list",
            json!({
                "code": "INVALID_REQUEST",
                "message": "invalid params: invalid type: string \"operator.read\", expected a sequence"
            }),
        ),
        (
            "revoke: params not an object",
            json!({
                "code": "INVALID_REQUEST",
                "message": "invalid params: invalid type: integer `1`, expected a string"
            }),
        ),
        ("approve: unknown requestId", json!({"code": "INVALID_REQUEST", "message": "unknown requestId: nope"})),
        (
            "approve: unknown requestId, truncated",
            json!({"code": "INVALID_REQUEST", "message": "unknown requestId: <r×64>"}),
        ),
        ("reject: unknown requestId", json!({"code": "INVALID_REQUEST", "message": "unknown requestId: nope"})),
        (
            "approve: already approved",
            json!({
                "code": "INVALID_REQUEST",
                "message": "unknown requestId (pairing request <approved> is already approved)"
            }),
        ),
        (
            "reject: already approved",
            json!({
                "code": "INVALID_REQUEST",
                "message": "unknown requestId (pairing request <approved> is already approved)"
            }),
        ),
        (
            "approve: already rejected",
            json!({
                "code": "INVALID_REQUEST",
                "message": "unknown requestId (pairing request <rejected> is already rejected)"
            }),
        ),
        (
            "reject: already rejected",
            json!({
                "code": "INVALID_REQUEST",
                "message": "unknown requestId (pairing request <rejected> is already rejected)"
            }),
        ),
        (
            "approve: superseded",
            json!({
                "code": "INVALID_REQUEST",
                "message": "unknown requestId (pairing request <superseded> is already superseded)"
            }),
        ),
        (
            "approve denied: missing scope",
            json!({
                "code": "INVALID_REQUEST",
                "message": "missing scope: operator.read"
            }),
        ),
        (
            "approve denied: node needs admin",
            json!({
                "code": "INVALID_REQUEST",
                "message": "device pairing approval denied: role node requires operator.admin"
            }),
        ),
        ("remove: invalid deviceId", json!({"code": "INVALID_REQUEST", "message": "unknown deviceId: abc"})),
        (
            "remove: invalid deviceId, truncated",
            json!({"code": "INVALID_REQUEST", "message": "unknown deviceId: <d×64>"}),
        ),
        ("remove: unknown device", json!({"code": "INVALID_REQUEST", "message": "unknown deviceId: <unknownDevice>"})),
        ("rotate: invalid deviceId", json!({"code": "INVALID_REQUEST", "message": "unknown deviceId: abc"})),
        ("rotate: invalid role", json!({"code": "INVALID_REQUEST", "message": "invalid role"})),
        ("rotate: unknown scope", json!({"code": "INVALID_REQUEST", "message": "unknown scope: operator.root"})),
        ("rotate: unknown scope, truncated", json!({"code": "INVALID_REQUEST", "message": "unknown scope: <s×64>…"})),
        (
            "rotate: unknown device",
            json!({
                "code": "INVALID_REQUEST",
                "message": "unknown device token: role operator of device <unknownDevice>"
            }),
        ),
        (
            "rotate: role not granted",
            json!({"code": "INVALID_REQUEST", "message": "unknown device token: role node of device <device>"}),
        ),
        (
            "rotate: scope not approved",
            json!({
                "code": "INVALID_REQUEST",
                "message": "cannot rotate to operator.write: the operator role was not approved for it"
            }),
        ),
        (
            "rotate denied: missing scope",
            json!({"code": "INVALID_REQUEST", "message": "missing scope: operator.read"}),
        ),
        (
            "rotate denied: node needs admin",
            json!({
                "code": "INVALID_REQUEST",
                "message": "device token rotation denied: role node requires operator.admin"
            }),
        ),
        ("revoke: invalid deviceId", json!({"code": "INVALID_REQUEST", "message": "unknown deviceId: abc"})),
        ("revoke: invalid role", json!({"code": "INVALID_REQUEST", "message": "invalid role"})),
        (
            "revoke: no live token",
            json!({
                "code": "INVALID_REQUEST",
                "message": "unknown device token: live operator token of device <unknownDevice>"
            }),
        ),
        (
            "revoke denied: missing scope",
            json!({
                "code": "INVALID_REQUEST",
                "message": "missing scope: operator.read"
            }),
        ),
        (
            "revoke denied: node needs admin",
            json!({
                "code": "INVALID_REQUEST",
                "message": "device token revocation denied: role node requires operator.admin"
            }),
        ),
        (
            "approve: expired",
            json!({
                "code": "INVALID_REQUEST",
                "message": "unknown requestId (pairing request <expiring> expired; the device must connect again to ask anew)"
            }),
        ),
        (
            "reject: expired",
            json!({
                "code": "INVALID_REQUEST",
                "message": "unknown requestId (pairing request <expiring> expired; the device must connect again to ask anew)"
            }),
        ),
    ]);
}

fn sub(name: &str) -> String {
    format!("agent:main:subagent:{name}")
}

/// A sub-agent session under `parent` and its pending run `run_id`.
async fn spawn(ws: &mut Ws, key: &str, parent: &str, run_id: &str) {
    ws_ok(ws, "sessions.patch", json!({"key": key, "spawnedBy": parent})).await;
    let params = json!({"runId": run_id, "childSessionKey": key, "requesterSessionKey": parent, "task": "t"});
    ws_ok(ws, "subagents.register", params).await;
}

#[tokio::test]
async fn websocket_session_and_run_errors() {
    let server = Server::start().await;
    let mut snap = Snapshot::default();
    let mut ws =
        connect(&server, &Connect::backend().device(&Device::new(100)).scopes(&["operator.admin"])).await.hello().1;
    let mut reader = operator(&server, &["operator.read"]).await;

    snap.record("patch: missing scope", ws_error(&mut reader, "sessions.patch", json!({"key": sub("a")})).await);
    snap.record("delete: missing scope", ws_error(&mut reader, "sessions.delete", json!({"key": sub("a")})).await);
    snap.record("kill: missing scope", ws_error(&mut reader, "subagents.kill", json!({"runId": "r"})).await);
    snap.record(
        "register: missing scope",
        ws_error(&mut reader, "subagents.register", json!({"childSessionKey": sub("a")})).await,
    );

    // Params that do not parse, one per method.
    snap.record("patch: key missing", ws_error(&mut ws, "sessions.patch", json!({})).await);
    snap.record(
        "patch: spawnDepth not a number",
        ws_error(&mut ws, "sessions.patch", json!({"key": sub("a"), "spawnDepth": "1"})).await,
    );
    snap.record("get: key missing", ws_error(&mut ws, "sessions.get", json!({})).await);
    snap.record("list: limit not a number", ws_error(&mut ws, "sessions.list", json!({"limit": "10"})).await);
    snap.record("delete: params missing", ws_error(&mut ws, "sessions.delete", Value::Null).await);
    snap.record("wait: runId missing", ws_error(&mut ws, "agent.wait", json!({})).await);
    snap.record(
        "wait: timeoutMs negative",
        ws_error(&mut ws, "agent.wait", json!({"runId": "r", "timeoutMs": -1})).await,
    );
    snap.record(
        "register: task missing",
        ws_error(&mut ws, "subagents.register", json!({"childSessionKey": sub("a"), "requesterSessionKey": MAIN}))
            .await,
    );
    snap.record("start: runId missing", ws_error(&mut ws, "subagents.start", json!({})).await);
    snap.record("end: status missing", ws_error(&mut ws, "subagents.end", json!({"runId": "r"})).await);
    snap.record("kill: runId not a string", ws_error(&mut ws, "subagents.kill", json!({"runId": 7})).await);
    snap.record("list runs: state not a string", ws_error(&mut ws, "subagents.list", json!({"state": 1})).await);

    // sessions.patch
    snap.record(
        "patch: not an agent key",
        ws_error(&mut ws, "sessions.patch", json!({"key": "not-an-agent-key"})).await,
    );
    snap.record(
        "patch: lineage on a main session",
        ws_error(&mut ws, "sessions.patch", json!({"key": MAIN, "spawnedBy": sub("x")})).await,
    );
    snap.record(
        "patch: own parent",
        ws_error(&mut ws, "sessions.patch", json!({"key": sub("self"), "spawnedBy": sub("self")})).await,
    );
    ws_ok(
        &mut ws,
        "sessions.patch",
        json!({"key": sub("a"), "spawnDepth": 1, "subagentRole": "leaf", "subagentControlScope": "none"}),
    )
    .await;
    spawn(&mut ws, &sub("a"), MAIN, "run-a").await;
    snap.record(
        "patch: spawnedBy immutable",
        ws_error(&mut ws, "sessions.patch", json!({"key": sub("a"), "spawnedBy": sub("other")})).await,
    );
    snap.record(
        "patch: subagentRole immutable",
        ws_error(&mut ws, "sessions.patch", json!({"key": sub("a"), "subagentRole": "orchestrator"})).await,
    );
    snap.record(
        "patch: subagentControlScope immutable",
        ws_error(&mut ws, "sessions.patch", json!({"key": sub("a"), "subagentControlScope": "children"})).await,
    );
    snap.record(
        "patch: spawnDepth immutable",
        ws_error(&mut ws, "sessions.patch", json!({"key": sub("a"), "spawnDepth": 2})).await,
    );

    // sessions.get and sessions.delete
    snap.record("get: unknown session", ws_error(&mut ws, "sessions.get", json!({"key": sub("none")})).await);
    snap.record("delete: main session", ws_error(&mut ws, "sessions.delete", json!({"key": MAIN})).await);
    snap.record("delete: active runs", ws_error(&mut ws, "sessions.delete", json!({"key": sub("a")})).await);
    let parent = sub("p");
    let deep = format!("{parent}:subagent:q");
    ws_ok(&mut ws, "sessions.patch", json!({"key": parent, "spawnedBy": MAIN})).await;
    ws_ok(&mut ws, "sessions.patch", json!({"key": deep, "spawnedBy": parent})).await;
    snap.record("delete: child sessions", ws_error(&mut ws, "sessions.delete", json!({"key": parent})).await);

    // Runs: unknown ones, illegal transitions, bad values.
    snap.record("wait: unknown run", ws_error(&mut ws, "agent.wait", json!({"runId": "nope", "timeoutMs": 10})).await);
    snap.record("start: unknown run", ws_error(&mut ws, "subagents.start", json!({"runId": "nope"})).await);
    snap.record("end: unknown run", ws_error(&mut ws, "subagents.end", json!({"runId": "nope", "status": "ok"})).await);
    snap.record("kill: unknown run", ws_error(&mut ws, "subagents.kill", json!({"runId": "nope"})).await);
    snap.record(
        "register: unknown child session",
        ws_error(
            &mut ws,
            "subagents.register",
            json!({"childSessionKey": sub("ghost"), "requesterSessionKey": MAIN, "task": "t"}),
        )
        .await,
    );
    snap.record(
        "register: duplicate runId",
        ws_error(
            &mut ws,
            "subagents.register",
            json!({"runId": "run-a", "childSessionKey": sub("a"), "requesterSessionKey": MAIN, "task": "t"}),
        )
        .await,
    );
    snap.record(
        "register: unknown cleanup",
        ws_error(
            &mut ws,
            "subagents.register",
            json!({"childSessionKey": sub("a"), "requesterSessionKey": MAIN, "task": "t", "cleanup": "shred"}),
        )
        .await,
    );
    snap.record(
        "patch: label too long",
        ws_error(&mut ws, "sessions.patch", json!({"key": sub("a"), "label": "l".repeat(257)})).await,
    );
    snap.record(
        "patch: unknown subagentRole",
        ws_error(&mut ws, "sessions.patch", json!({"key": sub("a"), "subagentRole": "boss"})).await,
    );
    snap.record(
        "end: status not ok, error or timeout",
        ws_error(&mut ws, "subagents.end", json!({"runId": "run-a", "status": "done"})).await,
    );
    snap.record(
        "end: pending run",
        ws_error(&mut ws, "subagents.end", json!({"runId": "run-a", "status": "ok"})).await,
    );
    ws_ok(&mut ws, "subagents.start", json!({"runId": "run-a"})).await;
    snap.record("start: running run", ws_error(&mut ws, "subagents.start", json!({"runId": "run-a"})).await);
    spawn(&mut ws, &sub("b"), MAIN, "run-b").await;
    ws_ok(&mut ws, "subagents.kill", json!({"runId": "run-b"})).await;
    snap.record("kill: killed run", ws_error(&mut ws, "subagents.kill", json!({"runId": "run-b"})).await);
    snap.record(
        "end: killed run with error status",
        ws_error(&mut ws, "subagents.end", json!({"runId": "run-b", "status": "error", "error": "boom"})).await,
    );
    snap.record("start: killed run", ws_error(&mut ws, "subagents.start", json!({"runId": "run-b"})).await);
    snap.record("list runs: unknown state", ws_error(&mut ws, "subagents.list", json!({"state": "bogus"})).await);

    // Spawn limits (defaults: depth 1, 5 children per requester, 8 active runs).
    snap.record(
        "register: depth limit",
        ws_error(
            &mut ws,
            "subagents.register",
            json!({"childSessionKey": deep, "requesterSessionKey": parent, "task": "t"}),
        )
        .await,
    );
    for name in ["c", "d", "e", "f"] {
        spawn(&mut ws, &sub(name), MAIN, &format!("run-{name}")).await;
    }
    ws_ok(&mut ws, "sessions.patch", json!({"key": sub("g"), "spawnedBy": MAIN})).await;
    snap.record(
        "register: children limit",
        ws_error(
            &mut ws,
            "subagents.register",
            json!({"childSessionKey": sub("g"), "requesterSessionKey": MAIN, "task": "t"}),
        )
        .await,
    );
    for i in 0..3 {
        spawn(&mut ws, &format!("agent:ops:subagent:{i}"), "agent:ops:main", &format!("run-ops-{i}")).await;
    }
    ws_ok(&mut ws, "sessions.patch", json!({"key": "agent:ops:subagent:9", "spawnedBy": "agent:ops:main"})).await;
    snap.record(
        "register: concurrency limit",
        ws_error(
            &mut ws,
            "subagents.register",
            json!({"childSessionKey": "agent:ops:subagent:9", "requesterSessionKey": "agent:ops:main", "task": "t"}),
        )
        .await,
    );

    snap.check(&[
        ("patch: missing scope", json!({"code": "INVALID_REQUEST", "message": "missing scope: operator.admin"})),
        ("delete: missing scope", json!({"code": "INVALID_REQUEST", "message": "missing scope: operator.admin"})),
        ("kill: missing scope", json!({"code": "INVALID_REQUEST", "message": "missing scope: operator.admin"})),
        ("register: missing scope", json!({"code": "INVALID_REQUEST", "message": "missing scope: operator.write"})),
        ("patch: key missing", json!({"code": "INVALID_REQUEST", "message": "invalid params: missing field `key`"})),
        (
            "patch: spawnDepth not a number",
            json!({"code": "INVALID_REQUEST", "message": "invalid params: invalid type: string \"1\", expected i64"}),
        ),
        ("get: key missing", json!({"code": "INVALID_REQUEST", "message": "invalid params: missing field `key`"})),
        (
            "list: limit not a number",
            json!({"code": "INVALID_REQUEST", "message": "invalid params: invalid type: string \"10\", expected i64"}),
        ),
        (
            "delete: params missing",
            json!({
                "code": "INVALID_REQUEST",
                "message": "invalid params: invalid type: null, expected struct KeyParams"
            }),
        ),
        ("wait: runId missing", json!({"code": "INVALID_REQUEST", "message": "invalid params: missing field `runId`"})),
        (
            "wait: timeoutMs negative",
            json!({"code": "INVALID_REQUEST", "message": "invalid params: invalid value: integer `-1`, expected u64"}),
        ),
        (
            "register: task missing",
            json!({"code": "INVALID_REQUEST", "message": "invalid params: missing field `task`"}),
        ),
        (
            "start: runId missing",
            json!({"code": "INVALID_REQUEST", "message": "invalid params: missing field `runId`"}),
        ),
        (
            "end: status missing",
            json!({"code": "INVALID_REQUEST", "message": "invalid params: missing field `status`"}),
        ),
        (
            "kill: runId not a string",
            json!({
                "code": "INVALID_REQUEST",
                "message": "invalid params: invalid type: integer `7`, expected a string"
            }),
        ),
        (
            "list runs: state not a string",
            json!({
                "code": "INVALID_REQUEST",
                "message": "invalid params: invalid type: integer `1`, expected a string"
            }),
        ),
        (
            "patch: not an agent key",
            json!({"code": "INVALID_REQUEST", "message": "session key not-an-agent-key is not agent:<id>:…"}),
        ),
        (
            "patch: lineage on a main session",
            json!({
                "code": "INVALID_REQUEST",
                "message": "lineage fields are only for sub-agent sessions, not agent:main:main"
            }),
        ),
        ("patch: own parent", json!({"code": "INVALID_REQUEST", "message": "a session cannot be its own parent"})),
        (
            "patch: spawnedBy immutable",
            json!({"code": "INVALID_REQUEST", "message": "spawnedBy is immutable once set (it is agent:main:main)"}),
        ),
        (
            "patch: subagentRole immutable",
            json!({"code": "INVALID_REQUEST", "message": "subagentRole is immutable once set (it is leaf)"}),
        ),
        (
            "patch: subagentControlScope immutable",
            json!({"code": "INVALID_REQUEST", "message": "subagentControlScope is immutable once set (it is none)"}),
        ),
        (
            "patch: spawnDepth immutable",
            json!({"code": "INVALID_REQUEST", "message": "spawnDepth is immutable once set (it is 1)"}),
        ),
        (
            "get: unknown session",
            json!({"code": "INVALID_REQUEST", "message": "unknown session agent:main:subagent:none"}),
        ),
        (
            "delete: main session",
            json!({"code": "INVALID_REQUEST", "message": "agent:main:main is a main session and cannot be deleted"}),
        ),
        (
            "delete: active runs",
            json!({
                "code": "INVALID_REQUEST",
                "message": "session agent:main:subagent:a has 1 active run(s); kill them first"
            }),
        ),
        (
            "delete: child sessions",
            json!({
                "code": "INVALID_REQUEST",
                "message": "session agent:main:subagent:p has 1 child session(s); delete them first"
            }),
        ),
        ("wait: unknown run", json!({"code": "INVALID_REQUEST", "message": "unknown runId nope"})),
        ("start: unknown run", json!({"code": "INVALID_REQUEST", "message": "unknown run nope"})),
        ("end: unknown run", json!({"code": "INVALID_REQUEST", "message": "unknown run nope"})),
        ("kill: unknown run", json!({"code": "INVALID_REQUEST", "message": "unknown run nope"})),
        (
            "register: unknown child session",
            json!({"code": "INVALID_REQUEST", "message": "unknown session agent:main:subagent:ghost"}),
        ),
        ("register: duplicate runId", json!({"code": "INVALID_REQUEST", "message": "run run-a exists already"})),
        (
            "register: unknown cleanup",
            json!({"code": "INVALID_REQUEST", "message": "invalid cleanup: shred (expected keep or delete)"}),
        ),
        (
            "patch: label too long",
            json!({"code": "INVALID_REQUEST", "message": "label is too long: 257 bytes (at most 256)"}),
        ),
        (
            "patch: unknown subagentRole",
            json!({"code": "INVALID_REQUEST", "message": "invalid subagentRole: boss (expected orchestrator or leaf)"}),
        ),
        (
            "end: status not ok, error or timeout",
            json!({"code": "INVALID_REQUEST", "message": "status must be ok, error or timeout, not done"}),
        ),
        (
            "end: pending run",
            json!({
                "code": "INVALID_REQUEST",
                "message": "run run-a is pending and cannot become done",
                "details": {"code": "ILLEGAL_TRANSITION", "from": "pending", "to": "done"}
            }),
        ),
        (
            "start: running run",
            json!({
                "code": "INVALID_REQUEST",
                "message": "run run-a is running and cannot become running",
                "details": {"code": "ILLEGAL_TRANSITION", "from": "running", "to": "running"}
            }),
        ),
        (
            "kill: killed run",
            json!({
                "code": "INVALID_REQUEST",
                "message": "run run-b is killed and cannot become killed",
                "details": {"code": "ILLEGAL_TRANSITION", "from": "killed", "to": "killed"}
            }),
        ),
        (
            "end: killed run with error status",
            json!({
                "code": "INVALID_REQUEST",
                "message": "run run-b is killed and cannot become failed",
                "details": {"code": "ILLEGAL_TRANSITION", "from": "killed", "to": "failed"}
            }),
        ),
        (
            "start: killed run",
            json!({
                "code": "INVALID_REQUEST",
                "message": "run run-b is killed and cannot become running",
                "details": {"code": "ILLEGAL_TRANSITION", "from": "killed", "to": "running"}
            }),
        ),
        ("list runs: unknown state", json!({"code": "INVALID_REQUEST", "message": "unknown state bogus"})),
        (
            "register: depth limit",
            json!({
                "code": "FORBIDDEN",
                "message": "spawn limit reached: depth (at most 1, now 2)",
                "details": {"code": "SPAWN_LIMIT", "current": 2, "limit": "depth", "max": 1},
                "retryable": false
            }),
        ),
        (
            "register: children limit",
            json!({
                "code": "FORBIDDEN",
                "message": "spawn limit reached: children (at most 5, now 5)",
                "details": {"code": "SPAWN_LIMIT", "current": 5, "limit": "children", "max": 5},
                "retryable": true
            }),
        ),
        (
            "register: concurrency limit",
            json!({
                "code": "FORBIDDEN",
                "message": "spawn limit reached: concurrency (at most 8, now 8)",
                "details": {"code": "SPAWN_LIMIT", "current": 8, "limit": "concurrency", "max": 8},
                "retryable": true
            }),
        ),
    ]);
}

/// One HTTP request; its status and body (JSON when it parses, else the text; null when empty).
async fn http(
    method: reqwest::Method,
    url: &str,
    auth: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> Value {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    json!({ "status": status, "body": body })
}

struct Rest {
    base: String,
    bearer: String,
}

impl Rest {
    fn new(server: &Server) -> Rest {
        Rest { base: format!("http://{}", server.addr), bearer: format!("Bearer {TOKEN}") }
    }

    async fn get(&self, path: &str) -> Value {
        http(reqwest::Method::GET, &format!("{}{path}", self.base), Some(&self.bearer), &[], None).await
    }

    async fn delete(&self, path: &str) -> Value {
        http(reqwest::Method::DELETE, &format!("{}{path}", self.base), Some(&self.bearer), &[], None).await
    }

    async fn post(&self, path: &str, body: Option<&str>) -> Value {
        http(reqwest::Method::POST, &format!("{}{path}", self.base), Some(&self.bearer), &[], body.map(str::to_owned))
            .await
    }

    async fn ok(&self, path: &str) {
        let reply = self.post(path, None).await;
        assert_eq!(reply["status"], 200, "{path}: {reply}");
    }
}

#[tokio::test]
async fn rest_errors() {
    let server = Server::start_with(with_proxy()).await;
    let rest = Rest::new(&server);
    let mut snap = Snapshot::default();
    let unknown_device = "0".repeat(64);
    snap.placeholder(&unknown_device, "<unknownDevice>");

    // Authentication.
    let devices = format!("{}/api/v1/devices", rest.base);
    snap.record("401: bearer missing", http(reqwest::Method::GET, &devices, None, &[], None).await);
    snap.record("401: bearer mismatch", http(reqwest::Method::GET, &devices, Some("Bearer wrong"), &[], None).await);
    snap.record(
        "401: not a bearer",
        http(reqwest::Method::GET, &devices, Some(&format!("Basic {TOKEN}")), &[], None).await,
    );
    snap.record("401: metrics", http(reqwest::Method::GET, &format!("{}/metrics", rest.base), None, &[], None).await);
    let remote = [("x-forwarded-for", "198.51.100.60")];
    for _ in 0..10 {
        let reply = http(reqwest::Method::GET, &devices, Some("Bearer wrong"), &remote, None).await;
        assert_eq!(reply["status"], 401, "{reply}");
    }
    snap.record("429: locked out", http(reqwest::Method::GET, &devices, Some(&rest.bearer), &remote, None).await);
    {
        // Forwarding headers are refused from a peer that is not a trusted proxy.
        let direct = Server::start().await;
        let url = format!("http://{}/api/v1/devices", direct.addr);
        let forwarded = [("x-forwarded-for", "198.51.100.61")];
        snap.record(
            "403: untrusted forwarding",
            http(reqwest::Method::GET, &url, Some(&rest.bearer), &forwarded, None).await,
        );
    }

    // Lists: filters, limits and cursors.
    snap.record("devices: unknown status", rest.get("/api/v1/devices?status=bogus").await);
    snap.record("devices: limit 0", rest.get("/api/v1/devices?limit=0").await);
    snap.record("devices: limit 201", rest.get("/api/v1/devices?limit=201").await);
    snap.record("devices: bad cursor", rest.get("/api/v1/devices?cursor=abc").await);
    snap.record("devices: limit not a number", rest.get("/api/v1/devices?limit=abc").await);
    snap.record("requests: unknown status", rest.get("/api/v1/requests?status=bogus").await);
    snap.record("requests: limit -1", rest.get("/api/v1/requests?limit=-1").await);
    snap.record("requests: bad cursor", rest.get("/api/v1/requests?cursor=abc").await);
    snap.record("audit: limit 1000", rest.get("/api/v1/audit?limit=1000").await);
    snap.record("audit: bad cursor", rest.get("/api/v1/audit?cursor=abc").await);
    snap.record("sessions: limit 0", rest.get("/api/v1/sessions?limit=0").await);

    // Devices.
    let device = Device::new(60);
    paired(&server, &device).await;
    let id = device.id().to_string();
    snap.placeholder(&id, "<device>");
    snap.record("get device: invalid id", rest.get("/api/v1/devices/abc").await);
    snap.record("get device: unknown", rest.get(&format!("/api/v1/devices/{unknown_device}")).await);
    snap.record("remove device: invalid id", rest.delete("/api/v1/devices/abc").await);
    snap.record("remove device: unknown", rest.delete(&format!("/api/v1/devices/{unknown_device}")).await);
    snap.record("rotate: invalid id", rest.post("/api/v1/devices/abc/tokens/operator/rotate", None).await);
    snap.record("rotate: unknown role", rest.post(&format!("/api/v1/devices/{id}/tokens/root/rotate"), None).await);
    snap.record(
        "rotate: body not JSON",
        rest.post(&format!("/api/v1/devices/{id}/tokens/operator/rotate"), Some("{")).await,
    );
    snap.record(
        "rotate: scopes not a list",
        rest.post(&format!("/api/v1/devices/{id}/tokens/operator/rotate"), Some(r#"{"scopes": "operator.read"}"#))
            .await,
    );
    snap.record(
        "rotate: unknown scope",
        rest.post(&format!("/api/v1/devices/{id}/tokens/operator/rotate"), Some(r#"{"scopes": ["operator.root"]}"#))
            .await,
    );
    snap.record(
        "rotate: scope not approved",
        rest.post(&format!("/api/v1/devices/{id}/tokens/operator/rotate"), Some(r#"{"scopes": ["operator.write"]}"#))
            .await,
    );
    snap.record("rotate: role not granted", rest.post(&format!("/api/v1/devices/{id}/tokens/node/rotate"), None).await);
    snap.record(
        "rotate: unknown device",
        rest.post(&format!("/api/v1/devices/{unknown_device}/tokens/operator/rotate"), None).await,
    );
    snap.record("revoke: invalid id", rest.post("/api/v1/devices/abc/tokens/operator/revoke", None).await);
    snap.record("revoke: unknown role", rest.post(&format!("/api/v1/devices/{id}/tokens/root/revoke"), None).await);
    snap.record("revoke: no live token", rest.post(&format!("/api/v1/devices/{id}/tokens/node/revoke"), None).await);

    // Pairing requests.
    let approved = remote_ask(&server, Connect::cli().device(&Device::new(61))).await;
    let rejected = remote_ask(&server, Connect::cli().device(&Device::new(62))).await;
    let superseded = remote_ask(&server, Connect::cli().device(&Device::new(63))).await;
    let superseding =
        remote_ask(&server, Connect::cli().device(&Device::new(63)).scopes(&["operator.read", "operator.write"])).await;
    let node_ask = remote_ask(&server, node().device(&Device::new(64))).await;
    for (id, name) in [
        (&approved, "<approved>"),
        (&rejected, "<rejected>"),
        (&superseded, "<superseded>"),
        (&superseding, "<superseding>"),
        (&node_ask, "<nodeAsk>"),
    ] {
        snap.placeholder(id.as_str(), name);
    }
    rest.ok(&format!("/api/v1/requests/{approved}/approve")).await;
    rest.ok(&format!("/api/v1/requests/{rejected}/reject")).await;
    snap.record("approve: unknown", rest.post("/api/v1/requests/nope/approve", None).await);
    snap.record("reject: unknown", rest.post("/api/v1/requests/nope/reject", None).await);
    snap.record("approve: already approved", rest.post(&format!("/api/v1/requests/{approved}/approve"), None).await);
    snap.record("reject: already approved", rest.post(&format!("/api/v1/requests/{approved}/reject"), None).await);
    snap.record("approve: already rejected", rest.post(&format!("/api/v1/requests/{rejected}/approve"), None).await);
    snap.record("approve: superseded", rest.post(&format!("/api/v1/requests/{superseded}/approve"), None).await);
    snap.record("reject: superseded", rest.post(&format!("/api/v1/requests/{superseded}/reject"), None).await);
    snap.record(
        "approve: body not JSON",
        rest.post(&format!("/api/v1/requests/{superseding}/approve"), Some("{")).await,
    );
    snap.record(
        "approve: scopes not a list",
        rest.post(&format!("/api/v1/requests/{superseding}/approve"), Some(r#"{"scopes": 1}"#)).await,
    );
    snap.record(
        "approve: unknown scope",
        rest.post(&format!("/api/v1/requests/{superseding}/approve"), Some(r#"{"scopes": ["operator.root"]}"#)).await,
    );
    snap.record(
        "approve: scope not asked",
        rest.post(&format!("/api/v1/requests/{superseding}/approve"), Some(r#"{"scopes": ["operator.admin"]}"#)).await,
    );
    snap.record(
        "approve node: operator scope not asked",
        rest.post(&format!("/api/v1/requests/{node_ask}/approve"), Some(r#"{"scopes": ["operator.read"]}"#)).await,
    );

    // Sessions and runs.
    let mut ws =
        connect(&server, &Connect::backend().device(&Device::new(100)).scopes(&["operator.admin"])).await.hello().1;
    spawn(&mut ws, &sub("k"), MAIN, "run-k").await;
    rest.ok("/api/v1/runs/run-k/kill").await;
    spawn(&mut ws, &sub("d"), MAIN, "run-d").await;
    ws_ok(&mut ws, "subagents.start", json!({"runId": "run-d"})).await;
    ws_ok(&mut ws, "subagents.end", json!({"runId": "run-d", "status": "ok"})).await;
    snap.record("session: unknown", rest.get(&format!("/api/v1/sessions/{}", sub("none"))).await);
    snap.record("kill: unknown run", rest.post("/api/v1/runs/nope/kill", None).await);
    snap.record("kill: killed run", rest.post("/api/v1/runs/run-k/kill", None).await);
    snap.record("kill: done run", rest.post("/api/v1/runs/run-d/kill", None).await);

    // Outside the API's handlers: routing and the body limit.
    snap.record("no such route", rest.get("/api/v1/nope").await);
    snap.record("method not allowed", rest.post("/api/v1/devices", None).await);
    snap.record(
        "body over 1 MiB",
        rest.post(&format!("/api/v1/requests/{superseding}/approve"), Some(&" ".repeat(1024 * 1024 + 1))).await,
    );

    // Expiry (last: the clock moves past every pending request and the lockout).
    server.clock.advance_ms(5 * 60 * 1000);
    snap.record("approve: expired", rest.post(&format!("/api/v1/requests/{superseding}/approve"), None).await);
    snap.record("reject: expired", rest.post(&format!("/api/v1/requests/{node_ask}/reject"), None).await);
    snap.record("reject: expired, again", rest.post(&format!("/api/v1/requests/{node_ask}/reject"), None).await);

    snap.check(&[
        (
            "401: bearer missing",
            json!({"status": 401, "body": {"code": "unauthorized", "message": "bearer token required", "details": {}}}),
        ),
        (
            "401: bearer mismatch",
            json!({"status": 401, "body": {"code": "unauthorized", "message": "bearer token mismatch", "details": {}}}),
        ),
        (
            "401: not a bearer",
            json!({"status": 401, "body": {"code": "unauthorized", "message": "bearer token required", "details": {}}}),
        ),
        (
            "401: metrics",
            json!({"status": 401, "body": {"code": "unauthorized", "message": "bearer token required", "details": {}}}),
        ),
        (
            "429: locked out",
            json!({
                "status": 429,
                "body": {
                    "code": "rate_limited",
                    "message": "too many failed authentication attempts",
                    "details": {"retryAfterMs": 300000}
                }
            }),
        ),
        (
            "403: untrusted forwarding",
            json!({
                "status": 403,
                "body": {"code": "forbidden", "message": "forwarding headers from an untrusted proxy", "details": {}}
            }),
        ),
        (
            "devices: unknown status",
            json!({
                "status": 422,
                "body": {"code": "invalid_request", "message": "status must be paired, removed or all", "details": {}}
            }),
        ),
        (
            "devices: limit 0",
            json!({
                "status": 422,
                "body": {"code": "invalid_request", "message": "limit must be between 1 and 200, got 0", "details": {}}
            }),
        ),
        (
            "devices: limit 201",
            json!({
                "status": 422,
                "body": {
                    "code": "invalid_request",
                    "message": "limit must be between 1 and 200, got 201",
                    "details": {}
                }
            }),
        ),
        (
            "devices: bad cursor",
            json!({
                "status": 422,
                "body": {
                    "code": "invalid_request",
                    "message": "device id must be 64 lowercase hex characters",
                    "details": {}
                }
            }),
        ),
        (
            "devices: limit not a number",
            json!({"status": 400, "body": {"code": "bad_request", "details": {},
                   "message": "Failed to deserialize query string: limit: invalid digit found in string"}}),
        ),
        (
            "requests: unknown status",
            json!({
                "status": 422,
                "body": {"code": "invalid_request", "message": "unknown status bogus", "details": {}}
            }),
        ),
        (
            "requests: limit -1",
            json!({
                "status": 422,
                "body": {
                    "code": "invalid_request",
                    "message": "limit must be between 1 and 200, got -1",
                    "details": {}
                }
            }),
        ),
        (
            "requests: bad cursor",
            json!({"status": 422, "body": {"code": "invalid_request", "message": "bad cursor", "details": {}}}),
        ),
        (
            "audit: limit 1000",
            json!({
                "status": 422,
                "body": {
                    "code": "invalid_request",
                    "message": "limit must be between 1 and 200, got 1000",
                    "details": {}
                }
            }),
        ),
        (
            "audit: bad cursor",
            json!({"status": 422, "body": {"code": "invalid_request", "message": "bad cursor", "details": {}}}),
        ),
        (
            "sessions: limit 0",
            json!({
                "status": 422,
                "body": {"code": "invalid_request", "message": "limit must be between 1 and 200, got 0", "details": {}}
            }),
        ),
        (
            "get device: invalid id",
            json!({"status": 404, "body": {"code": "not_found", "message": "no paired device abc", "details": {}}}),
        ),
        (
            "get device: unknown",
            json!({
                "status": 404,
                "body": {"code": "not_found", "message": "no device <unknownDevice>", "details": {}}
            }),
        ),
        (
            "remove device: invalid id",
            json!({"status": 404, "body": {"code": "not_found", "message": "no paired device abc", "details": {}}}),
        ),
        (
            "remove device: unknown",
            json!({
                "status": 404,
                "body": {"code": "not_found", "message": "no paired device <unknownDevice>", "details": {}}
            }),
        ),
        (
            "rotate: invalid id",
            json!({"status": 404, "body": {"code": "not_found", "message": "no paired device abc", "details": {}}}),
        ),
        (
            "rotate: unknown role",
            json!({
                "status": 422,
                "body": {"code": "invalid_request", "message": "unknown role root: operator or node", "details": {}}
            }),
        ),
        (
            "rotate: body not JSON",
            json!({
                "status": 422,
                "body": {
                    "code": "invalid_request",
                    "message": "invalid JSON body: EOF while parsing an object at line 1 column 1",
                    "details": {}
                }
            }),
        ),
        (
            "rotate: scopes not a list",
            json!({
                "status": 422,
                "body": {
                    "code": "invalid_request",
                    "message": "invalid JSON body: invalid type: string \"operator.read\", expected a sequence at line 1 column 26",
                    "details": {}
                }
            }),
        ),
        (
            "rotate: unknown scope",
            json!({
                "status": 422,
                "body": {"code": "invalid_request", "message": "unknown scope: operator.root", "details": {}}
            }),
        ),
        (
            "rotate: scope not approved",
            json!({
                "status": 422,
                "body": {
                    "code": "invalid_request",
                    "message": "cannot rotate to operator.write: the operator role was not approved for it",
                    "details": {}
                }
            }),
        ),
        (
            "rotate: role not granted",
            json!({
                "status": 404,
                "body": {"code": "not_found", "message": "no role node of device <device>", "details": {}}
            }),
        ),
        (
            "rotate: unknown device",
            json!({
                "status": 404,
                "body": {"code": "not_found", "message": "no role operator of device <unknownDevice>", "details": {}}
            }),
        ),
        (
            "revoke: invalid id",
            json!({"status": 404, "body": {"code": "not_found", "message": "no paired device abc", "details": {}}}),
        ),
        (
            "revoke: unknown role",
            json!({
                "status": 422,
                "body": {"code": "invalid_request", "message": "unknown role root: operator or node", "details": {}}
            }),
        ),
        (
            "revoke: no live token",
            json!({
                "status": 404,
                "body": {"code": "not_found", "message": "no live node token of device <device>", "details": {}}
            }),
        ),
        (
            "approve: unknown",
            json!({"status": 404, "body": {"code": "not_found", "message": "no pairing request nope", "details": {}}}),
        ),
        (
            "reject: unknown",
            json!({"status": 404, "body": {"code": "not_found", "message": "no pairing request nope", "details": {}}}),
        ),
        (
            "approve: already approved",
            json!({
                "status": 409,
                "body": {
                    "code": "conflict",
                    "message": "pairing request <approved> is already approved",
                    "details": {}
                }
            }),
        ),
        (
            "reject: already approved",
            json!({
                "status": 409,
                "body": {
                    "code": "conflict",
                    "message": "pairing request <approved> is already approved",
                    "details": {}
                }
            }),
        ),
        (
            "approve: already rejected",
            json!({
                "status": 409,
                "body": {
                    "code": "conflict",
                    "message": "pairing request <rejected> is already rejected",
                    "details": {}
                }
            }),
        ),
        (
            "approve: superseded",
            json!({
                "status": 409,
                "body": {
                    "code": "conflict",
                    "message": "pairing request <superseded> is already superseded",
                    "details": {}
                }
            }),
        ),
        (
            "reject: superseded",
            json!({
                "status": 409,
                "body": {
                    "code": "conflict",
                    "message": "pairing request <superseded> is already superseded",
                    "details": {}
                }
            }),
        ),
        (
            "approve: body not JSON",
            json!({
                "status": 422,
                "body": {
                    "code": "invalid_request",
                    "message": "invalid JSON body: EOF while parsing an object at line 1 column 1",
                    "details": {}
                }
            }),
        ),
        (
            "approve: scopes not a list",
            json!({
                "status": 422,
                "body": {
                    "code": "invalid_request",
                    "message": "invalid JSON body: invalid type: integer `1`, expected a sequence at line 1 column 12",
                    "details": {}
                }
            }),
        ),
        (
            "approve: unknown scope",
            json!({
                "status": 422,
                "body": {"code": "invalid_request", "message": "unknown scope: operator.root", "details": {}}
            }),
        ),
        (
            "approve: scope not asked",
            json!({
                "status": 422,
                "body": {
                    "code": "invalid_request",
                    "message": "cannot approve operator.admin: pairing request <superseding> did not ask for it",
                    "details": {}
                }
            }),
        ),
        (
            "approve node: operator scope not asked",
            json!({
                "status": 422,
                "body": {
                    "code": "invalid_request",
                    "message": "cannot approve operator.read: pairing request <nodeAsk> did not ask for it",
                    "details": {}
                }
            }),
        ),
        (
            "session: unknown",
            json!({
                "status": 404,
                "body": {"code": "not_found", "message": "no session agent:main:subagent:none", "details": {}}
            }),
        ),
        (
            "kill: unknown run",
            json!({"status": 404, "body": {"code": "not_found", "message": "no run nope", "details": {}}}),
        ),
        (
            "kill: killed run",
            json!({
                "status": 409,
                "body": {"code": "conflict", "message": "run run-k is killed and cannot become killed", "details": {}}
            }),
        ),
        (
            "kill: done run",
            json!({
                "status": 409,
                "body": {"code": "conflict", "message": "run run-d is done and cannot become killed", "details": {}}
            }),
        ),
        ("no such route", json!({"status": 404, "body": {"code": "not_found", "message": "not found", "details": {}}})),
        (
            "method not allowed",
            json!({"status": 405, "body": {"code": "method_not_allowed", "message": "method not allowed", "details": {}}}),
        ),
        (
            "body over 1 MiB",
            json!({"status": 413, "body": {"code": "payload_too_large", "message": "length limit exceeded", "details": {}}}),
        ),
        (
            "approve: expired",
            json!({
                "status": 410,
                "body": {
                    "code": "gone",
                    "message": "pairing request <superseding> expired; the device must connect again to ask anew",
                    "details": {}
                }
            }),
        ),
        (
            "reject: expired",
            json!({
                "status": 410,
                "body": {
                    "code": "gone",
                    "message": "pairing request <nodeAsk> expired; the device must connect again to ask anew",
                    "details": {}
                }
            }),
        ),
        (
            "reject: expired, again",
            json!({
                "status": 410,
                "body": {
                    "code": "gone",
                    "message": "pairing request <nodeAsk> expired; the device must connect again to ask anew",
                    "details": {}
                }
            }),
        ),
    ]);
}

/// What the front ends answer when the store fails: busy (another process holds the write lock), then
/// gone altogether (its pools closed).
#[tokio::test]
async fn store_failure_errors() {
    use sqlx::Connection;

    let server = Server::start().await;
    let rest = Rest::new(&server);
    let mut snap = Snapshot::default();
    let mut ws = operator(&server, &["operator.admin"]).await;
    let unknown_device = "0".repeat(64);
    snap.placeholder(&unknown_device, "<unknownDevice>");

    // Another writer holds the write lock past the store's busy timeout (5 s): SQLite's, or the fleet's
    // advisory lock on PostgreSQL. The answers are the same on both engines.
    let device_path = format!("/api/v1/devices/{unknown_device}");
    let busy = || async {
        // SQLite has one writer connection: the two wait their turn, 5 s each; PostgreSQL's wait together.
        let (kill, remove) = tokio::join!(rest.post("/api/v1/runs/nope/kill", None), rest.delete(&device_path));
        (kill, remove)
    };
    let (kill, remove) = match test_location(server.dir.path()) {
        Location::Sqlite(path) => {
            let mut holder = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap();
            sqlx::query("BEGIN IMMEDIATE").execute(&mut holder).await.unwrap();
            let answers = busy().await;
            sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
            holder.close().await.unwrap();
            answers
        }
        Location::Postgres(url) => {
            let mut holder = sqlx::PgConnection::connect(url.expose()).await.unwrap();
            sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(pairgate::store::postgres::WRITE_LOCK)
                .execute(&mut holder)
                .await
                .unwrap();
            let answers = busy().await;
            holder.close().await.unwrap();
            answers
        }
    };
    snap.record("REST busy: kill run", kill);
    snap.record("REST busy: remove device", remove);

    server.store.close().await;
    snap.record("WS: device.pair.list", ws_error(&mut ws, "device.pair.list", json!({})).await);
    snap.record("WS: approve", ws_error(&mut ws, "device.pair.approve", json!({"requestId": "nope"})).await);
    snap.record("WS: reject", ws_error(&mut ws, "device.pair.reject", json!({"requestId": "nope"})).await);
    snap.record("WS: remove", ws_error(&mut ws, "device.pair.remove", json!({"deviceId": unknown_device})).await);
    snap.record(
        "WS: revoke",
        ws_error(&mut ws, "device.token.revoke", json!({"deviceId": unknown_device, "role": "operator"})).await,
    );
    snap.record("WS: sessions.get", ws_error(&mut ws, "sessions.get", json!({"key": MAIN})).await);
    snap.record("WS: sessions.patch", ws_error(&mut ws, "sessions.patch", json!({"key": MAIN})).await);
    snap.record("WS: agent.wait", ws_error(&mut ws, "agent.wait", json!({"runId": "nope"})).await);
    snap.record("WS: subagents.kill", ws_error(&mut ws, "subagents.kill", json!({"runId": "nope"})).await);
    snap.record("REST: list devices", rest.get("/api/v1/devices").await);
    snap.record("REST: approve", rest.post("/api/v1/requests/nope/approve", None).await);
    snap.record("REST: reject", rest.post("/api/v1/requests/nope/reject", None).await);
    snap.record("REST: remove device", rest.delete(&format!("/api/v1/devices/{unknown_device}")).await);
    snap.record("REST: session", rest.get(&format!("/api/v1/sessions/{MAIN}")).await);
    snap.record("REST: kill run", rest.post("/api/v1/runs/nope/kill", None).await);

    snap.check(&[
        (
            "REST busy: kill run",
            json!({
                "status": 503,
                "body": {"code": "unavailable", "message": "the database is busy; try again", "details": {}}
            }),
        ),
        (
            "REST busy: remove device",
            json!({
                "status": 503,
                "body": {"code": "unavailable", "message": "the database is busy; try again", "details": {}}
            }),
        ),
        (
            "WS: device.pair.list",
            json!({"code": "UNAVAILABLE", "message": "gateway store unavailable, try again", "retryable": true}),
        ),
        (
            "WS: approve",
            json!({"code": "UNAVAILABLE", "message": "gateway store unavailable, try again", "retryable": true}),
        ),
        (
            "WS: reject",
            json!({"code": "UNAVAILABLE", "message": "gateway store unavailable, try again", "retryable": true}),
        ),
        (
            "WS: remove",
            json!({"code": "UNAVAILABLE", "message": "gateway store unavailable, try again", "retryable": true}),
        ),
        (
            "WS: revoke",
            json!({"code": "UNAVAILABLE", "message": "gateway store unavailable, try again", "retryable": true}),
        ),
        (
            "WS: sessions.get",
            json!({"code": "UNAVAILABLE", "message": "gateway store unavailable, try again", "retryable": true}),
        ),
        (
            "WS: sessions.patch",
            json!({"code": "UNAVAILABLE", "message": "gateway store unavailable, try again", "retryable": true}),
        ),
        (
            "WS: agent.wait",
            json!({"code": "UNAVAILABLE", "message": "gateway store unavailable, try again", "retryable": true}),
        ),
        (
            "WS: subagents.kill",
            json!({"code": "UNAVAILABLE", "message": "gateway store unavailable, try again", "retryable": true}),
        ),
        (
            "REST: list devices",
            json!({"status": 500, "body": {"code": "internal", "message": "internal error", "details": {}}}),
        ),
        (
            "REST: approve",
            json!({"status": 500, "body": {"code": "internal", "message": "internal error", "details": {}}}),
        ),
        (
            "REST: reject",
            json!({"status": 500, "body": {"code": "internal", "message": "internal error", "details": {}}}),
        ),
        (
            "REST: remove device",
            json!({"status": 500, "body": {"code": "internal", "message": "internal error", "details": {}}}),
        ),
        (
            "REST: session",
            json!({"status": 500, "body": {"code": "internal", "message": "internal error", "details": {}}}),
        ),
        (
            "REST: kill run",
            json!({"status": 500, "body": {"code": "internal", "message": "internal error", "details": {}}}),
        ),
    ]);
}
