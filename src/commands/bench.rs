//! `flotilla bench log`: durable appends/s and replay events/s, printed as a
//! table. Appends are measured one writer at batch 1, several writers at
//! batch 1 (group commit shares each flush), and one writer at batch 100;
//! replay reads one stream end to end with every checksum and link verified.
//!
//! `flotilla bench solver`: the solver's regret on standard test functions
//! per budget and sampler (optionally beside Optuna's, through
//! `benches/optuna_compare.py`), which sampler leads per dimension and
//! budget (the table the `auto` sampler's rule is read from; `--suite auto`
//! runs its wider suite), the hypervolume gap of the multi-objective
//! samplers on ZDT1, ZDT2 and DTLZ2 (`--suite mo`), and the wall time of
//! one ask + tell on studies of 1,000 and 10,000 trials. The harness is the simulations crate's
//! (`simulations/src/{study,objectives,solver_bench}.rs`), compiled in here
//! so the CLI needs no extra dependency.
//!
//! `flotilla bench inference` is [`super::bench_inference`]; `flotilla
//! bench auth` (HTTP command latency with and without bearer tokens) is
//! [`super::bench_auth`]; `flotilla bench run` (a study run in the control
//! plane beside `flotilla run`) is [`super::bench_run`].

use crate::cli::{BenchArgs, BenchLogArgs, BenchSolverArgs, BenchWhat};
use crate::commands::block_on;
use anyhow::{anyhow, Result};
use flotilla_bus::embedded::{EmbeddedBus, SledLog};
use flotilla_bus::nats::JetStreamLog;
use flotilla_bus::EventLog;
use flotilla_host::{AggregateCore, HostConfig, HostDeps, HostMetrics};
use flotilla_messages::envelope::now_micros;
use flotilla_messages::{CommandRequest, Payload, PendingEvent, StreamName, Subjects};
use flotilla_solver::Study;
use futures::TryStreamExt;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

/// Runs `flotilla bench ...`.
pub fn run(args: BenchArgs) -> Result<ExitCode> {
    match args.what {
        BenchWhat::Log(a) => bench_log(a),
        BenchWhat::Solver(a) => bench_solver(a),
        BenchWhat::Inference(a) => super::bench_inference::run(a),
        BenchWhat::Auth(a) => super::bench_auth::run(a),
        BenchWhat::Run(a) => super::bench_run::run(a),
        BenchWhat::Fleet(a) => super::bench_fleet::run_bench(a),
    }
}

use flotilla_messages::solver::Sampler;
use flotilla_simulations::multi_objective::{self, MoFunction};
use flotilla_simulations::objectives::{self, Function};
use flotilla_simulations::solver_bench::{self, Quality, SamplerSpec};

fn bench_solver(args: BenchSolverArgs) -> Result<ExitCode> {
    let samplers: Vec<SamplerSpec> = args
        .samplers
        .iter()
        .map(|n| SamplerSpec::parse(n).ok_or_else(|| anyhow!("unknown sampler {n:?}")))
        .collect::<Result<_>>()?;
    let mut budgets = args.budgets.clone();
    budgets.sort_unstable();
    budgets.dedup();
    anyhow::ensure!(
        budgets.first().is_some_and(|b| *b > 0),
        "--budgets needs budgets of at least 1"
    );
    let seeds: Vec<u64> = (0..args.seeds.max(1)).collect();
    if args.suite == "mo" {
        bench_multi_objective(&args, &samplers, &seeds, &budgets)?;
        return Ok(ExitCode::SUCCESS);
    }
    let functions = functions(&args)?;
    if !args.no_quality {
        let names: Vec<&str> = functions.iter().map(|f| f.name.as_str()).collect();
        let table = measure_quality(&args, &names, &samplers, &budgets, |threads| {
            solver_bench::quality(&functions, &samplers, &seeds, &budgets, threads)
        })?;
        println!(
            "Regret (best - f*) after each budget: median [q1 - q3] over {} seeds",
            seeds.len()
        );
        table.print(&names, &budgets);
        print_leaders(&functions, &budgets, &table.labels, &table.cells);
    }
    if !args.no_overhead {
        print_overhead(&args, &samplers);
    }
    Ok(ExitCode::SUCCESS)
}

