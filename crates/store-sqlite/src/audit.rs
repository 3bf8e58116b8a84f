//! The audit trail: written inside the transaction of the change it describes.

use serde::Serialize;
use sqlx::SqliteConnection;

use super::{Store, StoreResult};
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
    /// A REST caller, by token id.
    Rest { token_id: String },
}

impl Actor {
    pub fn label(&self) -> String {
        match self {
            Actor::System => "system".to_owned(),
            Actor::Socket { conn_id, device_id: Some(device) } => format!("socket:{conn_id}/device:{device}"),
            Actor::Socket { conn_id, device_id: None } => format!("socket:{conn_id}"),
            Actor::Cli { user } => format!("cli:{user}"),
            Actor::Rest { token_id } => format!("rest:{token_id}"),
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

pub(super) async fn record(conn: &mut SqliteConnection, event: &AuditEvent) -> StoreResult<()> {
    let details = event.details.to_string();
    sqlx::query!(
        "INSERT INTO audit_events (at_ms, actor, action, subject, remote_addr, details) VALUES (?, ?, ?, ?, ?, ?)",
        event.at_ms,
        event.actor,
        event.action,
        event.subject,
        event.remote_addr,
        details
    )
    .execute(conn)
    .await?;
    Ok(())
}

impl Store {
    /// Records an event that is not part of another change (a lockout, say).
    pub async fn record_audit(&self, event: &AuditEvent) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        record(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Audit rows, newest first, before `before_id` when given.
    /// The newest audit event's id (0 for none): where a watcher of later events starts.
    pub async fn last_audit_id(&self) -> StoreResult<i64> {
        let id = sqlx::query_scalar!(r#"SELECT COALESCE(MAX(event_id), 0) AS "id!: i64" FROM audit_events"#)
            .fetch_one(&self.readers)
            .await?;
        Ok(id)
    }

    /// Devices whose access the offline CLI withdrew (removed, or a token rotated or revoked) in audit events
    /// after `after_id`: (event id, when, device id), oldest first. A running server closes their sockets.
    pub async fn offline_revocations(&self, after_id: i64) -> StoreResult<Vec<(i64, i64, String)>> {
        let rows = sqlx::query!(
            r#"SELECT event_id AS "event_id!: i64", at_ms, subject AS "subject!: String" FROM audit_events
                WHERE event_id > ? AND action IN ('device.remove', 'token.rotate', 'token.revoke')
                  AND actor LIKE 'cli:%' AND subject IS NOT NULL
                ORDER BY event_id"#,
            after_id
        )
        .fetch_all(&self.readers)
        .await?;
        Ok(rows.into_iter().map(|row| (row.event_id, row.at_ms, row.subject)).collect())
    }

    pub async fn audit_page(&self, before_id: Option<i64>, limit: i64) -> StoreResult<Vec<AuditRow>> {
        let before = before_id.unwrap_or(i64::MAX);
        let rows = sqlx::query!(
            r#"SELECT event_id AS "event_id!: i64", at_ms, actor, action, subject, remote_addr, details
               FROM audit_events WHERE event_id < ? ORDER BY event_id DESC LIMIT ?"#,
            before,
            limit
        )
        .fetch_all(&self.readers)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(AuditRow {
                    event_id: row.event_id,
                    at_ms: row.at_ms,
                    actor: row.actor,
                    action: row.action,
                    subject: row.subject,
                    remote_addr: row.remote_addr,
                    details: serde_json::from_str(&row.details)
                        .map_err(|e| super::StoreError::InvalidData(format!("audit details: {e}")))?,
                })
            })
            .collect()
    }
}
