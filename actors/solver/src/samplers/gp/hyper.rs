//! The kernel's hyperparameters, fitted by maximising the marginal
//! likelihood times a prior (MAP), and the fold that refits them as a
//! study's history grows.
//!
//! The parameters are optimised in log space — `ln λ_d` per dimension,
//! `ln s`, and `ln(noise − MIN_NOISE)` — by L-BFGS (argmin) with the exact
//! gradient of the log marginal likelihood,
//! `½ tr((ααᵀ − K⁻¹) ∂K/∂θ)` with `α = K⁻¹ y`. The priors are Optuna's GP
//! sampler's: `−(0.1/λ + 0.1 λ)` per inverse squared length scale (neither
//! a length scale that sees only noise nor one longer than the cube), a
//! Gamma(2, 1) on the signal variance of the standardised values and a
//! Gamma(1.1, 30) on the noise, which keeps it small unless the data insist.
//!
//! # A fold, so replays are exact
//!
//! A fit from scratch on every ask would cost tens of optimiser steps of
//! `O(n³)` each. So the fit is a fold over the history, like CMA-ES's
//! generations: walking the told trials in number order, each one (from
//! the `n_startup`-th on) moves the fit a few L-BFGS steps further on the
//! told trials so far (the last [`MAX_FIT_POINTS`] of them), starting
//! where the previous one left it. The hyperparameters a trial uses are
//! the fold's: a function of the history alone, which the process-wide
//! [`memo`](crate::samplers::memo) resumes from its last checkpoint, so an
//! ask pays one fold step. A trial told late (out of order) changes the
//! history from its index on, and the steps after it are redone.

use super::kernel::{Dim, Kernel};
use crate::samplers::memo;
use crate::samplers::History;
use argmin::core::{CostFunction, Error, Executor, Gradient, State};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;
use nalgebra::{DMatrix, DVector};
use std::cell::RefCell;
use std::sync::Arc;

/// The smallest noise variance (on standardised values): keeps the Gram
/// matrix invertible when two trials sit on the same point.
pub const MIN_NOISE: f64 = 1e-6;

/// Optimiser steps per told trial while the history is short (fits are
/// cheap there and the hyperparameters still move a lot).
const EARLY_ITERATIONS: u64 = 10;
/// Told trials up to which [`EARLY_ITERATIONS`] apply.
const EARLY_TRIALS: usize = 40;
/// Optimiser steps per told trial after that: the fit follows the data as
/// it grows, a few steps at a time.
const LATE_ITERATIONS: u64 = 1;
/// The most told trials (the most recent) a fit step looks at: the
/// hyperparameters need far fewer points than the posterior, and a step
/// costs `O(n³)` in them.
pub const MAX_FIT_POINTS: usize = 120;

/// Where the first fit starts: unit length scales, unit signal variance,
/// a little noise.
fn initial(d: usize) -> Vec<f64> {
    let mut theta = vec![0.0; d + 2];
    theta[d + 1] = (1e-2f64).ln();
    theta
}

/// The kernel that `theta` (log space) encodes.
pub fn kernel_of(theta: &[f64]) -> Kernel {
    let d = theta.len() - 2;
    Kernel {
        inverse_lengths: theta[..d].iter().map(|t| t.exp()).collect(),
        scale: theta[d].exp(),
        noise: MIN_NOISE + theta[d + 1].exp(),
    }
}

/// Values standardised to mean 0 and variance 1 (a constant set stays 0).
pub fn standardise(values: &[f64]) -> Vec<f64> {
    let (mean, sd) = moments(values);
    values.iter().map(|v| (v - mean) / sd).collect()
}

/// The mean and standard deviation [`standardise`] uses (1 for a
/// constant).
pub fn moments(values: &[f64]) -> (f64, f64) {
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    (mean, if var > 0.0 { var.sqrt() } else { 1.0 })
}

/// The negative log posterior of `theta` given the data, and its gradient.
struct Objective<'a> {
    dims: &'a [Dim],
    /// `Δ_d²` of every pair `j < i`, `d` per pair, row by row: the same for
    /// every candidate hyperparameter, so computed once per fit.
    distances: Vec<f64>,
    values: DVector<f64>,
    last: RefCell<Option<Evaluation>>,
}

/// A point's bits, its cost and its gradient.
type Evaluation = (Vec<u64>, f64, Vec<f64>);

