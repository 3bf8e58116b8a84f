//! The policy's guarantees as properties: they hold for every generated connect, not only the table's rows.
//!
//! Each property is named (P1, P2, …) and checked by `check`, which both property tests call: one feeds
//! `decide` arbitrary facts (any auth outcome, however inconsistent with the stored record), the other feeds
//! it what `authenticate` made of arbitrary credentials, the way the handshake does.
//!
//! - **P1** a connect authenticated by a device token never ends with scopes beyond that token's scopes, and
//!   never changes a grant: no silent approval, no minted token.
//! - **P2** a remote or browser connect never ends with scopes beyond its approved grant.
//! - **P3** every silent approval is local, not a browser, authenticated by the shared secret, of a proven
//!   device, and only with `auto_approve_local`.
//! - **P4** scopes beyond the approved grant come only from a silent approval (P3) or one of the two
//!   deliberate local paths, both local, not a browser: the gateway's own `gateway-client`/`backend`
//!   (docs/protocol.md §8), and a shared-secret connect without a device identity (`openclaw devices …`).
//! - **P5** a connect never ends with a scope it did not ask for.
//! - **P6** a failed authentication is refused with that failure; a refused device proof with its error.
//! - **P7** a pairing request is stored only for a proven device that authenticated.
//! - **P8** a token is echoed only to a device-token connect, and minted only for a proven device that
//!   authenticated by the shared secret.
//! - **P9** less trust never yields more: the same connect made remote, or from a browser, is allowed only
//!   if the trusted one is, and with no more scopes.
//! - **P10** `authenticate` answers `DeviceToken` only for the live, unrevoked token of a proven, not
//!   removed device for the asked role, covering every asked scope, and `SharedSecret` only for the right
//!   secret; a locked-out client is refused whatever it presents.

use proptest::prelude::*;

use super::*;
use crate::domain::{ClientMeta, Grant, Scope, TokenInfo, TokenSecret};

const CLIENTS: [(&str, &str); 5] = [
    ("cli", "cli"),
    ("gateway-client", "backend"),
    ("gateway-client", "cli"),
    ("openclaw-control-ui", "ui"),
    ("node-host", "node"),
];
const PLATFORMS: [Option<&str>; 5] = [None, Some(""), Some("linux"), Some(" LINUX "), Some("darwin")];
const DEVICE_ERRORS: [DeviceAuthError; 5] = [
    DeviceAuthError::PublicKeyInvalid,
    DeviceAuthError::DeviceIdMismatch,
    DeviceAuthError::NonceMismatch,
    DeviceAuthError::SignatureExpired,
    DeviceAuthError::SignatureInvalid,
];

fn key() -> PublicKey {
    PublicKey::from_bytes([5; 32])
}

fn other_key() -> PublicKey {
    PublicKey::from_bytes([6; 32])
}

fn presented_digest() -> TokenDigest {
    TokenSecret::from_presented("presented-device-token").digest()
}

fn scope_set() -> impl Strategy<Value = ScopeSet> {
    any::<u8>().prop_map(|bits| {
        Scope::ALL.into_iter().enumerate().filter(|(i, _)| bits & (1 << i) != 0).map(|(_, s)| s).collect()
    })
}

/// An ask: often empty or a single scope, so that it is often within a grant or a token.
fn ask() -> impl Strategy<Value = ScopeSet> {
    prop_oneof![
        2 => scope_set(),
        1 => Just(ScopeSet::new()),
        1 => prop::sample::select(&Scope::ALL[..]).prop_map(|scope| [scope].into_iter().collect()),
    ]
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Operator), Just(Role::Node)]
}

fn platform() -> impl Strategy<Value = Option<String>> {
    prop::sample::select(&PLATFORMS[..]).prop_map(|p| p.map(str::to_owned))
}

