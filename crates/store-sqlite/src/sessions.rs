//! Sub-agent sessions and runs (docs/protocol.md §7). Limits are counted inside the transaction that inserts,
//! so concurrent spawns cannot overshoot; state changes go only through `RunState::can_become`.

use sqlx::SqliteConnection;

use super::audit;
use super::{Store, StoreResult};
use crate::{ARCHIVE_AFTER_MS, Actor, AuditEvent, NewRun, Run, RunEnd, SessionEntry, SessionPatch, SpawnLimits};
use pairgate_domain::clock::Millis;
use pairgate_domain::{Refusal, RunState, SpawnLimit, agent_id_of, is_main_key, is_subagent_key};
use pairgate_store_types::rows::{
    MAX_LABEL, RunRow, SessionRow, check_immutable, check_length, check_not_negative, check_one_of, refuse_constraint,
};

async fn session_on(conn: &mut SqliteConnection, key: &str) -> StoreResult<Option<SessionEntry>> {
    let row = sqlx::query_as!(
        SessionRow,
        r#"SELECT session_key AS "session_key!", agent_id, parent_key, spawn_depth, subagent_role,
                  subagent_control_scope, label, model, thinking_level, created_at_ms, updated_at_ms, archived_at_ms
             FROM sessions WHERE session_key = ?"#,
        key
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(SessionEntry::from))
}

async fn run_on(conn: &mut SqliteConnection, run_id: &str) -> StoreResult<Option<Run>> {
    let row = sqlx::query_as!(
        RunRow,
        r#"SELECT run_id AS "run_id!", child_session_key, requester_session_key, controller_session_key, task, label,
                  model, cleanup, spawn_mode, run_timeout_seconds, state, created_at_ms, started_at_ms, ended_at_ms,
                  ended_reason, outcome_status, outcome_error, archive_at_ms
             FROM runs WHERE run_id = ?"#,
        run_id
    )
    .fetch_optional(conn)
    .await?;
    row.map(Run::try_from).transpose()
}

