//! The pruners: whether a trial should stop after an intermediate report.
//!
//! Both are pure functions of the reports recorded so far, so a replayed
//! study makes the same decisions. Values are losses (lower is better; the
//! study negates them when it maximises), and each trial's reports are a map
//! step → value.
//!
//! - [`median_prunes`]: Optuna's `MedianPruner`. After `n_startup_trials`
//!   completed trials and `n_warmup_steps`, every `interval_steps`, a trial
//!   whose best value so far is worse than the median of the completed
//!   trials' values at the same step is pruned.
//! - [`asha_prunes`]: asynchronous successive halving (Li et al., 2020), as
//!   Optuna's `SuccessiveHalvingPruner` does it. Rung `r` sits at step
//!   `min_resource · η^(r + s)`. A trial reaching a rung goes on only if its
//!   value there is among the best `⌊n / η⌋` of the `n` values any trial
//!   had at that rung (the best one while fewer than `η` got there); no
//!   trial waits for others, so the workers never idle.

use flotilla_messages::solver::pruning::Pruner;
use std::collections::BTreeMap;

/// The reports of one trial, step → loss.
pub type Reports = BTreeMap<u64, f64>;

/// What the pruner knows about another trial.
#[derive(Debug, Clone, Copy)]
pub struct Peer<'a> {
    /// Its reports so far.
    pub reports: &'a Reports,
    /// Whether it completed (told a final value).
    pub completed: bool,
}

