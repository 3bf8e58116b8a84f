//! The `connect` request: facts in, `policy::decide`, effects out (docs/protocol.md §2–4).

use serde_json::{Value, json};

use super::frames::{ClientInfo, ConnectParams, ErrorShape, NOT_PAIRED, close};
use super::methods::{EVENTS, Method};
use super::{ConnInfo, Gateway};
use crate::app::setup::RedeemError;
use crate::auth::identity::{DeviceProof, SignedFields, verify_device};
use crate::auth::policy::{
    self, AuthFailure, AuthOutcome, ConnectFacts, ConnectRefusal, Credentials, Decision, DeviceClaim, ProvenDevice,
    TokenAction,
};
use crate::auth::secrets::SecretKind;
use crate::domain::{ClientMeta, DeviceId, DeviceRecord, PairingReason, Refusal, Role, ScopeSet, TokenSecret};
use crate::store::{Actor, NewGrant, NewPairingRequest, PairingRequest, Redemption, RequestOutcome, StoreError};

/// Protocol versions pairgate speaks; it picks the highest one the client also speaks.
pub const PROTOCOLS: std::ops::RangeInclusive<i64> = 3..=4;
/// More scopes than there are operator scopes, with room for duplicates; beyond it the ask is refused.
const MAX_REQUESTED_SCOPES: usize = 64;

/// A refused connect: the error reply, then the close.
#[derive(Debug)]
pub struct ConnectError {
    /// Boxed: refusals are the cold path, and a small `Result` keeps the hot one lean.
    pub error: Box<ErrorShape>,
    pub close_code: u16,
    pub close_reason: String,
}

impl ConnectError {
    fn policy(error: ErrorShape) -> Self {
        let close_reason = error.message.clone();
        ConnectError { error: Box::new(error), close_code: close::POLICY, close_reason }
    }

    /// A pairing ask the store would not record: past the caps on pending requests (retry later), or a
    /// failure.
    fn pairing_ask(error: &StoreError) -> Self {
        let Some(refusal @ Refusal::TooManyPendingRequests { max, per_address }) = error.refusal() else {
            return ConnectError::internal(error);
        };
        tracing::warn!(%refusal, "pairing ask refused");
        let mut shape = ErrorShape::unavailable(refusal.to_string());
        shape.details = Some(json!({ "code": "PAIRING_REQUESTS_FULL", "max": max, "perAddress": per_address }));
        ConnectError {
            error: Box::new(shape),
            close_code: close::TRY_AGAIN_LATER,
            close_reason: "too many pending pairing requests".into(),
        }
    }

    fn internal(error: &StoreError) -> Self {
        tracing::error!(%error, "store failed during connect");
        ConnectError {
            error: Box::new(ErrorShape::unavailable("gateway store unavailable, try again")),
            close_code: close::TRY_AGAIN_LATER,
            close_reason: "store unavailable".into(),
        }
    }
}

/// An authenticated socket: who connected, and what it may do from now on.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub conn_id: String,
    /// The resolved client address, for audit rows.
    pub client_ip: String,
    pub role: Role,
    pub scopes: ScopeSet,
    pub device_id: Option<DeviceId>,
    pub client_id: String,
}

/// The hello-ok payload. It may carry a device token, so its `Debug` shows no content.
pub struct HelloOk(pub Value);

impl std::fmt::Debug for HelloOk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HelloOk(<may hold a device token>)")
    }
}

/// Negotiates the protocol version.
pub fn negotiate_protocol(min: i64, max: i64) -> Result<i64, ConnectError> {
    let chosen = max.min(*PROTOCOLS.end());
    if chosen >= min.max(*PROTOCOLS.start()) && min <= max {
        return Ok(chosen);
    }
    Err(ConnectError {
        error: Box::new(ErrorShape::invalid("protocol mismatch").with_details(json!({
            "code": "PROTOCOL_MISMATCH",
            "clientMinProtocol": min,
            "clientMaxProtocol": max,
            "expectedProtocol": PROTOCOLS.end(),
        }))),
        close_code: close::PROTOCOL_ERROR,
        close_reason: "protocol mismatch".into(),
    })
}

