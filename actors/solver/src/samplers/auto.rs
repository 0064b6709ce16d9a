//! The `auto` sampler: picks GP, TPE or CMA-ES from the search space's
//! shape, by a rule read off the solver benchmark.
//!
//! # Rule revisions
//!
//! A study records the revision of the rule it runs under (`auto_rule` in
//! its config, stamped by `create_study`), so a better rule never changes
//! how a recorded study continues; a config recorded before revisions were
//! recorded runs revision 1.
//!
//! **Revision 2** (today's), from `flotilla bench solver --suite auto
//! --samplers gp,tpe,cmaes --budgets 25,50,100,200,400 --seeds 10`: every
//! function of the suite (Rosenbrock, Rastrigin, Ackley and Levy in 2, 5,
//! 10 and 20 dimensions, Branin, Hartmann6 and the log-scale `lr_batch`)
//! both on its standard domain and shifted off centre, so that no sampler
//! wins because the optimum sits where it starts. Up to 200 trials GP has
//! the lowest median regret in 83 of the 152 cells (TPE 17, CMA-ES 52), and
//! in 51 of the 76 off-centre ones (TPE 15, CMA-ES 10): most of CMA-ES's
//! wins there are centred boxes, where it starts at the optimum. At 400
//! trials CMA-ES leads (28 of 38 cells, GP 7). GP's weak spot is 5-D off
//! centre from 50 trials (TPE leads 9 of 16 cells; over the eight 5-D
//! functions GP's median regret at 100 trials is 1.6x TPE's, geometric
//! mean); a rule for 5-D alone would be fitted to four functions, and GP
//! leads Hartmann6 next door by 300x, so the rule does not split there.
//!
//! | shape | revision 2 picks |
//! |---|---|
//! | any categorical or conditional parameter | TPE, as revision 1 |
//! | at most [`GP_MAX_DIMENSIONS`], budget at most [`GP_MAX_BUDGET`] | GP with its defaults |
//! | at most [`GP_MAX_DIMENSIONS`], larger budgets | CMA-ES with its defaults |
//! | more parameters | as revision 1 |
//!
//! **Revision 1**, from the same suite without GP (and without the shifted
//! Branin, Hartmann6 and `lr_batch`), TPE against CMA-ES at budgets 25 to
//! 400, 20 seeds: off centre TPE has the lower median regret on most
//! functions up to about `60 d` trials in 2 and 5 dimensions, and CMA-ES
//! beyond; from 10 dimensions TPE's density model thins out and CMA-ES
//! leads from 100 trials (from 25 in 20 dimensions). So:
//!
//! | shape | revision 1 picks |
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
//! The pick is a pure function of the recorded config, so every trial of a
//! study runs the same sampler and replays are exact. A config's
//! `strategy_params` apply to whichever sampler is picked.

use super::{cmaes, gp, tpe, History};
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
    /// GP-based Bayesian optimisation.
    Gp(gp::Settings),
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

/// The largest budget at which rule 2 runs GP: beyond it CMA-ES leads in
/// every dimension measured, and GP's `O(n³)` model costs the most.
pub const GP_MAX_BUDGET: u64 = 200;

/// The most parameters for which rule 2 runs GP: the largest dimension
/// measured (beyond it, rule 1's pick).
pub const GP_MAX_DIMENSIONS: usize = 20;

/// The sampler for a search space of this shape under revision `rule` of
/// the rule (1: TPE or CMA-ES; 2: also GP).
pub fn pick(rule: u32, shape: &SearchSpaceShape) -> Pick {
    let model_free = !(shape.has_categorical || shape.has_conditional);
    let (d, budget) = (shape.dimensions, shape.budget);
    let cmaes = Pick::Cmaes(cmaes::Settings::for_dimensions(d));
    if model_free && rule >= 2 && d <= GP_MAX_DIMENSIONS {
        if budget <= GP_MAX_BUDGET {
            Pick::Gp(gp::Settings::default())
        } else {
            cmaes
        }
    } else if model_free && budget >= cmaes_from(d) {
        cmaes
    } else {
        Pick::Tpe(tpe::Settings {
            n_ei_candidates: TPE_EI_CANDIDATES,
            ..tpe::Settings::default()
        })
    }
}

