//! `flotilla simulate SCENARIO.yaml [--seed N] [--report out.html] [--json out.json]`:
//! a chaos scenario (Navarch's format) on virtual time, with the real pool,
//! health policy and autoscalers (see `flotilla_simulations::scenario`).
//!
//! It prints the checks, the fault table, time-to-detect and
//! time-to-replace, and the hash of the event log (the same scenario and
//! seed always give the same hash); it exits 1 when a check failed, so
//! scenarios run in CI. On a terminal a progress bar shows virtual time
//! and events/s on stderr.

use anyhow::{Context, Result};
use clap::Args;
use flotilla_simulations::scenario::file::Scenario;
use flotilla_simulations::scenario::report::{LogLine, SimReport};
use flotilla_simulations::scenario::run::clock;
use flotilla_simulations::scenario::{html, run as run_scenario, RunObserver};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// `flotilla simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The scenario file (Navarch's format, plus Flotilla's pools,
    /// health_policy, demand and world).
    pub scenario: PathBuf,
    /// The seed (default: the scenario's `stress.seed`, else 0).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Write the HTML report here (one self-contained file).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Write the report's numbers here as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Runs `flotilla simulate`.
pub fn run(args: SimulateArgs) -> Result<ExitCode> {
    let scenario = load(&args.scenario)?;
    let seed = args.seed.unwrap_or_else(|| scenario.seed());
    let mut progress = Progress::new(scenario.duration_ms());
    let report = run_scenario(&scenario, seed, &mut progress)
        .with_context(|| format!("{}", args.scenario.display()))?;
    progress.bar.finish_and_clear();
    write_outputs(&report, args.report.as_deref(), args.json.as_deref())?;
    print_summary(&report);
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Reads and validates a scenario file; errors name the file and the field.
pub fn load(path: &Path) -> Result<Scenario> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read scenario {}", path.display()))?;
    Scenario::from_yaml(&text).with_context(|| format!("scenario {}", path.display()))
}

/// Writes the HTML report and the JSON file, when asked.
pub fn write_outputs(
    report: &SimReport,
    html_to: Option<&Path>,
    json_to: Option<&Path>,
) -> Result<()> {
    if let Some(path) = html_to {
        std::fs::write(path, html::render_html(report))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = json_to {
        let text = serde_json::to_string_pretty(report)?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The progress bar (stderr, terminals only) and the live log.
struct Progress {
    bar: ProgressBar,
    started: Instant,
}

impl Progress {
    fn new(end_ms: u64) -> Self {
        let bar = if std::io::stderr().is_terminal() {
            let bar =
                ProgressBar::with_draw_target(Some(end_ms / 1000), ProgressDrawTarget::stderr());
            if let Ok(style) =
                ProgressStyle::with_template("{bar:40} virtual {msg} [{elapsed_precise}]")
            {
                bar.set_style(style);
            }
            bar
        } else {
            ProgressBar::hidden()
        };
        Progress {
            bar,
            started: Instant::now(),
        }
    }
}

impl RunObserver for Progress {
    fn progress(&mut self, now: u64, end: u64, events: u64) {
        let rate = events as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        self.bar.set_position(now / 1000);
        self.bar.set_message(format!(
            "{} / {} · {events} events · {rate:.0} events/s",
            clock(now),
            clock(end)
        ));
    }

    fn log(&mut self, line: &LogLine) {
        self.bar
            .suspend(|| eprintln!("[{}] {}", clock(line.at_ms), line.message));
    }
}

fn print_summary(r: &SimReport) {
    let q = SimReport::quantile;
    println!(
        "scenario {} (seed {}): {} virtual, {} events, {:.2} s wall",
        r.scenario,
        r.seed,
        clock(r.duration_ms),
        r.events,
        r.wall_ms as f64 / 1000.0
    );
    if !r.faults.is_empty() {
        println!("\n| fault | injected | detected | replaced | wrongly replaced |\n|---|---|---|---|---|");
        for f in &r.faults {
            println!(
                "| {} | {} | {} | {} | {} |",
                f.fault_type, f.injected, f.detected, f.replaced, f.wrongly_replaced
            );
        }
    }
    println!(
        "\ntime to detect p50/p99: {:.0}/{:.0} s ({} nodes) · time to replace p50/p99: {:.0}/{:.0} s ({} replacements)",
        q(&r.detect_s, 0.5),
        q(&r.detect_s, 0.99),
        r.detect_s.len(),
        q(&r.replace_s, 0.5),
        q(&r.replace_s, 0.99),
        r.replace_s.len()
    );
    for pool in &r.pools {
        for (from, to) in &pool.breaker_periods {
            let to = to.map_or("the end".to_string(), clock);
            println!(
                "circuit breaker of {} open {} → {to}",
                pool.name,
                clock(*from)
            );
        }
    }
    if !r.checks.is_empty() {
        println!();
    }
    for c in &r.checks {
        let mark = if c.passed { "ok  " } else { "FAIL" };
        println!(
            "{mark} [{}] {}: expected {}, saw {}",
            clock(c.at_ms),
            c.what,
            c.expected,
            c.seen
        );
    }
    println!("\nlog hash: {}", r.log_hash);
    let failed = r.checks.iter().filter(|c| !c.passed).count();
    if failed > 0 {
        println!("{failed} of {} checks failed", r.checks.len());
    }
}
