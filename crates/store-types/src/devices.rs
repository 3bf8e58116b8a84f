//! Devices, their grants and their tokens: what a change asks and what it did.

use pairgate_domain::clock::Millis;
use pairgate_domain::{ClientMeta, DeviceId, PublicKey, Role, ScopeSet};

/// An approval to record: the device as it presented itself, and the role and scopes approved.
#[derive(Clone, Debug)]
pub struct NewGrant {
    pub device_id: DeviceId,
    pub public_key: PublicKey,
    pub meta: ClientMeta,
    pub remote_ip: Option<String>,
    pub role: Role,
    pub scopes: ScopeSet,
}

/// A device was seen at `at_ms` (and used its token for `role`, when `token_used`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenNote {
    pub device_id: DeviceId,
    pub role: Role,
    pub token_used: bool,
    pub at_ms: Millis,
}

/// What a token rotation or revocation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenChange {
    pub device_id: DeviceId,
    pub role: Role,
    /// The grant's scopes after the change.
    pub scopes: ScopeSet,
    pub at_ms: Millis,
}

/// Which devices a listing shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceFilter {
    /// Holding at least one grant and not removed.
    Paired,
    Removed,
    All,
}

impl DeviceFilter {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "paired" => Some(DeviceFilter::Paired),
            "removed" => Some(DeviceFilter::Removed),
            "all" => Some(DeviceFilter::All),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DeviceFilter::Paired => "paired",
            DeviceFilter::Removed => "removed",
            DeviceFilter::All => "all",
        }
    }
}
