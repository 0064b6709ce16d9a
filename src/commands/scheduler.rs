//! Hosting the scheduler actor in a process: its queues on the bus, their
//! effects on the executors this process offers, and the queue signals.
//! `flotilla up --only scheduler` (or `solver,scheduler`) uses it.
//!
//! Local attempts keep their files under the jobs directory:
//! `FLOTILLA_JOBS_DIR`, else `<data dir>/jobs` on the embedded backend,
//! else `.flotilla/jobs`. A restarted scheduler must see the same directory
//! to adopt the attempts that kept running.

use crate::config::{BackendChoice, DEFAULT_DATA_DIR};
use anyhow::{anyhow, Context, Result};
use flotilla_actors::runtime::{AggregateRegistry, CommandService, EffectHandler, HostDeps};
use flotilla_actors::scheduler::{
    Executor, LocalExecutor, Queue, QueueSignals, SchedulerEffects, SchedulerMetrics,
};
use flotilla_bus::Bus;
use flotilla_messages::Subjects;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// Where local attempts keep their files.
pub fn jobs_dir(backend: &BackendChoice) -> PathBuf {
    if let Some(dir) = std::env::var_os("FLOTILLA_JOBS_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    match backend {
        BackendChoice::Embedded(dir) => dir.join("jobs"),
        BackendChoice::Nats(_) => PathBuf::from(DEFAULT_DATA_DIR).join("jobs"),
    }
}

/// The scheduler's registry with its effects on the executors of this
/// process (the local one under `jobs`).
pub fn scheduler_registry(
    deps: HostDeps,
    jobs: PathBuf,
    metrics: SchedulerMetrics,
) -> Arc<AggregateRegistry<Queue>> {
    let executors: Vec<Arc<dyn Executor>> = vec![Arc::new(LocalExecutor::new(jobs))];
    let effects = SchedulerEffects::new(executors, metrics);
    let handler: Arc<dyn EffectHandler<Queue>> = effects.clone();
    let registry = AggregateRegistry::<Queue>::new(deps, Some(handler));
    effects.attach(registry.clone());
    registry
}

/// Subscribes the scheduler's subjects, starts its signals and recovers
/// its queues (re-driving their unsettled effects: attempts are adopted or
/// collected). Returns how many queues were recovered and the tasks.
pub async fn start(
    deps: HostDeps,
    bus: Arc<dyn Bus>,
    subjects: &Subjects,
    jobs: PathBuf,
    prometheus: &prometheus::Registry,
) -> Result<(usize, Vec<JoinHandle<()>>)> {
    let metrics = SchedulerMetrics::register(prometheus)?;
    let registry = scheduler_registry(deps, jobs, metrics.clone());
    let mut tasks = CommandService::new(registry.clone(), bus.clone(), subjects.clone())
        .start()
        .await
        .context("cannot subscribe the scheduler's subjects")?;
    tasks.push(
        QueueSignals::new(registry.clone(), bus, subjects.clone(), metrics)
            .start()
            .await
            .context("cannot follow the scheduler's events")?,
    );
    let recovered = registry
        .recover_all()
        .await
        .map_err(|r| anyhow!("recovery of the scheduler failed: {r}; run `flotilla audit`"))?;
    Ok((recovered, tasks))
}
