//! The pairing decision of docs/protocol.md §4: pure functions, no I/O, tested as a table.
//!
//! The connect handler gathers the facts (locality, shared-secret check, the one store read of the
//! device, the signature check) and this module decides.

use crate::auth::identity::DeviceAuthError;
use crate::domain::DeviceRecord;
use crate::domain::{DeviceId, PairingReason, PublicKey, Role, Scope, ScopeSet, TokenDigest, normalize_metadata};

/// Policy settings.
#[derive(Clone, Debug)]
pub struct PolicyConfig {
    /// Approve pairing asks from local, non-browser clients without an operator (OpenClaw's default).
    pub auto_approve_local: bool,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig { auto_approve_local: true }
    }
}

/// Why authentication failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// No shared secret and no device token.
    Missing,
    TokenMismatch,
    PasswordMismatch,
    DeviceTokenMismatch,
    /// The device token is the device's own, but it does not carry `missing`, which was asked for. A token
    /// carries its own scopes: what the device's grant allows does not matter (OpenClaw's verifyDeviceToken).
    ScopeMismatch {
        missing: Scope,
    },
    RateLimited {
        retry_after_ms: i64,
    },
}

/// The result of checking the credentials of a connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthOutcome {
    SharedSecret,
    DeviceToken,
    Failed(AuthFailure),
    /// Only a device token was presented, and the device proof failed: the device error is the answer.
    DeviceUnverified,
}

/// What was presented and checked, for `authenticate`.
#[derive(Clone, Copy, Debug)]
pub struct Credentials<'a> {
    /// `Some(valid)` when a shared secret (token or password) was presented.
    pub shared_secret: Option<bool>,
    pub secret_is_password: bool,
    /// Digest of `auth.deviceToken`, when presented.
    pub device_token: Option<&'a TokenDigest>,
    /// Whether the device proof verified (the token belongs to the proven device only).
    pub device_verified: bool,
    /// The client's address is locked out by the failed-auth limiter.
    pub rate_limited_for_ms: Option<i64>,
}

/// Decides how a connect authenticated: the shared secret first, then the device token of the proven
/// device for the requested role, which must carry every `asked` scope.
pub fn authenticate(
    credentials: &Credentials<'_>,
    stored: Option<&DeviceRecord>,
    role: Role,
    asked: &ScopeSet,
) -> AuthOutcome {
    if let Some(retry_after_ms) = credentials.rate_limited_for_ms {
        return AuthOutcome::Failed(AuthFailure::RateLimited { retry_after_ms });
    }
    if credentials.shared_secret == Some(true) {
        return AuthOutcome::SharedSecret;
    }
    if let Some(presented) = credentials.device_token {
        if !credentials.device_verified {
            return AuthOutcome::DeviceUnverified;
        }
        let owned = stored
            .filter(|device| device.removed_at_ms.is_none())
            .and_then(|device| device.live_token(role))
            .filter(|token| token.digest.ct_eq(presented));
        if let Some(token) = owned {
            return match token.scopes.first_missing(asked) {
                None => AuthOutcome::DeviceToken,
                Some(missing) => AuthOutcome::Failed(AuthFailure::ScopeMismatch { missing }),
            };
        }
        if credentials.shared_secret.is_none() {
            return AuthOutcome::Failed(AuthFailure::DeviceTokenMismatch);
        }
    }
    match credentials.shared_secret {
        Some(_) if credentials.secret_is_password => AuthOutcome::Failed(AuthFailure::PasswordMismatch),
        Some(_) => AuthOutcome::Failed(AuthFailure::TokenMismatch),
        None => AuthOutcome::Failed(AuthFailure::Missing),
    }
}

/// The device a verified proof identified, with the metadata it signed.
#[derive(Clone, Debug)]
pub struct ProvenDevice {
    pub device_id: DeviceId,
    pub public_key: PublicKey,
    pub platform: Option<String>,
    pub device_family: Option<String>,
}

/// The device part of a connect.
#[derive(Clone, Debug)]
pub enum DeviceClaim<'a> {
    /// No `device` object.
    Absent,
    Invalid(DeviceAuthError),
    Proven {
        device: ProvenDevice,
        stored: Option<&'a DeviceRecord>,
    },
}

/// Everything `decide` looks at.
#[derive(Clone, Debug)]
pub struct ConnectFacts<'a> {
    pub local: bool,
    /// A browser (docs/protocol.md §3): never local trust.
    pub browser: bool,
    pub client_id: &'a str,
    pub client_mode: &'a str,
    pub role: Role,
    pub scopes: &'a ScopeSet,
    pub auth: AuthOutcome,
    pub device: DeviceClaim<'a>,
}

/// What to do with the device token in hello-ok.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenAction {
    /// Nothing to hand out (no device, local backend, or a live token the client already has).
    None,
    /// Mint a token (revoking any older one) and hand it out.
    Mint,
    /// The client authenticated with its token: echo it back.
    Echo,
}

/// Why a connect is refused outright.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectRefusal {
    Auth(AuthFailure),
    DeviceIdentityRequired,
    DeviceAuth(DeviceAuthError),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Refuse(ConnectRefusal),
    /// hello-ok with these scopes; record a silent approval first when `silent_approval` is set.
    Allow {
        scopes: ScopeSet,
        silent_approval: Option<PairingReason>,
        token: TokenAction,
    },
    /// Store (or refresh) a pairing request and refuse with NOT_PAIRED.
    RequirePairing {
        reason: PairingReason,
        is_repair: bool,
    },
}