/// Ensures a session row exists (a parent named by `spawnedBy` may be a main session pairgate has not
/// seen yet).
async fn ensure_session(conn: &mut SqliteConnection, key: &str, now_ms: Millis) -> StoreResult<()> {
    let agent_id = agent_id_of(key).unwrap_or("main");
    sqlx::query!(
        "INSERT INTO sessions (session_key, agent_id, created_at_ms, updated_at_ms) VALUES (?, ?, ?, ?)
         ON CONFLICT (session_key) DO NOTHING",
        key,
        agent_id,
        now_ms,
        now_ms
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves a run to `next` when its current state allows it; returns the updated run.
async fn transition(
    conn: &mut SqliteConnection,
    run_id: &str,
    next: RunState,
    end: Option<(&str, &str, Option<&str>)>,
    now_ms: Millis,
) -> StoreResult<Run> {
    let sources: Vec<&str> = RunState::sources_of(next).into_iter().map(RunState::as_str).collect();
    let sources = serde_json::to_string(&sources).expect("strings serialize");
    let next_name = next.as_str();
    let (ended_reason, outcome_status, outcome_error) = match end {
        Some((reason, status, error)) => (Some(reason), Some(status), error),
        None => (None, None, None),
    };
    let started = (next == RunState::Running).then_some(now_ms);
    let ended = next.is_terminal().then_some(now_ms);
    let archive_at = ended.map(|at| at + ARCHIVE_AFTER_MS);
    let updated = sqlx::query!(
        "UPDATE runs SET state = ?,
                started_at_ms = COALESCE(?, started_at_ms),
                ended_at_ms = COALESCE(?, ended_at_ms),
                ended_reason = COALESCE(?, ended_reason),
                outcome_status = COALESCE(?, outcome_status),
                outcome_error = COALESCE(?, outcome_error),
                archive_at_ms = CASE WHEN ? IS NOT NULL AND cleanup = 'delete' THEN ? ELSE archive_at_ms END
          WHERE run_id = ? AND state IN (SELECT value FROM json_each(?))",
        next_name,
        started,
        ended,
        ended_reason,
        outcome_status,
        outcome_error,
        ended,
        archive_at,
        run_id,
        sources
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let run = run_on(conn, run_id).await?.ok_or_else(|| Refusal::UnknownRun { run_id: run_id.to_owned() })?;
    if updated == 0 {
        return Err(Refusal::IllegalTransition { run_id: run_id.to_owned(), from: run.state, to: next }.into());
    }
    Ok(run)
}

impl Store {
    /// `sessions.patch`: creates or updates a session entry.
    pub async fn patch_session(
        &self,
        patch: &SessionPatch,
        actor: &Actor,
        now_ms: Millis,
    ) -> StoreResult<SessionEntry> {
        self.patch_session_checked(patch, actor, now_ms).await.map_err(refuse_constraint)
    }

    async fn patch_session_checked(
        &self,
        patch: &SessionPatch,
        actor: &Actor,
        now_ms: Millis,
    ) -> StoreResult<SessionEntry> {
        let key = patch.key.as_str();
        let agent_id = agent_id_of(key).ok_or_else(|| Refusal::NotAnAgentKey { key: key.to_owned() })?;
        check_length("label", patch.label.as_deref(), MAX_LABEL)?;
        check_one_of("subagentRole", patch.subagent_role.as_deref(), &["orchestrator", "leaf"])?;
        check_one_of("subagentControlScope", patch.subagent_control_scope.as_deref(), &["children", "none"])?;
        check_not_negative("spawnDepth", patch.spawn_depth)?;
        let lineage = patch.spawned_by.is_some()
            || patch.spawn_depth.is_some()
            || patch.subagent_role.is_some()
            || patch.subagent_control_scope.is_some();
        if lineage && !is_subagent_key(key) {
            return Err(Refusal::LineageOnMainSession { key: key.to_owned() }.into());
        }
        let mut tx = self.begin_write().await?;
        let existing = session_on(&mut tx, key).await?;
        if let Some(current) = &existing {
            check_immutable("spawnedBy", &current.spawned_by, &patch.spawned_by)?;
            check_immutable("subagentRole", &current.subagent_role, &patch.subagent_role)?;
            check_immutable("subagentControlScope", &current.subagent_control_scope, &patch.subagent_control_scope)?;
            let depth_set = current.spawned_by.is_some() || current.spawn_depth > 0;
            if let Some(depth) = patch.spawn_depth
                && depth_set
                && depth != current.spawn_depth
            {
                let current = current.spawn_depth.to_string();
                return Err(Refusal::ImmutableField { field: "spawnDepth", current }.into());
            }
        }
        let mut depth = patch.spawn_depth;
        if let Some(parent) = &patch.spawned_by {
            if parent == key {
                return Err(Refusal::OwnParent.into());
            }
            ensure_session(&mut tx, parent, now_ms).await?;
            let parent_depth = session_on(&mut tx, parent).await?.map(|p| p.spawn_depth).unwrap_or(0);
            depth = Some(depth.unwrap_or(parent_depth + 1));
        }
        sqlx::query!(
            r#"INSERT INTO sessions (session_key, agent_id, parent_key, spawn_depth, subagent_role, subagent_control_scope,
                                     label, model, thinking_level, created_at_ms, updated_at_ms)
               VALUES (?, ?, ?, COALESCE(?, 0), ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (session_key) DO UPDATE SET
                   parent_key = COALESCE(excluded.parent_key, sessions.parent_key),
                   spawn_depth = CASE WHEN ? IS NULL THEN sessions.spawn_depth ELSE excluded.spawn_depth END,
                   subagent_role = COALESCE(excluded.subagent_role, sessions.subagent_role),
                   subagent_control_scope = COALESCE(excluded.subagent_control_scope, sessions.subagent_control_scope),
                   label = COALESCE(excluded.label, sessions.label),
                   model = COALESCE(excluded.model, sessions.model),
                   thinking_level = COALESCE(excluded.thinking_level, sessions.thinking_level),
                   updated_at_ms = excluded.updated_at_ms"#,
            key,
            agent_id,
            patch.spawned_by,
            depth,
            patch.subagent_role,
            patch.subagent_control_scope,
            patch.label,
            patch.model,
            patch.thinking_level,
            now_ms,
            now_ms,
            depth
        )
        .execute(&mut *tx)
        .await?;
        let entry = session_on(&mut tx, key).await?.expect("upserted just now");
        let action = if existing.is_some() { "session.patch" } else { "session.create" };
        audit::record(&mut tx, &AuditEvent::new(actor, action, now_ms).subject(key)).await?;
        tx.commit().await?;
        Ok(entry)
    }

    pub async fn session(&self, key: &str) -> StoreResult<Option<SessionEntry>> {
        let mut conn = self.readers.acquire().await?;
        session_on(&mut conn, key).await
    }

    /// Sessions by key after `after`, only children of `spawned_by` when given.
    pub async fn sessions_page(
        &self,
        spawned_by: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<SessionEntry>> {
        let (parent, after) = (spawned_by.unwrap_or(""), after.unwrap_or(""));
        let rows = sqlx::query_as!(
            SessionRow,
            r#"SELECT session_key AS "session_key!", agent_id, parent_key, spawn_depth, subagent_role,
                      subagent_control_scope, label, model, thinking_level, created_at_ms, updated_at_ms, archived_at_ms
                 FROM sessions WHERE (? = '' OR parent_key = ?) AND session_key > ?
                ORDER BY session_key LIMIT ?"#,
            parent,
            parent,
            after,
            limit
        )
        .fetch_all(&self.readers)
        .await?;
        Ok(rows.into_iter().map(SessionEntry::from).collect())
    }

    /// `sessions.delete`: removes a session and its runs. Refuses a main session, one with active runs,
    /// and one with child sessions (delete those first). Returns whether it existed.
    pub async fn delete_session(&self, key: &str, actor: &Actor, now_ms: Millis) -> StoreResult<bool> {
        if is_main_key(key) {
            return Err(Refusal::MainSessionUndeletable { key: key.to_owned() }.into());
        }
        let mut tx = self.begin_write().await?;
        let active = sqlx::query_scalar!(
            r#"SELECT COUNT(*) AS "n!: i64" FROM runs WHERE child_session_key = ? AND state IN ('pending', 'running')"#,
            key
        )
        .fetch_one(&mut *tx)
        .await?;
        if active > 0 {
            return Err(Refusal::SessionHasActiveRuns { key: key.to_owned(), count: active }.into());
        }
        let children = sqlx::query_scalar!(r#"SELECT COUNT(*) AS "n!: i64" FROM sessions WHERE parent_key = ?"#, key)
            .fetch_one(&mut *tx)
            .await?;
        if children > 0 {
            return Err(Refusal::SessionHasChildren { key: key.to_owned(), count: children }.into());
        }
        let deleted =
            sqlx::query!("DELETE FROM sessions WHERE session_key = ?", key).execute(&mut *tx).await?.rows_affected()
                > 0;
        if deleted {
            audit::record(&mut tx, &AuditEvent::new(actor, "session.delete", now_ms).subject(key)).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    /// Registers a spawn, checking every limit in the same transaction as the insert.
    pub async fn register_run(
        &self,
        new: &NewRun,
        limits: &SpawnLimits,
        actor: &Actor,
        now_ms: Millis,
    ) -> StoreResult<Run> {
        self.register_run_checked(new, limits, actor, now_ms).await.map_err(refuse_constraint)
    }

    async fn register_run_checked(
        &self,
        new: &NewRun,
        limits: &SpawnLimits,
        actor: &Actor,
        now_ms: Millis,
    ) -> StoreResult<Run> {
        check_length("label", new.label.as_deref(), MAX_LABEL)?;
        check_one_of("cleanup", Some(&new.cleanup), &["keep", "delete"])?;
        check_one_of("spawnMode", Some(&new.spawn_mode), &["run", "session"])?;
        check_not_negative("runTimeoutSeconds", new.run_timeout_seconds)?;
        let mut tx = self.begin_write().await?;
        if run_on(&mut tx, &new.run_id).await?.is_some() {
            return Err(Refusal::DuplicateRun { run_id: new.run_id.clone() }.into());
        }
        let child = session_on(&mut tx, &new.child_session_key)
            .await?
            .ok_or_else(|| Refusal::UnknownSession { key: new.child_session_key.clone() })?;
        if child.spawn_depth > limits.max_depth {
            let (max, current) = (limits.max_depth, child.spawn_depth);
            return Err(Refusal::SpawnLimit { limit: SpawnLimit::Depth, max, current }.into());
        }
        let children = sqlx::query_scalar!(
            r#"SELECT COUNT(*) AS "n!: i64" FROM runs WHERE requester_session_key = ? AND state IN ('pending', 'running')"#,
            new.requester_session_key
        )
        .fetch_one(&mut *tx)
        .await?;
        if children >= limits.max_children_per_requester {
            return Err(Refusal::SpawnLimit {
                limit: SpawnLimit::Children,
                max: limits.max_children_per_requester,
                current: children,
            }
            .into());
        }
        let concurrent =
            sqlx::query_scalar!(r#"SELECT COUNT(*) AS "n!: i64" FROM runs WHERE state IN ('pending', 'running')"#)
                .fetch_one(&mut *tx)
                .await?;
        if concurrent >= limits.max_concurrent_runs {
            return Err(Refusal::SpawnLimit {
                limit: SpawnLimit::Concurrent,
                max: limits.max_concurrent_runs,
                current: concurrent,
            }
            .into());
        }
        ensure_session(&mut tx, &new.requester_session_key, now_ms).await?;
        sqlx::query!(
            "INSERT INTO runs (run_id, child_session_key, requester_session_key, controller_session_key, task, label, model,
                               cleanup, spawn_mode, run_timeout_seconds, state, created_at_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
            new.run_id,
            new.child_session_key,
            new.requester_session_key,
            new.controller_session_key,
            new.task,
            new.label,
            new.model,
            new.cleanup,
            new.spawn_mode,
            new.run_timeout_seconds,
            now_ms
        )
        .execute(&mut *tx)
        .await?;
        let event = AuditEvent::new(actor, "run.register", now_ms)
            .subject(new.run_id.as_str())
            .details(serde_json::json!({ "child": new.child_session_key, "requester": new.requester_session_key }));
        audit::record(&mut tx, &event).await?;
        let run = run_on(&mut tx, &new.run_id).await?.expect("inserted just now");
        tx.commit().await?;
        Ok(run)
    }

    pub async fn start_run(&self, run_id: &str, actor: &Actor, now_ms: Millis) -> StoreResult<Run> {
        let mut tx = self.begin_write().await?;
        let run = transition(&mut tx, run_id, RunState::Running, None, now_ms).await?;
        audit::record(&mut tx, &AuditEvent::new(actor, "run.start", now_ms).subject(run_id)).await?;
        tx.commit().await?;
        Ok(run)
    }

    /// Ends a running run with the backend's outcome.
    pub async fn end_run(
        &self,
        run_id: &str,
        end: RunEnd,
        error: Option<&str>,
        actor: &Actor,
        now_ms: Millis,
    ) -> StoreResult<Run> {
        let (next, reason, status) = match end {
            RunEnd::Ok => (RunState::Done, "subagent-complete", "ok"),
            RunEnd::Error => (RunState::Failed, "subagent-error", "error"),
            RunEnd::Timeout => (RunState::Timeout, "subagent-error", "timeout"),
        };
        let mut tx = self.begin_write().await?;
        let run = transition(&mut tx, run_id, next, Some((reason, status, error)), now_ms).await?;
        let event =
            AuditEvent::new(actor, "run.end", now_ms).subject(run_id).details(serde_json::json!({ "status": status }));
        audit::record(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(run)
    }

    /// Kills a run and every active run below its child session; returns the killed runs.
    pub async fn kill_run(&self, run_id: &str, actor: &Actor, now_ms: Millis) -> StoreResult<Vec<Run>> {
        let mut tx = self.begin_write().await?;
        let run = run_on(&mut tx, run_id).await?.ok_or_else(|| Refusal::UnknownRun { run_id: run_id.to_owned() })?;
        if !run.state.is_active() {
            return Err(Refusal::IllegalTransition {
                run_id: run_id.to_owned(),
                from: run.state,
                to: RunState::Killed,
            }
            .into());
        }
        let targets = sqlx::query_scalar!(
            r#"WITH RECURSIVE subtree(key) AS (
                   SELECT ?
                   UNION SELECT s.session_key FROM sessions s JOIN subtree ON s.parent_key = subtree.key
               )
               SELECT run_id AS "run_id!" FROM runs
                WHERE child_session_key IN (SELECT key FROM subtree) AND state IN ('pending', 'running')
                ORDER BY created_at_ms"#,
            run.child_session_key
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut killed = Vec::with_capacity(targets.len());
        for target in &targets {
            killed.push(
                transition(
                    &mut tx,
                    target,
                    RunState::Killed,
                    Some(("subagent-killed", "error", Some("killed"))),
                    now_ms,
                )
                .await?,
            );
        }
        let event = AuditEvent::new(actor, "run.kill", now_ms)
            .subject(run_id)
            .details(serde_json::json!({ "killed": targets }));
        audit::record(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(killed)
    }

    /// At start-up: runs a crash left pending or running end as interrupted (never silently dropped).
    pub async fn recover_interrupted_runs(&self, now_ms: Millis) -> StoreResult<Vec<String>> {
        // Look before writing: a clean start commits nothing.
        let active = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM runs WHERE state IN ('pending', 'running')) AS "active!: bool""#
        )
        .fetch_one(&self.readers)
        .await?;
        if !active {
            return Ok(Vec::new());
        }
        let archive_at = now_ms + ARCHIVE_AFTER_MS;
        let mut tx = self.begin_write().await?;
        let interrupted = sqlx::query_scalar!(
            r#"UPDATE runs SET state = 'interrupted', ended_at_ms = ?, ended_reason = 'gateway-restart',
                      outcome_status = 'error', outcome_error = 'interrupted',
                      archive_at_ms = CASE WHEN cleanup = 'delete' THEN ? ELSE archive_at_ms END
                WHERE state IN ('pending', 'running')
            RETURNING run_id AS "run_id!""#,
            now_ms,
            archive_at
        )
        .fetch_all(&mut *tx)
        .await?;
        if !interrupted.is_empty() {
            let event = AuditEvent::new(&Actor::System, "run.interrupt", now_ms)
                .details(serde_json::json!({ "reason": "gateway-restart", "runs": interrupted }));
            audit::record(&mut tx, &event).await?;
        }
        tx.commit().await?;
        Ok(interrupted)
    }

    /// Fails the runs registered before `registered_before_ms` that never started: a client that only
    /// registers cannot hold spawn slots for ever. Their waiters see `error`, reason `never-started`.
    pub async fn expire_unstarted_runs(
        &self,
        registered_before_ms: Millis,
        now_ms: Millis,
    ) -> StoreResult<Vec<String>> {
        // Look before writing: an idle server must not commit an empty transaction per sweep.
        let due = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM runs WHERE state = 'pending' AND created_at_ms < ?) AS "due!: bool""#,
            registered_before_ms
        )
        .fetch_one(&self.readers)
        .await?;
        if !due {
            return Ok(Vec::new());
        }
        let archive_at = now_ms + ARCHIVE_AFTER_MS;
        let mut tx = self.begin_write().await?;
        let failed = sqlx::query_scalar!(
            r#"UPDATE runs SET state = 'failed', ended_at_ms = ?, ended_reason = 'never-started',
                      outcome_status = 'error', outcome_error = 'registered but never started',
                      archive_at_ms = CASE WHEN cleanup = 'delete' THEN ? ELSE archive_at_ms END
                WHERE state = 'pending' AND created_at_ms < ?
            RETURNING run_id AS "run_id!""#,
            now_ms,
            archive_at,
            registered_before_ms
        )
        .fetch_all(&mut *tx)
        .await?;
        if !failed.is_empty() {
            let event = AuditEvent::new(&Actor::System, "run.expire", now_ms)
                .details(serde_json::json!({ "reason": "never-started", "runs": failed }));
            audit::record(&mut tx, &event).await?;
        }
        tx.commit().await?;
        Ok(failed)
    }

    /// Archives the child sessions of ended `cleanup: delete` runs whose archive time has come.
    pub async fn archive_due_sessions(&self, now_ms: Millis) -> StoreResult<u64> {
        // Look before writing: an idle server must not commit an empty transaction per sweep.
        let due = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM runs r JOIN sessions s ON s.session_key = r.child_session_key
                               WHERE r.cleanup = 'delete' AND r.archive_at_ms <= ? AND s.archived_at_ms IS NULL
                                 AND r.state NOT IN ('pending', 'running')) AS "due!: bool""#,
            now_ms
        )
        .fetch_one(&self.readers)
        .await?;
        if !due {
            return Ok(0);
        }
        let mut tx = self.begin_write().await?;
        let archived = sqlx::query!(
            "UPDATE sessions SET archived_at_ms = ?
              WHERE archived_at_ms IS NULL
                AND session_key IN (SELECT child_session_key FROM runs
                                     WHERE cleanup = 'delete' AND archive_at_ms <= ?
                                       AND state NOT IN ('pending', 'running'))",
            now_ms,
            now_ms
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if archived > 0 {
            let event = AuditEvent::new(&Actor::System, "session.archive", now_ms)
                .details(serde_json::json!({ "count": archived }));
            audit::record(&mut tx, &event).await?;
        }
        tx.commit().await?;
        Ok(archived)
    }

    pub async fn run(&self, run_id: &str) -> StoreResult<Option<Run>> {
        let mut conn = self.readers.acquire().await?;
        run_on(&mut conn, run_id).await
    }

    /// Runs, newest first, optionally of one requester or child session and in one state.
    pub async fn runs_page(
        &self,
        requester: Option<&str>,
        child: Option<&str>,
        state: Option<RunState>,
        limit: i64,
    ) -> StoreResult<Vec<Run>> {
        let (requester, child, state) =
            (requester.unwrap_or(""), child.unwrap_or(""), state.map(RunState::as_str).unwrap_or(""));
        let rows = sqlx::query_as!(
            RunRow,
            r#"SELECT run_id AS "run_id!", child_session_key, requester_session_key, controller_session_key, task, label,
                      model, cleanup, spawn_mode, run_timeout_seconds, state, created_at_ms, started_at_ms, ended_at_ms,
                      ended_reason, outcome_status, outcome_error, archive_at_ms
                 FROM runs
                WHERE (? = '' OR requester_session_key = ?) AND (? = '' OR child_session_key = ?) AND (? = '' OR state = ?)
                ORDER BY created_at_ms DESC, run_id LIMIT ?"#,
            requester,
            requester,
            child,
            child,
            state,
            state,
            limit
        )
        .fetch_all(&self.readers)
        .await?;
        rows.into_iter().map(Run::try_from).collect()
    }
}
