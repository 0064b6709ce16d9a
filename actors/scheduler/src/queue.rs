//! The queue aggregate: one queue's jobs, from `submit` through attempts to
//! succeeded, failed, timed out or cancelled.
//!
//! A queue holds its jobs so that the concurrency limit and the priorities
//! are decided on one consistent view: a command that frees a slot (a
//! result, a cancel, a higher limit) hands it to the next ready job in the
//! same atomic append. The rules:
//!
//! - `configure_queue` validates (`INVALID_FIELD`) and records the settings;
//!   the same settings again record nothing. The first `submit` to a queue
//!   never configured records the defaults first.
//! - `submit` validates the job id and spec (`INVALID_FIELD`); on a `local`
//!   queue its program must be in the host's allowlist (the aggregate's
//!   settings, see [`crate::AllowedCommands`]; `COMMAND_NOT_ALLOWED`
//!   otherwise, so a refused job is never accepted); a job id in
//!   use with the same spec records nothing (a retried submit), with a
//!   different spec is `ALREADY_EXISTS`. `configure_queue` that turns a
//!   queue to `local` is refused the same way while one of its unfinished
//!   jobs names a program the list does not allow.
//! - Ready jobs are dispatched while fewer than `concurrency` attempts are
//!   dispatched or started: highest `priority` first, then submission order.
//!   A dispatch (`job_dispatched`, attempt n) asks the host to start the
//!   attempt; `record_started` records where it runs (`job_started`).
//!   Lowering the limit stops nothing: running attempts finish, and no new
//!   one starts until the running ones are below it.
//! - `report_result` for the current attempt of a dispatched or started job
//!   records its end; for any other attempt, or a finished job, it records
//!   nothing (a late or repeated report changes nothing). A failure or
//!   timeout with retries left (`backoff_limit`) schedules attempt n+1 after
//!   the spec's backoff counted from the report's `now`; `retry_due` then
//!   makes it ready again (`job_requeued`). A success without a value for a
//!   job that expects one is recorded as a failure, so nothing is lost.
//! - `cancel` cancels a job that has not finished (`INVALID_STATE` once it
//!   has; cancelling again records nothing); a dispatched attempt is named
//!   in the event so the host stops it.
//! - `place` (from the host, with the ready nodes of the queue's pool)
//!   places the current attempt of a dispatched job not placed yet on the
//!   node [`choose_node`] picks — fewest of this queue's attempts holding a
//!   slot there, then node id — and records `job_placed`; for any other
//!   attempt it records nothing. A `place` naming no node, or a node id
//!   that is not an id, is `INVALID_FIELD`.
//! - `node_lost` records `job_lost` for every attempt holding a slot on
//!   that node, naming the node: each job waits for a slot again and runs
//!   as a new attempt (not counted as a retry), dispatched in the same
//!   append when a slot is free. A node no attempt runs on records nothing.

use flotilla_messages::scheduler::{
    validate_job_id, ExecutorHandle, ExecutorKind, JobOutputs, JobSpec, Outcome, QueueConfig,
    ReportResult, SchedulerCommand, SchedulerEvent, COMMAND_TYPES,
};
use flotilla_messages::{validate_id, Actor, ErrorCode, Page, Rejection};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

use crate::placement::choose_node;
use crate::AllowedCommands;
use flotilla_host::Aggregate;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for a slot.
    Pending,
    /// Waiting for its retry's backoff to pass.
    Backoff,
    /// Given a slot; the host is starting it.
    Dispatched,
    /// Its process or Job exists.
    Running,
    /// Finished with success.
    Succeeded,
    /// Failed with no retry left.
    Failed,
    /// Ran past its timeout with no retry left.
    TimedOut,
    /// Cancelled.
    Cancelled,
}

impl JobStatus {
    /// Every status, in life order.
    pub const ALL: [JobStatus; 8] = [
        JobStatus::Pending,
        JobStatus::Backoff,
        JobStatus::Dispatched,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::TimedOut,
        JobStatus::Cancelled,
    ];

    /// The wire spelling, e.g. `timed_out`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Backoff => "backoff",
            JobStatus::Dispatched => "dispatched",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::TimedOut => "timed_out",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the job will change no more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::TimedOut | JobStatus::Cancelled
        )
    }

    /// Whether it holds one of the queue's slots.
    pub fn holds_slot(self) -> bool {
        matches!(self, JobStatus::Dispatched | JobStatus::Running)
    }

    /// Whether it counts as pending in the queue's depth.
    pub fn is_waiting(self) -> bool {
        matches!(self, JobStatus::Pending | JobStatus::Backoff)
    }
}

/// How one attempt went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptStatus {
    /// Given a slot (waiting for a node, or being started).
    Dispatched,
    /// Its process or Job exists.
    Running,
    /// It succeeded.
    Succeeded,
    /// It failed.
    Failed,
    /// It ran past its timeout.
    TimedOut,
    /// It vanished, or its node failed or left the pool.
    Lost,
    /// Its job was cancelled while it ran.
    Cancelled,
}

/// One attempt of a job: where it ran and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// The attempt number (1, 2, ...).
    pub attempt: u32,
    /// The node it was placed on, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// How it went.
    pub status: AttemptStatus,
    /// Why it failed, timed out, was lost or cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// How many attempts a job keeps a record of (the newest; the log keeps
/// them all).
pub const ATTEMPTS_KEPT: usize = 100;

/// One job and what its attempts gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job's id.
    pub job_id: String,
    /// What it runs.
    pub spec: JobSpec,
    /// Its place in submission order.
    pub number: u64,
    /// Where it is.
    pub status: JobStatus,
    /// The latest attempt dispatched (0 before the first).
    pub attempt: u32,
    /// Where the latest attempt runs, once started.
    pub handle: Option<ExecutorHandle>,
    /// The value of the successful attempt.
    pub value: Option<f64>,
    /// The latest attempt's exit status, if it exited non-zero.
    pub exit_code: Option<i32>,
    /// Why the latest attempt failed (or the job was cancelled).
    pub reason: Option<String>,
    /// The latest finished attempt's output.
    pub outputs: JobOutputs,
    /// When the scheduled retry may start (unix milliseconds).
    pub not_before: Option<u64>,
    /// Attempts lost (not counted as retries).
    #[serde(default)]
    pub lost: u32,
    /// Its place in the order jobs finished, once final (the oldest
    /// finished job is forgotten first when the queue keeps too many).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<u64>,
    /// When its end was reported (unix milliseconds), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<u64>,
    /// The node the latest attempt was placed on, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Its attempts, oldest first (at most [`ATTEMPTS_KEPT`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<AttemptRecord>,
}

impl JobRecord {
    /// Changes the record of the latest attempt, if it is `attempt`.
    fn update_attempt(&mut self, attempt: u32, change: impl FnOnce(&mut AttemptRecord)) {
        if let Some(record) = self.attempts.last_mut().filter(|r| r.attempt == attempt) {
            change(record);
        }
    }

    /// Records how `attempt` ended.
    fn end_attempt(&mut self, attempt: u32, status: AttemptStatus, reason: Option<String>) {
        self.update_attempt(attempt, |r| {
            r.status = status;
            r.reason = reason;
        });
    }

    fn view(&self) -> Value {
        json!({
            "job_id": self.job_id,
            "status": self.status.as_str(),
            "attempt": self.attempt,
            "node": self.node,
            "attempts": self.attempts,
            "priority": self.spec.priority,
            "trial_id": self.spec.trial_id,
            "value": self.value,
            "exit_code": self.exit_code,
            "reason": self.reason,
            "handle": self.handle,
            "outputs": self.outputs,
            "not_before": self.not_before,
            "ended_at": self.ended_at,
        })
    }
}

/// The order ready jobs are dispatched in: priority (highest first), then
/// submission number.
type ReadyKey = (i64, u64);

/// The state of a queue that exists. Snapshots hold the settings and the
/// jobs; the indexes are rebuilt from the jobs' statuses when read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "StoredQueue")]
struct QueueState {
    config: QueueConfig,
    jobs: BTreeMap<String, JobRecord>,
    submitted: u64,
    /// Jobs that ever finished.
    ended: u64,
    /// The latest `now` a report told (unix milliseconds): the queue's time.
    clock: u64,
    /// Finished jobs by the order they finished: derived.
    #[serde(skip)]
    by_end: BTreeMap<u64, String>,
    /// Finished jobs with a reported end, by its time: derived.
    #[serde(skip)]
    by_end_time: BTreeSet<(u64, String)>,
    /// Ready jobs by dispatch order: derived.
    #[serde(skip)]
    ready: BTreeMap<ReadyKey, String>,
    /// Jobs holding a slot: derived.
    #[serde(skip)]
    holding: BTreeSet<String>,
    /// Jobs waiting for a backoff: derived.
    #[serde(skip)]
    backoff: BTreeSet<String>,
}

