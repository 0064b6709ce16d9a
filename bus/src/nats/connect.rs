//! How a NATS connection proves who it is and encrypts: [`NatsAuth`], the
//! settings (a `.creds` file, an nkey seed file, a user and password, a
//! token, a CA file, a client certificate and key), and [`LoadedAuth`],
//! what they name once read and checked, applied to every connection
//! attempt of [`super::NatsBus::connect_with`].
//!
//! Every file is read and checked before connecting, so a missing file or
//! a bad seed fails at once with a [`NatsAuthError`] that names the setting
//! (`nats_nkey: /path: not a valid nkey seed`). Secrets (passwords, tokens,
//! seeds) never appear in an error, a log line or a `Debug` output: errors
//! name the file or the variable they came from, never what it holds.
//! The CLI (`src/cli.rs`, `src/config.rs`) fills [`NatsAuth`] from flags,
//! `FLOTILLA_NATS_*` variables and the config file.
//!
//! A connection with an nkey (a seed file or a `.creds` file) takes its
//! replies on [`inbox_prefix`]`(its public key)`, so a server's permissions
//! can let each user hear only its own replies (`flotilla nats-config`
//! does), not everyone's `_INBOX.>`.

use async_nats::ConnectOptions;
use nkeys::KeyPair;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a secret (a password, a token) comes from: a file, or an
/// environment variable whose value the caller read. Never a flag value,
/// which would show in `ps`.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file holding the secret (surrounding whitespace is ignored).
    File {
        /// The setting that named the file (e.g. `nats_password_file`).
        setting: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// The value of an environment variable.
    Env {
        /// The variable (e.g. `FLOTILLA_NATS_PASSWORD`).
        var: &'static str,
        /// Its value.
        value: String,
    },
}

impl fmt::Debug for SecretSource {
    // The value of a variable is a secret: only where it came from is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin())
    }
}

impl SecretSource {
    /// Where the secret comes from, for messages: `nats_password_file
    /// /run/secrets/pw` or `FLOTILLA_NATS_PASSWORD`.
    pub fn origin(&self) -> String {
        match self {
            SecretSource::File { setting, path } => format!("{setting} {}", path.display()),
            SecretSource::Env { var, .. } => var.to_string(),
        }
    }

    /// The secret, read and trimmed; an empty one is an error.
    fn read(&self) -> Result<String, NatsAuthError> {
        let (setting, value) = match self {
            SecretSource::File { setting, path } => (*setting, read_text(setting, path)?),
            SecretSource::Env { var, value } => (*var, value.clone()),
        };
        let value = value.trim().to_string();
        if value.is_empty() {
            return Err(NatsAuthError::Empty {
                setting,
                origin: self.origin(),
            });
        }
        Ok(value)
    }
}

/// The NATS credential and TLS settings of one process; all optional. At
/// most one credential (creds, nkey, user and password, token) may be set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsAuth {
    /// A `.creds` file: a user JWT and its nkey seed (`nats_creds`).
    pub creds_file: Option<PathBuf>,
    /// A file holding a user nkey seed, `SU…` (`nats_nkey`).
    pub nkey_file: Option<PathBuf>,
    /// The user name for a password (`nats_user`).
    pub user: Option<String>,
    /// The user's password.
    pub password: Option<SecretSource>,
    /// A token.
    pub token: Option<SecretSource>,
    /// A PEM file of the CA certificates that sign the server's (`nats_ca`).
    pub ca_file: Option<PathBuf>,
    /// A PEM client certificate for mutual TLS (`nats_cert`).
    pub client_cert: Option<PathBuf>,
    /// The PEM private key of `client_cert` (`nats_key`).
    pub client_key: Option<PathBuf>,
}

