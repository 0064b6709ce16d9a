//! `flotilla bench run`: what running a study in the control plane costs
//! beside running it with the local CLI.
//!
//! One study (`--trials`, a random sampler over one parameter) with a
//! trivial trial (`--script`, a shell line, `sh -c` in both modes) and
//! `--parallel` trials at once, run two ways in the same run, each with
//! its own embedded log in a temporary directory:
//!
//! - `cli`: `flotilla run --parallel N` as a subprocess, timed from its
//!   start to its exit;
//! - `control-plane`: a `flotilla up` subprocess (a free loopback port)
//!   that is ready first; timed from `create_study` and `start_run` over
//!   HTTP until the run's query says `finished` (polled every
//!   [`POLL_EVERY`]).
//!
//! For each it prints the wall time, trials/s and CPU ms per trial: the
//! process's own (`utime + stime` of `/proc/<pid>/stat`) and its children's,
//! the trials' scripts (`cutime + cstime`, the children it reaped); for the
//! CLI they are read once it has exited, before it is reaped. Then the
//! ratio of the control plane's wall time to the CLI's (the goal is at
//! most [`GOAL_RATIO`]). `--json` prints the same as one JSON object.
//! `FLOTILLA_RECONCILE_SECONDS` and `FLOTILLA_HEARTBEAT_SECONDS`, if set,
//! reach the `up` child.

use super::bench_auth::{start_up_with, Up};
use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// How often the control plane's run is polled for its end.
pub const POLL_EVERY: Duration = Duration::from_millis(50);
/// The goal: the control plane's wall time at most this many times the CLI's.
pub const GOAL_RATIO: f64 = 1.2;
/// The study's id in both modes.
const STUDY: &str = "bench-run";

/// `flotilla bench run`.
#[derive(Debug, Args)]
pub struct BenchRunArgs {
    /// Trials in the study (its budget).
    #[arg(long, default_value_t = 500)]
    pub trials: u64,
    /// Trials run at once.
    #[arg(long, default_value_t = 8)]
    pub parallel: u32,
    /// What one trial runs: a shell command line (`sh -c`).
    #[arg(long, default_value = "echo RESULT=1")]
    pub script: String,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// CPU time of a process, in clock ticks: its own and its reaped children's.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    own: u64,
    children: u64,
}

impl Cpu {
    /// Reads `/proc/<pid>/stat` (utime, stime, cutime, cstime).
    fn of(pid: u32) -> Result<Cpu> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
        // Fields after the command name, which is in parentheses and may
        // hold spaces: the state is field 3, utime field 14.
        let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<u64> = rest
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        let field = |n: usize| fields.get(n - 4).copied().unwrap_or(0);
        Ok(Cpu {
            own: field(14) + field(15),
            children: field(16) + field(17),
        })
    }

    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            own: self.own.saturating_sub(before.own),
            children: self.children.saturating_sub(before.children),
        }
    }
}

/// Milliseconds per clock tick.
fn tick_ms() -> f64 {
    // SAFETY: sysconf reads a constant of the system; no memory is shared.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    1000.0 / if hz > 0 { hz as f64 } else { 100.0 }
}

/// One mode's measurement.
struct Measured {
    mode: &'static str,
    what: String,
    wall: Duration,
    cpu: Cpu,
}

impl Measured {
    fn per_trial_ms(&self, ticks: u64, trials: u64) -> f64 {
        ticks as f64 * tick_ms() / trials.max(1) as f64
    }

    fn json(&self, trials: u64) -> Value {
        json!({
            "mode": self.mode,
            "what": self.what,
            "wall_seconds": self.wall.as_secs_f64(),
            "trials_per_second": trials as f64 / self.wall.as_secs_f64().max(1e-9),
            "cpu_ms_per_trial": {
                "self": self.per_trial_ms(self.cpu.own, trials),
                "children": self.per_trial_ms(self.cpu.children, trials),
            },
        })
    }
}

/// Runs `flotilla bench run`.
pub fn run(args: BenchRunArgs) -> Result<ExitCode> {
    if args.trials == 0 || args.parallel == 0 {
        bail!("--trials and --parallel must be at least 1");
    }
    let root = std::env::temp_dir().join(format!("flotilla-bench-run-{}", std::process::id()));
    std::fs::create_dir_all(&root)?;
    let outcome = measure(&args, &root);
    let _ = std::fs::remove_dir_all(&root);
    let [cli, plane] = outcome?;
    let ratio = plane.wall.as_secs_f64() / cli.wall.as_secs_f64().max(1e-9);
    if args.json {
        let report = json!({
            "trials": args.trials,
            "parallel": args.parallel,
            "script": args.script,
            "build": build(),
            "modes": [cli.json(args.trials), plane.json(args.trials)],
            "ratio": ratio,
            "goal_ratio": GOAL_RATIO,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&args, &[&cli, &plane], ratio);
    }
    Ok(ExitCode::SUCCESS)
}

fn build() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

fn measure(args: &BenchRunArgs, root: &Path) -> Result<[Measured; 2]> {
    let config = json!({"seed": 1, "budget": args.trials, "sampler": "random",
        "bounds": {"x": {"min": 0.0, "max": 1.0}}});
    let config_path = root.join("study.json");
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;
    let cli = measure_cli(args, root, &config_path)?;
    let plane = measure_control_plane(args, root, config)?;
    Ok([cli, plane])
}

/// `flotilla run --parallel N` as a subprocess.
fn measure_cli(args: &BenchRunArgs, root: &Path, config: &Path) -> Result<Measured> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("run")
        .arg("--config")
        .arg(config)
        .args(["--script", &args.script, "--study", STUDY])
        .args(["--parallel", &args.parallel.to_string()])
        .arg("--data-dir")
        .arg(root.join("cli"))
        .env("FLOTILLA_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let started = Instant::now();
    let mut child = cmd.spawn().context("cannot start flotilla run")?;
    let stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut out) = stdout {
            let _ = std::io::Read::read_to_string(&mut out, &mut text);
        }
        text
    });
    exited(&child)?;
    let wall = started.elapsed();
    let cpu = Cpu::of(child.id())?;
    let status = child.wait()?;
    let summary = reader.join().unwrap_or_default();
    if !status.success() {
        bail!("flotilla run failed ({status}): {summary}");
    }
    let summary: Value = serde_json::from_str(&summary)
        .with_context(|| format!("flotilla run printed no summary: {summary}"))?;
    let completed = summary["trials"]["completed"].as_u64().unwrap_or(0);
    if completed != args.trials {
        bail!(
            "flotilla run completed {completed} of {} trials: {summary}",
            args.trials
        );
    }
    Ok(Measured {
        mode: "cli",
        what: format!("flotilla run --parallel {}", args.parallel),
        wall,
        cpu,
    })
}