/// The longest display name a client may give (bytes).
pub const MAX_DISPLAY_NAME: usize = 256;
/// The longest platform, device family, client id, mode or version a client may give (bytes).
pub const MAX_CLIENT_FIELD: usize = 64;

/// Refuses, naming the field, a client string longer than pairgate keeps: it would be stored with every
/// pairing request and shown to every operator. Never truncated silently.
fn check_client_strings(params: &ConnectParams) -> Result<(), ConnectError> {
    let client = &params.client;
    let fields = [
        ("client.displayName", client.display_name.as_deref(), MAX_DISPLAY_NAME),
        ("client.platform", client.platform.as_deref(), MAX_CLIENT_FIELD),
        ("client.deviceFamily", client.device_family.as_deref(), MAX_CLIENT_FIELD),
        ("client.id", Some(client.id.as_str()), MAX_CLIENT_FIELD),
        ("client.mode", Some(client.mode.as_str()), MAX_CLIENT_FIELD),
        ("client.version", client.version.as_deref(), MAX_CLIENT_FIELD),
    ];
    for (field, value, max) in fields {
        if let Some(value) = value
            && value.len() > max
        {
            let refusal = Refusal::TooLong { field, length: value.len(), max };
            return Err(ConnectError::policy(ErrorShape::invalid(refusal.to_string())));
        }
    }
    Ok(())
}

fn parse_role_and_scopes(params: &ConnectParams) -> Result<(Role, ScopeSet), ConnectError> {
    let role_name = params.role.as_deref().unwrap_or("operator");
    let role = Role::parse(role_name).ok_or_else(|| ConnectError::policy(ErrorShape::invalid("invalid role")))?;
    let names = params.scopes.as_deref().unwrap_or_default();
    if names.len() > MAX_REQUESTED_SCOPES {
        return Err(ConnectError::policy(ErrorShape::invalid(format!(
            "too many scopes: {} (at most {MAX_REQUESTED_SCOPES})",
            names.len()
        ))));
    }
    let scopes = ScopeSet::parse(names).map_err(|e| ConnectError::policy(ErrorShape::invalid(e.to_string())))?;
    if role == Role::Node && !scopes.is_empty() {
        return Err(ConnectError::policy(ErrorShape::invalid("role node takes no operator scopes")));
    }
    Ok((role, scopes))
}

fn auth_error(failure: AuthFailure, kind: SecretKind) -> ConnectError {
    let (message, details) = match failure {
        AuthFailure::Missing => (
            match kind {
                SecretKind::Token => "unauthorized: gateway token missing (provide auth.token)",
                SecretKind::Password => "unauthorized: gateway password missing (provide auth.password)",
            },
            json!({"code": match kind { SecretKind::Token => "AUTH_TOKEN_MISSING", SecretKind::Password => "AUTH_PASSWORD_MISSING" },
                   "authReason": match kind { SecretKind::Token => "token_missing", SecretKind::Password => "password_missing" },
                   "canRetryWithDeviceToken": false, "recommendedNextStep": "update_auth_credentials"}),
        ),
        AuthFailure::TokenMismatch => (
            "unauthorized: gateway token mismatch (check the gateway token)",
            json!({"code": "AUTH_TOKEN_MISMATCH", "authReason": "token_mismatch",
                   "canRetryWithDeviceToken": true, "recommendedNextStep": "retry_with_device_token"}),
        ),
        AuthFailure::PasswordMismatch => (
            "unauthorized: gateway password mismatch (check the gateway password)",
            json!({"code": "AUTH_PASSWORD_MISMATCH", "authReason": "password_mismatch",
                   "canRetryWithDeviceToken": true, "recommendedNextStep": "retry_with_device_token"}),
        ),
        AuthFailure::DeviceTokenMismatch => (
            "unauthorized: device token mismatch (rotated or revoked; reconnect with the gateway token)",
            json!({"code": "AUTH_DEVICE_TOKEN_MISMATCH", "authReason": "device_token_mismatch",
                   "canRetryWithDeviceToken": false, "recommendedNextStep": "update_auth_credentials"}),
        ),
        // OpenClaw's AUTH_SCOPE_MISMATCH (authReason `scope_mismatch`), naming the scope the token lacks. Its
        // message keeps OpenClaw's "device token scope mismatch", which its client classifies.
        AuthFailure::ScopeMismatch { missing } => {
            let message = format!(
                "unauthorized: device token scope mismatch: missing {missing} (ask for it with the gateway token)"
            );
            let details = json!({"code": "AUTH_SCOPE_MISMATCH", "authReason": "scope_mismatch",
                                 "canRetryWithDeviceToken": false, "recommendedNextStep": "review_auth_configuration",
                                 "missingScope": missing});
            return ConnectError::policy(ErrorShape::invalid(message).with_details(details));
        }
        AuthFailure::RateLimited { retry_after_ms } => {
            let mut error = ErrorShape::invalid("unauthorized: too many failed authentication attempts (retry later)")
                .with_details(json!({"code": "AUTH_RATE_LIMITED", "authReason": "rate_limited",
                                     "canRetryWithDeviceToken": false, "recommendedNextStep": "wait_then_retry"}));
            error.retryable = Some(true);
            error.retry_after_ms = Some(retry_after_ms);
            return ConnectError::policy(error);
        }
    };
    ConnectError::policy(ErrorShape::invalid(message).with_details(details))
}

