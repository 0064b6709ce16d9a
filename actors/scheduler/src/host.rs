//! The scheduler's I/O: the effects its events ask for, its queue signals
//! and its metrics. The runtime (`flotilla_host`) runs an effect after
//! its event is stored and records its outcome as a command keyed by the
//! event id, so an attempt's result is recorded once however often the
//! effect is re-driven.
//!
//! - `job_dispatched` → when the provisioner has a pool of the queue's
//!   `pool` name (see [`NodeDirectory`]), wait until it has a ready node
//!   and answer `place` with its ready nodes; otherwise launch (or adopt)
//!   the attempt on the queue's executor, record `record_started` with its
//!   handle as soon as it exists, wait for its end, and report it
//!   (`report_result`);
//! - `job_placed` → the same on the node the queue chose (the attempt gets
//!   `FLOTILLA_NODE`), unless that node is lost already (it failed while
//!   this scheduler was down, say): then whatever is left of the attempt
//!   is stopped and it is reported lost;
//! - `retry_scheduled` → sleep until `not_before`, then `retry_due`;
//! - `job_cancelled` with a running attempt → stop it (or stop waiting for
//!   a node for it); `job_lost` on a node → stop what may still run of it.
//!
//! The effects know which placed attempts run in this process, by node, so
//! that [`SchedulerEffects::node_lost`] — called by the [`crate::NodeWatch`]
//! for every node the provisioner records lost — sends `node_lost` to
//! exactly the queues that have attempts there, idempotently under an id
//! derived from the provisioner's event id.
//!
//! [`QueueSignals`] follows the scheduler's events on the bus and publishes
//! each changed queue's depth on `<prefix>.signal.queue.<queue>` (see
//! `flotilla_messages::scheduler::QueueSignal`), and again every few
//! seconds for late subscribers, updating the Prometheus gauges on the way.

use crate::executor::{Attempt, Executor, Launch};
use crate::nodes::NodeDirectory;
use crate::placement::NodeLoss;
use crate::queue::{JobStatus, Queue};
use async_trait::async_trait;
use flotilla_bus::{Bus, BusError, Message};
use flotilla_host::{outcome_command_id, unix_millis, AggregateRegistry, EffectHandler};
use flotilla_messages::scheduler::{
    queue_signal_subject, ExecutorKind, JobSpec, Outcome, QueueSignal, SchedulerCommand,
    SchedulerEvent, DEFAULT_KILL_GRACE_SECONDS,
};
use flotilla_messages::{CommandRequest, Encoding, Envelope, Subjects};
use prometheus::{HistogramOpts, HistogramVec, IntGaugeVec, Opts, Registry};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How often an attempt waiting for a ready node looks again without being
/// told of a change (a missed bus message, a log that failed to read).
pub const NODE_RECHECK: Duration = Duration::from_secs(5);

/// The scheduler's Prometheus metrics.
#[derive(Clone)]
pub struct SchedulerMetrics {
    /// Jobs by queue and status.
    pub jobs: IntGaugeVec,
    /// Pending and running jobs by queue and pool.
    pub depth: IntGaugeVec,
    /// How long attempts ran, by executor and outcome.
    pub duration: HistogramVec,
}

impl SchedulerMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = SchedulerMetrics {
            jobs: IntGaugeVec::new(
                Opts::new("flotilla_scheduler_jobs", "Jobs by queue and status"),
                &["queue", "status"],
            )?,
            depth: IntGaugeVec::new(
                Opts::new(
                    "flotilla_scheduler_queue_depth",
                    "Pending and running jobs by queue and pool",
                ),
                &["queue", "pool", "state"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "flotilla_scheduler_job_duration_seconds",
                    "How long attempts ran",
                )
                .buckets(vec![
                    0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0,
                ]),
                &["executor", "outcome"],
            )?,
        };
        registry.register(Box::new(m.jobs.clone()))?;
        registry.register(Box::new(m.depth.clone()))?;
        registry.register(Box::new(m.duration.clone()))?;
        Ok(m)
    }

    /// Metrics registered nowhere (tests).
    pub fn unregistered() -> Self {
        Self::register(&Registry::new()).expect("fresh registry")
    }
}

/// The queue id of a scheduler stream (`scheduler/<queue>`).
fn queue_of(envelope: &Envelope) -> String {
    envelope
        .stream
        .split_once('/')
        .map_or_else(|| envelope.stream.clone(), |(_, id)| id.to_string())
}

