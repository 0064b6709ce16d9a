//! The scheduler's wire contract: the commands a client sends to a queue on
//! `<prefix>.cmd.scheduler.<queue>`, the events a queue records, and the
//! queue signal the provisioner's autoscaler reads.
//!
//! A queue is one aggregate: its jobs, its concurrency limit and its
//! executor. Keeping a queue's jobs in one aggregate is what makes the
//! concurrency limit and the priorities exact: every decision to start an
//! attempt sees every running attempt of the queue, atomically.
//!
//! Commands (JSON shown; MessagePack carries the same maps):
//!
//! ```json
//! {"type": "configure_queue", "concurrency": 4, "pool": "gpu-a100", "executor": "local"}
//! {"type": "submit", "job_id": "t17", "spec": {"command": ["python", "train.py"],
//!   "params": {"lr": 0.003}, "env": {"EPOCHS": "3"}, "timeout_seconds": 600,
//!   "backoff_limit": 2, "priority": 5, "study": "lr-search", "trial_id": "t17"}}
//! {"type": "cancel", "job_id": "t17", "reason": "not needed"}
//! {"type": "report_result", "job_id": "t17", "attempt": 1, "now": 1767225600000,
//!   "outcome": {"status": "succeeded", "value": 0.31, "outputs": {"stdout_tail": "RESULT=0.31"}}}
//! {"type": "report_result", "job_id": "t17", "attempt": 1, "now": 1767225600000,
//!   "outcome": {"status": "failed", "exit_code": 3, "reason": "exited with status 3"}}
//! {"type": "report_result", "job_id": "t17", "attempt": 1, "now": 1767225600000,
//!   "outcome": {"status": "timed_out", "after_seconds": 600}}
//! ```
//!
//! More commands come from the host's effects, not from clients:
//! `record_started {job_id, attempt, handle}` once an attempt's process or
//! Kubernetes Job exists, `retry_due {job_id, attempt}` when a retry's
//! backoff has passed, `place {job_id, attempt, nodes}` with the ready
//! nodes of the queue's pool when the provisioner has that pool, and
//! `node_lost {node, reason}` when the provisioner records that a node
//! failed or leaves its pool. A queue that was never configured is created
//! by its first `submit` with [`DEFAULT_CONCURRENCY`], pool
//! [`DEFAULT_POOL`] and the `local` executor.
//!
//! Events:
//!
//! ```json
//! {"type": "queue_configured", "config": {"concurrency": 4, "pool": "gpu-a100", "executor": "local"}}
//! {"type": "job_submitted", "job_id": "t17", "spec": {...}}
//! {"type": "job_dispatched", "job_id": "t17", "attempt": 1, "spec": {...}, "executor": "local", "pool": "gpu"}
//! {"type": "job_placed", "job_id": "t17", "attempt": 1, "node": "gpu-3", "spec": {...}, "executor": "local", "pool": "gpu"}
//! {"type": "job_started", "job_id": "t17", "attempt": 1, "handle": {"executor": "local", "pid": 4242, "start_ticks": 991, "dir": "..."}, "node": "gpu-3"}
//! {"type": "job_succeeded", "job_id": "t17", "attempt": 1, "value": 0.31, "outputs": {...}}
//! {"type": "job_failed", "job_id": "t17", "attempt": 1, "exit_code": 3, "reason": "...", "outputs": {...}, "will_retry": true}
//! {"type": "job_timed_out", "job_id": "t17", "attempt": 1, "after_seconds": 600, "outputs": {...}, "will_retry": false}
//! {"type": "retry_scheduled", "job_id": "t17", "attempt": 2, "delay_ms": 10000, "not_before": 1767225610000}
//! {"type": "job_lost", "job_id": "t17", "attempt": 1, "reason": "process 4242 is gone and left no exit status"}
//! {"type": "job_lost", "job_id": "t17", "attempt": 1, "reason": "node gpu-3 failed (xid_replace:xid_79)", "node": "gpu-3"}
//! {"type": "job_requeued", "job_id": "t17", "attempt": 2}
//! {"type": "job_cancelled", "job_id": "t17", "reason": "not needed", "running_attempt": 1}
//! ```
//!
//! `job_dispatched` asks the host to start the attempt (it carries the spec
//! so the effect needs nothing else) — or, when the provisioner has a pool
//! of the queue's `pool` name, to place it first: the host waits until the
//! pool has a ready node and answers `place` with the ready nodes; the
//! queue picks one (fewest of its attempts running there, then node id)
//! and records `job_placed`, whose effect starts the attempt there. `retry_scheduled` asks to wake the job up after its
//! backoff, a `job_cancelled` with a `running_attempt` to stop that
//! attempt, and a `job_lost` with a `node` to stop what is left of the
//! attempt on that node. Time and nodes enter only through commands (`now`,
//! unix milliseconds; `nodes`), so deciding stays pure.

use crate::error::Rejection;
use crate::solver::ParamValue;
use crate::subjects::{validate_id, Subjects};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

/// The `type` tags of [`SchedulerCommand`], in declaration order.
pub const COMMAND_TYPES: &[&str] = &[
    "configure_queue",
    "submit",
    "cancel",
    "record_started",
    "report_result",
    "retry_due",
    "place",
    "node_lost",
];

/// A queue's concurrency when it was never configured.
pub const DEFAULT_CONCURRENCY: u32 = 1;

/// The most attempts one queue may run at once.
pub const MAX_CONCURRENCY: u32 = 10_000;

/// The pool label of a queue that names none.
pub const DEFAULT_POOL: &str = "default";

/// The most retries a job may ask for.
pub const MAX_BACKOFF_LIMIT: u32 = 100;

/// The first retry's delay when a spec names none: 10 s, doubling per
/// retry up to [`MAX_BACKOFF_SECONDS`] (Kubernetes' Job backoff).
pub const DEFAULT_BACKOFF_SECONDS: f64 = 10.0;

/// The longest backoff between two attempts: 6 minutes (Kubernetes' cap).
pub const MAX_BACKOFF_SECONDS: f64 = 360.0;

