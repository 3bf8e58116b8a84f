//! The audit trail: written inside the transaction of the change it describes.

use super::{Store, StoreResult, WriteTx};
use crate::{AuditEvent, AuditFilter, AuditRow};

/// Writes `event` in the transaction of the change it describes.
pub(super) async fn record(tx: &mut WriteTx, event: &AuditEvent) -> StoreResult<()> {
    let details = event.details.to_string();
    let event_id = sqlx::query_scalar!(
        r#"INSERT INTO audit_events (at_ms, actor, action, subject, remote_addr, details) VALUES (?, ?, ?, ?, ?, ?)
           RETURNING event_id AS "event_id!: i64""#,
        event.at_ms,
        event.actor,
        event.action,
        event.subject,
        event.remote_addr,
        details
    )
    .fetch_one(&mut **tx)
    .await?;
    // Noted now, before the commit, so that a watcher can never read it as decided elsewhere (an id of a
    // transaction that rolls back is never used again, and so never read).
    tx.own.note(&[event_id]);
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

    /// The newest audit event's id (0 for none): where a watcher of later events starts.
    pub async fn last_audit_id(&self) -> StoreResult<i64> {
        let id = sqlx::query_scalar!(r#"SELECT COALESCE(MAX(event_id), 0) AS "id!: i64" FROM audit_events"#)
            .fetch_one(&self.readers)
            .await?;
        Ok(id)
    }

    /// The audit events after `after_id` that were committed elsewhere (by another process or node, not by
    /// this handle), oldest first, at most `limit`: what a running server must act on (a revocation closes
    /// sockets, a pairing event is announced, a run's change wakes its waiters). Fewer than `limit` rows
    /// (after own ones are left out) does not mean the end: the next call starts after the last id read,
    /// which is returned with the rows.
    pub async fn changes_elsewhere(&self, after_id: i64, limit: i64) -> StoreResult<(Vec<AuditRow>, i64)> {
        let rows = sqlx::query!(
            r#"SELECT event_id AS "event_id!: i64", at_ms, actor, action, subject, remote_addr, details
                 FROM audit_events WHERE event_id > ? ORDER BY event_id LIMIT ?"#,
            after_id,
            limit
        )
        .fetch_all(&self.readers)
        .await?;
        let rows = rows
            .into_iter()
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
            .collect::<StoreResult<Vec<_>>>()?;
        let last = rows.last().map_or(after_id, |row| row.event_id);
        Ok((self.own_events.elsewhere(rows), last))
    }

    /// Audit rows, newest first, before `before_id` when given.
    /// Newest first, before `before_id`, the rows `filter` lets through.
    pub async fn audit_page(
        &self,
        filter: &AuditFilter,
        before_id: Option<i64>,
        limit: i64,
    ) -> StoreResult<Vec<AuditRow>> {
        let before = before_id.unwrap_or(i64::MAX);
        let (subject, (exact, family)) = (filter.subject.as_deref(), filter.action_parts());
        let rows = sqlx::query!(
            r#"SELECT event_id AS "event_id!: i64", at_ms, actor, action, subject, remote_addr, details
               FROM audit_events
               WHERE event_id < ?
                 AND (? IS NULL OR subject = ?)
                 AND (? IS NULL OR action = ?)
                 AND (? IS NULL OR substr(action, 1, length(?)) = ?)
               ORDER BY event_id DESC LIMIT ?"#,
            before,
            subject,
            subject,
            exact,
            exact,
            family,
            family,
            family,
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
