//! What both engines do with rows, with no SQL: decoding the rows their queries return into the records
//! above (a device with its grants and tokens, a request, a session, a run), and the checks a session or run
//! passes before it is written.

use serde::Deserialize;

use crate::{PairingRequest, Run, SessionEntry, StoreError, StoreResult};
use pairgate_domain::clock::Millis;
use pairgate_domain::{
    ClientMeta, DeviceId, DeviceRecord, Grant, PairingReason, PublicKey, Refusal, RequestStatus, Role, RunState,
    ScopeSet, TokenDigest, TokenInfo,
};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GrantJson {
    role: String,
    scopes: Vec<String>,
    approved_at_ms: Millis,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenJson {
    role: String,
    digest: String,
    scopes: Vec<String>,
    issued_at_ms: Millis,
    rotated_at_ms: Option<Millis>,
    revoked_at_ms: Option<Millis>,
    last_used_at_ms: Option<Millis>,
}

pub fn invalid(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::InvalidData(format!("{what}: {detail}"))
}

pub fn parse_role(text: &str) -> StoreResult<Role> {
    Role::parse(text).ok_or_else(|| invalid("role", text))
}

pub fn parse_scopes(names: &[String]) -> StoreResult<ScopeSet> {
    ScopeSet::parse(names).map_err(|e| invalid("scopes", e))
}

pub fn parse_hex_digest(hex: &str) -> StoreResult<TokenDigest> {
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| hex.get(i..i + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok()))
        .collect();
    bytes.as_deref().and_then(TokenDigest::from_slice).ok_or_else(|| invalid("token digest", "not 32 bytes of hex"))
}

/// One row of the device query, before its JSON columns are parsed.
pub struct DeviceRow {
    pub device_id: String,
    pub public_key: String,
    pub client_id: Option<String>,
    pub client_mode: Option<String>,
    pub platform: Option<String>,
    pub device_family: Option<String>,
    pub display_name: Option<String>,
    pub remote_ip: Option<String>,
    pub approved_via: Option<String>,
    pub created_at_ms: i64,
    pub approved_at_ms: Option<i64>,
    pub last_seen_at_ms: Option<i64>,
    pub removed_at_ms: Option<i64>,
    pub label: Option<String>,
    pub grants: String,
    pub tokens: String,
}

impl DeviceRow {
    pub fn into_record(self) -> StoreResult<DeviceRecord> {
        let device_id = DeviceId::try_from(self.device_id).map_err(|e| invalid("device id", e))?;
        let public_key =
            PublicKey::from_base64url(&self.public_key).ok_or_else(|| invalid("public key", "not 32 bytes"))?;
        let grants: Vec<GrantJson> = serde_json::from_str(&self.grants).map_err(|e| invalid("grants", e))?;
        let tokens: Vec<TokenJson> = serde_json::from_str(&self.tokens).map_err(|e| invalid("tokens", e))?;
        Ok(DeviceRecord {
            device_id,
            public_key,
            meta: ClientMeta {
                client_id: self.client_id,
                client_mode: self.client_mode,
                platform: self.platform,
                device_family: self.device_family,
                display_name: self.display_name,
            },
            remote_ip: self.remote_ip,
            approved_via: self.approved_via,
            created_at_ms: self.created_at_ms,
            approved_at_ms: self.approved_at_ms,
            last_seen_at_ms: self.last_seen_at_ms,
            removed_at_ms: self.removed_at_ms,
            label: self.label,
            grants: grants
                .into_iter()
                .map(|g| {
                    Ok(Grant {
                        role: parse_role(&g.role)?,
                        scopes: parse_scopes(&g.scopes)?,
                        approved_at_ms: g.approved_at_ms,
                    })
                })
                .collect::<StoreResult<_>>()?,
            tokens: tokens
                .into_iter()
                .map(|t| {
                    Ok(TokenInfo {
                        role: parse_role(&t.role)?,
                        digest: parse_hex_digest(&t.digest)?,
                        scopes: parse_scopes(&t.scopes)?,
                        issued_at_ms: t.issued_at_ms,
                        rotated_at_ms: t.rotated_at_ms,
                        revoked_at_ms: t.revoked_at_ms,
                        last_used_at_ms: t.last_used_at_ms,
                    })
                })
                .collect::<StoreResult<_>>()?,
        })
    }
}

pub struct RequestRow {
    pub request_id: String,
    pub device_id: String,
    pub public_key: String,
    pub role: String,
    pub roles: String,
    pub scopes: String,
    pub reason: String,
    pub client_id: Option<String>,
    pub client_mode: Option<String>,
    pub platform: Option<String>,
    pub device_family: Option<String>,
    pub display_name: Option<String>,
    pub remote_ip: Option<String>,
    pub is_local: i64,
    pub is_repair: i64,
    pub created_at_ms: i64,
    pub refreshed_at_ms: i64,
    pub expires_at_ms: i64,
    pub status: String,
    pub resolved_by: Option<String>,
    pub resolved_at_ms: Option<i64>,
}

