//! Two nodes on one database, as two stores opened on it: every decision is seen by the other's next read,
//! limits hold across both, one approval of a request wins, and a failed transaction leaves nothing. A real
//! PostgreSQL (crate `pairgate-testkit`).

use pairgate_domain::{
    ClientMeta, DeviceId, PairingReason, PublicKey, Refusal, RequestStatus, Role, ScopeSet, SpawnLimit,
};
use pairgate_store_postgres::{MigratePolicy, Store};
use pairgate_store_types::{Actor, NewGrant, NewPairingRequest, NewRun, SessionPatch, SpawnLimits, StoreError};
use pairgate_testkit::postgres::Cluster;

const NOW: i64 = 1_800_000_000_000;

/// Two stores on one new database: node A and node B.
async fn two_nodes(cluster: &Cluster, name: &str) -> (Store, Store, String) {
    let database = cluster.new_database(name);
    let url = cluster.url_with_password(&database);
    let policy = MigratePolicy::Apply { backup_exists: false };
    let (a, _) = Store::open(&url, policy).await.unwrap();
    let (b, _) = Store::open(&url, policy).await.unwrap();
    (a, b, database)
}

fn grant(seed: u8, scopes: &[&str]) -> NewGrant {
    let public_key = PublicKey::from_bytes([seed; 32]);
    NewGrant {
        device_id: DeviceId::from_public_key(&public_key),
        public_key,
        meta: ClientMeta { client_id: Some("cli".into()), ..ClientMeta::default() },
        remote_ip: None,
        role: Role::Operator,
        scopes: ScopeSet::parse(scopes).unwrap(),
    }
}

fn ask(seed: u8, scopes: &[&str]) -> NewPairingRequest {
    let grant = grant(seed, scopes);
    NewPairingRequest {
        device_id: grant.device_id,
        public_key: grant.public_key,
        role: Role::Operator,
        scopes: grant.scopes,
        reason: PairingReason::NotPaired,
        meta: grant.meta,
        remote_ip: Some("192.0.2.7".into()),
        is_local: false,
        is_repair: false,
    }
}

#[tokio::test]
async fn a_decision_on_one_node_is_seen_by_the_next_read_on_the_other() {
    let Some(cluster) = Cluster::for_tests() else { return };
    let (a, b, _) = two_nodes(cluster, "seen").await;
    let device = grant(1, &["operator.read"]);
    assert!(b.device(&device.device_id).await.unwrap().is_none());

    a.approve_silently(&device, PairingReason::NotPaired, true, &Actor::System, NOW).await.unwrap();
    let record = b.device(&device.device_id).await.unwrap().expect("approved on A, seen on B");
    assert!(record.live_token(Role::Operator).is_some());

    // Revoked on A: B's very next read says so (no cache on this engine), and its mark is the revocation's.
    let (_, before) = b.device_as_of(&device.device_id).await.unwrap();
    a.revoke_token(&device.device_id, Role::Operator, &Actor::System, None, NOW + 1).await.unwrap();
    let (record, mark) = b.device_as_of(&device.device_id).await.unwrap();
    assert!(record.unwrap().live_token(Role::Operator).is_none(), "revoked on A, seen on B");
    let revoked_at = a.last_audit_id().await.unwrap();
    assert!(before < revoked_at && mark == revoked_at, "{before} < {revoked_at} == {mark}");
    assert_eq!(b.metrics().device_cache_hits.get(), 0, "every read went to the database");
    a.close().await;
    b.close().await;
}

