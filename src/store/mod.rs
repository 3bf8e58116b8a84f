//! The store boundary: everything above it opens and uses the store through this module, and never names
//! the engine behind it. [`Store`] is one of two engines, each a crate with its own SQL:
//! - SQLite (`pairgate-store-sqlite`): the embedded default, one file;
//! - PostgreSQL (`pairgate-store-postgres`): for a fleet of nodes on one database.
//!
//! The records and errors both engines speak are crate `pairgate-store-types`, re-exported here. Every
//! method below is either engine's method of the same name and contract (documented here once); the few
//! that only one engine can do say what the other does instead.

pub mod location;

use std::path::{Path, PathBuf};

pub use location::{Location, LocationError};
pub use pairgate_store_postgres as postgres;
pub use pairgate_store_sqlite as sqlite;
pub use pairgate_store_types::files::{create_private, make_private, remove_database_files, sibling_path};
pub use pairgate_store_types::{
    ARCHIVE_AFTER_MS, Actor, AppliedMigration, AuditEvent, AuditFilter, AuditRow, AuthFailureCount,
    AuthFailuresElsewhere, DEVICE_CACHE_CAPACITY, DeviceFilter, ImportCounts, ImportedDevice, ImportedRequest,
    NewGrant, NewPairingRequest, NewRun, PairingRequest, RequestOutcome, Run, RunEnd, SeenNote, SessionEntry,
    SessionPatch, SpawnLimits, StoreError, StoreMetrics, StoreResult, TokenChange, latency_histogram,
};
pub use pairgate_store_types::{
    HandedOff, MAX_UNUSED_SETUP_CODES, NewSetupCode, Redeemed, Redemption, SETUP_CODE_RETENTION_MS, SetupCode,
    clean_label,
};

use pairgate_domain::clock::Millis;
use pairgate_domain::{
    DeviceId, DeviceRecord, PairingReason, RequestStatus, Role, RunState, ScopeSet, TokenDigest, TokenSecret,
};
use serde_json::Value;

/// The pairgate database, on either engine. Cloning shares it.
#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(sqlite::Store),
    Postgres(postgres::Store),
}

/// Calls the same method on whichever engine the store is.
macro_rules! engine {
    ($store:expr, $engine:ident => $call:expr) => {
        match $store {
            Store::Sqlite($engine) => $call,
            Store::Postgres($engine) => $call,
        }
    };
}

/// Wakes a watcher of the audit trail when something may have committed elsewhere.
pub struct ChangeFeed(Option<tokio::sync::watch::Receiver<u64>>);

impl ChangeFeed {
    /// Resolves when a commit may have happened since the last call, or after `within` at the latest.
    pub async fn changed(&mut self, within: std::time::Duration) {
        match &mut self.0 {
            Some(receiver) => {
                let _ = tokio::time::timeout(within, receiver.changed()).await;
            }
            None => tokio::time::sleep(within).await,
        }
    }
}

/// Why the database could not be opened. Nothing was modified.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Location(#[from] LocationError),
    #[error(transparent)]
    Sqlite(#[from] sqlite::OpenError),
    #[error(transparent)]
    Postgres(#[from] postgres::OpenError),
}

/// How opening treats pending migrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigratePolicy {
    /// Apply what is pending. SQLite backs the file up first, itself; on PostgreSQL the operator backs up
    /// (`pg_dump`) and says so with `backup_exists`, or an existing schema is not migrated.
    Apply { backup_exists: bool },
    /// Refuse to open a database with pending migrations (`serve --no-auto-migrate`).
    Refuse,
}

/// What opening found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// The database (SQLite) or its schema (PostgreSQL) was made just now.
    pub created: bool,
    pub applied_migrations: Vec<i64>,
    /// The consistent copy SQLite took before migrating an existing database.
    pub backup: Option<PathBuf>,
    pub schema_version: i64,
    /// The engine and its version, e.g. `SQLite 3.46.0` or `PostgreSQL 15.18`.
    pub engine: String,
}

impl From<sqlite::OpenReport> for OpenReport {
    fn from(report: sqlite::OpenReport) -> Self {
        OpenReport {
            created: report.created,
            applied_migrations: report.applied_migrations,
            backup: report.backup,
            schema_version: report.schema_version,
            engine: format!("SQLite {}", report.sqlite_version),
        }
    }
}

