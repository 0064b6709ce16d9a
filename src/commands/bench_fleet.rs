//! `flotilla bench fleet`: how fast and how lean chaos simulation runs.
//!
//! Rows: Navarch's two stress scenarios as shipped
//! (`simulations/scenarios/navarch-stress-{1000,5000}.yaml`), then a scale
//! series — the same chaos at 1,000, 5,000 and 50,000 nodes for 30 virtual
//! minutes — to show that wall time grows with the events, not with the
//! pool; `--day` adds 50,000 nodes for 24 virtual hours. Every row runs
//! `--runs` times, each in its own process (so the peak RSS is that run's
//! alone), and shows the range; it also checks that every run of a row
//! gave the same log hash.

use anyhow::{bail, Context, Result};
use clap::Args;
use flotilla_simulations::scenario::file::Scenario;
use flotilla_simulations::scenario::{run, Quiet};
use serde::{Deserialize, Serialize};
use std::process::{Command, ExitCode};

/// `flotilla bench fleet`.
#[derive(Debug, Args)]
pub struct BenchFleetArgs {
    /// Runs per row (the table shows min–max).
    #[arg(long, default_value_t = 3)]
    pub runs: u32,
    /// Also run 50,000 nodes for 24 virtual hours.
    #[arg(long)]
    pub day: bool,
    /// Failures per minute per 1,000 nodes in the scale series and the day.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Run one row in this process and print its figures as JSON (used by
    /// the table's child processes).
    #[arg(long, hide = true)]
    pub one: Option<String>,
}

/// One run's figures.
#[derive(Debug, Serialize, Deserialize)]
struct Figures {
    wall_ms: u64,
    events: u64,
    peak_rss_mb: f64,
    log_hash: String,
    faults: u64,
    replacements: usize,
    wrongly_replaced: u32,
}

const STRESS_1000: &str = include_str!("../../simulations/scenarios/navarch-stress-1000.yaml");
const STRESS_5000: &str = include_str!("../../simulations/scenarios/navarch-stress-5000.yaml");

/// Runs `flotilla bench fleet`.
pub fn run_bench(args: BenchFleetArgs) -> Result<ExitCode> {
    if let Some(row) = &args.one {
        let figures = measure(&scenario_text(row, args.rate)?)?;
        println!("{}", serde_json::to_string(&figures)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![
        ("navarch-stress-1000", "1,000", "10 min", "10"),
        ("navarch-stress-5000", "5,000", "30 min", "50"),
        ("scale-1000", "1,000", "30 min", ""),
        ("scale-5000", "5,000", "30 min", ""),
        ("scale-50000", "50,000", "30 min", ""),
    ];
    if args.day {
        rows.push(("day-50000", "50,000", "24 h", ""));
    }
    let rate = format!("{}", args.rate);
    println!("| scenario | nodes | virtual | failures/min/1000 | events | faults | replacements | wrongly replaced | wall s | events/s | peak RSS MB | same hash |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (row, nodes, virtual_time, row_rate) in rows {
        let runs: Vec<Figures> = (0..args.runs.max(1))
            .map(|_| child(row, args.rate))
            .collect::<Result<_>>()?;
        let range = |f: &dyn Fn(&Figures) -> f64, digits: usize| {
            let lo = runs.iter().map(f).fold(f64::INFINITY, f64::min);
            let hi = runs.iter().map(f).fold(0.0, f64::max);
            if (hi - lo).abs() < 10f64.powi(-(digits as i32)) {
                format!("{lo:.digits$}")
            } else {
                format!("{lo:.digits$}–{hi:.digits$}")
            }
        };
        let first = &runs[0];
        let same = runs.iter().all(|r| r.log_hash == first.log_hash);
        println!(
            "| {row} | {nodes} | {virtual_time} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            if row_rate.is_empty() { &rate } else { row_rate },
            first.events,
            first.faults,
            first.replacements,
            first.wrongly_replaced,
            range(&|r| r.wall_ms as f64 / 1000.0, 2),
            range(&|r| r.events as f64 / (r.wall_ms.max(1) as f64 / 1000.0), 0),
            range(&|r| r.peak_rss_mb, 0),
            if same { "yes" } else { "NO" },
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs one row in a child process and reads its figures.
fn child(row: &str, rate: f64) -> Result<Figures> {
    let exe = std::env::current_exe().context("cannot find this program")?;
    let out = Command::new(exe)
        .args(["bench", "fleet", "--rate", &rate.to_string(), "--one", row])
        .output()
        .context("cannot run a bench child")?;
    if !out.status.success() {
        bail!("{row}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let line = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(line.trim()).with_context(|| format!("{row}: {line}"))
}

/// The scenario of a row: a shipped one, or the scale series' chaos at
/// `nodes` for `minutes`.
fn scenario_text(row: &str, rate: f64) -> Result<String> {
    let (nodes, minutes) = match row {
        "navarch-stress-1000" => return Ok(STRESS_1000.into()),
        "navarch-stress-5000" => return Ok(STRESS_5000.into()),
        "scale-1000" => (1_000, 30),
        "scale-5000" => (5_000, 30),
        "scale-50000" => (50_000, 30),
        "day-50000" => (50_000, 24 * 60),
        other => bail!("unknown row {other:?}"),
    };
    Ok(format!(
        r#"name: {row}
description: the scale series' chaos at {nodes} nodes for {minutes} minutes
fleet: []
stress:
  duration: {minutes}m
  metrics_interval: 1m
  seed: 1
  fleet_gen:
    total_nodes: {nodes}
    templates: [{{name: h100-8gpu, weight: 1, gpu_count: 8, gpu_type: "NVIDIA H100 80GB HBM3"}}]
    providers: {{gcp: 50, aws: 50}}
    regions: {{us-central1: 50, us-east1: 50}}
    zones: {{us-central1: [us-central1-a, us-central1-b], us-east1: [us-east1-b, us-east1-c]}}
    startup: {{pattern: linear, duration: 5m}}
  chaos:
    enabled: true
    failure_rate: {rate}
    failure_types:
      - {{type: xid_error, weight: 70}}
      - {{type: temperature, weight: 10}}
      - {{type: network, weight: 10}}
      - {{type: nvml_failure, weight: 5}}
      - {{type: memory_error, weight: 5}}
    cascading: {{enabled: true, probability: 0.1, max_depth: 2, min_delay: 1s, max_delay: 10s, scope: rack, max_affected_percent: 0.25}}
    recovery: {{enabled: true, probability: 0.6, mean_time: 5m, std_dev: 2m}}
"#
    ))
}

fn measure(text: &str) -> Result<Figures> {
    let scenario = Scenario::from_yaml(text)?;
    let report = run(&scenario, scenario.seed(), &mut Quiet)?;
    Ok(Figures {
        wall_ms: report.wall_ms,
        events: report.events,
        peak_rss_mb: peak_rss_mb(),
        log_hash: report.log_hash.clone(),
        faults: report.faults_injected(),
        replacements: report.replace_s.len(),
        wrongly_replaced: report.faults.iter().map(|f| f.wrongly_replaced).sum(),
    })
}

/// This process's peak resident set (Linux), MB.
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}
