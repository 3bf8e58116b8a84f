//! A migration that has landed on main is never edited: a database that applied it would no longer match
//! (sqlx refuses it, and `migrate verify` reports it). This list holds the checksum (SHA-384 of the SQL) of
//! every PostgreSQL migration that ever landed; a new migration is added to it in the commit that adds it.

use pairgate_store_postgres::MIGRATOR;

const LANDED: &[(i64, &str, &str)] = &[(
    1,
    "initial schema",
    "CAAC19DA50213AA71F08214C408FF9ED4AE97A329863FA3BB8532AD95A23B013807FB879447BBA40B07CF2B39F49A437",
)];

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