/// A NATS setting that cannot be used; the message names the setting.
#[derive(Debug, thiserror::Error)]
pub enum NatsAuthError {
    /// A named file cannot be read.
    #[error("{setting}: cannot read {}: {error}", path.display())]
    Read {
        /// The setting (`nats_ca`, …).
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// Why (in the message, so not a `source`).
        error: std::io::Error,
    },
    /// A file was read but does not hold what the setting needs.
    #[error("{setting}: {}: {what}", path.display())]
    Invalid {
        /// The setting.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong, never the file's content.
        what: String,
    },
    /// A secret is empty.
    #[error("{setting}: {origin} is empty")]
    Empty {
        /// The setting or variable.
        setting: &'static str,
        /// Where it came from.
        origin: String,
    },
    /// Settings that do not go together, or one missing its partner.
    #[error("{setting}: {what}")]
    Conflict {
        /// The setting at fault.
        setting: &'static str,
        /// What to change.
        what: String,
    },
}

/// The credential a connection presents, read and checked.
#[derive(Clone)]
enum Credential {
    None,
    /// A `.creds` file's user JWT and the key that signs the server's nonce.
    Creds(String, Arc<KeyPair>),
    Nkey(String),
    UserAndPassword(String, String),
    Token(String),
}

/// [`NatsAuth`] read and checked: what every connection attempt applies.
/// Holds secrets, so its `Debug` shows only where they came from.
#[derive(Clone)]
pub struct LoadedAuth {
    credential: Credential,
    /// Where replies arrive: [`inbox_prefix`] of the nkey, if there is one.
    inbox: Option<String>,
    /// Which credential, for errors: `nats_nkey /path (public key U…)`.
    described: String,
    ca_file: Option<PathBuf>,
    client: Option<(PathBuf, PathBuf)>,
}

impl fmt::Debug for LoadedAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedAuth")
            .field("credential", &self.described)
            .field("ca_file", &self.ca_file)
            .field("client", &self.client)
            .finish()
    }
}

impl LoadedAuth {
    /// The nkey seed (`SU…`) of this connection's identity, from the nkey
    /// seed file or the `.creds` file: what a client signs its commands
    /// with, so that the control plane records them under its name.
    pub fn nkey_seed(&self) -> Option<String> {
        match &self.credential {
            Credential::Nkey(seed) => Some(seed.clone()),
            Credential::Creds(_, key) => key.seed().ok(),
            Credential::None | Credential::UserAndPassword(..) | Credential::Token(_) => None,
        }
    }
}

