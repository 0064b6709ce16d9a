//! The run driver: what keeps study runs moving in `flotilla up`.
//!
//! It hosts the `study_run` aggregates (their command and query subjects,
//! their effects) and feeds them what happens elsewhere:
//!
//! - the scheduler's events on each run's queue (a job started or ended)
//!   and the solver's on each run's study (the pruner stopped a trial), as
//!   they are published ([`crate::reactions`]);
//! - every [`DriverSettings::reconcile_every`], the queue's state for each
//!   active run, so an event missed while this process was down or
//!   disconnected is made good ([`crate::reactions::from_job_view`]);
//! - every [`DriverSettings::heartbeat`] (checked at each reconcile),
//!   `renew_leases`, so the study keeps the leases of trials whose jobs run;
//! - the gauges of [`RunMetrics`].
//!
//! One driver at a time may run a study's runs: `up` starts it only while
//! it holds the control-plane lease (see `flotilla_bus::LeaseStore`).

use crate::effects::Peers;
use crate::{reactions, RunMetrics, StudyRun};
use flotilla_bus::{Bus, BusError, Message};
use flotilla_host::{AggregateRegistry, Clock, CommandService, CommandTrust};
use flotilla_messages::study_run::RunCommand;
use flotilla_messages::{Actor, Encoding, Envelope, ErrorCode, Page, Subjects};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// How often a driver reads the queues of active runs, by default.
pub const DEFAULT_RECONCILE_EVERY: Duration = Duration::from_secs(5);
/// Every how many reconciles the log is listed for runs this driver did
/// not hear start (listing every stream is not free on a long log).
const RESCAN_EVERY: u64 = 12;
/// Jobs per page of a queue read: a job's view carries its output tails
/// (up to 4 KB), and a page must stay well inside one NATS message.
const JOBS_PER_PAGE: usize = 25;

/// How often the leases of running trials are renewed, by default: well
/// inside the solver's default one-hour lease.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(60);

/// A driver's timings and clock.
#[derive(Clone)]
pub struct DriverSettings {
    /// How often the queues of active runs are read.
    pub reconcile_every: Duration,
    /// How often running trials' leases are renewed.
    pub heartbeat: Duration,
    /// The clock renewals are stamped with.
    pub clock: Clock,
}

impl Default for DriverSettings {
    fn default() -> Self {
        DriverSettings {
            reconcile_every: DEFAULT_RECONCILE_EVERY,
            heartbeat: DEFAULT_HEARTBEAT,
            clock: flotilla_host::wall_clock(),
        }
    }
}

/// Drives the study runs of one process.
pub struct RunDriver {
    registry: Arc<AggregateRegistry<StudyRun>>,
    bus: Arc<dyn Bus>,
    subjects: Subjects,
    trust: CommandTrust,
    peers: Peers,
    metrics: RunMetrics,
    settings: DriverSettings,
    /// Runs that may be active (pruned when a reconcile finds them done).
    active: Mutex<BTreeSet<String>>,
    /// When each run's leases were last renewed (this driver's clock).
    renewed: Mutex<BTreeMap<String, u64>>,
}

impl RunDriver {
    /// A driver for `registry`'s runs (built with [`crate::RunEffects`]).
    pub fn new(
        registry: Arc<AggregateRegistry<StudyRun>>,
        bus: Arc<dyn Bus>,
        subjects: Subjects,
        trust: CommandTrust,
        peers: Peers,
        metrics: RunMetrics,
        settings: DriverSettings,
    ) -> Arc<Self> {
        Arc::new(RunDriver {
            registry,
            bus,
            subjects,
            trust,
            peers,
            metrics,
            settings,
            active: Mutex::new(BTreeSet::new()),
            renewed: Mutex::new(BTreeMap::new()),
        })
    }

