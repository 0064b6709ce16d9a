//! The Tree-structured Parzen Estimator (TPE), with Optuna 5's model.
//!
//! TPE turns "where is the objective low?" into "where are good trials
//! dense and bad trials sparse?". For trial `number` it:
//!
//! 1. While fewer than `n_startup_trials` (10) trials are told there is
//!    nothing to model: it hands out the start-up design's point, a
//!    scrambled Sobol point ([`sobol::point`]; random beyond Sobol's
//!    dimensions), which covers the space more evenly than random points.
//! 2. Splits the trials into *good* — the best `gamma(n) = min(ceil(0.1 n),
//!    25)` of the `n` told ones (Optuna's `default_gamma`; ties go to the
//!    earlier trial) — and *bad*: every other told trial plus every pending
//!    one. Pending trials (asked, not told; including those handed out
//!    earlier in the same `ask`) are the *constant liar*: they count as
//!    observations with the worst value seen, so they can never be good, and
//!    the density of bad trials grows where trials already run — a batch
//!    spreads out instead of piling onto the same optimum.
//! 3. Fits a Parzen estimator ([`parzen`](super::parzen): a weighted mixture
//!    of normal kernels truncated to `[0, 1]`, plus a wide prior kernel) to
//!    each group, `l` to the good and `g` to the bad. Kernel widths follow
//!    Optuna 5: per dimension, the larger gap to the neighbouring
//!    observations, clipped by the magic clip. The bad trials are weighted
//!    by Optuna's `default_weights`: the newest 25 weigh 1, older ones ramp
//!    down to `1/m`.
//! 4. Draws `n_ei_candidates` (24) candidates from `l` and keeps the one
//!    with the largest `l(x) / g(x)`, which maximises expected improvement
//!    under TPE's model (Bergstra et al., 2011). Ties go to the earlier
//!    candidate.
//!
//! Everything happens in the unit cube, on points recovered from the
//! recorded parameters ([`to_unit`](crate::sampling::to_unit)), so
//! log-scale parameters are modelled in `ln x` with no special case.
//!
//! **Multivariate** (the default, as in Optuna 5; `strategy_params:
//! {"multivariate": 0}` turns it off) models the dimensions jointly, as
//! Optuna does: `l` and `g` are each one mixture over whole points
//! ([`ParzenN`]) whose kernels have a width per dimension, candidates are
//! drawn from `l` jointly (one good trial's kernel for every coordinate),
//! and scored by the ratio of the joint densities, summed in log space
//! (log-sum-exp) as products of kernels underflow in high dimension. This
//! keeps interactions between parameters (a diagonal valley, a good region
//! that is good only in combination).
//!
//! **Univariate** (`"multivariate": 0`) models and picks each dimension on
//! its own: `l` and `g` are one-dimensional, 24 candidates per dimension.
//!
//! **Cost**: at most [`MAX_BAD_TRIALS`] bad trials (the most recent ones,
//! pending first in line) enter `g`, and at most 25 good ones enter `l`, so
//! after an `O(n)` pass to split the history a trial costs
//! `O((25 + K) · d · candidates)` whatever the study's size. Older bad
//! trials would carry weight `< K / n` under Optuna's ramp anyway.
//!
//! **Determinism**: the only randomness is [`trial_rng`]`(seed, number)`
//! (and the seeded start-up design), and every step (selection, sorting,
//! sums) runs in a fixed order, so the same history gives the same point,
//! bit for bit.

use super::parzen::{weights, Parzen1, ParzenN};
use super::{multi_objective, sobol, History};
use crate::sampling::trial_rng;
use flotilla_messages::solver::{
    StudyConfig, TPE_GAMMA, TPE_N_EI_CANDIDATES, TPE_N_STARTUP_TRIALS,
};
use rand_chacha::ChaCha8Rng;

/// The most bad trials (the most recent) a trial's model takes into `g`.
pub const MAX_BAD_TRIALS: usize = 256;

/// The most good trials: `gamma(n)` never exceeds it (Optuna's cap).
pub const MAX_GOOD_TRIALS: usize = 25;

/// TPE's knobs, read from a config's `strategy_params`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Told trials needed before TPE models anything; the start-up design
    /// before.
    pub n_startup_trials: u64,
    /// Candidates drawn from `l` and scored per trial (per dimension when
    /// univariate).
    pub n_ei_candidates: usize,
    /// The good share: `gamma(n) = min(ceil(gamma · n), 25)`.
    pub gamma: f64,
    /// Whether dimensions are modelled jointly.
    pub multivariate: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            n_startup_trials: TPE_N_STARTUP_TRIALS,
            n_ei_candidates: TPE_N_EI_CANDIDATES as usize,
            gamma: TPE_GAMMA,
            multivariate: true,
        }
    }
}

