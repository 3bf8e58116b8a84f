//! Writing imported state (OpenClaw's pairings, tokens, requests and runs) in one transaction.
//! Idempotent: rows that are already here are left alone, and the counts say what actually changed.

use super::audit;
use super::{Store, StoreResult};
use crate::{Actor, AuditEvent, ImportCounts, ImportedDevice, ImportedRequest, Run};
use pairgate_domain::PAIRING_REQUEST_TTL_MS;
use pairgate_domain::clock::Millis;

impl Store {
    /// Writes imported state in one transaction; with `dry_run`, rolls it back and only counts.
    pub async fn apply_import(
        &self,
        devices: &[ImportedDevice],
        requests: &[ImportedRequest],
        runs: &[Run],
        source: &str,
        dry_run: bool,
        now_ms: Millis,
    ) -> StoreResult<ImportCounts> {
        let mut tx = self.begin_write().await?;
        let mut counts = ImportCounts::default();
        for device in devices {
            let (id, key, meta) = (device.device_id.as_str(), device.public_key.to_base64url(), &device.meta);
            let inserted = sqlx::query!(
                "INSERT INTO devices (device_id, public_key, client_id, client_mode, platform, device_family, display_name,
                                      remote_ip, approved_via, created_at_ms, approved_at_ms, last_seen_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'import', $9, $10, $11) ON CONFLICT DO NOTHING",
                id,
                key,
                meta.client_id,
                meta.client_mode,
                meta.platform,
                meta.device_family,
                meta.display_name,
                device.remote_ip,
                device.created_at_ms,
                device.approved_at_ms,
                device.last_seen_at_ms
            )
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                // Known to pairgate already, which decides from now on: an operator may have removed it,
                // narrowed it or rotated its tokens since. Nothing of it is imported again.
                continue;
            }
            counts.devices += inserted;
            for (role, scopes) in &device.grants {
                let (role, scopes) = (role.as_str(), scopes.to_json());
                counts.grants += sqlx::query!(
                    "INSERT INTO grants (device_id, role, scopes, approved_at_ms, approved_by)
                     VALUES ($1, $2, $3::text::jsonb, $4, 'import:openclaw') ON CONFLICT DO NOTHING",
                    id,
                    role,
                    scopes,
                    device.approved_at_ms
                )
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
            for token in &device.tokens {
                let (role, scopes, digest) =
                    (token.role.as_str(), token.scopes.to_json(), token.digest.as_bytes().as_slice());
                counts.tokens += sqlx::query!(
                    "INSERT INTO device_tokens (device_id, role, digest, scopes, issued_at_ms, rotated_at_ms, revoked_at_ms,
                                                last_used_at_ms)
                     VALUES ($1, $2, $3, $4::text::jsonb, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                    id,
                    role,
                    digest,
                    scopes,
                    token.issued_at_ms,
                    token.rotated_at_ms,
                    token.revoked_at_ms,
                    token.last_used_at_ms
                )
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
        }
        for request in requests {
            let roles = serde_json::to_string(&request.roles).expect("roles serialize");
            let reason = if request.is_repair { "scope-upgrade" } else { "not-paired" };
            let (id, key, role, scopes, meta) = (
                request.device_id.as_str(),
                request.public_key.to_base64url(),
                request.role.as_str(),
                request.scopes.to_json(),
                &request.meta,
            );
            let expires_at = request.ts_ms + PAIRING_REQUEST_TTL_MS;
            counts.requests += sqlx::query!(
                "INSERT INTO pairing_requests (request_id, device_id, public_key, role, roles, scopes, reason, client_id,
                     client_mode, platform, device_family, display_name, remote_ip, is_local, is_repair, created_at_ms,
                     refreshed_at_ms, expires_at_ms)
                 VALUES ($1, $2, $3, $4, $5::text::jsonb, $6::text::jsonb, $7, $8, $9, $10, $11, $12, $13, false, $14, $15, $16, $17) ON CONFLICT DO NOTHING",
                request.request_id,
                id,
                key,
                role,
                roles,
                scopes,
                reason,
                meta.client_id,
                meta.client_mode,
                meta.platform,
                meta.device_family,
                meta.display_name,
                request.remote_ip,
                request.is_repair,
                request.ts_ms,
                request.ts_ms,
                expires_at
            )
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        for run in runs {
            for key in [&run.requester_session_key, &run.child_session_key] {
                let agent_id = pairgate_domain::agent_id_of(key).unwrap_or("main");
                let parent = (key == &run.child_session_key).then_some(run.requester_session_key.as_str());
                let depth: i64 = if parent.is_some() { 1 } else { 0 };
                counts.sessions += sqlx::query!(
                    "INSERT INTO sessions (session_key, agent_id, parent_key, spawn_depth, created_at_ms, updated_at_ms)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                    key,
                    agent_id,
                    parent,
                    depth,
                    run.created_at,
                    run.created_at
                )
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
            let state = run.state.as_str();
            counts.runs += sqlx::query!(
                "INSERT INTO runs (run_id, child_session_key, requester_session_key, controller_session_key, task, label,
                                   model, cleanup, spawn_mode, run_timeout_seconds, state, created_at_ms, started_at_ms,
                                   ended_at_ms, ended_reason, outcome_status, outcome_error, archive_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) ON CONFLICT DO NOTHING",
                run.run_id,
                run.child_session_key,
                run.requester_session_key,
                run.controller_session_key,
                run.task,
                run.label,
                run.model,
                run.cleanup,
                run.spawn_mode,
                run.run_timeout_seconds,
                state,
                run.created_at,
                run.started_at,
                run.ended_at,
                run.ended_reason,
                run.outcome_status,
                run.outcome_error,
                run.archive_at_ms
            )
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        if dry_run {
            // Dropped uncommitted: rolled back.
            return Ok(counts);
        }
        if !counts.is_empty() {
            let event = AuditEvent::new(&Actor::local_cli(), "import.openclaw", now_ms)
                .subject(source)
                .details(serde_json::to_value(&counts).expect("counts serialize"));
            audit::record(&mut tx, &event).await?;
        }
        tx.commit().await?;
        Ok(counts)
    }
}
