//! A study run: the control plane running a study's trials as scheduler
//! jobs, by itself (stream `study_run/<study>`, subjects
//! `<prefix>.cmd.study_run.<study>`).
//!
//! The run is a process manager: it owns no trial and no job, it asks the
//! study (`solver/<study>`) for trials, submits each as a job of the
//! study's queue (`scheduler/<study>`), and tells the study each job's
//! value. What it asked, submitted and told is an event of its own, so a
//! replay shows why each job ran.
//!
//! Users send four commands:
//!
//! ```json
//! {"type": "start_run", "executor": "local", "command": ["python3", "train.py"], "parallel": 8,
//!  "timeout_seconds": 600, "pool": "gpu", "backoff_limit": 1, "env": {"EPOCHS": "3"}}
//! {"type": "pause_run", "reason": "GPU maintenance"}
//! {"type": "resume_run"}
//! {"type": "stop_run", "reason": "enough"}
//! ```
//!
//! The others are how the control plane feeds the run what happened
//! elsewhere: the outcomes of its effects (`queue_ready`, `trials_received`,
//! `job_accepted`, `result_recorded`...) and what the run's driver saw on
//! the scheduler's and the solver's events (`job_started`, `job_ended`,
//! `trial_pruned`, `renew_leases`). Each of them records nothing when it
//! repeats what the run knows, so a reaction seen twice (a replica, a
//! reconciliation) changes nothing.

use crate::scheduler::{ExecutorKind, JobSpec, KubernetesSpec};
use crate::solver::Params;
use crate::Rejection;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The command types a study run accepts.
pub const COMMAND_TYPES: &[&str] = &[
    "start_run",
    "pause_run",
    "resume_run",
    "stop_run",
    "queue_ready",
    "run_refused",
    "trials_received",
    "job_accepted",
    "job_started",
    "job_ended",
    "result_recorded",
    "trial_pruned",
    "cancel_sent",
    "renew_leases",
    "leases_renewed",
];

/// The most trials a run keeps in flight at once (so that `stop_run`,
/// which cancels every job in flight in one command, stays one batch).
pub const MAX_PARALLEL: u32 = 256;

/// How a run evaluates its trials: the body of `start_run`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// Where jobs run: `local` (subprocesses of the scheduler's machine,
    /// programs of its allowlist only), `kubernetes` (a Job per trial) or
    /// `manifests` (a Job manifest per trial; nothing runs).
    #[serde(default)]
    pub executor: ExecutorKind,
    /// The program and its arguments (on Kubernetes, the container's
    /// command); never empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// The container image (needed on `kubernetes` and `manifests`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// How many trials run at once (1..=[`MAX_PARALLEL`]); 1 when absent.
    #[serde(default = "one")]
    pub parallel: u32,
    /// A job running longer is stopped and its trial failed (timed out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<f64>,
    /// The node pool the jobs need (the provisioner scales it on the
    /// queue's depth); the scheduler's default pool when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// How many times a failed job is retried before its trial fails.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub backoff_limit: u32,
    /// Extra environment for every job.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