impl Settings {
    /// The settings of `config`: its `strategy_params` over the defaults.
    pub fn of(config: &StudyConfig) -> Self {
        Settings::default().over(config)
    }

    /// `config`'s `strategy_params` over these settings.
    pub fn over(self, config: &StudyConfig) -> Self {
        let knob = |key: &str| config.strategy_params.get(key).copied();
        let defaults = self;
        Settings {
            n_startup_trials: knob("n_startup_trials")
                .map_or(defaults.n_startup_trials, |v| v as u64),
            n_ei_candidates: knob("n_ei_candidates")
                .map_or(defaults.n_ei_candidates, |v| (v as usize).max(1)),
            gamma: knob("gamma").unwrap_or(defaults.gamma),
            multivariate: knob("multivariate").map_or(defaults.multivariate, |v| v != 0.0),
        }
    }

    /// How many of `n` told trials count as good.
    pub fn n_good(&self, n: usize) -> usize {
        ((self.gamma * n as f64).ceil() as usize).min(MAX_GOOD_TRIALS)
    }
}

/// The start-up design's point for trial `number`: scrambled Sobol (random
/// in the dimensions beyond Sobol's table).
pub fn startup_point(seed: u64, number: u64, dimensions: usize) -> Vec<f64> {
    sobol::point(seed, number, dimensions)
}

/// Trial `number`'s point in `[0, 1)^d` under `settings` (usually
/// [`Settings::of`] the config; the `auto` sampler picks its own) given the
/// study's `history`.
pub fn point(
    config: &StudyConfig,
    settings: &Settings,
    number: u64,
    history: &History,
) -> Vec<f64> {
    let dimensions = config.bounds.len();
    let Some(split) = Split::of(history, settings) else {
        return startup_point(config.seed, number, dimensions);
    };
    let mut rng = trial_rng(config.seed, number);
    let candidates = settings.n_ei_candidates;
    if settings.multivariate {
        multivariate(history, &split, dimensions, candidates, &mut rng)
    } else {
        univariate(history, &split, dimensions, candidates, &mut rng)
    }
}

/// The history's entries split into good and bad, each in number order,
/// with the weights of the good ones' kernels (the prior's last).
struct Split {
    good: Vec<usize>,
    bad: Vec<usize>,
    good_weights: Vec<f64>,
}

impl Split {
    /// `None` while too few trials are told to model.
    fn of(history: &History, settings: &Settings) -> Option<Split> {
        let n = history.len();
        let told: Vec<usize> = (0..n).filter(|&i| history.value(i).is_some()).collect();
        if told.is_empty() || (told.len() as u64) < settings.n_startup_trials {
            return None;
        }
        let n_good = settings.n_good(told.len()).clamp(1, told.len());
        let good = good_trials(history, &told, n_good);
        let mut is_good = vec![false; n];
        for &i in &good {
            is_good[i] = true;
        }
        let mut bad: Vec<usize> = (0..n)
            .rev()
            .filter(|&i| !is_good[i])
            .take(MAX_BAD_TRIALS)
            .collect();
        bad.reverse();
        let good_weights = if history.objectives() > 1 {
            multi_objective::good_weights(history, &good)
        } else {
            weights(good.len())
        };
        Some(Split {
            good,
            bad,
            good_weights,
        })
    }
}

/// The `n_good` best of the `told` entries, in number order: the best
/// feasible ones (by value, ties to the earlier trial; by non-dominated
/// rank for several objectives, see [`multi_objective`]) and, if too few
/// are feasible, the least violating infeasible ones, as Optuna's TPE
/// with `constraints_func` splits.
fn good_trials(history: &History, told: &[usize], n_good: usize) -> Vec<usize> {
    let (feasible, infeasible): (Vec<usize>, Vec<usize>) =
        told.iter().partition(|&&i| history.violation(i) <= 0.0);
    let from_feasible = n_good.min(feasible.len());
    let mut good = if history.objectives() > 1 {
        multi_objective::best(history, &feasible, from_feasible)
    } else {
        lowest(&feasible, from_feasible, |i| {
            history.value(i).unwrap_or(f64::INFINITY)
        })
    };
    good.extend(lowest(&infeasible, n_good - from_feasible, |i| {
        history.violation(i)
    }));
    good.sort_unstable();
    good
}

/// The `k` entries with the lowest `key` (ties to the earlier entry), in
/// no particular order.
fn lowest(entries: &[usize], k: usize, key: impl Fn(usize) -> f64) -> Vec<usize> {
    if k == 0 {
        return Vec::new();
    }
    let mut keyed: Vec<(f64, usize)> = entries.iter().map(|&i| (key(i), i)).collect();
    let by_key = |a: &(f64, usize), b: &(f64, usize)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
    keyed.select_nth_unstable_by(k - 1, by_key);
    keyed[..k].iter().map(|&(_, i)| i).collect()
}

