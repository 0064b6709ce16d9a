//! The study aggregate: one study's lifecycle, from `create_study` through
//! asks and tells to `stopped` or `completed`.
//!
//! Each command records at most one event, so a command is one atomic
//! append. The rules:
//!
//! - `create_study` validates the config (`INVALID_FIELD`) and refuses an
//!   existing study (`ALREADY_EXISTS`); any other command on a study that
//!   does not exist is `NOT_FOUND`.
//! - `ask {n}` (1..=1000) hands out `min(n, remaining budget)` new trials
//!   `t<k>`, numbered on from the last one; their parameters depend only on
//!   `(seed, number)`. Once the budget is all asked it records an empty
//!   `trials_asked` whose `study_done` says whether every trial is told.
//!   Model-based samplers (TPE) also see the trials before, told and
//!   pending, including those handed out earlier in the same ask; as the
//!   history is a fold of the events, a replay still gives the same trials.
//!   A stopped study refuses asks (`INVALID_STATE`).
//! - `tell` takes results by trial id, all or nothing: an id never handed
//!   out is `UNKNOWN_TRIAL`, a non-finite value or cost `INVALID_FIELD`, a
//!   different outcome for a told trial `INVALID_STATE`. Repeating an
//!   outcome is a no-op. Tells after `stop` are still recorded. The tell
//!   that tells the last trial of a fully asked budget completes the study.
//!   A tell for a failed trial (a late result) is recorded: the trial
//!   becomes completed with that value (its failure stays in the log and in
//!   the trial's `failure`), and it may become the best.
//! - `fail` records trials that could not be evaluated, all or nothing: an
//!   id never handed out is `UNKNOWN_TRIAL`, a trial already told is
//!   `INVALID_STATE` (a result is never withdrawn). Failing a failed trial
//!   again is a no-op whatever the reason (the first reason stays). A failed
//!   trial counts toward the budget and is never the best; TPE treats it as
//!   it treats a running trial (a point to stay away from). Failures after
//!   `stop` are still recorded. The study completes when the budget is all
//!   asked and every trial is told or failed, by a tell or by a fail.
//! - Leases (time only ever comes in a command's `now`, unix
//!   milliseconds): an `ask` with `now` leases every trial it hands out until
//!   `now + lease_seconds` (default one hour, 1..=30 days, else
//!   `INVALID_FIELD`); an `ask` without `now` hands out trials without a
//!   lease, which never go stale. `heartbeat {trial_ids, now}` renews the
//!   leases of running trials (an unknown id is `UNKNOWN_TRIAL`; told,
//!   failed and stale trials are left out, and so are leases that already
//!   end as late or later, so a repeat records nothing). `expire {now}`
//!   marks every running trial whose lease ended at or before `now` as
//!   stale, in one event (nothing expired, no event).
//! - A stale trial with retries left (the config's `max_retries`, default
//!   0) is handed out again by the next `ask`, before any new trial, as a
//!   new attempt: same trial id, same parameters, a new lease; it does not
//!   use budget. A stale trial without retries left counts as finished, so
//!   an `expire` may complete the study. A result or a failure for a stale
//!   trial (a late one) is recorded like any other.
//! - `stop` ends a running study (`INVALID_STATE` once stopped or completed).
//! - `report {trial_id, step, value}` records a running (or stale) trial's
//!   intermediate result and asks the config's pruner whether it goes on
//!   ([`reports`]); the event carries the answer (`continue` or `prune`), a
//!   pruned trial is finished (counts toward the budget, never the best),
//!   later reports for it are `INVALID_STATE`, a `fail` for it records
//!   nothing, and a late `tell` still completes it.
//! - `seed` adds earlier results as completed trials that use no budget;
//!   `enqueue` queues candidates that the next asks hand out first, filled
//!   in by the sampler where they leave parameters out ([`warm_start`]).
//!   Both check every value against the search space and refuse the whole
//!   command on the first problem.
//! - A maximising study (`direction: maximize`) keeps the highest value as
//!   the best; its samplers and pruners see values negated.

use flotilla_messages::solver::{
    trial_id, trial_number, Fail, Heartbeat, Lease, Params, SolverCommand, SolverEvent,
    StudyConfig, Tell, Trial, TrialFailure, TrialResult, COMMAND_TYPES, DEFAULT_LEASE_SECONDS,
    MAX_ASK, MAX_LEASE_SECONDS,
};
use flotilla_messages::{Actor, ErrorCode, Rejection};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;

use super::samplers::History;
use super::sampling::{sample_params, unit_of_params};
use flotilla_host::Aggregate;
use warm_start::complete_candidate;

mod reports;
mod warm_start;

/// Where a study is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StudyStatus {
    /// Hands out trials and takes results.
    Running,
    /// Stopped by a client: hands out nothing more, still takes results.
    Stopped,
    /// The whole budget was asked and told or failed.
    Completed,
}

impl StudyStatus {
    /// The wire spelling, e.g. `running`.
    pub fn as_str(self) -> &'static str {
        match self {
            StudyStatus::Running => "running",
            StudyStatus::Stopped => "stopped",
            StudyStatus::Completed => "completed",
        }
    }
}

/// The score a told trial got.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The objective (minimised).
    pub value: f64,
    /// What the evaluation cost, if reported.
    pub cost: Option<f64>,
}

/// Why a trial failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The reason `fail` gave, if any.
    pub reason: Option<String>,
}

/// Where a trial is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrialState {
    /// Handed out, neither told nor failed.
    Asked,
    /// Told a value (possibly after it had failed).
    Completed,
    /// Failed, and no value came later.
    Failed,
    /// Its lease ended before it was told or failed.
    Stale,
    /// Stopped early by the pruner after a report.
    Pruned,
}

impl TrialState {
    /// The wire spelling, e.g. `completed`.
    pub fn as_str(self) -> &'static str {
        match self {
            TrialState::Asked => "asked",
            TrialState::Completed => "completed",
            TrialState::Failed => "failed",
            TrialState::Stale => "stale",
            TrialState::Pruned => "pruned",
        }
    }
}

/// A trial the study handed out, and its outcome once told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    /// The trial as `ask` handed it out.
    pub trial: Trial,
    /// Its score; `None` while it runs (or failed).
    pub outcome: Option<Outcome>,
    /// Set once it failed; kept if a late result completes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// When its lease ends (unix milliseconds); `None` without a lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<u64>,
    /// Whether its lease ended while it ran (until a retry, result or
    /// failure).
    #[serde(default, skip_serializing_if = "is_false")]
    pub stale: bool,
    /// How many times it was handed out again after going stale.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u32,
    /// Its intermediate results, step → value, as `report` gave them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reports: BTreeMap<u64, f64>,
    /// The step at which the pruner stopped it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pruned_at: Option<u64>,
    /// Whether it came from `seed` (an earlier result, no budget used).
    #[serde(default, skip_serializing_if = "is_false")]
    pub seeded: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl TrialRecord {
    /// Whether `result` reports exactly this trial's recorded outcome.
    fn has_outcome(&self, result: &TrialResult) -> bool {
        self.outcome
            .is_some_and(|o| o.value == result.value && o.cost == result.cost)
    }

    /// Where the trial is: a value wins over a failure.
    pub fn state(&self) -> TrialState {
        match (&self.outcome, &self.failure) {
            (Some(_), _) => TrialState::Completed,
            (None, Some(_)) => TrialState::Failed,
            (None, None) if self.pruned_at.is_some() => TrialState::Pruned,
            (None, None) if self.stale => TrialState::Stale,
            (None, None) => TrialState::Asked,
        }
    }

    /// A trial just handed out (or seeded).
    fn new(trial: Trial, lease_until: Option<u64>) -> Self {
        TrialRecord {
            trial,
            outcome: None,
            failure: None,
            lease_until,
            stale: false,
            retries: 0,
            reports: BTreeMap::new(),
            pruned_at: None,
            seeded: false,
        }
    }

    fn view(&self) -> Value {
        let mut view = json!({
            "trial_id": self.trial.trial_id,
            "number": self.trial.number,
            "params": self.trial.params,
            "state": self.state().as_str(),
            "value": self.outcome.map(|o| o.value),
            "cost": self.outcome.and_then(|o| o.cost),
        });
        if let Some(failure) = &self.failure {
            view["failure"] = json!({ "reason": failure.reason });
        }
        if let Some(lease_until) = self.lease_until {
            view["lease_until"] = json!(lease_until);
        }
        if self.retries > 0 {
            view["retries"] = json!(self.retries);
        }
        if !self.reports.is_empty() {
            let reports: Vec<Value> = self
                .reports
                .iter()
                .map(|(step, value)| json!({"step": step, "value": value}))
                .collect();
            view["reports"] = json!(reports);
        }
        if let Some(step) = self.pruned_at {
            view["pruned_at"] = json!(step);
        }
        if self.seeded {
            view["seeded"] = json!(true);
        }
        view
    }
}

/// The state of a study that exists.
///
/// Snapshots hold the recorded fields only; the unit-cube cache the samplers
/// read is rebuilt from them when a snapshot is read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "StoredState")]
struct StudyState {
    config: StudyConfig,
    status: StudyStatus,
    stop_reason: Option<String>,
    /// Every trial handed out; trial `k` at index `k - 1`.
    trials: Vec<TrialRecord>,
    /// How many trials have an outcome.
    told: u64,
    /// How many trials failed and have no outcome.
    failed: u64,
    /// How many trials were pruned and have no outcome.
    pruned: u64,
    /// How many trials came from `seed` (they use no budget).
    seeded: u64,
    /// Candidates from `enqueue` not handed out yet, first in line first.
    queue: Vec<Params>,
    /// How many trials are stale: derived, never stored.
    #[serde(skip)]
    stale: u64,
    /// How many of those have no retry left (they count as finished):
    /// derived, never stored.
    #[serde(skip)]
    stale_final: u64,
    /// The number of the told trial with the best value, the lowest or the
    /// highest by the config's direction (first told wins ties).
    best: Option<u64>,
    /// Every trial's parameters as a unit point, flat, trial `k` at
    /// `(k - 1) · d`: derived from the params, never stored.
    #[serde(skip)]
    units: Vec<f64>,
    /// Every trial's value, `None` while pending: derived, never stored.
    #[serde(skip)]
    values: Vec<Option<f64>>,
}

/// The recorded fields of [`StudyState`], as snapshots hold them.
#[derive(Deserialize)]
struct StoredState {
    config: StudyConfig,
    status: StudyStatus,
    stop_reason: Option<String>,
    trials: Vec<TrialRecord>,
    told: u64,
    /// Absent in snapshots taken before trials could fail.
    #[serde(default)]
    failed: u64,
    /// Absent in snapshots taken before pruning.
    #[serde(default)]
    pruned: u64,
    /// Absent in snapshots taken before warm starts.
    #[serde(default)]
    seeded: u64,
    #[serde(default)]
    queue: Vec<Params>,
    best: Option<u64>,
}

impl From<StoredState> for StudyState {
    fn from(stored: StoredState) -> Self {
        let mut state = StudyState {
            config: stored.config,
            status: stored.status,
            stop_reason: stored.stop_reason,
            trials: Vec::new(),
            told: stored.told,
            failed: stored.failed,
            pruned: stored.pruned,
            seeded: stored.seeded,
            queue: stored.queue,
            stale: 0,
            stale_final: 0,
            best: stored.best,
            units: Vec::new(),
            values: Vec::new(),
        };
        for record in stored
            .trials
            .iter()
            .filter(|r| r.state() == TrialState::Stale)
        {
            state.stale += 1;
            if record.retries >= state.config.max_retries {
                state.stale_final += 1;
            }
        }
        for record in &stored.trials {
            state.cache(record);
        }
        state.trials = stored.trials;
        state
    }
}

/// One hyperparameter study: its config, trials and outcomes.
///
/// The default value is a study that was never created. It changes only
/// through [`Aggregate::evolve`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Study {
    /// `None` until `study_created`.
    state: Option<StudyState>,
}

impl Study {
    /// Whether the study was created.
    pub fn exists(&self) -> bool {
        self.state.is_some()
    }

    /// The config it was created with.
    pub fn config(&self) -> Option<&StudyConfig> {
        self.state.as_ref().map(|s| &s.config)
    }