/// A quality table: Flotilla's cells (and Optuna's with `--compare`) and
/// how long each took.
struct Table {
    labels: Vec<String>,
    cells: Vec<Quality>,
    threads: usize,
    flotilla_seconds: f64,
    optuna_seconds: Option<f64>,
}

impl Table {
    /// The cells, the wins against Optuna's TPE and the timings.
    fn print(&self, names: &[&str], budgets: &[u64]) {
        print_quality(names, budgets, &self.labels, &self.cells);
        print_wins(budgets, &self.labels, &self.cells);
        print!(
            "(flotilla: {:.1} s on {} threads",
            self.flotilla_seconds, self.threads
        );
        match self.optuna_seconds {
            Some(s) => println!("; optuna: {s:.1} s)"),
            None => println!(")"),
        }
        println!();
    }
}

/// Runs `run` on `--threads` threads, then Optuna on the same functions
/// with `--compare`.
fn measure_quality(
    args: &BenchSolverArgs,
    names: &[&str],
    samplers: &[SamplerSpec],
    budgets: &[u64],
    run: impl FnOnce(usize) -> Vec<Quality>,
) -> Result<Table> {
    let threads = match args.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let t = Instant::now();
    let mut cells = run(threads);
    let mut labels: Vec<String> = samplers.iter().map(|s| s.label.clone()).collect();
    let flotilla_seconds = t.elapsed().as_secs_f64();
    let mut optuna_seconds = None;
    if args.compare {
        let t = Instant::now();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let (optuna_labels, optuna_cells) = optuna(args, &names, budgets)?;
        labels.extend(optuna_labels);
        cells.extend(optuna_cells);
        optuna_seconds = Some(t.elapsed().as_secs_f64());
    }
    Ok(Table {
        labels,
        cells,
        threads,
        flotilla_seconds,
        optuna_seconds,
    })
}

/// `--suite mo`: the hypervolume gap on ZDT1, ZDT2 and DTLZ2 (or the
/// `--functions` among them) of the samplers that run several objectives.
fn bench_multi_objective(
    args: &BenchSolverArgs,
    samplers: &[SamplerSpec],
    seeds: &[u64],
    budgets: &[u64],
) -> Result<()> {
    let functions: Vec<MoFunction> = if args.functions.is_empty() {
        multi_objective::suite()
    } else {
        args.functions
            .iter()
            .map(|n| {
                multi_objective::by_name(n).ok_or_else(|| {
                    anyhow!("unknown function {n:?}: --suite mo has zdt1, zdt2, dtlz2")
                })
            })
            .collect::<Result<_>>()?
    };
    let (usable, skipped): (Vec<SamplerSpec>, Vec<SamplerSpec>) = samplers
        .iter()
        .cloned()
        .partition(|s| Sampler::parse(s.sampler).is_some_and(Sampler::supports_multi_objective));
    for s in &skipped {
        eprintln!(
            "{}: runs a single objective only; left out of --suite mo",
            s.label
        );
    }
    let names: Vec<&str> = functions.iter().map(|f| f.name).collect();
    let table = measure_quality(args, &names, &usable, budgets, |threads| {
        multi_objective::quality(&functions, &usable, seeds, budgets, threads)
    })?;
    println!(
        "Hypervolume gap (HV* - HV; lower is better) after each budget: median [q1 - q3] over \
         {} seeds; reference (11, 11) for zdt1 and zdt2, (1.1, 1.1, 1.1) for dtlz2",
        seeds.len()
    );
    table.print(&names, budgets);
    Ok(())
}

/// The functions `--functions` names, or else `--suite`'s.
fn functions(args: &BenchSolverArgs) -> Result<Vec<Function>> {
    if !args.functions.is_empty() {
        return args
            .functions
            .iter()
            .map(|n| objectives::by_name(n).ok_or_else(|| anyhow!("unknown function {n:?}")))
            .collect();
    }
    match args.suite.as_str() {
        "goal" => Ok(objectives::all()),
        "shifted" => Ok(objectives::shifted_suite()),
        "auto" => Ok(objectives::auto_suite()),
        other => Err(anyhow!(
            "--suite {other:?}: expected goal, shifted, auto or mo"
        )),
    }
}

