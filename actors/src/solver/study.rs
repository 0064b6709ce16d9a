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
//! - `stop` ends a running study (`INVALID_STATE` once stopped or completed).

use flotilla_messages::solver::{
    trial_id, trial_number, SolverCommand, SolverEvent, StudyConfig, Tell, Trial, TrialResult,
    COMMAND_TYPES, MAX_ASK,
};
use flotilla_messages::{Actor, ErrorCode, Rejection};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;

use super::samplers::History;
use super::sampling::{sample_params, unit_of_params};
use crate::runtime::Aggregate;

/// Where a study is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StudyStatus {
    /// Hands out trials and takes results.
    Running,
    /// Stopped by a client: hands out nothing more, still takes results.
    Stopped,
    /// The whole budget was asked and told.
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

/// A trial the study handed out, and its outcome once told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    /// The trial as `ask` handed it out.
    pub trial: Trial,
    /// Its score; `None` while it runs.
    pub outcome: Option<Outcome>,
}

impl TrialRecord {
    /// Whether `result` reports exactly this trial's recorded outcome.
    fn has_outcome(&self, result: &TrialResult) -> bool {
        self.outcome
            .is_some_and(|o| o.value == result.value && o.cost == result.cost)
    }

    fn view(&self) -> Value {
        let state = if self.outcome.is_some() {
            "completed"
        } else {
            "asked"
        };
        json!({
            "trial_id": self.trial.trial_id,
            "number": self.trial.number,
            "params": self.trial.params,
            "state": state,
            "value": self.outcome.map(|o| o.value),
            "cost": self.outcome.and_then(|o| o.cost),
        })
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
    /// The number of the told trial with the lowest value (first told wins ties).
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
            best: stored.best,
            units: Vec::new(),
            values: Vec::new(),
        };
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

    /// The told trial with the lowest value.
    pub fn best(&self) -> Option<&TrialRecord> {
        self.state.as_ref()?.best_record()
    }