/// `Δ_d²` of every pair `j < i` of `points`, `d` per pair, row by row.
fn pair_distances(dims: &[Dim], points: &[f64]) -> Vec<f64> {
    let d = dims.len();
    let n = points.len() / d.max(1);
    let mut out = Vec::with_capacity(n * n.saturating_sub(1) / 2 * d);
    for i in 0..n {
        for j in 0..i {
            for q in 0..d {
                out.push(dims[q].distance2(points[i * d + q], points[j * d + q]));
            }
        }
    }
    out
}

impl<'a> Objective<'a> {
    fn new(dims: &'a [Dim], points: &'a [f64], values: &[f64]) -> Self {
        Objective {
            dims,
            distances: pair_distances(dims, points),
            values: DVector::from_vec(standardise(values)),
            last: RefCell::new(None),
        }
    }

    /// Pair number `pair`'s `Δ_d²` and its `r²` under `kernel`.
    fn pair(&self, pair: usize, kernel: &Kernel) -> (&[f64], f64) {
        let d = self.dims.len();
        let d2 = &self.distances[pair * d..(pair + 1) * d];
        let r2 = d2
            .iter()
            .zip(&kernel.inverse_lengths)
            .map(|(x, l)| x * l)
            .sum();
        (d2, r2)
    }

    /// The Gram matrix under `kernel`, from the stored distances.
    fn gram(&self, kernel: &Kernel) -> DMatrix<f64> {
        let n = self.values.len();
        let mut k = DMatrix::<f64>::zeros(n, n);
        let mut pair = 0;
        for i in 0..n {
            for j in 0..i {
                let (_, r2) = self.pair(pair, kernel);
                pair += 1;
                let v = kernel.at(r2);
                k[(i, j)] = v;
                k[(j, i)] = v;
            }
            k[(i, i)] = kernel.scale + kernel.noise;
        }
        k
    }
}

impl Objective<'_> {
    /// Cost and gradient at `theta`, computed once per point (the line
    /// search asks for both).
    fn eval(&self, theta: &[f64]) -> (f64, Vec<f64>) {
        let bits: Vec<u64> = theta.iter().map(|t| t.to_bits()).collect();
        if let Some((b, c, g)) = &*self.last.borrow() {
            if *b == bits {
                return (*c, g.clone());
            }
        }
        let (cost, grad) = self.negative_log_posterior(theta);
        *self.last.borrow_mut() = Some((bits, cost, grad.clone()));
        (cost, grad)
    }

    fn negative_log_posterior(&self, theta: &[f64]) -> (f64, Vec<f64>) {
        let d = self.dims.len();
        let kernel = kernel_of(theta);
        let n = self.values.len();
        let Some(chol) = self.gram(&kernel).cholesky() else {
            return (f64::INFINITY, vec![0.0; d + 2]);
        };
        let alpha = chol.solve(&self.values);
        let l = chol.l_dirty();
        let kinv = inverse_of_factor(l);
        let log_det: f64 = (0..n).map(|i| 2.0 * l[(i, i)].ln()).sum();
        let mut log_p = -0.5 * self.values.dot(&alpha) - 0.5 * log_det;
        let mut grad = vec![0.0; d + 2];
        let mut pair = 0;
        for i in 0..n {
            for j in 0..i {
                let (d2, r2) = self.pair(pair, &kernel);
                pair += 1;
                // Both triangles: ½ · 2.
                let w = alpha[i] * alpha[j] - kinv[(i, j)];
                let (m, dm) = super::kernel::matern(r2);
                grad[d] += w * kernel.scale * m;
                for q in 0..d {
                    grad[q] += w * kernel.scale * dm * kernel.inverse_lengths[q] * d2[q];
                }
            }
            let w = 0.5 * (alpha[i] * alpha[i] - kinv[(i, i)]);
            grad[d] += w * kernel.scale;
            grad[d + 1] += w * (kernel.noise - MIN_NOISE);
        }
        // The priors (constants dropped) and their gradients in log space.
        for (g, &lambda) in grad.iter_mut().zip(&kernel.inverse_lengths) {
            log_p -= 0.1 / lambda + 0.1 * lambda;
            *g += 0.1 / lambda - 0.1 * lambda;
        }
        log_p += kernel.scale.ln() - kernel.scale;
        grad[d] += 1.0 - kernel.scale;
        let noise = kernel.noise;
        log_p += 0.1 * noise.ln() - 30.0 * noise;
        grad[d + 1] += (0.1 / noise - 30.0) * (noise - MIN_NOISE);
        if !log_p.is_finite() {
            return (f64::INFINITY, vec![0.0; d + 2]);
        }
        (-log_p, grad.into_iter().map(|g| -g).collect())
    }
}