fn refusal_error(refusal: ConnectRefusal, kind: SecretKind) -> ConnectError {
    match refusal {
        ConnectRefusal::Auth(failure) => auth_error(failure, kind),
        ConnectRefusal::DeviceIdentityRequired => ConnectError::policy(
            ErrorShape::invalid("device identity required").with_details(json!({"code": "DEVICE_IDENTITY_REQUIRED"})),
        ),
        ConnectRefusal::DeviceAuth(error) => {
            ConnectError::policy(ErrorShape::invalid(error.message()).with_details(json!({"code": error.code()})))
        }
    }
}

/// Every refused setup code reads the same, in OpenClaw's words, which its client takes as final.
const BOOTSTRAP_INVALID: &str = "unauthorized: setup code invalid, expired, revoked, or already used (create a new code; review `openclaw devices list`)";

fn bootstrap_error() -> ConnectError {
    ConnectError::policy(ErrorShape::invalid(BOOTSTRAP_INVALID).with_details(json!({
        "code": "AUTH_BOOTSTRAP_TOKEN_INVALID", "authReason": "bootstrap_token_invalid",
        "canRetryWithDeviceToken": false, "recommendedNextStep": "review_auth_configuration",
    })))
}

fn pairing_error(request: &PairingRequest, reason: PairingReason, stored: Option<&DeviceRecord>) -> ConnectError {
    let mut details = json!({
        "code": "PAIRING_REQUIRED",
        "reason": reason.as_str(),
        "requestId": request.request_id,
        "deviceId": request.device_id,
        "requestedRole": request.role,
        "requestedScopes": request.scopes.names(),
    });
    if let Some(record) = stored.filter(|record| !record.grants.is_empty() && record.removed_at_ms.is_none()) {
        details["approvedRoles"] = json!(record.roles());
        let approved: ScopeSet = record.grants.iter().flat_map(|grant| grant.scopes.iter()).collect();
        details["approvedScopes"] = json!(approved.names());
    }
    let message = format!("pairing required: {}", reason.why());
    let close_reason = format!("{message} (requestId: {})", request.request_id);
    ConnectError {
        error: Box::new(ErrorShape {
            code: NOT_PAIRED,
            message,
            details: Some(details),
            retryable: None,
            retry_after_ms: None,
        }),
        close_code: close::POLICY,
        close_reason,
    }
}

