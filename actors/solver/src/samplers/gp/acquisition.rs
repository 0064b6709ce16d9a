//! Where the next trial goes: the point of largest log expected improvement.
//!
//! Expected improvement over the best told value `y*` (minimising) is
//! `EI = σ h(z)`, `z = (y* − μ) / σ`, `h(z) = φ(z) + z Φ(z)`. Far from the
//! data `h` underflows long before the search is over, so the search ranks
//! by `ln EI` computed stably (an asymptotic series for `z < −8`), as
//! Optuna 5's GP sampler and BoTorch's LogEI do: flat EI regions still
//! have a slope to climb.
//!
//! The search scores a scrambled Sobol design of candidates plus
//! perturbations of the best trials (the optimum is usually near one), then
//! refines the best few by projected gradient ascent on the numeric
//! coordinates (the exact gradient of the posterior mean and variance), and
//! keeps the best. Categorical coordinates stay at the centre of their
//! choice's cell.

use super::kernel::Dim;
use super::posterior::Posterior;
use crate::samplers::normal::{phi, standard};
use crate::samplers::{mix, sobol};
use rand_chacha::ChaCha8Rng;

/// `ln √(2π)`.
const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;

/// The largest value below 1: points stay in `[0, 1)`.
const BELOW_ONE: f64 = 1.0 - f64::EPSILON / 2.0;

/// Below this `z`, `ln h` and its derivatives come from the asymptotic
/// series (above, `φ + zΦ` loses about `z²` times `Φ`'s relative precision).
const TAIL: f64 = -8.0;

/// `ln h(z)`, and `Φ(z) / h(z)` and `φ(z) / h(z)` (the derivatives of
/// `ln h`'s arguments), stably for any `z`.
pub fn log_h(z: f64) -> (f64, f64, f64) {
    if z > TAIL {
        let pdf = (-0.5 * z * z - LN_SQRT_2PI).exp();
        let cdf = phi(z);
        let h = (pdf + z * cdf).max(f64::MIN_POSITIVE);
        return (h.ln(), cdf / h, pdf / h);
    }
    // h(z) ≈ φ(z)/z² Σ (−1)^k (2k+1)!! / z^2k and
    // Φ(z) ≈ φ(z)/|z| Σ (−1)^k (2k−1)!! / z^2k: at z = −8 the first
    // omitted terms are ~1e-5 of the sums, as is the direct formula's
    // cancellation there.
    let z2 = z * z;
    let series = |coefficients: [f64; 5]| {
        coefficients
            .iter()
            .rev()
            .fold(0.0, |acc, c| acc * (-1.0 / z2) + c)
    };
    let series_h = series([1.0, 3.0, 15.0, 105.0, 945.0]);
    let series_cdf = series([1.0, 1.0, 3.0, 15.0, 105.0]);
    let ln_h = -0.5 * z2 - LN_SQRT_2PI - z2.ln() + series_h.ln();
    (ln_h, -z * series_cdf / series_h, z2 / series_h)
}

/// `ln Φ(z)` and `φ(z) / Φ(z)` (its derivative), stably for any `z`.
pub fn log_cdf(z: f64) -> (f64, f64) {
    if z > TAIL {
        let pdf = (-0.5 * z * z - LN_SQRT_2PI).exp();
        let cdf = phi(z).max(f64::MIN_POSITIVE);
        return (cdf.ln(), pdf / cdf);
    }
    // Φ(z) ≈ φ(z)/|z| Σ (−1)^k (2k−1)!! / z^2k, as in `log_h`.
    let z2 = z * z;
    let series = [1.0, 1.0, 3.0, 15.0, 105.0]
        .iter()
        .rev()
        .fold(0.0, |acc, c| acc * (-1.0 / z2) + c);
    let ln_cdf = -0.5 * z2 - LN_SQRT_2PI - (-z).ln() + f64::ln(series);
    (ln_cdf, -z / series)
}

/// What the search maximises: `ln EI` of the objective's posterior over
/// the best feasible value, plus, for a constrained study, the log
/// probability that the constraint margin's posterior is at most its
/// threshold (Optuna's constrained log EI; `ln EI` is left out while no
/// trial is feasible, so the search looks for feasibility first).
#[derive(Clone, Copy)]
pub struct Acquisition<'a> {
    /// The objective's posterior (standardised values).
    pub post: &'a Posterior<'a>,
    /// The best feasible standardised value; `None` while none is feasible.
    pub best: Option<f64>,
    /// The constraint margin's posterior (standardised) and where 0 falls
    /// on its scale; `None` without constraints.
    pub constraint: Option<(&'a Posterior<'a>, f64)>,
}

impl Acquisition<'_> {
    /// The score of each point of `xs` (flat).
    fn score_many(&self, xs: &[f64]) -> Vec<f64> {
        let mut scores: Vec<f64> = match self.best {
            Some(best) => self
                .post
                .predict_many(xs)
                .into_iter()
                .map(|(m, v)| log_ei(best, m, v))
                .collect(),
            None => vec![0.0; xs.len() / self.post.dimensions().max(1)],
        };
        if let Some((post, threshold)) = self.constraint {
            for (score, (m, v)) in scores.iter_mut().zip(post.predict_many(xs)) {
                *score += log_cdf((threshold - m) / v.sqrt()).0;
            }
        }
        scores
    }

    /// The score at `x` and its gradient along the numeric coordinates.
    fn score_with_gradient(&self, x: &[f64]) -> (f64, Vec<f64>) {
        let (mut score, mut grad) = match self.best {
            Some(best) => log_ei_with_gradient(self.post, best, x),
            None => (0.0, vec![0.0; x.len()]),
        };
        if let Some((post, threshold)) = self.constraint {
            let (mean, var, dmean, dvar) = post.predict_with_gradient(x);
            let sd = var.sqrt();
            let z = (threshold - mean) / sd;
            let (ln_cdf, pdf_over_cdf) = log_cdf(z);
            score += ln_cdf;
            for ((g, dm), dv) in grad.iter_mut().zip(&dmean).zip(&dvar) {
                let dz = -dm / sd - z * dv / (2.0 * var);
                *g += pdf_over_cdf * dz;
            }
        }
        (score, grad)
    }
}

