//! Device identity: Ed25519 keys, device ids, and the signed connect payloads (docs/protocol.md §2).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, VerifyingKey};

use crate::clock::Millis;
use crate::domain::{DeviceId, PublicKey, normalize_metadata};

/// How far a signature's `signedAt` may be from the server's clock.
pub const MAX_SIGNATURE_SKEW_MS: Millis = 120_000;

/// Why a device proof was refused; each maps to one `details.code`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceAuthError {
    PublicKeyInvalid,
    DeviceIdMismatch,
    NonceMismatch,
    SignatureExpired,
    SignatureInvalid,
}

impl DeviceAuthError {
    pub fn code(self) -> &'static str {
        match self {
            DeviceAuthError::PublicKeyInvalid => "DEVICE_AUTH_PUBLIC_KEY_INVALID",
            DeviceAuthError::DeviceIdMismatch => "DEVICE_AUTH_DEVICE_ID_MISMATCH",
            DeviceAuthError::NonceMismatch => "DEVICE_AUTH_NONCE_MISMATCH",
            DeviceAuthError::SignatureExpired => "DEVICE_AUTH_SIGNATURE_EXPIRED",
            DeviceAuthError::SignatureInvalid => "DEVICE_AUTH_SIGNATURE_INVALID",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            DeviceAuthError::PublicKeyInvalid => "device public key invalid",
            DeviceAuthError::DeviceIdMismatch => "device identity mismatch",
            DeviceAuthError::NonceMismatch => "device nonce mismatch",
            DeviceAuthError::SignatureExpired => "device signature expired",
            DeviceAuthError::SignatureInvalid => "device signature invalid",
        }
    }
}

/// The `device` object of a connect, as sent.
#[derive(Clone, Debug)]
pub struct DeviceProof<'a> {
    pub id: &'a str,
    pub public_key: &'a str,
    pub signature: &'a str,
    pub signed_at_ms: Millis,
    pub nonce: &'a str,
}

/// The connect fields covered by the signature, exactly as the client sent them (scope order matters).
#[derive(Clone, Debug)]
pub struct SignedFields<'a> {
    pub client_id: &'a str,
    pub client_mode: &'a str,
    pub role: &'a str,
    pub scopes: &'a [String],
    /// `auth.token` ?? `auth.deviceToken` ?? `auth.bootstrapToken` ?? "".
    pub token: &'a str,
    pub platform: Option<&'a str>,
    pub device_family: Option<&'a str>,
}

/// Payload v2: `v2|deviceId|clientId|clientMode|role|scopes|signedAt|token|nonce`.
pub fn payload_v2(device_id: &str, fields: &SignedFields<'_>, signed_at_ms: Millis, nonce: &str) -> String {
    format!(
        "v2|{device_id}|{}|{}|{}|{}|{signed_at_ms}|{}|{nonce}",
        fields.client_id,
        fields.client_mode,
        fields.role,
        fields.scopes.join(","),
        fields.token
    )
}

/// Payload v3: v2's fields (tagged v3) plus normalized platform and device family.
pub fn payload_v3(device_id: &str, fields: &SignedFields<'_>, signed_at_ms: Millis, nonce: &str) -> String {
    format!(
        "v3|{device_id}|{}|{}|{}|{}|{signed_at_ms}|{}|{nonce}|{}|{}",
        fields.client_id,
        fields.client_mode,
        fields.role,
        fields.scopes.join(","),
        fields.token,
        normalize_metadata(fields.platform),
        normalize_metadata(fields.device_family)
    )
}

