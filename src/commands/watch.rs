//! Following a study's run in the control plane (`study_run/<study>`):
//! what `flotilla run --remote`/`--nats` does once the run is started, and
//! `flotilla study watch` when it re-attaches; plus `study stop|pause|
//! resume`, one command each.
//!
//! The follower polls the run's query every [`POLL_EVERY`] and shows it on
//! the progress bar the local `run` uses (best so far, running, done,
//! failed), with a line for each status change and each failed trial. It
//! ends when the run is over — finished or failed, or stopped with no job
//! left to end — and prints the local run's summary ([`summary`]) with its
//! exit status. A control plane that stops answering for a while (a
//! restart) is waited for. Ctrl-C detaches: the run goes on, and the
//! follower says how to re-attach and how to stop it (exit status
//! [`DETACHED_EXIT`]).
//!
//! Neighbours: [`crate::commands::remote`] carries the requests; the run
//! itself is `flotilla_runner`'s.

use crate::cli::{ControlPlaneArgs, StudyRunArgs, StudyStopArgs};
use crate::commands::block_on;
use crate::commands::remote::{endpoint, ControlPlane};
use crate::commands::run::{finish, progress_bar};
use crate::commands::study::refusal;
use anyhow::{anyhow, bail, Result};
use flotilla_messages::{validate_id, Actor, Reply};
use indicatif::ProgressBar;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::Duration;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// How often the follower reads the run.
pub const POLL_EVERY: Duration = Duration::from_millis(250);

/// The exit status of a follower detached by Ctrl-C (128 + SIGINT, as a
/// shell reports an interrupted command): the run has no result yet.
pub const DETACHED_EXIT: u8 = 130;

/// Ctrl-C, caught from the moment it is registered (before the run is
/// started, so that no interrupt falls between starting and following).
pub struct Interrupt(Signal);

impl Interrupt {
    /// Catches SIGINT from now on (inside a tokio runtime).
    pub fn register() -> Result<Interrupt> {
        Ok(Interrupt(signal(SignalKind::interrupt())?))
    }

    async fn recv(&mut self) {
        self.0.recv().await;
    }
}

/// Runs `flotilla study watch`.
pub fn watch(args: StudyRunArgs) -> Result<ExitCode> {
    validate_id("study", &args.study).map_err(|e| anyhow!("study: {e}"))?;
    block_on(async {
        let mut interrupt = Interrupt::register()?;
        let cp = connect(&args.target).await?;
        follow(&cp, &args.study, &mut interrupt).await
    })
}

/// Runs `flotilla study stop`.
pub fn stop(args: StudyStopArgs) -> Result<ExitCode> {
    let command = match args.reason {
        Some(reason) => json!({"type": "stop_run", "reason": reason}),
        None => json!({"type": "stop_run"}),
    };
    control(&args.study, &args.target, command)
}

/// Runs `flotilla study pause`.
pub fn pause(args: StudyRunArgs) -> Result<ExitCode> {
    control(&args.study, &args.target, json!({"type": "pause_run"}))
}

/// Runs `flotilla study resume`.
pub fn resume(args: StudyRunArgs) -> Result<ExitCode> {
    control(&args.study, &args.target, json!({"type": "resume_run"}))
}

async fn connect(target: &ControlPlaneArgs) -> Result<ControlPlane> {
    let endpoint = endpoint(target.http.as_ref(), target.nats.as_ref());
    ControlPlane::connect(&endpoint, &target.nats_auth, &target.prefix).await
}

/// Sends one of the run's client commands and prints its result. Exit
/// status: 0 accepted, 1 refused (e.g. already stopped), 2 no run.
fn control(study: &str, target: &ControlPlaneArgs, command: Value) -> Result<ExitCode> {
    validate_id("study", study).map_err(|e| anyhow!("study: {e}"))?;
    let reply = block_on(async {
        let cp = connect(target).await?;
        let reply = cp.command(Actor::StudyRun, study, &command).await?;
        if code(&reply) == Some("NOT_FOUND") {
            bail!("{}", no_run(study, &cp));
        }
        Ok(reply)
    })?;
    if !reply.ok {
        eprintln!("error: {}", refusal(&reply));
        return Ok(ExitCode::from(1));
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&reply.result.unwrap_or(Value::Null))?
    );
    Ok(ExitCode::SUCCESS)
}

