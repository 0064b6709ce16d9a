//! A scrambled Sobol sequence: quasi-random points for small budgets.
//!
//! # Why
//!
//! Independent random points clump: among 32 uniform points in a square some
//! cells get three and some none, and a search with a budget of 50 cannot
//! afford the holes. A Sobol sequence is built so that its first `2^k` points
//! put exactly one point in every interval of width `2^-k` of each
//! coordinate (and, for the first two coordinates, in every dyadic box of
//! area `2^-k`). The space is covered evenly at every budget, which is why
//! quasi-random search beats random search at small budgets and why it is a
//! good first phase for a model-based sampler. Its integration error falls
//! almost like `1/n` where random's falls like `1/sqrt(n)`.
//!
//! # Construction
//!
//! Coordinate `d` of point `i` is the XOR of the direction numbers `V_d[j]`
//! for the set bits `j` of the Gray code `i ^ (i >> 1)` (Antonov–Saleev),
//! which is the order Joe and Kuo's reference generator and SciPy use. The
//! direction numbers come from Joe and Kuo's table `new-joe-kuo-6.21201`
//! (S. Joe and F. Y. Kuo, "Constructing Sobol sequences with better
//! two-dimensional projections", SIAM J. Sci. Comput. 30, 2635–2654 (2008);
//! <https://web.maths.unsw.edu.au/~fkuo/sobol/>), whose first
//! [`SOBOL_MAX_DIMENSIONS`] rows are hard-coded in `JOE_KUO` and expanded
//! to 64 bits at compile time.
//!
//! # Scrambling
//!
//! The raw sequence starts at the origin and is the same for every study, so
//! each coordinate is Owen-scrambled with a key derived from the study seed
//! and the coordinate: the bits are reversed, passed through a hash in which
//! output bit `b` depends only on input bits `0..=b` and which is a bijection
//! (Laine–Karras style, after Burley, "Practical hash-based Owen
//! scrambling", JCGT 2020), and reversed back. So digit `b` of the result
//! (from the most significant) is digit `b` of the input flipped or not
//! depending on the key and the digits before it: a nested permutation of
//! the dyadic intervals. That keeps every stratification property above,
//! randomises everything else, and makes different seeds give independent
//! looking designs.
//!
//! Trial `number` is point `number - 1`, a pure function of the seed and
//! the number: replays and parallel asks reproduce it, and two trials of a
//! study never share a coordinate value within the first `2^53` points.

use flotilla_messages::solver::SOBOL_MAX_DIMENSIONS;

use super::{mix, to_unit};

/// One row of Joe and Kuo's table: the primitive polynomial of `degree` `s`
/// whose inner coefficients are the bits of `coefficients` (`a`), and the
/// initial direction integers `m_1..m_s`.
struct Row {
    degree: u32,
    coefficients: u32,
    initial: &'static [u64],
}

const fn row(degree: u32, coefficients: u32, initial: &'static [u64]) -> Row {
    Row {
        degree,
        coefficients,
        initial,
    }
}

