//! The study run aggregate: one study's run, from `start_run` through its
//! trials' jobs to `finished` or `stopped`.
//!
//! A run keeps `parallel` trials in flight. Each trial goes through phases:
//! received (the study handed it out) → requested (its job is being
//! submitted) → submitted → running → ended (the job finished; the run is
//! telling the study) → recorded (the study has the outcome). A trial holds
//! a slot from the moment it is asked for until its job ends, so at most
//! `parallel` jobs of the run are in the queue; the next trial is asked for
//! while the last one's value is told.
//!
//! The rules:
//!
//! - `start_run` checks the spec (`INVALID_FIELD`, naming the field) and
//!   records `run_started`, whose effect checks the study and configures
//!   its queue; `queue_ready` then fills the slots. The same spec again
//!   while the run is active records nothing; another is `INVALID_STATE`. A
//!   stopped or failed run may be started again; a finished one may not.
//! - Filling: while running (not paused, not stopped), with no ask
//!   outstanding and the study not exhausted, free slots become one
//!   `trials_requested {n}`, whose effect asks the study. Trials received
//!   while the run is stopped wait, and are submitted first when it starts
//!   again. Fewer trials than asked means the budget is all asked
//!   (exhausted); the run finishes when nothing is in flight.
//! - Job events (`job_started`, `job_ended`) for jobs the run does not know,
//!   or that repeat what it knows, record nothing: the driver may see them
//!   twice. `job_ended`'s effect tells (or fails) the trial; its outcome,
//!   `result_recorded`, frees the slot.
//! - `trial_pruned` (the study's pruner stopped a trial) cancels its job;
//!   `stop_run` cancels every job in flight.
//! - `renew_leases {now}` renews the leases of the trials whose jobs are in
//!   the queue (effect: the study's `heartbeat`).

use flotilla_host::Aggregate;
use flotilla_messages::solver::trial_number;
use flotilla_messages::study_run::{
    JobEnd, RunCommand, RunEvent, RunSpec, RunStatus, RunTrial, COMMAND_TYPES,
};
use flotilla_messages::{Actor, ErrorCode, Page, Rejection};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Where a trial of the run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialPhase {
    /// Handed out while the run was stopped: its job waits for a restart.
    Received,
    /// Its job is being submitted.
    Requested,
    /// The queue has its job.
    Submitted,
    /// Its job runs.
    Running,
    /// Its job finished; the study is being told.
    Ended,
    /// The study has its outcome.
    Recorded,
}

impl TrialPhase {
    /// Whether the trial holds one of the run's slots: its job is asked
    /// for or in the queue. A trial whose job ended frees its slot at once,
    /// while the study is told in the background, so the next job starts
    /// without waiting for the tell.
    fn in_flight(self) -> bool {
        self.job_open()
    }

    /// Whether its job is in the queue and unfinished.
    fn job_open(self) -> bool {
        matches!(
            self,
            TrialPhase::Requested | TrialPhase::Submitted | TrialPhase::Running
        )
    }
}

/// One trial of the run and its job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunTrialRecord {
    /// The study's trial.
    pub trial: RunTrial,
    /// Its job in the study's queue (empty until requested).
    pub job_id: String,
    /// Where it is.
    pub phase: TrialPhase,
    /// The job's latest attempt (0 before it started).
    pub attempt: u32,
    /// The node of the latest attempt, if placed on one.
    pub node: Option<String>,
    /// How the job ended.
    pub end: Option<JobEnd>,
    /// The value the study took.
    pub value: Option<f64>,
    /// Why the trial failed.
    pub failure: Option<String>,
    /// Whether the pruner stopped it.
    pub pruned: bool,
    /// Whether a cancel was asked for.
    pub cancel_requested: bool,
    /// How many jobs the run gave this trial (a retried trial gets another).
    pub jobs: u32,
}

/// The state of a run that was started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RunState {
    spec: RunSpec,
    status: RunStatus,
    reason: Option<String>,
    budget: Option<u64>,
    maximize: bool,
    /// The most trials one ask may hand out (from the study's space).
    max_ask: u32,
    /// The last request's number.
    requests: u64,
    /// The request the study has not answered yet, and its size.
    outstanding: Option<(u64, u32)>,
    /// The study hands out no more trials.
    exhausted: bool,
    /// Trials by id.
    trials: BTreeMap<String, RunTrialRecord>,
    /// Job id → trial id.
    jobs: BTreeMap<String, String>,
    /// The last renewal's clock.
    renewed_at: Option<u64>,
}

