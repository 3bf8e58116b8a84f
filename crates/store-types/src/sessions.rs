//! Sub-agent sessions and runs (docs/protocol.md §7).

use serde::Serialize;

use pairgate_domain::RunState;
use pairgate_domain::clock::Millis;

/// How long an ended run whose cleanup is `delete` keeps its session before the sweeper archives it.
pub const ARCHIVE_AFTER_MS: Millis = 60 * 60 * 1000;

/// A session entry as OpenClaw shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionEntry {
    pub key: String,
    pub agent_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spawned_by: Option<String>,
    pub spawn_depth: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subagent_role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subagent_control_scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking_level: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<Millis>,
}

/// `sessions.patch`: `None` leaves a field as it is. Lineage fields are settable on sub-agent keys only
/// and immutable once set.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionPatch {
    pub key: String,
    pub label: Option<String>,
    pub model: Option<String>,
    pub thinking_level: Option<String>,
    pub spawned_by: Option<String>,
    pub spawn_depth: Option<i64>,
    pub subagent_role: Option<String>,
    pub subagent_control_scope: Option<String>,
}

/// A run record as OpenClaw shows it (times in ms).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Run {
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
    pub state: RunState,
    pub created_at: Millis,
    pub started_at: Option<Millis>,
    pub ended_at: Option<Millis>,
    pub ended_reason: Option<String>,
    pub outcome_status: Option<String>,
    pub outcome_error: Option<String>,
    pub archive_at_ms: Option<Millis>,
}

/// A spawn to register.
#[derive(Clone, Debug)]
pub struct NewRun {
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
}

/// Spawn limits (OpenClaw's defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpawnLimits {
    pub max_depth: i64,
    pub max_children_per_requester: i64,
    pub max_concurrent_runs: i64,
}

impl Default for SpawnLimits {
    fn default() -> Self {
        SpawnLimits { max_depth: 1, max_children_per_requester: 5, max_concurrent_runs: 8 }
    }
}

/// How a running run ended, as the backend reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunEnd {
    Ok,
    Error,
    Timeout,
}
