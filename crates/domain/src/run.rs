//! The lifecycle of a sub-agent run: `pending → running → done | failed | timeout | killed | interrupted`.
//! Every state change goes through `RunState::can_become`; the store refuses anything else.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Pending,
    Running,
    Done,
    Failed,
    Timeout,
    Killed,
    Interrupted,
}

impl RunState {
    pub const ALL: [RunState; 7] = [
        RunState::Pending,
        RunState::Running,
        RunState::Done,
        RunState::Failed,
        RunState::Timeout,
        RunState::Killed,
        RunState::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Pending => "pending",
            RunState::Running => "running",
            RunState::Done => "done",
            RunState::Failed => "failed",
            RunState::Timeout => "timeout",
            RunState::Killed => "killed",
            RunState::Interrupted => "interrupted",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        RunState::ALL.into_iter().find(|state| state.as_str() == text)
    }

    /// Pending and running runs count against the limits.
    pub fn is_active(self) -> bool {
        matches!(self, RunState::Pending | RunState::Running)
    }

    pub fn is_terminal(self) -> bool {
        !self.is_active()
    }

    /// The legal transitions. A run may fail, be killed or be interrupted before it started (a spawn
    /// that never came up); it can only finish, or time out, once running; an ended run never changes.
    pub fn can_become(self, next: RunState) -> bool {
        use RunState::*;
        matches!(
            (self, next),
            (Pending, Running | Failed | Killed | Interrupted)
                | (Running, Done | Failed | Timeout | Killed | Interrupted)
        )
    }

    /// The states a run may be in to move to `next`.
    pub fn sources_of(next: RunState) -> Vec<RunState> {
        RunState::ALL.into_iter().filter(|state| state.can_become(next)).collect()
    }

    /// The outcome status OpenClaw reports for an ended run.
    pub fn outcome_status(self) -> Option<&'static str> {
        match self {
            RunState::Done => Some("ok"),
            RunState::Failed | RunState::Killed | RunState::Interrupted => Some("error"),
            RunState::Timeout => Some("timeout"),
            RunState::Pending | RunState::Running => None,
        }
    }
}

/// Is this an OpenClaw sub-agent session key (`agent:<id>:subagent:<uuid>`, nesting allowed)?
pub fn is_subagent_key(key: &str) -> bool {
    key.starts_with("agent:") && key.contains(":subagent:")
}

/// A main session (`agent:<id>:main`) can never be deleted.
pub fn is_main_key(key: &str) -> bool {
    key.strip_prefix("agent:")
        .and_then(|rest| rest.split_once(':'))
        .is_some_and(|(id, tail)| !id.is_empty() && tail == "main")
}

/// The agent id of a session key: `agent:<id>:…`.
pub fn agent_id_of(key: &str) -> Option<&str> {
    key.strip_prefix("agent:").and_then(|rest| rest.split(':').next()).filter(|id| !id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use RunState::*;

    #[test]
    fn every_transition_is_decided_by_the_table() {
        let allowed = [
            (Pending, Running),
            (Pending, Failed),
            (Pending, Killed),
            (Pending, Interrupted),
            (Running, Done),
            (Running, Failed),
            (Running, Timeout),
            (Running, Killed),
            (Running, Interrupted),
        ];
        for from in RunState::ALL {
            for to in RunState::ALL {
                assert_eq!(from.can_become(to), allowed.contains(&(from, to)), "{from:?} -> {to:?}");
            }
        }
        for terminal in [Done, Failed, Timeout, Killed, Interrupted] {
            assert!(terminal.is_terminal());
            assert!(RunState::ALL.iter().all(|next| !terminal.can_become(*next)), "{terminal:?} is final");
        }
        assert_eq!(RunState::sources_of(Killed), vec![Pending, Running]);
        assert_eq!(RunState::sources_of(Done), vec![Running]);
    }

    #[test]
    fn states_round_trip_and_map_to_outcomes() {
        for state in RunState::ALL {
            assert_eq!(RunState::parse(state.as_str()), Some(state));
        }
        assert_eq!(Done.outcome_status(), Some("ok"));
        assert_eq!(Timeout.outcome_status(), Some("timeout"));
        assert_eq!(Interrupted.outcome_status(), Some("error"));
        assert_eq!(Running.outcome_status(), None);
    }

    #[test]
    fn session_keys() {
        assert!(is_subagent_key("agent:main:subagent:1234"));
        assert!(is_subagent_key("agent:main:subagent:1:subagent:2"));
        assert!(!is_subagent_key("agent:main:main"));
        assert!(is_main_key("agent:main:main"));
        assert!(is_main_key("agent:ops:main"));
        assert!(!is_main_key("agent:main:subagent:main"));
        assert!(!is_main_key("agent::main"));
        assert_eq!(agent_id_of("agent:ops:subagent:x"), Some("ops"));
        assert_eq!(agent_id_of("session-without-agent"), None);
    }
}
