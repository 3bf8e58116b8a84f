//! Imported state (OpenClaw's pairings, tokens, requests and runs), and what importing it wrote.

use serde::Serialize;

use pairgate_domain::clock::Millis;
use pairgate_domain::{ClientMeta, DeviceId, PublicKey, Role, ScopeSet, TokenInfo};

#[derive(Clone, Debug)]
pub struct ImportedDevice {
    pub device_id: DeviceId,
    pub public_key: PublicKey,
    pub meta: ClientMeta,
    pub remote_ip: Option<String>,
    pub created_at_ms: Millis,
    pub approved_at_ms: Millis,
    pub last_seen_at_ms: Option<Millis>,
    pub grants: Vec<(Role, ScopeSet)>,
    pub tokens: Vec<TokenInfo>,
}

#[derive(Clone, Debug)]
pub struct ImportedRequest {
    pub request_id: String,
    pub device_id: DeviceId,
    pub public_key: PublicKey,
    pub role: Role,
    pub roles: Vec<Role>,
    pub scopes: ScopeSet,
    pub is_repair: bool,
    pub meta: ClientMeta,
    pub remote_ip: Option<String>,
    pub ts_ms: Millis,
}

/// Rows actually written (a second import of the same state writes none).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportCounts {
    pub devices: u64,
    pub grants: u64,
    pub tokens: u64,
    pub requests: u64,
    pub sessions: u64,
    pub runs: u64,
}

impl ImportCounts {
    pub fn is_empty(&self) -> bool {
        *self == ImportCounts::default()
    }
}
