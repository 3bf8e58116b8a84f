//! The store on PostgreSQL: the PostgreSQL SQL, for a fleet of pairgate nodes on one database.
//!
//! This engine is being built in slices (issue 15); what it has so far:
//! - opening a database by URL, its password taken from the URL, `PGPASSWORD` or a password file
//!   (`PGPASSFILE`, `~/.pgpass`), never shown: every message names the URL with its password as `***`;
//! - migrations, applied exactly once however many nodes start at once (a PostgreSQL advisory lock held
//!   from the version check to the last migration), refused on a newer schema, and refused on an older
//!   one unless the operator says a backup exists (`pg_dump` is the operator's job here);
//! - the migration status and `verify`: checksums, and every schema object compared with what the
//!   migrations make, in a scratch schema of a transaction that is rolled back.

mod schema;

use std::time::Duration;

use pairgate_store_types::{AppliedMigration, StoreError, StoreResult, redact_url};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

/// Everything embedded from `migrations/`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// The advisory lock key that serializes schema changes between nodes: "pairgate" in ASCII.
const MIGRATION_LOCK: i64 = 0x7061_6972_6761_7465;

/// Why the database could not be opened. Nothing was modified.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{url} is not a PostgreSQL URL pairgate can use: {detail}")]
    BadUrl { url: String, detail: String },
    #[error("cannot reach {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error(
        "{url} has schema version {found}, newer than this pairgate {binary} understands (up to {known}); it was \
         migrated by pairgate {migrated_by}: run that version or newer, or restore the backup taken before the \
         upgrade (pg_restore). Nothing was changed."
    )]
    NewerSchema { url: String, found: i64, known: i64, binary: &'static str, migrated_by: String },
    #[error(
        "{url} is at schema version {found} and this pairgate needs {known}: run `pairgate migrate up`, or start \
         serve without --no-auto-migrate"
    )]
    MigrationPending { url: String, found: i64, known: i64 },
    #[error(
        "{url} is at schema version {found} and this pairgate needs {known}. pairgate does not back up a \
         PostgreSQL database itself: take a backup first (pg_dump --format=custom --file=pairgate-v{found}.dump \
         <database>), then run again with --backup-exists. Nothing was changed."
    )]
    BackupNotConfirmed { url: String, found: i64, known: i64 },
    #[error("{url}: migration failed: {source}")]
    Migrate { url: String, source: sqlx::migrate::MigrateError },
    #[error("{url}: {source}")]
    Store { url: String, source: StoreError },
}

/// How `Store::open` treats pending migrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigratePolicy {
    /// Apply pending migrations to a new database; to one with a schema already, only when the operator
    /// says a backup of it exists (`backup_exists`).
    Apply { backup_exists: bool },
    /// Refuse to open a database with pending migrations (`serve --no-auto-migrate`).
    Refuse,
}

/// What `Store::open` found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    pub created: bool,
    pub applied_migrations: Vec<i64>,
    pub schema_version: i64,
    pub server_version: String,
}

/// The pairgate database on PostgreSQL.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
    /// The URL as shown: its password, if any, as `***`.
    shown: String,
}

impl Store {
    /// Opens the database at `url`, applying pending migrations as `policy` allows.
    pub async fn open(url: &str, policy: MigratePolicy) -> Result<(Store, OpenReport), OpenError> {
        Store::open_with(url, policy, &MIGRATOR).await
    }

    /// `open` with a migrator of the caller's (tests use older sets of migrations).
    pub async fn open_with(
        url: &str,
        policy: MigratePolicy,
        migrator: &sqlx::migrate::Migrator,
    ) -> Result<(Store, OpenReport), OpenError> {
        let shown = redact_url(url);
        let options: PgConnectOptions =
            url.parse().map_err(|e: sqlx::Error| OpenError::BadUrl { url: shown.clone(), detail: e.to_string() })?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .min_connections(1)
            // A connect that needs the database fails fast when it is down, rather than queueing.
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(|e| OpenError::Unreachable { url: shown.clone(), detail: without(&e.to_string(), url) })?;
        let store = Store { pool, shown };
        match store.migrate(policy, migrator).await {
            Ok(report) => Ok((store, report)),
            Err(error) => {
                store.pool.close().await;
                Err(error)
            }
        }
    }