/// One study's run. The default value is a run that was never started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StudyRun {
    state: Option<RunState>,
}

impl StudyRun {
    /// Where the run is; `None` if it was never started.
    pub fn status(&self) -> Option<RunStatus> {
        self.state.as_ref().map(|s| s.status)
    }

    /// The spec it runs with.
    pub fn spec(&self) -> Option<&RunSpec> {
        self.state.as_ref().map(|s| &s.spec)
    }

    /// Every trial of the run, by id.
    pub fn trials(&self) -> impl Iterator<Item = &RunTrialRecord> {
        self.state.iter().flat_map(|s| s.trials.values())
    }

    /// The trial whose job is `job_id`.
    pub fn trial_of_job(&self, job_id: &str) -> Option<&RunTrialRecord> {
        let s = self.state.as_ref()?;
        s.trials.get(s.jobs.get(job_id)?)
    }

    /// The trial whose current job is `job_id` (not an older job of it).
    fn current_job(&self, job_id: &str) -> Option<&RunTrialRecord> {
        self.trial_of_job(job_id).filter(|t| t.job_id == job_id)
    }

    /// The best recorded trial: its id and value.
    pub fn best(&self) -> Option<(&str, f64)> {
        let s = self.state.as_ref()?;
        s.best()
    }

    /// Trial counts by state, as the view and the metrics give them.
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        let mut counts: BTreeMap<&'static str, u64> = COUNTED.iter().map(|s| (*s, 0)).collect();
        for t in self.trials() {
            *counts.entry(count_of(t)).or_default() += 1;
        }
        counts
    }
}

/// The most trials one request asks for: a request's trials and their
/// job requests are one command's events, which must stay one batch.
pub const ASK_CHUNK: u32 = 64;

fn trial_view(t: &RunTrialRecord) -> Value {
    json!({
        "trial_id": t.trial.trial_id,
        "params": t.trial.params,
        "job_id": t.job_id,
        "state": count_of(t),
        "phase": t.phase,
        "attempt": t.attempt,
        "node": t.node,
        "value": t.value,
        "failure": t.failure,
        "pruned": t.pruned,
    })
}

/// The states a run counts its trials in.
pub const COUNTED: [&str; 6] = [
    "waiting",
    "pending",
    "running",
    "completed",
    "failed",
    "pruned",
];

fn count_of(t: &RunTrialRecord) -> &'static str {
    match t.phase {
        TrialPhase::Received => "waiting",
        TrialPhase::Requested | TrialPhase::Submitted => "pending",
        TrialPhase::Running | TrialPhase::Ended => "running",
        TrialPhase::Recorded if t.pruned => "pruned",
        TrialPhase::Recorded if t.value.is_some() => "completed",
        TrialPhase::Recorded => "failed",
    }
}

impl RunState {
    fn in_flight(&self) -> u32 {
        let open = self.trials.values().filter(|t| t.phase.in_flight()).count() as u32;
        open + self.outstanding.map_or(0, |(_, n)| n)
    }

    fn best(&self) -> Option<(&str, f64)> {
        let better = |a: f64, b: f64| if self.maximize { a > b } else { a < b };
        self.trials
            .values()
            .filter_map(|t| Some((t.trial.trial_id.as_str(), t.value?)))
            .fold(None, |best, (id, v)| match best {
                Some((_, b)) if !better(v, b) => best,
                _ => Some((id, v)),
            })
    }
}

/// Builds a command's events by folding each into a scratch copy, so that
/// later decisions of the same command see the earlier ones.
struct Plan {
    run: StudyRun,
    events: Vec<RunEvent>,
}

impl Plan {
    fn new(run: &StudyRun) -> Self {
        Plan {
            run: run.clone(),
            events: Vec::new(),
        }
    }

    fn push(&mut self, event: RunEvent) {
        self.run = std::mem::take(&mut self.run).evolve(&event);
        self.events.push(event);
    }

    fn state(&self) -> &RunState {
        self.run
            .state
            .as_ref()
            .expect("a plan is made for a started run")
    }

