//! Runs one request of a connected socket: the method table's check, then one arm per method. Operator
//! decisions and run control go through the application layer; session reads and edits, which only this
//! front end offers, go to the store.

use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::Gateway;
use super::errors::truncate;
use super::frames::ErrorShape;
use super::handshake::Authenticated;
use super::methods::{Call, Method, SetupCodeParams};
use crate::app::Caller;
use crate::app::runs::WaitOutcome;
use crate::app::setup::MintRequest;
use crate::app::views::{DeviceRenamed, DeviceView, RequestView};
use crate::domain::{DeviceId, Role, RunState, ScopeSet, SetupAccess};
use crate::store::{Actor, NewRun, Run, RunEnd, StoreError};

/// The longest `agent.wait` pairgate holds a request open.
const MAX_WAIT_MS: u64 = 24 * 60 * 60 * 1000;
const MAX_LIST: i64 = 200;

fn parse_device_id(text: &str) -> Result<DeviceId, ErrorShape> {
    DeviceId::try_from(text.to_owned())
        .map_err(|_| ErrorShape::invalid(format!("unknown deviceId: {}", truncate(text, 64))))
}

fn parse_role(text: &str) -> Result<Role, ErrorShape> {
    Role::parse(text).ok_or_else(|| ErrorShape::invalid("invalid role"))
}

fn parse_scopes(names: Option<&[String]>) -> Result<Option<ScopeSet>, ErrorShape> {
    names.map(ScopeSet::parse).transpose().map_err(|e| ErrorShape::invalid(e.to_string()))
}

fn limit(requested: Option<i64>) -> i64 {
    requested.unwrap_or(50).clamp(1, MAX_LIST)
}

fn actor(who: &Authenticated) -> Actor {
    Actor::Socket { conn_id: who.conn_id.clone(), device_id: who.device_id.as_ref().map(|id| id.to_string()) }
}

fn caller(who: &Authenticated) -> Caller<'_> {
    Caller {
        actor: actor(who),
        remote_addr: Some(who.client_ip.clone()),
        device_id: who.device_id.as_ref(),
        conn_id: Some(&who.conn_id),
        scopes: Some(&who.scopes),
    }
}

/// Store reads and edits of this front end fail as application calls do.
fn store_error(error: StoreError) -> ErrorShape {
    ErrorShape::from(crate::app::AppError::from(error))
}

fn to_json<T: serde::Serialize>(value: T) -> Value {
    serde_json::to_value(value).expect("views serialize")
}

