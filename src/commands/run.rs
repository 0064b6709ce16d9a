//! `flotilla run`: ArqonHPO's `run`, durable and parallel.
//!
//! The study lives in the embedded event log (`--data-dir`, default
//! `.flotilla`), driven through the host's command step: every ask and tell
//! is an acknowledged, durable event before anything depends on it. Up to
//! `--parallel` trials run at once, each as a subprocess in its own process
//! group with its parameters in the environment (`ARQON_<name>`,
//! `FLOTILLA_PARAM_<name>`, `FLOTILLA_TRIAL_ID`). A script that exits
//! non-zero, times out or prints no number fails that trial only.
//!
//! A failed trial is recorded in the log with the solver's `fail` command
//! (with the reason), so it counts toward the budget, a run with failures
//! still ends `completed`, and a resumed run — with or without the state
//! file — does not evaluate it again. The state file also lists failures
//! under `flotilla.failed`; failures listed there by an older run that
//! could not record them are recorded on resume. Trials asked but neither
//! told nor failed (the run was killed while they ran) are evaluated again
//! on resume.
//!
//! Leases: every `ask` carries the run's clock (`now`, unix milliseconds),
//! so its trials are leased for the solver's default hour. The run renews
//! the leases of the trials it is evaluating (`heartbeat`) once less than
//! half a lease is left, claims the trials it evaluates again on resume the
//! same way, and sends `expire {now}` once per second, so trials that
//! another process (or a killed run) left behind go stale when their lease
//! ends; with `max_retries` in the config a stale trial comes back through
//! `ask` and is evaluated again.