/// How long a timed-out attempt gets between SIGTERM and SIGKILL when the
/// spec names no grace.
pub const DEFAULT_KILL_GRACE_SECONDS: f64 = 5.0;

/// How many characters of stdout and stderr an event keeps.
pub const TAIL_CHARS: usize = 2000;

/// Where attempts run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ExecutorKind {
    /// A subprocess on the scheduler's machine.
    #[default]
    Local,
    /// A `batch/v1` Job on a Kubernetes cluster.
    Kubernetes,
    /// A Job manifest written to a directory; nothing runs (D29).
    Manifests,
}

impl ExecutorKind {
    /// The wire spelling, e.g. `local`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorKind::Local => "local",
            ExecutorKind::Kubernetes => "kubernetes",
            ExecutorKind::Manifests => "manifests",
        }
    }
}

impl fmt::Display for ExecutorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A queue's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// How many attempts may run at once, 1..=[`MAX_CONCURRENCY`].
    pub concurrency: u32,
    /// The node-pool label the queue's jobs need (the provisioner scales
    /// this pool on the queue's depth); [`DEFAULT_POOL`] when absent.
    #[serde(default = "default_pool")]
    pub pool: String,
    /// Where attempts run; `local` when absent.
    #[serde(default)]
    pub executor: ExecutorKind,
    /// How many finished jobs the queue keeps (the oldest go first),
    /// 1..=[`MAX_RETAIN_FINISHED`]; [`DEFAULT_RETAIN_FINISHED`] when absent.
    /// The event log keeps them all, for audits.
    #[serde(default = "default_retain_finished")]
    pub retain_finished: u32,
    /// How long the queue keeps a job after its end was reported, in
    /// seconds, 1..=[`MAX_RETAIN_FINISHED_SECONDS`]; a week when absent.
    /// Time is the latest `now` the queue was told; cancelled jobs, whose
    /// end has no reported time, are kept by count only.
    #[serde(default = "default_retain_finished_seconds")]
    pub retain_finished_seconds: u64,
}

/// Finished jobs a queue keeps when it names no number.
pub const DEFAULT_RETAIN_FINISHED: u32 = 1_000;

/// A queue retention that keeps `jobs` finished jobs (within the bounds).
pub fn retain_all(jobs: impl TryInto<u32>) -> u32 {
    jobs.try_into()
        .unwrap_or(MAX_RETAIN_FINISHED)
        .clamp(DEFAULT_RETAIN_FINISHED, MAX_RETAIN_FINISHED)
}

/// The most finished jobs a queue may keep.
pub const MAX_RETAIN_FINISHED: u32 = 100_000;
/// How long a queue keeps a finished job when it names no time: a week.
pub const DEFAULT_RETAIN_FINISHED_SECONDS: u64 = 7 * 24 * 3600;
/// The longest a queue may keep a finished job: ten years.
pub const MAX_RETAIN_FINISHED_SECONDS: u64 = 10 * 365 * 24 * 3600;

fn default_pool() -> String {
    DEFAULT_POOL.to_string()
}

fn default_retain_finished() -> u32 {
    DEFAULT_RETAIN_FINISHED
}

fn default_retain_finished_seconds() -> u64 {
    DEFAULT_RETAIN_FINISHED_SECONDS
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            concurrency: DEFAULT_CONCURRENCY,
            pool: default_pool(),
            executor: ExecutorKind::Local,
            retain_finished: DEFAULT_RETAIN_FINISHED,
            retain_finished_seconds: DEFAULT_RETAIN_FINISHED_SECONDS,
        }
    }
}

impl QueueConfig {
    /// Checks the config; the rejection names the field.
    pub fn validate(&self) -> Result<(), Rejection> {
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            return Err(Rejection::invalid(format!(
                "concurrency must be between 1 and {MAX_CONCURRENCY}, got {}",
                self.concurrency
            )));
        }
        if !(1..=MAX_RETAIN_FINISHED).contains(&self.retain_finished) {
            return Err(Rejection::invalid(format!(
                "retain_finished must be between 1 and {MAX_RETAIN_FINISHED}, got {}",
                self.retain_finished
            )));
        }
        if !(1..=MAX_RETAIN_FINISHED_SECONDS).contains(&self.retain_finished_seconds) {
            return Err(Rejection::invalid(format!(
                "retain_finished_seconds must be between 1 and {MAX_RETAIN_FINISHED_SECONDS}, got {}",
                self.retain_finished_seconds
            )));
        }
        check_label("pool", &self.pool)
    }
}

/// What to run for one job, on any executor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// The program and its arguments; never empty.
    pub command: Vec<String>,
    /// The trial's parameters: each arrives as `ARQON_<name>` and
    /// `FLOTILLA_PARAM_<name>` (numbers, strings or booleans).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, Value>,
    /// Extra environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// D28's session (`SESSION_ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// D28's worker (`WORKER_ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// D28's mode (`MODE`: paper, shadow, live).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// The study whose trial this job evaluates (`FLOTILLA_STUDY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub study: Option<String>,
    /// The trial this job evaluates (`FLOTILLA_TRIAL_ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial_id: Option<String>,
    /// The working directory (local executor); the scheduler's own when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// An attempt running longer is stopped and recorded as timed out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<f64>,
    /// Seconds between SIGTERM and SIGKILL; [`DEFAULT_KILL_GRACE_SECONDS`]
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_grace_seconds: Option<f64>,
    /// How many times a failed or timed-out attempt is retried (0..=
    /// [`MAX_BACKOFF_LIMIT`]); 0 when absent.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub backoff_limit: u32,
    /// The first retry's delay, doubling per retry up to
    /// [`MAX_BACKOFF_SECONDS`]; [`DEFAULT_BACKOFF_SECONDS`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_seconds: Option<f64>,
    /// Higher runs first; submission order breaks ties. 0 when absent.
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub priority: i32,
    /// Whether success needs a value on stdout (`RESULT=<float>` or a
    /// number as the last line): true for trials, the default.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub expects_value: bool,
    /// How the job runs on Kubernetes (the `kubernetes` and `manifests`
    /// executors need at least the image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesSpec>,
}

