//! Schema upgrades that never lose an approval: backup before migrating, a failed migration leaves the
//! original intact, a newer schema is refused naming the backup, and verification.

use std::path::{Path, PathBuf};

use pairgate::domain::ClientMeta;
use pairgate::domain::{DeviceId, PairingReason, PublicKey, Role, ScopeSet};
use pairgate::store::sqlite::{Actor, MIGRATOR, MigratePolicy, NewGrant, OpenError, Store, latest_backup};
use sqlx::migrate::Migrator;

const NOW: i64 = 1_800_000_000_000;

/// A migrator with the real migrations plus `extra` as the next version.
async fn migrator_with(dir: &Path, extra: &str) -> Migrator {
    let migrations = dir.join("migrations");
    std::fs::create_dir_all(&migrations).unwrap();
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/crates/store-sqlite/migrations")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), migrations.join(entry.file_name())).unwrap();
    }
    let next = pairgate::store::sqlite::latest_known_version() + 1;
    std::fs::write(migrations.join(format!("{next:04}_test_step.sql")), extra).unwrap();
    Migrator::new(migrations).await.unwrap()
}

async fn approved_database(path: &Path) -> DeviceId {
    let (store, _) = Store::open(path).await.unwrap();
    let key = PublicKey::from_bytes([3; 32]);
    let device_id = DeviceId::from_public_key(&key);
    let grant = NewGrant {
        device_id: device_id.clone(),
        public_key: key,
        meta: ClientMeta::default(),
        remote_ip: None,
        role: Role::Operator,
        scopes: ScopeSet::parse(&["operator.admin"]).unwrap(),
    };
    store.approve_silently(&grant, PairingReason::NotPaired, true, &Actor::System, NOW).await.unwrap();
    store.close().await;
    device_id
}

async fn has_table(path: &Path, table: &str) -> bool {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}?mode=ro", path.display())).await.unwrap();
    let found: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE name = ?")
        .bind(table)
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    found > 0
}

#[tokio::test]
async fn a_migration_that_fails_halfway_leaves_the_original_and_a_usable_backup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pairgate.db");
    let device = approved_database(&path).await;
    let broken =
        migrator_with(dir.path(), "CREATE TABLE extra (x INTEGER);\nINSERT INTO extra SELECT * FROM no_such_table;\n")
            .await;

    let error = Store::open_with(&path, MigratePolicy::Apply, &broken).await.unwrap_err();
    assert!(matches!(error, OpenError::Migrate(_)), "{error}");
    assert!(!has_table(&path, "extra").await, "the failed step was rolled back");
    let backup = latest_backup(&path).expect("a backup was taken before migrating");
    assert!(
        backup
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&format!("pairgate.db.backup-v{}-", pairgate::store::sqlite::latest_known_version())),
        "{}",
        backup.display()
    );

    for copy in [path.clone(), backup] {
        let (store, report) = Store::open(&copy).await.unwrap();
        assert!(report.applied_migrations.is_empty(), "{} is at the current schema", copy.display());
        assert!(store.device(&device).await.unwrap().is_some(), "the approval is in {}", copy.display());
        assert!(store.verify().await.unwrap().is_empty());
        store.close().await;
    }
}

#[tokio::test]
async fn an_upgrade_backs_up_first_and_an_older_binary_then_refuses_naming_the_backup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pairgate.db");
    let device = approved_database(&path).await;
    let newer = migrator_with(dir.path(), "ALTER TABLE devices ADD COLUMN operator_label TEXT;\n").await;

    let (store, report) = Store::open_with(&path, MigratePolicy::Apply, &newer).await.unwrap();
    let next = pairgate::store::sqlite::latest_known_version() + 1;
    assert_eq!(report.applied_migrations, vec![next]);
    let backup: PathBuf = report.backup.clone().expect("backed up before migrating");
    assert!(store.device(&device).await.unwrap().is_some(), "nothing lost by the upgrade");
    store.close().await;

    // This binary only knows the migrations before that one: it refuses, touching nothing.
    let before = std::fs::read(&path).unwrap();
    let error = Store::open(&path).await.unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, OpenError::NewerSchema { .. }), "{message}");
    assert!(message.contains(&format!("schema version {next}")), "{message}");
    assert!(message.contains(&format!("pairgate restore --from {}", backup.display())), "{message}");
    assert!(std::fs::read(&path).unwrap() == before, "the database was not touched");

    // The backup is the pre-upgrade database, openable by this binary.
    let (old, _) = Store::open(&backup).await.unwrap();
    assert!(old.device(&device).await.unwrap().is_some());
}

