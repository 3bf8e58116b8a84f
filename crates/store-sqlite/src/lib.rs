//! The store: the only module with SQL.
//!
//! One writer connection (every state change is one `BEGIN IMMEDIATE` transaction that also writes its
//! audit row, committed with `synchronous=FULL`) and a small read-only pool for the connect path and
//! admin lists. WAL lets readers run while the writer commits, and lets the offline CLI write to a
//! database that `serve` has open.

mod approvals;
mod audit;
mod cache;
mod devices;
mod imports;
mod meta;
mod requests;
mod sessions;
mod setup;
mod transfer;

pub use pairgate_store_types::files::{create_private, make_private, remove_database_files, sibling_path};
pub use pairgate_store_types::{
    ARCHIVE_AFTER_MS, Actor, AppliedMigration, AuditEvent, AuditFilter, AuditRow, DEVICE_CACHE_CAPACITY, DeviceFilter,
    ImportCounts, ImportedDevice, ImportedRequest, NewGrant, NewPairingRequest, NewRun, PairingRequest, RequestOutcome,
    Run, RunEnd, SeenNote, SessionEntry, SessionPatch, SpawnLimits, StoreError, StoreMetrics, StoreResult, TokenChange,
    expect_one, latency_histogram,
};
pub use pairgate_store_types::{
    HandedOff, MAX_UNUSED_SETUP_CODES, NewSetupCode, Redeemed, Redemption, SETUP_CODE_RETENTION_MS, SetupCode, SetupRow,
};

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, Transaction};

