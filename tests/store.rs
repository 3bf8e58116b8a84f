//! The store: its operations over the engine the suite runs on (`PAIRGATE_TEST_ENGINE`: SQLite, or
//! PostgreSQL), and what only the SQLite engine does over real temp-file databases: migrations, refusals
//! of bad files, the device cache, constraints and rollback injected with SQLite triggers. (The
//! PostgreSQL engine's own tests are in `crates/store-postgres/tests`.)

mod common;

use std::path::{Path, PathBuf};

use common::open_test_store;
use pairgate::domain::ClientMeta;
use pairgate::domain::Refusal;
use pairgate::domain::{DeviceId, PairingReason, PublicKey, RequestStatus, Role, ScopeSet};
use pairgate::store::sqlite::{OpenError, Store};
use pairgate::store::{Actor, NewGrant, NewPairingRequest, RequestOutcome, StoreError};

const NOW: i64 = 1_800_000_000_000;

fn db_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("pairgate.db")
}

fn scopes(names: &[&str]) -> ScopeSet {
    ScopeSet::parse(names).unwrap()
}

fn device(seed: u8) -> (DeviceId, PublicKey) {
    let key = PublicKey::from_bytes([seed; 32]);
    (DeviceId::from_public_key(&key), key)
}

fn ask(seed: u8, role: Role, names: &[&str]) -> NewPairingRequest {
    let (device_id, public_key) = device(seed);
    NewPairingRequest {
        device_id,
        public_key,
        role,
        scopes: scopes(names),
        reason: PairingReason::NotPaired,
        meta: ClientMeta { client_id: Some("cli".into()), platform: Some("linux".into()), ..ClientMeta::default() },
        remote_ip: Some("203.0.113.1".into()),
        is_local: false,
        is_repair: false,
    }
}

fn grant(seed: u8, names: &[&str]) -> NewGrant {
    let (device_id, public_key) = device(seed);
    NewGrant {
        device_id,
        public_key,
        meta: ClientMeta::default(),
        remote_ip: None,
        role: Role::Operator,
        scopes: scopes(names),
    }
}

async fn raw_pool(path: &Path) -> sqlx::SqlitePool {
    sqlx::SqlitePool::connect(&format!("sqlite:{}", path.display())).await.unwrap()
}

#[tokio::test]
async fn opens_creates_migrates_and_a_reopen_applies_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/pairgate.db");
    let (store, report) = Store::open(&path).await.unwrap();
    assert!(report.created);
    let every_migration: Vec<i64> = (1..=pairgate::store::sqlite::latest_known_version()).collect();
    assert_eq!(report.applied_migrations, every_migration);
    assert_eq!(report.schema_version, pairgate::store::sqlite::latest_known_version());
    assert!(store.is_ready().await);
    assert_eq!(store.settings().await.unwrap(), ("wal".to_owned(), 2, true), "WAL, synchronous=FULL, foreign keys on");
    assert_eq!(store.meta("last_migrated_by").await.unwrap().as_deref(), Some(env!("CARGO_PKG_VERSION")));
    store.close().await;

    let (store, report) = Store::open(&path).await.unwrap();
    assert!(!report.created);
    assert!(report.applied_migrations.is_empty());
    store.close().await;
}

#[tokio::test]
async fn a_file_that_is_not_sqlite_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    std::fs::write(&path, b"this is a text file, not a database").unwrap();
    let error = Store::open(&path).await.unwrap_err();
    assert!(matches!(error, OpenError::NotSqlite { .. }), "{error}");
    assert!(error.to_string().contains("is not a SQLite database"), "{error}");
    assert_eq!(std::fs::read(&path).unwrap(), b"this is a text file, not a database");
}

#[tokio::test]
async fn a_corrupt_database_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let mut bytes = b"SQLite format 3\0".to_vec();
    bytes.extend(std::iter::repeat_n(0xA5u8, 8192));
    std::fs::write(&path, &bytes).unwrap();
    let error = Store::open(&path).await.unwrap_err();
    assert!(matches!(error, OpenError::Corrupt { .. } | OpenError::NotSqlite { .. }), "{error}");
    assert!(error.to_string().contains(&path.display().to_string()), "the message names the file: {error}");
    assert!(std::fs::read(&path).unwrap() == bytes, "the file changed");
}

