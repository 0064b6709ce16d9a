//! The `auto` sampler: picks TPE or CMA-ES from the search space's shape.
//!
//! The rule is read off the solver benchmark (`flotilla bench solver
//! --suite auto`, tables in `docs/benchmarks.md`): Rosenbrock, Rastrigin,
//! Ackley and Levy in 2, 5, 10 and 20 dimensions, each on its standard
//! domain and shifted off centre (so a sampler that starts at the centre
//! gains nothing), plus Branin, Hartmann6 and the log-scale `lr_batch`;
//! TPE against CMA-ES at budgets 25 to 400, 20 seeds. Off centre, TPE has
//! the lower median regret on most functions up to about `60 d` trials in
//! 2 and 5 dimensions, and CMA-ES beyond; from 10 dimensions TPE's density
//! model thins out and CMA-ES leads from 100 trials (from 25, the smallest
//! budget measured, in 20 dimensions). So:
//!
//! | shape | picks |
//! |---|---|
//! | any categorical or conditional parameter | TPE (CMA-ES models neither) |
//! | `budget < cmaes_from(d)` | TPE, multivariate, 192 EI candidates |
//! | otherwise | CMA-ES with its defaults |
//!
//! with [`cmaes_from`]`(d)` = `60 d` below 8 dimensions, 100 from 8 to 15,
//! 25 from 16. TPE gets [`TPE_EI_CANDIDATES`] candidates: scoring more
//! candidates lowered the median regret by about 10% at budgets 50 and 100
//! in 2 to 6 dimensions (measured on seeds 100..139 and 200..239, not the
//! table's 0..19), and in the budgets where `auto` runs TPE the histories
//! are short, so it costs little.
//!
//! The pick is a pure function of the config, so every trial of a study
//! runs the same sampler and replays are exact. A config's
//! `strategy_params` apply to whichever sampler is picked.

use super::{cmaes, tpe, History};
use flotilla_messages::solver::{ParamKind, StudyConfig};

/// TPE's candidates per trial under `auto`.
pub const TPE_EI_CANDIDATES: usize = 192;

/// What `auto` looks at: the search space's shape, not its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchSpaceShape {
    /// How many parameters.
    pub dimensions: usize,
    /// How many trials the study hands out.
    pub budget: u64,
    /// Whether any parameter is categorical.
    pub has_categorical: bool,
    /// Whether any parameter is active only under a parent's values.
    pub has_conditional: bool,
}

impl SearchSpaceShape {
    /// The shape of `config`'s search space: a categorical choice or a
    /// condition sends the study to TPE, whose Parzen model copes with
    /// them where CMA-ES's Gaussian does not.
    pub fn of(config: &StudyConfig) -> Self {
        SearchSpaceShape {
            dimensions: config.bounds.len(),
            budget: config.budget,
            has_categorical: config
                .bounds
                .values()
                .any(|b| b.kind == ParamKind::Categorical),
            has_conditional: config.bounds.values().any(|b| b.condition.is_some()),
        }
    }
}

/// The sampler `auto` runs, with its settings (before the config's knobs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pick {
    /// TPE.
    Tpe(tpe::Settings),
    /// CMA-ES.
    Cmaes(cmaes::Settings),
}

/// The smallest budget at which `auto` runs CMA-ES in `dimensions`
/// dimensions (see the module docs for the measurements behind it).
pub fn cmaes_from(dimensions: usize) -> u64 {
    match dimensions {
        0..=7 => 60 * dimensions as u64,
        8..=15 => 100,
        _ => 25,
    }
}

/// The sampler for a search space of this shape.
pub fn pick(shape: &SearchSpaceShape) -> Pick {
    let model_free = !(shape.has_categorical || shape.has_conditional);
    if model_free && shape.budget >= cmaes_from(shape.dimensions) {
        Pick::Cmaes(cmaes::Settings::for_dimensions(shape.dimensions))
    } else {
        Pick::Tpe(tpe::Settings {
            n_ei_candidates: TPE_EI_CANDIDATES,
            ..tpe::Settings::default()
        })
    }
}

