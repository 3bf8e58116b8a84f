//! Setup codes and device labels.

use super::audit;
use super::devices::{mint_token_on, record_grant};
use super::{Store, StoreResult};
use crate::{
    Actor, AuditEvent, HandedOff, MAX_UNUSED_SETUP_CODES, NewSetupCode, Redeemed, Redemption, SETUP_CODE_RETENTION_MS,
    SetupCode, SetupRow, expect_one,
};
use pairgate_domain::clock::Millis;
use pairgate_domain::{DeviceId, Refusal, SetupFault, TokenDigest};
use pairgate_store_types::rows::invalid;
use pairgate_store_types::settles_request;

impl Store {
    /// Stores a minted code, with its audit row.
    pub async fn create_setup_code(
        &self,
        code: &NewSetupCode,
        actor: &Actor,
        remote_addr: Option<&str>,
        now_ms: Millis,
    ) -> StoreResult<SetupCode> {
        let mut tx = self.begin_write().await?;
        let live = sqlx::query_scalar!(
            r#"SELECT COUNT(*) AS "live!" FROM setup_codes
                WHERE redeemed_at_ms IS NULL AND revoked_at_ms IS NULL AND expires_at_ms > $1"#,
            now_ms
        )
        .fetch_one(&mut *tx)
        .await?;
        if live >= MAX_UNUSED_SETUP_CODES {
            return Err(Refusal::TooManySetupCodes { max: MAX_UNUSED_SETUP_CODES }.into());
        }
        let token = code.token_digest.as_bytes().as_slice();
        let join = code.join_digest.as_ref().map(|digest| digest.as_bytes().to_vec());
        let access = code.access.as_str();
        let issued_by = actor.label();
        sqlx::query!(
            "INSERT INTO setup_codes (setup_id, token_digest, join_digest, access, gateway_url, issued_at_ms,
                                      expires_at_ms, issued_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            code.setup_id,
            token,
            join,
            access,
            code.gateway_url,
            code.issued_at_ms,
            code.expires_at_ms,
            issued_by
        )
        .execute(&mut *tx)
        .await?;
        let event = AuditEvent::new(actor, "setup.mint", now_ms)
            .subject(code.setup_id.as_str())
            .remote(remote_addr)
            .details(serde_json::json!({
                "access": access, "url": code.gateway_url, "expiresAtMs": code.expires_at_ms, "join": join.is_some(),
            }));
        audit::record(&mut tx, &event).await?;
        let stored = read_code(&mut tx, &code.setup_id).await?.ok_or_else(|| invalid("setup code", "not stored"))?;
        tx.commit().await?;
        Ok(stored)
    }

