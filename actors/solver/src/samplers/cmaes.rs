//! CMA-ES: the covariance matrix adaptation evolution strategy, as a pure
//! function of the study's history.
//!
//! CMA-ES samples a population of `λ` points from a multivariate normal
//! `N(m, σ² C)`, ranks them by value, moves the mean `m` towards the best
//! `μ = λ / 2` (weighted), and adapts the step size `σ` (cumulative
//! step-size adaptation) and the covariance `C` (rank-one and rank-μ
//! updates) so the distribution learns the problem's scale and the
//! correlations between parameters (Hansen, "The CMA Evolution Strategy: A
//! Tutorial", 2016; the constants below are that tutorial's defaults). It
//! shines at larger budgets on continuous problems, where TPE's
//! independent-kernel model cannot follow a curved valley.
//!
//! # Pure and replayable
//!
//! The strategy's state is never stored: it is a fold over the history.
//! The told trials, in number order, form the generations — every `λ` told
//! trials one generation, the points being whatever the trials recorded
//! (pending trials are skipped until told). Folding the generations from
//! the initial state (`m = 0.5`, `σ = sigma0`, `C = I`) gives the state that
//! trial `number` samples from: `x = m + σ B D z` with `z ~ N(0, I)` drawn
//! from [`trial_rng`]`(seed, number)`, resampled (at most
//! [`MAX_RESAMPLES`] times, from the same generator) until inside the
//! cube, then clipped. So a trial's point is a function of the seed, its
//! number and the history only: replays are exact, and a batch of pending
//! trials gets distinct points from the same distribution (one generation
//! in parallel); their results join the generations once told.
//!
//! Folding the whole history on every ask would cost `O(n/λ · d³)`, so the
//! process-wide [`memo`] resumes it from the last generation boundary
//! where the study's history has not changed; the state it gives is
//! exactly the state a fold from scratch gives (a test checks this).
//!
//! # Restarts
//!
//! With `restarts` on (the default) the strategy restarts when it has
//! converged or stalled (the best values of the last `10 + 30 d / λ`
//! generations within 1e-12 of each other, `σ` below 1e-12 of its start in
//! every coordinate, or `C`'s condition number above 1e14), with twice the
//! population (IPOP-CMA-ES, Auger & Hansen 2005) from a seeded random mean.
//!
//! # Knobs (`strategy_params`)
//!
//! `popsize` (λ, default `4 + ⌊3 ln d⌋`), `sigma0` (default 1/6 of the unit
//! cube), `restarts` (1, the default, or 0).

use super::memo::{self, Memo};
use super::normal::standard;
use super::{mix, History};
use crate::sampling::trial_rng;
use flotilla_messages::solver::StudyConfig;
use rand_chacha::ChaCha8Rng;
use std::sync::LazyLock;

/// Draws per trial before an outside point is clipped into the cube.
pub const MAX_RESAMPLES: usize = 100;

/// The default initial step size: 1/6 of the unit cube, so the initial
/// distribution's ±3σ spans it.
pub const SIGMA0: f64 = 1.0 / 6.0;

/// CMA-ES's knobs, read from a config's `strategy_params`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// The population size `λ` of the first run.
    pub popsize: usize,
    /// The initial step size in the unit cube.
    pub sigma0: f64,
    /// Whether to restart with a doubled population on convergence.
    pub restarts: bool,
}

impl Settings {
    /// The defaults for `dimensions` parameters: `λ = 4 + ⌊3 ln d⌋`.
    pub fn for_dimensions(dimensions: usize) -> Self {
        Settings {
            popsize: default_popsize(dimensions),
            sigma0: SIGMA0,
            restarts: true,
        }
    }

    /// The settings of `config`: its `strategy_params` over the defaults.
    pub fn of(config: &StudyConfig) -> Self {
        Settings::for_dimensions(config.bounds.len()).over(config)
    }