/// A job's Kubernetes settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct KubernetesSpec {
    /// The container image.
    pub image: String,
    /// The namespace; the executor's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Resource requests (`cpu: 500m`, `memory: 1Gi`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, String>,
    /// Resource limits.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, String>,
    /// GPUs: `nvidia.com/gpu` in the limits (and requests).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gpus: u32,
    /// The pod's node selector (e.g. a pool label).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// The pod's tolerations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Seconds Kubernetes keeps a finished Job before deleting it itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds_after_finished: Option<u32>,
    /// Keep the Job once its result is read (default: delete it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_finished: bool,
}

/// A pod toleration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Toleration {
    /// The taint key (absent with `Exists`: every taint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `Equal` (default) or `Exists`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    /// The taint value (with `Equal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`; every effect when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<String>,
}

impl KubernetesSpec {
    fn problem(&self) -> Option<String> {
        if self.image.trim().is_empty() {
            return Some("kubernetes.image must name an image".into());
        }
        if let Some(ns) = &self.namespace {
            if let Err(e) = check_dns1123_label("kubernetes.namespace", ns) {
                return Some(e);
            }
        }
        let quantities = [("requests", &self.requests), ("limits", &self.limits)];
        for (section, map) in quantities {
            for (name, quantity) in map {
                let field = format!("kubernetes.{section}.{name}");
                if let Err(e) = check_quantity(&field, quantity) {
                    return Some(e);
                }
            }
        }
        self.tolerations.iter().enumerate().find_map(|(i, t)| {
            let operator_ok = matches!(t.operator.as_deref(), None | Some("Equal" | "Exists"));
            let effect_ok = matches!(
                t.effect.as_deref(),
                None | Some("NoSchedule" | "PreferNoSchedule" | "NoExecute")
            );
            if !operator_ok {
                Some(format!("kubernetes.tolerations[{i}].operator must be Equal or Exists"))
            } else if !effect_ok {
                Some(format!(
                    "kubernetes.tolerations[{i}].effect must be NoSchedule, PreferNoSchedule or NoExecute"
                ))
            } else {
                None
            }
        })
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero_i32(n: &i32) -> bool {
    *n == 0
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

impl JobSpec {
    /// A spec that runs `command` with the defaults.
    pub fn new(command: Vec<String>) -> Self {
        JobSpec {
            command,
            params: BTreeMap::new(),
            env: BTreeMap::new(),
            session_id: None,
            worker_id: None,
            mode: None,
            study: None,
            trial_id: None,
            workdir: None,
            timeout_seconds: None,
            kill_grace_seconds: None,
            backoff_limit: 0,
            backoff_seconds: None,
            priority: 0,
            expects_value: true,
            kubernetes: None,
        }
    }

    /// Checks the spec; the rejection (`INVALID_FIELD`) names the field,
    /// e.g. `spec.timeout_seconds must be a positive number, got -1`.
    pub fn validate(&self) -> Result<(), Rejection> {
        self.problem()
            .map_or(Ok(()), |m| Err(Rejection::invalid(format!("spec.{m}"))))
    }

    /// What is wrong with the spec, naming the field (without `spec.`).
    pub fn problem(&self) -> Option<String> {
        match self.command.first() {
            None => return Some("command must not be empty".into()),
            Some(program) if program.trim().is_empty() => {
                return Some("command[0] must name a program".into())
            }
            _ => {}
        }
        if let Some(i) = self.command.iter().position(|a| a.contains('\0')) {
            return Some(format!("command[{i}] must not contain a NUL byte"));
        }
        let positive = |name: &str, v: Option<f64>| {
            v.filter(|v| !(v.is_finite() && *v > 0.0))
                .map(|v| format!("{name} must be a positive number, got {v}"))
        };
        positive("timeout_seconds", self.timeout_seconds)
            .or_else(|| positive("kill_grace_seconds", self.kill_grace_seconds))
            .or_else(|| positive("backoff_seconds", self.backoff_seconds))
            .or_else(|| {
                (self.backoff_limit > MAX_BACKOFF_LIMIT).then(|| {
                    format!(
                        "backoff_limit must be at most {MAX_BACKOFF_LIMIT}, got {}",
                        self.backoff_limit
                    )
                })
            })
            .or_else(|| self.env_problem())
            .or_else(|| self.params_problem())
            .or_else(|| self.kubernetes.as_ref().and_then(KubernetesSpec::problem))
    }

    fn env_problem(&self) -> Option<String> {
        self.env
            .iter()
            .find_map(|(name, value)| {
                if !is_env_name(name) {
                    Some(format!(
                        "env.{name}: not a valid variable name ([A-Za-z_][A-Za-z0-9_]*)"
                    ))
                } else {
                    value
                        .contains('\0')
                        .then(|| format!("env.{name}: must not contain a NUL byte"))
                }
            })
            .or_else(|| {
                let ids = [
                    ("session_id", &self.session_id),
                    ("worker_id", &self.worker_id),
                    ("mode", &self.mode),
                    ("study", &self.study),
                    ("trial_id", &self.trial_id),
                ];
                ids.into_iter().find_map(|(name, v)| {
                    v.as_ref()
                        .filter(|v| v.contains('\0'))
                        .map(|_| format!("{name} must not contain a NUL byte"))
                })
            })
    }

    fn params_problem(&self) -> Option<String> {
        self.params.iter().find_map(|(name, value)| {
            if !is_env_name(name) {
                return Some(format!(
                    "params.{name}: not a valid parameter name ([A-Za-z_][A-Za-z0-9_]*)"
                ));
            }
            match value {
                Value::Number(_) | Value::Bool(_) => None,
                Value::String(s) if !s.contains('\0') => None,
                other => Some(format!(
                    "params.{name}: must be a number, string or boolean, got {other}"
                )),
            }
        })
    }

    /// The delay before retry `attempt` (2, 3, ...), in milliseconds:
    /// the base delay doubled per earlier retry, capped.
    pub fn backoff_ms(&self, attempt: u32) -> u64 {
        let base = self.backoff_seconds.unwrap_or(DEFAULT_BACKOFF_SECONDS);
        let doublings = attempt.saturating_sub(2).min(30);
        let seconds = (base * f64::from(1u32 << doublings)).min(MAX_BACKOFF_SECONDS);
        (seconds * 1000.0).round() as u64
    }

    /// The environment an attempt gets (besides the inherited one): extra
    /// env, then D28's `SESSION_ID`/`WORKER_ID`/`MODE`, the trial's
    /// parameters as `ARQON_<name>` and `FLOTILLA_PARAM_<name>`, and the
    /// study and trial ids.
    pub fn environment(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = self
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let named = [
            ("SESSION_ID", &self.session_id),
            ("WORKER_ID", &self.worker_id),
            ("MODE", &self.mode),
            ("FLOTILLA_STUDY", &self.study),
            ("FLOTILLA_TRIAL_ID", &self.trial_id),
        ];
        for (name, value) in named {
            if let Some(v) = value {
                env.push((name.to_string(), v.clone()));
            }
        }
        for (name, value) in &self.params {
            let text = param_text(value);
            env.push((format!("ARQON_{name}"), text.clone()));
            env.push((format!("FLOTILLA_PARAM_{name}"), text));
        }
        env
    }
}

/// A parameter as its environment variable spells it: as a trial's
/// [`ParamValue`] shows it (`0.003`, `7`, `adam`); anything else (which
/// [`JobSpec::validate`] refuses) as JSON.
pub fn param_text(value: &Value) -> String {
    match ParamValue::deserialize(value) {
        Ok(param) => param.to_string(),
        Err(_) => value.to_string(),
    }
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks a Kubernetes-style label value: 1-63 characters, alphanumerics,
/// `-`, `_` and `.`, starting and ending alphanumeric.
fn check_label(field: &str, value: &str) -> Result<(), Rejection> {
    let ends_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    let valid = (1..=63).contains(&value.len())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && ends_ok(value.chars().next())
        && ends_ok(value.chars().last());
    if valid {
        Ok(())
    } else {
        Err(Rejection::invalid(format!(
            "{field}: {value:?} is not a valid label value (1-63 alphanumerics, '-', '_', '.', \
             starting and ending alphanumeric)"
        )))
    }
}

/// Checks a resource quantity (`500m`, `1Gi`, `2`, `1.5`, `1e3`) as the
/// Kubernetes API server parses it; the error names `field`.
pub fn check_quantity(field: &str, text: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "{field}: {text:?} is not a Kubernetes quantity \
             (a number with an optional suffix: m, k, M, G, Ki, Mi, Gi, ..., e.g. 500m or 1Gi)"
        )
    };
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(number_end);
    let unsigned = number.strip_prefix(['+', '-']).unwrap_or(number);
    let digits_ok = !unsigned.is_empty()
        && unsigned.chars().all(|c| c.is_ascii_digit() || c == '.')
        && unsigned.matches('.').count() <= 1
        && unsigned.chars().any(|c| c.is_ascii_digit());
    if !digits_ok {
        return Err(bad());
    }
    const SUFFIXES: [&str; 16] = [
        "", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
    ];
    let exponent = suffix
        .strip_prefix(['e', 'E'])
        .map(|e| e.strip_prefix(['+', '-']).unwrap_or(e))
        .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()));
    if SUFFIXES.contains(&suffix) || exponent {
        Ok(())
    } else {
        Err(bad())
    }
}

