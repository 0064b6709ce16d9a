//! `flotilla run --executor local|kubernetes`: a study whose trials run as
//! scheduler jobs (on Kubernetes, as Jobs of `--image` whose command is the
//! script).
//!
//! The study (solver) and its queue (scheduler, queue id = study id,
//! concurrency = `--parallel`) are hosted in this process on the embedded
//! log. The loop: ask the study for as many trials as the queue has free
//! slots (leased with the run's clock), submit each as job `<trial id>`
//! (its parameters as `ARQON_<name>` and `FLOTILLA_PARAM_<name>`, the
//! script as the command, `--timeout` as the job's), tell the study each
//! job's value or fail the trial with the job's reason, and renew the
//! leases of trials whose jobs run (`heartbeat`) every [`HEARTBEAT_EVERY`]
//! (`FLOTILLA_HEARTBEAT_SECONDS` to change it) — and, on resume, at once
//! for every trial an earlier run left asked.
//!
//! Everything is in the log, so a killed run resumes: the queue's
//! unfinished attempts are adopted (or collected, or re-run when lost),
//! finished jobs not yet told are told, and asked trials without a job get
//! one. Submits and tells are idempotent, so nothing is counted twice.

use super::config::Plan;
use super::{finish, trial_spec};
use crate::commands::scheduler::{base_executors, kubernetes_executor, EmbeddedScheduler};
use crate::commands::study::refusal;
use anyhow::{anyhow, bail, Result};
use flotilla_host::{unix_millis, AggregateRegistry, Query};
use flotilla_messages::scheduler::{ExecutorKind, KubernetesSpec};
use flotilla_messages::{CommandRequest, Reply};
use flotilla_scheduler::AllowedCommands;
use flotilla_solver::Study;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the leases of trials with running jobs are renewed: well
/// inside the solver's default one-hour lease.
pub const HEARTBEAT_EVERY: Duration = flotilla_runner::DEFAULT_HEARTBEAT;

/// The heartbeat interval: `FLOTILLA_HEARTBEAT_SECONDS`, else
/// [`HEARTBEAT_EVERY`].
fn heartbeat_every() -> Result<Duration> {
    Ok(crate::commands::seconds_env("FLOTILLA_HEARTBEAT_SECONDS")?.unwrap_or(HEARTBEAT_EVERY))
}

/// Runs the study of `plan` through the scheduler on `executor`.
pub(super) fn run(plan: Plan, executor: &str, image: Option<String>) -> Result<ExitCode> {
    let executor = match (executor, image) {
        ("local", None) => ExecutorKind::Local,
        ("local", Some(_)) => bail!("image: only with --executor kubernetes"),
        ("kubernetes", Some(image)) if !image.trim().is_empty() => {
            return run_with(plan, ExecutorKind::Kubernetes, Some(image))
        }
        ("kubernetes", _) => {
            bail!("image: --executor kubernetes needs --image (the trials' container image)")
        }
        (other, _) => bail!("executor: {other:?} is not available (expected local or kubernetes)"),
    };
    run_with(plan, executor, None)
}

fn run_with(plan: Plan, executor: ExecutorKind, image: Option<String>) -> Result<ExitCode> {
    if plan.state_path.is_some() {
        bail!("state: --state is not supported with --executor yet; the study is in the log (flotilla study show)");
    }
    crate::commands::run_system(drive(plan, executor, image))
}

/// The study and its queue, hosted here.
struct ScheduledRun {
    plan: Plan,
    executor: ExecutorKind,
    image: Option<String>,
    scheduler: EmbeddedScheduler,
    study: Arc<AggregateRegistry<Study>>,
    /// Trials with running jobs, and when their lease was last renewed
    /// (or they were first seen running).
    renewed: BTreeMap<String, Instant>,
    /// How often those leases are renewed.
    heartbeat: Duration,
}

async fn drive(plan: Plan, executor: ExecutorKind, image: Option<String>) -> Result<ExitCode> {
    let jobs = plan.data_dir.join("jobs");
    // The user's own study, run by this process: every program allowed.
    let mut executors = base_executors(&jobs, &AllowedCommands::any());
    if executor == ExecutorKind::Kubernetes {
        let kubernetes = kubernetes_executor().await.ok_or_else(|| {
            anyhow!("executor: no Kubernetes cluster configured (KUBECONFIG, ~/.kube/config or an in-cluster service account)")
        })?;
        executors.push(kubernetes);
    }
    let scheduler = EmbeddedScheduler::open(&plan.data_dir, executors).await?;
    let study = AggregateRegistry::<Study>::new(scheduler.deps(), None);
    let mut run = ScheduledRun {
        plan,
        executor,
        image,
        scheduler,
        study,
        renewed: BTreeMap::new(),
        heartbeat: heartbeat_every()?,
    };
    run.start().await?;
    run.evaluate_all().await?;
    finish(&run.summary().await?)
}