/// Waits until `child` has exited, leaving it unreaped so that its
/// `/proc/<pid>/stat` still holds its final CPU times.
fn exited(child: &Child) -> Result<()> {
    let pid = libc::id_t::try_from(child.id())?;
    loop {
        // SAFETY: `info` is a plain struct waitid fills; WNOWAIT leaves
        // the child to be reaped by `Child::wait`.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let rc =
            unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if rc == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e).context("waiting for flotilla run");
        }
    }
}

/// `flotilla up` and a run started over HTTP.
fn measure_control_plane(args: &BenchRunArgs, root: &Path, config: Value) -> Result<Measured> {
    let up = start_up_with(root.join("up"), &[])?;
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let pid = up.child.id();
    let before = Cpu::of(pid)?;
    let started = Instant::now();
    let mut create = config;
    create["type"] = json!("create_study");
    command(&client, &up, "solver", create)?;
    let start = json!({"type": "start_run", "executor": "local", "parallel": args.parallel,
        "command": ["sh", "-c", args.script]});
    command(&client, &up, "study_run", start)?;
    let view = until_done(&client, &up)?;
    let wall = started.elapsed();
    let cpu = Cpu::of(pid)?.since(before);
    let completed = view["counts"]["completed"].as_u64().unwrap_or(0);
    if view["status"] != "finished" || completed != args.trials {
        bail!(
            "the control plane's run ended {} with {completed} of {} trials completed: {}",
            view["status"],
            args.trials,
            view["reason"]
        );
    }
    Ok(Measured {
        mode: "control-plane",
        what: format!("flotilla up, start_run parallel {}", args.parallel),
        wall,
        cpu,
    })
}

/// Sends `body` to `<actor>/<STUDY>` over HTTP; an error unless it is ok.
fn command(client: &reqwest::blocking::Client, up: &Up, actor: &str, body: Value) -> Result<()> {
    let url = format!("{}/v1/cmd/{actor}/{STUDY}", up.url);
    let reply: Value = client.post(&url).json(&body).send()?.json()?;
    if reply["ok"] != true {
        bail!("{actor} {}: {}", body["type"], reply["error"]);
    }
    Ok(())
}

/// Polls the run until it is no longer active; its last view.
fn until_done(client: &reqwest::blocking::Client, up: &Up) -> Result<Value> {
    let url = format!("{}/v1/query/study_run/{STUDY}", up.url);
    loop {
        let reply: Value = client.get(&url).send()?.json()?;
        let view = &reply["result"];
        match view["status"].as_str() {
            Some("starting" | "running" | "paused") => {}
            Some(_) => return Ok(view.clone()),
            None => bail!("the run's query answered {reply}"),
        }
        std::thread::sleep(POLL_EVERY);
    }
}

fn print_table(args: &BenchRunArgs, modes: &[&Measured], ratio: f64) {
    println!(
        "study runs: {} trials, parallel {}, script `sh -c '{}'`, embedded log ({} build)",
        args.trials,
        args.parallel,
        args.script,
        build()
    );
    println!("| mode | what | wall s | trials/s | CPU ms/trial (self) | CPU ms/trial (children) |");
    println!("|---|---|---|---|---|---|");
    for m in modes {
        let row = m.json(args.trials);
        println!(
            "| {} | {} | {:.2} | {:.1} | {:.2} | {:.2} |",
            m.mode,
            m.what,
            m.wall.as_secs_f64(),
            row["trials_per_second"].as_f64().unwrap_or_default(),
            row["cpu_ms_per_trial"]["self"].as_f64().unwrap_or_default(),
            row["cpu_ms_per_trial"]["children"]
                .as_f64()
                .unwrap_or_default(),
        );
    }
    let verdict = if ratio <= GOAL_RATIO {
        "meets"
    } else {
        "misses"
    };
    println!("control plane / cli wall time: {ratio:.2}x ({verdict} the goal of {GOAL_RATIO}x)");
}
