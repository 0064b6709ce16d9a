//! Hosting the scheduler actor in a process: its queues on the bus, their
//! effects on the executors this process offers, and the queue signals.
//! `flotilla up --only scheduler` (or `solver,scheduler`) uses it.
//!
//! Local attempts keep their files under the jobs directory:
//! `FLOTILLA_JOBS_DIR`, else `<data dir>/jobs` on the embedded backend,
//! else `.flotilla/jobs`. A restarted scheduler must see the same directory
//! to adopt the attempts that kept running. The `manifests` executor writes
//! under `<jobs dir>/manifests`; the `kubernetes` executor is on when a
//! cluster is configured (see [`kubernetes_executor`]). The local executor
//! runs only the programs of `scheduler.local.allowed_commands` (see
//! `flotilla_scheduler::AllowedCommands`): a job naming another is refused
//! at submit with `COMMAND_NOT_ALLOWED`.
//!
//! In `up`, a queue whose `pool` names a pool of the provisioner (in this
//! process or another on the same log) has its attempts placed on that
//! pool's ready nodes, read from the event log, and a node the provisioner
//! records failed or leaving loses the attempts placed on it, which run
//! again elsewhere (see `flotilla_scheduler::{NodeDirectory, NodeWatch}`).
//! The embedded scheduler of `run` and `plan` places nothing.

use crate::config::{BackendChoice, DEFAULT_DATA_DIR};
use anyhow::{anyhow, Context, Result};
use flotilla_bus::Bus;
use flotilla_host::{AggregateRegistry, CommandService, CommandTrust, EffectHandler, HostDeps};
use flotilla_messages::{CommandRequest, Reply, Subjects};
use flotilla_scheduler::KubernetesExecutor;
use flotilla_scheduler::ManifestsExecutor;
use flotilla_scheduler::{
    AllowedCommands, Executor, LocalExecutor, NodeDirectory, NodeWatch, Queue, QueueSignals,
    SchedulerEffects, SchedulerMetrics, ALLOWED_COMMANDS_SETTING,
};
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

/// The executors every scheduler process offers: `local` (attempt files
/// under `jobs`, only the programs `allowed` names) and `manifests` (under
/// `jobs/manifests`, namespace `default` unless a job names one).
pub fn base_executors(jobs: &std::path::Path, allowed: &AllowedCommands) -> Vec<Arc<dyn Executor>> {
    vec![
        Arc::new(LocalExecutor::new(jobs, allowed.clone())),
        Arc::new(ManifestsExecutor::new(jobs.join("manifests"), "default")),
    ]
}

/// The `kubernetes` executor, when this process can reach a cluster: a
/// kubeconfig (`KUBECONFIG`, `~/.kube/config`) or the in-cluster service
/// account. Jobs go to `FLOTILLA_K8S_NAMESPACE`, else the config's
/// namespace, and only there (a job naming another cannot start).
pub async fn kubernetes_executor() -> Option<Arc<dyn Executor>> {
    let config = match kube::Config::infer().await {
        Ok(config) => config,
        Err(e) => {
            tracing::info!(reason = %e, "no Kubernetes cluster configured: the kubernetes executor is off");
            return None;
        }
    };
    let namespace = std::env::var("FLOTILLA_K8S_NAMESPACE")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| config.default_namespace.clone());
    match kube::Client::try_from(config) {
        Ok(client) => Some(Arc::new(KubernetesExecutor::new(client, namespace))),
        Err(e) => {
            tracing::warn!(error = %e, "the kubernetes executor is off: cannot build a client");
            None
        }
    }
}

/// The scheduler's registry with its effects on `executors` (placing
/// attempts on the nodes `nodes` reads, when given); its queues refuse
/// local jobs whose program `allowed` does not name.
pub fn scheduler_registry(
    deps: HostDeps,
    executors: Vec<Arc<dyn Executor>>,
    metrics: SchedulerMetrics,
    allowed: AllowedCommands,
    nodes: Option<Arc<NodeDirectory>>,
) -> (Arc<AggregateRegistry<Queue>>, Arc<SchedulerEffects>) {
    let effects = match nodes {
        Some(nodes) => SchedulerEffects::placing(executors, metrics, nodes),
        None => SchedulerEffects::new(executors, metrics),
    };
    let handler: Arc<dyn EffectHandler<Queue>> = effects.clone();
    let registry = AggregateRegistry::<Queue>::with_settings(deps, Some(handler), allowed);
    effects.attach(registry.clone());
    (registry, effects)
}

/// What the scheduler needs in `up`.
pub struct SchedulerPart {
    /// Host dependencies.
    pub deps: HostDeps,
    /// The bus.
    pub bus: Arc<dyn Bus>,
    /// Subject names.
    pub subjects: Subjects,
    /// Where local attempts keep their files.
    pub jobs: PathBuf,
    /// The programs local jobs may run.
    pub allowed: AllowedCommands,
    /// Whom commands on the bus are attributed to.
    pub trust: CommandTrust,
}