    /// `config`'s `strategy_params` over these settings.
    pub fn over(self, config: &StudyConfig) -> Self {
        let knob = |key: &str| config.strategy_params.get(key).copied();
        Settings {
            popsize: knob("popsize").map_or(self.popsize, |v| (v as usize).max(2)),
            sigma0: knob("sigma0").unwrap_or(self.sigma0),
            restarts: knob("restarts").map_or(self.restarts, |v| v != 0.0),
        }
    }

    /// A key that tells these settings apart (for the [`Memo`]).
    fn fingerprint(&self) -> u64 {
        mix(self.popsize as u64 ^ mix(self.sigma0.to_bits() ^ mix(self.restarts as u64)))
    }
}

/// Hansen's default population size, `4 + ⌊3 ln d⌋`.
pub fn default_popsize(dimensions: usize) -> usize {
    4 + (3.0 * (dimensions.max(1) as f64).ln()).floor() as usize
}

/// Trial `number`'s point in `[0, 1)^d` under `settings` (usually
/// [`Settings::of`] the config; the `auto` sampler picks its own) given the
/// study's `history`.
pub fn point(
    config: &StudyConfig,
    settings: &Settings,
    number: u64,
    history: &History,
) -> Vec<f64> {
    let dimensions = config.bounds.len();
    let key = mix(config.seed ^ mix(dimensions as u64 ^ settings.fingerprint()));
    let start = || Fold::start(dimensions, config.seed, *settings);
    let state = MEMO.fold(key, dimensions, history, start).state;
    state.sample(&mut trial_rng(config.seed, number))
}

/// The strategy's constants for one dimension and population size.
#[derive(Debug, Clone, PartialEq)]
struct Constants {
    n: usize,
    lambda: usize,
    /// Recombination weights of the best `μ`, summing to 1.
    weights: Vec<f64>,
    mu_eff: f64,
    c_sigma: f64,
    d_sigma: f64,
    c_c: f64,
    c_1: f64,
    c_mu: f64,
    /// `E‖N(0, I)‖`.
    chi_n: f64,
}

impl Constants {
    fn new(n: usize, lambda: usize) -> Self {
        let nf = n as f64;
        let mu = lambda / 2;
        let raw: Vec<f64> = (1..=mu)
            .map(|i| ((lambda as f64 + 1.0) / 2.0).ln() - (i as f64).ln())
            .collect();
        let total: f64 = raw.iter().sum();
        let weights: Vec<f64> = raw.iter().map(|w| w / total).collect();
        let mu_eff = 1.0 / weights.iter().map(|w| w * w).sum::<f64>();
        let c_sigma = (mu_eff + 2.0) / (nf + mu_eff + 5.0);
        let d_sigma = 1.0 + 2.0 * (((mu_eff - 1.0) / (nf + 1.0)).sqrt() - 1.0).max(0.0) + c_sigma;
        let c_c = (4.0 + mu_eff / nf) / (nf + 4.0 + 2.0 * mu_eff / nf);
        let c_1 = 2.0 / ((nf + 1.3).powi(2) + mu_eff);
        let c_mu =
            (1.0 - c_1).min(2.0 * (mu_eff - 2.0 + 1.0 / mu_eff) / ((nf + 2.0).powi(2) + mu_eff));
        let chi_n = nf.sqrt() * (1.0 - 1.0 / (4.0 * nf) + 1.0 / (21.0 * nf * nf));
        Constants {
            n,
            lambda,
            weights,
            mu_eff,
            c_sigma,
            d_sigma,
            c_c,
            c_1,
            c_mu,
            chi_n,
        }
    }
}

/// The strategy's state between generations.
#[derive(Debug, Clone, PartialEq)]
struct Cma {
    k: Constants,
    settings: Settings,
    seed: u64,
    mean: Vec<f64>,
    sigma: f64,
    /// The covariance, `n × n`, row-major.
    c: Vec<f64>,
    /// `C`'s eigenvectors as columns (`b[i · n + j]`: component `i` of
    /// vector `j`) and the square roots of its eigenvalues.
    b: Vec<f64>,
    d: Vec<f64>,
    p_sigma: Vec<f64>,
    p_c: Vec<f64>,
    /// Generations since the last (re)start.
    generation: u64,
    restarts: u32,
    /// The best and worst value of each recent generation.
    recent: Vec<(f64, f64)>,
}

