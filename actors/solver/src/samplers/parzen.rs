//! Parzen estimators on the unit cube: the densities [`tpe`](super::tpe)
//! fits to its good and bad trials.
//!
//! A Parzen estimator is a weighted mixture of normal kernels, one centred
//! on each observation plus a wide *prior* kernel (mean 0.5, width 1,
//! weight 1) so that no density is ever zero, each kernel truncated to
//! `[0, 1]` ([`normal::mass`](super::normal::mass) renormalises it). The
//! widths follow Optuna 5 (`optuna/samplers/_tpe/parzen_estimator.py`),
//! per dimension ([`bandwidths`]): a kernel is as wide as the larger gap to
//! its neighbouring observations (the ends 0 and 1 count as neighbours;
//! the outermost kernels use their inner gap), clipped by the "magic clip"
//! to `[1 / min(100, kernels + 1), 1]` so kernels never shrink to spikes —
//! so widths adapt to where the observations crowd, which is what lets TPE
//! refine around a good region instead of stalling at a fixed width.
//!
//! - [`Parzen1`]: one dimension, for univariate TPE.
//! - [`ParzenN`]: one mixture over whole points (a product of per-dimension
//!   kernels, each with its own width), for multivariate TPE: it keeps the
//!   interactions between parameters that a product of one-dimensional
//!   mixtures loses.
//!
//! Observation weights are Optuna's `default_weights` ([`weights`]).

use super::normal::{exp_kernel, mass, truncated};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Observations that keep full weight under [`weights`]: the newest 25.
pub const FLAT_WEIGHTS: usize = 25;

/// Optuna's `default_weights(m)` for `m` observations in number order,
/// followed by the prior's weight 1, normalised to sum to 1: the newest
/// [`FLAT_WEIGHTS`] weigh 1, older ones ramp down to `1/m`.
pub fn weights(m: usize) -> Vec<f64> {
    let mut w = vec![1.0; m + 1];
    if m >= FLAT_WEIGHTS {
        let ramp = m - FLAT_WEIGHTS;
        let first = 1.0 / m as f64;
        for (k, wk) in w.iter_mut().take(ramp).enumerate() {
            *wk = if ramp == 1 {
                first
            } else {
                first + (1.0 - first) * k as f64 / (ramp - 1) as f64
            };
        }
    }
    let total: f64 = w.iter().sum();
    w.iter_mut().for_each(|wk| *wk /= total);
    w
}

/// The magic clip's smallest width for `observations` kernels plus the prior.
fn min_sigma(observations: usize) -> f64 {
    1.0 / (1.0 + (observations + 1) as f64).min(100.0)
}

/// Optuna 5's kernel widths for observations in `[0, 1]` (one dimension):
/// the larger gap to the neighbours among the sorted observations and the
/// ends 0 and 1; with two or more observations the outermost take their
/// inner gap; all clipped to `[min_sigma, 1]`. Ties keep number order.
pub fn bandwidths(column: &[f64]) -> Vec<f64> {
    let m = column.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_unstable_by(|&a, &b| column[a].total_cmp(&column[b]).then(a.cmp(&b)));
    // Position k of 0, the sorted observations, 1.
    let at = |k: usize| match k {
        0 => 0.0,
        k if k == m + 1 => 1.0,
        k => column[order[k - 1]],
    };
    let lo = min_sigma(m);
    let mut sigmas = vec![1.0; m];
    for k in 1..=m {
        let sigma = if m >= 2 && k == 1 {
            at(2) - at(1)
        } else if m >= 2 && k == m {
            at(m) - at(m - 1)
        } else {
            (at(k) - at(k - 1)).max(at(k + 1) - at(k))
        };
        sigmas[order[k - 1]] = sigma.clamp(lo, 1.0);
    }
    sigmas
}