#[tokio::test]
async fn a_read_only_database_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let (store, _) = Store::open(&path).await.unwrap();
    store.close().await;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
    let error = Store::open(&path).await.unwrap_err();
    assert!(matches!(error, OpenError::ReadOnly { .. }), "{error}");
    assert!(error.to_string().contains("read-only"));
}

#[tokio::test]
async fn a_newer_schema_is_refused_with_both_versions_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let (store, _) = Store::open(&path).await.unwrap();
    store.close().await;
    let pool = raw_pool(&path).await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (9999, 'from the future', 1, x'00', 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("UPDATE meta SET value = '9.9.9' WHERE key = 'last_migrated_by'").execute(&pool).await.unwrap();
    // Everything into the main file, so that the file alone is the state to compare.
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&pool).await.unwrap();
    pool.close().await;
    let before = std::fs::read(&path).unwrap();

    let error = Store::open(&path).await.unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, OpenError::NewerSchema { found: 9999, known, .. } if known == pairgate::store::sqlite::latest_known_version()),
        "{message}"
    );
    assert!(message.contains("9.9.9") && message.contains(env!("CARGO_PKG_VERSION")), "{message}");
    assert!(message.contains("Nothing was changed"), "{message}");
    assert!(std::fs::read(&path).unwrap() == before, "the database file changed");
}

#[tokio::test]
async fn pairing_requests_dedupe_supersede_approve_and_reject() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open_test_store(dir.path()).await;
    let actor = Actor::System;

    let (first, outcome) =
        store.record_pairing_request(&ask(1, Role::Operator, &["operator.read"]), &actor, NOW).await.unwrap();
    assert_eq!(outcome, RequestOutcome::Created);
    assert_eq!(first.expires_at_ms, NOW + 300_000);
    let (again, outcome) =
        store.record_pairing_request(&ask(1, Role::Operator, &["operator.read"]), &actor, NOW + 10).await.unwrap();
    assert_eq!((again.request_id.as_str(), outcome), (first.request_id.as_str(), RequestOutcome::Refreshed));
    assert_eq!(again.expires_at_ms, NOW + 10 + 300_000);

    let (second, outcome) = store.record_pairing_request(&ask(1, Role::Node, &[]), &actor, NOW + 20).await.unwrap();
    assert_eq!(outcome, RequestOutcome::Superseded { previous: first.request_id.clone() });
    assert_eq!(second.roles, vec![Role::Operator, Role::Node]);
    assert_eq!(second.scopes, scopes(&["operator.read"]));

    // Approving a narrower set than asked is allowed; a scope that was not asked for is not.
    let error = store
        .approve_request(&second.request_id, Some(&scopes(&["operator.admin"])), &actor, NOW + 30)
        .await
        .unwrap_err();
    assert!(matches!(error.refusal(), Some(Refusal::ScopeNotAsked { .. })), "{error}");
    let approved = store.approve_request(&second.request_id, None, &actor, NOW + 40).await.unwrap();
    assert_eq!(approved.status, RequestStatus::Approved);
    let record = store.device(&second.device_id).await.unwrap().unwrap();
    assert_eq!(record.roles(), vec![Role::Operator, Role::Node]);
    assert_eq!(record.grant(Role::Operator).unwrap().scopes, scopes(&["operator.read"]));
    assert!(record.grant(Role::Node).unwrap().scopes.is_empty());

    // Decided requests cannot be decided again; unknown ones are not found.
    let error = store.approve_request(&second.request_id, None, &actor, NOW + 50).await.unwrap_err();
    assert_eq!(error.to_string(), format!("pairing request {} is already approved", second.request_id));
    assert!(matches!(
        store.reject_request("no-such-id", &actor, NOW).await.unwrap_err(),
        StoreError::Refused(Refusal::UnknownRequest { .. })
    ));

    let (other, _) =
        store.record_pairing_request(&ask(2, Role::Operator, &["operator.write"]), &actor, NOW).await.unwrap();
    assert_eq!(store.reject_request(&other.request_id, &actor, NOW + 1).await.unwrap().status, RequestStatus::Rejected);
    assert!(store.device(&other.device_id).await.unwrap().is_none());
    assert!(store.pending_requests(NOW + 2).await.unwrap().is_empty());

    let actions: Vec<String> = store.audit_page(None, 100).await.unwrap().into_iter().map(|row| row.action).collect();
    assert_eq!(actions, ["pairing.reject", "pairing.request", "pairing.approve", "pairing.request", "pairing.request"]);
}