fn outcome_label(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Succeeded { .. } => "succeeded",
        Outcome::Failed { .. } => "failed",
        Outcome::TimedOut { .. } => "timed_out",
        Outcome::Lost { .. } => "lost",
    }
}

/// One attempt of one job of one queue.
type AttemptKey = (String, String, u32);

/// Runs the scheduler's effects on its executors.
pub struct SchedulerEffects {
    executors: HashMap<ExecutorKind, Arc<dyn Executor>>,
    /// Weak: the registry holds these effects, and a strong link back
    /// would keep both (and the log they share) alive for ever.
    registry: OnceLock<Weak<AggregateRegistry<Queue>>>,
    metrics: SchedulerMetrics,
    /// The provisioner's pools; without it nothing is placed.
    nodes: Option<Arc<NodeDirectory>>,
    /// The placed attempts running in this process, by node.
    placed: Mutex<BTreeMap<String, BTreeSet<AttemptKey>>>,
    /// Dispatched attempts waiting for a ready node: told when cancelled.
    waiting: Mutex<HashMap<AttemptKey, Arc<Notify>>>,
}

/// What a dispatched attempt of a pool's queue gets.
enum Placement {
    /// The provisioner has no such pool: run it unplaced.
    NoPool,
    /// These nodes are ready.
    Ready(Vec<String>),
    /// It was cancelled while it waited.
    Cancelled,
}

/// What one attempt runs, and where.
struct Target<'a> {
    job_id: &'a str,
    attempt: u32,
    spec: &'a JobSpec,
    executor: ExecutorKind,
    node: Option<&'a str>,
}

/// Counts a placed attempt as running on its node while it lives.
struct PlacedGuard<'a> {
    effects: &'a SchedulerEffects,
    node: String,
    key: AttemptKey,
}