    /// Where it is in its life; `None` if it was never created.
    pub fn status(&self) -> Option<StudyStatus> {
        self.state.as_ref().map(|s| s.status)
    }

    /// Every trial handed out, in number order.
    pub fn trials(&self) -> &[TrialRecord] {
        self.state.as_ref().map_or(&[], |s| &s.trials)
    }

    /// The trial with this id, if the study handed it out.
    pub fn trial(&self, id: &str) -> Option<&TrialRecord> {
        self.state.as_ref()?.trial(id)
    }

    /// The told trial with the best value (by the study's direction).
    pub fn best(&self) -> Option<&TrialRecord> {
        self.state.as_ref()?.best_record()
    }

    /// Whether the study will hand out and expect nothing more: stopped, or
    /// its budget all asked and every trial told or failed.
    pub fn is_done(&self) -> bool {
        self.state.as_ref().is_some_and(StudyState::is_done)
    }
}

impl StudyState {
    fn new(config: StudyConfig) -> Self {
        StudyState {
            config,
            status: StudyStatus::Running,
            stop_reason: None,
            trials: Vec::new(),
            told: 0,
            failed: 0,
            pruned: 0,
            seeded: 0,
            queue: Vec::new(),
            stale: 0,
            stale_final: 0,
            best: None,
            units: Vec::new(),
            values: Vec::new(),
        }
    }

    /// Adds `record` to the samplers' cache.
    fn cache(&mut self, record: &TrialRecord) {
        let unit = unit_of_params(&self.config, &record.trial.params);
        self.units.extend(unit);
        let direction = self.config.direction;
        self.values
            .push(record.outcome.map(|o| direction.loss(o.value)));
    }

    /// The samplers' view of the trials handed out so far.
    fn history(&self) -> History<'_> {
        History::new(self.config.bounds.len(), &self.units, &self.values)
    }

    fn asked(&self) -> u64 {
        self.trials.len() as u64
    }

    fn remaining(&self) -> u64 {
        self.config
            .budget
            .saturating_sub(self.asked() - self.seeded)
    }

    /// Trials told, failed, pruned or stale without a retry left.
    fn finished(&self) -> u64 {
        self.told + self.failed + self.pruned + self.stale_final
    }

    /// Whether `record` is stale with no retry left.
    fn is_final(&self, record: &TrialRecord) -> bool {
        record.state() == TrialState::Stale && record.retries >= self.config.max_retries
    }

    /// Whether `record` is still to be finished: running, or stale with a
    /// retry left.
    fn is_open(&self, record: &TrialRecord) -> bool {
        match record.state() {
            TrialState::Asked => true,
            TrialState::Stale => !self.is_final(record),
            TrialState::Completed | TrialState::Failed | TrialState::Pruned => false,
        }
    }

    /// How many open trials among `ids` (each counted once).
    fn open_among<'a>(&self, ids: impl Iterator<Item = &'a str>) -> u64 {
        let ids: std::collections::BTreeSet<&str> = ids.collect();
        ids.into_iter()
            .filter(|id| self.trial(id).is_some_and(|r| self.is_open(r)))
            .count() as u64
    }

    fn is_done(&self) -> bool {
        self.status != StudyStatus::Running
            || (self.remaining() == 0 && self.finished() == self.asked())
    }

    fn index_of(&self, id: &str) -> Option<usize> {
        let index = usize::try_from(trial_number(id)?.checked_sub(1)?).ok()?;
        (index < self.trials.len()).then_some(index)
    }

    fn trial(&self, id: &str) -> Option<&TrialRecord> {
        self.index_of(id).map(|i| &self.trials[i])
    }

    fn best_record(&self) -> Option<&TrialRecord> {
        let number = self.best?;
        self.trials.get(usize::try_from(number).ok()? - 1)
    }

    fn decide_ask(&self, n: u32, lease: Option<&Lease>) -> Result<Vec<SolverEvent>, Rejection> {
        let lease_until = lease
            .map(|l| lease_until("ask", l.now, l.seconds))
            .transpose()?;
        if !(1..=MAX_ASK).contains(&n) {
            return Err(Rejection::invalid(format!(
                "ask: n must be between 1 and {MAX_ASK}, got {n}"
            )));
        }
        if self.status == StudyStatus::Stopped {
            return Err(Rejection::new(
                ErrorCode::InvalidState,
                format!("ask: the study is stopped{}", self.reason_suffix()),
            ));
        }
        let retried: Vec<Trial> = if self.stale > self.stale_final {
            self.trials
                .iter()
                .filter(|r| r.state() == TrialState::Stale && !self.is_final(r))
                .take(n as usize)
                .map(|r| r.trial.clone())
                .collect()
        } else {
            Vec::new()
        };
        let count = self.remaining().min(u64::from(n) - retried.len() as u64);
        let mut history = self.history();
        let trials: Vec<Trial> = (1..=count)
            .map(|k| {
                let queued = self.queue.get(k as usize - 1);
                let trial = self.new_trial(self.asked() + k, &history, queued);
                history.push_pending(&unit_of_params(&self.config, &trial.params));
                trial
            })
            .collect();
        let study_done = trials.is_empty() && retried.is_empty() && self.is_done();
        Ok(vec![SolverEvent::TrialsAsked {
            trials,
            study_done,
            retried,
            lease_until,
        }])
    }

    fn decide_heartbeat(&self, heartbeat: &Heartbeat) -> Result<Vec<SolverEvent>, Rejection> {
        let lease_until = lease_until("heartbeat", heartbeat.now, heartbeat.lease_seconds)?;
        if heartbeat.trial_ids.is_empty() {
            return Err(Rejection::invalid("heartbeat: trial_ids must not be empty"));
        }
        let mut renewed: Vec<String> = Vec::new();
        for id in &heartbeat.trial_ids {
            let record = self
                .trial(id)
                .ok_or_else(|| self.unknown_trial_in("heartbeat", id))?;
            let running = record.state() == TrialState::Asked;
            let extends = record.lease_until.is_none_or(|until| until < lease_until);
            if running && extends && !renewed.contains(id) {
                renewed.push(id.clone());
            }
        }
        if renewed.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![SolverEvent::LeasesRenewed {
            trial_ids: renewed,
            lease_until,
        }])
    }

    fn decide_expire(&self, now: u64) -> Result<Vec<SolverEvent>, Rejection> {
        let expired: Vec<&TrialRecord> = self
            .trials
            .iter()
            .filter(|r| r.state() == TrialState::Asked && r.lease_until.is_some_and(|t| t <= now))
            .collect();
        if expired.is_empty() {
            return Ok(Vec::new());
        }
        let max = self.config.max_retries;
        let newly_final = expired.iter().filter(|r| r.retries >= max).count() as u64;
        Ok(vec![SolverEvent::TrialsExpired {
            trial_ids: expired.iter().map(|r| r.trial.trial_id.clone()).collect(),
            now,
            completes_study: self.completed_by(newly_final),
        }])
    }

    fn reason_suffix(&self) -> String {
        self.stop_reason
            .as_ref()
            .map_or(String::new(), |r| format!(" ({r})"))
    }

    /// Trial `number`: the sampler's point, or the queued candidate's
    /// values with the sampler filling in what it leaves out.
    fn new_trial(&self, number: u64, history: &History, queued: Option<&Params>) -> Trial {
        let params = match queued {
            None => sample_params(&self.config, number, history),
            Some(candidate) => complete_candidate(&self.config, number, history, candidate),
        };
        Trial {
            trial_id: trial_id(number),
            number,
            params,
        }
    }

    fn decide_tell(&self, tell: &Tell) -> Result<Vec<SolverEvent>, Rejection> {
        let mut fresh: BTreeMap<&str, &TrialResult> = BTreeMap::new();
        let mut order = Vec::new();
        for result in &tell.results {
            check_finite(result)?;
            if self.is_repeat(result)? {
                continue;
            }
            if let Some(earlier) = fresh.insert(&result.trial_id, result) {
                check_same_in_command(earlier, result)?;
            } else {
                order.push(result.clone());
            }
        }
        if order.is_empty() {
            return Ok(Vec::new());
        }
        // A late result for a failed or finally stale trial finishes nothing new.
        let newly_finished = self.open_among(order.iter().map(|r| r.trial_id.as_str()));
        let completes_study = self.completed_by(newly_finished);
        Ok(vec![SolverEvent::TrialsTold {
            results: order,
            completes_study,
        }])
    }

    /// Whether `result` repeats the trial's recorded outcome; an error if the
    /// trial is unknown or was told something else.
    fn is_repeat(&self, result: &TrialResult) -> Result<bool, Rejection> {
        let record = self
            .trial(&result.trial_id)
            .ok_or_else(|| self.unknown_trial(&result.trial_id))?;
        match record.outcome {
            None => Ok(false),
            Some(_) if record.has_outcome(result) => Ok(true),
            Some(told) => Err(Rejection::new(
                ErrorCode::InvalidState,
                format!(
                    "tell: trial {} was already told value {}{}; refusing value {}{}",
                    result.trial_id,
                    told.value,
                    cost_suffix(told.cost),
                    result.value,
                    cost_suffix(result.cost)
                ),
            )),
        }
    }

    fn decide_fail(&self, fail: &Fail) -> Result<Vec<SolverEvent>, Rejection> {
        let mut fresh: Vec<TrialFailure> = Vec::new();
        for failure in &fail.failures {
            let id = &failure.trial_id;
            let record = self
                .trial(id)
                .ok_or_else(|| self.unknown_trial_in("fail", id))?;
            if let Some(told) = record.outcome {
                return Err(Rejection::new(
                    ErrorCode::InvalidState,
                    format!(
                        "fail: trial {id} was already told value {}{}; a result is never withdrawn",
                        told.value,
                        cost_suffix(told.cost)
                    ),
                ));
            }
            // A pruned trial is finished already; its process failing as
            // it is stopped changes nothing.
            let repeat = record.failure.is_some()
                || record.pruned_at.is_some()
                || fresh.iter().any(|f| &f.trial_id == id);
            if !repeat {
                fresh.push(failure.clone());
            }
        }
        if fresh.is_empty() {
            return Ok(Vec::new());
        }
        let newly_finished = self.open_among(fresh.iter().map(|f| f.trial_id.as_str()));
        let completes_study = self.completed_by(newly_finished);
        Ok(vec![SolverEvent::TrialsFailed {
            failures: fresh,
            completes_study,
        }])
    }

    fn unknown_trial(&self, id: &str) -> Rejection {
        self.unknown_trial_in("tell", id)
    }

    fn unknown_trial_in(&self, command: &str, id: &str) -> Rejection {
        let handed_out = match self.asked() {
            0 => "no trials yet".to_string(),
            1 => "only t1".to_string(),
            n => format!("t1..t{n}"),
        };
        Rejection::new(
            ErrorCode::UnknownTrial,
            format!("{command}: unknown trial {id:?}: this study handed out {handed_out}"),
        )
    }

    /// Whether telling or failing `newly_finished` more trials completes
    /// the study.
    fn completed_by(&self, newly_finished: u64) -> bool {
        self.status == StudyStatus::Running
            && self.remaining() == 0
            && self.finished() + newly_finished == self.asked()
    }

    fn decide_stop(&self, reason: &Option<String>) -> Result<Vec<SolverEvent>, Rejection> {
        match self.status {
            StudyStatus::Running => Ok(vec![SolverEvent::StudyStopped {
                reason: reason.clone(),
            }]),
            done => Err(Rejection::new(
                ErrorCode::InvalidState,
                format!("stop: the study is already {}", done.as_str()),
            )),
        }
    }

    fn apply(&mut self, event: &SolverEvent) {
        match event {
            SolverEvent::StudyCreated { .. } => {}
            SolverEvent::TrialsAsked {
                trials,
                retried,
                lease_until,
                ..
            } => {
                self.retry_trials(retried, *lease_until);
                self.add_trials(trials, *lease_until);
            }
            SolverEvent::LeasesRenewed {
                trial_ids,
                lease_until,
            } => {
                for id in trial_ids {
                    if let Some(index) = self.index_of(id) {
                        if self.trials[index].state() == TrialState::Asked {
                            self.trials[index].lease_until = Some(*lease_until);
                        }
                    }
                }
            }
            SolverEvent::TrialsExpired {
                trial_ids,
                completes_study,
                ..
            } => self.expire_trials(trial_ids, *completes_study),
            SolverEvent::TrialsTold {
                results,
                completes_study,
            } => self.record_results(results, *completes_study),
            SolverEvent::TrialsFailed {
                failures,
                completes_study,
            } => self.record_failures(failures, *completes_study),
            SolverEvent::StudyStopped { reason } => {
                self.status = StudyStatus::Stopped;
                self.stop_reason = reason.clone();
            }
            SolverEvent::TrialReported {
                trial_id,
                step,
                value,
                action,
                completes_study,
            } => self.record_report(trial_id, *step, *value, *action, *completes_study),
            SolverEvent::TrialsSeeded { trials, results } => self.add_seeded(trials, results),
            SolverEvent::CandidatesEnqueued { candidates } => {
                self.queue.extend(candidates.iter().cloned());
            }
        }
    }

    fn retry_trials(&mut self, retried: &[Trial], lease_until: Option<u64>) {
        for trial in retried {
            let Some(index) = self.index_of(&trial.trial_id) else {
                continue;
            };
            if self.trials[index].state() != TrialState::Stale || self.is_final(&self.trials[index])
            {
                continue;
            }
            let record = &mut self.trials[index];
            record.stale = false;
            record.retries += 1;
            record.lease_until = lease_until;
            self.stale -= 1;
        }
    }

    fn expire_trials(&mut self, trial_ids: &[String], completes_study: bool) {
        for id in trial_ids {
            let Some(index) = self.index_of(id) else {
                continue;
            };
            if self.trials[index].state() != TrialState::Asked {
                continue;
            }
            self.trials[index].stale = true;
            self.stale += 1;
            if self.is_final(&self.trials[index]) {
                self.stale_final += 1;
            }
        }
        if completes_study {
            self.complete();
        }
    }

    /// Clears trial `index`'s stale mark before a result or failure.
    fn unstale(&mut self, index: usize) {
        if self.trials[index].state() != TrialState::Stale {
            return;
        }
        if self.is_final(&self.trials[index]) {
            self.stale_final -= 1;
        }
        self.stale -= 1;
        self.trials[index].stale = false;
    }

    fn add_trials(&mut self, trials: &[Trial], lease_until: Option<u64>) {
        let from_queue = trials.len().min(self.queue.len());
        self.queue.drain(..from_queue);
        for trial in trials {
            self.push_record(TrialRecord::new(trial.clone(), lease_until));
        }
    }

    /// Marks a running study completed (a stopped one stays stopped).
    fn complete(&mut self) {
        if self.status == StudyStatus::Running {
            self.status = StudyStatus::Completed;
        }
    }

    /// Adds a new trial's record, in number order.
    fn push_record(&mut self, record: TrialRecord) {
        self.cache(&record);
        self.trials.push(record);
    }

    fn record_failures(&mut self, failures: &[TrialFailure], completes_study: bool) {
        for failure in failures {
            let Some(index) = self.index_of(&failure.trial_id) else {
                continue;
            };
            let record = &self.trials[index];
            if record.outcome.is_some() || record.failure.is_some() || record.pruned_at.is_some() {
                continue;
            }
            self.unstale(index);
            let record = &mut self.trials[index];
            record.failure = Some(Failure {
                reason: failure.reason.clone(),
            });
            self.failed += 1;
        }
        if completes_study {
            self.complete();
        }
    }

    fn record_results(&mut self, results: &[TrialResult], completes_study: bool) {
        for result in results {
            self.record_result(result);
        }
        if completes_study {
            self.complete();
        }
    }

    fn record_result(&mut self, result: &TrialResult) {
        let Some(index) = self.index_of(&result.trial_id) else {
            return;
        };
        if self.trials[index].outcome.is_some() {
            return;
        }
        self.unstale(index);
        self.trials[index].outcome = Some(Outcome {
            value: result.value,
            cost: result.cost,
        });
        self.values[index] = Some(self.config.direction.loss(result.value));
        self.told += 1;
        if self.trials[index].failure.is_some() {
            self.failed -= 1;
        } else if self.trials[index].pruned_at.is_some() {
            self.pruned -= 1;
        }
        let direction = self.config.direction;
        if self
            .best_value()
            .is_none_or(|best| direction.better(result.value, best))
        {
            self.best = Some(self.trials[index].trial.number);
        }
    }

    fn best_value(&self) -> Option<f64> {
        self.best_record()?.outcome.map(|o| o.value)
    }

    fn counts(&self) -> Value {
        json!({
            "budget": self.config.budget,
            "asked": self.asked(),
            "told": self.told,
            "failed": self.failed,
            "pruned": self.pruned,
            "seeded": self.seeded,
            "queued": self.queue.len(),
            "stale": self.stale,
            "running": self.asked() - self.told - self.failed - self.pruned - self.stale,
            "pending": self.asked() - self.finished(),
            "remaining": self.remaining(),
        })
    }

    fn view(&self) -> Value {
        let trials: Vec<Value> = self.trials.iter().map(TrialRecord::view).collect();
        json!({
            "status": self.status.as_str(),
            "stop_reason": self.stop_reason,
            "done": self.is_done(),
            "config": self.config,
            "counts": self.counts(),
            "best": self.best_record().map(TrialRecord::view),
            "trials": trials,
        })
    }
}

