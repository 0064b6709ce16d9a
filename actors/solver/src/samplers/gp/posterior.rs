//! The GP posterior: the kernel's Gram matrix factorised once (Cholesky),
//! then the mean and variance — and their gradients — anywhere.

use super::kernel::{matern, Dim, Kernel};
use nalgebra::{Cholesky, DMatrix, DVector, Dyn};

/// A GP conditioned on points (flat, `d` per point) and standardised values.
pub struct Posterior<'a> {
    dims: &'a [Dim],
    kernel: &'a Kernel,
    points: Vec<f64>,
    chol: Cholesky<f64, Dyn>,
    /// `Lᵀ`, whose columns are the rows of `L` the substitution multiplies by.
    lt: DMatrix<f64>,
    alpha: DVector<f64>,
}

/// Rows of `V` solved per block of [`forward_substitute`].
const BLOCK: usize = 32;

/// Solves `L X = Vᵀ` in place for `X`, `v` holding `Vᵀ` (one column per
/// row of `L`, one row per right-hand side): block by block of `L`'s rows,
/// first subtracting what the solved blocks explain (one matrix product),
/// then forward substitution within the block.
fn forward_substitute(l: &DMatrix<f64>, lt: &DMatrix<f64>, v: &mut DMatrix<f64>) {
    let n = l.nrows();
    for start in (0..n).step_by(BLOCK) {
        let end = (start + BLOCK).min(n);
        if start > 0 {
            let (solved, mut block) = v.columns_range_pair_mut(0..start, start..end);
            let l_block = lt.view((0, start), (start, end - start));
            block.gemm(-1.0, &solved, &l_block, 1.0);
        }
        for i in start..end {
            for j in start..i {
                let (solved, mut row) = v.columns_range_pair_mut(j, i);
                row.axpy(-l[(i, j)], &solved, 1.0);
            }
            let lii = l[(i, i)];
            v.column_mut(i).apply(|x| *x /= lii);
        }
    }
}

/// The covariance matrix of `points` under `kernel`, noise on the diagonal.
pub fn gram(dims: &[Dim], kernel: &Kernel, points: &[f64]) -> DMatrix<f64> {
    let d = dims.len();
    let n = points.len() / d.max(1);
    let mut k = DMatrix::<f64>::zeros(n, n);
    for i in 0..n {
        let a = &points[i * d..(i + 1) * d];
        for j in 0..i {
            let v = kernel.at(kernel.r2(dims, a, &points[j * d..(j + 1) * d]));
            k[(i, j)] = v;
            k[(j, i)] = v;
        }
        k[(i, i)] = kernel.scale + kernel.noise;
    }
    k
}

impl<'a> Posterior<'a> {
    /// The posterior given `values` at `points`; `None` when the Gram matrix
    /// is not positive definite (the caller falls back to exploring).
    pub fn new(
        dims: &'a [Dim],
        kernel: &'a Kernel,
        points: Vec<f64>,
        values: &[f64],
    ) -> Option<Self> {
        let chol = gram(dims, kernel, &points).cholesky()?;
        let alpha = chol.solve(&DVector::from_column_slice(values));
        let lt = chol.l_dirty().transpose();
        Some(Posterior {
            dims,
            kernel,
            points,
            chol,
            lt,
            alpha,
        })
    }

    /// How many coordinates a point has.
    pub fn dimensions(&self) -> usize {
        self.dims.len()
    }

    fn len(&self) -> usize {
        self.alpha.len()
    }

    fn point(&self, i: usize) -> &[f64] {
        let d = self.dims.len();
        &self.points[i * d..(i + 1) * d]
    }

    /// `k(x, x_i)` for every conditioning point, and `dm/d(r²)` at each.
    fn cross(&self, x: &[f64]) -> (DVector<f64>, Vec<f64>) {
        let n = self.len();
        let mut k = DVector::<f64>::zeros(n);
        let mut dm = vec![0.0; n];
        for i in 0..n {
            let (m, d) = matern(self.kernel.r2(self.dims, x, self.point(i)));
            k[i] = self.kernel.scale * m;
            dm[i] = self.kernel.scale * d;
        }
        (k, dm)
    }

    /// The posterior mean and (latent, noise-free) variance at each point of
    /// `xs` (flat), batched: `V = L⁻¹ K*` for all candidates at once by a
    /// blocked forward substitution (most of it matrix products), and
    /// `σ² = s − Σ V²` per candidate.
    pub fn predict_many(&self, xs: &[f64]) -> Vec<(f64, f64)> {
        let d = self.dims.len();
        let m = xs.len() / d.max(1);
        let n = self.len();
        // Candidate × point, so each point's column is contiguous.
        let mut v = DMatrix::<f64>::zeros(m, n);
        for i in 0..n {
            let p = self.point(i);
            for (c, k) in v.column_mut(i).iter_mut().enumerate() {
                *k = self
                    .kernel
                    .at(self.kernel.r2(self.dims, &xs[c * d..(c + 1) * d], p));
            }
        }
        let means = &v * &self.alpha;
        forward_substitute(self.chol.l_dirty(), &self.lt, &mut v);
        let mut explained = DVector::<f64>::zeros(m);
        for column in v.column_iter() {
            explained.zip_apply(&column, |e, x| *e += x * x);
        }
        means
            .iter()
            .zip(explained.iter())
            .map(|(&mean, e)| (mean, (self.kernel.scale - e).max(1e-12)))
            .collect()
    }