    /// Submits the trials that wait, asks for trials to fill the free
    /// slots, or finishes the run when nothing is left to run.
    fn fill(&mut self) {
        let s = self.state();
        if s.status != RunStatus::Running || s.budget.is_none() {
            return;
        }
        let waiting: Vec<RunTrial> = s
            .trials
            .values()
            .filter(|t| t.phase == TrialPhase::Received)
            .take(s.spec.parallel.saturating_sub(s.in_flight()) as usize)
            .map(|t| t.trial.clone())
            .collect();
        for trial in waiting {
            self.request_job(trial);
        }
        let s = self.state();
        let free = s.spec.parallel.saturating_sub(s.in_flight());
        if free > 0 && !s.exhausted && s.outstanding.is_none() {
            let request = s.requests + 1;
            let n = free.min(s.max_ask).clamp(1, ASK_CHUNK);
            self.push(RunEvent::TrialsRequested { request, n });
        }
        self.finish_if_done();
    }

    fn request_job(&mut self, trial: RunTrial) {
        let s = self.state();
        let jobs = s.trials.get(&trial.trial_id).map_or(0, |t| t.jobs);
        let job_id = match jobs {
            0 => trial.trial_id.clone(),
            n => format!("{}-{}", trial.trial_id, n + 1),
        };
        let spec = Box::new(s.spec.job_spec(&trial.trial_id, &trial.params));
        self.push(RunEvent::JobRequested {
            trial_id: trial.trial_id,
            job_id,
            spec,
        });
    }

    fn finish_if_done(&mut self) {
        let s = self.state();
        let running = matches!(s.status, RunStatus::Running | RunStatus::Paused);
        let telling = s.trials.values().any(|t| t.phase == TrialPhase::Ended);
        if running && s.exhausted && s.in_flight() == 0 && !telling {
            self.push(RunEvent::RunFinished {});
        }
    }
}

impl StudyRun {
    fn started(&self, command: &str) -> Result<&RunState, Rejection> {
        self.state.as_ref().ok_or_else(|| {
            Rejection::new(
                ErrorCode::NotFound,
                format!("{command}: the run was never started (start_run first)"),
            )
        })
    }

    fn decide_start(&self, spec: &RunSpec) -> Result<Vec<RunEvent>, Rejection> {
        spec.validate()?;
        let Some(s) = &self.state else {
            return Ok(vec![RunEvent::RunStarted { spec: spec.clone() }]);
        };
        match s.status {
            status if status.is_active() && &s.spec == spec => Ok(vec![]),
            status if status.is_active() => Err(Rejection::new(
                ErrorCode::InvalidState,
                format!(
                    "start_run: the run is {} with another spec; stop_run first",
                    status.as_str()
                ),
            )),
            RunStatus::Finished => Err(Rejection::new(
                ErrorCode::InvalidState,
                "start_run: the run finished: the study's budget is all evaluated",
            )),
            _ => Ok(vec![RunEvent::RunStarted { spec: spec.clone() }]),
        }
    }

    fn decide_pause(
        &self,
        pause: bool,
        reason: &Option<String>,
    ) -> Result<Vec<RunEvent>, Rejection> {
        let reason = reason.clone();
        let (command, s) = match pause {
            true => ("pause_run", self.started("pause_run")?),
            false => ("resume_run", self.started("resume_run")?),
        };
        match (s.status, pause) {
            (RunStatus::Running | RunStatus::Starting, true) => {
                Ok(vec![RunEvent::RunPaused { reason }])
            }
            (RunStatus::Paused, true) | (RunStatus::Running, false) => Ok(vec![]),
            (RunStatus::Paused, false) => {
                let mut plan = Plan::new(self);
                plan.push(RunEvent::RunResumed { reason });
                plan.fill();
                Ok(plan.events)
            }
            (status, _) => Err(Rejection::new(
                ErrorCode::InvalidState,
                format!("{command}: the run is {}", status.as_str()),
            )),
        }
    }

    fn decide_stop(&self, reason: &Option<String>) -> Result<Vec<RunEvent>, Rejection> {
        let s = self.started("stop_run")?;
        if !s.status.is_active() {
            return Err(Rejection::new(
                ErrorCode::InvalidState,
                format!("stop_run: the run is already {}", s.status.as_str()),
            ));
        }
        let mut events = vec![RunEvent::RunStopped {
            reason: reason.clone(),
        }];
        let why = reason
            .clone()
            .unwrap_or_else(|| "the run was stopped".into());
        for t in s.trials.values() {
            if t.phase.job_open() && !t.cancel_requested {
                events.push(RunEvent::JobCancelRequested {
                    trial_id: t.trial.trial_id.clone(),
                    job_id: t.job_id.clone(),
                    reason: why.clone(),
                });
            }
        }
        Ok(events)
    }

