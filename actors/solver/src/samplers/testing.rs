//! Test support shared by the samplers' tests: configs, a study run through
//! the aggregate's `decide`/`evolve`, and the replay check every
//! history-reading sampler must pass.

use crate::Study;
use flotilla_host::Aggregate;
use flotilla_messages::solver::search_space::numeric_params;
use flotilla_messages::solver::{
    Bound, Sampler, Scale, SolverCommand, SolverEvent, StudyConfig, Tell, TrialResult,
};
use std::collections::BTreeMap;

/// An objective over named parameters.
pub type Objective = fn(&BTreeMap<String, f64>) -> f64;

/// A linear bound.
pub fn bound(min: f64, max: f64) -> Bound {
    Bound::new(min, max, Scale::Linear)
}

/// A config of `sampler` over `bounds` with `knobs` as `strategy_params`.
pub fn config(
    sampler: Sampler,
    seed: u64,
    budget: u64,
    bounds: &[(&str, Bound)],
    knobs: &[(&str, f64)],
) -> StudyConfig {
    StudyConfig {
        seed,
        budget,
        bounds: bounds
            .iter()
            .map(|(n, b)| (n.to_string(), b.clone()))
            .collect(),
        probe_ratio: None,
        strategy_params: knobs.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        sampler,
        max_retries: 0,
        ..Default::default()
    }
}

/// A config of `sampler` over `dimensions` parameters `x00`, `x01`, … in
/// `[0, 1]`.
pub fn unit_config(
    sampler: Sampler,
    seed: u64,
    budget: u64,
    dimensions: usize,
    knobs: &[(&str, f64)],
) -> StudyConfig {
    let names: Vec<String> = (0..dimensions).map(|d| format!("x{d:02}")).collect();
    let bounds: Vec<(&str, Bound)> = names
        .iter()
        .map(|n| (n.as_str(), bound(0.0, 1.0)))
        .collect();
    config(sampler, seed, budget, &bounds, knobs)
}

/// Branin on `x`, `y`.
pub fn branin(p: &BTreeMap<String, f64>) -> f64 {
    use std::f64::consts::PI;
    let (x, y) = (p["x"], p["y"]);
    let b = 5.1 / (4.0 * PI * PI);
    let c = 5.0 / PI;
    let t = 1.0 / (8.0 * PI);
    (y - b * x * x + c * x - 6.0).powi(2) + 10.0 * (1.0 - t) * x.cos() + 10.0
}

/// Branin's domain, plus a log-scale `lr` it ignores.
pub fn branin_space() -> Vec<(&'static str, Bound)> {
    vec![
        ("x", bound(-5.0, 10.0)),
        ("y", bound(0.0, 15.0)),
        ("lr", Bound::new(1e-5, 0.1, Scale::Log)),
    ]
}

/// Decides `command` on `study`, logs and applies its events.
pub fn apply(study: Study, command: &SolverCommand, log: &mut Vec<SolverEvent>) -> Study {
    let events = study.decide(command).unwrap();
    log.extend(events.iter().cloned());
    events.iter().fold(study, Study::evolve)
}

/// How a batch's results come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// One tell for the whole batch.
    Together,
    /// One tell per trial, the last asked first, as parallel workers
    /// finishing out of order would.
    Reversed,
}

/// Runs a study to its budget, `batch` trials per ask, telling each batch
/// in `order`; returns the study, its log and the best value.
pub fn run(
    config: StudyConfig,
    objective: Objective,
    batch: u32,
    order: Order,
) -> (Study, Vec<SolverEvent>, f64) {
    let mut best = f64::INFINITY;
    let (study, log) = run_with(config, batch, order, |id, params| {
        let value = objective(params);
        best = best.min(value);
        TrialResult::single(id, value)
    });
    (study, log, best)
}

/// Runs a study to its budget, `batch` trials per ask, telling each batch
/// in `order` the result `evaluate` gives for a trial's id and numeric
/// parameters; returns the study and its log.
pub fn run_with(
    config: StudyConfig,
    batch: u32,
    order: Order,
    mut evaluate: impl FnMut(&str, &BTreeMap<String, f64>) -> TrialResult,
) -> (Study, Vec<SolverEvent>) {
    let mut log = Vec::new();
    let mut study = apply(
        Study::default(),
        &SolverCommand::CreateStudy(config),
        &mut log,
    );
    loop {
        let before = study.trials().len();
        let ask = SolverCommand::Ask {
            n: batch,
            lease: None,
        };
        study = apply(study, &ask, &mut log);
        let fresh = &study.trials()[before..];
        if fresh.is_empty() {
            return (study, log);
        }
        let results: Vec<TrialResult> = fresh
            .iter()
            .map(|r| evaluate(&r.trial.trial_id, &numeric_params(&r.trial.params)))
            .collect();
        let tells = match order {
            Order::Together => vec![results],
            Order::Reversed => results.into_iter().rev().map(|r| vec![r]).collect(),
        };
        for results in tells {
            study = apply(study, &SolverCommand::Tell(Tell { results }), &mut log);
        }
    }
}

