//! Who changed what: the audit trail's records.

use serde::Serialize;

use pairgate_domain::clock::Millis;

/// Who made a change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    /// pairgate itself (silent local approvals, expiry, start-up recovery).
    System,
    /// A WebSocket connection, by connection id, and the device behind it when known.
    Socket { conn_id: String, device_id: Option<String> },
    /// The offline CLI, by OS user.
    Cli { user: String },
    /// A REST caller, by token id, and the operator name it gave (the admin page asks for one; it is a
    /// label the token's holder chose, not a separate identity).
    Rest { token_id: String, operator: Option<String> },
}
impl Actor {
    pub fn label(&self) -> String {
        match self {
            Actor::System => "system".to_owned(),
            Actor::Socket { conn_id, device_id: Some(device) } => format!("socket:{conn_id}/device:{device}"),
            Actor::Socket { conn_id, device_id: None } => format!("socket:{conn_id}"),
            Actor::Cli { user } => format!("cli:{user}"),
            Actor::Rest { token_id, operator: None } => format!("rest:{token_id}"),
            Actor::Rest { token_id, operator: Some(operator) } => format!("rest:{token_id}/operator:{operator}"),
        }
    }

    /// The OS user running this process, for the offline CLI: the name of its uid's account (or `uid:N`
    /// when the account has no name), never `USER`/`LOGNAME`, which are unset under cron and systemd and
    /// which anyone can set to another name.
    pub fn local_cli() -> Actor {
        let uid = nix::unistd::getuid();
        let user = match nix::unistd::User::from_uid(uid) {
            Ok(Some(account)) if !account.name.is_empty() => account.name,
            _ => format!("uid:{uid}"),
        };
        Actor::Cli { user }
    }
}
/// One audit row to write.
#[derive(Clone, Debug)]
pub struct AuditEvent {
    pub at_ms: Millis,
    pub actor: String,
    pub action: String,
    pub subject: Option<String>,
    pub remote_addr: Option<String>,
    pub details: serde_json::Value,
}
impl AuditEvent {
    pub fn new(actor: &Actor, action: &str, at_ms: Millis) -> Self {
        AuditEvent {
            at_ms,
            actor: actor.label(),
            action: action.to_owned(),
            subject: None,
            remote_addr: None,
            details: serde_json::json!({}),
        }
    }

    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    pub fn remote(mut self, remote_addr: Option<&str>) -> Self {
        self.remote_addr = remote_addr.map(str::to_owned);
        self
    }

    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}
/// Which rows an audit page shows. `None` lets every row through.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// The row's subject: a device id for every device and pairing event.
    pub subject: Option<String>,
    /// An exact action (`pairing.approve`), or a family of them when it ends with a dot (`pairing.`).
    pub action: Option<String>,
}

impl AuditFilter {
    /// A filter from what a caller typed: surrounding blanks are dropped, and an empty value filters nothing.
    pub fn new(subject: Option<String>, action: Option<String>) -> AuditFilter {
        let given =
            |value: Option<String>| value.map(|value| value.trim().to_owned()).filter(|value| !value.is_empty());
        AuditFilter { subject: given(subject), action: given(action) }
    }

    /// The action filter as the SQL takes it: (exact action, family prefix), at most one of them.
    pub fn action_parts(&self) -> (Option<&str>, Option<&str>) {
        match self.action.as_deref() {
            Some(family) if family.ends_with('.') => (None, Some(family)),
            exact => (exact, None),
        }
    }
}

/// A stored audit row.
#[derive(Clone, Debug, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditRow {
    pub event_id: i64,
    pub at_ms: Millis,
    pub actor: String,
    pub action: String,
    pub subject: Option<String>,
    pub remote_addr: Option<String>,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

/// The audit event ids this store handle committed, so that a watcher of the audit trail tells the
/// decisions made here from those made elsewhere (another node, the offline CLI) without a column for it.
/// Shared by the handle's clones; a write transaction notes each id as it writes it, before its commit.
#[derive(Clone, Debug, Default)]
pub struct OwnEvents(std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<i64>>>);

/// Own ids kept at most; a watcher that stopped reading must not make the set grow without end.
const MAX_OWN_EVENTS: usize = 100_000;

impl OwnEvents {
    /// Notes ids committed by this handle.
    pub fn note(&self, ids: &[i64]) {
        let mut own = self.0.lock().expect("own events lock");
        own.extend(ids.iter().copied());
        while own.len() > MAX_OWN_EVENTS {
            own.pop_first();
        }
    }

    /// `rows` (read after some mark, oldest first) without those committed by this handle; the ids up to
    /// the newest row are forgotten, as a watcher reads each id once.
    pub fn elsewhere(&self, rows: Vec<AuditRow>) -> Vec<AuditRow> {
        let mut own = self.0.lock().expect("own events lock");
        let Some(newest) = rows.last().map(|row| row.event_id) else { return rows };
        let elsewhere = rows.into_iter().filter(|row| !own.contains(&row.event_id)).collect();
        *own = own.split_off(&(newest + 1));
        elsewhere
    }
}

/// One node's count of failed authentications from one network (an address, or an IPv6 /64), as it shares
/// it with the fleet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthFailureCount {
    pub network: String,
    pub window_start_ms: Millis,
    pub failures: i64,
    pub locked_until_ms: Option<Millis>,
}

/// What the other nodes of the fleet counted for one network: failures in their current windows, and the
/// latest lockout still running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthFailuresElsewhere {
    pub network: String,
    pub failures: i64,
    pub locked_until_ms: Option<Millis>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(event_id: i64) -> AuditRow {
        AuditRow {
            event_id,
            at_ms: 0,
            actor: "system".into(),
            action: "token.revoke".into(),
            subject: None,
            remote_addr: None,
            details: serde_json::json!({}),
        }
    }

    #[test]
    fn own_events_are_left_out_and_forgotten_once_read() {
        let own = OwnEvents::default();
        own.note(&[2, 4, 9]);
        let elsewhere = own.elsewhere(vec![row(1), row(2), row(3), row(4)]);
        assert_eq!(elsewhere.iter().map(|r| r.event_id).collect::<Vec<_>>(), [1, 3]);
        // 2 and 4 were read and forgotten; 9 is still ahead.
        assert_eq!(own.0.lock().unwrap().iter().copied().collect::<Vec<_>>(), [9]);
        assert!(own.elsewhere(vec![row(9)]).is_empty());
        assert!(own.elsewhere(Vec::new()).is_empty());
    }
}
