//! `flotilla run`: ArqonHPO's `run`, durable and parallel.
//!
//! The study lives in the embedded event log (`--data-dir`, default
//! `.flotilla`), driven through the host's command step: every ask and tell
//! is an acknowledged, durable event before anything depends on it. Up to
//! `--parallel` trials run at once, each with its parameters in the
//! environment (`ARQON_<name>`, `FLOTILLA_PARAM_<name>`,
//! `FLOTILLA_TRIAL_ID`). A script that exits non-zero, times out or prints
//! no number fails that trial only.
//!
//! - `config`: the [`Plan`] — the config file, checked field by field, the
//!   study's name, the script and the timeout;
//! - `state_file`: ArqonHPO's state file, with what a resume needs;
//! - `direct` (the default): each trial a subprocess of this process;
//! - `scheduled` (`--executor local|kubernetes`): each trial a job of a
//!   scheduler queue hosted here;
//! - `remote` (`--remote URL` or `--nats URL`): the study created in a
//!   running control plane, its run started there (`study_run/<study>`)
//!   and followed here (`crate::commands::watch`); Ctrl-C detaches.
//!
//! The first two give a trial the same job spec ([`trial_spec`]); all
//! three print the same summary ([`finish`]).

mod config;
mod direct;
mod remote;
mod scheduled;
mod state_file;

use crate::cli::RunArgs;
use crate::commands::block_on;
use anyhow::Result;
use config::Plan;
pub(crate) use direct::progress_bar;
use flotilla_messages::scheduler::JobSpec;
use flotilla_messages::solver::StudyConfig;
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::ExitCode;

/// Runs `flotilla run`.
pub fn run(args: RunArgs) -> Result<ExitCode> {
    if args.remote.is_some() || args.nats.is_some() {
        return remote::run(&args);
    }
    let plan = Plan::from_args(&args)?;
    if let Some(executor) = &args.executor {
        return scheduled::run(plan, executor, args.image.clone());
    }
    block_on(direct::drive(plan))
}

/// Whether the study a control plane shows (`recorded`, its view's
/// `config`) is the one `config` would create, so a run may resume it.
fn same_study(config: &StudyConfig, recorded: &Value) -> bool {
    serde_json::from_value::<StudyConfig>(recorded.clone())
        .is_ok_and(|recorded| config.same_study_as(&recorded))
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

/// A trial's job spec, the same for both runners: the script as the
/// command, the trial's parameters, study and id (its environment, see
/// [`JobSpec::environment`]) and the run's timeout.
fn trial_spec(plan: &Plan, trial_id: &str, params: BTreeMap<String, Value>) -> JobSpec {
    let mut spec = JobSpec::new(plan.script.argv());
    spec.params = params;
    spec.study = Some(plan.study.clone());
    spec.trial_id = Some(trial_id.to_string());
    spec.timeout_seconds = plan.timeout.map(|t| t.as_secs_f64());
    spec
}

/// What every run's summary says about its study, from the study's view:
/// its status and budget, the best trial, the trials by state and the
/// failures with their reasons.
pub(crate) fn study_summary(view: &Value) -> serde_json::Map<String, Value> {
    let trials = view["trials"].as_array().cloned().unwrap_or_default();
    let count = |state: &str| trials.iter().filter(|t| t["state"] == state).count();
    let failed: Vec<Value> = trials
        .iter()
        .filter(|t| t["state"] == "failed")
        .map(|t| serde_json::json!({"trial_id": t["trial_id"], "reason": t["failure"]["reason"]}))
        .collect();
    let best = view["best"].is_object().then_some(&view["best"]);
    let (completed, failures, pruned) = (count("completed"), count("failed"), count("pruned"));
    let summary = serde_json::json!({
        "status": view["status"],
        "budget": view["config"]["budget"],
        "best_value": best.map(|b| b["value"].clone()),
        "best_params": best.map(|b| b["params"].clone()),
        "best_trial_id": best.map(|b| b["trial_id"].clone()),
        "trials": {
            "completed": completed,
            "failed": failures,
            "pruned": pruned,
            "not_evaluated": trials.len() - completed - failures - pruned,
        },
        "failed": failed,
    });
    match summary {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}
