//! Setup codes (docs/protocol.md §12): minting one (its URL, access and QR code), redeeming one on connect,
//! revoking, the status of one, join codes, and device labels. Every front end mints and revokes through
//! here; the gateway's connect redeems through here.

use std::net::SocketAddr;

use serde_json::json;

use super::App;
use super::decisions::Caller;
use super::error::AppResult;
use crate::auth::locality::ClientAddr;
use crate::clock::Millis;
use crate::domain::setup::{GatewayUrl, JoinCode, SETUP_CODE_TTL_MS, SetupPayload};
use crate::domain::{DeviceId, Refusal, Role, SetupAccess, SetupFault, TokenSecret};
use crate::store::{Actor, AuditEvent, NewSetupCode, Redeemed, Redemption, SetupCode, StoreError, clean_label};

/// Where setup codes point devices.
#[derive(Clone, Debug)]
pub struct SetupConfig {
    /// `--public-url`: the address devices reach pairgate at.
    pub public_url: Option<String>,
    /// The WebSocket listener, whose address serves when it is neither loopback nor unspecified.
    pub listen: Option<SocketAddr>,
    /// How long a code may be redeemed.
    pub code_ttl_ms: Millis,
}

impl Default for SetupConfig {
    fn default() -> Self {
        SetupConfig { public_url: None, listen: None, code_ttl_ms: SETUP_CODE_TTL_MS }
    }
}

/// What an operator asks to mint.
#[derive(Clone, Debug)]
pub struct MintRequest {
    pub access: SetupAccess,
    /// A URL for this code alone (OpenClaw's `publicUrl` param), over the configured one.
    pub url: Option<String>,
    /// Also make a one-time join URL (node access only).
    pub join: bool,
}

/// A minted code. It holds the only copy of the secret: `Debug` shows none of it.
pub struct Minted {
    pub code: SetupCode,
    /// What the device redeems: base64url JSON of the URL, the bootstrap token and the expiry.
    pub setup_code: String,
    /// Where the URL came from: `request.publicUrl`, `pairgate.publicUrl` or `pairgate.listen`.
    pub url_source: &'static str,
    /// Full access was asked for a plaintext URL off loopback, and lowered to limited.
    pub access_downgraded: bool,
    pub join_url: Option<String>,
    /// The QR code of the setup code, as a PNG (`None` only if it could not be drawn).
    pub qr_png: Option<Vec<u8>>,
}

impl std::fmt::Debug for Minted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minted").field("code", &self.code).field("setup_code", &"<redacted>").finish()
    }
}

/// Why a redemption failed: a code that cannot be redeemed (the client is told the same whatever the
/// fault), or the store.
#[derive(Debug)]
pub enum RedeemError {
    Invalid(SetupFault),
    Store(StoreError),
}

impl App {
    /// The URL a code carries, and where it came from.
    fn setup_url(&self, requested: Option<&str>) -> AppResult<(GatewayUrl, &'static str)> {
        let (text, source) = match (requested, &self.config.setup.public_url, self.config.setup.listen) {
            (Some(url), _, _) => (url.to_owned(), "request.publicUrl"),
            (None, Some(url), _) => (url.clone(), "pairgate.publicUrl"),
            (None, None, Some(listen)) if !listen.ip().is_loopback() && !listen.ip().is_unspecified() => {
                (format!("ws://{listen}"), "pairgate.listen")
            }
            (None, None, listen) => {
                let loopback_only = listen.is_none_or(|listen| listen.ip().is_loopback());
                return Err(Refusal::NoPublicUrl { loopback_only }.into());
            }
        };
        let url = GatewayUrl::parse(&text).map_err(|error| Refusal::BadPublicUrl { reason: error.to_string() })?;
        Ok((url, source))
    }