#[tokio::test]
async fn silent_approval_unions_scopes_and_tokens_rotate() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open_test_store(dir.path()).await;
    let actor = Actor::System;
    let first = store
        .approve_silently(&grant(3, &["operator.read"]), PairingReason::NotPaired, true, &actor, NOW)
        .await
        .unwrap();
    let first = first.expect("a token was asked for");
    store
        .approve_silently(&grant(3, &["operator.write"]), PairingReason::ScopeUpgrade, false, &actor, NOW + 1)
        .await
        .unwrap();
    let (device_id, _) = device(3);
    let record = store.device(&device_id).await.unwrap().unwrap();
    assert_eq!(record.grant(Role::Operator).unwrap().scopes, scopes(&["operator.read", "operator.write"]));
    let live = record.live_token(Role::Operator).unwrap();
    assert!(live.digest.ct_eq(&first.digest()));
    assert_eq!(live.scopes, scopes(&["operator.read", "operator.write"]), "the live token follows the grant");

    let second = store.issue_token(&device_id, Role::Operator, &actor, None, NOW + 2).await.unwrap();
    let record = store.device(&device_id).await.unwrap().unwrap();
    let live = record.live_token(Role::Operator).unwrap();
    assert!(live.digest.ct_eq(&second.digest()));
    assert_eq!(live.rotated_at_ms, Some(NOW + 2));
    assert_eq!(store.paired_devices().await.unwrap().len(), 1);

    let error = store.issue_token(&device(4).0, Role::Operator, &actor, None, NOW).await.unwrap_err();
    assert!(matches!(error.refusal(), Some(Refusal::NoGrant { .. })), "{error}");
}

#[tokio::test]
async fn a_failure_inside_a_transaction_leaves_no_partial_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let (store, _) = Store::open(&path).await.unwrap();
    let (request, _) =
        store.record_pairing_request(&ask(5, Role::Operator, &["operator.read"]), &Actor::System, NOW).await.unwrap();
    // The audit row is the last write of an approval: make it fail after the grant was written.
    let pool = raw_pool(&path).await;
    sqlx::query(
        "CREATE TRIGGER fail_approvals BEFORE INSERT ON audit_events WHEN NEW.action = 'pairing.approve'
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
    )
    .execute(&pool)
    .await
    .unwrap();
    let error = store.approve_request(&request.request_id, None, &Actor::System, NOW + 1).await.unwrap_err();
    assert!(error.to_string().contains("injected failure"), "{error}");
    assert!(store.device(&request.device_id).await.unwrap().is_none(), "no device row");
    let after = store.pairing_request(&request.request_id).await.unwrap().unwrap();
    assert_eq!(after.status, RequestStatus::Pending, "the request is untouched");
    let grants: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM grants").fetch_one(&pool).await.unwrap();
    assert_eq!(grants, 0);

    sqlx::query("DROP TRIGGER fail_approvals").execute(&pool).await.unwrap();
    store.approve_request(&request.request_id, None, &Actor::System, NOW + 2).await.unwrap();
    assert!(store.device(&request.device_id).await.unwrap().is_some());
}

