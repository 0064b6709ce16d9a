//! NSGA-II (Deb et al., 2002) as Optuna's `NSGAIISampler` runs it, for
//! studies of one or more objectives, with Deb's constrained dominance.
//!
//! Generations are read off the history, like CMA-ES's: the told entries,
//! in trial order, in chunks of `population_size`. Before the first chunk
//! is complete a trial gets a random point (Optuna's first generation comes
//! from its `RandomSampler`). After each complete chunk the parent
//! population is the elite of the previous parents and the chunk
//! ([`elite`]): whole fronts by constrained non-dominated rank, the last
//! front cut by crowding distance. A child:
//!
//! 1. with probability `crossover_prob` (0.9) takes each coordinate from
//!    one of two distinct parents, each the winner of a binary tournament
//!    (the first of two random members if it dominates the second, else the
//!    second, as Optuna's `_select_parent`): the second parent's with
//!    probability `swapping_prob` (0.5). This is *uniform crossover*,
//!    Optuna's default crossover (not SBX);
//! 2. otherwise copies a random parent;
//! 3. then resamples each coordinate uniformly with probability
//!    `mutation_prob` (default `1 / d`, Optuna's).
//!
//! Every draw comes from [`trial_rng`]`(seed, number)`, so a replay gives
//! the same child. The populations are folded from scratch on each ask: a
//! non-dominated sort of `2 · population_size` points per generation,
//! `O(n · population_size · m)` for `n` told trials.

use super::pareto::{constrained_dominates, constrained_ranks, crowding_distances};
use super::{random, History, BELOW_ONE};
use crate::sampling::trial_rng;
use flotilla_messages::solver::{
    StudyConfig, NSGA2_CROSSOVER_PROB, NSGA2_POPULATION_SIZE, NSGA2_SWAPPING_PROB,
};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// NSGA-II's knobs, read from a config's `strategy_params`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Trials per generation, and the parent population's size.
    pub population_size: usize,
    /// The chance a child is a crossover of two parents, not a copy.
    pub crossover_prob: f64,
    /// The chance uniform crossover takes a coordinate from the second
    /// parent.
    pub swapping_prob: f64,
    /// The chance each coordinate is resampled; `1 / d` when `None`.
    pub mutation_prob: Option<f64>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            population_size: NSGA2_POPULATION_SIZE as usize,
            crossover_prob: NSGA2_CROSSOVER_PROB,
            swapping_prob: NSGA2_SWAPPING_PROB,
            mutation_prob: None,
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
        Settings {
            population_size: knob("population_size")
                .map_or(self.population_size, |v| (v as usize).max(2)),
            crossover_prob: knob("crossover_prob").unwrap_or(self.crossover_prob),
            swapping_prob: knob("swapping_prob").unwrap_or(self.swapping_prob),
            mutation_prob: knob("mutation_prob").or(self.mutation_prob),
        }
    }
}

/// Trial `number`'s point in `[0, 1)^d` under `settings` given the study's
/// `history`.
pub fn point(
    config: &StudyConfig,
    settings: &Settings,
    number: u64,
    history: &History,
) -> Vec<f64> {
    let d = config.bounds.len();
    let parents = parent_population(history, settings.population_size);
    if parents.is_empty() {
        return random::point(config.seed, number, d);
    }
    let mut rng = trial_rng(config.seed, number);
    let mut child = if rng.random::<f64>() < settings.crossover_prob && parents.len() > 1 {
        let first = tournament(history, &parents, &mut rng);
        let rest: Vec<usize> = parents.iter().copied().filter(|&p| p != first).collect();
        let second = tournament(history, &rest, &mut rng);
        let (a, b) = (history.point(first), history.point(second));
        (0..d)
            .map(|j| {
                if rng.random::<f64>() < settings.swapping_prob {
                    b[j]
                } else {
                    a[j]
                }
            })
            .collect()
    } else {
        history
            .point(parents[rng.random_range(0..parents.len())])
            .to_vec()
    };
    let mutation_prob = settings.mutation_prob.unwrap_or(1.0 / d.max(1) as f64);
    for u in &mut child {
        if rng.random::<f64>() < mutation_prob {
            *u = rng.random::<f64>();
        }
        *u = u.clamp(0.0, BELOW_ONE);
    }
    child
}

/// The winner of a binary tournament among `members` (entries of
/// `history`): the first of two random picks if it dominates the second
/// (constrained), else the second.
fn tournament(history: &History, members: &[usize], rng: &mut ChaCha8Rng) -> usize {
    let a = members[rng.random_range(0..members.len())];
    let b = members[rng.random_range(0..members.len())];
    let key = |i: usize| (history.losses(i).unwrap_or(&[]), history.violation(i));
    if constrained_dominates(key(a), key(b)) {
        a
    } else {
        b
    }
}

/// The parent population after the last complete generation (entries of
/// `history`, in trial order); empty before the first one.
pub fn parent_population(history: &History, population_size: usize) -> Vec<usize> {
    let told: Vec<usize> = (0..history.len())
        .filter(|&i| history.value(i).is_some())
        .collect();
    let mut population: Vec<usize> = Vec::new();
    for generation in told.chunks_exact(population_size) {
        population.extend_from_slice(generation);
        population = elite(history, &population, population_size);
    }
    population
}

