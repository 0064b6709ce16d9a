//! Files only their owner may read (mode 0600), written so that a crash
//! never leaves half of one: the bytes go to a file aside, are synced, and
//! only then take the real name. Signing keys, nkey seeds, the route
//! password and a `nats-server.conf` holding it are written with these.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Writes `text` and a newline as a new secret file at `path`, never over
/// an existing file (`AlreadyExists` then): written aside, synced and
/// linked into place.
pub(crate) fn write_new(path: &Path, text: &str) -> std::io::Result<()> {
    let aside = write_aside(path, format!("{text}\n").as_bytes())?;
    let linked = std::fs::hard_link(&aside, path);
    let _ = std::fs::remove_file(&aside);
    linked
}

/// Writes `bytes` as the file at `path`, readable by its owner only,
/// replacing whatever was there in one step (written aside, synced and
/// renamed over it), so a reader sees the old file or the new one whole.
pub(crate) fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let aside = write_aside(path, bytes)?;
    if let Err(e) = std::fs::rename(&aside, path) {
        let _ = std::fs::remove_file(&aside);
        return Err(e);
    }
    // The rename itself is durable once the directory is synced.
    if let Some(dir) = parent(path) {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

fn parent(path: &Path) -> Option<&Path> {
    path.parent().filter(|d| !d.as_os_str().is_empty())
}

/// Writes `bytes` durably to a new private file beside `path` (its
/// directory created if need be) and returns the file's path.
fn write_aside(path: &Path, bytes: &[u8]) -> std::io::Result<PathBuf> {
    if let Some(dir) = parent(path) {
        std::fs::create_dir_all(dir)?;
    }
    let mut aside = path.as_os_str().to_os_string();
    aside.push(format!(".{}.tmp", uuid::Uuid::new_v4()));
    let aside = PathBuf::from(aside);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&aside)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        });
    match written {
        Ok(()) => Ok(aside),
        Err(e) => {
            let _ = std::fs::remove_file(&aside);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_secret_is_private_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("seed");
        write_new(&path, "one").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\n");
        assert_eq!(mode(&path), 0o600);
        let e = write_new(&path, "two").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\n");
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }

    #[test]
    fn a_replaced_file_is_private_and_leaves_nothing_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nats-server.conf");
        std::fs::write(&path, "old, world-readable").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        replace(&path, b"new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