impl NatsAuth {
    /// Reads and checks every file and secret, before any connection.
    pub fn load(&self) -> Result<LoadedAuth, NatsAuthError> {
        let (credential, described, public_key) = self.credential()?;
        let inbox = public_key.as_deref().map(inbox_prefix);
        if let Some(ca) = &self.ca_file {
            check_certificates("nats_ca", ca)?;
        }
        let client = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                check_certificates("nats_cert", cert)?;
                check_private_key("nats_key", key)?;
                Some((cert.clone(), key.clone()))
            }
            (Some(_), None) => {
                return Err(conflict("nats_cert", "needs nats_key (its private key)"))
            }
            (None, Some(_)) => {
                return Err(conflict("nats_key", "needs nats_cert (its certificate)"))
            }
            (None, None) => None,
        };
        Ok(LoadedAuth {
            credential,
            inbox,
            described,
            ca_file: self.ca_file.clone(),
            client,
        })
    }

    /// The one credential set, read: what it is, how to name it in errors,
    /// and its public nkey if it has one.
    fn credential(&self) -> Result<(Credential, String, Option<String>), NatsAuthError> {
        self.at_most_one_credential()?;
        if let Some(path) = &self.creds_file {
            let (jwt, key) = load_creds(path)?;
            let public = key.public_key();
            let described = format!("nats_creds {} (public key {public})", path.display());
            return Ok((
                Credential::Creds(jwt, Arc::new(key)),
                described,
                Some(public),
            ));
        }
        if let Some(path) = &self.nkey_file {
            let key = load_nkey_seed("nats_nkey", path)?;
            let seed = key
                .seed()
                .map_err(|e| invalid("nats_nkey", path, e.to_string()))?;
            let public = key.public_key();
            let described = format!("nats_nkey {} (public key {public})", path.display());
            return Ok((Credential::Nkey(seed), described, Some(public)));
        }
        if let Some((credential, described)) = self.user_and_password()? {
            return Ok((credential, described, None));
        }
        if let Some(token) = &self.token {
            return Ok((Credential::Token(token.read()?), token.origin(), None));
        }
        let described = "a connection without credentials (set nats_creds, nats_nkey, \
                         nats_user with a password, or nats_token_file)";
        Ok((Credential::None, described.to_string(), None))
    }

    /// A connection presents one credential: two set is a mistake.
    fn at_most_one_credential(&self) -> Result<(), NatsAuthError> {
        let set: Vec<&str> = [
            self.creds_file.as_ref().map(|_| "nats_creds"),
            self.nkey_file.as_ref().map(|_| "nats_nkey"),
            (self.user.is_some() || self.password.is_some()).then_some("nats_user"),
            self.token.as_ref().map(|_| "nats_token_file"),
        ]
        .into_iter()
        .flatten()
        .collect();
        match set.as_slice() {
            [first, second, ..] => Err(conflict(
                second,
                &format!("cannot be combined with {first}; set one credential"),
            )),
            _ => Ok(()),
        }
    }

    /// The user and its password, both or neither.
    fn user_and_password(&self) -> Result<Option<(Credential, String)>, NatsAuthError> {
        match (&self.user, &self.password) {
            (Some(user), Some(password)) => {
                let pass = password.read()?;
                let described = format!("nats_user {user} with {}", password.origin());
                Ok(Some((
                    Credential::UserAndPassword(user.clone(), pass),
                    described,
                )))
            }
            (Some(_), None) => Err(conflict(
                "nats_user",
                "needs a password: nats_password_file or FLOTILLA_NATS_PASSWORD",
            )),
            (None, Some(password)) => Err(conflict(
                "nats_user",
                &format!("{} is set but no user is", password.origin()),
            )),
            (None, None) => Ok(None),
        }
    }
}

impl LoadedAuth {
    /// Which credential this presents, for errors and logs (never the
    /// secret): e.g. `nats_nkey /etc/flotilla/n1.nk (public key U…)`.
    pub fn described(&self) -> &str {
        &self.described
    }

    /// Whether a credential is set.
    pub fn has_credential(&self) -> bool {
        !matches!(self.credential, Credential::None)
    }

    /// Whether TLS is asked for (a CA file or a client certificate).
    pub fn wants_tls(&self) -> bool {
        self.ca_file.is_some() || self.client.is_some()
    }

    /// `options` with this credential and TLS settings.
    pub fn apply(&self, options: ConnectOptions) -> ConnectOptions {
        let mut options = match &self.credential {
            Credential::None => options,
            Credential::Creds(jwt, key) => {
                let key = key.clone();
                options.jwt(jwt.clone(), move |nonce| {
                    let key = key.clone();
                    async move { key.sign(&nonce).map_err(async_nats::AuthError::new) }
                })
            }
            Credential::Nkey(seed) => options.nkey(seed.clone()),
            Credential::UserAndPassword(user, pass) => {
                options.user_and_password(user.clone(), pass.clone())
            }
            Credential::Token(token) => options.token(token.clone()),
        };
        if let Some(inbox) = &self.inbox {
            options = options.custom_inbox_prefix(inbox);
        }
        if let Some(ca) = &self.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.client {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        // A CA or a client certificate means the server must speak TLS:
        // never fall back to plain text.
        options.require_tls(self.wants_tls())
    }
}

/// The prefix of the reply subjects of the user with nkey `public_key`:
/// `_INBOX.<public key>` (a connection's inboxes are `<prefix>.<id>…`), so
/// permitting `_INBOX.<public key>.>` lets a user hear its own replies only.
pub fn inbox_prefix(public_key: &str) -> String {
    format!("_INBOX.{public_key}")
}

/// Reads the nkey seed in `path` (the `nats_nkey` file, or any seed file
/// named by `setting`): the first line that is a seed, so both a bare seed
/// and a decorated one (`-----BEGIN USER NKEY SEED-----`) work. The seed
/// never appears in the error.
pub fn load_nkey_seed(setting: &'static str, path: &Path) -> Result<KeyPair, NatsAuthError> {
    let text = read_text(setting, path)?;
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with('S') && !l.contains(char::is_whitespace))
        .ok_or_else(|| {
            invalid(
                setting,
                path,
                "not a valid nkey seed (no line starts with S)",
            )
        })?;
    let key =
        KeyPair::from_seed(line).map_err(|_| invalid(setting, path, "not a valid nkey seed"))?;
    if !key.public_key().starts_with('U') {
        return Err(invalid(
            setting,
            path,
            "not a user nkey seed (expected SU…, from `nk -gen user` or `flotilla nats-config`)",
        ));
    }
    Ok(key)
}