/// The lower triangle (with the diagonal) of `K⁻¹ = L⁻ᵀ L⁻¹` from the
/// Cholesky factor `L` (its lower triangle); the upper one is left 0, as
/// the gradient reads each pair once. `L⁻¹` by forward substitution, then
/// `K⁻¹_ij = Σ_{k ≥ i} L⁻¹_ki L⁻¹_kj` for `j ≤ i`: `n³/6` multiplications
/// each, a sixth of a full matrix product.
fn inverse_of_factor(l: &DMatrix<f64>) -> DMatrix<f64> {
    let n = l.nrows();
    let mut inv = DMatrix::<f64>::zeros(n, n);
    for j in 0..n {
        // Column j of L⁻¹ solves L x = e_j; walking L by columns keeps the
        // inner loop on contiguous memory.
        let mut x = inv.column_mut(j);
        x[j] = 1.0;
        for k in j..n {
            x[k] /= l[(k, k)];
            let xk = x[k];
            let column = l.column(k);
            for i in k + 1..n {
                x[i] -= column[i] * xk;
            }
        }
    }
    let mut kinv = DMatrix::<f64>::zeros(n, n);
    for i in 0..n {
        let below = inv.column(i).rows_range(i..).clone_owned();
        for j in 0..=i {
            kinv[(i, j)] = below.dot(&inv.column(j).rows_range(i..));
        }
    }
    kinv
}

impl CostFunction for Objective<'_> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, theta: &Self::Param) -> Result<f64, Error> {
        Ok(self.eval(theta).0)
    }
}

impl Gradient for Objective<'_> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;

    fn gradient(&self, theta: &Self::Param) -> Result<Vec<f64>, Error> {
        Ok(self.eval(theta).1)
    }
}

/// The MAP hyperparameters (log space) for `values` at `points`, from
/// `start`, in at most `iterations` L-BFGS steps; `start` itself if the
/// optimiser fails or makes nothing better.
pub fn fit(
    dims: &[Dim],
    points: &[f64],
    values: &[f64],
    start: &[f64],
    iterations: u64,
) -> Vec<f64> {
    let problem = Objective::new(dims, points, values);
    let start_cost = problem.eval(start).0;
    let solved = MoreThuenteLineSearch::new()
        .with_bounds(1e-12, 10.0)
        .and_then(|search| LBFGS::new(search, 7).with_tolerance_grad(1e-5))
        .and_then(|solver| {
            Executor::new(problem, solver)
                .configure(|state| state.param(start.to_vec()).max_iters(iterations))
                .timer(false)
                .run()
        });
    match solved {
        Ok(result) => {
            let state = result.state();
            match state.get_best_param() {
                Some(best) if state.get_best_cost() < start_cost => best.clone(),
                _ => start.to_vec(),
            }
        }
        Err(_) => start.to_vec(),
    }
}

/// The fold of fit steps over a history (see the module docs).
#[derive(Debug, Clone)]
pub struct Refits {
    dims: Arc<Vec<Dim>>,
    /// The fit so far, in log space.
    pub theta: Vec<f64>,
    /// Told trials folded so far (those before `upto`).
    told: usize,
    /// Told trials before the first fit step.
    n_startup: usize,
    upto: usize,
}

impl Refits {
    /// Before any fit: the first step happens at `n_startup` told trials.
    pub fn start(dims: Arc<Vec<Dim>>, n_startup: usize) -> Self {
        let d = dims.len();
        Refits {
            dims,
            theta: initial(d),
            told: 0,
            n_startup: n_startup.max(2),
            upto: 0,
        }
    }

    /// A few optimiser steps on the told trials up to entry `last`.
    fn step(&mut self, history: &History, last: usize) {
        let (points, values) = recent_told(history, last + 1, MAX_FIT_POINTS);
        let iterations = if self.told <= EARLY_TRIALS {
            EARLY_ITERATIONS
        } else {
            LATE_ITERATIONS
        };
        self.theta = fit(&self.dims, &points, &values, &self.theta, iterations);
    }
}

