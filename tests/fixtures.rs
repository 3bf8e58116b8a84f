//! A database made by each released schema version lives in `tests/fixtures/` with an export of its rows.
//! Each must open with this pairgate (migrating it) with every row intact.
//!
//! After adding a migration, add its fixture: `PAIRGATE_WRITE_FIXTURES=1 cargo test --test fixtures`
//! writes `schema-NNNN.db` and `schema-NNNN.json` for the current version (older ones stay as they are).

use std::path::{Path, PathBuf};

use pairgate::domain::ClientMeta;
use pairgate::domain::{DeviceId, PairingReason, PublicKey, Role, ScopeSet};
use pairgate::store::sqlite::{Actor, NewGrant, NewPairingRequest, NewRun, SessionPatch, SpawnLimits, Store};
use serde_json::Value;

const NOW: i64 = 1_800_000_000_000;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Rows of every kind: devices with grants and tokens, requests in every status, a session tree with runs.
async fn populate(store: &Store) {
    let actor = Actor::System;
    for seed in 1..=3u8 {
        let key = PublicKey::from_bytes([seed; 32]);
        let grant = NewGrant {
            device_id: DeviceId::from_public_key(&key),
            public_key: key,
            meta: ClientMeta { client_id: Some("cli".into()), platform: Some("linux".into()), ..ClientMeta::default() },
            remote_ip: Some(format!("203.0.113.{seed}")),
            role: Role::Operator,
            scopes: ScopeSet::parse(&["operator.read", "operator.pairing"]).unwrap(),
        };
        store.approve_silently(&grant, PairingReason::NotPaired, true, &actor, NOW + i64::from(seed)).await.unwrap();
    }
    let ask = |seed: u8, scopes: &[&str]| {
        let key = PublicKey::from_bytes([seed; 32]);
        NewPairingRequest {
            device_id: DeviceId::from_public_key(&key),
            public_key: key,
            role: Role::Operator,
            scopes: ScopeSet::parse(scopes).unwrap(),
            reason: PairingReason::NotPaired,
            meta: ClientMeta::default(),
            remote_ip: Some("198.51.100.1".into()),
            is_local: false,
            is_repair: false,
        }
    };
    let (approved, _) = store.record_pairing_request(&ask(10, &["operator.read"]), &actor, NOW).await.unwrap();
    store.approve_request(&approved.request_id, None, &actor, NOW + 1).await.unwrap();
    let (rejected, _) = store.record_pairing_request(&ask(11, &["operator.read"]), &actor, NOW).await.unwrap();
    store.reject_request(&rejected.request_id, &actor, NOW + 1).await.unwrap();
    store.record_pairing_request(&ask(12, &["operator.read"]), &actor, NOW).await.unwrap();
    store.record_pairing_request(&ask(12, &["operator.write"]), &actor, NOW + 2).await.unwrap();
    for (key, parent) in [("agent:main:subagent:a", "agent:main:main"), ("agent:main:subagent:b", "agent:main:main")] {
        let patch = SessionPatch {
            key: key.into(),
            spawned_by: Some(parent.into()),
            label: Some("fixture".into()),
            ..Default::default()
        };
        store.patch_session(&patch, &actor, NOW).await.unwrap();
    }
    for (run_id, child) in [("run-a", "agent:main:subagent:a"), ("run-b", "agent:main:subagent:b")] {
        let run = NewRun {
            run_id: run_id.into(),
            child_session_key: child.into(),
            requester_session_key: "agent:main:main".into(),
            controller_session_key: None,
            task: "fixture task".into(),
            label: None,
            model: Some("m".into()),
            cleanup: "delete".into(),
            spawn_mode: "run".into(),
            run_timeout_seconds: Some(60),
        };
        store.register_run(&run, &SpawnLimits::default(), &actor, NOW).await.unwrap();
    }
    store.start_run("run-a", &actor, NOW + 5).await.unwrap();
    store.end_run("run-a", pairgate::store::RunEnd::Ok, None, &actor, NOW + 9).await.unwrap();
    // Schema 4: a device label and a setup code (digests only).
    let labelled = DeviceId::from_public_key(&PublicKey::from_bytes([1; 32]));
    store.set_device_label(&labelled, "fixture label", &actor, None, NOW + 10).await.unwrap();
    let code = pairgate::store::NewSetupCode {
        setup_id: "00000000-0000-4000-8000-000000000001".into(),
        token_digest: pairgate::domain::TokenSecret::from_presented("fixture bootstrap token").digest(),
        join_digest: None,
        access: pairgate::domain::SetupAccess::Node,
        gateway_url: "ws://192.168.1.2:18789".into(),
        issued_at_ms: NOW + 11,
        expires_at_ms: NOW + 11 + pairgate::domain::setup::SETUP_CODE_TTL_MS,
    };
    store.create_setup_code(&code, &actor, None, NOW + 11).await.unwrap();
}