/// A `.creds` file's two blocks: the user JWT (between `-----BEGIN NATS
/// USER JWT-----` and its end line) and the user's nkey seed (the next
/// block), as `nsc` writes them.
fn load_creds(path: &Path) -> Result<(String, KeyPair), NatsAuthError> {
    let text = read_text("nats_creds", path)?;
    let mut blocks = Vec::new();
    let mut inside: Option<Vec<&str>> = None;
    for line in text.lines().map(str::trim) {
        let fence = line.starts_with("---") && line.ends_with("---");
        match (&mut inside, fence) {
            (None, true) => inside = Some(Vec::new()),
            (Some(lines), true) => {
                blocks.push(lines.concat());
                inside = None;
            }
            (Some(lines), false) => lines.push(line),
            (None, false) => {}
        }
    }
    let mut blocks = blocks.into_iter();
    let bad = |what: &str| {
        invalid(
            "nats_creds",
            path,
            format!("not a valid .creds file: {what}"),
        )
    };
    let jwt = blocks
        .next()
        .filter(|jwt| jwt.split('.').count() == 3)
        .ok_or_else(|| bad("no user JWT block"))?;
    let seed = blocks.next().ok_or_else(|| bad("no nkey seed block"))?;
    let key = KeyPair::from_seed(&seed).map_err(|_| bad("its nkey seed is not valid"))?;
    Ok((jwt, key))
}

fn read_text(setting: &'static str, path: &Path) -> Result<String, NatsAuthError> {
    std::fs::read_to_string(path).map_err(|error| NatsAuthError::Read {
        setting,
        path: path.to_path_buf(),
        error,
    })
}

fn read_bytes(setting: &'static str, path: &Path) -> Result<Vec<u8>, NatsAuthError> {
    std::fs::read(path).map_err(|error| NatsAuthError::Read {
        setting,
        path: path.to_path_buf(),
        error,
    })
}