    /// The mean and variance at `x` with their gradients along `x`'s
    /// numeric coordinates (0 along categorical ones).
    pub fn predict_with_gradient(&self, x: &[f64]) -> (f64, f64, Vec<f64>, Vec<f64>) {
        let (k, dm) = self.cross(x);
        let mean = k.dot(&self.alpha);
        let w = self.chol.solve(&k);
        let var = (self.kernel.scale - k.dot(&w)).max(1e-12);
        let d = self.dims.len();
        let (mut dmean, mut dvar) = (vec![0.0; d], vec![0.0; d]);
        for i in 0..self.len() {
            let p = self.point(i);
            for q in 0..d {
                if self.dims[q] != Dim::Numeric {
                    continue;
                }
                let dk = dm[i] * self.kernel.inverse_lengths[q] * 2.0 * (x[q] - p[q]);
                dmean[q] += self.alpha[i] * dk;
                dvar[q] -= 2.0 * w[i] * dk;
            }
        }
        (mean, var, dmean, dvar)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel(d: usize) -> Kernel {
        Kernel {
            inverse_lengths: vec![4.0; d],
            scale: 1.0,
            noise: 1e-6,
        }
    }

    #[test]
    fn it_interpolates_its_data_and_is_uncertain_far_from_it() {
        let dims = [Dim::Numeric, Dim::Numeric];
        let k = kernel(2);
        let points = vec![0.1, 0.1, 0.9, 0.9, 0.5, 0.2];
        let values = [1.0, -1.0, 0.5];
        let post = Posterior::new(&dims, &k, points.clone(), &values).unwrap();
        let at = post.predict_many(&points);
        for (i, (mean, var)) in at.iter().enumerate() {
            assert!((mean - values[i]).abs() < 1e-4, "{i}: {mean}");
            assert!(*var < 1e-4, "{i}: {var}");
        }
        let (_, far) = post.predict_many(&[0.1, 0.95])[0];
        assert!(far > 0.3, "{far}");
    }

    #[test]
    fn batched_predictions_match_one_at_a_time_across_blocks() {
        // 80 points: three blocks of the substitution, two of them after a
        // matrix product.
        let dims = [Dim::Numeric, Dim::Numeric, Dim::Numeric];
        let k = kernel(3);
        let golden = |i: usize, q: usize| (i as f64 * [0.618, 0.414, 0.732][q]) % 1.0;
        let points: Vec<f64> = (0..80)
            .flat_map(|i| (0..3).map(move |q| golden(i, q)))
            .collect();
        let values: Vec<f64> = points
            .chunks(3)
            .map(|p| (5.0 * p[0]).sin() + p[1])
            .collect();
        let post = Posterior::new(&dims, &k, points, &values).unwrap();
        let xs: Vec<f64> = (0..37)
            .flat_map(|c| (0..3).map(move |q| golden(c + 500, q)))
            .collect();
        for (c, (mean, var)) in post.predict_many(&xs).into_iter().enumerate() {
            let (m, v, _, _) = post.predict_with_gradient(&xs[c * 3..(c + 1) * 3]);
            assert!((mean - m).abs() < 1e-9 && (var - v).abs() < 1e-9, "{c}");
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let dims = [Dim::Numeric, Dim::Categorical(3), Dim::Numeric];
        let k = Kernel {
            inverse_lengths: vec![3.0, 0.5, 8.0],
            scale: 1.3,
            noise: 1e-4,
        };
        let points = vec![0.1, 0.2, 0.3, 0.7, 0.5, 0.9, 0.4, 0.9, 0.5, 0.2, 0.1, 0.6];
        let post = Posterior::new(&dims, &k, points, &[0.3, -0.2, 1.0, 0.1]).unwrap();
        let x = [0.35, 0.1, 0.55];
        let (mean, var, dmean, dvar) = post.predict_with_gradient(&x);
        let batched = post.predict_many(&x)[0];
        assert!((batched.0 - mean).abs() < 1e-12 && (batched.1 - var).abs() < 1e-9);
        for q in [0, 2] {
            let h = 1e-6;
            let (mut up, mut down) = (x, x);
            up[q] += h;
            down[q] -= h;
            let (mu_up, var_up, _, _) = post.predict_with_gradient(&up);
            let (mu_down, var_down, _, _) = post.predict_with_gradient(&down);
            assert!(
                ((mu_up - mu_down) / (2.0 * h) - dmean[q]).abs() < 1e-5,
                "{q}"
            );
            assert!(
                ((var_up - var_down) / (2.0 * h) - dvar[q]).abs() < 1e-5,
                "{q}"
            );
        }
        assert_eq!(dmean[1], 0.0);
    }
}
