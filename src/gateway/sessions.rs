//! Sub-agent session and run methods (PROTOCOL.md §7): `sessions.*`, `agent.wait` and the `subagents.*`
//! run lifecycle a gateway backend reports.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::Gateway;
use super::frames::ErrorShape;
use super::handshake::Session;
use crate::domain::RunState;
use crate::store::{Actor, NewRun, Run, RunEnd, SessionPatch, StoreError};

/// The longest `agent.wait` pairgate holds a request open.
const MAX_WAIT_MS: u64 = 24 * 60 * 60 * 1000;
const MAX_LIST: i64 = 200;

fn parse<T: serde::de::DeserializeOwned>(params: Value) -> Result<T, ErrorShape> {
    serde_json::from_value(params).map_err(|e| ErrorShape::invalid(format!("invalid params: {e}")))
}

fn store_error(error: StoreError) -> ErrorShape {
    match error {
        StoreError::LimitReached { limit, max, current } => ErrorShape {
            code: "FORBIDDEN",
            message: format!("spawn limit reached: {limit} (at most {max}, now {current})"),
            details: Some(json!({ "code": "SPAWN_LIMIT", "limit": limit, "max": max, "current": current })),
            retryable: Some(limit != "depth"),
            retry_after_ms: None,
        },
        StoreError::IllegalTransition { run_id, from, to } => {
            ErrorShape::invalid(format!("run {run_id} is {} and cannot become {}", from.as_str(), to.as_str()))
                .with_details(json!({ "code": "ILLEGAL_TRANSITION", "from": from, "to": to }))
        }
        StoreError::NotFound(what) => ErrorShape::invalid(format!("unknown {what}")),
        StoreError::Conflict(why) | StoreError::Invalid(why) => ErrorShape::invalid(why),
        StoreError::Constraint(why) => ErrorShape::invalid(format!("invalid session or run: {why}")),
        other => {
            tracing::error!(error = %other, "store failed");
            ErrorShape::unavailable("gateway store unavailable, try again")
        }
    }
}

fn actor(session: &Session) -> Actor {
    Actor::Socket { conn_id: session.conn_id.clone(), device_id: session.device_id.as_ref().map(|id| id.to_string()) }
}

fn limit(requested: Option<i64>) -> i64 {
    requested.unwrap_or(50).clamp(1, MAX_LIST)
}

