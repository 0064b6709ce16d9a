//! The multi-objective benchmark behind `flotilla bench solver --suite mo`:
//! ZDT1 and ZDT2 (2 objectives, 30 parameters in `[0, 1]`) and DTLZ2 (3
//! objectives, 12 parameters), scored by the hypervolume of the trials
//! told so far against a fixed reference point.
//!
//! | name | objectives | parameters | Pareto front | reference | HV* |
//! |---|---:|---:|---|---|---:|
//! | `zdt1` | 2 | 30 | `f2 = 1 − √f1`, `x2.. = 0` | (11, 11) | 120 + 2/3 |
//! | `zdt2` | 2 | 30 | `f2 = 1 − f1²`, `x2.. = 0` | (11, 11) | 120 + 1/3 |
//! | `dtlz2` | 3 | 12 | the unit sphere's octant, `x3.. = 0.5` | (1.1, 1.1, 1.1) | 1.331 − π/6 |
//!
//! The references are the ones Optuna's own benchmarks use for these
//! problems ((11, 11) for ZDT, as in Deb's and Optuna's `zdt` suites;
//! 1.1 per objective for DTLZ). A cell's score is the *hypervolume gap*
//! `HV* − HV` (0 is the whole front, lower is better, like a regret), with
//! `HV*` the exact hypervolume of the true front, so the regret tables and
//! their "wins" and "leaders" read the same way.

use super::solver_bench::{Grid, Quality, SamplerSpec};
use super::study::run_study_with;
use flotilla_messages::solver::{SolverCommand, SolverEvent, TrialResult};
use flotilla_solver::pareto::hypervolume;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::f64::consts::{FRAC_PI_2, PI};

/// One multi-objective benchmark problem on `[0, 1]^dimensions`.
#[derive(Debug, Clone)]
pub struct MoFunction {
    /// Short name, e.g. `zdt1`.
    pub name: &'static str,
    /// How many parameters (`x00`, `x01`, ...).
    pub dimensions: usize,
    /// The objectives (all minimised) at a point.
    pub objectives: fn(&[f64]) -> Vec<f64>,
    /// The hypervolume's reference point.
    pub reference: Vec<f64>,
    /// The exact hypervolume of the true Pareto front.
    pub ideal: f64,
}

impl MoFunction {
    /// The study config's `bounds`.
    pub fn bounds(&self) -> Value {
        let bounds: serde_json::Map<String, Value> = (0..self.dimensions)
            .map(|i| (name(i), json!({"min": 0.0, "max": 1.0})))
            .collect();
        Value::Object(bounds)
    }

    /// The objectives at named parameters.
    pub fn at(&self, params: &BTreeMap<String, f64>) -> Vec<f64> {
        let x: Vec<f64> = (0..self.dimensions).map(|i| params[&name(i)]).collect();
        (self.objectives)(&x)
    }

    /// The hypervolume gap `HV* − HV` of `points` (objective vectors).
    pub fn gap(&self, points: &[Vec<f64>]) -> f64 {
        let refs: Vec<&[f64]> = points.iter().map(Vec::as_slice).collect();
        self.ideal - hypervolume(&refs, &self.reference)
    }
}

/// Parameter `i`'s name: two digits, so names sort in number order.
fn name(i: usize) -> String {
    format!("x{i:02}")
}

/// ZDT1: `f1 = x1`, `f2 = g (1 − √(f1 / g))`, `g = 1 + 9 mean(x2..)`.
pub fn zdt1(x: &[f64]) -> Vec<f64> {
    let g = zdt_g(x);
    vec![x[0], g * (1.0 - (x[0] / g).sqrt())]
}

/// ZDT2: `f1 = x1`, `f2 = g (1 − (f1 / g)²)`.
pub fn zdt2(x: &[f64]) -> Vec<f64> {
    let g = zdt_g(x);
    vec![x[0], g * (1.0 - (x[0] / g).powi(2))]
}

fn zdt_g(x: &[f64]) -> f64 {
    1.0 + 9.0 * x[1..].iter().sum::<f64>() / (x.len() - 1) as f64
}

/// DTLZ2 in 3 objectives: the point on the sphere of radius `1 + g`
/// (`g = Σ (x_i − 0.5)²` over `x3..`) at angles `x1 π/2`, `x2 π/2`.
pub fn dtlz2(x: &[f64]) -> Vec<f64> {
    let g: f64 = x[2..].iter().map(|v| (v - 0.5).powi(2)).sum();
    let (a, b) = (x[0] * FRAC_PI_2, x[1] * FRAC_PI_2);
    let r = 1.0 + g;
    vec![r * a.cos() * b.cos(), r * a.cos() * b.sin(), r * a.sin()]
}

/// The `mo` suite.
pub fn suite() -> Vec<MoFunction> {
    vec![
        MoFunction {
            name: "zdt1",
            dimensions: 30,
            objectives: zdt1,
            reference: vec![11.0, 11.0],
            ideal: 121.0 - 1.0 / 3.0,
        },
        MoFunction {
            name: "zdt2",
            dimensions: 30,
            objectives: zdt2,
            reference: vec![11.0, 11.0],
            ideal: 121.0 - 2.0 / 3.0,
        },
        MoFunction {
            name: "dtlz2",
            dimensions: 12,
            objectives: dtlz2,
            reference: vec![1.1; 3],
            ideal: 1.1f64.powi(3) - PI / 6.0,
        },
    ]
}