/// Everything embedded from `migrations/`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// Why the database could not be opened. Nothing was modified.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{path} is not a SQLite database; point --db at a pairgate database or a new path")]
    NotSqlite { path: PathBuf },
    #[error("{path} is corrupt ({detail}); restore it from a backup")]
    Corrupt { path: PathBuf, detail: String },
    #[error("{path} is read-only; pairgate needs to write to its database (check the file's permissions)")]
    ReadOnly { path: PathBuf },
    #[error(
        "{path} has schema version {found}, newer than this pairgate {binary} understands (up to {known}); \
         it was migrated by pairgate {migrated_by}: run that version or newer, or restore {}. Nothing was changed.",
        match backup { Some(backup) => format!("the backup taken before the upgrade: pairgate restore --from {}", backup.display()), None => "a backup taken before the upgrade".to_owned() }
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        known: i64,
        binary: &'static str,
        migrated_by: String,
        backup: Option<PathBuf>,
    },
    #[error(
        "{path} is at schema version {found} and this pairgate needs {known}: run `pairgate migrate up` \
         (it backs up first), or start serve without --no-auto-migrate"
    )]
    MigrationPending { path: PathBuf, found: i64, known: i64 },
    /// A command that only reads found an older schema: it never migrates.
    #[error(
        "{path} is at schema version {found}; migration {next:04} ({description}) is pending. This command only \
         reads, so it changed nothing: back up (`pairgate backup --to FILE`), then run `pairgate migrate up`"
    )]
    PendingForReading { path: PathBuf, found: i64, next: i64, description: String },
    /// A command that never creates a database was pointed at a path with none.
    #[error("there is no database at {path}; this command never creates one (check --db or PAIRGATE_DB)")]
    Missing { path: PathBuf },
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot open {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl OpenError {
    /// Names what SQLite said about the file at `path` (not SQLite, corrupt, read-only), when it said so.
    pub fn classify(error: sqlx::Error, path: &Path) -> OpenError {
        let path = path.to_path_buf();
        match sqlite_primary_code(&error) {
            Some(8) => OpenError::ReadOnly { path },
            Some(11) => {
                let detail = error.as_database_error().map(|db| db.message().to_owned()).unwrap_or_default();
                OpenError::Corrupt { path, detail }
            }
            Some(26) => OpenError::NotSqlite { path },
            _ => OpenError::Store(StoreError::from(error)),
        }
    }
}

/// SQLite's primary result code (the low byte of the extended code) of a database error.
fn sqlite_primary_code(error: &sqlx::Error) -> Option<i32> {
    let db = error.as_database_error()?;
    db.code().and_then(|code| code.parse::<i32>().ok()).map(|code| code & 0xff)
}

impl OpenError {
    /// Names the file in errors raised below the point where its path is known.
    fn at(self, path: &Path) -> OpenError {
        match self {
            OpenError::Store(StoreError::Database(error)) => OpenError::classify(error, path),
            other => other,
        }
    }
}

/// The pairgate database.
#[derive(Clone, Debug)]
pub struct Store {
    writer: SqlitePool,
    readers: SqlitePool,
    path: PathBuf,
    /// Latency of write transactions, begin to commit (exported as a metric).
    write_latency: prometheus_client::metrics::histogram::Histogram,
    /// Device records for the connect path, valid until the next commit by anyone.
    device_cache: std::sync::Arc<cache::DeviceCache>,
    /// The group committer of approvals.
    approvals: pairgate_store_types::approvals::Approvals,
    /// The audit events this handle committed (the rest were decided elsewhere).
    own_events: pairgate_store_types::OwnEvents,
    /// Caps on pending pairing requests: per client address, and in all.
    pending_caps: std::sync::Arc<[std::sync::atomic::AtomicI64; 2]>,
}

/// A write transaction that records its latency when committed. Derefs to the connection, so queries
/// run on `&mut *tx` as on a plain transaction; dropped uncommitted, it rolls back.
pub(crate) struct WriteTx {
    tx: Transaction<'static, Sqlite>,
    started: std::time::Instant,
    latency: prometheus_client::metrics::histogram::Histogram,
    /// The audit event ids this handle writes (see `audit::record`).
    own: pairgate_store_types::OwnEvents,
}

impl WriteTx {
    pub(crate) async fn commit(self) -> StoreResult<()> {
        self.tx.commit().await?;
        self.latency.observe(self.started.elapsed().as_secs_f64());
        Ok(())
    }
}

impl std::ops::Deref for WriteTx {
    type Target = sqlx::SqliteConnection;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

/// What `Store::open` found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    pub created: bool,
    pub applied_migrations: Vec<i64>,
    /// The consistent copy taken before migrating an existing database.
    pub backup: Option<PathBuf>,
    pub schema_version: i64,
    pub sqlite_version: String,
}

/// A migration that landed on main in one form and was then replaced in place: its version, and the
/// description and checksum (SHA-384 of its SQL, hex) of the form that was replaced.
pub struct SupersededMigration {
    pub version: i64,
    pub description: &'static str,
    pub checksum_hex: &'static str,
}

/// Every migration form that landed and was later replaced in place. Never again: a test over the
/// checksums of every landed migration now fails on any edit. A database that applied one of these is
/// reconciled when it is upgraded (after its backup): its record takes the current form, and a later
/// migration adds what the earlier form lacked (0003 for 0002's first form).
pub const SUPERSEDED_MIGRATIONS: &[SupersededMigration] = &[SupersededMigration {
    version: 2,
    description: "pending expiry index",
    checksum_hex: "A00C762630570487C124DBA9C4198520478716D960BEE874C59F63514A2C23952E90EFD1418834DA8800C8022670B4D2",
}];

fn is_superseded_form(version: i64, checksum: &[u8]) -> bool {
    let checksum = pairgate_domain::hex(checksum);
    SUPERSEDED_MIGRATIONS.iter().any(|m| m.version == version && m.checksum_hex.eq_ignore_ascii_case(&checksum))
}

/// How `Store::open_with` treats pending migrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigratePolicy {
    /// Back up an existing database, then apply pending migrations.
    Apply,
    /// Refuse to open a database with pending migrations (`serve --no-auto-migrate`).
    Refuse,
}

const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

impl Store {
    /// Opens (creating and migrating when needed) the database at `path`.
    ///
    /// Refuses, without modifying anything, a file that is not SQLite, a read-only file, and a database
    /// whose schema is newer than this binary's.
    pub async fn open(path: &Path) -> Result<(Store, OpenReport), OpenError> {
        Store::open_with(path, MigratePolicy::Apply, &MIGRATOR).await
    }

