//! The policy as a table: one row per case.

use super::*;
use crate::domain::TokenSecret;
use crate::domain::{ClientMeta, Grant, Scope, TokenInfo};

use AuthFailure::*;
use AuthOutcome::*;
use PairingReason::*;
use TokenAction as T;

const READ: &[&str] = &["operator.read"];
const WRITE: &[&str] = &["operator.write"];
const ADMIN: &[&str] = &["operator.admin"];
const PAIRING: &[&str] = &["operator.pairing"];
const PAIRING_READ: &[&str] = &["operator.pairing", "operator.read"];
const NONE: &[&str] = &[];

fn scopes(names: &[&str]) -> ScopeSet {
    ScopeSet::parse(names).unwrap()
}

fn key() -> PublicKey {
    PublicKey::from_bytes([5; 32])
}

fn token_digest() -> TokenDigest {
    TokenSecret::from_presented("device-token").digest()
}

/// What the store holds for the device of a row.
#[derive(Clone, Copy)]
enum Dev {
    Absent,
    Invalid(DeviceAuthError),
    /// Proven, never approved.
    New,
    /// Proven and approved for `role` with `scopes`; `token` when a live token exists.
    Paired {
        role: Role,
        scopes: &'static [&'static str],
        token: bool,
        platform: &'static str,
    },
    /// Approved for operator with `granted`, and a live operator token that carries `token` instead (an
    /// OpenClaw token an operator narrowed, or one minted before the grant changed).
    Split {
        granted: &'static [&'static str],
        token: &'static [&'static str],
    },
    /// Approved once, then removed by an operator.
    Removed,
}

fn record(role: Role, granted: &[&str], token: bool, platform: &str) -> DeviceRecord {
    let key = key();
    DeviceRecord {
        device_id: DeviceId::from_public_key(&key),
        public_key: key,
        meta: ClientMeta { platform: Some(platform.to_owned()), ..ClientMeta::default() },
        remote_ip: None,
        approved_via: Some("operator".into()),
        created_at_ms: 1,
        approved_at_ms: Some(1),
        last_seen_at_ms: None,
        removed_at_ms: None,
        label: None,
        grants: vec![Grant { role, scopes: scopes(granted), approved_at_ms: 1 }],
        tokens: if token {
            vec![TokenInfo {
                role,
                digest: token_digest(),
                scopes: scopes(granted),
                issued_at_ms: 1,
                rotated_at_ms: None,
                revoked_at_ms: None,
                last_used_at_ms: None,
            }]
        } else {
            vec![]
        },
    }
}

fn stored_for(dev: Dev) -> Option<DeviceRecord> {
    match dev {
        Dev::Split { granted, token } => {
            let mut record = record(Role::Operator, granted, true, "linux");
            record.tokens[0].scopes = scopes(token);
            Some(record)
        }
        Dev::Paired { role, scopes, token, platform } => Some(record(role, scopes, token, platform)),
        Dev::Removed => Some(DeviceRecord {
            removed_at_ms: Some(2),
            label: None,
            grants: vec![],
            ..record(Role::Operator, READ, false, "linux")
        }),
        _ => None,
    }
}

fn proven() -> ProvenDevice {
    let key = key();
    ProvenDevice {
        device_id: DeviceId::from_public_key(&key),
        public_key: key,
        platform: Some("Linux".into()),
        device_family: None,
    }
}

#[derive(Debug, PartialEq)]
enum Expect {
    Refuse(ConnectRefusal),
    Allow(&'static [&'static str], Option<PairingReason>, TokenAction),
    Pair(PairingReason, bool),
}

struct Row {
    name: &'static str,
    local: bool,
    browser: bool,
    client: (&'static str, &'static str),
    role: Role,
    ask: &'static [&'static str],
    auth: AuthOutcome,
    dev: Dev,
    auto_approve_local: bool,
    expect: Expect,
}

const CLI: (&str, &str) = ("cli", "cli");
const BACKEND: (&str, &str) = ("gateway-client", "backend");
const UI: (&str, &str) = ("openclaw-control-ui", "ui");
const NODE: (&str, &str) = ("node-host", "node");
const OP: Role = Role::Operator;

fn paired(scopes: &'static [&'static str], token: bool) -> Dev {
    Dev::Paired { role: OP, scopes, token, platform: "linux" }
}