#[derive(Deserialize)]
struct KeyParams {
    key: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListSessionsParams {
    spawned_by: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WaitParams {
    run_id: String,
    timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegisterParams {
    run_id: Option<String>,
    child_session_key: String,
    requester_session_key: String,
    controller_session_key: Option<String>,
    task: String,
    label: Option<String>,
    model: Option<String>,
    cleanup: Option<String>,
    spawn_mode: Option<String>,
    run_timeout_seconds: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RunIdParams {
    run_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EndParams {
    run_id: String,
    /// ok, error or timeout.
    status: String,
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListRunsParams {
    requester_session_key: Option<String>,
    child_session_key: Option<String>,
    state: Option<String>,
    limit: Option<i64>,
}

/// What `agent.wait` answers for a run.
fn wait_result(run: &Run, timed_out: bool) -> Value {
    let status = match run.state.outcome_status() {
        Some(status) => status,
        None if timed_out => "timeout",
        None => unreachable!("only an ended run or a timed-out wait is answered"),
    };
    let mut result = json!({ "runId": run.run_id, "status": status });
    if let Some(at) = run.started_at {
        result["startedAt"] = json!(at);
    }
    if let Some(at) = run.ended_at {
        result["endedAt"] = json!(at);
    }
    if let Some(error) = &run.outcome_error {
        result["error"] = json!(error);
    }
    if let Some(reason) = &run.ended_reason {
        result["endedReason"] = json!(reason);
    }
    result
}

impl Gateway {
    /// Wakes every `agent.wait` so it re-reads its run.
    pub(crate) fn runs_changed(&self) {
        self.runs_version.send_modify(|version| *version += 1);
    }

    /// Kills a run and its descendants' runs, and wakes whoever waits on them.
    pub async fn kill_run(&self, actor: &Actor, run_id: &str) -> Result<Vec<Run>, StoreError> {
        let killed = self.store.kill_run(run_id, actor, self.clock.now_ms()).await?;
        self.runs_changed();
        Ok(killed)
    }

    /// Ends the runs a crash left running (at start-up), and wakes whoever waits on them.
    pub async fn recover_runs(&self) -> Result<Vec<String>, StoreError> {
        let interrupted = self.store.recover_interrupted_runs(self.clock.now_ms()).await?;
        if !interrupted.is_empty() {
            tracing::warn!(runs = interrupted.len(), "runs left running by a crash are now interrupted");
            self.runs_changed();
        }
        Ok(interrupted)
    }

    pub(super) async fn call_sessions(
        &self,
        session: &Session,
        method: &str,
        params: Value,
    ) -> Result<Value, ErrorShape> {
        let now = self.clock.now_ms();
        match method {
            "sessions.patch" => {
                let patch: SessionPatch = parse(params)?;
                let entry = self.store.patch_session(&patch, &actor(session), now).await.map_err(store_error)?;
                Ok(json!({ "ok": true, "key": entry.key, "entry": entry }))
            }
            "sessions.get" => {
                let p: KeyParams = parse(params)?;
                let entry = self.store.session(&p.key).await.map_err(store_error)?;
                let entry = entry.ok_or_else(|| ErrorShape::invalid(format!("unknown session {}", p.key)))?;
                Ok(json!({ "key": entry.key, "entry": entry }))
            }
            "sessions.list" => {
                let p: ListSessionsParams = parse(params)?;
                let limit = limit(p.limit);
                let entries = self
                    .store
                    .sessions_page(p.spawned_by.as_deref(), p.cursor.as_deref(), limit)
                    .await
                    .map_err(store_error)?;
                let next = (entries.len() as i64 == limit).then(|| entries.last().map(|e| e.key.clone())).flatten();
                Ok(json!({ "sessions": entries, "nextCursor": next }))
            }
            "sessions.delete" => {
                let p: KeyParams = parse(params)?;
                let deleted = self.store.delete_session(&p.key, &actor(session), now).await.map_err(store_error)?;
                Ok(json!({ "ok": true, "key": p.key, "deleted": deleted, "archived": false }))
            }
            "agent.wait" => {
                let p: WaitParams = parse(params)?;
                self.wait_for_run(&p.run_id, p.timeout_ms.unwrap_or(30_000).min(MAX_WAIT_MS)).await
            }
            "subagents.register" => {
                let p: RegisterParams = parse(params)?;
                let new = NewRun {
                    run_id: p.run_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                    child_session_key: p.child_session_key,
                    requester_session_key: p.requester_session_key,
                    controller_session_key: p.controller_session_key,
                    task: p.task,
                    label: p.label,
                    model: p.model,
                    cleanup: p.cleanup.unwrap_or_else(|| "keep".into()),
                    spawn_mode: p.spawn_mode.unwrap_or_else(|| "run".into()),
                    run_timeout_seconds: p.run_timeout_seconds,
                };
                let run = self
                    .store
                    .register_run(&new, &self.config.spawn_limits, &actor(session), now)
                    .await
                    .map_err(store_error)?;
                Ok(json!({ "runId": run.run_id, "run": run }))
            }
            "subagents.start" => {
                let p: RunIdParams = parse(params)?;
                let run = self.store.start_run(&p.run_id, &actor(session), now).await.map_err(store_error)?;
                self.runs_changed();
                Ok(json!({ "runId": run.run_id, "run": run }))
            }
            "subagents.end" => {
                let p: EndParams = parse(params)?;
                let end = match p.status.as_str() {
                    "ok" => RunEnd::Ok,
                    "error" => RunEnd::Error,
                    "timeout" => RunEnd::Timeout,
                    other => {
                        return Err(ErrorShape::invalid(format!("status must be ok, error or timeout, not {other}")));
                    }
                };
                let run = self
                    .store
                    .end_run(&p.run_id, end, p.error.as_deref(), &actor(session), now)
                    .await
                    .map_err(store_error)?;
                self.runs_changed();
                Ok(json!({ "runId": run.run_id, "run": run }))
            }
            "subagents.kill" => {
                let p: RunIdParams = parse(params)?;
                let killed = self.kill_run(&actor(session), &p.run_id).await.map_err(store_error)?;
                let ids: Vec<&str> = killed.iter().map(|run| run.run_id.as_str()).collect();
                Ok(json!({ "runId": p.run_id, "killed": ids }))
            }
            "subagents.list" => {
                let p: ListRunsParams = parse(params)?;
                let state = p
                    .state
                    .as_deref()
                    .map(|s| RunState::parse(s).ok_or_else(|| ErrorShape::invalid(format!("unknown state {s}"))))
                    .transpose()?;
                let runs = self
                    .store
                    .runs_page(
                        p.requester_session_key.as_deref(),
                        p.child_session_key.as_deref(),
                        state,
                        limit(p.limit),
                    )
                    .await
                    .map_err(store_error)?;
                Ok(json!({ "runs": runs }))
            }
            _ => unreachable!("dispatched only for session methods"),
        }
    }

    /// Resolves when the run has ended or `timeout_ms` passed. Woken by run changes in this process;
    /// it subscribes before reading, so an end that happens in between still wakes it.
    async fn wait_for_run(&self, run_id: &str, timeout_ms: u64) -> Result<Value, ErrorShape> {
        let mut changes = self.runs_version.subscribe();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
        loop {
            let run = self.store.run(run_id).await.map_err(store_error)?;
            let run = run.ok_or_else(|| ErrorShape::invalid(format!("unknown runId {run_id}")))?;
            if run.state.is_terminal() {
                return Ok(wait_result(&run, false));
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return Ok(wait_result(&run, true)) },
                _ = tokio::time::sleep_until(deadline) => return Ok(wait_result(&run, true)),
            }
        }
    }
}