    /// Opens an existing database for reading only: nothing is created, migrated, or switched to another
    /// journal mode, and the file's bytes stay as they are (SQLite may add its `-wal`/`-shm` beside a
    /// database already in WAL mode). A newer schema is refused; an older one too unless
    /// `allow_pending` (for `migrate status` and `migrate verify`, which report what is pending).
    pub async fn open_read_only(path: &Path, allow_pending: bool) -> Result<(Store, OpenReport), OpenError> {
        check_existing_file(path)?;
        let options = SqliteConnectOptions::new().filename(path).read_only(true).busy_timeout(Duration::from_secs(5));
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .connect_with(options)
            .await
            .map_err(|e| OpenError::classify(e, path))?;
        let checked = async {
            let sqlite_version: String = sqlx::query_scalar!(r#"SELECT sqlite_version() AS "v!: String""#)
                .fetch_one(&readers)
                .await
                .map_err(StoreError::from)?;
            let found = current_schema_version(&readers).await?;
            refuse_newer(&readers, path, found, &MIGRATOR).await?;
            if let Some(next) = MIGRATOR.iter().find(|m| m.version > found).filter(|_| !allow_pending) {
                let description = next.description.to_string();
                return Err(OpenError::PendingForReading {
                    path: path.to_path_buf(),
                    found,
                    next: next.version,
                    description,
                });
            }
            Ok::<_, OpenError>((sqlite_version, found))
        }
        .await;
        let (sqlite_version, schema_version) = match checked {
            Ok(values) => values,
            Err(error) => {
                readers.close().await;
                return Err(error.at(path));
            }
        };
        // Every write on this store fails: its "writer" is the read-only pool.
        let store = Store::assemble(readers.clone(), readers, path);
        let report =
            OpenReport { created: false, applied_migrations: Vec::new(), backup: None, schema_version, sqlite_version };
        Ok((store, report))
    }

    /// `open` with a migration policy and migrator (tests use a migrator of their own).
    pub async fn open_with(
        path: &Path,
        policy: MigratePolicy,
        migrator: &sqlx::migrate::Migrator,
    ) -> Result<(Store, OpenReport), OpenError> {
        let created = check_file_before_open(path)?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| OpenError::Io { path: parent.to_path_buf(), source })?;
        }
        if created {
            // Made here, private, so that SQLite's `-wal` and `-shm` (which take the database's mode) are too.
            create_private(path).map_err(|source| OpenError::Io { path: path.to_path_buf(), source })?;
        } else {
            // A database from a newer pairgate is refused before anything touches it (the writer below
            // would switch it to WAL first, changing its header).
            probe_not_newer(path, migrator).await?;
            tighten_modes(path);
        }
        let base = SqliteConnectOptions::new().filename(path).foreign_keys(true).busy_timeout(Duration::from_secs(5));
        let writer_options = base
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Every commit on the writer acknowledges durable state: fsync the WAL on commit.
            .synchronous(SqliteSynchronous::Full);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(writer_options)
            .await
            .map_err(|e| OpenError::classify(e, path))?;

        let result = async {
            let sqlite_version: String = sqlx::query_scalar!(r#"SELECT sqlite_version() AS "v!: String""#)
                .fetch_one(&writer)
                .await
                .map_err(StoreError::from)?;
            let (applied_migrations, backup) = migrate_if_needed(&writer, path, created, policy, migrator).await?;
            let schema_version = current_schema_version(&writer).await?;
            Ok::<_, OpenError>((sqlite_version, applied_migrations, backup, schema_version))
        }
        .await;
        let (sqlite_version, applied_migrations, backup, schema_version) = match result {
            Ok(values) => values,
            Err(error) => {
                writer.close().await;
                if created {
                    // Leave no half-made database behind for a path that did not exist.
                    remove_database_files(path);
                }
                return Err(error.at(path));
            }
        };

        let readers = match SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .connect_with(base.read_only(true))
            .await
        {
            Ok(readers) => readers,
            Err(error) => {
                writer.close().await;
                if created {
                    remove_database_files(path);
                }
                return Err(OpenError::classify(error, path));
            }
        };
        // Made after the writer, which keeps the `-shm` file (read by the device cache) in existence.
        let store = Store::assemble(writer, readers, path);
        Ok((store, OpenReport { created, applied_migrations, backup, schema_version, sqlite_version }))
    }

