//! The solver's benchmark objectives: standard test functions on their
//! standard domains, each with its known minimum `f*` and a minimiser, so a
//! run's quality is its *regret* `best − f*` (0 is perfect).
//!
//! | name | dims | domain | f* | minimiser |
//! |---|---:|---|---:|---|
//! | `branin` | 2 | x ∈ [-5, 10], y ∈ [0, 15] | 0.397887 | (π, 2.275) and two more |
//! | `hartmann6` | 6 | [0, 1]^6 | -3.32237 | (0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573) |
//! | `rosenbrock10` | 10 | [-5, 10]^10 | 0 | (1, …, 1) |
//! | `rastrigin10` | 10 | [-5.12, 5.12]^10 | 0 | (0, …, 0) |
//! | `ackley10` | 10 | [-32.768, 32.768]^10 | 0 | (0, …, 0) |
//! | `levy10` | 10 | [-10, 10]^10 | 0 | (1, …, 1) |
//! | `lr_batch` | 2 | lr ∈ [1e-4, 1e-1] log, batch ∈ [1, 64] log | 0.1 | lr = 10^-2.4 ≈ 3.98e-3, batch = 16 |
//!
//! `lr_batch` is a synthetic "validation loss" over a learning rate and a
//! batch size, both searched on a log scale, shaped like the linear scaling
//! rule: with `u = log10(lr)` and `v = log2(batch)`, the best learning rate
//! for a batch is `u*(v) = -3 + 0.15 v` (1e-3 at batch 1, ≈ 8e-3 at batch
//! 64), and
//!
//! ```text
//! loss = 0.1 + (u − u*(v))² + 0.02 (v − 4)²
//! ```
//!
//! so the valley runs diagonally and its floor is lowest at batch 16:
//! `f* = 0.1` at `lr = 10^-2.4`, `batch = 16`, well inside the box. A
//! sampler that searches `lr` linearly puts 90% of its points above 0.01 and
//! rarely lands in the valley.

use super::study::Objective;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::f64::consts::{E, PI};

/// One benchmark function with its domain and known optimum.
#[derive(Debug, Clone)]
pub struct Function {
    /// Short name, e.g. `hartmann6`.
    pub name: String,
    /// Parameters in order: name, min, max, log scale.
    pub params: Vec<(String, f64, f64, bool)>,
    /// The objective (minimised).
    pub objective: Objective,
    /// Its global minimum.
    pub optimum: f64,
    /// A point where it attains `optimum` (to the published precision).
    pub minimiser: Vec<f64>,
}

impl Function {
    /// The study config's `bounds`.
    pub fn bounds(&self) -> Value {
        let bounds: serde_json::Map<String, Value> = self
            .params
            .iter()
            .map(|(name, min, max, log)| {
                let scale = if *log { "log" } else { "linear" };
                (
                    name.clone(),
                    json!({"min": min, "max": max, "scale": scale}),
                )
            })
            .collect();
        Value::Object(bounds)
    }

    /// The objective at `point` (values in [`Function::params`] order).
    pub fn at(&self, point: &[f64]) -> f64 {
        let params = self
            .params
            .iter()
            .zip(point)
            .map(|((name, ..), x)| (name.clone(), *x))
            .collect();
        (self.objective)(&params)
    }
}

/// Names `x0`, `x1`, … for a `d`-dimensional function (sorted as numbered
/// for `d ≤ 10`).
fn xs(d: usize, min: f64, max: f64) -> Vec<(String, f64, f64, bool)> {
    (0..d).map(|i| (format!("x{i}"), min, max, false)).collect()
}

/// The values of `x0`, `x1`, … in order.
fn vector(p: &BTreeMap<String, f64>) -> Vec<f64> {
    let mut v: Vec<(usize, f64)> = p
        .iter()
        .map(|(k, x)| (k[1..].parse::<usize>().unwrap_or(usize::MAX), *x))
        .collect();
    v.sort_by_key(|(i, _)| *i);
    v.into_iter().map(|(_, x)| x).collect()
}