impl Drop for PlacedGuard<'_> {
    fn drop(&mut self) {
        let mut placed = lock(&self.effects.placed);
        if let Some(on_node) = placed.get_mut(&self.node) {
            on_node.remove(&self.key);
            if on_node.is_empty() {
                placed.remove(&self.node);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The id of the `node_lost` that reacts to provisioner event `event_id`.
pub fn node_lost_command_id(event_id: &str) -> String {
    flotilla_host::derived_command_id("node-lost", event_id)
}

impl SchedulerEffects {
    /// Effects on `executors` (one per kind; a dispatch to a kind not given
    /// fails its attempt with a clear reason). Nothing is placed on nodes.
    pub fn new(executors: Vec<Arc<dyn Executor>>, metrics: SchedulerMetrics) -> Arc<Self> {
        Self::build(executors, metrics, None)
    }

    /// Effects that place the attempts of a queue on the nodes of the
    /// provisioner's pool of the queue's `pool` name, as `nodes` reads them.
    pub fn placing(
        executors: Vec<Arc<dyn Executor>>,
        metrics: SchedulerMetrics,
        nodes: Arc<NodeDirectory>,
    ) -> Arc<Self> {
        Self::build(executors, metrics, Some(nodes))
    }

    fn build(
        executors: Vec<Arc<dyn Executor>>,
        metrics: SchedulerMetrics,
        nodes: Option<Arc<NodeDirectory>>,
    ) -> Arc<Self> {
        Arc::new(SchedulerEffects {
            executors: executors.into_iter().map(|e| (e.kind(), e)).collect(),
            registry: OnceLock::new(),
            metrics,
            nodes,
            placed: Mutex::new(BTreeMap::new()),
            waiting: Mutex::new(HashMap::new()),
        })
    }

    /// Tells every queue with an attempt running on the lost node in this
    /// process (`node_lost`, under an id derived from the provisioner
    /// event, so telling twice records nothing twice).
    pub async fn node_lost(&self, loss: &NodeLoss) {
        let Some(registry) = self.registry.get().and_then(Weak::upgrade) else {
            return;
        };
        let queues: BTreeSet<String> = lock(&self.placed)
            .get(&loss.node)
            .map(|on_node| on_node.iter().map(|(q, _, _)| q.clone()).collect())
            .unwrap_or_default();
        for queue in queues {
            let command = SchedulerCommand::NodeLost {
                node: loss.node.clone(),
                reason: loss.reason.clone(),
            };
            let id = node_lost_command_id(&loss.event_id);
            let reply = registry.execute_typed(&queue, command, Some(id)).await;
            if !reply.ok {
                tracing::warn!(queue, node = %loss.node, error = ?reply.error, "node_lost not recorded");
            }
        }
    }

    fn count_placed(&self, node: &str, key: AttemptKey) -> PlacedGuard<'_> {
        lock(&self.placed)
            .entry(node.to_string())
            .or_default()
            .insert(key.clone());
        PlacedGuard {
            effects: self,
            node: node.to_string(),
            key,
        }
    }

    /// Waits until `pool` has a ready node (or is no provisioner pool, or
    /// the attempt is cancelled).
    async fn wait_for_node(
        &self,
        nodes: &NodeDirectory,
        pool: &str,
        key: &AttemptKey,
    ) -> Placement {
        let cancelled = Arc::new(Notify::new());
        lock(&self.waiting).insert(key.clone(), cancelled.clone());
        let mut changes = nodes.changes();
        let mut told = false;
        let placement = loop {
            match nodes.ready(pool).await {
                Ok(None) => break Placement::NoPool,
                Ok(Some(ready)) if !ready.is_empty() => break Placement::Ready(ready),
                Ok(Some(_)) if !told => {
                    told = true;
                    tracing::info!(queue = %key.0, job_id = %key.1, attempt = key.2, pool,
                        "the pool has no ready node: the attempt waits for one");
                }
                Ok(Some(_)) => {}
                Err(e) => tracing::warn!(pool, error = %e, "cannot read the pool's nodes"),
            }
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        tokio::time::sleep(NODE_RECHECK).await;
                    }
                }
                _ = cancelled.notified() => break Placement::Cancelled,
                _ = tokio::time::sleep(NODE_RECHECK) => {}
            }
        };
        lock(&self.waiting).remove(key);
        placement
    }

    /// Stops attempt `attempt` of `job_id` wherever it may run.
    async fn stop_everywhere(&self, queue: &str, job_id: &str, attempt: u32) {
        let grace = Duration::from_secs_f64(DEFAULT_KILL_GRACE_SECONDS);
        for executor in self.executors.values() {
            executor.stop(queue, job_id, attempt, grace).await;
        }
    }

    /// Connects the effects to the queues they report to (once, right after
    /// the registry is built with these effects).
    pub fn attach(&self, registry: Arc<AggregateRegistry<Queue>>) {
        let _ = self.registry.set(Arc::downgrade(&registry));
    }

    /// Records where an attempt runs, as soon as it exists (so a restart
    /// knows it), under an id derived from the dispatch event.
    async fn record_started(&self, queue: &str, envelope: &Envelope, command: Value) {
        let Some(registry) = self.registry.get().and_then(Weak::upgrade) else {
            tracing::warn!("scheduler effects are not attached to a live registry");
            return;
        };
        let id = format!("{}-started", outcome_command_id(&envelope.id));
        let request = match CommandRequest::from_value(command, Some(&id)) {
            Ok(r) => r.by(flotilla_messages::auth::CONTROL_PLANE),
            Err(r) => {
                tracing::warn!(error = %r, "record_started is not a command");
                return;
            }
        };
        if !registry.execute(queue, request, None).await.ok {
            tracing::warn!(queue, event = %envelope.id, "the start of an attempt was not recorded");
        }
    }

    /// A dispatched attempt: placed first when its queue's pool is a
    /// provisioner pool, else run here and now.
    async fn dispatch(&self, envelope: &Envelope, event: &SchedulerEvent) -> Option<Value> {
        let SchedulerEvent::JobDispatched {
            job_id,
            attempt,
            spec,
            executor,
            pool,
        } = event
        else {
            return None;
        };
        let queue = queue_of(envelope);
        if let (Some(nodes), Some(pool)) = (&self.nodes, pool) {
            let key = (queue.clone(), job_id.clone(), *attempt);
            match self.wait_for_node(nodes, pool, &key).await {
                Placement::Ready(ready) => {
                    return Some(json!({"type": "place", "job_id": job_id,
                        "attempt": attempt, "nodes": ready}))
                }
                Placement::Cancelled => return None,
                Placement::NoPool => {}
            }
        }
        let target = Target {
            job_id,
            attempt: *attempt,
            spec,
            executor: *executor,
            node: None,
        };
        Some(self.run_attempt(envelope, &queue, target).await)
    }

    /// A placed attempt: run on its node, unless the node is lost already.
    async fn run_placed(&self, envelope: &Envelope, event: &SchedulerEvent) -> Option<Value> {
        let SchedulerEvent::JobPlaced {
            job_id,
            attempt,
            node,
            spec,
            executor,
            pool,
        } = event
        else {
            return None;
        };
        let queue = queue_of(envelope);
        // Counted first, so a loss the watch reads from now on finds it.
        let _running = self.count_placed(node, (queue.clone(), job_id.clone(), *attempt));
        let lost = match &self.nodes {
            Some(nodes) => nodes.loss(pool, node).await.unwrap_or_else(|e| {
                tracing::warn!(pool, node, error = %e, "cannot read the node; running the attempt");
                None
            }),
            None => None,
        };
        if let Some(reason) = lost {
            self.stop_everywhere(&queue, job_id, *attempt).await;
            let outcome = Outcome::Lost { reason };
            return Some(
                json!({"type": "report_result", "job_id": job_id, "attempt": attempt,
                "now": unix_millis(), "outcome": outcome}),
            );
        }
        let target = Target {
            job_id,
            attempt: *attempt,
            spec,
            executor: *executor,
            node: Some(node),
        };
        Some(self.run_attempt(envelope, &queue, target).await)
    }

    /// Launches (or adopts) one attempt, records its start, waits for its
    /// end and returns the report.
    async fn run_attempt(&self, envelope: &Envelope, queue: &str, target: Target<'_>) -> Value {
        let Target {
            job_id,
            attempt,
            spec,
            executor,
            node,
        } = target;
        let outcome = match self.executors.get(&executor) {
            None => Outcome::Failed {
                exit_code: None,
                reason: format!("cannot start: no {executor} executor runs in this scheduler"),
                outputs: Default::default(),
            },
            Some(runner) => {
                let this = Attempt {
                    queue: queue.to_string(),
                    job_id: job_id.to_string(),
                    attempt,
                    spec: spec.clone(),
                    key: envelope.id.clone(),
                    node: node.map(str::to_string),
                };
                let started = Instant::now();
                let outcome = match runner.launch(&this).await {
                    Launch::Ended(outcome) => outcome,
                    Launch::Running {
                        handle,
                        adopted,
                        end,
                    } => {
                        if adopted {
                            tracing::info!(queue, job_id, attempt, "adopted a running attempt");
                        }
                        let started_cmd = json!({"type": "record_started", "job_id": job_id,
                            "attempt": attempt, "handle": handle});
                        self.record_started(queue, envelope, started_cmd).await;
                        end.await
                    }
                };
                self.metrics
                    .duration
                    .with_label_values(&[executor.as_str(), outcome_label(&outcome)])
                    .observe(started.elapsed().as_secs_f64());
                outcome
            }
        };
        json!({"type": "report_result", "job_id": job_id, "attempt": attempt,
            "now": unix_millis(), "outcome": outcome})
    }
}