    /// The store over open pools: its metrics, device cache, approval committer and caps.
    fn assemble(writer: SqlitePool, readers: SqlitePool, path: &Path) -> Store {
        let write_latency = latency_histogram();
        let device_cache = std::sync::Arc::new(cache::DeviceCache::new(path, DEVICE_CACHE_CAPACITY));
        let own_events = pairgate_store_types::OwnEvents::default();
        let approvals = approvals::start(writer.clone(), write_latency.clone(), own_events.clone());
        let pending_caps = std::sync::Arc::new([
            std::sync::atomic::AtomicI64::new(pairgate_domain::MAX_PENDING_PER_ADDRESS),
            std::sync::atomic::AtomicI64::new(pairgate_domain::MAX_PENDING_REQUESTS),
        ]);
        let path = path.to_path_buf();
        Store { writer, readers, path, write_latency, device_cache, approvals, own_events, pending_caps }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts a write transaction that takes the write lock at once (a deferred transaction that reads
    /// first could fail with BUSY without waiting when another process writes).
    async fn begin_write(&self) -> StoreResult<WriteTx> {
        begin_write_on(&self.writer, &self.write_latency, &self.own_events).await
    }

    /// Keeps at most `capacity` device records between commits (0: none; every connect reads the
    /// database).
    pub fn set_device_cache_capacity(&self, capacity: usize) {
        self.device_cache.set_capacity(capacity);
    }

    /// At most `per_address` pending pairing requests from one client address, and `total` in all
    /// (defaults: `MAX_PENDING_PER_ADDRESS`, `MAX_PENDING_REQUESTS`).
    pub fn set_pending_caps(&self, per_address: i64, total: i64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.pending_caps[0].store(per_address, Relaxed);
        self.pending_caps[1].store(total, Relaxed);
    }

    fn pending_caps(&self) -> (i64, i64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.pending_caps[0].load(Relaxed), self.pending_caps[1].load(Relaxed))
    }

    /// Write-transaction latency and device-cache lookups, for the metrics registry.
    pub fn metrics(&self) -> StoreMetrics {
        StoreMetrics {
            write_latency: self.write_latency.clone(),
            device_cache_hits: self.device_cache.hits.clone(),
            device_cache_misses: self.device_cache.misses.clone(),
            approval_commits: self.approvals.commits.clone(),
        }
    }

    /// Readiness: the database answers and its schema is the one this binary expects.
    pub async fn is_ready(&self) -> bool {
        matches!(current_schema_version(&self.readers).await, Ok(version) if version == latest_known_version())
    }

    /// An online, consistent copy of the database into the new file `target` (readers and the writer go
    /// on meanwhile).
    pub async fn backup_to(&self, target: &Path) -> StoreResult<()> {
        vacuum_into(&self.readers, target).await
    }

    /// Applied migrations with their checksums, and whether each matches the one this binary embeds.
    pub async fn migration_status(&self) -> StoreResult<Vec<AppliedMigration>> {
        let rows = sqlx::query!(
            r#"SELECT version AS "version!: i64", description, checksum, success AS "success!: bool"
                 FROM _sqlx_migrations ORDER BY version"#
        )
        .fetch_all(&self.readers)
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
                    earlier_form: is_superseded_form(row.version, &row.checksum),
                }
            })
            .collect())
    }

    /// `PRAGMA integrity_check` and `PRAGMA foreign_key_check`: the problems found (empty when sound).
    pub async fn verify(&self) -> StoreResult<Vec<String>> {
        // Pragmas are not compile-checked queries (the macros cannot describe them).
        let integrity: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check").fetch_all(&self.readers).await?;
        let mut problems: Vec<String> = integrity.into_iter().filter(|line| line != "ok").collect();
        // (table, rowid — NULL for WITHOUT ROWID tables —, parent table, constraint index)
        let foreign: Vec<(String, Option<i64>, String, i64)> =
            sqlx::query_as("PRAGMA foreign_key_check").fetch_all(&self.readers).await?;
        problems.extend(foreign.into_iter().map(|(table, rowid, parent, _)| match rowid {
            Some(rowid) => format!("foreign key: {table} row {rowid} points at a missing {parent}"),
            None => format!("foreign key: a {table} row points at a missing {parent}"),
        }));
        problems.extend(self.schema_drift().await?);
        Ok(problems)
    }

    /// Every schema object (table, index, trigger, view) that differs from what the migrations applied to
    /// this database produce: one added (a trigger that grants admin, say), one missing, or one changed.
    pub async fn schema_drift(&self) -> StoreResult<Vec<String>> {
        let applied: Vec<i64> =
            sqlx::query_scalar!(r#"SELECT version AS "v!: i64" FROM _sqlx_migrations WHERE success = 1"#)
                .fetch_all(&self.readers)
                .await?;
        let expected = reference_schema(&applied).await?;
        let actual = schema_objects(&self.readers).await?;
        let mut drift = Vec::new();
        for (key, sql) in &actual {
            match expected.get(key) {
                None => drift.push(format!("schema: {} {} is not made by any migration", key.0, key.1)),
                Some(wanted) if wanted != sql => {
                    drift.push(format!("schema: {} {} differs from what the migrations make", key.0, key.1))
                }
                Some(_) => {}
            }
        }
        for key in expected.keys().filter(|key| !actual.contains_key(*key)) {
            drift.push(format!("schema: {} {} is missing", key.0, key.1));
        }
        Ok(drift)
    }

    /// The writer's journal mode, synchronous level (2 = FULL) and foreign-key enforcement, for
    /// diagnostics: these are what make an acknowledged approval durable.
    pub async fn settings(&self) -> StoreResult<(String, i64, bool)> {
        // Pragmas are not compile-checked queries (the macros cannot describe them).
        let mut conn = self.writer.acquire().await?;
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut *conn).await?;
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(&mut *conn).await?;
        let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys").fetch_one(&mut *conn).await?;
        Ok((journal, synchronous, foreign_keys == 1))
    }

    /// Decides the approvals already queued, then closes the database.
    pub async fn close(&self) {
        self.approvals.stop().await;
        self.readers.close().await;
        self.writer.close().await;
    }
}

