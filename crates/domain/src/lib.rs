//! Plain types and rules of the pairing domain. No I/O here.

pub mod clock;
mod device;
mod refusal;
mod run;
mod scope;
pub mod setup;
mod token;

pub use device::{ClientMeta, DeviceRecord, Grant, TokenInfo};
pub use refusal::{Refusal, SpawnLimit};
pub use run::{RunState, agent_id_of, is_main_key, is_subagent_key};
pub use scope::{Scope, ScopeSet, UnknownScope};
pub use setup::{SetupAccess, SetupFault, SetupState};
pub use token::{TokenDigest, TokenSecret};

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(DIGITS[usize::from(byte >> 4)] as char);
        text.push(DIGITS[usize::from(byte & 0xf)] as char);
    }
    text
}

/// Lowercase hex SHA-256 of a device's raw Ed25519 public key.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceId(String);

impl DeviceId {
    pub fn from_public_key(key: &PublicKey) -> Self {
        DeviceId(hex(&Sha256::digest(key.as_bytes())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DeviceId {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        let valid = value.len() == 64 && value.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if valid { Ok(DeviceId(value)) } else { Err("device id must be 64 lowercase hex characters".to_owned()) }
    }
}

impl From<DeviceId> for String {
    fn from(id: DeviceId) -> String {
        id.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({})", self.0)
    }
}

/// A raw 32-byte Ed25519 public key, written as base64url without padding on the wire and in the store.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        PublicKey(bytes)
    }

    /// Parses base64url (padding tolerated) of exactly 32 bytes.
    pub fn from_base64url(text: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()?;
        Some(PublicKey(bytes.try_into().ok()?))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64url())
    }
}

/// The role a connection asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Operator,
    Node,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Node => "node",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "operator" => Some(Role::Operator),
            "node" => Some(Role::Node),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a connect needs an operator's decision (docs/protocol.md §4 step 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PairingReason {
    NotPaired,
    MetadataUpgrade,
    RoleUpgrade,
    ScopeUpgrade,
}

impl PairingReason {
    pub fn as_str(self) -> &'static str {
        match self {
            PairingReason::NotPaired => "not-paired",
            PairingReason::MetadataUpgrade => "metadata-upgrade",
            PairingReason::RoleUpgrade => "role-upgrade",
            PairingReason::ScopeUpgrade => "scope-upgrade",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::NotPaired, Self::MetadataUpgrade, Self::RoleUpgrade, Self::ScopeUpgrade]
            .into_iter()
            .find(|reason| reason.as_str() == text)
    }

    /// The human part of "pairing required: <why>".
    pub fn why(self) -> &'static str {
        match self {
            PairingReason::NotPaired => "device is not approved yet",
            PairingReason::MetadataUpgrade => "device metadata changed",
            PairingReason::RoleUpgrade => "device is asking for a role that is not approved",
            PairingReason::ScopeUpgrade => "device is asking for more scopes than currently approved",
        }
    }
}

/// Lifecycle status of a pairing request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestStatus {
    Pending,
    Approved,
    Rejected,
    Expired,
    Superseded,
}

impl RequestStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Pending => "pending",
            RequestStatus::Approved => "approved",
            RequestStatus::Rejected => "rejected",
            RequestStatus::Expired => "expired",
            RequestStatus::Superseded => "superseded",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Pending, Self::Approved, Self::Rejected, Self::Expired, Self::Superseded]
            .into_iter()
            .find(|status| status.as_str() == text)
    }
}

/// How long a pending pairing request stays approvable.
pub const PAIRING_REQUEST_TTL_MS: i64 = 5 * 60 * 1000;
/// The longest prefix of `text` of at most `max_bytes` bytes that ends on a character boundary: how a
/// client's text is cut short wherever it is echoed or kept.
pub fn prefix_within(text: &str, max_bytes: usize) -> &str {
    let mut end = text.len().min(max_bytes);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The network a client address stands for when counting what one client does: an IPv4 address itself, an
/// IPv6 address its /64 (one host commonly holds a whole prefix, and could pick a fresh address per try).
pub fn client_network(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip.to_canonical() {
        std::net::IpAddr::V6(v6) => {
            std::net::IpAddr::V6(std::net::Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX)))
        }
        v4 => v4,
    }
}

/// Pending pairing requests one client (an address, or an IPv6 /64: `client_network`) may have at once.
pub const MAX_PENDING_PER_ADDRESS: i64 = 5;
/// Pending pairing requests in all.
pub const MAX_PENDING_REQUESTS: i64 = 10_000;
/// How long an expired or superseded request is kept (the audit trail keeps its story) before it is purged.
pub const DEAD_REQUEST_RETENTION_MS: i64 = 24 * 60 * 60 * 1000;

/// Platform and device family are compared (and signed) trimmed and ASCII-lowercased.
pub fn normalize_metadata(value: Option<&str>) -> String {
    value.map(|v| v.trim().to_ascii_lowercase()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_id_is_hex_sha256_of_raw_key() {
        let key = PublicKey::from_bytes([7; 32]);
        let id = DeviceId::from_public_key(&key);
        assert_eq!(id.as_str().len(), 64);
        let expected: String = Sha256::digest([7u8; 32]).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(id.as_str(), expected);
    }

    #[test]
    fn device_id_rejects_uppercase_and_wrong_length() {
        assert!(DeviceId::try_from("A".repeat(64)).is_err());
        assert!(DeviceId::try_from("a".repeat(63)).is_err());
        assert!(DeviceId::try_from("a".repeat(64)).is_ok());
    }

    #[test]
    fn public_key_round_trips_and_rejects_wrong_length() {
        let key = PublicKey::from_bytes([1; 32]);
        let text = key.to_base64url();
        assert_eq!(text.len(), 43);
        assert_eq!(PublicKey::from_base64url(&text), Some(key));
        assert_eq!(PublicKey::from_base64url(&format!("{text}=")), Some(key));
        assert_eq!(PublicKey::from_base64url("AAAA"), None);
        assert_eq!(PublicKey::from_base64url("not base64!"), None);
    }

    #[test]
    fn reason_and_status_round_trip() {
        for reason in ["not-paired", "metadata-upgrade", "role-upgrade", "scope-upgrade"] {
            assert_eq!(PairingReason::parse(reason).unwrap().as_str(), reason);
        }
        for status in ["pending", "approved", "rejected", "expired", "superseded"] {
            assert_eq!(RequestStatus::parse(status).unwrap().as_str(), status);
        }
        assert_eq!(PairingReason::parse("other"), None);
    }
}