/// The functions that scale to any dimension: name stem, domain (the same
/// in every coordinate), the minimiser's coordinate, objective.
const SCALABLE: [(&str, f64, f64, f64, Objective); 4] = [
    ("rosenbrock", -5.0, 10.0, 1.0, rosenbrock),
    ("rastrigin", -5.12, 5.12, 0.0, rastrigin),
    ("ackley", -32.768, 32.768, 0.0, ackley),
    ("levy", -10.0, 10.0, 1.0, levy),
];

/// The most dimensions [`by_name`] builds a scalable function with.
pub const MAX_DIMENSIONS: usize = 64;

/// Every benchmark function of the goal tables, in the order they list
/// them.
pub fn all() -> Vec<Function> {
    let ten = |stem| scalable(stem, 10).expect("a scalable function");
    vec![
        Function {
            name: "branin".into(),
            params: vec![
                ("x".into(), -5.0, 10.0, false),
                ("y".into(), 0.0, 15.0, false),
            ],
            objective: super::study::branin,
            optimum: 0.397887,
            minimiser: vec![PI, 2.275],
        },
        Function {
            name: "hartmann6".into(),
            params: xs(6, 0.0, 1.0),
            objective: hartmann6,
            optimum: -3.32237,
            minimiser: vec![0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573],
        },
        ten("rosenbrock"),
        ten("rastrigin"),
        ten("ackley"),
        ten("levy"),
        Function {
            name: "lr_batch".into(),
            params: vec![
                ("batch".into(), 1.0, 64.0, true),
                ("lr".into(), 1e-4, 1e-1, true),
            ],
            objective: lr_batch,
            optimum: 0.1,
            minimiser: vec![16.0, 10f64.powf(-2.4)],
        },
    ]
}

/// `stem` (`rosenbrock`, `rastrigin`, `ackley` or `levy`) in `d`
/// dimensions on its standard domain, named `<stem><d>`.
pub fn scalable(stem: &str, d: usize) -> Option<Function> {
    let &(_, min, max, at, objective) = SCALABLE.iter().find(|s| s.0 == stem)?;
    (1..=MAX_DIMENSIONS).contains(&d).then(|| Function {
        name: format!("{stem}{d}"),
        params: xs(d, min, max),
        objective,
        optimum: 0.0,
        minimiser: vec![at; d],
    })
}

/// `f` on its domain shifted down by 30% of its width in every coordinate
/// (of `ln x` for log-scale parameters), named `<name>-off`. The scalable
/// functions have their minimiser at or near the centre of the standard
/// domain, which favours any sampler that starts there (CMA-ES's mean,
/// TPE's prior); shifted, it sits near 80% of the range instead.
pub fn off_centre(f: Function) -> Function {
    let params = f
        .params
        .iter()
        .map(|&(ref name, min, max, log)| {
            let (min, max) = if log {
                let shift = 0.3 * (max / min).ln();
                (min / shift.exp(), max / shift.exp())
            } else {
                let shift = 0.3 * (max - min);
                (min - shift, max - shift)
            };
            (name.clone(), min, max, log)
        })
        .collect();
    Function {
        name: format!("{}-off", f.name),
        params,
        ..f
    }
}

/// The function called `name`, if any: one of [`all`], a [`scalable`]
/// one (`levy5`, `ackley20`), or either with `-off` ([`off_centre`]).
pub fn by_name(name: &str) -> Option<Function> {
    if let Some(base) = name.strip_suffix("-off") {
        return by_name(base).map(off_centre);
    }
    if let Some(f) = all().into_iter().find(|f| f.name == name) {
        return Some(f);
    }
    let digits = name.trim_start_matches(|c: char| !c.is_ascii_digit());
    let stem = &name[..name.len() - digits.len()];
    scalable(stem, digits.parse().ok()?)
}

