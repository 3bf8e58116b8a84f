//! The audit trail: written inside the transaction of the change it describes.

use sqlx::PgConnection;

use super::{Store, StoreResult};
use crate::{AuditEvent, AuditRow};

pub(super) async fn record(conn: &mut PgConnection, event: &AuditEvent) -> StoreResult<()> {
    let details = event.details.to_string();
    sqlx::query!(
        "INSERT INTO audit_events (at_ms, actor, action, subject, remote_addr, details) VALUES ($1, $2, $3, $4, $5, $6::text::jsonb)",
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
            .fetch_one(&self.pool)
            .await?;
        Ok(id)
    }

    /// Devices whose access the offline CLI withdrew (removed, or a token rotated or revoked) in audit events
    /// after `after_id`: (event id, when, device id), oldest first. A running server closes their sockets.
    pub async fn offline_revocations(&self, after_id: i64) -> StoreResult<Vec<(i64, i64, String)>> {
        let rows = sqlx::query!(
            r#"SELECT event_id AS "event_id!: i64", at_ms, subject AS "subject!: String" FROM audit_events
                WHERE event_id > $1 AND action IN ('device.remove', 'token.rotate', 'token.revoke')
                  AND actor LIKE 'cli:%' AND subject IS NOT NULL
                ORDER BY event_id"#,
            after_id
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|row| (row.event_id, row.at_ms, row.subject)).collect())
    }

    pub async fn audit_page(&self, before_id: Option<i64>, limit: i64) -> StoreResult<Vec<AuditRow>> {
        let before = before_id.unwrap_or(i64::MAX);
        let rows = sqlx::query!(
            r#"SELECT event_id AS "event_id!: i64", at_ms, actor, action, subject, remote_addr, details::text AS "details!"
               FROM audit_events WHERE event_id < $1 ORDER BY event_id DESC LIMIT $2"#,
            before,
            limit
        )
        .fetch_all(&self.pool)
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
