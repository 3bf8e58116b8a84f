//! One `serve` per database: a second one, or a restore, fails at once with a clear message.

use std::fs::{File, TryLockError};
use std::path::Path;

use crate::store::sibling_path;

/// Held for as long as a server uses the database.
pub struct ServerLock {
    _file: File,
}

impl ServerLock {
    pub fn acquire(db_path: &Path) -> anyhow::Result<ServerLock> {
        let path = sibling_path(db_path, ".lock");
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let file = File::options().create(true).truncate(false).write(true).open(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(ServerLock { _file: file }),
            Err(TryLockError::WouldBlock) => anyhow::bail!(
                "another pairgate serve is running on {} (lock {} is held); stop it first",
                db_path.display(),
                path.display()
            ),
            Err(TryLockError::Error(error)) => Err(error.into()),
        }
    }
}
