//! Setup codes: what minting stores (digests only), what a listing shows, and what a redemption takes and
//! gives back.

use pairgate_domain::clock::Millis;
use pairgate_domain::{
    ClientMeta, DeviceId, PublicKey, Role, ScopeSet, SetupAccess, SetupState, TokenDigest, TokenSecret,
};

use crate::StoreResult;
use crate::rows::invalid;

/// How long a setup code's row is kept after it expired, for `device.pair.setupStatus` and listings
/// (OpenClaw keeps completions 20 minutes); its story stays in the audit trail.
pub const SETUP_CODE_RETENTION_MS: Millis = 24 * 60 * 60 * 1000;

/// A code to store. Neither secret is here: only the digests of the bootstrap token and of the join
/// code's short code.
#[derive(Clone, Debug)]
pub struct NewSetupCode {
    pub setup_id: String,
    pub token_digest: TokenDigest,
    pub join_digest: Option<TokenDigest>,
    pub access: SetupAccess,
    pub gateway_url: String,
    pub issued_at_ms: Millis,
    pub expires_at_ms: Millis,
}

/// A setup code as stored: never a secret, never a digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetupCode {
    pub setup_id: String,
    pub access: SetupAccess,
    pub gateway_url: String,
    pub issued_at_ms: Millis,
    pub expires_at_ms: Millis,
    pub issued_by: String,
    /// It has a join URL; `join_fetched_at_ms` says whether that was fetched (once).
    pub join: bool,
    pub join_fetched_at_ms: Option<Millis>,
    pub redeemed_at_ms: Option<Millis>,
    pub device_id: Option<String>,
    pub revoked_at_ms: Option<Millis>,
    pub revoked_by: Option<String>,
}

impl SetupCode {
    pub fn state(&self, now_ms: Millis) -> SetupState {
        SetupState::of(self.redeemed_at_ms.is_some(), self.revoked_at_ms.is_some(), self.expires_at_ms, now_ms)
    }
}

/// A connect presenting a setup code's bootstrap token, with its proven device.
#[derive(Clone, Debug)]
pub struct Redemption {
    pub token_digest: TokenDigest,
    pub device_id: DeviceId,
    pub public_key: PublicKey,
    pub meta: ClientMeta,
    pub remote_ip: Option<String>,
    /// The role and scopes the connect asked for, which the code's access must allow.
    pub role: Role,
    pub scopes: ScopeSet,
}

/// A token minted by a redemption, one per role the code pairs.
#[derive(Clone, Debug)]
pub struct HandedOff {
    pub role: Role,
    pub scopes: ScopeSet,
    pub token: TokenSecret,
}

/// What a redemption did: the code, now redeemed, and the device's tokens (the primary role first).
#[derive(Clone, Debug)]
pub struct Redeemed {
    pub code: SetupCode,
    pub tokens: Vec<HandedOff>,
    /// The device's name as operators see it: its label, else what it calls itself.
    pub device_name: Option<String>,
    /// The device's pending request, approved by the redemption because the code grants all it asked.
    pub resolved_request: Option<String>,
}

/// Whether a redemption that handed out `tokens` settles a pending request that asked for `roles_json`
/// with `scopes_json` (both JSON lists): every role asked is among those paired, and every scope asked is
/// covered by the operator grant. A request asking more stays pending for an operator.
pub fn settles_request(roles_json: &str, scopes_json: &str, tokens: &[HandedOff]) -> StoreResult<bool> {
    let roles: Vec<String> = serde_json::from_str(roles_json).map_err(|e| invalid("request roles", e))?;
    let asked = ScopeSet::from_json(scopes_json).map_err(|e| invalid("request scopes", e))?;
    let granted: ScopeSet = tokens.iter().flat_map(|token| token.scopes.iter()).collect();
    let roles_paired = roles.iter().all(|name| tokens.iter().any(|token| token.role.as_str() == name));
    Ok(roles_paired && granted.covers(&asked))
}

/// One row of the setup-code queries, as both engines return it.
pub struct SetupRow {
    pub setup_id: String,
    pub access: String,
    pub gateway_url: String,
    pub issued_at_ms: i64,
    pub expires_at_ms: i64,
    pub issued_by: String,
    pub join: bool,
    pub join_fetched_at_ms: Option<i64>,
    pub redeemed_at_ms: Option<i64>,
    pub device_id: Option<String>,
    pub revoked_at_ms: Option<i64>,
    pub revoked_by: Option<String>,
}

impl SetupRow {
    pub fn into_code(self) -> StoreResult<SetupCode> {
        Ok(SetupCode {
            access: SetupAccess::parse(&self.access).ok_or_else(|| invalid("setup access", &self.access))?,
            setup_id: self.setup_id,
            gateway_url: self.gateway_url,
            issued_at_ms: self.issued_at_ms,
            expires_at_ms: self.expires_at_ms,
            issued_by: self.issued_by,
            join: self.join,
            join_fetched_at_ms: self.join_fetched_at_ms,
            redeemed_at_ms: self.redeemed_at_ms,
            device_id: self.device_id,
            revoked_at_ms: self.revoked_at_ms,
            revoked_by: self.revoked_by,
        })
    }
}

/// A device label as stored: trimmed, 1 to 64 characters, no control characters, and none of the invisible
/// formatting characters (bidirectional overrides, zero-width joiners, …) that make one name look like
/// another in a list.
pub fn clean_label(label: &str) -> Option<String> {
    let label = label.trim();
    let invisible = |c: char| {
        c.is_control()
            || matches!(c, '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2069}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
    };
    let fits = (1..=64).contains(&label.chars().count()) && !label.chars().any(invisible);
    fits.then(|| label.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_trimmed_bounded_and_visible() {
        assert_eq!(clean_label("  Garage pi "), Some("Garage pi".to_owned()));
        assert_eq!(clean_label(&"é".repeat(64)), Some("é".repeat(64)));
        for bad in ["", "   ", "a\u{7}b", "evil\u{202E}gpj.exe", "zero\u{200B}width", &"x".repeat(65)] {
            assert_eq!(clean_label(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_request_is_settled_only_when_the_code_grants_all_it_asked() {
        let token = |role: Role, scopes: &[&str]| HandedOff {
            role,
            scopes: ScopeSet::parse(scopes).unwrap(),
            token: TokenSecret::generate(),
        };
        let node_only = [token(Role::Node, &[])];
        let limited = [token(Role::Node, &[]), token(Role::Operator, &["operator.read", "operator.write"])];
        for (roles, scopes, tokens, settled) in [
            (r#"["node"]"#, "[]", &node_only[..], true),
            (r#"["operator"]"#, r#"["operator.read"]"#, &node_only[..], false),
            (r#"["operator"]"#, r#"["operator.read"]"#, &limited[..], true),
            (r#"["operator","node"]"#, r#"["operator.write"]"#, &limited[..], true),
            (r#"["operator"]"#, r#"["operator.admin"]"#, &limited[..], false),
        ] {
            assert_eq!(settles_request(roles, scopes, tokens).unwrap(), settled, "{roles} {scopes}");
        }
        assert!(settles_request("not json", "[]", &limited).is_err());
    }
}