fn code(reply: &Reply) -> Option<&str> {
    reply.error.as_ref().map(|e| e.code.as_str())
}

fn no_run(study: &str, cp: &ControlPlane) -> String {
    format!(
        "study {study}: no run in the control plane at {} (start one with \
         `flotilla run --remote`/`--nats`, or send it `start_run`)",
        cp.shown()
    )
}

/// What one read of the run gave.
enum Poll {
    /// The run's view.
    View(Value),
    /// No answer for now (unreachable, unavailable, timed out): why.
    Passing(String),
}

/// Reads the run — only its first trial with `compact` (the counts, best
/// and jobs in flight are whole either way, and a poll stays small however
/// big the budget); a refusal that waiting cannot mend is an error.
async fn poll(cp: &ControlPlane, study: &str, compact: bool) -> Result<Poll> {
    let limit = compact.then_some(1);
    let reply = match cp.query_page(Actor::StudyRun, study, limit).await {
        Ok(reply) => reply,
        Err(e) => return Ok(Poll::Passing(format!("{e:#}"))),
    };
    match (reply.ok, code(&reply)) {
        (true, _) => Ok(Poll::View(reply.result.unwrap_or(Value::Null))),
        (false, Some("UNAVAILABLE" | "TIMEOUT")) => Ok(Poll::Passing(refusal(&reply))),
        (false, Some("NOT_FOUND")) => bail!("{}", no_run(study, cp)),
        (false, _) => bail!("study_run/{study}: {}", refusal(&reply)),
    }
}

/// Follows the run of `study` to its end and prints the summary; Ctrl-C
/// detaches.
pub async fn follow(cp: &ControlPlane, study: &str, interrupt: &mut Interrupt) -> Result<ExitCode> {
    let mut view = match poll(cp, study, false).await? {
        Poll::View(view) => view,
        Poll::Passing(why) => bail!("study_run/{study}: {why}"),
    };
    let mut shown = Shown::new(&view);
    loop {
        shown.update(&view);
        if is_over(&view) {
            break;
        }
        let failures = shown.failed.len() as u64;
        let next = tokio::select! {
            next = async {
                tokio::time::sleep(POLL_EVERY).await;
                match poll(cp, study, true).await? {
                    // New failures to announce: read every trial once.
                    Poll::View(v) if count(&v, "failed") > failures => poll(cp, study, false).await,
                    other => Ok(other),
                }
            } => next?,
            _ = interrupt.recv() => {
                shown.bar.finish_and_clear();
                eprintln!(
                    "detached: the run of study {study} goes on in the control plane\n  \
                     follow it again: flotilla study watch {study} {flags}\n  \
                     stop it:         flotilla study stop {study} {flags}",
                    flags = cp.flags()
                );
                return Ok(ExitCode::from(DETACHED_EXIT));
            }
        };
        match next {
            Poll::View(next) => {
                shown.reached();
                view = next;
            }
            Poll::Passing(why) => shown.unreachable(cp, &why),
        }
    }
    shown.bar.finish_and_clear();
    if view["status"] == "failed" {
        eprintln!(
            "the run of study {study} failed: {}",
            view["reason"].as_str().unwrap_or("no reason given")
        );
    }
    finish(&summary(cp, study, &view).await?)
}

/// The number of the run's trials in `state`.
fn count(view: &Value, state: &str) -> u64 {
    view["counts"][state].as_u64().unwrap_or(0)
}

/// Whether the run is over: finished, failed, or stopped with every job
/// it cancelled ended.
fn is_over(view: &Value) -> bool {
    match view["status"].as_str() {
        Some("finished" | "failed") => true,
        Some("stopped") => count(view, "pending") + count(view, "running") == 0,
        _ => false,
    }
}