use crate::cli::RunArgs;
use crate::commands::block_on;
use crate::commands::study::{data_dir_or_default, refusal, EmbeddedStudy};
use anyhow::{anyhow, bail, Context, Result};
use flotilla_messages::solver::{
    Params, SolverCommand, StudyConfig, Trial, COMMAND_TYPES, DEFAULT_LEASE_SECONDS,
};
use flotilla_messages::CommandRequest;
use flotilla_scheduler::{parse_result, signal_group};
use flotilla_solver::TrialState;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io::{IsTerminal, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncReadExt;
use tokio::task::JoinSet;

/// How long a timed-out script gets between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// How long stdout may stay open after the script exited.
const OUTPUT_GRACE: Duration = Duration::from_secs(5);
/// How often the run sends `expire` (and renews leases that need it).
const EXPIRE_EVERY: Duration = Duration::from_secs(1);
/// A running trial's lease is renewed once less than this is left (ms).
const RENEW_BEFORE_MS: u64 = DEFAULT_LEASE_SECONDS * 1000 / 2;

/// The wall clock in unix milliseconds: the `now` the run stamps on its
/// commands.
fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Runs `flotilla run`.
pub fn run(args: RunArgs) -> Result<ExitCode> {
    let plan = Plan::from_args(&args)?;
    if let Some(executor) = &args.executor {
        return crate::commands::scheduler_run::run(plan, executor, args.image.clone());
    }
    block_on(drive(plan))
}

/// Everything `run` needs, checked before the log is opened.
pub(crate) struct Plan {
    pub(crate) config_path: PathBuf,
    /// The config file as written (the state file's `config`).
    raw_config: Value,
    pub(crate) config: StudyConfig,
    /// The `create_study` command built from the file.
    pub(crate) create: Value,
    pub(crate) study: String,
    pub(crate) data_dir: PathBuf,
    pub(crate) state_path: Option<PathBuf>,
    previous: Option<StateFile>,
    pub(crate) script: Arc<Script>,
    pub(crate) parallel: usize,
    pub(crate) timeout: Option<Duration>,
}

impl Plan {
    fn from_args(args: &RunArgs) -> Result<Self> {
        if args.parallel == 0 {
            bail!("parallel: must be at least 1");
        }
        let timeout = args.timeout.as_deref().map(parse_duration).transpose()?;
        let (raw_config, config, create) = load_config(&args.config)?;
        let previous = match &args.state {
            Some(path) if path.exists() => Some(StateFile::load(path)?),
            _ => None,
        };
        let recorded = previous
            .as_ref()
            .and_then(|s| s.flotilla.as_ref())
            .map(|f| f.study.clone());
        let study = match (&args.study, recorded) {
            (Some(s), _) => s.clone(),
            (None, Some(s)) => s,
            (None, None) => study_name(&args.config),
        };
        flotilla_messages::validate_id("study", &study).map_err(|e| anyhow!("study: {e}"))?;
        Ok(Plan {
            config_path: args.config.clone(),
            raw_config,
            config,
            create,
            study,
            data_dir: data_dir_or_default(&args.data_dir),
            state_path: args.state.clone(),
            previous,
            script: Arc::new(Script::parse(&args.script)),
            parallel: args.parallel,
            timeout,
        })
    }
}

/// Reads the ArqonHPO config: every field goes into `create_study`, so
/// unknown or missing fields are refused naming the field.
fn load_config(path: &Path) -> Result<(Value, StudyConfig, Value)> {
    let shown = path.display();
    let text =
        std::fs::read_to_string(path).with_context(|| format!("config {shown}: cannot read"))?;
    let raw: Value =
        serde_json::from_str(&text).map_err(|e| anyhow!("config {shown}: invalid JSON: {e}"))?;
    let Value::Object(mut fields) = raw.clone() else {
        bail!("config {shown}: expected a JSON object with seed, budget and bounds");
    };
    for reserved in ["type", "command_id", "expected_seq"] {
        if fields.contains_key(reserved) {
            bail!("config {shown}: unknown field `{reserved}`");
        }
    }
    // The field's path (`bounds.x.scale`) makes the message precise.
    if let Err(e) = serde_path_to_error::deserialize::<_, StudyConfig>(&raw) {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        if path != "." && !message.starts_with(&path) {
            bail!("config {shown}: {path}: {message}");
        }
    }
    fields.insert("type".into(), json!("create_study"));
    let create = Value::Object(fields);
    let request = CommandRequest::from_value(create.clone(), None)
        .map_err(|r| anyhow!("config {shown}: {}", r.message))?;
    let command: SolverCommand = request
        .parse("solver", COMMAND_TYPES)
        .map_err(|r| anyhow!("config {shown}: {}", strip_command(&r.message)))?;
    let SolverCommand::CreateStudy(config) = command else {
        bail!("config {shown}: not a study config");
    };
    Ok((raw, config, create))
}

/// `create_study: missing field ...` reads as `missing field ...` in a
/// config file's error.
fn strip_command(message: &str) -> &str {
    message.strip_prefix("create_study: ").unwrap_or(message)
}

/// The study id from the config file's name: `my conf.json` → `my-conf`.
fn study_name(config: &Path) -> String {
    let stem = config
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if name.is_empty() {
        "study".into()
    } else {
        name
    }
}

/// `90`, `90s`, `1.5s`, `500ms`, `5m`, `1h`.
fn parse_duration(text: &str) -> Result<Duration> {
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => bail!("timeout: unknown unit in {text:?} (use ms, s, m or h)"),
    };
    let n: f64 = number
        .trim()
        .parse()
        .map_err(|_| anyhow!("timeout: {text:?} is not a duration like 60s"))?;
    if !(n.is_finite() && n > 0.0) {
        bail!("timeout: must be positive, got {text:?}");
    }
    Ok(Duration::from_secs_f64(n * scale))
}

/// How a trial's script is started.
#[derive(Debug)]
pub(crate) enum Script {
    /// An executable file.
    Exec(PathBuf),
    /// A file without the executable bit: `sh <file>`.
    Sh(PathBuf),
    /// Anything else: `sh -c <line>`.
    Line(String),
}

