//! Hosting the study runs in `flotilla up` (`--only study_run`, on by
//! default): the `study_run/<study>` aggregates, their effects on the
//! study's solver and scheduler over the bus, and the driver that follows
//! the peers' events (see `flotilla_runner`).
//!
//! Only the replica holding the control-plane lease drives the runs (see
//! `crate::commands::leadership`).
//!
//! Timings: `FLOTILLA_HEARTBEAT_SECONDS` (lease renewals of running
//! trials, default 60) and `FLOTILLA_RECONCILE_SECONDS` (how often the
//! queues of active runs are read to make good a missed event, default 5).

use crate::backend::Backend;
use crate::commands::leadership::PartStarter;
use crate::commands::seconds_env;
use anyhow::{anyhow, Context, Result};
use flotilla_host::{wall_clock, AggregateRegistry, EffectHandler, HostDeps};
use flotilla_messages::Subjects;
use flotilla_runner::{DriverSettings, Peers, RunDriver, RunEffects, RunMetrics, StudyRun};
use std::rc::Rc;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// What builds a driver each time this process takes the control-plane
/// lease (see `crate::commands::leadership`).
struct DriverParts {
    deps: HostDeps,
    backend: Backend,
    subjects: Subjects,
    metrics: RunMetrics,
    settings: DriverSettings,
}

impl DriverParts {
    /// A fresh registry and driver: subscribed, its runs recovered.
    async fn drive(&self) -> Result<(usize, Vec<JoinHandle<()>>)> {
        let peers = Peers::new(
            self.backend.bus.clone(),
            self.subjects.clone(),
            self.backend.command_signer.clone(),
        );
        let effects: Arc<dyn EffectHandler<StudyRun>> =
            RunEffects::new(peers.clone(), self.settings.clock.clone());
        let registry = AggregateRegistry::<StudyRun>::new(self.deps.clone(), Some(effects));
        let driver = RunDriver::new(
            registry,
            self.backend.bus.clone(),
            self.subjects.clone(),
            self.backend.trust.clone(),
            peers,
            self.metrics.clone(),
            self.settings.clone(),
        );
        let tasks = driver
            .clone()
            .start()
            .await
            .context("cannot subscribe the study runs' subjects")?;
        let recovered = driver
            .recover()
            .await
            .map_err(|r| anyhow!("recovery of the study runs failed: {r}; run `flotilla audit`"))?;
        Ok((recovered, tasks))
    }
}

/// The study runs as a part of the control plane that one replica runs at
/// a time: each call builds a fresh driver, subscribes it and recovers the
/// runs.
pub fn part(
    deps: HostDeps,
    backend: &Backend,
    subjects: &Subjects,
    prometheus: &prometheus::Registry,
) -> Result<PartStarter> {
    let settings = DriverSettings {
        heartbeat: seconds_env("FLOTILLA_HEARTBEAT_SECONDS")?
            .unwrap_or(flotilla_runner::DEFAULT_HEARTBEAT),
        reconcile_every: seconds_env("FLOTILLA_RECONCILE_SECONDS")?
            .unwrap_or(flotilla_runner::DEFAULT_RECONCILE_EVERY),
        clock: wall_clock(),
    };
    let parts = Rc::new(DriverParts {
        deps,
        backend: backend.clone(),
        subjects: subjects.clone(),
        metrics: RunMetrics::register(prometheus)?,
        settings,
    });
    Ok(Box::new(move || {
        let parts = parts.clone();
        Box::pin(async move { parts.drive().await })
    }))
}