/// Whether `pruner` stops the trial whose reports, including the new one at
/// `step`, are `own`, given every other trial of the study.
pub fn prunes(pruner: &Pruner, own: &Reports, step: u64, peers: &[Peer<'_>]) -> bool {
    match *pruner {
        Pruner::Median {
            n_startup_trials,
            n_warmup_steps,
            interval_steps,
        } => {
            let checked =
                step >= n_warmup_steps && (step - n_warmup_steps).is_multiple_of(interval_steps);
            checked && median_prunes(own, step, peers, n_startup_trials as usize)
        }
        Pruner::Asha {
            min_resource,
            reduction_factor,
            min_early_stopping_rate,
        } => {
            let rungs = Rungs {
                min_resource,
                reduction_factor,
                min_early_stopping_rate,
            };
            asha_prunes(&rungs, own, step, peers)
        }
    }
}

/// The median rule; see the module docs.
pub fn median_prunes(own: &Reports, step: u64, peers: &[Peer<'_>], n_startup: usize) -> bool {
    let completed: Vec<&Peer> = peers.iter().filter(|p| p.completed).collect();
    if completed.len() < n_startup.max(1) {
        return false;
    }
    let mut at_step: Vec<f64> = completed
        .iter()
        .filter_map(|p| p.reports.get(&step).copied())
        .collect();
    if at_step.is_empty() {
        return false;
    }
    let best_so_far = own.values().copied().fold(f64::INFINITY, f64::min);
    best_so_far > median(&mut at_step)
}

/// The median with linear interpolation between the middle two (numpy's
/// default percentile, as Optuna uses).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Where ASHA's rungs are.
#[derive(Debug, Clone, Copy)]
pub struct Rungs {
    /// The step of rung 0 (before `min_early_stopping_rate` shifts it).
    pub min_resource: u64,
    /// η: how much each rung narrows the field.
    pub reduction_factor: u64,
    /// s: how many rungs to skip.
    pub min_early_stopping_rate: u32,
}

impl Rungs {
    /// The step at which rung `rung` is judged; `None` past `u64`.
    fn step(&self, rung: u32) -> Option<u64> {
        let power = self
            .reduction_factor
            .checked_pow(rung.checked_add(self.min_early_stopping_rate)?)?;
        self.min_resource.checked_mul(power)
    }

    /// The rungs a trial with these reports has reached, with its value at
    /// each: the value of its first report at or past the rung's step.
    fn reached(&self, reports: &Reports) -> Vec<f64> {
        let Some(&last) = reports.keys().next_back() else {
            return Vec::new();
        };
        (0..)
            .map_while(|rung| self.step(rung).filter(|&s| s <= last))
            .filter_map(|s| reports.range(s..).next().map(|(_, &v)| v))
            .collect()
    }
}

/// The ASHA rule; see the module docs. A report that passes several rungs
/// at once is judged at each; the trial stops at the first it fails.
pub fn asha_prunes(rungs: &Rungs, own: &Reports, step: u64, peers: &[Peer<'_>]) -> bool {
    let before: Reports = own.range(..step).map(|(&s, &v)| (s, v)).collect();
    let judged_before = rungs.reached(&before).len();
    let own_values = rungs.reached(own);
    let peer_rungs: Vec<Vec<f64>> = peers.iter().map(|p| rungs.reached(p.reports)).collect();
    own_values
        .iter()
        .enumerate()
        .skip(judged_before)
        .any(|(rung, &value)| {
            let mut competing: Vec<f64> = peer_rungs
                .iter()
                .filter_map(|values| values.get(rung).copied())
                .collect();
            competing.push(value);
            !promotable(value, &mut competing, rungs.reduction_factor)
        })
}

/// Whether `value` is among the best `⌊n / η⌋` of `competing` (the best
/// one while `n < η`).
fn promotable(value: f64, competing: &mut [f64], reduction_factor: u64) -> bool {
    competing.sort_by(f64::total_cmp);
    let keep = (competing.len() as u64 / reduction_factor).max(1) as usize;
    value <= competing[keep - 1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reports(values: &[(u64, f64)]) -> Reports {
        values.iter().copied().collect()
    }

    fn done(reports: &Reports) -> Peer<'_> {
        Peer {
            reports,
            completed: true,
        }
    }

    #[test]
    fn median_waits_for_startup_trials_then_prunes_the_worse_half() {
        let finished: Vec<Reports> = (0..5)
            .map(|i| reports(&[(1, f64::from(i)), (2, f64::from(i) / 2.0)]))
            .collect();
        let peers: Vec<Peer> = finished.iter().map(done).collect();
        // Median at step 1 of 0..4 is 2.
        assert!(!median_prunes(&reports(&[(1, 1.5)]), 1, &peers, 5));
        assert!(median_prunes(&reports(&[(1, 2.5)]), 1, &peers, 5));
        // Not enough completed trials yet: never prune.
        assert!(!median_prunes(&reports(&[(1, 9.0)]), 1, &peers[..4], 5));
        // A step no completed trial reported: nothing to compare with.
        assert!(!median_prunes(&reports(&[(7, 9.0)]), 7, &peers, 5));
        // The best value so far counts, not the latest.
        assert!(!median_prunes(
            &reports(&[(1, 0.5), (2, 9.0)]),
            2,
            &peers,
            5
        ));
    }

    #[test]
    fn median_honours_warmup_and_interval() {
        let finished = reports(&[(0, 0.0), (1, 0.0), (2, 0.0), (3, 0.0)]);
        let peers = [done(&finished)];
        let pruner = Pruner::Median {
            n_startup_trials: 1,
            n_warmup_steps: 1,
            interval_steps: 2,
        };
        let own = |step| reports(&[(step, 5.0)]);
        assert!(!prunes(&pruner, &own(0), 0, &peers), "warm-up");
        assert!(prunes(&pruner, &own(1), 1, &peers));
        assert!(!prunes(&pruner, &own(2), 2, &peers), "between intervals");
        assert!(prunes(&pruner, &own(3), 3, &peers));
    }

    fn rungs(eta: u64) -> Rungs {
        Rungs {
            min_resource: 1,
            reduction_factor: eta,
            min_early_stopping_rate: 0,
        }
    }

    #[test]
    fn rungs_sit_at_powers_of_eta() {
        let r = rungs(3);
        assert_eq!(
            (0..4).map(|k| r.step(k).unwrap()).collect::<Vec<_>>(),
            [1, 3, 9, 27]
        );
        let shifted = Rungs {
            min_early_stopping_rate: 1,
            ..r
        };
        assert_eq!(shifted.step(0), Some(3));
        assert_eq!(
            r.reached(&reports(&[(1, 0.5), (2, 0.4), (4, 0.3)])),
            [0.5, 0.3]
        );
        assert_eq!(rungs(2).step(70), None);
    }

    #[test]
    fn asha_keeps_the_best_third_at_each_rung() {
        let r = rungs(3);
        let others: Vec<Reports> = [0.1, 0.2, 0.3, 0.4, 0.5]
            .iter()
            .map(|&v| reports(&[(1, v)]))
            .collect();
        let peers: Vec<Peer> = others
            .iter()
            .map(|reports| Peer {
                reports,
                completed: false,
            })
            .collect();
        // Six values at rung 0: the best two go on.
        assert!(!asha_prunes(&r, &reports(&[(1, 0.15)]), 1, &peers));
        assert!(asha_prunes(&r, &reports(&[(1, 0.25)]), 1, &peers));
        // Steps between rungs are never judged.
        assert!(!asha_prunes(
            &r,
            &reports(&[(1, 0.15), (2, 9.0)]),
            2,
            &peers
        ));
    }

    #[test]
    fn the_first_trials_at_a_rung_go_on_only_if_best() {
        let r = rungs(3);
        let first = reports(&[(1, 0.5)]);
        let peers = [Peer {
            reports: &first,
            completed: false,
        }];
        assert!(!asha_prunes(&r, &reports(&[(1, 0.4)]), 1, &peers));
        assert!(asha_prunes(&r, &reports(&[(1, 0.6)]), 1, &peers));
        assert!(!asha_prunes(&r, &reports(&[(1, 0.6)]), 1, &[]));
    }

    proptest! {
        /// The best trial at a rung is never pruned there, by either pruner.
        #[test]
        fn the_best_is_never_pruned(values in proptest::collection::vec(-1e6..1e6f64, 1..30), eta in 2u64..5) {
            let all: Vec<Reports> = values.iter().map(|&v| reports(&[(1, v)])).collect();
            let best = values.iter().copied().fold(f64::INFINITY, f64::min);
            let own = reports(&[(1, best)]);
            let peers: Vec<Peer> = all.iter().map(done).collect();
            prop_assert!(!asha_prunes(&rungs(eta), &own, 1, &peers));
            prop_assert!(!median_prunes(&own, 1, &peers, 1));
        }
    }
}
