//! A migration that has landed on main is never edited: a database that applied it would no longer match
//! (sqlx refuses it, and `migrate verify` reports it). This list holds the checksum (SHA-384 of the SQL) of
//! every migration that ever landed; a new migration is added to it in the commit that adds the migration.
//! Replacing a landed one fails here: add a new migration instead.

use pairgate_store_sqlite::{MIGRATOR, SUPERSEDED_MIGRATIONS};

const LANDED: &[(i64, &str, &str)] = &[
    (
        1,
        "initial schema",
        "D1E0273762EC41B1B65014D32064379834F5C0734755E95E0543284FA6DAD04F78C5070499588E35EB0537F36E2A600C",
    ),
    (
        2,
        "connect and expiry indexes",
        "078ABFA4564A752D6CA65F8194D3A3E7AC867BA100DAD84DD4D797C019A6BBBD6275E11A7C4864F271787ADB8778767E",
    ),
    (
        3,
        "device token index for early 0002",
        "54ED80DA000A250BCCD986C831100EA91FAB9F402A0F41BBDE30BD4F48A1187FDE454BE2FE102EED04B26A0BC13D2A1F",
    ),
    (
        4,
        "setup codes and device labels",
        "F27C0CFF8613EAD59FD74BCD90F4EC043FEC5EC59B1770F1F7D700E02E31471068DDD198B6BD2B0620F5C7DACCFCD957",
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

#[test]
fn superseded_forms_are_not_the_current_ones() {
    for superseded in SUPERSEDED_MIGRATIONS {
        let current = MIGRATOR.iter().find(|m| m.version == superseded.version).expect("still embedded");
        assert_ne!(hex(&current.checksum), superseded.checksum_hex);
        assert_ne!(current.description, superseded.description);
    }
}