impl ScheduledRun {
    async fn study_command(&self, command: Value) -> Result<Reply> {
        let request =
            CommandRequest::from_value(command, None).map_err(|r| anyhow!("{}", r.message))?;
        Ok(self.study.execute(&self.plan.study, request, None).await)
    }

    async fn study_view(&self) -> Result<Value> {
        let reply = self
            .study
            .get(&self.plan.study)
            .map_err(|r| anyhow!("study: {}", r.message))?
            .send(Query)
            .await
            .map_err(|e| anyhow!("the study stopped: {e}"))?;
        reply
            .result
            .filter(|_| reply.ok)
            .ok_or_else(|| anyhow!("study {} does not exist", self.plan.study))
    }

    /// Creates (or checks) the study and configures its queue; recovers
    /// the queue so that attempts left running are adopted.
    async fn start(&mut self) -> Result<()> {
        let reply = self.study_command(self.plan.create.clone()).await?;
        if !reply.ok {
            let exists = reply
                .error
                .as_ref()
                .is_some_and(|e| e.code == "ALREADY_EXISTS");
            if !exists {
                bail!(
                    "config {}: {}",
                    self.plan.config_path.display(),
                    refusal(&reply)
                );
            }
            let stored = self.study_view().await?;
            let same = super::same_study(&self.plan.config, &stored["config"]);
            if !same {
                bail!(
                    "study {} in {} exists with a different config than {}; \
                     pick another name with --study, or another --data-dir",
                    self.plan.study,
                    self.plan.data_dir.display(),
                    self.plan.config_path.display()
                );
            }
            eprintln!("resuming study {}", self.plan.study);
            // Claim what an earlier run left asked: its leases may be old.
            let asked: Vec<String> = stored["trials"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|t| t["state"] == "asked")
                .filter_map(|t| t["trial_id"].as_str().map(str::to_string))
                .collect();
            self.heartbeat(&asked).await?;
        }
        // The run reads every trial's job back: keep them all.
        let configure = json!({"type": "configure_queue", "concurrency": self.plan.parallel,
            "executor": self.executor, "retain_finished": flotilla_messages::scheduler::retain_all(self.plan.config.budget)});
        let reply = self.scheduler.command(&self.plan.study, configure).await?;
        if !reply.ok {
            bail!("queue {}: {}", self.plan.study, refusal(&reply));
        }
        Ok(())
    }

