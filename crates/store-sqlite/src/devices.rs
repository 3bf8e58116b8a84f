//! Devices, their grants and their tokens.

use sqlx::SqliteConnection;

use super::audit;
use super::{Store, StoreResult};
use crate::{Actor, AuditEvent, DeviceFilter, NewGrant, SeenNote, TokenChange};
use pairgate_domain::clock::Millis;
use pairgate_domain::{DeviceId, DeviceRecord, PairingReason, Refusal, Role, ScopeSet, TokenSecret};
use pairgate_store_types::rows::{DeviceRow, invalid};

impl Store {
    /// The device, its grants and its newest token per role; `None` when never approved. Answered from
    /// the device cache while nothing has committed since the record was read.
    pub async fn device(&self, device_id: &DeviceId) -> StoreResult<Option<DeviceRecord>> {
        Ok(self.device_as_of(device_id).await?.0)
    }

    /// The device, with the newest audit event id its read saw. Audit ids grow in commit order, so a
    /// decision whose audit event is newer than the mark committed after this read: the connect path
    /// keeps the mark, and a revocation made by another process closes the sockets that read before it
    /// (compared by commit order, never by clocks).
    pub async fn device_as_of(&self, device_id: &DeviceId) -> StoreResult<(Option<DeviceRecord>, i64)> {
        let stamp = self.device_cache.stamp();
        if let Some(stamp) = stamp
            && let Some(cached) = self.device_cache.get(stamp, device_id)
        {
            return Ok(cached);
        }
        // One read transaction: the mark and the record come from the same snapshot.
        let mut tx = self.readers.begin().await?;
        let mark = sqlx::query_scalar!(r#"SELECT COALESCE(MAX(event_id), 0) AS "id!: i64" FROM audit_events"#)
            .fetch_one(&mut *tx)
            .await?;
        let record = read_device(&mut *tx, device_id).await?;
        tx.rollback().await?;
        if let Some(stamp) = stamp {
            self.device_cache.put(stamp, device_id, &(record.clone(), mark));
        }
        Ok((record, mark))
    }

    /// Every device that holds at least one grant, by id.
    pub async fn paired_devices(&self) -> StoreResult<Vec<DeviceRecord>> {
        self.devices_page(DeviceFilter::Paired, None, i64::MAX).await
    }

    /// A local connect asked for more than was approved and policy allows approving it silently: record
    /// the grant (union with what was approved), resolve any pending request of the device, and mint a
    /// token when asked, all in one transaction, before hello-ok is sent.
    pub async fn approve_silently(
        &self,
        grant: &NewGrant,
        reason: PairingReason,
        mint_token: bool,
        actor: &Actor,
        now_ms: Millis,
    ) -> StoreResult<Option<TokenSecret>> {
        let mut tx = self.begin_write().await?;
        let scopes = record_grant(&mut tx, grant, "silent", "silent", now_ms).await?;
        let device_id = grant.device_id.as_str();
        sqlx::query!(
            "UPDATE pairing_requests SET status = 'approved', resolved_by = 'silent', resolved_at_ms = ?
              WHERE device_id = ? AND status = 'pending'",
            now_ms,
            device_id
        )
        .execute(&mut *tx)
        .await?;
        let token = if mint_token {
            Some(mint_token_on(&mut tx, &grant.device_id, grant.role, &scopes, now_ms).await?)
        } else {
            None
        };
        let event = AuditEvent::new(actor, "device.approve.silent", now_ms)
            .subject(device_id)
            .remote(grant.remote_ip.as_deref())
            .details(serde_json::json!({
                "role": grant.role, "scopes": scopes.names(), "reason": reason.as_str(), "tokenIssued": mint_token,
            }));
        audit::record(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(token)
    }

    /// Issues a new token for an approved device and role, revoking the previous one.
    pub async fn issue_token(
        &self,
        device_id: &DeviceId,
        role: Role,
        actor: &Actor,
        remote_addr: Option<&str>,
        now_ms: Millis,
    ) -> StoreResult<TokenSecret> {
        let mut tx = self.begin_write().await?;
        let scopes = grant_scopes_on(&mut tx, device_id, role)
            .await?
            .ok_or_else(|| Refusal::NoGrant { device_id: device_id.to_string(), role })?;
        let token = mint_token_on(&mut tx, device_id, role, &scopes, now_ms).await?;
        let event = AuditEvent::new(actor, "token.issue", now_ms)
            .subject(device_id.as_str())
            .remote(remote_addr)
            .details(serde_json::json!({ "role": role, "scopes": scopes.names() }));
        audit::record(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(token)
    }
}

pub(super) async fn grant_scopes_on(
    conn: &mut SqliteConnection,
    device_id: &DeviceId,
    role: Role,
) -> StoreResult<Option<ScopeSet>> {
    let id = device_id.as_str();
    let role_name = role.as_str();
    let scopes = sqlx::query_scalar!(
        r#"SELECT g.scopes FROM grants g JOIN devices d ON d.device_id = g.device_id
            WHERE g.device_id = ? AND g.role = ? AND d.removed_at_ms IS NULL"#,
        id,
        role_name
    )
    .fetch_optional(&mut *conn)
    .await?;
    scopes.map(|json| ScopeSet::from_json(&json).map_err(|e| invalid("grant scopes", e))).transpose()
}

/// Upserts the device and its grant for `grant.role` (scopes unioned with any existing grant), and
/// keeps the live token's scopes equal to the grant's. Returns the resulting scopes.
pub(super) async fn record_grant(
    conn: &mut SqliteConnection,
    grant: &NewGrant,
    approved_via: &str,
    approved_by: &str,
    now_ms: Millis,
) -> StoreResult<ScopeSet> {
    let id = grant.device_id.as_str();
    let key = grant.public_key.to_base64url();
    let meta = &grant.meta;
    // A different key under the same id cannot happen (the id is the key's hash); a re-pair after
    // removal starts with no grants.
    sqlx::query!(
        r#"INSERT INTO devices (device_id, public_key, client_id, client_mode, platform, device_family,
                                display_name, remote_ip, approved_via, created_at_ms, approved_at_ms)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (device_id) DO UPDATE SET
               public_key = excluded.public_key, client_id = excluded.client_id,
               client_mode = excluded.client_mode, platform = excluded.platform,
               device_family = excluded.device_family,
               display_name = COALESCE(excluded.display_name, devices.display_name),
               remote_ip = COALESCE(excluded.remote_ip, devices.remote_ip),
               approved_via = excluded.approved_via, approved_at_ms = excluded.approved_at_ms,
               removed_at_ms = NULL"#,
        id,
        key,
        meta.client_id,
        meta.client_mode,
        meta.platform,
        meta.device_family,
        meta.display_name,
        grant.remote_ip,
        approved_via,
        now_ms,
        now_ms
    )
    .execute(&mut *conn)
    .await?;
    let existing = grant_scopes_on(conn, &grant.device_id, grant.role).await?.unwrap_or_default();
    let scopes = existing.union(&grant.scopes);
    let scopes_json = scopes.to_json();
    let role = grant.role.as_str();
    sqlx::query!(
        r#"INSERT INTO grants (device_id, role, scopes, approved_at_ms, approved_by) VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (device_id, role) DO UPDATE SET
               scopes = excluded.scopes, approved_at_ms = excluded.approved_at_ms, approved_by = excluded.approved_by"#,
        id,
        role,
        scopes_json,
        now_ms,
        approved_by
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE device_tokens SET scopes = ? WHERE device_id = ? AND role = ? AND revoked_at_ms IS NULL",
        scopes_json,
        id,
        role
    )
    .execute(&mut *conn)
    .await?;
    Ok(scopes)
}

/// Revokes the live token of the device and role, if any, and stores the digest of a new one.
pub(super) async fn mint_token_on(
    conn: &mut SqliteConnection,
    device_id: &DeviceId,
    role: Role,
    scopes: &ScopeSet,
    now_ms: Millis,
) -> StoreResult<TokenSecret> {
    let id = device_id.as_str();
    let role_name = role.as_str();
    let replaced = sqlx::query!(
        "UPDATE device_tokens SET revoked_at_ms = ? WHERE device_id = ? AND role = ? AND revoked_at_ms IS NULL",
        now_ms,
        id,
        role_name
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let rotated_at = (replaced > 0).then_some(now_ms);
    let token = TokenSecret::generate();
    let digest = token.digest();
    let digest_bytes = digest.as_bytes().as_slice();
    let scopes_json = scopes.to_json();
    sqlx::query!(
        "INSERT INTO device_tokens (device_id, role, digest, scopes, issued_at_ms, rotated_at_ms)
         VALUES (?, ?, ?, ?, ?, ?)",
        id,
        role_name,
        digest_bytes,
        scopes_json,
        now_ms,
        rotated_at
    )
    .execute(&mut *conn)
    .await?;
    Ok(token)
}

impl Store {
    /// Records a batch of last-seen times in one transaction. Bookkeeping, not a decision: no audit row.
    pub async fn record_last_seen(&self, notes: &[SeenNote]) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        for note in notes {
            let id = note.device_id.as_str();
            sqlx::query!(
                "UPDATE devices SET last_seen_at_ms = MAX(COALESCE(last_seen_at_ms, 0), ?) WHERE device_id = ?",
                note.at_ms,
                id
            )
            .execute(&mut *tx)
            .await?;
            if note.token_used {
                let role = note.role.as_str();
                sqlx::query!(
                    "UPDATE device_tokens SET last_used_at_ms = MAX(COALESCE(last_used_at_ms, 0), ?)
                      WHERE device_id = ? AND role = ? AND revoked_at_ms IS NULL",
                    note.at_ms,
                    id,
                    role
                )
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }
}

impl Store {
    /// Removes a device: its grants go, its live tokens are revoked, the row stays for the audit trail.
    pub async fn remove_device(
        &self,
        device_id: &DeviceId,
        actor: &Actor,
        remote_addr: Option<&str>,
        now_ms: Millis,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let id = device_id.as_str();
        let removed = sqlx::query!(
            "UPDATE devices SET removed_at_ms = ? WHERE device_id = ? AND removed_at_ms IS NULL",
            now_ms,
            id
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        super::expect_one(removed, || Refusal::UnknownDevice { device_id: device_id.to_string() })?;
        sqlx::query!("DELETE FROM grants WHERE device_id = ?", id).execute(&mut *tx).await?;
        sqlx::query!(
            "UPDATE device_tokens SET revoked_at_ms = ? WHERE device_id = ? AND revoked_at_ms IS NULL",
            now_ms,
            id
        )
        .execute(&mut *tx)
        .await?;
        audit::record(&mut tx, &AuditEvent::new(actor, "device.remove", now_ms).subject(id).remote(remote_addr))
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Rotates the token of an approved role: the live token is revoked, and the next connect that proves
    /// itself with the gateway secret is handed a new one (a token value never travels in a reply).
    /// `narrower` replaces the grant's scopes with a subset of them.
    pub async fn rotate_token(
        &self,
        device_id: &DeviceId,
        role: Role,
        narrower: Option<&ScopeSet>,
        actor: &Actor,
        remote_addr: Option<&str>,
        now_ms: Millis,
    ) -> StoreResult<TokenChange> {
        let mut tx = self.begin_write().await?;
        let mut scopes = grant_scopes_on(&mut tx, device_id, role)
            .await?
            .ok_or_else(|| Refusal::NoGrant { device_id: device_id.to_string(), role })?;
        if let Some(narrower) = narrower {
            if let Some(extra) = narrower.iter().find(|scope| !scopes.contains(*scope)) {
                return Err(Refusal::ScopeNotGranted { role, scope: extra }.into());
            }
            scopes = narrower.clone();
            let (id, role_name, scopes_json) = (device_id.as_str(), role.as_str(), scopes.to_json());
            sqlx::query!("UPDATE grants SET scopes = ? WHERE device_id = ? AND role = ?", scopes_json, id, role_name)
                .execute(&mut *tx)
                .await?;
        }
        let (id, role_name) = (device_id.as_str(), role.as_str());
        sqlx::query!(
            "UPDATE device_tokens SET revoked_at_ms = ?, rotated_at_ms = ?
              WHERE device_id = ? AND role = ? AND revoked_at_ms IS NULL",
            now_ms,
            now_ms,
            id,
            role_name
        )
        .execute(&mut *tx)
        .await?;
        let event = AuditEvent::new(actor, "token.rotate", now_ms)
            .subject(id)
            .remote(remote_addr)
            .details(serde_json::json!({ "role": role, "scopes": scopes.names() }));
        audit::record(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(TokenChange { device_id: device_id.clone(), role, scopes, at_ms: now_ms })
    }

    /// Revokes the live token of a device's role; `NotFound` when there is none.
    pub async fn revoke_token(
        &self,
        device_id: &DeviceId,
        role: Role,
        actor: &Actor,
        remote_addr: Option<&str>,
        now_ms: Millis,
    ) -> StoreResult<TokenChange> {
        let mut tx = self.begin_write().await?;
        let scopes = grant_scopes_on(&mut tx, device_id, role).await?.unwrap_or_default();
        let (id, role_name) = (device_id.as_str(), role.as_str());
        let revoked = sqlx::query!(
            "UPDATE device_tokens SET revoked_at_ms = ? WHERE device_id = ? AND role = ? AND revoked_at_ms IS NULL",
            now_ms,
            id,
            role_name
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        super::expect_one(revoked, || Refusal::NoLiveToken { device_id: device_id.to_string(), role })?;
        let event = AuditEvent::new(actor, "token.revoke", now_ms)
            .subject(id)
            .remote(remote_addr)
            .details(serde_json::json!({ "role": role }));
        audit::record(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(TokenChange { device_id: device_id.clone(), role, scopes, at_ms: now_ms })
    }
}

impl Store {
    /// A page of devices ordered by id, after `after` (keyset pagination).
    pub async fn devices_page(
        &self,
        filter: DeviceFilter,
        after: Option<&DeviceId>,
        limit: i64,
    ) -> StoreResult<Vec<DeviceRecord>> {
        let after = after.map(|id| id.as_str()).unwrap_or("");
        let filter = filter.as_str();
        let rows = sqlx::query_as!(
            DeviceRow,
            r#"SELECT device_id AS "device_id!", public_key AS "public_key!", client_id, client_mode, platform,
                      device_family, display_name, remote_ip, approved_via, created_at_ms AS "created_at_ms!",
                      approved_at_ms, last_seen_at_ms, removed_at_ms, label AS "label?", grants AS "grants!: String",
                      tokens AS "tokens!: String"
                 FROM device_records
                WHERE device_id > ?
                  AND (? = 'all'
                       OR (? = 'paired' AND removed_at_ms IS NULL AND grants <> '[]')
                       OR (? = 'removed' AND removed_at_ms IS NOT NULL))
                ORDER BY device_id LIMIT ?"#,
            after,
            filter,
            filter,
            filter,
            limit
        )
        .fetch_all(&self.readers)
        .await?;
        rows.into_iter().map(DeviceRow::into_record).collect()
    }
}

async fn read_device<'e>(
    executor: impl sqlx::SqliteExecutor<'e>,
    device_id: &DeviceId,
) -> StoreResult<Option<DeviceRecord>> {
    let id = device_id.as_str();
    let row = sqlx::query_as!(
        DeviceRow,
        r#"SELECT device_id AS "device_id!", public_key AS "public_key!", client_id, client_mode, platform,
                      device_family, display_name, remote_ip, approved_via, created_at_ms AS "created_at_ms!",
                      approved_at_ms, last_seen_at_ms, removed_at_ms, label AS "label?", grants AS "grants!: String",
                      tokens AS "tokens!: String"
                 FROM device_records WHERE device_id = ?"#,
        id
    )
    .fetch_optional(executor)
    .await?;
    row.map(DeviceRow::into_record).transpose()
}
