//! A device as pairgate knows it: what it says about itself, its approved roles and its tokens.

use crate::clock::Millis;
use crate::{DeviceId, PublicKey, Role, ScopeSet, TokenDigest};

/// What a client says about itself; kept with the device and with pairing requests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientMeta {
    pub client_id: Option<String>,
    pub client_mode: Option<String>,
    pub platform: Option<String>,
    pub device_family: Option<String>,
    pub display_name: Option<String>,
}

/// An approved role and its scopes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub role: Role,
    pub scopes: ScopeSet,
    pub approved_at_ms: Millis,
}

/// The newest token of a device for one role (live unless `revoked_at_ms` is set).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenInfo {
    pub role: Role,
    pub digest: TokenDigest,
    pub scopes: ScopeSet,
    pub issued_at_ms: Millis,
    pub rotated_at_ms: Option<Millis>,
    pub revoked_at_ms: Option<Millis>,
    pub last_used_at_ms: Option<Millis>,
}

/// A device as stored, with its grants and its newest token per role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRecord {
    pub device_id: DeviceId,
    pub public_key: PublicKey,
    pub meta: ClientMeta,
    pub remote_ip: Option<String>,
    pub approved_via: Option<String>,
    pub created_at_ms: Millis,
    pub approved_at_ms: Option<Millis>,
    pub last_seen_at_ms: Option<Millis>,
    pub removed_at_ms: Option<Millis>,
    /// The operator's name for the device (`device.pair.rename`); kept apart from the device's row, so it
    /// survives removal and re-pairing.
    pub label: Option<String>,
    pub grants: Vec<Grant>,
    pub tokens: Vec<TokenInfo>,
}

impl DeviceRecord {
    pub fn grant(&self, role: Role) -> Option<&Grant> {
        self.grants.iter().find(|grant| grant.role == role)
    }

    pub fn live_token(&self, role: Role) -> Option<&TokenInfo> {
        self.tokens.iter().find(|token| token.role == role && token.revoked_at_ms.is_none())
    }

    /// Approved roles, in a stable order.
    pub fn roles(&self) -> Vec<Role> {
        let mut roles: Vec<Role> = self.grants.iter().map(|grant| grant.role).collect();
        roles.sort();
        roles
    }
}
