//! The samplers: where in the unit cube a study's next trial goes.
//!
//! Every sampler is a pure function of the study config, the trial number
//! and, for the model-based ones, the study's [`History`] (the unit points
//! and values of the trials handed out before): it returns one coordinate in
//! `[0, 1)` per bound, in the bounds' name order, and [`sample_params`](super::sampling::sample_params) maps
//! them onto the bounds through
//! [`from_unit`](super::sampling::from_unit), which is where log scale is
//! honoured — for every sampler alike.
//!
//! Depending on nothing but `(config, number)` (and the recorded history,
//! which is itself a fold of the events) is what makes a study exact to
//! replay and safe to ask in parallel: a replay always gets the same point
//! for the same trial, and the random part of every trial comes from a
//! generator keyed by `(seed, number)`, so different trials get different
//! points.
//!
//! - [`random`]: independent uniform points (the default; ArqonHPO configs
//!   get it).
//! - [`sobol`]: a scrambled Sobol sequence that covers the space evenly at
//!   small budgets.
//! - [`grid`]: a full-factorial grid with at least `budget` points, visited
//!   in a seeded shuffled order.
//! - [`tpe`]: the Tree-structured Parzen Estimator (multivariate by default,
//!   as in Optuna 5), on the Parzen estimators of [`parzen`].
//! - [`cmaes`]: CMA-ES, its state a fold of the history.
//! - [`gp`]: Gaussian-process Bayesian optimisation (Matérn-5/2, log EI).
//! - [`nsga2`]: NSGA-II, the genetic algorithm for several objectives.
//! - [`auto`]: GP, TPE or CMA-ES by the search space's shape and budget,
//!   under the rule revision the study recorded; multi-objective TPE for
//!   several objectives.
//!
//! random, sobol and grid ignore the history; tpe, cmaes, gp, nsga2 and auto read
//! it ([`Sampler::reads_history`]). [`pareto`] holds the dominance,
//! ranking and hypervolume arithmetic of multi-objective studies, [`normal`] holds the normal-distribution
//! arithmetic the model-based ones share, [`memo`] the cache of the folds
//! that cmaes and gp resume.

pub mod auto;
pub mod cmaes;
pub mod gp;
pub mod grid;
pub mod memo;
pub mod multi_objective;
pub mod normal;
pub mod nsga2;
pub mod pareto;
pub mod parzen;
pub mod random;
pub mod sobol;
#[cfg(test)]
pub(crate) mod testing;
pub mod tpe;

use flotilla_messages::solver::{Sampler, StudyConfig};

/// A read-only view of a study's trials for the samplers, in the unit cube.
///
/// Trial `k` (1-based) is entry `k - 1`: its unit point (one coordinate per
/// bound, in the bounds' name order) and its value once told (minimised;
/// `None` while pending). Points handed out earlier in the same `ask` are
/// added with [`History::push_pending`], so a batch sees its own members as
/// running trials.
///
/// A constrained study adds each trial's total violation
/// ([`History::with_violations`]), a multi-objective one each trial's
/// losses ([`History::with_objectives`]).
#[derive(Debug, Clone, Default)]
pub struct History<'a> {
    dimensions: usize,
    points: &'a [f64],
    values: &'a [Option<f64>],
    violations: &'a [f64],
    margins: &'a [f64],
    objectives: usize,
    losses: &'a [f64],
    batch: Vec<f64>,
}

impl<'a> History<'a> {
    /// A history of `values.len()` trials whose unit points lie flat in
    /// `points`, `dimensions` coordinates each.
    pub fn new(dimensions: usize, points: &'a [f64], values: &'a [Option<f64>]) -> Self {
        assert_eq!(
            points.len(),
            dimensions * values.len(),
            "one point per value"
        );
        History {
            dimensions,
            points,
            values,
            violations: &[],
            margins: &[],
            objectives: 1,
            losses: &[],
            batch: Vec::new(),
        }
    }

    /// The same history with each trial's total constraint violation (0
    /// when feasible or pending), trial `k` at `k - 1`.
    pub fn with_violations(self, violations: &'a [f64]) -> Self {
        assert_eq!(
            violations.len(),
            self.values.len(),
            "one violation per value"
        );
        History { violations, ..self }
    }

    /// The same history with each trial's constraint margin: its largest
    /// constraint value (≤ 0 when feasible; anything while pending), trial
    /// `k` at `k - 1`. Only for a study with constraints.
    pub fn with_margins(self, margins: &'a [f64]) -> Self {
        assert_eq!(margins.len(), self.values.len(), "one margin per value");
        History { margins, ..self }
    }

    /// The same history with `objectives` losses per trial, flat, trial
    /// `k` at `(k - 1) · objectives` (anything while pending).
    pub fn with_objectives(self, objectives: usize, losses: &'a [f64]) -> Self {
        assert_eq!(
            losses.len(),
            objectives * self.values.len(),
            "losses per value"
        );
        History {
            objectives,
            losses,
            ..self
        }
    }

    /// Adds a trial handed out but not told yet (the next in number order).
    pub fn push_pending(&mut self, point: &[f64]) {
        if self.is_empty() {
            self.dimensions = point.len();
        }
        assert_eq!(point.len(), self.dimensions, "point of the wrong dimension");
        self.batch.extend_from_slice(point);
    }

    /// How many trials it holds, told or pending.
    pub fn len(&self) -> usize {
        self.values.len() + self.batch.len() / self.dimensions.max(1)
    }