impl Gateway {
    /// Runs the connect of one socket. `nonce` is the challenge sent on it.
    pub async fn connect(
        &self,
        conn: &ConnInfo,
        nonce: &str,
        params: ConnectParams,
    ) -> Result<(Authenticated, HelloOk), ConnectError> {
        let protocol = negotiate_protocol(params.min_protocol, params.max_protocol)?;
        check_client_strings(&params)?;
        let (role, scopes) = parse_role_and_scopes(&params)?;
        let now = self.app.clock.now_ms();
        let client = &conn.client;
        let auth = params.auth.unwrap_or_default();

        // Facts, each gathered once: the secret check, the device proof, one store read.
        let presented_secret = match self.app.secret.kind() {
            SecretKind::Token => auth.token.as_deref(),
            SecretKind::Password => auth.password.as_deref(),
        };
        let shared_secret = match presented_secret {
            Some(secret) => Some(self.app.secret.verify(secret).await),
            None => None,
        };
        let proof = params.device.as_ref().map(|device| {
            let fields = SignedFields {
                client_id: &params.client.id,
                client_mode: &params.client.mode,
                role: role.as_str(),
                scopes: params.scopes.as_deref().unwrap_or_default(),
                token: auth.signed_token(),
                platform: params.client.platform.as_deref(),
                device_family: params.client.device_family.as_deref(),
            };
            let proof = DeviceProof {
                id: &device.id,
                public_key: &device.public_key,
                signature: &device.signature,
                signed_at_ms: device.signed_at,
                nonce: &device.nonce,
            };
            verify_device(&proof, &fields, nonce, now)
        });
        let stored = match &proof {
            Some(Ok((device_id, _))) => {
                // Before the read: a revocation that commits after it still finds this socket.
                self.app.live.claim(&conn.conn_id, device_id);
                let (stored, mark) =
                    self.app.store.device_as_of(device_id).await.map_err(|e| ConnectError::internal(&e))?;
                self.app.live.read(&conn.conn_id, mark);
                stored
            }
            _ => None,
        };
        // A setup code's bootstrap token, presented alone, is its own way in (docs/protocol.md §12).
        if let Some(bootstrap) = auth.bootstrap_token.as_deref()
            && presented_secret.is_none()
            && auth.device_token.is_none()
        {
            let bootstrap = TokenSecret::from_presented(bootstrap);
            return self.redeem(conn, protocol, &params.client, (role, scopes), &bootstrap, proof, now).await;
        }
        let device_token_digest = auth.device_token.as_deref().map(|token| TokenSecret::from_presented(token).digest());
        let credentials = Credentials {
            shared_secret,
            secret_is_password: self.app.secret.kind() == SecretKind::Password,
            device_token: device_token_digest.as_ref(),
            device_verified: matches!(proof, Some(Ok(_))),
            // Local clients are exempt, browsers on loopback are not (docs/protocol.md §2).
            rate_limited_for_ms: self.app.auth_locked_for(client, now),
        };
        let auth_outcome = policy::authenticate(&credentials, stored.as_ref(), role, &scopes);
        if let AuthOutcome::Failed(failure) = auth_outcome
            && !matches!(failure, AuthFailure::RateLimited { .. })
        {
            self.app.record_auth_failure(client, now).await;
        }
        let device_claim = match &proof {
            None => DeviceClaim::Absent,
            Some(Err(error)) => DeviceClaim::Invalid(*error),
            Some(Ok((device_id, public_key))) => DeviceClaim::Proven {
                device: ProvenDevice {
                    device_id: device_id.clone(),
                    public_key: *public_key,
                    platform: params.client.platform.clone(),
                    device_family: params.client.device_family.clone(),
                },
                stored: stored.as_ref(),
            },
        };
        let facts = ConnectFacts {
            local: client.local,
            browser: client.browser,
            client_id: &params.client.id,
            client_mode: &params.client.mode,
            role,
            scopes: &scopes,
            auth: auth_outcome,
            device: device_claim,
        };
        let decision = policy::decide(&facts, &self.config.policy);

        // Effects.
        let meta = ClientMeta {
            client_id: Some(params.client.id.clone()),
            client_mode: Some(params.client.mode.clone()),
            platform: params.client.platform.clone(),
            device_family: params.client.device_family.clone(),
            display_name: params.client.display_name.clone(),
        };
        let actor = Actor::Socket {
            conn_id: conn.conn_id.clone(),
            device_id: proof.as_ref().and_then(|p| p.as_ref().ok()).map(|(id, _)| id.to_string()),
        };
        let remote_ip = client.ip.to_string();
        match decision {
            Decision::Refuse(refusal) => Err(refusal_error(refusal, self.app.secret.kind())),
            Decision::RequirePairing { reason, is_repair } => {
                let Some(Ok((device_id, public_key))) = proof else {
                    unreachable!("policy asks for pairing only for a proven device")
                };
                let ask = NewPairingRequest {
                    device_id,
                    public_key,
                    role,
                    scopes,
                    reason,
                    meta,
                    remote_ip: Some(remote_ip),
                    is_local: client.local,
                    is_repair,
                };
                let (request, outcome) = self
                    .app
                    .store
                    .record_pairing_request(&ask, &actor, now)
                    .await
                    .map_err(|e| ConnectError::pairing_ask(&e))?;
                if outcome != RequestOutcome::Refreshed {
                    self.app.announce_request(&request);
                }
                Err(pairing_error(&request, reason, stored.as_ref()))
            }
            Decision::Allow { scopes: granted, silent_approval, token } => {
                let device = proof.and_then(Result::ok);
                let issued = match (&device, silent_approval, token) {
                    (Some((device_id, public_key)), Some(reason), _) => {
                        let grant = NewGrant {
                            device_id: device_id.clone(),
                            public_key: *public_key,
                            meta,
                            remote_ip: Some(remote_ip),
                            role,
                            scopes: granted.clone(),
                        };
                        let minted = self
                            .app
                            .store
                            .approve_silently(&grant, reason, token == TokenAction::Mint, &actor, now)
                            .await
                            .map_err(|e| ConnectError::internal(&e))?;
                        self.app.metrics.decision("silent_approve");
                        minted
                    }
                    (Some((device_id, _)), None, TokenAction::Mint) => Some(
                        self.app
                            .store
                            .issue_token(device_id, role, &actor, Some(&remote_ip), now)
                            .await
                            .map_err(|e| ConnectError::internal(&e))?,
                    ),
                    _ => None,
                };
                let auth_method = match auth_outcome {
                    AuthOutcome::DeviceToken => "device-token",
                    _ if self.app.secret.kind() == SecretKind::Password => "password",
                    _ => "token",
                };
                let mut auth_info = json!({ "method": auth_method, "role": role, "scopes": granted.names() });
                if let Some(minted) = &issued {
                    auth_info["deviceToken"] = json!(minted.expose());
                    auth_info["issuedAtMs"] = json!(now);
                } else if token == TokenAction::Echo
                    && let Some(presented) = auth.device_token.as_deref()
                {
                    auth_info["deviceToken"] = json!(presented);
                }
                if let Some((device_id, _)) = &device {
                    let token_used = auth_outcome == AuthOutcome::DeviceToken;
                    self.last_seen.note(device_id.clone(), role, token_used, now);
                }
                let hello = HelloOk(self.hello_ok(protocol, conn, auth_info));
                let who = Authenticated {
                    conn_id: conn.conn_id.clone(),
                    client_ip: conn.client.ip.to_string(),
                    role,
                    scopes: granted,
                    device_id: device.map(|(id, _)| id),
                    client_id: params.client.id,
                };
                Ok((who, hello))
            }
        }
    }

