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

mod approvals;
mod audit;
mod changes;
mod devices;
mod imports;
mod meta;
mod nodes;
mod requests;
mod schema;
mod sessions;
mod setup;
mod transfer;

use std::time::Duration;

use pairgate_store_types::{
    ARCHIVE_AFTER_MS, Actor, AuditEvent, AuditFilter, AuditRow, DeviceFilter, ImportCounts, ImportedDevice,
    ImportedRequest, NewGrant, NewPairingRequest, NewRun, PairingRequest, RequestOutcome, Run, RunEnd, SeenNote,
    SessionEntry, SessionPatch, SpawnLimits, TokenChange,
};
use pairgate_store_types::{
    AppliedMigration, StoreError, StoreMetrics, StoreResult, expect_one, latency_histogram, redact_url,
};
pub use pairgate_store_types::{
    HandedOff, MAX_UNUSED_SETUP_CODES, NewSetupCode, Redeemed, Redemption, SETUP_CODE_RETENTION_MS, SetupCode, SetupRow,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

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
    /// A command that only reads found an older schema: it never migrates.
    #[error(
        "{url} is at schema version {found}; migration {next:04} is pending. This command only reads, so it \
         changed nothing: back up (pg_dump), then run `pairgate migrate up --backup-exists`"
    )]
    PendingForReading { url: String, found: i64, next: i64 },
    /// A command that never creates a schema found none.
    #[error("{url} has no pairgate schema; this command never creates one (run `pairgate migrate up` first)")]
    NoSchema { url: String },
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

/// The advisory lock every write transaction takes first: one writer at a time across the fleet, as on
/// SQLite (`BEGIN IMMEDIATE`). It is what makes limits exact (a spawn's count and its insert cannot
/// interleave with another node's), and what makes audit event ids grow in commit order: an id is taken
/// under the lock and the lock is released by the commit, so the audit table is the fleet's ordered log
/// of decisions. "pairgate:write" in ASCII, truncated.
pub const WRITE_LOCK: i64 = 0x7061_6972_3a77_7269;

/// How long a statement waits for a lock (the write lock, a row) before failing as busy, like SQLite's
/// busy timeout: a writer that holds on for longer is reported rather than waited for without end.
const LOCK_TIMEOUT: &str = "5s";

/// The pairgate database on PostgreSQL.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
    /// The URL as shown: its password, if any, as `***`.
    shown: String,
    /// Latency of write transactions, begin to commit (exported as a metric).
    write_latency: Histogram,
    /// Device reads: every one goes to the database (no cache: another node's commit could not empty
    /// it in time); counted as misses so the metric says so.
    device_reads: Counter,
    /// The group committer of approvals.
    approvals: pairgate_store_types::approvals::Approvals,
    /// The audit events this handle committed (the rest were decided elsewhere).
    own_events: pairgate_store_types::OwnEvents,
    /// Commits anywhere in the fleet, as they happen (`LISTEN`), once someone subscribes.
    changes: changes::Changes,
    /// This process's node id, once it joined the fleet (`serve` does; the offline CLI does not).
    node: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    /// Caps on pending pairing requests: per client address, and in all.
    pending_caps: std::sync::Arc<[std::sync::atomic::AtomicI64; 2]>,
}

/// A write transaction holding the fleet's write lock, which records its latency when committed.
/// Derefs to the connection; dropped uncommitted, it rolls back (and the lock goes with it).
pub(crate) struct WriteTx {
    tx: Transaction<'static, Postgres>,
    started: std::time::Instant,
    latency: Histogram,
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
    type Target = sqlx::PgConnection;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

/// Begins a write transaction and takes the fleet's write lock.
async fn begin_write_on(
    pool: &PgPool,
    latency: &Histogram,
    own: &pairgate_store_types::OwnEvents,
) -> StoreResult<WriteTx> {
    let started = std::time::Instant::now();
    let mut tx = pool.begin().await?;
    sqlx::query!("SELECT pg_advisory_xact_lock($1)", WRITE_LOCK).execute(&mut *tx).await?;
    Ok(WriteTx { tx, started, latency: latency.clone(), own: own.clone() })
}

impl Store {
    /// Opens the database at `url`, applying pending migrations as `policy` allows.
    pub async fn open(url: &str, policy: MigratePolicy) -> Result<(Store, OpenReport), OpenError> {
        Store::open_with(url, policy, &MIGRATOR).await
    }