#[tokio::test]
async fn no_auto_migrate_refuses_a_database_with_pending_migrations() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pairgate.db");
    approved_database(&path).await;
    let newer = migrator_with(dir.path(), "CREATE TABLE later (x INTEGER);\n").await;
    let error = Store::open_with(&path, MigratePolicy::Refuse, &newer).await.unwrap_err();
    assert!(
        matches!(error, OpenError::MigrationPending { found, .. } if found == pairgate::store::sqlite::latest_known_version()),
        "{error}"
    );
    assert!(error.to_string().contains("pairgate migrate up"), "{error}");
    assert!(!has_table(&path, "later").await);
    assert!(latest_backup(&path).is_none(), "nothing was written, not even a backup");
    // The same binary's own migrations are current: nothing pending, nothing refused.
    let (store, _) = Store::open_with(&path, MigratePolicy::Refuse, &MIGRATOR).await.unwrap();
    store.close().await;
}

#[tokio::test]
async fn verify_finds_a_dangling_foreign_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pairgate.db");
    approved_database(&path).await;
    let (store, _) = Store::open(&path).await.unwrap();
    assert_eq!(store.verify().await.unwrap(), Vec::<String>::new());
    assert!(store.migration_status().await.unwrap().iter().all(|m| m.checksum_matches && m.success));
    // Written behind the store's back with enforcement off, as a damaged file would be.
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite:{}", path.display())).await.unwrap();
    sqlx::query("PRAGMA foreign_keys = OFF").execute(&mut conn).await.unwrap();
    sqlx::query(
        "INSERT INTO grants (device_id, role, scopes, approved_at_ms, approved_by) VALUES (?, 'node', '[]', 0, 'x')",
    )
    .bind("e".repeat(64))
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    assert_eq!(store.verify().await.unwrap(), ["foreign key: a grants row points at a missing devices"]);
}

#[tokio::test]
async fn export_and_import_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let source_path = dir.path().join("source.db");
    approved_database(&source_path).await;
    let (source, _) = Store::open(&source_path).await.unwrap();
    // A pending and a superseded request, a session tree with a run.
    let key = PublicKey::from_bytes([8; 32]);
    let ask = |scopes: &[&str]| pairgate::store::NewPairingRequest {
        device_id: DeviceId::from_public_key(&key),
        public_key: key,
        role: Role::Operator,
        scopes: ScopeSet::parse(scopes).unwrap(),
        reason: PairingReason::NotPaired,
        meta: ClientMeta::default(),
        remote_ip: Some("203.0.113.8".into()),
        is_local: false,
        is_repair: false,
    };
    source.record_pairing_request(&ask(&["operator.read"]), &Actor::System, NOW).await.unwrap();
    source.record_pairing_request(&ask(&["operator.write"]), &Actor::System, NOW + 1).await.unwrap();
    let patch = pairgate::store::SessionPatch {
        key: "agent:main:subagent:a".into(),
        spawned_by: Some("agent:main:main".into()),
        ..Default::default()
    };
    source.patch_session(&patch, &Actor::System, NOW).await.unwrap();
    let run = pairgate::store::NewRun {
        run_id: "run-1".into(),
        child_session_key: "agent:main:subagent:a".into(),
        requester_session_key: "agent:main:main".into(),
        controller_session_key: None,
        task: "t".into(),
        label: None,
        model: None,
        cleanup: "keep".into(),
        spawn_mode: "run".into(),
        run_timeout_seconds: Some(60),
    };
    source.register_run(&run, &pairgate::store::SpawnLimits::default(), &Actor::System, NOW).await.unwrap();
    let exported = source.export_json(NOW).await.unwrap();
    let text = exported.to_string();
    assert!(text.contains("\"digest\":\""), "token digests are exported as hex");

    let (target, _) = Store::open(&dir.path().join("target.db")).await.unwrap();
    let counts = target.import_json(&exported, false).await.unwrap();
    assert!(counts.contains(&("pairing_requests".to_owned(), 2)), "{counts:?}");
    let again = target.export_json(NOW).await.unwrap();
    assert_eq!(again["tables"], exported["tables"], "round trip");
    assert!(target.verify().await.unwrap().is_empty());

    // A second import into the now non-empty database is refused, whole.
    let error = target.import_json(&exported, false).await.unwrap_err();
    assert!(error.to_string().contains("not empty"), "{error}");
    // A malformed export is refused with the row named, and nothing is half-written.
    let (fresh, _) = Store::open(&dir.path().join("fresh.db")).await.unwrap();
    let mut bad = exported.clone();
    bad["tables"]["runs"][0]["state"] = serde_json::json!("exploded");
    let error = fresh.import_json(&bad, false).await.unwrap_err();
    assert!(error.to_string().starts_with("runs row 0"), "{error}");
    assert!(fresh.paired_devices().await.unwrap().is_empty(), "nothing half-imported");
    let mut bad = exported.clone();
    bad["tables"]["devices"][0]["evil; DROP TABLE devices"] = serde_json::json!(1);
    assert!(fresh.import_json(&bad, false).await.unwrap_err().to_string().contains("has no column"));
}