/// Every field of every snapshot row is in some row of the same table now (later schemas may add columns).
fn assert_rows_intact(snapshot: &Value, now: &Value) {
    for (table, rows) in snapshot["tables"].as_object().unwrap() {
        let current = now["tables"][table].as_array().unwrap_or_else(|| panic!("table {table} is gone"));
        for row in rows.as_array().unwrap() {
            let found = current.iter().any(|candidate| {
                row.as_object().unwrap().iter().all(|(column, value)| {
                    // Which pairgate last migrated the database legitimately changes.
                    (table == "meta" && column == "value" && row["key"] == "last_migrated_by")
                        || candidate.get(column) == Some(value)
                })
            });
            assert!(found, "{table} row lost or changed: {row}");
        }
    }
}

#[tokio::test]
async fn every_released_schema_upgrades_with_every_row_intact() {
    let current = pairgate::store::sqlite::latest_known_version();
    if std::env::var("PAIRGATE_WRITE_FIXTURES").as_deref() == Ok("1") {
        let db = fixtures_dir().join(format!("schema-{current:04}.db"));
        let _ = std::fs::remove_file(&db);
        let scratch = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(&scratch.path().join("fixture.db")).await.unwrap();
        populate(&store).await;
        store.backup_to(&db).await.unwrap();
        let export = store.export_json(NOW).await.unwrap();
        std::fs::write(db.with_extension("json"), serde_json::to_string_pretty(&export).unwrap() + "\n").unwrap();
        eprintln!("wrote {}", db.display());
        return;
    }
    let mut checked = Vec::new();
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy();
            name.starts_with("schema-") && name.ends_with(".db")
        })
        .collect();
    fixtures.sort();
    for fixture in fixtures {
        // `schema-0002.db`, or `schema-0002-early.db` for a form of 0002 that was later replaced.
        let name = fixture.file_stem().unwrap().to_string_lossy().into_owned();
        let version: i64 = name["schema-".len().."schema-NNNN".len()].parse().unwrap();
        let snapshot: Value =
            serde_json::from_str(&std::fs::read_to_string(fixture.with_extension("json")).unwrap()).unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let copy = scratch.path().join("upgrade.db");
        std::fs::copy(&fixture, &copy).unwrap();
        let (store, report) = Store::open(&copy).await.unwrap();
        assert_eq!(report.schema_version, current, "{name} upgrades to {current}");
        assert_eq!(report.backup.is_some(), version < current, "an upgrade backs up first");
        assert!(store.verify().await.unwrap().is_empty());
        let migrations = store.migration_status().await.unwrap();
        assert!(migrations.iter().all(|m| m.checksum_matches && m.success), "{name}: {migrations:?}");
        assert_rows_intact(&snapshot, &store.export_json(NOW).await.unwrap());
        checked.push(version);
    }
    assert!(
        checked.contains(&current),
        "no fixture for the current schema {current}: add one (see the top of this file)"
    );
}
