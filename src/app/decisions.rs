//! Operator decisions on pairing requests, devices and tokens.

use serde_json::json;

use super::App;
use super::error::AppResult;
use super::live::Disconnect;
use super::views::{Approved, DeviceRemoved, Rejected, TokenRevoked, TokenRotated};
use crate::domain::{DeviceId, DeviceRecord, Refusal, Role, Scope, ScopeSet};
use crate::store::{Actor, AuditRow, PairingRequest};

/// Who asks, with what authority.
#[derive(Clone, Debug)]
pub struct Caller<'a> {
    pub actor: Actor,
    pub remote_addr: Option<String>,
    /// The caller's own device, when it connected with one: managing its own tokens needs less.
    pub device_id: Option<&'a DeviceId>,
    /// The caller's own socket, which is closed after its reply rather than before.
    pub conn_id: Option<&'a str>,
    /// The scopes the caller holds; `None` is the full authority of the gateway secret (REST, the
    /// offline CLI).
    pub scopes: Option<&'a ScopeSet>,
}

impl Caller<'_> {
    /// The operator at this machine's command line.
    pub fn local_cli() -> Caller<'static> {
        Caller { actor: Actor::local_cli(), remote_addr: None, device_id: None, conn_id: None, scopes: None }
    }
}

/// A caller may only hand out what it holds itself; a node role takes `operator.admin`.
pub(super) fn check_may_grant(
    caller: &Caller<'_>,
    action: &'static str,
    roles: &[Role],
    scopes: &ScopeSet,
) -> AppResult<()> {
    let Some(held) = caller.scopes else { return Ok(()) };
    if roles.contains(&Role::Node) && !held.allows(Scope::Admin) {
        return Err(Refusal::NodeNeedsAdmin { action }.into());
    }
    match held.first_missing(scopes) {
        Some(scope) => Err(Refusal::MissingScope { scope }.into()),
        None => Ok(()),
    }
}

fn granted_scopes(device: Option<&DeviceRecord>, role: Role) -> ScopeSet {
    device.and_then(|d| d.grant(role)).map(|g| g.scopes.clone()).unwrap_or_default()
}

/// A device managing another device (removing it, rotating or revoking its tokens) needs the same ceiling
/// as approving it: every scope that device holds in any role, and `operator.admin` for a node or an admin
/// device. A caller without a device identity is the holder of the gateway secret on this machine (remote
/// ones get no scopes), who may ask for any scope: the ceiling would only break `openclaw devices remove`,
/// which asks for `operator.pairing` alone.
fn check_may_manage(caller: &Caller<'_>, device: Option<&DeviceRecord>) -> AppResult<()> {
    let (Some(held), Some(_), Some(device)) = (caller.scopes, caller.device_id, device) else { return Ok(()) };
    let holds: ScopeSet = device.grants.iter().flat_map(|grant| grant.scopes.iter()).collect();
    let node = device.grants.iter().any(|grant| grant.role == Role::Node);
    if (node || holds.contains(Scope::Admin)) && !held.allows(Scope::Admin) {
        return Err(Refusal::MissingScope { scope: Scope::Admin }.into());
    }
    match held.first_missing(&holds) {
        Some(scope) => Err(Refusal::MissingScope { scope }.into()),
        None => Ok(()),
    }
}

impl App {
    pub(super) fn announce_resolution(&self, request_id: &str, device_id: &str, decision: &str) {
        let payload =
            json!({ "requestId": request_id, "deviceId": device_id, "decision": decision, "ts": self.clock.now_ms() });
        self.live.broadcast("device.pair.resolved", payload);
    }

    /// Announces a new or superseding pairing request to the sockets that may decide it.
    pub fn announce_request(&self, request: &PairingRequest) {
        self.live.broadcast("device.pair.requested", super::views::request_json(request));
    }

    /// Expires pending requests whose time is up and announces each; runs periodically.
    pub async fn sweep_expired(&self) {
        match self.store.expire_pending(self.clock.now_ms()).await {
            Ok(expired) => {
                for (request_id, device_id) in expired {
                    self.announce_resolution(&request_id, &device_id, "expired");
                }
            }
            Err(error) => tracing::warn!(%error, "could not expire pairing requests"),
        }
        self.purge_setup_codes().await;
    }

