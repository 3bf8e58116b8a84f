//! Operator decisions, shared by the WebSocket methods and the REST API: each is one store transaction,
//! then its announcement (events) and its bite (closing a revoked device's sockets) — in that order,
//! before the caller is answered.

use serde_json::json;

use super::Gateway;
use super::frames::close;
use crate::domain::{DeviceId, Role, Scope, ScopeSet};
use crate::store::{Actor, DeviceRecord, PairingRequest, StoreError, TokenChange};

/// Who asks, with what authority.
#[derive(Clone, Debug)]
pub struct Caller<'a> {
    pub actor: Actor,
    pub remote_addr: Option<String>,
    /// The caller's own socket, which is closed after its reply rather than before.
    pub conn_id: Option<&'a str>,
    /// The scopes the caller holds; `None` is the full authority of the gateway secret (REST).
    pub scopes: Option<&'a ScopeSet>,
}

/// Why an operation was refused; each front end words it its own way.
#[derive(Debug)]
pub enum OpError {
    UnknownRequest(String),
    /// Already approved, rejected or superseded.
    Decided(String),
    Expired(String),
    /// The caller does not hold what it tries to hand out.
    Denied(String),
    UnknownDevice(String),
    UnknownToken(String),
    Invalid(String),
    Store(StoreError),
}

fn request_error(request_id: &str, error: StoreError) -> OpError {
    match error {
        StoreError::NotFound(_) => OpError::UnknownRequest(request_id.to_owned()),
        StoreError::Conflict(why) if why.contains("did not ask") => OpError::Invalid(why),
        StoreError::Conflict(why) => OpError::Decided(why),
        StoreError::Gone(why) => OpError::Expired(why),
        other => OpError::Store(other),
    }
}

fn device_error(device_id: &DeviceId, role: Option<Role>, error: StoreError) -> OpError {
    match (error, role) {
        (StoreError::NotFound(_), None) => OpError::UnknownDevice(device_id.to_string()),
        (StoreError::NotFound(what), Some(_)) => OpError::UnknownToken(what),
        (StoreError::Conflict(why), _) => OpError::Invalid(why),
        (other, _) => OpError::Store(other),
    }
}

/// A caller may only hand out what it holds itself; a node role takes `operator.admin`.
fn check_may_grant(caller: &Caller<'_>, what: &str, roles: &[Role], scopes: &ScopeSet) -> Result<(), OpError> {
    let Some(held) = caller.scopes else { return Ok(()) };
    if roles.contains(&Role::Node) && !held.allows(Scope::Admin) {
        return Err(OpError::Denied(format!("{what} denied: role node requires operator.admin")));
    }
    match held.first_missing(scopes) {
        Some(scope) => Err(OpError::Denied(format!("{what} denied: missing scope {scope}"))),
        None => Ok(()),
    }
}

impl Gateway {
    fn announce_resolution(&self, request_id: &str, device_id: &str, decision: &str) {
        let payload =
            json!({ "requestId": request_id, "deviceId": device_id, "decision": decision, "ts": self.clock.now_ms() });
        self.live.broadcast("device.pair.resolved", payload);
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
    }

    pub async fn approve_request(
        &self,
        caller: &Caller<'_>,
        request_id: &str,
        narrower: Option<&ScopeSet>,
    ) -> Result<(PairingRequest, Option<DeviceRecord>), OpError> {
        let request = self.store.pairing_request(request_id).await.map_err(OpError::Store)?;
        let request = request.ok_or_else(|| OpError::UnknownRequest(request_id.to_owned()))?;
        check_may_grant(caller, "device pairing approval", &request.roles, narrower.unwrap_or(&request.scopes))?;
        let now = self.clock.now_ms();
        let approved = self
            .store
            .approve_request(request_id, narrower, &caller.actor, now)
            .await
            .map_err(|e| request_error(request_id, e))?;
        let device = self.store.device(&approved.device_id).await.map_err(OpError::Store)?;
        self.announce_resolution(request_id, approved.device_id.as_str(), "approved");
        self.metrics.decision("approve");
        Ok((approved, device))
    }

    pub async fn reject_request(&self, caller: &Caller<'_>, request_id: &str) -> Result<PairingRequest, OpError> {
        let now = self.clock.now_ms();
        let rejected = self
            .store
            .reject_request(request_id, &caller.actor, now)
            .await
            .map_err(|e| request_error(request_id, e))?;
        self.announce_resolution(request_id, rejected.device_id.as_str(), "rejected");
        self.metrics.decision("reject");
        Ok(rejected)
    }

    pub async fn remove_device(&self, caller: &Caller<'_>, device_id: &DeviceId) -> Result<(), OpError> {
        let now = self.clock.now_ms();
        self.store
            .remove_device(device_id, &caller.actor, caller.remote_addr.as_deref(), now)
            .await
            .map_err(|e| device_error(device_id, None, e))?;
        self.metrics.decision("remove");
        self.close_device_sockets(device_id, caller).await;
        Ok(())
    }

    pub async fn rotate_token(
        &self,
        caller: &Caller<'_>,
        device_id: &DeviceId,
        role: Role,
        narrower: Option<&ScopeSet>,
    ) -> Result<TokenChange, OpError> {
        let granted = self.granted_scopes(device_id, role).await?;
        check_may_grant(caller, "device token rotation", &[role], narrower.unwrap_or(&granted))?;
        let now = self.clock.now_ms();
        let change = self
            .store
            .rotate_token(device_id, role, narrower, &caller.actor, caller.remote_addr.as_deref(), now)
            .await
            .map_err(|e| device_error(device_id, Some(role), e))?;
        self.metrics.decision("rotate");
        self.close_device_sockets(device_id, caller).await;
        Ok(change)
    }

    pub async fn revoke_token(
        &self,
        caller: &Caller<'_>,
        device_id: &DeviceId,
        role: Role,
    ) -> Result<TokenChange, OpError> {
        let granted = self.granted_scopes(device_id, role).await?;
        check_may_grant(caller, "device token revocation", &[role], &granted)?;
        let now = self.clock.now_ms();
        let change = self
            .store
            .revoke_token(device_id, role, &caller.actor, caller.remote_addr.as_deref(), now)
            .await
            .map_err(|e| device_error(device_id, Some(role), e))?;
        self.metrics.decision("revoke");
        self.close_device_sockets(device_id, caller).await;
        Ok(change)
    }

    async fn granted_scopes(&self, device_id: &DeviceId, role: Role) -> Result<ScopeSet, OpError> {
        let record = self.store.device(device_id).await.map_err(OpError::Store)?;
        Ok(record.as_ref().and_then(|r| r.grant(role)).map(|g| g.scopes.clone()).unwrap_or_default())
    }

    /// Revocation bites before the reply: the device's sockets are closed with 4001 (the caller's own
    /// socket, when a device revokes itself, closes right after its reply).
    async fn close_device_sockets(&self, device_id: &DeviceId, caller: &Caller<'_>) {
        let closed = self.live.close_device(device_id, close::DEVICE_REMOVED, "device removed", caller.conn_id).await;
        if closed > 0 {
            tracing::info!(device = %device_id, sockets = closed, "closed the device's live sockets");
        }
    }
}
