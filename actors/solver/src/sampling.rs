//! From the unit cube to a study's bounds.
//!
//! A sampler ([`samplers`](super::samplers)) picks trial `number`'s point in
//! `[0, 1)^d`, one coordinate per bound in the bounds' name order, as a pure
//! function of the config, the number and (for TPE) the recorded history;
//! `Bound::value_at` maps each coordinate onto its bound and
//! `Bound::unit_of` back. Keying by the trial number (not by history
//! length or a clock) makes a trial's parameters a pure function of the config and its
//! number: a replay, a retry, or two asks without a tell in between can
//! never produce the same candidate twice or different candidates for the
//! same trial.
//!
//! The mapping itself is the bound's (`Bound::value_at`): linear and
//! periodic scales are uniform on `[min, max]`, log scale is uniform in
//! `ln x` (so the median sits at the geometric mean), ints and steps round,
//! a categorical takes the choice whose slice of `[0, 1)` holds the
//! coordinate. Because the mapping is shared, every sampler honours log
//! scale and every parameter type the same way.

use super::samplers::{unit_point, History};
use flotilla_messages::solver::search_space::is_active;
#[cfg(test)]
use flotilla_messages::solver::Bound;
use flotilla_messages::solver::{Params, StudyConfig};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The generator for trial `number` of a study seeded with `seed`.
///
/// The ChaCha key is `seed` and `number` side by side (little endian), so
/// distinct pairs get distinct, independent streams.
pub fn trial_rng(seed: u64, number: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&number.to_le_bytes());
    ChaCha8Rng::from_seed(key)
}

/// The parameters of trial `number` under the config's sampler, given the
/// trials before it: one value per active parameter, inside its bound.
pub fn sample_params(config: &StudyConfig, number: u64, history: &History) -> Params {
    params_at(config, &unit_point(config, number, history))
}