/// Picks a component index by its weight.
fn pick(weights: &[f64], rng: &mut ChaCha8Rng) -> usize {
    let mut u = rng.random::<f64>();
    for (k, &w) in weights.iter().enumerate() {
        if u < w {
            return k;
        }
        u -= w;
    }
    weights.len() - 1
}

/// Lanes of the interleaved kernel sums.
const LANES: usize = 4;

/// A one-dimensional Parzen estimator on `[0, 1]`: kernels at `mus` (the
/// last one the prior), stored for fast evaluation; the evaluation arrays
/// (`mus`, `inv_sigmas`, `peaks`) are padded with weightless kernels to a
/// multiple of [`LANES`].
pub struct Parzen1 {
    mus: Vec<f64>,
    sigmas: Vec<f64>,
    inv_sigmas: Vec<f64>,
    /// `weight / (sigma · mass)`: the kernel's peak density, up to `√(2π)`.
    peaks: Vec<f64>,
    weights: Vec<f64>,
}

impl Parzen1 {
    /// Fits kernels to `observations` (in number order) with `weights` (one
    /// per observation plus the prior's, last; see [`weights`]).
    pub fn fit(observations: &[f64], weights: Vec<f64>) -> Self {
        let m = observations.len();
        let mut mus: Vec<f64> = Vec::with_capacity(m + 1);
        mus.extend_from_slice(observations);
        mus.push(0.5);
        let mut sigmas = bandwidths(observations);
        sigmas.push(1.0);
        let mut inv_sigmas: Vec<f64> = sigmas.iter().map(|s| 1.0 / s).collect();
        let mut peaks: Vec<f64> = mus
            .iter()
            .zip(&sigmas)
            .zip(&weights)
            .map(|((&mu, &s), &w)| w / (s * mass(mu, s)))
            .collect();
        // Pad the evaluation arrays to whole lanes with kernels of no weight.
        let padded = (m + 1).div_ceil(LANES) * LANES;
        inv_sigmas.resize(padded, 1.0);
        peaks.resize(padded, 0.0);
        mus.resize(padded, 0.5);
        Parzen1 {
            mus,
            sigmas,
            inv_sigmas,
            peaks,
            weights,
        }
    }

    /// The kernels' widths, the prior's last.
    #[cfg(test)]
    pub fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    /// The density at `x`, up to the factor `√(2π)` shared by every
    /// estimator. Summed in four interleaved lanes (a fixed order, so the
    /// bits are deterministic) that the compiler can vectorise.
    pub fn density(&self, x: f64) -> f64 {
        let mut lanes = [0.0; LANES];
        let kernels = self
            .mus
            .chunks_exact(LANES)
            .zip(self.inv_sigmas.chunks_exact(LANES))
            .zip(self.peaks.chunks_exact(LANES));
        for ((mus, invs), peaks) in kernels {
            for l in 0..LANES {
                let z = (x - mus[l]) * invs[l];
                lanes[l] += peaks[l] * exp_kernel(-0.5 * z * z);
            }
        }
        (lanes[0] + lanes[1]) + (lanes[2] + lanes[3])
    }

    /// A draw: a kernel by weight, then a point from it.
    pub fn sample(&self, rng: &mut ChaCha8Rng) -> f64 {
        let k = pick(&self.weights, rng);
        truncated(self.mus[k], self.sigmas[k], rng)
    }
}

/// A joint Parzen estimator on `[0, 1]^d`: one kernel per observation, a
/// product over dimensions of normals truncated to `[0, 1]`, each dimension
/// with its own width from [`bandwidths`]; plus the prior (mean 0.5, width 1
/// in every dimension). Stored dimension-major so the evaluation loops run
/// over kernels and vectorise.
pub struct ParzenN {
    dimensions: usize,
    kernels: usize,
    /// Kernel `k`'s mean in dimension `j` at `j · kernels + k`.
    mus: Vec<f64>,
    sigmas: Vec<f64>,
    inv_sigmas: Vec<f64>,
    /// `ln weight - Σ_j ln(sigma_j · mass_j)` per kernel.
    log_peaks: Vec<f64>,
    weights: Vec<f64>,
}