    /// Whether the study will hand out and expect nothing more: stopped, or
    /// its budget all asked and told.
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
            best: None,
            units: Vec::new(),
            values: Vec::new(),
        }
    }

    /// Adds `record` to the samplers' cache.
    fn cache(&mut self, record: &TrialRecord) {
        let unit = unit_of_params(&self.config, &record.trial.params);
        self.units.extend(unit);
        self.values.push(record.outcome.map(|o| o.value));
    }

    /// The samplers' view of the trials handed out so far.
    fn history(&self) -> History<'_> {
        History::new(self.config.bounds.len(), &self.units, &self.values)
    }

    fn asked(&self) -> u64 {
        self.trials.len() as u64
    }

    fn remaining(&self) -> u64 {
        self.config.budget.saturating_sub(self.asked())
    }

    fn is_done(&self) -> bool {
        self.status != StudyStatus::Running || (self.remaining() == 0 && self.told == self.asked())
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

    fn decide_ask(&self, n: u32) -> Result<Vec<SolverEvent>, Rejection> {
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
        let count = self.remaining().min(u64::from(n));
        let mut history = self.history();
        let trials = (1..=count)
            .map(|k| {
                let trial = self.new_trial(self.asked() + k, &history);
                history.push_pending(&unit_of_params(&self.config, &trial.params));
                trial
            })
            .collect();
        let study_done = count == 0 && self.is_done();
        Ok(vec![SolverEvent::TrialsAsked { trials, study_done }])
    }

    fn reason_suffix(&self) -> String {
        self.stop_reason
            .as_ref()
            .map_or(String::new(), |r| format!(" ({r})"))
    }

    fn new_trial(&self, number: u64, history: &History) -> Trial {
        Trial {
            trial_id: trial_id(number),
            number,
            params: sample_params(&self.config, number, history),
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
        let completes_study = self.completed_by(order.len() as u64);
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

    fn unknown_trial(&self, id: &str) -> Rejection {
        let handed_out = match self.asked() {
            0 => "no trials yet".to_string(),
            1 => "only t1".to_string(),
            n => format!("t1..t{n}"),
        };
        Rejection::new(
            ErrorCode::UnknownTrial,
            format!("tell: unknown trial {id:?}: this study handed out {handed_out}"),
        )
    }

    /// Whether telling `newly_told` more trials completes the study.
    fn completed_by(&self, newly_told: u64) -> bool {
        self.status == StudyStatus::Running
            && self.remaining() == 0
            && self.told + newly_told == self.asked()
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
            SolverEvent::TrialsAsked { trials, .. } => self.add_trials(trials),
            SolverEvent::TrialsTold {
                results,
                completes_study,
            } => self.record_results(results, *completes_study),
            SolverEvent::StudyStopped { reason } => {
                self.status = StudyStatus::Stopped;
                self.stop_reason = reason.clone();
            }
        }
    }

    fn add_trials(&mut self, trials: &[Trial]) {
        for trial in trials {
            let record = TrialRecord {
                trial: trial.clone(),
                outcome: None,
            };
            self.cache(&record);
            self.trials.push(record);
        }
    }

    fn record_results(&mut self, results: &[TrialResult], completes_study: bool) {
        for result in results {
            self.record_result(result);
        }
        if completes_study && self.status == StudyStatus::Running {
            self.status = StudyStatus::Completed;
        }
    }

    fn record_result(&mut self, result: &TrialResult) {
        let Some(index) = self.index_of(&result.trial_id) else {
            return;
        };
        if self.trials[index].outcome.is_some() {
            return;
        }
        self.trials[index].outcome = Some(Outcome {
            value: result.value,
            cost: result.cost,
        });
        self.values[index] = Some(result.value);
        self.told += 1;
        if self.best_value().is_none_or(|best| result.value < best) {
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
            "pending": self.asked() - self.told,
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
            SolverCommand::Ask { n } => state.decide_ask(*n),
            SolverCommand::Tell(tell) => state.decide_tell(tell),
            SolverCommand::Stop { reason } => state.decide_stop(reason),
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
            Some(SolverEvent::TrialsAsked { trials, study_done }) => {
                json!({ "trials": trials, "done": study_done })
            }
            Some(SolverEvent::TrialsTold { results, .. }) => {
                let ids: Vec<&str> = results.iter().map(|r| r.trial_id.as_str()).collect();
                json!({ "told": ids })
            }
            Some(SolverEvent::StudyStopped { reason }) => {
                json!({ "status": "stopped", "reason": reason })
            }
            None => json!({ "told": [] }),
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
    use crate::solver::samplers::{grid::Grid, sobol};
    use crate::solver::sampling::from_unit;
    use flotilla_messages::solver::{Bound, Sampler, Scale};
    use flotilla_messages::CommandRequest;
    use proptest::prelude::*;

    fn config(budget: u64) -> StudyConfig {
        config_with(budget, Sampler::Random)
    }

    fn config_with(budget: u64, sampler: Sampler) -> StudyConfig {
        let bounds = BTreeMap::from([
            (
                "lr".to_string(),
                Bound {
                    min: 1e-5,
                    max: 1e-1,
                    scale: Scale::Log,
                },
            ),
            (
                "momentum".to_string(),
                Bound {
                    min: 0.8,
                    max: 0.99,
                    scale: Scale::Linear,
                },
            ),
        ]);
        StudyConfig {
            seed: 42,
            budget,
            bounds,
            probe_ratio: Some(0.2),
            strategy_params: BTreeMap::new(),
            sampler,
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
        assert_eq!(when(&given(&[]), command).unwrap(), vec![created(3)]);
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
        assert_eq!(Study::result(&events), json!({"told": []}));
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
        let counts = json!({"budget": 4, "asked": 3, "told": 3, "pending": 0, "remaining": 1});
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
        let sampler = proptest::sample::select(Sampler::ALL.to_vec());
        prop_oneof![
            (1u64..12, sampler).prop_map(|(budget, sampler)| SolverCommand::CreateStudy(
                config_with(budget, sampler)
            )),
            (0u32..5).prop_map(|n| SolverCommand::Ask { n }),
            tell.clone(),
            tell,
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

    fn bits(study: &Study) -> Vec<u64> {
        let params = study.trials().iter().flat_map(|r| r.trial.params.values());
        params.map(|v| v.to_bits()).collect()
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
                    if config.sampler != Sampler::Tpe {
                        let expected = sample_params(config, i as u64 + 1, &History::default());
                        prop_assert_eq!(&record.trial.params, &expected);
                    }
                }
                let told = study.trials().iter().filter(|r| r.outcome.is_some()).count() as u64;
                let all_told = told == config.budget;
                let completed = study.status() == Some(StudyStatus::Completed);
                prop_assert!(!completed || all_told);
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
        let (lr, momentum) = (config.bounds["lr"], config.bounds["momentum"]);
        assert_eq!(study.trials().len(), 16);
        for record in study.trials() {
            let u = sobol::point(42, record.trial.number, 2);
            let expected = BTreeMap::from([
                ("lr".to_string(), from_unit(u[0], &lr)),
                ("momentum".to_string(), from_unit(u[1], &momentum)),
            ]);
            assert_eq!(record.trial.params, expected, "{}", record.trial.trial_id);
        }
        // 16 Sobol points: exactly half of the learning rates lie below the
        // geometric middle of the range, a quarter in each quarter-decade band.
        let below = study
            .trials()
            .iter()
            .filter(|r| r.trial.params["lr"] < 10f64.powf(-3.0))
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
        let mut points: Vec<Vec<u64>> = study
            .trials()
            .iter()
            .map(|r| r.trial.params.values().map(|v| v.to_bits()).collect())
            .collect();
        points.sort();
        points.dedup();
        assert_eq!(points.len(), 10);
        let momentum = config(0).bounds["momentum"];
        for record in study.trials() {
            let u = grid.point(42, record.trial.number);
            assert_eq!(record.trial.params["momentum"], from_unit(u[1], &momentum));
        }
        assert_eq!(bits(&given(&log)), bits(&study));
    }

    #[test]
    fn replay_from_stored_json_text_is_bit_identical() {
        let mut study = given(&[created(200)]);
        let mut log = vec![created(200)];
        for _ in 0..20 {
            let events = study.decide(&SolverCommand::Ask { n: 10 }).unwrap();
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
}