    /// A connect that presents a setup code's bootstrap token: the device proof is required, the limiter
    /// applies, and the store redeems the code or refuses (the client is told the same for every fault).
    #[allow(clippy::too_many_arguments)]
    async fn redeem(
        &self,
        conn: &ConnInfo,
        protocol: i64,
        info: &ClientInfo,
        (role, scopes): (Role, ScopeSet),
        bootstrap: &TokenSecret,
        proof: Option<Result<(DeviceId, crate::domain::PublicKey), crate::auth::identity::DeviceAuthError>>,
        now: i64,
    ) -> Result<(Authenticated, HelloOk), ConnectError> {
        let client = &conn.client;
        if let Some(retry_after_ms) = self.app.auth_locked_for(client, now) {
            return Err(auth_error(AuthFailure::RateLimited { retry_after_ms }, self.app.secret.kind()));
        }
        let (device_id, public_key) = match proof {
            Some(Ok(device)) => device,
            Some(Err(error)) => return Err(refusal_error(ConnectRefusal::DeviceAuth(error), self.app.secret.kind())),
            None => return Err(refusal_error(ConnectRefusal::DeviceIdentityRequired, self.app.secret.kind())),
        };
        let redemption = Redemption {
            token_digest: bootstrap.digest(),
            device_id: device_id.clone(),
            public_key,
            meta: ClientMeta {
                client_id: Some(info.id.clone()),
                client_mode: Some(info.mode.clone()),
                platform: info.platform.clone(),
                device_family: info.device_family.clone(),
                display_name: info.display_name.clone(),
            },
            remote_ip: Some(client.ip.to_string()),
            role,
            scopes: scopes.clone(),
        };
        let actor = Actor::Socket { conn_id: conn.conn_id.clone(), device_id: Some(device_id.to_string()) };
        let redeemed = match self.app.redeem_setup_code(&redemption, &actor, client).await {
            Ok(redeemed) => redeemed,
            Err(RedeemError::Invalid(_)) => return Err(bootstrap_error()),
            Err(RedeemError::Store(error)) => return Err(ConnectError::internal(&error)),
        };
        self.app.metrics.decision("setup_code");
        let mut tokens = redeemed.tokens.iter();
        let primary = tokens.next().expect("a redemption hands out the connecting role's token first");
        let mut auth_info = json!({
            "method": "bootstrap-token",
            "role": role,
            "scopes": scopes.names(),
            "deviceToken": primary.token.expose(),
            "issuedAtMs": now,
        });
        let handoff: Vec<Value> = tokens
            .map(|extra| {
                json!({ "deviceToken": extra.token.expose(), "role": extra.role, "scopes": extra.scopes.names(),
                        "issuedAtMs": now })
            })
            .collect();
        if !handoff.is_empty() {
            auth_info["deviceTokens"] = Value::Array(handoff);
        }
        // Seen now; its new token is not used until it presents it.
        self.last_seen.note(device_id.clone(), role, false, now);
        let hello = HelloOk(self.hello_ok(protocol, conn, auth_info));
        let who = Authenticated {
            conn_id: conn.conn_id.clone(),
            client_ip: client.ip.to_string(),
            role,
            scopes,
            device_id: Some(device_id),
            client_id: info.id.clone(),
        };
        Ok((who, hello))
    }