impl From<postgres::OpenReport> for OpenReport {
    fn from(report: postgres::OpenReport) -> Self {
        OpenReport {
            created: report.created,
            applied_migrations: report.applied_migrations,
            backup: None,
            schema_version: report.schema_version,
            engine: format!("PostgreSQL {}", report.server_version),
        }
    }
}

impl Store {
    /// Opens (creating and migrating as `policy` allows) the database at `location`.
    pub async fn open(location: &Location, policy: MigratePolicy) -> Result<(Store, OpenReport), OpenError> {
        match location {
            Location::Sqlite(path) => {
                let policy = match policy {
                    MigratePolicy::Apply { .. } => sqlite::MigratePolicy::Apply,
                    MigratePolicy::Refuse => sqlite::MigratePolicy::Refuse,
                };
                let (store, report) = sqlite::Store::open_with(path, policy, &sqlite::MIGRATOR).await?;
                Ok((Store::Sqlite(store), report.into()))
            }
            Location::Postgres(url) => {
                let policy = match policy {
                    MigratePolicy::Apply { backup_exists } => postgres::MigratePolicy::Apply { backup_exists },
                    MigratePolicy::Refuse => postgres::MigratePolicy::Refuse,
                };
                let (store, report) = postgres::Store::open(url.expose(), policy).await?;
                Ok((Store::Postgres(store), report.into()))
            }
        }
    }

    /// Opens an existing database for reading only: nothing is created or migrated. A newer schema is
    /// refused; an older one too unless `allow_pending` (for `migrate status` and `migrate verify`).
    pub async fn open_read_only(location: &Location, allow_pending: bool) -> Result<(Store, OpenReport), OpenError> {
        match location {
            Location::Sqlite(path) => {
                let (store, report) = sqlite::Store::open_read_only(path, allow_pending).await?;
                Ok((Store::Sqlite(store), report.into()))
            }
            Location::Postgres(url) => {
                let (store, report) = postgres::Store::open_read_only(url.expose(), allow_pending).await?;
                Ok((Store::Postgres(store), report.into()))
            }
        }
    }

    /// The database as an operator names it: the file's path, or the URL with its password as `***`.
    pub fn shown(&self) -> String {
        match self {
            Store::Sqlite(store) => store.path().display().to_string(),
            Store::Postgres(store) => store.shown_url().to_owned(),
        }
    }