#[rustfmt::skip]
fn rows() -> Vec<Row> {
    let row = |name, local, client, ask, auth, dev, expect| Row {
        name, local, browser: false, client, role: OP, ask, auth, dev, auto_approve_local: true, expect,
    };
    vec![
        // Step 1: authentication failures come first, whatever else is true.
        row("token mismatch local", true, CLI, READ, Failed(TokenMismatch), Dev::Absent, Expect::Refuse(ConnectRefusal::Auth(TokenMismatch))),
        row("token mismatch remote paired", false, CLI, READ, Failed(TokenMismatch), paired(READ, true), Expect::Refuse(ConnectRefusal::Auth(TokenMismatch))),
        row("password mismatch", false, CLI, READ, Failed(PasswordMismatch), Dev::New, Expect::Refuse(ConnectRefusal::Auth(PasswordMismatch))),
        row("device token mismatch", false, CLI, READ, Failed(DeviceTokenMismatch), paired(READ, true), Expect::Refuse(ConnectRefusal::Auth(DeviceTokenMismatch))),
        row("no credentials", true, CLI, READ, Failed(Missing), Dev::New, Expect::Refuse(ConnectRefusal::Auth(Missing))),
        row("rate limited even for the backend", true, BACKEND, ADMIN, Failed(RateLimited { retry_after_ms: 5 }), Dev::New, Expect::Refuse(ConnectRefusal::Auth(RateLimited { retry_after_ms: 5 }))),
        row("device token without a device", true, CLI, READ, DeviceUnverified, Dev::Absent, Expect::Refuse(ConnectRefusal::DeviceIdentityRequired)),
        row("device token with a bad proof reports the proof", false, CLI, READ, DeviceUnverified, Dev::Invalid(DeviceAuthError::SignatureInvalid), Expect::Refuse(ConnectRefusal::DeviceAuth(DeviceAuthError::SignatureInvalid))),
        // Step 2: no device identity.
        row("local cli without device keeps its scopes", true, CLI, PAIRING, SharedSecret, Dev::Absent, Expect::Allow(PAIRING, None, T::None)),
        row("local cli without device, pairing+read", true, CLI, PAIRING_READ, SharedSecret, Dev::Absent, Expect::Allow(PAIRING_READ, None, T::None)),
        row("local cli without device asking admin", true, CLI, ADMIN, SharedSecret, Dev::Absent, Expect::Allow(ADMIN, None, T::None)),
        row("remote without device gets no scopes", false, CLI, ADMIN, SharedSecret, Dev::Absent, Expect::Allow(NONE, None, T::None)),
        row("local backend without device", true, BACKEND, ADMIN, SharedSecret, Dev::Absent, Expect::Allow(ADMIN, None, T::None)),
        // A browser on loopback without a device identity gets no scopes, as a remote client (it kept them).
        Row { browser: true, ..row("local browser without device gets no scopes", true, UI, ADMIN, SharedSecret, Dev::Absent, Expect::Allow(NONE, None, T::None)) },
        Row { browser: true, ..row("local cli-looking browser without device gets no scopes", true, CLI, PAIRING, SharedSecret, Dev::Absent, Expect::Allow(NONE, None, T::None)) },
        Row { browser: true, ..row("local backend-looking browser without device gets no scopes", true, BACKEND, ADMIN, SharedSecret, Dev::Absent, Expect::Allow(NONE, None, T::None)) },
        // Step 3: device proof failures.
        row("bad signature", true, CLI, READ, SharedSecret, Dev::Invalid(DeviceAuthError::SignatureInvalid), Expect::Refuse(ConnectRefusal::DeviceAuth(DeviceAuthError::SignatureInvalid))),
        row("stale signature", false, CLI, READ, SharedSecret, Dev::Invalid(DeviceAuthError::SignatureExpired), Expect::Refuse(ConnectRefusal::DeviceAuth(DeviceAuthError::SignatureExpired))),
        row("nonce mismatch", false, CLI, READ, SharedSecret, Dev::Invalid(DeviceAuthError::NonceMismatch), Expect::Refuse(ConnectRefusal::DeviceAuth(DeviceAuthError::NonceMismatch))),
        row("id not derived from key", true, BACKEND, READ, SharedSecret, Dev::Invalid(DeviceAuthError::DeviceIdMismatch), Expect::Refuse(ConnectRefusal::DeviceAuth(DeviceAuthError::DeviceIdMismatch))),
        row("malformed key", false, CLI, READ, SharedSecret, Dev::Invalid(DeviceAuthError::PublicKeyInvalid), Expect::Refuse(ConnectRefusal::DeviceAuth(DeviceAuthError::PublicKeyInvalid))),
        // Step 4: the local backend (the seed bug's path).
        row("seed: backend read, unpaired", true, BACKEND, READ, SharedSecret, Dev::New, Expect::Allow(READ, None, T::None)),
        row("seed: backend read -> admin upgrade", true, BACKEND, ADMIN, SharedSecret, paired(READ, true), Expect::Allow(ADMIN, None, T::None)),
        row("backend with a covering device token echoes it", true, BACKEND, READ, DeviceToken, paired(ADMIN, true), Expect::Allow(READ, None, T::Echo)),
        row("backend whose device token does not cover the ask is refused", true, BACKEND, ADMIN, DeviceToken, paired(READ, true), Expect::Refuse(ConnectRefusal::Auth(ScopeMismatch { missing: Scope::Admin }))),
        row("backend within a narrowed token", true, BACKEND, READ, DeviceToken, Dev::Split { granted: ADMIN, token: READ }, Expect::Allow(READ, None, T::Echo)),
        row("seed remote: backend scope upgrade needs an operator", false, BACKEND, ADMIN, SharedSecret, paired(READ, true), Expect::Pair(ScopeUpgrade, true)),
        row("remote backend unpaired", false, BACKEND, READ, SharedSecret, Dev::New, Expect::Pair(NotPaired, false)),
        Row { browser: true, ..row("backend from a browser is not the backend", true, BACKEND, ADMIN, SharedSecret, paired(READ, true), Expect::Pair(ScopeUpgrade, true)) },
        row("gateway-client in cli mode is not the backend", true, ("gateway-client", "cli"), ADMIN, SharedSecret, paired(READ, true), Expect::Allow(ADMIN, Some(ScopeUpgrade), T::None)),
        // Step 5 + 6: reasons, approved silently when local.
        row("local new device approved silently, token minted", true, CLI, READ, SharedSecret, Dev::New, Expect::Allow(READ, Some(NotPaired), T::Mint)),
        row("local scope upgrade silently, live token kept", true, CLI, ADMIN, SharedSecret, paired(READ, true), Expect::Allow(ADMIN, Some(ScopeUpgrade), T::None)),
        row("local scope upgrade silently, no token yet", true, CLI, ADMIN, SharedSecret, paired(READ, false), Expect::Allow(ADMIN, Some(ScopeUpgrade), T::Mint)),
        row("local role upgrade silently", true, NODE, NONE, SharedSecret, paired(READ, true), Expect::Allow(NONE, Some(RoleUpgrade), T::Mint)),
        row("local metadata change silently", true, CLI, READ, SharedSecret, Dev::Paired { role: OP, scopes: READ, token: true, platform: "darwin" }, Expect::Allow(READ, Some(MetadataUpgrade), T::None)),
        row("local re-pair after removal", true, CLI, READ, SharedSecret, Dev::Removed, Expect::Allow(READ, Some(NotPaired), T::Mint)),
        Row { browser: true, ..row("local browser is never silent", true, UI, READ, SharedSecret, Dev::New, Expect::Pair(NotPaired, false)) },
        Row { browser: true, ..row("local browser scope upgrade is asked", true, CLI, ADMIN, SharedSecret, paired(READ, true), Expect::Pair(ScopeUpgrade, true)) },
        Row { browser: true, ..row("local browser metadata change is asked", true, UI, READ, SharedSecret, Dev::Paired { role: OP, scopes: READ, token: true, platform: "darwin" }, Expect::Pair(MetadataUpgrade, true)) },
        Row { browser: true, ..row("local browser within its grant", true, UI, READ, SharedSecret, paired(ADMIN, true), Expect::Allow(READ, None, T::None)) },
        Row { browser: true, ..row("local browser with its device token", true, UI, READ, DeviceToken, paired(READ, true), Expect::Allow(READ, None, T::Echo)) },
        Row { auto_approve_local: false, ..row("auto approve off: local pairs", true, CLI, READ, SharedSecret, Dev::New, Expect::Pair(NotPaired, false)) },
        Row { auto_approve_local: false, ..row("auto approve off: local upgrade pairs", true, CLI, ADMIN, SharedSecret, paired(READ, true), Expect::Pair(ScopeUpgrade, true)) },
        // Step 6: remote asks become pairing requests.
        row("remote new device", false, CLI, READ, SharedSecret, Dev::New, Expect::Pair(NotPaired, false)),
        row("remote removed device is not paired", false, CLI, READ, SharedSecret, Dev::Removed, Expect::Pair(NotPaired, false)),
        row("remote metadata change", false, CLI, READ, SharedSecret, Dev::Paired { role: OP, scopes: READ, token: true, platform: "windows" }, Expect::Pair(MetadataUpgrade, true)),
        row("remote role upgrade", false, NODE, NONE, SharedSecret, paired(ADMIN, true), Expect::Pair(RoleUpgrade, true)),
        row("remote scope upgrade read -> write", false, CLI, WRITE, SharedSecret, paired(READ, true), Expect::Pair(ScopeUpgrade, true)),
        // A device token bounds the connect by its own scopes and never changes a grant, from anywhere.
        row("remote device token beyond its scopes", false, CLI, ADMIN, DeviceToken, paired(READ, true), Expect::Refuse(ConnectRefusal::Auth(ScopeMismatch { missing: Scope::Admin }))),
        row("local device token never upgrades silently", true, CLI, ADMIN, DeviceToken, paired(READ, true), Expect::Refuse(ConnectRefusal::Auth(ScopeMismatch { missing: Scope::Admin }))),
        row("a narrowed token bounds a local connect whatever the grant", true, CLI, ADMIN, DeviceToken, Dev::Split { granted: ADMIN, token: READ }, Expect::Refuse(ConnectRefusal::Auth(ScopeMismatch { missing: Scope::Admin }))),
        row("a narrowed token bounds a remote connect whatever the grant", false, CLI, PAIRING_READ, DeviceToken, Dev::Split { granted: ADMIN, token: READ }, Expect::Refuse(ConnectRefusal::Auth(ScopeMismatch { missing: Scope::Pairing }))),
        row("within a narrowed token", false, CLI, READ, DeviceToken, Dev::Split { granted: ADMIN, token: READ }, Expect::Allow(READ, None, T::Echo)),
        row("local device token beyond the grant is asked, not silent", true, CLI, WRITE, DeviceToken, Dev::Split { granted: READ, token: WRITE }, Expect::Pair(ScopeUpgrade, true)),
        row("local device token with changed metadata is asked, not silent", true, CLI, READ, DeviceToken, Dev::Paired { role: OP, scopes: READ, token: true, platform: "darwin" }, Expect::Pair(MetadataUpgrade, true)),
        row("a device token outcome without a live token is refused", true, CLI, READ, DeviceToken, paired(READ, false), Expect::Refuse(ConnectRefusal::Auth(DeviceTokenMismatch))),
        row("metadata is checked before the role", false, NODE, NONE, SharedSecret, Dev::Paired { role: OP, scopes: READ, token: true, platform: "ios" }, Expect::Pair(MetadataUpgrade, true)),
        // Step 7: approved already.
        row("remote paired exact scopes", false, CLI, READ, SharedSecret, paired(READ, true), Expect::Allow(READ, None, T::None)),
        row("remote paired, implied by admin", false, CLI, PAIRING_READ, SharedSecret, paired(ADMIN, true), Expect::Allow(PAIRING_READ, None, T::None)),
        row("remote paired, read implied by write", false, CLI, READ, SharedSecret, paired(WRITE, true), Expect::Allow(READ, None, T::None)),
        row("remote paired with device token echoes it", false, CLI, READ, DeviceToken, paired(READ, true), Expect::Allow(READ, None, T::Echo)),
        row("remote paired without live token mints one", false, CLI, READ, SharedSecret, paired(READ, false), Expect::Allow(READ, None, T::Mint)),
        row("remote paired asking nothing", false, CLI, NONE, SharedSecret, paired(READ, true), Expect::Allow(NONE, None, T::None)),
        row("platform case and spaces do not matter", false, CLI, READ, SharedSecret, Dev::Paired { role: OP, scopes: READ, token: true, platform: " LINUX " }, Expect::Allow(READ, None, T::None)),
        row("remote ui paired", false, UI, READ, SharedSecret, paired(READ, true), Expect::Allow(READ, None, T::None)),
    ]
}

