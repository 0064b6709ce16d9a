//! Grid search: a full-factorial grid over the bounds, visited in a seeded
//! shuffled order.
//!
//! # The grid
//!
//! A study with budget `B` over `d` parameters gets `r_i` levels on
//! parameter `i`, as even as possible: every `r_i` is `r` or `r + 1` where
//! `r = floor(B^(1/d))`, and the parameters earliest in name order get the
//! extra level, just as many as needed for `prod r_i >= B`. So the budget
//! never runs past the grid, and the grid is never more than about twice the
//! budget. Level `l` of `r` sits at the middle of its cell, `(l + 0.5) / r`
//! in the unit cube, mapped onto the bound like every other sampler (log
//! scale gives geometric spacing): the points stay off the edges, where a
//! range's ends are often degenerate (a dropout of 0, a learning rate at its
//! largest), and a periodic range's two ends never both appear.
//!
//! # The order
//!
//! Walking a grid in index order spends the whole budget of a short study
//! on one corner. Trial `k` instead gets cell `π(k - 1)`, where `π` is a
//! pseudo-random permutation of the cell indices keyed by the seed: a
//! Feistel network on the smallest even number of bits that holds the grid,
//! with cycle walking to stay inside it. `π` is computed per trial, so the
//! grid is never stored, trial `k` depends only on `(seed, budget, d, k)`,
//! and no cell repeats until all of them were handed out. Should a study be
//! asked for more trials than cells (its budget cannot), the next pass
//! walks the grid again in a new order.

use super::mix;

/// Feistel rounds; four already give a pseudo-random permutation, six make
/// the order of small grids look shuffled too.
const ROUNDS: u64 = 6;

/// The largest `f64` below 1.
const BELOW_ONE: f64 = 1.0 - f64::EPSILON / 2.0;

/// The levels of a full-factorial grid, one count per dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grid {
    levels: Vec<u64>,
}

impl Grid {
    /// The smallest, most even grid over `dimensions` parameters with at
    /// least `budget` points (at least one point; no dimensions give the
    /// single empty point).
    pub fn for_budget(budget: u64, dimensions: usize) -> Grid {
        let budget = u128::from(budget.max(1));
        let base = root(budget, dimensions);
        let mut levels = vec![base; dimensions];
        let mut size = power(base, dimensions);
        for level in &mut levels {
            if size >= budget {
                break;
            }
            size = size / u128::from(base) * u128::from(base + 1);
            *level += 1;
        }
        Grid { levels }
    }

    /// How many levels each dimension has.
    #[cfg(test)]
    pub fn levels(&self) -> &[u64] {
        &self.levels
    }

    /// How many points the grid has.
    pub fn size(&self) -> u128 {
        self.levels.iter().map(|&r| u128::from(r)).product()
    }

    /// The level of each dimension in cell `index` (below [`Grid::size`]):
    /// mixed radix, first dimension least significant.
    pub fn cell(&self, mut index: u128) -> Vec<u64> {
        self.levels
            .iter()
            .map(|&r| {
                let r = u128::from(r);
                let level = index % r;
                index /= r;
                level as u64
            })
            .collect()
    }

    /// The unit-cube point of a cell: each level at the middle of its slice.
    pub fn unit(&self, cell: &[u64]) -> Vec<f64> {
        cell.iter()
            .zip(&self.levels)
            .map(|(&l, &r)| ((l as f64 + 0.5) / r as f64).min(BELOW_ONE))
            .collect()
    }

    /// Trial `number`'s point in `[0, 1)^d` for a study seeded with `seed`:
    /// cell `π(number - 1)` of the shuffled grid.
    pub fn point(&self, seed: u64, number: u64) -> Vec<f64> {
        let size = self.size();
        let index = u128::from(number.wrapping_sub(1));
        let pass = (index / size) as u64;
        let cell = permute(index % size, size, pass_key(seed, pass));
        self.unit(&self.cell(cell))
    }
}

/// The permutation key of the `pass`-th walk over a study's grid.
fn pass_key(seed: u64, pass: u64) -> u64 {
    mix(mix(seed ^ 0x6121_D000) ^ pass)
}