#[tokio::test]
async fn constraints_are_enforced_and_mapped() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let (store, _) = Store::open(&path).await.unwrap();
    store
        .approve_silently(&grant(6, &["operator.read"]), PairingReason::NotPaired, true, &Actor::System, NOW)
        .await
        .unwrap();
    let (device_id, _) = device(6);
    let id = device_id.as_str();
    let pool = raw_pool(&path).await;
    sqlx::query("PRAGMA foreign_keys = ON").execute(&pool).await.unwrap();
    let attempts = [
        (
            "INSERT INTO grants (device_id, role, scopes, approved_at_ms, approved_by) VALUES (?, 'root', '[]', 0, 'x')",
            id,
        ),
        (
            "INSERT INTO grants (device_id, role, scopes, approved_at_ms, approved_by) VALUES (?, 'node', 'not json', 0, 'x')",
            id,
        ),
        (
            "INSERT INTO grants (device_id, role, scopes, approved_at_ms, approved_by) VALUES (?, 'operator', '[]', 0, 'x')",
            id,
        ),
        (
            "INSERT INTO device_tokens (device_id, role, digest, scopes, issued_at_ms) VALUES (?, 'operator', zeroblob(32), '[]', 0)",
            id,
        ),
        (
            "INSERT INTO device_tokens (device_id, role, digest, scopes, issued_at_ms) VALUES (?, 'node', zeroblob(16), '[]', 0)",
            id,
        ),
        (
            "INSERT INTO grants (device_id, role, scopes, approved_at_ms, approved_by) VALUES (?, 'node', '[]', 0, 'x')",
            &"f".repeat(64),
        ),
        ("INSERT INTO devices (device_id, public_key, created_at_ms) VALUES (?, 'short', 0)", &"F".repeat(64)),
        (
            "INSERT INTO pairing_requests (request_id, device_id, public_key, role, roles, scopes, reason, is_local, is_repair, created_at_ms, refreshed_at_ms, expires_at_ms) VALUES ('r', ?, 'k', 'operator', '[]', '[]', 'because', 0, 0, 0, 0, 0)",
            id,
        ),
    ];
    for (sql, arg) in attempts {
        let error = sqlx::query(sql).bind(arg).execute(&pool).await.unwrap_err();
        let mapped = StoreError::from(error);
        assert!(matches!(mapped, StoreError::Constraint(_)), "{sql}: {mapped}");
    }
    // The second live token for a device and role is refused by the partial unique index.
    sqlx::query("INSERT INTO device_tokens (device_id, role, digest, scopes, issued_at_ms) VALUES (?, 'operator', randomblob(32), '[]', 0)")
        .bind(id)
        .execute(&pool)
        .await
        .map(|_| ())
        .map_err(StoreError::from)
        .expect_err("one live token per device and role");
}

#[tokio::test]
async fn audit_pages_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open_test_store(dir.path()).await;
    for seed in 10..15 {
        store
            .record_pairing_request(&ask(seed, Role::Operator, &[]), &Actor::System, NOW + i64::from(seed))
            .await
            .unwrap();
    }
    let page = store.audit_page(None, 2).await.unwrap();
    assert_eq!(page.iter().map(|row| row.at_ms).collect::<Vec<_>>(), [NOW + 14, NOW + 13]);
    let next = store.audit_page(Some(page[1].event_id), 10).await.unwrap();
    assert_eq!(next.iter().map(|row| row.at_ms).collect::<Vec<_>>(), [NOW + 12, NOW + 11, NOW + 10]);
    assert_eq!(next[0].details["reason"], "not-paired");
}