/// Every trial's parameter bits, in order.
pub fn bits(study: &Study) -> Vec<u64> {
    trial_bits(study).concat()
}

/// Each trial's parameter bits, one vector per trial (numeric parameters).
pub fn trial_bits(study: &Study) -> Vec<Vec<u64>> {
    let point = |params: &flotilla_messages::solver::Params| {
        params
            .values()
            .map(|v| v.as_f64().unwrap().to_bits())
            .collect()
    };
    study
        .trials()
        .iter()
        .map(|r| point(&r.trial.params))
        .collect()
}

/// Runs `config` on Branin in batches of 4 told out of order, and checks
/// the replay: the log folds back to the same study bit for bit, a
/// snapshot reads back equal, and at every ask, the study replayed up to
/// it decides the same trials again.
pub fn assert_replays_exactly(config: StudyConfig) {
    assert_replays_exactly_with(config, |id, p| TrialResult::single(id, branin(p)));
}

/// [`assert_replays_exactly`] with the results `evaluate` gives.
pub fn assert_replays_exactly_with(
    config: StudyConfig,
    evaluate: impl FnMut(&str, &BTreeMap<String, f64>) -> TrialResult,
) {
    let budget = config.budget as usize;
    let (study, log) = run_with(config, 4, Order::Reversed, evaluate);
    assert_eq!(study.trials().len(), budget);
    let replayed = log.iter().fold(Study::default(), Study::evolve);
    assert_eq!(replayed, study);
    assert_eq!(bits(&replayed), bits(&study));
    let snapshot: Study = serde_json::from_str(&serde_json::to_string(&study).unwrap()).unwrap();
    assert_eq!(snapshot, study);
    for (at, event) in log.iter().enumerate() {
        if let SolverEvent::TrialsAsked { trials, .. } = event {
            if trials.is_empty() {
                continue;
            }
            let before = log[..at].iter().fold(Study::default(), Study::evolve);
            let ask = SolverCommand::Ask { n: 4, lease: None };
            assert_eq!(&before.decide(&ask).unwrap()[0], event, "ask at event {at}");
        }
    }
}

/// Runs `trials` trials of `config` one after another in the unit cube,
/// telling each `f` of its point: the flat points and the values.
pub fn run_unit(
    config: &StudyConfig,
    trials: usize,
    f: impl Fn(&[f64]) -> f64,
) -> (Vec<f64>, Vec<Option<f64>>) {
    let d = config.bounds.len();
    let (mut points, mut values) = (Vec::new(), Vec::new());
    for number in 1..=trials as u64 {
        let history = super::History::new(d, &points, &values);
        let p = super::unit_point(config, number, &history);
        values.push(Some(f(&p)));
        points.extend(p);
    }
    (points, values)
}

/// The lowest told value.
pub fn best_of(values: &[Option<f64>]) -> f64 {
    values
        .iter()
        .flatten()
        .fold(f64::INFINITY, |a, &b| a.min(b))
}

/// Asks trials `numbers` of `config` as one batch after the told trials
/// in `points`/`values` (each sees the ones before as running), checks
/// every point lies in the cube, and returns how many distinct points came.
pub fn distinct_in_batch(
    config: &StudyConfig,
    points: &[f64],
    values: &[Option<f64>],
    numbers: std::ops::RangeInclusive<u64>,
) -> usize {
    let mut history = super::History::new(config.bounds.len(), points, values);
    let mut batch: Vec<Vec<u64>> = Vec::new();
    for number in numbers {
        let p = super::unit_point(config, number, &history);
        assert!(p.iter().all(|u| (0.0..1.0).contains(u)), "{p:?}");
        history.push_pending(&p);
        batch.push(p.iter().map(|u| u.to_bits()).collect());
    }
    batch.sort();
    batch.dedup();
    batch.len()
}