    /// The SQLite file, when the store is one.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Store::Sqlite(store) => Some(store.path()),
            Store::Postgres(_) => None,
        }
    }

    /// The newest schema version this binary knows for this store's engine.
    pub fn latest_known_version(&self) -> i64 {
        match self {
            Store::Sqlite(_) => sqlite::latest_known_version(),
            Store::Postgres(_) => postgres::latest_known_version(),
        }
    }

    /// This binary's migrations for this store's engine: (version, description).
    pub fn migrations(&self) -> Vec<(i64, String)> {
        let migrator = match self {
            Store::Sqlite(_) => &sqlite::MIGRATOR,
            Store::Postgres(_) => &postgres::MIGRATOR,
        };
        migrator.iter().map(|m| (m.version, m.description.to_string())).collect()
    }

    /// Keeps at most `capacity` device records between commits (SQLite only: on PostgreSQL every
    /// connect reads the database, as another node's commit could not empty a cache in time).
    pub fn set_device_cache_capacity(&self, capacity: usize) {
        if let Store::Sqlite(store) = self {
            store.set_device_cache_capacity(capacity);
        }
    }

    /// At most `per_address` pending pairing requests from one client address, and `total` in all.
    pub fn set_pending_caps(&self, per_address: i64, total: i64) {
        engine!(self, store => store.set_pending_caps(per_address, total))
    }

    /// Write-transaction latency, device-cache lookups and approval commits, for the metrics registry.
    pub fn metrics(&self) -> StoreMetrics {
        engine!(self, store => store.metrics())
    }

    /// Readiness: the database answers and its schema is the one this binary expects.
    pub async fn is_ready(&self) -> bool {
        engine!(self, store => store.is_ready().await)
    }

    /// An online, consistent copy of a SQLite database into the new file `target`. On PostgreSQL
    /// backups are `pg_dump`'s: refused, saying so.
    pub async fn backup_to(&self, target: &Path) -> StoreResult<()> {
        match self {
            Store::Sqlite(store) => store.backup_to(target).await,
            Store::Postgres(_) => Err(StoreError::Unsupported(
                "pairgate does not copy a PostgreSQL database: back it up with pg_dump \
                 (pg_dump --format=custom --file=pairgate.dump <database>) and restore with pg_restore"
                    .into(),
            )),
        }
    }

    /// Applied migrations with their checksums, and whether each matches the one this binary embeds.
    pub async fn migration_status(&self) -> StoreResult<Vec<AppliedMigration>> {
        engine!(self, store => store.migration_status().await)
    }

    /// The problems `migrate verify` finds (empty when sound): the engine's own checks, then every schema
    /// object that differs from what the migrations make.
    pub async fn verify(&self) -> StoreResult<Vec<String>> {
        engine!(self, store => store.verify().await)
    }

    /// Decides the approvals already queued, then closes the database.
    pub async fn close(&self) {
        engine!(self, store => store.close().await)
    }

    /// The audit events after `after_id` committed elsewhere (another process, another node), oldest
    /// first, and the last id read; see the engines' `changes_elsewhere`.
    pub async fn changes_elsewhere(&self, after_id: i64, limit: i64) -> StoreResult<(Vec<AuditRow>, i64)> {
        engine!(self, store => store.changes_elsewhere(after_id, limit).await)
    }

    /// What wakes a watcher of [`Store::changes_elsewhere`]: on PostgreSQL every commit in the fleet as it
    /// happens (`LISTEN`/`NOTIFY`); on SQLite nothing does (another process's commit sends no signal), so
    /// the watcher reads every `within`.
    pub fn change_feed(&self) -> ChangeFeed {
        match self {
            Store::Sqlite(_) => ChangeFeed(None),
            Store::Postgres(store) => ChangeFeed(Some(store.change_feed())),
        }
    }

    /// Joins the fleet (PostgreSQL): a node id new at this start, holding a lease of `lease_ms`; the runs
    /// registered from now on are this node's. `None` on SQLite, where one process serves the file.
    pub async fn join_fleet(&self, lease_ms: Millis, now_ms: Millis) -> StoreResult<Option<String>> {
        match self {
            Store::Sqlite(_) => Ok(None),
            Store::Postgres(store) => store.join_fleet(lease_ms, now_ms).await.map(Some),
        }
    }

    /// Renews this node's lease (PostgreSQL; nothing on SQLite).
    pub async fn renew_lease(&self, lease_ms: Millis, now_ms: Millis) -> StoreResult<()> {
        match self {
            Store::Sqlite(_) => Ok(()),
            Store::Postgres(store) => store.renew_lease(lease_ms, now_ms).await,
        }
    }

    /// Shares this node's counts of failed authentications with the fleet and returns what the other
    /// nodes counted (PostgreSQL, about once a second). On SQLite one process counts alone: nothing.
    pub async fn share_auth_failures(
        &self,
        counts: &[AuthFailureCount],
        window_ms: Millis,
        now_ms: Millis,
    ) -> StoreResult<Vec<AuthFailuresElsewhere>> {
        match self {
            Store::Sqlite(_) => Ok(Vec::new()),
            Store::Postgres(store) => store.share_auth_failures(counts, window_ms, now_ms).await,
        }
    }

    /// Leaves the fleet, ending this node's active runs (PostgreSQL). On SQLite nothing: the next start
    /// ends the runs a stop left (`recover_interrupted_runs`).
    pub async fn leave_fleet(&self, now_ms: Millis) -> StoreResult<Vec<String>> {
        match self {
            Store::Sqlite(_) => Ok(Vec::new()),
            Store::Postgres(store) => store.leave_fleet(now_ms).await,
        }
    }

    /// Records an event that is not part of another change (a lockout, say).
    pub async fn record_audit(&self, event: &AuditEvent) -> StoreResult<()> {
        engine!(self, store => store.record_audit(event).await)
    }

    /// Audit rows, newest first, before `before_id` when given.
    /// The newest audit event's id (0 for none): where a watcher of later events starts.
    pub async fn last_audit_id(&self) -> StoreResult<i64> {
        engine!(self, store => store.last_audit_id().await)
    }

    /// The audit trail, newest first, before `before_id`.
    pub async fn audit_page(&self, before_id: Option<i64>, limit: i64) -> StoreResult<Vec<AuditRow>> {
        self.audit_matching(&AuditFilter::default(), before_id, limit).await
    }

    /// `audit_page` with only the rows `filter` lets through (a device's, an action's or a family's).
    pub async fn audit_matching(
        &self,
        filter: &AuditFilter,
        before_id: Option<i64>,
        limit: i64,
    ) -> StoreResult<Vec<AuditRow>> {
        engine!(self, store => store.audit_page(filter, before_id, limit).await)
    }

    /// The device, its grants and its newest token per role; `None` when never approved. Answered from
    /// the device cache while nothing has committed since the record was read.
    pub async fn device(&self, device_id: &DeviceId) -> StoreResult<Option<DeviceRecord>> {
        engine!(self, store => store.device(device_id).await)
    }

    /// The device, with the newest audit event id its read saw. Audit ids grow in commit order, so a
    /// decision whose audit event is newer than the mark committed after this read: the connect path
    /// keeps the mark, and a revocation made by another process closes the sockets that read before it
    /// (compared by commit order, never by clocks).
    pub async fn device_as_of(&self, device_id: &DeviceId) -> StoreResult<(Option<DeviceRecord>, i64)> {
        engine!(self, store => store.device_as_of(device_id).await)
    }

    /// Every device that holds at least one grant, by id.
    pub async fn paired_devices(&self) -> StoreResult<Vec<DeviceRecord>> {
        engine!(self, store => store.paired_devices().await)
    }

    /// A local connect asked for more than was approved and policy allows approving it silently: record
    /// the grant (union with what was approved), resolve any pending request of the device, and mint a
    /// token when asked, all in one transaction, before hello-ok is sent.
    pub async fn approve_silently(
        &self,
        grant: &NewGrant,
        reason: PairingReason,
        mint_token: bool,
        actor: &Actor,
        now_ms: Millis,
    ) -> StoreResult<Option<TokenSecret>> {
        engine!(self, store => store.approve_silently(grant, reason, mint_token, actor, now_ms).await)
    }

    /// Issues a new token for an approved device and role, revoking the previous one.
    pub async fn issue_token(
        &self,
        device_id: &DeviceId,
        role: Role,
        actor: &Actor,
        remote_addr: Option<&str>,
        now_ms: Millis,
    ) -> StoreResult<TokenSecret> {
        engine!(self, store => store.issue_token(device_id, role, actor, remote_addr, now_ms).await)
    }

    /// Records a batch of last-seen times in one transaction. Bookkeeping, not a decision: no audit row.
    pub async fn record_last_seen(&self, notes: &[SeenNote]) -> StoreResult<()> {
        engine!(self, store => store.record_last_seen(notes).await)
    }

    /// Removes a device: its grants go, its live tokens are revoked, the row stays for the audit trail.
    pub async fn remove_device(
        &self,
        device_id: &DeviceId,
        actor: &Actor,
        remote_addr: Option<&str>,
        now_ms: Millis,
    ) -> StoreResult<()> {
        engine!(self, store => store.remove_device(device_id, actor, remote_addr, now_ms).await)
    }

    /// Rotates the token of an approved role: the live token is revoked, and the next connect that proves
    /// itself with the gateway secret is handed a new one (a token value never travels in a reply).
    /// `narrower` replaces the grant's scopes with a subset of them.
    pub async fn rotate_token(
        &self,
        device_id: &DeviceId,
        role: Role,
        narrower: Option<&ScopeSet>,
        actor: &Actor,
        remote_addr: Option<&str>,
        now_ms: Millis,
    ) -> StoreResult<TokenChange> {
        engine!(self, store => store.rotate_token(device_id, role, narrower, actor, remote_addr, now_ms).await)
    }

    /// Revokes the live token of a device's role; `NotFound` when there is none.
    pub async fn revoke_token(
        &self,
        device_id: &DeviceId,
        role: Role,
        actor: &Actor,
        remote_addr: Option<&str>,
        now_ms: Millis,
    ) -> StoreResult<TokenChange> {
        engine!(self, store => store.revoke_token(device_id, role, actor, remote_addr, now_ms).await)
    }

    /// Stores a minted setup code (its digests only), with its audit row.
    pub async fn create_setup_code(
        &self,
        code: &NewSetupCode,
        actor: &Actor,
        remote_addr: Option<&str>,
        now_ms: Millis,
    ) -> StoreResult<SetupCode> {
        engine!(self, store => store.create_setup_code(code, actor, remote_addr, now_ms).await)
    }

    /// Redeems the code whose token a connect presented, in one transaction: the code is marked used by
    /// the device, which is paired with every role the code carries and gets a token for each (the
    /// connecting role's first). Concurrent redemptions of one code are serialised: exactly one wins. A
    /// refusal (`Refusal::SetupCodeInvalid`, saying why) writes nothing.
    pub async fn redeem_setup_code(
        &self,
        redemption: &Redemption,
        actor: &Actor,
        now_ms: Millis,
    ) -> StoreResult<Redeemed> {
        engine!(self, store => store.redeem_setup_code(redemption, actor, now_ms).await)
    }

    /// Revokes an unused setup code; a used, revoked or expired one is refused, saying which.
    pub async fn revoke_setup_code(
        &self,
        setup_id: &str,
        actor: &Actor,
        remote_addr: Option<&str>,
        now_ms: Millis,
    ) -> StoreResult<SetupCode> {
        engine!(self, store => store.revoke_setup_code(setup_id, actor, remote_addr, now_ms).await)
    }

    /// The first fetch of an unused, unexpired join code marks it fetched and puts `fresh_token`'s digest
    /// in place of the code's (the token the fetch hands out; the one minted is spent); every other fetch
    /// gets `None`.
    pub async fn fetch_join_code(
        &self,
        join_digest: &TokenDigest,
        fresh_token: &TokenDigest,
        remote_addr: Option<&str>,
        now_ms: Millis,
    ) -> StoreResult<Option<SetupCode>> {
        engine!(self, store => store.fetch_join_code(join_digest, fresh_token, remote_addr, now_ms).await)
    }

    pub async fn setup_code(&self, setup_id: &str) -> StoreResult<Option<SetupCode>> {
        engine!(self, store => store.setup_code(setup_id).await)
    }

    /// Setup codes, newest first, at most `limit`.
    pub async fn setup_codes(&self, limit: i64) -> StoreResult<Vec<SetupCode>> {
        engine!(self, store => store.setup_codes(limit).await)
    }

    /// Forgets setup codes that expired more than `SETUP_CODE_RETENTION_MS` ago; returns how many.
    pub async fn purge_setup_codes(&self, now_ms: Millis) -> StoreResult<u64> {
        engine!(self, store => store.purge_setup_codes(now_ms).await)
    }

    /// Sets the operator's label of a device pairgate has approved before; it survives removal and
    /// re-pairing. `UnknownDevice` for a device never approved.
    pub async fn set_device_label(
        &self,
        device_id: &DeviceId,
        label: &str,
        actor: &Actor,
        remote_addr: Option<&str>,
        now_ms: Millis,
    ) -> StoreResult<()> {
        engine!(self, store => store.set_device_label(device_id, label, actor, remote_addr, now_ms).await)
    }

    /// A page of devices ordered by id, after `after` (keyset pagination).
    pub async fn devices_page(
        &self,
        filter: DeviceFilter,
        after: Option<&DeviceId>,
        limit: i64,
    ) -> StoreResult<Vec<DeviceRecord>> {
        engine!(self, store => store.devices_page(filter, after, limit).await)
    }

    pub async fn meta(&self, key: &str) -> StoreResult<Option<String>> {
        engine!(self, store => store.meta(key).await)
    }

    /// Stores the gateway token's hash unless one is already stored; returns whether it was stored,
    /// so two processes racing on first start cannot both write a token file.
    pub async fn init_gateway_token_hash(&self, phc: &str, actor: &Actor, now_ms: Millis) -> StoreResult<bool> {
        engine!(self, store => store.init_gateway_token_hash(phc, actor, now_ms).await)
    }

    /// Replaces the gateway token's hash (an operator made or set a new token), with its audit row.
    pub async fn replace_gateway_token_hash(&self, phc: &str, actor: &Actor, now_ms: Millis) -> StoreResult<()> {
        engine!(self, store => store.replace_gateway_token_hash(phc, actor, now_ms).await)
    }

    pub async fn gateway_token_hash(&self) -> StoreResult<Option<String>> {
        engine!(self, store => store.gateway_token_hash().await)
    }

    /// Records the ask of a refused connect, deduplicating and superseding per docs/protocol.md §4, in one
    /// transaction with its audit row.
    pub async fn record_pairing_request(
        &self,
        ask: &NewPairingRequest,
        actor: &Actor,
        now_ms: Millis,
    ) -> StoreResult<(PairingRequest, RequestOutcome)> {
        engine!(self, store => store.record_pairing_request(ask, actor, now_ms).await)
    }

    /// Approves a pending request: the device gets every role asked for, with the request's scopes, or
    /// with `narrower` ones (which must be among those asked for). The reply comes after the commit.
    ///
    /// Concurrent approvals are committed together (see `approvals`): one transaction and one fsync for
    /// all that queued while the previous group committed.
    pub async fn approve_request(
        &self,
        request_id: &str,
        narrower: Option<&ScopeSet>,
        actor: &Actor,
        now_ms: Millis,
    ) -> StoreResult<PairingRequest> {
        engine!(self, store => store.approve_request(request_id, narrower, actor, now_ms).await)
    }

    /// `approve_request`, its audit row naming where the decision came from.
    pub async fn approve_request_from(
        &self,
        request_id: &str,
        narrower: Option<&ScopeSet>,
        actor: &Actor,
        remote_addr: Option<&str>,
        now_ms: Millis,
    ) -> StoreResult<PairingRequest> {
        engine!(self, store => store.approve_request_from(request_id, narrower, actor, remote_addr, now_ms).await)
    }

    /// Rejects a pending request.
    pub async fn reject_request(&self, request_id: &str, actor: &Actor, now_ms: Millis) -> StoreResult<PairingRequest> {
        engine!(self, store => store.reject_request(request_id, actor, now_ms).await)
    }

    /// `reject_request`, its audit row naming where the decision came from.
    pub async fn reject_request_from(
        &self,
        request_id: &str,
        actor: &Actor,
        remote_addr: Option<&str>,
        now_ms: Millis,
    ) -> StoreResult<PairingRequest> {
        engine!(self, store => store.reject_request_from(request_id, actor, remote_addr, now_ms).await)
    }

    /// Expires pending requests whose time is up, and purges expired and superseded ones older than
    /// `DEAD_REQUEST_RETENTION_MS` (their story stays in the audit trail). Returns (request id, device id)
    /// of each expired one, so that its resolution can be announced.
    pub async fn expire_pending(&self, now_ms: Millis) -> StoreResult<Vec<(String, String)>> {
        engine!(self, store => store.expire_pending(now_ms).await)
    }

    pub async fn pairing_request(&self, request_id: &str) -> StoreResult<Option<PairingRequest>> {
        engine!(self, store => store.pairing_request(request_id).await)
    }

    /// A page of requests, newest first, older than the cursor `before` (a value of `RequestPage::next`);
    /// only those with `status` when given.
    pub async fn requests_page(
        &self,
        status: Option<RequestStatus>,
        before: Option<i64>,
        limit: i64,
    ) -> StoreResult<(Vec<PairingRequest>, Option<i64>)> {
        engine!(self, store => store.requests_page(status, before, limit).await)
    }

    /// How many requests are pending and not yet expired at `now_ms`.
    pub async fn pending_count(&self, now_ms: Millis) -> StoreResult<i64> {
        engine!(self, store => store.pending_count(now_ms).await)
    }

    /// Requests still pending and not yet expired at `now_ms`, oldest first.
    pub async fn pending_requests(&self, now_ms: Millis) -> StoreResult<Vec<PairingRequest>> {
        engine!(self, store => store.pending_requests(now_ms).await)
    }

    /// `sessions.patch`: creates or updates a session entry.
    pub async fn patch_session(
        &self,
        patch: &SessionPatch,
        actor: &Actor,
        now_ms: Millis,
    ) -> StoreResult<SessionEntry> {
        engine!(self, store => store.patch_session(patch, actor, now_ms).await)
    }

    pub async fn session(&self, key: &str) -> StoreResult<Option<SessionEntry>> {
        engine!(self, store => store.session(key).await)
    }

    /// Sessions by key after `after`, only children of `spawned_by` when given.
    pub async fn sessions_page(
        &self,
        spawned_by: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<SessionEntry>> {
        engine!(self, store => store.sessions_page(spawned_by, after, limit).await)
    }

    /// `sessions.delete`: removes a session and its runs. Refuses a main session, one with active runs,
    /// and one with child sessions (delete those first). Returns whether it existed.
    pub async fn delete_session(&self, key: &str, actor: &Actor, now_ms: Millis) -> StoreResult<bool> {
        engine!(self, store => store.delete_session(key, actor, now_ms).await)
    }

    /// Registers a spawn, checking every limit in the same transaction as the insert.
    pub async fn register_run(
        &self,
        new: &NewRun,
        limits: &SpawnLimits,
        actor: &Actor,
        now_ms: Millis,
    ) -> StoreResult<Run> {
        engine!(self, store => store.register_run(new, limits, actor, now_ms).await)
    }

    pub async fn start_run(&self, run_id: &str, actor: &Actor, now_ms: Millis) -> StoreResult<Run> {
        engine!(self, store => store.start_run(run_id, actor, now_ms).await)
    }

    /// Ends a running run with the backend's outcome.
    pub async fn end_run(
        &self,
        run_id: &str,
        end: RunEnd,
        error: Option<&str>,
        actor: &Actor,
        now_ms: Millis,
    ) -> StoreResult<Run> {
        engine!(self, store => store.end_run(run_id, end, error, actor, now_ms).await)
    }

    /// Kills a run and every active run below its child session; returns the killed runs.
    pub async fn kill_run(&self, run_id: &str, actor: &Actor, now_ms: Millis) -> StoreResult<Vec<Run>> {
        engine!(self, store => store.kill_run(run_id, actor, now_ms).await)
    }

    /// Runs whose server is gone end as interrupted (never silently dropped). On SQLite, called at
    /// start-up: every run left pending or running. On PostgreSQL, called periodically by the node holding
    /// its lease: the runs of nodes whose lease expired, and of no node; never a live node's.
    pub async fn recover_interrupted_runs(&self, now_ms: Millis) -> StoreResult<Vec<String>> {
        engine!(self, store => store.recover_interrupted_runs(now_ms).await)
    }

    /// Fails the runs registered before `registered_before_ms` that never started: a client that only
    /// registers cannot hold spawn slots for ever. Their waiters see `error`, reason `never-started`.
    pub async fn expire_unstarted_runs(
        &self,
        registered_before_ms: Millis,
        now_ms: Millis,
    ) -> StoreResult<Vec<String>> {
        engine!(self, store => store.expire_unstarted_runs(registered_before_ms, now_ms).await)
    }

    /// Archives the child sessions of ended `cleanup: delete` runs whose archive time has come.
    pub async fn archive_due_sessions(&self, now_ms: Millis) -> StoreResult<u64> {
        engine!(self, store => store.archive_due_sessions(now_ms).await)
    }

    pub async fn run(&self, run_id: &str) -> StoreResult<Option<Run>> {
        engine!(self, store => store.run(run_id).await)
    }

    /// Runs, newest first, optionally of one requester or child session and in one state.
    pub async fn runs_page(
        &self,
        requester: Option<&str>,
        child: Option<&str>,
        state: Option<RunState>,
        limit: i64,
    ) -> StoreResult<Vec<Run>> {
        engine!(self, store => store.runs_page(requester, child, state, limit).await)
    }

    /// Writes imported state in one transaction; with `dry_run`, rolls it back and only counts.
    pub async fn apply_import(
        &self,
        devices: &[ImportedDevice],
        requests: &[ImportedRequest],
        runs: &[Run],
        source: &str,
        dry_run: bool,
        now_ms: Millis,
    ) -> StoreResult<ImportCounts> {
        engine!(self, store => store.apply_import(devices, requests, runs, source, dry_run, now_ms).await)
    }

    /// Every row of every table, as one JSON document.
    pub async fn export_json(&self, now_ms: Millis) -> StoreResult<Value> {
        engine!(self, store => store.export_json(now_ms).await)
    }

    /// Loads an export into this database, which must hold no devices, requests, sessions, runs or
    /// audit events yet. One transaction: all or nothing. Every row must pass the rules live writes keep
    /// (known roles and scopes, a device id that is its key's); the target's gateway token hash is kept
    /// unless `replace_gateway_token`. Returns rows imported per table.
    pub async fn import_json(&self, export: &Value, replace_gateway_token: bool) -> StoreResult<Vec<(String, usize)>> {
        engine!(self, store => store.import_json(export, replace_gateway_token).await)
    }
}