/// `Store::begin_write` for holders of the writer pool alone (the approvals committer).
async fn begin_write_on(
    writer: &SqlitePool,
    latency: &prometheus_client::metrics::histogram::Histogram,
    own: &pairgate_store_types::OwnEvents,
) -> StoreResult<WriteTx> {
    let started = std::time::Instant::now();
    let tx = writer.begin_with("BEGIN IMMEDIATE").await?;
    Ok(WriteTx { tx, started, latency: latency.clone(), own: own.clone() })
}

type SchemaObjects = std::collections::BTreeMap<(String, String), Option<String>>;

/// (type, name) → the SQL that made it, for every object but SQLite's own (whose names start with
/// `sqlite_`, literally: not a `LIKE` pattern, where `_` matches anything) and the migrator's table (whose
/// rows the checksums check; only the table: a trigger may carry the same name).
async fn schema_objects(pool: &SqlitePool) -> StoreResult<SchemaObjects> {
    let rows = sqlx::query!(
        r#"SELECT type AS "kind!: String", name AS "name!: String", sql
             FROM sqlite_master
            WHERE substr(name, 1, 7) <> 'sqlite_' AND NOT (type = 'table' AND name = '_sqlx_migrations')"#
    )
    .fetch_all(pool)
    .await?;
    let rows = rows.into_iter().map(|row| (row.kind, row.name, row.sql));
    Ok(rows.map(|(kind, name, sql)| ((kind, name), sql)).collect())
}

/// The schema objects the embedded migrations `versions` make, in a scratch in-memory database.
async fn reference_schema(versions: &[i64]) -> StoreResult<SchemaObjects> {
    let scratch =
        SqlitePoolOptions::new().max_connections(1).connect_with(SqliteConnectOptions::new().in_memory(true)).await?;
    for migration in MIGRATOR.iter().filter(|m| versions.contains(&m.version)) {
        sqlx::raw_sql(&migration.sql).execute(&scratch).await?;
    }
    let objects = schema_objects(&scratch).await;
    scratch.close().await;
    objects
}

