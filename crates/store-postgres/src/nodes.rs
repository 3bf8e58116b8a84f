//! The nodes of a fleet and the runs they serve. A node's id is new at each process start; it holds a
//! lease it renews. The runs a node registered are its own: when it stops cleanly it ends them itself
//! (`interrupted`, as a restart does on SQLite); when it dies (a crash, `kill -9`, a lost network) the
//! fleet ends them once its lease has expired (`interrupted`, reason `node-lost`). A node's start never
//! touches another live node's runs.

use pairgate_domain::clock::Millis;
use pairgate_store_types::{ARCHIVE_AFTER_MS, Actor, AuditEvent, AuthFailureCount, AuthFailuresElsewhere, StoreResult};

use super::{Store, WriteTx, audit};

impl Store {
    /// This handle's node id, once it has joined the fleet.
    pub(crate) fn node_id(&self) -> Option<String> {
        self.node.lock().expect("node lock").clone()
    }

    /// Joins the fleet as a new node holding a lease until `now_ms + lease_ms`; returns its id.
    pub async fn join_fleet(&self, lease_ms: Millis, now_ms: Millis) -> StoreResult<String> {
        let node_id = uuid::Uuid::new_v4().to_string();
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_owned();
        let (pid, version) = (i64::from(std::process::id()), env!("CARGO_PKG_VERSION"));
        // Bookkeeping, not a decision: no audit row (the `nodes` table is the record).
        sqlx::query!(
            "INSERT INTO nodes (node_id, host, pid, version, started_at_ms, lease_expires_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6)",
            node_id,
            host,
            pid,
            version,
            now_ms,
            now_ms + lease_ms
        )
        .execute(&self.pool)
        .await?;
        *self.node.lock().expect("node lock") = Some(node_id.clone());
        Ok(node_id)
    }

    /// Renews this node's lease (no audit row: bookkeeping). A node the fleet already found lost (its
    /// lease expired, its runs ended) joins again under a new id, and says so: its old runs stay ended.
    pub async fn renew_lease(&self, lease_ms: Millis, now_ms: Millis) -> StoreResult<()> {
        let Some(node_id) = self.node_id() else { return Ok(()) };
        let renewed = sqlx::query!(
            "UPDATE nodes SET lease_expires_at_ms = $1 WHERE node_id = $2 AND ended_at_ms IS NULL",
            now_ms + lease_ms,
            node_id
        )
        .execute(&self.pool)
        .await?
        .rows_affected();
        if renewed == 0 {
            let new_id = self.join_fleet(lease_ms, now_ms).await?;
            tracing::warn!(old = %node_id, new = %new_id, "this node's lease had expired and the fleet ended its runs; joined again");
        }
        Ok(())
    }

    /// Leaves the fleet: ends this node's active runs (`interrupted`, `gateway-restart`) and the node.
    pub async fn leave_fleet(&self, now_ms: Millis) -> StoreResult<Vec<String>> {
        let Some(node_id) = self.node.lock().expect("node lock").take() else { return Ok(Vec::new()) };
        let mut tx = self.begin_write().await?;
        let ended = end_runs(&mut tx, std::slice::from_ref(&node_id), false, "gateway-restart", now_ms).await?;
        sqlx::query!("UPDATE nodes SET ended_at_ms = $1 WHERE node_id = $2", now_ms, node_id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(ended)
    }

    /// Ends the runs of nodes whose lease expired before `now_ms` (`interrupted`, `node-lost`) and those
    /// nodes, and the active runs that belong to no node (imported from elsewhere, or left by a pairgate
    /// that predates nodes). Runs of live nodes are never touched. Looks before writing: a healthy fleet
    /// commits nothing.
    pub async fn recover_interrupted_runs(&self, now_ms: Millis) -> StoreResult<Vec<String>> {
        let lost = sqlx::query_scalar!(
            "SELECT node_id FROM nodes WHERE ended_at_ms IS NULL AND lease_expires_at_ms < $1",
            now_ms
        )
        .fetch_all(&self.pool)
        .await?;
        let orphans = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM runs WHERE node_id IS NULL AND state IN ('pending', 'running')) AS "any!""#
        )
        .fetch_one(&self.pool)
        .await?;
        if lost.is_empty() && !orphans {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        // Under the write lock: a node that renewed meanwhile is not lost.
        let lost = sqlx::query_scalar!(
            "UPDATE nodes SET ended_at_ms = $1 WHERE ended_at_ms IS NULL AND lease_expires_at_ms < $1
             RETURNING node_id",
            now_ms
        )
        .fetch_all(&mut *tx)
        .await?;
        // The run.interrupt audit row names the lost nodes.
        let ended = end_runs(&mut tx, &lost, true, "node-lost", now_ms).await?;
        tx.commit().await?;
        Ok(ended)
    }
}