/// Dimensions 2..=32 of `new-joe-kuo-6.21201` (columns `s`, `a`, `m_i`),
/// from <https://web.maths.unsw.edu.au/~fkuo/sobol/new-joe-kuo-6.21201>.
/// Dimension 1 is the van der Corput sequence (every `m_i = 1`).
const JOE_KUO: [Row; SOBOL_MAX_DIMENSIONS - 1] = [
    row(1, 0, &[1]),
    row(2, 1, &[1, 3]),
    row(3, 1, &[1, 3, 1]),
    row(3, 2, &[1, 1, 1]),
    row(4, 1, &[1, 1, 3, 3]),
    row(4, 4, &[1, 3, 5, 13]),
    row(5, 2, &[1, 1, 5, 5, 17]),
    row(5, 4, &[1, 1, 5, 5, 5]),
    row(5, 7, &[1, 1, 7, 11, 19]),
    row(5, 11, &[1, 1, 5, 1, 1]),
    row(5, 13, &[1, 1, 1, 3, 11]),
    row(5, 14, &[1, 3, 5, 5, 31]),
    row(6, 1, &[1, 3, 3, 9, 7, 49]),
    row(6, 13, &[1, 1, 1, 15, 21, 21]),
    row(6, 16, &[1, 3, 1, 13, 27, 49]),
    row(6, 19, &[1, 1, 1, 15, 7, 5]),
    row(6, 22, &[1, 3, 1, 15, 13, 25]),
    row(6, 25, &[1, 1, 5, 5, 19, 61]),
    row(7, 1, &[1, 3, 7, 11, 23, 15, 103]),
    row(7, 4, &[1, 3, 7, 13, 13, 15, 69]),
    row(7, 7, &[1, 1, 3, 13, 7, 35, 63]),
    row(7, 8, &[1, 3, 5, 9, 1, 25, 53]),
    row(7, 14, &[1, 3, 1, 13, 9, 35, 107]),
    row(7, 19, &[1, 3, 1, 5, 27, 61, 31]),
    row(7, 21, &[1, 1, 5, 11, 19, 41, 61]),
    row(7, 28, &[1, 3, 5, 3, 3, 13, 69]),
    row(7, 31, &[1, 1, 7, 13, 1, 19, 1]),
    row(7, 32, &[1, 3, 7, 5, 13, 19, 59]),
    row(7, 37, &[1, 1, 3, 9, 25, 29, 41]),
    row(7, 41, &[1, 3, 5, 13, 23, 1, 55]),
    row(7, 42, &[1, 3, 7, 3, 13, 59, 17]),
];

/// Bits per coordinate.
const BITS: usize = 64;

/// `DIRECTIONS[d][j]`: direction number `v_{j+1}` of dimension `d + 1`,
/// scaled by `2^64` (`m_{j+1} << (63 - j)`).
static DIRECTIONS: [[u64; BITS]; SOBOL_MAX_DIMENSIONS] = directions();

const fn directions() -> [[u64; BITS]; SOBOL_MAX_DIMENSIONS] {
    let mut table = [[0u64; BITS]; SOBOL_MAX_DIMENSIONS];
    let mut j = 0;
    while j < BITS {
        table[0][j] = 1 << (BITS - 1 - j);
        j += 1;
    }
    let mut d = 1;
    while d < SOBOL_MAX_DIMENSIONS {
        table[d] = expand(&JOE_KUO[d - 1]);
        d += 1;
    }
    table
}

/// Joe and Kuo's recurrence, `v_k = a_1 v_{k-1} ^ ... ^ a_{s-1} v_{k-s+1}
/// ^ v_{k-s} ^ (v_{k-s} >> s)`, carried out on 64-bit numbers.
const fn expand(row: &Row) -> [u64; BITS] {
    let s = row.degree as usize;
    let mut v = [0u64; BITS];
    let mut k = 0;
    while k < BITS {
        v[k] = if k < s {
            row.initial[k] << (BITS - 1 - k)
        } else {
            let mut x = v[k - s] ^ (v[k - s] >> s);
            let mut i = 1;
            while i < s {
                if (row.coefficients >> (s - 1 - i)) & 1 == 1 {
                    x ^= v[k - i];
                }
                i += 1;
            }
            x
        };
        k += 1;
    }
    v
}

/// Coordinate `dimension` (0-based, below [`SOBOL_MAX_DIMENSIONS`]) of
/// point `index` of the unscrambled sequence, as a 64-bit binary fraction.
fn raw(index: u64, dimension: usize) -> u64 {
    let directions = &DIRECTIONS[dimension];
    let mut gray = index ^ (index >> 1);
    let mut x = 0;
    while gray != 0 {
        x ^= directions[gray.trailing_zeros() as usize];
        gray &= gray - 1;
    }
    x
}