impl Script {
    fn parse(text: &str) -> Script {
        let path = Path::new(text);
        if !path.is_file() {
            return Script::Line(text.to_string());
        }
        let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let executable = std::fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false);
        if executable {
            Script::Exec(absolute)
        } else {
            Script::Sh(absolute)
        }
    }

    /// The program and its arguments.
    pub(crate) fn argv(&self) -> Vec<String> {
        match self {
            Script::Exec(path) => vec![path.display().to_string()],
            Script::Sh(path) => vec!["sh".into(), path.display().to_string()],
            Script::Line(line) => vec!["sh".into(), "-c".into(), line.clone()],
        }
    }

    fn command(&self) -> tokio::process::Command {
        match self {
            Script::Exec(path) => tokio::process::Command::new(path),
            Script::Sh(path) => {
                let mut c = tokio::process::Command::new("sh");
                c.arg(path);
                c
            }
            Script::Line(line) => {
                let mut c = tokio::process::Command::new("sh");
                c.arg("-c").arg(line);
                c
            }
        }
    }
}

/// The state file: ArqonHPO's `{config, history, run_id}` plus what
/// Flotilla needs to resume.
#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    config: Value,
    history: Vec<HistoryEntry>,
    run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    flotilla: Option<FlotillaState>,
}

#[derive(Debug, Serialize, Deserialize)]
struct HistoryEntry {
    params: Params,
    value: f64,
    cost: Option<f64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FlotillaState {
    study: String,
    data_dir: PathBuf,
    #[serde(default)]
    failed: Vec<FailedTrial>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FailedTrial {
    trial_id: String,
    reason: String,
}

impl StateFile {
    fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("state {}: cannot read", path.display()))?;
        serde_json::from_str(&text).map_err(|e| anyhow!("state {}: {e}", path.display()))
    }

    /// Writes `path` atomically: a temp file in the same directory, synced,
    /// then renamed over it.
    fn save(&self, path: &Path) -> Result<()> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "state.json".into());
        let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
        let body = serde_json::to_vec_pretty(self)?;
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().with_context(|| format!("state {}: cannot write", path.display()))
    }
}

/// What one evaluation gave.
struct Evaluation {
    trial: Trial,
    outcome: Result<f64, String>,
    seconds: f64,
}

/// The process groups of the running scripts (to stop them on Ctrl-C).
type Running = Arc<Mutex<HashSet<i32>>>;

/// The run's bookkeeping.
struct Run {
    plan: Plan,
    study: EmbeddedStudy,
    run_id: String,
    evaluated: u64,
    bar: ProgressBar,
    /// The trials this run is evaluating, with their lease's end (ms).
    leases: BTreeMap<String, Option<u64>>,
}

async fn drive(plan: Plan) -> Result<ExitCode> {
    let mut study = EmbeddedStudy::open(&plan.data_dir, &plan.study, true).await?;
    let resumed = study.core.state().exists();
    if resumed {
        check_same_config(&plan, &study)?;
    } else {
        if let Some(prev) = &plan.previous {
            bail!(
                "state {}: records run {} of study {}, but {} holds no such study \
                 (pass the --data-dir it ran with, or start with a new --state)",
                plan.state_path
                    .as_ref()
                    .map_or("?".into(), |p| p.display().to_string()),
                prev.run_id.as_deref().unwrap_or("(none)"),
                plan.study,
                plan.data_dir.display()
            );
        }
        let reply = study.command(plan.create.clone()).await?;
        if !reply.ok {
            bail!("config {}: {}", plan.config_path.display(), refusal(&reply));
        }
    }
    let run_id = study
        .created_id()
        .await?
        .ok_or_else(|| anyhow!("study {} has no events", plan.study))?;
    if let Some(prev_id) = plan.previous.as_ref().and_then(|p| p.run_id.as_deref()) {
        if prev_id != run_id {
            bail!(
                "state {}: records run {prev_id}, but study {} in {} is run {run_id} \
                 (use another --state or --study)",
                plan.state_path
                    .as_ref()
                    .map_or("?".into(), |p| p.display().to_string()),
                plan.study,
                plan.data_dir.display()
            );
        }
    }
    let listed = plan
        .previous
        .as_ref()
        .and_then(|p| p.flotilla.as_ref())
        .map(|f| f.failed.clone())
        .unwrap_or_default();
    let bar = progress_bar(plan.config.budget);
    let mut run = Run {
        plan,
        study,
        run_id,
        evaluated: 0,
        bar,
        leases: BTreeMap::new(),
    };
    run.record_listed_failures(listed).await?;
    if resumed {
        let s = run.study.core.state();
        let told = s.trials().iter().filter(|t| t.outcome.is_some()).count();
        run.note(format!(
            "resuming study {} (run {}): {} of {} trials told",
            run.plan.study, run.run_id, told, run.plan.config.budget
        ));
    }
    run.save_state()?;
    run.evaluate_all().await?;
    run.bar.finish_and_clear();
    finish(&run.summary())
}