/// An import keeps to the rules live writes keep (an unknown scope is refused, not stored, so no listing
/// ever fails on it), and keeps the target's gateway token unless told to replace it.
#[tokio::test]
async fn an_import_is_checked_like_live_writes_and_keeps_the_targets_token() {
    let dir = tempfile::tempdir().unwrap();
    let (source, _) = Store::open(&dir.path().join("source.db")).await.unwrap();
    let key = PublicKey::from_bytes([7; 32]);
    let grant = NewGrant {
        device_id: DeviceId::from_public_key(&key),
        public_key: key,
        meta: ClientMeta::default(),
        remote_ip: None,
        role: Role::Operator,
        scopes: ScopeSet::parse(&["operator.read"]).unwrap(),
    };
    source.approve_silently(&grant, PairingReason::NotPaired, true, &Actor::System, NOW).await.unwrap();
    assert!(source.init_gateway_token_hash("$argon2id$source", &Actor::System, NOW).await.unwrap());
    let exported = source.export_json(NOW).await.unwrap();

    let zeros = "0".repeat(64);
    for (table, column, value, why) in [
        ("grants", "scopes", serde_json::json!("[\"operator.root\"]"), "unknown scope"),
        ("grants", "scopes", serde_json::json!(["operator.admin", "operator.bogus"]), "scopes must be text"),
        ("device_tokens", "role", serde_json::json!("superuser"), "unknown role superuser"),
        ("devices", "device_id", serde_json::json!(zeros), "device_id is not derived from public_key"),
        ("devices", "public_key", serde_json::json!(42), "public_key must be text"),
    ] {
        let (target, _) = Store::open(&dir.path().join(format!("bad-{table}-{column}-{why}.db"))).await.unwrap();
        let mut bad = exported.clone();
        bad["tables"][table][0][column] = value;
        let error = target.import_json(&bad, false).await.unwrap_err().to_string();
        assert!(error.starts_with(&format!("{table} row 0")) && error.contains(why), "{table}.{column}: {error}");
        assert!(target.paired_devices().await.unwrap().is_empty(), "nothing half-imported");
    }

    let (kept, _) = Store::open(&dir.path().join("kept.db")).await.unwrap();
    assert!(kept.init_gateway_token_hash("$argon2id$target", &Actor::System, NOW).await.unwrap());
    kept.import_json(&exported, false).await.unwrap();
    assert_eq!(kept.gateway_token_hash().await.unwrap().as_deref(), Some("$argon2id$target"));
    assert_eq!(kept.paired_devices().await.unwrap().len(), 1);

    let (replaced, _) = Store::open(&dir.path().join("replaced.db")).await.unwrap();
    assert!(replaced.init_gateway_token_hash("$argon2id$target", &Actor::System, NOW).await.unwrap());
    replaced.import_json(&exported, true).await.unwrap();
    assert_eq!(replaced.gateway_token_hash().await.unwrap().as_deref(), Some("$argon2id$source"));
}

/// The first form of migration 0002 landed, then was replaced in place. A database that applied it opens,
/// migrates and verifies cleanly, gains the index that form lacked, and keeps every row.
#[tokio::test]
async fn a_database_with_the_early_form_of_0002_upgrades_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("early.db");
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/schema-0002-early.db"), &db).unwrap();
    let (store, report) = Store::open(&db).await.unwrap();
    assert_eq!(report.schema_version, pairgate::store::sqlite::latest_known_version());
    assert!(report.backup.is_some(), "backed up before reconciling and migrating");
    let migrations = store.migration_status().await.unwrap();
    assert!(migrations.iter().all(|m| m.checksum_matches && !m.earlier_form), "{migrations:?}");
    assert!(store.verify().await.unwrap().is_empty());
    store.close().await;

    let raw = sqlx::SqlitePool::connect(&format!("sqlite:{}", db.display())).await.unwrap();
    let indexes: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE '%_by_%'")
            .fetch_all(&raw)
            .await
            .unwrap();
    assert!(indexes.iter().any(|name| name == "device_tokens_by_device"), "{indexes:?}");
    assert!(indexes.iter().any(|name| name == "pairing_requests_by_status_expiry"), "{indexes:?}");
    raw.close().await;

    // The backup is the database as it was: still the early form, which this pairgate recognises.
    let refused = Store::open_with(&report.backup.unwrap(), MigratePolicy::Refuse, &MIGRATOR).await.err();
    let refused = refused.expect("a pending migration is refused");
    assert!(matches!(refused, OpenError::MigrationPending { found: 2, .. }), "{refused}");
}
