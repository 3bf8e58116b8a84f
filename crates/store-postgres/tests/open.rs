//! Opening a PostgreSQL database: migrations in a fleet, the backup the operator must take first, a newer
//! schema, schema drift, and passwords that never show. A real PostgreSQL (crate `pairgate-testkit`).

use std::borrow::Cow;

use pairgate_store_postgres::{MIGRATOR, MigratePolicy, OpenError, Store};
use pairgate_testkit::postgres::{Cluster, PASSWORD};
use sqlx::migrate::{Migration, MigrationType, Migrator};

const APPLY: MigratePolicy = MigratePolicy::Apply { backup_exists: false };

/// This binary's migrations and one more, `sql`: what the next pairgate would bring.
fn next_migrator(sql: &'static str) -> Migrator {
    let mut migrations: Vec<Migration> = MIGRATOR.iter().cloned().collect();
    let next = MIGRATOR.iter().map(|m| m.version).max().unwrap() + 1;
    migrations.push(Migration::new(
        next,
        Cow::Borrowed("a later one"),
        MigrationType::Simple,
        Cow::Borrowed(sql),
        false,
    ));
    Migrator { migrations: Cow::Owned(migrations), ..Migrator::DEFAULT }
}

#[tokio::test]
async fn nodes_starting_at_once_on_a_new_database_migrate_it_exactly_once() {
    let Some(cluster) = Cluster::for_tests() else { return };
    let url = cluster.url_with_password(&cluster.new_database("fleet_start"));
    // A migration that takes a while, as a real one on a big table does: every node starts while the
    // first is still migrating.
    let slow: &'static Migrator = Box::leak(Box::new(next_migrator("SELECT pg_sleep(0.5)")));
    let opens: Vec<_> = (0..6)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { Store::open_with(&url, APPLY, slow).await })
        })
        .collect();
    let mut migrated = 0;
    for open in opens {
        let (store, report) = open.await.unwrap().unwrap();
        assert_eq!(report.schema_version, slow.iter().map(|m| m.version).max().unwrap());
        migrated += usize::from(!report.applied_migrations.is_empty());
        store.close().await;
    }
    assert_eq!(migrated, 1, "exactly one node applied the migrations");
    let database = url.rsplit('/').next().unwrap();
    assert_eq!(cluster.psql(database, "SELECT count(*) FROM _sqlx_migrations"), slow.iter().count().to_string());
}

#[tokio::test]
async fn an_older_schema_is_migrated_only_once_the_operator_says_a_backup_exists() {
    let Some(cluster) = Cluster::for_tests() else { return };
    let database = cluster.new_database("older");
    let url = cluster.url_with_password(&database);
    let (store, _) = Store::open(&url, APPLY).await.unwrap();
    store.close().await;
    let next = next_migrator("CREATE INDEX devices_by_display_name ON devices (display_name)");
    let version = || cluster.psql(&database, "SELECT max(version) FROM _sqlx_migrations");
    let before = version();

    let error = Store::open_with(&url, APPLY, &next).await.unwrap_err();
    assert!(matches!(error, OpenError::BackupNotConfirmed { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains("pg_dump") && message.contains("--backup-exists"), "{message}");
    assert!(!message.contains(PASSWORD), "{message}");
    assert_eq!(version(), before, "nothing was migrated");

    let error = Store::open_with(&url, MigratePolicy::Refuse, &next).await.unwrap_err();
    assert!(matches!(error, OpenError::MigrationPending { .. }), "{error}");
    assert_eq!(version(), before);

    let (store, report) = Store::open_with(&url, MigratePolicy::Apply { backup_exists: true }, &next).await.unwrap();
    store.close().await;
    let newest = next.iter().map(|m| m.version).max().unwrap();
    assert_eq!(report.applied_migrations, vec![newest]);
    assert_eq!(version(), newest.to_string());

    // This binary is now older than the schema: refused, untouched, naming who migrated it.
    let error = Store::open(&url, MigratePolicy::Apply { backup_exists: true }).await.unwrap_err();
    match &error {
        OpenError::NewerSchema { found, migrated_by, .. } => {
            assert_eq!(*found, newest);
            assert_eq!(migrated_by, env!("CARGO_PKG_VERSION"));
        }
        other => panic!("{other}"),
    }
    assert_eq!(version(), newest.to_string());
}

#[tokio::test]
async fn verify_finds_every_schema_object_the_migrations_did_not_make_and_leaves_nothing_behind() {
    let Some(cluster) = Cluster::for_tests() else { return };
    let database = cluster.new_database("verify");
    let (store, _) = Store::open(&cluster.url_with_password(&database), APPLY).await.unwrap();
    assert_eq!(store.verify().await.unwrap(), Vec::<String>::new(), "a fresh schema is sound");

    cluster.psql(
        &database,
        "CREATE FUNCTION grant_admin() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           NEW.scopes := '[\"operator.admin\"]'::jsonb; RETURN NEW; END $$; \
         CREATE TRIGGER grants_admin BEFORE INSERT ON grants FOR EACH ROW EXECUTE FUNCTION grant_admin(); \
         DROP INDEX device_tokens_one_live; \
         ALTER TABLE devices DROP CONSTRAINT devices_public_key_check; \
         ALTER TABLE devices ADD CONSTRAINT devices_public_key_check CHECK (length(public_key) > 0)",
    );
    let problems = store.verify().await.unwrap();
    for wanted in [
        "schema: function grant_admin() is not made by any migration",
        "schema: trigger grants.grants_admin is not made by any migration",
        "schema: index device_tokens_one_live is missing",
        "schema: constraint devices.devices_public_key_check differs from what the migrations make",
    ] {
        assert!(problems.iter().any(|p| p == wanted), "{wanted} not in {problems:#?}");
    }
    assert_eq!(problems.len(), 4, "{problems:#?}");
    let schemas = cluster.psql(&database, "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'pairgate_reference%'");
    assert_eq!(schemas, "0", "the reference schema is rolled back");
    store.close().await;
}

#[tokio::test]
async fn a_password_is_never_shown_and_an_unreachable_database_is_named() {
    let Some(cluster) = Cluster::for_tests() else { return };
    let database = cluster.new_database("password");
    let wrong = format!("postgres://postgres:wrong-{PASSWORD}@127.0.0.1:{}/{database}", cluster.port());
    let error = Store::open(&wrong, APPLY).await.unwrap_err();
    assert!(matches!(error, OpenError::Unreachable { .. }), "{error}");
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains(PASSWORD), "{shown}");
    assert!(shown.contains(&format!("postgres://postgres:***@127.0.0.1:{}/{database}", cluster.port())), "{shown}");

    let nobody = format!("postgres://postgres:{PASSWORD}@127.0.0.1:{}/x", pairgate_testkit::postgres::free_port());
    let error = Store::open(&nobody, APPLY).await.unwrap_err();
    assert!(matches!(error, OpenError::Unreachable { .. }) && !error.to_string().contains(PASSWORD), "{error}");

    let (store, _) = Store::open(&cluster.url_with_password(&database), APPLY).await.unwrap();
    assert!(!format!("{store:?}").contains(PASSWORD), "{store:?}");
    assert!(!store.shown_url().contains(PASSWORD));
    assert!(store.is_ready().await);
    store.close().await;
}