/// The largest `r >= 1` with `r^d <= n` (1 when `d` is 0).
fn root(n: u128, d: usize) -> u64 {
    if d == 0 {
        return 1;
    }
    let guess = (n as f64).powf(1.0 / d as f64) as u64;
    let mut r = guess.max(1);
    while r > 1 && power(r, d) > n {
        r -= 1;
    }
    while r < u64::MAX && power(r + 1, d) <= n {
        r += 1;
    }
    r
}

/// `r^d`, saturating.
fn power(r: u64, d: usize) -> u128 {
    let exponent = u32::try_from(d).unwrap_or(u32::MAX);
    u128::from(r).saturating_pow(exponent)
}

/// A pseudo-random permutation of `0..size` keyed by `key`: a balanced
/// Feistel network on `2h` bits (`4^h >= size`), cycle-walked until the
/// image falls inside `0..size`. The walk ends because the permutation's
/// cycle through `index` returns to it; it takes under four steps on
/// average, as `4^h < 4 * size`.
pub fn permute(index: u128, size: u128, key: u64) -> u128 {
    debug_assert!(index < size);
    let bits = 128 - (size - 1).leading_zeros();
    let half = bits.div_ceil(2).max(1);
    let mut x = index;
    loop {
        x = feistel(x, half, key);
        if x < size {
            return x;
        }
    }
}

/// One pass of the Feistel network on `2 * half` bits.
fn feistel(x: u128, half: u32, key: u64) -> u128 {
    let mask = (1u128 << half) - 1;
    let (mut left, mut right) = (x >> half, x & mask);
    for round in 0..ROUNDS {
        let f = round_function(right, key, round) & mask;
        (left, right) = (right, left ^ f);
    }
    (left << half) | right
}

