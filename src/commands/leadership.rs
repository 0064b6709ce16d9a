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
//! once, since it releases the lease). Every command the parts send is
//! idempotent, so a replica that lost the lease without knowing it yet
//! changes nothing twice.
//!
//! `FLOTILLA_LEASE_SECONDS` sets the lease's time (default 10).

use crate::commands::study_runs::seconds_env;
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
    /// were recovered now, the supervising task, and the claim.
    pub async fn start(
        leases: Arc<dyn LeaseStore>,
        parts: Vec<PartStarter>,
    ) -> Result<(usize, JoinHandle<()>, Leadership)> {
        let ttl = seconds_env("FLOTILLA_LEASE_SECONDS")?.unwrap_or(DEFAULT_LEASE_TTL);
        let holder = format!(
            "{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let claim = Leadership { leases, holder };
        let (recovered, running) = match claim.take(ttl).await {
            true => {
                let (n, tasks) = start_all(&parts).await?;
                (n, Some(tasks))
            }
            false => (0, None),
        };
        let keeper = Leadership {
            leases: claim.leases.clone(),
            holder: claim.holder.clone(),
        };
        let task = actix_rt::spawn(async move { keeper.keep(parts, ttl, running).await });
        Ok((recovered, task, claim))
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

    /// Renews the lease every third of `ttl`; runs the parts while it holds
    /// it, and stops them at the first renewal that fails (a replica that
    /// cannot renew cannot know whether another took over).
    async fn keep(
        &self,
        parts: Vec<PartStarter>,
        ttl: Duration,
        mut running: Option<Vec<JoinHandle<()>>>,
    ) {
        loop {
            tokio::time::sleep(ttl / 3).await;
            match (self.take(ttl).await, running.is_some()) {
                (true, false) => match start_all(&parts).await {
                    Ok((recovered, tasks)) => {
                        tracing::info!(recovered, holder = %self.holder, "took the control-plane lease: running the scheduler and the study runs");
                        running = Some(tasks);
                    }
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "cannot start the leased parts yet")
                    }
                },
                (false, true) => {
                    tracing::warn!(holder = %self.holder, "control-plane lease not held: stopping the scheduler and the study runs here");
                    for task in running.take().into_iter().flatten() {
                        task.abort();
                    }
                }
                _ => {}
            }
        }
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
