//! The files pairgate writes beside its database, and how: every one of them private (`0600`), created
//! anew, never through a symlink, never inheriting an existing file's mode.

use std::fs::File;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The file named like the database file plus `suffix`, beside it: SQLite's `-wal` and `-shm`, the lock,
/// the token file, backups. The one place such names are made.
pub fn sibling_path(db_path: &Path, suffix: &str) -> PathBuf {
    let mut name = db_path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Removes the database file and SQLite's `-wal` and `-shm` beside it.
pub fn remove_database_files(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(sibling_path(path, suffix));
    }
}

/// Creates `path` for writing, `0600` whatever the umask. Refuses an existing file or symlink (`O_EXCL`), so
/// neither a planted link nor an old file's mode can leak what is written.
pub fn create_private(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)
}

/// Makes a file that something else created (SQLite's `VACUUM INTO`, say) private.
pub fn make_private(path: &Path) -> io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_are_0600_and_never_follow_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        drop(create_private(&path).unwrap());
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(create_private(&path).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        let target = dir.path().join("target");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(create_private(&link).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        assert!(!target.exists(), "nothing was written through the link");
    }
}
