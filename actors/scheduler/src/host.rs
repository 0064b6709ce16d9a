//! The scheduler's I/O: the effects its events ask for, its queue signals
//! and its metrics. The runtime (`flotilla_host`) runs an effect after
//! its event is stored and records its outcome as a command keyed by the
//! event id, so an attempt's result is recorded once however often the
//! effect is re-driven.
//!
//! - `job_dispatched` → launch (or adopt) the attempt on the queue's
//!   executor, record `record_started` with its handle as soon as it
//!   exists, wait for its end, and report it (`report_result`);
//! - `retry_scheduled` → sleep until `not_before`, then `retry_due`;
//! - `job_cancelled` with a running attempt → stop it.
//!
//! [`QueueSignals`] follows the scheduler's events on the bus and publishes
//! each changed queue's depth on `<prefix>.signal.queue.<queue>` (see
//! `flotilla_messages::scheduler::QueueSignal`), and again every few
//! seconds for late subscribers, updating the Prometheus gauges on the way.

use crate::executor::{Attempt, Executor, Launch};
use crate::queue::{JobStatus, Queue};
use async_trait::async_trait;
use flotilla_bus::{Bus, BusError, Message};
use flotilla_host::{outcome_command_id, unix_millis, AggregateRegistry, EffectHandler};
use flotilla_messages::scheduler::{
    queue_signal_subject, ExecutorKind, Outcome, QueueSignal, SchedulerEvent,
    DEFAULT_KILL_GRACE_SECONDS,
};
use flotilla_messages::{CommandRequest, Encoding, Envelope, Subjects};
use prometheus::{HistogramOpts, HistogramVec, IntGaugeVec, Opts, Registry};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

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

/// Runs the scheduler's effects on its executors.
pub struct SchedulerEffects {
    executors: HashMap<ExecutorKind, Arc<dyn Executor>>,
    /// Weak: the registry holds these effects, and a strong link back
    /// would keep both (and the log they share) alive for ever.
    registry: OnceLock<Weak<AggregateRegistry<Queue>>>,
    metrics: SchedulerMetrics,
}

impl SchedulerEffects {
    /// Effects on `executors` (one per kind; a dispatch to a kind not given
    /// fails its attempt with a clear reason).
    pub fn new(executors: Vec<Arc<dyn Executor>>, metrics: SchedulerMetrics) -> Arc<Self> {
        Arc::new(SchedulerEffects {
            executors: executors.into_iter().map(|e| (e.kind(), e)).collect(),
            registry: OnceLock::new(),
            metrics,
        })
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

    async fn run_attempt(&self, envelope: &Envelope, event: &SchedulerEvent) -> Option<Value> {
        let SchedulerEvent::JobDispatched {
            job_id,
            attempt,
            spec,
            executor,
        } = event
        else {
            return None;
        };
        let queue = queue_of(envelope);
        let outcome = match self.executors.get(executor) {
            None => Outcome::Failed {
                exit_code: None,
                reason: format!("cannot start: no {executor} executor runs in this scheduler"),
                outputs: Default::default(),
            },
            Some(runner) => {
                let this = Attempt {
                    queue: queue.clone(),
                    job_id: job_id.clone(),
                    attempt: *attempt,
                    spec: spec.clone(),
                    key: envelope.id.clone(),
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
                        self.record_started(&queue, envelope, started_cmd).await;
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
        Some(
            json!({"type": "report_result", "job_id": job_id, "attempt": attempt,
            "now": unix_millis(), "outcome": outcome}),
        )
    }
}

#[async_trait]
impl EffectHandler<Queue> for SchedulerEffects {
    async fn run(&self, envelope: &Envelope, event: &SchedulerEvent) -> Option<Value> {
        match event {
            SchedulerEvent::JobDispatched { .. } => self.run_attempt(envelope, event).await,
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
                let grace = Duration::from_secs_f64(DEFAULT_KILL_GRACE_SECONDS);
                for executor in self.executors.values() {
                    executor.stop(&queue, job_id, *attempt, grace).await;
                }
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
