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
    alpha: DVector<f64>,
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
        Some(Posterior {
            dims,
            kernel,
            points,
            chol,
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
    /// `xs` (flat), batched: `V = L⁻¹ K*` by one forward substitution over
    /// rows of all candidates at once (contiguous, so it vectorises), and
    /// `σ² = s − Σ V²` per candidate.
    pub fn predict_many(&self, xs: &[f64]) -> Vec<(f64, f64)> {
        let d = self.dims.len();
        let m = xs.len() / d.max(1);
        let n = self.len();
        // Row i: k(x_c, x_i) for every candidate c.
        let mut v = vec![0.0; n * m];
        for i in 0..n {
            let p = self.point(i);
            for c in 0..m {
                v[i * m + c] =
                    self.kernel
                        .at(self.kernel.r2(self.dims, &xs[c * d..(c + 1) * d], p));
            }
        }
        let mut means = vec![0.0; m];
        for i in 0..n {
            let a = self.alpha[i];
            for (mean, k) in means.iter_mut().zip(&v[i * m..(i + 1) * m]) {
                *mean += a * k;
            }
        }
        let l = self.chol.l_dirty();
        for i in 0..n {
            let (done, rest) = v.split_at_mut(i * m);
            let row = &mut rest[..m];
            for j in 0..i {
                let lij = l[(i, j)];
                for (x, y) in row.iter_mut().zip(&done[j * m..(j + 1) * m]) {
                    *x -= lij * y;
                }
            }
            let lii = l[(i, i)];
            row.iter_mut().for_each(|x| *x /= lii);
        }
        let mut explained = vec![0.0; m];
        for i in 0..n {
            for (e, x) in explained.iter_mut().zip(&v[i * m..(i + 1) * m]) {
                *e += x * x;
            }
        }
        means
            .into_iter()
            .zip(explained)
            .map(|(mean, e)| (mean, (self.kernel.scale - e).max(1e-12)))
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