/// The seven goal functions ([`all`]) with their domains shifted off centre
/// ([`off_centre`]): the check that a sampler's lead on [`all`] does not
/// come from where the optimum sits.
pub fn shifted_suite() -> Vec<Function> {
    all().into_iter().map(off_centre).collect()
}

/// The suite the `auto` sampler's rule is measured on: Branin, Hartmann6 and
/// `lr_batch`, and the scalable functions in 2, 5, 10 and 20 dimensions;
/// each as defined and off centre, so that no sampler is picked for where
/// the optimum sits.
pub fn auto_suite() -> Vec<Function> {
    let mut suite = Vec::new();
    for name in ["branin", "hartmann6", "lr_batch"] {
        suite.push(by_name(name));
        suite.push(by_name(name).map(off_centre));
    }
    for d in [2, 5, 10, 20] {
        for (stem, ..) in SCALABLE {
            suite.push(scalable(stem, d));
            suite.push(scalable(stem, d).map(off_centre));
        }
    }
    suite.into_iter().flatten().collect()
}

/// Hartmann 6-D on `[0, 1]^6`; minimum -3.32237.
pub fn hartmann6(p: &BTreeMap<String, f64>) -> f64 {
    const ALPHA: [f64; 4] = [1.0, 1.2, 3.0, 3.2];
    const A: [[f64; 6]; 4] = [
        [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
        [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
        [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
        [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
    ];
    const P: [[f64; 6]; 4] = [
        [0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
        [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
        [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
        [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381],
    ];
    let x = vector(p);
    -(0..4)
        .map(|i| {
            let inner: f64 = (0..6).map(|j| A[i][j] * (x[j] - P[i][j]).powi(2)).sum();
            ALPHA[i] * (-inner).exp()
        })
        .sum::<f64>()
}

/// Rosenbrock in any dimension; minimum 0 at (1, …, 1).
pub fn rosenbrock(p: &BTreeMap<String, f64>) -> f64 {
    let x = vector(p);
    x.windows(2)
        .map(|w| 100.0 * (w[1] - w[0] * w[0]).powi(2) + (1.0 - w[0]).powi(2))
        .sum()
}

/// Rastrigin in any dimension; minimum 0 at the origin.
pub fn rastrigin(p: &BTreeMap<String, f64>) -> f64 {
    let x = vector(p);
    10.0 * x.len() as f64
        + x.iter()
            .map(|x| x * x - 10.0 * (2.0 * PI * x).cos())
            .sum::<f64>()
}

/// Ackley (a = 20, b = 0.2, c = 2π) in any dimension; minimum 0 at the
/// origin.
pub fn ackley(p: &BTreeMap<String, f64>) -> f64 {
    let x = vector(p);
    let d = x.len() as f64;
    let squares = x.iter().map(|x| x * x).sum::<f64>() / d;
    let cosines = x.iter().map(|x| (2.0 * PI * x).cos()).sum::<f64>() / d;
    // Rounding leaves ~4e-16 at the origin; never report below the optimum.
    (-20.0 * (-0.2 * squares.sqrt()).exp() - cosines.exp() + 20.0 + E).max(0.0)
}

/// Levy in any dimension; minimum 0 at (1, …, 1).
pub fn levy(p: &BTreeMap<String, f64>) -> f64 {
    let w: Vec<f64> = vector(p).iter().map(|x| 1.0 + (x - 1.0) / 4.0).collect();
    let last = w[w.len() - 1];
    (PI * w[0]).sin().powi(2)
        + w[..w.len() - 1]
            .iter()
            .map(|w| (w - 1.0).powi(2) * (1.0 + 10.0 * (PI * w + 1.0).sin().powi(2)))
            .sum::<f64>()
        + (last - 1.0).powi(2) * (1.0 + (2.0 * PI * last).sin().powi(2))
}

/// The synthetic learning-rate × batch-size loss (see the module docs);
/// minimum 0.1 at `lr = 10^-2.4`, `batch = 16`.
pub fn lr_batch(p: &BTreeMap<String, f64>) -> f64 {
    let u = p["lr"].log10();
    let v = p["batch"].log2();
    let best_u = -3.0 + 0.15 * v;
    0.1 + (u - best_u).powi(2) + 0.02 * (v - 4.0).powi(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_to_the_goal_suite_scalable_and_off_centre_functions() {
        for f in all().into_iter().chain(auto_suite()) {
            let again = by_name(&f.name).unwrap();
            assert_eq!((again.name, again.params), (f.name.clone(), f.params));
        }
        let off = by_name("ackley5-off").unwrap();
        assert_eq!(off.params.len(), 5);
        assert!((off.params[0].1 - (-32.768 - 0.3 * 65.536)).abs() < 1e-12);
        let lr = by_name("lr_batch-off").unwrap();
        assert!(
            lr.params.iter().all(|p| p.1 > 0.0 && p.3),
            "{:?}",
            lr.params
        );
        for bad in [
            "ackley", "ackley0", "ackley65", "sphere3", "branin2", "-off",
        ] {
            assert!(by_name(bad).is_none(), "{bad}");
        }
        assert_eq!(auto_suite().len(), 3 * 2 + 4 * 4 * 2);
    }

    #[test]
    fn every_function_attains_its_optimum_at_its_minimiser() {
        for f in all().into_iter().chain(auto_suite()) {
            assert_eq!(f.minimiser.len(), f.params.len(), "{}", f.name);
            let at = f.at(&f.minimiser);
            assert!(
                (at - f.optimum).abs() < 1e-5,
                "{}: {at} at the minimiser, f* {}",
                f.name,
                f.optimum
            );
        }
    }

    #[test]
    fn minimisers_lie_inside_the_domains() {
        for f in all().into_iter().chain(auto_suite()).chain(shifted_suite()) {
            for ((name, min, max, _), x) in f.params.iter().zip(&f.minimiser) {
                assert!(min < x && x < max, "{}.{name}: {x}", f.name);
            }
        }
    }

    #[test]
    fn branin_has_three_minimisers() {
        let f = by_name("branin").unwrap();
        for point in [[-PI, 12.275], [PI, 2.275], [9.42478, 2.475]] {
            assert!((f.at(&point) - 0.397887).abs() < 1e-5);
        }
    }

    #[test]
    fn nothing_beats_the_optimum_on_a_grid_of_points() {
        // A coarse check that f* is a lower bound: 4^d corners-and-inner
        // points per function (capped) never go below it.
        for f in all() {
            let d = f.params.len();
            for k in 0..4usize.pow(d.min(6) as u32) {
                let point: Vec<f64> = f
                    .params
                    .iter()
                    .enumerate()
                    .map(|(i, (_, min, max, _))| {
                        let step = (k / 4usize.pow((i % 6) as u32)) % 4;
                        min + (max - min) * (0.1 + 0.27 * step as f64)
                    })
                    .collect();
                assert!(f.at(&point) >= f.optimum - 1e-9, "{}", f.name);
            }
        }
    }

    #[test]
    fn lr_batch_punishes_the_wrong_learning_rate_for_the_batch() {
        let f = by_name("lr_batch").unwrap();
        // The best lr at batch 1 is 1e-3; at batch 64 it is ~7.9e-3.
        assert!(f.at(&[1.0, 1e-3]) < f.at(&[1.0, 8e-3]));
        assert!(f.at(&[64.0, 8e-3]) < f.at(&[64.0, 1e-3]));
        assert!(f.at(&[16.0, 1e-1]) > 2.0);
    }

    #[test]
    fn bounds_are_a_valid_study_config() {
        for f in all().into_iter().chain(auto_suite()) {
            let config = json!({"seed": 1, "budget": 5, "bounds": f.bounds()});
            let parsed: flotilla_messages::solver::StudyConfig =
                serde_json::from_value(config).unwrap();
            parsed.validate().unwrap();
        }
    }
}
