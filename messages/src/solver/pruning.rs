//! Pruning: stopping trials early from their intermediate results.
//!
//! A trial that learns step by step (epochs, boosting rounds) reports its
//! score along the way with the solver's `report` command:
//!
//! ```json
//! {"type": "report", "trial_id": "t7", "step": 3, "value": 0.41}
//! ```
//!
//! The reply says what to do next, `{"action": "continue"}` or
//! `{"action": "prune"}`; a pruned trial is finished (it counts toward the
//! budget, is never the best, and its later reports are refused). The
//! decision comes from the study's [`Pruner`], set in the config:
//!
//! ```json
//! {"pruner": {"type": "median", "n_startup_trials": 5, "n_warmup_steps": 0, "interval_steps": 1}}
//! {"pruner": {"type": "asha", "min_resource": 1, "reduction_factor": 3, "min_early_stopping_rate": 0}}
//! ```
//!
//! Without a pruner every report is recorded and answered `continue`. The
//! rules follow Optuna's `MedianPruner` and `SuccessiveHalvingPruner`
//! (asynchronous successive halving), so results carry over; the neighbours
//! are [`solver`](crate::solver) (the commands and events) and the solver
//! actor, which decides.

use serde::{Deserialize, Serialize};

/// The largest ASHA reduction factor accepted.
pub const MAX_REDUCTION_FACTOR: u64 = 1000;

/// How a study decides to stop a trial early.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Pruner {
    /// Prune a trial whose best result so far is worse than the median of
    /// the completed trials' results at the same step.
    Median {
        /// Completed trials needed before anything is pruned.
        #[serde(default = "five")]
        n_startup_trials: u32,
        /// Steps of every trial that are never pruned.
        #[serde(default)]
        n_warmup_steps: u64,
        /// Only every this many steps (after the warm-up) is checked.
        #[serde(default = "one")]
        interval_steps: u64,
    },
    /// Asynchronous successive halving: at rung `r` (step `min_resource ·
    /// reduction_factor^(r + min_early_stopping_rate)`), a trial goes on
    /// only if it is in the best `1 / reduction_factor` of the trials that
    /// reached that rung so far.
    Asha {
        /// The step of the first rung.
        #[serde(default = "one")]
        min_resource: u64,
        /// How much each rung narrows the field (at least 2).
        #[serde(default = "three")]
        reduction_factor: u64,
        /// Skips the first rungs: `s` in the ASHA paper.
        #[serde(default)]
        min_early_stopping_rate: u32,
    },
}

fn one() -> u64 {
    1
}

fn three() -> u64 {
    3
}

fn five() -> u32 {
    5
}

impl Pruner {
    /// Why this pruner's settings are unusable, naming the field; `None`
    /// if fine.
    pub fn problem(&self) -> Option<String> {
        match *self {
            Pruner::Median {
                interval_steps: 0, ..
            } => {
                Some("pruner.interval_steps must be at least 1, got 0".to_string())
            }
            Pruner::Asha {
                min_resource: 0, ..
            } => {
                Some("pruner.min_resource must be at least 1, got 0".to_string())
            }
            Pruner::Asha {
                reduction_factor, ..
            } if !(2..=MAX_REDUCTION_FACTOR).contains(&reduction_factor) => Some(format!(
                "pruner.reduction_factor must be in 2..={MAX_REDUCTION_FACTOR}, got {reduction_factor}"
            )),
            Pruner::Asha {
                min_early_stopping_rate,
                ..
            } if min_early_stopping_rate > 30 => Some(format!(
                "pruner.min_early_stopping_rate must be at most 30, got {min_early_stopping_rate}"
            )),
            _ => None,
        }
    }
}

/// An intermediate result of a running trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// The trial, as `ask` named it.
    pub trial_id: String,
    /// Where the trial is: an epoch, a number of rounds (0, 1, 2...).
    pub step: u64,
    /// The objective at that step; must be finite.
    pub value: f64,
}

/// What a trial should do after a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PruneAction {
    /// Keep going.
    Continue,
    /// Stop: the trial is finished as pruned.
    Prune,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pruners_read_with_defaults_and_refuse_unknown_fields() {
        let median: Pruner = serde_json::from_value(json!({"type": "median"})).unwrap();
        assert_eq!(
            median,
            Pruner::Median {
                n_startup_trials: 5,
                n_warmup_steps: 0,
                interval_steps: 1
            }
        );
        let asha: Pruner =
            serde_json::from_value(json!({"type": "asha", "reduction_factor": 4})).unwrap();
        assert_eq!(
            asha,
            Pruner::Asha {
                min_resource: 1,
                reduction_factor: 4,
                min_early_stopping_rate: 0
            }
        );
        let unknown = serde_json::from_value::<Pruner>(json!({"type": "asha", "eta": 3}));
        assert!(unknown
            .unwrap_err()
            .to_string()
            .contains("unknown field `eta`"));
        let kind = serde_json::from_value::<Pruner>(json!({"type": "hyperband"}));
        assert!(kind
            .unwrap_err()
            .to_string()
            .contains("unknown variant `hyperband`"));
    }

    #[test]
    fn bad_settings_are_named() {
        let asha = |reduction_factor| Pruner::Asha {
            min_resource: 1,
            reduction_factor,
            min_early_stopping_rate: 0,
        };
        assert!(asha(1)
            .problem()
            .unwrap()
            .contains("pruner.reduction_factor"));
        assert_eq!(asha(3).problem(), None);
        let median = Pruner::Median {
            n_startup_trials: 5,
            n_warmup_steps: 0,
            interval_steps: 0,
        };
        assert!(median.problem().unwrap().contains("pruner.interval_steps"));
    }
}