    pub async fn approve_request(
        &self,
        caller: &Caller<'_>,
        request_id: &str,
        narrower: Option<&ScopeSet>,
    ) -> AppResult<Approved> {
        let request = self.store.pairing_request(request_id).await?;
        let request = request.ok_or_else(|| Refusal::UnknownRequest { request_id: request_id.to_owned() })?;
        check_may_grant(caller, "device pairing approval", &request.roles, narrower.unwrap_or(&request.scopes))?;
        let now = self.clock.now_ms();
        let remote = caller.remote_addr.as_deref();
        let approved = self.store.approve_request_from(request_id, narrower, &caller.actor, remote, now).await?;
        tracing::info!(actor = %caller.actor.label(), remote = %remote.unwrap_or("-"), request = %request_id,
            device = %approved.device_id, scopes = %approved.scopes.names().join(","), "pairing request approved");
        let device = self.store.device(&approved.device_id).await?;
        self.announce_resolution(request_id, approved.device_id.as_str(), "approved");
        self.metrics.decision("approve");
        let connected = self.live.is_connected(&approved.device_id);
        Ok(Approved::new(&approved, device.as_ref(), connected))
    }

    pub async fn reject_request(&self, caller: &Caller<'_>, request_id: &str) -> AppResult<Rejected> {
        let now = self.clock.now_ms();
        let remote = caller.remote_addr.as_deref();
        let rejected = self.store.reject_request_from(request_id, &caller.actor, remote, now).await?;
        tracing::info!(actor = %caller.actor.label(), remote = %remote.unwrap_or("-"), request = %request_id,
            device = %rejected.device_id, "pairing request rejected");
        self.announce_resolution(request_id, rejected.device_id.as_str(), "rejected");
        self.metrics.decision("reject");
        Ok(Rejected { request_id: rejected.request_id, device_id: rejected.device_id.to_string() })
    }

    pub async fn remove_device(&self, caller: &Caller<'_>, device_id: &DeviceId) -> AppResult<DeviceRemoved> {
        if caller.device_id != Some(device_id) {
            check_may_manage(caller, self.store.device(device_id).await?.as_ref())?;
        }
        let now = self.clock.now_ms();
        self.store.remove_device(device_id, &caller.actor, caller.remote_addr.as_deref(), now).await?;
        tracing::info!(actor = %caller.actor.label(), remote = %caller.remote_addr.as_deref().unwrap_or("-"),
            device = %device_id, "device removed");
        self.metrics.decision("remove");
        self.close_device_sockets(device_id, caller).await;
        Ok(DeviceRemoved { device_id: device_id.to_string() })
    }

    pub async fn rotate_token(
        &self,
        caller: &Caller<'_>,
        device_id: &DeviceId,
        role: Role,
        narrower: Option<&ScopeSet>,
    ) -> AppResult<TokenRotated> {
        let device = self.store.device(device_id).await?;
        if caller.device_id != Some(device_id) {
            check_may_manage(caller, device.as_ref())?;
        }
        let granted = granted_scopes(device.as_ref(), role);
        check_may_grant(caller, "device token rotation", &[role], narrower.unwrap_or(&granted))?;
        let now = self.clock.now_ms();
        let change = self
            .store
            .rotate_token(device_id, role, narrower, &caller.actor, caller.remote_addr.as_deref(), now)
            .await?;
        self.metrics.decision("rotate");
        tracing::info!(actor = %caller.actor.label(), remote = %caller.remote_addr.as_deref().unwrap_or("-"),
            device = %device_id, role = %role, scopes = %change.scopes.names().join(","), "device token rotated");
        self.close_device_sockets(device_id, caller).await;
        Ok(TokenRotated::new(device_id, role, &change))
    }

    pub async fn revoke_token(&self, caller: &Caller<'_>, device_id: &DeviceId, role: Role) -> AppResult<TokenRevoked> {
        let device = self.store.device(device_id).await?;
        if caller.device_id != Some(device_id) {
            check_may_manage(caller, device.as_ref())?;
        }
        check_may_grant(caller, "device token revocation", &[role], &granted_scopes(device.as_ref(), role))?;
        let now = self.clock.now_ms();
        let change =
            self.store.revoke_token(device_id, role, &caller.actor, caller.remote_addr.as_deref(), now).await?;
        self.metrics.decision("revoke");
        tracing::info!(actor = %caller.actor.label(), remote = %caller.remote_addr.as_deref().unwrap_or("-"),
            device = %device_id, role = %role, "device token revoked");
        self.close_device_sockets(device_id, caller).await;
        Ok(TokenRevoked { device_id: device_id.to_string(), role: role.as_str(), revoked_at_ms: change.at_ms })
    }

