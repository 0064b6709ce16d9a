//! The normal distribution as the model-based samplers need it: standard
//! draws, kernels truncated to the unit interval, their mass inside it, and
//! a fast exponential for summing kernels.
//!
//! [`tpe`](super::tpe)'s Parzen estimators ([`parzen`](super::parzen)) are
//! mixtures of normal kernels truncated to `[0, 1]`; [`cmaes`](super::cmaes)
//! draws standard normal vectors. Every draw comes from the trial's own
//! generator ([`trial_rng`](crate::sampling::trial_rng)), and every
//! function here is plain arithmetic in a fixed order, so the same inputs
//! give the same bits.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Kernel terms below `e^(-FAR / 2)` (about 1e-7 of the largest) are
/// clamped there by [`exp_kernel`]: a kernel's peak is at most 100 times the
/// prior's contribution, which every density includes, so the error is
/// negligible.
pub const FAR: f64 = 32.0;

/// A kernel whose mean lies more than this many widths from both ends of
/// `[0, 1]` has all its mass inside, to double precision.
pub const INSIDE: f64 = 8.5;

/// `e^t` for `t` in `[-FAR / 2, 0]` (smaller `t` is clamped to `-FAR / 2`),
/// to a relative error below 1e-9, in plain arithmetic (no library call, no
/// branch), so kernel sums vectorise and give the same bits on every
/// platform.
#[inline(always)]
pub fn exp_kernel(t: f64) -> f64 {
    // e^t = 2^n · e^r with n = round(t / ln 2), |r| <= ln 2 / 2.
    const ROUND: f64 = 6_755_399_441_055_744.0; // 1.5 · 2^52
    let t = t.max(-0.5 * FAR);
    let shifted = t * std::f64::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = t - n * std::f64::consts::LN_2;
    // Taylor series of e^r to degree 8 (Horner): error < 0.35^9 / 9!.
    let mut p = 1.0 / 40_320.0;
    for k in (1..=7).rev() {
        p = p * r + 1.0 / FACTORIALS[k];
    }
    p = p * r + 1.0;
    // 2^n from n's bits: `shifted` and ROUND share their exponent, so the
    // difference of their bits is n.
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    p * f64::from_bits(n_bits.wrapping_add(1023) << 52)
}

/// `k!` for `k` in `0..=7`.
const FACTORIALS: [f64; 8] = [1.0, 1.0, 2.0, 6.0, 24.0, 120.0, 720.0, 5040.0];

/// The standard normal distribution function.
pub fn phi(x: f64) -> f64 {
    0.5 * erfc(-x * std::f64::consts::FRAC_1_SQRT_2)
}

/// The complementary error function, to a relative error below 1.2e-7
/// (Numerical Recipes' `erfcc`): ample for normalising kernels.
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// The mass of `N(mu, sigma)` inside `[0, 1]`.
pub fn mass(mu: f64, sigma: f64) -> f64 {
    if mu > INSIDE * sigma && 1.0 - mu > INSIDE * sigma {
        return 1.0;
    }
    (phi((1.0 - mu) / sigma) - phi(-mu / sigma)).max(f64::MIN_POSITIVE)
}

/// A standard normal draw (Box–Muller, one of the pair).
pub fn standard(rng: &mut ChaCha8Rng) -> f64 {
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A draw from `N(mu, sigma)` truncated to `[0, 1)`, by rejection (a kernel
/// with its mean in `[0, 1]` and width at most 1 keeps at least a third of
/// its mass inside); after 64 misses, a uniform draw.
pub fn truncated(mu: f64, sigma: f64, rng: &mut ChaCha8Rng) -> f64 {
    for _ in 0..64 {
        let x = mu + sigma * standard(rng);
        if (0.0..1.0).contains(&x) {
            return x;
        }
    }
    rng.random::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::trial_rng;

    #[test]
    fn the_kernel_exponential_is_accurate() {
        for k in 0..=16_000 {
            let t = -(k as f64) / 1000.0;
            let (fast, exact) = (exp_kernel(t), t.exp());
            assert!(
                ((fast - exact) / exact).abs() < 1e-9,
                "{t}: {fast} vs {exact}"
            );
        }
        let floor = (-0.5 * FAR).exp();
        assert!((exp_kernel(-1e300) / floor - 1.0).abs() < 1e-9);
    }

    #[test]
    fn erfc_and_kernel_mass_are_accurate() {
        assert!((erfc(0.0) - 1.0).abs() < 1e-7);
        assert!((erfc(1.0) - 0.157_299_207_050_285).abs() < 1e-7);
        assert!((erfc(-1.0) - 1.842_700_792_949_715).abs() < 1e-7);
        assert!((mass(0.5, 1.0) - 0.382_924_922_548_026).abs() < 1e-7);
        assert!((mass(0.0, 0.01) - 0.5).abs() < 1e-7);
        // The shortcut for kernels well inside agrees with the formula.
        let (mu, sigma) = (0.5, 0.5 / (INSIDE + 1e-9));
        assert!((phi((1.0 - mu) / sigma) - phi(-mu / sigma) - 1.0).abs() < 1e-15);
    }

    #[test]
    fn standard_draws_have_mean_zero_and_variance_one() {
        let mut rng = trial_rng(1, 1);
        let draws: Vec<f64> = (0..20_000).map(|_| standard(&mut rng)).collect();
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        let var = draws.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / draws.len() as f64;
        assert!(mean.abs() < 0.03, "{mean}");
        assert!((var - 1.0).abs() < 0.05, "{var}");
    }

    #[test]
    fn truncated_draws_stay_in_the_unit_interval() {
        let mut rng = trial_rng(2, 1);
        for (mu, sigma) in [(0.0, 1.0), (1.0, 0.01), (0.5, 0.2), (0.999, 1e-6)] {
            for _ in 0..1000 {
                let x = truncated(mu, sigma, &mut rng);
                assert!((0.0..1.0).contains(&x), "{mu} {sigma}: {x}");
            }
        }
    }
}
