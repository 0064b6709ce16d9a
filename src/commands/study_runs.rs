//! Hosting the study runs in `flotilla up` (`--only study_run`, on by
//! default): the `study_run/<study>` aggregates, their effects on the
//! study's solver and scheduler over the bus, and the driver that follows
//! the peers' events (see `flotilla_runner`).
//!
//! Timings: `FLOTILLA_HEARTBEAT_SECONDS` (lease renewals of running
//! trials, default 60) and `FLOTILLA_RECONCILE_SECONDS` (how often the
//! queues of active runs are read to make good a missed event, default 5).

use crate::backend::Backend;
use anyhow::{anyhow, Context, Result};
use flotilla_host::{wall_clock, AggregateRegistry, EffectHandler, HostDeps};
use flotilla_messages::Subjects;
use flotilla_runner::{DriverSettings, Peers, RunDriver, RunEffects, RunMetrics, StudyRun};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Starts the study runs' driver and recovers the runs; how many there
/// were and the tasks.
pub async fn start(
    deps: HostDeps,
    backend: &Backend,
    subjects: &Subjects,
    prometheus: &prometheus::Registry,
) -> Result<(usize, Vec<JoinHandle<()>>)> {
    let settings = DriverSettings {
        heartbeat: seconds_env("FLOTILLA_HEARTBEAT_SECONDS")?
            .unwrap_or(flotilla_runner::DEFAULT_HEARTBEAT),
        reconcile_every: seconds_env("FLOTILLA_RECONCILE_SECONDS")?
            .unwrap_or(flotilla_runner::DEFAULT_RECONCILE_EVERY),
        clock: wall_clock(),
    };
    let peers = Peers::new(
        backend.bus.clone(),
        subjects.clone(),
        backend.command_signer.clone(),
    );
    let effects: Arc<dyn EffectHandler<StudyRun>> = RunEffects::new(peers.clone(), wall_clock());
    let registry = AggregateRegistry::<StudyRun>::new(deps, Some(effects));
    let metrics = RunMetrics::register(prometheus)?;
    let driver = RunDriver::new(
        registry,
        backend.bus.clone(),
        subjects.clone(),
        backend.trust.clone(),
        peers,
        metrics,
        settings,
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

/// A positive number of seconds from `name`, if set.
pub fn seconds_env(name: &str) -> Result<Option<Duration>> {
    match std::env::var(name) {
        Err(_) => Ok(None),
        Ok(text) => text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(|s| Some(Duration::from_secs_f64(s)))
            .ok_or_else(|| anyhow!("{name}: {text:?} is not a positive number of seconds")),
    }
}
