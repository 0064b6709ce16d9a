//! `seed` and `enqueue`: trials the study did not sample itself
//! ([`warm_start`](flotilla_messages::solver::warm_start) has the wire form).
//!
//! Both check every value against the search space first, so what enters
//! the log always fits the study: a seeded trial names every active
//! parameter, a queued candidate may leave some out for the sampler to fill
//! in when it is handed out.

use super::{StudyState, StudyStatus, TrialRecord};
use crate::samplers::{unit_point, History};
use crate::sampling::params_at;
use flotilla_messages::solver::search_space::is_active;
use flotilla_messages::solver::warm_start::MAX_WARM_START;
use flotilla_messages::solver::{
    trial_id, Enqueue, Params, SeedTrials, SolverEvent, StudyConfig, Trial, TrialResult,
};
use flotilla_messages::{ErrorCode, Rejection};

impl StudyState {
    pub(super) fn decide_seed(&self, seed: &SeedTrials) -> Result<Vec<SolverEvent>, Rejection> {
        self.check_open_for("seed", seed.trials.len(), "trials")?;
        if self.config.is_multi_objective() {
            return Err(Rejection::invalid(format!(
                "seed: a study of {} objectives takes no seeded results (a seeded result \
                 carries one value); tell them as trials instead",
                self.config.objectives()
            )));
        }
        let mut trials = Vec::with_capacity(seed.trials.len());
        let mut results = Vec::with_capacity(seed.trials.len());
        for (i, prior) in seed.trials.iter().enumerate() {
            let at = format!("seed: trials[{i}]");
            let params = checked_params(&self.config, &prior.params, &at, true)?;
            for (field, x) in [("value", Some(prior.value)), ("cost", prior.cost)] {
                if let Some(x) = x.filter(|x| !x.is_finite()) {
                    return Err(Rejection::invalid(format!(
                        "{at}.{field} must be finite, got {x}"
                    )));
                }
            }
            let number = self.asked() + 1 + i as u64;
            let id = trial_id(number);
            results.push(TrialResult {
                cost: prior.cost,
                ..TrialResult::single(id.clone(), prior.value)
            });
            trials.push(Trial {
                trial_id: id,
                number,
                params,
            });
        }
        Ok(vec![SolverEvent::TrialsSeeded { trials, results }])
    }

    pub(super) fn decide_enqueue(&self, enqueue: &Enqueue) -> Result<Vec<SolverEvent>, Rejection> {
        let n = enqueue.candidates.len();
        self.check_open_for("enqueue", n, "candidates")?;
        let room = self.remaining().saturating_sub(self.queue.len() as u64);
        if n as u64 > room {
            return Err(Rejection::new(
                ErrorCode::InvalidState,
                format!("enqueue: the budget has room for {room} more queued trials, got {n} candidates"),
            ));
        }
        let candidates = enqueue
            .candidates
            .iter()
            .enumerate()
            .map(|(i, c)| {
                checked_params(&self.config, c, &format!("enqueue: candidates[{i}]"), false)
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(id) = &enqueue.rollback_to {
            if self.trial(id).is_none() {
                return Err(self.unknown_trial_in("enqueue: rollback_to", id));
            }
        }
        Ok(vec![SolverEvent::CandidatesEnqueued {
            candidates,
            rollback_to: enqueue.rollback_to.clone(),
            reason: enqueue.reason.clone(),
        }])
    }

    /// Refuses `command` on a study that is not running, or with more than
    /// [`MAX_WARM_START`] items.
    fn check_open_for(&self, command: &str, n: usize, items: &str) -> Result<(), Rejection> {
        if self.status != StudyStatus::Running {
            return Err(Rejection::new(
                ErrorCode::InvalidState,
                format!("{command}: the study is {}", self.status.as_str()),
            ));
        }
        if n > MAX_WARM_START {
            return Err(Rejection::invalid(format!(
                "{command}: at most {MAX_WARM_START} {items}, got {n}"
            )));
        }
        Ok(())
    }

    pub(super) fn add_seeded(&mut self, trials: &[Trial], results: &[TrialResult]) {
        for (trial, result) in trials.iter().zip(results) {
            let record = TrialRecord {
                seeded: true,
                ..TrialRecord::new(trial.clone(), None)
            };
            self.push_record(record);
            self.seeded += 1;
            self.record_result(result);
        }
    }
}

/// `params` in the study's types, or the first problem, named under `at`:
/// an unknown name, a value that does not fit its bound, a parameter
/// inactive where its parent is given, or (when `complete`) an active
/// parameter left out.
fn checked_params(
    config: &StudyConfig,
    params: &Params,
    at: &str,
    complete: bool,
) -> Result<Params, Rejection> {
    let mut checked = Params::new();
    for (name, value) in params {
        let bound = config.bounds.get(name).ok_or_else(|| {
            let known: Vec<&str> = config.bounds.keys().map(String::as_str).collect();
            Rejection::invalid(format!(
                "{at}.params.{name}: not a parameter of the study (it has {})",
                known.join(", ")
            ))
        })?;
        let value = bound
            .normalize(value)
            .map_err(|why| Rejection::invalid(format!("{at}.params.{name}: {why}")))?;
        checked.insert(name.clone(), value);
    }
    let value_of = |name: &str| checked.get(name).cloned();
    for (name, bound) in &config.bounds {
        let parent_known = bound
            .condition
            .as_ref()
            .is_none_or(|c| checked.contains_key(&c.parent));
        let active = is_active(&config.bounds, name, &value_of);
        if checked.contains_key(name) && parent_known && !active {
            return Err(Rejection::invalid(format!(
                "{at}.params.{name}: inactive here: its condition on {:?} does not hold",
                bound.condition.as_ref().map_or("", |c| c.parent.as_str())
            )));
        }
        if complete && active && !checked.contains_key(name) {
            return Err(Rejection::invalid(format!("{at}.params: missing {name:?}")));
        }
    }
    Ok(checked)
}

/// Trial `number` from a queued candidate: the candidate's values, and the
/// sampler's for the parameters it leaves out (drawn where the candidate's
/// values put the point, so conditions see them).
pub(super) fn complete_candidate(
    config: &StudyConfig,
    number: u64,
    history: &History,
    candidate: &Params,
) -> Params {
    let mut point = unit_point(config, number, history);
    for ((name, bound), u) in config.bounds.iter().zip(point.iter_mut()) {
        if let Some(value) = candidate.get(name) {
            *u = bound.unit_of(value);
        }
    }
    let mut params = params_at(config, &point);
    for (name, value) in candidate {
        if let Some(slot) = params.get_mut(name) {
            *slot = value.clone();
        }
    }
    params
}