    /// Subscribes (the runs' subjects, the peers' events) and drives the
    /// runs until the tasks are aborted; [`Self::recover`] then recovers
    /// them. Must run inside an actix system.
    pub async fn start(self: Arc<Self>) -> Result<Vec<JoinHandle<()>>, BusError> {
        let prefix = self.subjects.prefix().to_string();
        let mut tasks = CommandService::new(
            self.registry.clone(),
            self.bus.clone(),
            self.subjects.clone(),
            self.trust.clone(),
        )
        .start()
        .await?;
        for actor in [Actor::Scheduler, Actor::Solver, Actor::StudyRun] {
            let mut events = self
                .bus
                .subscribe(&format!("{prefix}.evt.{actor}.>"))
                .await?;
            let me = self.clone();
            tasks.push(actix::spawn(async move {
                while let Some(msg) = events.next().await {
                    me.hear(actor, &msg).await;
                }
            }));
        }
        let me = self.clone();
        tasks.push(actix::spawn(async move {
            let mut every = tokio::time::interval(me.settings.reconcile_every);
            for tick in 1u64.. {
                every.tick().await;
                me.reconcile_all(tick % RESCAN_EVERY == 0).await;
            }
        }));
        Ok(tasks)
    }

    /// Recovers every run in the log, re-driving their unsettled effects,
    /// and follows them; starts the runs of studies created with a
    /// `runner` section while no driver listened. How many runs there were.
    pub async fn recover(&self) -> Result<usize, flotilla_messages::Rejection> {
        let recovered = self.registry.recover_all().await?;
        let ids = self.registry.ids().await.unwrap_or_default();
        self.active_set().extend(ids.iter().cloned());
        self.start_missed_runners(&ids.into_iter().collect()).await;
        Ok(recovered)
    }

    /// A study created with a `runner` while no replica drove the runs (a
    /// takeover's gap) was heard by nobody: its run starts now, from the
    /// study's first event, under the same command id the live reaction
    /// uses (so both together start it once).
    async fn start_missed_runners(&self, runs: &BTreeSet<String>) {
        let log = self.registry.log();
        let Ok(streams) = log.streams().await else {
            return;
        };
        let prefix = format!("{}/", Actor::Solver);
        for study in streams.iter().filter_map(|s| s.strip_prefix(&prefix)) {
            if runs.contains(study) {
                continue;
            }
            let Ok(mut events) = log.read_stream(&format!("{prefix}{study}"), 1).await else {
                continue;
            };
            let Some(Ok(first)) = futures::StreamExt::next(&mut events).await else {
                continue;
            };
            let Ok(event) = first.payload.decode::<Value>() else {
                continue;
            };
            if let Some((command, id)) = reactions::runner_of_new_study(&event, &first.id) {
                self.start_runner(study, command, id).await;
            }
        }
    }

    /// Starts the run a study's `runner` section asks for, under the id
    /// derived from the study's `study_created` event.
    async fn start_runner(&self, study: &str, command: RunCommand, command_id: String) {
        self.active_set().insert(study.to_string());
        let reply = self
            .registry
            .execute_typed(study, command, Some(command_id))
            .await;
        if let Some(e) = reply.error.filter(|_| !reply.ok) {
            tracing::warn!(run = study, code = %e.code, error = %e.message, "the study's runner did not start");
        }
    }