/// Checks a DNS-1123 label (namespaces, container names, Job names that
/// become pod labels): 1-63 lowercase alphanumerics or '-', starting and
/// ending alphanumeric.
pub fn check_dns1123_label(field: &str, name: &str) -> Result<(), String> {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let valid = (1..=63).contains(&name.len())
        && name.chars().all(|c| alnum(c) || c == '-')
        && name.starts_with(alnum)
        && name.ends_with(alnum);
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{field}: {name:?} is not a valid Kubernetes name (DNS-1123 label: at most 63 \
             characters, lowercase letters, digits and '-', starting and ending with a letter \
             or digit)"
        ))
    }
}

/// Where a started attempt runs, so that a restarted scheduler can find it
/// again instead of starting another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "executor", rename_all = "snake_case")]
pub enum ExecutorHandle {
    /// A local process group.
    Local {
        /// The process id (and process group id).
        pid: u32,
        /// Its start time in clock ticks since boot (`/proc/<pid>/stat`
        /// field 22): with the pid, it names the process uniquely.
        start_ticks: u64,
        /// The attempt's directory: stdout, stderr and the exit status file.
        dir: String,
        /// When it started, unix milliseconds (its timeout counts from here).
        started_at: u64,
    },
    /// A Kubernetes Job.
    Kubernetes {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// Its uid.
        uid: String,
    },
    /// A manifest file.
    Manifests {
        /// Where it was written.
        path: String,
    },
}

/// What an attempt left behind: the tails of its output, where the rest is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JobOutputs {
    /// The last [`TAIL_CHARS`] characters of stdout.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stdout_tail: String,
    /// The last [`TAIL_CHARS`] characters of stderr.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stderr_tail: String,
    /// Where the whole output is (a directory or a URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<String>,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "status", rename_all = "snake_case", deny_unknown_fields)]
pub enum Outcome {
    /// It exited 0 (and printed a value if the spec expects one).
    Succeeded {
        /// The value it printed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<f64>,
        /// Its output.
        #[serde(default)]
        outputs: JobOutputs,
    },
    /// It could not start, exited non-zero, was killed or printed no value.
    Failed {
        /// Its exit status, if it exited.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        /// What went wrong, for people.
        reason: String,
        /// Its output.
        #[serde(default)]
        outputs: JobOutputs,
    },
    /// It ran past the spec's timeout and was stopped.
    TimedOut {
        /// The timeout it ran past.
        after_seconds: f64,
        /// Its output.
        #[serde(default)]
        outputs: JobOutputs,
    },
    /// Its process or Job vanished without a trace of how it ended (killed
    /// while the scheduler was down): the job runs again as a new attempt,
    /// which does not count against its `backoff_limit`.
    Lost {
        /// What was found, for people.
        reason: String,
    },
}