    /// Opens an existing pairgate database for reading only: every transaction is read-only, nothing is
    /// created or migrated. A newer schema is refused; an older one too unless `allow_pending` (for
    /// `migrate status` and `migrate verify`, which report what is pending).
    pub async fn open_read_only(url: &str, allow_pending: bool) -> Result<(Store, OpenReport), OpenError> {
        let shown = redact_url(url);
        let options: PgConnectOptions =
            url.parse().map_err(|e: sqlx::Error| OpenError::BadUrl { url: shown.clone(), detail: e.to_string() })?;
        let options = options.options([("default_transaction_read_only", "on")]);
        let pool = connect(options, &shown, url).await?;
        let store = Store::assemble(pool, shown);
        let checked = async {
            let store_error = |source: StoreError| OpenError::Store { url: store.shown.clone(), source };
            let mut conn = store.pool.acquire().await.map_err(|e| store_error(e.into()))?;
            let server_version = sqlx::query_scalar!(r#"SELECT current_setting('server_version') AS "v!""#)
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| store_error(e.into()))?;
            let found = schema::current_version(&mut conn).await.map_err(store_error)?;
            let known = latest_known_version();
            let url = store.shown.clone();
            if found == 0 {
                return Err(OpenError::NoSchema { url });
            }
            if found > known {
                let migrated_by = meta::get_on(&mut *conn, meta::LAST_MIGRATED_BY)
                    .await
                    .map_err(store_error)?
                    .unwrap_or_else(|| "unknown".into());
                return Err(OpenError::NewerSchema {
                    url,
                    found,
                    known,
                    binary: env!("CARGO_PKG_VERSION"),
                    migrated_by,
                });
            }
            if let Some(next) = MIGRATOR.iter().map(|m| m.version).find(|v| *v > found).filter(|_| !allow_pending) {
                return Err(OpenError::PendingForReading { url, found, next });
            }
            Ok(OpenReport { created: false, applied_migrations: Vec::new(), schema_version: found, server_version })
        }
        .await;
        match checked {
            Ok(report) => Ok((store, report)),
            Err(error) => {
                store.close().await;
                Err(error)
            }
        }
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
        let pool = connect(options, &shown, url).await?;
        let store = Store::assemble(pool, shown);
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
        // However long another node's migration takes, this one waits for it (reset when released).
        sqlx::query!("SET lock_timeout = 0").execute(&mut *lock).await.map_err(|e| store_error(e.into()))?;
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
                let migrated_by = meta::get_on(&mut *lock, meta::LAST_MIGRATED_BY)
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
                meta::set_on(&mut *lock, meta::LAST_MIGRATED_BY, env!("CARGO_PKG_VERSION"))
                    .await
                    .map_err(store_error)?;
                tracing::info!(database = %self.shown, applied = ?pending, "migrated the schema");
            }
            let schema_version = schema::current_version(&mut lock).await.map_err(store_error)?;
            Ok(OpenReport { created: found == 0, applied_migrations: pending, schema_version, server_version })
        }
        .await;
        let unlocked = sqlx::query_scalar!("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK).fetch_one(&mut *lock).await;
        let reset = sqlx::query!("RESET lock_timeout").execute(&mut *lock).await;
        if unlocked.is_err() || reset.is_err() {
            // The lock is the session's: closing the connection releases it.
            lock.detach();
        }
        result
    }

    /// The store over an open pool: its metrics, approval committer and caps.
    fn assemble(pool: PgPool, shown: String) -> Store {
        let write_latency = latency_histogram();
        let own_events = pairgate_store_types::OwnEvents::default();
        let approvals = approvals::start(pool.clone(), write_latency.clone(), own_events.clone());
        let pending_caps = std::sync::Arc::new([
            std::sync::atomic::AtomicI64::new(pairgate_domain::MAX_PENDING_PER_ADDRESS),
            std::sync::atomic::AtomicI64::new(pairgate_domain::MAX_PENDING_REQUESTS),
        ]);
        let changes = changes::Changes::default();
        Store {
            pool,
            shown,
            write_latency,
            device_reads: Counter::default(),
            approvals,
            own_events,
            changes,
            node: Default::default(),
            pending_caps,
        }
    }

    async fn begin_write(&self) -> StoreResult<WriteTx> {
        begin_write_on(&self.pool, &self.write_latency, &self.own_events).await
    }

    /// At most `per_address` pending pairing requests from one client address, and `total` in all.
    pub fn set_pending_caps(&self, per_address: i64, total: i64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.pending_caps[0].store(per_address, Relaxed);
        self.pending_caps[1].store(total, Relaxed);
    }

    fn pending_caps(&self) -> (i64, i64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.pending_caps[0].load(Relaxed), self.pending_caps[1].load(Relaxed))
    }

    /// Write-transaction latency, device reads (all misses: there is no cache), approval commits.
    pub fn metrics(&self) -> StoreMetrics {
        StoreMetrics {
            write_latency: self.write_latency.clone(),
            device_cache_hits: Counter::default(),
            device_cache_misses: self.device_reads.clone(),
            approval_commits: self.approvals.commits.clone(),
        }
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

    /// A receiver whose version moves whenever a transaction commits anywhere in the fleet (and whenever
    /// the connection listening for them was lost and made again): wait on it, then read the audit trail
    /// with [`Store::changes_elsewhere`].
    pub fn change_feed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe(&self.pool)
    }

    /// Decides the approvals already queued, stops listening, then closes the pool.
    pub async fn close(&self) {
        self.approvals.stop().await;
        self.changes.stop().await;
        self.pool.close().await;
    }
}

/// How long a use of the database waits for a connection from the pool: long enough to queue behind
/// busy ones, short enough that a connect fails fast when the database is down.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// The pool: a connect that needs the database fails fast when it is down, rather than queueing.
async fn connect(options: PgConnectOptions, shown: &str, url: &str) -> Result<PgPool, OpenError> {
    let options = options.options([("lock_timeout", LOCK_TIMEOUT)]);
    let unreachable =
        |error: sqlx::Error| OpenError::Unreachable { url: shown.to_owned(), detail: without(&error.to_string(), url) };
    // One connection of its own first: its error says why (refused, authentication, no such database),
    // where the pool's would only say that it timed out.
    use sqlx::{ConnectOptions, Connection};
    options.connect().await.map_err(unreachable)?.close().await.map_err(unreachable)?;
    PgPoolOptions::new()
        .max_connections(16)
        .min_connections(1)
        // With the database down, a connect waits this long for a connection, then fails (UNAVAILABLE).
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(unreachable)
}

/// The newest schema version this binary knows.
pub fn latest_known_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// `text` with every occurrence of `url` (which may hold a password) replaced by its redacted form.
fn without(text: &str, url: &str) -> String {
    if url.is_empty() { text.to_owned() } else { text.replace(url, &redact_url(url)) }
}