#[test]
fn policy_table() {
    let rows = rows();
    assert!(rows.len() >= 65, "the table must keep at least 65 cases, has {}", rows.len());
    for row in rows {
        let stored = stored_for(row.dev);
        let device = match row.dev {
            Dev::Absent => DeviceClaim::Absent,
            Dev::Invalid(error) => DeviceClaim::Invalid(error),
            _ => DeviceClaim::Proven { device: proven(), stored: stored.as_ref() },
        };
        let ask = scopes(row.ask);
        let facts = ConnectFacts {
            local: row.local,
            browser: row.browser,
            client_id: row.client.0,
            client_mode: row.client.1,
            role: if row.client == NODE { Role::Node } else { row.role },
            scopes: &ask,
            auth: row.auth,
            device,
        };
        let got = match decide(&facts, &PolicyConfig { auto_approve_local: row.auto_approve_local }) {
            Decision::Refuse(refusal) => Expect::Refuse(refusal),
            Decision::Allow { scopes: granted, silent_approval, token } => {
                assert_eq!(
                    granted,
                    scopes(match &row.expect {
                        Expect::Allow(s, ..) => s,
                        _ => &[],
                    }),
                    "{}",
                    row.name
                );
                Expect::Allow(
                    match &row.expect {
                        Expect::Allow(s, ..) => s,
                        _ => &[],
                    },
                    silent_approval,
                    token,
                )
            }
            Decision::RequirePairing { reason, is_repair } => Expect::Pair(reason, is_repair),
        };
        assert_eq!(got, row.expect, "row: {}", row.name);
    }
}