    fn hello_ok(&self, protocol: i64, conn: &ConnInfo, auth_info: Value) -> Value {
        let uptime_ms = (self.app.clock.now_ms() - self.app.started_at_ms).max(0);
        json!({
            "type": "hello-ok",
            "protocol": protocol,
            "server": { "version": env!("CARGO_PKG_VERSION"), "connId": conn.conn_id },
            "features": { "methods": Method::names(), "events": EVENTS },
            "snapshot": {
                "presence": [],
                "health": {},
                "stateVersion": { "presence": 0, "health": 0 },
                "uptimeMs": uptime_ms,
                "authMode": match self.app.secret.kind() { SecretKind::Token => "token", SecretKind::Password => "password" },
            },
            "policy": {
                "maxPayload": self.config.max_payload_bytes,
                "maxBufferedBytes": self.config.max_buffered_bytes,
                "tickIntervalMs": self.config.tick_interval.as_millis() as u64,
            },
            "auth": auth_info,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_negotiation_picks_the_highest_common_version() {
        assert_eq!(negotiate_protocol(3, 3).unwrap(), 3);
        assert_eq!(negotiate_protocol(4, 4).unwrap(), 4);
        assert_eq!(negotiate_protocol(3, 4).unwrap(), 4);
        assert_eq!(negotiate_protocol(1, 9).unwrap(), 4);
        for (min, max) in [(5, 6), (1, 2), (4, 3)] {
            let error = negotiate_protocol(min, max).unwrap_err();
            assert_eq!(error.close_code, close::PROTOCOL_ERROR);
            assert_eq!(error.error.details.unwrap()["code"], "PROTOCOL_MISMATCH");
        }
    }
}