impl ParzenN {
    /// Fits one kernel per point of `rows` (in number order, `dimensions`
    /// coordinates each) with `weights` (one per row plus the prior's, last;
    /// see [`weights`]).
    pub fn fit<'p>(
        rows: impl ExactSizeIterator<Item = &'p [f64]> + Clone,
        dimensions: usize,
        weights: Vec<f64>,
    ) -> Self {
        let m = rows.len();
        let kernels = m + 1;
        let mut mus = Vec::with_capacity(kernels * dimensions);
        let mut sigmas = Vec::with_capacity(kernels * dimensions);
        let mut column = Vec::with_capacity(m);
        for j in 0..dimensions {
            column.clear();
            column.extend(rows.clone().map(|p| p[j]));
            sigmas.extend(bandwidths(&column));
            sigmas.push(1.0);
            mus.extend_from_slice(&column);
            mus.push(0.5);
        }
        let mut log_peaks: Vec<f64> = weights.iter().map(|w| w.ln()).collect();
        for (k, log_peak) in log_peaks.iter_mut().enumerate() {
            for j in 0..dimensions {
                let (mu, s) = (mus[j * kernels + k], sigmas[j * kernels + k]);
                *log_peak -= (s * mass(mu, s)).ln();
            }
        }
        ParzenN {
            dimensions,
            kernels,
            inv_sigmas: sigmas.iter().map(|s| 1.0 / s).collect(),
            mus,
            sigmas,
            log_peaks,
            weights,
        }
    }

    /// Kernel `k`'s width in dimension `j` (the prior is the last kernel).
    #[cfg(test)]
    pub fn sigma(&self, k: usize, j: usize) -> f64 {
        self.sigmas[j * self.kernels + k]
    }

    /// `ln` of the density at `x`, up to a constant shared by every
    /// estimator of the same dimension; `scratch` holds per-kernel terms.
    /// Every sum runs in a fixed order, so the bits are deterministic.
    pub fn log_density(&self, x: &[f64], scratch: &mut Vec<f64>) -> f64 {
        let n = self.kernels;
        scratch.clear();
        scratch.resize(n, 0.0);
        for (j, &xj) in x.iter().enumerate().take(self.dimensions) {
            let mus = &self.mus[j * n..(j + 1) * n];
            let invs = &self.inv_sigmas[j * n..(j + 1) * n];
            for ((acc, &mu), &inv) in scratch.iter_mut().zip(mus).zip(invs) {
                let z = (xj - mu) * inv;
                *acc += z * z;
            }
        }
        let mut top = f64::NEG_INFINITY;
        for (acc, &log_peak) in scratch.iter_mut().zip(&self.log_peaks) {
            *acc = log_peak - 0.5 * *acc;
            top = top.max(*acc);
        }
        let sum: f64 = scratch.iter().map(|t| exp_kernel(t - top)).sum();
        top + sum.ln()
    }

    /// A draw: one kernel by weight, then every coordinate from that
    /// kernel's normal in its dimension — so a draw stays near one whole
    /// good point rather than mixing coordinates of different ones.
    pub fn sample(&self, rng: &mut ChaCha8Rng) -> Vec<f64> {
        let k = pick(&self.weights, rng);
        (0..self.dimensions)
            .map(|j| {
                let at = j * self.kernels + k;
                truncated(self.mus[at], self.sigmas[at], rng)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::trial_rng;

    #[test]
    fn weights_follow_optunas_ramp() {
        assert_eq!(weights(0), vec![1.0]);
        let w = weights(3);
        assert!(w.iter().all(|&x| (x - 0.25).abs() < 1e-15));
        let w = weights(100);
        assert_eq!(w.len(), 101);
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(w[0] < w[1] && w[73] < w[75]);
        assert_eq!(w[75], w[100]);
        assert!((w[0] / w[100] - 0.01).abs() < 1e-12);
    }

    #[test]
    fn widths_are_optuna_5s_neighbour_gaps_with_the_magic_clip() {
        // Sorted 0.1, 0.2, 0.3, 0.9 between the ends 0 and 1: the inner
        // kernels take their larger gap (0.1, 0.6), the outermost their inner
        // gap (0.1, 0.6); the clip floor is 1/6.
        let sigmas = bandwidths(&[0.9, 0.1, 0.3, 0.2]);
        let expected = [0.6, 1.0 / 6.0, 0.6, 1.0 / 6.0];
        for (s, e) in sigmas.iter().zip(expected) {
            assert!((s - e).abs() < 1e-12, "{sigmas:?}");
        }
        // One observation: the larger gap to an end.
        assert_eq!(bandwidths(&[0.3]), vec![0.7]);
        // Crowded observations shrink to the floor, 1 / min(100, m + 2).
        let crowd: Vec<f64> = (0..200).map(|k| 0.5 + k as f64 * 1e-6).collect();
        assert!(bandwidths(&crowd).iter().all(|&s| s == 0.01));
        let p = Parzen1::fit(&[0.9, 0.1, 0.3, 0.2], weights(4));
        assert_eq!(p.sigmas().len(), 5);
        assert_eq!(p.sigmas()[4], 1.0);
    }

    #[test]
    fn the_joint_estimator_has_per_dimension_widths_and_agrees_in_one_dimension() {
        let rows: Vec<[f64; 2]> = vec![[0.1, 0.5], [0.2, 0.52], [0.8, 0.9]];
        let p = ParzenN::fit(rows.iter().map(|r| &r[..]), 2, weights(3));
        let xs = bandwidths(&[0.1, 0.2, 0.8]);
        let ys = bandwidths(&[0.5, 0.52, 0.9]);
        for k in 0..3 {
            assert_eq!(p.sigma(k, 0), xs[k]);
            assert_eq!(p.sigma(k, 1), ys[k]);
        }
        assert_eq!((p.sigma(3, 0), p.sigma(3, 1)), (1.0, 1.0));
        // In one dimension it is the same density as the univariate one.
        let column = [0.1, 0.2, 0.8];
        let one = ParzenN::fit(column.chunks(1), 1, weights(3));
        let uni = Parzen1::fit(&column, weights(3));
        let mut scratch = Vec::new();
        let ratio = |x: f64, s: &mut Vec<f64>| one.log_density(&[x], s).exp() / uni.density(x);
        let at_zero = ratio(0.0, &mut scratch);
        for x in [0.05, 0.15, 0.5, 0.79, 0.99] {
            assert!((ratio(x, &mut scratch) / at_zero - 1.0).abs() < 1e-6, "{x}");
        }
    }

    #[test]
    fn joint_draws_stay_near_one_kernel() {
        // Two tight clusters on the diagonal corners: a joint draw rarely
        // mixes the x of one with the y of the other (only from the two
        // kernels facing the gap, which the gap makes wide), where drawing
        // each coordinate on its own would mix half the time.
        let mut rows = Vec::new();
        for k in 0..20 {
            let e = k as f64 * 1e-3;
            rows.push([0.1 + e, 0.1 + e]);
            rows.push([0.9 - e, 0.9 - e]);
        }
        let mut w = vec![1.0; 41];
        w[40] = 0.0; // no prior, to see the kernels alone
        let total: f64 = w.iter().sum();
        w.iter_mut().for_each(|x| *x /= total);
        let p = ParzenN::fit(rows.iter().map(|r| &r[..]), 2, w);
        let mut rng = trial_rng(5, 5);
        let mixed = (0..1000)
            .filter(|_| {
                let x = p.sample(&mut rng);
                (x[0] < 0.5) != (x[1] < 0.5)
            })
            .count();
        assert!(mixed < 60, "{mixed} of 1000 mixed");
    }
}