    fn decide_queue_ready(
        &self,
        budget: u64,
        maximize: bool,
        max_ask: u32,
    ) -> Result<Vec<RunEvent>, Rejection> {
        let s = self.started("queue_ready")?;
        if !s.status.is_active() || s.budget.is_some() && s.status != RunStatus::Starting {
            return Ok(vec![]);
        }
        let mut plan = Plan::new(self);
        plan.push(RunEvent::QueueConfigured {
            budget,
            maximize,
            max_ask,
        });
        plan.fill();
        Ok(plan.events)
    }

    fn decide_received(
        &self,
        request: u64,
        trials: &[RunTrial],
        refused: &Option<String>,
    ) -> Result<Vec<RunEvent>, Rejection> {
        let s = self.started("trials_received")?;
        if s.outstanding.map(|(r, _)| r) != Some(request) {
            return Ok(vec![]);
        }
        let mut plan = Plan::new(self);
        plan.push(RunEvent::TrialsReceived {
            request,
            trials: trials.to_vec(),
            refused: refused.clone(),
        });
        if let Some(why) = refused.as_ref().filter(|_| s.status.is_active()) {
            // A study that refuses an ask (stopped, a space too wide for
            // the request) hands out nothing more: the run cannot go on.
            plan.push(RunEvent::RunFailed {
                reason: format!("the study refused to hand out trials: {why}"),
            });
        }
        let status = plan.state().status;
        if matches!(status, RunStatus::Running | RunStatus::Paused) {
            for trial in trials {
                let t = &plan.state().trials[&trial.trial_id];
                if t.phase == TrialPhase::Received {
                    plan.request_job(trial.clone());
                }
            }
        }
        plan.fill();
        Ok(plan.events)
    }

    fn trial(&self, command: &str, trial_id: &str) -> Result<&RunTrialRecord, Rejection> {
        self.started(command)?.trials.get(trial_id).ok_or_else(|| {
            Rejection::new(
                ErrorCode::UnknownTrial,
                format!("{command}: the run has no trial {trial_id:?}"),
            )
        })
    }

    fn decide_accepted(
        &self,
        trial_id: &str,
        job_id: &str,
        refused: &Option<String>,
    ) -> Result<Vec<RunEvent>, Rejection> {
        let t = self.trial("job_accepted", trial_id)?;
        let accepted = RunEvent::JobAccepted {
            trial_id: trial_id.to_string(),
            job_id: job_id.to_string(),
        };
        let current = t.job_id == job_id && t.phase == TrialPhase::Requested;
        let Some(reason) = refused.as_ref().filter(|_| current) else {
            // Recorded even when the job already started or ended (or is
            // an older job of the trial), so that the submit is settled.
            let mut events = vec![accepted];
            events.extend(self.cancel_again(t));
            return Ok(events);
        };
        // Every job of the run has the same spec: the others would be
        // refused too, so the run stops rather than burn the budget.
        let reason = format!("the queue refused the job of {trial_id}: {reason}");
        let mut events = vec![RunEvent::JobEnded {
            trial_id: trial_id.to_string(),
            end: JobEnd::Failed {
                reason: reason.clone(),
            },
        }];
        if self.status().is_some_and(RunStatus::is_active) {
            events.push(RunEvent::RunFailed { reason });
        }
        Ok(events)
    }

    /// A cancel asked for before the job was in the queue may have found
    /// nothing to cancel: once the job is seen there, ask again.
    fn cancel_again(&self, t: &RunTrialRecord) -> Option<RunEvent> {
        (t.cancel_requested && t.phase.job_open()).then(|| RunEvent::JobCancelRequested {
            trial_id: t.trial.trial_id.clone(),
            job_id: t.job_id.clone(),
            reason: if t.pruned {
                "pruned".into()
            } else {
                "the run was stopped".into()
            },
        })
    }

