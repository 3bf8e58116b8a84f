//! Pairing requests: created by the connect path, decided by operators.

use sqlx::PgConnection;

use super::audit;
use super::devices;
use super::{Store, StoreResult, expect_one};
use crate::{Actor, AuditEvent, NewGrant, NewPairingRequest, PairingRequest, RequestOutcome};
use pairgate_domain::clock::Millis;
use pairgate_domain::{
    DEAD_REQUEST_RETENTION_MS, DeviceId, PAIRING_REQUEST_TTL_MS, Refusal, RequestStatus, Role, ScopeSet,
};
use pairgate_store_types::approvals::Approval;
use pairgate_store_types::rows::{RequestRow, roles_json};

/// Marks pending requests past their expiry as expired; returns (request id, device id) of each.
async fn expire_stale(conn: &mut PgConnection, now_ms: Millis) -> StoreResult<Vec<(String, String)>> {
    let expired = sqlx::query!(
        r#"UPDATE pairing_requests SET status = 'expired', resolved_by = 'system', resolved_at_ms = $1
            WHERE status = 'pending' AND expires_at_ms <= $2
           RETURNING request_id AS "request_id!", device_id"#,
        now_ms,
        now_ms
    )
    .fetch_all(conn)
    .await?;
    Ok(expired.into_iter().map(|row| (row.request_id, row.device_id)).collect())
}

async fn request_on(conn: &mut PgConnection, request_id: &str) -> StoreResult<Option<PairingRequest>> {
    let row = sqlx::query_as!(
        RequestRow,
        r#"SELECT request_id AS "request_id!", device_id, public_key, role, roles::text AS "roles!", scopes::text AS "scopes!", reason, client_id,
                  client_mode, platform, device_family, display_name, remote_ip, is_local, is_repair,
                  created_at_ms, refreshed_at_ms, expires_at_ms, status, resolved_by, resolved_at_ms
             FROM pairing_requests WHERE request_id = $1"#,
        request_id
    )
    .fetch_optional(conn)
    .await?;
    row.map(RequestRow::into_request).transpose()
}

async fn pending_for_device(conn: &mut PgConnection, device_id: &DeviceId) -> StoreResult<Option<PairingRequest>> {
    let id = device_id.as_str();
    let request_id =
        sqlx::query_scalar!("SELECT request_id FROM pairing_requests WHERE device_id = $1 AND status = 'pending'", id)
            .fetch_optional(&mut *conn)
            .await?;
    match request_id {
        Some(request_id) => request_on(conn, &request_id).await,
        None => Ok(None),
    }
}

/// Pending requests from the asking client's network, and in all.
struct PendingCounts {
    from_address: i64,
    in_all: i64,
}

/// A refusal of a decision, told apart from a failure: the outer `Result` of a decision step is a
/// failure that must abort the whole transaction; the inner one refuses just this decision, having
/// written nothing that should not be committed.
pub(super) type Refusable<T> = StoreResult<Result<T, Refusal>>;

/// The pending request `request_id`, or why it cannot be decided (`NotFound`; `Conflict` when decided
/// already; `Gone` when expired). A request found past its expiry is
/// marked expired (a write meant to be committed with the refusal, so the store then says `expired`).
async fn take_pending(conn: &mut PgConnection, request_id: &str, now_ms: Millis) -> Refusable<PairingRequest> {
    let Some(request) = request_on(conn, request_id).await? else {
        return Ok(Err(Refusal::UnknownRequest { request_id: request_id.to_owned() }));
    };
    let expired = || Refusal::Expired { request_id: request_id.to_owned() };
    match request.status {
        RequestStatus::Pending if request.expires_at_ms <= now_ms => {
            sqlx::query!(
                "UPDATE pairing_requests SET status = 'expired', resolved_by = 'system', resolved_at_ms = $1
                  WHERE request_id = $2",
                now_ms,
                request_id
            )
            .execute(conn)
            .await?;
            Ok(Err(expired()))
        }
        RequestStatus::Pending => Ok(Ok(request)),
        RequestStatus::Expired => Ok(Err(expired())),
        status => Ok(Err(Refusal::AlreadyDecided { request_id: request_id.to_owned(), status })),
    }
}