/// The recorded fields of [`QueueState`].
#[derive(Deserialize)]
struct StoredQueue {
    config: QueueConfig,
    jobs: BTreeMap<String, JobRecord>,
    submitted: u64,
    #[serde(default)]
    ended: u64,
    #[serde(default)]
    clock: u64,
}

impl From<StoredQueue> for QueueState {
    fn from(stored: StoredQueue) -> Self {
        let mut state = QueueState::new(stored.config);
        state.submitted = stored.submitted;
        state.ended = stored.ended;
        state.clock = stored.clock;
        for (id, job) in stored.jobs {
            let status = job.status;
            state.jobs.insert(
                id.clone(),
                JobRecord {
                    status: JobStatus::Cancelled,
                    ..job
                },
            );
            state.set_status(&id, status);
            state.index_end(&id);
        }
        state
    }
}

/// One queue: its settings and jobs. The default is a queue never
/// configured nor submitted to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Queue {
    state: Option<QueueState>,
}

/// How many jobs of a queue are pending and running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Depth {
    /// Waiting for a slot or a backoff.
    pub pending: u64,
    /// Holding a slot.
    pub running: u64,
}

impl Queue {
    /// Whether the queue exists.
    pub fn exists(&self) -> bool {
        self.state.is_some()
    }

    /// Its settings (the defaults before it exists).
    pub fn config(&self) -> QueueConfig {
        self.state
            .as_ref()
            .map_or_else(QueueConfig::default, |s| s.config.clone())
    }

    /// One job.
    pub fn job(&self, job_id: &str) -> Option<&JobRecord> {
        self.state.as_ref()?.jobs.get(job_id)
    }

    /// Every job, by id.
    pub fn jobs(&self) -> impl Iterator<Item = &JobRecord> {
        self.state.iter().flat_map(|s| s.jobs.values())
    }

    /// Pending and running counts.
    pub fn depth(&self) -> Depth {
        self.state.as_ref().map_or_else(Depth::default, |s| Depth {
            pending: (s.ready.len() + s.backoff.len()) as u64,
            running: s.holding.len() as u64,
        })
    }
}

fn not_found(job_id: &str) -> Rejection {
    Rejection::new(
        ErrorCode::NotFound,
        format!("job {job_id} is not in this queue"),
    )
}

impl QueueState {
    fn new(config: QueueConfig) -> Self {
        QueueState {
            config,
            jobs: BTreeMap::new(),
            ready: BTreeMap::new(),
            holding: BTreeSet::new(),
            backoff: BTreeSet::new(),
            submitted: 0,
            ended: 0,
            clock: 0,
            by_end: BTreeMap::new(),
            by_end_time: BTreeSet::new(),
        }
    }

    /// Puts a final job in the retention indexes (numbering it if a
    /// snapshot from before retention left it without a number).
    fn index_end(&mut self, job_id: &str) {
        let Some(job) = self.jobs.get_mut(job_id).filter(|j| j.status.is_final()) else {
            return;
        };
        let number = *job.ended.get_or_insert_with(|| {
            self.ended += 1;
            self.ended
        });
        self.by_end.insert(number, job_id.to_string());
        if let Some(at) = job.ended_at {
            self.by_end_time.insert((at, job_id.to_string()));
        }
    }

    /// Records that a job just became final, its end reported `at`.
    fn end(&mut self, job_id: &str, at: Option<u64>) {
        if let Some(job) = self.jobs.get_mut(job_id) {
            job.ended = None;
            job.ended_at = at;
        }
        self.index_end(job_id);
    }

    /// Forgets the finished jobs beyond the retention settings: the oldest
    /// past `retain_finished`, and those ended more than
    /// `retain_finished_seconds` before the queue's time.
    fn expire(&mut self) {
        while self.by_end.len() > self.config.retain_finished as usize {
            let Some((_, id)) = self.by_end.pop_first() else {
                break;
            };
            self.forget(&id);
        }
        let keep_ms = self.config.retain_finished_seconds.saturating_mul(1000);
        let horizon = self.clock.saturating_sub(keep_ms);
        while let Some((at, id)) = self.by_end_time.first().cloned() {
            if at >= horizon {
                break;
            }
            self.forget(&id);
        }
    }

    /// Drops a finished job from the state (the log still holds it).
    fn forget(&mut self, job_id: &str) {
        let Some(job) = self.jobs.remove(job_id) else {
            return;
        };
        if let Some(number) = job.ended {
            self.by_end.remove(&number);
        }
        if let Some(at) = job.ended_at {
            self.by_end_time.remove(&(at, job_id.to_string()));
        }
    }

    /// Moves the queue's time to `at` if that is later.
    fn tick(&mut self, at: Option<u64>) {
        self.clock = self.clock.max(at.unwrap_or(0));
    }

    fn job(&self, job_id: &str) -> Result<&JobRecord, Rejection> {
        self.jobs.get(job_id).ok_or_else(|| not_found(job_id))
    }

    /// `events`, followed by the dispatches the state after them allows.
    ///
    /// It follows only what the events change — the settings, the slots
    /// they free, the jobs they make ready or take out of line — rather
    /// than a copy of the queue, so a command costs as much in a queue of
    /// ten jobs as in one of ten thousand.
    fn then_dispatch(&self, mut events: Vec<SchedulerEvent>) -> Vec<SchedulerEvent> {
        let mut config = &self.config;
        let mut holding = self.holding.len();
        let mut submitted = self.submitted;
        // Jobs the events make ready: key, id, spec, last attempt.
        let mut added: Vec<(ReadyKey, &str, &JobSpec, u32)> = Vec::new();
        let mut removed: BTreeSet<ReadyKey> = BTreeSet::new();
        for event in &events {
            let known = event.job_id().and_then(|id| self.jobs.get(id));
            let held = known.is_some_and(|j| j.status.holds_slot());
            match event {
                SchedulerEvent::QueueConfigured { config: c } => config = c,
                SchedulerEvent::JobSubmitted { job_id, spec } => {
                    submitted += 1;
                    added.push(((-i64::from(spec.priority), submitted), job_id, spec, 0));
                }
                SchedulerEvent::JobSucceeded { .. }
                | SchedulerEvent::JobFailed { .. }
                | SchedulerEvent::JobTimedOut { .. }
                | SchedulerEvent::JobCancelled { .. }
                    if held =>
                {
                    holding -= 1
                }
                SchedulerEvent::JobCancelled { .. } => {
                    if let Some(job) = known.filter(|j| j.status == JobStatus::Pending) {
                        removed.insert(Self::ready_key(job));
                    }
                }
                SchedulerEvent::JobLost { .. } | SchedulerEvent::JobRequeued { .. } => {
                    if let Some(job) = known {
                        holding -= usize::from(held);
                        added.push((Self::ready_key(job), &job.job_id, &job.spec, job.attempt));
                    }
                }
                _ => {}
            }
        }
        let free = (config.concurrency as usize).saturating_sub(holding);
        let mut line: Vec<(ReadyKey, &str, &JobSpec, u32)> = self
            .ready
            .iter()
            .filter(|(key, _)| !removed.contains(key))
            .take(free)
            .map(|(key, id)| {
                let job = &self.jobs[id];
                (*key, id.as_str(), &job.spec, job.attempt)
            })
            .chain(added)
            .collect();
        line.sort_by_key(|entry| entry.0);
        let dispatches: Vec<SchedulerEvent> = line
            .into_iter()
            .take(free)
            .map(|(_, id, spec, attempt)| SchedulerEvent::JobDispatched {
                job_id: id.to_string(),
                attempt: attempt + 1,
                spec: spec.clone(),
                executor: config.executor,
                pool: Some(config.pool.clone()),
            })
            .collect();
        events.extend(dispatches);
        events
    }

    fn decide_configure(
        &self,
        config: &QueueConfig,
        allowed: &AllowedCommands,
    ) -> Result<Vec<SchedulerEvent>, Rejection> {
        config.validate()?;
        if *config == self.config {
            return Ok(vec![]);
        }
        if config.executor == ExecutorKind::Local && self.config.executor != ExecutorKind::Local {
            // Its waiting jobs would run here: each must be allowed.
            for job in self.jobs.values().filter(|j| !j.status.is_final()) {
                allowed.check(&job.spec).map_err(|r| {
                    Rejection::new(r.code, format!("job {}: {}", job.job_id, r.message))
                })?;
            }
        }
        Ok(self.then_dispatch(vec![SchedulerEvent::QueueConfigured {
            config: config.clone(),
        }]))
    }

    fn decide_submit(
        &self,
        job_id: &str,
        spec: &JobSpec,
        allowed: &AllowedCommands,
    ) -> Result<Vec<SchedulerEvent>, Rejection> {
        validate_job_id(job_id)?;
        spec.validate()?;
        if self.config.executor == ExecutorKind::Local {
            allowed.check(spec)?;
        }
        if let Some(job) = self.jobs.get(job_id) {
            if job.spec == *spec {
                return Ok(vec![]);
            }
            return Err(Rejection::new(
                ErrorCode::AlreadyExists,
                format!("job {job_id} exists with another spec"),
            ));
        }
        Ok(self.then_dispatch(vec![SchedulerEvent::JobSubmitted {
            job_id: job_id.to_string(),
            spec: spec.clone(),
        }]))
    }