/// The connect path's device cache answers repeated lookups, and any commit, by this store, by another
/// connection (the offline CLI is another process) or by plain SQL, is seen by the very next lookup.
#[tokio::test]
async fn the_device_cache_sees_every_commit_from_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let (serving, _) = Store::open(&path).await.unwrap();
    let (other, _) = Store::open(&path).await.unwrap();
    let hits = serving.metrics().device_cache_hits;
    let actor = Actor::System;
    let (device_id, _) = device(5);

    // "Never approved" is cached too, and an approval elsewhere ends it.
    assert!(serving.device(&device_id).await.unwrap().is_none());
    assert!(serving.device(&device_id).await.unwrap().is_none());
    assert_eq!(hits.get(), 1);
    other.approve_silently(&grant(5, &["operator.read"]), PairingReason::NotPaired, true, &actor, NOW).await.unwrap();
    let record = serving.device(&device_id).await.unwrap().expect("approved by the other store");
    assert!(record.live_token(Role::Operator).is_some());

    // Cached, then revoked by the other store: the next lookup sees the revocation. The audit mark of each
    // read says which decisions it saw: from the cache the same as the read that filled it, and after the
    // revocation that revocation's audit event.
    let before = hits.get();
    let (_, mark) = serving.device_as_of(&device_id).await.unwrap();
    assert_eq!(serving.device_as_of(&device_id).await.unwrap(), (Some(record.clone()), mark));
    assert_eq!(hits.get(), before + 2, "an unchanged database answers from the cache");
    other.revoke_token(&device_id, Role::Operator, &actor, None, NOW + 1).await.unwrap();
    let (record, seen) = serving.device_as_of(&device_id).await.unwrap();
    assert!(record.unwrap().live_token(Role::Operator).is_none(), "revoked elsewhere");
    let revoked_at = other.last_audit_id().await.unwrap();
    assert!(mark < revoked_at && seen == revoked_at, "{mark} < {revoked_at} == {seen}");

    // A write that bypasses pairgate altogether is seen as well.
    serving.device(&device_id).await.unwrap();
    let raw = raw_pool(&path).await;
    sqlx::query("DELETE FROM grants WHERE device_id = ?").bind(device_id.as_str()).execute(&raw).await.unwrap();
    let record = serving.device(&device_id).await.unwrap().unwrap();
    assert!(record.grants.is_empty(), "changed by plain SQL");

    // And this store's own writes.
    serving
        .approve_silently(&grant(5, &["operator.admin"]), PairingReason::NotPaired, false, &actor, NOW + 2)
        .await
        .unwrap();
    let record = serving.device(&device_id).await.unwrap().unwrap();
    assert_eq!(record.grant(Role::Operator).unwrap().scopes, scopes(&["operator.admin"]));
    raw.close().await;
    other.close().await;
    serving.close().await;
}

/// Approvals that arrive together commit together: one transaction (one fsync) for the group, each
/// caller answered with its own outcome. A failure inside one approval rolls the group back and each is
/// retried alone: only the failing one is refused, and it leaves nothing behind.
#[tokio::test]
async fn concurrent_approvals_commit_together_and_a_failure_stays_with_its_own_approval() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let (store, _) = Store::open(&path).await.unwrap();
    store.set_pending_caps(100, 100); // twenty asks from one address
    let commits = store.metrics().approval_commits;
    let mut requests = Vec::new();
    for seed in 20..40 {
        let (request, _) = store
            .record_pairing_request(&ask(seed, Role::Operator, &["operator.read"]), &Actor::System, NOW)
            .await
            .unwrap();
        requests.push(request);
    }
    // On this single-threaded runtime, `join_all` queues all 20 before the committer first runs. The
    // first request is approved twice: exactly one of the two wins.
    let mut ids: Vec<&str> = requests.iter().map(|r| r.request_id.as_str()).collect();
    ids.push(ids[0]);
    let outcomes =
        futures_util::future::join_all(ids.iter().map(|id| store.approve_request(id, None, &Actor::System, NOW + 1)))
            .await;
    assert_eq!(commits.get(), 1, "21 decisions, one transaction");
    assert!(outcomes[..20].iter().all(Result::is_ok), "{outcomes:?}");
    let twice = outcomes[20].as_ref().unwrap_err();
    assert!(twice.to_string().contains("already approved"), "{twice}");
    for request in &requests {
        assert!(store.device(&request.device_id).await.unwrap().is_some());
    }

    // Now one approval of a group fails halfway (after its grant was written).
    let mut requests = Vec::new();
    for seed in 40..44 {
        let (request, _) = store
            .record_pairing_request(&ask(seed, Role::Operator, &["operator.read"]), &Actor::System, NOW)
            .await
            .unwrap();
        requests.push(request);
    }
    let doomed = requests[2].device_id.as_str().to_owned();
    let pool = raw_pool(&path).await;
    sqlx::query(&format!(
        "CREATE TRIGGER fail_one BEFORE INSERT ON audit_events
           WHEN NEW.action = 'pairing.approve' AND NEW.subject = '{doomed}'
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
    ))
    .execute(&pool)
    .await
    .unwrap();
    let before = commits.get();
    let outcomes = futures_util::future::join_all(
        requests.iter().map(|r| store.approve_request(&r.request_id, None, &Actor::System, NOW + 2)),
    )
    .await;
    assert_eq!(commits.get(), before + 3, "the group rolled back; the three others committed alone");
    for (request, outcome) in requests.iter().zip(&outcomes) {
        if request.device_id.as_str() == doomed {
            assert!(outcome.as_ref().unwrap_err().to_string().contains("injected failure"), "{outcome:?}");
            assert!(store.device(&request.device_id).await.unwrap().is_none(), "no device row");
            let after = store.pairing_request(&request.request_id).await.unwrap().unwrap();
            assert_eq!(after.status, RequestStatus::Pending, "the request is untouched");
        } else {
            assert_eq!(outcome.as_ref().unwrap().status, RequestStatus::Approved);
            assert!(store.device(&request.device_id).await.unwrap().is_some());
        }
    }
    pool.close().await;
    store.close().await;
}