/// Runs `benches/optuna_compare.py --json` (or reads `--optuna-json`) and
/// reads its cells.
fn optuna(
    args: &BenchSolverArgs,
    functions: &[String],
    budgets: &[u64],
) -> Result<(Vec<String>, Vec<Quality>)> {
    if let Some(path) = &args.optuna_json {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow!("--optuna-json {}: {e}", path.display()))?;
        return optuna_cells(&text, functions);
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = args
        .python
        .clone()
        .unwrap_or_else(|| root.join("target/optuna-venv/bin/python"));
    anyhow::ensure!(
        python.exists(),
        "no Python at {} for --compare: create it with `python3 -m venv target/optuna-venv && \
         target/optuna-venv/bin/pip install optuna`, or pass --python",
        python.display()
    );
    let output = std::process::Command::new(&python)
        .arg(root.join("benches/optuna_compare.py"))
        .arg("--json")
        .args(["--seeds", &args.seeds.max(1).to_string()])
        .args([
            "--budgets",
            &budgets
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ])
        .args(["--functions", &functions.join(",")])
        .args(optuna_samplers(args))
        .stderr(std::process::Stdio::inherit())
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "optuna_compare.py failed: {}",
        output.status
    );
    optuna_cells(&String::from_utf8(output.stdout)?, functions)
}

/// `--samplers` for `optuna_compare.py` when `--optuna-samplers` names
/// them; else its own defaults (TPE and GP, or NSGA-II, MOTPE and random for
/// multi-objective functions).
fn optuna_samplers(args: &BenchSolverArgs) -> Vec<String> {
    if args.optuna_samplers.is_empty() {
        return Vec::new();
    }
    vec!["--samplers".into(), args.optuna_samplers.join(",")]
}

/// The cells of `optuna_compare.py --json`'s output, one JSON object per
/// line, for the functions asked for (a cell of another is an error).
fn optuna_cells(text: &str, functions: &[String]) -> Result<(Vec<String>, Vec<Quality>)> {
    let mut labels = Vec::new();
    let mut cells = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let sampler = v["sampler"].as_str().unwrap_or_default().to_string();
        let function = v["function"].as_str().unwrap_or_default().to_string();
        anyhow::ensure!(
            functions.contains(&function),
            "optuna_compare.py reported function {function:?}"
        );
        if !labels.contains(&sampler) {
            labels.push(sampler.clone());
        }
        cells.push(Quality {
            function,
            sampler,
            budget: v["budget"].as_u64().unwrap_or_default(),
            regrets: serde_json::from_value(v["regrets"].clone())?,
        });
    }
    Ok((labels, cells))
}

fn cell<'a>(cells: &'a [Quality], function: &str, budget: u64, label: &str) -> Option<&'a Quality> {
    cells
        .iter()
        .find(|c| c.function == function && c.budget == budget && c.sampler == label)
}

fn median(c: &Quality) -> f64 {
    solver_bench::quantile(&c.regrets, 0.5)
}

/// A regret compactly: 3 significant digits.
fn num(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 0.01 {
        format!(
            "{:.*}",
            (2 - x.abs().log10().floor() as i32).max(0) as usize,
            x
        )
    } else {
        format!("{x:.1e}")
    }
}

fn print_quality(names: &[&str], budgets: &[u64], labels: &[String], cells: &[Quality]) {
    const W: usize = 22;
    let name_width = names.iter().map(|n| n.len()).max().unwrap_or(8).max(8);
    print!("{:<name_width$} {:>6}", "function", "budget");
    for l in labels {
        print!(" {l:>W$}");
    }
    println!();
    for name in names {
        for &b in budgets {
            print!("{name:<name_width$} {b:>6}");
            for l in labels {
                let text = cell(cells, name, b, l).map_or("-".into(), |c| {
                    let q = |p| solver_bench::quantile(&c.regrets, p);
                    format!("{} [{} - {}]", num(q(0.5)), num(q(0.25)), num(q(0.75)))
                });
                print!(" {text:>W$}");
            }
            println!();
        }
    }
}