    fn decide_cancel(
        &self,
        job_id: &str,
        reason: &Option<String>,
    ) -> Result<Vec<SchedulerEvent>, Rejection> {
        let job = self.job(job_id)?;
        match job.status {
            JobStatus::Cancelled => return Ok(vec![]),
            s if s.is_final() => {
                return Err(Rejection::new(
                    ErrorCode::InvalidState,
                    format!("cancel: job {job_id} has finished ({})", s.as_str()),
                ))
            }
            _ => {}
        }
        Ok(self.then_dispatch(vec![SchedulerEvent::JobCancelled {
            job_id: job_id.to_string(),
            reason: reason.clone(),
            running_attempt: job.status.holds_slot().then_some(job.attempt),
        }]))
    }

    fn decide_started(
        &self,
        job_id: &str,
        attempt: u32,
        handle: &ExecutorHandle,
    ) -> Result<Vec<SchedulerEvent>, Rejection> {
        let job = self.job(job_id)?;
        if job.attempt != attempt || job.status != JobStatus::Dispatched {
            return Ok(vec![]);
        }
        Ok(vec![SchedulerEvent::JobStarted {
            job_id: job_id.to_string(),
            attempt,
            handle: handle.clone(),
            node: job.node.clone(),
        }])
    }

    /// The queue's attempts holding a slot on each node.
    fn load_by_node(&self) -> BTreeMap<&str, usize> {
        let mut load = BTreeMap::new();
        for id in &self.holding {
            if let Some(node) = self.jobs.get(id).and_then(|j| j.node.as_deref()) {
                *load.entry(node).or_default() += 1;
            }
        }
        load
    }

    fn decide_place(
        &self,
        job_id: &str,
        attempt: u32,
        nodes: &[String],
    ) -> Result<Vec<SchedulerEvent>, Rejection> {
        if nodes.is_empty() {
            return Err(Rejection::invalid(
                "nodes must name at least one ready node",
            ));
        }
        for (i, node) in nodes.iter().enumerate() {
            validate_id("node id", node)
                .map_err(|e| Rejection::invalid(format!("nodes[{i}]: {e}")))?;
        }
        let job = self.job(job_id)?;
        let placeable =
            job.attempt == attempt && job.status == JobStatus::Dispatched && job.node.is_none();
        let Some(node) = choose_node(nodes, &self.load_by_node()).filter(|_| placeable) else {
            return Ok(vec![]);
        };
        Ok(vec![SchedulerEvent::JobPlaced {
            job_id: job_id.to_string(),
            attempt,
            node: node.to_string(),
            spec: job.spec.clone(),
            executor: self.config.executor,
            pool: self.config.pool.clone(),
        }])
    }

    fn decide_node_lost(&self, node: &str, reason: &str) -> Result<Vec<SchedulerEvent>, Rejection> {
        validate_id("node id", node).map_err(|e| Rejection::invalid(format!("node: {e}")))?;
        let lost = self
            .holding
            .iter()
            .filter_map(|id| self.jobs.get(id))
            .filter(|job| job.node.as_deref() == Some(node))
            .map(|job| SchedulerEvent::JobLost {
                job_id: job.job_id.clone(),
                attempt: job.attempt,
                reason: reason.to_string(),
                node: Some(node.to_string()),
            })
            .collect();
        Ok(self.then_dispatch(lost))
    }

    fn decide_report(&self, report: &ReportResult) -> Result<Vec<SchedulerEvent>, Rejection> {
        let job = self.job(&report.job_id)?;
        if let Outcome::Succeeded { value: Some(v), .. } = report.outcome {
            if !v.is_finite() {
                return Err(Rejection::invalid(format!(
                    "outcome.value must be finite, got {v}"
                )));
            }
        }
        if job.attempt != report.attempt || !job.status.holds_slot() {
            return Ok(vec![]);
        }
        let retry = job.attempt - job.lost.min(job.attempt) <= job.spec.backoff_limit;
        let job_id = report.job_id.clone();
        let attempt = report.attempt;
        let mut events = vec![match report.outcome.clone() {
            // A manifest is all a `manifests` queue makes: it has no value.
            Outcome::Succeeded {
                value: None,
                outputs,
            } if job.spec.expects_value && self.config.executor != ExecutorKind::Manifests => {
                SchedulerEvent::JobFailed {
                    job_id: job_id.clone(),
                    attempt,
                    exit_code: Some(0),
                    reason: "succeeded without a value, but the job expects one".into(),
                    outputs,
                    will_retry: retry,
                    at: Some(report.now),
                }
            }
            Outcome::Succeeded { value, outputs } => SchedulerEvent::JobSucceeded {
                job_id: job_id.clone(),
                attempt,
                value,
                outputs,
                at: Some(report.now),
            },
            Outcome::Failed {
                exit_code,
                reason,
                outputs,
            } => SchedulerEvent::JobFailed {
                job_id: job_id.clone(),
                attempt,
                exit_code,
                reason,
                outputs,
                will_retry: retry,
                at: Some(report.now),
            },
            Outcome::Lost { reason } => SchedulerEvent::JobLost {
                job_id: job_id.clone(),
                attempt,
                reason,
                node: job.node.clone(),
            },
            Outcome::TimedOut {
                after_seconds,
                outputs,
            } => SchedulerEvent::JobTimedOut {
                job_id: job_id.clone(),
                attempt,
                after_seconds,
                outputs,
                will_retry: retry,
                at: Some(report.now),
            },
        }];
        let failed = matches!(
            events[0],
            SchedulerEvent::JobFailed { .. } | SchedulerEvent::JobTimedOut { .. }
        );
        if failed && retry {
            let delay_ms = job.spec.backoff_ms(attempt + 1);
            events.push(SchedulerEvent::RetryScheduled {
                job_id,
                attempt: attempt + 1,
                delay_ms,
                not_before: report.now.saturating_add(delay_ms),
            });
        }
        Ok(self.then_dispatch(events))
    }

    fn decide_retry_due(
        &self,
        job_id: &str,
        attempt: u32,
    ) -> Result<Vec<SchedulerEvent>, Rejection> {
        let job = self.job(job_id)?;
        if job.status != JobStatus::Backoff || job.attempt + 1 != attempt {
            return Ok(vec![]);
        }
        Ok(self.then_dispatch(vec![SchedulerEvent::JobRequeued {
            job_id: job_id.to_string(),
            attempt,
        }]))
    }

    fn ready_key(job: &JobRecord) -> ReadyKey {
        (-i64::from(job.spec.priority), job.number)
    }

    /// Moves `job_id` to `status`, keeping the indexes in step.
    fn set_status(&mut self, job_id: &str, status: JobStatus) {
        let Some(job) = self.jobs.get_mut(job_id) else {
            return;
        };
        let key = Self::ready_key(job);
        match job.status {
            JobStatus::Pending => {
                self.ready.remove(&key);
            }
            JobStatus::Backoff => {
                self.backoff.remove(job_id);
            }
            s if s.holds_slot() => {
                self.holding.remove(job_id);
            }
            _ => {}
        }
        job.status = status;
        match status {
            JobStatus::Pending => {
                self.ready.insert(key, job_id.to_string());
            }
            JobStatus::Backoff => {
                self.backoff.insert(job_id.to_string());
            }
            s if s.holds_slot() => {
                self.holding.insert(job_id.to_string());
            }
            _ => {}
        }
    }

    /// Records how `attempt` of `job_id` ended.
    fn end_attempt(&mut self, job_id: &str, attempt: u32, status: AttemptStatus, reason: &str) {
        if let Some(job) = self.jobs.get_mut(job_id) {
            job.end_attempt(attempt, status, Some(reason.to_string()));
        }
    }

    fn finish(
        &mut self,
        job_id: &str,
        exit_code: Option<i32>,
        reason: Option<String>,
        outputs: &JobOutputs,
    ) {
        if let Some(job) = self.jobs.get_mut(job_id) {
            job.exit_code = exit_code;
            job.reason = reason;
            job.outputs = outputs.clone();
        }
    }

    /// An attempt failed or timed out: the job backs off for a retry, or
    /// ends with `end`'s status; either way its exit code and reason stay.
    fn attempt_failed(
        &mut self,
        job_id: &str,
        will_retry: bool,
        end: (JobStatus, Option<i32>, String),
        outputs: &JobOutputs,
    ) {
        let (status, exit_code, reason) = end;
        let status = if will_retry {
            JobStatus::Backoff
        } else {
            status
        };
        self.set_status(job_id, status);
        self.finish(job_id, exit_code, Some(reason), outputs);
    }