#[async_trait]
impl EffectHandler<Queue> for SchedulerEffects {
    async fn run(&self, envelope: &Envelope, event: &SchedulerEvent) -> Option<Value> {
        match event {
            SchedulerEvent::JobDispatched { .. } => self.dispatch(envelope, event).await,
            SchedulerEvent::JobPlaced { .. } => self.run_placed(envelope, event).await,
            SchedulerEvent::RetryScheduled {
                job_id,
                attempt,
                not_before,
                ..
            } => {
                let wait = not_before.saturating_sub(unix_millis());
                tokio::time::sleep(Duration::from_millis(wait)).await;
                Some(json!({"type": "retry_due", "job_id": job_id, "attempt": attempt}))
            }
            SchedulerEvent::JobCancelled {
                job_id,
                running_attempt: Some(attempt),
                ..
            } => {
                let queue = queue_of(envelope);
                let key = (queue.clone(), job_id.clone(), *attempt);
                if let Some(waiter) = lock(&self.waiting).get(&key) {
                    waiter.notify_one();
                }
                self.stop_everywhere(&queue, job_id, *attempt).await;
                None
            }
            SchedulerEvent::JobLost {
                job_id,
                attempt,
                node: Some(_),
                ..
            } => {
                self.stop_everywhere(&queue_of(envelope), job_id, *attempt)
                    .await;
                None
            }
            _ => None,
        }
    }
}

/// How often every known queue's signal is published again.
pub const SIGNAL_EVERY: Duration = Duration::from_secs(5);

/// How often the queues that had events are read and their signals
/// published if their depth changed.
pub const SIGNAL_BATCH: Duration = Duration::from_millis(200);

