//! The solver's wire contract: the commands a client sends to a study on
//! `<prefix>.cmd.solver.<study>` and the events a study records.
//!
//! Commands (JSON shown; MessagePack carries the same maps):
//!
//! ```json
//! {"type": "create_study", "seed": 7, "budget": 100,
//!  "bounds": {"lr": {"min": 1e-5, "max": 0.1, "scale": "Log"},
//!             "momentum": {"min": 0.8, "max": 0.99}},
//!  "probe_ratio": 0.2, "strategy_params": {"gamma": 0.25}, "sampler": "sobol"}
//! {"type": "ask", "n": 4}
//! {"type": "ask", "n": 4, "now": 1767225600000, "lease_seconds": 600}
//! {"type": "heartbeat", "trial_ids": ["t1", "t2"], "now": 1767225660000}
//! {"type": "expire", "now": 1767226300000}
//! {"type": "tell", "results": [{"trial_id": "t1", "value": 0.31, "cost": 12.5}]}
//! {"type": "tell", "trial_id": "t2", "value": 0.27}
//! {"type": "tell", "trial_id": "t3", "values": [0.27, 41.0], "constraints": [-0.5]}
//! {"type": "fail", "trial_id": "t3", "reason": "the script exited with status 3"}
//! {"type": "fail", "failures": [{"trial_id": "t4", "reason": "timed out"}, {"trial_id": "t5"}]}
//! {"type": "stop", "reason": "good enough"}
//! ```
//!
//! The create command is ArqonHPO's config (`seed`, `budget`, `bounds` with
//! `scale` spelled in any case, `probe_ratio`, `strategy_params`) plus an
//! optional `sampler` (`auto`, the default, `random`, `sobol`, `grid`,
//! `tpe`, `cmaes`, `gp` or `nsga2`, in
//! any case), an optional `direction` (`minimize`, the default, or
//! `maximize`) or, for a multi-objective study, `directions` (one per
//! objective: results then carry `values`, and the study's result is its
//! Pareto front), and the native parameter types of
//! [`search_space`]: int, categorical, stepped and
//! conditional parameters, under `bounds` or `params`. Every command
//! refuses fields it does not know.
//!
//! A `tpe` study reads its knobs from `strategy_params` (all optional;
//! validated only for `tpe`, other samplers just store them):
//!
//! ```json
//! {"sampler": "tpe", "strategy_params": {"n_startup_trials": 10,
//!  "n_ei_candidates": 24, "gamma": 0.1, "multivariate": 1}}
//! ```
//!
//! Events, one per command:
//!
//! ```json
//! {"type": "study_created", "config": {...}}
//! {"type": "trials_asked", "trials": [{"trial_id": "t1", "number": 1, "params": {"lr": 0.003}}], "study_done": false}
//! {"type": "trials_told", "results": [{"trial_id": "t1", "value": 0.31}], "completes_study": false}
//! {"type": "trials_failed", "failures": [{"trial_id": "t3", "reason": "timed out"}], "completes_study": false}
//! {"type": "study_stopped", "reason": "good enough"}
//! ```
//!
//! A result may carry `constraints`: the trial is feasible when every one
//! is ≤ 0, as Optuna defines it. Every result of a study gives the same
//! number of constraints (the first one recorded fixes it); the best trial
//! and the Pareto front count feasible trials only.
//!
//! A trial that could not be evaluated is reported with `fail`, not with a
//! `tell`: a result always carries a finite value, a failure never does, so
//! neither shape has a field that only sometimes means something. `reason`
//! is optional. A failed trial counts toward the budget and is never the
//! best; a later `tell` with a value for it (a late result) is recorded and
//! makes it completed.
//!
//! Time enters only through commands, so `decide` stays pure: `now` is the
//! sender's clock in unix milliseconds. An `ask` that carries `now` leases
//! its trials until `now + lease_seconds` (default
//! [`DEFAULT_LEASE_SECONDS`]); an `ask` without `now` hands out trials
//! without a lease, which never go stale (as before leases existed). A
//! `heartbeat` renews the leases of running trials to `now + lease_seconds`
//! (same default). An `expire` marks every running trial whose lease ended
//! at or before `now` as stale, in one event. A stale trial is handed out
//! again, under the same trial id and with the same parameters, by a later
//! `ask` (before any new trial) up to the study's `max_retries` (default 0)
//! times; a stale trial with no retry left counts as finished. A result or
//! failure for a stale trial is still recorded.
//!
//! In the source, `config.rs` holds the study's configuration and its
//! checks, `commands.rs` the commands and their wire spellings, `events.rs`
//! the events and trial ids, all re-exported here;
//! [`search_space`] (the parameters), [`pruning`] (`report` and the pruners)
//! and [`warm_start`] (`seed` and `enqueue`) are modules of their own.

mod commands;
mod config;
mod events;
pub mod pruning;
pub mod search_space;
pub mod warm_start;

pub use commands::{
    is_feasible, objectives, violation, Fail, Heartbeat, Lease, SolverCommand, Tell, TrialFailure,
    TrialResult, COMMAND_TYPES, DEFAULT_LEASE_SECONDS, MAX_ASK, MAX_ASK_VALUES, MAX_CONSTRAINTS,
    MAX_LEASE_SECONDS, MAX_OBJECTIVES,
};
pub use config::{
    Sampler, StudyConfig, AUTO_RULE, CMAES_MAX_POPSIZE, CMAES_PARAMS, GP_MAX_CANDIDATES,
    GP_N_CANDIDATES, GP_N_STARTUP_TRIALS, GP_PARAMS, MAX_PARAMETERS, MAX_RETRIES,
    NSGA2_CROSSOVER_PROB, NSGA2_MAX_POPULATION_SIZE, NSGA2_PARAMS, NSGA2_POPULATION_SIZE,
    NSGA2_SWAPPING_PROB, SOBOL_MAX_DIMENSIONS, TPE_GAMMA, TPE_MAX_EI_CANDIDATES,
    TPE_N_EI_CANDIDATES, TPE_N_STARTUP_TRIALS, TPE_PARAMS,
};
pub use events::{trial_id, trial_number, SolverEvent, Trial};
pub use pruning::{PruneAction, Pruner, Report};
pub use search_space::{Bound, Direction, ParamKind, ParamValue, Params, Scale};
pub use warm_start::{Enqueue, PriorResult, SeedTrials};

#[cfg(test)]
mod tests;
