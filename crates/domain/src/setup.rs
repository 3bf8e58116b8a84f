//! Setup codes (OpenClaw's bootstrap tokens, docs/protocol.md §12): what an operator mints so that the
//! device that redeems it is paired at once with bounded access. The access levels, the scopes each hands
//! off, the code's encoding, the rules for the URL it carries, and why a redemption is refused.

use std::fmt;
use std::net::IpAddr;

use crate::clock::Millis;
use crate::{Role, Scope, ScopeSet, TokenSecret};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};

/// How long a setup code may be redeemed (OpenClaw's `DEVICE_BOOTSTRAP_TOKEN_TTL_MS`).
pub const SETUP_CODE_TTL_MS: Millis = 10 * 60 * 1000;

/// What a redeemed code pairs the device for (OpenClaw's bootstrap profiles).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SetupAccess {
    /// Node, and operator with everything a phone app needs, `operator.admin` included.
    Full,
    /// As full, without `operator.admin`.
    Limited,
    /// The node role alone (`openclaw node run --pair`, join codes).
    Node,
    /// Node, and operator with reading and talking (voice satellites).
    VoiceNode,
}

impl SetupAccess {
    pub const ALL: [SetupAccess; 4] =
        [SetupAccess::Full, SetupAccess::Limited, SetupAccess::Node, SetupAccess::VoiceNode];

    /// The name pairgate stores and shows.
    pub fn as_str(self) -> &'static str {
        match self {
            SetupAccess::Full => "full",
            SetupAccess::Limited => "limited",
            SetupAccess::Node => "node",
            SetupAccess::VoiceNode => "voice-node",
        }
    }

    /// The stored name, or the CLI's short `voice`.
    pub fn parse(text: &str) -> Option<SetupAccess> {
        match text {
            "voice" => Some(SetupAccess::VoiceNode),
            _ => SetupAccess::ALL.into_iter().find(|access| access.as_str() == text),
        }
    }

    /// What OpenClaw's `access` field says: it has no word for voice-node, which it reports as limited.
    pub fn openclaw_label(self) -> &'static str {
        match self {
            SetupAccess::VoiceNode => "limited",
            other => other.as_str(),
        }
    }

    /// The roles a redemption pairs, the primary (node) first.
    pub fn roles(self) -> &'static [Role] {
        match self {
            SetupAccess::Node => &[Role::Node],
            _ => &[Role::Node, Role::Operator],
        }
    }

    /// The scopes handed off for `role`: none for node, the level's operator scopes for operator. Never
    /// `operator.pairing`; `operator.admin` only at full access.
    pub fn scopes_for(self, role: Role) -> ScopeSet {
        let names: &[Scope] = match (self, role) {
            (_, Role::Node) | (SetupAccess::Node, Role::Operator) => &[],
            (SetupAccess::Full, Role::Operator) => {
                &[Scope::Admin, Scope::Approvals, Scope::Questions, Scope::Read, Scope::TalkSecrets, Scope::Write]
            }
            (SetupAccess::Limited, Role::Operator) => {
                &[Scope::Approvals, Scope::Questions, Scope::Read, Scope::TalkSecrets, Scope::Write]
            }
            (SetupAccess::VoiceNode, Role::Operator) => &[Scope::Read, Scope::Talk],
        };
        names.iter().copied().collect()
    }

    /// Whether a connect as `role` asking `scopes` may redeem a code of this access.
    pub fn allows(self, role: Role, scopes: &ScopeSet) -> bool {
        self.roles().contains(&role) && self.scopes_for(role).covers(scopes)
    }
}

impl fmt::Display for SetupAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a redemption was refused. The client is told the same for every one (OpenClaw's
/// `AUTH_BOOTSTRAP_TOKEN_INVALID`); the audit trail says which.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetupFault {
    Unknown,
    Expired,
    AlreadyUsed,
    Revoked,
    /// The connect asked for a role or scopes the code does not carry.
    OutsideAccess,
}

impl SetupFault {
    pub fn as_str(self) -> &'static str {
        match self {
            SetupFault::Unknown => "unknown",
            SetupFault::Expired => "expired",
            SetupFault::AlreadyUsed => "already-used",
            SetupFault::Revoked => "revoked",
            SetupFault::OutsideAccess => "outside-access",
        }
    }
}

