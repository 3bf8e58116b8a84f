//! A migration that has landed on main is never edited: a database that applied it would no longer match
//! (sqlx refuses it, and `migrate verify` reports it). This list holds the checksum (SHA-384 of the SQL) of
//! every PostgreSQL migration that ever landed; a new migration is added to it in the commit that adds it.

use pairgate_store_postgres::MIGRATOR;

const LANDED: &[(i64, &str, &str)] = &[
    (
        1,
        "initial schema",
        "A61BBAEBCA90CE2A551AF59C72E10DB70D6722DB9CD59B13B12375E7754BA774B41CC27B95722584EDE384599ED896AB",
    ),
    (
        2,
        "setup codes and device labels",
        "172617EFDBB4FEAA1633E30540B4AAA79518F03696889A3EA5F2E24D082905732A2C482AFE43DD2BAC0F4741616CC92D",
    ),
];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02X}")).collect()
}

#[test]
fn no_landed_migration_was_edited_or_removed() {
    for migration in MIGRATOR.iter() {
        let checksum = hex(&migration.checksum);
        let landed = LANDED.iter().find(|(version, _, _)| *version == migration.version);
        let Some((_, description, landed_checksum)) = landed else {
            panic!(
                "migration {:04} ({}) is not in LANDED: add ({}, {:?}, {checksum:?}) with it",
                migration.version, migration.description, migration.version, migration.description
            );
        };
        assert_eq!(
            (&migration.description.as_ref(), checksum.as_str()),
            (description, *landed_checksum),
            "migration {:04} changed after it landed; never edit a landed migration, add a new one",
            migration.version
        );
    }
    for (version, description, _) in LANDED {
        assert!(
            MIGRATOR.iter().any(|m| m.version == *version),
            "landed migration {version:04} ({description}) is gone from migrations/"
        );
    }
}
