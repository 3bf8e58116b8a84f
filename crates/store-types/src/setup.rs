//! Setup codes: what minting stores (digests only), what a listing shows, and what a redemption takes and
//! gives back.

use pairgate_domain::clock::Millis;
use pairgate_domain::{
    ClientMeta, DeviceId, PublicKey, Role, ScopeSet, SetupAccess, SetupState, TokenDigest, TokenSecret,
};

use crate::rows::invalid;
use crate::{NewGrant, StoreResult};
use pairgate_domain::{Refusal, SetupFault};

/// How long a setup code's row is kept after it expired, for `device.pair.setupStatus` and listings
/// (OpenClaw keeps completions 20 minutes); its story stays in the audit trail.
pub const SETUP_CODE_RETENTION_MS: Millis = 24 * 60 * 60 * 1000;

/// Codes that could still be redeemed (unused, unrevoked, unexpired) at most: past it, minting is refused.
/// A setup code is a credential; a runaway script should not leave thousands of them live.
pub const MAX_UNUSED_SETUP_CODES: i64 = 100;

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

impl Redemption {
    /// Refuses redeeming `code` (`None`: no code has the presented token) at `now_ms`: unknown, used,
    /// revoked, expired, or asking a role or scopes outside the code's access.
    pub fn check(&self, code: Option<&SetupCode>, now_ms: Millis) -> Result<(), Refusal> {
        let fault = match code {
            None => Some(SetupFault::Unknown),
            Some(code) => code
                .state(now_ms)
                .fault()
                .or_else(|| (!code.access.allows(self.role, &self.scopes)).then_some(SetupFault::OutsideAccess)),
        };
        fault.map_or(Ok(()), |fault| Err(Refusal::SetupCodeInvalid { fault }))
    }

    /// The grant of each role the code pairs, the connecting role's first (its token is hello-ok's
    /// primary one).
    pub fn grants(&self, access: SetupAccess) -> Vec<NewGrant> {
        let others = access.roles().iter().copied().filter(|role| *role != self.role);
        std::iter::once(self.role)
            .chain(others)
            .map(|role| NewGrant {
                device_id: self.device_id.clone(),
                public_key: self.public_key,
                meta: self.meta.clone(),
                remote_ip: self.remote_ip.clone(),
                role,
                scopes: access.scopes_for(role),
            })
            .collect()
    }
}

impl Redeemed {
    /// The details of the `setup.redeem` audit row: what other nodes announce from (never a token).
    pub fn audit_details(&self) -> serde_json::Value {
        let code = &self.code;
        serde_json::json!({
            "setupId": code.setup_id, "access": code.access.as_str(), "issuedBy": code.issued_by,
            "roles": self.tokens.iter().map(|t| t.role).collect::<Vec<_>>(),
            "scopes": self.tokens.iter().flat_map(|t| t.scopes.names()).collect::<Vec<_>>(),
            "requestId": self.resolved_request, "deviceName": self.device_name,
        })
    }
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

    fn code(access: SetupAccess) -> SetupCode {
        SetupCode {
            setup_id: "s".into(),
            access,
            gateway_url: "ws://127.0.0.1:1".into(),
            issued_at_ms: 0,
            expires_at_ms: 100,
            issued_by: "cli:test".into(),
            join: false,
            join_fetched_at_ms: None,
            redeemed_at_ms: None,
            device_id: None,
            revoked_at_ms: None,
            revoked_by: None,
        }
    }

    fn redemption(role: Role, scopes: &[&str]) -> Redemption {
        let key = PublicKey::from_bytes([7; 32]);
        Redemption {
            token_digest: TokenSecret::generate().digest(),
            device_id: DeviceId::from_public_key(&key),
            public_key: key,
            meta: ClientMeta::default(),
            remote_ip: None,
            role,
            scopes: ScopeSet::parse(scopes).unwrap(),
        }
    }

    #[test]
    fn a_redemption_is_checked_against_the_codes_state_and_access() {
        let fault = |result: Result<(), Refusal>| match result {
            Ok(()) => None,
            Err(Refusal::SetupCodeInvalid { fault }) => Some(fault),
            Err(other) => panic!("{other}"),
        };
        let node = redemption(Role::Node, &[]);
        let used = SetupCode { redeemed_at_ms: Some(5), device_id: Some("d".into()), ..code(SetupAccess::Node) };
        let revoked = SetupCode { revoked_at_ms: Some(5), ..code(SetupAccess::Node) };
        assert_eq!(fault(node.check(None, 1)), Some(SetupFault::Unknown));
        assert_eq!(fault(node.check(Some(&code(SetupAccess::Node)), 99)), None);
        assert_eq!(fault(node.check(Some(&code(SetupAccess::Node)), 100)), Some(SetupFault::Expired));
        assert_eq!(fault(node.check(Some(&used), 1)), Some(SetupFault::AlreadyUsed));
        assert_eq!(fault(node.check(Some(&revoked), 1)), Some(SetupFault::Revoked));
        let operator = redemption(Role::Operator, &["operator.read"]);
        assert_eq!(fault(operator.check(Some(&code(SetupAccess::Node)), 1)), Some(SetupFault::OutsideAccess));
        assert_eq!(fault(operator.check(Some(&code(SetupAccess::Limited)), 1)), None);
        // The connecting role's grant first; node's without scopes, operator's with the access's.
        let grants = operator.grants(SetupAccess::Limited);
        assert_eq!(grants.iter().map(|g| g.role).collect::<Vec<_>>(), [Role::Operator, Role::Node]);
        assert_eq!(grants[0].scopes.names().len(), 5);
        assert!(grants[1].scopes.is_empty());
        assert_eq!(node.grants(SetupAccess::Node).len(), 1);
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