impl memo::Fold for Refits {
    fn upto(&self) -> usize {
        self.upto
    }

    fn advance(&mut self, history: &History, boundary: &mut dyn FnMut(&Self)) {
        for i in self.upto..history.len() {
            if history.value(i).is_none() {
                continue;
            }
            self.told += 1;
            if self.told >= self.n_startup {
                self.step(history, i);
            }
            self.upto = i + 1;
            boundary(self);
        }
    }
}

/// The points (flat) and values of the last `most` told entries before
/// entry `end`, in trial order.
pub fn recent_told(history: &History, end: usize, most: usize) -> (Vec<f64>, Vec<f64>) {
    let mut told: Vec<usize> = (0..end)
        .rev()
        .filter(|&i| history.value(i).is_some())
        .take(most)
        .collect();
    told.reverse();
    let points = told
        .iter()
        .flat_map(|&i| history.point(i).to_vec())
        .collect();
    let values = told.iter().filter_map(|&i| history.value(i)).collect();
    (points, values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gradient_matches_finite_differences() {
        let dims = [Dim::Numeric, Dim::Categorical(2), Dim::Numeric];
        let points = vec![
            0.1, 0.2, 0.3, 0.7, 0.6, 0.9, 0.4, 0.9, 0.5, 0.2, 0.1, 0.6, 0.8, 0.3, 0.1,
        ];
        let problem = Objective::new(&dims, &points, &[0.3, -0.2, 1.0, 0.1, 0.7]);
        let theta = vec![0.3, -0.5, 1.1, 0.2, -3.0];
        let (_, grad) = problem.negative_log_posterior(&theta);
        for q in 0..theta.len() {
            let h = 1e-6;
            let (mut up, mut down) = (theta.clone(), theta.clone());
            up[q] += h;
            down[q] -= h;
            let numeric = (problem.negative_log_posterior(&up).0
                - problem.negative_log_posterior(&down).0)
                / (2.0 * h);
            assert!(
                (numeric - grad[q]).abs() < 1e-4 * (1.0 + numeric.abs()),
                "{q}: {numeric} vs {}",
                grad[q]
            );
        }
    }

    #[test]
    fn the_gram_matrix_from_stored_distances_is_the_posteriors() {
        let dims = [Dim::Numeric, Dim::Categorical(3)];
        let points = [0.1, 0.2, 0.5, 0.9, 0.3, 0.3, 0.8, 0.1];
        let theta = [1.0, 0.5, 0.0, -4.0];
        let problem = Objective::new(&dims, &points, &[1.0, 2.0, 3.0, 4.0]);
        let expected = super::super::posterior::gram(&dims, &kernel_of(&theta), &points);
        assert!((problem.gram(&kernel_of(&theta)) - expected).abs().max() < 1e-15);
    }

    #[test]
    fn the_inverse_from_the_factor_is_the_inverse() {
        let dims = [Dim::Numeric, Dim::Numeric];
        let kernel = kernel_of(&[1.0, 0.5, 0.0, -4.0]);
        let points = [0.1, 0.2, 0.5, 0.9, 0.3, 0.3, 0.8, 0.1, 0.6, 0.6];
        let k = super::super::posterior::gram(&dims, &kernel, &points);
        let chol = k.clone().cholesky().unwrap();
        let ours = inverse_of_factor(chol.l_dirty());
        assert!((ours - chol.inverse().lower_triangle()).abs().max() < 1e-9);
    }

    #[test]
    fn a_fit_finds_the_relevant_dimension() {
        // y depends on x0 only: x1's length scale should grow (λ shrink).
        let mut points = Vec::new();
        let mut values = Vec::new();
        for i in 0..30 {
            let x0 = (i as f64 * 0.618_033_988_7) % 1.0;
            let x1 = (i as f64 * 0.414_213_562_3) % 1.0;
            points.extend([x0, x1]);
            values.push((6.0 * x0).sin());
        }
        let dims = [Dim::Numeric, Dim::Numeric];
        let theta = fit(&dims, &points, &values, &initial(2), 60);
        let k = kernel_of(&theta);
        assert!(k.inverse_lengths[0] > 5.0 * k.inverse_lengths[1], "{k:?}");
        assert!(k.noise < 1e-2, "{k:?}");
    }
}