fn one() -> u32 {
    1
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl RunSpec {
    /// Checks the spec field by field (`INVALID_FIELD`, naming it).
    pub fn validate(&self) -> Result<(), Rejection> {
        self.problem().map_or(Ok(()), |m| {
            Err(Rejection::invalid(format!("start_run: {m}")))
        })
    }

    /// What is wrong with the spec, naming the field.
    pub fn problem(&self) -> Option<String> {
        let invalid = |m: String| Some(m);
        if !(1..=MAX_PARALLEL).contains(&self.parallel) {
            return invalid(format!(
                "parallel must be between 1 and {MAX_PARALLEL}, got {}",
                self.parallel
            ));
        }
        if let Some(t) = self.timeout_seconds {
            if !(t.is_finite() && t > 0.0) {
                return invalid(format!(
                    "timeout_seconds must be a positive number, got {t}"
                ));
            }
        }
        if self.command.is_empty() {
            return invalid("command: a run needs a command (e.g. [\"./eval.sh\"])".into());
        }
        let image = self.image.as_deref().map(str::trim).unwrap_or_default();
        match self.executor {
            ExecutorKind::Local if self.image.is_some() => {
                return invalid("image: only with executor kubernetes or manifests".into())
            }
            ExecutorKind::Kubernetes | ExecutorKind::Manifests if image.is_empty() => {
                return invalid(format!(
                    "image: executor {} needs the trials' container image",
                    self.executor.as_str()
                ))
            }
            _ => {}
        }
        // What the queue would refuse at submit, refused here at once.
        self.job_spec("t1", &Params::new()).problem()
    }

    /// The job of trial `trial_id` with `params` (its `study` is set by
    /// whoever knows the study's name).
    pub fn job_spec(&self, trial_id: &str, params: &Params) -> JobSpec {
        let mut job = JobSpec::new(self.command.clone());
        job.params = params
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or_default()))
            .collect();
        job.env = self.env.clone();
        job.trial_id = Some(trial_id.to_string());
        job.timeout_seconds = self.timeout_seconds;
        job.backoff_limit = self.backoff_limit;
        if self.executor != ExecutorKind::Local {
            job.kubernetes = self.image.clone().map(|image| KubernetesSpec {
                image,
                ..KubernetesSpec::default()
            });
        }
        job
    }
}

/// A trial the study handed to the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RunTrial {
    /// The study's trial id (`t<k>`).
    pub trial_id: String,
    /// Its parameters.
    #[cfg_attr(feature = "openapi", schema(value_type = std::collections::BTreeMap<String, crate::solver::ParamValue>))]
    pub params: Params,
}