async fn resolve(
    conn: &mut PgConnection,
    request_id: &str,
    status: RequestStatus,
    actor: &Actor,
    now_ms: Millis,
) -> StoreResult<()> {
    let status_name = status.as_str();
    let by = actor.label();
    let updated = sqlx::query!(
        "UPDATE pairing_requests SET status = $1, resolved_by = $2, resolved_at_ms = $3
          WHERE request_id = $4 AND status = 'pending'",
        status_name,
        by,
        now_ms,
        request_id
    )
    .execute(conn)
    .await?
    .rows_affected();
    expect_one(updated, || Refusal::UnknownRequest { request_id: request_id.to_owned() })
}

impl Store {
    /// Opens the write transaction of a decision on a pending request. An expiry found on the way is
    /// committed before refusing, so the store says `expired` rather than forgetting it.
    async fn begin_decision(&self, request_id: &str, now_ms: Millis) -> StoreResult<(super::WriteTx, PairingRequest)> {
        let mut tx = self.begin_write().await?;
        match take_pending(&mut tx, request_id, now_ms).await? {
            Ok(request) => Ok((tx, request)),
            Err(refusal) => {
                tx.commit().await?;
                Err(refusal.into())
            }
        }
    }

    /// Records the ask of a refused connect, deduplicating and superseding per docs/protocol.md §4, in one
    /// transaction with its audit row.
    pub async fn record_pairing_request(
        &self,
        ask: &NewPairingRequest,
        actor: &Actor,
        now_ms: Millis,
    ) -> StoreResult<(PairingRequest, RequestOutcome)> {
        let mut tx = self.begin_write().await?;
        expire_stale(&mut tx, now_ms).await?;
        let expires_at = now_ms + PAIRING_REQUEST_TTL_MS;
        let pending = pending_for_device(&mut tx, &ask.device_id).await?;

        if let Some(existing) = &pending {
            let same_ask =
                existing.roles.contains(&ask.role) && ask.scopes.iter().all(|scope| existing.scopes.contains(scope));
            if same_ask {
                sqlx::query!(
                    "UPDATE pairing_requests SET refreshed_at_ms = $1, expires_at_ms = $2 WHERE request_id = $3",
                    now_ms,
                    expires_at,
                    existing.request_id
                )
                .execute(&mut *tx)
                .await?;
                let refreshed = request_on(&mut tx, &existing.request_id).await?.expect("row updated just now");
                tx.commit().await?;
                return Ok((refreshed, RequestOutcome::Refreshed));
            }
        }

        if pending.is_none() {
            // A new request (not one superseding the device's own): within the caps, or refused with
            // nothing written. Expired ones were just marked and no longer count.
            // Counted per client network (an IPv6 /64 is one client), as the failed-auth lockout counts.
            let network = |ip: &str| ip.parse().ok().map(pairgate_domain::client_network);
            let asking = ask.remote_ip.as_deref().and_then(network);
            let pending_ips = sqlx::query_scalar!("SELECT remote_ip FROM pairing_requests WHERE status = 'pending'")
                .fetch_all(&mut *tx)
                .await?;
            let in_all = pending_ips.len() as i64;
            let from_address = match asking {
                Some(asking) => pending_ips.iter().flatten().filter(|ip| network(ip) == Some(asking)).count() as i64,
                None => pending_ips.iter().filter(|ip| ip.is_none()).count() as i64,
            };
            let counts = PendingCounts { from_address, in_all };
            let (per_address, total) = self.pending_caps();
            let refusal = if counts.from_address >= per_address {
                Some(Refusal::TooManyPendingRequests { per_address: true, max: per_address })
            } else if counts.in_all >= total {
                Some(Refusal::TooManyPendingRequests { per_address: false, max: total })
            } else {
                None
            };
            if let Some(refusal) = refusal {
                tx.commit().await?; // the expiries found on the way
                return Err(refusal.into());
            }
        }
        let mut roles = vec![ask.role];
        let mut scopes = ask.scopes.clone();
        let request_id = uuid::Uuid::new_v4().to_string();
        if let Some(existing) = &pending {
            roles.extend(existing.roles.iter().copied());
            roles.sort();
            roles.dedup();
            scopes = scopes.union(&existing.scopes);
            // Resolve the old request first: at most one pending request per device.
            sqlx::query!(
                "UPDATE pairing_requests SET status = 'superseded', resolved_by = 'system', resolved_at_ms = $1
                  WHERE request_id = $2",
                now_ms,
                existing.request_id
            )
            .execute(&mut *tx)
            .await?;
        }
        let (device_id, public_key, role) = (ask.device_id.as_str(), ask.public_key.to_base64url(), ask.role.as_str());
        let (roles_text, scopes_text, reason) = (roles_json(&roles), scopes.to_json(), ask.reason.as_str());
        let meta = &ask.meta;
        sqlx::query!(
            r#"INSERT INTO pairing_requests (request_id, device_id, public_key, role, roles, scopes, reason,
                   client_id, client_mode, platform, device_family, display_name, remote_ip, is_local, is_repair,
                   created_at_ms, refreshed_at_ms, expires_at_ms)
               VALUES ($1, $2, $3, $4, $5::text::jsonb, $6::text::jsonb, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"#,
            request_id,
            device_id,
            public_key,
            role,
            roles_text,
            scopes_text,
            reason,
            meta.client_id,
            meta.client_mode,
            meta.platform,
            meta.device_family,
            meta.display_name,
            ask.remote_ip,
            ask.is_local,
            ask.is_repair,
            now_ms,
            now_ms,
            expires_at
        )
        .execute(&mut *tx)
        .await?;
        if let Some(existing) = &pending {
            sqlx::query!(
                "UPDATE pairing_requests SET superseded_by = $1 WHERE request_id = $2",
                request_id,
                existing.request_id
            )
            .execute(&mut *tx)
            .await?;
        }
        let outcome = match pending {
            Some(existing) => RequestOutcome::Superseded { previous: existing.request_id },
            None => RequestOutcome::Created,
        };
        let event = AuditEvent::new(actor, "pairing.request", now_ms)
            .subject(device_id)
            .remote(ask.remote_ip.as_deref())
            .details(serde_json::json!({
                "requestId": request_id, "reason": reason, "role": role, "scopes": scopes.names(),
                "supersedes": match &outcome { RequestOutcome::Superseded { previous } => Some(previous), _ => None },
            }));
        audit::record(&mut tx, &event).await?;
        let created = request_on(&mut tx, &request_id).await?.expect("row inserted just now");
        tx.commit().await?;
        Ok((created, outcome))
    }