/// Where a setup code stands at a moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetupState {
    Unused,
    Redeemed,
    Revoked,
    Expired,
}

impl SetupState {
    pub fn as_str(self) -> &'static str {
        match self {
            SetupState::Unused => "unused",
            SetupState::Redeemed => "redeemed",
            SetupState::Revoked => "revoked",
            SetupState::Expired => "expired",
        }
    }

    /// The state of a code from its stored times: a redemption or revocation stands whatever the time.
    pub fn of(redeemed: bool, revoked: bool, expires_at_ms: Millis, now_ms: Millis) -> SetupState {
        match (redeemed, revoked) {
            (true, _) => SetupState::Redeemed,
            (_, true) => SetupState::Revoked,
            _ if now_ms >= expires_at_ms => SetupState::Expired,
            _ => SetupState::Unused,
        }
    }

    /// The refusal of a redemption in this state, `None` when it may go on.
    pub fn fault(self) -> Option<SetupFault> {
        match self {
            SetupState::Unused => None,
            SetupState::Redeemed => Some(SetupFault::AlreadyUsed),
            SetupState::Revoked => Some(SetupFault::Revoked),
            SetupState::Expired => Some(SetupFault::Expired),
        }
    }
}

/// What a setup code carries: OpenClaw's setup payload. `Debug` hides the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetupPayload {
    pub url: String,
    pub bootstrap_token: String,
    pub expires_at_ms: Millis,
}

impl fmt::Debug for SetupPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SetupPayload")
            .field("url", &self.url)
            .field("bootstrap_token", &"<redacted>")
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

impl SetupPayload {
    /// The setup code: the payload's JSON, base64url without padding (what the QR code holds).
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).expect("a setup payload serializes"))
    }

    /// Reads a setup code back, with or without OpenClaw's `oc-pair://` prefix.
    pub fn decode(code: &str) -> Option<SetupPayload> {
        let code = code.trim();
        let code = match code.get(..10) {
            Some(prefix) if prefix.eq_ignore_ascii_case("oc-pair://") => &code[10..],
            _ => code,
        };
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(code).ok()?).ok()
    }
}

/// A join code's short code: 128 random bits, base64url (22 characters), fetched once at `/j/<code>`.
/// Only its digest is stored. The fetch hands out a bootstrap token made at that moment, so the URL is
/// worth nothing once fetched.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinCode(String);

impl JoinCode {
    pub fn generate() -> JoinCode {
        let mut bytes = [0u8; 16];
        OsRng.fill_bytes(&mut bytes);
        JoinCode(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// A presented short code, when it has the form of one.
    pub fn parse(text: &str) -> Option<JoinCode> {
        let well_formed = text.len() == 22 && text.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
        well_formed.then(|| JoinCode(text.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What the store keeps to find it.
    pub fn digest(&self) -> crate::TokenDigest {
        TokenSecret::from_presented(self.0.clone()).digest()
    }
}

impl fmt::Debug for JoinCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JoinCode(<redacted>)")
    }
}

/// The longest URL a setup code carries (bytes): the code must fit a QR code a phone can read.
pub const MAX_URL_BYTES: usize = 512;

/// Why a URL cannot go in a setup code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SetupUrlError {
    #[error("the public URL is too long: {0} bytes (at most 512)")]
    TooLong(usize),
    #[error("the public URL is not a ws://, wss://, http:// or https:// URL with a host: {0}")]
    Invalid(String),
    #[error("the public URL must not carry a user name, password, query or fragment")]
    HasExtras,
    /// OpenClaw's mobile URL policy: a bootstrap token does not cross the internet in clear.
    #[error(
        "a ws:// public URL must be loopback, a private LAN address or a .local host; use wss:// (a TLS proxy) for anything else"
    )]
    Insecure,
}

/// A URL as it goes in a setup code: `ws` or `wss`, `scheme://host[:port][path]` with no trailing slash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayUrl {
    pub url: String,
    pub tls: bool,
    /// Loopback host: plaintext is as safe as the machine.
    pub loopback: bool,
}

