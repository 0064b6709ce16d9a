//! `flotilla run` without `--executor`: each trial a subprocess of this
//! process, in its own process group (started, waited for and stopped with
//! the scheduler's process pieces), its output piped. A timed-out script
//! gets SIGTERM, then SIGKILL [`KILL_GRACE`] later; Ctrl-C sends SIGTERM to
//! every running script.
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

use super::config::{Plan, Script};
use super::state_file::{FailedTrial, FlotillaState, StateFile};
use super::{finish, trial_spec};
use crate::commands::study::{refusal, EmbeddedStudy};
use anyhow::{anyhow, bail, Result};
use flotilla_gateway::arqon::{ArqonState, HistoryEntry};
use flotilla_host::unix_millis;
use flotilla_messages::scheduler::JobSpec;
use flotilla_messages::solver::{Params, Trial, DEFAULT_LEASE_SECONDS};
use flotilla_scheduler::{
    exit_reason, group_command, group_leader, parse_result, signal_group, stderr_detail,
    wait_or_stop,
};
use flotilla_solver::TrialState;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io::IsTerminal;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
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

/// Runs the study of `plan` here.
pub(super) async fn drive(plan: Plan) -> Result<ExitCode> {
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
                prev.arqon.run_id.as_deref().unwrap_or("(none)"),
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
    if let Some(prev_id) = plan
        .previous
        .as_ref()
        .and_then(|p| p.arqon.run_id.as_deref())
    {
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

fn check_same_config(plan: &Plan, study: &EmbeddedStudy) -> Result<()> {
    let Some(stored) = study.core.state().config() else {
        return Ok(());
    };
    if !plan.config.same_study_as(stored) {
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

/// The progress bar of a run, on stderr when it is a terminal (hidden
/// otherwise).
pub(crate) fn progress_bar(budget: u64) -> ProgressBar {
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
                        spec_of(&self.plan, &trial),
                        trial,
                        self.plan.timeout,
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
            .command(json!({"type": "heartbeat", "trial_ids": ids, "now": unix_millis()}))
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
        let now = unix_millis();
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
            .command(json!({"type": "ask", "n": n, "now": unix_millis()}))
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
        let value = best.outcome.as_ref()?.value;
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
        // Straight from the trials (the state is written after every
        // result, so no detour through the study's JSON view).
        let history = self
            .study
            .core
            .state()
            .trials()
            .iter()
            .filter_map(|r| {
                r.outcome.as_ref().map(|o| HistoryEntry {
                    params: r.trial.params.clone(),
                    value: o.value,
                    cost: o.cost,
                    values: o.values.clone(),
                    constraints: o.constraints.clone(),
                })
            })
            .collect();
        let arqon = ArqonState {
            config: self.plan.raw_config.clone(),
            history,
            run_id: Some(self.run_id.clone()),
        };
        StateFile {
            arqon,
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

/// A trial's job spec here: [`trial_spec`] and the trial's number
/// (`FLOTILLA_TRIAL_NUMBER`).
fn spec_of(plan: &Plan, trial: &Trial) -> JobSpec {
    let params = trial
        .params
        .iter()
        .map(|(name, value)| (name.clone(), json!(value)))
        .collect();
    let mut spec = trial_spec(plan, &trial.trial_id, params);
    spec.env
        .insert("FLOTILLA_TRIAL_NUMBER".into(), trial.number.to_string());
    spec
}

async fn evaluate(
    script: Arc<Script>,
    spec: JobSpec,
    trial: Trial,
    timeout: Option<Duration>,
    running: Running,
) -> Evaluation {
    let started = Instant::now();
    let outcome = run_script(&script, &spec, timeout, &running).await;
    Evaluation {
        trial,
        outcome,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// Runs `spec`'s command (the script) to its end: its value, or why the
/// trial failed.
async fn run_script(
    script: &Script,
    spec: &JobSpec,
    timeout: Option<Duration>,
    running: &Running,
) -> Result<f64, String> {
    let mut cmd = group_command(&spec.command, spec.environment(), None);
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start the script ({script:?}): {e}"))?;
    let leader = group_leader(&child);
    let pgid = leader.pid as i32;
    if let Ok(mut g) = running.lock() {
        g.insert(pgid);
    }
    let stdout = child.stdout.take().map(read_all);
    let stderr = child.stderr.take().map(read_all);
    let deadline = timeout.map(|limit| tokio::time::Instant::now() + limit);
    let waited = wait_or_stop(&mut child, leader, deadline, KILL_GRACE).await;
    forget(running, pgid);
    let Some(status) = waited else {
        let limit = timeout.unwrap_or_default();
        return Err(format!("timed out after {limit:?} (terminated)"));
    };
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
    let detail = stderr_detail(&err_text);
    if !status.success() {
        let how = exit_reason(status.code(), status.signal());
        return Err(format!("the script {how}{detail}"));
    }
    parse_result(&out_text).map_err(|e| format!("{e}{detail}"))
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