    /// Mints a setup code: a new bootstrap token, stored as its digest, in a code the caller shows once.
    pub async fn mint_setup_code(&self, caller: &Caller<'_>, request: &MintRequest) -> AppResult<Minted> {
        if request.join && request.access != SetupAccess::Node {
            return Err(Refusal::JoinNeedsNodeAccess.into());
        }
        let (url, url_source) = self.setup_url(request.url.as_deref())?;
        let (access, access_downgraded) = url.access_for(request.access);
        let operator_scopes = access.scopes_for(Role::Operator);
        super::decisions::check_may_grant(caller, "setup code", access.roles(), &operator_scopes)?;
        let join = match request.join {
            true => {
                let base = url.join_base().ok_or(Refusal::JoinNeedsTls)?;
                let join = JoinCode::generate();
                Some((format!("{base}/j/{}", join.expose()), join))
            }
            false => None,
        };
        let token = TokenSecret::generate();
        let now = self.clock.now_ms();
        let expires_at_ms = now + self.config.setup.code_ttl_ms;
        // The code and its QR code are made before anything is stored: nothing minted goes unshown.
        let setup_code =
            SetupPayload { url: url.url.clone(), bootstrap_token: token.expose().to_owned(), expires_at_ms }.encode();
        let qr_png = super::qr::png(&setup_code);
        let new = NewSetupCode {
            setup_id: uuid::Uuid::new_v4().to_string(),
            token_digest: token.digest(),
            join_digest: join.as_ref().map(|(_, join)| join.digest()),
            access,
            gateway_url: url.url.clone(),
            issued_at_ms: now,
            expires_at_ms,
        };
        let code = self.store.create_setup_code(&new, &caller.actor, caller.remote_addr.as_deref(), now).await?;
        tracing::info!(actor = %caller.actor.label(), setup = %code.setup_id, access = %access, url = %url.url,
            "setup code minted");
        Ok(Minted { code, setup_code, qr_png, url_source, access_downgraded, join_url: join.map(|(url, _)| url) })
    }

    /// Redeems a setup code for a connect whose device proof verified. A refusal counts as a failed
    /// authentication of `client` and is audited (in a write of its own: the refused redemption wrote
    /// nothing); a success is announced as `device.pair.setup.completed`.
    pub async fn redeem_setup_code(
        &self,
        redemption: &Redemption,
        actor: &Actor,
        client: &ClientAddr,
    ) -> Result<Redeemed, RedeemError> {
        let now = self.clock.now_ms();
        match self.store.redeem_setup_code(redemption, actor, now).await {
            Ok(redeemed) => {
                let code = &redeemed.code;
                tracing::info!(setup = %code.setup_id, device = %redemption.device_id, access = %code.access,
                    "setup code redeemed");
                let device_id = redemption.device_id.as_str();
                self.announce_setup_completed(
                    &code.setup_id,
                    device_id,
                    redeemed.device_name.as_deref(),
                    code.access,
                    now,
                );
                if let Some(request_id) = &redeemed.resolved_request {
                    self.announce_resolution(request_id, device_id, "approved");
                }
                Ok(redeemed)
            }
            Err(StoreError::Refused(Refusal::SetupCodeInvalid { fault })) => {
                tracing::warn!(device = %redemption.device_id, client = %client.ip, fault = fault.as_str(),
                    "setup code refused");
                self.record_auth_failure(client, now).await;
                let event = AuditEvent::new(actor, "setup.refuse", now)
                    .subject(redemption.device_id.as_str())
                    .remote(redemption.remote_ip.as_deref())
                    .details(json!({ "fault": fault.as_str(), "role": redemption.role,
                                     "scopes": redemption.scopes.names() }));
                if let Err(error) = self.store.record_audit(&event).await {
                    tracing::error!(%error, "could not audit a refused setup code");
                }
                Err(RedeemError::Invalid(fault))
            }
            Err(error) => Err(RedeemError::Store(error)),
        }
    }