impl Store {
    /// Shares this node's counts of failed authentications with the fleet (about once a second, never a
    /// write per failed guess) and returns what the other nodes counted within `window_ms` of `now_ms`.
    /// Bookkeeping, not a decision: it takes no write lock and writes no audit row. Nothing before this
    /// node joined the fleet.
    pub async fn share_auth_failures(
        &self,
        counts: &[AuthFailureCount],
        window_ms: Millis,
        now_ms: Millis,
    ) -> StoreResult<Vec<AuthFailuresElsewhere>> {
        let Some(node_id) = self.node_id() else { return Ok(Vec::new()) };
        let mut tx = self.pool.begin().await?;
        sqlx::query!("DELETE FROM auth_failures WHERE node_id = $1", node_id).execute(&mut *tx).await?;
        for count in counts {
            sqlx::query!(
                "INSERT INTO auth_failures (limit_key, node_id, window_start_ms, failures, locked_until_ms)
                 VALUES ($1, $2, $3, $4, $5)",
                count.network,
                node_id,
                count.window_start_ms,
                count.failures,
                count.locked_until_ms
            )
            .execute(&mut *tx)
            .await?;
        }
        let window_since = now_ms - window_ms;
        // Counts nobody needs any more, whichever node left them (one that died, say).
        sqlx::query!(
            "DELETE FROM auth_failures
              WHERE window_start_ms <= $1 AND (locked_until_ms IS NULL OR locked_until_ms <= $2)",
            window_since,
            now_ms
        )
        .execute(&mut *tx)
        .await?;
        let rows = sqlx::query!(
            r#"SELECT limit_key AS "network!",
                      COALESCE(SUM(failures) FILTER (WHERE window_start_ms > $2), 0)::BIGINT AS "failures!",
                      MAX(locked_until_ms) FILTER (WHERE locked_until_ms > $3) AS locked_until_ms
                 FROM auth_failures WHERE node_id <> $1 GROUP BY limit_key"#,
            node_id,
            window_since,
            now_ms
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows
            .into_iter()
            .map(|row| AuthFailuresElsewhere {
                network: row.network,
                failures: row.failures,
                locked_until_ms: row.locked_until_ms,
            })
            .collect())
    }
}

/// Ends the active runs of `nodes` (and, with `orphans`, those of no node), with one audit row.
async fn end_runs(
    tx: &mut WriteTx,
    nodes: &[String],
    orphans: bool,
    reason: &str,
    now_ms: Millis,
) -> StoreResult<Vec<String>> {
    let archive_at = now_ms + ARCHIVE_AFTER_MS;
    let ended = sqlx::query_scalar!(
        r#"UPDATE runs SET state = 'interrupted', ended_at_ms = $1, ended_reason = $2,
                  outcome_status = 'error', outcome_error = 'interrupted',
                  archive_at_ms = CASE WHEN cleanup = 'delete' THEN $3 ELSE archive_at_ms END
            WHERE state IN ('pending', 'running') AND (node_id = ANY($4) OR ($5 AND node_id IS NULL))
        RETURNING run_id"#,
        now_ms,
        reason,
        archive_at,
        nodes,
        orphans
    )
    .fetch_all(&mut **tx)
    .await?;
    if !ended.is_empty() {
        let event = AuditEvent::new(&Actor::System, "run.interrupt", now_ms)
            .details(serde_json::json!({ "reason": reason, "runs": ended, "nodes": nodes }));
        audit::record(tx, &event).await?;
    }
    Ok(ended)
}