/// A stored token: its scopes, whether it was revoked, whether it is the one presented.
fn token_for(role: Role) -> impl Strategy<Value = Option<TokenInfo>> {
    let token = (scope_set(), prop::bool::weighted(0.2), prop::bool::weighted(0.8));
    prop::option::weighted(0.8, token).prop_map(move |token| {
        token.map(|(scopes, revoked, matches)| TokenInfo {
            role,
            digest: if matches { presented_digest() } else { TokenSecret::from_presented("another").digest() },
            scopes,
            issued_at_ms: 1,
            rotated_at_ms: None,
            revoked_at_ms: revoked.then_some(2),
            last_used_at_ms: None,
        })
    })
}

fn record() -> impl Strategy<Value = DeviceRecord> {
    (
        prop::bool::weighted(0.9),
        prop::bool::weighted(0.15),
        (platform(), platform()),
        prop::option::of(scope_set()),
        prop::option::of(scope_set()),
        token_for(Role::Operator),
        token_for(Role::Node),
    )
        .prop_map(|(same_key, removed, (platform, device_family), operator, node, operator_token, node_token)| {
            let public_key = if same_key { key() } else { other_key() };
            let grant = |role, scopes: Option<ScopeSet>| scopes.map(|scopes| Grant { role, scopes, approved_at_ms: 1 });
            DeviceRecord {
                device_id: DeviceId::from_public_key(&key()),
                public_key,
                meta: ClientMeta { platform, device_family, ..ClientMeta::default() },
                remote_ip: None,
                approved_via: Some("operator".into()),
                created_at_ms: 1,
                approved_at_ms: Some(1),
                last_seen_at_ms: None,
                removed_at_ms: removed.then_some(3),
                label: None,
                grants: [grant(Role::Operator, operator), grant(Role::Node, node)].into_iter().flatten().collect(),
                tokens: [operator_token, node_token].into_iter().flatten().collect(),
            }
        })
}

/// The device part of a connect, before borrowing the record: absent, a failed proof, or proven.
#[derive(Clone, Debug)]
enum Claim {
    Absent,
    Invalid(DeviceAuthError),
    Proven { platform: Option<String>, device_family: Option<String>, stored: Option<Box<DeviceRecord>> },
}

fn claim() -> impl Strategy<Value = Claim> {
    prop_oneof![
        1 => Just(Claim::Absent),
        1 => prop::sample::select(&DEVICE_ERRORS[..]).prop_map(Claim::Invalid),
        6 => (platform(), platform(), prop::option::weighted(0.8, record().prop_map(Box::new)))
            .prop_map(|(platform, device_family, stored)| Claim::Proven { platform, device_family, stored }),
    ]
}

fn auth_outcome() -> impl Strategy<Value = AuthOutcome> {
    prop_oneof![
        4 => Just(AuthOutcome::SharedSecret),
        4 => Just(AuthOutcome::DeviceToken),
        1 => Just(AuthOutcome::DeviceUnverified),
        1 => prop_oneof![
            Just(AuthFailure::Missing),
            Just(AuthFailure::TokenMismatch),
            Just(AuthFailure::PasswordMismatch),
            Just(AuthFailure::DeviceTokenMismatch),
            (1..1_000_000i64).prop_map(|retry_after_ms| AuthFailure::RateLimited { retry_after_ms }),
        ]
        .prop_map(AuthOutcome::Failed),
    ]
}

/// One connect's facts, owned.
#[derive(Clone, Debug)]
struct Connect {
    local: bool,
    browser: bool,
    client: (&'static str, &'static str),
    role: Role,
    ask: ScopeSet,
    claim: Claim,
    auto_approve_local: bool,
}

fn connect() -> impl Strategy<Value = Connect> {
    (any::<bool>(), any::<bool>(), prop::sample::select(&CLIENTS[..]), role(), ask(), claim(), any::<bool>()).prop_map(
        |(local, browser, client, role, ask, claim, auto_approve_local)| Connect {
            local,
            browser,
            client,
            role,
            ask,
            claim,
            auto_approve_local,
        },
    )
}

impl Connect {
    fn stored(&self) -> Option<&DeviceRecord> {
        match &self.claim {
            Claim::Proven { stored, .. } => stored.as_deref(),
            _ => None,
        }
    }