/// Trial `number`'s point in `[0, 1)^d` under the sampler `auto` picks for
/// `config`, with the config's knobs over the pick's settings.
pub fn point(config: &StudyConfig, number: u64, history: &History) -> Vec<f64> {
    if let Some(point) = super::multi_objective::auto_point(config, number, history) {
        return point;
    }
    match pick(&SearchSpaceShape::of(config)) {
        Pick::Tpe(s) => tpe::point(config, &s.over(config), number, history),
        Pick::Cmaes(s) => cmaes::point(config, &s.over(config), number, history),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samplers::testing::{self, assert_replays_exactly, branin_space, unit_config};
    use flotilla_messages::solver::Sampler;

    fn shape(dimensions: usize, budget: u64) -> SearchSpaceShape {
        SearchSpaceShape {
            dimensions,
            budget,
            has_categorical: false,
            has_conditional: false,
        }
    }

    fn is_cmaes(shape: SearchSpaceShape) -> bool {
        matches!(pick(&shape), Pick::Cmaes(_))
    }

    #[test]
    fn the_rule_follows_the_measured_thresholds() {
        for (d, tpe_at, cmaes_at) in [
            (2, 100, 120),
            (5, 200, 300),
            (6, 200, 400),
            (10, 50, 100),
            (20, 24, 25),
        ] {
            assert!(!is_cmaes(shape(d, tpe_at)), "{d} dims, budget {tpe_at}");
            assert!(is_cmaes(shape(d, cmaes_at)), "{d} dims, budget {cmaes_at}");
        }
        let Pick::Tpe(tpe) = pick(&shape(2, 50)) else {
            panic!("not tpe")
        };
        assert!(tpe.multivariate);
        assert_eq!(tpe.n_ei_candidates, TPE_EI_CANDIDATES);
        assert_eq!(
            pick(&shape(10, 1000)),
            Pick::Cmaes(cmaes::Settings::for_dimensions(10))
        );
    }

    #[test]
    fn categorical_or_conditional_spaces_get_tpe_at_any_budget() {
        for (has_categorical, has_conditional) in [(true, false), (false, true), (true, true)] {
            let shape = SearchSpaceShape {
                has_categorical,
                has_conditional,
                ..shape(20, 100_000)
            };
            assert!(!is_cmaes(shape));
        }
    }

    fn config(dimensions: usize, budget: u64, knobs: &[(&str, f64)]) -> StudyConfig {
        unit_config(Sampler::Auto, 3, budget, dimensions, knobs)
    }

    /// A history of `n` told trials with the sphere's values.
    fn history_data(dimensions: usize, n: u64) -> (Vec<f64>, Vec<Option<f64>>) {
        let mut points = Vec::new();
        let mut values = Vec::new();
        for number in 1..=n {
            let p = super::super::random::point(9, number, dimensions);
            values.push(Some(p.iter().map(|u| (u - 0.4) * (u - 0.4)).sum()));
            points.extend(p);
        }
        (points, values)
    }

    #[test]
    fn it_runs_the_picked_sampler_with_the_configs_knobs() {
        let (points, values) = history_data(3, 30);
        let history = History::new(3, &points, &values);
        let tpe = tpe::Settings {
            n_ei_candidates: TPE_EI_CANDIDATES,
            ..tpe::Settings::default()
        };
        let cases = [
            // 3 dims, budget 100: TPE with auto's candidates.
            (config(3, 100, &[]), Pick::Tpe(tpe)),
            // Knobs apply over the pick's settings.
            (
                config(3, 100, &[("n_ei_candidates", 5.0)]),
                Pick::Tpe(tpe::Settings {
                    n_ei_candidates: 5,
                    ..tpe
                }),
            ),
            // Budget 1000: CMA-ES.
            (
                config(3, 1000, &[("popsize", 7.0)]),
                Pick::Cmaes(cmaes::Settings {
                    popsize: 7,
                    ..cmaes::Settings::for_dimensions(3)
                }),
            ),
        ];
        for (config, expected) in cases {
            let direct = match expected {
                Pick::Tpe(s) => tpe::point(&config, &s, 31, &history),
                Pick::Cmaes(s) => cmaes::point(&config, &s, 31, &history),
            };
            assert_eq!(point(&config, 31, &history), direct, "{expected:?}");
        }
    }

    #[test]
    fn an_auto_study_replays_bit_for_bit_whichever_sampler_it_picks() {
        // 3 dimensions: TPE below 180 trials, CMA-ES from 180.
        for budget in [40, 200] {
            let config = testing::config(Sampler::Auto, 8, budget, &branin_space(), &[]);
            assert_replays_exactly(config);
        }
    }
}