/// When a lease taken at `now` for `seconds` (default one hour) ends.
fn lease_until(command: &str, now: u64, seconds: Option<u64>) -> Result<u64, Rejection> {
    let seconds = seconds.unwrap_or(DEFAULT_LEASE_SECONDS);
    if !(1..=MAX_LEASE_SECONDS).contains(&seconds) {
        return Err(Rejection::invalid(format!(
            "{command}: lease_seconds must be between 1 and {MAX_LEASE_SECONDS}, got {seconds}"
        )));
    }
    now.checked_add(seconds * 1000).ok_or_else(|| {
        Rejection::invalid(format!(
            "{command}: now must be unix milliseconds, got {now}"
        ))
    })
}

fn cost_suffix(cost: Option<f64>) -> String {
    cost.map_or(String::new(), |c| format!(" (cost {c})"))
}

fn check_finite(result: &TrialResult) -> Result<(), Rejection> {
    let id = &result.trial_id;
    if !result.value.is_finite() {
        return Err(Rejection::invalid(format!(
            "tell: value of trial {id} must be finite, got {}",
            result.value
        )));
    }
    match result.cost {
        Some(cost) if !cost.is_finite() => Err(Rejection::invalid(format!(
            "tell: cost of trial {id} must be finite, got {cost}"
        ))),
        _ => Ok(()),
    }
}

fn check_same_in_command(earlier: &TrialResult, later: &TrialResult) -> Result<(), Rejection> {
    if earlier.same_outcome(later) {
        return Ok(());
    }
    Err(Rejection::invalid(format!(
        "tell: trial {} appears twice with different outcomes ({} and {})",
        later.trial_id, earlier.value, later.value
    )))
}

fn not_found(command: &SolverCommand) -> Rejection {
    Rejection::new(
        ErrorCode::NotFound,
        format!(
            "{}: the study does not exist; create it with create_study first",
            command.command_type()
        ),
    )
}

fn decide_create(config: &StudyConfig) -> Result<Vec<SolverEvent>, Rejection> {
    config.validate()?;
    Ok(vec![SolverEvent::StudyCreated {
        config: config.clone(),
    }])
}