/// The best `size` of `candidates` (entries of `history`): whole fronts by
/// constrained non-dominated rank, then the last front's members by
/// crowding distance, largest first (ties to the earlier trial). Returned
/// in trial order.
pub fn elite(history: &History, candidates: &[usize], size: usize) -> Vec<usize> {
    if candidates.len() <= size {
        let mut all = candidates.to_vec();
        all.sort_unstable();
        return all;
    }
    let losses: Vec<&[f64]> = candidates
        .iter()
        .map(|&i| history.losses(i).unwrap_or(&[]))
        .collect();
    let violations: Vec<f64> = candidates.iter().map(|&i| history.violation(i)).collect();
    let ranks = constrained_ranks(&losses, &violations, size);
    let mut chosen: Vec<usize> = Vec::with_capacity(size);
    let mut rank = 0;
    while chosen.len() < size {
        let front: Vec<usize> = (0..candidates.len())
            .filter(|&k| ranks[k] == rank)
            .collect();
        if chosen.len() + front.len() <= size {
            chosen.extend(&front);
        } else {
            let points: Vec<&[f64]> = front.iter().map(|&k| losses[k]).collect();
            let distances = crowding_distances(&points);
            let mut order: Vec<usize> = (0..front.len()).collect();
            order.sort_by(|&a, &b| {
                distances[b]
                    .total_cmp(&distances[a])
                    .then(candidates[front[a]].cmp(&candidates[front[b]]))
            });
            chosen.extend(order[..size - chosen.len()].iter().map(|&o| front[o]));
        }
        rank += 1;
    }
    let mut elite: Vec<usize> = chosen.into_iter().map(|k| candidates[k]).collect();
    elite.sort_unstable();
    elite
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samplers::testing::unit_config;
    use flotilla_messages::solver::Sampler;

    /// A history of told 2-objective entries with these losses and
    /// violations, at points `(k / n, 0.5)`.
    struct Told {
        points: Vec<f64>,
        values: Vec<Option<f64>>,
        losses: Vec<f64>,
        violations: Vec<f64>,
    }

    impl Told {
        fn new(entries: &[([f64; 2], f64)]) -> Self {
            let n = entries.len() as f64;
            Told {
                points: (0..entries.len())
                    .flat_map(|k| [k as f64 / n, 0.5])
                    .collect(),
                values: entries.iter().map(|(l, _)| Some(l[0])).collect(),
                losses: entries.iter().flat_map(|(l, _)| *l).collect(),
                violations: entries.iter().map(|(_, v)| *v).collect(),
            }
        }

        fn history(&self) -> History<'_> {
            History::new(2, &self.points, &self.values)
                .with_objectives(2, &self.losses)
                .with_violations(&self.violations)
        }
    }

    #[test]
    fn the_elite_takes_whole_fronts_then_the_least_crowded() {
        let told = Told::new(&[
            ([0.0, 4.0], 0.0),
            ([1.0, 3.0], 0.0),
            ([1.1, 2.9], 0.0),
            ([4.0, 0.0], 0.0),
            ([5.0, 5.0], 0.0),
            ([0.0, 0.0], 1.0),
        ]);
        let history = told.history();
        let all: Vec<usize> = (0..6).collect();
        // Front {0, 1, 2, 3}; its extremes 0 and 3 are infinitely far, and
        // 2 (neighbours 1 and 3) is less crowded than 1.
        assert_eq!(elite(&history, &all, 3), [0, 2, 3]);
        // Then the dominated feasible 4, before the infeasible 5.
        assert_eq!(elite(&history, &all, 5), [0, 1, 2, 3, 4]);
        assert_eq!(elite(&history, &all, 9), all);
    }

    #[test]
    fn generations_are_chunks_of_told_entries() {
        let told = Told::new(&[
            ([3.0, 3.0], 0.0),
            ([2.0, 2.0], 0.0),
            ([1.0, 1.0], 0.0),
            ([0.0, 0.0], 0.0),
            ([9.0, 9.0], 0.0),
        ]);
        let history = told.history();
        assert_eq!(parent_population(&history, 6), Vec::<usize>::new());
        assert_eq!(parent_population(&history, 2), [2, 3]);
        assert_eq!(parent_population(&history, 1), [3]);
    }

    #[test]
    fn children_mix_their_parents_coordinates() {
        let config = unit_config(Sampler::Nsga2, 4, 100, 2, &[("mutation_prob", 0.0)]);
        let told = Told::new(&[([0.0, 1.0], 0.0), ([1.0, 0.0], 0.0)]);
        let history = told.history();
        let settings = Settings {
            population_size: 2,
            ..Settings::of(&config)
        };
        let parents: Vec<&[f64]> = (0..2).map(|i| history.point(i)).collect();
        for number in 3..40 {
            let child = point(&config, &settings, number, &history);
            for (j, u) in child.iter().enumerate() {
                assert!(parents.iter().any(|p| p[j] == *u), "{child:?}");
            }
        }
        // Before a whole generation is told: random points.
        let fresh = Settings::of(&config);
        assert_eq!(point(&config, &fresh, 3, &history), random::point(4, 3, 2));
    }

    #[test]
    fn knobs_come_from_strategy_params() {
        let config = unit_config(
            Sampler::Nsga2,
            1,
            10,
            3,
            &[
                ("population_size", 8.0),
                ("crossover_prob", 0.5),
                ("mutation_prob", 0.2),
            ],
        );
        let s = Settings::of(&config);
        assert_eq!(
            (
                s.population_size,
                s.crossover_prob,
                s.swapping_prob,
                s.mutation_prob
            ),
            (8, 0.5, NSGA2_SWAPPING_PROB, Some(0.2))
        );
    }
}