/// Pending requests are capped per client address and in all; a device re-asking or superseding its own
/// request is not a new one; expired requests stop counting, and dead ones are purged after a day.
#[tokio::test]
async fn pending_requests_are_capped_and_dead_ones_purged() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open_test_store(dir.path()).await;
    store.set_pending_caps(2, 3);
    let actor = Actor::System;
    let from = |seed: u8, ip: &str| NewPairingRequest {
        remote_ip: Some(ip.into()),
        ..ask(seed, Role::Operator, &["operator.read"])
    };
    let refusal = |result: Result<_, StoreError>| result.err().and_then(|e| e.refusal().cloned());

    store.record_pairing_request(&from(1, "203.0.113.1"), &actor, NOW).await.unwrap();
    store.record_pairing_request(&from(2, "203.0.113.1"), &actor, NOW).await.unwrap();
    assert_eq!(
        refusal(store.record_pairing_request(&from(3, "203.0.113.1"), &actor, NOW).await),
        Some(Refusal::TooManyPendingRequests { per_address: true, max: 2 })
    );
    // The same device asking again, or asking for more, is its own request: not refused.
    store.record_pairing_request(&from(2, "203.0.113.1"), &actor, NOW + 1).await.unwrap();
    let wider =
        NewPairingRequest { remote_ip: Some("203.0.113.1".into()), ..ask(2, Role::Operator, &["operator.write"]) };
    store.record_pairing_request(&wider, &actor, NOW + 2).await.unwrap();

    store.record_pairing_request(&from(4, "198.51.100.7"), &actor, NOW).await.unwrap();
    assert_eq!(
        refusal(store.record_pairing_request(&from(5, "198.51.100.8"), &actor, NOW).await),
        Some(Refusal::TooManyPendingRequests { per_address: false, max: 3 })
    );
    assert_eq!(store.pending_requests(NOW + 3).await.unwrap().len(), 3, "nothing was written for a refused ask");

    // One IPv6 host holds a whole /64: its addresses count as one client.
    store.set_pending_caps(2, 100);
    store.record_pairing_request(&from(6, "2001:db8:1:2::a"), &actor, NOW).await.unwrap();
    store.record_pairing_request(&from(7, "2001:db8:1:2::b"), &actor, NOW).await.unwrap();
    assert_eq!(
        refusal(store.record_pairing_request(&from(8, "2001:db8:1:2:ffff::c"), &actor, NOW).await),
        Some(Refusal::TooManyPendingRequests { per_address: true, max: 2 })
    );
    store.record_pairing_request(&from(8, "2001:db8:1:3::c"), &actor, NOW).await.unwrap();
    store.set_pending_caps(2, 3);

    // Expired requests no longer count.
    let later = NOW + pairgate::domain::PAIRING_REQUEST_TTL_MS + 10;
    store.record_pairing_request(&from(3, "203.0.113.1"), &actor, later).await.unwrap();

    // A day after they died, expired and superseded requests are purged (the audit trail keeps them).
    let dead = store.requests_page(Some(RequestStatus::Expired), None, 50).await.unwrap().0.len()
        + store.requests_page(Some(RequestStatus::Superseded), None, 50).await.unwrap().0.len();
    assert!(dead >= 3, "{dead}");
    store.expire_pending(later + pairgate::domain::DEAD_REQUEST_RETENTION_MS + 1).await.unwrap();
    for status in [RequestStatus::Expired, RequestStatus::Superseded] {
        let left = store.requests_page(Some(status), None, 50).await.unwrap().0;
        assert!(left.iter().all(|r| r.resolved_at_ms.unwrap() >= later), "{status:?}: {left:?}");
    }
}