impl GatewayUrl {
    /// Normalises a URL as OpenClaw does (`http`→`ws`, `https`→`wss`, a bare `host:port` is `ws`) and
    /// applies its policy on plaintext.
    pub fn parse(text: &str) -> Result<GatewayUrl, SetupUrlError> {
        let text = text.trim();
        if text.len() > MAX_URL_BYTES {
            return Err(SetupUrlError::TooLong(text.len()));
        }
        let invalid = || SetupUrlError::Invalid(text.chars().take(200).collect());
        let (scheme, rest) = match text.split_once("://") {
            Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
            None => ("ws".to_owned(), text),
        };
        let tls = match scheme.as_str() {
            "ws" | "http" => false,
            "wss" | "https" => true,
            _ => return Err(invalid()),
        };
        let (authority, path) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        if authority.contains('@') || path.contains(['?', '#']) || authority.contains(['?', '#']) {
            return Err(SetupUrlError::HasExtras);
        }
        let (host, port) = split_host_port(authority).ok_or_else(invalid)?;
        if port == Some(0) || !path.bytes().all(|c| c.is_ascii_graphic()) {
            return Err(invalid());
        }
        let host = host.to_ascii_lowercase();
        // `[v6]`, a dotted IPv4 address, or a DNS name of letters, digits and inner hyphens.
        let (bare, ip) = match host.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')) {
            Some(v6) => (v6, Some(IpAddr::V6(v6.parse().map_err(|_| invalid())?))),
            None => (host.as_str(), host.parse::<IpAddr>().ok()),
        };
        let dns_label = |label: &str| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        };
        if ip.is_none() && !(bare.len() <= 253 && bare.split('.').all(dns_label)) {
            return Err(invalid());
        }
        let loopback = host == "localhost" || ip.is_some_and(|ip| ip.is_loopback());
        if !tls && !loopback && !private_host(bare, ip) {
            return Err(SetupUrlError::Insecure);
        }
        let path = path.trim_end_matches('/');
        let port = port.map(|port| format!(":{port}")).unwrap_or_default();
        let scheme = if tls { "wss" } else { "ws" };
        Ok(GatewayUrl { url: format!("{scheme}://{host}{port}{path}"), tls, loopback })
    }

    /// The access a code for this URL gets: full access only over TLS or on loopback (OpenClaw's
    /// `accessDowngraded`); returns the access and whether it was lowered.
    pub fn access_for(&self, asked: SetupAccess) -> (SetupAccess, bool) {
        match asked {
            SetupAccess::Full if !self.tls && !self.loopback => (SetupAccess::Limited, true),
            other => (other, false),
        }
    }

    /// The HTTP base of join URLs: `https` for `wss`, `http` only on loopback (a join code hands out its
    /// token to whoever fetches it).
    pub fn join_base(&self) -> Option<String> {
        if self.tls {
            Some(format!("https{}", &self.url[3..]))
        } else if self.loopback {
            Some(format!("http{}", &self.url[2..]))
        } else {
            None
        }
    }
}

fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    if let Some(end) = authority.strip_prefix('[').and_then(|rest| rest.find(']')) {
        let (host, rest) = authority.split_at(end + 2);
        return match rest.strip_prefix(':') {
            Some(port) => Some((host, Some(port.parse().ok()?))),
            None if rest.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Some((host, Some(port.parse().ok()?))),
        Some(_) => None,
        None => Some((authority, None)),
    }
}