/// For each Flotilla sampler, on how many functions its median regret is
/// no worse than each Optuna TPE's, and within 2x of Optuna GP's (the
/// issue's goals), per budget.
fn print_wins(budgets: &[u64], labels: &[String], cells: &[Quality]) {
    let goals: [(&str, f64, &str); 2] = [
        ("optuna-tpe", 1.0, "<="),
        ("optuna-gp", 2.0, "within 2x of"),
    ];
    for (prefix, factor, relation) in goals {
        for optuna in labels.iter().filter(|l| l.starts_with(prefix)) {
            for l in labels.iter().filter(|l| !l.starts_with("optuna")) {
                let counts: Vec<String> = budgets
                    .iter()
                    .map(|&b| {
                        let (mut wins, mut of) = (0, 0);
                        for theirs in cells
                            .iter()
                            .filter(|c| c.budget == b && &c.sampler == optuna)
                        {
                            if let Some(ours) = cell(cells, &theirs.function, b, l) {
                                of += 1;
                                wins += usize::from(median(ours) <= factor * median(theirs));
                            }
                        }
                        format!("{wins}/{of} at {b}")
                    })
                    .collect();
                println!(
                    "{l}: median regret {relation} {optuna}'s on {}",
                    counts.join(", ")
                );
            }
        }
    }
}

/// Per dimension, placement (standard domain, or shifted `-off` centre)
/// and budget: on how many functions each sampler has the lowest median
/// regret (ties count for each). This is the table the `auto` rule is read
/// from.
fn print_leaders(functions: &[Function], budgets: &[u64], labels: &[String], cells: &[Quality]) {
    let group_of = |f: &Function| (f.params.len(), f.name.ends_with("-off"));
    let mut groups: Vec<(usize, bool)> = functions.iter().map(group_of).collect();
    groups.sort_unstable();
    groups.dedup();
    println!(
        "Functions where each sampler has the lowest median regret, by dimension, domain and budget"
    );
    print!(
        "{:>4} {:>6} {:>6} {:>9}",
        "dims", "domain", "budget", "functions"
    );
    for l in labels {
        print!(" {l:>14}");
    }
    println!();
    for group in groups {
        let members: Vec<&Function> = functions.iter().filter(|f| group_of(f) == group).collect();
        let domain = if group.1 { "off" } else { "std" };
        for &b in budgets {
            let mut leads = vec![0; labels.len()];
            for f in &members {
                let medians: Vec<f64> = labels
                    .iter()
                    .map(|l| cell(cells, &f.name, b, l).map_or(f64::INFINITY, median))
                    .collect();
                let best = medians.iter().copied().fold(f64::INFINITY, f64::min);
                for (lead, m) in leads.iter_mut().zip(&medians) {
                    *lead += usize::from(*m == best);
                }
            }
            print!("{:>4} {domain:>6} {b:>6} {:>9}", group.0, members.len());
            for lead in leads {
                print!(" {lead:>14}");
            }
            println!();
        }
    }
    println!();
}

fn print_overhead(args: &BenchSolverArgs, samplers: &[SamplerSpec]) {
    println!(
        "Ask(1) + tell (decide + evolve), {} rounds after the study holds N trials: \
         wall time, and the thread's CPU time (wall minus waiting for a core)",
        args.window
    );
    println!(
        "{:<8} {:>7} {:>7} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "sampler", "trials", "params", "p50 ms", "p99 ms", "max ms", "cpu p50", "cpu p99"
    );
    for spec in samplers {
        for &trials in &args.overhead_trials {
            for &params in &args.overhead_params {
                let study = solver_bench::prefilled(spec, trials, params, args.window as u64 + 20);
                let times =
                    solver_bench::ask_tell_times(study, 20, args.window.max(1), thread_cpu_seconds);
                let ms = |v: &[f64], q| solver_bench::quantile(v, q) * 1e3;
                println!(
                    "{:<8} {:>7} {:>7} {:>10.4} {:>10.4} {:>10.4} {:>10.4} {:>10.4}",
                    spec.label,
                    trials,
                    params,
                    ms(&times.wall, 0.5),
                    ms(&times.wall, 0.99),
                    ms(&times.wall, 1.0),
                    ms(&times.cpu, 0.5),
                    ms(&times.cpu, 0.99)
                );
            }
        }
    }
}