    fn facts(&self, auth: AuthOutcome) -> ConnectFacts<'_> {
        let device = match &self.claim {
            Claim::Absent => DeviceClaim::Absent,
            Claim::Invalid(error) => DeviceClaim::Invalid(*error),
            Claim::Proven { platform, device_family, stored } => DeviceClaim::Proven {
                device: ProvenDevice {
                    device_id: DeviceId::from_public_key(&key()),
                    public_key: key(),
                    platform: platform.clone(),
                    device_family: device_family.clone(),
                },
                stored: stored.as_deref(),
            },
        };
        ConnectFacts {
            local: self.local,
            browser: self.browser,
            client_id: self.client.0,
            client_mode: self.client.1,
            role: self.role,
            scopes: &self.ask,
            auth,
            device,
        }
    }

    fn config(&self) -> PolicyConfig {
        PolicyConfig { auto_approve_local: self.auto_approve_local }
    }

    /// The scopes an operator approved for this very device (same key, not removed) and role.
    fn approved(&self) -> ScopeSet {
        self.stored()
            .filter(|record| record.removed_at_ms.is_none() && record.public_key == key())
            .and_then(|record| record.grant(self.role))
            .map(|grant| grant.scopes.clone())
            .unwrap_or_default()
    }

    /// The scopes of the live token of this device and role, if it has one.
    fn token_scopes(&self) -> Option<ScopeSet> {
        self.stored()
            .filter(|record| record.removed_at_ms.is_none())
            .and_then(|record| record.live_token(self.role))
            .map(|token| token.scopes.clone())
    }

    fn proven(&self) -> bool {
        matches!(self.claim, Claim::Proven { .. })
    }

    fn is_backend(&self) -> bool {
        self.client == ("gateway-client", "backend")
    }
}

fn subset(inner: &ScopeSet, outer: &ScopeSet) -> bool {
    inner.iter().all(|scope| outer.contains(scope))
}

/// Every property of `decide` for one connect and the auth outcome it was given.
fn check(connect: &Connect, auth: AuthOutcome) -> Result<(), TestCaseError> {
    let decision = decide(&connect.facts(auth), &connect.config());
    let trusted = connect.local && !connect.browser;
    match &decision {
        Decision::Allow { scopes, silent_approval, token } => {
            if auth == AuthOutcome::DeviceToken {
                let within = connect.token_scopes().is_some_and(|held| held.covers(scopes));
                prop_assert!(within, "P1: device token connect got {scopes:?} beyond its token");
                prop_assert!(silent_approval.is_none(), "P1: device token connect approved silently");
                prop_assert!(*token != TokenAction::Mint, "P1: device token connect minted a token");
            }
            if !trusted {
                prop_assert!(
                    connect.approved().covers(scopes),
                    "P2: untrusted connect got {scopes:?} beyond its grant"
                );
            }
            if silent_approval.is_some() {
                prop_assert!(trusted, "P3: silent approval of a remote or browser connect");
                prop_assert_eq!(auth, AuthOutcome::SharedSecret, "P3: silent approval without the shared secret");
                prop_assert!(connect.proven(), "P3: silent approval without a proven device");
                prop_assert!(connect.auto_approve_local, "P3: silent approval with auto approval off");
            } else if !connect.approved().covers(scopes) {
                let backend = connect.is_backend() && connect.proven();
                let deviceless = matches!(connect.claim, Claim::Absent) && auth == AuthOutcome::SharedSecret;
                prop_assert!(
                    trusted && (backend || deviceless),
                    "P4: {scopes:?} beyond the grant outside the named paths"
                );
            }
            prop_assert!(subset(scopes, &connect.ask), "P5: allowed {scopes:?}, asked {:?}", connect.ask);
            match token {
                TokenAction::Echo => prop_assert_eq!(auth, AuthOutcome::DeviceToken, "P8: echo without a device token"),
                TokenAction::Mint => {
                    prop_assert_eq!(auth, AuthOutcome::SharedSecret, "P8: mint without the shared secret");
                    prop_assert!(connect.proven(), "P8: mint without a proven device");
                }
                TokenAction::None => {}
            }
        }
        Decision::RequirePairing { .. } => {
            prop_assert!(connect.proven(), "P7: pairing request without a proven device");
            prop_assert!(
                matches!(auth, AuthOutcome::SharedSecret | AuthOutcome::DeviceToken),
                "P7: pairing request without authentication"
            );
        }
        Decision::Refuse(_) => {}
    }
    match auth {
        AuthOutcome::Failed(failure) => {
            prop_assert_eq!(&decision, &Decision::Refuse(ConnectRefusal::Auth(failure)), "P6");
        }
        AuthOutcome::DeviceUnverified => prop_assert!(
            matches!(
                decision,
                Decision::Refuse(ConnectRefusal::DeviceIdentityRequired | ConnectRefusal::DeviceAuth(_))
            ),
            "P6: unverified device token not refused: {decision:?}"
        ),
        _ => {}
    }
    // P9: the same connect with less trust.
    for less in [Connect { local: false, ..connect.clone() }, Connect { browser: true, ..connect.clone() }] {
        if let Decision::Allow { scopes: fewer, .. } = decide(&less.facts(auth), &less.config()) {
            match &decision {
                Decision::Allow { scopes, .. } => {
                    prop_assert!(subset(&fewer, scopes), "P9: less trust got {fewer:?}, more trust {scopes:?}");
                }
                other => prop_assert!(false, "P9: less trust allowed {fewer:?}, more trust {other:?}"),
            }
        }
    }
    Ok(())
}