    /// The queue's jobs by id.
    async fn jobs(&self) -> Result<BTreeMap<String, Value>> {
        let view = self
            .scheduler
            .view(&self.plan.study)
            .await?
            .unwrap_or_default();
        Ok(view["jobs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|j| Some((j["job_id"].as_str()?.to_string(), j.clone())))
            .collect())
    }

    /// The job spec of one trial: [`trial_spec`], on `--image` when the
    /// jobs run on Kubernetes.
    fn spec(&self, id: &str, trial: &Value) -> Result<Value> {
        let params = serde_json::from_value(trial["params"].clone())
            .map_err(|e| anyhow!("trial {id}: params: {e}"))?;
        let mut spec = trial_spec(&self.plan, id, params);
        spec.kubernetes = self.image.clone().map(|image| KubernetesSpec {
            image,
            ..KubernetesSpec::default()
        });
        Ok(serde_json::to_value(spec)?)
    }

    async fn submit(&self, trial: &Value) -> Result<()> {
        let id = trial["trial_id"].as_str().unwrap_or_default();
        let submit = json!({"type": "submit", "job_id": id, "spec": self.spec(id, trial)?});
        let reply = self.scheduler.command(&self.plan.study, submit).await?;
        if !reply.ok {
            bail!("submit {id}: {}", refusal(&reply));
        }
        Ok(())
    }

    /// Tells or fails the trials whose jobs ended; submits jobs for asked
    /// trials without one; renews leases. Returns the open job count.
    async fn reconcile(&mut self) -> Result<usize> {
        let jobs = self.jobs().await?;
        let study = self.study_view().await?;
        let mut open = 0;
        let mut running = BTreeSet::new();
        for trial in study["trials"].as_array().into_iter().flatten() {
            let id = trial["trial_id"].as_str().unwrap_or_default();
            if trial["state"] != "asked" {
                continue;
            }
            let Some(job) = jobs.get(id) else {
                self.submit(trial).await?;
                open += 1;
                continue;
            };
            match job["status"].as_str().unwrap_or_default() {
                "succeeded" => self.tell(id, job).await?,
                "failed" | "timed_out" | "cancelled" => self.fail(id, job).await?,
                "running" => {
                    running.insert(id.to_string());
                    open += 1;
                }
                _ => open += 1,
            }
        }
        self.renew(running).await?;
        Ok(open)
    }

    async fn tell(&self, id: &str, job: &Value) -> Result<()> {
        let tell = json!({"type": "tell", "trial_id": id, "value": job["value"]});
        let reply = self.study_command(tell).await?;
        if !reply.ok {
            let reason = format!("the study refused its result: {}", refusal(&reply));
            return self.fail(id, &json!({"reason": reason})).await;
        }
        Ok(())
    }

    async fn fail(&self, id: &str, job: &Value) -> Result<()> {
        let reason = job["reason"].as_str().unwrap_or("the job failed");
        eprintln!("trial {id} failed: {reason}");
        let fail = json!({"type": "fail", "trial_id": id, "reason": reason});
        let reply = self.study_command(fail).await?;
        let code = reply.error.as_ref().map_or("", |e| e.code.as_str());
        if !reply.ok && matches!(code, "UNAVAILABLE" | "CORRUPT" | "INTERNAL") {
            bail!("fail {id}: {}", refusal(&reply));
        }
        Ok(())
    }

    /// Renews the leases of trials whose jobs have run for a heartbeat
    /// interval since they started or were last renewed.
    async fn renew(&mut self, running: BTreeSet<String>) -> Result<()> {
        self.renewed.retain(|id, _| running.contains(id));
        let now = Instant::now();
        let mut due = Vec::new();
        for id in running {
            let since = *self.renewed.entry(id.clone()).or_insert(now);
            if since.elapsed() >= self.heartbeat {
                due.push(id);
            }
        }
        self.heartbeat(&due).await?;
        for id in due {
            self.renewed.insert(id, Instant::now());
        }
        Ok(())
    }

    /// Renews the leases of `ids` (nothing when empty).
    async fn heartbeat(&self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let beat = json!({"type": "heartbeat", "trial_ids": ids, "now": unix_millis()});
        let reply = self.study_command(beat).await?;
        if !reply.ok {
            bail!("heartbeat refused: {}", refusal(&reply));
        }
        Ok(())
    }

    /// Asks for up to `n` trials and submits them; whether any came.
    async fn ask_and_submit(&self, n: usize) -> Result<bool> {
        let ask = json!({"type": "ask", "n": n, "now": unix_millis()});
        let reply = self.study_command(ask).await?;
        if !reply.ok {
            if reply
                .error
                .as_ref()
                .is_some_and(|e| e.code == "INVALID_STATE")
            {
                return Ok(false);
            }
            bail!("ask refused: {}", refusal(&reply));
        }
        let trials = reply
            .result
            .as_ref()
            .and_then(|r| r["trials"].as_array().cloned())
            .unwrap_or_default();
        for trial in &trials {
            self.submit(trial).await?;
        }
        Ok(!trials.is_empty())
    }

    async fn evaluate_all(&mut self) -> Result<()> {
        let subject = format!("flotilla.evt.scheduler.{}", self.plan.study);
        let mut events = self.scheduler.backend.bus.subscribe(&subject).await?;
        let mut exhausted = false;
        loop {
            let open = self.reconcile().await?;
            let free = self.plan.parallel.saturating_sub(open);
            if free > 0 && !exhausted && !self.ask_and_submit(free).await? {
                exhausted = true;
            }
            if exhausted && open == 0 && self.reconcile().await? == 0 {
                return Ok(());
            }
            // Wake on the queue's next event, or after a while anyway.
            tokio::select! {
                _ = events.next() => {
                    // Take the burst that came with it: one reconcile for all.
                    while let Ok(Some(_)) = tokio::time::timeout(Duration::ZERO, events.next()).await {}
                }
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = tokio::signal::ctrl_c() => bail!(
                    "interrupted: running jobs keep running and are adopted when the run resumes"
                ),
            }
        }
    }

    async fn summary(&self) -> Result<Value> {
        let study = self.study_view().await?;
        let mut summary = json!({
            "study": self.plan.study,
            "data_dir": self.plan.data_dir,
            "executor": self.executor,
        });
        if let Value::Object(map) = &mut summary {
            map.extend(super::study_summary(&study));
        }
        Ok(summary)
    }
}
