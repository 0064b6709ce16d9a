//! What a study records, one event per command, and the trials it hands
//! out with their ids (`t1`, `t2`, ...).

use super::commands::{TrialFailure, TrialResult};
use super::config::StudyConfig;
use super::pruning::PruneAction;
use super::search_space::Params;
use serde::{Deserialize, Serialize};

/// The id of trial `number` in its study: `t1`, `t2`, ...
pub fn trial_id(number: u64) -> String {
    format!("t{number}")
}

/// The number behind a trial id in its canonical form (`t7` → 7); `None`
/// for anything else (`t07`, `t0`, `7`, `x1`).
pub fn trial_number(id: &str) -> Option<u64> {
    let digits = id.strip_prefix('t')?;
    let canonical = !digits.starts_with('0') && digits.bytes().all(|b| b.is_ascii_digit());
    if !canonical {
        return None;
    }
    digits.parse().ok()
}

/// The score of one finished trial.
/// One trial handed out by `ask`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// Unique in the study: `t<number>`.
    pub trial_id: String,
    /// 1, 2, 3... in the order the study handed trials out.
    pub number: u64,
    /// The parameter values to evaluate, one per bound.
    pub params: Params,
}

/// What happened to a study. Each command records at most one event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SolverEvent {
    /// The study exists, with this configuration.
    StudyCreated {
        /// The validated configuration.
        config: StudyConfig,
    },
    /// An `ask` handed out these trials (possibly none, once the budget is
    /// all asked).
    TrialsAsked {
        /// The new trials, numbered consecutively.
        trials: Vec<Trial>,
        /// Whether the study was done when asked (only ever true when
        /// `trials` and `retried` are empty): every trial handed out and
        /// told, failed or stale without a retry left.
        #[serde(default)]
        study_done: bool,
        /// Stale trials handed out again (a new attempt, same id and
        /// parameters), before any new trial.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        retried: Vec<Trial>,
        /// When the lease of every trial in this event ends (unix
        /// milliseconds); absent for an ask without `now`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lease_until: Option<u64>,
    },
    /// A `tell` recorded these results (repeats of earlier results left out).
    TrialsTold {
        /// The newly recorded results.
        results: Vec<TrialResult>,
        /// Whether these results complete the study: the budget is all asked
        /// and every trial is now told.
        #[serde(default)]
        completes_study: bool,
    },
    /// A `fail` recorded these trials as failed (repeats left out).
    TrialsFailed {
        /// The newly failed trials.
        failures: Vec<TrialFailure>,
        /// Whether these failures complete the study: the budget is all
        /// asked and every trial is now told or failed.
        #[serde(default)]
        completes_study: bool,
    },
    /// A `heartbeat` renewed these running trials' leases.
    LeasesRenewed {
        /// The renewed trials (stale, finished and repeated ids left out).
        trial_ids: Vec<String>,
        /// When their leases now end (unix milliseconds).
        lease_until: u64,
    },
    /// An `expire` found these running trials' leases ended: they are stale.
    TrialsExpired {
        /// The trials now stale.
        trial_ids: Vec<String>,
        /// The `now` of the `expire` (unix milliseconds).
        now: u64,
        /// Whether this completes the study: the budget is all asked and
        /// every trial is now told, failed or stale without a retry left.
        #[serde(default)]
        completes_study: bool,
    },
    /// The study was stopped and hands out no more trials.
    StudyStopped {
        /// Why, if the client said.
        reason: Option<String>,
    },
    /// A running trial reported an intermediate result, and the pruner
    /// decided.
    TrialReported {
        /// The trial.
        trial_id: String,
        /// The step it reported.
        step: u64,
        /// The value it reported.
        value: f64,
        /// What the trial should do; `prune` finishes it.
        action: PruneAction,
        /// Whether pruning it completes the study.
        #[serde(default)]
        completes_study: bool,
    },
    /// Earlier results joined the study as completed trials (no budget used).
    TrialsSeeded {
        /// The new trials, numbered on from the last one.
        trials: Vec<Trial>,
        /// Their results, one per trial, in the same order.
        results: Vec<TrialResult>,
    },
    /// Candidates joined the queue the next asks hand out first.
    CandidatesEnqueued {
        /// The candidates, checked against the search space.
        candidates: Vec<Params>,
        /// The trial whose parameters they repeat, on a rollback to it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rollback_to: Option<String>,
        /// Why, if given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

impl SolverEvent {
    /// The snake_case `type` tag.
    pub fn event_type(&self) -> &'static str {
        match self {
            SolverEvent::StudyCreated { .. } => "study_created",
            SolverEvent::TrialsAsked { .. } => "trials_asked",
            SolverEvent::TrialsTold { .. } => "trials_told",
            SolverEvent::TrialsFailed { .. } => "trials_failed",
            SolverEvent::LeasesRenewed { .. } => "leases_renewed",
            SolverEvent::TrialsExpired { .. } => "trials_expired",
            SolverEvent::StudyStopped { .. } => "study_stopped",
            SolverEvent::TrialReported { .. } => "trial_reported",
            SolverEvent::TrialsSeeded { .. } => "trials_seeded",
            SolverEvent::CandidatesEnqueued { .. } => "candidates_enqueued",
        }
    }
}