/// Reports how attempt `attempt` of a job ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReportResult {
    /// The job.
    pub job_id: String,
    /// The attempt (1, 2, ...).
    pub attempt: u32,
    /// The reporter's clock, unix milliseconds (a retry's backoff counts
    /// from here).
    pub now: u64,
    /// How it ended.
    pub outcome: Outcome,
}

/// What a client (or an effect) asks a queue to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SchedulerCommand {
    /// Creates or changes the queue's settings.
    ConfigureQueue(QueueConfig),
    /// Adds a job; it starts when a slot is free.
    Submit {
        /// Unique in the queue (`[A-Za-z0-9_-]{1,64}`).
        job_id: String,
        /// What to run.
        spec: Box<JobSpec>,
    },
    /// Cancels a job that has not finished.
    Cancel {
        /// The job.
        job_id: String,
        /// Why, for the record.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Records that an attempt's process or Job exists.
    RecordStarted {
        /// The job.
        job_id: String,
        /// The attempt.
        attempt: u32,
        /// Where it runs.
        handle: ExecutorHandle,
    },
    /// Records how an attempt ended.
    ReportResult(ReportResult),
    /// A retry's backoff has passed: start it when a slot is free.
    RetryDue {
        /// The job.
        job_id: String,
        /// The attempt due.
        attempt: u32,
    },
    /// The nodes a dispatched attempt may be placed on: the ready nodes of
    /// the queue's pool, as the provisioner last recorded them.
    Place {
        /// The job.
        job_id: String,
        /// The dispatched attempt.
        attempt: u32,
        /// Ready node ids; at least one.
        nodes: Vec<String>,
    },
    /// A node failed or leaves its pool: every attempt placed on it is lost
    /// and runs again elsewhere.
    NodeLost {
        /// The node.
        node: String,
        /// What the provisioner recorded, for people (it names the node).
        reason: String,
    },
}

impl SchedulerCommand {
    /// The snake_case `type` tag.
    pub fn command_type(&self) -> &'static str {
        match self {
            SchedulerCommand::ConfigureQueue(_) => "configure_queue",
            SchedulerCommand::Submit { .. } => "submit",
            SchedulerCommand::Cancel { .. } => "cancel",
            SchedulerCommand::RecordStarted { .. } => "record_started",
            SchedulerCommand::ReportResult(_) => "report_result",
            SchedulerCommand::RetryDue { .. } => "retry_due",
            SchedulerCommand::Place { .. } => "place",
            SchedulerCommand::NodeLost { .. } => "node_lost",
        }
    }
}

/// Checks a job id like any aggregate id.
pub fn validate_job_id(job_id: &str) -> Result<(), Rejection> {
    validate_id("job_id", job_id).map_err(|e| Rejection::invalid(e.to_string()))
}

/// What happened to a queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SchedulerEvent {
    /// The queue's settings.
    QueueConfigured {
        /// The validated settings.
        config: QueueConfig,
    },
    /// A job joined the queue.
    JobSubmitted {
        /// The job.
        job_id: String,
        /// What to run.
        spec: JobSpec,
    },
    /// A slot was given to an attempt: the host starts it.
    JobDispatched {
        /// The job.
        job_id: String,
        /// The attempt, 1 for the first.
        attempt: u32,
        /// What to run.
        spec: JobSpec,
        /// Where.
        executor: ExecutorKind,
        /// The queue's pool label: the host places the attempt on one of
        /// that pool's nodes when the provisioner has the pool. Absent in
        /// events recorded before placement (they ran unplaced).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pool: Option<String>,
    },
    /// The attempt was placed on a node of its pool: the host starts it there.
    JobPlaced {
        /// The job.
        job_id: String,
        /// The attempt.
        attempt: u32,
        /// The node.
        node: String,
        /// What to run.
        spec: JobSpec,
        /// Where.
        executor: ExecutorKind,
        /// The node's pool.
        pool: String,
    },
    /// The attempt's process or Job exists.
    JobStarted {
        /// The job.
        job_id: String,
        /// The attempt.
        attempt: u32,
        /// Where it runs.
        handle: ExecutorHandle,
        /// The node it was placed on, if it was.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<String>,
    },
    /// The attempt succeeded: the job is done.
    JobSucceeded {
        /// The job.
        job_id: String,
        /// The attempt.
        attempt: u32,
        /// The value it printed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<f64>,
        /// Its output.
        outputs: JobOutputs,
        /// When the end was reported (the report's `now`, unix milliseconds);
        /// absent in events recorded before it was kept.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<u64>,
    },
    /// The attempt failed.
    JobFailed {
        /// The job.
        job_id: String,
        /// The attempt.
        attempt: u32,
        /// Its exit status, if it exited.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        /// What went wrong.
        reason: String,
        /// Its output.
        outputs: JobOutputs,
        /// Whether a `retry_scheduled` follows; if not, the job is failed.
        will_retry: bool,
        /// When the end was reported (the report's `now`, unix milliseconds);
        /// absent in events recorded before it was kept.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<u64>,
    },
    /// The attempt ran past its timeout and was stopped.
    JobTimedOut {
        /// The job.
        job_id: String,
        /// The attempt.
        attempt: u32,
        /// The timeout.
        after_seconds: f64,
        /// Its output.
        outputs: JobOutputs,
        /// Whether a `retry_scheduled` follows; if not, the job is timed out.
        will_retry: bool,
        /// When the end was reported (the report's `now`, unix milliseconds);
        /// absent in events recorded before it was kept.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<u64>,
    },
    /// The job gets another attempt after a backoff.
    RetryScheduled {
        /// The job.
        job_id: String,
        /// The coming attempt.
        attempt: u32,
        /// The backoff.
        delay_ms: u64,
        /// When it may start, unix milliseconds.
        not_before: u64,
    },
    /// The attempt vanished without an outcome, or its node failed or left
    /// its pool: the job waits for a slot again and runs as a new attempt
    /// (not counted as a retry).
    JobLost {
        /// The job.
        job_id: String,
        /// The lost attempt.
        attempt: u32,
        /// What was found.
        reason: String,
        /// The node the attempt was placed on, if it was: the host stops
        /// what may still run of it there.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<String>,
    },
    /// A retry's backoff passed: the job waits for a slot again.
    JobRequeued {
        /// The job.
        job_id: String,
        /// The coming attempt.
        attempt: u32,
    },
    /// The job was cancelled.
    JobCancelled {
        /// The job.
        job_id: String,
        /// Why, if the client said.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// The attempt the host must stop, if one was dispatched.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        running_attempt: Option<u32>,
    },
}