/// A database made by an older pairgate (or by hand) may be readable by others: it holds token digests
/// and the gateway token's hash, so it and its `-wal` and `-shm` become `0600`.
fn tighten_modes(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for suffix in ["", "-wal", "-shm"] {
        let file = sibling_path(path, suffix);
        let Ok(metadata) = std::fs::symlink_metadata(&file) else { continue };
        if metadata.file_type().is_file() && metadata.permissions().mode() & 0o077 != 0 {
            match make_private(&file) {
                Ok(()) => tracing::warn!(file = %file.display(), "was readable by others; now 0600"),
                Err(error) => {
                    tracing::warn!(file = %file.display(), %error, "is readable by others and could not be made 0600")
                }
            }
        }
    }
}

/// An existing SQLite file, for a command that never creates one (its mode may be read-only).
fn check_existing_file(path: &Path) -> Result<(), OpenError> {
    match std::fs::metadata(path) {
        Ok(metadata) if metadata.is_file() => {}
        Ok(_) | Err(_) => return Err(OpenError::Missing { path: path.to_path_buf() }),
    }
    let mut header = [0u8; 16];
    let read = std::fs::File::open(path).and_then(|mut file| std::io::Read::read_exact(&mut file, &mut header));
    if read.is_err() || header != *SQLITE_HEADER {
        return Err(OpenError::NotSqlite { path: path.to_path_buf() });
    }
    Ok(())
}

/// Returns whether the file is new; refuses files pairgate must not open.
fn check_file_before_open(path: &Path) -> Result<bool, OpenError> {
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(source) => return Err(OpenError::Io { path: path.to_path_buf(), source }),
    };
    if metadata.len() > 0 {
        use std::io::Read;
        let mut header = [0u8; 16];
        let read = std::fs::File::open(path)
            .and_then(|mut file| file.read_exact(&mut header))
            .map(|_| header == *SQLITE_HEADER);
        if !matches!(read, Ok(true)) {
            return Err(OpenError::NotSqlite { path: path.to_path_buf() });
        }
    }
    // Checked by mode bits rather than by trying to open for writing: root may write to a 0444 file,
    // but an operator who made the database read-only meant it.
    if metadata.permissions().readonly() {
        return Err(OpenError::ReadOnly { path: path.to_path_buf() });
    }
    Ok(false)
}

pub fn latest_known_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