    /// Approves a pending request: the device gets every role asked for, with the request's scopes, or
    /// with `narrower` ones (which must be among those asked for). The reply comes after the commit.
    ///
    /// Concurrent approvals are committed together (see `approvals`): one transaction and one fsync for
    /// all that queued while the previous group committed.
    pub async fn approve_request(
        &self,
        request_id: &str,
        narrower: Option<&ScopeSet>,
        actor: &Actor,
        now_ms: Millis,
    ) -> StoreResult<PairingRequest> {
        self.approve_request_from(request_id, narrower, actor, None, now_ms).await
    }

    /// `approve_request`, its audit row naming where the decision came from.
    pub async fn approve_request_from(
        &self,
        request_id: &str,
        narrower: Option<&ScopeSet>,
        actor: &Actor,
        remote_addr: Option<&str>,
        now_ms: Millis,
    ) -> StoreResult<PairingRequest> {
        let approval = Approval {
            request_id: request_id.to_owned(),
            narrower: narrower.cloned(),
            actor: actor.clone(),
            remote_addr: remote_addr.map(str::to_owned),
            now_ms,
        };
        self.approvals.decide(approval).await
    }

    /// Rejects a pending request.
    pub async fn reject_request(&self, request_id: &str, actor: &Actor, now_ms: Millis) -> StoreResult<PairingRequest> {
        self.reject_request_from(request_id, actor, None, now_ms).await
    }