    fn decide_job_started(
        &self,
        job_id: &str,
        attempt: u32,
        node: &Option<String>,
    ) -> Result<Vec<RunEvent>, Rejection> {
        let Some(t) = self.trial_of_job(job_id) else {
            return Ok(vec![]);
        };
        if !t.phase.job_open() || attempt <= t.attempt && (attempt < t.attempt || &t.node == node) {
            return Ok(vec![]);
        }
        Ok(vec![RunEvent::JobStarted {
            trial_id: t.trial.trial_id.clone(),
            attempt,
            node: node.clone(),
        }])
    }

    fn decide_job_ended(&self, job_id: &str, end: &JobEnd) -> Result<Vec<RunEvent>, Rejection> {
        match self.current_job(job_id) {
            Some(t) if t.phase.job_open() => {
                let mut plan = Plan::new(self);
                plan.push(RunEvent::JobEnded {
                    trial_id: t.trial.trial_id.clone(),
                    end: end.clone(),
                });
                plan.fill();
                Ok(plan.events)
            }
            _ => Ok(vec![]),
        }
    }

    fn decide_recorded(
        &self,
        trial_id: &str,
        refused: &Option<String>,
    ) -> Result<Vec<RunEvent>, Rejection> {
        let t = self.trial("result_recorded", trial_id)?;
        if t.phase != TrialPhase::Ended {
            return Ok(vec![]);
        }
        let (value, failure) = match (&t.end, refused) {
            (_, Some(reason)) => (
                None,
                Some(format!("the study refused the result: {reason}")),
            ),
            (Some(JobEnd::Succeeded { value }), None) => (Some(*value), None),
            (Some(JobEnd::Failed { reason }), None) => (None, Some(reason.clone())),
            (Some(JobEnd::Cancelled { reason }), None) => (
                None,
                Some(reason.clone().unwrap_or_else(|| "cancelled".into())),
            ),
            (None, None) => (None, None),
        };
        let mut plan = Plan::new(self);
        plan.push(RunEvent::ResultRecorded {
            trial_id: trial_id.to_string(),
            value,
            failure,
        });
        plan.fill();
        Ok(plan.events)
    }

    fn decide_pruned(&self, trial_id: &str) -> Result<Vec<RunEvent>, Rejection> {
        let Some(t) = self.state.as_ref().and_then(|s| s.trials.get(trial_id)) else {
            return Ok(vec![]);
        };
        if t.pruned || !t.phase.job_open() {
            return Ok(vec![]);
        }
        Ok(vec![RunEvent::TrialPruned {
            trial_id: trial_id.to_string(),
            job_id: t.job_id.clone(),
        }])
    }

    fn decide_renew(&self, now: u64) -> Result<Vec<RunEvent>, Rejection> {
        let s = self.started("renew_leases")?;
        if s.renewed_at.is_some_and(|at| at >= now) {
            return Ok(vec![]);
        }
        let trial_ids: Vec<String> = s
            .trials
            .values()
            .filter(|t| t.phase.job_open())
            .map(|t| t.trial.trial_id.clone())
            .collect();
        if trial_ids.is_empty() {
            return Ok(vec![]);
        }
        Ok(vec![RunEvent::LeasesDue { trial_ids, now }])
    }