impl Cma {
    fn new(n: usize, seed: u64, settings: Settings) -> Self {
        let mut cma = Cma {
            k: Constants::new(n, settings.popsize),
            settings,
            seed,
            mean: vec![0.5; n],
            sigma: settings.sigma0,
            c: Vec::new(),
            b: Vec::new(),
            d: Vec::new(),
            p_sigma: Vec::new(),
            p_c: Vec::new(),
            generation: 0,
            restarts: 0,
            recent: Vec::new(),
        };
        cma.reset_distribution();
        cma
    }

    fn reset_distribution(&mut self) {
        let n = self.k.n;
        self.sigma = self.settings.sigma0;
        self.c = identity(n);
        self.b = identity(n);
        self.d = vec![1.0; n];
        self.p_sigma = vec![0.0; n];
        self.p_c = vec![0.0; n];
        self.generation = 0;
        self.recent.clear();
    }

    /// IPOP: twice the population from a seeded random mean.
    fn restart(&mut self) {
        self.restarts += 1;
        let lambda = self.k.lambda * 2;
        self.k = Constants::new(self.k.n, lambda);
        let mut rng = trial_rng(mix(self.seed ^ 0x1905_c3a5), self.restarts as u64);
        self.mean = (0..self.k.n)
            .map(|_| rand::Rng::random::<f64>(&mut rng))
            .collect();
        self.reset_distribution();
    }

    /// A draw from `N(m, σ² C)` inside the cube.
    fn sample(&self, rng: &mut ChaCha8Rng) -> Vec<f64> {
        let n = self.k.n;
        let mut x = vec![0.0; n];
        for attempt in 0..=MAX_RESAMPLES {
            let z: Vec<f64> = (0..n).map(|j| self.d[j] * standard(rng)).collect();
            for (i, xi) in x.iter_mut().enumerate() {
                let row = &self.b[i * n..(i + 1) * n];
                let step: f64 = row.iter().zip(&z).map(|(b, z)| b * z).sum();
                *xi = self.mean[i] + self.sigma * step;
            }
            if attempt < MAX_RESAMPLES && x.iter().all(|v| (0.0..1.0).contains(v)) {
                return x;
            }
        }
        x.iter_mut().for_each(|v| *v = v.clamp(0.0, LAST_BELOW_ONE));
        x
    }

    /// `C^(-1/2) v = B D⁻¹ Bᵀ v`.
    fn whiten(&self, v: &[f64]) -> Vec<f64> {
        let n = self.k.n;
        let inner: Vec<f64> = (0..n)
            .map(|j| (0..n).map(|i| self.b[i * n + j] * v[i]).sum::<f64>() / self.d[j])
            .collect();
        (0..n)
            .map(|i| (0..n).map(|j| self.b[i * n + j] * inner[j]).sum())
            .collect()
    }

