//! A study run end to end through the solver's `decide`/`evolve`, against a
//! benchmark objective, in batches as parallel workers would ask.

use flotilla_host::Aggregate;
use flotilla_messages::search_space::numeric_params;
use flotilla_messages::solver::{SolverCommand, SolverEvent, Tell, TrialResult};
use flotilla_messages::Rejection;
use flotilla_solver::Study;
use std::collections::BTreeMap;

/// An objective to minimise over named parameters.
pub type Objective = fn(&BTreeMap<String, f64>) -> f64;

/// The outcome of a simulated study.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyRun {
    /// Every event the study recorded, in order.
    pub events: Vec<SolverEvent>,
    /// The best value seen.
    pub best: f64,
    /// How many trials were evaluated.
    pub evaluated: usize,
}

/// Runs `create` to completion, asking `batch` trials at a time and telling
/// every result of a batch together.
pub fn run_study(
    create: SolverCommand,
    objective: Objective,
    batch: u32,
) -> Result<StudyRun, Rejection> {
    let mut best = f64::INFINITY;
    let mut run = run_study_with(create, batch, |id, params| {
        let value = objective(params);
        best = best.min(value);
        TrialResult::single(id, value)
    })?;
    run.best = best;
    Ok(run)
}

/// Runs `create` to completion as [`run_study`] does, telling each trial
/// the result `evaluate` gives for its id and parameters (several values,
/// constraints...). The run's `best` stays infinite: what is best is the
/// caller's to say.
pub fn run_study_with(
    create: SolverCommand,
    batch: u32,
    mut evaluate: impl FnMut(&str, &BTreeMap<String, f64>) -> TrialResult,
) -> Result<StudyRun, Rejection> {
    let mut study = Study::default();
    let mut run = StudyRun {
        events: Vec::new(),
        best: f64::INFINITY,
        evaluated: 0,
    };
    apply(&mut study, &mut run, &create)?;
    loop {
        let asked = apply(&mut study, &mut run, &ask(batch))?;
        let trials = asked_trials(&asked);
        if trials.is_empty() {
            return Ok(run);
        }
        let results = trials
            .iter()
            .map(|(id, params)| {
                run.evaluated += 1;
                evaluate(id, params)
            })
            .collect();
        apply(&mut study, &mut run, &tell(results))?;
    }
}

fn ask(n: u32) -> SolverCommand {
    SolverCommand::Ask { n, lease: None }
}

fn tell(results: Vec<TrialResult>) -> SolverCommand {
    SolverCommand::Tell(Tell { results })
}

fn apply(
    study: &mut Study,
    run: &mut StudyRun,
    command: &SolverCommand,
) -> Result<Vec<SolverEvent>, Rejection> {
    let events = study.decide(command)?;
    for e in &events {
        *study = std::mem::take(study).evolve(e);
    }
    run.events.extend(events.iter().cloned());
    Ok(events)
}

fn asked_trials(events: &[SolverEvent]) -> Vec<(String, BTreeMap<String, f64>)> {
    events
        .iter()
        .flat_map(|e| match e {
            SolverEvent::TrialsAsked { trials, .. } => trials
                .iter()
                .map(|t| (t.trial_id.clone(), numeric_params(&t.params)))
                .collect(),
            _ => Vec::new(),
        })
        .collect()
}

/// The Branin function on `x` ∈ [-5, 10], `y` ∈ [0, 15]; minimum 0.397887.
pub fn branin(p: &BTreeMap<String, f64>) -> f64 {
    let (x, y) = (p["x"], p["y"]);
    let pi = std::f64::consts::PI;
    let b = 5.1 / (4.0 * pi * pi);
    let c = 5.0 / pi;
    let t = 1.0 / (8.0 * pi);
    (y - b * x * x + c * x - 6.0).powi(2) + 10.0 * (1.0 - t) * x.cos() + 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn branin_study(seed: u64, budget: u64) -> SolverCommand {
        serde_json::from_value(serde_json::json!({
            "type": "create_study", "seed": seed, "budget": budget,
            "bounds": {"x": {"min": -5, "max": 10}, "y": {"min": 0, "max": 15}}
        }))
        .unwrap()
    }

    #[test]
    fn a_study_runs_to_its_budget() {
        let run = run_study(branin_study(1, 50), branin, 4).unwrap();
        assert_eq!(run.evaluated, 50);
        assert!(
            run.best >= 0.397887 - 1e-9 && run.best < 20.0,
            "{}",
            run.best
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_events_whatever_the_batch_size() {
        let a = run_study(branin_study(9, 30), branin, 1).unwrap();
        let b = run_study(branin_study(9, 30), branin, 1).unwrap();
        assert_eq!(a, b);
        let c = run_study(branin_study(10, 30), branin, 1).unwrap();
        assert_ne!(a.best, c.best);
    }
}
