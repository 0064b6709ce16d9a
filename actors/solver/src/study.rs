//! The study aggregate: one study's lifecycle, from `create_study` through
//! asks and tells to `stopped` or `completed`.
//!
//! Each command records at most one event, so a command is one atomic
//! append. The rules:
//!
//! - `create_study` validates the config (`INVALID_FIELD`) and refuses an
//!   existing study (`ALREADY_EXISTS`); any other command on a study that
//!   does not exist is `NOT_FOUND`. An `auto` study is recorded with the
//!   revision of `auto`'s rule it runs under (`auto_rule`), so it keeps
//!   its sampler when the rule improves.
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
//!   stale, in one event (nothing expired, no event) ([`leases`]).
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
//! - A multi-objective study (`directions`, two or more) takes results
//!   with `values`, one per direction (another count is `INVALID_FIELD`
//!   naming `values`); its result is the Pareto front (`best_trials` in the
//!   view: the feasible told trials no other one dominates, in trial
//!   order), kept up to date as results come in and rebuilt from the
//!   trials on recovery. It has no single best, takes no `seed` and no
//!   pruner.
//! - A result may carry `constraints` (finite; feasible when every one is
//!   ≤ 0). The first result a tell records fixes how many every later one
//!   carries (`INVALID_FIELD` naming `constraints` otherwise). Only feasible
//!   trials become the best or join the front; the samplers prefer
//!   feasible points (see [`samplers`](crate::samplers)). Repeating a
//!   result is a no-op only if its values, constraints and cost all match.

use flotilla_messages::solver::{
    is_feasible, objectives, trial_id, trial_number, violation, Fail, Lease, Params, SolverCommand,
    SolverEvent, StudyConfig, Tell, Trial, TrialFailure, TrialResult, COMMAND_TYPES, MAX_ASK,
    MAX_ASK_VALUES,
};
use flotilla_messages::{Actor, ErrorCode, Rejection};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;

use super::samplers::pareto::dominates;
use super::samplers::History;
use super::sampling::{sample_params, unit_of_params};
use flotilla_host::Aggregate;
use leases::lease_until;
use warm_start::complete_candidate;

mod leases;
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The objective as told (the first one of a multi-objective study).
    pub value: f64,
    /// What the evaluation cost, if reported.
    pub cost: Option<f64>,
    /// Every objective as told, for a multi-objective study; empty else.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<f64>,
    /// The constraint values as told; empty without constraints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<f64>,
}

impl Outcome {
    /// The outcome `result` reports.
    fn of(result: &TrialResult) -> Self {
        Outcome {
            value: result.value,
            cost: result.cost,
            values: result.values.clone(),
            constraints: result.constraints.clone(),
        }
    }

    /// Its objectives: `[value]`, or `values` for several.
    pub fn objectives(&self) -> &[f64] {
        objectives(&self.value, &self.values)
    }

    /// Whether every constraint is ≤ 0 (true without constraints).
    pub fn is_feasible(&self) -> bool {
        is_feasible(&self.constraints)
    }

    /// Whether `result` reports exactly this outcome.
    fn is(&self, result: &TrialResult) -> bool {
        self.objectives() == result.objectives()
            && self.constraints == result.constraints
            && self.cost == result.cost
    }

    /// "value 0.3", "values [0.3, 2]", with the constraints and cost if
    /// any: for messages.
    fn describe(&self) -> String {
        describe(self.objectives(), &self.constraints, self.cost)
    }
}

