//! What a client sends a study: the body of each command, their wire
//! spellings (`tell` and `fail` take a list or one item at the top level,
//! `ask` a lease only with `now`) and the limits they are checked against.

use super::config::StudyConfig;
use super::pruning::Report;
use super::warm_start::{Enqueue, SeedTrials};
use serde::{Deserialize, Serialize};

/// The most trials one `ask` may request.
pub const MAX_ASK: u32 = 1000;

/// The most parameter values one `ask` may sample (`n` x the study's
/// parameters): 1,000 trials of 8 parameters, 32 of 256. Bounds the work of
/// one command and the size of the event it writes.
pub const MAX_ASK_VALUES: usize = 8_192;

/// A lease's length when `ask` or `heartbeat` gives `now` but no
/// `lease_seconds`: one hour.
pub const DEFAULT_LEASE_SECONDS: u64 = 3600;

/// The longest lease: 30 days.
pub const MAX_LEASE_SECONDS: u64 = 30 * 24 * 3600;

/// The `type` tags of [`SolverCommand`], in declaration order.
pub const COMMAND_TYPES: &[&str] = &[
    "create_study",
    "ask",
    "tell",
    "fail",
    "heartbeat",
    "expire",
    "stop",
    "report",
    "seed",
    "enqueue",
];

/// The most objectives a study may have (`directions`).
pub const MAX_OBJECTIVES: usize = 16;

/// The most constraint values one result may carry.
pub const MAX_CONSTRAINTS: usize = 64;

/// One trial's result in a `tell`: its score (one value, or one per
/// objective of a multi-objective study), optionally its constraint values
/// and its cost.
///
/// On the wire a single-objective result is `{trial_id, value, cost?}`, as
/// it always was; a multi-objective one gives `values: [..]` instead of
/// `value`. Either may add `constraints: [..]`: the trial is feasible when
/// every one is ≤ 0 (Optuna's convention). A one-element `values` reads as
/// `value`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "TrialResultWire", into = "TrialResultWire")]
pub struct TrialResult {
    /// The trial, as `ask` named it.
    pub trial_id: String,
    /// The objective; must be finite. In a multi-objective result, the
    /// first objective (`values[0]`), for views that show one number.
    pub value: f64,
    /// Every objective, one per direction, when the result has two or
    /// more; empty for a single-objective result.
    pub values: Vec<f64>,
    /// The constraint values; feasible when every one is ≤ 0. Empty when
    /// the study has no constraints.
    pub constraints: Vec<f64>,
    /// What the evaluation cost (seconds, dollars...), if reported.
    pub cost: Option<f64>,
}

impl TrialResult {
    /// A single-objective result without constraints or cost.
    pub fn single(trial_id: impl Into<String>, value: f64) -> Self {
        TrialResult {
            trial_id: trial_id.into(),
            value,
            values: Vec::new(),
            constraints: Vec::new(),
            cost: None,
        }
    }

    /// A result with one value per objective (one value makes a
    /// single-objective result); `None` when `values` is empty.
    pub fn with_values(trial_id: impl Into<String>, values: Vec<f64>) -> Option<Self> {
        let first = *values.first()?;
        Some(TrialResult {
            values: if values.len() > 1 { values } else { Vec::new() },
            ..TrialResult::single(trial_id, first)
        })
    }

    /// Its objectives: `[value]`, or `values` for a multi-objective result.
    pub fn objectives(&self) -> &[f64] {
        objectives(&self.value, &self.values)
    }

    /// Whether every constraint is ≤ 0 (true without constraints).
    pub fn is_feasible(&self) -> bool {
        is_feasible(&self.constraints)
    }

    /// Whether `other` reports exactly the same outcome (values,
    /// constraints and cost).
    pub fn same_outcome(&self, other: &TrialResult) -> bool {
        self.objectives() == other.objectives()
            && self.constraints == other.constraints
            && self.cost == other.cost
    }
}

/// A result's objectives from its two fields: `[value]` when `values` is
/// empty (a single objective), else `values`.
pub fn objectives<'a>(value: &'a f64, values: &'a [f64]) -> &'a [f64] {
    if values.is_empty() {
        std::slice::from_ref(value)
    } else {
        values
    }
}