/// Each dimension on its own: the best of `candidates` draws from `l` by
/// `l / g`.
fn univariate(
    history: &History,
    split: &Split,
    dimensions: usize,
    candidates: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<f64> {
    let good_weights = &split.good_weights;
    let bad_weights = weights(split.bad.len());
    let mut column = Vec::with_capacity(split.bad.len());
    (0..dimensions)
        .map(|j| {
            column.clear();
            column.extend(split.good.iter().map(|&i| history.point(i)[j]));
            let l = Parzen1::fit(&column, good_weights.clone());
            column.clear();
            column.extend(split.bad.iter().map(|&i| history.point(i)[j]));
            let g = Parzen1::fit(&column, bad_weights.clone());
            let mut best = (f64::NEG_INFINITY, 0.0);
            for _ in 0..candidates {
                let x = l.sample(rng);
                let ratio = l.density(x) / g.density(x);
                if ratio > best.0 {
                    best = (ratio, x);
                }
            }
            best.1
        })
        .collect()
}

/// All dimensions jointly: the best of `candidates` joint draws from `l`.
fn multivariate(
    history: &History,
    split: &Split,
    dimensions: usize,
    candidates: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<f64> {
    let rows = |entries: &[usize]| {
        let fit = entries.iter().map(|&i| history.point(i));
        ParzenN::fit(fit, dimensions, weights(entries.len()))
    };
    let good_rows = split.good.iter().map(|&i| history.point(i));
    let l = ParzenN::fit(good_rows, dimensions, split.good_weights.clone());
    let g = rows(&split.bad);
    let mut scratch = Vec::with_capacity(split.bad.len() + 1);
    let mut best = (f64::NEG_INFINITY, Vec::new());
    for _ in 0..candidates {
        let x = l.sample(rng);
        let score = l.log_density(&x, &mut scratch) - g.log_density(&x, &mut scratch);
        if score > best.0 || best.1.is_empty() {
            best = (score, x);
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samplers::random;
    use crate::samplers::testing::{
        assert_replays_exactly, bound, branin, branin_space, config, run, trial_bits, Objective,
        Order,
    };
    use crate::samplers::unit_point;
    use flotilla_messages::solver::{Bound, Sampler, Scale};
    use std::collections::BTreeMap;

    fn quadratic(p: &BTreeMap<String, f64>) -> f64 {
        (p["x"] - 1.3).powi(2) + (p["y"] + 2.1).powi(2)
    }

    fn quadratic_space() -> Vec<(&'static str, Bound)> {
        vec![("x", bound(-5.0, 5.0)), ("y", bound(-5.0, 5.0))]
    }

    fn median_best(
        sampler: Sampler,
        objective: Objective,
        space: &[(&str, Bound)],
        knobs: &[(&str, f64)],
    ) -> f64 {
        let mut bests: Vec<f64> = (0..10)
            .map(|seed| {
                run(
                    config(sampler, seed, 60, space, knobs),
                    objective,
                    1,
                    Order::Together,
                )
                .2
            })
            .collect();
        bests.sort_by(f64::total_cmp);
        (bests[4] + bests[5]) / 2.0
    }

    #[test]
    fn tpe_beats_random_on_a_quadratic_and_on_branin() {
        for (objective, space, name) in [
            (quadratic as Objective, quadratic_space(), "quadratic"),
            (branin as Objective, branin_space()[..2].to_vec(), "branin"),
        ] {
            let random = median_best(Sampler::Random, objective, &space, &[]);
            let tpe = median_best(Sampler::Tpe, objective, &space, &[("multivariate", 0.0)]);
            let joint = median_best(Sampler::Tpe, objective, &space, &[("multivariate", 1.0)]);
            eprintln!("{name}: random {random:.4}, tpe {tpe:.4}, multivariate {joint:.4}");
            assert!(tpe < random, "{name}: tpe {tpe} vs random {random}");
            assert!(
                joint < random,
                "{name}: multivariate {joint} vs random {random}"
            );
        }
    }

    /// A history of `told` random points told their quadratic value, then
    /// `pending` random points still running.
    fn history_data(
        dimensions: usize,
        told: usize,
        pending: usize,
    ) -> (Vec<f64>, Vec<Option<f64>>) {
        let mut points = Vec::new();
        let mut values = Vec::new();
        for k in 0..told + pending {
            let p = random::point(99, k as u64 + 1, dimensions);
            let value = p.iter().map(|u| (u - 0.3) * (u - 0.3)).sum::<f64>();
            points.extend_from_slice(&p);
            values.push((k < told).then_some(value));
        }
        (points, values)
    }

    #[test]
    fn the_same_history_gives_the_same_point_bits() {
        for multivariate in [0.0, 1.0] {
            let space = [
                ("a", bound(0.0, 1.0)),
                ("b", bound(0.0, 1.0)),
                ("c", bound(0.0, 1.0)),
            ];
            let config = config(
                Sampler::Tpe,
                5,
                100,
                &space,
                &[("multivariate", multivariate)],
            );
            let (points, values) = history_data(3, 40, 5);
            let history = History::new(3, &points, &values);
            let a = unit_point(&config, 46, &history);
            let (points_again, values_again) = (points.clone(), values.clone());
            let again = History::new(3, &points_again, &values_again);
            let b = unit_point(&config, 46, &again);
            let to_bits = |p: &[f64]| p.iter().map(|u| u.to_bits()).collect::<Vec<_>>();
            assert_eq!(to_bits(&a), to_bits(&b));
            assert!(a.iter().all(|u| (0.0..1.0).contains(u)), "{a:?}");
            // Another trial number draws another point.
            assert_ne!(to_bits(&a), to_bits(&unit_point(&config, 47, &history)));
            // Too few told trials: the start-up design's point.
            let (points, values) = history_data(3, 9, 5);
            let early = History::new(3, &points, &values);
            assert_eq!(unit_point(&config, 15, &early), sobol::point(5, 15, 3));
        }
    }

    fn min_distance(points: &[Vec<f64>]) -> f64 {
        let mut min = f64::INFINITY;
        for (i, a) in points.iter().enumerate() {
            for b in &points[i + 1..] {
                let d2: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
                min = min.min(d2.sqrt());
            }
        }
        min
    }

    #[test]
    fn the_constant_liar_spreads_a_batch() {
        for multivariate in [0.0, 1.0] {
            let mut with_liar = 0.0;
            let mut without = 0.0;
            for seed in 0..10 {
                let space = [("a", bound(0.0, 1.0)), ("b", bound(0.0, 1.0))];
                let config = config(
                    Sampler::Tpe,
                    seed,
                    100,
                    &space,
                    &[("multivariate", multivariate)],
                );
                let (points, values) = history_data(2, 30, 0);
                let mut liar = History::new(2, &points, &values);
                let fixed = History::new(2, &points, &values);
                let (mut spread, mut piled) = (Vec::new(), Vec::new());
                for number in 31..39 {
                    let p = unit_point(&config, number, &liar);
                    liar.push_pending(&p);
                    spread.push(p);
                    piled.push(unit_point(&config, number, &fixed));
                }
                with_liar += min_distance(&spread) / 10.0;
                without += min_distance(&piled) / 10.0;
            }
            eprintln!("multivariate {multivariate}: mean closest pair {with_liar:.4} with the liar, {without:.4} without");
            assert!(with_liar > without, "{with_liar} vs {without}");
        }
    }

    #[test]
    fn a_tpe_study_replays_bit_for_bit_in_batches() {
        for multivariate in [0.0, 1.0] {
            let knobs = [("multivariate", multivariate), ("n_startup_trials", 5.0)];
            assert_replays_exactly(config(Sampler::Tpe, 3, 40, &branin_space(), &knobs));
        }
    }

    #[test]
    fn a_batch_gets_distinct_points_inside_the_bounds() {
        let space = [
            ("x", bound(-5.0, 10.0)),
            ("lr", Bound::new(1e-5, 0.1, Scale::Log)),
        ];
        let config = config(Sampler::Tpe, 8, 200, &space, &[]);
        let objective = |p: &BTreeMap<String, f64>| (p["x"] - 1.0).abs() + p["lr"].ln().abs();
        let (study, _, _) = run(config, objective, 16, Order::Together);
        let mut seen: Vec<Vec<u64>> = trial_bits(&study);
        for r in study.trials() {
            assert!((-5.0..=10.0).contains(&r.trial.params["x"].as_f64().unwrap()));
            assert!((1e-5..=0.1).contains(&r.trial.params["lr"].as_f64().unwrap()));
        }
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 200);
    }

    #[test]
    fn gamma_is_optunas_default() {
        let s = Settings::default();
        assert_eq!(
            (s.n_good(10), s.n_good(11), s.n_good(250), s.n_good(10_000)),
            (1, 2, 25, 25)
        );
        let c = config(
            Sampler::Tpe,
            0,
            1,
            &[("x", bound(0.0, 1.0))],
            &[("gamma", 0.25), ("n_ei_candidates", 48.0)],
        );
        let s = Settings::of(&c);
        assert_eq!(
            (s.n_good(10), s.n_ei_candidates, s.multivariate),
            (3, 48, true)
        );
    }
}