    fn apply(&mut self, event: &SchedulerEvent) {
        match event {
            SchedulerEvent::QueueConfigured { config } => self.config = config.clone(),
            SchedulerEvent::JobSubmitted { job_id, spec } => {
                self.submitted += 1;
                self.jobs.insert(
                    job_id.clone(),
                    JobRecord {
                        job_id: job_id.clone(),
                        spec: spec.clone(),
                        number: self.submitted,
                        status: JobStatus::Cancelled,
                        attempt: 0,
                        handle: None,
                        value: None,
                        exit_code: None,
                        reason: None,
                        outputs: JobOutputs::default(),
                        not_before: None,
                        lost: 0,
                        ended: None,
                        ended_at: None,
                        node: None,
                        attempts: Vec::new(),
                    },
                );
                self.set_status(job_id, JobStatus::Pending);
            }
            SchedulerEvent::JobDispatched {
                job_id, attempt, ..
            } => {
                self.set_status(job_id, JobStatus::Dispatched);
                if let Some(job) = self.jobs.get_mut(job_id) {
                    job.attempt = *attempt;
                    job.handle = None;
                    job.node = None;
                    job.not_before = None;
                    if job.attempts.len() >= ATTEMPTS_KEPT {
                        job.attempts.remove(0);
                    }
                    job.attempts.push(AttemptRecord {
                        attempt: *attempt,
                        node: None,
                        status: AttemptStatus::Dispatched,
                        reason: None,
                    });
                }
            }
            SchedulerEvent::JobPlaced {
                job_id,
                attempt,
                node,
                ..
            } => {
                if let Some(job) = self.jobs.get_mut(job_id) {
                    job.node = Some(node.clone());
                    job.update_attempt(*attempt, |r| r.node = Some(node.clone()));
                }
            }
            SchedulerEvent::JobStarted {
                job_id,
                attempt,
                handle,
                ..
            } => {
                self.set_status(job_id, JobStatus::Running);
                if let Some(job) = self.jobs.get_mut(job_id) {
                    job.handle = Some(handle.clone());
                    job.update_attempt(*attempt, |r| r.status = AttemptStatus::Running);
                }
            }
            SchedulerEvent::JobSucceeded {
                job_id,
                attempt,
                value,
                outputs,
                at,
            } => {
                self.tick(*at);
                self.set_status(job_id, JobStatus::Succeeded);
                self.finish(job_id, None, None, outputs);
                if let Some(job) = self.jobs.get_mut(job_id) {
                    job.value = *value;
                    job.end_attempt(*attempt, AttemptStatus::Succeeded, None);
                }
                self.end(job_id, *at);
            }
            SchedulerEvent::JobFailed {
                job_id,
                attempt,
                exit_code,
                reason,
                outputs,
                will_retry,
                at,
            } => {
                self.tick(*at);
                let end = (JobStatus::Failed, *exit_code, reason.clone());
                self.attempt_failed(job_id, *will_retry, end, outputs);
                self.end_attempt(job_id, *attempt, AttemptStatus::Failed, reason);
                if !will_retry {
                    self.end(job_id, *at);
                }
            }
            SchedulerEvent::JobTimedOut {
                job_id,
                attempt,
                after_seconds,
                outputs,
                will_retry,
                at,
            } => {
                self.tick(*at);
                let reason = format!("timed out after {after_seconds} s");
                self.end_attempt(job_id, *attempt, AttemptStatus::TimedOut, &reason);
                let end = (JobStatus::TimedOut, None, reason);
                self.attempt_failed(job_id, *will_retry, end, outputs);
                if !will_retry {
                    self.end(job_id, *at);
                }
            }
            SchedulerEvent::RetryScheduled {
                job_id, not_before, ..
            } => {
                if let Some(job) = self.jobs.get_mut(job_id) {
                    job.not_before = Some(*not_before);
                }
            }
            SchedulerEvent::JobLost {
                job_id,
                attempt,
                reason,
                ..
            } => {
                self.set_status(job_id, JobStatus::Pending);
                self.end_attempt(job_id, *attempt, AttemptStatus::Lost, reason);
                if let Some(job) = self.jobs.get_mut(job_id) {
                    job.lost += 1;
                    job.reason = Some(reason.clone());
                }
            }
            SchedulerEvent::JobRequeued { job_id, .. } => {
                self.set_status(job_id, JobStatus::Pending);
            }
            SchedulerEvent::JobCancelled {
                job_id,
                reason,
                running_attempt,
            } => {
                self.set_status(job_id, JobStatus::Cancelled);
                if let Some(job) = self.jobs.get_mut(job_id) {
                    job.reason = reason.clone().or_else(|| Some("cancelled".into()));
                    job.not_before = None;
                    if let Some(attempt) = running_attempt {
                        let why = job.reason.clone();
                        job.end_attempt(*attempt, AttemptStatus::Cancelled, why);
                    }
                }
                self.end(job_id, None);
            }
        }
        self.expire();
    }

    /// Every job: the one page there is (so it reads like a paged view).
    fn view(&self) -> Value {
        let mut view = self.view_without_jobs();
        view["jobs"] = self.jobs.values().map(JobRecord::view).collect();
        view["next"] = Value::Null;
        view
    }

    /// The settings, depth and counts of every status.
    fn view_without_jobs(&self) -> Value {
        let mut counts: BTreeMap<&str, u64> =
            JobStatus::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        for job in self.jobs.values() {
            *counts.entry(job.status.as_str()).or_default() += 1;
        }
        json!({
            "config": self.config,
            "depth": {
                "pending": self.ready.len() + self.backoff.len(),
                "running": self.holding.len(),
            },
            "counts": counts,
        })
    }

    /// The view with one page of jobs (by id) and the id to ask for the
    /// next one after, so a reply stays small however long the queue.
    fn view_page(&self, page: &Page) -> Value {
        use std::ops::Bound::{Excluded, Unbounded};
        let from = page.after.as_deref().map_or(Unbounded, Excluded);
        let mut rest = self.jobs.range::<str, _>((from, Unbounded));
        let jobs: Vec<&JobRecord> = rest.by_ref().take(page.limit()).map(|(_, j)| j).collect();
        let next = rest.next().and(jobs.last()).map(|j| j.job_id.clone());
        let mut view = self.view_without_jobs();
        view["jobs"] = jobs.into_iter().map(JobRecord::view).collect();
        view["next"] = json!(next);
        view
    }
}

