//! Commands on the database file itself: schema migrations, backup and restore.

use std::path::Path;

use super::args::{DbArg, MigrateAction};
use super::lock::ServerLock;
use crate::clock::{Clock, SystemClock};
use crate::store::{Location, MigratePolicy, Store, create_private, sibling_path};

pub async fn migrate(action: MigrateAction, db: &DbArg) -> anyhow::Result<()> {
    let location = db.location()?;
    // Only `migrate up` changes the database (and may create it); `status` and `verify` only look.
    let (store, report) = match action {
        MigrateAction::Up { backup_exists } => Store::open(&location, MigratePolicy::Apply { backup_exists }).await?,
        MigrateAction::Status | MigrateAction::Verify => Store::open_read_only(&location, true).await?,
    };
    let shown = store.shown();
    let result = match action {
        MigrateAction::Up { .. } => {
            match (&report.applied_migrations[..], &report.backup) {
                ([], _) => println!("{shown}: schema version {} is current; nothing to apply", report.schema_version),
                (applied, Some(backup)) => println!(
                    "{shown}: backed up to {}; applied migrations {applied:?}; schema version {}",
                    backup.display(),
                    report.schema_version
                ),
                (applied, None) => {
                    println!("{shown}: applied migrations {applied:?}; schema version {}", report.schema_version)
                }
            }
            Ok(())
        }
        MigrateAction::Status => {
            println!("database: {shown}");
            println!("engine: {}", report.engine);
            println!(
                "schema version: {} (this pairgate knows up to {})",
                report.schema_version,
                store.latest_known_version()
            );
            let applied = store.migration_status().await?;
            for (version, description) in store.migrations() {
                let state = match applied.iter().find(|a| a.version == version) {
                    Some(a) if a.checksum_matches => format!("applied  checksum {}", &a.checksum[..16]),
                    Some(a) if a.earlier_form => {
                        format!("applied  in an earlier form {} (migrate up reconciles it)", &a.checksum[..16])
                    }
                    Some(a) => format!("applied  CHECKSUM MISMATCH {}", &a.checksum[..16]),
                    None => "pending".to_owned(),
                };
                println!("  {version:04} {description:<40} {state}");
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
            let checks = match location {
                Location::Sqlite(_) => "checksums, integrity_check, foreign_key_check, schema objects",
                Location::Postgres(_) => "checksums, schema objects",
            };
            if problems.is_empty() {
                println!("{shown}: ok ({checks})");
                Ok(())
            } else {
                for problem in &problems {
                    println!("{problem}");
                }
                Err(anyhow::anyhow!("{shown}: {} problem(s) found", problems.len()))
            }
        }
    };
    store.close().await;
    result
}

pub async fn backup(to: &Path, db: &DbArg) -> anyhow::Result<()> {
    if let Location::Postgres(url) = db.location()? {
        anyhow::bail!(
            "{url}: pairgate does not copy a PostgreSQL database; back it up with PostgreSQL's own tools: \
             pg_dump --format=custom --file={} <database> (and restore with pg_restore)",
            to.display()
        );
    }
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
    if let Location::Postgres(url) = db.location()? {
        anyhow::bail!(
            "{url}: pairgate does not restore a PostgreSQL database; restore a pg_dump backup with \
             pg_restore --clean --dbname=<database> {} while no pairgate node runs on it",
            from.display()
        );
    }
    let path = db.path()?;
    let sqlite = |path: &Path| Location::Sqlite(path.to_path_buf());
    let apply = MigratePolicy::Apply { backup_exists: false };
    let _lock = ServerLock::acquire(&path).map_err(|e| anyhow::anyhow!("cannot restore: {e}"))?;
    // The backup must be a sound pairgate database this binary can open: check a scratch copy of it.
    let scratch = tempfile::Builder::new().prefix("pairgate-restore-").tempdir()?;
    // The file as given, opened read-only, so that an error names it (not the scratch copy); the scratch
    // copy is taken through SQLite (`VACUUM INTO`), so that what is still in the file's `-wal` comes too.
    let (given, _) = Store::open_read_only(&sqlite(from), true)
        .await
        .map_err(|e| anyhow::anyhow!("{} is not a usable backup: {e}", from.display()))?;
    let probe = scratch.path().join("probe.db");
    let copied = given.backup_to(&probe).await;
    given.close().await;
    copied.map_err(|e| anyhow::anyhow!("cannot read {}: {e}", from.display()))?;
    let (store, _) = Store::open(&sqlite(&probe), apply)
        .await
        .map_err(|e| anyhow::anyhow!("{} is not a usable backup: {e}", from.display()))?;
    let problems = store.verify().await?;
    store.close().await;
    if !problems.is_empty() {
        anyhow::bail!("{} is damaged: {}", from.display(), problems.join("; "));
    }
    let mut kept = None;
    if path.exists() {
        let (current, _) = Store::open(&sqlite(&path), apply).await?;
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
    let (restored, _) = Store::open_read_only(&sqlite(&path), false).await?;
    super::gateway_token::tell(&restored).await;
    restored.close().await;
    Ok(())
}
