//! Gaussian-process Bayesian optimisation (`sampler: gp`).
//!
//! For trial `number` it:
//!
//! 1. While fewer than `n_startup_trials` (10) trials are told, hands out
//!    the scrambled Sobol design's point, as TPE does.
//! 2. Models the told values (standardised) as a GP with a Matérn-5/2 ARD
//!    [`kernel`] on the unit cube — log-scale parameters are uniform in
//!    `ln x` there already, and categorical ones compare by choice — whose
//!    hyperparameters are the maximum a posteriori fit of [`hyper`],
//!    refitted as the history grows (a fold, so it replays exactly).
//! 3. Believes every running trial (asked, not told, including the ones
//!    handed out earlier in the same `ask`) at the model's mean there
//!    (Kriging believer): the mean does not move, but the uncertainty
//!    around a running trial collapses, so the next point goes elsewhere
//!    and a batch spreads out.
//! 4. Hands out the point of largest log expected improvement
//!    ([`acquisition`]): Sobol candidates and perturbations of the best
//!    trials, the best few refined by gradient ascent.
//!
//! **Constraints**: a constrained study's largest constraint value per
//! trial (its margin, feasible when ≤ 0) gets a GP of its own, with the
//! objective's kernel, and the acquisition adds the log probability that
//! the margin is ≤ 0 (Optuna's constrained log EI, one GP for the margin
//! where Optuna fits one per constraint); EI is over the best feasible
//! value, and left out while none is feasible. Every input is per trial,
//! so the memoised refits stay exact.
//!
//! **Determinism**: the randomness is [`trial_rng`]`(seed, number)` and a
//! Sobol design keyed by both; the fit is a fold over the history; every
//! sum runs in a fixed order. So the same history gives the same point,
//! bit for bit.
//!
//! **Cost**: `O(n³)` in the told trials for the factorisation, plus the
//! amortised refits. At most [`MAX_POINTS`] told trials enter the model
//! (the best and the most recent), which bounds an ask's cost on a long
//! study; `auto` picks GP only for the small budgets where it wins.
//!
//! **Conditional parameters** sit at the centre of their coordinate while
//! inactive (see [`unit_of_params`](crate::sampling::unit_of_params)), so
//! the trials that lack one agree on it and the kernel compares them by
//! the parameters they have.

pub mod acquisition;
pub mod hyper;
pub mod kernel;
pub mod posterior;

use super::memo::Memo;
use super::{mix, sobol, History};
use crate::sampling::trial_rng;
use acquisition::{Acquisition, Search};
use flotilla_messages::solver::{StudyConfig, GP_N_CANDIDATES, GP_N_STARTUP_TRIALS};
use hyper::{kernel_of, moments, standardise, Refits};
use kernel::Dim;
use posterior::Posterior;
use std::sync::{Arc, LazyLock};

/// The most told trials that enter the model: the [`KEEP_BEST`] best and
/// the most recent others. An ask costs `O(n³)` in them, and what a long
/// study needs to know is where it is good and where it went lately.
pub const MAX_POINTS: usize = 300;

/// How many of the best told trials stay in a capped model.
pub const KEEP_BEST: usize = 100;

/// How many of the best told trials seed local candidates.
const INCUMBENTS: usize = 5;

/// GP's knobs, read from a config's `strategy_params`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Told trials needed before the GP models anything; the start-up
    /// design before.
    pub n_startup_trials: u64,
    /// How hard the acquisition search looks.
    pub search: Search,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            n_startup_trials: GP_N_STARTUP_TRIALS,
            search: Search {
                candidates: GP_N_CANDIDATES as usize,
                local: 8,
                refine: 2,
                steps: 12,
            },
        }
    }
}

impl Settings {
    /// The settings of `config`: its `strategy_params` over the defaults.
    pub fn of(config: &StudyConfig) -> Self {
        Settings::default().over(config)
    }

    /// These settings with `config`'s `strategy_params` over them.
    pub fn over(self, config: &StudyConfig) -> Self {
        let knob = |key: &str| config.strategy_params.get(key).copied();
        let mut settings = self;
        if let Some(v) = knob("n_startup_trials") {
            settings.n_startup_trials = v as u64;
        }
        if let Some(v) = knob("n_candidates") {
            settings.search.candidates = v as usize;
        }
        settings
    }