/// The parameters at `point` (one coordinate per bound, in name order):
/// each bound's value there, leaving out the conditional parameters whose
/// condition does not hold.
pub fn params_at(config: &StudyConfig, point: &[f64]) -> Params {
    let all: Params = config
        .bounds
        .iter()
        .zip(point)
        .map(|((name, bound), &u)| (name.clone(), bound.value_at(u)))
        .collect();
    if config.bounds.values().all(|b| b.condition.is_none()) {
        return all;
    }
    let value_of = |name: &str| all.get(name).cloned();
    all.iter()
        .filter(|(name, _)| is_active(&config.bounds, name, &value_of))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

/// Maps `u` in `[0, 1)` onto a numeric `bound` as a real number, honouring
/// its scale, rounding and step; `NaN` for a categorical.
#[cfg(test)]
pub fn from_unit(u: f64, bound: &Bound) -> f64 {
    bound.value_at(u).as_f64().unwrap_or(f64::NAN)
}

/// A trial's parameters as a unit point, one coordinate per bound in the
/// bounds' name order. An inactive parameter (absent from `params`) sits at
/// the centre, 0.5, where it neither attracts nor repels a model.
pub fn unit_of_params(config: &StudyConfig, params: &Params) -> Vec<f64> {
    config
        .bounds
        .iter()
        .map(|(name, bound)| params.get(name).map_or(0.5, |v| bound.unit_of(v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_messages::solver::{Sampler, Scale};
    use proptest::prelude::*;
    use rand::Rng;
    use std::collections::BTreeMap;

    fn config(seed: u64, bounds: &[(&str, f64, f64, Scale)]) -> StudyConfig {
        let bounds = bounds
            .iter()
            .map(|&(name, min, max, scale)| (name.to_string(), Bound::new(min, max, scale)))
            .collect();
        StudyConfig {
            seed,
            budget: 10,
            bounds,
            probe_ratio: None,
            strategy_params: BTreeMap::new(),
            sampler: Sampler::Random,
            max_retries: 0,
            ..Default::default()
        }
    }

    fn two_params(seed: u64) -> StudyConfig {
        config(
            seed,
            &[
                ("lr", 1e-5, 1e-1, Scale::Log),
                ("momentum", 0.8, 0.99, Scale::Linear),
            ],
        )
    }

    #[test]
    fn same_seed_and_number_give_identical_params() {
        let a = sample_params(&two_params(42), 3, &History::default());
        let b = sample_params(&two_params(42), 3, &History::default());
        let bits = |p: &Params| {
            p.values()
                .map(|v| v.as_f64().unwrap().to_bits())
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(&a), bits(&b));
    }

    #[test]
    fn different_numbers_or_seeds_give_different_params() {
        let first = sample_params(&two_params(42), 1, &History::default());
        assert_ne!(
            first,
            sample_params(&two_params(42), 2, &History::default())
        );
        assert_ne!(
            first,
            sample_params(&two_params(43), 1, &History::default())
        );
    }

    #[test]
    fn every_trial_of_a_study_is_distinct() {
        let config = two_params(5);
        let mut seen: Vec<Vec<u64>> = (1..=2000)
            .map(|n| {
                sample_params(&config, n, &History::default())
                    .values()
                    .map(|v| v.as_f64().unwrap().to_bits())
                    .collect()
            })
            .collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 2000);
    }

    #[test]
    fn seed_and_number_are_not_interchangeable() {
        assert_ne!(
            trial_rng(1, 2).random::<u64>(),
            trial_rng(2, 1).random::<u64>()
        );
    }

    #[test]
    fn log_scale_is_log_uniform() {
        let config = config(9, &[("lr", 1e-6, 1.0, Scale::Log)]);
        let mut values: Vec<f64> = (1..=4001)
            .map(|n| {
                sample_params(&config, n, &History::default())["lr"]
                    .as_f64()
                    .unwrap()
            })
            .collect();
        values.sort_by(f64::total_cmp);
        let median = values[values.len() / 2];
        let geometric_mean = 1e-3;
        assert!(
            (median / geometric_mean).log10().abs() < 0.15,
            "median {median} not near {geometric_mean}"
        );
        let below_1e4 = values.iter().filter(|v| **v < 1e-4).count() as f64 / 4001.0;
        assert!(
            (below_1e4 - 1.0 / 3.0).abs() < 0.03,
            "share below 1e-4: {below_1e4}"
        );
    }

    #[test]
    fn sobol_and_grid_honour_log_scale() {
        let mut config = config(9, &[("lr", 1e-6, 1.0, Scale::Log)]);
        config.sampler = Sampler::Sobol;
        let below_1e3 = (1..=1024)
            .filter(|&n| {
                sample_params(&config, n, &History::default())["lr"]
                    .as_f64()
                    .unwrap()
                    < 1e-3
            })
            .count();
        assert_eq!(
            below_1e3, 512,
            "stratified: exactly half below the geometric mean"
        );
        config.sampler = Sampler::Grid;
        config.budget = 6;
        let mut lrs: Vec<f64> = (1..=6)
            .map(|n| {
                sample_params(&config, n, &History::default())["lr"]
                    .as_f64()
                    .unwrap()
            })
            .collect();
        lrs.sort_by(f64::total_cmp);
        for (lr, exponent) in lrs.iter().zip([-5.5, -4.5, -3.5, -2.5, -1.5, -0.5]) {
            assert!((lr.log10() - exponent).abs() < 1e-9, "{lr}");
        }
    }

    #[test]
    fn linear_scale_is_uniform() {
        let config = config(9, &[("x", -2.0, 6.0, Scale::Linear)]);
        let values: Vec<f64> = (1..=4000)
            .map(|n| {
                sample_params(&config, n, &History::default())["x"]
                    .as_f64()
                    .unwrap()
            })
            .collect();
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        assert!((mean - 2.0).abs() < 0.15, "mean {mean}");
    }

    #[test]
    fn unit_ends_map_to_bound_ends() {
        let log = Bound::new(1e-3, 10.0, Scale::Log);
        assert!((from_unit(0.0, &log) / 1e-3 - 1.0).abs() < 1e-12);
        assert!(from_unit(1.0 - f64::EPSILON, &log) <= 10.0);
        let periodic = Bound::new(0.0, 360.0, Scale::Periodic);
        assert_eq!(from_unit(0.5, &periodic), 180.0);
    }

    fn bound() -> impl Strategy<Value = Bound> {
        let linear = (-1e12..1e12f64, 1e-9..1e12f64)
            .prop_map(|(min, width)| Bound::new(min, min + width, Scale::Linear));
        let log = (1e-300..1e300f64, 1.0001..1e10f64)
            .prop_map(|(min, ratio)| Bound::new(min, (min * ratio).min(f64::MAX), Scale::Log));
        prop_oneof![linear, log]
    }

    proptest! {
        #[test]
        fn samples_stay_in_bounds(
            bound in bound(), seed in any::<u64>(), number in 1..u64::MAX,
            sampler in proptest::sample::select(Sampler::ALL.to_vec()), budget in 1u64..1_000_000
        ) {
            let config = StudyConfig {
                seed,
                budget,
                bounds: BTreeMap::from([("p".to_string(), bound.clone())]),
                probe_ratio: None,
                strategy_params: BTreeMap::new(),
                sampler,
                max_retries: 0,
                ..Default::default()
            };
            let value = sample_params(&config, number, &History::default())["p"].as_f64().unwrap();
            prop_assert!(value >= bound.min && value <= bound.max, "{} not in {:?}", value, bound);
        }
    }
}