/// Hosts where plaintext stays on a network the operator controls (OpenClaw's list).
fn private_host(host: &str, ip: Option<IpAddr>) -> bool {
    match ip {
        Some(IpAddr::V4(v4)) => v4.is_private() || v4.is_link_local() || v4.octets() == [10, 0, 2, 2],
        Some(IpAddr::V6(v6)) => {
            let first = v6.segments()[0];
            (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
        None => host.ends_with(".local"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(access: SetupAccess, role: Role) -> Vec<&'static str> {
        access.scopes_for(role).names()
    }

    #[test]
    fn access_levels_hand_off_openclaws_scopes_and_never_pairing() {
        let full = ["operator.admin", "operator.approvals", "operator.questions", "operator.read"];
        assert_eq!(names(SetupAccess::Full, Role::Operator)[..4], full);
        assert_eq!(names(SetupAccess::Full, Role::Operator).len(), 6);
        assert!(!names(SetupAccess::Limited, Role::Operator).contains(&"operator.admin"));
        assert_eq!(names(SetupAccess::Limited, Role::Operator).len(), 5);
        assert_eq!(names(SetupAccess::VoiceNode, Role::Operator), ["operator.read", "operator.talk"]);
        assert!(names(SetupAccess::Node, Role::Operator).is_empty());
        for access in SetupAccess::ALL {
            assert!(names(access, Role::Node).is_empty());
            assert!(!access.scopes_for(Role::Operator).contains(Scope::Pairing), "{access}");
            assert_eq!(access.roles()[0], Role::Node);
            assert_eq!(SetupAccess::parse(access.as_str()), Some(access));
        }
        assert_eq!(SetupAccess::parse("voice"), Some(SetupAccess::VoiceNode));
        assert_eq!(SetupAccess::parse("admin"), None);
        assert_eq!(SetupAccess::VoiceNode.openclaw_label(), "limited");
    }

    #[test]
    fn a_redemption_asks_within_the_access() {
        let read: ScopeSet = [Scope::Read].into_iter().collect();
        let pairing: ScopeSet = [Scope::Pairing].into_iter().collect();
        let admin: ScopeSet = [Scope::Admin].into_iter().collect();
        let none = ScopeSet::new();
        for (access, role, scopes, allowed) in [
            (SetupAccess::Node, Role::Node, &none, true),
            (SetupAccess::Node, Role::Operator, &none, false),
            (SetupAccess::Node, Role::Operator, &read, false),
            (SetupAccess::Full, Role::Node, &none, true),
            (SetupAccess::Full, Role::Operator, &admin, true),
            // Never handed off by name, but full access's operator.admin implies it, as it implies every scope.
            (SetupAccess::Full, Role::Operator, &pairing, true),
            (SetupAccess::Limited, Role::Operator, &pairing, false),
            (SetupAccess::Limited, Role::Operator, &read, true),
            (SetupAccess::Limited, Role::Operator, &admin, false),
            (SetupAccess::VoiceNode, Role::Operator, &read, true),
            (SetupAccess::VoiceNode, Role::Operator, &admin, false),
        ] {
            assert_eq!(access.allows(role, scopes), allowed, "{access} {role:?} {:?}", scopes.names());
        }
    }

    #[test]
    fn states_and_their_faults() {
        assert_eq!(SetupState::of(false, false, 10, 9), SetupState::Unused);
        assert_eq!(SetupState::of(false, false, 10, 10), SetupState::Expired);
        assert_eq!(SetupState::of(true, false, 10, 99), SetupState::Redeemed);
        assert_eq!(SetupState::of(false, true, 10, 1), SetupState::Revoked);
        assert_eq!(SetupState::Unused.fault(), None);
        assert_eq!(SetupState::Redeemed.fault(), Some(SetupFault::AlreadyUsed));
    }

    #[test]
    fn the_code_is_base64url_json_in_openclaws_key_order() {
        let payload = SetupPayload {
            url: "ws://127.0.0.1:18789".into(),
            bootstrap_token: "tok".into(),
            expires_at_ms: 1_767_000_000_000,
        };
        let code = payload.encode();
        let json = String::from_utf8(URL_SAFE_NO_PAD.decode(&code).unwrap()).unwrap();
        assert_eq!(json, r#"{"url":"ws://127.0.0.1:18789","bootstrapToken":"tok","expiresAtMs":1767000000000}"#);
        assert!(code.starts_with("eyJ1cmwiOiJ3czovLzEyNy4wLjAuMToxODc4OSIsImJvb3RzdHJhcFRva2VuIjoi"));
        assert_eq!(SetupPayload::decode(&code), Some(payload.clone()));
        assert_eq!(SetupPayload::decode(&format!("OC-PAIR://{code}")), Some(payload.clone()));
        assert_eq!(SetupPayload::decode("not a code"), None);
        assert!(!format!("{payload:?}").contains("tok\""));
    }

    #[test]
    fn join_codes_are_random_and_hidden() {
        let code = JoinCode::generate();
        assert_eq!(code.expose().len(), 22);
        assert_eq!(JoinCode::parse(code.expose()), Some(code.clone()));
        assert_ne!(code, JoinCode::generate());
        assert_eq!(code.digest(), JoinCode::parse(code.expose()).unwrap().digest());
        for bad in ["short", "aaaaaaaaaaaaaaaaaaaaa/", "aaaaaaaaaaaaaaaaaaaaaaa"] {
            assert_eq!(JoinCode::parse(bad), None, "{bad}");
        }
        assert!(!format!("{code:?}").contains(code.expose()));
    }

    #[test]
    fn urls_are_normalised_as_openclaw_does_and_plaintext_stays_private() {
        for (input, url) in [
            ("ws://127.0.0.1:18789", "ws://127.0.0.1:18789"),
            ("http://127.0.0.1:18789/", "ws://127.0.0.1:18789"),
            ("https://gw.example.com", "wss://gw.example.com"),
            ("WSS://GW.Example.com:8443/ctx/", "wss://gw.example.com:8443/ctx"),
            ("192.168.1.20:18789", "ws://192.168.1.20:18789"),
            ("ws://[::1]:9", "ws://[::1]:9"),
            ("ws://pi.local:18789", "ws://pi.local:18789"),
            ("ws://10.0.2.2:18789", "ws://10.0.2.2:18789"),
            ("ws://localhost:1", "ws://localhost:1"),
        ] {
            assert_eq!(GatewayUrl::parse(input).map(|u| u.url), Ok(url.to_owned()), "{input}");
        }
        let long = format!("wss://gw.example.com/{}", "a".repeat(600));
        assert_eq!(GatewayUrl::parse(&long), Err(SetupUrlError::TooLong(long.len())));
        for (input, error) in [
            ("ws://gw.example.com", SetupUrlError::Insecure),
            ("ws://100.100.1.1:18789", SetupUrlError::Insecure),
            ("ws://8.8.8.8:1", SetupUrlError::Insecure),
            ("wss://user:pw@gw.example.com", SetupUrlError::HasExtras),
            ("wss://gw.example.com/?a=1", SetupUrlError::HasExtras),
            ("ftp://x", SetupUrlError::Invalid("ftp://x".into())),
            ("wss://", SetupUrlError::Invalid("wss://".into())),
            ("wss://host:99999", SetupUrlError::Invalid("wss://host:99999".into())),
            ("wss://bad host", SetupUrlError::Invalid("wss://bad host".into())),
            ("wss://[", SetupUrlError::Invalid("wss://[".into())),
            ("wss://[foo]", SetupUrlError::Invalid("wss://[foo]".into())),
            ("ws://[x.local]", SetupUrlError::Invalid("ws://[x.local]".into())),
            ("wss://ab[c]", SetupUrlError::Invalid("wss://ab[c]".into())),
            ("wss://a..b", SetupUrlError::Invalid("wss://a..b".into())),
            ("wss://-a.com", SetupUrlError::Invalid("wss://-a.com".into())),
            ("wss://host:0", SetupUrlError::Invalid("wss://host:0".into())),
            ("wss://ünïcode.com", SetupUrlError::Invalid("wss://ünïcode.com".into())),
        ] {
            assert_eq!(GatewayUrl::parse(input), Err(error), "{input}");
        }
    }

    #[test]
    fn full_access_needs_tls_or_loopback_and_join_urls_too() {
        let lan = GatewayUrl::parse("ws://192.168.1.2:1").unwrap();
        assert_eq!(lan.access_for(SetupAccess::Full), (SetupAccess::Limited, true));
        assert_eq!(lan.access_for(SetupAccess::Node), (SetupAccess::Node, false));
        assert_eq!(lan.join_base(), None);
        let local = GatewayUrl::parse("ws://127.0.0.1:5").unwrap();
        assert_eq!(local.access_for(SetupAccess::Full), (SetupAccess::Full, false));
        assert_eq!(local.join_base().as_deref(), Some("http://127.0.0.1:5"));
        let tls = GatewayUrl::parse("wss://gw.example.com/ctx").unwrap();
        assert_eq!(tls.join_base().as_deref(), Some("https://gw.example.com/ctx"));
    }
}
