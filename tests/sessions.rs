//! Sub-agent sessions and runs over the WebSocket, as the gateway's own backend uses them.

mod common;

use common::*;
use pairgate::domain::RunState;
use pairgate::server::Config;
use pairgate::store::SpawnLimits;
use serde_json::{Value, json};

const MAIN: &str = "agent:main:main";

fn child(name: &str) -> String {
    format!("agent:main:subagent:{name}")
}

/// The backend's socket: `gateway-client`/`backend` on loopback with the gateway token, at admin.
async fn backend(server: &Server) -> Ws {
    let device = Device::new(100);
    connect(server, &Connect::backend().device(&device).scopes(&["operator.admin"])).await.hello().1
}

async fn ok(ws: &mut Ws, method: &str, params: Value) -> Value {
    let reply = call(ws, "r", method, params).await;
    assert_eq!(reply["ok"], true, "{method}: {reply}");
    reply["payload"].clone()
}

async fn refused(ws: &mut Ws, method: &str, params: Value) -> Value {
    let reply = call(ws, "r", method, params).await;
    assert_eq!(reply["ok"], false, "{method} should fail: {reply}");
    reply["error"].clone()
}

/// `sessions.patch` ×2 as `sessions_spawn` does, then the run is registered.
async fn spawn(ws: &mut Ws, key: &str, parent: &str, depth: i64) -> String {
    ok(
        ws,
        "sessions.patch",
        json!({"key": key, "spawnDepth": depth, "subagentRole": "leaf", "subagentControlScope": "none"}),
    )
    .await;
    ok(ws, "sessions.patch", json!({"key": key, "spawnedBy": parent})).await;
    let run =
        ok(ws, "subagents.register", json!({"childSessionKey": key, "requesterSessionKey": parent, "task": "t"})).await;
    run["runId"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_spawn_flow_end_to_end() {
    let server = Server::start().await;
    // The seed: the backend connects at read, then reconnects asking admin, and is never blocked.
    let device = Device::new(100);
    connect(&server, &Connect::backend().device(&device).scopes(&["operator.read"])).await.hello();
    let mut ws = backend(&server).await;

    let key = child("a");
    let entry = ok(
        &mut ws,
        "sessions.patch",
        json!({"key": key, "spawnDepth": 1, "subagentRole": "leaf", "subagentControlScope": "none", "model": "m1"}),
    )
    .await;
    assert_eq!(entry["ok"], true);
    assert_eq!(entry["entry"]["agentId"], "main");
    let entry = ok(&mut ws, "sessions.patch", json!({"key": key, "spawnedBy": MAIN})).await;
    assert_eq!(entry["entry"]["spawnedBy"], MAIN);
    assert_eq!(entry["entry"]["spawnDepth"], 1);

    let registered = ok(
        &mut ws,
        "subagents.register",
        json!({"childSessionKey": key, "requesterSessionKey": MAIN, "task": "write docs", "cleanup": "delete"}),
    )
    .await;
    let run_id = registered["runId"].as_str().unwrap().to_owned();
    assert_eq!(registered["run"]["state"], "pending");
    ok(&mut ws, "subagents.start", json!({"runId": run_id})).await;

    // Another socket waits; it is woken in process when the run ends.
    let mut waiter = backend(&server).await;
    let wait_id = run_id.clone();
    let waiting = tokio::spawn(async move {
        call(&mut waiter, "w", "agent.wait", json!({"runId": wait_id, "timeoutMs": 10_000})).await
    });
    let ended = ok(&mut ws, "subagents.end", json!({"runId": run_id, "status": "ok"})).await;
    assert_eq!(ended["run"]["state"], "done");
    let waited = waiting.await.unwrap();
    assert_eq!(waited["payload"]["runId"], run_id);
    assert_eq!(waited["payload"]["status"], "ok");
    assert!(waited["payload"]["startedAt"].is_i64() && waited["payload"]["endedAt"].is_i64());

    // Waiting on an ended run answers at once; a wait that runs out says timeout.
    let again = ok(&mut ws, "agent.wait", json!({"runId": run_id, "timeoutMs": 1})).await;
    assert_eq!(again["status"], "ok");
    let other = spawn(&mut ws, &child("b"), MAIN, 1).await;
    let timed_out = ok(&mut ws, "agent.wait", json!({"runId": other, "timeoutMs": 20})).await;
    assert_eq!(timed_out["status"], "timeout");

    let listed = ok(&mut ws, "sessions.list", json!({"spawnedBy": MAIN})).await;
    assert_eq!(listed["sessions"].as_array().unwrap().len(), 2);
    let runs = ok(&mut ws, "subagents.list", json!({"requesterSessionKey": MAIN, "state": "done"})).await;
    assert_eq!(runs["runs"][0]["runId"], run_id);
    let got = ok(&mut ws, "sessions.get", json!({"key": key})).await;
    assert_eq!(got["entry"]["model"], "m1");
}

#[tokio::test]
async fn a_failed_spawn_is_deleted_without_orphans() {
    let server = Server::start().await;
    let mut ws = backend(&server).await;
    let key = child("failed");
    let run_id = spawn(&mut ws, &key, MAIN, 1).await;
    // Active runs block deletion; the failed spawn is ended first.
    let error = refused(&mut ws, "sessions.delete", json!({"key": key, "deleteTranscript": true})).await;
    assert!(error["message"].as_str().unwrap().contains("active run"), "{error}");
    let error = refused(&mut ws, "subagents.end", json!({"runId": run_id, "status": "ok"})).await;
    assert_eq!(error["details"], json!({"code": "ILLEGAL_TRANSITION", "from": "pending", "to": "done"}));
    ok(&mut ws, "subagents.kill", json!({"runId": run_id})).await;
    let deleted = ok(&mut ws, "sessions.delete", json!({"key": key, "deleteTranscript": true})).await;
    assert_eq!(deleted, json!({"ok": true, "key": key, "deleted": true, "archived": false}));
    assert!(server.store.session(&key).await.unwrap().is_none());
    assert!(server.store.run(&run_id).await.unwrap().is_none(), "its runs go with it");
    let deleted = ok(&mut ws, "sessions.delete", json!({"key": key})).await;
    assert_eq!(deleted["deleted"], false);
}

#[tokio::test]
async fn lineage_is_for_sub_agents_and_immutable() {
    let server = Server::start().await;
    let mut ws = backend(&server).await;
    let key = child("x");
    spawn(&mut ws, &key, MAIN, 1).await;
    let error = refused(&mut ws, "sessions.patch", json!({"key": key, "spawnedBy": "agent:main:subagent:other"})).await;
    assert_eq!(error["message"], format!("spawnedBy is immutable once set (it is {MAIN})"));
    ok(&mut ws, "sessions.patch", json!({"key": key, "spawnedBy": MAIN, "label": "renamed"})).await;
    let error = refused(&mut ws, "sessions.patch", json!({"key": MAIN, "spawnedBy": "agent:main:subagent:x"})).await;
    assert!(error["message"].as_str().unwrap().starts_with("lineage fields are only for sub-agent sessions"));
    let error = refused(&mut ws, "sessions.delete", json!({"key": MAIN})).await;
    assert_eq!(error["message"], "agent:main:main is a main session and cannot be deleted");
    let error = refused(&mut ws, "sessions.patch", json!({"key": "not-an-agent-key"})).await;
    assert!(error["message"].as_str().unwrap().contains("is not agent:<id>:"), "{error}");

    // The scopes of §5: a read-only socket may list but not patch.
    let mut reader = connect(&server, &Connect::cli().scopes(&["operator.read"])).await.hello().1;
    ok(&mut reader, "sessions.list", json!({})).await;
    let error = refused(&mut reader, "sessions.patch", json!({"key": key})).await;
    assert_eq!(error["message"], "missing scope: operator.admin");
}

#[tokio::test]
async fn every_limit_refuses_with_its_name_and_count() {
    let server = Server::start().await;
    let mut ws = backend(&server).await;
    // Depth: a grandchild when only children are allowed.
    spawn(&mut ws, &child("p"), MAIN, 1).await;
    let deep = "agent:main:subagent:p:subagent:q";
    ok(&mut ws, "sessions.patch", json!({"key": deep, "spawnedBy": child("p")})).await;
    let error = refused(
        &mut ws,
        "subagents.register",
        json!({"childSessionKey": deep, "requesterSessionKey": child("p"), "task": "t"}),
    )
    .await;
    assert_eq!(error["code"], "FORBIDDEN");
    assert_eq!(error["details"], json!({"code": "SPAWN_LIMIT", "limit": "depth", "max": 1, "current": 2}));

    // Children: five active per requester.
    for i in 0..4 {
        spawn(&mut ws, &child(&format!("c{i}")), MAIN, 1).await;
    }
    ok(&mut ws, "sessions.patch", json!({"key": child("c5"), "spawnedBy": MAIN})).await;
    let error = refused(
        &mut ws,
        "subagents.register",
        json!({"childSessionKey": child("c5"), "requesterSessionKey": MAIN, "task": "t"}),
    )
    .await;
    assert_eq!(error["details"], json!({"code": "SPAWN_LIMIT", "limit": "children", "max": 5, "current": 5}));
    assert!(server.store.runs_page(None, Some(&child("c5")), None, 10).await.unwrap().is_empty(), "no partial row");

    // Concurrency: eight active in all.
    for i in 0..3 {
        spawn(&mut ws, &format!("agent:ops:subagent:{i}"), "agent:ops:main", 1).await;
    }
    ok(&mut ws, "sessions.patch", json!({"key": "agent:ops:subagent:9", "spawnedBy": "agent:ops:main"})).await;
    let error = refused(
        &mut ws,
        "subagents.register",
        json!({"childSessionKey": "agent:ops:subagent:9", "requesterSessionKey": "agent:ops:main", "task": "t"}),
    )
    .await;
    assert_eq!(error["details"], json!({"code": "SPAWN_LIMIT", "limit": "concurrency", "max": 8, "current": 8}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_spawns_race_for_the_last_slot() {
    let server = Server::start().await;
    let mut ws = backend(&server).await;
    // Seven of eight slots taken, each by its own requester.
    for i in 0..7 {
        spawn(&mut ws, &format!("agent:a{i}:subagent:x"), &format!("agent:a{i}:main"), 1).await;
    }
    let mut sockets = Vec::new();
    for i in 0..50 {
        let mut socket = backend(&server).await;
        ok(
            &mut socket,
            "sessions.patch",
            json!({"key": format!("agent:r{i}:subagent:x"), "spawnedBy": format!("agent:r{i}:main")}),
        )
        .await;
        sockets.push(socket);
    }
    let attempts: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, mut socket)| {
            tokio::spawn(async move {
                let params = json!({"childSessionKey": format!("agent:r{i}:subagent:x"), "requesterSessionKey": format!("agent:r{i}:main"), "task": "t"});
                call(&mut socket, "race", "subagents.register", params).await
            })
        })
        .collect();
    let mut won = 0;
    for attempt in attempts {
        let reply = attempt.await.unwrap();
        if reply["ok"] == true {
            won += 1;
        } else {
            assert_eq!(reply["error"]["details"]["limit"], "concurrency", "{reply}");
        }
    }
    assert_eq!(won, 1, "exactly the one free slot is taken");
    let active = server.store.runs_page(None, None, Some(RunState::Pending), 100).await.unwrap().len();
    assert_eq!(active, 8);
}

#[tokio::test]
async fn kill_cascades_down_a_three_level_tree() {
    let limits = SpawnLimits { max_depth: 3, ..SpawnLimits::default() };
    let server = Server::start_with(Config { spawn_limits: limits, ..Config::default() }).await;
    let mut ws = backend(&server).await;
    let a = "agent:main:subagent:a";
    let b = "agent:main:subagent:a:subagent:b";
    let c = "agent:main:subagent:a:subagent:b:subagent:c";
    let run_a = spawn(&mut ws, a, MAIN, 1).await;
    let run_b = spawn(&mut ws, b, a, 2).await;
    let run_c = spawn(&mut ws, c, b, 3).await;
    let unrelated = spawn(&mut ws, &child("z"), MAIN, 1).await;
    for run in [&run_a, &run_b, &run_c, &unrelated] {
        ok(&mut ws, "subagents.start", json!({"runId": run})).await;
    }
    let mut waiter = backend(&server).await;
    let wait_c = run_c.clone();
    let waiting = tokio::spawn(async move {
        call(&mut waiter, "w", "agent.wait", json!({"runId": wait_c, "timeoutMs": 10_000})).await
    });

    let killed = ok(&mut ws, "subagents.kill", json!({"runId": run_a})).await;
    assert_eq!(killed["killed"], json!([run_a, run_b, run_c]));
    for run in [&run_a, &run_b, &run_c] {
        let stored = server.store.run(run).await.unwrap().unwrap();
        assert_eq!((stored.state, stored.ended_reason.as_deref()), (RunState::Killed, Some("subagent-killed")));
    }
    assert_eq!(server.store.run(&unrelated).await.unwrap().unwrap().state, RunState::Running);
    let waited = waiting.await.unwrap();
    assert_eq!(waited["payload"]["status"], "error");
    assert_eq!(waited["payload"]["endedReason"], "subagent-killed");
    let error = refused(&mut ws, "subagents.kill", json!({"runId": run_b})).await;
    assert_eq!(error["details"]["code"], "ILLEGAL_TRANSITION");
}

#[tokio::test]
async fn ended_cleanup_delete_sessions_are_archived_after_their_time() {
    let server = Server::start().await;
    let mut ws = backend(&server).await;
    let key = child("tmp");
    ok(&mut ws, "sessions.patch", json!({"key": key, "spawnedBy": MAIN})).await;
    let run = ok(
        &mut ws,
        "subagents.register",
        json!({"childSessionKey": key, "requesterSessionKey": MAIN, "task": "t", "cleanup": "delete"}),
    )
    .await;
    let run_id = run["runId"].as_str().unwrap();
    ok(&mut ws, "subagents.start", json!({"runId": run_id})).await;
    ok(&mut ws, "subagents.end", json!({"runId": run_id, "status": "error", "error": "boom"})).await;
    assert_eq!(server.store.archive_due_sessions(server.now()).await.unwrap(), 0, "not yet");
    server.clock.advance_ms(60 * 60 * 1000);
    assert_eq!(server.store.archive_due_sessions(server.now()).await.unwrap(), 1);
    assert_eq!(server.store.session(&key).await.unwrap().unwrap().archived_at, Some(server.now()));
}

#[tokio::test]
async fn sessions_over_rest_and_a_kill_wakes_waiters() {
    let server = Server::start().await;
    let mut ws = backend(&server).await;
    let key = child("r");
    let run_id = spawn(&mut ws, &key, MAIN, 1).await;
    ok(&mut ws, "subagents.start", json!({"runId": run_id})).await;
    let mut waiter = backend(&server).await;
    let wait_id = run_id.clone();
    let waiting = tokio::spawn(async move {
        call(&mut waiter, "w", "agent.wait", json!({"runId": wait_id, "timeoutMs": 10_000})).await
    });

    let http = reqwest::Client::new();
    let base = format!("http://{}/api/v1", server.addr);
    let listed: Value = http
        .get(format!("{base}/sessions?spawnedBy={MAIN}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"][0]["key"], key);
    let detail: Value =
        http.get(format!("{base}/sessions/{MAIN}")).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
    assert_eq!(detail["children"][0]["key"], key);
    let detail: Value =
        http.get(format!("{base}/sessions/{key}")).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
    assert_eq!(detail["runs"][0]["runId"], run_id);
    assert_eq!(detail["runs"][0]["state"], "running");
    let missing =
        http.get(format!("{base}/sessions/agent:main:subagent:none")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(missing.status(), 404);

    let killed = http.post(format!("{base}/runs/{run_id}/kill")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(killed.status(), 200);
    let killed: Value = killed.json().await.unwrap();
    assert_eq!(killed["killed"], json!([run_id]));
    assert_eq!(waiting.await.unwrap()["payload"]["status"], "error", "the waiter was woken by the REST kill");
    let again = http.post(format!("{base}/runs/{run_id}/kill")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(again.status(), 409);
    let unknown = http.post(format!("{base}/runs/nope/kill")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    let unauthorized = http.get(format!("{base}/sessions")).send().await.unwrap();
    assert_eq!(unauthorized.status(), 401);
}

/// A client holding only `operator.write` registers runs and never starts them: after the configured time
/// they fail (`never-started`), their waiters are answered, and their spawn slots are free again.
#[tokio::test]
async fn runs_registered_but_never_started_expire_and_free_their_slots() {
    let server = Server::start().await;
    let mut admin = backend(&server).await;
    for i in 0..5 {
        ok(&mut admin, "sessions.patch", json!({"key": child(&format!("h{i}")), "spawnedBy": MAIN})).await;
    }
    let device = Device::new(101);
    let mut writer = connect(&server, &Connect::backend().device(&device).scopes(&["operator.write"])).await.hello().1;
    let mut hoarded = Vec::new();
    for i in 0..5 {
        let key = child(&format!("h{i}"));
        let run = ok(
            &mut writer,
            "subagents.register",
            json!({"childSessionKey": key, "requesterSessionKey": MAIN, "task": "t"}),
        )
        .await;
        hoarded.push(run["runId"].as_str().unwrap().to_owned());
    }
    ok(&mut admin, "sessions.patch", json!({"key": child("late"), "spawnedBy": MAIN})).await;
    let late = json!({"childSessionKey": child("late"), "requesterSessionKey": MAIN, "task": "t"});
    let error = refused(&mut writer, "subagents.register", late.clone()).await;
    assert_eq!(error["details"]["limit"], "children", "every slot is held");

    // Not yet: a run is given its full time.
    server.clock.advance_ms(pairgate::app::UNSTARTED_RUN_TTL.as_millis() as i64 - 1);
    server.app.expire_unstarted_runs().await;
    refused(&mut writer, "subagents.register", late.clone()).await;

    server.clock.advance_ms(2);
    server.app.expire_unstarted_runs().await;
    let waited = ok(&mut admin, "agent.wait", json!({"runId": hoarded[0], "timeoutMs": 0})).await;
    assert_eq!((waited["status"].as_str(), waited["endedReason"].as_str()), (Some("error"), Some("never-started")));
    ok(&mut writer, "subagents.register", late).await;
}
