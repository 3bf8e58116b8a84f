//! Pairing requests: created by the connect path, decided by operators.

use pairgate_domain::clock::Millis;
use pairgate_domain::{ClientMeta, DeviceId, PairingReason, PublicKey, RequestStatus, Role, ScopeSet};

/// A pairing request as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairingRequest {
    pub request_id: String,
    pub device_id: DeviceId,
    pub public_key: PublicKey,
    /// The role of the latest ask.
    pub role: Role,
    /// Every role asked for while this request (and those it superseded) was pending.
    pub roles: Vec<Role>,
    pub scopes: ScopeSet,
    pub reason: PairingReason,
    pub meta: ClientMeta,
    pub remote_ip: Option<String>,
    pub is_local: bool,
    pub is_repair: bool,
    pub created_at_ms: Millis,
    pub refreshed_at_ms: Millis,
    pub expires_at_ms: Millis,
    pub status: RequestStatus,
    pub resolved_by: Option<String>,
    pub resolved_at_ms: Option<Millis>,
}

/// What a refused connect asks an operator for.
#[derive(Clone, Debug)]
pub struct NewPairingRequest {
    pub device_id: DeviceId,
    pub public_key: PublicKey,
    pub role: Role,
    pub scopes: ScopeSet,
    pub reason: PairingReason,
    pub meta: ClientMeta,
    pub remote_ip: Option<String>,
    pub is_local: bool,
    /// The device was approved before (this is an upgrade, not a first pairing).
    pub is_repair: bool,
}

/// What recording a request did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestOutcome {
    /// A new request; no request of the device was pending.
    Created,
    /// The same ask was already pending: same id, its expiry pushed back.
    Refreshed,
    /// A different ask replaced the pending request `previous`; roles and scopes are unioned.
    Superseded { previous: String },
}
