//! Commands on the database file itself: schema migrations, backup and restore.

use std::path::Path;

use super::args::{DbArg, MigrateAction};
use super::lock::ServerLock;
use crate::clock::{Clock, SystemClock};
use crate::store::{MIGRATOR, Store, create_private, latest_known_version, sibling_path};

pub async fn migrate(action: MigrateAction, db: &DbArg) -> anyhow::Result<()> {
    let path = db.path()?;
    // Only `migrate up` changes the database (and may create it); `status` and `verify` only look.
    let (store, report) = match action {
        MigrateAction::Up => Store::open(&path).await?,
        MigrateAction::Status | MigrateAction::Verify => Store::open_read_only(&path, true).await?,
    };
    let result = match action {
        MigrateAction::Up => {
            match (&report.applied_migrations[..], &report.backup) {
                ([], _) => println!(
                    "{}: schema version {} is current; nothing to apply",
                    path.display(),
                    report.schema_version
                ),
                (applied, Some(backup)) => println!(
                    "{}: backed up to {}; applied migrations {applied:?}; schema version {}",
                    path.display(),
                    backup.display(),
                    report.schema_version
                ),
                (applied, None) => {
                    println!(
                        "{}: applied migrations {applied:?}; schema version {}",
                        path.display(),
                        report.schema_version
                    )
                }
            }
            Ok(())
        }
        MigrateAction::Status => {
            println!("database: {}", path.display());
            println!("sqlite: {}", report.sqlite_version);
            println!(
                "schema version: {} (this pairgate knows up to {})",
                report.schema_version,
                latest_known_version()
            );
            let applied = store.migration_status().await?;
            for migration in MIGRATOR.iter() {
                let state = match applied.iter().find(|a| a.version == migration.version) {
                    Some(a) if a.checksum_matches => format!("applied  checksum {}", &a.checksum[..16]),
                    Some(a) if a.earlier_form => {
                        format!("applied  in an earlier form {} (migrate up reconciles it)", &a.checksum[..16])
                    }
                    Some(a) => format!("applied  CHECKSUM MISMATCH {}", &a.checksum[..16]),
                    None => "pending".to_owned(),
                };
                println!("  {:04} {:<40} {state}", migration.version, migration.description);
            }
            Ok(())
        }
        MigrateAction::Verify => {
            let mut problems: Vec<String> = store
                .migration_status()
                .await?
                .into_iter()
                .filter(|m| !m.checksum_matches || !m.success)
                .map(|m| {
                    format!("migration {:04} {}: checksum does not match this pairgate's", m.version, m.description)
                })
                .collect();
            problems.extend(store.verify().await?);
            if problems.is_empty() {
                println!("{}: ok (checksums, integrity_check, foreign_key_check)", path.display());
                Ok(())
            } else {
                for problem in &problems {
                    println!("{problem}");
                }
                Err(anyhow::anyhow!("{}: {} problem(s) found", path.display(), problems.len()))
            }
        }
    };
    store.close().await;
    result
}

pub async fn backup(to: &Path, db: &DbArg) -> anyhow::Result<()> {
    // A copy of the database as it is: read-only, never migrated first.
    let store = super::offline::open_for_reading(db).await?;
    let result = store.backup_to(to).await;
    store.close().await;
    result?;
    println!("backed up {} to {}", db.path()?.display(), to.display());
    Ok(())
}

/// Replaces the database with a backup: refused while a server holds the lock; the current database is
/// itself kept first, so a restore can be undone.
pub async fn restore(from: &Path, db: &DbArg) -> anyhow::Result<()> {
    let path = db.path()?;
    let _lock = ServerLock::acquire(&path).map_err(|e| anyhow::anyhow!("cannot restore: {e}"))?;
    // The backup must be a sound pairgate database this binary can open: check a scratch copy of it.
    let scratch = tempfile::Builder::new().prefix("pairgate-restore-").tempdir()?;
    // The file as given, opened read-only, so that an error names it (not the scratch copy); the scratch
    // copy is taken through SQLite (`VACUUM INTO`), so that what is still in the file's `-wal` comes too.
    let (given, _) = Store::open_read_only(from, true)
        .await
        .map_err(|e| anyhow::anyhow!("{} is not a usable backup: {e}", from.display()))?;
    let probe = scratch.path().join("probe.db");
    let copied = given.backup_to(&probe).await;
    given.close().await;
    copied.map_err(|e| anyhow::anyhow!("cannot read {}: {e}", from.display()))?;
    let (store, _) =
        Store::open(&probe).await.map_err(|e| anyhow::anyhow!("{} is not a usable backup: {e}", from.display()))?;
    let problems = store.verify().await?;
    store.close().await;
    if !problems.is_empty() {
        anyhow::bail!("{} is damaged: {}", from.display(), problems.join("; "));
    }
    let mut kept = None;
    if path.exists() {
        let (current, _) = Store::open(&path).await?;
        let target = sibling_path(&path, &format!(".before-restore-{}.db", SystemClock.now_ms()));
        current.backup_to(&target).await?;
        current.close().await;
        kept = Some(target);
    }
    let staged = sibling_path(&path, ".restoring");
    let _ = std::fs::remove_file(&staged);
    std::io::copy(&mut std::fs::File::open(&probe)?, &mut create_private(&staged)?)?;
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(sibling_path(&path, suffix));
    }
    std::fs::rename(&staged, &path)?;
    println!("restored {} from {}", path.display(), from.display());
    if let Some(kept) = kept {
        println!("the database it replaced is kept in {}", kept.display());
    }
    // The restored database brings its own gateway token hash; the token file beside it is left alone.
    let (restored, _) = Store::open_read_only(&path, false).await?;
    super::gateway_token::tell(&restored, &path).await;
    restored.close().await;
    Ok(())
}
