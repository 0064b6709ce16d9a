//! Given events / when command / then events, for the study aggregate.
//!
//! The fixtures every area shares live here (a two-parameter config, events
//! built by trial number, `given`/`when`/`step`, a mixed search space); each
//! file below tests one area of the aggregate.

use super::*;
use flotilla_messages::solver::{Bound, ParamValue, Params, Sampler, Scale, AUTO_RULE};
use flotilla_messages::CommandRequest;

mod ask;
mod failures;
mod leases;
mod lifecycle;
mod multi_objective;
mod replay;
mod reports;
mod samplers;
mod tell;
mod warm_start;

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
    TrialResult::single(id, value)
}

fn told(results: &[(&str, f64)], completes_study: bool) -> SolverEvent {
    SolverEvent::TrialsTold {
        results: results.iter().map(|&(id, v)| result(id, v)).collect(),
        completes_study,
    }
}

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

/// Folds the events `command` causes into `study`, or panics with the
/// rejection.
fn step(study: Study, command: Value) -> (Study, Value) {
    let events = when(&study, command.clone()).unwrap_or_else(|e| panic!("{command}: {e}"));
    let result = Study::result(&events);
    (events.iter().fold(study, Study::evolve), result)
}

fn report(study: Study, id: &str, step_: u64, value: f64) -> (Study, String) {
    let (study, result) = step(
        study,
        json!({"type": "report", "trial_id": id, "step": step_, "value": value}),
    );
    (study, result["action"].as_str().unwrap().to_string())
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
