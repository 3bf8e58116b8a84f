//! A minimal client side of the gateway handshake: a device identity and the signed `connect` params.
//! Used by the load generator and the tests; it speaks to any OpenClaw-compatible gateway.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer, SigningKey};
use rand::rngs::OsRng;
use serde_json::{Map, Value, json};

use crate::auth::identity::{SignedFields, payload_v2, payload_v3};
use crate::clock::Millis;
use crate::domain::{DeviceId, PublicKey};

/// An Ed25519 device identity.
#[derive(Clone)]
pub struct DeviceIdentity {
    key: SigningKey,
}

impl std::fmt::Debug for DeviceIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceIdentity({})", self.id())
    }
}

impl DeviceIdentity {
    pub fn generate() -> Self {
        DeviceIdentity { key: SigningKey::generate(&mut OsRng) }
    }

    pub fn from_seed(seed: [u8; 32]) -> Self {
        DeviceIdentity { key: SigningKey::from_bytes(&seed) }
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey::from_bytes(self.key.verifying_key().to_bytes())
    }

    pub fn id(&self) -> DeviceId {
        DeviceId::from_public_key(&self.public_key())
    }

    /// Signs `payload`, base64url without padding.
    pub fn sign(&self, payload: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.key.sign(payload.as_bytes()).to_bytes())
    }
}

/// Which signed payload to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadVersion {
    V2,
    V3,
}

/// The fields of a `connect` request.
#[derive(Clone)]
pub struct ConnectSpec {
    pub client_id: String,
    pub client_mode: String,
    pub platform: String,
    pub device_family: Option<String>,
    pub role: String,
    pub scopes: Vec<String>,
    pub token: Option<String>,
    pub password: Option<String>,
    pub device_token: Option<String>,
    /// A setup code's bootstrap token (docs/protocol.md §12).
    pub bootstrap_token: Option<String>,
    pub min_protocol: i64,
    pub max_protocol: i64,
}

/// Shows which secrets a spec carries, never their values.
impl std::fmt::Debug for ConnectSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |secret: &Option<String>| secret.as_ref().map(|_| "<redacted>");
        f.debug_struct("ConnectSpec")
            .field("client_id", &self.client_id)
            .field("client_mode", &self.client_mode)
            .field("role", &self.role)
            .field("scopes", &self.scopes)
            .field("token", &hidden(&self.token))
            .field("password", &hidden(&self.password))
            .field("device_token", &hidden(&self.device_token))
            .field("bootstrap_token", &hidden(&self.bootstrap_token))
            .finish_non_exhaustive()
    }
}

impl ConnectSpec {
    /// An operator CLI asking for `scopes` with the gateway token.
    pub fn operator(scopes: &[&str], token: Option<&str>) -> Self {
        ConnectSpec {
            client_id: "cli".into(),
            client_mode: "cli".into(),
            platform: "linux".into(),
            device_family: None,
            role: "operator".into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            token: token.map(str::to_owned),
            password: None,
            device_token: None,
            bootstrap_token: None,
            min_protocol: 3,
            max_protocol: 4,
        }
    }

    /// The signed device proof for this spec.
    pub fn device_proof(
        &self,
        identity: &DeviceIdentity,
        device_id: &str,
        nonce: &str,
        signed_at: Millis,
        version: PayloadVersion,
    ) -> Value {
        let signed_token = [&self.token, &self.device_token, &self.bootstrap_token]
            .into_iter()
            .find_map(|token| token.as_deref())
            .unwrap_or("");
        let fields = SignedFields {
            client_id: &self.client_id,
            client_mode: &self.client_mode,
            role: &self.role,
            scopes: &self.scopes,
            token: signed_token,
            platform: Some(&self.platform),
            device_family: self.device_family.as_deref(),
        };
        let payload = match version {
            PayloadVersion::V3 => payload_v3(device_id, &fields, signed_at, nonce),
            PayloadVersion::V2 => payload_v2(device_id, &fields, signed_at, nonce),
        };
        json!({
            "id": device_id,
            "publicKey": identity.public_key().to_base64url(),
            "signature": identity.sign(&payload),
            "signedAt": signed_at,
            "nonce": nonce,
        })
    }

    /// The `connect` params, without a device proof (add one with `device_proof`).
    pub fn params(&self) -> Value {
        let mut auth = Map::new();
        let secrets = [
            ("token", &self.token),
            ("password", &self.password),
            ("deviceToken", &self.device_token),
            ("bootstrapToken", &self.bootstrap_token),
        ];
        for (name, value) in secrets {
            if let Some(value) = value {
                auth.insert(name.into(), json!(value));
            }
        }
        let mut client = json!({
            "id": self.client_id, "version": env!("CARGO_PKG_VERSION"), "platform": self.platform, "mode": self.client_mode,
        });
        if let Some(family) = &self.device_family {
            client["deviceFamily"] = json!(family);
        }
        json!({
            "minProtocol": self.min_protocol,
            "maxProtocol": self.max_protocol,
            "client": client,
            "role": self.role,
            "scopes": self.scopes,
            "auth": auth,
            "caps": [],
        })
    }

    /// The whole `connect` request frame, signed by `identity` when given.
    pub fn request(&self, id: &str, identity: Option<&DeviceIdentity>, nonce: &str, signed_at: Millis) -> Value {
        let mut params = self.params();
        if let Some(identity) = identity {
            let device_id = identity.id().to_string();
            params["device"] = self.device_proof(identity, &device_id, nonce, signed_at, PayloadVersion::V3);
        }
        json!({ "type": "req", "id": id, "method": "connect", "params": params })
    }
}
