//! The solver benchmarks behind `flotilla bench solver`: regret of every
//! sampler on the [`objectives`](super::objectives), and the wall time of
//! one ask + tell on a study already holding thousands of trials.
//!
//! Everything runs through the study aggregate's pure `decide`/`evolve`
//! ([`run_study`]), one trial per ask, as a sequential Optuna loop does.

use super::objectives::Function;
use super::study::run_study;
use flotilla_host::Aggregate;
use flotilla_messages::solver::{
    ParamValue, Sampler, SolverCommand, SolverEvent, Tell, TrialResult,
};
use flotilla_solver::Study;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// A sampler as the benchmark names it: a sampler's name (`random`,
/// `sobol`, `grid`, `tpe`, `cmaes`, `gp`, `nsga2`, `auto`), `tpe-uni` (TPE with
/// `multivariate: 0`), or any of them with `strategy_params` after colons:
/// `tpe:gamma=0.2:n_ei_candidates=64`.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerSpec {
    /// The label in the tables.
    pub label: String,
    /// The config's `sampler`.
    pub sampler: &'static str,
    /// The config's `strategy_params`.
    pub strategy_params: Value,
}

impl SamplerSpec {
    /// Reads a label; `None` if it names no sampler or a knob is not
    /// `key=number`.
    pub fn parse(label: &str) -> Option<Self> {
        let mut parts = label.split(':');
        let (sampler, mut params) = match parts.next()? {
            "tpe-uni" => ("tpe", json!({"multivariate": 0})),
            name => (Sampler::parse(name)?.as_str(), json!({})),
        };
        for knob in parts {
            let (key, value) = knob.split_once('=')?;
            params[key] = json!(value.parse::<f64>().ok()?);
        }
        Some(SamplerSpec {
            label: label.to_string(),
            sampler,
            strategy_params: params,
        })
    }

    /// Whether the first `b` trials of a run are the same whatever its
    /// budget, so one run at the largest budget answers every smaller one.
    /// The grid is laid out for its budget, and `auto` picks by it.
    pub fn budget_free(&self) -> bool {
        !matches!(self.sampler, "grid" | "auto")
    }

    /// The `create_study` body (without its `type`) of a run.
    pub fn config(&self, seed: u64, budget: u64, bounds: Value) -> Value {
        json!({
            "seed": seed, "budget": budget, "bounds": bounds,
            "sampler": self.sampler, "strategy_params": self.strategy_params,
        })
    }
}

/// Regrets of one function × sampler, per budget, one per seed.
#[derive(Debug, Clone)]
pub struct Quality {
    /// The function's name.
    pub function: String,
    /// The sampler's label.
    pub sampler: String,
    /// The budget.
    pub budget: u64,
    /// `best − f*` of every seed, in seed order.
    pub regrets: Vec<f64>,
}

/// The best value after each trial of a run, in trial order.
fn running_best(events: &[SolverEvent]) -> Vec<f64> {
    let mut best = f64::INFINITY;
    let mut out = Vec::new();
    for e in events {
        if let SolverEvent::TrialsTold { results, .. } = e {
            for r in results {
                best = best.min(r.value);
                out.push(best);
            }
        }
    }
    out
}

/// The best value after `b` trials, for each of `budgets`, of one seed.
fn bests(f: &Function, spec: &SamplerSpec, seed: u64, budgets: &[u64]) -> Vec<f64> {
    let run = |budget: u64| {
        let mut create = spec.config(seed, budget, f.bounds());
        create["type"] = json!("create_study");
        let create: SolverCommand = serde_json::from_value(create).expect("a valid command");
        let run = run_study(create, f.objective, 1).expect("the study runs");
        running_best(&run.events)
    };
    if spec.budget_free() {
        let all = run(budgets.iter().copied().max().unwrap_or(1));
        budgets.iter().map(|&b| all[b as usize - 1]).collect()
    } else {
        budgets.iter().map(|&b| run(b)[b as usize - 1]).collect()
    }
}

/// Regrets of every function × sampler × budget over `seeds`, spread over
/// `threads` threads.
pub fn quality(
    functions: &[Function],
    samplers: &[SamplerSpec],
    seeds: &[u64],
    budgets: &[u64],
    threads: usize,
) -> Vec<Quality> {
    let names: Vec<&str> = functions.iter().map(|f| f.name.as_str()).collect();
    let grid = Grid {
        functions: &names,
        samplers,
        seeds,
        budgets,
    };
    grid.cells(threads, |f, s, seed| {
        let function = &functions[f];
        let b = bests(function, s, seed, budgets);
        b.into_iter().map(|best| best - function.optimum).collect()
    })
}