/// At least one PEM certificate in `path`.
fn check_certificates(setting: &'static str, path: &Path) -> Result<(), NatsAuthError> {
    let pem = read_bytes(setting, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(setting, path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(
            setting,
            path,
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(())
}

/// A PEM private key in `path`.
fn check_private_key(setting: &'static str, path: &Path) -> Result<(), NatsAuthError> {
    let pem = read_bytes(setting, path)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map(drop)
        .map_err(|_| invalid(setting, path, "holds no PEM private key"))
}

fn invalid(setting: &'static str, path: &Path, what: impl Into<String>) -> NatsAuthError {
    NatsAuthError::Invalid {
        setting,
        path: path.to_path_buf(),
        what: what.into(),
    }
}

fn conflict(setting: &'static str, what: &str) -> NatsAuthError {
    NatsAuthError::Conflict {
        setting,
        what: what.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_seed_file_loads_bare_or_decorated_and_a_bad_one_names_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::new_user();
        let seed = key.seed().unwrap();
        let bare = file(&dir, "bare.nk", &format!("{seed}\n"));
        let decorated = file(
            &dir,
            "dec.nk",
            &format!("-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"),
        );
        for path in [&bare, &decorated] {
            assert_eq!(
                load_nkey_seed("nats_nkey", path).unwrap().public_key(),
                key.public_key()
            );
        }
        let bad = file(&dir, "bad.nk", "SUNOTASEED\n");
        let e = load_nkey_seed("nats_nkey", &bad).unwrap_err().to_string();
        assert!(e.starts_with("nats_nkey: "), "{e}");
        assert!(
            e.contains("not a valid nkey seed") && !e.contains("SUNOTASEED"),
            "{e}"
        );
        let account = file(&dir, "acct.nk", &KeyPair::new_account().seed().unwrap());
        let e = load_nkey_seed("nats_nkey", &account)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a user nkey seed"), "{e}");
        let e = load_nkey_seed("nats_nkey", &dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("nats_nkey: cannot read "), "{e}");
    }

    #[test]
    fn settings_are_checked_before_connecting_and_secrets_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let both = NatsAuth {
            nkey_file: Some(file(&dir, "k", "x")),
            token: Some(SecretSource::Env {
                var: "FLOTILLA_NATS_TOKEN",
                value: "hunter2".into(),
            }),
            ..NatsAuth::default()
        };
        let e = both.load().unwrap_err().to_string();
        assert!(
            e.contains("nats_token_file: cannot be combined with nats_nkey"),
            "{e}"
        );
        assert!(!format!("{both:?}").contains("hunter2"));

        let user_only = NatsAuth {
            user: Some("alice".into()),
            ..NatsAuth::default()
        };
        let e = user_only.load().unwrap_err().to_string();
        assert!(e.starts_with("nats_user: needs a password"), "{e}");

        let empty = NatsAuth {
            token: Some(SecretSource::File {
                setting: "nats_token_file",
                path: file(&dir, "t", "  \n"),
            }),
            ..NatsAuth::default()
        };
        let e = empty.load().unwrap_err().to_string();
        assert!(
            e.starts_with("nats_token_file: nats_token_file ") && e.ends_with("is empty"),
            "{e}"
        );

        let ca = NatsAuth {
            ca_file: Some(file(&dir, "ca.pem", "not pem")),
            ..NatsAuth::default()
        };
        let e = ca.load().unwrap_err().to_string();
        assert!(
            e.starts_with("nats_ca: ") && e.contains("holds no PEM certificate"),
            "{e}"
        );
        let e = NatsAuth {
            ca_file: Some(dir.path().join("nope.pem")),
            ..NatsAuth::default()
        }
        .load()
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("nats_ca: cannot read "), "{e}");

        let creds = NatsAuth {
            creds_file: Some(file(&dir, "u.creds", "-----BEGIN NATS USER JWT-----\n")),
            ..NatsAuth::default()
        };
        let e = creds.load().unwrap_err().to_string();
        assert!(
            e.starts_with("nats_creds: ") && e.contains("not a valid .creds file"),
            "{e}"
        );

        let half = NatsAuth {
            client_cert: Some(file(&dir, "c.pem", "x")),
            ..NatsAuth::default()
        };
        let e = half.load().unwrap_err().to_string();
        assert!(e.starts_with("nats_cert: needs nats_key"), "{e}");
    }

    #[test]
    fn the_loaded_credential_names_its_origin_not_its_value() {
        let dir = tempfile::tempdir().unwrap();
        let auth = NatsAuth {
            user: Some("alice".into()),
            password: Some(SecretSource::File {
                setting: "nats_password_file",
                path: file(&dir, "pw", "s3cret\n"),
            }),
            ..NatsAuth::default()
        };
        let loaded = auth.load().unwrap();
        assert!(loaded
            .described()
            .starts_with("nats_user alice with nats_password_file "));
        assert!(!format!("{loaded:?}").contains("s3cret"));
        assert!(!loaded.wants_tls());
    }
}