/// The pairing decision, docs/protocol.md §4 steps 1–7.
///
/// What it guarantees for every input is stated, and checked, as properties in `policy/properties.rs`.
pub fn decide(facts: &ConnectFacts<'_>, config: &PolicyConfig) -> Decision {
    // 1. Authentication.
    let auth_ok = match facts.auth {
        AuthOutcome::Failed(failure) => return Decision::Refuse(ConnectRefusal::Auth(failure)),
        // A device token is only good with the device's proof: no proof, or a failed one, is the answer.
        AuthOutcome::DeviceUnverified => match &facts.device {
            DeviceClaim::Invalid(error) => return Decision::Refuse(ConnectRefusal::DeviceAuth(*error)),
            _ => return Decision::Refuse(ConnectRefusal::DeviceIdentityRequired),
        },
        auth => auth,
    };
    // 2–3. The device proof.
    let (device, stored) = match &facts.device {
        DeviceClaim::Absent => {
            return match auth_ok {
                AuthOutcome::SharedSecret => Decision::Allow {
                    // A remote client or a browser without identity gets no scopes: it can only prove it knows
                    // the secret (a web page can guess it, or find it).
                    scopes: if facts.local && !facts.browser { facts.scopes.clone() } else { ScopeSet::new() },
                    silent_approval: None,
                    token: TokenAction::None,
                },
                _ => Decision::Refuse(ConnectRefusal::DeviceIdentityRequired),
            };
        }
        DeviceClaim::Invalid(error) => return Decision::Refuse(ConnectRefusal::DeviceAuth(*error)),
        DeviceClaim::Proven { device, stored } => (device, stored.filter(|record| record.removed_at_ms.is_none())),
    };
    let echo_or_mint = |live_token: bool| match auth_ok {
        AuthOutcome::DeviceToken => TokenAction::Echo,
        _ if live_token => TokenAction::None,
        _ => TokenAction::Mint,
    };
    let live_token = stored.and_then(|record| record.live_token(facts.role));

    // A device token carries its own scopes: nothing beyond them, whatever the grant allows (`authenticate`
    // checks it; the policy does not rely on that). Nor does it ever change a grant (step 6).
    if auth_ok == AuthOutcome::DeviceToken {
        match live_token.map(|token| token.scopes.first_missing(facts.scopes)) {
            None => return Decision::Refuse(ConnectRefusal::Auth(AuthFailure::DeviceTokenMismatch)),
            Some(Some(missing)) => {
                return Decision::Refuse(ConnectRefusal::Auth(AuthFailure::ScopeMismatch { missing }));
            }
            Some(None) => {}
        }
    }

    // 4. The gateway's own backend on loopback: never blocked by pairing (the seed bug, §8). With a device
    // token it gets no more than the token's scopes (above).
    if facts.client_id == "gateway-client" && facts.client_mode == "backend" && facts.local && !facts.browser {
        let token = if auth_ok == AuthOutcome::DeviceToken { TokenAction::Echo } else { TokenAction::None };
        return Decision::Allow { scopes: facts.scopes.clone(), silent_approval: None, token };
    }

    // 5. Compare with what was approved; the first difference is the reason.
    let reason = match stored {
        None => Some(PairingReason::NotPaired),
        Some(record) if record.grants.is_empty() || record.public_key != device.public_key => {
            Some(PairingReason::NotPaired)
        }
        Some(record) if metadata_changed(record, device) => Some(PairingReason::MetadataUpgrade),
        Some(record) => match record.grant(facts.role) {
            None => Some(PairingReason::RoleUpgrade),
            Some(grant) if !grant.scopes.covers(facts.scopes) => Some(PairingReason::ScopeUpgrade),
            Some(_) => None,
        },
    };

    match reason {
        // 7. Approved already.
        None => Decision::Allow {
            scopes: facts.scopes.clone(),
            silent_approval: None,
            token: echo_or_mint(live_token.is_some()),
        },
        // 6. Local, not a browser, and the shared secret (never a device token alone): approve silently.
        Some(reason)
            if facts.local && !facts.browser && auth_ok == AuthOutcome::SharedSecret && config.auto_approve_local =>
        {
            Decision::Allow {
                scopes: facts.scopes.clone(),
                silent_approval: Some(reason),
                token: echo_or_mint(live_token.is_some() && reason != PairingReason::NotPaired),
            }
        }
        Some(reason) => {
            Decision::RequirePairing { reason, is_repair: stored.is_some_and(|record| !record.grants.is_empty()) }
        }
    }
}

/// Platform and device family are pinned at approval; a stored empty value pins nothing.
fn metadata_changed(record: &DeviceRecord, device: &ProvenDevice) -> bool {
    let differs = |stored: &Option<String>, claimed: &Option<String>| {
        let stored = normalize_metadata(stored.as_deref());
        !stored.is_empty() && stored != normalize_metadata(claimed.as_deref())
    };
    differs(&record.meta.platform, &device.platform) || differs(&record.meta.device_family, &device.device_family)
}

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