    /// Tells pairing sockets and the admin page that a code was redeemed (here, or elsewhere in the fleet).
    pub(super) fn announce_setup_completed(
        &self,
        setup_id: &str,
        device_id: &str,
        device_name: Option<&str>,
        access: SetupAccess,
        at_ms: Millis,
    ) {
        let mut payload =
            json!({ "setupId": setup_id, "deviceId": device_id, "access": access.openclaw_label(), "ts": at_ms });
        if let Some(name) = device_name {
            payload["deviceName"] = json!(name);
        }
        self.live.broadcast("device.pair.setup.completed", payload);
    }

    /// Revokes an unused setup code.
    pub async fn revoke_setup_code(&self, caller: &Caller<'_>, setup_id: &str) -> AppResult<SetupCode> {
        let remote = caller.remote_addr.as_deref();
        let code = self.store.revoke_setup_code(setup_id, &caller.actor, remote, self.clock.now_ms()).await?;
        tracing::info!(actor = %caller.actor.label(), setup = %setup_id, "setup code revoked");
        Ok(code)
    }

    /// The setup payload of a join code, the first time it is fetched; `None` ever after, and for an
    /// unknown, used, revoked or expired code.
    pub async fn fetch_join_code(&self, shortcode: &str, client: &ClientAddr) -> AppResult<Option<SetupPayload>> {
        let Some(join) = JoinCode::parse(shortcode) else { return Ok(None) };
        let ip = client.ip.to_string();
        // A token made now: whoever saw the URL or the minted code after this fetch holds nothing.
        let token = TokenSecret::generate();
        let code = self.store.fetch_join_code(&join.digest(), &token.digest(), Some(&ip), self.clock.now_ms()).await?;
        Ok(code.map(|code| SetupPayload {
            url: code.gateway_url,
            bootstrap_token: token.expose().to_owned(),
            expires_at_ms: code.expires_at_ms,
        }))
    }

    /// A join URL fetch that handed nothing out (a query string, or a code unknown, spent, revoked or
    /// expired): counted toward the lockout and audited, never naming the code.
    pub async fn join_fetch_refused(&self, client: &ClientAddr) {
        let now = self.clock.now_ms();
        self.record_auth_failure(client, now).await;
        let ip = client.ip.to_string();
        let event = AuditEvent::new(&Actor::System, "setup.join.refuse", now).remote(Some(&ip));
        if let Err(error) = self.store.record_audit(&event).await {
            tracing::error!(%error, "could not audit a refused join fetch");
        }
    }

    /// Sets the operator's label of a device (`device.pair.rename`). A device may rename only itself, and
    /// only when it holds no node role, unless it holds `operator.admin`. A caller without a device identity
    /// holds the gateway secret (remote ones get no scopes), as for removal and rotation (`check_may_manage`).
    pub async fn rename_device(&self, caller: &Caller<'_>, device_id: &DeviceId, label: &str) -> AppResult<String> {
        let label = clean_label(label).ok_or(Refusal::BadLabel)?;
        if let (Some(held), Some(own)) = (caller.scopes, caller.device_id)
            && !held.allows(crate::domain::Scope::Admin)
        {
            let device = self.store.device(device_id).await?;
            let node = device.is_some_and(|d| d.grant(Role::Node).is_some());
            if own != device_id || node {
                return Err(Refusal::RenameDenied.into());
            }
        }
        let remote = caller.remote_addr.as_deref();
        self.store.set_device_label(device_id, &label, &caller.actor, remote, self.clock.now_ms()).await?;
        self.live.broadcast("device.pair.changed", json!({}));
        Ok(label)
    }

    /// Setup codes expired past their retention are forgotten; runs with the expiry sweep.
    pub(super) async fn purge_setup_codes(&self) {
        if let Err(error) = self.store.purge_setup_codes(self.clock.now_ms()).await {
            tracing::warn!(%error, "could not purge old setup codes");
        }
    }
}