/// A function of the suite by name.
pub fn by_name(name: &str) -> Option<MoFunction> {
    suite().into_iter().find(|f| f.name == name)
}

/// The objective vectors of a run's told trials, in the order told.
fn told_points(events: &[SolverEvent]) -> Vec<Vec<f64>> {
    events
        .iter()
        .flat_map(|e| match e {
            SolverEvent::TrialsTold { results, .. } => {
                results.iter().map(|r| r.objectives().to_vec()).collect()
            }
            _ => Vec::new(),
        })
        .collect()
}

/// The hypervolume gap after `b` trials, for each of `budgets`, of one seed
/// (one trial per ask).
fn gaps(f: &MoFunction, spec: &SamplerSpec, seed: u64, budgets: &[u64]) -> Vec<f64> {
    let run = |budget: u64| {
        let mut create = spec.config(seed, budget, f.bounds());
        create["type"] = json!("create_study");
        create["directions"] = json!(vec!["minimize"; f.reference.len()]);
        let create: SolverCommand = serde_json::from_value(create).expect("a valid command");
        let run = run_study_with(create, 1, |id, params| {
            TrialResult::with_values(id, f.at(params)).expect("objectives")
        })
        .expect("the study runs");
        told_points(&run.events)
    };
    let gap_at = |points: &[Vec<f64>], b: u64| f.gap(&points[..b as usize]);
    if spec.budget_free() {
        let all = run(budgets.iter().copied().max().unwrap_or(1));
        budgets.iter().map(|&b| gap_at(&all, b)).collect()
    } else {
        budgets.iter().map(|&b| gap_at(&run(b), b)).collect()
    }
}

/// Hypervolume gaps of every function × sampler × budget over `seeds`,
/// spread over `threads` threads.
pub fn quality(
    functions: &[MoFunction],
    samplers: &[SamplerSpec],
    seeds: &[u64],
    budgets: &[u64],
    threads: usize,
) -> Vec<Quality> {
    let names: Vec<&str> = functions.iter().map(|f| f.name).collect();
    let grid = Grid {
        functions: &names,
        samplers,
        seeds,
        budgets,
    };
    grid.cells(threads, |f, s, seed| gaps(&functions[f], s, seed, budgets))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` points of a front `f2 = front(f1)` at `f1 = 0, 1/(n-1), ..., 1`.
    fn front_2d(f: &MoFunction, n: usize) -> Vec<Vec<f64>> {
        (0..n)
            .map(|k| {
                let mut x = vec![0.0; f.dimensions];
                x[0] = k as f64 / (n - 1) as f64;
                (f.objectives)(&x)
            })
            .collect()
    }

    #[test]
    fn zdt_fronts_are_where_the_theory_puts_them() {
        let x = |x1: f64| {
            let mut x = vec![0.0; 30];
            x[0] = x1;
            x
        };
        assert_eq!(zdt1(&x(0.25)), vec![0.25, 0.5]);
        assert_eq!(zdt2(&x(0.5)), vec![0.5, 0.75]);
        // Off the front, g > 1 pushes f2 up.
        let mut off = x(0.25);
        off[7] = 1.0;
        assert!(zdt1(&off)[1] > 0.5);
    }

    #[test]
    fn dtlz2_puts_its_optimal_points_on_the_unit_sphere() {
        for (a, b) in [(0.0, 0.0), (0.3, 0.7), (1.0, 0.5)] {
            let mut x = vec![0.5; 12];
            x[0] = a;
            x[1] = b;
            let f = dtlz2(&x);
            let r2: f64 = f.iter().map(|v| v * v).sum();
            assert!((r2 - 1.0).abs() < 1e-12, "{f:?}");
        }
        let mut off = vec![0.5; 12];
        off[5] = 0.0;
        let r2: f64 = dtlz2(&off).iter().map(|v| v * v).sum();
        assert!((r2 - 1.5625).abs() < 1e-12);
    }

    #[test]
    fn a_dense_true_front_closes_the_gap() {
        for f in suite().into_iter().filter(|f| f.reference.len() == 2) {
            let coarse = f.gap(&front_2d(&f, 11));
            let fine = f.gap(&front_2d(&f, 2001));
            assert!(
                coarse > fine && fine > 0.0 && fine < 1e-3,
                "{}: {coarse} {fine}",
                f.name
            );
        }
        let sphere = by_name("dtlz2").unwrap();
        let n = 60;
        let points: Vec<Vec<f64>> = (0..=n)
            .flat_map(|i| (0..=n).map(move |j| (i, j)))
            .map(|(i, j)| {
                let mut x = vec![0.5; 12];
                x[0] = i as f64 / n as f64;
                x[1] = j as f64 / n as f64;
                dtlz2(&x)
            })
            .collect();
        let gap = sphere.gap(&points);
        assert!(gap > 0.0 && gap < 0.05, "{gap}");
        assert!(by_name("nope").is_none());
    }

    #[test]
    fn a_short_run_scores_every_budget() {
        let specs = [SamplerSpec::parse("nsga2:population_size=8").unwrap()];
        let cells = quality(&suite()[..1], &specs, &[0, 1], &[10, 20], 2);
        assert_eq!(cells.len(), 2);
        for c in &cells {
            assert_eq!(c.regrets.len(), 2);
            assert!(c.regrets.iter().all(|g| *g > 0.0 && *g < 121.0), "{c:?}");
        }
        // More trials never lose hypervolume.
        assert!(cells[1].regrets[0] <= cells[0].regrets[0]);
    }
}