    /// `reject_request`, its audit row naming where the decision came from.
    pub async fn reject_request_from(
        &self,
        request_id: &str,
        actor: &Actor,
        remote_addr: Option<&str>,
        now_ms: Millis,
    ) -> StoreResult<PairingRequest> {
        let (mut tx, request) = self.begin_decision(request_id, now_ms).await?;
        resolve(&mut tx, request_id, RequestStatus::Rejected, actor, now_ms).await?;
        let event = AuditEvent::new(actor, "pairing.reject", now_ms)
            .subject(request.device_id.as_str())
            .remote(remote_addr)
            .details(serde_json::json!({ "requestId": request_id, "reason": request.reason.as_str() }));
        audit::record(&mut tx, &event).await?;
        let rejected = request_on(&mut tx, request_id).await?.expect("row updated just now");
        tx.commit().await?;
        Ok(rejected)
    }

    /// Expires pending requests whose time is up, and purges expired and superseded ones older than
    /// `DEAD_REQUEST_RETENTION_MS` (their story stays in the audit trail). Returns (request id, device id)
    /// of each expired one, so that its resolution can be announced.
    pub async fn expire_pending(&self, now_ms: Millis) -> StoreResult<Vec<(String, String)>> {
        // Look before writing: an idle server must not commit (and fsync) an empty transaction per sweep.
        let dead_before = now_ms - DEAD_REQUEST_RETENTION_MS;
        let due = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM pairing_requests WHERE status = 'pending' AND expires_at_ms <= $1)
                   OR EXISTS (SELECT 1 FROM pairing_requests
                               WHERE status IN ('expired', 'superseded') AND resolved_at_ms < $2) AS "due!: bool""#,
            now_ms,
            dead_before
        )
        .fetch_one(&self.pool)
        .await?;
        if !due {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        let expired = expire_stale(&mut tx, now_ms).await?;
        let purged = sqlx::query!(
            "DELETE FROM pairing_requests WHERE status IN ('expired', 'superseded') AND resolved_at_ms < $1",
            dead_before
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if purged > 0 {
            let event = AuditEvent::new(&Actor::System, "pairing.purge", now_ms)
                .details(serde_json::json!({ "purged": purged, "resolvedBeforeMs": dead_before }));
            audit::record(&mut tx, &event).await?;
        }
        if !expired.is_empty() {
            let ids: Vec<&str> = expired.iter().map(|(request_id, _)| request_id.as_str()).collect();
            let event = AuditEvent::new(&Actor::System, "pairing.expire", now_ms)
                .details(serde_json::json!({ "requestIds": ids }));
            audit::record(&mut tx, &event).await?;
        }
        tx.commit().await?;
        Ok(expired)
    }

    pub async fn pairing_request(&self, request_id: &str) -> StoreResult<Option<PairingRequest>> {
        let mut conn = self.pool.acquire().await?;
        request_on(&mut conn, request_id).await
    }

    /// A page of requests, newest first, older than the cursor `before` (a value of `RequestPage::next`);
    /// only those with `status` when given.
    pub async fn requests_page(
        &self,
        status: Option<RequestStatus>,
        before: Option<i64>,
        limit: i64,
    ) -> StoreResult<(Vec<PairingRequest>, Option<i64>)> {
        let before = before.unwrap_or(i64::MAX);
        let status = status.map(|s| s.as_str()).unwrap_or("");
        let rows = sqlx::query!(
            r#"SELECT seq AS "cursor!", request_id FROM pairing_requests
                WHERE seq < $1 AND ($2 = '' OR status = $2)
                ORDER BY seq DESC LIMIT $3"#,
            before,
            status,
            limit
        )
        .fetch_all(&self.pool)
        .await?;
        let next = if rows.len() as i64 == limit { rows.last().map(|row| row.cursor) } else { None };
        let mut conn = self.pool.acquire().await?;
        let mut requests = Vec::with_capacity(rows.len());
        for row in rows {
            requests.extend(request_on(&mut conn, &row.request_id).await?);
        }
        Ok((requests, next))
    }

    /// How many requests are pending and not yet expired at `now_ms`.
    pub async fn pending_count(&self, now_ms: Millis) -> StoreResult<i64> {
        Ok(sqlx::query_scalar!(
            r#"SELECT COUNT(*) AS "n!: i64" FROM pairing_requests WHERE status = 'pending' AND expires_at_ms > $1"#,
            now_ms
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Requests still pending and not yet expired at `now_ms`, oldest first.
    pub async fn pending_requests(&self, now_ms: Millis) -> StoreResult<Vec<PairingRequest>> {
        let rows = sqlx::query_as!(
            RequestRow,
            r#"SELECT request_id AS "request_id!", device_id, public_key, role, roles::text AS "roles!", scopes::text AS "scopes!", reason, client_id,
                      client_mode, platform, device_family, display_name, remote_ip, is_local, is_repair,
                      created_at_ms, refreshed_at_ms, expires_at_ms, status, resolved_by, resolved_at_ms
                 FROM pairing_requests WHERE status = 'pending' AND expires_at_ms > $1
                ORDER BY created_at_ms, request_id"#,
            now_ms
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(RequestRow::into_request).collect()
    }
}

/// One approval inside a transaction of the approvals committer: checks (writing nothing but an expiry),
/// then the grants, the resolution and the audit row.
pub(super) async fn approve_on(conn: &mut super::WriteTx, approval: &Approval) -> Refusable<PairingRequest> {
    let Approval { request_id, narrower, actor, remote_addr, now_ms } = approval;
    let (request_id, now_ms) = (request_id.as_str(), *now_ms);
    let mut request = match take_pending(conn, request_id, now_ms).await? {
        Ok(request) => request,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let scopes = match narrower {
        Some(narrower) => {
            if let Some(extra) = narrower.iter().find(|scope| !request.scopes.contains(*scope)) {
                return Ok(Err(Refusal::ScopeNotAsked { request_id: request_id.to_owned(), scope: extra }));
            }
            narrower.clone()
        }
        None => request.scopes.clone(),
    };
    let approved_by = actor.label();
    for role in &request.roles {
        let grant = NewGrant {
            device_id: request.device_id.clone(),
            public_key: request.public_key,
            meta: request.meta.clone(),
            remote_ip: request.remote_ip.clone(),
            role: *role,
            // Operator scopes belong to the operator role only.
            scopes: if *role == Role::Operator { scopes.clone() } else { ScopeSet::new() },
        };
        devices::record_grant(conn, &grant, "operator", &approved_by, now_ms).await?;
    }
    resolve(conn, request_id, RequestStatus::Approved, actor, now_ms).await?;
    let event = AuditEvent::new(actor, "pairing.approve", now_ms)
        .subject(request.device_id.as_str())
        .remote(remote_addr.as_deref())
        .details(serde_json::json!({
            "requestId": request_id,
            "roles": request.roles,
            "scopes": scopes.names(),
            "reason": request.reason.as_str(),
        }));
    audit::record(conn, &event).await?;
    // What `resolve` just wrote, without reading the row back.
    request.status = RequestStatus::Approved;
    request.resolved_by = Some(approved_by);
    request.resolved_at_ms = Some(now_ms);
    Ok(Ok(request))
}