/// The calling thread's CPU time in seconds (`CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer to
    // a local; the clock id is a constant the kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return f64::NAN;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

struct Row {
    backend: &'static str,
    case: String,
    events: u64,
    seconds: f64,
}

fn bench_log(args: BenchLogArgs) -> Result<ExitCode> {
    let rows = block_on(async {
        let dir = tempfile_dir()?;
        let sled: Arc<dyn EventLog> = Arc::new(SledLog::open(&dir)?);
        let mut rows = measure("embedded", sled, &args, args.replay_events).await?;
        std::fs::remove_dir_all(&dir).ok();
        if let Some(url) = &args.nats {
            let target = crate::config::nats_target(url, &args.nats_auth)?;
            let bus = crate::backend::connect_nats(&target).await?;
            let subjects = Subjects::default();
            let js: Arc<dyn EventLog> =
                Arc::new(JetStreamLog::open(bus.client(), subjects, 1).await?);
            let small = BenchLogArgs {
                events: args.events.min(5_000),
                ..args
            };
            rows.extend(measure("nats", js, &small, small.replay_events.min(100_000)).await?);
        }
        Ok(rows)
    })?;
    print_table(&rows);
    Ok(ExitCode::SUCCESS)
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir =
        std::env::temp_dir().join(format!("flotilla-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A stream name unique to this run, so a shared server's log can be reused.
fn bench_stream(name: &str) -> String {
    format!("solver/bench-{}-{name}", std::process::id())
}

/// A realistic event: a told trial result.
fn event(i: u64) -> PendingEvent {
    let payload = serde_json::json!({
        "type": "trials_told",
        "results": [{"trial_id": format!("t{i}"), "value": (i as f64).sin(), "cost": 1.0}],
    });
    PendingEvent {
        id: uuid::Uuid::now_v7().to_string(),
        event_type: "trials_told".into(),
        at: now_micros(),
        causation_id: format!("cmd-{i}"),
        correlation_id: format!("cmd-{i}"),
        payload: Payload::from_value(&payload),
        principal: Some("bench".into()),
    }
}

async fn append_run(log: Arc<dyn EventLog>, stream: String, events: u64, batch: u64) -> Result<()> {
    let mut seq = log.head(&stream).await?.seq;
    let mut i = 0;
    while i < events {
        let n = batch.min(events - i);
        let batch: Vec<_> = (i..i + n).map(event).collect();
        seq = log
            .append(&stream, seq, batch)
            .await?
            .last()
            .map_or(seq, |e| e.seq);
        i += n;
    }
    Ok(())
}

async fn measure(
    backend: &'static str,
    log: Arc<dyn EventLog>,
    a: &BenchLogArgs,
    replay_events: u64,
) -> Result<Vec<Row>> {
    let writers = a.writers.max(1);
    let single = (a.events / 10).max(100);
    let per_writer = (a.events / writers).max(10);
    let cases: [(String, u64, u64, u64); 4] = [
        ("append, batch 1, 1 writer".into(), 1, single, 1),
        (
            format!("append, batch 1, {writers} writers"),
            writers,
            per_writer,
            1,
        ),
        ("append, batch 100, 1 writer".into(), 1, a.events, 100),
        (
            format!("append, batch 100, {writers} writers"),
            writers,
            a.events,
            100,
        ),
    ];
    let mut rows = Vec::new();
    for (case, writers, each, batch) in cases {
        let mut best = f64::INFINITY;
        for round in 0..a.rounds.max(1) {
            let t = Instant::now();
            let tasks: Vec<_> = (0..writers)
                .map(|w| {
                    let stream =
                        bench_stream(&format!("{case}-{round}-{w}").replace([' ', ','], ""));
                    tokio::spawn(append_run(log.clone(), stream, each, batch))
                })
                .collect();
            for task in tasks {
                task.await??;
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        rows.push(Row {
            backend,
            case,
            events: each * writers,
            seconds: best,
        });
    }
    rows.push(replay(backend, &log, replay_events, a.rounds).await?);
    rows.extend(recovery(backend, log, replay_events).await?);
    Ok(rows)
}

/// Reads one stream of `events` events end to end, best of `rounds`.
async fn replay(
    backend: &'static str,
    log: &Arc<dyn EventLog>,
    events: u64,
    rounds: u64,
) -> Result<Row> {
    let stream = bench_stream("replay");
    append_run(log.clone(), stream.clone(), events, 1000).await?;
    let mut best = f64::INFINITY;
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        let mut read = 0u64;
        let mut all = log.read_stream(&stream, 1).await?;
        while all.try_next().await?.is_some() {
            read += 1;
        }
        anyhow::ensure!(read == events, "replayed {read} of {events} events");
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(Row {
        backend,
        case: "replay one stream (verified)".into(),
        events,
        seconds: best,
    })
}

/// A study with `events` events: created, then one trial asked and told at a time.
async fn fill_study(log: &Arc<dyn EventLog>, stream: &str, events: u64) -> Result<()> {
    let study = serde_json::json!({"type": "study_created", "config": {"seed": 1, "budget": events,
        "bounds": {"x": {"min": 0.0, "max": 1.0}, "y": {"min": 0.0, "max": 1.0}}}});
    let body = |n: u64| {
        let trial = n.div_ceil(2);
        if n == 1 {
            study.clone()
        } else if n.is_multiple_of(2) {
            serde_json::json!({"type": "trials_asked", "study_done": false, "trials": [{"trial_id": format!("t{trial}"),
                "number": trial, "params": {"x": (n as f64).sin().abs(), "y": (n as f64).cos().abs()}}]})
        } else {
            serde_json::json!({"type": "trials_told", "completes_study": false,
                "results": [{"trial_id": format!("t{}", trial - 1), "value": (n as f64).sqrt()}]})
        }
    };
    let mut seq = 0;
    while seq < events {
        let batch: Vec<PendingEvent> = (seq + 1..=(seq + 1000).min(events))
            .map(|n| PendingEvent {
                payload: Payload::from_value(&body(n)),
                ..event(n)
            })
            .map(|mut e| {
                e.event_type = e.payload.to_value()["type"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                e
            })
            .collect();
        seq = log
            .append(stream, seq, batch)
            .await?
            .last()
            .map_or(seq, |e| e.seq);
    }
    Ok(())
}

/// Recovery of one study with `events` events, without and with a snapshot.
async fn recovery(backend: &'static str, log: Arc<dyn EventLog>, events: u64) -> Result<Vec<Row>> {
    let stream = &bench_stream("recovery");
    fill_study(&log, stream, events).await?;
    let deps = HostDeps {
        log: log.clone(),
        bus: Arc::new(EmbeddedBus::new()),
        config: Arc::new(HostConfig {
            snapshot_every: 1000,
            ..HostConfig::default()
        }),
        metrics: HostMetrics::unregistered(),
    };
    let name: StreamName = stream.parse()?;
    let t = Instant::now();
    let mut core = AggregateCore::<Study>::recover(name.clone(), deps.clone()).await?;
    let cold = t.elapsed().as_secs_f64();
    let request = CommandRequest::from_value(serde_json::json!({"type": "ask"}), None)
        .map_err(|r| anyhow!("{r}"))?;
    let (reply, _) = core.execute(request, None).await;
    anyhow::ensure!(reply.ok, "the recovered study refused an ask: {reply:?}");
    drop(core);
    let t = Instant::now();
    let warm = AggregateCore::<Study>::recover(name, deps).await?;
    let warm_seconds = t.elapsed().as_secs_f64();
    anyhow::ensure!(warm.seq() == events + 1, "recovered at seq {}", warm.seq());
    Ok(vec![
        Row {
            backend,
            case: "recover a study, no snapshot".into(),
            events,
            seconds: cold,
        },
        Row {
            backend,
            case: "recover a study, snapshot".into(),
            events: events + 1,
            seconds: warm_seconds,
        },
    ])
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<9} {:<32} {:>10} {:>9} {:>12}",
        "backend", "case", "events", "seconds", "events/s"
    );
    for r in rows {
        println!(
            "{:<9} {:<32} {:>10} {:>9.3} {:>12.0}",
            r.backend,
            r.case,
            r.events,
            r.seconds,
            r.events as f64 / r.seconds.max(1e-9)
        );
    }
}