    /// A key that tells these settings apart (for the memo).
    fn fingerprint(&self) -> u64 {
        mix(self.n_startup_trials ^ mix(self.search.candidates as u64))
    }
}

/// The refits of the studies asked lately.
static MEMO: LazyLock<Memo<Refits>> = LazyLock::new(Memo::default);

/// Trial `number`'s point in `[0, 1)^d` under `settings` given the study's
/// `history`.
pub fn point(
    config: &StudyConfig,
    settings: &Settings,
    number: u64,
    history: &History,
) -> Vec<f64> {
    let d = config.bounds.len();
    let told = (0..history.len())
        .filter(|&i| history.value(i).is_some())
        .count();
    if (told as u64) < settings.n_startup_trials.max(2) {
        return sobol::point(config.seed, number, d);
    }
    let dims = Arc::new(kernel::dims(config));
    let key = mix(config.seed ^ mix(settings.fingerprint() ^ dims_fingerprint(&dims)));
    let start = || Refits::start(dims.clone(), settings.n_startup_trials as usize);
    let theta = MEMO.fold(key, d, history, start).theta;
    let kernel = kernel_of(&theta);
    model_point(config, settings, number, history, &dims, &kernel)
        .unwrap_or_else(|| sobol::point(config.seed, number, d))
}

/// The told entries the model sees, in trial order (see [`MAX_POINTS`]).
fn modelled(history: &History) -> Vec<usize> {
    let told: Vec<usize> = (0..history.len())
        .filter(|&i| history.value(i).is_some())
        .collect();
    if told.len() <= MAX_POINTS {
        return told;
    }
    let value = |i: usize| history.value(i).unwrap_or(f64::INFINITY);
    let mut by_value = told.clone();
    by_value.sort_by(|&a, &b| value(a).total_cmp(&value(b)).then(a.cmp(&b)));
    let mut keep: Vec<usize> = by_value[..KEEP_BEST].to_vec();
    keep.sort_unstable();
    let recent = told.iter().rev().filter(|i| keep.binary_search(i).is_err());
    let rest: Vec<usize> = recent.take(MAX_POINTS - KEEP_BEST).copied().collect();
    keep.extend(rest);
    keep.sort_unstable();
    keep
}

/// A key for the kernel's view of the space.
fn dims_fingerprint(dims: &[Dim]) -> u64 {
    dims.iter().fold(mix(dims.len() as u64), |h, dim| {
        mix(h ^ match dim {
            Dim::Numeric => 0,
            Dim::Categorical(k) => *k as u64 + 1,
        })
    })
}