impl Aggregate for Study {
    const ACTOR: Actor = Actor::Solver;
    const COMMAND_TYPES: &'static [&'static str] = COMMAND_TYPES;
    type Command = SolverCommand;
    type Event = SolverEvent;

    fn decide(&self, command: &SolverCommand) -> Result<Vec<SolverEvent>, Rejection> {
        let Some(state) = &self.state else {
            return match command {
                SolverCommand::CreateStudy(config) => decide_create(config),
                other => Err(not_found(other)),
            };
        };
        match command {
            SolverCommand::CreateStudy(_) => Err(Rejection::new(
                ErrorCode::AlreadyExists,
                "create_study: the study exists already",
            )),
            SolverCommand::Ask { n, lease } => state.decide_ask(*n, lease.as_ref()),
            SolverCommand::Heartbeat(heartbeat) => state.decide_heartbeat(heartbeat),
            SolverCommand::Expire { now } => state.decide_expire(*now),
            SolverCommand::Tell(tell) => state.decide_tell(tell),
            SolverCommand::Fail(fail) => state.decide_fail(fail),
            SolverCommand::Stop { reason } => state.decide_stop(reason),
            SolverCommand::Report(report) => state.decide_report(report),
            SolverCommand::Seed(seed) => state.decide_seed(seed),
            SolverCommand::Enqueue(enqueue) => state.decide_enqueue(enqueue),
        }
    }

    fn evolve(mut self, event: &SolverEvent) -> Self {
        match (&mut self.state, event) {
            (None, SolverEvent::StudyCreated { config }) => {
                self.state = Some(StudyState::new(config.clone()));
            }
            (Some(state), event) => state.apply(event),
            (None, _) => {}
        }
        self
    }

    fn result(events: &[SolverEvent]) -> Value {
        match events.first() {
            Some(SolverEvent::StudyCreated { config }) => json!({ "config": config }),
            Some(SolverEvent::TrialsAsked {
                trials,
                study_done,
                retried,
                lease_until,
            }) => {
                let all: Vec<&Trial> = retried.iter().chain(trials).collect();
                let mut result = json!({ "trials": all, "done": study_done });
                if !retried.is_empty() {
                    let ids: Vec<&str> = retried.iter().map(|t| t.trial_id.as_str()).collect();
                    result["retried"] = json!(ids);
                }
                if let Some(until) = lease_until {
                    result["lease_until"] = json!(until);
                }
                result
            }
            Some(SolverEvent::LeasesRenewed {
                trial_ids,
                lease_until,
            }) => json!({ "renewed": trial_ids, "lease_until": lease_until }),
            Some(SolverEvent::TrialsExpired { trial_ids, .. }) => json!({ "expired": trial_ids }),
            Some(SolverEvent::TrialsTold { results, .. }) => {
                let ids: Vec<&str> = results.iter().map(|r| r.trial_id.as_str()).collect();
                json!({ "told": ids })
            }
            Some(SolverEvent::TrialsFailed { failures, .. }) => {
                let ids: Vec<&str> = failures.iter().map(|f| f.trial_id.as_str()).collect();
                json!({ "failed": ids })
            }
            Some(SolverEvent::StudyStopped { reason }) => {
                json!({ "status": "stopped", "reason": reason })
            }
            Some(SolverEvent::TrialReported {
                trial_id, action, ..
            }) => json!({ "trial_id": trial_id, "action": action }),
            Some(SolverEvent::TrialsSeeded { trials, .. }) => {
                let ids: Vec<&str> = trials.iter().map(|t| t.trial_id.as_str()).collect();
                json!({ "seeded": ids })
            }
            Some(SolverEvent::CandidatesEnqueued { candidates }) => {
                json!({ "enqueued": candidates.len() })
            }
            // A repeated tell, fail or heartbeat, or nothing to expire.
            None => json!({ "told": [], "failed": [], "renewed": [], "expired": [] }),
        }
    }

    fn view(&self) -> Value {
        self.state
            .as_ref()
            .map_or_else(|| json!({ "status": "not_created" }), StudyState::view)
    }

    fn event_type(event: &SolverEvent) -> &'static str {
        event.event_type()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samplers::testing::{bits, trial_bits};
    use crate::samplers::{grid::Grid, sobol};
    use flotilla_messages::solver::{Bound, Lease, ParamValue, Params, Sampler, Scale};
    use flotilla_messages::CommandRequest;
    use proptest::prelude::*;

    fn config(budget: u64) -> StudyConfig {
        config_with(budget, Sampler::Random)
    }

    fn config_with(budget: u64, sampler: Sampler) -> StudyConfig {
        let bounds = BTreeMap::from([
            ("lr".to_string(), Bound::new(1e-5, 1e-1, Scale::Log)),
            ("momentum".to_string(), Bound::new(0.8, 0.99, Scale::Linear)),
        ]);
        StudyConfig {
            seed: 42,
            budget,
            bounds,
            probe_ratio: Some(0.2),
            strategy_params: BTreeMap::new(),
            sampler,
            max_retries: 0,
            ..Default::default()
        }
    }

    fn created(budget: u64) -> SolverEvent {
        SolverEvent::StudyCreated {
            config: config(budget),
        }
    }

    fn trial(number: u64) -> Trial {
        Trial {
            trial_id: trial_id(number),
            number,
            params: sample_params(&config(0), number, &History::default()),
        }
    }

    fn asked(numbers: std::ops::RangeInclusive<u64>) -> SolverEvent {
        SolverEvent::TrialsAsked {
            trials: numbers.map(trial).collect(),
            study_done: false,
            retried: vec![],
            lease_until: None,
        }
    }

    fn result(id: &str, value: f64) -> TrialResult {
        TrialResult {
            trial_id: id.to_string(),
            value,
            cost: None,
        }
    }

    fn told(results: &[(&str, f64)], completes_study: bool) -> SolverEvent {
        SolverEvent::TrialsTold {
            results: results.iter().map(|&(id, v)| result(id, v)).collect(),
            completes_study,
        }
    }

    fn given(events: &[SolverEvent]) -> Study {
        events.iter().fold(Study::default(), Study::evolve)
    }

    /// Parses `command` the way the host does, then decides it.
    fn when(study: &Study, command: Value) -> Result<Vec<SolverEvent>, Rejection> {
        let request = CommandRequest::from_value(command, None).unwrap();
        let command: SolverCommand = request.parse("solver", Study::COMMAND_TYPES).unwrap();
        study.decide(&command)
    }

    fn rejected(study: &Study, command: Value) -> Rejection {
        when(study, command).unwrap_err()
    }

    fn tell_one(value: f64, cost: Option<f64>) -> SolverCommand {
        SolverCommand::Tell(Tell {
            results: vec![TrialResult {
                trial_id: "t1".into(),
                value,
                cost,
            }],
        })
    }

    // create_study

    #[test]
    fn create_records_the_config() {
        let command = json!({"type": "create_study", "seed": 42, "budget": 3, "probe_ratio": 0.2,
            "bounds": {"lr": {"min": 1e-5, "max": 0.1, "scale": "LOG"},
                       "momentum": {"min": 0.8, "max": 0.99}}});
        // No sampler named: `auto`, written into the event.
        let config = config_with(3, Sampler::Auto);
        assert_eq!(
            when(&given(&[]), command).unwrap(),
            vec![SolverEvent::StudyCreated { config }]
        );
    }

    #[test]
    fn create_validates_the_config() {
        let command = json!({"type": "create_study", "seed": 1, "budget": 3,
            "bounds": {"lr": {"min": 0.1, "max": 0.01}}});
        let e = rejected(&given(&[]), command);
        assert_eq!(e.code, ErrorCode::InvalidField);
        assert_eq!(e.message, "bounds.lr: min 0.1 must be below max 0.01");
        let zero_budget = json!({"type": "create_study", "seed": 1, "budget": 0, "bounds": {"x": {"min": 0, "max": 1}}});
        assert_eq!(
            rejected(&given(&[]), zero_budget).code,
            ErrorCode::InvalidField
        );
        let log_at_zero = json!({"type": "create_study", "seed": 1, "budget": 1,
            "bounds": {"x": {"min": 0, "max": 1, "scale": "log"}}});
        let e = rejected(&given(&[]), log_at_zero);
        assert_eq!(e.message, "bounds.x: log scale needs min > 0, got 0");
    }

    #[test]
    fn create_twice_is_already_exists() {
        let e = given(&[created(3)])
            .decide(&SolverCommand::CreateStudy(config(3)))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::AlreadyExists);
    }

    #[test]
    fn other_commands_need_the_study() {
        for command in [
            json!({"type": "ask"}),
            json!({"type": "tell", "trial_id": "t1", "value": 1.0}),
            json!({"type": "fail", "trial_id": "t1"}),
            json!({"type": "stop"}),
        ] {
            let e = rejected(&given(&[]), command.clone());
            assert_eq!(e.code, ErrorCode::NotFound, "{command}");
            assert!(e.message.starts_with(command["type"].as_str().unwrap()));
        }
    }

    // ask

    #[test]
    fn ask_hands_out_numbered_trials_sampled_from_seed_and_number() {
        let events = when(&given(&[created(10)]), json!({"type": "ask", "n": 2})).unwrap();
        assert_eq!(events, vec![asked(1..=2)]);
        let later = when(&given(&[created(10), asked(1..=2)]), json!({"type": "ask"})).unwrap();
        assert_eq!(later, vec![asked(3..=3)]);
    }

    #[test]
    fn ask_n_must_be_between_1_and_1000() {
        let study = given(&[created(5000)]);
        for n in [0, 1001] {
            let e = rejected(&study, json!({"type": "ask", "n": n}));
            assert_eq!(e.code, ErrorCode::InvalidField);
            assert_eq!(
                e.message,
                format!("ask: n must be between 1 and 1000, got {n}")
            );
        }
        let events = when(&study, json!({"type": "ask", "n": 1000})).unwrap();
        assert_eq!(events, vec![asked(1..=1000)]);
    }

    #[test]
    fn ask_is_capped_by_the_remaining_budget() {
        let events = when(
            &given(&[created(3), asked(1..=2)]),
            json!({"type": "ask", "n": 5}),
        );
        assert_eq!(events.unwrap(), vec![asked(3..=3)]);
    }

    #[test]
    fn ask_after_the_budget_is_empty_and_not_done_while_trials_run() {
        let study = given(&[created(2), asked(1..=2), told(&[("t1", 1.0)], false)]);
        let events = when(&study, json!({"type": "ask", "n": 4})).unwrap();
        let expected = SolverEvent::TrialsAsked {
            trials: vec![],
            study_done: false,
            retried: vec![],
            lease_until: None,
        };
        assert_eq!(events, vec![expected]);
        assert_eq!(Study::result(&events), json!({"trials": [], "done": false}));
    }

    #[test]
    fn ask_on_a_completed_study_is_empty_and_done() {
        let study = given(&[created(1), asked(1..=1), told(&[("t1", 1.0)], true)]);
        let events = when(&study, json!({"type": "ask"})).unwrap();
        assert_eq!(Study::result(&events), json!({"trials": [], "done": true}));
    }

    #[test]
    fn ask_on_a_stopped_study_is_invalid_state() {
        let stopped = SolverEvent::StudyStopped {
            reason: Some("enough".into()),
        };
        let e = rejected(&given(&[created(5), stopped]), json!({"type": "ask"}));
        assert_eq!(e.code, ErrorCode::InvalidState);
        assert_eq!(e.message, "ask: the study is stopped (enough)");
    }

    #[test]
    fn ask_result_lists_the_trials() {
        let events = vec![asked(1..=1)];
        let expected = json!({"done": false, "trials": [{
            "trial_id": "t1", "number": 1, "params": trial(1).params,
        }]});
        assert_eq!(Study::result(&events), expected);
    }

    // tell

    #[test]
    fn tell_records_results() {
        let study = given(&[created(5), asked(1..=2)]);
        let command = json!({"type": "tell", "results": [
            {"trial_id": "t2", "value": 0.5}, {"trial_id": "t1", "value": 0.7}]});
        let events = when(&study, command).unwrap();
        assert_eq!(events, vec![told(&[("t2", 0.5), ("t1", 0.7)], false)]);
        assert_eq!(Study::result(&events), json!({"told": ["t2", "t1"]}));
        let single = json!({"type": "tell", "trial_id": "t1", "value": 0.7});
        assert_eq!(
            when(&study, single).unwrap(),
            vec![told(&[("t1", 0.7)], false)]
        );
    }

    #[test]
    fn tell_of_an_unknown_trial_refuses_the_whole_command() {
        let study = given(&[created(5), asked(1..=2)]);
        let command = json!({"type": "tell", "results": [
            {"trial_id": "t1", "value": 0.5}, {"trial_id": "t9", "value": 0.7}]});
        let e = rejected(&study, command);
        assert_eq!(e.code, ErrorCode::UnknownTrial);
        assert_eq!(
            e.message,
            "tell: unknown trial \"t9\": this study handed out t1..t2"
        );
        for id in ["t0", "t01", "x", ""] {
            let e = rejected(&study, json!({"type": "tell", "trial_id": id, "value": 1}));
            assert_eq!(e.code, ErrorCode::UnknownTrial, "{id}");
        }
    }

    #[test]
    fn tell_refuses_non_finite_values_and_costs() {
        let study = given(&[created(5), asked(1..=1)]);
        for command in [
            tell_one(f64::NAN, None),
            tell_one(f64::INFINITY, None),
            tell_one(1.0, Some(f64::NEG_INFINITY)),
        ] {
            let e = study.decide(&command).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidField);
            assert!(
                e.message.contains("trial t1 must be finite"),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn telling_the_same_outcome_again_changes_nothing() {
        let study = given(&[created(5), asked(1..=2), told(&[("t1", 0.5)], false)]);
        let repeat = json!({"type": "tell", "trial_id": "t1", "value": 0.5});
        let events = when(&study, repeat).unwrap();
        assert!(events.is_empty());
        assert_eq!(
            Study::result(&events),
            json!({"told": [], "failed": [], "renewed": [], "expired": []})
        );
        let partly_new = json!({"type": "tell", "results": [
            {"trial_id": "t1", "value": 0.5}, {"trial_id": "t2", "value": 0.25},
            {"trial_id": "t2", "value": 0.25}]});
        assert_eq!(
            when(&study, partly_new).unwrap(),
            vec![told(&[("t2", 0.25)], false)]
        );
    }

    #[test]
    fn telling_a_different_outcome_is_invalid_state() {
        let study = given(&[created(5), asked(1..=1), told(&[("t1", 0.5)], false)]);
        let e = rejected(
            &study,
            json!({"type": "tell", "trial_id": "t1", "value": 0.6}),
        );
        assert_eq!(e.code, ErrorCode::InvalidState);
        assert_eq!(
            e.message,
            "tell: trial t1 was already told value 0.5; refusing value 0.6"
        );
        let e = study.decide(&tell_one(0.5, Some(3.0))).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidState);
    }

    #[test]
    fn conflicting_results_in_one_tell_are_invalid() {
        let study = given(&[created(5), asked(1..=1)]);
        let command = json!({"type": "tell", "results": [
            {"trial_id": "t1", "value": 0.5}, {"trial_id": "t1", "value": 0.6}]});
        assert_eq!(rejected(&study, command).code, ErrorCode::InvalidField);
    }

    #[test]
    fn tells_after_stop_are_recorded() {
        let stopped = SolverEvent::StudyStopped { reason: None };
        let study = given(&[created(2), asked(1..=2), stopped.clone()]);
        let command = json!({"type": "tell", "results": [
            {"trial_id": "t1", "value": 1}, {"trial_id": "t2", "value": 2}]});
        let events = when(&study, command).unwrap();
        assert_eq!(events, vec![told(&[("t1", 1.0), ("t2", 2.0)], false)]);
        let after = given(&[created(2), asked(1..=2), stopped, events[0].clone()]);
        assert_eq!(after.status(), Some(StudyStatus::Stopped));
        assert_eq!(after.best().unwrap().trial.trial_id, "t1");
    }

    #[test]
    fn the_last_tell_of_a_fully_asked_budget_completes_the_study() {
        let study = given(&[created(2), asked(1..=2), told(&[("t1", 1.0)], false)]);
        let events = when(
            &study,
            json!({"type": "tell", "trial_id": "t2", "value": 3}),
        )
        .unwrap();
        assert_eq!(events, vec![told(&[("t2", 3.0)], true)]);
        let done = study.evolve(&events[0]);
        assert_eq!(done.status(), Some(StudyStatus::Completed));
        assert!(done.is_done());
    }

    #[test]
    fn telling_every_asked_trial_before_the_budget_is_asked_does_not_complete() {
        let study = given(&[created(3), asked(1..=2), told(&[("t1", 1.0)], false)]);
        let events = when(
            &study,
            json!({"type": "tell", "trial_id": "t2", "value": 3}),
        )
        .unwrap();
        assert_eq!(events, vec![told(&[("t2", 3.0)], false)]);
    }

    // fail

    fn failed(failures: &[(&str, Option<&str>)], completes_study: bool) -> SolverEvent {
        SolverEvent::TrialsFailed {
            failures: failures
                .iter()
                .map(|&(id, reason)| TrialFailure {
                    trial_id: id.to_string(),
                    reason: reason.map(Into::into),
                })
                .collect(),
            completes_study,
        }
    }

    #[test]
    fn fail_records_failed_trials() {
        let study = given(&[created(5), asked(1..=3)]);
        let command = json!({"type": "fail", "failures": [
            {"trial_id": "t2", "reason": "exit 3"}, {"trial_id": "t1"}]});
        let events = when(&study, command).unwrap();
        assert_eq!(
            events,
            vec![failed(&[("t2", Some("exit 3")), ("t1", None)], false)]
        );
        assert_eq!(Study::result(&events), json!({"failed": ["t2", "t1"]}));
        let after = study.evolve(&events[0]);
        assert_eq!(after.trial("t2").unwrap().state(), TrialState::Failed);
        assert_eq!(after.trial("t3").unwrap().state(), TrialState::Asked);
        let view = after.view();
        let counts = json!({"budget": 5, "asked": 3, "told": 0, "failed": 2, "pruned": 0, "seeded": 0, "queued": 0, "stale": 0, "running": 1, "pending": 1, "remaining": 2});
        assert_eq!(view["counts"], counts);
        assert_eq!(view["trials"][1]["state"], "failed");
        assert_eq!(view["trials"][1]["failure"], json!({"reason": "exit 3"}));
        assert_eq!(view["trials"][0]["failure"], json!({"reason": null}));
        assert_eq!(view["best"], Value::Null);
    }

    #[test]
    fn fail_of_an_unknown_trial_refuses_the_whole_command() {
        let study = given(&[created(5), asked(1..=2)]);
        let command = json!({"type": "fail", "failures": [{"trial_id": "t1"}, {"trial_id": "t3"}]});
        let e = rejected(&study, command);
        assert_eq!(e.code, ErrorCode::UnknownTrial);
        assert_eq!(
            e.message,
            "fail: unknown trial \"t3\": this study handed out t1..t2"
        );
    }

    #[test]
    fn failing_a_told_trial_is_invalid_state() {
        let study = given(&[created(5), asked(1..=2), told(&[("t1", 0.5)], false)]);
        let command = json!({"type": "fail", "failures": [{"trial_id": "t2"}, {"trial_id": "t1"}]});
        let e = rejected(&study, command);
        assert_eq!(e.code, ErrorCode::InvalidState);
        assert_eq!(
            e.message,
            "fail: trial t1 was already told value 0.5; a result is never withdrawn"
        );
    }

    #[test]
    fn failing_again_changes_nothing_whatever_the_reason() {
        let study = given(&[
            created(5),
            asked(1..=2),
            failed(&[("t1", Some("a"))], false),
        ]);
        for reason in ["a", "b"] {
            let events = when(
                &study,
                json!({"type": "fail", "trial_id": "t1", "reason": reason}),
            );
            assert_eq!(events.unwrap(), vec![]);
        }
        let command = json!({"type": "fail", "failures": [
            {"trial_id": "t1"}, {"trial_id": "t2", "reason": "x"}, {"trial_id": "t2", "reason": "y"}]});
        assert_eq!(
            when(&study, command).unwrap(),
            vec![failed(&[("t2", Some("x"))], false)]
        );
        let again = study.evolve(&failed(&[("t1", Some("b"))], false));
        assert_eq!(
            again
                .trial("t1")
                .unwrap()
                .failure
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("a")
        );
        assert_eq!(again.view()["counts"]["failed"], 1);
    }

    #[test]
    fn the_last_failure_of_a_fully_asked_budget_completes_the_study() {
        let study = given(&[
            created(3),
            asked(1..=3),
            told(&[("t1", 1.0)], false),
            failed(&[("t2", None)], false),
        ]);
        let events = when(&study, json!({"type": "fail", "trial_id": "t3"})).unwrap();
        assert_eq!(events, vec![failed(&[("t3", None)], true)]);
        let done = study.clone().evolve(&events[0]);
        assert_eq!(done.status(), Some(StudyStatus::Completed));
        assert!(done.is_done());
        assert_eq!(done.best().unwrap().trial.trial_id, "t1");
        let ask = when(&done, json!({"type": "ask"})).unwrap();
        assert_eq!(Study::result(&ask), json!({"trials": [], "done": true}));
        // A tell may finish it just as well.
        let events = when(
            &study,
            json!({"type": "tell", "trial_id": "t3", "value": 2}),
        )
        .unwrap();
        assert_eq!(events, vec![told(&[("t3", 2.0)], true)]);
    }

    #[test]
    fn a_study_whose_trials_all_fail_completes_without_a_best() {
        let study = given(&[created(2), asked(1..=2)]);
        let events = when(
            &study,
            json!({"type": "fail", "failures": [{"trial_id": "t1"}, {"trial_id": "t2"}]}),
        )
        .unwrap();
        assert_eq!(events, vec![failed(&[("t1", None), ("t2", None)], true)]);
        let done = study.evolve(&events[0]);
        assert_eq!(done.status(), Some(StudyStatus::Completed));
        assert!(done.best().is_none());
    }

    #[test]
    fn failing_every_asked_trial_before_the_budget_is_asked_does_not_complete() {
        let study = given(&[created(3), asked(1..=2)]);
        let events = when(
            &study,
            json!({"type": "fail", "failures": [{"trial_id": "t1"}, {"trial_id": "t2"}]}),
        )
        .unwrap();
        assert_eq!(events, vec![failed(&[("t1", None), ("t2", None)], false)]);
        let after = study.evolve(&events[0]);
        let next = when(&after, json!({"type": "ask", "n": 5})).unwrap();
        assert_eq!(next, vec![asked(3..=3)]);
    }

    #[test]
    fn a_late_result_for_a_failed_trial_completes_it() {
        let study = given(&[
            created(2),
            asked(1..=2),
            told(&[("t1", 1.0)], false),
            failed(&[("t2", Some("timed out"))], true),
        ]);
        assert_eq!(study.status(), Some(StudyStatus::Completed));
        let events = when(
            &study,
            json!({"type": "tell", "trial_id": "t2", "value": 0.5}),
        )
        .unwrap();
        // Recorded, not lost; it finishes nothing new, the study was complete already.
        assert_eq!(events, vec![told(&[("t2", 0.5)], false)]);
        let after = study.evolve(&events[0]);
        let record = after.trial("t2").unwrap();
        assert_eq!(record.state(), TrialState::Completed);
        assert_eq!(
            record.failure.as_ref().unwrap().reason.as_deref(),
            Some("timed out")
        );
        assert_eq!(after.best().unwrap().trial.trial_id, "t2");
        let view = after.view();
        assert_eq!(view["counts"]["told"], 2);
        assert_eq!(view["counts"]["failed"], 0);
        assert_eq!(view["trials"][1]["state"], "completed");
        assert_eq!(view["status"], "completed");
        // Once completed it cannot fail again; the same result is a repeat.
        assert_eq!(
            rejected(&after, json!({"type": "fail", "trial_id": "t2"})).code,
            ErrorCode::InvalidState
        );
        assert_eq!(
            when(
                &after,
                json!({"type": "tell", "trial_id": "t2", "value": 0.5})
            )
            .unwrap(),
            vec![]
        );
    }

    #[test]
    fn a_late_result_on_a_running_study_does_not_complete_it_early() {
        let study = given(&[created(2), asked(1..=2), failed(&[("t1", None)], false)]);
        let events = when(
            &study,
            json!({"type": "tell", "trial_id": "t1", "value": 0.5}),
        )
        .unwrap();
        assert_eq!(events, vec![told(&[("t1", 0.5)], false)]);
        let both = json!({"type": "tell", "results": [
            {"trial_id": "t1", "value": 0.5}, {"trial_id": "t2", "value": 0.7}]});
        assert_eq!(
            when(&study, both).unwrap(),
            vec![told(&[("t1", 0.5), ("t2", 0.7)], true)]
        );
    }

    #[test]
    fn failures_after_stop_are_recorded() {
        let stopped = SolverEvent::StudyStopped { reason: None };
        let study = given(&[created(2), asked(1..=1), stopped]);
        let events = when(&study, json!({"type": "fail", "trial_id": "t1"})).unwrap();
        assert_eq!(events, vec![failed(&[("t1", None)], false)]);
        let after = study.evolve(&events[0]);
        assert_eq!(after.status(), Some(StudyStatus::Stopped));
        assert_eq!(after.trial("t1").unwrap().state(), TrialState::Failed);
    }

    #[test]
    fn snapshots_from_before_failures_still_read() {
        let study = given(&[created(3), asked(1..=2), told(&[("t1", 1.0)], false)]);
        let mut stored = serde_json::to_value(&study).unwrap();
        let state = stored["state"].as_object_mut().unwrap();
        assert!(state.remove("failed").is_some());
        assert!(state["trials"][0].get("failure").is_none());
        let read: Study = serde_json::from_value(stored).unwrap();
        assert_eq!(read, study);
    }

    // leases

    /// Trials `numbers` asked with a lease until `lease_until` (ms).
    fn leased(numbers: std::ops::RangeInclusive<u64>, lease_until: u64) -> SolverEvent {
        SolverEvent::TrialsAsked {
            trials: numbers.map(trial).collect(),
            study_done: false,
            retried: vec![],
            lease_until: Some(lease_until),
        }
    }

    fn expired(ids: &[&str], now: u64, completes_study: bool) -> SolverEvent {
        SolverEvent::TrialsExpired {
            trial_ids: ids.iter().map(|id| id.to_string()).collect(),
            now,
            completes_study,
        }
    }

    fn created_retrying(budget: u64, max_retries: u32) -> SolverEvent {
        SolverEvent::StudyCreated {
            config: StudyConfig {
                max_retries,
                ..config(budget)
            },
        }
    }

    #[test]
    fn an_ask_with_now_leases_its_trials() {
        let study = given(&[created(5)]);
        let events = when(
            &study,
            json!({"type": "ask", "n": 2, "now": 1000, "lease_seconds": 10}),
        )
        .unwrap();
        assert_eq!(events, vec![leased(1..=2, 11_000)]);
        let result = Study::result(&events);
        assert_eq!(result["lease_until"], 11_000);
        assert_eq!(result["trials"][1]["trial_id"], "t2");
        let after = study.clone().evolve(&events[0]);
        assert_eq!(after.trial("t1").unwrap().lease_until, Some(11_000));
        assert_eq!(after.view()["trials"][0]["lease_until"], 11_000);
        // One hour by default; without `now`, no lease.
        let default = when(&study, json!({"type": "ask", "now": 1000})).unwrap();
        assert_eq!(default, vec![leased(1..=1, 1000 + 3_600_000)]);
        let plain = when(&study, json!({"type": "ask"})).unwrap();
        assert_eq!(plain, vec![asked(1..=1)]);
        assert!(Study::result(&plain).get("lease_until").is_none());
    }

    #[test]
    fn a_lease_must_be_between_a_second_and_thirty_days() {
        let study = given(&[created(5)]);
        for seconds in [0, 30 * 24 * 3600 + 1] {
            let e = rejected(
                &study,
                json!({"type": "ask", "now": 1, "lease_seconds": seconds}),
            );
            assert_eq!(e.code, ErrorCode::InvalidField);
            assert_eq!(
                e.message,
                format!("ask: lease_seconds must be between 1 and 2592000, got {seconds}")
            );
        }
        let e = rejected(&study, json!({"type": "ask", "now": u64::MAX}));
        assert_eq!(e.code, ErrorCode::InvalidField);
        assert!(
            e.message.contains("now must be unix milliseconds"),
            "{}",
            e.message
        );
    }

    #[test]
    fn heartbeat_renews_running_leases_only() {
        let study = given(&[
            created(5),
            leased(1..=4, 10_000),
            told(&[("t1", 1.0)], false),
            failed(&[("t2", None)], false),
            expired(&["t3"], 10_000, false),
        ]);
        let command = json!({"type": "heartbeat", "trial_ids": ["t1", "t2", "t3", "t4", "t4"],
                             "now": 9_000, "lease_seconds": 60});
        let events = when(&study, command.clone()).unwrap();
        let renewed = SolverEvent::LeasesRenewed {
            trial_ids: vec!["t4".into()],
            lease_until: 69_000,
        };
        assert_eq!(events, vec![renewed.clone()]);
        assert_eq!(
            Study::result(&events),
            json!({"renewed": ["t4"], "lease_until": 69_000})
        );
        let after = study.evolve(&renewed);
        assert_eq!(after.trial("t4").unwrap().lease_until, Some(69_000));
        assert_eq!(after.trial("t3").unwrap().state(), TrialState::Stale);
        // A repeat, or a heartbeat that would shorten the lease, records nothing.
        assert_eq!(when(&after, command).unwrap(), vec![]);
        let shorter =
            json!({"type": "heartbeat", "trial_ids": ["t4"], "now": 9_000, "lease_seconds": 1});
        assert_eq!(when(&after, shorter).unwrap(), vec![]);
        let e = rejected(
            &after,
            json!({"type": "heartbeat", "trial_ids": ["t4", "t9"], "now": 1}),
        );
        assert_eq!(e.code, ErrorCode::UnknownTrial);
        assert_eq!(
            e.message,
            "heartbeat: unknown trial \"t9\": this study handed out t1..t4"
        );
        let e = rejected(
            &after,
            json!({"type": "heartbeat", "trial_ids": [], "now": 1}),
        );
        assert_eq!(e.code, ErrorCode::InvalidField);
    }

    #[test]
    fn expire_marks_ended_leases_stale_in_one_event() {
        let study = given(&[
            created(10),
            leased(1..=2, 5_000),
            leased(3..=3, 9_000),
            asked(4..=4),
            told(&[("t1", 1.0)], false),
        ]);
        assert_eq!(
            when(&study, json!({"type": "expire", "now": 4_999})).unwrap(),
            vec![]
        );
        let events = when(&study, json!({"type": "expire", "now": 5_000})).unwrap();
        assert_eq!(events, vec![expired(&["t2"], 5_000, false)]);
        assert_eq!(Study::result(&events), json!({"expired": ["t2"]}));
        let later = when(&study, json!({"type": "expire", "now": 1_000_000})).unwrap();
        // The trial without a lease never goes stale.
        assert_eq!(later, vec![expired(&["t2", "t3"], 1_000_000, false)]);
        let after = study.evolve(&later[0]);
        let view = after.view();
        assert_eq!(view["trials"][1]["state"], "stale");
        assert_eq!(view["trials"][3]["state"], "asked");
        let counts = json!({"budget": 10, "asked": 4, "told": 1, "failed": 0, "pruned": 0, "seeded": 0, "queued": 0, "stale": 2,
                            "running": 1, "pending": 1, "remaining": 6});
        assert_eq!(view["counts"], counts);
        // Expiring again finds nothing.
        assert_eq!(
            when(&after, json!({"type": "expire", "now": 2_000_000})).unwrap(),
            vec![]
        );
    }

    #[test]
    fn without_retries_the_last_expiry_completes_the_study() {
        let study = given(&[
            created(2),
            leased(1..=2, 5_000),
            told(&[("t1", 1.0)], false),
        ]);
        let events = when(&study, json!({"type": "expire", "now": 6_000})).unwrap();
        assert_eq!(events, vec![expired(&["t2"], 6_000, true)]);
        let done = study.evolve(&events[0]);
        assert_eq!(done.status(), Some(StudyStatus::Completed));
        let ask = when(&done, json!({"type": "ask", "now": 7_000})).unwrap();
        assert_eq!(Study::result(&ask)["done"], true);
        assert_eq!(Study::result(&ask)["trials"], json!([]));
        // Its result comes back late: recorded, and it may be the best.
        let late = when(
            &done,
            json!({"type": "tell", "trial_id": "t2", "value": 0.5}),
        )
        .unwrap();
        assert_eq!(late, vec![told(&[("t2", 0.5)], false)]);
        let after = done.evolve(&late[0]);
        assert_eq!(after.trial("t2").unwrap().state(), TrialState::Completed);
        assert_eq!(after.best().unwrap().trial.trial_id, "t2");
        assert_eq!(after.view()["counts"]["stale"], 0);
        assert_eq!(after.view()["counts"]["told"], 2);
    }

    #[test]
    fn a_stale_trial_is_handed_out_again_up_to_max_retries() {
        let study = given(&[
            created_retrying(3, 1),
            leased(1..=2, 5_000),
            expired(&["t1"], 5_000, false),
        ]);
        // The retry comes first, then new trials; it uses no budget.
        let events = when(
            &study,
            json!({"type": "ask", "n": 2, "now": 6_000, "lease_seconds": 5}),
        )
        .unwrap();
        let expected = SolverEvent::TrialsAsked {
            trials: vec![trial(3)],
            study_done: false,
            retried: vec![trial(1)],
            lease_until: Some(11_000),
        };
        assert_eq!(events, vec![expected]);
        let result = Study::result(&events);
        assert_eq!(result["retried"], json!(["t1"]));
        assert_eq!(result["trials"][0]["trial_id"], "t1");
        assert_eq!(result["trials"][0]["params"], json!(trial(1).params));
        assert_eq!(result["trials"][1]["trial_id"], "t3");
        let retried = study.evolve(&events[0]);
        let record = retried.trial("t1").unwrap();
        assert_eq!(
            (record.state(), record.retries, record.lease_until),
            (TrialState::Asked, 1, Some(11_000))
        );
        assert_eq!(retried.view()["trials"][0]["retries"], 1);
        // Its second expiry is final: no retry is left, so it is finished.
        let events = when(&retried, json!({"type": "expire", "now": 11_000})).unwrap();
        assert_eq!(events, vec![expired(&["t1", "t2", "t3"], 11_000, false)]);
        let stale = retried.evolve(&events[0]);
        let next = when(&stale, json!({"type": "ask", "n": 5, "now": 12_000})).unwrap();
        let SolverEvent::TrialsAsked {
            trials, retried, ..
        } = &next[0]
        else {
            panic!("not an ask")
        };
        assert!(trials.is_empty());
        let ids: Vec<&str> = retried.iter().map(|t| t.trial_id.as_str()).collect();
        assert_eq!(ids, ["t2", "t3"]);
        assert_eq!(stale.view()["counts"]["pending"], 2);
    }

    #[test]
    fn a_late_result_or_failure_for_a_stale_trial_is_recorded() {
        let study = given(&[
            created_retrying(2, 1),
            leased(1..=2, 5_000),
            expired(&["t1", "t2"], 5_000, false),
        ]);
        let events = when(
            &study,
            json!({"type": "tell", "trial_id": "t1", "value": 0.25}),
        )
        .unwrap();
        assert_eq!(events, vec![told(&[("t1", 0.25)], false)]);
        let after = study.evolve(&events[0]);
        assert_eq!(after.trial("t1").unwrap().state(), TrialState::Completed);
        // t2 still has a retry: failing it finishes the study.
        let events = when(
            &after,
            json!({"type": "fail", "trial_id": "t2", "reason": "lost"}),
        )
        .unwrap();
        assert_eq!(events, vec![failed(&[("t2", Some("lost"))], true)]);
        let done = after.evolve(&events[0]);
        assert_eq!(done.status(), Some(StudyStatus::Completed));
        assert_eq!(done.view()["counts"]["stale"], 0);
        // A stale trial is not retried once it has a result.
        let ask = when(&done, json!({"type": "ask"})).unwrap();
        assert_eq!(Study::result(&ask), json!({"trials": [], "done": true}));
    }

    #[test]
    fn events_from_before_leases_still_replay() {
        let log: Vec<SolverEvent> = [
            json!({"type": "study_created", "config": {"seed": 42, "budget": 2, "probe_ratio": 0.2,
                "sampler": "random",
                "bounds": {"lr": {"min": 1e-5, "max": 0.1, "scale": "log"},
                           "momentum": {"min": 0.8, "max": 0.99}}}}),
            json!({"type": "trials_asked", "trials": [trial(1), trial(2)], "study_done": false}),
            json!({"type": "trials_told", "results": [{"trial_id": "t1", "value": 1.0}]}),
        ]
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
        let study = given(&log);
        assert_eq!(
            study,
            given(&[created(2), asked(1..=2), told(&[("t1", 1.0)], false)])
        );
        assert_eq!(
            when(&study, json!({"type": "expire", "now": u64::MAX})).unwrap(),
            vec![]
        );
    }

    // stop

    #[test]
    fn stop_stops_a_running_study_once() {
        let study = given(&[created(3)]);
        let events = when(&study, json!({"type": "stop", "reason": "budget cut"})).unwrap();
        let stopped = SolverEvent::StudyStopped {
            reason: Some("budget cut".into()),
        };
        assert_eq!(events, vec![stopped.clone()]);
        let result = json!({"status": "stopped", "reason": "budget cut"});
        assert_eq!(Study::result(&events), result);
        let e = rejected(&given(&[created(3), stopped]), json!({"type": "stop"}));
        assert_eq!(
            (e.code, e.message.as_str()),
            (
                ErrorCode::InvalidState,
                "stop: the study is already stopped"
            )
        );
        let completed = given(&[created(1), asked(1..=1), told(&[("t1", 1.0)], true)]);
        assert_eq!(
            rejected(&completed, json!({"type": "stop"})).code,
            ErrorCode::InvalidState
        );
    }

    // result, view, replay

    #[test]
    fn create_result_is_the_config() {
        let result = Study::result(&[created(3)]);
        assert_eq!(result, json!({"config": config(3)}));
    }

    #[test]
    fn view_shows_status_counts_trials_and_the_best_trial() {
        let study = given(&[
            created(4),
            asked(1..=3),
            told(&[("t2", 0.5), ("t1", 0.9)], false),
            told(&[("t3", 0.5)], false),
        ]);
        let view = study.view();
        assert_eq!(view["status"], "running");
        assert_eq!(view["done"], false);
        let counts = json!({"budget": 4, "asked": 3, "told": 3, "failed": 0, "pruned": 0, "seeded": 0, "queued": 0, "stale": 0, "running": 0, "pending": 0, "remaining": 1});
        assert_eq!(view["counts"], counts);
        assert_eq!(view["best"]["trial_id"], "t2");
        assert_eq!(view["best"]["value"], 0.5);
        assert_eq!(view["trials"][0]["state"], "completed");
        assert_eq!(view["trials"][0]["params"], json!(trial(1).params));
        assert_eq!(view["config"], json!(config(4)));
        let running = given(&[created(4), asked(1..=1)]).view();
        assert_eq!(running["trials"][0]["state"], "asked");
        assert_eq!(running["trials"][0]["value"], Value::Null);
        assert_eq!(running["best"], Value::Null);
        assert_eq!(Study::default().view(), json!({"status": "not_created"}));
    }

    #[test]
    fn event_type_is_the_tag() {
        assert_eq!(Study::event_type(&created(1)), "study_created");
        assert_eq!(Study::event_type(&asked(1..=1)), "trials_asked");
    }

    /// A random command, as a client might send it.
    fn command() -> impl Strategy<Value = SolverCommand> {
        let tell = proptest::collection::vec((1u64..14, 0u8..4), 1..4).prop_map(|picks| {
            let results = picks
                .into_iter()
                .map(|(number, value)| result(&trial_id(number), f64::from(value)))
                .collect();
            SolverCommand::Tell(Tell { results })
        });
        let fail = proptest::collection::vec(1u64..14, 1..3).prop_map(|numbers| {
            let failures = numbers
                .into_iter()
                .map(|number| TrialFailure {
                    trial_id: trial_id(number),
                    reason: None,
                })
                .collect();
            SolverCommand::Fail(Fail { failures })
        });
        let sampler = proptest::sample::select(Sampler::ALL.to_vec());
        prop_oneof![
            (1u64..12, sampler, 0u32..3).prop_map(|(budget, sampler, max_retries)| {
                SolverCommand::CreateStudy(StudyConfig {
                    max_retries,
                    ..config_with(budget, sampler)
                })
            }),
            (0u32..5).prop_map(|n| SolverCommand::Ask { n, lease: None }),
            (1u32..4, 0u64..20, proptest::option::of(1u64..4)).prop_map(
                |(n, now, lease_seconds)| SolverCommand::Ask {
                    n,
                    lease: Some(Lease {
                        now: now * 1000,
                        seconds: lease_seconds
                    })
                }
            ),
            (proptest::collection::vec(1u64..14, 1..3), 0u64..20).prop_map(|(numbers, now)| {
                SolverCommand::Heartbeat(Heartbeat {
                    trial_ids: numbers.into_iter().map(trial_id).collect(),
                    now: now * 1000,
                    lease_seconds: Some(2),
                })
            }),
            (0u64..30).prop_map(|now| SolverCommand::Expire { now: now * 1000 }),
            tell.clone(),
            tell,
            fail,
            Just(SolverCommand::Stop { reason: None }),
        ]
    }

    /// Runs `commands` like the host: decide, then evolve what was accepted.
    fn run(commands: &[SolverCommand]) -> (Study, Vec<SolverEvent>) {
        let mut study = Study::default();
        let mut log = Vec::new();
        for command in commands {
            let Ok(events) = study.decide(command) else {
                continue;
            };
            assert!(events.len() <= 1, "one event per command");
            study = events.iter().fold(study, Study::evolve);
            log.extend(events);
        }
        (study, log)
    }

    proptest! {
        #[test]
        fn random_sessions_keep_the_rules_and_replay_exactly(
            commands in proptest::collection::vec(command(), 0..40)
        ) {
            let (study, log) = run(&commands);
            let replayed = given(&log);
            prop_assert_eq!(&replayed, &study);
            prop_assert_eq!(bits(&replayed), bits(&study));
            let snapshot: Study = serde_json::from_value(serde_json::to_value(&study).unwrap()).unwrap();
            prop_assert_eq!(&snapshot, &study);
            if let Some(config) = study.config() {
                prop_assert!(study.trials().len() as u64 <= config.budget);
                for (i, record) in study.trials().iter().enumerate() {
                    prop_assert_eq!(record.trial.number, i as u64 + 1);
                    // TPE's points depend on the history as it was; the rest on the number alone.
                    if !config.sampler.reads_history() {
                        let expected = sample_params(config, i as u64 + 1, &History::default());
                        prop_assert_eq!(&record.trial.params, &expected);
                    }
                }
                // Finished: told, failed, or stale with no retry left.
                let finished = study
                    .trials()
                    .iter()
                    .filter(|r| match r.state() {
                        TrialState::Asked => false,
                        TrialState::Stale => r.retries >= config.max_retries,
                        TrialState::Completed | TrialState::Failed | TrialState::Pruned => true,
                    })
                    .count() as u64;
                let all_finished = finished == config.budget;
                let completed = study.status() == Some(StudyStatus::Completed);
                prop_assert!(!completed || all_finished);
                if study.status() == Some(StudyStatus::Running) {
                    prop_assert!(!all_finished);
                }
                if let Some(best) = study.best() {
                    prop_assert_eq!(best.state(), TrialState::Completed);
                }
                let view = study.view();
                let count = |state| study.trials().iter().filter(|r| r.state() == state).count();
                prop_assert_eq!(&view["counts"]["failed"], &json!(count(TrialState::Failed)));
                prop_assert_eq!(&view["counts"]["stale"], &json!(count(TrialState::Stale)));
                prop_assert_eq!(&view["counts"]["running"], &json!(count(TrialState::Asked)));
                prop_assert_eq!(&view["counts"]["told"], &json!(count(TrialState::Completed)));
                for record in study.trials() {
                    prop_assert!(record.retries <= config.max_retries);
                }
            }
        }
    }

    // samplers

    /// Asks `asks` in turn, evolving after each; returns the study and log.
    fn ask_in_turn(created: SolverEvent, asks: &[u32]) -> (Study, Vec<SolverEvent>) {
        let mut study = given(std::slice::from_ref(&created));
        let mut log = vec![created];
        for &n in asks {
            let events = when(&study, json!({"type": "ask", "n": n})).unwrap();
            study = events.iter().fold(study, Study::evolve);
            log.extend(events);
        }
        (study, log)
    }

    #[test]
    fn a_sobol_study_hands_out_the_scrambled_sobol_points_and_replays_them() {
        let command = json!({"type": "create_study", "seed": 42, "budget": 16, "sampler": "Sobol", "probe_ratio": 0.2,
            "bounds": {"lr": {"min": 1e-5, "max": 0.1, "scale": "log"},
                       "momentum": {"min": 0.8, "max": 0.99}}});
        let created = when(&given(&[]), command).unwrap().remove(0);
        assert_eq!(
            created,
            SolverEvent::StudyCreated {
                config: config_with(16, Sampler::Sobol)
            }
        );
        let (study, log) = ask_in_turn(created, &[3, 5, 8]);
        let config = study.config().unwrap();
        let (lr, momentum) = (&config.bounds["lr"], &config.bounds["momentum"]);
        assert_eq!(study.trials().len(), 16);
        for record in study.trials() {
            let u = sobol::point(42, record.trial.number, 2);
            let expected = BTreeMap::from([
                ("lr".to_string(), lr.value_at(u[0])),
                ("momentum".to_string(), momentum.value_at(u[1])),
            ]);
            assert_eq!(record.trial.params, expected, "{}", record.trial.trial_id);
        }
        // 16 Sobol points: exactly half of the learning rates lie below the
        // geometric middle of the range, a quarter in each quarter-decade band.
        let below = study
            .trials()
            .iter()
            .filter(|r| r.trial.params["lr"].as_f64().unwrap() < 10f64.powf(-3.0))
            .count();
        assert_eq!(below, 8);
        let replayed = given(&log);
        assert_eq!(replayed, study);
        assert_eq!(bits(&replayed), bits(&study));
        // Asking in other batch sizes gives the same trials.
        let (other, _) = ask_in_turn(log[0].clone(), &[1, 15]);
        assert_eq!(bits(&other), bits(&study));
    }

    #[test]
    fn a_grid_study_never_repeats_a_point_within_its_budget() {
        let created = SolverEvent::StudyCreated {
            config: config_with(10, Sampler::Grid),
        };
        let (study, log) = ask_in_turn(created, &[4, 4, 4]);
        assert_eq!(study.trials().len(), 10);
        let grid = Grid::for_budget(10, 2);
        assert_eq!(grid.levels(), [4, 3]);
        let mut points: Vec<Vec<u64>> = trial_bits(&study);
        points.sort();
        points.dedup();
        assert_eq!(points.len(), 10);
        let momentum = config(0).bounds["momentum"].clone();
        for record in study.trials() {
            let u = grid.point(42, record.trial.number);
            assert_eq!(record.trial.params["momentum"], momentum.value_at(u[1]));
        }
        assert_eq!(bits(&given(&log)), bits(&study));
    }

    #[test]
    fn replay_from_stored_json_text_is_bit_identical() {
        let mut study = given(&[created(200)]);
        let mut log = vec![created(200)];
        for _ in 0..20 {
            let events = study
                .decide(&SolverCommand::Ask { n: 10, lease: None })
                .unwrap();
            study = events.iter().fold(study, Study::evolve);
            log.extend(events);
        }
        let stored: Vec<String> = log
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect();
        let decoded: Vec<SolverEvent> = stored
            .iter()
            .map(|text| serde_json::from_str(text).unwrap())
            .collect();
        assert_eq!(bits(&given(&decoded)), bits(&study));
    }

    /// A study over every parameter type: a log float, a stepped float, a
    /// log int, a categorical and two conditionals chained on it.
    fn mixed_space(sampler: Sampler, budget: u64) -> Value {
        json!({"type": "create_study", "seed": 3, "budget": budget, "sampler": sampler.as_str(),
        "direction": "maximize",
        "params": {
            "lr": {"min": 1e-5, "max": 0.1, "scale": "log"},
            "dropout": {"min": 0.0, "max": 0.5, "step": 0.05},
            "batch": {"type": "int", "min": 8, "max": 512, "scale": "log"},
            "optimizer": {"type": "categorical", "choices": ["adam", "sgd", "rmsprop"]},
            "momentum": {"min": 0.5, "max": 0.99,
                         "condition": {"parent": "optimizer", "values": ["sgd", "rmsprop"]}},
            "nesterov": {"type": "categorical", "choices": [true, false],
                         "condition": {"parent": "optimizer", "values": ["sgd"]}}
        }})
    }

    /// A score that prefers sgd, lr near 1e-2 and a batch near 64.
    fn mixed_score(params: &Params) -> f64 {
        let lr = params["lr"].as_f64().unwrap();
        let batch = params["batch"].as_f64().unwrap();
        let sgd = params["optimizer"] == ParamValue::Text("sgd".into());
        -(lr.log10() + 2.0).powi(2) - (batch.log2() - 6.0).powi(2) / 4.0 + f64::from(u8::from(sgd))
    }

    /// Asks and tells one trial at a time until the budget is spent.
    fn run_to_budget(mut study: Study, score: fn(&Params) -> f64) -> Study {
        loop {
            let asked = when(&study, json!({"type": "ask", "n": 1})).unwrap();
            let SolverEvent::TrialsAsked { trials, .. } = &asked[0] else {
                unreachable!()
            };
            let Some(trial) = trials.first() else {
                return study;
            };
            let tell =
                json!({"type": "tell", "trial_id": trial.trial_id, "value": score(&trial.params)});
            study = asked.iter().fold(study, Study::evolve);
            study = when(&study, tell)
                .unwrap()
                .iter()
                .fold(study, Study::evolve);
        }
    }

    #[test]
    fn every_sampler_hands_out_valid_mixed_params() {
        for sampler in Sampler::ALL {
            let created = when(&Study::default(), mixed_space(sampler, 40)).unwrap();
            let study = run_to_budget(given(&created), mixed_score);
            let config = study.config().unwrap().clone();
            assert_eq!(study.trials().len(), 40, "{sampler}");
            for record in study.trials() {
                let params = &record.trial.params;
                for (name, value) in params {
                    assert_eq!(
                        config.bounds[name].normalize(value).as_ref(),
                        Ok(value),
                        "{sampler} {name}"
                    );
                }
                let optimizer = params["optimizer"].to_string();
                assert_eq!(
                    params.contains_key("momentum"),
                    optimizer != "adam",
                    "{sampler} {params:?}"
                );
                assert_eq!(
                    params.contains_key("nesterov"),
                    optimizer == "sgd",
                    "{sampler} {params:?}"
                );
            }
            let choices: std::collections::BTreeSet<String> = study
                .trials()
                .iter()
                .map(|r| r.trial.params["optimizer"].to_string())
                .collect();
            assert!(
                choices.len() >= 2,
                "{sampler} explores the choices: {choices:?}"
            );
        }
    }

    #[test]
    fn a_maximising_study_keeps_the_highest_value_as_best() {
        let created = when(&Study::default(), mixed_space(Sampler::Random, 3)).unwrap();
        let mut study = given(&created);
        study = when(&study, json!({"type": "ask", "n": 3}))
            .unwrap()
            .iter()
            .fold(study, Study::evolve);
        let tell = json!({"type": "tell", "results": [
            {"trial_id": "t1", "value": 1.0}, {"trial_id": "t2", "value": 3.0}, {"trial_id": "t3", "value": 2.0}]});
        study = when(&study, tell)
            .unwrap()
            .iter()
            .fold(study, Study::evolve);
        assert_eq!(study.best().unwrap().trial.trial_id, "t2");
    }

    #[test]
    fn tpe_finds_the_better_region_of_a_mixed_space() {
        let best = |sampler: Sampler| {
            let created = when(&Study::default(), mixed_space(sampler, 60)).unwrap();
            let study = run_to_budget(given(&created), mixed_score);
            study.best().unwrap().outcome.unwrap().value
        };
        let (tpe, random) = (best(Sampler::Tpe), best(Sampler::Random));
        assert!(tpe >= random, "tpe {tpe} vs random {random}");
        assert!(tpe > 0.5, "tpe found sgd near the optimum: {tpe}");
    }

    #[test]
    fn a_bad_space_is_refused_naming_the_parameter() {
        let cases = [
            (
                json!({"x": {"min": 2, "max": 1}}),
                "bounds.x: min 2 must be below max 1",
            ),
            (
                json!({"x": {"min": 0, "max": 1, "scale": "log"}}),
                "bounds.x: log scale needs min > 0, got 0",
            ),
            (json!({}), "bounds: at least one parameter is required"),
            (
                json!({"x": {"min": 0, "max": 1, "scale": "cubic"}}),
                "unknown scale \"cubic\"",
            ),
            (
                json!({"x": {"type": "categorical", "choices": []}}),
                "bounds.x: choices must not be empty",
            ),
            (
                json!({"x": {"min": 0, "max": 1, "condition": {"parent": "y", "values": [1]}}}),
                "bounds.x.condition: parent \"y\" is not a parameter",
            ),
        ];
        for (bounds, expected) in cases {
            let command = json!({"type": "create_study", "seed": 1, "budget": 5, "bounds": bounds});
            let error = CommandRequest::from_value(command, None)
                .unwrap()
                .parse::<SolverCommand>("solver", Study::COMMAND_TYPES)
                .and_then(|c| Study::default().decide(&c))
                .unwrap_err();
            assert!(
                error.message.contains(expected),
                "{bounds}: {}",
                error.message
            );
        }
    }

    /// Folds the events `command` causes into `study`, or panics with the
    /// rejection.
    fn step(study: Study, command: Value) -> (Study, Value) {
        let events = when(&study, command.clone()).unwrap_or_else(|e| panic!("{command}: {e}"));
        let result = Study::result(&events);
        (events.iter().fold(study, Study::evolve), result)
    }

    fn pruned_study(pruner: Value) -> Study {
        let create = json!({"type": "create_study", "seed": 1, "budget": 10,
                            "bounds": {"x": {"min": 0, "max": 1}}, "pruner": pruner});
        let (study, _) = step(Study::default(), create);
        step(study, json!({"type": "ask", "n": 10})).0
    }

    fn report(study: Study, id: &str, step_: u64, value: f64) -> (Study, String) {
        let (study, result) = step(
            study,
            json!({"type": "report", "trial_id": id, "step": step_, "value": value}),
        );
        (study, result["action"].as_str().unwrap().to_string())
    }

    #[test]
    fn median_pruner_stops_a_trial_worse_than_the_median_at_its_step() {
        let mut study = pruned_study(json!({"type": "median", "n_startup_trials": 3}));
        for (i, id) in ["t1", "t2", "t3"].iter().enumerate() {
            for s in 0..3 {
                study = report(study, id, s, i as f64 + 1.0).0;
            }
            study = step(
                study,
                json!({"type": "tell", "trial_id": id, "value": i as f64 + 1.0}),
            )
            .0;
        }
        let (study, action) = report(study, "t4", 0, 1.5);
        assert_eq!(action, "continue");
        let (study, action) = report(study, "t5", 0, 2.5);
        assert_eq!(action, "prune");
        let record = study.trial("t5").unwrap();
        assert_eq!(
            (record.state(), record.pruned_at),
            (TrialState::Pruned, Some(0))
        );
        assert_eq!(study.view()["counts"]["pruned"], 1);
        // A pruned trial reports no more; failing it changes nothing; a
        // late final value is still recorded.
        let refused = when(
            &study,
            json!({"type": "report", "trial_id": "t5", "step": 1, "value": 0.1}),
        )
        .unwrap_err();
        assert_eq!(refused.code, ErrorCode::InvalidState);
        assert!(
            refused.message.contains("pruned at step 0"),
            "{}",
            refused.message
        );
        assert!(when(&study, json!({"type": "fail", "trial_id": "t5"}))
            .unwrap()
            .is_empty());
        let (study, _) = step(
            study,
            json!({"type": "tell", "trial_id": "t5", "value": 2.5}),
        );
        assert_eq!(study.trial("t5").unwrap().state(), TrialState::Completed);
        assert_eq!(study.view()["counts"]["pruned"], 0);
    }

    #[test]
    fn asha_promotes_the_best_third_and_follows_the_direction() {
        let create = json!({"type": "create_study", "seed": 1, "budget": 9, "direction": "maximize",
                            "bounds": {"x": {"min": 0, "max": 1}}, "pruner": {"type": "asha"}});
        let (mut study, _) = step(Study::default(), create);
        study = step(study, json!({"type": "ask", "n": 9})).0;
        let mut actions = Vec::new();
        for (k, score) in [0.5, 0.9, 0.1, 0.2, 0.3, 0.95].iter().enumerate() {
            let (next, action) = report(study, &format!("t{}", k + 1), 1, *score);
            study = next;
            actions.push(action);
        }
        // Higher is better: t1 leads, t2 and t6 beat everyone before them;
        // with six at the rung only the best two go on.
        assert_eq!(
            actions,
            ["continue", "continue", "prune", "prune", "prune", "continue"]
        );
    }

    #[test]
    fn reports_are_checked_and_recorded_without_a_pruner() {
        let study = pruned_study(Value::Null);
        let (study, action) = report(study, "t1", 4, 0.3);
        assert_eq!(action, "continue");
        assert_eq!(study.trial("t1").unwrap().reports[&4], 0.3);
        let cases = [
            (
                json!({"type": "report", "trial_id": "t99", "step": 1, "value": 1.0}),
                ErrorCode::UnknownTrial,
            ),
            (
                json!({"type": "report", "trial_id": "t1", "step": 4, "value": 0.4}),
                ErrorCode::InvalidState,
            ),
            (
                json!({"type": "report", "trial_id": "t1", "step": 1}),
                ErrorCode::InvalidField,
            ),
            (
                json!({"type": "report", "trial_id": "t1", "step": -1, "value": 1.0}),
                ErrorCode::InvalidField,
            ),
        ];
        for (command, code) in cases {
            let error = CommandRequest::from_value(command.clone(), None)
                .unwrap()
                .parse::<SolverCommand>("solver", Study::COMMAND_TYPES)
                .and_then(|c| study.decide(&c))
                .unwrap_err();
            assert_eq!(error.code, code, "{command}: {error}");
        }
    }

    #[test]
    fn pruning_the_last_open_trial_completes_the_study() {
        let create = json!({"type": "create_study", "seed": 1, "budget": 2,
                            "bounds": {"x": {"min": 0, "max": 1}},
                            "pruner": {"type": "median", "n_startup_trials": 1}});
        let (study, _) = step(Study::default(), create);
        let (study, _) = step(study, json!({"type": "ask", "n": 2}));
        let (study, _) = report(study, "t1", 1, 1.0);
        let (study, _) = step(
            study,
            json!({"type": "tell", "trial_id": "t1", "value": 1.0}),
        );
        let (study, action) = report(study, "t2", 1, 5.0);
        assert_eq!(action, "prune");
        assert_eq!(study.status(), Some(StudyStatus::Completed));
    }

    #[test]
    fn seeded_results_join_the_history_without_using_budget() {
        let created = when(&Study::default(), mixed_space(Sampler::Tpe, 5)).unwrap();
        let study = given(&created);
        let seed = json!({"type": "seed", "trials": [
            {"params": {"lr": 0.01, "dropout": 0.1, "batch": 64, "optimizer": "sgd", "momentum": 0.9, "nesterov": true},
             "value": 7.0, "cost": 3.5},
            {"params": {"lr": 0.001, "dropout": 0, "batch": 16, "optimizer": "adam"}, "value": 2.0}]});
        let (study, result) = step(study, seed);
        assert_eq!(result["seeded"], json!(["t1", "t2"]));
        assert_eq!(study.best().unwrap().trial.trial_id, "t1", "maximising");
        assert_eq!(
            study.trial("t2").unwrap().trial.params["dropout"],
            ParamValue::Float(0.0)
        );
        let view = study.view();
        assert_eq!(
            (
                view["counts"]["seeded"].clone(),
                view["counts"]["remaining"].clone()
            ),
            (json!(2), json!(5))
        );
        let study = run_to_budget(study, mixed_score);
        assert_eq!(study.trials().len(), 7);
        assert_eq!(study.status(), Some(StudyStatus::Completed));
    }

    #[test]
    fn bad_seeds_and_candidates_name_the_problem() {
        let created = when(&Study::default(), mixed_space(Sampler::Random, 5)).unwrap();
        let study = given(&created);
        let full = json!({"lr": 0.01, "dropout": 0.1, "batch": 64, "optimizer": "adam"});
        let with = |key: &str, value: Value| {
            let mut params = full.clone();
            params[key] = value;
            params
        };
        let seed =
            |params: Value| json!({"type": "seed", "trials": [{"params": params, "value": 1.0}]});
        let cases = [
            (
                seed(with("lr", json!(5.0))),
                "seed: trials[0].params.lr: 5 is outside [0.00001, 0.1]",
            ),
            (
                seed(with("width", json!(3))),
                "seed: trials[0].params.width: not a parameter of the study",
            ),
            (
                seed(with("optimizer", json!("lion"))),
                "params.optimizer: lion is not one of the choices",
            ),
            (
                seed(with("momentum", json!(0.9))),
                "params.momentum: inactive here",
            ),
            (
                seed(json!({"lr": 0.01})),
                "seed: trials[0].params: missing \"batch\"",
            ),
            (
                seed(with("dropout", json!(0.12))),
                "not on the parameter's step",
            ),
            (
                json!({"type": "enqueue", "params": {"batch": 3.5}}),
                "enqueue: candidates[0].params.batch",
            ),
            (
                json!({"type": "enqueue", "candidates": [{}, {}, {}, {}, {}, {}]}),
                "room for 5 more queued trials, got 6",
            ),
        ];
        for (command, expected) in cases {
            let error = when(&study, command.clone()).unwrap_err();
            assert!(
                error.message.contains(expected),
                "{command}: {}",
                error.message
            );
        }
    }

    #[test]
    fn enqueued_candidates_are_handed_out_first_and_filled_in() {
        let created = when(&Study::default(), mixed_space(Sampler::Tpe, 4)).unwrap();
        let study = given(&created);
        let (study, result) = step(
            study,
            json!({"type": "enqueue", "candidates": [
            {"lr": 0.001, "optimizer": "sgd", "nesterov": false}, {"batch": 128}]}),
        );
        assert_eq!(result["enqueued"], 2);
        let (study, result) = step(study, json!({"type": "ask", "n": 3}));
        let trials = result["trials"].as_array().unwrap();
        assert_eq!(trials[0]["params"]["lr"], 0.001);
        assert_eq!(trials[0]["params"]["optimizer"], "sgd");
        assert_eq!(trials[0]["params"]["nesterov"], false);
        assert!(
            trials[0]["params"]["momentum"].is_number(),
            "filled in: {}",
            trials[0]
        );
        assert_eq!(trials[1]["params"]["batch"], 128);
        assert_eq!(study.view()["counts"]["queued"], 0);
        assert_eq!(study.view()["counts"]["remaining"], 1);
    }

    #[test]
    fn snapshots_keep_reports_seeds_and_the_queue() {
        let created = when(&Study::default(), mixed_space(Sampler::Tpe, 6)).unwrap();
        let (study, _) = step(
            given(&created),
            json!({"type": "enqueue", "params": {"lr": 0.01}}),
        );
        let (study, _) = step(
            study,
            json!({"type": "seed", "trials": [
            {"params": {"lr": 0.001, "dropout": 0, "batch": 16, "optimizer": "adam"}, "value": 2.0}]}),
        );
        let (study, _) = step(study, json!({"type": "ask", "n": 1}));
        let (study, _) = report(study, "t2", 3, 0.5);
        let (study, _) = step(study, json!({"type": "enqueue", "params": {"lr": 0.02}}));
        let snapshot = serde_json::to_string(&study).unwrap();
        let back: Study = serde_json::from_str(&snapshot).unwrap();
        assert_eq!(back, study);
        let ask = json!({"type": "ask", "n": 2});
        assert_eq!(
            when(&back, ask.clone()).unwrap(),
            when(&study, ask).unwrap()
        );
    }
}