    /// Under the fleet's migration lock: refuses a newer schema, applies what is pending as `policy`
    /// allows, and records which pairgate migrated. A node that waited for another's migration finds
    /// nothing pending.
    async fn migrate(
        &self,
        policy: MigratePolicy,
        migrator: &sqlx::migrate::Migrator,
    ) -> Result<OpenReport, OpenError> {
        let store_error = |source: StoreError| OpenError::Store { url: self.shown.clone(), source };
        let mut lock = self.pool.acquire().await.map_err(|e| store_error(e.into()))?;
        sqlx::query!("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
            .execute(&mut *lock)
            .await
            .map_err(|e| store_error(e.into()))?;
        let result = async {
            let server_version = sqlx::query_scalar!(r#"SELECT current_setting('server_version') AS "v!""#)
                .fetch_one(&mut *lock)
                .await
                .map_err(|e| store_error(e.into()))?;
            let found = schema::current_version(&mut lock).await.map_err(store_error)?;
            let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
            if found > known {
                let migrated_by = schema::meta(&mut lock, schema::LAST_MIGRATED_BY)
                    .await
                    .map_err(store_error)?
                    .unwrap_or_else(|| "unknown".into());
                let (url, binary) = (self.shown.clone(), env!("CARGO_PKG_VERSION"));
                return Err(OpenError::NewerSchema { url, found, known, binary, migrated_by });
            }
            let pending: Vec<i64> = migrator.iter().map(|m| m.version).filter(|v| *v > found).collect();
            if !pending.is_empty() && found > 0 {
                let url = self.shown.clone();
                match policy {
                    MigratePolicy::Refuse => return Err(OpenError::MigrationPending { url, found, known }),
                    MigratePolicy::Apply { backup_exists: false } => {
                        return Err(OpenError::BackupNotConfirmed { url, found, known });
                    }
                    MigratePolicy::Apply { backup_exists: true } => {}
                }
            }
            if !pending.is_empty() {
                migrator
                    .run_direct(&mut *lock)
                    .await
                    .map_err(|source| OpenError::Migrate { url: self.shown.clone(), source })?;
                schema::set_meta(&mut lock, schema::LAST_MIGRATED_BY, env!("CARGO_PKG_VERSION"))
                    .await
                    .map_err(store_error)?;
                tracing::info!(database = %self.shown, applied = ?pending, "migrated the schema");
            }
            let schema_version = schema::current_version(&mut lock).await.map_err(store_error)?;
            Ok(OpenReport { created: found == 0, applied_migrations: pending, schema_version, server_version })
        }
        .await;
        let unlocked = sqlx::query_scalar!("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK).fetch_one(&mut *lock).await;
        if unlocked.is_err() {
            // The lock is the session's: closing the connection releases it.
            lock.detach();
        }
        result
    }

    /// The URL this store was opened with, its password shown as `***`.
    pub fn shown_url(&self) -> &str {
        &self.shown
    }

    /// Readiness: the database answers and its schema is the one this binary expects.
    pub async fn is_ready(&self) -> bool {
        let Ok(mut conn) = self.pool.acquire().await else { return false };
        matches!(schema::current_version(&mut conn).await, Ok(version) if version == latest_known_version())
    }

    /// Applied migrations with their checksums, and whether each matches the one this binary embeds.
    pub async fn migration_status(&self) -> StoreResult<Vec<AppliedMigration>> {
        let rows =
            sqlx::query!(r#"SELECT version, description, checksum, success FROM _sqlx_migrations ORDER BY version"#)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let embedded = MIGRATOR.iter().find(|m| m.version == row.version);
                AppliedMigration {
                    version: row.version,
                    description: row.description,
                    checksum: pairgate_domain::hex(&row.checksum),
                    success: row.success,
                    checksum_matches: embedded.is_some_and(|m| *m.checksum == *row.checksum),
                    earlier_form: false,
                }
            })
            .collect())
    }

    /// The problems `migrate verify` reports: every schema object that differs from what the applied
    /// migrations make (empty when sound). PostgreSQL enforces its own constraints and checks its own
    /// pages; what a doctored database can still hide is a changed, added or dropped schema object.
    pub async fn verify(&self) -> StoreResult<Vec<String>> {
        schema::drift(&self.pool, &MIGRATOR).await
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The newest schema version this binary knows.
pub fn latest_known_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// `text` with every occurrence of `url` (which may hold a password) replaced by its redacted form.
fn without(text: &str, url: &str) -> String {
    if url.is_empty() { text.to_owned() } else { text.replace(url, &redact_url(url)) }
}