impl Aggregate for Queue {
    const ACTOR: Actor = Actor::Scheduler;
    const COMMAND_TYPES: &'static [&'static str] = COMMAND_TYPES;
    type Command = SchedulerCommand;
    type Event = SchedulerEvent;
    /// The programs the host's `local` executor may run. A host setting,
    /// not a fact of the queue's history, so it is handed in rather than
    /// recorded: the same events replay to the same queue under any list,
    /// and changing the list changes only what is accepted from then on
    /// (the executor checks again before it runs an attempt).
    type Settings = AllowedCommands;

    /// Decides as the embedded loopback default does, every program
    /// allowed (the simulator and the tests); a host decides under its own
    /// list through [`Aggregate::decide_with`].
    fn decide(&self, command: &SchedulerCommand) -> Result<Vec<SchedulerEvent>, Rejection> {
        self.decide_with(&AllowedCommands::any(), command)
    }

    fn decide_with(
        &self,
        allowed: &AllowedCommands,
        command: &SchedulerCommand,
    ) -> Result<Vec<SchedulerEvent>, Rejection> {
        let fresh;
        let (state, mut prefix) = match &self.state {
            Some(state) => (state, vec![]),
            None => match command {
                SchedulerCommand::ConfigureQueue(_) | SchedulerCommand::Submit { .. } => {
                    fresh = QueueState::new(QueueConfig::default());
                    let configured = SchedulerEvent::QueueConfigured {
                        config: QueueConfig::default(),
                    };
                    (&fresh, vec![configured])
                }
                _ => {
                    return Err(Rejection::new(
                        ErrorCode::NotFound,
                        "the queue does not exist (submit a job or configure it first)",
                    ))
                }
            },
        };
        let events = match command {
            SchedulerCommand::ConfigureQueue(config) => {
                config.validate()?;
                if prefix.is_empty() {
                    state.decide_configure(config, allowed)?
                } else {
                    // A new queue records the given settings, not the defaults.
                    prefix.clear();
                    vec![SchedulerEvent::QueueConfigured {
                        config: config.clone(),
                    }]
                }
            }
            SchedulerCommand::Submit { job_id, spec } => {
                state.decide_submit(job_id, spec, allowed)?
            }
            SchedulerCommand::Cancel { job_id, reason } => state.decide_cancel(job_id, reason)?,
            SchedulerCommand::RecordStarted {
                job_id,
                attempt,
                handle,
            } => state.decide_started(job_id, *attempt, handle)?,
            SchedulerCommand::ReportResult(report) => state.decide_report(report)?,
            SchedulerCommand::RetryDue { job_id, attempt } => {
                state.decide_retry_due(job_id, *attempt)?
            }
            SchedulerCommand::Place {
                job_id,
                attempt,
                nodes,
            } => state.decide_place(job_id, *attempt, nodes)?,
            SchedulerCommand::NodeLost { node, reason } => state.decide_node_lost(node, reason)?,
        };
        prefix.extend(events);
        Ok(prefix)
    }

    fn evolve(mut self, event: &SchedulerEvent) -> Self {
        match (&mut self.state, event) {
            (Some(state), event) => state.apply(event),
            (None, SchedulerEvent::QueueConfigured { config }) => {
                self.state = Some(QueueState::new(config.clone()));
            }
            (None, _) => {}
        }
        self
    }

    fn result(events: &[SchedulerEvent]) -> Value {
        let dispatched: Vec<Value> = events
            .iter()
            .filter_map(|e| match e {
                SchedulerEvent::JobDispatched {
                    job_id, attempt, ..
                } => Some(json!({"job_id": job_id, "attempt": attempt})),
                _ => None,
            })
            .collect();
        let mut jobs: Vec<&str> = events.iter().filter_map(SchedulerEvent::job_id).collect();
        jobs.dedup();
        json!({ "job_ids": jobs, "dispatched": dispatched })
    }

    fn view(&self) -> Value {
        self.state.as_ref().map_or(Value::Null, QueueState::view)
    }

    fn view_page(&self, page: &Page) -> Value {
        self.state
            .as_ref()
            .map_or(Value::Null, |s| s.view_page(page))
    }

    fn event_type(event: &SchedulerEvent) -> &'static str {
        event.event_type()
    }

    fn wants_effect(event: &SchedulerEvent) -> bool {
        matches!(
            event,
            SchedulerEvent::JobDispatched { .. }
                | SchedulerEvent::JobPlaced { .. }
                | SchedulerEvent::RetryScheduled { .. }
                | SchedulerEvent::JobCancelled {
                    running_attempt: Some(_),
                    ..
                }
                | SchedulerEvent::JobLost { node: Some(_), .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_messages::scheduler::{JobSpec, Outcome, MAX_RETAIN_FINISHED as MAX_RETAIN};

    fn spec() -> JobSpec {
        JobSpec::new(vec!["true".into()])
    }

    fn given(events: &[SchedulerEvent]) -> Queue {
        events.iter().fold(Queue::default(), |q, e| q.evolve(e))
    }

    fn when(queue: &Queue, command: SchedulerCommand) -> Result<Vec<SchedulerEvent>, Rejection> {
        queue.decide(&command)
    }

    fn run(commands: Vec<SchedulerCommand>) -> (Queue, Vec<SchedulerEvent>) {
        let mut queue = Queue::default();
        let mut all = Vec::new();
        for c in commands {
            let events = queue.decide(&c).unwrap();
            for e in &events {
                queue = queue.evolve(e);
            }
            all.extend(events);
        }
        (queue, all)
    }

    fn configure(concurrency: u32) -> SchedulerCommand {
        SchedulerCommand::ConfigureQueue(QueueConfig {
            concurrency,
            ..QueueConfig::default()
        })
    }

    fn submit(id: &str, priority: i32) -> SchedulerCommand {
        SchedulerCommand::Submit {
            job_id: id.into(),
            spec: Box::new(JobSpec { priority, ..spec() }),
        }
    }

    fn report(id: &str, attempt: u32, outcome: Outcome) -> SchedulerCommand {
        SchedulerCommand::ReportResult(ReportResult {
            job_id: id.into(),
            attempt,
            now: 1_000,
            outcome,
        })
    }

    fn ok(value: f64) -> Outcome {
        Outcome::Succeeded {
            value: Some(value),
            outputs: JobOutputs::default(),
        }
    }

    fn failed(code: i32) -> Outcome {
        Outcome::Failed {
            exit_code: Some(code),
            reason: format!("exited with status {code}"),
            outputs: JobOutputs::default(),
        }
    }

    fn dispatched(events: &[SchedulerEvent]) -> Vec<(String, u32)> {
        events
            .iter()
            .filter_map(|e| match e {
                SchedulerEvent::JobDispatched {
                    job_id, attempt, ..
                } => Some((job_id.clone(), *attempt)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_first_submit_configures_the_defaults_and_dispatches() {
        let events = when(&Queue::default(), submit("a", 0)).unwrap();
        assert_eq!(
            events[0],
            SchedulerEvent::QueueConfigured {
                config: QueueConfig::default()
            }
        );
        assert_eq!(events[1].event_type(), "job_submitted");
        assert_eq!(dispatched(&events), vec![("a".to_string(), 1)]);
    }

    #[test]
    fn the_concurrency_limit_holds_and_freed_slots_go_to_the_highest_priority() {
        let (queue, events) = run(vec![
            configure(2),
            submit("a", 0),
            submit("b", 0),
            submit("c", 0),
            submit("d", 5),
        ]);
        assert_eq!(
            dispatched(&events),
            vec![("a".to_string(), 1), ("b".to_string(), 1)]
        );
        assert_eq!(
            queue.depth(),
            Depth {
                pending: 2,
                running: 2
            }
        );
        let next = when(&queue, report("a", 1, ok(1.0))).unwrap();
        assert_eq!(dispatched(&next), vec![("d".to_string(), 1)]);
    }

    #[test]
    fn raising_the_concurrency_dispatches_at_once() {
        let (queue, _) = run(vec![submit("a", 0), submit("b", 0), submit("c", 0)]);
        assert_eq!(
            queue.depth(),
            Depth {
                pending: 2,
                running: 1
            }
        );
        let events = when(&queue, configure(3)).unwrap();
        assert_eq!(dispatched(&events).len(), 2);
    }

    #[test]
    fn a_repeated_submit_records_nothing_and_another_spec_is_refused() {
        let (queue, _) = run(vec![submit("a", 0)]);
        assert_eq!(when(&queue, submit("a", 0)).unwrap(), vec![]);
        let e = when(&queue, submit("a", 3)).unwrap_err();
        assert_eq!(e.code, ErrorCode::AlreadyExists);
    }

    #[test]
    fn bad_submits_are_refused_naming_the_field() {
        let bad_id = when(&Queue::default(), submit("a b", 0)).unwrap_err();
        assert_eq!(bad_id.code, ErrorCode::InvalidField);
        assert!(bad_id.message.contains("job_id"), "{}", bad_id.message);
        let empty = SchedulerCommand::Submit {
            job_id: "a".into(),
            spec: Box::new(JobSpec::new(vec![])),
        };
        let e = when(&Queue::default(), empty).unwrap_err();
        assert_eq!(e.message, "spec.command must not be empty");
    }

    #[test]
    fn a_failure_with_retries_left_backs_off_then_requeues() {
        let retrying = SchedulerCommand::Submit {
            job_id: "a".into(),
            spec: Box::new(JobSpec {
                backoff_limit: 1,
                backoff_seconds: Some(2.0),
                ..spec()
            }),
        };
        let (queue, _) = run(vec![retrying]);
        let events = when(&queue, report("a", 1, failed(3))).unwrap();
        assert!(matches!(
            events[0],
            SchedulerEvent::JobFailed {
                will_retry: true,
                ..
            }
        ));
        assert_eq!(
            events[1],
            SchedulerEvent::RetryScheduled {
                job_id: "a".into(),
                attempt: 2,
                delay_ms: 2000,
                not_before: 3000
            }
        );
        let queue = events.iter().fold(queue, |q, e| q.evolve(e));
        assert_eq!(queue.job("a").unwrap().status, JobStatus::Backoff);
        assert_eq!(
            queue.depth(),
            Depth {
                pending: 1,
                running: 0
            }
        );
        // A stale wake-up records nothing; the right one dispatches attempt 2.
        let stale = SchedulerCommand::RetryDue {
            job_id: "a".into(),
            attempt: 5,
        };
        assert_eq!(when(&queue, stale).unwrap(), vec![]);
        let due = SchedulerCommand::RetryDue {
            job_id: "a".into(),
            attempt: 2,
        };
        let events = when(&queue, due).unwrap();
        assert_eq!(dispatched(&events), vec![("a".to_string(), 2)]);
        let queue = events.iter().fold(queue, |q, e| q.evolve(e));
        let last = when(&queue, report("a", 2, failed(1))).unwrap();
        assert!(matches!(
            last[..],
            [SchedulerEvent::JobFailed {
                will_retry: false,
                ..
            }]
        ));
        let queue = last.iter().fold(queue, |q, e| q.evolve(e));
        let job = queue.job("a").unwrap();
        assert_eq!(job.status, JobStatus::Failed);
        assert_eq!(job.exit_code, Some(1));
    }

    #[test]
    fn a_lost_attempt_runs_again_without_using_a_retry() {
        let (queue, _) = run(vec![configure(1), submit("a", 0), submit("b", 0)]);
        let lost = Outcome::Lost {
            reason: "gone".into(),
        };
        let events = when(&queue, report("a", 1, lost)).unwrap();
        assert_eq!(events[0].event_type(), "job_lost");
        // Lost goes back in line by priority and submission: "a" first.
        assert_eq!(dispatched(&events), vec![("a".to_string(), 2)]);
        let queue = events.iter().fold(queue, |q, e| q.evolve(e));
        let last = when(&queue, report("a", 2, failed(1))).unwrap();
        assert!(matches!(
            last[0],
            SchedulerEvent::JobFailed {
                will_retry: false,
                ..
            }
        ));
    }

    #[test]
    fn a_timeout_without_retries_is_final() {
        let (queue, _) = run(vec![submit("a", 0)]);
        let timed_out = Outcome::TimedOut {
            after_seconds: 1.5,
            outputs: JobOutputs::default(),
        };
        let (queue, _) = {
            let events = when(&queue, report("a", 1, timed_out)).unwrap();
            (events.iter().fold(queue, |q, e| q.evolve(e)), events)
        };
        let job = queue.job("a").unwrap();
        assert_eq!(job.status, JobStatus::TimedOut);
        assert_eq!(job.reason.as_deref(), Some("timed out after 1.5 s"));
    }

    #[test]
    fn reports_are_recorded_once_and_only_for_the_current_attempt() {
        let (queue, _) = run(vec![submit("a", 0), report("a", 1, ok(0.5))]);
        assert_eq!(queue.job("a").unwrap().value, Some(0.5));
        assert_eq!(when(&queue, report("a", 1, ok(0.7))).unwrap(), vec![]);
        assert_eq!(when(&queue, report("a", 2, ok(0.7))).unwrap(), vec![]);
        let unknown = when(&queue, report("zz", 1, ok(0.7))).unwrap_err();
        assert_eq!(unknown.code, ErrorCode::NotFound);
    }

    #[test]
    fn a_success_without_a_value_fails_a_job_that_expects_one() {
        let (queue, _) = run(vec![submit("a", 0)]);
        let empty = Outcome::Succeeded {
            value: None,
            outputs: JobOutputs::default(),
        };
        let events = when(&queue, report("a", 1, empty)).unwrap();
        assert!(matches!(events[0], SchedulerEvent::JobFailed { .. }));
    }

    #[test]
    fn started_is_recorded_for_the_dispatched_attempt_only() {
        let (queue, _) = run(vec![submit("a", 0)]);
        let handle = ExecutorHandle::Manifests { path: "x".into() };
        let start = |attempt| SchedulerCommand::RecordStarted {
            job_id: "a".into(),
            attempt,
            handle: handle.clone(),
        };
        assert_eq!(when(&queue, start(2)).unwrap(), vec![]);
        let events = when(&queue, start(1)).unwrap();
        let queue = events.iter().fold(queue, |q, e| q.evolve(e));
        assert_eq!(queue.job("a").unwrap().status, JobStatus::Running);
        assert_eq!(when(&queue, start(1)).unwrap(), vec![]);
    }

    #[test]
    fn cancel_names_the_running_attempt_and_frees_its_slot() {
        let (queue, _) = run(vec![submit("a", 0), submit("b", 0)]);
        let cancel = |id: &str| SchedulerCommand::Cancel {
            job_id: id.into(),
            reason: Some("enough".into()),
        };
        let events = when(&queue, cancel("a")).unwrap();
        assert_eq!(
            events[0],
            SchedulerEvent::JobCancelled {
                job_id: "a".into(),
                reason: Some("enough".into()),
                running_attempt: Some(1)
            }
        );
        assert!(Queue::wants_effect(&events[0]));
        assert_eq!(dispatched(&events), vec![("b".to_string(), 1)]);
        let queue = events.iter().fold(queue, |q, e| q.evolve(e));
        assert_eq!(when(&queue, cancel("a")).unwrap(), vec![]);
        assert_eq!(when(&queue, report("a", 1, ok(1.0))).unwrap(), vec![]);
        let (done, _) = run(vec![submit("c", 0), report("c", 1, ok(1.0))]);
        assert_eq!(
            when(&done, cancel("c")).unwrap_err().code,
            ErrorCode::InvalidState
        );
    }

    #[test]
    fn commands_other_than_submit_need_a_queue() {
        let e = when(
            &Queue::default(),
            SchedulerCommand::Cancel {
                job_id: "a".into(),
                reason: None,
            },
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound);
    }

    #[test]
    fn a_recovered_queue_equals_the_one_that_wrote_the_events() {
        let (queue, events) = run(vec![
            configure(2),
            submit("a", 1),
            submit("b", 0),
            submit("c", 2),
            report("a", 1, failed(2)),
        ]);
        assert_eq!(given(&events), queue);
        let text = serde_json::to_string(&queue).unwrap();
        let back: Queue = serde_json::from_str(&text).unwrap();
        assert_eq!(back, queue);
        let bytes = rmp_serde::to_vec_named(&queue).unwrap();
        let back: Queue = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, queue);
    }

    fn retaining(finished: u32, seconds: u64) -> SchedulerCommand {
        SchedulerCommand::ConfigureQueue(QueueConfig {
            concurrency: 1,
            retain_finished: finished,
            retain_finished_seconds: seconds,
            ..QueueConfig::default()
        })
    }

    fn report_at(id: &str, now: u64) -> SchedulerCommand {
        SchedulerCommand::ReportResult(ReportResult {
            now,
            ..match report(id, 1, ok(1.0)) {
                SchedulerCommand::ReportResult(r) => r,
                _ => unreachable!(),
            }
        })
    }

    fn ids(queue: &Queue) -> Vec<&str> {
        queue.jobs().map(|j| j.job_id.as_str()).collect()
    }

    #[test]
    fn a_queue_keeps_only_its_newest_finished_jobs() {
        let mut commands = vec![retaining(3, 3600)];
        for i in 0..10 {
            commands.push(submit(&format!("j{i}"), 0));
            commands.push(report_at(&format!("j{i}"), 1_000 + i));
        }
        commands.push(submit("waiting", 0));
        commands.push(submit("queued", 0));
        let (queue, events) = run(commands);
        assert_eq!(ids(&queue), ["j7", "j8", "j9", "queued", "waiting"]);
        assert_eq!(given(&events), queue, "a replay forgets the same jobs");
        // A forgotten id is free again: the log, not the state, is the history.
        let again = when(&queue, submit("j0", 0)).unwrap();
        assert!(matches!(&again[0], SchedulerEvent::JobSubmitted { job_id, .. } if job_id == "j0"));
    }

    #[test]
    fn finished_jobs_older_than_the_retention_time_are_forgotten() {
        let (queue, _) = run(vec![
            retaining(1000, 60),
            submit("old", 0),
            report_at("old", 1_000),
            submit("cancelled", 0),
            SchedulerCommand::Cancel {
                job_id: "cancelled".into(),
                reason: None,
            },
            submit("young", 0),
            report_at("young", 50_000),
        ]);
        assert_eq!(
            ids(&queue),
            ["cancelled", "old", "young"],
            "60 s have not passed"
        );
        let (queue, events) = run(vec![
            retaining(1000, 60),
            submit("old", 0),
            report_at("old", 1_000),
            submit("cancelled", 0),
            SchedulerCommand::Cancel {
                job_id: "cancelled".into(),
                reason: None,
            },
            submit("young", 0),
            report_at("young", 61_001),
        ]);
        assert_eq!(
            ids(&queue),
            ["cancelled", "young"],
            "old ended 60.001 s before"
        );
        let text = serde_json::to_string(&queue).unwrap();
        let back: Queue = serde_json::from_str(&text).unwrap();
        assert_eq!(back, queue, "a snapshot keeps the retention indexes");
        assert_eq!(given(&events), queue);
    }

    #[test]
    fn retention_settings_out_of_range_are_refused_naming_the_field() {
        for (finished, seconds, field) in [
            (0, 60, "retain_finished"),
            (MAX_RETAIN + 1, 60, "retain_finished"),
            (10, 0, "retain_finished_seconds"),
        ] {
            let e = when(&Queue::default(), retaining(finished, seconds)).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidField);
            assert!(e.message.starts_with(field), "{}", e.message);
        }
    }

    #[test]
    fn a_page_holds_at_most_its_limit_and_names_the_next() {
        let (queue, _) = run((0..5).map(|i| submit(&format!("j{i}"), 0)).collect());
        let page = |after: Option<&str>| {
            queue.view_page(&Page {
                after: after.map(str::to_string),
                limit: Some(2),
            })
        };
        let ids = |v: &Value| -> Vec<String> {
            v["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["job_id"].as_str().unwrap().to_string())
                .collect()
        };
        let first = page(None);
        assert_eq!(ids(&first), ["j0", "j1"]);
        assert_eq!(first["next"], "j1");
        assert_eq!(first["counts"]["pending"], 4, "counts cover every job");
        let last = page(Some("j3"));
        assert_eq!(ids(&last), ["j4"]);
        assert_eq!(last["next"], Value::Null);
    }

    /// The decider under a host's allowlist: `when` with settings.
    fn when_allowing(
        queue: &Queue,
        allowed: &[&str],
        command: SchedulerCommand,
    ) -> Result<Vec<SchedulerEvent>, Rejection> {
        let allowed = AllowedCommands::parse(allowed).expect("valid entries");
        queue.decide_with(&allowed, &command)
    }

    fn submit_program(id: &str, command: &[&str]) -> SchedulerCommand {
        SchedulerCommand::Submit {
            job_id: id.into(),
            spec: Box::new(JobSpec::new(
                command.iter().map(|s| s.to_string()).collect(),
            )),
        }
    }

    fn submitted(events: &[SchedulerEvent]) -> Vec<&str> {
        events
            .iter()
            .filter_map(|e| match e {
                SchedulerEvent::JobSubmitted { job_id, .. } => Some(job_id.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_local_job_whose_exact_program_is_allowed_is_accepted() {
        let command = submit_program("a", &["/usr/bin/python3", "train.py"]);
        let events = when_allowing(&Queue::default(), &["/usr/bin/python3"], command).unwrap();
        assert_eq!(submitted(&events), ["a"]);
        assert_eq!(dispatched(&events), vec![("a".to_string(), 1)]);
    }

    #[test]
    fn a_local_job_under_an_allowed_prefix_is_accepted() {
        let (queue, _) = run(vec![configure(2)]);
        let command = submit_program("a", &["/opt/jobs/sweep/eval.sh"]);
        let events = when_allowing(&queue, &["/opt/jobs/"], command).unwrap();
        assert_eq!(submitted(&events), ["a"]);
        let command = submit_program("b", &["/opt/jobs/train-7"]);
        assert!(when_allowing(&queue, &["/opt/jobs/train-*"], command).is_ok());
    }

    #[test]
    fn a_local_job_not_allowed_is_refused_and_records_nothing() {
        let (queue, _) = run(vec![configure(2)]);
        let e = when_allowing(
            &queue,
            &["/opt/jobs/"],
            submit_program("a", &["sh", "-c", "id"]),
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::CommandNotAllowed);
        assert!(e.message.contains("program \"sh\""), "{}", e.message);
        assert!(
            e.message.contains("scheduler.local.allowed_commands"),
            "{}",
            e.message
        );
        // Refused on a queue that does not exist yet too: not even created.
        let fresh = when_allowing(&Queue::default(), &[], submit_program("a", &["true"]));
        assert_eq!(fresh.unwrap_err().code, ErrorCode::CommandNotAllowed);
    }

    #[test]
    fn dot_dot_does_not_take_a_job_out_of_an_allowed_directory() {
        let command = submit_program("a", &["/usr/bin/../../tmp/x"]);
        let e = when_allowing(&Queue::default(), &["/usr/bin/"], command).unwrap_err();
        assert_eq!(e.code, ErrorCode::CommandNotAllowed);
        assert!(e.message.contains("(that is /tmp/x)"), "{}", e.message);
    }

    #[test]
    fn an_empty_list_refuses_every_local_job_but_not_other_executors() {
        for program in ["true", "/bin/true", "python3"] {
            let e = when_allowing(&Queue::default(), &[], submit_program("a", &[program]));
            assert_eq!(
                e.unwrap_err().code,
                ErrorCode::CommandNotAllowed,
                "{program}"
            );
        }
        let manifests = SchedulerCommand::ConfigureQueue(QueueConfig {
            executor: ExecutorKind::Manifests,
            ..QueueConfig::default()
        });
        let (queue, _) = run(vec![manifests]);
        let events = when_allowing(&queue, &[], submit_program("a", &["true"])).unwrap();
        assert_eq!(
            submitted(&events),
            ["a"],
            "a container's command is not this host's"
        );
        // Turning the queue local while that job is unfinished is refused.
        let queue = events.iter().fold(queue, |q, e| q.evolve(e));
        let e = when_allowing(&queue, &[], configure(1)).unwrap_err();
        assert_eq!(e.code, ErrorCode::CommandNotAllowed);
        assert!(
            e.message.starts_with("job a: program \"true\""),
            "{}",
            e.message
        );
    }

    #[test]
    fn allow_all_accepts_any_local_job_as_decide_does() {
        let command = submit_program("a", &["../../anything"]);
        let events = when_allowing(&Queue::default(), &["*"], command.clone()).unwrap();
        assert_eq!(events, when(&Queue::default(), command).unwrap());
        assert_eq!(submitted(&events), ["a"]);
    }

    #[test]
    fn the_list_changes_what_is_accepted_not_what_was() {
        // Accepted under allow-all, then the list shrinks: the job stays,
        // its retried submit records nothing new, and replay is the same.
        let (queue, events) = run(vec![submit_program("a", &["sh"])]);
        let again = when_allowing(&queue, &["/opt/jobs/"], submit_program("a", &["sh"]));
        assert_eq!(again.unwrap_err().code, ErrorCode::CommandNotAllowed);
        assert_eq!(given(&events), queue);
        let report = when_allowing(&queue, &[], report("a", 1, failed(1))).unwrap();
        assert!(matches!(report[0], SchedulerEvent::JobFailed { .. }));
    }

    fn start_attempt(id: &str, attempt: u32) -> SchedulerCommand {
        SchedulerCommand::RecordStarted {
            job_id: id.into(),
            attempt,
            handle: ExecutorHandle::Manifests { path: "p".into() },
        }
    }

    fn start(id: &str) -> SchedulerCommand {
        start_attempt(id, 1)
    }

    fn place(id: &str, attempt: u32, nodes: &[&str]) -> SchedulerCommand {
        SchedulerCommand::Place {
            job_id: id.into(),
            attempt,
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
        }
    }

    fn node_lost(node: &str) -> SchedulerCommand {
        SchedulerCommand::NodeLost {
            node: node.into(),
            reason: format!("node {node} failed (xid_replace:xid_79)"),
        }
    }

    fn placed(events: &[SchedulerEvent]) -> Vec<(&str, u32, &str)> {
        events
            .iter()
            .filter_map(|e| match e {
                SchedulerEvent::JobPlaced {
                    job_id,
                    attempt,
                    node,
                    ..
                } => Some((job_id.as_str(), *attempt, node.as_str())),
                _ => None,
            })
            .collect()
    }

    fn gpu_queue(concurrency: u32) -> SchedulerCommand {
        SchedulerCommand::ConfigureQueue(QueueConfig {
            concurrency,
            pool: "gpu".into(),
            ..QueueConfig::default()
        })
    }

    #[test]
    fn a_dispatch_names_the_queues_pool_and_place_picks_the_least_loaded_node() {
        let (queue, events) = run(vec![gpu_queue(3), submit("a", 0), submit("b", 0)]);
        assert!(
            matches!(&events[2], SchedulerEvent::JobDispatched { pool: Some(p), .. } if p == "gpu")
        );
        let nodes = ["gpu-2", "gpu-1"];
        let first = when(&queue, place("a", 1, &nodes)).unwrap();
        assert_eq!(placed(&first), [("a", 1, "gpu-1")], "idle: the smallest id");
        let queue = first.iter().fold(queue, |q, e| q.evolve(e));
        let second = when(&queue, place("b", 1, &nodes)).unwrap();
        assert_eq!(
            placed(&second),
            [("b", 1, "gpu-2")],
            "gpu-1 runs one already"
        );
        let SchedulerEvent::JobPlaced {
            spec,
            pool,
            executor,
            ..
        } = &second[0]
        else {
            unreachable!()
        };
        assert_eq!((pool.as_str(), *executor), ("gpu", ExecutorKind::Local));
        assert_eq!(
            spec,
            &queue.job("b").unwrap().spec,
            "the effect needs nothing else"
        );
        let queue = second.iter().fold(queue, |q, e| q.evolve(e));
        // Placed once: a repeated or late place, or one for another attempt, records nothing.
        assert_eq!(when(&queue, place("a", 1, &["gpu-3"])).unwrap(), vec![]);
        assert_eq!(when(&queue, place("a", 2, &["gpu-3"])).unwrap(), vec![]);
        // The start record and the view carry the node.
        let started = when(&queue, start("a")).unwrap();
        assert!(
            matches!(&started[0], SchedulerEvent::JobStarted { node: Some(n), .. } if n == "gpu-1")
        );
        let queue = started.iter().fold(queue, |q, e| q.evolve(e));
        let view = queue.view();
        let a = view["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["job_id"] == "a")
            .unwrap();
        assert_eq!(a["node"], "gpu-1");
        assert_eq!(
            a["attempts"],
            json!([{"attempt": 1, "node": "gpu-1", "status": "running"}])
        );
    }

    #[test]
    fn place_without_a_valid_node_is_refused_naming_the_field() {
        let (queue, _) = run(vec![gpu_queue(1), submit("a", 0)]);
        let e = when(&queue, place("a", 1, &[])).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidField);
        assert_eq!(e.message, "nodes must name at least one ready node");
        let e = when(&queue, place("a", 1, &["gpu-1", "gpu 2"])).unwrap_err();
        assert!(
            e.message.starts_with("nodes[1]: invalid node id"),
            "{}",
            e.message
        );
        let e = when(&queue, node_lost("")).unwrap_err();
        assert!(
            e.message.starts_with("node: invalid node id"),
            "{}",
            e.message
        );
        let e = when(&queue, place("zz", 1, &["gpu-1"])).unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound);
    }

    /// Given a queue of three jobs, two placed on gpu-1 (one started) and
    /// one on gpu-2, and a fourth job waiting.
    fn three_placed() -> Queue {
        let (queue, _) = run(vec![
            gpu_queue(3),
            submit("a", 0),
            submit("b", 0),
            submit("c", 0),
            submit("d", 0),
            place("a", 1, &["gpu-1"]),
            place("b", 1, &["gpu-1", "gpu-2"]),
            place("c", 1, &["gpu-1"]),
            start("a"),
        ]);
        queue
    }

    #[test]
    fn a_lost_node_loses_every_attempt_on_it_and_they_run_again() {
        let queue = three_placed();
        let events = when(&queue, node_lost("gpu-1")).unwrap();
        let lost: Vec<(&str, u32, Option<&str>)> = events
            .iter()
            .filter_map(|e| match e {
                SchedulerEvent::JobLost {
                    job_id,
                    attempt,
                    node,
                    reason,
                } => {
                    assert_eq!(reason, "node gpu-1 failed (xid_replace:xid_79)");
                    Some((job_id.as_str(), *attempt, node.as_deref()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(lost, [("a", 1, Some("gpu-1")), ("c", 1, Some("gpu-1"))]);
        assert!(events
            .iter()
            .filter(|e| e.event_type() == "job_lost")
            .all(Queue::wants_effect));
        // A lost job keeps its place in line: the freed slots go to a and c
        // again (attempt 2) before d, submitted after them.
        assert_eq!(
            dispatched(&events),
            [("a".to_string(), 2), ("c".to_string(), 2)]
        );
        let queue = events.iter().fold(queue, |q, e| q.evolve(e));
        assert_eq!(queue.job("d").map(|d| d.status), Some(JobStatus::Pending));
        assert_eq!(
            queue.job("b").unwrap().status,
            JobStatus::Dispatched,
            "gpu-2's stays"
        );
        let a = queue.job("a").unwrap();
        assert_eq!((a.attempt, a.lost, a.node.as_deref()), (2, 1, None));
        assert_eq!(a.attempts[0].status, AttemptStatus::Lost);
        assert_eq!(a.attempts[0].node.as_deref(), Some("gpu-1"));
        assert_eq!(a.attempts[1].status, AttemptStatus::Dispatched);
        // Told again (another provisioner event, or a repeat): nothing runs there now.
        assert_eq!(when(&queue, node_lost("gpu-1")).unwrap(), vec![]);
        // The new attempt is placed away from gpu-2's load when gpu-1 is not offered.
        let again = when(&queue, place("a", 2, &["gpu-2", "gpu-3"])).unwrap();
        assert_eq!(placed(&again), [("a", 2, "gpu-3")]);
    }

    #[test]
    fn a_lost_attempt_does_not_count_against_the_backoff_limit() {
        let (queue, _) = run(vec![
            gpu_queue(1),
            submit("a", 0),
            place("a", 1, &["gpu-1"]),
            start("a"),
            node_lost("gpu-1"),
            place("a", 2, &["gpu-2"]),
            start_attempt("a", 2),
        ]);
        // backoff_limit 0: a failure now ends the job, the loss did not use it up.
        let events = when(&queue, report("a", 2, ok(0.5))).unwrap();
        assert!(matches!(
            events[0],
            SchedulerEvent::JobSucceeded { attempt: 2, .. }
        ));
        let queue = events.iter().fold(queue, |q, e| q.evolve(e));
        let a = queue.job("a").unwrap();
        let history: Vec<(u32, Option<&str>, AttemptStatus)> = a
            .attempts
            .iter()
            .map(|r| (r.attempt, r.node.as_deref(), r.status))
            .collect();
        assert_eq!(
            history,
            [
                (1, Some("gpu-1"), AttemptStatus::Lost),
                (2, Some("gpu-2"), AttemptStatus::Succeeded)
            ]
        );
    }

    fn any_command() -> impl proptest::strategy::Strategy<Value = SchedulerCommand> {
        use proptest::prelude::*;
        let id = || (0..6u8).prop_map(|i| format!("j{i}"));
        let outcome = prop_oneof![
            Just(ok(1.0)),
            Just(failed(1)),
            Just(Outcome::Lost {
                reason: "gone".into()
            }),
        ];
        prop_oneof![
            (1..4u32).prop_map(configure),
            (id(), -1..2i32).prop_map(|(id, p)| SchedulerCommand::Submit {
                job_id: id,
                spec: Box::new(JobSpec {
                    priority: p,
                    backoff_limit: 1,
                    ..spec()
                }),
            }),
            (id(), 1..4u32, outcome).prop_map(|(id, a, o)| report(&id, a, o)),
            id().prop_map(|id| SchedulerCommand::Cancel {
                job_id: id,
                reason: None
            }),
            (id(), 1..4u32).prop_map(|(id, attempt)| SchedulerCommand::RetryDue {
                job_id: id,
                attempt
            }),
            (
                id(),
                1..4u32,
                proptest::sample::subsequence(NODES.to_vec(), 1..4)
            )
                .prop_map(|(id, attempt, nodes)| SchedulerCommand::Place {
                    job_id: id,
                    attempt,
                    nodes: nodes.into_iter().map(str::to_string).collect(),
                }),
            proptest::sample::select(NODES.to_vec()).prop_map(node_lost),
            (id(), 1..4u32).prop_map(|(id, attempt)| start_attempt(&id, attempt)),
        ]
    }

    const NODES: [&str; 4] = ["gpu-1", "gpu-2", "gpu-3", "gpu-4"];

    proptest::proptest! {
        /// Whatever the commands, the queue never dispatches past its
        /// concurrency, never leaves a slot free while a job is ready,
        /// hands slots out by priority, and reads back from a snapshot
        /// as the same queue.
        #[test]
        fn the_limit_holds_and_no_slot_idles_while_a_job_waits(
            commands in proptest::collection::vec(any_command(), 1..40)
        ) {
            let mut queue = Queue::default();
            for command in commands {
                let Ok(events) = queue.decide(&command) else { continue };
                for e in &events {
                    queue = queue.evolve(e);
                }
                let state = queue.state.as_ref().unwrap();
                let depth = queue.depth();
                // A lowered limit lets running attempts finish, but no
                // command dispatches past it.
                let dispatched = events.iter().any(|e| e.event_type() == "job_dispatched");
                let within = depth.running <= u64::from(state.config.concurrency);
                proptest::prop_assert!(within || !dispatched, "{:?}", events);
                let idle = depth.running < u64::from(state.config.concurrency);
                proptest::prop_assert!(!idle || state.ready.is_empty(), "{:?}", events);
                // Dispatched jobs come before every job left waiting.
                let waiting_best = state.ready.keys().next();
                for e in &events {
                    if let SchedulerEvent::JobDispatched { job_id, .. } = e {
                        let key = QueueState::ready_key(&state.jobs[job_id]);
                        proptest::prop_assert!(waiting_best.is_none_or(|w| key < *w));
                    }
                }
                let bytes = rmp_serde::to_vec_named(&queue).unwrap();
                let back: Queue = rmp_serde::from_slice(&bytes).unwrap();
                proptest::prop_assert_eq!(&back, &queue);
            }
        }

        /// Whatever the commands, an attempt is placed only on a node it
        /// was offered, with the fewest of the queue's attempts among
        /// them; a lost node leaves no attempt holding a slot on it; and
        /// every job's attempt history ends with its current attempt.
        #[test]
        fn placement_stays_on_offered_nodes_and_a_lost_node_keeps_nothing(
            commands in proptest::collection::vec(any_command(), 1..60)
        ) {
            let mut queue = Queue::default();
            for command in commands {
                let before = queue.clone();
                let Ok(events) = queue.decide(&command) else { continue };
                for e in &events {
                    queue = queue.evolve(e);
                }
                let state = queue.state.as_ref().unwrap();
                if let SchedulerCommand::Place { nodes, .. } = &command {
                    let load = before.state.as_ref().unwrap().load_by_node();
                    for (_, _, node) in placed(&events) {
                        proptest::prop_assert!(nodes.iter().any(|n| n == node));
                        let fewest = nodes.iter().map(|n| load.get(n.as_str()).copied().unwrap_or(0)).min();
                        proptest::prop_assert_eq!(load.get(node).copied().unwrap_or(0), fewest.unwrap());
                    }
                }
                if let SchedulerCommand::NodeLost { node, .. } = &command {
                    let left = state.holding.iter().filter(|id| state.jobs[*id].node.as_deref() == Some(node.as_str())).count();
                    proptest::prop_assert_eq!(left, 0);
                }
                for job in state.jobs.values().filter(|j| j.attempt > 0) {
                    let last = job.attempts.last().map(|r| (r.attempt, r.node.as_deref()));
                    proptest::prop_assert_eq!(last, Some((job.attempt, job.node.as_deref())), "{:?}", job);
                }
            }
        }
    }
}