/// The acquisition's pick under `kernel`; `None` if the model cannot be
/// conditioned (the caller explores instead).
fn model_point(
    config: &StudyConfig,
    settings: &Settings,
    number: u64,
    history: &History,
    dims: &[Dim],
    kernel: &kernel::Kernel,
) -> Option<Vec<f64>> {
    let first = history.len().saturating_sub(MAX_POINTS);
    let chosen = modelled(history);
    let points: Vec<f64> = chosen
        .iter()
        .flat_map(|&i| history.point(i).to_vec())
        .collect();
    let values: Vec<f64> = chosen.iter().filter_map(|&i| history.value(i)).collect();
    let y = standardise(&values);
    let told = Posterior::new(dims, kernel, points.clone(), &y)?;
    let margins: Vec<f64> = chosen.iter().filter_map(|&i| history.margin(i)).collect();
    let margin_post = if history.is_constrained() {
        let (mean, sd) = moments(&margins);
        let scaled: Vec<f64> = margins.iter().map(|c| (c - mean) / sd).collect();
        Some((
            Posterior::new(dims, kernel, points.clone(), &scaled)?,
            -mean / sd,
        ))
    } else {
        None
    };
    let constraint = margin_post.as_ref().map(|(post, at)| (post, *at));
    let feasible = |k: &usize| history.violation(chosen[*k]) <= 0.0;
    let pending: Vec<f64> = (first..history.len())
        .filter(|&i| history.value(i).is_none())
        .flat_map(|i| history.point(i).to_vec())
        .collect();
    let best = (0..y.len()).filter(feasible).map(|k| y[k]).reduce(f64::min);
    // Incumbents: the best feasible trials first.
    let mut order: Vec<usize> = (0..y.len()).collect();
    order.sort_by(|&a, &b| {
        (!feasible(&a))
            .cmp(&!feasible(&b))
            .then(y[a].total_cmp(&y[b]))
            .then(a.cmp(&b))
    });
    let d = dims.len();
    let incumbents: Vec<&[f64]> = order
        .iter()
        .take(INCUMBENTS)
        .map(|&i| &points[i * d..(i + 1) * d])
        .collect();
    let mut rng = trial_rng(config.seed, number);
    let at = (config.seed, number);
    if pending.is_empty() {
        let acquisition = Acquisition {
            post: &told,
            best,
            constraint,
        };
        return Some(acquisition::next_point(
            &acquisition,
            dims,
            &incumbents,
            &settings.search,
            at,
            &mut rng,
        ));
    }
    // Kriging believer: the running trials at the model's mean.
    let believed: Vec<f64> = told
        .predict_many(&pending)
        .into_iter()
        .map(|(m, _)| m)
        .collect();
    let all_points: Vec<f64> = points.iter().chain(&pending).copied().collect();
    let all_values: Vec<f64> = y.iter().chain(&believed).copied().collect();
    let post = Posterior::new(dims, kernel, all_points, &all_values)?;
    let acquisition = Acquisition {
        post: &post,
        best,
        constraint,
    };
    Some(acquisition::next_point(
        &acquisition,
        dims,
        &incumbents,
        &settings.search,
        at,
        &mut rng,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samplers::memo::Fold as _;
    use crate::samplers::testing::{
        assert_replays_exactly, best_of, branin_space, config, distinct_in_batch, run_unit,
        unit_config,
    };
    use flotilla_messages::solver::Sampler;

    fn bowl(x: &[f64]) -> f64 {
        x.iter()
            .enumerate()
            .map(|(i, v)| (v - 0.2 - 0.1 * i as f64).powi(2))
            .sum()
    }

    #[test]
    fn it_finds_the_bottom_of_a_bowl_quickly() {
        let study = unit_config(Sampler::Gp, 3, 40, 3, &[]);
        let (_, values) = run_unit(&study, 30, bowl);
        let best = best_of(&values);
        assert!(best < 1e-3, "{best}");
    }

    #[test]
    fn the_memo_gives_exactly_the_fold_from_scratch() {
        let study = unit_config(Sampler::Gp, 4, 100, 2, &[]);
        let (points, mut values) = run_unit(&study, 40, bowl);
        values[23] = None;
        values[37] = None;
        let dims = Arc::new(kernel::dims(&study));
        let start = || Refits::start(dims.clone(), 10);
        let history = History::new(2, &points, &values);
        let mut scratch = start();
        scratch.advance(&history, &mut |_: &Refits| {});
        let memo = Memo::default();
        memo.fold(1, 2, &History::new(2, &points[..60], &values[..30]), start);
        assert_eq!(memo.fold(1, 2, &history, start).theta, scratch.theta);
        values[23] = Some(0.25);
        let history = History::new(2, &points, &values);
        let mut scratch = start();
        scratch.advance(&history, &mut |_: &Refits| {});
        assert_eq!(memo.fold(1, 2, &history, start).theta, scratch.theta);
    }

    #[test]
    fn a_gp_study_replays_bit_for_bit_with_tells_out_of_order() {
        let config = config(Sampler::Gp, 5, 30, &branin_space(), &[]);
        assert_replays_exactly(config);
    }

    #[test]
    fn a_batch_gets_distinct_points() {
        let study = unit_config(Sampler::Gp, 6, 100, 3, &[]);
        let (points, values) = run_unit(&study, 20, bowl);
        assert_eq!(distinct_in_batch(&study, &points, &values, 21..=24), 4);
    }

    #[test]
    fn categorical_coordinates_land_on_a_choice() {
        use crate::samplers::testing::bound;
        use flotilla_messages::solver::{Bound, ParamValue};
        let choice =
            Bound::categorical(["a", "b", "c"].map(|c| ParamValue::Text(c.into())).to_vec());
        let space = vec![("c", choice), ("x", bound(0.0, 1.0))];
        let study = config(Sampler::Gp, 7, 40, &space, &[]);
        let (points, _) = run_unit(&study, 25, |p| {
            p[1] + if p[0] < 1.0 / 3.0 { 0.0 } else { 1.0 }
        });
        for p in points.chunks(2).skip(10) {
            let cell = p[0] * 3.0;
            assert!((cell - cell.floor() - 0.5).abs() < 1e-9, "{p:?}");
        }
    }
}
