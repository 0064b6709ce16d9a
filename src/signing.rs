//! The control plane's Ed25519 key: it signs every event `flotilla up`
//! appends, and readers check events against its public key.
//!
//! The key is a file of 64 hex digits (the 32-byte secret), mode 0600; its
//! public key is the file beside it with `.pub` appended (64 hex digits).
//! `up` takes `--signing-key FILE` (`FLOTILLA_SIGNING_KEY_FILE`, config key
//! `signing_key`); on the embedded backend the default is `signing.key` in
//! the data dir. A key file that does not exist yet is generated, so the
//! first start of an embedded control plane signs without any set-up.
//! Readers take the public key from `audit --verify-key FILE`, or on the
//! embedded backend from the data dir. `flotilla signing-key FILE` makes a
//! key (and its `.pub`) ahead of time, with the same code.

use crate::config::BackendChoice;
use anyhow::{anyhow, Context, Result};
use flotilla_bus::{LogKeys, SigningKey, VerifyingKey};
use std::path::{Path, PathBuf};

/// The key file's name in an embedded data dir.
pub const KEY_FILE: &str = "signing.key";

/// Where the public key of the key at `key` is published.
pub fn public_key_path(key: &Path) -> PathBuf {
    let mut name = key.as_os_str().to_os_string();
    name.push(".pub");
    PathBuf::from(name)
}

/// The writer's keys for `choice`: the key file `explicit`, else the data
/// dir's on the embedded backend (generated when missing), else none (a NATS
/// control plane without a key signs nothing, and says so).
pub fn writer_keys(choice: &BackendChoice, explicit: Option<&Path>) -> Result<LogKeys> {
    let path = match (explicit, choice) {
        (Some(path), _) => path.to_path_buf(),
        (None, BackendChoice::Embedded(dir)) => dir.join(KEY_FILE),
        (None, BackendChoice::Nats(_)) => {
            tracing::warn!("no --signing-key: appended events are not signed, so `flotilla audit` cannot tell forged ones");
            return Ok(LogKeys::default());
        }
    };
    Ok(LogKeys::signer(load_or_generate(&path)?))
}

/// A reader's keys for `choice`: the public key file `explicit`, else the
/// data dir's on the embedded backend if there is one, else none.
pub fn reader_keys(choice: &BackendChoice, explicit: Option<&Path>) -> Result<LogKeys> {
    let path = match (explicit, choice) {
        (Some(path), _) => path.to_path_buf(),
        (None, BackendChoice::Embedded(dir)) => {
            let path = public_key_path(&dir.join(KEY_FILE));
            if !path.exists() {
                return Ok(LogKeys::default());
            }
            path
        }
        (None, BackendChoice::Nats(_)) => return Ok(LogKeys::default()),
    };
    let bytes = read_hex32(&path)?;
    let key = VerifyingKey::from_bytes(&bytes).map_err(|e| {
        anyhow!(
            "verify_key {}: not an Ed25519 public key: {e}",
            path.display()
        )
    })?;
    Ok(LogKeys::verifier(key))
}

/// Loads the key at `path`, or generates it there (0600) when there is
/// none, and publishes its public key beside it. An existing key is only
/// read, so it may sit on a read-only mount (a Kubernetes Secret, a
/// Compose volume mounted `:ro`); a public key that cannot be published
/// there is a warning, as readers can take it from `--verify-key`.
fn load_or_generate(path: &Path) -> Result<SigningKey> {
    let key = load_or_create(path)?;
    if let Err(e) = publish_public_key(path, &key) {
        tracing::warn!(error = %e, "cannot publish the signing key's public key beside it");
    }
    Ok(key)
}

/// The key at `path`, made there first when there is none.
pub(crate) fn load_or_create(path: &Path) -> Result<SigningKey> {
    if path.exists() {
        return Ok(SigningKey::from_bytes(&read_hex32(path)?));
    }
    match generate(path) {
        Ok(key) => Ok(key),
        // Made a moment ago by another replica.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok(SigningKey::from_bytes(&read_hex32(path)?))
        }
        Err(e) => Err(e).with_context(|| format!("signing_key: cannot create {}", path.display())),
    }
}

/// Writes the public key beside the key unless it is already there.
pub(crate) fn publish_public_key(path: &Path, key: &SigningKey) -> Result<()> {
    let public = public_key_path(path);
    let text = hex::encode(key.verifying_key().as_bytes());
    let current = std::fs::read_to_string(&public).ok();
    if current.as_deref().map(str::trim) == Some(text.as_str()) {
        return Ok(());
    }
    std::fs::write(&public, format!("{text}\n")).with_context(|| {
        format!(
            "signing_key: cannot write the public key {text} to {}",
            public.display()
        )
    })
}

/// Creates a new key file at `path` (never over an existing one).
fn generate(path: &Path) -> std::io::Result<SigningKey> {
    let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    crate::secret_file::write_new(path, &hex::encode(key.as_bytes()))?;
    tracing::info!(key = %path.display(), "generated the control plane's signing key");
    Ok(key)
}

fn read_hex32(path: &Path) -> Result<[u8; 32]> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("key file {}: cannot read", path.display()))?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut out)
        .map_err(|_| anyhow!("key file {}: expected 64 hex digits", path.display()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_embedded_data_dir_gets_a_private_key_and_its_public_key_on_first_use() {
        let dir = tempfile::tempdir().unwrap();
        let choice = BackendChoice::Embedded(dir.path().to_path_buf());
        assert!(reader_keys(&choice, None).unwrap().verifying().is_none());
        let first = writer_keys(&choice, None).unwrap();
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        let again = writer_keys(&choice, None).unwrap();
        assert_eq!(
            first.verifying(),
            again.verifying(),
            "the same key on restart"
        );
        let reader = reader_keys(&choice, None).unwrap();
        assert_eq!(reader.verifying(), first.verifying());
        assert!(reader.signing().is_none());
    }

    #[test]
    fn an_existing_key_is_only_read_so_a_read_only_mount_serves() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let made = load_or_generate(&path).unwrap();
        // Nothing is created, renamed or removed beside an existing key (a
        // read-only mount refuses all of that, even to root).
        let before = std::fs::metadata(dir.path()).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let read = load_or_generate(&path).unwrap();
        assert_eq!(read.verifying_key(), made.verifying_key());
        let after = std::fs::metadata(dir.path()).unwrap().modified().unwrap();
        assert_eq!(before, after, "the key's directory was written");
    }

    #[test]
    fn a_public_key_that_cannot_be_published_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let made = load_or_generate(&path).unwrap();
        let public = public_key_path(&path);
        std::fs::remove_file(&public).unwrap();
        // Nothing can be written where the public key goes.
        std::fs::create_dir(&public).unwrap();
        let read = load_or_generate(&path).unwrap();
        assert_eq!(read.verifying_key(), made.verifying_key());
    }
}