    fn apply(s: &mut RunState, event: &RunEvent) {
        match event {
            RunEvent::RunStarted { spec } => {
                s.spec = spec.clone();
                s.status = RunStatus::Starting;
                s.reason = None;
                s.exhausted = false;
            }
            RunEvent::QueueConfigured {
                budget,
                maximize,
                max_ask,
            } => {
                s.budget = Some(*budget);
                s.maximize = *maximize;
                s.max_ask = (*max_ask).max(1);
                if s.status == RunStatus::Starting {
                    s.status = RunStatus::Running;
                }
            }
            RunEvent::TrialsRequested { request, n } => {
                s.requests = *request;
                s.outstanding = Some((*request, *n));
            }
            RunEvent::TrialsReceived {
                trials, refused, ..
            } => {
                let asked = s.outstanding.take().map_or(0, |(_, n)| n);
                if refused.is_some() || trials.len() < asked as usize {
                    s.exhausted = true;
                }
                for trial in trials {
                    s.trials
                        .entry(trial.trial_id.clone())
                        .and_modify(|t| {
                            if t.phase == TrialPhase::Recorded {
                                t.phase = TrialPhase::Received;
                            }
                        })
                        .or_insert_with(|| RunTrialRecord {
                            trial: trial.clone(),
                            job_id: String::new(),
                            phase: TrialPhase::Received,
                            attempt: 0,
                            node: None,
                            end: None,
                            value: None,
                            failure: None,
                            pruned: false,
                            cancel_requested: false,
                            jobs: 0,
                        });
                }
            }
            RunEvent::JobRequested {
                trial_id, job_id, ..
            } => {
                if let Some(t) = s.trials.get_mut(trial_id) {
                    t.job_id = job_id.clone();
                    t.phase = TrialPhase::Requested;
                    t.jobs += 1;
                    t.attempt = 0;
                    t.node = None;
                    t.end = None;
                    t.cancel_requested = false;
                }
                s.jobs.insert(job_id.clone(), trial_id.clone());
            }
            RunEvent::JobAccepted { trial_id, job_id } => {
                if let Some(t) = s.trials.get_mut(trial_id) {
                    if t.phase == TrialPhase::Requested && &t.job_id == job_id {
                        t.phase = TrialPhase::Submitted;
                    }
                }
            }
            RunEvent::JobStarted {
                trial_id,
                attempt,
                node,
            } => {
                if let Some(t) = s.trials.get_mut(trial_id) {
                    t.phase = TrialPhase::Running;
                    t.attempt = *attempt;
                    t.node = node.clone();
                }
            }
            RunEvent::JobEnded { trial_id, end } => {
                if let Some(t) = s.trials.get_mut(trial_id) {
                    t.phase = TrialPhase::Ended;
                    t.end = Some(end.clone());
                }
            }
            RunEvent::ResultRecorded {
                trial_id,
                value,
                failure,
            } => {
                if let Some(t) = s.trials.get_mut(trial_id) {
                    t.phase = TrialPhase::Recorded;
                    t.value = *value;
                    t.failure = failure.clone();
                }
            }
            RunEvent::TrialPruned { trial_id, .. } => {
                if let Some(t) = s.trials.get_mut(trial_id) {
                    t.pruned = true;
                    t.cancel_requested = true;
                }
            }
            RunEvent::JobCancelRequested { trial_id, .. } => {
                if let Some(t) = s.trials.get_mut(trial_id) {
                    t.cancel_requested = true;
                }
            }
            RunEvent::CancelSent { .. } | RunEvent::LeasesRenewed { .. } => {}
            RunEvent::LeasesDue { now, .. } => s.renewed_at = Some(*now),
            RunEvent::RunPaused { .. } => s.status = RunStatus::Paused,
            RunEvent::RunResumed { .. } => s.status = RunStatus::Running,
            RunEvent::RunStopped { reason } => {
                s.status = RunStatus::Stopped;
                s.reason = reason.clone();
            }
            RunEvent::RunFinished {} => s.status = RunStatus::Finished,
            RunEvent::RunFailed { reason } => {
                s.status = RunStatus::Failed;
                s.reason = Some(reason.clone());
            }
        }
    }
}