impl SchedulerEvent {
    /// The snake_case `type` tag.
    pub fn event_type(&self) -> &'static str {
        match self {
            SchedulerEvent::QueueConfigured { .. } => "queue_configured",
            SchedulerEvent::JobSubmitted { .. } => "job_submitted",
            SchedulerEvent::JobDispatched { .. } => "job_dispatched",
            SchedulerEvent::JobPlaced { .. } => "job_placed",
            SchedulerEvent::JobStarted { .. } => "job_started",
            SchedulerEvent::JobSucceeded { .. } => "job_succeeded",
            SchedulerEvent::JobFailed { .. } => "job_failed",
            SchedulerEvent::JobTimedOut { .. } => "job_timed_out",
            SchedulerEvent::RetryScheduled { .. } => "retry_scheduled",
            SchedulerEvent::JobLost { .. } => "job_lost",
            SchedulerEvent::JobRequeued { .. } => "job_requeued",
            SchedulerEvent::JobCancelled { .. } => "job_cancelled",
        }
    }

    /// The job the event is about (`None` for `queue_configured`).
    pub fn job_id(&self) -> Option<&str> {
        match self {
            SchedulerEvent::QueueConfigured { .. } => None,
            SchedulerEvent::JobSubmitted { job_id, .. }
            | SchedulerEvent::JobDispatched { job_id, .. }
            | SchedulerEvent::JobPlaced { job_id, .. }
            | SchedulerEvent::JobStarted { job_id, .. }
            | SchedulerEvent::JobSucceeded { job_id, .. }
            | SchedulerEvent::JobFailed { job_id, .. }
            | SchedulerEvent::JobTimedOut { job_id, .. }
            | SchedulerEvent::RetryScheduled { job_id, .. }
            | SchedulerEvent::JobLost { job_id, .. }
            | SchedulerEvent::JobRequeued { job_id, .. }
            | SchedulerEvent::JobCancelled { job_id, .. } => Some(job_id),
        }
    }
}

/// The depth of one pool's share of a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolDepth {
    /// Jobs waiting for a slot or for their retry's backoff.
    pub pending: u64,
    /// Attempts dispatched or started.
    pub running: u64,
}

/// The queue signal: a queue's depth per pool label, published on
/// [`queue_signal_subject`] whenever it changes and every few seconds, for
/// the provisioner's queue autoscaler.
///
/// ```json
/// {"queue": "lr-search", "pool": "gpu-a100", "pending": 12, "running": 4,
///  "concurrency": 4, "at": 1767225600000}
/// ```
///
/// One message per queue (a queue's jobs share its pool label); a pool's
/// demand is the sum over the queues that name it. `at` is the publisher's
/// clock (unix milliseconds), so a consumer can drop stale signals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSignal {
    /// The queue.
    pub queue: String,
    /// The pool label its jobs need.
    pub pool: String,
    /// Jobs waiting for a slot or for their retry's backoff.
    pub pending: u64,
    /// Attempts dispatched or started.
    pub running: u64,
    /// The queue's concurrency limit.
    pub concurrency: u32,
    /// When the depth was read, unix milliseconds.
    pub at: u64,
}