async fn current_schema_version(pool: &SqlitePool) -> StoreResult<i64> {
    if !migrations_table_exists(pool).await? {
        return Ok(0);
    }
    let version =
        sqlx::query_scalar!(r#"SELECT COALESCE(MAX(version), 0) AS "v!: i64" FROM _sqlx_migrations WHERE success = 1"#)
            .fetch_one(pool)
            .await?;
    Ok(version)
}

async fn migrations_table_exists(pool: &SqlitePool) -> StoreResult<bool> {
    let found = sqlx::query_scalar!(
        r#"SELECT COUNT(*) AS "n!: i64" FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"#
    )
    .fetch_one(pool)
    .await?;
    Ok(found > 0)
}

/// Refuses a database whose schema is newer than `migrator` knows, naming who migrated it and the backup
/// to go back to.
async fn refuse_newer(
    pool: &SqlitePool,
    path: &Path,
    found: i64,
    migrator: &sqlx::migrate::Migrator,
) -> Result<(), OpenError> {
    let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    if found <= known {
        return Ok(());
    }
    let migrated_by = meta::get_on(pool, meta::LAST_MIGRATED_BY).await?.unwrap_or_else(|| "unknown".into());
    Err(OpenError::NewerSchema {
        path: path.to_path_buf(),
        found,
        known,
        binary: env!("CARGO_PKG_VERSION"),
        migrated_by,
        backup: latest_backup(path),
    })
}

/// Reads an existing database's schema version read-only and refuses a newer one.
async fn probe_not_newer(path: &Path, migrator: &sqlx::migrate::Migrator) -> Result<(), OpenError> {
    let options = SqliteConnectOptions::new().filename(path).read_only(true).busy_timeout(Duration::from_secs(5));
    let probe = SqlitePoolOptions::new().max_connections(1).connect_with(options).await;
    let probe = probe.map_err(|e| OpenError::classify(e, path))?;
    let result = async {
        let found = current_schema_version(&probe).await?;
        refuse_newer(&probe, path, found, migrator).await
    }
    .await;
    probe.close().await;
    result.map_err(|e| e.at(path))
}

/// Refuses a newer schema before touching anything; backs up an existing database; then applies the
/// pending migrations and records which pairgate applied them.
async fn migrate_if_needed(
    writer: &SqlitePool,
    path: &Path,
    created: bool,
    policy: MigratePolicy,
    migrator: &sqlx::migrate::Migrator,
) -> Result<(Vec<i64>, Option<PathBuf>), OpenError> {
    let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    let found = current_schema_version(writer).await?;
    refuse_newer(writer, path, found, migrator).await?;
    let pending: Vec<i64> = migrator.iter().map(|m| m.version).filter(|v| *v > found).collect();
    if pending.is_empty() {
        return Ok((pending, None));
    }
    let existing = !created && found > 0;
    if existing && policy == MigratePolicy::Refuse {
        return Err(OpenError::MigrationPending { path: path.to_path_buf(), found, known });
    }
    let backup = if existing { Some(backup_before_migrating(writer, path, found).await?) } else { None };
    if existing {
        reconcile_superseded(writer, migrator).await?;
    }
    migrator.run(writer).await?;
    meta::set_on(writer, meta::LAST_MIGRATED_BY, env!("CARGO_PKG_VERSION")).await?;
    Ok((pending, backup))
}

/// Gives the record of every migration applied in a superseded form the current form's description and
/// checksum, in one transaction, so the migrator accepts the database; the migrations after it add what the
/// earlier form lacked.
async fn reconcile_superseded(writer: &SqlitePool, migrator: &sqlx::migrate::Migrator) -> StoreResult<()> {
    let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
    let applied = sqlx::query!(r#"SELECT version AS "version!: i64", checksum FROM _sqlx_migrations"#)
        .fetch_all(&mut *tx)
        .await?;
    for row in applied.iter().filter(|row| is_superseded_form(row.version, &row.checksum)) {
        let Some(current) = migrator.iter().find(|m| m.version == row.version) else { continue };
        let (description, checksum) = (current.description.as_ref(), current.checksum.as_ref());
        sqlx::query!(
            "UPDATE _sqlx_migrations SET description = ?, checksum = ? WHERE version = ?",
            description,
            checksum,
            row.version
        )
        .execute(&mut *tx)
        .await?;
        tracing::info!(version = row.version, "migration applied in an earlier form: reconciled with its current form");
    }
    tx.commit().await?;
    Ok(())
}

/// `<db>.backup-v<version>-<UTC time>.db`, beside the database.
fn backup_path(path: &Path, version: i64) -> PathBuf {
    let stamp = time::OffsetDateTime::now_utc()
        .format(&time::macros::format_description!("[year][month][day]T[hour][minute][second]Z"))
        .expect("a fixed format");
    sibling_path(path, &format!(".backup-v{version}-{stamp}.db"))
}

async fn backup_before_migrating(writer: &SqlitePool, path: &Path, version: i64) -> StoreResult<PathBuf> {
    let target = backup_path(path, version);
    vacuum_into(writer, &target).await?;
    tracing::info!(backup = %target.display(), "backed up the database before migrating");
    Ok(target)
}

/// A consistent copy of the live database (WAL included) into a new file.
async fn vacuum_into(pool: &SqlitePool, target: &Path) -> StoreResult<()> {
    let target_text = target.to_str().ok_or_else(|| StoreError::PathNotUtf8(target.to_path_buf()))?;
    // An empty private file first (VACUUM INTO fills an empty file and keeps its mode): never an existing
    // file, never through a symlink.
    match create_private(target) {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(StoreError::TargetExists(target.to_path_buf()));
        }
        Err(error) => return Err(StoreError::Database(sqlx::Error::Io(error))),
    }
    // VACUUM INTO takes no macro-checked form; the path is bound, never spliced into the SQL.
    if let Err(error) = sqlx::query("VACUUM INTO ?").bind(target_text).execute(pool).await {
        let _ = std::fs::remove_file(target);
        return Err(error.into());
    }
    Ok(())
}

/// The newest `<db>.backup-*` file beside the database, if any.
pub fn latest_backup(path: &Path) -> Option<PathBuf> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let prefix = format!("{}.backup-", path.file_name()?.to_string_lossy());
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(&prefix))
        .max_by_key(|entry| entry.metadata().and_then(|m| m.modified()).ok())
        .map(|entry| entry.path())
}
