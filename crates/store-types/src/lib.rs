//! What every pairgate store engine speaks: the records a change takes and returns, the errors, and the
//! store's metrics. The engines (`pairgate-store-sqlite`, the only SQL) implement the store over these
//! types; everything above the store names only them.

pub mod approvals;
mod audit;
mod devices;
pub mod files;
mod imports;
mod requests;
pub mod rows;
mod sessions;
mod setup;
pub mod transfer;

pub use audit::{Actor, AuditEvent, AuditFilter, AuditRow, AuthFailureCount, AuthFailuresElsewhere, OwnEvents};
pub use devices::{DeviceFilter, NewGrant, SeenNote, TokenChange};
pub use imports::{ImportCounts, ImportedDevice, ImportedRequest};
pub use requests::{NewPairingRequest, PairingRequest, RequestOutcome};
pub use sessions::{ARCHIVE_AFTER_MS, NewRun, Run, RunEnd, SessionEntry, SessionPatch, SpawnLimits};
pub use setup::{
    HandedOff, MAX_UNUSED_SETUP_CODES, NewSetupCode, Redeemed, Redemption, SETUP_CODE_RETENTION_MS, SetupCode,
    SetupRow, clean_label, settles_request,
};

use std::path::PathBuf;

use pairgate_domain::Refusal;

/// What can go wrong in the store once it is open. A [`Refusal`] is an outcome the caller branches on;
/// every other variant is a failure of the store itself.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("the database is busy (another process holds a write lock); try again")]
    Busy,
    /// Something this engine does not do, and what to do instead.
    #[error("{0}")]
    Unsupported(String),
    #[error("the store is shutting down; nothing was recorded")]
    ShuttingDown,
    #[error("constraint violated: {0}")]
    Constraint(String),
    #[error("stored data is invalid: {0}")]
    InvalidData(String),
    /// An export that `import --format json` cannot load, and why.
    #[error("{0}")]
    BadImport(String),
    #[error("{} exists already; choose another file", .0.display())]
    TargetExists(PathBuf),
    #[error("{} is not a UTF-8 path", .0.display())]
    PathNotUtf8(PathBuf),
    #[error("database error: {0}")]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &error {
            use sqlx::error::ErrorKind;
            match db.kind() {
                ErrorKind::UniqueViolation
                | ErrorKind::ForeignKeyViolation
                | ErrorKind::CheckViolation
                | ErrorKind::NotNullViolation => return StoreError::Constraint(db.message().to_owned()),
                _ => {}
            }
        }
        let busy = error.as_database_error().and_then(|db| db.code()).is_some_and(|code| is_busy_code(&code));
        if busy { StoreError::Busy } else { StoreError::Database(error) }
    }
}

/// Whether a database error code means "try again": another writer holds the lock, or the engine gave
/// this transaction up to let another go on. SQLite's codes are its numeric result codes (the primary
/// code is the low byte: 5 `SQLITE_BUSY`, 6 `SQLITE_LOCKED`); PostgreSQL's are five-character SQLSTATEs
/// (`40001` serialization failure, `40P01` deadlock, `55P03` lock not available).
fn is_busy_code(code: &str) -> bool {
    if code.len() == 5 {
        return matches!(code, "40001" | "40P01" | "55P03");
    }
    code.parse::<i32>().is_ok_and(|code| matches!(code & 0xff, 5 | 6))
}

impl StoreError {
    /// The refusal, when this is one.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            StoreError::Refused(refusal) => Some(refusal),
            _ => None,
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;
/// The store's own metrics, registered by the gateway's registry.
pub struct StoreMetrics {
    pub write_latency: prometheus_client::metrics::histogram::Histogram,
    pub device_cache_hits: prometheus_client::metrics::counter::Counter,
    pub device_cache_misses: prometheus_client::metrics::counter::Counter,
    pub approval_commits: prometheus_client::metrics::counter::Counter,
}

/// One row of `_sqlx_migrations`, checked against the embedded migrations.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppliedMigration {
    pub version: i64,
    pub description: String,
    pub checksum: String,
    pub success: bool,
    pub checksum_matches: bool,
    /// Applied in an earlier form that was replaced in place (see [`SUPERSEDED_MIGRATIONS`]); the next
    /// upgrade reconciles it.
    pub earlier_form: bool,
}

/// Device records kept between commits (about half a kilobyte each), unless set otherwise.
pub const DEVICE_CACHE_CAPACITY: usize = 10_000;

/// Buckets from 50 µs to ~1.6 s.
pub fn latency_histogram() -> prometheus_client::metrics::histogram::Histogram {
    use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// Maps an empty update to the refusal `refused` makes.
pub fn expect_one(rows_affected: u64, refused: impl FnOnce() -> Refusal) -> StoreResult<()> {
    if rows_affected == 0 { Err(StoreError::Refused(refused())) } else { Ok(()) }
}

/// Whether a URL carries a password, in its user information or a `password=` parameter (a text that does
/// not parse as a URL is taken to, as it may hide one anywhere).
pub fn url_has_password(text: &str) -> bool {
    match url::Url::parse(text) {
        Ok(url) => url.password().is_some() || url.query_pairs().any(|(key, _)| key.eq_ignore_ascii_case("password")),
        Err(_) => true,
    }
}

/// The URL with any password (in its user information or a `password=` parameter) shown as `***`.
pub fn redact_url(text: &str) -> String {
    let Ok(mut url) = url::Url::parse(text) else {
        // Not parseable: show the scheme alone, as anything after it may be a secret.
        let scheme = text.split(':').next().unwrap_or("");
        return format!("{scheme}://***");
    };
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    let pairs: Vec<(String, String)> = url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    if pairs.iter().any(|(key, _)| key.eq_ignore_ascii_case("password")) {
        let mut query = url.query_pairs_mut();
        query.clear();
        for (key, value) in &pairs {
            let value = if key.eq_ignore_ascii_case("password") { "***" } else { value };
            query.append_pair(key, value);
        }
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_codes_of_both_engines() {
        for (code, busy) in [
            ("5", true),
            ("6", true),
            ("517", true),   // SQLITE_BUSY_SNAPSHOT
            ("262", true),   // SQLITE_LOCKED_SHAREDCACHE
            ("19", false),   // SQLITE_CONSTRAINT
            ("2067", false), // SQLITE_CONSTRAINT_UNIQUE
            ("11", false),
            ("40001", true),
            ("40P01", true),
            ("55P03", true),
            ("23505", false), // unique_violation
            ("57P01", false), // admin_shutdown
            ("08006", false),
        ] {
            assert_eq!(is_busy_code(code), busy, "{code}");
        }
    }
}