impl RequestRow {
    pub fn into_request(self) -> StoreResult<PairingRequest> {
        let bad = |what: &str| StoreError::InvalidData(format!("pairing request {}: bad {what}", self.request_id));
        let role_names: Vec<String> = serde_json::from_str(&self.roles).map_err(|_| bad("roles"))?;
        Ok(PairingRequest {
            device_id: DeviceId::try_from(self.device_id.clone()).map_err(|_| bad("device id"))?,
            public_key: PublicKey::from_base64url(&self.public_key).ok_or_else(|| bad("public key"))?,
            role: Role::parse(&self.role).ok_or_else(|| bad("role"))?,
            roles: role_names.iter().map(|r| Role::parse(r).ok_or_else(|| bad("roles"))).collect::<Result<_, _>>()?,
            scopes: ScopeSet::from_json(&self.scopes).map_err(|_| bad("scopes"))?,
            reason: PairingReason::parse(&self.reason).ok_or_else(|| bad("reason"))?,
            status: RequestStatus::parse(&self.status).ok_or_else(|| bad("status"))?,
            meta: ClientMeta {
                client_id: self.client_id,
                client_mode: self.client_mode,
                platform: self.platform,
                device_family: self.device_family,
                display_name: self.display_name,
            },
            remote_ip: self.remote_ip,
            is_local: self.is_local != 0,
            is_repair: self.is_repair != 0,
            created_at_ms: self.created_at_ms,
            refreshed_at_ms: self.refreshed_at_ms,
            expires_at_ms: self.expires_at_ms,
            resolved_by: self.resolved_by,
            resolved_at_ms: self.resolved_at_ms,
            request_id: self.request_id,
        })
    }
}

pub fn roles_json(roles: &[Role]) -> String {
    serde_json::to_string(&roles.iter().map(|r| r.as_str()).collect::<Vec<_>>()).expect("strings serialize")
}

pub struct SessionRow {
    pub session_key: String,
    pub agent_id: String,
    pub parent_key: Option<String>,
    pub spawn_depth: i64,
    pub subagent_role: Option<String>,
    pub subagent_control_scope: Option<String>,
    pub label: Option<String>,
    pub model: Option<String>,
    pub thinking_level: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub archived_at_ms: Option<i64>,
}

impl From<SessionRow> for SessionEntry {
    fn from(row: SessionRow) -> Self {
        SessionEntry {
            key: row.session_key,
            agent_id: row.agent_id,
            spawned_by: row.parent_key,
            spawn_depth: row.spawn_depth,
            subagent_role: row.subagent_role,
            subagent_control_scope: row.subagent_control_scope,
            label: row.label,
            model: row.model,
            thinking_level: row.thinking_level,
            created_at: row.created_at_ms,
            updated_at: row.updated_at_ms,
            archived_at: row.archived_at_ms,
        }
    }
}

pub struct RunRow {
    pub run_id: String,
    pub child_session_key: String,
    pub requester_session_key: String,
    pub controller_session_key: Option<String>,
    pub task: String,
    pub label: Option<String>,
    pub model: Option<String>,
    pub cleanup: String,
    pub spawn_mode: String,
    pub run_timeout_seconds: Option<i64>,
    pub state: String,
    pub created_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub ended_at_ms: Option<i64>,
    pub ended_reason: Option<String>,
    pub outcome_status: Option<String>,
    pub outcome_error: Option<String>,
    pub archive_at_ms: Option<i64>,
}

impl TryFrom<RunRow> for Run {
    type Error = StoreError;
    fn try_from(row: RunRow) -> StoreResult<Run> {
        let state = RunState::parse(&row.state)
            .ok_or_else(|| StoreError::InvalidData(format!("run {}: state {}", row.run_id, row.state)))?;
        Ok(Run {
            run_id: row.run_id,
            child_session_key: row.child_session_key,
            requester_session_key: row.requester_session_key,
            controller_session_key: row.controller_session_key,
            task: row.task,
            label: row.label,
            model: row.model,
            cleanup: row.cleanup,
            spawn_mode: row.spawn_mode,
            run_timeout_seconds: row.run_timeout_seconds,
            state,
            created_at: row.created_at_ms,
            started_at: row.started_at_ms,
            ended_at: row.ended_at_ms,
            ended_reason: row.ended_reason,
            outcome_status: row.outcome_status,
            outcome_error: row.outcome_error,
            archive_at_ms: row.archive_at_ms,
        })
    }
}

/// A session or run the database's constraints refuse (a duplicate run id, an unknown `cleanup`) is the
/// client's mistake, not the store's failure.
pub fn refuse_constraint(error: StoreError) -> StoreError {
    match error {
        StoreError::Constraint(detail) => {
            tracing::warn!(%detail, "a session or run refused by the database's constraints");
            Refusal::InvalidSessionOrRun.into()
        }
        other => other,
    }
}

/// `value`, when it is one of `allowed`; otherwise the refusal naming the field (the value cut short: it is
/// the client's text).
pub fn check_one_of(field: &'static str, value: Option<&str>, allowed: &'static [&'static str]) -> StoreResult<()> {
    match value {
        Some(value) if !allowed.contains(&value) => {
            let (value, expected) = (pairgate_domain::prefix_within(value, 64).to_owned(), allowed.join(" or "));
            Err(Refusal::InvalidField { field, value, expected }.into())
        }
        _ => Ok(()),
    }
}

/// The longest session or run label a client may give (bytes).
pub const MAX_LABEL: usize = 256;

pub fn check_length(field: &'static str, value: Option<&str>, max: usize) -> StoreResult<()> {
    match value {
        Some(value) if value.len() > max => Err(Refusal::TooLong { field, length: value.len(), max }.into()),
        _ => Ok(()),
    }
}

pub fn check_not_negative(field: &'static str, value: Option<i64>) -> StoreResult<()> {
    match value {
        Some(value) if value < 0 => {
            Err(Refusal::InvalidField { field, value: value.to_string(), expected: "0 or more".into() }.into())
        }
        _ => Ok(()),
    }
}

/// A lineage field may be set once; setting it again to the same value is fine.
pub fn check_immutable(name: &'static str, current: &Option<String>, wanted: &Option<String>) -> StoreResult<()> {
    match (current, wanted) {
        (Some(current), Some(wanted)) if current != wanted => {
            Err(Refusal::ImmutableField { field: name, current: current.clone() }.into())
        }
        _ => Ok(()),
    }
}