/// Prints a run's summary; the exit status says whether any trial was
/// completed.
pub(crate) fn finish(summary: &Value) -> Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(summary)?);
    let completed = summary["trials"]["completed"].as_u64().unwrap_or(0);
    Ok(if completed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn check_same_config(plan: &Plan, study: &EmbeddedStudy) -> Result<()> {
    let Some(stored) = study.core.state().config() else {
        return Ok(());
    };
    if *stored != plan.config {
        bail!(
            "study {} in {} exists with a different config than {}; \
             pick another name with --study, or another --data-dir",
            plan.study,
            plan.data_dir.display(),
            plan.config_path.display()
        );
    }
    Ok(())
}

fn progress_bar(budget: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(budget), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "[{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} trials  {msg}",
    ) {
        bar.set_style(style);
    }
    bar
}

impl Run {
    /// A line on stderr that does not tear the progress bar.
    fn note(&self, line: String) {
        self.bar.suspend(|| eprintln!("{line}"));
    }

    /// The failed trials, as the log records them.
    fn failed(&self) -> Vec<FailedTrial> {
        self.study
            .core
            .state()
            .trials()
            .iter()
            .filter(|r| r.state() == TrialState::Failed)
            .map(|r| FailedTrial {
                trial_id: r.trial.trial_id.clone(),
                reason: r
                    .failure
                    .as_ref()
                    .and_then(|f| f.reason.clone())
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// Records the failures a state file lists that the log does not know
    /// yet (written by a run from before the solver recorded failures).
    async fn record_listed_failures(&mut self, listed: Vec<FailedTrial>) -> Result<()> {
        let state = self.study.core.state();
        let failures: Vec<Value> = listed
            .iter()
            .filter(|f| {
                state
                    .trial(&f.trial_id)
                    .is_some_and(|r| r.state() == TrialState::Asked)
            })
            .map(|f| json!({"trial_id": f.trial_id, "reason": f.reason}))
            .collect();
        if failures.is_empty() {
            return Ok(());
        }
        let reply = self
            .study
            .command(json!({"type": "fail", "failures": failures}))
            .await?;
        if !reply.ok {
            bail!(
                "recording the failures listed in the state file: {}",
                refusal(&reply)
            );
        }
        Ok(())
    }

    /// Trials asked before and never told nor failed: a killed run's.
    fn unfinished(&self) -> VecDeque<Trial> {
        self.study
            .core
            .state()
            .trials()
            .iter()
            .filter(|r| r.state() == TrialState::Asked)
            .map(|r| r.trial.clone())
            .collect()
    }

    async fn evaluate_all(&mut self) -> Result<()> {
        let mut queue = self.unfinished();
        if !queue.is_empty() {
            self.note(format!(
                "evaluating again {} trial(s) left running by an earlier run",
                queue.len()
            ));
        }
        let ids: Vec<String> = queue.iter().map(|t| t.trial_id.clone()).collect();
        self.claim(ids).await?;
        let running: Running = Arc::default();
        let mut set: JoinSet<Evaluation> = JoinSet::new();
        let mut exhausted = false;
        let mut tick = tokio::time::interval(EXPIRE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.refresh_bar(0);
        loop {
            while set.len() < self.plan.parallel {
                if let Some(trial) = queue.pop_front() {
                    set.spawn(evaluate(
                        self.plan.script.clone(),
                        trial,
                        self.plan.timeout,
                        self.plan.study.clone(),
                        running.clone(),
                    ));
                    continue;
                }
                if exhausted {
                    break;
                }
                let free = self.plan.parallel - set.len();
                let trials = self.ask(free).await?;
                if trials.is_empty() {
                    exhausted = true;
                }
                queue.extend(trials);
            }
            self.refresh_bar(set.len());
            if set.is_empty() {
                return Ok(());
            }
            let joined = tokio::select! {
                joined = set.join_next() => joined,
                _ = tick.tick() => {
                    if self.keep_leases().await? {
                        // Stale trials may come back through ask.
                        exhausted = false;
                    }
                    continue;
                }
                _ = tokio::signal::ctrl_c() => {
                    stop_all(&running);
                    bail!("interrupted: the {} running trial(s) stay asked and are evaluated again when the run resumes", set.len());
                }
            };
            let Some(joined) = joined else { continue };
            let evaluation = joined.map_err(|e| anyhow!("an evaluation task failed: {e}"))?;
            self.record(evaluation).await?;
        }
    }

    /// Renews the leases of `ids` (trials this run evaluates) and tracks them.
    async fn claim(&mut self, ids: Vec<String>) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let reply = self
            .study
            .command(json!({"type": "heartbeat", "trial_ids": ids, "now": now_millis()}))
            .await?;
        if !reply.ok {
            bail!("heartbeat refused: {}", refusal(&reply));
        }
        let state = self.study.core.state();
        for id in ids {
            let until = state.trial(&id).and_then(|r| r.lease_until);
            self.leases.insert(id, until);
        }
        Ok(())
    }

    /// Renews the leases that end soon and expires the study's overdue
    /// trials; whether any trial went stale.
    async fn keep_leases(&mut self) -> Result<bool> {
        let now = now_millis();
        let due: Vec<String> = self
            .leases
            .iter()
            .filter(|(_, until)| until.is_some_and(|t| t.saturating_sub(now) < RENEW_BEFORE_MS))
            .map(|(id, _)| id.clone())
            .collect();
        self.claim(due).await?;
        let reply = self
            .study
            .command(json!({"type": "expire", "now": now}))
            .await?;
        if !reply.ok {
            bail!("expire refused: {}", refusal(&reply));
        }
        let expired: Vec<String> = reply
            .result
            .as_ref()
            .and_then(|r| r.get("expired"))
            .and_then(|e| serde_json::from_value(e.clone()).ok())
            .unwrap_or_default();
        if !expired.is_empty() {
            self.note(format!(
                "trial(s) {} went stale: their lease ended",
                expired.join(", ")
            ));
        }
        Ok(!expired.is_empty())
    }

    /// Asks for up to `n` trials; none once the budget is all asked (or the
    /// study was stopped).
    async fn ask(&mut self, n: usize) -> Result<Vec<Trial>> {
        let reply = self
            .study
            .command(json!({"type": "ask", "n": n, "now": now_millis()}))
            .await?;
        if !reply.ok {
            let code = reply.error.as_ref().map(|e| e.code.as_str());
            if code == Some("INVALID_STATE") {
                self.note(format!(
                    "study {} hands out no more trials: {}",
                    self.plan.study,
                    refusal(&reply)
                ));
                return Ok(vec![]);
            }
            bail!("ask refused: {}", refusal(&reply));
        }
        let trials = reply
            .result
            .as_ref()
            .and_then(|r| r.get("trials"))
            .cloned()
            .unwrap_or(Value::Array(vec![]));
        let trials: Vec<Trial> =
            serde_json::from_value(trials).map_err(|e| anyhow!("ask: unexpected reply: {e}"))?;
        let lease_until = reply
            .result
            .as_ref()
            .and_then(|r| r.get("lease_until"))
            .and_then(Value::as_u64);
        for trial in &trials {
            self.leases.insert(trial.trial_id.clone(), lease_until);
        }
        Ok(trials)
    }

    async fn record(&mut self, evaluation: Evaluation) -> Result<()> {
        self.evaluated += 1;
        let id = evaluation.trial.trial_id.clone();
        self.leases.remove(&id);
        match evaluation.outcome {
            Ok(value) => {
                let reply = self
                    .study
                    .command(json!({"type": "tell", "results": [
                        {"trial_id": id, "value": value, "cost": evaluation.seconds}
                    ]}))
                    .await?;
                if !reply.ok {
                    let code = reply.error.as_ref().map_or("", |e| e.code.as_str());
                    if matches!(code, "UNAVAILABLE" | "CORRUPT" | "INTERNAL") {
                        bail!("tell {id}: {}", refusal(&reply));
                    }
                    let reason = format!("the study refused its result: {}", refusal(&reply));
                    self.fail(&id, reason).await?;
                }
            }
            Err(reason) => self.fail(&id, reason).await?,
        }
        self.save_state()
    }

    /// Records a failed trial in the log (the solver's `fail`).
    async fn fail(&mut self, id: &str, reason: String) -> Result<()> {
        self.note(format!("trial {id} failed: {reason}"));
        let reply = self
            .study
            .command(json!({"type": "fail", "trial_id": id, "reason": reason}))
            .await?;
        if !reply.ok {
            let code = reply.error.as_ref().map_or("", |e| e.code.as_str());
            if matches!(code, "UNAVAILABLE" | "CORRUPT" | "INTERNAL") {
                bail!("fail {id}: {}", refusal(&reply));
            }
            // Told meanwhile (INVALID_STATE): the result stands.
            self.note(format!(
                "trial {id}: the study did not record the failure: {}",
                refusal(&reply)
            ));
        }
        Ok(())
    }

    fn best(&self) -> Option<(f64, Params, String)> {
        let best = self.study.core.state().best()?;
        let value = best.outcome?.value;
        Some((
            value,
            best.trial.params.clone(),
            best.trial.trial_id.clone(),
        ))
    }

    fn refresh_bar(&self, running: usize) {
        let state = self.study.core.state();
        let finished = state
            .trials()
            .iter()
            .filter(|t| t.state() != TrialState::Asked)
            .count();
        let failed = state
            .trials()
            .iter()
            .filter(|t| t.state() == TrialState::Failed)
            .count();
        self.bar.set_position(finished as u64);
        let best = self
            .best()
            .map_or_else(|| "-".to_string(), |(v, _, _)| format!("{v:.6}"));
        self.bar
            .set_message(format!("best {best}  running {running}  failed {failed}"));
    }

    fn save_state(&self) -> Result<()> {
        let Some(path) = &self.plan.state_path else {
            return Ok(());
        };
        let history = self
            .study
            .core
            .state()
            .trials()
            .iter()
            .filter_map(|r| {
                r.outcome.map(|o| HistoryEntry {
                    params: r.trial.params.clone(),
                    value: o.value,
                    cost: o.cost,
                })
            })
            .collect();
        StateFile {
            config: self.plan.raw_config.clone(),
            history,
            run_id: Some(self.run_id.clone()),
            flotilla: Some(FlotillaState {
                study: self.plan.study.clone(),
                data_dir: self.plan.data_dir.clone(),
                failed: self.failed(),
            }),
        }
        .save(path)
    }

    fn summary(&self) -> Value {
        let state = self.study.core.state();
        let asked = state.trials().len();
        let completed = state
            .trials()
            .iter()
            .filter(|t| t.outcome.is_some())
            .count();
        let failed = self.failed();
        let best = self.best();
        json!({
            "run_id": self.run_id,
            "study": self.plan.study,
            "data_dir": self.plan.data_dir,
            "status": state.status().map(|s| s.as_str()),
            "budget": self.plan.config.budget,
            "best_value": best.as_ref().map(|b| b.0),
            "best_params": best.as_ref().map(|b| &b.1),
            "best_trial_id": best.as_ref().map(|b| &b.2),
            "trials": {
                "completed": completed,
                "failed": failed.len(),
                "not_evaluated": asked.saturating_sub(completed + failed.len()),
                "evaluated_by_this_run": self.evaluated,
            },
            "failed": failed,
        })
    }
}

/// Sends SIGTERM to every running script's process group.
fn stop_all(running: &Running) {
    let groups: Vec<i32> = running
        .lock()
        .map(|g| g.iter().copied().collect())
        .unwrap_or_default();
    for pgid in groups {
        signal_group(pgid, libc::SIGTERM);
    }
}

async fn evaluate(
    script: Arc<Script>,
    trial: Trial,
    timeout: Option<Duration>,
    study: String,
    running: Running,
) -> Evaluation {
    let started = Instant::now();
    let outcome = run_script(&script, &trial, timeout, &study, &running).await;
    Evaluation {
        trial,
        outcome,
        seconds: started.elapsed().as_secs_f64(),
    }
}

async fn run_script(
    script: &Script,
    trial: &Trial,
    timeout: Option<Duration>,
    study: &str,
    running: &Running,
) -> Result<f64, String> {
    let mut cmd = script.command();
    for (name, value) in &trial.params {
        cmd.env(format!("ARQON_{name}"), value.to_string());
        cmd.env(format!("FLOTILLA_PARAM_{name}"), value.to_string());
    }
    cmd.env("FLOTILLA_TRIAL_ID", &trial.trial_id)
        .env("FLOTILLA_TRIAL_NUMBER", trial.number.to_string())
        .env("FLOTILLA_STUDY", study)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start the script ({script:?}): {e}"))?;
    let pgid = child.id().map_or(0, |p| p as i32);
    if let Ok(mut g) = running.lock() {
        g.insert(pgid);
    }
    let stdout = child.stdout.take().map(read_all);
    let stderr = child.stderr.take().map(read_all);
    let waited = match timeout {
        Some(limit) => tokio::time::timeout(limit, child.wait()).await.ok(),
        None => Some(child.wait().await),
    };
    let status = match waited {
        Some(status) => status,
        None => {
            signal_group(pgid, libc::SIGTERM);
            if tokio::time::timeout(KILL_GRACE, child.wait())
                .await
                .is_err()
            {
                signal_group(pgid, libc::SIGKILL);
                let _ = child.wait().await;
            }
            // Whatever the script started in its group goes too.
            signal_group(pgid, libc::SIGKILL);
            forget(running, pgid);
            let limit = timeout.unwrap_or_default();
            return Err(format!("timed out after {limit:?} (terminated)"));
        }
    };
    forget(running, pgid);
    let status = status.map_err(|e| format!("cannot wait for the script: {e}"))?;
    let err_text = match stderr {
        Some(task) => tokio::time::timeout(OUTPUT_GRACE, task)
            .await
            .ok()
            .and_then(|r| r.ok())
            .unwrap_or_default(),
        None => String::new(),
    };
    let out_text = match stdout {
        Some(task) => match tokio::time::timeout(OUTPUT_GRACE, task).await {
            Ok(Ok(text)) => text,
            _ => {
                return Err(
                    "the script exited but its stdout stayed open (a background process?)".into(),
                )
            }
        },
        None => String::new(),
    };
    let tail = stderr_tail(&err_text);
    if !status.success() {
        let how = match (
            status.code(),
            std::os::unix::process::ExitStatusExt::signal(&status),
        ) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => "failed".to_string(),
        };
        return Err(format!("the script {how}{tail}"));
    }
    parse_result(&out_text).map_err(|e| format!("{e}{tail}"))
}

fn forget(running: &Running, pgid: i32) {
    if let Ok(mut g) = running.lock() {
        g.remove(&pgid);
    }
}

fn read_all<R>(mut reader: R) -> tokio::task::JoinHandle<String>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut bytes = Vec::new();
        let _ = reader.read_to_end(&mut bytes).await;
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// The last lines of stderr, for a failure's reason.
fn stderr_tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return String::new();
    }
    let from = lines.len().saturating_sub(3);
    format!("; stderr: {}", lines[from..].join(" | "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_names() {
        assert_eq!(parse_duration("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("-1s").is_err());
        assert_eq!(study_name(Path::new("dir/my conf.json")), "my-conf");
    }
}