/// A result's outcome in words, for messages.
fn describe(objectives: &[f64], constraints: &[f64], cost: Option<f64>) -> String {
    let mut text = match objectives {
        [value] => format!("value {value}"),
        values => format!("values {values:?}"),
    };
    if !constraints.is_empty() {
        text.push_str(&format!(" with constraints {constraints:?}"));
    }
    text + &cost_suffix(cost)
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
        self.outcome.as_ref().is_some_and(|o| o.is(result))
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
            "value": self.outcome.as_ref().map(|o| o.value),
            "cost": self.outcome.as_ref().and_then(|o| o.cost),
        });
        if let Some(outcome) = &self.outcome {
            if !outcome.values.is_empty() {
                view["values"] = json!(outcome.values);
            }
            if !outcome.constraints.is_empty() {
                view["constraints"] = json!(outcome.constraints);
                view["feasible"] = json!(outcome.is_feasible());
            }
        }
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
    /// In a multi-objective study, the first objective's.
    #[serde(skip)]
    values: Vec<Option<f64>>,
    /// A multi-objective study's losses, one per objective per trial, flat
    /// (0 while pending); empty for one objective: derived, never stored.
    #[serde(skip)]
    losses: Vec<f64>,
    /// Every trial's total constraint violation (0 when feasible or
    /// pending): derived, never stored.
    #[serde(skip)]
    violations: Vec<f64>,
    /// Every trial's largest constraint value (0 while pending or without
    /// constraints): derived, never stored.
    #[serde(skip)]
    margins: Vec<f64>,
    /// How many constraints every told result carries, fixed by the first
    /// one a tell recorded: derived, never stored.
    #[serde(skip)]
    constraint_count: Option<usize>,
    /// A multi-objective study's Pareto front: the numbers of the feasible
    /// told trials no other one dominates, ascending: derived, never
    /// stored.
    #[serde(skip)]
    front: Vec<u64>,
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
            losses: Vec::new(),
            violations: Vec::new(),
            margins: Vec::new(),
            constraint_count: None,
            front: Vec::new(),
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
            if let Some(outcome) = record.outcome.as_ref().filter(|_| !record.seeded) {
                state.constraint_count = Some(outcome.constraints.len());
            }
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

    /// The feasible told trial with the best value (by the study's
    /// direction); `None` for a multi-objective study (see
    /// [`Study::best_trials`]).
    pub fn best(&self) -> Option<&TrialRecord> {
        self.state.as_ref()?.best_record()
    }

    /// A multi-objective study's Pareto front: the feasible told trials no
    /// other one dominates, in trial order. For a single objective, the
    /// best trial if any.
    pub fn best_trials(&self) -> Vec<&TrialRecord> {
        self.state
            .as_ref()
            .map_or_else(Vec::new, StudyState::best_records)
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
            losses: Vec::new(),
            violations: Vec::new(),
            margins: Vec::new(),
            constraint_count: None,
            front: Vec::new(),
        }
    }

    /// Adds `record` (a new trial, in number order) to the samplers' cache.
    fn cache(&mut self, record: &TrialRecord) {
        let unit = unit_of_params(&self.config, &record.trial.params);
        self.units.extend(unit);
        self.values.push(None);
        self.violations.push(0.0);
        self.margins.push(0.0);
        if self.config.is_multi_objective() {
            let m = self.config.objectives();
            self.losses.extend(std::iter::repeat_n(0.0, m));
        }
        if let Some(outcome) = &record.outcome {
            self.cache_outcome(self.values.len() - 1, outcome);
        }
    }

    /// Records trial `index + 1`'s outcome in the samplers' cache and the
    /// Pareto front.
    fn cache_outcome(&mut self, index: usize, outcome: &Outcome) {
        let directions = self.config.all_directions();
        let losses: Vec<f64> = directions
            .iter()
            .zip(outcome.objectives())
            .map(|(d, &v)| d.loss(v))
            .collect();
        self.values[index] = Some(losses[0]);
        self.violations[index] = violation(&outcome.constraints);
        self.margins[index] = outcome
            .constraints
            .iter()
            .copied()
            .reduce(f64::max)
            .unwrap_or(0.0);
        if self.config.is_multi_objective() {
            let m = losses.len();
            self.losses[index * m..(index + 1) * m].copy_from_slice(&losses);
            if outcome.is_feasible() {
                self.join_front(index);
            }
        }
    }

    /// A multi-objective trial's losses.
    fn losses_of(&self, index: usize) -> &[f64] {
        let m = self.config.objectives();
        &self.losses[index * m..(index + 1) * m]
    }

    /// Adds feasible told trial `index + 1` to the Pareto front unless a
    /// member dominates it, dropping the members it dominates.
    fn join_front(&mut self, index: usize) {
        let number = index as u64 + 1;
        let losses = self.losses_of(index);
        let member = |n: &u64| self.losses_of(*n as usize - 1);
        if self.front.iter().any(|n| dominates(member(n), losses)) {
            return;
        }
        let kept: Vec<u64> = self
            .front
            .iter()
            .copied()
            .filter(|n| !dominates(losses, member(n)))
            .collect();
        self.front = kept;
        let at = self.front.partition_point(|&n| n < number);
        self.front.insert(at, number);
    }

    /// The samplers' view of the trials handed out so far.
    fn history(&self) -> History<'_> {
        let mut history = History::new(self.config.bounds.len(), &self.units, &self.values)
            .with_violations(&self.violations);
        if self.constraint_count.is_some_and(|n| n > 0) {
            history = history.with_margins(&self.margins);
        }
        if self.config.is_multi_objective() {
            history.with_objectives(self.config.objectives(), &self.losses)
        } else {
            history
        }
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

    fn best_records(&self) -> Vec<&TrialRecord> {
        if !self.config.is_multi_objective() {
            return self.best_record().into_iter().collect();
        }
        self.front
            .iter()
            .map(|&n| &self.trials[n as usize - 1])
            .collect()
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
        // Checked before any sampling: the work and the event grow with
        // n x parameters, so a wide study gets fewer trials per ask.
        let parameters = self.config.bounds.len().max(1);
        let values = n as usize * parameters;
        if values > MAX_ASK_VALUES {
            return Err(Rejection::invalid(format!(
                "ask: n must be at most {} for a study of {parameters} parameters \
                 (n x parameters at most {MAX_ASK_VALUES}), got {n}",
                MAX_ASK_VALUES / parameters
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
        let constraints = self
            .constraint_count
            .or_else(|| tell.results.first().map(|r| r.constraints.len()));
        for result in &tell.results {
            check_finite(result)?;
            self.check_shape(result, constraints.unwrap_or(0))?;
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
        match &record.outcome {
            None => Ok(false),
            Some(_) if record.has_outcome(result) => Ok(true),
            Some(told) => Err(Rejection::new(
                ErrorCode::InvalidState,
                format!(
                    "tell: trial {} was already told {}; refusing {}",
                    result.trial_id,
                    told.describe(),
                    describe(result.objectives(), &result.constraints, result.cost),
                ),
            )),
        }
    }

    /// Refuses a result whose objectives do not match the study's
    /// directions, or whose constraints are not the study's `constraints`.
    fn check_shape(&self, result: &TrialResult, constraints: usize) -> Result<(), Rejection> {
        let id = &result.trial_id;
        let (expected, got) = (self.config.objectives(), result.objectives().len());
        if got != expected {
            let hint = if expected == 1 {
                "give `value`".to_string()
            } else {
                format!("one per direction of {:?}", self.config.directions)
            };
            return Err(Rejection::invalid(format!(
                "tell: values of trial {id}: expected {expected} objective value(s) ({hint}), got {got}"
            )));
        }
        if result.constraints.len() != constraints {
            return Err(Rejection::invalid(format!(
                "tell: constraints of trial {id}: expected {constraints} value(s), as every result \
                 of this study carries, got {}",
                result.constraints.len()
            )));
        }
        Ok(())
    }

    fn decide_fail(&self, fail: &Fail) -> Result<Vec<SolverEvent>, Rejection> {
        let mut fresh: Vec<TrialFailure> = Vec::new();
        for failure in &fail.failures {
            let id = &failure.trial_id;
            let record = self
                .trial(id)
                .ok_or_else(|| self.unknown_trial_in("fail", id))?;
            if let Some(told) = &record.outcome {
                return Err(Rejection::new(
                    ErrorCode::InvalidState,
                    format!(
                        "fail: trial {id} was already told {}; a result is never withdrawn",
                        told.describe()
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
            } => self.renew_leases(trial_ids, *lease_until),
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
            SolverEvent::CandidatesEnqueued { candidates, .. } => {
                self.queue.extend(candidates.iter().cloned());
            }
        }
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
        if let Some(first) = results.first() {
            self.constraint_count.get_or_insert(first.constraints.len());
        }
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
        let outcome = Outcome::of(result);
        self.cache_outcome(index, &outcome);
        self.trials[index].outcome = Some(outcome);
        self.told += 1;
        if self.trials[index].failure.is_some() {
            self.failed -= 1;
        } else if self.trials[index].pruned_at.is_some() {
            self.pruned -= 1;
        }
        let direction = self.config.direction;
        let improves = self
            .best_value()
            .is_none_or(|best| direction.better(result.value, best));
        if improves && result.is_feasible() && !self.config.is_multi_objective() {
            self.best = Some(self.trials[index].trial.number);
        }
    }

    fn best_value(&self) -> Option<f64> {
        self.best_record()?.outcome.as_ref().map(|o| o.value)
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
        let mut view = json!({
            "status": self.status.as_str(),
            "stop_reason": self.stop_reason,
            "done": self.is_done(),
            "config": self.config,
            "counts": self.counts(),
            "best": self.best_record().map(TrialRecord::view),
            "trials": trials,
        });
        if self.config.is_multi_objective() {
            let front: Vec<Value> = self
                .best_records()
                .into_iter()
                .map(TrialRecord::view)
                .collect();
            view["best_trials"] = json!(front);
        }
        view
    }
}

fn cost_suffix(cost: Option<f64>) -> String {
    cost.map_or(String::new(), |c| format!(" (cost {c})"))
}

fn check_finite(result: &TrialResult) -> Result<(), Rejection> {
    let id = &result.trial_id;
    let field = if result.values.is_empty() {
        "value"
    } else {
        "values"
    };
    if let Some(v) = result.objectives().iter().find(|v| !v.is_finite()) {
        return Err(Rejection::invalid(format!(
            "tell: {field} of trial {id} must be finite, got {v}"
        )));
    }
    if let Some(c) = result.constraints.iter().find(|c| !c.is_finite()) {
        return Err(Rejection::invalid(format!(
            "tell: constraints of trial {id} must be finite, got {c}"
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
    let describe_result = |r: &TrialResult| describe(r.objectives(), &r.constraints, r.cost);
    Err(Rejection::invalid(format!(
        "tell: trial {} appears twice with different outcomes ({} and {})",
        later.trial_id,
        describe_result(earlier),
        describe_result(later)
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

/// Records the config as it will run: with `auto`'s rule revision stamped
/// in, so a later rule cannot change how the study continues.
fn decide_create(config: &StudyConfig) -> Result<Vec<SolverEvent>, Rejection> {
    let config = config.as_recorded();
    config.validate()?;
    Ok(vec![SolverEvent::StudyCreated { config }])
}

impl Aggregate for Study {
    const ACTOR: Actor = Actor::Solver;
    const COMMAND_TYPES: &'static [&'static str] = COMMAND_TYPES;
    type Command = SolverCommand;
    type Event = SolverEvent;
    type Settings = ();

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
            Some(SolverEvent::CandidatesEnqueued { candidates, .. }) => {
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
mod tests;