/// Whether constraint values mean feasible: every one ≤ 0.
pub fn is_feasible(constraints: &[f64]) -> bool {
    constraints.iter().all(|&c| c <= 0.0)
}

/// How far constraint values are from feasible: the sum of the positive
/// ones (Optuna's total violation); 0 when feasible.
pub fn violation(constraints: &[f64]) -> f64 {
    // A fold from +0.0: `Sum` starts at -0.0, which would rank an empty
    // list (a seeded trial) apart from a feasible one by `total_cmp`.
    constraints.iter().fold(0.0, |total, &c| total + c.max(0.0))
}

/// A [`TrialResult`] as spelled on the wire.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
struct TrialResultWire {
    trial_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    values: Option<Vec<f64>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    constraints: Vec<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cost: Option<f64>,
}

#[cfg(feature = "openapi")]
schema_as_wire!(TrialResult, TrialResultWire);

impl TryFrom<TrialResultWire> for TrialResult {
    type Error = String;

    fn try_from(wire: TrialResultWire) -> Result<Self, String> {
        let result = objectives_of(wire.value, wire.values).and_then(|values| {
            TrialResult::with_values(wire.trial_id, values)
                .ok_or_else(|| "values: must not be empty".to_string())
        })?;
        limits_problem(&result.values, &wire.constraints).map_or(Ok(()), Err)?;
        Ok(TrialResult {
            constraints: wire.constraints,
            cost: wire.cost,
            ..result
        })
    }
}

/// The objectives given as `value` or `values`: exactly one of them.
fn objectives_of(value: Option<f64>, values: Option<Vec<f64>>) -> Result<Vec<f64>, String> {
    match (value, values) {
        (Some(_), Some(_)) => Err("give either `value` or `values`, not both".into()),
        (Some(value), None) => Ok(vec![value]),
        (None, Some(values)) => Ok(values),
        (None, None) => Err("give `value` (or `values`, one per direction)".into()),
    }
}

/// Whether a result carries more objectives or constraints than any study
/// takes (checked when read, so a huge list is refused at the door).
fn limits_problem(values: &[f64], constraints: &[f64]) -> Option<String> {
    if values.len() > MAX_OBJECTIVES {
        return Some(format!(
            "values: at most {MAX_OBJECTIVES} objectives, got {}",
            values.len()
        ));
    }
    (constraints.len() > MAX_CONSTRAINTS).then(|| {
        format!(
            "constraints: at most {MAX_CONSTRAINTS} values, got {}",
            constraints.len()
        )
    })
}

impl From<TrialResult> for TrialResultWire {
    fn from(result: TrialResult) -> Self {
        let multi = !result.values.is_empty();
        TrialResultWire {
            trial_id: result.trial_id,
            value: (!multi).then_some(result.value),
            values: multi.then_some(result.values),
            constraints: result.constraints,
            cost: result.cost,
        }
    }
}

/// The body of a `tell`: one or more results.
///
/// On the wire either `{"results": [{trial_id, value, cost?}, ...]}` or a
/// single result at the top level, `{"trial_id": "t1", "value": 0.5}`.
/// Always written in the `results` form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "TellWire", into = "TellWire")]
pub struct Tell {
    /// The results, in the order given; never empty.
    pub results: Vec<TrialResult>,
}

/// Both spellings of a `tell`, before they are checked.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
struct TellWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    results: Option<Vec<TrialResult>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trial_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    values: Option<Vec<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    constraints: Option<Vec<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cost: Option<f64>,
}

#[cfg(feature = "openapi")]
schema_as_wire!(Tell, TellWire);

impl TryFrom<TellWire> for Tell {
    type Error = String;

    fn try_from(wire: TellWire) -> Result<Self, String> {
        let fields_given = wire.trial_id.is_some()
            || wire.value.is_some()
            || wire.values.is_some()
            || wire.constraints.is_some()
            || wire.cost.is_some();
        let has_score = wire.value.is_some() || wire.values.is_some();
        let single = fields_given
            .then(|| match wire.trial_id {
                Some(trial_id) if has_score => TrialResult::try_from(TrialResultWire {
                    trial_id,
                    value: wire.value,
                    values: wire.values,
                    constraints: wire.constraints.unwrap_or_default(),
                    cost: wire.cost,
                })
                .map(Some),
                _ => Ok(None),
            })
            .transpose()?;
        let results = one_or_many(
            "results",
            "`trial_id` and `value` (or `values`)",
            wire.results,
            single,
        )?;
        Ok(Tell { results })
    }
}

