//! What the runner's integration tests share: the three actors a study run
//! needs, hosted in one process as `flotilla up` hosts them — the solver's
//! studies, the scheduler's queues on the executors a test gives, and the
//! study runs with their driver — on the embedded bus and a sled log in a
//! directory, so that a test can drop the lot and recover it from the
//! same directory as a restarted control plane would.
//!
//! Everything goes over the bus (`Peers`), as commands from users and
//! between the actors do in `up`. It lives here, not in the crate behind a
//! feature, because actor crates do not depend on one another.

use flotilla_bus::embedded::{EmbeddedBus, SledLog};
use flotilla_bus::{Bus, LogError};
use flotilla_host::{
    AggregateRegistry, CommandService, CommandTrust, EffectHandler, HostConfig, HostDeps,
    HostMetrics,
};
use flotilla_messages::{Actor, Reply, Subjects};
use flotilla_runner::{DriverSettings, Peers, RunDriver, RunEffects, RunMetrics, StudyRun};
use flotilla_scheduler::{AllowedCommands, Executor, Queue, SchedulerEffects, SchedulerMetrics};
use flotilla_solver::Study;
use serde_json::Value;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// How long [`ControlPlane::wait_for`] waits before it says what was not
/// reached (a guard against a hang, not a timing).
const PATIENCE: Duration = Duration::from_secs(30);

/// The solver, the scheduler and the study runs of one process, recovered
/// from the log in a directory. Dropping it stops their tasks; dropping
/// the actix system it runs in as well is a crash.
pub struct ControlPlane {
    /// Commands and queries to any of the three, over the bus.
    pub peers: Peers,
    tasks: Vec<JoinHandle<()>>,
    sent: AtomicU64,
}

impl ControlPlane {
    /// Opens the log under `dir` (waiting while a dropped process's log
    /// still holds it), hosts the three actors with the scheduler's
    /// attempts on `executors`, and recovers everything the log holds,
    /// re-driving unsettled effects. Must run inside an actix system.
    pub async fn start(
        dir: &Path,
        executors: Vec<Arc<dyn Executor>>,
        settings: DriverSettings,
    ) -> Self {
        let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::new());
        let deps = HostDeps {
            log: Arc::new(open_when_free(&dir.join("log"))),
            bus: bus.clone(),
            config: Arc::new(HostConfig::default()),
            metrics: HostMetrics::unregistered(),
        };
        let subjects = Subjects::default();
        let trust = CommandTrust::Transport;
        let peers = Peers::new(bus.clone(), subjects.clone(), None);
        let mut tasks = Vec::new();

        let solver = AggregateRegistry::<Study>::new(deps.clone(), None);
        let service =
            CommandService::new(solver.clone(), bus.clone(), subjects.clone(), trust.clone());
        tasks.extend(service.start().await.expect("the solver's subjects"));
        solver.recover_all().await.expect("the solver recovers");

        let effects = SchedulerEffects::new(executors, SchedulerMetrics::unregistered());
        let handler: Arc<dyn EffectHandler<Queue>> = effects.clone();
        let queues = AggregateRegistry::<Queue>::with_settings(
            deps.clone(),
            Some(handler),
            AllowedCommands::any(),
        );
        effects.attach(queues.clone());
        let service =
            CommandService::new(queues.clone(), bus.clone(), subjects.clone(), trust.clone());
        tasks.extend(service.start().await.expect("the scheduler's subjects"));
        queues.recover_all().await.expect("the scheduler recovers");

        let run_effects: Arc<dyn EffectHandler<StudyRun>> =
            RunEffects::new(peers.clone(), settings.clock.clone());
        let runs = AggregateRegistry::<StudyRun>::new(deps, Some(run_effects));
        let metrics = RunMetrics::register(&prometheus::Registry::new()).expect("fresh registry");
        let driver = RunDriver::new(
            runs,
            bus.clone(),
            subjects,
            trust,
            peers.clone(),
            metrics,
            settings,
        );
        tasks.extend(driver.clone().start().await.expect("the runs' subjects"));
        driver.recover().await.expect("the runs recover");
        ControlPlane {
            peers,
            tasks,
            sent: AtomicU64::new(0),
        }
    }

    /// Sends `body` to `<actor>/<id>` under a command id of its own.
    pub async fn command(&self, actor: Actor, id: &str, body: Value) -> Reply {
        let n = self.sent.fetch_add(1, Ordering::Relaxed);
        let command_id = format!("test-{}-{n}", std::process::id());
        self.peers.command(actor, id, body, &command_id).await
    }

    /// The state of `<actor>/<id>` (`Null` while it does not exist).
    pub async fn view(&self, actor: Actor, id: &str) -> Value {
        let reply = self.peers.query(actor, id).await;
        reply.result.filter(|_| reply.ok).unwrap_or(Value::Null)
    }

    /// Waits until the state of `<actor>/<id>` satisfies `cond` and returns
    /// it; panics naming `what` and showing the state if it never does.
    pub async fn wait_for(
        &self,
        actor: Actor,
        id: &str,
        what: &str,
        cond: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let view = self.view(actor, id).await;
            if cond(&view) {
                return view;
            }
            assert!(Instant::now() < deadline, "{what} not reached: {view:#}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Opens the sled log in `dir`, waiting while the group-commit thread of a
/// dropped handle still holds sled's lock.
fn open_when_free(dir: &Path) -> SledLog {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match SledLog::open(dir) {
            Ok(log) => return log,
            Err(LogError::InUse { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("cannot open the log in {}: {e}", dir.display()),
        }
    }
}