    /// Whether it holds no trial.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The unit point of entry `index` (trial `index + 1`).
    pub fn point(&self, index: usize) -> &[f64] {
        let d = self.dimensions;
        match index.checked_sub(self.values.len()) {
            None => &self.points[index * d..(index + 1) * d],
            Some(i) => &self.batch[i * d..(i + 1) * d],
        }
    }

    /// The value of entry `index`, `None` while it is pending. In a
    /// multi-objective study, the first objective's loss.
    pub fn value(&self, index: usize) -> Option<f64> {
        self.values.get(index).copied().flatten()
    }

    /// How many objectives each told entry has.
    pub fn objectives(&self) -> usize {
        self.objectives
    }

    /// The losses of entry `index` (one per objective), `None` while it is
    /// pending.
    pub fn losses(&self, index: usize) -> Option<&[f64]> {
        let told = self.values.get(index)?.as_ref()?;
        if self.losses.is_empty() {
            return Some(std::slice::from_ref(told));
        }
        let m = self.objectives;
        Some(&self.losses[index * m..(index + 1) * m])
    }

    /// The constraint margin of told entry `index` (its largest constraint
    /// value); `None` while pending or without constraints.
    pub fn margin(&self, index: usize) -> Option<f64> {
        self.value(index)?;
        self.margins.get(index).copied()
    }

    /// Whether the study's results carry constraints.
    pub fn is_constrained(&self) -> bool {
        !self.margins.is_empty()
    }

    /// The total constraint violation of entry `index`: 0 when it is
    /// feasible, pending or the study has no constraints.
    pub fn violation(&self, index: usize) -> f64 {
        self.violations.get(index).copied().unwrap_or(0.0)
    }
}

/// The largest `f64` below 1: where a coordinate is clamped to stay in
/// `[0, 1)`.
pub(crate) const BELOW_ONE: f64 = 1.0 - f64::EPSILON / 2.0;

/// Trial `number`'s point in the unit cube under the config's sampler: one
/// coordinate in `[0, 1)` per bound, in the bounds' name order. Only the
/// model-based samplers (tpe, cmaes, auto) look at `history`.
pub fn unit_point(config: &StudyConfig, number: u64, history: &History) -> Vec<f64> {
    let dimensions = config.bounds.len();
    match config.sampler {
        Sampler::Tpe => tpe::point(config, &tpe::Settings::of(config), number, history),
        Sampler::Cmaes => cmaes::point(config, &cmaes::Settings::of(config), number, history),
        Sampler::Gp => gp::point(config, &gp::Settings::of(config), number, history),
        Sampler::Nsga2 => nsga2::point(config, &nsga2::Settings::of(config), number, history),
        Sampler::Auto => auto::point(config, number, history),
        Sampler::Random => random::point(config.seed, number, dimensions),
        Sampler::Sobol => sobol::point(config.seed, number, dimensions),
        Sampler::Grid => {
            grid::Grid::for_budget(config.budget, dimensions).point(config.seed, number)
        }
    }
}

/// SplitMix64's finaliser: a bijective mix of 64 bits, for deriving keys.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A 64-bit binary fraction as an `f64` in `[0, 1)`: its top 53 bits,
/// exactly.
pub(crate) fn to_unit(x: u64) -> f64 {
    (x >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config(sampler: Sampler, seed: u64, budget: u64, dimensions: usize) -> StudyConfig {
        super::testing::unit_config(sampler, seed, budget, dimensions, &[])
    }

    #[test]
    fn to_unit_is_exact_and_below_one() {
        assert_eq!(to_unit(0), 0.0);
        assert_eq!(to_unit(1 << 63), 0.5);
        assert!(to_unit(u64::MAX) < 1.0);
    }

    #[test]
    fn dispatches_on_the_sampler() {
        let random = config(Sampler::Random, 3, 20, 4);
        assert_eq!(
            unit_point(&random, 5, &History::default()),
            random::point(3, 5, 4)
        );
        let sobol = config(Sampler::Sobol, 3, 20, 4);
        assert_eq!(
            unit_point(&sobol, 5, &History::default()),
            sobol::point(3, 5, 4)
        );
        let grid = config(Sampler::Grid, 3, 20, 4);
        assert_eq!(
            unit_point(&grid, 5, &History::default()),
            grid::Grid::for_budget(20, 4).point(3, 5)
        );
    }

    fn sampler() -> impl Strategy<Value = Sampler> {
        proptest::sample::select(Sampler::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn every_sampler_stays_in_the_cube_and_is_deterministic(
            sampler in sampler(), seed in any::<u64>(), budget in 1u64..100_000,
            dimensions in 1usize..24, number in any::<u64>()
        ) {
            let config = config(sampler, seed, budget, dimensions);
            let point = unit_point(&config, number, &History::default());
            prop_assert_eq!(point.len(), dimensions);
            prop_assert!(point.iter().all(|u| (0.0..1.0).contains(u)), "{:?}", point);
            let bits = |p: &[f64]| p.iter().map(|u| u.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&point), bits(&unit_point(&config, number, &History::default())));
        }

        #[test]
        fn every_sampler_gives_distinct_points_within_the_budget(
            sampler in sampler(), seed in any::<u64>(), budget in 1u64..300, dimensions in 1usize..6
        ) {
            let config = config(sampler, seed, budget, dimensions);
            let mut points: Vec<Vec<u64>> = (1..=budget)
                .map(|n| unit_point(&config, n, &History::default()).iter().map(|u| u.to_bits()).collect())
                .collect();
            points.sort();
            points.dedup();
            prop_assert_eq!(points.len() as u64, budget);
        }
    }
}
