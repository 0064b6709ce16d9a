//! Builds the command trust policy of a process that serves commands
//! (`up`, `worker`): who a command on the bus is attributed to.
//!
//! On the embedded backend every publisher is in-process, so the gateway's
//! `Flotilla-Principal` header is taken as is. On NATS a command must be
//! signed by a key in the principals file (`flotilla nats-config` writes
//! it), or by the control plane's own signing key (its gateway vouching for
//! the HTTP caller it authenticated). Unsigned NATS commands are accepted,
//! recorded as `unsigned`, only where `unsigned_commands` says so; by
//! default only when the NATS server is on loopback, like the
//! unauthenticated HTTP default.

use crate::config::BackendChoice;
use anyhow::{anyhow, bail, Context, Result};
use flotilla_host::CommandTrust;
use flotilla_messages::auth::signature::decode_public_key;
use flotilla_messages::auth::{self, KeyRing, KeyRole, KnownKey};
use flotilla_messages::VerifyingKey;
use serde::Deserialize;
use std::path::Path;
use std::sync::Arc;

/// Whether unsigned NATS commands are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnsignedCommands {
    /// Accepted, and recorded as `unsigned`.
    Accept,
    /// Refused with `UNAUTHENTICATED`.
    Refuse,
}

/// `principals.toml`: the NATS identities whose signed commands count.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalsFile {
    #[serde(default)]
    principal: Vec<PrincipalEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalEntry {
    name: String,
    role: KeyRole,
    public_key: String,
}

/// The trust policy for `backend`: `principals` names the principals file,
/// `unsigned` the unsigned-commands setting, `control_plane` the control
/// plane's public key (its gateway signs what it forwards with it).
pub fn command_trust(
    backend: &BackendChoice,
    principals: Option<&Path>,
    unsigned: Option<UnsignedCommands>,
    control_plane: Option<&VerifyingKey>,
) -> Result<CommandTrust> {
    let BackendChoice::Nats(target) = backend else {
        return Ok(CommandTrust::Transport);
    };
    let url = &target.url;
    let mut keys = match principals {
        Some(path) => load_principals(path)?,
        None => KeyRing::default(),
    };
    if let Some(key) = control_plane {
        let name = auth::CONTROL_PLANE.to_string();
        let role = KeyRole::ControlPlane;
        keys.insert(*key, KnownKey { name, role });
    }
    let unsigned = unsigned.unwrap_or(if crate::trust::is_loopback_url(url) {
        UnsignedCommands::Accept
    } else {
        UnsignedCommands::Refuse
    });
    Ok(CommandTrust::Signed {
        keys: Arc::new(keys),
        accept_unsigned: unsigned == UnsignedCommands::Accept,
    })
}

/// Says on stderr, once per start, that unsigned commands are accepted.
pub fn warn_if_unsigned(trust: &CommandTrust) {
    if let CommandTrust::Signed {
        accept_unsigned: true,
        ..
    } = trust
    {
        tracing::warn!(
            "unsigned NATS commands are accepted and recorded as \"unsigned\" \
             (set unsigned_commands = \"refuse\" to require signed ones)"
        );
    }
}

/// The control plane's signing key is required on a NATS server off
/// loopback: without it, anyone who may publish on `evt.>` could append
/// events that audits cannot tell from real ones.
pub fn require_signing_key(backend: &BackendChoice, keys: &flotilla_bus::LogKeys) -> Result<()> {
    match backend {
        BackendChoice::Nats(target)
            if keys.signing().is_none() && !is_loopback_url(&target.url) =>
        {
            bail!(
                "signing_key: required with a NATS server that is not on loopback ({}): \
                 pass --signing-key FILE (generated if missing) so that every appended event is signed",
                flotilla_bus::nats::redacted(&target.url)
            )
        }
        _ => Ok(()),
    }
}

/// Reads a principals file, naming the file and entry at fault.
pub fn load_principals(path: &Path) -> Result<KeyRing> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("principals_file: cannot read {shown}"))?;
    let file: PrincipalsFile =
        toml::from_str(&text).map_err(|e| anyhow!("principals_file {shown}: {e}"))?;
    let mut ring = KeyRing::default();
    for (i, entry) in file.principal.into_iter().enumerate() {
        let at = format!(
            "principals_file {shown}: principal {} ({:?})",
            i + 1,
            entry.name
        );
        // The control plane's own key goes by the control plane's name.
        let own_name = entry.role == KeyRole::ControlPlane && entry.name == auth::CONTROL_PLANE;
        if !own_name {
            auth::validate_principal(&entry.name).map_err(|e| anyhow!("{at}: {e}"))?;
        }
        let Some(key) = decode_public_key(&entry.public_key)
            .and_then(|raw| VerifyingKey::from_bytes(&raw).ok())
        else {
            bail!(
                "{at}: public_key is not a NATS user nkey (U…) or 64 hex digits of an Ed25519 key"
            );
        };
        ring.insert(
            key,
            KnownKey {
                name: entry.name,
                role: entry.role,
            },
        );
    }
    Ok(ring)
}

/// Whether every server of a NATS URL list is on a loopback address.
pub fn is_loopback_url(url: &str) -> bool {
    url.split(',').all(|one| {
        let rest = one.trim().split_once("://").map_or(one.trim(), |(_, r)| r);
        // The authority ends at the first `/`, `?` or `#`: an `@` after it
        // (`…/?x=@127.0.0.1`) names no host.
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let host = match host_port.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => host_port.split(':').next().unwrap_or(""),
        };
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls_are_told_apart() {
        assert!(is_loopback_url("nats://127.0.0.1:4222"));
        assert!(is_loopback_url(
            "nats://u:p@localhost:4222,nats://[::1]:4223"
        ));
        assert!(!is_loopback_url(
            "nats://127.0.0.1:4222,nats://10.0.0.2:4222"
        ));
        assert!(!is_loopback_url("tls://nats.example:4222"));
        assert!(!is_loopback_url("nats://nats.example:4222/?x=@127.0.0.1"));
    }

    #[test]
    fn a_principals_file_with_a_bad_key_names_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("principals.toml");
        let user = nkeys::KeyPair::new_user();
        let good = format!(
            "[[principal]]\nname = \"alice\"\nrole = \"operator\"\npublic_key = \"{}\"\n",
            user.public_key()
        );
        std::fs::write(&path, &good).unwrap();
        assert!(!load_principals(&path).unwrap().is_empty());
        let bad = format!(
            "{good}[[principal]]\nname = \"n1\"\nrole = \"agent\"\npublic_key = \"Ubad\"\n"
        );
        std::fs::write(&path, bad).unwrap();
        let err = load_principals(&path).unwrap_err().to_string();
        assert!(
            err.contains("principal 2 (\"n1\")") && err.contains("public_key"),
            "{err}"
        );
    }

    #[test]
    fn embedded_trusts_the_transport_and_remote_nats_refuses_unsigned() {
        let embedded = BackendChoice::Embedded("d".into());
        let trust = command_trust(&embedded, None, None, None).unwrap();
        assert!(matches!(trust, CommandTrust::Transport));
        let remote = BackendChoice::nats_at("nats://10.1.2.3:4222");
        let trust = command_trust(&remote, None, None, None).unwrap();
        assert!(matches!(
            trust,
            CommandTrust::Signed {
                accept_unsigned: false,
                ..
            }
        ));
        let local = BackendChoice::nats_at("nats://127.0.0.1:4222");
        let trust = command_trust(&local, None, None, None).unwrap();
        assert!(matches!(
            trust,
            CommandTrust::Signed {
                accept_unsigned: true,
                ..
            }
        ));
    }
}