    /// One generation: `members` (point, rank), in number order.
    fn tell(&mut self, members: &[(&[f64], Rank)]) {
        let n = self.k.n;
        let mut order: Vec<usize> = (0..members.len()).collect();
        order.sort_by(|&a, &b| members[a].1.cmp(&members[b].1).then(a.cmp(&b)));
        // Steps of the best μ, each capped in Mahalanobis length so a point
        // not drawn from this distribution (a clipped one, or one drawn
        // before a restart) cannot throw it off.
        let cap = self.k.chi_n + 3.0;
        let ys: Vec<Vec<f64>> = order[..self.k.weights.len()]
            .iter()
            .map(|&i| {
                let y: Vec<f64> = (0..n)
                    .map(|j| (members[i].0[j] - self.mean[j]) / self.sigma)
                    .collect();
                let length = norm(&self.whiten(&y));
                let scale = if length > cap { cap / length } else { 1.0 };
                y.into_iter().map(|v| v * scale).collect()
            })
            .collect();
        let mut y_w = vec![0.0; n];
        for (w, y) in self.k.weights.iter().zip(&ys) {
            for (acc, v) in y_w.iter_mut().zip(y) {
                *acc += w * v;
            }
        }
        for (m, y) in self.mean.iter_mut().zip(&y_w) {
            *m += self.sigma * y;
        }
        let k = &self.k;
        let white = self.whiten(&y_w);
        let a = (k.c_sigma * (2.0 - k.c_sigma) * k.mu_eff).sqrt();
        for (p, w) in self.p_sigma.iter_mut().zip(&white) {
            *p = (1.0 - k.c_sigma) * *p + a * w;
        }
        let ps_norm = norm(&self.p_sigma);
        let g = (self.generation + 1) as f64;
        let h_sigma = ps_norm / (1.0 - (1.0 - k.c_sigma).powf(2.0 * g)).sqrt()
            < (1.4 + 2.0 / (n as f64 + 1.0)) * k.chi_n;
        let h = if h_sigma { 1.0 } else { 0.0 };
        let a = (k.c_c * (2.0 - k.c_c) * k.mu_eff).sqrt();
        for (p, y) in self.p_c.iter_mut().zip(&y_w) {
            *p = (1.0 - k.c_c) * *p + h * a * y;
        }
        let decay = 1.0 - k.c_1 - k.c_mu + (1.0 - h) * k.c_1 * k.c_c * (2.0 - k.c_c);
        for i in 0..n {
            for j in 0..=i {
                let rank_mu: f64 = k
                    .weights
                    .iter()
                    .zip(&ys)
                    .map(|(w, y)| w * y[i] * y[j])
                    .sum();
                let v = decay * self.c[i * n + j]
                    + k.c_1 * self.p_c[i] * self.p_c[j]
                    + k.c_mu * rank_mu;
                self.c[i * n + j] = v;
                self.c[j * n + i] = v;
            }
        }
        self.sigma *= ((k.c_sigma / k.d_sigma) * (ps_norm / k.chi_n - 1.0))
            .min(1.0)
            .exp();
        let (values, vectors) = eigen(&self.c, n);
        self.d = values.iter().map(|v| v.max(1e-300).sqrt()).collect();
        self.b = vectors;
        self.generation += 1;
        let best = members[order[0]].1.value;
        let worst = members[order[order.len() - 1]].1.value;
        self.recent.push((best, worst));
        let window = 10 + (30.0 * n as f64 / self.k.lambda as f64).ceil() as usize;
        if self.recent.len() > window {
            self.recent.remove(0);
        }
        if self.settings.restarts && self.should_restart(window) {
            self.restart();
        }
    }

    /// Converged or stalled: flat values, a vanished step, or a degenerate
    /// covariance.
    fn should_restart(&self, window: usize) -> bool {
        let n = self.k.n;
        let flat = self.recent.len() >= window && {
            let lo = self
                .recent
                .iter()
                .map(|r| r.0)
                .fold(f64::INFINITY, f64::min);
            let hi = self
                .recent
                .iter()
                .map(|r| r.1)
                .fold(f64::NEG_INFINITY, f64::max);
            hi - lo < 1e-12
        };
        let tol_x = 1e-12 * self.settings.sigma0;
        let vanished = (0..n).all(|i| {
            self.sigma * self.c[i * n + i].sqrt() < tol_x && self.sigma * self.p_c[i].abs() < tol_x
        });
        let (lo, hi) = self.d.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &d| {
            (lo.min(d), hi.max(d))
        });
        let degenerate = (hi / lo).powi(2) > 1e14 || !self.sigma.is_finite();
        flat || vanished || degenerate
    }
}

/// The largest `f64` below 1.
const LAST_BELOW_ONE: f64 = 1.0 - f64::EPSILON / 2.0;

fn identity(n: usize) -> Vec<f64> {
    let mut m = vec![0.0; n * n];
    for i in 0..n {
        m[i * n + i] = 1.0;
    }
    m
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// Eigenvalues and eigenvectors (as columns) of the symmetric `n × n`
/// matrix `a`, by cyclic Jacobi rotations: plain arithmetic in a fixed
/// order, so the bits are deterministic.
fn eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v = identity(n);
    for _ in 0..64 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum();
        let diag: f64 = (0..n).map(|i| a[i * n + i] * a[i * n + i]).sum();
        if off <= 1e-30 * diag || off == 0.0 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), v)
}