/// What the follower has shown: the bar, the status and failures it
/// announced, whether the control plane is answering.
struct Shown {
    bar: ProgressBar,
    status: String,
    failed: BTreeSet<String>,
    unreachable: bool,
}

impl Shown {
    /// Starts showing `view`: failures already recorded are counted, not
    /// listed again.
    fn new(view: &Value) -> Shown {
        let failed: BTreeSet<String> = failed_trials(view).map(|(id, _)| id).collect();
        let shown = Shown {
            bar: progress_bar(view["budget"].as_u64().unwrap_or(0)),
            status: String::new(),
            failed,
            unreachable: false,
        };
        if !shown.failed.is_empty() {
            shown.note(format!("{} trial(s) failed so far", shown.failed.len()));
        }
        shown
    }

    /// A line on stderr that does not tear the bar.
    fn note(&self, line: String) {
        self.bar.suspend(|| eprintln!("{line}"));
    }

    fn update(&mut self, view: &Value) {
        let status = view["status"].as_str().unwrap_or("unknown").to_string();
        if status != self.status {
            let reason = view["reason"]
                .as_str()
                .map_or(String::new(), |r| format!(": {r}"));
            self.note(format!("run {status}{reason}"));
            self.status = status;
        }
        let new: Vec<(String, String)> = failed_trials(view)
            .filter(|(id, _)| !self.failed.contains(id))
            .collect();
        for (id, reason) in new {
            self.note(format!("trial {id} failed: {reason}"));
            self.failed.insert(id);
        }
        if let Some(budget) = view["budget"].as_u64() {
            self.bar.set_length(budget);
        }
        let (done, failed) = (count(view, "completed"), count(view, "failed"));
        self.bar.set_position(done + failed + count(view, "pruned"));
        let best = view["best"]["value"]
            .as_f64()
            .map_or_else(|| "-".to_string(), |v| format!("{v:.6}"));
        let running = count(view, "pending") + count(view, "running");
        self.bar.set_message(format!(
            "best {best}  running {running}  done {done}  failed {failed}  ({})",
            self.status
        ));
    }

    fn unreachable(&mut self, cp: &ControlPlane, why: &str) {
        if !self.unreachable {
            self.note(format!(
                "the control plane at {} does not answer ({why}); waiting for it",
                cp.shown()
            ));
            self.unreachable = true;
        }
    }

    fn reached(&mut self) {
        if self.unreachable {
            self.note("the control plane answers again".into());
            self.unreachable = false;
        }
    }
}

/// The run's failed trials and why.
fn failed_trials(view: &Value) -> impl Iterator<Item = (String, String)> + '_ {
    view["trials"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["state"] == "failed")
        .map(|t| {
            let id = t["trial_id"].as_str().unwrap_or_default().to_string();
            let reason = t["failure"].as_str().unwrap_or("no reason given");
            (id, reason.to_string())
        })
}

/// The local run's summary, from the study as the control plane holds it,
/// with the run's own status, reason and counts under `run`.
async fn summary(cp: &ControlPlane, study: &str, run: &Value) -> Result<Value> {
    let reply = cp.query(Actor::Solver, study).await?;
    if !reply.ok {
        bail!("solver/{study}: {}", refusal(&reply));
    }
    let view = reply.result.unwrap_or(Value::Null);
    let mut summary = json!({
        "study": study,
        "control_plane": cp.shown(),
        "executor": run["spec"]["executor"],
    });
    if let Value::Object(map) = &mut summary {
        map.extend(crate::commands::run::study_summary(&view));
    }
    summary["run"] = json!({
        "status": run["status"],
        "reason": run["reason"],
        "counts": run["counts"],
    });
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_run_is_over_once_its_jobs_ended() {
        let view = |status: &str, running: u64| json!({"status": status, "counts": {"pending": 0, "running": running}});
        assert!(is_over(&view("finished", 0)));
        assert!(is_over(&view("failed", 2)));
        assert!(!is_over(&view("stopped", 1)));
        assert!(is_over(&view("stopped", 0)));
        assert!(!is_over(&view("running", 0)));
        assert!(!is_over(&view("paused", 0)));
    }
}