/// Trial `number`'s point in `[0, 1)^d` under the sampler `auto` picks for
/// `config` (by the rule revision it records), with the config's knobs
/// over the pick's settings.
pub fn point(config: &StudyConfig, number: u64, history: &History) -> Vec<f64> {
    if let Some(point) = super::multi_objective::auto_point(config, number, history) {
        return point;
    }
    match pick(config.auto_rule(), &SearchSpaceShape::of(config)) {
        Pick::Tpe(s) => tpe::point(config, &s.over(config), number, history),
        Pick::Cmaes(s) => cmaes::point(config, &s.over(config), number, history),
        Pick::Gp(s) => gp::point(config, &s.over(config), number, history),
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
        matches!(pick(1, &shape), Pick::Cmaes(_))
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
        let Pick::Tpe(tpe) = pick(1, &shape(2, 50)) else {
            panic!("not tpe")
        };
        assert!(tpe.multivariate);
        assert_eq!(tpe.n_ei_candidates, TPE_EI_CANDIDATES);
        assert_eq!(
            pick(1, &shape(10, 1000)),
            Pick::Cmaes(cmaes::Settings::for_dimensions(10))
        );
    }

    #[test]
    fn categorical_or_conditional_spaces_get_tpe_at_any_budget() {
        for (has_categorical, has_conditional) in [(true, false), (false, true), (true, true)] {
            for rule in [1, 2] {
                for budget in [50, 100_000] {
                    let shape = SearchSpaceShape {
                        has_categorical,
                        has_conditional,
                        ..shape(20, budget)
                    };
                    assert!(matches!(pick(rule, &shape), Pick::Tpe(_)), "{shape:?}");
                }
            }
        }
    }

    #[test]
    fn rule_two_runs_gp_up_to_its_budget_then_cmaes() {
        for d in [1, 2, 5, 10, GP_MAX_DIMENSIONS] {
            for budget in [1, 25, GP_MAX_BUDGET] {
                assert_eq!(
                    pick(2, &shape(d, budget)),
                    Pick::Gp(gp::Settings::default())
                );
            }
            for budget in [GP_MAX_BUDGET + 1, 10_000] {
                let cmaes = Pick::Cmaes(cmaes::Settings::for_dimensions(d));
                assert_eq!(
                    pick(2, &shape(d, budget)),
                    cmaes,
                    "{d} dims, budget {budget}"
                );
            }
        }
        // Beyond the dimensions measured, rule 1's pick.
        for budget in [10, 100, 10_000] {
            let wide = shape(GP_MAX_DIMENSIONS + 1, budget);
            assert_eq!(pick(2, &wide), pick(1, &wide));
        }
    }

    /// A config recorded under rule 1.
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
        let gp_config = |budget, knobs| StudyConfig {
            auto_rule: Some(2),
            ..config(3, budget, knobs)
        };
        let gp_cases = [
            (gp_config(100, &[]), Pick::Gp(gp::Settings::default())),
            (
                gp_config(100, &[("n_candidates", 9.0)]),
                Pick::Gp(gp::Settings::default().over(&gp_config(1, &[("n_candidates", 9.0)]))),
            ),
        ];
        for (config, expected) in cases.into_iter().chain(gp_cases) {
            let direct = match expected {
                Pick::Tpe(s) => tpe::point(&config, &s, 31, &history),
                Pick::Cmaes(s) => cmaes::point(&config, &s, 31, &history),
                Pick::Gp(s) => gp::point(&config, &s, 31, &history),
            };
            assert_eq!(point(&config, 31, &history), direct, "{expected:?}");
        }
    }

    #[test]
    fn an_auto_study_replays_bit_for_bit_whichever_sampler_it_picks() {
        // Rule 1 in 3 dimensions: TPE below 180 trials, CMA-ES from 180;
        // rule 2: GP up to 200.
        for (rule, budget) in [(1, 40), (1, 200), (2, 30)] {
            let config = StudyConfig {
                auto_rule: Some(rule),
                ..testing::config(Sampler::Auto, 8, budget, &branin_space(), &[])
            };
            assert_replays_exactly(config);
        }
    }
}