/// The subject of a queue's signal: `<prefix>.signal.queue.<queue>`
/// (subscribe to `<prefix>.signal.queue.>` for every queue).
pub fn queue_signal_subject(subjects: &Subjects, queue: &str) -> String {
    format!("{}.signal.queue.{queue}", subjects.prefix())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Encoding;
    use crate::command::CommandRequest;
    use crate::error::ErrorCode;
    use proptest::prelude::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<SchedulerCommand, Rejection> {
        CommandRequest::from_value(v, None)?.parse("scheduler", COMMAND_TYPES)
    }

    fn spec() -> JobSpec {
        JobSpec::new(vec!["python".into(), "train.py".into()])
    }

    #[test]
    fn submit_reads_a_spec_with_defaults() {
        let cmd = parse(json!({"type": "submit", "job_id": "j1",
            "spec": {"command": ["python", "train.py"]}}))
        .unwrap();
        assert_eq!(
            cmd,
            SchedulerCommand::Submit {
                job_id: "j1".into(),
                spec: Box::new(spec())
            }
        );
    }

    #[test]
    fn unknown_fields_are_refused_naming_them() {
        let e = parse(json!({"type": "submit", "job_id": "j1",
            "spec": {"command": ["x"], "timeout": 5}}))
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownField);
        assert!(e.message.contains("timeout"), "{}", e.message);
        let e = parse(json!({"type": "launch"})).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownCommand);
    }

    #[test]
    fn spec_validation_names_the_field() {
        let message = |edit: fn(&mut JobSpec)| {
            let mut s = spec();
            edit(&mut s);
            let e = s.validate().unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidField);
            e.message
        };
        assert!(spec().validate().is_ok());
        assert_eq!(
            message(|s| s.command.clear()),
            "spec.command must not be empty"
        );
        assert_eq!(
            message(|s| s.command[0] = " ".into()),
            "spec.command[0] must name a program"
        );
        assert_eq!(
            message(|s| s.timeout_seconds = Some(-1.0)),
            "spec.timeout_seconds must be a positive number, got -1"
        );
        assert_eq!(
            message(|s| s.backoff_limit = 101),
            "spec.backoff_limit must be at most 100, got 101"
        );
        assert!(message(|s| {
            s.env.insert("1X".into(), "v".into());
        })
        .starts_with("spec.env.1X: not a valid variable name"));
        assert!(message(|s| {
            s.params.insert("lr".into(), json!([1]));
        })
        .starts_with("spec.params.lr: must be a number, string or boolean"));
    }

    #[test]
    fn kubernetes_settings_are_checked_naming_the_field() {
        let mut s = spec();
        s.kubernetes = Some(KubernetesSpec {
            image: "trainer:1".into(),
            ..Default::default()
        });
        assert!(s.validate().is_ok());
        let k = s.kubernetes.as_mut().unwrap();
        k.limits.insert("cpu".into(), "1zz".into());
        let e = s.validate().unwrap_err();
        assert!(
            e.message
                .starts_with("spec.kubernetes.limits.cpu: \"1zz\" is not a Kubernetes quantity"),
            "{}",
            e.message
        );
        let k = s.kubernetes.as_mut().unwrap();
        k.limits.clear();
        k.namespace = Some("Bad_NS".into());
        let e = s.validate().unwrap_err();
        assert!(
            e.message.contains("is not a valid Kubernetes name"),
            "{}",
            e.message
        );
    }

    #[test]
    fn quantities_are_checked_like_the_api_server() {
        for good in [
            "500m", "1", "1Gi", "0.5", "2.5Gi", "1e3", "1E-2", "+1", "100Mi", "4",
        ] {
            assert!(check_quantity("cpu", good).is_ok(), "{good}");
        }
        for bad in ["", "1zz", "Gi", "1.2.3", "abc", "1 Gi", "1gi", "--1", "1e"] {
            let e = check_quantity("resources.limits.cpu", bad).unwrap_err();
            assert!(e.starts_with("resources.limits.cpu:"), "{e}");
        }
    }

    #[test]
    fn names_are_checked_like_the_api_server() {
        assert!(check_dns1123_label("name", "arb-tuning-d29-k8s--worker-1-0").is_ok());
        for bad in ["", "Bad", "a_b", "-a", "a-", &"a".repeat(64)] {
            assert!(check_dns1123_label("name", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn queue_config_validation_names_the_field() {
        let mut c = QueueConfig::default();
        assert!(c.validate().is_ok());
        c.concurrency = 0;
        assert!(c.validate().unwrap_err().message.starts_with("concurrency"));
        c.concurrency = 2;
        c.pool = "-bad".into();
        assert!(c.validate().unwrap_err().message.starts_with("pool"));
    }

    #[test]
    fn backoff_doubles_from_the_base_and_is_capped() {
        let mut s = spec();
        assert_eq!(s.backoff_ms(2), 10_000);
        assert_eq!(s.backoff_ms(3), 20_000);
        assert_eq!(s.backoff_ms(40), 360_000);
        s.backoff_seconds = Some(0.5);
        assert_eq!(s.backoff_ms(2), 500);
        assert_eq!(s.backoff_ms(4), 2000);
    }

    #[test]
    fn environment_carries_params_ids_and_extra_env() {
        let mut s = spec();
        s.params.insert("lr".into(), json!(0.003));
        s.params.insert("layers".into(), json!(4));
        s.params.insert("act".into(), json!("relu"));
        s.env.insert("EPOCHS".into(), "3".into());
        s.session_id = Some("sess".into());
        s.worker_id = Some("worker-1".into());
        s.mode = Some("paper".into());
        let env: BTreeMap<String, String> = s.environment().into_iter().collect();
        assert_eq!(env["ARQON_lr"], "0.003");
        assert_eq!(env["FLOTILLA_PARAM_lr"], "0.003");
        assert_eq!(env["ARQON_layers"], "4");
        assert_eq!(env["ARQON_act"], "relu");
        assert_eq!(env["EPOCHS"], "3");
        assert_eq!(env["SESSION_ID"], "sess");
        assert_eq!(env["WORKER_ID"], "worker-1");
        assert_eq!(env["MODE"], "paper");
    }

    #[test]
    fn parameters_read_in_the_environment_as_trials_show_them() {
        let shown = |v: Value| param_text(&v);
        assert_eq!(shown(json!(0.003)), "0.003");
        assert_eq!(shown(json!(4.0)), "4");
        assert_eq!(shown(json!(-7)), "-7");
        assert_eq!(shown(json!(u64::MAX)), "18446744073709552000");
        assert_eq!(shown(json!(true)), "true");
        assert_eq!(shown(json!("adam")), "adam");
        assert_eq!(shown(json!(null)), "null");
        assert_eq!(shown(json!([1])), "[1]");
        let param = ParamValue::Float(1e-7);
        assert_eq!(
            shown(serde_json::to_value(&param).unwrap()),
            param.to_string()
        );
    }

    #[test]
    fn outcomes_read_in_their_wire_form() {
        let cmd = parse(
            json!({"type": "report_result", "job_id": "j1", "attempt": 1,
            "now": 5, "outcome": {"status": "failed", "exit_code": 3, "reason": "boom"}}),
        )
        .unwrap();
        let SchedulerCommand::ReportResult(report) = cmd else {
            panic!("not a report")
        };
        assert_eq!(
            report.outcome,
            Outcome::Failed {
                exit_code: Some(3),
                reason: "boom".into(),
                outputs: JobOutputs::default()
            }
        );
    }

    #[test]
    fn command_and_event_tags_match() {
        let commands = [
            SchedulerCommand::ConfigureQueue(QueueConfig::default()),
            SchedulerCommand::Submit {
                job_id: "j".into(),
                spec: Box::new(spec()),
            },
            SchedulerCommand::Cancel {
                job_id: "j".into(),
                reason: None,
            },
            SchedulerCommand::RecordStarted {
                job_id: "j".into(),
                attempt: 1,
                handle: ExecutorHandle::Manifests { path: "p".into() },
            },
            SchedulerCommand::ReportResult(ReportResult {
                job_id: "j".into(),
                attempt: 1,
                now: 1,
                outcome: Outcome::TimedOut {
                    after_seconds: 1.0,
                    outputs: JobOutputs::default(),
                },
            }),
            SchedulerCommand::RetryDue {
                job_id: "j".into(),
                attempt: 2,
            },
            SchedulerCommand::Place {
                job_id: "j".into(),
                attempt: 1,
                nodes: vec!["gpu-1".into()],
            },
            SchedulerCommand::NodeLost {
                node: "gpu-1".into(),
                reason: "node gpu-1 failed".into(),
            },
        ];
        for (command, tag) in commands.iter().zip(COMMAND_TYPES) {
            assert_eq!(command.command_type(), *tag);
            assert_eq!(serde_json::to_value(command).unwrap()["type"], json!(tag));
            let back = parse(serde_json::to_value(command).unwrap()).unwrap();
            assert_eq!(&back, command);
        }
    }

    #[test]
    fn events_recorded_before_placement_read_without_a_pool_or_node() {
        let dispatched: SchedulerEvent = serde_json::from_value(json!({"type": "job_dispatched",
            "job_id": "j", "attempt": 1, "spec": {"command": ["true"]}, "executor": "local"}))
        .unwrap();
        assert!(matches!(
            dispatched,
            SchedulerEvent::JobDispatched { pool: None, .. }
        ));
        let lost: SchedulerEvent = serde_json::from_value(json!({"type": "job_lost",
            "job_id": "j", "attempt": 1, "reason": "gone"}))
        .unwrap();
        assert!(matches!(lost, SchedulerEvent::JobLost { node: None, .. }));
        // And an unplaced event is written as before: no `node` field.
        let started = SchedulerEvent::JobStarted {
            job_id: "j".into(),
            attempt: 1,
            handle: ExecutorHandle::Manifests { path: "p".into() },
            node: None,
        };
        assert!(serde_json::to_value(&started)
            .unwrap()
            .get("node")
            .is_none());
    }

    #[test]
    fn place_and_node_lost_read_in_their_wire_form() {
        let place = parse(json!({"type": "place", "job_id": "j", "attempt": 2,
            "nodes": ["gpu-1", "gpu-2"]}))
        .unwrap();
        assert_eq!(
            place,
            SchedulerCommand::Place {
                job_id: "j".into(),
                attempt: 2,
                nodes: vec!["gpu-1".into(), "gpu-2".into()]
            }
        );
        let e = parse(json!({"type": "node_lost", "node": "gpu-1"})).unwrap_err();
        assert!(e.message.contains("reason"), "{}", e.message);
    }

    fn outputs() -> impl Strategy<Value = JobOutputs> {
        (".{0,8}", ".{0,8}", proptest::option::of("[a-z/]{1,8}")).prop_map(
            |(stdout_tail, stderr_tail, logs)| JobOutputs {
                stdout_tail,
                stderr_tail,
                logs,
            },
        )
    }

    fn event() -> impl Strategy<Value = SchedulerEvent> {
        let id = "[a-z0-9]{1,6}";
        prop_oneof![
            (id, any::<u32>(), any::<u32>(), any::<u64>()).prop_map(|(job_id, pid, attempt, t)| {
                SchedulerEvent::JobStarted {
                    job_id,
                    attempt,
                    handle: ExecutorHandle::Local {
                        pid,
                        start_ticks: t,
                        dir: "d".into(),
                        started_at: t,
                    },
                    node: (pid % 2 == 0).then(|| format!("gpu-{attempt}")),
                }
            }),
            (
                id,
                any::<u32>(),
                proptest::option::of(-1e9f64..1e9),
                outputs(),
                proptest::option::of(any::<u64>())
            )
                .prop_map(|(job_id, attempt, value, outputs, at)| {
                    SchedulerEvent::JobSucceeded {
                        job_id,
                        attempt,
                        value,
                        outputs,
                        at,
                    }
                }),
            (
                id,
                any::<u32>(),
                proptest::option::of(any::<i32>()),
                ".{0,10}",
                outputs(),
                any::<bool>()
            )
                .prop_map(
                    |(job_id, attempt, exit_code, reason, outputs, will_retry)| {
                        SchedulerEvent::JobFailed {
                            job_id,
                            attempt,
                            exit_code,
                            reason,
                            outputs,
                            will_retry,
                            at: None,
                        }
                    }
                ),
            (id, any::<u32>(), any::<u64>(), any::<u64>()).prop_map(
                |(job_id, attempt, delay_ms, not_before)| SchedulerEvent::RetryScheduled {
                    job_id,
                    attempt,
                    delay_ms,
                    not_before
                }
            ),
            (
                id,
                any::<u32>(),
                ".{0,10}",
                proptest::option::of("[a-z0-9-]{1,8}")
            )
                .prop_map(|(job_id, attempt, reason, node)| SchedulerEvent::JobLost {
                    job_id,
                    attempt,
                    reason,
                    node
                }),
            (id, any::<u32>(), "[a-z0-9-]{1,8}").prop_map(|(job_id, attempt, node)| {
                SchedulerEvent::JobPlaced {
                    job_id,
                    attempt,
                    node,
                    spec: JobSpec::new(vec!["true".into()]),
                    executor: ExecutorKind::Local,
                    pool: "gpu".into(),
                }
            }),
            (
                id,
                proptest::option::of(".{0,8}"),
                proptest::option::of(any::<u32>())
            )
                .prop_map(|(job_id, reason, running_attempt)| {
                    SchedulerEvent::JobCancelled {
                        job_id,
                        reason,
                        running_attempt,
                    }
                }),
        ]
    }

    proptest! {
        #[test]
        fn events_round_trip_in_both_encodings(event in event()) {
            for encoding in [Encoding::Json, Encoding::MsgPack] {
                let bytes = encoding.encode(&event).unwrap();
                let back: SchedulerEvent = encoding.decode(&bytes).unwrap();
                prop_assert_eq!(&back, &event);
            }
        }
    }
}