/// The Feistel round function: a hash of the right half, key and round.
fn round_function(right: u128, key: u64, round: u64) -> u128 {
    let low = right as u64;
    let high = (right >> 64) as u64;
    let h = mix(key ^ mix(low ^ round.wrapping_mul(0xA076_1D64_78BD_642F)) ^ mix(high));
    u128::from(h) | (u128::from(mix(h)) << 64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::from_unit;
    use flotilla_messages::solver::{Bound, Scale};
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn resolutions_are_as_even_as_possible() {
        assert_eq!(Grid::for_budget(10, 2).levels(), [4, 3]);
        assert_eq!(Grid::for_budget(9, 2).levels(), [3, 3]);
        assert_eq!(Grid::for_budget(100, 3).levels(), [5, 5, 4]);
        assert_eq!(Grid::for_budget(1, 4).levels(), [1, 1, 1, 1]);
        assert_eq!(Grid::for_budget(7, 1).levels(), [7]);
        assert_eq!(Grid::for_budget(2, 5).levels(), [2, 1, 1, 1, 1]);
        assert_eq!(Grid::for_budget(0, 2).levels(), [1, 1]);
        assert_eq!(Grid::for_budget(5, 0).size(), 1);
        let huge = Grid::for_budget(u64::MAX, 1);
        assert_eq!(huge.levels(), [u64::MAX]);
        assert_eq!(Grid::for_budget(u64::MAX, 64).levels(), [2; 64]);
    }

    #[test]
    fn levels_sit_in_the_middle_of_their_cells_and_log_scale_is_geometric() {
        let grid = Grid::for_budget(4, 1);
        let mut values: Vec<f64> = (1..=4).map(|n| grid.point(3, n)[0]).collect();
        values.sort_by(f64::total_cmp);
        assert_eq!(values, [0.125, 0.375, 0.625, 0.875]);
        let log = Bound::new(1e-4, 1.0, Scale::Log);
        let lrs: Vec<f64> = values.iter().map(|&u| from_unit(u, &log)).collect();
        for (lr, exponent) in lrs.iter().zip([-3.5, -2.5, -1.5, -0.5]) {
            assert!((lr.log10() - exponent).abs() < 1e-12, "{lr}");
        }
    }

    #[test]
    fn the_order_is_shuffled_and_depends_on_the_seed() {
        let grid = Grid::for_budget(100, 2);
        let order = |seed| (1..=100).map(|n| grid.point(seed, n)).collect::<Vec<_>>();
        let in_index_order: Vec<Vec<f64>> = (0..100).map(|i| grid.unit(&grid.cell(i))).collect();
        assert_ne!(order(1), in_index_order);
        assert_ne!(order(1), order(2));
        // A short study's first ten trials spread over the first dimension.
        let first: BTreeSet<u64> = (1..=10)
            .map(|n| (grid.point(1, n)[0] * 10.0) as u64)
            .collect();
        assert!(first.len() >= 5, "{first:?}");
    }

    #[test]
    fn a_second_pass_walks_the_grid_again_in_another_order() {
        let grid = Grid::for_budget(12, 2);
        let pass = |p: u64| {
            (1..=12)
                .map(|n| grid.point(9, p * 12 + n))
                .collect::<Vec<_>>()
        };
        let (first, second) = (pass(0), pass(1));
        assert_ne!(first, second);
        let sorted = |mut v: Vec<Vec<f64>>| {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v
        };
        assert_eq!(sorted(first), sorted(second));
    }

    proptest! {
        #[test]
        fn the_grid_is_the_smallest_even_one_covering_the_budget(
            budget in 1u64..5_000_000, dimensions in 1usize..10
        ) {
            let grid = Grid::for_budget(budget, dimensions);
            let levels = grid.levels();
            prop_assert_eq!(levels.len(), dimensions);
            prop_assert!(grid.size() >= u128::from(budget));
            let (lo, hi) = (*levels.iter().min().unwrap(), *levels.iter().max().unwrap());
            prop_assert!(hi - lo <= 1, "{:?}", levels);
            if hi > 1 {
                // One level fewer anywhere it is at its maximum is too small.
                prop_assert!(grid.size() / u128::from(hi) * u128::from(hi - 1) < u128::from(budget));
            }
        }

        #[test]
        fn permute_is_a_bijection(size in 1u128..3000, key in any::<u64>()) {
            let mut images: Vec<u128> = (0..size).map(|i| permute(i, size, key)).collect();
            images.sort_unstable();
            prop_assert!(images.iter().copied().eq(0..size));
        }

        #[test]
        fn permute_stays_in_range_for_huge_grids(index in any::<u64>(), key in any::<u64>()) {
            let size = u128::from(u64::MAX) * 2 - 3;
            prop_assert!(permute(u128::from(index), size, key) < size);
        }

        /// Handing out the whole grid visits every combination of levels
        /// exactly once, so no point repeats within the budget and every
        /// level of every parameter is visited.
        #[test]
        fn the_full_grid_covers_every_cell_once(
            seed in any::<u64>(), budget in 1u64..400, dimensions in 1usize..5
        ) {
            let grid = Grid::for_budget(budget, dimensions);
            let size = grid.size() as u64;
            let points: Vec<Vec<f64>> = (1..=size).map(|n| grid.point(seed, n)).collect();
            let cells: BTreeSet<Vec<u64>> = points
                .iter()
                .map(|p| p.iter().zip(grid.levels()).map(|(u, &r)| (u * r as f64) as u64).collect())
                .collect();
            prop_assert_eq!(cells.len() as u64, size);
            for (d, &r) in grid.levels().iter().enumerate() {
                let seen: BTreeSet<u64> = cells.iter().map(|c| c[d]).collect();
                prop_assert_eq!(seen.len() as u64, r);
            }
            prop_assert!(points.iter().flatten().all(|u| (0.0..1.0).contains(u)));
            let expected: Vec<Vec<f64>> = (0..size).map(|i| grid.unit(&grid.cell(u128::from(i)))).collect();
            let bits = |v: &[Vec<f64>]| {
                let mut b: Vec<Vec<u64>> = v.iter().map(|p| p.iter().map(|u| u.to_bits()).collect()).collect();
                b.sort();
                b
            };
            prop_assert_eq!(bits(&points), bits(&expected));
        }
    }
}
