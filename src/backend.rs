//! Opens the chosen backend: the embedded bus, sled log and in-process
//! leases, or a NATS connection with its JetStream log and KV leases.

use crate::config::{BackendChoice, NatsTarget};
use anyhow::{Context, Result};
use flotilla_bus::embedded::{EmbeddedBus, EmbeddedLeases, SledLog};
use flotilla_bus::nats::{redacted, JetStreamLog, NatsBus, NatsConnectError, NatsLeases};
use flotilla_bus::{Bus, EventLog, LeaseStore, LogKeys};
use flotilla_host::CommandTrust;
use flotilla_messages::auth::CommandSigner;
use flotilla_messages::Subjects;
use std::sync::Arc;

/// A bus, a log and leases.
#[derive(Clone)]
pub struct Backend {
    /// Subjects and request/reply.
    pub bus: Arc<dyn Bus>,
    /// The event log.
    pub log: Arc<dyn EventLog>,
    /// Named leases, for work exactly one replica may drive: in-process on
    /// the embedded backend; on NATS the `FLOTILLA_LEASES` KV bucket on the
    /// log's connection, got or created on first use (so processes that
    /// never take a lease need no permissions on it).
    pub leases: Arc<dyn LeaseStore>,
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
                leases: Arc::new(EmbeddedLeases::new()),
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
            let leases = NatsLeases::new(log.jetstream().clone(), replicas);
            Ok(Backend {
                bus: Arc::new(bus),
                log: Arc::new(log.with_keys(keys)),
                leases: Arc::new(leases),
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
/// a damaged record does on the wire, and names the directory; a log held
/// by another process names the data dir; other failures pass through.
fn open_failure(e: flotilla_bus::LogError, log_dir: &std::path::Path) -> anyhow::Error {
    if let flotilla_bus::LogError::InUse { .. } = e {
        let data_dir = log_dir.parent().unwrap_or(log_dir);
        anyhow::anyhow!("data_dir {}: {e}", data_dir.display())
    } else if e.is_damage() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_bus::testing::NatsServer;
    use std::time::Duration;

    /// Two NATS backends, as two `up` replicas, share one set of leases
    /// on their logs' connections.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nats_backends_share_their_leases() {
        let server = NatsServer::start();
        let choice = BackendChoice::nats_at(&server.url());
        let subjects = Subjects::default();
        let open = || open_with_keys(&choice, &subjects, 1, LogKeys::default());
        let (a, b) = (open().await.expect("open a"), open().await.expect("open b"));
        let ttl = Duration::from_secs(600);
        let taken = a.leases.acquire("driver", "a", ttl).await.expect("acquire");
        assert!(taken.acquired);
        let refused = b.leases.acquire("driver", "b", ttl).await.expect("acquire");
        assert_eq!((refused.acquired, refused.lease), (false, taken.lease));
        assert!(a.leases.release("driver", "a").await.expect("release"));
        assert!(
            b.leases
                .acquire("driver", "b", ttl)
                .await
                .expect("acquire")
                .acquired
        );
    }

    /// The embedded backend's leases are one map for all its users.
    #[tokio::test]
    async fn embedded_leases_are_shared_by_clones_of_the_backend() {
        let dir = tempfile::tempdir().expect("tempdir");
        let choice = BackendChoice::Embedded(dir.path().to_path_buf());
        let a = open_with_keys(&choice, &Subjects::default(), 1, LogKeys::default())
            .await
            .expect("open");
        let b = a.clone();
        let ttl = Duration::from_secs(600);
        assert!(
            a.leases
                .acquire("driver", "a", ttl)
                .await
                .expect("acquire")
                .acquired
        );
        let seen = b.leases.holder("driver").await.expect("holder");
        assert_eq!(seen.map(|l| l.holder), Some("a".to_string()));
    }
}