/// The runs of a quality table: every function × sampler × seed, scored
/// at every budget.
pub struct Grid<'a> {
    /// The functions' names.
    pub functions: &'a [&'a str],
    /// The samplers.
    pub samplers: &'a [SamplerSpec],
    /// The seeds.
    pub seeds: &'a [u64],
    /// The budgets, ascending.
    pub budgets: &'a [u64],
}

impl Grid<'_> {
    /// Runs `score(function index, sampler, seed)` (one score per budget)
    /// for every run on `threads` threads, and gathers the cells.
    pub fn cells(
        &self,
        threads: usize,
        score: impl Fn(usize, &SamplerSpec, u64) -> Vec<f64> + Sync,
    ) -> Vec<Quality> {
        let jobs: Vec<(usize, usize, usize)> = (0..self.functions.len())
            .flat_map(|f| {
                (0..self.samplers.len())
                    .flat_map(move |s| (0..self.seeds.len()).map(move |k| (f, s, k)))
            })
            .collect();
        let results = Mutex::new(vec![Vec::new(); jobs.len()]);
        let next = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..threads.max(1) {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(f, s, k)) = jobs.get(i) else {
                        break;
                    };
                    let scores = score(f, &self.samplers[s], self.seeds[k]);
                    results.lock().expect("no panics")[i] = scores;
                });
            }
        });
        let results = results.into_inner().expect("no panics");
        let mut out = Vec::new();
        for (fi, f) in self.functions.iter().enumerate() {
            for (bi, &budget) in self.budgets.iter().enumerate() {
                for (si, s) in self.samplers.iter().enumerate() {
                    let regrets = jobs
                        .iter()
                        .zip(&results)
                        .filter(|((jf, js, _), _)| *jf == fi && *js == si)
                        .map(|(_, r)| r[bi])
                        .collect();
                    out.push(Quality {
                        function: f.to_string(),
                        sampler: s.label.clone(),
                        budget,
                        regrets,
                    });
                }
            }
        }
        out
    }
}

/// The `q`-quantile (0..=1) of `values`, interpolated linearly between
/// order statistics (numpy's default).
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let pos = q * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// A cheap deterministic stream in [0, 1) (SplitMix64).
fn unit(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
}

fn step(study: Study, command: &SolverCommand) -> (Study, Vec<SolverEvent>) {
    let events = study.decide(command).expect("the command is accepted");
    let study = events.iter().fold(study, |s, e| s.evolve(e));
    (study, events)
}

/// A study of `sampler` over `params` parameters in [0, 1] whose first
/// `trials` trials are already told (random points, values a sphere), with
/// room for `extra` more.
pub fn prefilled(spec: &SamplerSpec, trials: u64, params: usize, extra: u64) -> Study {
    let names: Vec<String> = (0..params).map(|i| format!("p{i:02}")).collect();
    let bounds: serde_json::Map<String, Value> = names
        .iter()
        .map(|n| (n.clone(), json!({"min": 0.0, "max": 1.0})))
        .collect();
    let config = spec.config(1, trials + extra, Value::Object(bounds));
    let mut state = 7u64;
    let mut asked = Vec::new();
    let mut told = Vec::new();
    for number in 1..=trials {
        let point: serde_json::Map<String, Value> = names
            .iter()
            .map(|n| (n.clone(), json!(unit(&mut state))))
            .collect();
        let value: f64 = point
            .values()
            .map(|x| (x.as_f64().unwrap_or(0.0) - 0.3).powi(2))
            .sum();
        asked.push(json!({"trial_id": format!("t{number}"), "number": number, "params": point}));
        told.push(json!({"trial_id": format!("t{number}"), "value": value}));
    }
    let events = [
        json!({"type": "study_created", "config": config}),
        json!({"type": "trials_asked", "trials": asked, "study_done": false}),
        json!({"type": "trials_told", "results": told, "completes_study": false}),
    ];
    events.into_iter().fold(Study::default(), |study, e| {
        let e: SolverEvent = serde_json::from_value(e).expect("a valid event");
        study.evolve(&e)
    })
}

/// The time of each of `window` ask(1) + tell rounds (each `decide` and
/// `evolve`) on `study`, after `warmup` untimed rounds, in seconds.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    /// Wall-clock time: what a caller waits, preemption included.
    pub wall: Vec<f64>,
    /// The thread's CPU time, by the `cpu_clock` given: the solver's own
    /// work, without the time the thread waited for a core.
    pub cpu: Vec<f64>,
}