impl Aggregate for StudyRun {
    const ACTOR: Actor = Actor::StudyRun;
    const COMMAND_TYPES: &'static [&'static str] = COMMAND_TYPES;
    type Command = RunCommand;
    type Event = RunEvent;
    type Settings = ();

    fn decide(&self, command: &RunCommand) -> Result<Vec<RunEvent>, Rejection> {
        match command {
            RunCommand::StartRun(spec) => self.decide_start(spec),
            RunCommand::PauseRun { reason } => self.decide_pause(true, reason),
            RunCommand::ResumeRun { reason } => self.decide_pause(false, reason),
            RunCommand::StopRun { reason } => self.decide_stop(reason),
            RunCommand::QueueReady {
                budget,
                maximize,
                max_ask,
            } => self.decide_queue_ready(*budget, *maximize, *max_ask),
            RunCommand::RunRefused { reason } => {
                let s = self.started("run_refused")?;
                Ok(match s.status.is_active() {
                    true => vec![RunEvent::RunFailed {
                        reason: reason.clone(),
                    }],
                    false => vec![],
                })
            }
            RunCommand::TrialsReceived {
                request,
                trials,
                refused,
            } => self.decide_received(*request, trials, refused),
            RunCommand::JobAccepted {
                trial_id,
                job_id,
                refused,
            } => self.decide_accepted(trial_id, job_id, refused),
            RunCommand::JobStarted {
                job_id,
                attempt,
                node,
            } => self.decide_job_started(job_id, *attempt, node),
            RunCommand::JobEnded { job_id, end } => self.decide_job_ended(job_id, end),
            RunCommand::ResultRecorded { trial_id, refused } => {
                self.decide_recorded(trial_id, refused)
            }
            RunCommand::TrialPruned { trial_id } => self.decide_pruned(trial_id),
            RunCommand::CancelSent { trial_id } => {
                self.trial("cancel_sent", trial_id)?;
                Ok(vec![RunEvent::CancelSent {
                    trial_id: trial_id.clone(),
                }])
            }
            RunCommand::RenewLeases { now } => self.decide_renew(*now),
            RunCommand::LeasesRenewed { now } => {
                self.started("leases_renewed")?;
                Ok(vec![RunEvent::LeasesRenewed { now: *now }])
            }
        }
    }

    fn evolve(mut self, event: &RunEvent) -> Self {
        if let RunEvent::RunStarted { spec } = event {
            if self.state.is_none() {
                self.state = Some(RunState {
                    spec: spec.clone(),
                    status: RunStatus::Starting,
                    reason: None,
                    budget: None,
                    maximize: false,
                    max_ask: ASK_CHUNK,
                    requests: 0,
                    outstanding: None,
                    exhausted: false,
                    trials: BTreeMap::new(),
                    jobs: BTreeMap::new(),
                    renewed_at: None,
                });
            }
        }
        if let Some(s) = self.state.as_mut() {
            Self::apply(s, event);
        }
        self
    }

    fn result(events: &[RunEvent]) -> Value {
        let requested: Vec<&str> = events
            .iter()
            .filter_map(|e| match e {
                RunEvent::JobRequested { job_id, .. } => Some(job_id.as_str()),
                _ => None,
            })
            .collect();
        let status = events.iter().rev().find_map(|e| match e {
            RunEvent::RunStarted { .. } => Some("starting"),
            RunEvent::RunPaused { .. } => Some("paused"),
            RunEvent::RunResumed { .. } => Some("running"),
            RunEvent::RunStopped { .. } => Some("stopped"),
            RunEvent::RunFinished {} => Some("finished"),
            RunEvent::RunFailed { .. } => Some("failed"),
            _ => None,
        });
        json!({ "status": status, "jobs_requested": requested })
    }

    fn view(&self) -> Value {
        self.view_page(&Page {
            after: None,
            limit: Some(usize::MAX),
        })
    }

    /// The run with one page of its trials (by trial number, after the
    /// trial `after`), so a reply stays small however big the budget; the
    /// counts, the best and the jobs in flight are always whole.
    fn view_page(&self, page: &Page) -> Value {
        let Some(s) = &self.state else {
            return json!({});
        };
        let mut records: Vec<&RunTrialRecord> = s.trials.values().collect();
        records.sort_by_key(|t| trial_number(&t.trial.trial_id));
        let running: Vec<Value> = records
            .iter()
            .filter(|t| t.phase.job_open())
            .map(|t| {
                json!({"trial_id": t.trial.trial_id, "job_id": t.job_id,
                       "phase": t.phase, "attempt": t.attempt, "node": t.node})
            })
            .collect();
        let after = page.after.as_deref().and_then(trial_number).unwrap_or(0);
        let mut rest = records
            .iter()
            .filter(|t| trial_number(&t.trial.trial_id).unwrap_or(0) > after);
        let trials: Vec<Value> = rest
            .by_ref()
            .take(page.limit())
            .map(|t| trial_view(t))
            .collect();
        let next = rest
            .next()
            .and(trials.last())
            .map(|t| t["trial_id"].clone());
        let best = s
            .best()
            .map(|(id, value)| json!({"trial_id": id, "value": value}));
        json!({
            "status": s.status.as_str(),
            "reason": s.reason,
            "spec": s.spec,
            "budget": s.budget,
            "direction": if s.maximize { "maximize" } else { "minimize" },
            "counts": self.counts(),
            "best": best,
            "running": running,
            "trials": trials,
            "next": next,
        })
    }

    fn event_type(event: &RunEvent) -> &'static str {
        event.event_type()
    }

    fn wants_effect(event: &RunEvent) -> bool {
        event.wants_effect()
    }
}

#[cfg(test)]
#[path = "run_tests.rs"]
mod tests;
