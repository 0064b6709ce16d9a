//! The parts of the control plane exactly one replica of `up` runs at a
//! time: the scheduler (its effects start processes and Jobs) and the
//! study runs (their effects ask, submit and tell). The solver and the
//! provisioner's commands need no such care: every append checks the
//! aggregate's sequence, so any replica may serve them.
//!
//! The replica that holds the lease [`CONTROL_LEASE`] (a JetStream KV
//! lease on NATS; always this process on the embedded backend) subscribes
//! their subjects and recovers their aggregates, re-driving what was left
//! unsettled: attempts a dead replica started are adopted or collected,
//! or run again when they are gone. The others wait, trying to take the
//! lease every third of its time, and take over once its holder stops
//! renewing it (killed: after the lease's time; shut down cleanly: at
//! once, since it releases the lease). The lease is renewed on a task of
//! its own, so a long recovery does not let it lapse.
//!
//! What this does not fence: a replica that lost the lease stops its
//! subscriptions and drivers, but effects already in flight on it (a
//! command to a peer, an outcome being recorded) finish. They are
//! idempotent (their ids derive from their events) and every append checks
//! the aggregate's sequence, so they change nothing twice; the new holder
//! folds what they appended.
//!
//! `FLOTILLA_LEASE_SECONDS` sets the lease's time (default 10);
//! `FLOTILLA_REPLICA_ID` names the replica (see [`replica_id`]).

use crate::commands::seconds_env;
use anyhow::Result;
use flotilla_bus::LeaseStore;
use futures::future::LocalBoxFuture;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// The lease the driving replica holds.
pub const CONTROL_LEASE: &str = "control-plane";
/// The lease's time unless renewed, by default.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

/// Starts one part: subscribes it, recovers its aggregates, and returns
/// how many there were and its tasks. Called again after each takeover.
pub type PartStarter =
    Box<dyn Fn() -> LocalBoxFuture<'static, Result<(usize, Vec<JoinHandle<()>>)>>>;

/// This process's claim on the lease.
pub struct Leadership {
    leases: Arc<dyn LeaseStore>,
    holder: String,
}

impl Leadership {
    /// Starts the parts whenever this process holds the lease: at once if
    /// it is free (their aggregates are recovered before this returns),
    /// else when the holder stops renewing it. Returns how many aggregates
    /// were recovered now, the tasks (renewal and supervision), and the
    /// claim.
    pub async fn start(
        leases: Arc<dyn LeaseStore>,
        replica: String,
        parts: Vec<PartStarter>,
    ) -> Result<(usize, Vec<JoinHandle<()>>, Leadership)> {
        let ttl = seconds_env("FLOTILLA_LEASE_SECONDS")?.unwrap_or(DEFAULT_LEASE_TTL);
        let claim = Leadership {
            leases,
            holder: replica,
        };
        let held = claim.take(ttl).await;
        // Renewed on its own task, so a long recovery does not let it lapse.
        let (tell, mut heard) = tokio::sync::watch::channel(held);
        let renewer = claim.clone_claim();
        let renewal = actix_rt::spawn(async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                if tell.send(renewer.take(ttl).await).is_err() {
                    return;
                }
            }
        });
        let (recovered, mut running) = match held {
            true => {
                let (n, tasks) = start_all(&parts).await?;
                (n, Some(tasks))
            }
            false => (0, None),
        };
        let holder = claim.holder.clone();
        let supervisor = actix_rt::spawn(async move {
            while heard.changed().await.is_ok() {
                let held = *heard.borrow_and_update();
                running = follow(held, running, &parts, &holder).await;
            }
        });
        Ok((recovered, vec![renewal, supervisor], claim))
    }

    fn clone_claim(&self) -> Leadership {
        Leadership {
            leases: self.leases.clone(),
            holder: self.holder.clone(),
        }
    }

    /// Gives the lease up (on a clean shutdown, after the parts stopped),
    /// so another replica takes over at once.
    pub async fn release(&self) {
        if let Err(e) = self.leases.release(CONTROL_LEASE, &self.holder).await {
            tracing::warn!(error = %e, "control-plane lease not released; it ends by itself");
        }
    }

    /// Takes or renews the lease; whether this process holds it.
    async fn take(&self, ttl: Duration) -> bool {
        match self.leases.acquire(CONTROL_LEASE, &self.holder, ttl).await {
            Ok(state) => {
                if !state.acquired {
                    tracing::debug!(holder = %state.lease.holder, "another replica runs the scheduler and the study runs");
                }
                state.acquired
            }
            Err(e) => {
                tracing::warn!(error = %e, "control-plane lease not renewed");
                false
            }
        }
    }
}

/// Starts the parts when the lease is newly held, stops them when it is
/// not (a replica that cannot renew cannot know whether another took
/// over); what runs afterwards.
async fn follow(
    held: bool,
    running: Option<Vec<JoinHandle<()>>>,
    parts: &[PartStarter],
    holder: &str,
) -> Option<Vec<JoinHandle<()>>> {
    match (held, running) {
        (true, None) => match start_all(parts).await {
            Ok((recovered, tasks)) => {
                tracing::info!(
                    recovered,
                    holder,
                    "took the control-plane lease: running the scheduler and the study runs"
                );
                Some(tasks)
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot start the leased parts yet");
                None
            }
        },
        (false, Some(tasks)) => {
            tracing::warn!(
                holder,
                "control-plane lease not held: stopping the scheduler and the study runs here"
            );
            for task in tasks {
                task.abort();
            }
            None
        }
        (_, running) => running,
    }
}

/// Who holds the lease for this process: `FLOTILLA_REPLICA_ID`, else its
/// host name and gateway address, so that a replica restarted after a
/// crash takes its own lease back at once instead of waiting for it to run
/// out (two processes cannot both serve one address on one host). Without a
/// gateway it is unique to the process.
pub fn replica_id(http: Option<std::net::SocketAddr>) -> String {
    if let Some(id) = std::env::var("FLOTILLA_REPLICA_ID")
        .ok()
        .filter(|id| !id.trim().is_empty())
    {
        return id;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    match http {
        Some(addr) => format!("{host}:{addr}"),
        None => format!(
            "{host}:{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ),
    }
}

async fn start_all(parts: &[PartStarter]) -> Result<(usize, Vec<JoinHandle<()>>)> {
    let mut recovered = 0;
    let mut tasks = Vec::new();
    for part in parts {
        match part().await {
            Ok((n, more)) => {
                recovered += n;
                tasks.extend(more);
            }
            Err(e) => {
                for task in tasks {
                    task.abort();
                }
                return Err(e);
            }
        }
    }
    Ok((recovered, tasks))
}