/// 20 spawns for one requester at once, ten on each node, with a limit of 5: exactly 5 are accepted.
#[tokio::test]
async fn spawn_limits_are_exact_across_nodes() {
    let Some(cluster) = Cluster::for_tests() else { return };
    let (a, b, _) = two_nodes(cluster, "spawns").await;
    let requester = "agent:main:main";
    for n in 0..20 {
        let patch = SessionPatch {
            key: format!("agent:main:subagent:s{n}"),
            spawned_by: Some(requester.into()),
            ..Default::default()
        };
        a.patch_session(&patch, &Actor::System, NOW).await.unwrap();
    }
    let limits = SpawnLimits { max_depth: 1, max_children_per_requester: 5, max_concurrent_runs: 100 };
    let spawns = (0..20).map(|n| {
        let store = if n % 2 == 0 { a.clone() } else { b.clone() };
        let run = NewRun {
            run_id: format!("run-{n}"),
            child_session_key: format!("agent:main:subagent:s{n}"),
            requester_session_key: requester.into(),
            controller_session_key: None,
            task: "t".into(),
            label: None,
            model: None,
            cleanup: "keep".into(),
            spawn_mode: "run".into(),
            run_timeout_seconds: None,
        };
        tokio::spawn(async move { store.register_run(&run, &limits, &Actor::System, NOW).await })
    });
    let (mut accepted, mut refused) = (0, 0);
    for spawn in spawns.collect::<Vec<_>>() {
        match spawn.await.unwrap() {
            Ok(_) => accepted += 1,
            Err(StoreError::Refused(Refusal::SpawnLimit { limit: SpawnLimit::Children, max: 5, .. })) => refused += 1,
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!((accepted, refused), (5, 15));
    a.close().await;
    b.close().await;
}

/// The same request approved on both nodes at once, many times over: exactly one approval wins; every
/// other is told the request was already decided.
#[tokio::test]
async fn concurrent_approvals_of_one_request_on_two_nodes_exactly_one_wins() {
    let Some(cluster) = Cluster::for_tests() else { return };
    let (a, b, _) = two_nodes(cluster, "approvals").await;
    let (request, _) = a.record_pairing_request(&ask(3, &["operator.read"]), &Actor::System, NOW).await.unwrap();
    let approvals = (0..10).map(|n| {
        let store = if n % 2 == 0 { a.clone() } else { b.clone() };
        let id = request.request_id.clone();
        tokio::spawn(async move { store.approve_request(&id, None, &Actor::System, NOW + 1).await })
    });
    let (mut won, mut decided) = (0, 0);
    for approval in approvals.collect::<Vec<_>>() {
        match approval.await.unwrap() {
            Ok(approved) => {
                assert_eq!(approved.status, RequestStatus::Approved);
                won += 1;
            }
            Err(StoreError::Refused(Refusal::AlreadyDecided { status: RequestStatus::Approved, .. })) => decided += 1,
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!((won, decided), (1, 9));
    let record = b.device(&request.device_id).await.unwrap().unwrap();
    assert!(record.grant(Role::Operator).is_some());
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn a_failure_inside_a_transaction_leaves_no_partial_rows() {
    let Some(cluster) = Cluster::for_tests() else { return };
    let (store, other, database) = two_nodes(cluster, "rollback").await;
    other.close().await;
    let (request, _) = store.record_pairing_request(&ask(5, &["operator.read"]), &Actor::System, NOW).await.unwrap();
    // The audit row is the last write of an approval: make it fail after the grant was written.
    cluster.psql(
        &database,
        "CREATE FUNCTION fail_approval() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.action = 'pairing.approve' THEN RAISE EXCEPTION 'injected failure'; END IF; RETURN NEW; END $$; \
         CREATE TRIGGER fail_approvals BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION fail_approval()",
    );
    let error = store.approve_request(&request.request_id, None, &Actor::System, NOW + 1).await.unwrap_err();
    assert!(error.to_string().contains("injected failure"), "{error}");
    assert!(store.device(&request.device_id).await.unwrap().is_none(), "no device row");
    let after = store.pairing_request(&request.request_id).await.unwrap().unwrap();
    assert_eq!(after.status, RequestStatus::Pending, "the request is untouched");
    assert_eq!(cluster.psql(&database, "SELECT count(*) FROM grants"), "0");

    cluster.psql(&database, "DROP TRIGGER fail_approvals ON audit_events; DROP FUNCTION fail_approval()");
    store.approve_request(&request.request_id, None, &Actor::System, NOW + 2).await.unwrap();
    assert!(store.device(&request.device_id).await.unwrap().is_some());
    store.close().await;
}

/// Failed authentications are shared per node and summed over the others: what one node counted reaches
/// every other, a lockout decided anywhere holds everywhere, and counts past their window are purged.
#[tokio::test]
async fn failed_auth_counts_are_shared_between_nodes() {
    use pairgate_store_types::{AuthFailureCount, AuthFailuresElsewhere};
    let Some(cluster) = Cluster::for_tests() else { return };
    let (a, b, database) = two_nodes(cluster, "lockout").await;
    a.join_fleet(30_000, NOW).await.unwrap();
    b.join_fleet(30_000, NOW).await.unwrap();
    let count = |failures: i64, locked: Option<i64>| AuthFailureCount {
        network: "198.51.100.7".into(),
        window_start_ms: NOW,
        failures,
        locked_until_ms: locked,
    };
    let window = 60_000;
    assert_eq!(a.share_auth_failures(&[count(5, None)], window, NOW + 100).await.unwrap(), vec![]);
    let seen = b.share_auth_failures(&[count(4, None)], window, NOW + 200).await.unwrap();
    assert_eq!(
        seen,
        vec![AuthFailuresElsewhere { network: "198.51.100.7".into(), failures: 5, locked_until_ms: None }]
    );
    // A locks the network out: B learns it, and A sees B's count (its own is not counted twice).
    a.share_auth_failures(&[count(6, Some(NOW + 300_000))], window, NOW + 300).await.unwrap();
    let seen = b.share_auth_failures(&[count(4, None)], window, NOW + 400).await.unwrap();
    assert_eq!(seen[0].locked_until_ms, Some(NOW + 300_000));
    assert_eq!(a.share_auth_failures(&[], window, NOW + 500).await.unwrap()[0].failures, 4);
    // Past the window and the lockout, nothing is left of either node's counts.
    b.share_auth_failures(&[], window, NOW + 400_000).await.unwrap();
    assert_eq!(cluster.psql(&database, "SELECT count(*) FROM auth_failures"), "0");
    a.close().await;
    b.close().await;
}