/// What was presented, for `authenticate`.
#[derive(Clone, Copy, Debug)]
struct Presented {
    shared_secret: Option<bool>,
    secret_is_password: bool,
    device_token: bool,
    rate_limited_for_ms: Option<i64>,
}

fn presented_credentials() -> impl Strategy<Value = Presented> {
    let secret = prop_oneof![2 => Just(None), 1 => Just(Some(false)), 1 => Just(Some(true))];
    (secret, any::<bool>(), prop::bool::weighted(0.7), prop::option::weighted(0.1, 1..1_000_000i64)).prop_map(
        |(shared_secret, secret_is_password, device_token, rate_limited_for_ms)| Presented {
            shared_secret,
            secret_is_password,
            device_token,
            rate_limited_for_ms,
        },
    )
}

proptest! {
    // No regression file in the source tree: a failure prints its minimal input, which belongs in the table.
    #![proptest_config(ProptestConfig { cases: 4096, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn decide_keeps_its_guarantees_for_any_auth_outcome(connect in connect(), auth in auth_outcome()) {
        check(&connect, auth)?;
    }

    #[test]
    fn authenticate_then_decide_keeps_its_guarantees(connect in connect(), presented in presented_credentials()) {
        let digest = presented_digest();
        let credentials = Credentials {
            shared_secret: presented.shared_secret,
            secret_is_password: presented.secret_is_password,
            device_token: presented.device_token.then_some(&digest),
            device_verified: connect.proven(),
            rate_limited_for_ms: presented.rate_limited_for_ms,
        };
        let auth = authenticate(&credentials, connect.stored(), connect.role, &connect.ask);
        // P10.
        if let Some(retry_after_ms) = presented.rate_limited_for_ms {
            prop_assert_eq!(auth, AuthOutcome::Failed(AuthFailure::RateLimited { retry_after_ms }), "P10");
        }
        if auth == AuthOutcome::SharedSecret {
            prop_assert_eq!(presented.shared_secret, Some(true), "P10: secret accepted without the right one");
        }
        if auth == AuthOutcome::DeviceToken {
            let live = connect
                .stored()
                .filter(|record| record.removed_at_ms.is_none())
                .and_then(|record| record.live_token(connect.role));
            prop_assert!(presented.device_token && connect.proven(), "P10: device token without token or proof");
            prop_assert!(live.is_some_and(|token| token.digest.ct_eq(&digest)), "P10: not the live token");
            prop_assert!(live.is_some_and(|token| token.scopes.covers(&connect.ask)), "P10: token does not cover the ask");
        }
        check(&connect, auth)?;
    }
}