/// Times `window` ask(1) + tell rounds on `study` after `warmup` untimed
/// ones, by the wall clock and by `cpu_clock` (seconds of the calling
/// thread's CPU time; the CLI reads `CLOCK_THREAD_CPUTIME_ID`).
pub fn ask_tell_times(
    mut study: Study,
    warmup: usize,
    window: usize,
    cpu_clock: impl Fn() -> f64,
) -> Timings {
    let mut times = Timings::default();
    for i in 0..warmup + window {
        let (t, cpu) = (Instant::now(), cpu_clock());
        let (s, events) = step(study, &SolverCommand::Ask { n: 1, lease: None });
        let Some(SolverEvent::TrialsAsked { trials, .. }) = events.first() else {
            panic!("ask recorded no trials");
        };
        let trial = &trials[0];
        let value: f64 = trial
            .params
            .values()
            .filter_map(ParamValue::as_f64)
            .map(|x| (x - 0.3).powi(2))
            .sum();
        let tell = SolverCommand::Tell(Tell {
            results: vec![TrialResult::single(trial.trial_id.clone(), value)],
        });
        let (s, _) = step(s, &tell);
        let (wall, cpu) = (t.elapsed().as_secs_f64(), cpu_clock() - cpu);
        study = s;
        if i >= warmup {
            times.wall.push(wall);
            times.cpu.push(cpu);
        }
    }
    times
}

#[cfg(test)]
mod tests {
    use super::super::objectives;
    use super::*;

    #[test]
    fn every_label_parses_and_others_do_not() {
        for label in [
            "random", "sobol", "grid", "tpe", "tpe-uni", "cmaes", "gp", "auto", "TPE",
        ] {
            assert_eq!(SamplerSpec::parse(label).unwrap().label, label);
        }
        let spec = SamplerSpec::parse("tpe-uni:gamma=0.2:n_ei_candidates=64").unwrap();
        assert_eq!(spec.sampler, "tpe");
        assert_eq!(
            spec.strategy_params,
            json!({"multivariate": 0, "gamma": 0.2, "n_ei_candidates": 64.0})
        );
        for bad in ["bayes", "tpe-mv", "tpe:gamma", "tpe:gamma=x", ""] {
            assert!(SamplerSpec::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_run_at_the_largest_budget_answers_the_smaller_ones() {
        let f = objectives::by_name("branin").unwrap();
        for label in ["random", "sobol", "tpe"] {
            let spec = SamplerSpec::parse(label).unwrap();
            let together = bests(&f, &spec, 3, &[12, 30]);
            let alone = bests(&f, &spec, 3, &[12]);
            assert_eq!(together[0], alone[0], "{label}");
        }
    }

    #[test]
    fn quality_reports_a_non_negative_regret_per_seed() {
        let functions = [objectives::by_name("branin").unwrap()];
        let samplers = [
            SamplerSpec::parse("grid").unwrap(),
            SamplerSpec::parse("tpe").unwrap(),
        ];
        let q = quality(&functions, &samplers, &[1, 2, 3], &[20, 40], 2);
        assert_eq!(q.len(), 4);
        for cell in &q {
            assert_eq!(cell.regrets.len(), 3);
            assert!(cell.regrets.iter().all(|r| *r >= -1e-6), "{cell:?}");
        }
        let serial = quality(&functions, &samplers, &[1, 2, 3], &[20, 40], 1);
        assert_eq!(
            q.iter().map(|c| c.regrets.clone()).collect::<Vec<_>>(),
            serial.iter().map(|c| c.regrets.clone()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn quantiles_interpolate() {
        let v = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(quantile(&v, 0.5), 2.5);
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&v, 1.0), 4.0);
        assert_eq!(quantile(&v, 0.25), 1.75);
    }

    #[test]
    fn a_prefilled_study_keeps_asking() {
        let spec = SamplerSpec::parse("tpe").unwrap();
        let study = prefilled(&spec, 50, 3, 10);
        assert_eq!(study.trials().len(), 50);
        let start = Instant::now();
        let times = ask_tell_times(study, 2, 5, || start.elapsed().as_secs_f64());
        assert_eq!((times.wall.len(), times.cpu.len()), (5, 5));
        assert!(times.cpu.iter().all(|t| *t >= 0.0));
    }
}