/// The scheduler as a part of the control plane that one replica runs at
/// a time (see `crate::commands::leadership`): each call subscribes its
/// subjects, starts its signals and recovers its queues, re-driving their
/// unsettled effects (attempts are adopted or collected, or fail if their
/// program is no longer `allowed`).
pub fn part(
    part: SchedulerPart,
    prometheus: &prometheus::Registry,
) -> Result<crate::commands::leadership::PartStarter> {
    if part.allowed.is_empty() {
        tracing::info!(
            "the local executor runs no program: local jobs are refused \
            until {ALLOWED_COMMANDS_SETTING} (--allowed-commands) names some"
        );
    } else {
        tracing::info!(allowed = %part.allowed, "the local executor runs only these programs");
    }
    let metrics = SchedulerMetrics::register(prometheus)?;
    let part = std::rc::Rc::new(part);
    Ok(Box::new(move || {
        let (part, metrics) = (part.clone(), metrics.clone());
        Box::pin(async move { start(&part, metrics).await })
    }))
}

async fn start(
    part: &SchedulerPart,
    metrics: SchedulerMetrics,
) -> Result<(usize, Vec<JoinHandle<()>>)> {
    let mut executors = base_executors(&part.jobs, &part.allowed);
    executors.extend(kubernetes_executor().await);
    let nodes = NodeDirectory::new(part.deps.log.clone());
    let (registry, effects) = scheduler_registry(
        part.deps.clone(),
        executors,
        metrics.clone(),
        part.allowed.clone(),
        Some(nodes.clone()),
    );
    let (bus, subjects) = (part.bus.clone(), part.subjects.clone());
    let mut tasks = CommandService::new(
        registry.clone(),
        bus.clone(),
        subjects.clone(),
        part.trust.clone(),
    )
    .start()
    .await
    .context("cannot subscribe the scheduler's subjects")?;
    // Before recovery: a node lost while attempts are re-driven is heard.
    tasks.push(
        NodeWatch::start(nodes, effects, bus.clone(), &subjects)
            .await
            .context("cannot follow the provisioner's events")?,
    );
    tasks.push(
        QueueSignals::new(registry.clone(), bus, subjects, metrics)
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

/// A scheduler hosted in this process on the embedded log, for commands
/// that run jobs themselves (`flotilla plan --execute local`, `flotilla
/// run --executor local`). Must be used inside an actix system.
pub struct EmbeddedScheduler {
    registry: Arc<AggregateRegistry<Queue>>,
    deps: HostDeps,
    /// The backend it runs on (its bus carries the scheduler's events).
    pub backend: crate::backend::Backend,
}

impl EmbeddedScheduler {
    /// Opens the embedded log in `data_dir`, running attempts on
    /// `executors`. Queues with unsettled attempts are recovered when first
    /// used (their attempts adopted or collected).
    pub async fn open(
        data_dir: &std::path::Path,
        executors: Vec<Arc<dyn Executor>>,
    ) -> Result<Self> {
        let subjects = Subjects::default();
        let choice = BackendChoice::Embedded(data_dir.to_path_buf());
        let backend = crate::backend::open(&choice, &subjects, 1).await?;
        let prometheus = prometheus::Registry::new();
        let deps = HostDeps {
            log: backend.log.clone(),
            bus: backend.bus.clone(),
            config: Arc::new(flotilla_host::HostConfig {
                subjects,
                ..Default::default()
            }),
            metrics: flotilla_host::HostMetrics::register(&prometheus)?,
        };
        let metrics = SchedulerMetrics::register(&prometheus)?;
        // Only this process submits to it (the caller's own plan or study:
        // there is no gateway), so its queues allow what its executors do.
        let (registry, _) = scheduler_registry(
            deps.clone(),
            executors,
            metrics,
            AllowedCommands::any(),
            None,
        );
        Ok(EmbeddedScheduler {
            registry,
            deps,
            backend,
        })
    }

    /// What hosts the scheduler here, to host other aggregates (a study)
    /// on the same log and bus.
    pub fn deps(&self) -> HostDeps {
        self.deps.clone()
    }

    /// Runs one command on `queue` and returns its reply (a refusal, or a
    /// queue that cannot be reached, is a rejected reply); a body that is
    /// not a command is an error naming its code.
    pub async fn command(&self, queue: &str, command: serde_json::Value) -> Result<Reply> {
        let request = CommandRequest::from_value(command, None)
            .map_err(|r| anyhow!("{}: {}", r.code, r.message))?;
        Ok(self.registry.execute(queue, request, None).await)
    }

    /// The queue's state (its `view`), or `None` if it does not exist.
    pub async fn view(&self, queue: &str) -> Result<Option<serde_json::Value>> {
        let reply = self.registry.query(queue).await;
        if reply.error.as_ref().is_some_and(|e| e.code == "NOT_FOUND") {
            return Ok(None);
        }
        if let Some(e) = reply.error.as_ref().filter(|_| !reply.ok) {
            return Err(anyhow!("queue: {}: {}", e.code, e.message));
        }
        Ok(reply.result.filter(|_| reply.ok))
    }

    /// Waits until every job of `queue` is final; returns the last view.
    pub async fn wait_all_final(&self, queue: &str) -> Result<serde_json::Value> {
        loop {
            let view = self
                .view(queue)
                .await?
                .ok_or_else(|| anyhow!("queue {queue} does not exist"))?;
            let open = ["pending", "backoff", "dispatched", "running"]
                .iter()
                .map(|s| view["counts"][s].as_u64().unwrap_or(0))
                .sum::<u64>();
            if open == 0 {
                return Ok(view);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}