/// What `agent.wait` answers for a run: its outcome once it ended, `timeout` while it is still active.
fn wait_result(run: &Run) -> Value {
    let status = run.state.outcome_status().unwrap_or("timeout");
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

/// The longest `qrDataUrl` OpenClaw's schema takes; a longer one is left out.
const MAX_QR_DATA_URL: usize = 16_384;

impl Gateway {
    /// `device.pair.setupCode`, in OpenClaw's shapes (docs/protocol.md §12).
    async fn setup_code(&self, who: &Authenticated, p: SetupCodeParams) -> Result<Value, ErrorShape> {
        use base64::Engine as _;
        let join = p.join_url == Some(true);
        let access = match (p.bootstrap_profile.as_deref(), join) {
            (Some(profile), true) if profile != "node" => {
                return Err(ErrorShape::invalid("Join URLs require bootstrapProfile=node."));
            }
            (_, true) => SetupAccess::Node,
            (None, false) => SetupAccess::Full,
            (Some("limited"), false) => SetupAccess::Limited,
            (Some("node"), false) => SetupAccess::Node,
            (Some("voice-node"), false) => SetupAccess::VoiceNode,
            (Some(other), false) => {
                return Err(ErrorShape::invalid(format!(
                    "invalid device.pair.setupCode params: bootstrapProfile must be limited, node or voice-node, not {}",
                    truncate(other, 32)
                )));
            }
        };
        let request = MintRequest { access, url: p.public_url, join };
        let minted = self.app.mint_setup_code(&caller(who), &request).await?;
        let auth = match self.app.secret.kind() {
            crate::auth::secrets::SecretKind::Token => "token",
            crate::auth::secrets::SecretKind::Password => "password",
        };
        let mut result = json!({
            "setupId": minted.code.setup_id,
            "expiresAtMs": minted.code.expires_at_ms,
            "setupCode": minted.setup_code,
            "gatewayUrl": minted.code.gateway_url,
            "auth": auth,
            "urlSource": minted.url_source,
            "access": minted.code.access.openclaw_label(),
        });
        if let (true, Some(png)) = (p.include_qr != Some(false), &minted.qr_png) {
            let data_url = format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(png));
            if data_url.len() <= MAX_QR_DATA_URL {
                result["qrDataUrl"] = json!(data_url);
            }
        }
        if let Some(join_url) = &minted.join_url {
            result["joinUrl"] = json!(join_url);
        }
        if minted.access_downgraded {
            result["accessDowngraded"] = json!(true);
        }
        Ok(result)
    }

    /// Runs one request of a connected socket. `stop` is cancelled when the socket closes (or the server
    /// shuts down) while the call runs: a call that only waits (`agent.wait`) then ends at once; one that
    /// changes state runs to its end.
    pub async fn call(
        &self,
        who: &Authenticated,
        name: &str,
        params: Option<&RawValue>,
        stop: &CancellationToken,
    ) -> Result<Value, ErrorShape> {
        let Some(method) = Method::parse(name) else {
            return Err(ErrorShape::invalid(format!("unknown method: {}", truncate(name, 64))));
        };
        let needed = method.required_scope();
        if !who.scopes.allows(needed) {
            return Err(ErrorShape::invalid(format!("missing scope: {needed}")));
        }
        let app = &self.app;
        let now = app.clock.now_ms();
        match Call::parse(method, params)? {
            Call::Health => Ok(json!({ "ok": true, "ts": now })),
            Call::Status => Ok(json!({
                "ok": true,
                "ts": now,
                "version": env!("CARGO_PKG_VERSION"),
                "uptimeMs": (now - app.started_at_ms).max(0),
                "liveSockets": app.live.socket_count(),
            })),
            Call::PairList => {
                let pending = app.store.pending_requests(now).await.map_err(store_error)?;
                let paired = app.store.paired_devices().await.map_err(store_error)?;
                Ok(json!({
                    "pending": pending.iter().map(RequestView::from).collect::<Vec<_>>(),
                    "paired": paired.iter().map(|d| DeviceView::new(d, app.live.is_connected(&d.device_id))).collect::<Vec<_>>(),
                }))
            }
            Call::PairApprove(p) => Ok(to_json(app.approve_request(&caller(who), &p.request_id, None).await?)),
            Call::PairReject(p) => Ok(to_json(app.reject_request(&caller(who), &p.request_id).await?)),
            Call::PairRemove(p) => {
                let device_id = parse_device_id(&p.device_id)?;
                Ok(to_json(app.remove_device(&caller(who), &device_id).await?))
            }
            Call::PairRename(p) => {
                let device_id = parse_device_id(&p.device_id)?;
                let label = app.rename_device(&caller(who), &device_id, &p.label).await?;
                Ok(to_json(DeviceRenamed { device_id: device_id.to_string(), label }))
            }
            Call::PairSetupCode(p) => self.setup_code(who, p).await,
            Call::PairSetupStatus(p) => {
                let code = app.store.setup_code(&p.setup_id).await.map_err(store_error)?;
                let Some((code, device_id)) = code.and_then(|code| code.device_id.clone().map(|id| (code, id))) else {
                    // Unused, expired unused, revoked or unknown: OpenClaw cannot tell them apart either.
                    return Ok(json!({}));
                };
                let mut completion = json!({
                    "setupId": code.setup_id, "deviceId": device_id, "access": code.access.openclaw_label(),
                    "ts": code.redeemed_at_ms,
                });
                let device = match DeviceId::try_from(device_id) {
                    Ok(id) => app.store.device(&id).await.map_err(store_error)?,
                    Err(_) => None,
                };
                if let Some(name) = device.and_then(|d| d.label.or(d.meta.display_name)) {
                    completion["deviceName"] = json!(name);
                }
                Ok(json!({ "completion": completion }))
            }
            Call::TokenRotate(p) => {
                let (device_id, role) = (parse_device_id(&p.device_id)?, parse_role(&p.role)?);
                let narrower = parse_scopes(p.scopes.as_ref().map(|names| names.0.as_slice()))?;
                Ok(to_json(app.rotate_token(&caller(who), &device_id, role, narrower.as_ref()).await?))
            }
            Call::TokenRevoke(p) => {
                let (device_id, role) = (parse_device_id(&p.device_id)?, parse_role(&p.role)?);
                Ok(to_json(app.revoke_token(&caller(who), &device_id, role).await?))
            }
            Call::SessionsPatch(patch) => {
                let entry = app.store.patch_session(&patch, &actor(who), now).await.map_err(store_error)?;
                Ok(json!({ "ok": true, "key": entry.key, "entry": entry }))
            }
            Call::SessionsGet(p) => {
                let entry = app.store.session(&p.key).await.map_err(store_error)?;
                let entry = entry.ok_or_else(|| ErrorShape::invalid(format!("unknown session {}", p.key)))?;
                Ok(json!({ "key": entry.key, "entry": entry }))
            }
            Call::SessionsList(p) => {
                let limit = limit(p.limit);
                let entries = app
                    .store
                    .sessions_page(p.spawned_by.as_deref(), p.cursor.as_deref(), limit)
                    .await
                    .map_err(store_error)?;
                let next = (entries.len() as i64 == limit).then(|| entries.last().map(|e| e.key.clone())).flatten();
                Ok(json!({ "sessions": entries, "nextCursor": next }))
            }
            Call::SessionsDelete(p) => {
                let deleted = app.store.delete_session(&p.key, &actor(who), now).await.map_err(store_error)?;
                Ok(json!({ "ok": true, "key": p.key, "deleted": deleted, "archived": false }))
            }
            Call::AgentWait(p) => {
                let timeout = Duration::from_millis(p.timeout_ms.unwrap_or(30_000).min(MAX_WAIT_MS));
                let waited = tokio::select! {
                    waited = app.wait_for_run(&p.run_id, timeout) => waited?,
                    _ = stop.cancelled() => return Err(ErrorShape::unavailable("request cancelled: the socket is closing")),
                };
                match waited {
                    None => Err(ErrorShape::invalid(format!("unknown runId {}", p.run_id))),
                    Some(WaitOutcome::Ended(run) | WaitOutcome::TimedOut(run)) => Ok(wait_result(&run)),
                }
            }
            Call::SubagentsRegister(p) => {
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
                let run = app.register_run(&actor(who), &new).await?;
                Ok(json!({ "runId": run.run_id, "run": run }))
            }
            Call::SubagentsStart(p) => {
                let run = app.start_run(&actor(who), &p.run_id).await?;
                Ok(json!({ "runId": run.run_id, "run": run }))
            }
            Call::SubagentsEnd(p) => {
                let end = match p.status.as_str() {
                    "ok" => RunEnd::Ok,
                    "error" => RunEnd::Error,
                    "timeout" => RunEnd::Timeout,
                    other => {
                        return Err(ErrorShape::invalid(format!("status must be ok, error or timeout, not {other}")));
                    }
                };
                let run = app.end_run(&actor(who), &p.run_id, end, p.error.as_deref()).await?;
                Ok(json!({ "runId": run.run_id, "run": run }))
            }
            Call::SubagentsKill(p) => Ok(to_json(app.kill_run(&actor(who), &p.run_id).await?)),
            Call::SubagentsList(p) => {
                let state = p
                    .state
                    .as_deref()
                    .map(|s| RunState::parse(s).ok_or_else(|| ErrorShape::invalid(format!("unknown state {s}"))))
                    .transpose()?;
                let runs = app
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
        }
    }
}