#[rustfmt::skip]
#[test]
fn authenticate_table() {
    let digest = token_digest();
    let wrong = TokenSecret::from_presented("other").digest();
    let paired_record = record(OP, READ, true, "linux");
    let creds = |shared_secret, device_token, device_verified| Credentials {
        shared_secret, secret_is_password: false, device_token, device_verified, rate_limited_for_ms: None,
    };
    // (name, credentials, stored, role, expected)
    let rows: Vec<(&str, Credentials<'_>, Option<&DeviceRecord>, Role, AuthOutcome)> = vec![
        ("secret ok", creds(Some(true), None, false), None, OP, SharedSecret),
        ("secret wrong", creds(Some(false), None, false), None, OP, Failed(TokenMismatch)),
        ("nothing", creds(None, None, false), None, OP, Failed(Missing)),
        ("device token ok", creds(None, Some(&digest), true), Some(&paired_record), OP, DeviceToken),
        ("device token wrong", creds(None, Some(&wrong), true), Some(&paired_record), OP, Failed(DeviceTokenMismatch)),
        ("device token for another role", creds(None, Some(&digest), true), Some(&paired_record), Role::Node, Failed(DeviceTokenMismatch)),
        ("device token, unknown device", creds(None, Some(&digest), true), None, OP, Failed(DeviceTokenMismatch)),
        ("device token, unproven device", creds(None, Some(&digest), false), Some(&paired_record), OP, DeviceUnverified),
        ("wrong secret, good device token", creds(Some(false), Some(&digest), true), Some(&paired_record), OP, DeviceToken),
        ("wrong secret, wrong device token", creds(Some(false), Some(&wrong), true), Some(&paired_record), OP, Failed(TokenMismatch)),
        ("good secret, wrong device token", creds(Some(true), Some(&wrong), true), Some(&paired_record), OP, SharedSecret),
        ("good secret, device token beyond its scopes", creds(Some(true), Some(&digest), true), Some(&paired_record), OP, SharedSecret),
    ];
    let read = scopes(READ);
    for (name, credentials, stored, role, expected) in rows {
        let asked = if name.contains("beyond") { scopes(ADMIN) } else { read.clone() };
        assert_eq!(authenticate(&credentials, stored, role, &asked), expected, "{name}");
    }
    // A device token carries its own scopes: beyond them is an auth failure naming the first one missing,
    // whatever the grant allows.
    let narrowed = DeviceRecord { grants: record(OP, ADMIN, false, "linux").grants, ..paired_record.clone() };
    for (stored, asked, expected) in [
        (&paired_record, PAIRING_READ, Failed(ScopeMismatch { missing: Scope::Pairing })),
        (&narrowed, ADMIN, Failed(ScopeMismatch { missing: Scope::Admin })),
        (&narrowed, READ, DeviceToken),
        (&paired_record, NONE, DeviceToken),
    ] {
        let got = authenticate(&creds(None, Some(&digest), true), Some(stored), OP, &scopes(asked));
        assert_eq!(got, expected, "{asked:?}");
        let wrong_secret = authenticate(&creds(Some(false), Some(&digest), true), Some(stored), OP, &scopes(asked));
        assert_eq!(wrong_secret, expected, "{asked:?}, with a wrong secret too");
    }
    let password = Credentials { secret_is_password: true, ..creds(Some(false), None, false) };
    assert_eq!(authenticate(&password, None, OP, &read), Failed(PasswordMismatch));
    let limited = Credentials { rate_limited_for_ms: Some(1000), ..creds(Some(true), None, false) };
    assert_eq!(authenticate(&limited, None, OP, &read), Failed(RateLimited { retry_after_ms: 1000 }));
    let removed = DeviceRecord { removed_at_ms: Some(9), ..paired_record.clone() };
    assert_eq!(authenticate(&creds(None, Some(&digest), true), Some(&removed), OP, &read), Failed(DeviceTokenMismatch));
}