    /// Acts on what was decided elsewhere: by the offline CLI (another process) and, on PostgreSQL, by the
    /// other nodes of the fleet. The sockets of devices whose access was withdrawn are closed, pairing
    /// requests and their resolutions are announced to this process's `operator.pairing` sockets, and
    /// callers waiting on runs (`agent.wait`) are woken. Woken by every commit in the fleet on PostgreSQL
    /// (and at least every half second); on SQLite, which sends no signal, every half second. Runs for
    /// the server's life.
    pub async fn watch_changes_elsewhere(self: std::sync::Arc<Self>) {
        const WITHIN: std::time::Duration = std::time::Duration::from_millis(500);
        const BATCH: i64 = 500;
        // Subscribed before the mark is read: a commit in between still wakes the first wait.
        let mut feed = self.store.change_feed();
        let mut after = match self.store.last_audit_id().await {
            Ok(id) => id,
            Err(error) => {
                tracing::error!(%error, "cannot watch for decisions made elsewhere; their sockets stay open");
                return;
            }
        };
        loop {
            loop {
                let (changes, last) = match self.store.changes_elsewhere(after, BATCH).await {
                    Ok(read) => read,
                    Err(error) => {
                        tracing::warn!(%error, "could not read decisions made elsewhere");
                        break;
                    }
                };
                if last == after {
                    break;
                }
                for change in &changes {
                    self.act_on_change_elsewhere(change).await;
                }
                after = last;
            }
            tokio::select! {
                _ = feed.changed(WITHIN) => {}
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    /// What one decision made elsewhere means here.
    async fn act_on_change_elsewhere(&self, change: &AuditRow) {
        let request_id = change.details["requestId"].as_str();
        match (change.action.as_str(), change.subject.as_deref()) {
            ("device.remove" | "token.rotate" | "token.revoke", Some(device)) => {
                let Ok(device_id) = DeviceId::try_from(device.to_owned()) else { return };
                // The sockets whose read of the device came before the decision committed, not those
                // that connected with fresh credentials since.
                let closed =
                    self.live.close_device_read_before(&device_id, Disconnect::DeviceRevoked, change.event_id).await;
                if closed > 0 {
                    tracing::info!(device = %device_id, sockets = closed, "closed the sockets of a device revoked elsewhere");
                }
            }
            ("pairing.request", _) => {
                let Some(request_id) = request_id else { return };
                match self.store.pairing_request(request_id).await {
                    Ok(Some(request)) if request.status == crate::domain::RequestStatus::Pending => {
                        self.announce_request(&request)
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "could not read a pairing request made elsewhere"),
                }
            }
            ("pairing.approve", Some(device)) => self.announce_resolution(request_id.unwrap_or(""), device, "approved"),
            ("pairing.reject", Some(device)) => self.announce_resolution(request_id.unwrap_or(""), device, "rejected"),
            ("pairing.expire", _) => {
                let expired = change.details["requestIds"].as_array().cloned().unwrap_or_default();
                for request_id in expired.iter().filter_map(|id| id.as_str()) {
                    if let Ok(Some(request)) = self.store.pairing_request(request_id).await {
                        self.announce_resolution(request_id, request.device_id.as_str(), "expired");
                    }
                }
            }
            ("setup.redeem", Some(device)) => {
                let details = &change.details;
                if let (Some(setup_id), Some(access)) = (
                    details["setupId"].as_str(),
                    details["access"].as_str().and_then(crate::domain::SetupAccess::parse),
                ) {
                    self.announce_setup_completed(
                        setup_id,
                        device,
                        details["deviceName"].as_str(),
                        access,
                        change.at_ms,
                    );
                }
                if let Some(request_id) = request_id {
                    self.announce_resolution(request_id, device, "approved");
                }
            }
            (action, _) if action.starts_with("run.") => self.runs_changed(),
            _ => {}
        }
    }

    /// Revocation bites before the reply: the device's sockets are closed (the caller's own socket, when a
    /// device revokes itself, closes right after its reply).
    async fn close_device_sockets(&self, device_id: &DeviceId, caller: &Caller<'_>) {
        let closed = self.live.close_device(device_id, Disconnect::DeviceRevoked, caller.conn_id).await;
        if closed > 0 {
            tracing::info!(device = %device_id, sockets = closed, "closed the device's live sockets");
        }
    }
}