    /// Redeems the code whose token the connect presented: in one transaction the code is marked used by
    /// this device, the device is paired with every role the code carries and gets a token for each, and
    /// any pending request of the device is resolved. Two redemptions of one code are serialised by the
    /// write lock: the second finds the code used. A refusal writes nothing.
    pub async fn redeem_setup_code(
        &self,
        redemption: &Redemption,
        actor: &Actor,
        now_ms: Millis,
    ) -> StoreResult<Redeemed> {
        let mut tx = self.begin_write().await?;
        let digest = redemption.token_digest.as_bytes().as_slice();
        let setup_id = sqlx::query_scalar!("SELECT setup_id FROM setup_codes WHERE token_digest = $1", digest)
            .fetch_optional(&mut *tx)
            .await?;
        let code = match setup_id {
            Some(id) => read_code(&mut tx, &id).await?,
            None => None,
        };
        redemption.check(code.as_ref(), now_ms)?;
        let code = code.ok_or_else(|| invalid("setup code", "checked but absent"))?;
        let device_id = redemption.device_id.as_str();
        let updated = sqlx::query!(
            "UPDATE setup_codes SET redeemed_at_ms = $1, device_id = $2
              WHERE setup_id = $3 AND redeemed_at_ms IS NULL AND revoked_at_ms IS NULL",
            now_ms,
            device_id,
            code.setup_id
        )
        .execute(&mut *tx)
        .await?;
        expect_one(updated.rows_affected(), || Refusal::SetupCodeInvalid { fault: SetupFault::AlreadyUsed })?;
        let approved_by = format!("setup-code:{}", code.setup_id);
        let mut tokens = Vec::new();
        for grant in redemption.grants(code.access) {
            let scopes = record_grant(&mut tx, &grant, "operator", &approved_by, now_ms).await?;
            let token = mint_token_on(&mut tx, &grant.device_id, grant.role, &scopes, now_ms).await?;
            tokens.push(HandedOff { role: grant.role, scopes, token });
        }
        // The device's pending request is settled by the code when the code grants all it asked.
        let pending = sqlx::query!(
            r#"SELECT request_id, roles::text AS "roles!", scopes::text AS "scopes!" FROM pairing_requests
              WHERE device_id = $1 AND status = 'pending'"#,
            device_id
        )
        .fetch_optional(&mut *tx)
        .await?;
        let mut resolved_request = None;
        if let Some(pending) = pending
            && settles_request(&pending.roles, &pending.scopes, &tokens)?
        {
            sqlx::query!(
                "UPDATE pairing_requests SET status = 'approved', resolved_by = $1, resolved_at_ms = $2
                  WHERE request_id = $3",
                approved_by,
                now_ms,
                pending.request_id
            )
            .execute(&mut *tx)
            .await?;
            resolved_request = Some(pending.request_id);
        }
        let device_name = sqlx::query_scalar!(
            r#"SELECT COALESCE((SELECT label FROM device_labels WHERE device_id = $1), display_name) AS "name?: String"
                 FROM devices WHERE device_id = $2"#,
            device_id,
            device_id
        )
        .fetch_one(&mut *tx)
        .await?;
        let code =
            read_code(&mut tx, &code.setup_id).await?.ok_or_else(|| invalid("setup code", "gone mid-redemption"))?;
        let redeemed = Redeemed { code, tokens, device_name, resolved_request };
        let event = AuditEvent::new(actor, "setup.redeem", now_ms)
            .subject(device_id)
            .remote(redemption.remote_ip.as_deref())
            .details(redeemed.audit_details());
        audit::record(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(redeemed)
    }

    /// Revokes an unused code; a used, revoked or expired one is refused, saying which.
    pub async fn revoke_setup_code(
        &self,
        setup_id: &str,
        actor: &Actor,
        remote_addr: Option<&str>,
        now_ms: Millis,
    ) -> StoreResult<SetupCode> {
        let mut tx = self.begin_write().await?;
        let code = read_code(&mut tx, setup_id)
            .await?
            .ok_or_else(|| Refusal::UnknownSetupCode { setup_id: setup_id.to_owned() })?;
        let state = code.state(now_ms);
        if state.fault().is_some() {
            return Err(Refusal::SetupCodeSettled { setup_id: setup_id.to_owned(), state }.into());
        }
        let by = actor.label();
        sqlx::query!(
            "UPDATE setup_codes SET revoked_at_ms = $1, revoked_by = $2 WHERE setup_id = $3",
            now_ms,
            by,
            setup_id
        )
        .execute(&mut *tx)
        .await?;
        let event = AuditEvent::new(actor, "setup.revoke", now_ms)
            .subject(setup_id)
            .remote(remote_addr)
            .details(serde_json::json!({ "access": code.access.as_str() }));
        audit::record(&mut tx, &event).await?;
        let code = read_code(&mut tx, setup_id).await?.ok_or_else(|| invalid("setup code", "gone mid-revocation"))?;
        tx.commit().await?;
        Ok(code)
    }

    /// Hands out a join code once: the first fetch of an unused, unexpired code marks it fetched and
    /// replaces its token's digest with `fresh_token`'s (the token handed out now: the code minted with it,
    /// and the join URL, are spent); every other fetch gets `None`.
    pub async fn fetch_join_code(
        &self,
        join_digest: &TokenDigest,
        fresh_token: &TokenDigest,
        remote_addr: Option<&str>,
        now_ms: Millis,
    ) -> StoreResult<Option<SetupCode>> {
        let mut tx = self.begin_write().await?;
        let digest = join_digest.as_bytes().as_slice();
        let fresh = fresh_token.as_bytes().as_slice();
        let setup_id = sqlx::query_scalar!(
            "UPDATE setup_codes SET join_fetched_at_ms = $1, token_digest = $2
              WHERE join_digest = $3 AND join_fetched_at_ms IS NULL AND redeemed_at_ms IS NULL
                AND revoked_at_ms IS NULL AND expires_at_ms > $4
              RETURNING setup_id",
            now_ms,
            fresh,
            digest,
            now_ms
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(setup_id) = setup_id else { return Ok(None) };
        let event =
            AuditEvent::new(&Actor::System, "setup.join.fetch", now_ms).subject(setup_id.as_str()).remote(remote_addr);
        audit::record(&mut tx, &event).await?;
        let code = read_code(&mut tx, &setup_id).await?;
        tx.commit().await?;
        Ok(code)
    }

    /// One code, whatever its state.
    pub async fn setup_code(&self, setup_id: &str) -> StoreResult<Option<SetupCode>> {
        let mut conn = self.pool.acquire().await?;
        read_code(&mut conn, setup_id).await
    }

    /// Codes newest first, at most `limit`.
    pub async fn setup_codes(&self, limit: i64) -> StoreResult<Vec<SetupCode>> {
        let rows = sqlx::query_as!(
            SetupRow,
            r#"SELECT setup_id, access, gateway_url, issued_at_ms, expires_at_ms, issued_by,
                      join_digest IS NOT NULL AS "join!", join_fetched_at_ms, redeemed_at_ms, device_id,
                      revoked_at_ms, revoked_by
                 FROM setup_codes ORDER BY issued_at_ms DESC, setup_id LIMIT $1"#,
            limit
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(SetupRow::into_code).collect()
    }

    /// Forgets codes that expired more than `SETUP_CODE_RETENTION_MS` ago (their story stays in the audit
    /// trail); returns how many.
    pub async fn purge_setup_codes(&self, now_ms: Millis) -> StoreResult<u64> {
        let before = now_ms - SETUP_CODE_RETENTION_MS;
        // Most sweeps find nothing: a read, not a write transaction (and its fsync), tells.
        let any = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM setup_codes WHERE expires_at_ms < $1) AS "any!""#,
            before
        )
        .fetch_one(&self.pool)
        .await?;
        if !any {
            return Ok(0);
        }
        let mut tx = self.begin_write().await?;
        let purged = sqlx::query!("DELETE FROM setup_codes WHERE expires_at_ms < $1", before).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(purged.rows_affected())
    }

    /// Sets the operator's label of a device that pairgate has seen approved; it survives removal and
    /// re-pairing.
    pub async fn set_device_label(
        &self,
        device_id: &DeviceId,
        label: &str,
        actor: &Actor,
        remote_addr: Option<&str>,
        now_ms: Millis,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let id = device_id.as_str();
        let known = sqlx::query_scalar!(r#"SELECT 1::bigint AS "one!" FROM devices WHERE device_id = $1"#, id)
            .fetch_optional(&mut *tx)
            .await?;
        if known.is_none() {
            return Err(Refusal::UnknownDevice { device_id: id.to_owned() }.into());
        }
        let by = actor.label();
        sqlx::query!(
            "INSERT INTO device_labels (device_id, label, set_at_ms, set_by) VALUES ($1, $2, $3, $4)
             ON CONFLICT (device_id) DO UPDATE SET label = excluded.label, set_at_ms = excluded.set_at_ms,
                                                   set_by = excluded.set_by",
            id,
            label,
            now_ms,
            by
        )
        .execute(&mut *tx)
        .await?;
        let event = AuditEvent::new(actor, "device.rename", now_ms)
            .subject(id)
            .remote(remote_addr)
            .details(serde_json::json!({ "label": label }));
        audit::record(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn read_code(conn: &mut sqlx::PgConnection, setup_id: &str) -> StoreResult<Option<SetupCode>> {
    let row = sqlx::query_as!(
        SetupRow,
        r#"SELECT setup_id, access, gateway_url, issued_at_ms, expires_at_ms, issued_by,
                  join_digest IS NOT NULL AS "join!", join_fetched_at_ms, redeemed_at_ms, device_id,
                  revoked_at_ms, revoked_by
             FROM setup_codes WHERE setup_id = $1"#,
        setup_id
    )
    .fetch_optional(&mut *conn)
    .await?;
    row.map(SetupRow::into_code).transpose()
}