/// The two spellings of a command about trials: a list under `list_name`,
/// or one item's fields at the top level. `single` is `None` when no
/// top-level field was given, `Some(None)` when they do not make an item.
pub(super) fn one_or_many<T>(
    list_name: &str,
    single_form: &str,
    list: Option<Vec<T>>,
    single: Option<Option<T>>,
) -> Result<Vec<T>, String> {
    let items = match (list, single) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "give either `{list_name}` or {single_form}, not both"
            ))
        }
        (Some(items), None) => items,
        (None, Some(Some(item))) => vec![item],
        (None, _) => return Err(format!("give `{list_name}`, or {single_form}")),
    };
    if items.is_empty() {
        return Err(format!("`{list_name}` must not be empty"));
    }
    Ok(items)
}

impl From<Tell> for TellWire {
    fn from(tell: Tell) -> Self {
        TellWire {
            results: Some(tell.results),
            trial_id: None,
            value: None,
            values: None,
            constraints: None,
            cost: None,
        }
    }
}

/// Why one trial could not be evaluated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TrialFailure {
    /// The trial, as `ask` named it.
    pub trial_id: String,
    /// What went wrong (an exit status, a timeout...), for the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The body of a `fail`: one or more failed trials.
///
/// On the wire either `{"failures": [{trial_id, reason?}, ...]}` or a single
/// failure at the top level, `{"trial_id": "t3", "reason": "timed out"}`.
/// Always written in the `failures` form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "FailWire", into = "FailWire")]
pub struct Fail {
    /// The failures, in the order given; never empty.
    pub failures: Vec<TrialFailure>,
}

/// Both spellings of a `fail`, before they are checked.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
struct FailWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failures: Option<Vec<TrialFailure>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trial_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

#[cfg(feature = "openapi")]
schema_as_wire!(Fail, FailWire);

impl TryFrom<FailWire> for Fail {
    type Error = String;

    fn try_from(wire: FailWire) -> Result<Self, String> {
        let fields_given = wire.trial_id.is_some() || wire.reason.is_some();
        let single = fields_given.then(|| {
            Some(TrialFailure {
                trial_id: wire.trial_id?,
                reason: wire.reason,
            })
        });
        let failures = one_or_many(
            "failures",
            "`trial_id` (and an optional `reason`)",
            wire.failures,
            single,
        )?;
        Ok(Fail { failures })
    }
}

impl From<Fail> for FailWire {
    fn from(fail: Fail) -> Self {
        FailWire {
            failures: Some(fail.failures),
            trial_id: None,
            reason: None,
        }
    }
}

/// `ask`'s default batch size.
fn one() -> u32 {
    1
}

/// The lease an `ask` stamped with the sender's clock puts on its trials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The sender's clock, unix milliseconds.
    pub now: u64,
    /// The lease's length; [`DEFAULT_LEASE_SECONDS`] when absent.
    pub seconds: Option<u64>,
}

/// Renews the leases of running trials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// The trials still being evaluated; never empty.
    pub trial_ids: Vec<String>,
    /// The sender's clock, unix milliseconds.
    pub now: u64,
    /// The renewed lease's length; [`DEFAULT_LEASE_SECONDS`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_seconds: Option<u64>,
}

/// What a client asks a study to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "CommandWire", into = "CommandWire")]
pub enum SolverCommand {
    /// Creates the study with this configuration.
    CreateStudy(StudyConfig),
    /// Hands out up to `n` trials (fewer when the budget runs out), leased
    /// when the ask carries the sender's clock (`now`).
    Ask {
        /// How many trials, 1..=[`MAX_ASK`]; 1 when absent.
        n: u32,
        /// The lease on the trials; none without `now`.
        lease: Option<Lease>,
    },
    /// Records the scores of finished trials.
    Tell(Tell),
    /// Records trials that could not be evaluated.
    Fail(Fail),
    /// Renews the leases of running trials.
    Heartbeat(Heartbeat),
    /// Marks running trials whose lease ended at or before `now` as stale.
    Expire {
        /// The sender's clock, unix milliseconds.
        now: u64,
    },
    /// Stops handing out trials; results of running trials are still taken.
    Stop {
        /// Why, for the record.
        reason: Option<String>,
    },
    /// Records an intermediate result; the reply says continue or prune.
    Report(Report),
    /// Adds earlier results to the history (a warm start).
    Seed(SeedTrials),
    /// Queues candidates for the next asks.
    Enqueue(Enqueue),
}

