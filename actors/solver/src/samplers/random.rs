//! Random search: independent uniform points.
//!
//! Trial `number`'s point comes from a generator keyed by `(seed, number)`
//! alone ([`trial_rng`]), one `f64` per dimension in the bounds' name order.
//! It needs no design and works at any budget and dimension, but its points
//! clump: at small budgets it leaves holes that [`sobol`](super::sobol)
//! does not.

use crate::sampling::trial_rng;
use rand::Rng;

/// Trial `number`'s uniform point in `[0, 1)^dimensions` for a study seeded
/// with `seed`.
pub fn point(seed: u64, number: u64, dimensions: usize) -> Vec<f64> {
    let mut rng = trial_rng(seed, number);
    (0..dimensions).map(|_| rng.random::<f64>()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinates_are_the_trial_generators_draws_in_order() {
        let mut rng = trial_rng(4, 2);
        let expected: Vec<f64> = (0..3).map(|_| rng.random::<f64>()).collect();
        assert_eq!(point(4, 2, 3), expected);
        assert_eq!(point(4, 2, 2), expected[..2]);
    }
}