/// How a told entry ranks in its generation: feasible entries by value,
/// then infeasible ones by total violation (then value), so a constrained
/// study moves toward the feasible region. It depends on the entry alone,
/// so the memoised folds stay exact.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rank {
    violation: f64,
    value: f64,
}

impl Rank {
    fn of(history: &History, entry: usize) -> Self {
        Rank {
            violation: history.violation(entry),
            value: history.value(entry).unwrap_or(f64::NAN),
        }
    }

    fn cmp(&self, other: &Rank) -> std::cmp::Ordering {
        self.violation
            .total_cmp(&other.violation)
            .then(self.value.total_cmp(&other.value))
    }
}

/// A point in the fold: the state after every complete generation among
/// the entries before `upto`, and the told entries after the last one.
#[derive(Debug, Clone)]
struct Fold {
    state: Cma,
    /// Entries consumed: the fold depends on nothing at or after it.
    upto: usize,
}

impl Fold {
    fn start(n: usize, seed: u64, settings: Settings) -> Self {
        Fold {
            state: Cma::new(n, seed, settings),
            upto: 0,
        }
    }
}

impl memo::Fold for Fold {
    fn upto(&self) -> usize {
        self.upto
    }

    /// Folds every complete generation in `history` from `upto` on, calling
    /// `boundary` after each.
    fn advance(&mut self, history: &History, boundary: &mut dyn FnMut(&Fold)) {
        let mut members: Vec<usize> = Vec::with_capacity(self.state.k.lambda);
        for i in self.upto..history.len() {
            if history.value(i).is_none() {
                continue;
            }
            members.push(i);
            if members.len() == self.state.k.lambda {
                let told: Vec<(&[f64], Rank)> = members
                    .iter()
                    .map(|&m| (history.point(m), Rank::of(history, m)))
                    .collect();
                self.state.tell(&told);
                self.upto = i + 1;
                members.clear();
                boundary(self);
            }
        }
    }
}

