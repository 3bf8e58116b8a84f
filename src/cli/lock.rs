//! One `serve` per database file: a second one, or a restore, fails at once with a clear message, whatever
//! path or symlink names the file.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};

use crate::store::sibling_path;

/// Held for as long as a server uses the database.
pub struct ServerLock {
    _file: File,
}

/// The file's one name: symlinks, `..` and relative parts resolved (for a file not made yet, its
/// directory's), so that every name of one database takes the same lock.
fn canonical(db_path: &Path) -> PathBuf {
    if let Ok(path) = std::fs::canonicalize(db_path) {
        return path;
    }
    let parent = db_path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    match (std::fs::canonicalize(parent), db_path.file_name()) {
        (Ok(parent), Some(name)) => parent.join(name),
        _ => db_path.to_path_buf(),
    }
}

impl ServerLock {
    pub fn acquire(db_path: &Path) -> anyhow::Result<ServerLock> {
        let path = sibling_path(&canonical(db_path), ".lock");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_of_one_database_takes_the_same_lock() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("pairgate.db");
        std::fs::write(&real, b"").unwrap();
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let dotted = dir.path().join("sub/../pairgate.db");

        let held = ServerLock::acquire(&real).unwrap();
        for other in [&link, &dotted] {
            let error = ServerLock::acquire(other).err().expect("a second serve on the same file is refused");
            assert!(error.to_string().contains("another pairgate serve is running"), "{error}");
        }
        drop(held);
        ServerLock::acquire(&link).unwrap();
    }
}