    fn active_set(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reacts to one published event.
    async fn hear(&self, actor: Actor, msg: &Message) {
        let Some(id) = msg.subject.rsplit('.').next() else {
            return;
        };
        let Some((event_id, event)) = decode_event(&msg.payload) else {
            return;
        };
        if actor == Actor::StudyRun {
            if event["type"] == "run_started" {
                self.active_set().insert(id.to_string());
            }
            return;
        }
        if let Some((command, command_id)) = reactions::runner_of_new_study(&event, &event_id) {
            return self.start_runner(id, command, command_id).await;
        }
        if !self.active_set().contains(id) {
            return;
        }
        let command = match actor {
            Actor::Scheduler => reactions::from_scheduler_event(&event),
            _ => reactions::from_solver_event(&event),
        };
        if let Some(command) = command {
            self.send(id, command).await;
        }
    }

    async fn send(&self, id: &str, command: RunCommand) {
        let reply = self.registry.execute_typed(id, command, None).await;
        if let Some(e) = reply.error.filter(|_| !reply.ok) {
            tracing::debug!(run = id, code = %e.code, error = %e.message, "reaction refused");
        }
    }

    /// Reconciles every run that may be active and drops the others; with
    /// `rescan`, first adds every run of the log (one whose `run_started`
    /// this driver missed is found there).
    async fn reconcile_all(&self, rescan: bool) {
        if rescan {
            if let Ok(ids) = self.registry.ids().await {
                self.active_set().extend(ids);
            }
        }
        let ids: Vec<String> = self.active_set().iter().cloned().collect();
        for id in ids {
            let still = self.reconcile(&id).await;
            if !still {
                self.active_set().remove(&id);
                self.renewed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
            }
        }
    }

    /// Brings one run up to date with its queue, renews its leases when
    /// due and sets its gauges; whether it may still be active (a run that
    /// cannot be read now is kept).
    async fn reconcile(&self, id: &str) -> bool {
        // One trial per page: the counts, best and jobs in flight are whole.
        let page = Page {
            after: None,
            limit: Some(1),
        };
        let reply = self.registry.query_page(id, Some(page)).await;
        let Some(view) = reply.result.clone().filter(|_| reply.ok) else {
            let gone = reply
                .error
                .is_some_and(|e| e.code == ErrorCode::NotFound.as_str());
            return !gone;
        };
        self.metrics.observe(id, &view);
        let status = view["status"].as_str().unwrap_or_default();
        let active = matches!(status, "starting" | "running" | "paused");
        let open: BTreeSet<&str> = view["running"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["job_id"].as_str())
            .collect();
        if !open.is_empty() {
            for job in self.open_jobs(id, &open).await {
                if let Some(command) = reactions::from_job_view(&job) {
                    self.send(id, command).await;
                }
            }
            self.renew_if_due(id).await;
        }
        // A stopped run still hears the ends of the jobs it cancelled.
        active || !open.is_empty()
    }

    /// The jobs `open` of the study's queue as the queue holds them, read a
    /// page at a time until all of them were seen.
    async fn open_jobs(&self, id: &str, open: &BTreeSet<&str>) -> Vec<Value> {
        let mut jobs = Vec::new();
        let mut after: Option<String> = None;
        while jobs.len() < open.len() {
            let page = json!({"after": after, "limit": JOBS_PER_PAGE});
            let reply = self.peers.query_page(Actor::Scheduler, id, page).await;
            let Some(view) = reply.result.filter(|_| reply.ok) else {
                break;
            };
            let page_jobs = view["jobs"].as_array().into_iter().flatten();
            jobs.extend(
                page_jobs
                    .filter(|j| j["job_id"].as_str().is_some_and(|id| open.contains(id)))
                    .cloned(),
            );
            match view["next"].as_str() {
                Some(next) => after = Some(next.to_string()),
                None => break,
            }
        }
        jobs
    }

    async fn renew_if_due(&self, id: &str) {
        let now = (self.settings.clock)();
        let every = u64::try_from(self.settings.heartbeat.as_millis()).unwrap_or(u64::MAX);
        let due = {
            let mut renewed = self.renewed.lock().unwrap_or_else(|e| e.into_inner());
            // Unknown here (a start, a takeover): renew at once, as leases may be old.
            let last = *renewed.entry(id.to_string()).or_insert(0);
            let due = now.saturating_sub(last) >= every;
            if due {
                renewed.insert(id.to_string(), now);
            }
            due
        };
        if due {
            self.send(id, RunCommand::RenewLeases { now }).await;
        }
    }
}

/// The id and payload of a published envelope, as JSON (either encoding).
fn decode_event(payload: &[u8]) -> Option<(String, Value)> {
    let envelope: Envelope = Encoding::sniff(payload).decode(payload).ok()?;
    let event = envelope.payload.decode::<Value>().ok()?;
    Some((envelope.id, event))
}