/// `ln EI` at a posterior mean and variance, given the best value.
pub fn log_ei(best: f64, mean: f64, var: f64) -> f64 {
    let sd = var.sqrt();
    sd.ln() + log_h((best - mean) / sd).0
}

/// How hard the search looks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Search {
    /// Sobol candidates scored.
    pub candidates: usize,
    /// Perturbations of each of the best trials scored.
    pub local: usize,
    /// Best candidates refined by gradient ascent.
    pub refine: usize,
    /// Gradient steps per refined candidate.
    pub steps: usize,
}

/// The point to try next: the best `ln EI` found (see the module docs).
/// `incumbents` are the best told points, best first.
pub fn next_point(
    acquisition: &Acquisition,
    dims: &[Dim],
    incumbents: &[&[f64]],
    search: &Search,
    (seed, number): (u64, u64),
    rng: &mut ChaCha8Rng,
) -> Vec<f64> {
    let d = dims.len();
    let snap = |x: &mut [f64]| {
        for (u, dim) in x.iter_mut().zip(dims) {
            *u = dim.snap(u.clamp(0.0, BELOW_ONE));
        }
    };
    let mut xs: Vec<f64> =
        Vec::with_capacity((search.candidates + incumbents.len() * search.local) * d);
    let design = mix(seed ^ mix(number));
    for i in 1..=search.candidates as u64 {
        xs.extend(sobol::point(design, i, d));
    }
    for x in incumbents {
        for _ in 0..search.local {
            let mut p: Vec<f64> = x.iter().map(|u| u + 0.05 * standard(rng)).collect();
            snap(&mut p);
            xs.extend(p);
        }
    }
    let scores = acquisition.score_many(&xs);
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut winner = (f64::NEG_INFINITY, Vec::new());
    for &c in order.iter().take(search.refine.max(1)) {
        let (score, x) = ascend(
            acquisition,
            dims,
            xs[c * d..(c + 1) * d].to_vec(),
            scores[c],
            search.steps,
        );
        if score > winner.0 {
            winner = (score, x);
        }
    }
    snap(&mut winner.1);
    winner.1
}

/// `ln EI` at `x` and its gradient along the numeric coordinates.
fn log_ei_with_gradient(post: &Posterior, best: f64, x: &[f64]) -> (f64, Vec<f64>) {
    let (mean, var, dmean, dvar) = post.predict_with_gradient(x);
    let sd = var.sqrt();
    let (ln_h, cdf_over_h, pdf_over_h) = log_h((best - mean) / sd);
    let (by_mean, by_sd) = (-cdf_over_h / sd, pdf_over_h / sd);
    let grad = dmean
        .iter()
        .zip(&dvar)
        .map(|(dm, dv)| by_mean * dm + by_sd * dv / (2.0 * sd))
        .collect();
    (sd.ln() + ln_h, grad)
}

/// Projected gradient ascent from `x` (score `score`) inside the cube: a
/// step that improves is taken and the next tried twice as long; one that
/// does not is halved.
fn ascend(
    acquisition: &Acquisition,
    dims: &[Dim],
    mut x: Vec<f64>,
    mut score: f64,
    steps: usize,
) -> (f64, Vec<f64>) {
    let mut step = 0.02;
    let (_, mut grad) = acquisition.score_with_gradient(&x);
    for _ in 0..steps {
        let norm = grad.iter().map(|g| g * g).sum::<f64>().sqrt();
        // A NaN norm stops too.
        if norm.is_nan() || norm <= 1e-12 || step < 1e-7 {
            break;
        }
        let trial: Vec<f64> = x
            .iter()
            .zip(&grad)
            .zip(dims)
            .map(|((u, g), dim)| match dim {
                Dim::Numeric => (u + step * g / norm).clamp(0.0, BELOW_ONE),
                Dim::Categorical(_) => *u,
            })
            .collect();
        let (s, g) = acquisition.score_with_gradient(&trial);
        if s > score {
            (x, score, grad) = (trial, s, g);
            step *= 2.0;
        } else {
            step *= 0.5;
        }
    }
    (score, x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_h_is_continuous_at_the_tail_and_its_ratios_are_right() {
        let (inside, _, _) = log_h(TAIL + 1e-9);
        let (tail, _, _) = log_h(TAIL - 1e-9);
        assert!((inside - tail).abs() < 1e-4, "{inside} vs {tail}");
        for z in [-30.0, -6.0, -2.0, 0.0, 1.5] {
            let h = 1e-6;
            let numeric = (log_h(z + h).0 - log_h(z - h).0) / (2.0 * h);
            // d ln h / dz = Φ / h.
            assert!(
                (numeric - log_h(z).1).abs() < 1e-3 * (1.0 + numeric.abs()),
                "{z}"
            );
        }
        assert!(log_h(-40.0).0.is_finite());
    }

    #[test]
    fn ei_prefers_a_low_mean_and_then_a_wide_spread() {
        assert!(log_ei(0.0, -1.0, 0.1) > log_ei(0.0, 1.0, 0.1));
        assert!(log_ei(0.0, 1.0, 1.0) > log_ei(0.0, 1.0, 0.01));
    }
}
