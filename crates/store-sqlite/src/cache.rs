//! Device records for the connect path, kept while the database has not changed.
//!
//! Every commit to a WAL database, by this process, by the offline CLI or by anything else, rewrites the
//! WAL-index header at the start of the `-shm` file: its change counter, frame count, checksums and (after
//! a checkpoint restarts the log) salts. That layout is part of SQLite's file format, shared between
//! processes running different SQLite versions (<https://www.sqlite.org/walformat.html>). Reading the header
//! is one `pread`; while it is unchanged no transaction has committed, so a record read after it was last
//! seen is still current. Any change empties the cache.
//!
//! SQLite writes the header twice (copy 2, a barrier, then copy 1) and its readers trust it only when the
//! copies agree; so does this cache. When they differ, or the file cannot be read, the cache is bypassed
//! for that lookup and the database answers.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use prometheus_client::metrics::counter::Counter;

use pairgate_domain::DeviceId;
use pairgate_domain::DeviceRecord;

/// A lookup and the newest audit event id its read saw.
pub(super) type Marked = (Option<DeviceRecord>, i64);

/// One copy of the WAL-index header (`WalIndexHdr`).
const HEADER_COPY: usize = 48;

/// The state of the database a lookup was made at.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp([u8; HEADER_COPY]);

pub(super) struct DeviceCache {
    shm: Option<std::fs::File>,
    capacity: AtomicUsize,
    entries: Mutex<Entries>,
    pub(super) hits: Counter,
    pub(super) misses: Counter,
}

struct Entries {
    stamp: Option<Stamp>,
    /// `None` caches "never approved" as well, for clients that keep asking; each with the audit mark of
    /// the read that found it.
    records: HashMap<DeviceId, Marked>,
}

impl std::fmt::Debug for DeviceCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCache")
            .field("enabled", &self.shm.is_some())
            .field("capacity", &self.capacity.load(Ordering::Relaxed))
            .finish()
    }
}

impl DeviceCache {
    /// A cache for the database at `db_path`, which must be open in WAL mode (so its `-shm` file exists).
    /// Without a readable `-shm` file the cache stays empty and every lookup goes to the database.
    pub(super) fn new(db_path: &Path, capacity: usize) -> Self {
        let shm_path = super::sibling_path(db_path, "-shm");
        let shm = match std::fs::File::open(&shm_path) {
            Ok(file) => Some(file),
            Err(error) => {
                tracing::warn!(%error, path = %Path::new(&shm_path).display(), "device cache disabled");
                None
            }
        };
        DeviceCache {
            shm,
            capacity: AtomicUsize::new(capacity),
            entries: Mutex::new(Entries { stamp: None, records: HashMap::new() }),
            hits: Counter::default(),
            misses: Counter::default(),
        }
    }

    /// At most `capacity` records are kept; 0 turns the cache off.
    pub(super) fn set_capacity(&self, capacity: usize) {
        self.capacity.store(capacity, Ordering::Relaxed);
        self.entries.lock().expect("device cache lock").records.clear();
    }

    /// The database's current state, or `None` when it cannot be told (a commit is being published).
    /// Read it before the database: a record read afterwards is at least as new as the stamp.
    pub(super) fn stamp(&self) -> Option<Stamp> {
        let mut both = [0u8; 2 * HEADER_COPY];
        self.shm.as_ref()?.read_exact_at(&mut both, 0).ok()?;
        let (first, second) = both.split_at(HEADER_COPY);
        (first == second).then(|| Stamp(first.try_into().expect("48 bytes")))
    }

    /// The cached lookup of `device_id` made at `stamp`; empties the cache when the database has moved on.
    pub(super) fn get(&self, stamp: Stamp, device_id: &DeviceId) -> Option<Marked> {
        let mut entries = self.entries.lock().expect("device cache lock");
        if entries.stamp != Some(stamp) {
            entries.stamp = Some(stamp);
            entries.records.clear();
        }
        let hit = entries.records.get(device_id).cloned();
        drop(entries);
        match hit {
            Some(_) => self.hits.inc(),
            None => self.misses.inc(),
        };
        hit
    }

    /// Keeps a lookup read after `stamp` was taken, unless the database has moved on meanwhile.
    pub(super) fn put(&self, stamp: Stamp, device_id: &DeviceId, record: &Marked) {
        let mut entries = self.entries.lock().expect("device cache lock");
        if entries.stamp == Some(stamp) && entries.records.len() < self.capacity.load(Ordering::Relaxed) {
            entries.records.insert(device_id.clone(), record.clone());
        }
    }
}