/// What a client asks a study to do, as spelled on the wire
/// ([`SolverCommand`] once read).
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum CommandWire {
    CreateStudy(StudyConfig),
    Ask {
        #[serde(default = "one")]
        n: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        now: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lease_seconds: Option<u64>,
    },
    Tell(Tell),
    Fail(Fail),
    Heartbeat(Heartbeat),
    Expire {
        now: u64,
    },
    Stop {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    Report(Report),
    Seed(SeedTrials),
    Enqueue(Enqueue),
}

#[cfg(feature = "openapi")]
schema_as_wire!(SolverCommand, CommandWire);

impl TryFrom<CommandWire> for SolverCommand {
    type Error = String;

    fn try_from(wire: CommandWire) -> Result<Self, String> {
        Ok(match wire {
            CommandWire::CreateStudy(config) => SolverCommand::CreateStudy(config),
            CommandWire::Ask {
                now: None,
                lease_seconds: Some(_),
                ..
            } => return Err("lease_seconds: needs `now` (unix milliseconds)".into()),
            CommandWire::Ask {
                n,
                now,
                lease_seconds,
            } => SolverCommand::Ask {
                n,
                lease: now.map(|now| Lease {
                    now,
                    seconds: lease_seconds,
                }),
            },
            CommandWire::Tell(tell) => SolverCommand::Tell(tell),
            CommandWire::Fail(fail) => SolverCommand::Fail(fail),
            CommandWire::Heartbeat(heartbeat) => SolverCommand::Heartbeat(heartbeat),
            CommandWire::Expire { now } => SolverCommand::Expire { now },
            CommandWire::Stop { reason } => SolverCommand::Stop { reason },
            CommandWire::Report(report) => SolverCommand::Report(report),
            CommandWire::Seed(seed) => SolverCommand::Seed(seed),
            CommandWire::Enqueue(enqueue) => SolverCommand::Enqueue(enqueue),
        })
    }
}

impl From<SolverCommand> for CommandWire {
    fn from(command: SolverCommand) -> Self {
        match command {
            SolverCommand::CreateStudy(config) => CommandWire::CreateStudy(config),
            SolverCommand::Ask { n, lease } => CommandWire::Ask {
                n,
                now: lease.map(|l| l.now),
                lease_seconds: lease.and_then(|l| l.seconds),
            },
            SolverCommand::Tell(tell) => CommandWire::Tell(tell),
            SolverCommand::Fail(fail) => CommandWire::Fail(fail),
            SolverCommand::Heartbeat(heartbeat) => CommandWire::Heartbeat(heartbeat),
            SolverCommand::Expire { now } => CommandWire::Expire { now },
            SolverCommand::Stop { reason } => CommandWire::Stop { reason },
            SolverCommand::Report(report) => CommandWire::Report(report),
            SolverCommand::Seed(seed) => CommandWire::Seed(seed),
            SolverCommand::Enqueue(enqueue) => CommandWire::Enqueue(enqueue),
        }
    }
}

impl SolverCommand {
    /// The snake_case `type` tag.
    pub fn command_type(&self) -> &'static str {
        match self {
            SolverCommand::CreateStudy(_) => "create_study",
            SolverCommand::Ask { .. } => "ask",
            SolverCommand::Tell(_) => "tell",
            SolverCommand::Fail(_) => "fail",
            SolverCommand::Heartbeat(_) => "heartbeat",
            SolverCommand::Expire { .. } => "expire",
            SolverCommand::Stop { .. } => "stop",
            SolverCommand::Report(_) => "report",
            SolverCommand::Seed(_) => "seed",
            SolverCommand::Enqueue(_) => "enqueue",
        }
    }
}