/// The folds of the studies asked lately (see [`memo`]).
static MEMO: LazyLock<Memo<Fold>> = LazyLock::new(Memo::default);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samplers::memo::Fold as _;
    use crate::samplers::testing::{
        assert_replays_exactly, best_of, branin_space, distinct_in_batch, run_unit, unit_config,
    };
    use flotilla_messages::solver::Sampler;

    fn config(seed: u64, dimensions: usize, knobs: &[(&str, f64)]) -> StudyConfig {
        unit_config(Sampler::Cmaes, seed, 1000, dimensions, knobs)
    }

    fn sphere(x: &[f64]) -> f64 {
        x.iter().map(|v| (v - 0.3) * (v - 0.3)).sum()
    }

    #[test]
    fn defaults_follow_hansen() {
        assert_eq!([1, 2, 6, 10, 16].map(default_popsize), [4, 6, 9, 10, 12]);
        let k = Constants::new(10, 10);
        assert_eq!(k.weights.len(), 5);
        assert!((k.weights.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(k.weights.windows(2).all(|w| w[0] > w[1]));
        assert!((k.chi_n - 3.0847).abs() < 1e-3);
        let s = Settings::of(&config(1, 4, &[("popsize", 20.0), ("restarts", 0.0)]));
        assert_eq!((s.popsize, s.sigma0, s.restarts), (20, SIGMA0, false));
    }

    #[test]
    fn eigen_decomposes_a_symmetric_matrix() {
        let a = [4.0, 1.0, 0.5, 1.0, 3.0, 0.2, 0.5, 0.2, 1.0];
        let (values, v) = eigen(&a, 3);
        for j in 0..3 {
            // A v_j = λ_j v_j
            for i in 0..3 {
                let av: f64 = (0..3).map(|k| a[i * 3 + k] * v[k * 3 + j]).sum();
                assert!((av - values[j] * v[i * 3 + j]).abs() < 1e-12);
            }
        }
        let trace: f64 = values.iter().sum();
        assert!((trace - 8.0).abs() < 1e-12);
    }

    #[test]
    fn it_converges_on_a_sphere() {
        let config = config(3, 5, &[]);
        let (_, values) = run_unit(&config, 600, sphere);
        let best = best_of(&values);
        assert!(best < 1e-8, "{best}");
    }

    #[test]
    fn the_memo_gives_exactly_the_fold_from_scratch() {
        let study = config(4, 3, &[("popsize", 5.0)]);
        let (points, mut values) = run_unit(&study, 60, sphere);
        // Leave some trials pending, in the middle and at the end.
        values[23] = None;
        values[57] = None;
        let settings = Settings::of(&study);
        let history = History::new(3, &points, &values);
        let mut scratch = Fold::start(3, 4, settings);
        scratch.advance(&history, &mut |_: &Fold| {});
        let memo = Memo::default();
        let start = || Fold::start(3, 4, settings);
        // Fold a shorter prefix first, so the memo holds an older state.
        let prefix = History::new(3, &points[..40 * 3], &values[..40]);
        memo.fold(9, 3, &prefix, start);
        assert_eq!(memo.fold(9, 3, &history, start).state, scratch.state);
        // Telling the middle trial later changes the generations after it.
        values[23] = Some(0.5);
        let history = History::new(3, &points, &values);
        let mut scratch = Fold::start(3, 4, settings);
        scratch.advance(&history, &mut |_: &Fold| {});
        assert_eq!(memo.fold(9, 3, &history, start).state, scratch.state);
        // And the memo agrees for another, unrelated history too.
        let other = run_unit(&config(5, 3, &[("popsize", 5.0)]), 30, sphere);
        let other = History::new(3, &other.0, &other.1);
        let mut scratch = Fold::start(3, 4, settings);
        scratch.advance(&other, &mut |_: &Fold| {});
        assert_eq!(memo.fold(9, 3, &other, start).state, scratch.state);
    }

    #[test]
    fn a_cmaes_study_replays_bit_for_bit_with_tells_out_of_order() {
        let space = branin_space();
        for knobs in [vec![], vec![("popsize", 5.0), ("restarts", 0.0)]] {
            let config = crate::samplers::testing::config(Sampler::Cmaes, 5, 60, &space, &knobs);
            assert_replays_exactly(config);
        }
    }

    #[test]
    fn a_batch_gets_distinct_points_in_the_cube() {
        let config = config(6, 4, &[]);
        let (points, values) = run_unit(&config, 30, sphere);
        assert_eq!(distinct_in_batch(&config, &points, &values, 31..=60), 30);
    }

    #[test]
    fn restarts_double_the_population() {
        // A flat function converges nowhere: the value range is zero at once.
        let config = config(7, 2, &[]);
        let (points, values) = run_unit(&config, 400, |_| 1.0);
        let mut fold = Fold::start(2, 7, Settings::of(&config));
        fold.advance(&History::new(2, &points, &values), &mut |_: &Fold| {});
        assert!(fold.state.restarts >= 1);
        assert_eq!(fold.state.k.lambda, 6 << fold.state.restarts);
        let off = Settings::of(&super::tests::config(7, 2, &[("restarts", 0.0)]));
        let mut fold = Fold::start(2, 7, off);
        fold.advance(&History::new(2, &points, &values), &mut |_: &Fold| {});
        assert_eq!(fold.state.restarts, 0);
    }

    #[test]
    fn points_outside_the_cube_are_resampled_or_clipped() {
        let mut cma = Cma::new(2, 1, Settings::for_dimensions(2));
        cma.mean = vec![0.999, 0.0];
        cma.sigma = 10.0;
        let mut rng = trial_rng(1, 1);
        for _ in 0..50 {
            let x = cma.sample(&mut rng);
            assert!(x.iter().all(|u| (0.0..1.0).contains(u)), "{x:?}");
        }
    }
}