/// The scrambling key of one coordinate of a study.
fn key(seed: u64, dimension: usize) -> u64 {
    mix(mix(seed ^ 0x5EED_0B01) ^ (dimension as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// A bijection of `u64` in which output bit `b` depends only on input bits
/// `0..=b`: every step is an addition, a multiplication by an odd number, or
/// `y ^= y * even`, each of which carries information only upwards.
fn nested_hash(mut y: u64, key: u64) -> u64 {
    let odd = mix(key) | 1;
    y ^= y.wrapping_mul(0x3D20_ADEA_6F1C_9B42);
    y = y.wrapping_add(key);
    y = y.wrapping_mul(odd);
    y ^= y.wrapping_mul(0x0552_6C56_8AD3_2E74);
    y ^= y.wrapping_mul(0x53A2_2864_C1F7_05B8);
    y = y.wrapping_add(odd.rotate_left(32));
    y.wrapping_mul(0xD6E8_FEB8_6659_FD93)
}

/// Owen-style nested scrambling of a 64-bit binary fraction: digit `b`
/// (most significant first) is flipped or not by the key and digits
/// `0..b`, so each dyadic interval maps onto a dyadic interval of the same
/// size.
fn scramble(x: u64, key: u64) -> u64 {
    nested_hash(x.reverse_bits(), key).reverse_bits()
}

/// Trial `number`'s point of the scrambled Sobol sequence of a study seeded
/// with `seed`: point `number - 1`, one coordinate in `[0, 1)` per
/// dimension.
///
/// Dimensions beyond [`SOBOL_MAX_DIMENSIONS`] (which `StudyConfig::validate`
/// refuses) are filled by the random sampler rather than panicking.
pub fn point(seed: u64, number: u64, dimensions: usize) -> Vec<f64> {
    let index = number.wrapping_sub(1);
    let sobol = dimensions.min(SOBOL_MAX_DIMENSIONS);
    let mut point: Vec<f64> = (0..sobol)
        .map(|d| to_unit(scramble(raw(index, d), key(seed, d))))
        .collect();
    if dimensions > sobol {
        let rest = super::random::point(seed, number, dimensions);
        point.extend_from_slice(&rest[sobol..]);
    }
    point
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn unit(x: u64) -> f64 {
        to_unit(x)
    }

    /// The top `bits` bits of a binary fraction.
    fn top(x: u64, bits: u32) -> u64 {
        x.checked_shr(64 - bits).unwrap_or(0)
    }

    /// Whether `values` (binary fractions) put exactly one value in every
    /// interval of width `2^-k`, `values.len() == 2^k`.
    fn stratified(values: impl IntoIterator<Item = u64>, k: u32) -> bool {
        let mut hits = vec![0u32; 1 << k];
        for x in values {
            hits[top(x, k) as usize] += 1;
        }
        hits.iter().all(|&h| h == 1)
    }

    #[test]
    fn the_first_points_match_joe_and_kuo() {
        // Output of Joe and Kuo's reference generator (sobol.cc) for D = 3.
        let expected = [
            [0.0, 0.0, 0.0],
            [0.5, 0.5, 0.5],
            [0.75, 0.25, 0.25],
            [0.25, 0.75, 0.75],
            [0.375, 0.375, 0.625],
            [0.875, 0.875, 0.125],
            [0.625, 0.125, 0.875],
            [0.125, 0.625, 0.375],
            [0.1875, 0.3125, 0.9375],
            [0.6875, 0.8125, 0.4375],
        ];
        for (i, row) in expected.iter().enumerate() {
            let got: Vec<f64> = (0..3).map(|d| unit(raw(i as u64, d))).collect();
            assert_eq!(got, row, "point {i}");
        }
    }

    #[test]
    fn direction_numbers_come_from_primitive_polynomials() {
        let mut seen = Vec::new();
        let mut last_degree = 0;
        for (i, row) in JOE_KUO.iter().enumerate() {
            let s = row.degree;
            assert!(s >= last_degree, "row {i}: degrees never decrease");
            last_degree = s;
            assert_eq!(row.initial.len(), s as usize, "row {i}");
            assert!(row.coefficients < 1 << (s - 1), "row {i}");
            for (k, &m) in row.initial.iter().enumerate() {
                assert!(m % 2 == 1 && m < 2 << k, "row {i}: m_{} = {m}", k + 1);
            }
            let poly = (1u32 << s) | (row.coefficients << 1) | 1;
            assert_eq!(order_of_x(poly, s), (1 << s) - 1, "row {i}: not primitive");
            assert!(!seen.contains(&poly), "row {i}: repeated polynomial");
            seen.push(poly);
        }
    }

    /// The multiplicative order of `x` modulo `poly` (degree `s`) over GF(2).
    fn order_of_x(poly: u32, s: u32) -> u32 {
        let mut power = 1u32;
        for k in 1..=(1u32 << s) {
            power <<= 1;
            if power >> s & 1 == 1 {
                power ^= poly;
            }
            if power == 1 {
                return k;
            }
        }
        0
    }

    #[test]
    fn the_table_expands_the_initial_numbers() {
        for (d, row) in JOE_KUO.iter().enumerate() {
            for (k, &m) in row.initial.iter().enumerate() {
                assert_eq!(DIRECTIONS[d + 1][k], m << (63 - k));
            }
            // Every direction number has its lowest bit on the diagonal
            // (m_k is odd), so each coordinate's generator matrix is
            // triangular with a unit diagonal: invertible.
            for (k, &v) in DIRECTIONS[d + 1].iter().enumerate() {
                assert_eq!(
                    v.trailing_zeros() as usize,
                    63 - k,
                    "dim {} v_{}",
                    d + 2,
                    k + 1
                );
            }
        }
    }

    #[test]
    fn unscrambled_prefixes_hit_every_interval_once() {
        for d in 0..SOBOL_MAX_DIMENSIONS {
            for k in 0..=12 {
                let values = (0..1u64 << k).map(|i| raw(i, d));
                assert!(stratified(values, k), "dimension {d}, 2^{k} points");
            }
        }
    }

    #[test]
    fn the_first_two_coordinates_form_a_zero_net() {
        for k in 0..=10u32 {
            for a in 0..=k {
                let mut boxes = vec![0u32; 1 << k];
                for i in 0..1u64 << k {
                    let cell = (top(raw(i, 0), a) << (k - a)) | top(raw(i, 1), k - a);
                    boxes[cell as usize] += 1;
                }
                assert!(boxes.iter().all(|&b| b == 1), "2^{k} points, {a} bits of x");
            }
        }
    }

    #[test]
    fn scrambling_is_a_nested_bijection() {
        let key = key(7, 3);
        let mut images: Vec<u64> = (0..4096u64)
            .map(|x| top(scramble(x << 52, key), 12))
            .collect();
        images.sort_unstable();
        assert_eq!(images, (0..4096).collect::<Vec<_>>());
    }

    #[test]
    fn scrambled_sobol_integrates_far_better_than_random() {
        // Sobol's g-function in 6 dimensions; its integral over the cube is 1.
        let g = |x: &[f64]| {
            x.iter()
                .zip([0.0, 1.0, 4.5, 9.0, 99.0, 99.0])
                .map(|(&xi, a)| ((4.0 * xi - 2.0).abs() + a) / (1.0 + a))
                .product::<f64>()
        };
        let n = 1024;
        let error = |sample: &dyn Fn(u64, u64) -> Vec<f64>| {
            let total: f64 = (0..16u64)
                .map(|seed| {
                    let mean = (1..=n).map(|i| g(&sample(seed, i))).sum::<f64>() / n as f64;
                    (mean - 1.0).abs()
                })
                .sum();
            total / 16.0
        };
        let sobol = error(&|seed, i| point(seed, i, 6));
        let random = error(&|seed, i| super::super::random::point(seed, i, 6));
        assert!(
            sobol * 8.0 < random,
            "sobol error {sobol}, random error {random}"
        );
    }

    #[test]
    fn too_many_dimensions_fall_back_to_random_for_the_rest() {
        let wide = point(5, 9, SOBOL_MAX_DIMENSIONS + 3);
        assert_eq!(wide.len(), SOBOL_MAX_DIMENSIONS + 3);
        assert_eq!(
            &wide[..SOBOL_MAX_DIMENSIONS],
            point(5, 9, SOBOL_MAX_DIMENSIONS)
        );
        let random = super::super::random::point(5, 9, SOBOL_MAX_DIMENSIONS + 3);
        assert_eq!(
            &wide[SOBOL_MAX_DIMENSIONS..],
            &random[SOBOL_MAX_DIMENSIONS..]
        );
    }

    #[test]
    fn different_seeds_give_different_designs() {
        assert_ne!(point(1, 1, 4), point(2, 1, 4));
        assert_ne!(point(1, 5, 4), point(2, 5, 4));
    }

    #[test]
    fn the_first_points_are_distinct_in_every_coordinate() {
        let n = 1 << 13;
        for d in 0..SOBOL_MAX_DIMENSIONS {
            let mut values: Vec<u64> = (1..=n).map(|i| point(11, i, d + 1)[d].to_bits()).collect();
            values.sort_unstable();
            values.dedup();
            assert_eq!(values.len(), n as usize, "dimension {d}");
        }
    }

    proptest! {
        #[test]
        fn points_are_in_the_unit_cube_and_deterministic(
            seed in any::<u64>(), number in any::<u64>(), dims in 1..=SOBOL_MAX_DIMENSIONS
        ) {
            let p = point(seed, number, dims);
            prop_assert_eq!(p.len(), dims);
            prop_assert!(p.iter().all(|u| (0.0..1.0).contains(u)), "{:?}", p);
            let again = point(seed, number, dims);
            let bits = |p: &[f64]| p.iter().map(|u| u.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&p), bits(&again));
        }

        /// Every aligned block of `2^k` consecutive points hits each interval
        /// of width `2^-k` once per coordinate, whatever the seed: nested
        /// scrambling keeps Sobol's stratification.
        #[test]
        fn scrambled_blocks_stay_stratified(
            seed in any::<u64>(), k in 0u32..=9, block in 0u64..1000
        ) {
            let dims = SOBOL_MAX_DIMENSIONS;
            let first = block << k;
            let points: Vec<Vec<f64>> =
                (first..first + (1 << k)).map(|i| point(seed, i + 1, dims)).collect();
            let scale = (1u64 << k) as f64;
            for d in 0..dims {
                let mut hits = vec![0u32; 1 << k];
                for p in &points {
                    hits[(p[d] * scale) as usize] += 1;
                }
                prop_assert!(hits.iter().all(|&h| h == 1), "dimension {}, block {}", d, block);
            }
        }

        /// The first two scrambled coordinates of the first `2^k` points put
        /// one point in every dyadic box of area `2^-k`.
        #[test]
        fn scrambled_pairs_stay_a_net(seed in any::<u64>(), k in 0u32..=8) {
            for a in 0..=k {
                let mut boxes = vec![0u32; 1 << k];
                for i in 1..=1u64 << k {
                    let p = point(seed, i, 2);
                    let x = (p[0] * (1u64 << a) as f64) as usize;
                    let y = (p[1] * (1u64 << (k - a)) as f64) as usize;
                    boxes[(x << (k - a)) | y] += 1;
                }
                prop_assert!(boxes.iter().all(|&b| b == 1), "2^{} points, {} bits of x", k, a);
            }
        }

        #[test]
        fn scrambling_keeps_shared_prefixes(x in any::<u64>(), y in any::<u64>(), key in any::<u64>()) {
            let shared = (x ^ y).leading_zeros();
            let after = (scramble(x, key) ^ scramble(y, key)).leading_zeros();
            prop_assert_eq!(after, shared);
        }
    }
}
