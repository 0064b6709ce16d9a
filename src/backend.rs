//! Opens the chosen backend: the embedded bus and sled log, or a NATS
//! connection with its JetStream log.

use crate::config::{BackendChoice, NatsTarget};
use anyhow::{Context, Result};
use flotilla_bus::embedded::{EmbeddedBus, SledLog};
use flotilla_bus::nats::{redacted, JetStreamLog, NatsBus, NatsConnectError};
use flotilla_bus::{Bus, EventLog, LogKeys};
use flotilla_host::CommandTrust;
use flotilla_messages::auth::CommandSigner;
use flotilla_messages::Subjects;
use std::sync::Arc;

/// A bus and a log.
#[derive(Clone)]
pub struct Backend {
    /// Subjects and request/reply.
    pub bus: Arc<dyn Bus>,
    /// The event log.
    pub log: Arc<dyn EventLog>,
    /// Whom commands on this bus are attributed to (by default: the
    /// transport's word on the embedded bus; signatures on NATS, unsigned
    /// ones accepted only on loopback; `up` sets it from its settings).
    pub trust: CommandTrust,
    /// On NATS with the control plane's key: signs what the gateway
    /// forwards for the callers it authenticated (see `crate::trust`).
    pub command_signer: Option<Arc<CommandSigner>>,
}

/// Opens the backend for a writer with the default key (the data dir's on
/// the embedded backend, see `crate::signing`).
pub async fn open(choice: &BackendChoice, subjects: &Subjects, replicas: usize) -> Result<Backend> {
    let keys = crate::signing::writer_keys(choice, None)?;
    open_with_keys(choice, subjects, replicas, keys).await
}

/// Opens the backend; its log signs and checks with `keys`.
pub async fn open_with_keys(
    choice: &BackendChoice,
    subjects: &Subjects,
    replicas: usize,
    keys: LogKeys,
) -> Result<Backend> {
    match choice {
        BackendChoice::Embedded(dir) => {
            let log_dir = dir.join("log");
            std::fs::create_dir_all(&log_dir)
                .with_context(|| format!("data_dir: cannot create {}", log_dir.display()))?;
            let log = SledLog::open(&log_dir)
                .map_err(|e| open_failure(e, &log_dir))?
                .with_keys(keys);
            Ok(Backend {
                bus: Arc::new(EmbeddedBus::new()),
                log: Arc::new(log),
                trust: CommandTrust::Transport,
                command_signer: None,
            })
        }
        BackendChoice::Nats(target) => {
            let bus = connect_nats(target).await?;
            let log = JetStreamLog::open(bus.client(), subjects.clone(), replicas)
                .await
                .with_context(|| {
                    format!(
                        "nats: cannot open the JetStream log on {}",
                        redacted(&target.url)
                    )
                })?;
            let trust = crate::trust::command_trust(choice, None, None, keys.verifying())?;
            let command_signer = keys
                .signing()
                .map(|key| Arc::new(CommandSigner::from_key(key.clone())));
            Ok(Backend {
                bus: Arc::new(bus),
                log: Arc::new(log.with_keys(keys)),
                trust,
                command_signer,
            })
        }
    }
}

/// Connects to `target` with its credentials and TLS. A bad setting
/// names the setting (`nats_nkey: …`); a refused or failed connection
/// names the URL and, when refused, the credential presented.
pub async fn connect_nats(target: &NatsTarget) -> Result<NatsBus> {
    NatsBus::connect_with(&target.url, &target.auth)
        .await
        .map_err(|e| {
            let settings = matches!(e, NatsConnectError::Settings(_));
            let e = anyhow::Error::new(e);
            if settings {
                e
            } else {
                e.context(format!("nats: cannot connect to {}", redacted(&target.url)))
            }
        })
}

/// Whether `e` is a NATS failure that trying again cannot help (a bad
/// setting, a refused credential): `up` stops instead of retrying.
pub fn is_permanent(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<NatsConnectError>()
            .is_some_and(NatsConnectError::is_permanent)
    })
}

/// Damage found while opening the log in `log_dir` says `CORRUPT`, like
/// a damaged record does on the wire, and names the directory; other
/// failures pass through.
fn open_failure(e: flotilla_bus::LogError, log_dir: &std::path::Path) -> anyhow::Error {
    if e.is_damage() {
        anyhow::anyhow!(
            "CORRUPT: the event log in {} is damaged: {e}; nothing was changed (restore it from a backup)",
            log_dir.display()
        )
    } else {
        e.into()
    }
}

/// Opens only the log of a backend (for readers such as `audit`), checking
/// signatures against `keys` (see `crate::signing::reader_keys`).
pub async fn open_log(
    choice: &BackendChoice,
    subjects: &Subjects,
    keys: LogKeys,
) -> Result<Arc<dyn EventLog>> {
    if let BackendChoice::Embedded(dir) = choice {
        let log_dir = dir.join("log");
        anyhow::ensure!(
            log_dir.exists(),
            "data_dir: no event log in {} (run `flotilla up --data-dir {}` first)",
            dir.display(),
            dir.display()
        );
    }
    Ok(open_with_keys(choice, subjects, 1, keys).await?.log)
}