/// Publishes queue signals and keeps the queue gauges current.
pub struct QueueSignals {
    registry: Arc<AggregateRegistry<Queue>>,
    bus: Arc<dyn Bus>,
    subjects: Subjects,
    metrics: SchedulerMetrics,
    last: Mutex<BTreeMap<String, QueueSignal>>,
}

impl QueueSignals {
    /// Signals of the queues in `registry`.
    pub fn new(
        registry: Arc<AggregateRegistry<Queue>>,
        bus: Arc<dyn Bus>,
        subjects: Subjects,
        metrics: SchedulerMetrics,
    ) -> Arc<Self> {
        Arc::new(QueueSignals {
            registry,
            bus,
            subjects,
            metrics,
            last: Mutex::new(BTreeMap::new()),
        })
    }

    /// Follows the scheduler's events and publishes until aborted (must run
    /// inside an actix system). Events only mark their queue; the marked
    /// queues are read every `SIGNAL_BATCH`, so a burst of events costs
    /// one read per queue, not one per event.
    pub async fn start(self: Arc<Self>) -> Result<tokio::task::JoinHandle<()>, BusError> {
        let pattern = format!("{}.evt.scheduler.>", self.subjects.prefix());
        let mut events = self.bus.subscribe(&pattern).await?;
        let me = self;
        Ok(actix::spawn(async move {
            for id in me.registry.ids().await.unwrap_or_default() {
                me.refresh(&id, true).await;
            }
            let mut marked: BTreeSet<String> = BTreeSet::new();
            let mut batch = tokio::time::interval(SIGNAL_BATCH);
            let mut every = tokio::time::interval(SIGNAL_EVERY);
            loop {
                tokio::select! {
                    msg = events.next() => {
                        let Some(msg) = msg else { return };
                        if let Some(id) = msg.subject.rsplit('.').next() {
                            marked.insert(id.to_string());
                        }
                    }
                    _ = batch.tick() => {
                        for id in std::mem::take(&mut marked) {
                            me.refresh(&id, false).await;
                        }
                    }
                    _ = every.tick() => {
                        let known: Vec<String> = me.last.lock().map(|l| l.keys().cloned().collect()).unwrap_or_default();
                        for id in known {
                            me.refresh(&id, true).await;
                        }
                    }
                }
            }
        }))
    }

    /// Reads queue `id`'s depth; publishes it if it changed (or `always`).
    async fn refresh(&self, id: &str, always: bool) {
        let reply = self.registry.query(id).await;
        let Some(view) = reply.result.filter(|_| reply.ok) else {
            return;
        };
        let signal = QueueSignal {
            queue: id.to_string(),
            pool: view["config"]["pool"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            pending: view["depth"]["pending"].as_u64().unwrap_or(0),
            running: view["depth"]["running"].as_u64().unwrap_or(0),
            concurrency: view["config"]["concurrency"]
                .as_u64()
                .and_then(|c| u32::try_from(c).ok())
                .unwrap_or(0),
            at: unix_millis(),
        };
        self.gauges(&signal, &view);
        let changed = {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            let same = last.get(id).is_some_and(|old| {
                (old.pending, old.running, old.concurrency, &old.pool)
                    == (
                        signal.pending,
                        signal.running,
                        signal.concurrency,
                        &signal.pool,
                    )
            });
            last.insert(id.to_string(), signal.clone());
            !same
        };
        if changed || always {
            self.publish(&signal).await;
        }
    }

    fn gauges(&self, signal: &QueueSignal, view: &Value) {
        let q = signal.queue.as_str();
        let depth = &self.metrics.depth;
        depth
            .with_label_values(&[q, &signal.pool, "pending"])
            .set(signal.pending as i64);
        depth
            .with_label_values(&[q, &signal.pool, "running"])
            .set(signal.running as i64);
        for status in JobStatus::ALL {
            let n = view["counts"][status.as_str()].as_i64().unwrap_or(0);
            self.metrics
                .jobs
                .with_label_values(&[q, status.as_str()])
                .set(n);
        }
    }

    async fn publish(&self, signal: &QueueSignal) {
        let Ok(body) = Encoding::Json.encode(signal) else {
            return;
        };
        let subject = queue_signal_subject(&self.subjects, &signal.queue);
        let msg =
            Message::new(subject, body).with_header("Content-Type", Encoding::Json.content_type());
        if let Err(e) = self.bus.publish(msg).await {
            tracing::warn!(queue = %signal.queue, error = %e, "queue signal not published");
        }
    }
}