/// How a trial's job ended, as the run records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "status", rename_all = "snake_case", deny_unknown_fields)]
pub enum JobEnd {
    /// It succeeded with this value.
    Succeeded {
        /// The value it printed.
        value: f64,
    },
    /// It failed (or ran past its timeout) with no retry left.
    Failed {
        /// Why, for people.
        reason: String,
    },
    /// It was cancelled (pruned, or the run stopped).
    Cancelled {
        /// Why, if known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

/// Commands of a study run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RunCommand {
    /// Starts running the study (or starts it again after it stopped).
    StartRun(RunSpec),
    /// Hands out no new trial until `resume_run`; running jobs go on.
    PauseRun {
        /// Why, for the record (the dashboard's action reason).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Fills the free slots again after `pause_run`.
    ResumeRun {
        /// Why, for the record (the dashboard's action reason).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Stops the run: running jobs are cancelled, no new trial starts.
    StopRun {
        /// Why, for the record.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Effect outcome: the study exists and its queue is configured.
    QueueReady {
        /// The study's budget.
        budget: u64,
        /// Whether the study keeps the highest value as its best.
        maximize: bool,
        /// The most trials one ask may hand out for the study's space.
        max_ask: u32,
    },
    /// Effect outcome: the run cannot go on (no such study, a queue that
    /// refused the settings).
    RunRefused {
        /// Why.
        reason: String,
    },
    /// Effect outcome: what the study handed out for a request.
    TrialsReceived {
        /// The request (`trials_requested`'s number).
        request: u64,
        /// The trials (fewer than asked once the budget is all asked).
        trials: Vec<RunTrial>,
        /// Why the study handed out nothing, when it refused the ask.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        refused: Option<String>,
    },
    /// Effect outcome: the queue took (or refused) a trial's job.
    JobAccepted {
        /// The trial.
        trial_id: String,
        /// The job.
        job_id: String,
        /// Why the queue refused it, if it did: the trial is failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        refused: Option<String>,
    },
    /// Seen on the scheduler: an attempt of a trial's job started.
    JobStarted {
        /// The job.
        job_id: String,
        /// The attempt.
        attempt: u32,
        /// The node it was placed on, if the queue places jobs on nodes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<String>,
    },
    /// Seen on the scheduler: a trial's job finished.
    JobEnded {
        /// The job.
        job_id: String,
        /// How.
        end: JobEnd,
    },
    /// Effect outcome: the study recorded a trial's outcome.
    ResultRecorded {
        /// The trial.
        trial_id: String,
        /// Why the study refused the value, if it did (the trial is then
        /// failed with this reason).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        refused: Option<String>,
    },
    /// Seen on the solver: the pruner stopped a trial.
    TrialPruned {
        /// The trial.
        trial_id: String,
    },
    /// Effect outcome: a job's cancel reached the queue.
    CancelSent {
        /// The trial.
        trial_id: String,
    },
    /// From the driver: renew the leases of the trials whose jobs run.
    RenewLeases {
        /// The driver's clock, unix milliseconds.
        now: u64,
    },
    /// Effect outcome: the study renewed the leases.
    LeasesRenewed {
        /// The renewal's `now`.
        now: u64,
    },
}

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Waiting for its queue to be configured.
    Starting,
    /// Filling its slots with trials.
    Running,
    /// Paused: running jobs go on, no new one starts.
    Paused,
    /// Stopped by `stop_run` (its cancelled jobs may still be ending).
    Stopped,
    /// The study handed out its last trial and every one the run got is
    /// evaluated.
    Finished,
    /// It could not go on (see the reason).
    Failed,
}

impl RunStatus {
    /// The wire spelling, e.g. `running`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Starting => "starting",
            RunStatus::Running => "running",
            RunStatus::Paused => "paused",
            RunStatus::Stopped => "stopped",
            RunStatus::Finished => "finished",
            RunStatus::Failed => "failed",
        }
    }

    /// Whether the run still drives jobs (the `flotilla_study_run_active` gauge).
    pub fn is_active(self) -> bool {
        matches!(
            self,
            RunStatus::Starting | RunStatus::Running | RunStatus::Paused
        )
    }
}

/// What happened to a study run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RunEvent {
    /// The run started (its effect configures the study's queue).
    RunStarted {
        /// How trials run.
        spec: RunSpec,
    },
    /// The study exists and its queue is configured.
    QueueConfigured {
        /// The study's budget.
        budget: u64,
        /// Whether the study maximises.
        maximize: bool,
        /// The most trials one ask may hand out.
        max_ask: u32,
    },
    /// The run asks the study for `n` trials (its effect sends the ask).
    TrialsRequested {
        /// 1, 2, 3... per run.
        request: u64,
        /// How many.
        n: u32,
    },
    /// The study handed out these trials (none when the budget is all asked).
    TrialsReceived {
        /// The request.
        request: u64,
        /// The trials.
        trials: Vec<RunTrial>,
        /// Why the study refused the ask, if it did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        refused: Option<String>,
    },
    /// A trial's job is to be submitted (its effect submits it).
    JobRequested {
        /// The trial.
        trial_id: String,
        /// The job's id in the study's queue.
        job_id: String,
        /// What the job runs.
        spec: Box<JobSpec>,
    },
    /// The queue took the job (recorded also when the job had already
    /// started or ended, so that the submit's effect is settled).
    JobAccepted {
        /// The trial.
        trial_id: String,
        /// The job.
        job_id: String,
    },
    /// An attempt of the job started.
    JobStarted {
        /// The trial.
        trial_id: String,
        /// The attempt.
        attempt: u32,
        /// Its node, if placed on one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<String>,
    },
    /// The job finished (its effect tells or fails the trial).
    JobEnded {
        /// The trial.
        trial_id: String,
        /// How it ended.
        end: JobEnd,
    },
    /// The study recorded the trial's outcome: its slot is free.
    ResultRecorded {
        /// The trial.
        trial_id: String,
        /// The value the study took, if the job succeeded and it took it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<f64>,
        /// Why the trial failed, if it did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failure: Option<String>,
    },
    /// The pruner stopped the trial: its job is to be cancelled (effect).
    TrialPruned {
        /// The trial.
        trial_id: String,
        /// The job to cancel.
        job_id: String,
    },
    /// A job is to be cancelled because the run stopped (effect).
    JobCancelRequested {
        /// The trial.
        trial_id: String,
        /// The job.
        job_id: String,
        /// Why.
        reason: String,
    },
    /// A cancel reached the queue.
    CancelSent {
        /// The trial.
        trial_id: String,
    },
    /// The leases of these trials are to be renewed (effect).
    LeasesDue {
        /// The trials whose jobs run.
        trial_ids: Vec<String>,
        /// The renewal's clock.
        now: u64,
    },
    /// The study renewed them.
    LeasesRenewed {
        /// The renewal's clock.
        now: u64,
    },
    /// Paused by a client.
    RunPaused {
        /// Why, if given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Resumed by a client.
    RunResumed {
        /// Why, if given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Stopped by a client.
    RunStopped {
        /// Why, if given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Every trial the study handed out is evaluated and it hands out no more.
    RunFinished {},
    /// The run could not go on.
    RunFailed {
        /// Why.
        reason: String,
    },
}

impl RunEvent {
    /// The snake_case `type` tag.
    pub fn event_type(&self) -> &'static str {
        match self {
            RunEvent::RunStarted { .. } => "run_started",
            RunEvent::QueueConfigured { .. } => "queue_configured",
            RunEvent::TrialsRequested { .. } => "trials_requested",
            RunEvent::TrialsReceived { .. } => "trials_received",
            RunEvent::JobRequested { .. } => "job_requested",
            RunEvent::JobAccepted { .. } => "job_accepted",
            RunEvent::JobStarted { .. } => "job_started",
            RunEvent::JobEnded { .. } => "job_ended",
            RunEvent::ResultRecorded { .. } => "result_recorded",
            RunEvent::TrialPruned { .. } => "trial_pruned",
            RunEvent::JobCancelRequested { .. } => "job_cancel_requested",
            RunEvent::CancelSent { .. } => "cancel_sent",
            RunEvent::LeasesDue { .. } => "leases_due",
            RunEvent::LeasesRenewed { .. } => "leases_renewed",
            RunEvent::RunPaused { .. } => "run_paused",
            RunEvent::RunResumed { .. } => "run_resumed",
            RunEvent::RunStopped { .. } => "run_stopped",
            RunEvent::RunFinished {} => "run_finished",
            RunEvent::RunFailed { .. } => "run_failed",
        }
    }

    /// Whether the event asks the host for an effect.
    pub fn wants_effect(&self) -> bool {
        matches!(
            self,
            RunEvent::RunStarted { .. }
                | RunEvent::TrialsRequested { .. }
                | RunEvent::JobRequested { .. }
                | RunEvent::JobEnded { .. }
                | RunEvent::TrialPruned { .. }
                | RunEvent::JobCancelRequested { .. }
                | RunEvent::LeasesDue { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn start_run_reads_the_issue_shape() {
        let cmd: RunCommand = serde_json::from_value(json!({
            "type": "start_run", "executor": "local", "command": ["./eval.sh"], "parallel": 8,
            "timeout_seconds": 600, "pool": "gpu", "backoff_limit": 1, "env": {"A": "1"}
        }))
        .unwrap();
        let RunCommand::StartRun(spec) = cmd else {
            panic!("not start_run")
        };
        assert_eq!(spec.parallel, 8);
        assert!(spec.validate().is_ok());
    }

    #[test]
    fn specs_are_checked_field_by_field() {
        let spec = |v: serde_json::Value| serde_json::from_value::<RunSpec>(v).unwrap();
        let message = |s: RunSpec| s.validate().unwrap_err().message;
        assert!(message(spec(json!({}))).contains("command"));
        assert!(message(spec(json!({"command": ["x"], "parallel": 0}))).contains("parallel"));
        assert!(
            message(spec(json!({"command": ["x"], "timeout_seconds": -1.0})))
                .contains("timeout_seconds")
        );
        assert!(
            message(spec(json!({"executor": "kubernetes", "command": ["x"]}))).contains("image")
        );
        assert!(message(spec(json!({"command": ["x"], "image": "i"}))).contains("image"));
        assert!(
            spec(json!({"executor": "kubernetes", "image": "img:1", "command": ["x"]}))
                .validate()
                .is_ok()
        );
        // What the queue would refuse at submit is refused at start.
        assert!(message(spec(json!({"command": ["x"], "env": {"A=B": "1"}}))).contains("env"));
        assert!(message(spec(json!({"command": [" "]}))).contains("command[0]"));
        let unknown = serde_json::from_value::<RunSpec>(json!({"command": ["x"], "paralel": 2}));
        assert!(unknown.unwrap_err().to_string().contains("paralel"));
    }
}
