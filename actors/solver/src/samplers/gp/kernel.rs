//! The GP's covariance: a Matérn-5/2 kernel with one length scale per
//! dimension (ARD) on the unit cube.
//!
//! `k(a, b) = s · m(r)`, `m(r) = (1 + √5 r + 5/3 r²) e^(−√5 r)`, with
//! `r² = Σ_d λ_d Δ_d²`, where `λ_d` is dimension `d`'s inverse squared
//! length scale and `Δ_d` the distance along it: `a_d − b_d` for a numeric
//! parameter (log-scale ones are already uniform in `ln x` in the unit
//! cube), and 0 or 1 for a categorical one — the same choice or not, so the
//! model never reads an order into the choices (Optuna's GP does the same).
//! Matérn-5/2 is twice differentiable, which suits hyperparameter response
//! surfaces better than the squared exponential's infinite smoothness.

use crate::samplers::normal::{exp_kernel, FAR};
use flotilla_messages::solver::{ParamKind, StudyConfig};

/// `√5`.
const SQRT5: f64 = 2.236_067_977_499_79;

/// How one coordinate of the unit cube is compared.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Dim {
    /// A number: by its difference.
    Numeric,
    /// A categorical with this many choices: equal or not.
    Categorical(usize),
}

impl Dim {
    /// The choice a coordinate falls in (its cell, as `Bound::value_at` reads it).
    fn cell(choices: usize, u: f64) -> usize {
        ((u * choices as f64) as usize).min(choices.saturating_sub(1))
    }

    /// `Δ²` between coordinates `a` and `b`.
    #[inline]
    pub fn distance2(self, a: f64, b: f64) -> f64 {
        match self {
            Dim::Numeric => (a - b) * (a - b),
            Dim::Categorical(k) => f64::from(u8::from(Dim::cell(k, a) != Dim::cell(k, b))),
        }
    }

    /// `u` moved to the centre of its cell (a categorical), else unchanged.
    pub fn snap(self, u: f64) -> f64 {
        match self {
            Dim::Numeric => u,
            Dim::Categorical(k) => (Dim::cell(k, u) as f64 + 0.5) / k as f64,
        }
    }
}

/// The search space as the kernel sees it: one [`Dim`] per bound, in the
/// bounds' name order.
pub fn dims(config: &StudyConfig) -> Vec<Dim> {
    config
        .bounds
        .values()
        .map(|b| match b.kind {
            ParamKind::Categorical => Dim::Categorical(b.choices.len().max(1)),
            _ => Dim::Numeric,
        })
        .collect()
}

/// The kernel's hyperparameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Kernel {
    /// Inverse squared length scale per dimension, `λ_d`.
    pub inverse_lengths: Vec<f64>,
    /// Signal variance `s`.
    pub scale: f64,
    /// Observation noise variance (on standardised values).
    pub noise: f64,
}

impl Kernel {
    /// `r²` between points `a` and `b`.
    #[inline]
    pub fn r2(&self, dims: &[Dim], a: &[f64], b: &[f64]) -> f64 {
        let mut r2 = 0.0;
        for d in 0..dims.len() {
            r2 += self.inverse_lengths[d] * dims[d].distance2(a[d], b[d]);
        }
        r2
    }

    /// The covariance `k(a, b)` at squared distance `r2`, without noise.
    #[inline]
    pub fn at(&self, r2: f64) -> f64 {
        self.scale * matern(r2).0
    }
}

/// `m(r)` and `dm/d(r²)` at `r2 = r²`.
#[inline]
pub fn matern(r2: f64) -> (f64, f64) {
    let r = r2.max(0.0).sqrt();
    let t = -SQRT5 * r;
    // The plain-arithmetic exponential where it is exact to 1e-9 (most
    // pairs), the library's beyond.
    let e = if t >= -0.5 * FAR {
        exp_kernel(t)
    } else {
        t.exp()
    };
    let m = (1.0 + SQRT5 * r + 5.0 / 3.0 * r2) * e;
    let dm = -5.0 / 6.0 * (1.0 + SQRT5 * r) * e;
    (m, dm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matern_is_one_at_zero_and_its_derivative_matches_finite_differences() {
        assert_eq!(matern(0.0).0, 1.0);
        for r2 in [0.01, 0.3, 1.0, 4.0] {
            let h = 1e-6;
            let numeric = (matern(r2 + h).0 - matern(r2 - h).0) / (2.0 * h);
            assert!((numeric - matern(r2).1).abs() < 1e-6, "{r2}");
        }
    }

    #[test]
    fn categorical_coordinates_compare_by_choice() {
        let dim = Dim::Categorical(3);
        assert_eq!(dim.distance2(0.1, 0.3), 0.0);
        assert_eq!(dim.distance2(0.1, 0.4), 1.0);
        assert_eq!(dim.distance2(0.99, 0.7), 0.0);
        assert_eq!(dim.snap(0.4), 0.5);
        assert!((Dim::Numeric.distance2(0.1, 0.4) - 0.09).abs() < 1e-15);
    }
}