/// Checks a device proof against the challenge nonce of this socket and the clock. Pure CPU: one
/// strict Ed25519 verification (two only for a v2 client).
pub fn verify_device(
    proof: &DeviceProof<'_>,
    fields: &SignedFields<'_>,
    challenge_nonce: &str,
    now_ms: Millis,
) -> Result<(DeviceId, PublicKey), DeviceAuthError> {
    let public_key = PublicKey::from_base64url(proof.public_key).ok_or(DeviceAuthError::PublicKeyInvalid)?;
    let verifying_key =
        VerifyingKey::from_bytes(public_key.as_bytes()).map_err(|_| DeviceAuthError::PublicKeyInvalid)?;
    let device_id = DeviceId::from_public_key(&public_key);
    if device_id.as_str() != proof.id {
        return Err(DeviceAuthError::DeviceIdMismatch);
    }
    if proof.nonce != challenge_nonce {
        return Err(DeviceAuthError::NonceMismatch);
    }
    if (now_ms - proof.signed_at_ms).abs() > MAX_SIGNATURE_SKEW_MS {
        return Err(DeviceAuthError::SignatureExpired);
    }
    let signature_bytes =
        URL_SAFE_NO_PAD.decode(proof.signature.trim_end_matches('=')).map_err(|_| DeviceAuthError::SignatureInvalid)?;
    let signature = Signature::from_slice(&signature_bytes).map_err(|_| DeviceAuthError::SignatureInvalid)?;
    let verifies = |payload: String| verifying_key.verify_strict(payload.as_bytes(), &signature).is_ok();
    if verifies(payload_v3(proof.id, fields, proof.signed_at_ms, proof.nonce))
        || verifies(payload_v2(proof.id, fields, proof.signed_at_ms, proof.nonce))
    {
        Ok((device_id, public_key))
    } else {
        Err(DeviceAuthError::SignatureInvalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    const NOW: Millis = 1_800_000_000_000;

    fn fields(scopes: &[String]) -> SignedFields<'_> {
        SignedFields {
            client_id: "cli",
            client_mode: "cli",
            role: "operator",
            scopes,
            token: "tok",
            platform: Some(" Linux "),
            device_family: None,
        }
    }

    fn proof_for(key: &SigningKey, payload: &str) -> (String, String, String) {
        let public = PublicKey::from_bytes(key.verifying_key().to_bytes());
        let id = DeviceId::from_public_key(&public).to_string();
        (id, public.to_base64url(), URL_SAFE_NO_PAD.encode(key.sign(payload.as_bytes()).to_bytes()))
    }

    fn check(
        version: u8,
        tamper: impl FnOnce(&mut String, &mut String, &mut Millis, &mut String),
    ) -> Result<(), DeviceAuthError> {
        let key = SigningKey::from_bytes(&[9; 32]);
        let scopes = vec!["operator.read".to_owned(), "operator.pairing".to_owned()];
        let id = DeviceId::from_public_key(&PublicKey::from_bytes(key.verifying_key().to_bytes())).to_string();
        let payload = match version {
            3 => payload_v3(&id, &fields(&scopes), NOW, "nonce-1"),
            _ => payload_v2(&id, &fields(&scopes), NOW, "nonce-1"),
        };
        let (mut id, mut public_key, mut signature) = proof_for(&key, &payload);
        let mut signed_at = NOW;
        let nonce = "nonce-1".to_owned();
        tamper(&mut id, &mut public_key, &mut signed_at, &mut signature);
        let proof = DeviceProof {
            id: &id,
            public_key: &public_key,
            signature: &signature,
            signed_at_ms: signed_at,
            nonce: &nonce,
        };
        verify_device(&proof, &fields(&scopes), "nonce-1", NOW).map(|_| ())
    }

    #[test]
    fn v3_payload_matches_protocol_format() {
        let scopes = vec!["operator.read".to_owned(), "operator.write".to_owned()];
        assert_eq!(
            payload_v3("abc", &fields(&scopes), 42, "n"),
            "v3|abc|cli|cli|operator|operator.read,operator.write|42|tok|n|linux|"
        );
        assert_eq!(
            payload_v2("abc", &fields(&scopes), 42, "n"),
            "v2|abc|cli|cli|operator|operator.read,operator.write|42|tok|n"
        );
    }

    #[test]
    fn valid_v3_and_v2_signatures_verify() {
        assert_eq!(check(3, |_, _, _, _| {}), Ok(()));
        assert_eq!(check(2, |_, _, _, _| {}), Ok(()));
    }

    #[test]
    fn each_failure_has_its_code() {
        assert_eq!(check(3, |_, key, _, _| *key = "AAAA".into()), Err(DeviceAuthError::PublicKeyInvalid));
        assert_eq!(check(3, |id, _, _, _| *id = "0".repeat(64)), Err(DeviceAuthError::DeviceIdMismatch));
        assert_eq!(check(3, |_, _, at, _| *at = NOW - 120_001), Err(DeviceAuthError::SignatureExpired));
        assert_eq!(check(3, |_, _, at, _| *at = NOW + 120_001), Err(DeviceAuthError::SignatureExpired));
        // Within the skew but not what was signed: the signature no longer matches.
        assert_eq!(check(3, |_, _, at, _| *at = NOW + 1), Err(DeviceAuthError::SignatureInvalid));
        assert_eq!(check(3, |_, _, _, sig| *sig = "bm90LWEtc2ln".into()), Err(DeviceAuthError::SignatureInvalid));
        assert_eq!(
            check(3, |_, _, _, sig| sig.replace_range(0..2, if sig.starts_with("AA") { "BB" } else { "AA" })),
            Err(DeviceAuthError::SignatureInvalid)
        );
    }

    #[test]
    fn nonce_must_equal_the_challenge() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let scopes: Vec<String> = vec![];
        let public = PublicKey::from_bytes(key.verifying_key().to_bytes());
        let id = DeviceId::from_public_key(&public).to_string();
        let payload = payload_v3(&id, &fields(&scopes), NOW, "other-nonce");
        let (_, public_key, signature) = proof_for(&key, &payload);
        let proof = DeviceProof {
            id: &id,
            public_key: &public_key,
            signature: &signature,
            signed_at_ms: NOW,
            nonce: "other-nonce",
        };
        assert_eq!(verify_device(&proof, &fields(&scopes), "challenge", NOW), Err(DeviceAuthError::NonceMismatch));
    }

    #[test]
    fn v1_payload_is_refused() {
        let key = SigningKey::from_bytes(&[4; 32]);
        let scopes: Vec<String> = vec![];
        let public = PublicKey::from_bytes(key.verifying_key().to_bytes());
        let id = DeviceId::from_public_key(&public).to_string();
        let v1 = format!("v1|{id}|cli|cli|operator||{NOW}|tok|n");
        let (_, public_key, signature) = proof_for(&key, &v1);
        let proof =
            DeviceProof { id: &id, public_key: &public_key, signature: &signature, signed_at_ms: NOW, nonce: "n" };
        assert_eq!(verify_device(&proof, &fields(&scopes), "n", NOW), Err(DeviceAuthError::SignatureInvalid));
    }
}
