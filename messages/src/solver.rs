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
//! {"type": "fail", "trial_id": "t3", "reason": "the script exited with status 3"}
//! {"type": "fail", "failures": [{"trial_id": "t4", "reason": "timed out"}, {"trial_id": "t5"}]}
//! {"type": "stop", "reason": "good enough"}
//! ```
//!
//! The create command is ArqonHPO's config (`seed`, `budget`, `bounds` with
//! `scale` spelled in any case, `probe_ratio`, `strategy_params`) plus an
//! optional `sampler` (`auto`, the default, `random`, `sobol`, `grid`,
//! `tpe` or `cmaes`, in
//! any case), an optional `direction` (`minimize`, the default, or
//! `maximize`) and the native parameter types of
//! [`search_space`](crate::search_space): int, categorical, stepped and
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

use crate::error::Rejection;
pub use crate::pruning::{PruneAction, Pruner, Report};
use crate::search_space::space_problem;
pub use crate::search_space::{Bound, Direction, ParamKind, ParamValue, Params};
pub use crate::warm_start::{Enqueue, PriorResult, SeedTrials};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;

/// The most trials one `ask` may request.
pub const MAX_ASK: u32 = 1000;

/// A lease's length when `ask` or `heartbeat` gives `now` but no
/// `lease_seconds`: one hour.
pub const DEFAULT_LEASE_SECONDS: u64 = 3600;

/// The longest lease: 30 days.
pub const MAX_LEASE_SECONDS: u64 = 30 * 24 * 3600;

/// The most times a stale trial may be handed out again.
pub const MAX_RETRIES: u32 = 100;

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

/// How a parameter's range is searched.
///
/// Written lowercase (`"linear"`); read in any case (`"Linear"`, `"LOG"`), as
/// ArqonHPO's configs spell it both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Scale {
    /// Uniform between `min` and `max`.
    #[default]
    Linear,
    /// Uniform in `ln(x)`: every decade gets the same share. Needs `min > 0`.
    Log,
    /// A range that wraps around (an angle, a phase); sampled uniformly.
    Periodic,
}

impl Scale {
    /// The canonical spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Scale::Linear => "linear",
            Scale::Log => "log",
            Scale::Periodic => "periodic",
        }
    }

    /// Reads a spelling in any case; `None` if it names no scale.
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "linear" => Some(Scale::Linear),
            "log" => Some(Scale::Log),
            "periodic" => Some(Scale::Periodic),
            _ => None,
        }
    }
}

impl fmt::Display for Scale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Scale {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Scale {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Scale::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown scale {text:?}: expected linear, log or periodic"
            ))
        })
    }
}

/// The most parameters a [`Sampler::Sobol`] study may have: the dimensions
/// of the Joe–Kuo direction-number table the solver carries.
pub const SOBOL_MAX_DIMENSIONS: usize = 32;

/// How a study picks the points it hands out.
///
/// Written lowercase (`"sobol"`); read in any case (`"Sobol"`, `"GRID"`),
/// like [`Scale`]. Absent means [`Sampler::Auto`] in a `create_study`;
/// recorded configs always name their sampler, so a later change of the
/// default cannot change how a recorded study continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Sampler {
    /// Independent uniform points: the baseline, good at any budget and
    /// dimension, but clumpy at small budgets.
    Random,
    /// A scrambled Sobol sequence: quasi-random points that fill the space
    /// evenly, so a small budget leaves no large region unexplored. At most
    /// [`SOBOL_MAX_DIMENSIONS`] parameters.
    Sobol,
    /// A full-factorial grid with at least `budget` points, visited in a
    /// seeded shuffled order without repeats.
    Grid,
    /// The Tree-structured Parzen Estimator, as in Optuna 5: after
    /// [`TPE_N_STARTUP_TRIALS`] trials of a scrambled Sobol design, each
    /// point is the best of [`TPE_N_EI_CANDIDATES`] candidates by the ratio
    /// of a density fitted to the good trials to one fitted to the rest,
    /// over whole points (multivariate) unless `multivariate` is 0. Running
    /// trials count as bad ones (constant liar), so a batch spreads out.
    /// Tuned through `strategy_params` (see [`TPE_PARAMS`]).
    Tpe,
    /// CMA-ES, the covariance matrix adaptation evolution strategy: each
    /// generation of `4 + 3 ln d` points is drawn from a normal distribution
    /// whose mean, step size and covariance adapt to the best points of the
    /// generation before; restarts with a doubled population when it has
    /// converged. Strong at larger budgets on continuous problems. Tuned
    /// through `strategy_params` (see [`CMAES_PARAMS`]).
    Cmaes,
    /// Picks a sampler from the search space's shape (dimensions, budget,
    /// parameter types) by a rule measured on the solver benchmark; reads
    /// the `strategy_params` of the sampler it picks. The default.
    #[default]
    Auto,
}

/// TPE's default number of random trials before it models anything.
pub const TPE_N_STARTUP_TRIALS: u64 = 10;

/// TPE's default number of candidates scored per trial.
pub const TPE_N_EI_CANDIDATES: u64 = 24;

/// TPE's default share of trials counted as good (at most 25 of them):
/// Optuna's `min(ceil(0.1 n), 25)`.
pub const TPE_GAMMA: f64 = 0.1;

/// The most candidates a TPE study may score per trial.
pub const TPE_MAX_EI_CANDIDATES: u64 = 1000;

/// The `strategy_params` keys a [`Sampler::Tpe`] study reads: the number of
/// random start-up trials (a whole number, default
/// [`TPE_N_STARTUP_TRIALS`]), the candidates per trial (a whole number in
/// 1..=[`TPE_MAX_EI_CANDIDATES`], default [`TPE_N_EI_CANDIDATES`]), the
/// good share (in (0, 1], default [`TPE_GAMMA`]) and whether to model the
/// parameters jointly (1, the default as in Optuna 5, or 0). Other keys are
/// stored and ignored, as ArqonHPO's are.
pub const TPE_PARAMS: [&str; 4] = [
    "n_startup_trials",
    "n_ei_candidates",
    "gamma",
    "multivariate",
];

/// The largest population a [`Sampler::Cmaes`] study may ask for.
pub const CMAES_MAX_POPSIZE: u64 = 10_000;

/// The `strategy_params` keys a [`Sampler::Cmaes`] study reads: the
/// population size (a whole number in 2..=[`CMAES_MAX_POPSIZE`], default
/// `4 + 3 ln d`), the initial step size in the unit cube (in (0, 1],
/// default 1/6) and whether to restart with a doubled population on
/// convergence (1, the default, or 0).
pub const CMAES_PARAMS: [&str; 3] = ["popsize", "sigma0", "restarts"];

impl Sampler {
    /// Every sampler, in declaration order.
    pub const ALL: [Sampler; 6] = [
        Sampler::Random,
        Sampler::Sobol,
        Sampler::Grid,
        Sampler::Tpe,
        Sampler::Cmaes,
        Sampler::Auto,
    ];

    /// The canonical spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Sampler::Random => "random",
            Sampler::Sobol => "sobol",
            Sampler::Grid => "grid",
            Sampler::Tpe => "tpe",
            Sampler::Cmaes => "cmaes",
            Sampler::Auto => "auto",
        }
    }

    /// Whether a trial's point depends on the trials before it (the
    /// model-based samplers), not on the seed and its number alone.
    pub fn reads_history(self) -> bool {
        matches!(self, Sampler::Tpe | Sampler::Cmaes | Sampler::Auto)
    }

    /// Reads a spelling in any case; `None` if it names no sampler.
    pub fn parse(text: &str) -> Option<Self> {
        Sampler::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(text))
    }
}

impl fmt::Display for Sampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Sampler {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Reads a [`Sampler`]; every error names the field and the choices, as the
/// path to it is lost inside the internally tagged command enum.
struct SamplerVisitor;

impl serde::de::Visitor<'_> for SamplerVisitor {
    type Value = Sampler;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sampler: a name, one of random, sobol, grid, tpe, cmaes or auto")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Sampler, E> {
        Sampler::parse(text).ok_or_else(|| {
            E::custom(format!(
                "sampler: unknown value {text:?}: expected random, sobol, grid, tpe, cmaes or auto"
            ))
        })
    }
}

impl<'de> Deserialize<'de> for Sampler {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(SamplerVisitor)
    }
}

/// A study's configuration: ArqonHPO's config, field for field, plus the native
/// form's `direction`, parameter types and conditions. The default is an
/// empty config for struct update syntax, not a valid study.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyConfig {
    /// Seeds every trial's sampling (together with the trial number).
    pub seed: u64,
    /// How many trials the study hands out in total.
    pub budget: u64,
    /// The search space: parameter name → range, type and condition
    /// ([`search_space`](crate::search_space)); also read as `params`.
    #[serde(alias = "params")]
    pub bounds: BTreeMap<String, Bound>,
    /// Whether lower or higher values are better; minimise when absent.
    #[serde(default, skip_serializing_if = "Direction::is_minimize")]
    pub direction: Direction,
    /// ArqonHPO's share of the budget spent probing, in (0, 1]; stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_ratio: Option<f64>,
    /// ArqonHPO's strategy tuning knobs; stored.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub strategy_params: BTreeMap<String, f64>,
    /// How trials are picked; [`Sampler::Auto`] when absent.
    ///
    /// Always written, so a recorded study names its sampler explicitly and
    /// a later change of the default cannot change how it continues.
    #[serde(default)]
    pub sampler: Sampler,
    /// How many times a stale trial may be handed out again (0..=
    /// [`MAX_RETRIES`]); 0 when absent, and then not written, so configs
    /// and events from before leases read and write as they did.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_retries: u32,
    /// How reports stop trials early ([`crate::pruning`]); never when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pruner: Option<Pruner>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A sampler knob's rule: its key, whether a value is valid, and what it
/// expects (for the message).
type KnobRule = (&'static str, fn(f64) -> bool, &'static str);

fn whole(v: f64) -> bool {
    v >= 0.0 && v.fract() == 0.0
}

fn share(v: f64) -> bool {
    v > 0.0 && v <= 1.0
}

fn flag(v: f64) -> bool {
    v == 0.0 || v == 1.0
}

/// The rules of [`TPE_PARAMS`].
const TPE_RULES: [KnobRule; 4] = [
    ("n_startup_trials", whole, "a whole number >= 0"),
    (
        "n_ei_candidates",
        |v| whole(v) && (1.0..=TPE_MAX_EI_CANDIDATES as f64).contains(&v),
        "a whole number in 1..=1000",
    ),
    ("gamma", share, "in (0, 1]"),
    ("multivariate", flag, "0 or 1"),
];

/// The rules of [`CMAES_PARAMS`].
const CMAES_RULES: [KnobRule; 3] = [
    (
        "popsize",
        |v| whole(v) && (2.0..=CMAES_MAX_POPSIZE as f64).contains(&v),
        "a whole number in 2..=10000",
    ),
    ("sigma0", share, "in (0, 1]"),
    ("restarts", flag, "0 or 1"),
];

impl StudyConfig {
    /// Checks the config; the rejection (`INVALID_FIELD`) names the field
    /// and the problem, e.g. `bounds.lr: min 0.1 must be below max 0.01`.
    pub fn validate(&self) -> Result<(), Rejection> {
        self.problem()
            .map_or(Ok(()), |m| Err(Rejection::invalid(m)))
    }

    fn problem(&self) -> Option<String> {
        if self.budget == 0 {
            return Some("budget must be at least 1, got 0".to_string());
        }
        if self.bounds.is_empty() {
            return Some("bounds: at least one parameter is required".to_string());
        }
        if self.max_retries > MAX_RETRIES {
            return Some(format!(
                "max_retries must be at most {MAX_RETRIES}, got {}",
                self.max_retries
            ));
        }
        self.bounds_problem()
            .or_else(|| space_problem(&self.bounds))
            .or_else(|| self.strategy_params_problem())
            .or_else(|| self.sampler_problem())
            .or_else(|| self.probe_ratio_problem())
            .or_else(|| self.pruner.and_then(|p| p.problem()))
    }

    fn bounds_problem(&self) -> Option<String> {
        self.bounds.iter().find_map(|(name, bound)| {
            if name.trim().is_empty() {
                Some(format!("bounds: parameter name {name:?} must not be blank"))
            } else {
                bound.problem(name)
            }
        })
    }

    fn sampler_problem(&self) -> Option<String> {
        let dimensions = self.bounds.len();
        match self.sampler {
            Sampler::Sobol if dimensions > SOBOL_MAX_DIMENSIONS => Some(format!(
                "sampler: sobol supports at most {SOBOL_MAX_DIMENSIONS} parameters, \
                 got {dimensions}; use random, grid or tpe"
            )),
            Sampler::Tpe => self.tpe_problem(),
            Sampler::Cmaes => self.cmaes_problem(),
            // Auto may pick either model-based sampler: both sets of knobs
            // must be valid.
            Sampler::Auto => self.tpe_problem().or_else(|| self.cmaes_problem()),
            _ => None,
        }
    }

    /// Checks the [`CMAES_PARAMS`] that are given.
    fn cmaes_problem(&self) -> Option<String> {
        self.knob_problem("cmaes", &CMAES_RULES)
    }

    /// Checks the [`TPE_PARAMS`] that are given.
    fn tpe_problem(&self) -> Option<String> {
        self.knob_problem("tpe", &TPE_RULES)
    }

    /// The first given knob that breaks its rule, named with `sampler`.
    fn knob_problem(&self, sampler: &str, rules: &[KnobRule]) -> Option<String> {
        self.strategy_params.iter().find_map(|(key, &v)| {
            let (_, valid, expected) = rules.iter().find(|rule| rule.0 == key)?;
            (!valid(v))
                .then(|| format!("strategy_params.{key}: {sampler} needs {expected}, got {v}"))
        })
    }

    fn probe_ratio_problem(&self) -> Option<String> {
        let ratio = self.probe_ratio?;
        let valid = ratio > 0.0 && ratio <= 1.0;
        (!valid).then(|| format!("probe_ratio must be in (0, 1], got {ratio}"))
    }

    fn strategy_params_problem(&self) -> Option<String> {
        self.strategy_params
            .iter()
            .find(|(_, v)| !v.is_finite())
            .map(|(k, v)| format!("strategy_params.{k}: must be finite, got {v}"))
    }
}

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrialResult {
    /// The trial, as `ask` named it.
    pub trial_id: String,
    /// The objective (minimised); must be finite.
    pub value: f64,
    /// What the evaluation cost (seconds, dollars...), if reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
}

impl TrialResult {
    /// Whether `other` reports exactly the same outcome (value and cost).
    pub fn same_outcome(&self, other: &TrialResult) -> bool {
        self.value == other.value && self.cost == other.cost
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
#[serde(deny_unknown_fields)]
struct TellWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    results: Option<Vec<TrialResult>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trial_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cost: Option<f64>,
}

impl TryFrom<TellWire> for Tell {
    type Error = String;

    fn try_from(wire: TellWire) -> Result<Self, String> {
        let fields_given = wire.trial_id.is_some() || wire.value.is_some() || wire.cost.is_some();
        let single = fields_given.then(|| {
            Some(TrialResult {
                trial_id: wire.trial_id?,
                value: wire.value?,
                cost: wire.cost,
            })
        });
        let results = one_or_many("results", "`trial_id` and `value`", wire.results, single)?;
        Ok(Tell { results })
    }
}

/// The two spellings of a command about trials: a list under `list_name`,
/// or one item's fields at the top level. `single` is `None` when no
/// top-level field was given, `Some(None)` when they do not make an item.
pub(crate) fn one_or_many<T>(
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
            cost: None,
        }
    }
}

/// Why one trial could not be evaluated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[serde(deny_unknown_fields)]
struct FailWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failures: Option<Vec<TrialFailure>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trial_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

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

/// [`SolverCommand`] as it is spelled on the wire.
#[derive(Clone, Serialize, Deserialize)]
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Encoding;
    use crate::command::CommandRequest;
    use crate::error::ErrorCode;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn parse(v: Value) -> Result<SolverCommand, Rejection> {
        CommandRequest::from_value(v, None)?.parse("solver", COMMAND_TYPES)
    }

    fn code(v: Value) -> ErrorCode {
        parse(v).unwrap_err().code
    }

    fn lr_config() -> StudyConfig {
        let bound = Bound::new(1e-5, 0.1, Scale::Log);
        StudyConfig {
            seed: 7,
            budget: 10,
            bounds: BTreeMap::from([("lr".to_string(), bound)]),
            probe_ratio: None,
            strategy_params: BTreeMap::new(),
            sampler: Sampler::Auto,
            max_retries: 0,
            ..Default::default()
        }
    }

    #[test]
    fn create_study_reads_arqon_config() {
        let cmd = parse(json!({
            "type": "create_study", "seed": 7, "budget": 10,
            "bounds": {"lr": {"min": 1e-5, "max": 0.1, "scale": "Log"}},
            "command_id": "c1", "expected_seq": 0
        }))
        .unwrap();
        assert_eq!(cmd, SolverCommand::CreateStudy(lr_config()));
    }

    #[test]
    fn create_study_keeps_probe_ratio_and_strategy_params() {
        let cmd = parse(json!({
            "type": "create_study", "seed": 1, "budget": 5,
            "bounds": {"x": {"min": 0, "max": 1}},
            "probe_ratio": 0.2, "strategy_params": {"gamma": 0.25}
        }))
        .unwrap();
        let SolverCommand::CreateStudy(config) = cmd else {
            panic!("not a create")
        };
        assert_eq!(config.probe_ratio, Some(0.2));
        assert_eq!(config.strategy_params["gamma"], 0.25);
        assert_eq!(config.bounds["x"].scale, Scale::Linear);
    }

    #[test]
    fn scale_is_read_in_any_case_and_written_lowercase() {
        for (text, scale) in [
            ("Linear", Scale::Linear),
            ("linear", Scale::Linear),
            ("LOG", Scale::Log),
            ("log", Scale::Log),
            ("Periodic", Scale::Periodic),
        ] {
            assert_eq!(serde_json::from_value::<Scale>(json!(text)).unwrap(), scale);
            assert_eq!(serde_json::to_value(scale).unwrap(), json!(scale.as_str()));
        }
        let err = serde_json::from_value::<Scale>(json!("cubic")).unwrap_err();
        assert!(err.to_string().contains("unknown scale \"cubic\""), "{err}");
    }

    #[test]
    fn sampler_defaults_to_auto_and_is_read_in_any_case() {
        let create = |extra: Value| -> Result<Sampler, Rejection> {
            let mut body = json!({"type": "create_study", "seed": 1, "budget": 5,
                                  "bounds": {"x": {"min": 0, "max": 1}}});
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            match parse(body)? {
                SolverCommand::CreateStudy(config) => Ok(config.sampler),
                other => panic!("not a create: {other:?}"),
            }
        };
        assert_eq!(create(json!({})).unwrap(), Sampler::Auto);
        for (text, sampler) in [
            ("random", Sampler::Random),
            ("Sobol", Sampler::Sobol),
            ("SOBOL", Sampler::Sobol),
            ("grid", Sampler::Grid),
            ("Grid", Sampler::Grid),
            ("tpe", Sampler::Tpe),
            ("TPE", Sampler::Tpe),
            ("Tpe", Sampler::Tpe),
        ] {
            assert_eq!(create(json!({ "sampler": text })).unwrap(), sampler);
            assert_eq!(
                serde_json::to_value(sampler).unwrap(),
                json!(sampler.as_str())
            );
        }
        for (text, sampler) in [
            ("cmaes", Sampler::Cmaes),
            ("CMAES", Sampler::Cmaes),
            ("Auto", Sampler::Auto),
        ] {
            assert_eq!(create(json!({ "sampler": text })).unwrap(), sampler);
        }
        let e = create(json!({"sampler": "bayes"})).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidField);
        assert_eq!(
            e.message,
            "create_study: sampler: unknown value \"bayes\": expected random, sobol, grid, tpe, cmaes or auto"
        );
        let e = create(json!({"sampler": 3})).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidField);
        assert_eq!(
            e.message,
            "create_study: invalid type: integer `3`, \
             expected sampler: a name, one of random, sobol, grid, tpe, cmaes or auto"
        );
    }

    #[test]
    fn a_tpe_config_round_trips_and_checks_its_knobs() {
        let body = json!({"type": "create_study", "seed": 7, "budget": 10, "sampler": "TPE",
            "bounds": {"lr": {"min": 1e-5, "max": 0.1, "scale": "log"}},
            "strategy_params": {"n_startup_trials": 5, "n_ei_candidates": 48,
                                "gamma": 0.25, "multivariate": 1}});
        let SolverCommand::CreateStudy(config) = parse(body).unwrap() else {
            panic!("not a create")
        };
        assert_eq!(config.sampler, Sampler::Tpe);
        assert!(config.validate().is_ok());
        let value = serde_json::to_value(&config).unwrap();
        assert_eq!(value["sampler"], json!("tpe"));
        for encoding in [Encoding::Json, Encoding::MsgPack] {
            let bytes = encoding.encode(&config).unwrap();
            assert_eq!(encoding.decode::<StudyConfig>(&bytes).unwrap(), config);
        }
        let problem = |key: &str, v: f64| {
            let mut c = config.clone();
            c.strategy_params.insert(key.into(), v);
            c.validate().unwrap_err().message
        };
        assert_eq!(
            problem("multivariate", 2.0),
            "strategy_params.multivariate: tpe needs 0 or 1, got 2"
        );
        assert_eq!(
            problem("n_startup_trials", 2.5),
            "strategy_params.n_startup_trials: tpe needs a whole number >= 0, got 2.5"
        );
        assert!(problem("n_ei_candidates", 0.0).contains("1..=1000"));
        assert!(problem("n_ei_candidates", 1001.0).contains("1..=1000"));
        assert!(problem("gamma", 0.0).contains("in (0, 1]"));
        // Other samplers store the knobs unchecked, as ArqonHPO's configs carry them.
        let mut random = config.clone();
        random.sampler = Sampler::Random;
        random.strategy_params.insert("multivariate".into(), 7.0);
        assert!(random.validate().is_ok());
    }

    #[test]
    fn cmaes_and_auto_configs_check_their_knobs() {
        let body = json!({"type": "create_study", "seed": 7, "budget": 10, "sampler": "cmaes",
            "bounds": {"lr": {"min": 1e-5, "max": 0.1, "scale": "log"}},
            "strategy_params": {"popsize": 12, "sigma0": 0.2, "restarts": 0}});
        let SolverCommand::CreateStudy(config) = parse(body).unwrap() else {
            panic!("not a create")
        };
        assert_eq!(config.sampler, Sampler::Cmaes);
        assert!(config.validate().is_ok());
        assert_eq!(
            serde_json::to_value(&config).unwrap()["sampler"],
            json!("cmaes")
        );
        let problem = |sampler: Sampler, key: &str, v: f64| {
            let mut c = config.clone();
            c.sampler = sampler;
            c.strategy_params.insert(key.into(), v);
            c.validate().map_err(|e| e.message)
        };
        assert_eq!(
            problem(Sampler::Cmaes, "popsize", 1.0).unwrap_err(),
            "strategy_params.popsize: cmaes needs a whole number in 2..=10000, got 1"
        );
        // TPE's knobs are not CMA-ES's business; auto checks both.
        assert!(problem(Sampler::Cmaes, "gamma", 7.0).is_ok());
        for (sampler, key, v, expected) in [
            (Sampler::Cmaes, "sigma0", 0.0, "cmaes needs in (0, 1]"),
            (Sampler::Cmaes, "restarts", 0.5, "cmaes needs 0 or 1"),
            (Sampler::Auto, "gamma", 7.0, "tpe needs in (0, 1]"),
            (Sampler::Auto, "popsize", 0.5, "cmaes needs a whole number"),
        ] {
            let message = problem(sampler, key, v).unwrap_err();
            assert!(message.contains(expected), "{message}");
        }
        assert!(Sampler::Cmaes.reads_history() && Sampler::Auto.reads_history());
        assert!(!Sampler::Sobol.reads_history());
    }

    #[test]
    fn configs_and_events_without_a_sampler_still_read() {
        let old_event = json!({"type": "study_created", "config": {
            "seed": 7, "budget": 10, "bounds": {"lr": {"min": 1e-5, "max": 0.1, "scale": "log"}}}});
        let event: SolverEvent = serde_json::from_value(old_event).unwrap();
        assert_eq!(
            event,
            SolverEvent::StudyCreated {
                config: lr_config()
            }
        );
        let bytes = Encoding::MsgPack
            .encode(&json!({"seed": 7, "budget": 10,
                            "bounds": {"lr": {"min": 1e-5, "max": 0.1, "scale": "LOG"}}}))
            .unwrap();
        let config: StudyConfig = Encoding::MsgPack.decode(&bytes).unwrap();
        assert_eq!(config, lr_config());
    }

    #[test]
    fn the_sampler_is_always_written() {
        let value = serde_json::to_value(lr_config()).unwrap();
        assert_eq!(value["sampler"], json!("auto"));
        let sobol = StudyConfig {
            sampler: Sampler::Sobol,
            ..lr_config()
        };
        let value = serde_json::to_value(&sobol).unwrap();
        assert_eq!(value["sampler"], json!("sobol"));
        for encoding in [Encoding::Json, Encoding::MsgPack] {
            let bytes = encoding.encode(&sobol).unwrap();
            assert_eq!(encoding.decode::<StudyConfig>(&bytes).unwrap(), sobol);
        }
    }

    #[test]
    fn sobol_is_limited_to_the_direction_table() {
        let mut config = StudyConfig {
            sampler: Sampler::Sobol,
            ..lr_config()
        };
        let bound = config.bounds["lr"].clone();
        for i in 1..SOBOL_MAX_DIMENSIONS {
            config.bounds.insert(format!("p{i:02}"), bound.clone());
        }
        assert_eq!(config.bounds.len(), SOBOL_MAX_DIMENSIONS);
        assert!(config.validate().is_ok());
        config.bounds.insert("one_more".into(), bound);
        let e = config.validate().unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidField);
        assert_eq!(
            e.message,
            "sampler: sobol supports at most 32 parameters, got 33; use random, grid or tpe"
        );
        for sampler in [
            Sampler::Random,
            Sampler::Grid,
            Sampler::Tpe,
            Sampler::Cmaes,
            Sampler::Auto,
        ] {
            config.sampler = sampler;
            assert!(config.validate().is_ok(), "{sampler}");
        }
    }

    #[test]
    fn every_command_refuses_unknown_fields() {
        let bad = [
            json!({"type": "create_study", "seed": 1, "budget": 1,
                   "bounds": {"x": {"min": 0, "max": 1}}, "batch_size": 4}),
            json!({"type": "create_study", "seed": 1, "budget": 1,
                   "bounds": {"x": {"min": 0, "max": 1, "width": 0.1}}}),
            json!({"type": "ask", "n": 1, "extra": true}),
            json!({"type": "tell", "results": [], "extra": 1}),
            json!({"type": "tell", "trial_id": "t1", "value": 1.0, "extra": 1}),
            json!({"type": "tell", "results": [{"trial_id": "t1", "value": 1.0, "x": 1}]}),
            json!({"type": "stop", "why": "x"}),
            json!({"type": "fail", "trial_id": "t1", "value": 1.0}),
            json!({"type": "fail", "failures": [{"trial_id": "t1", "why": "x"}]}),
        ];
        for body in bad {
            let e = parse(body.clone()).unwrap_err();
            assert_eq!(e.code, ErrorCode::UnknownField, "{body}: {e}");
        }
    }

    #[test]
    fn ask_defaults_to_one() {
        assert_eq!(
            parse(json!({"type": "ask"})).unwrap(),
            SolverCommand::Ask { n: 1, lease: None }
        );
        assert_eq!(
            parse(json!({"type": "ask", "n": 5})).unwrap(),
            SolverCommand::Ask { n: 5, lease: None }
        );
        assert_eq!(
            code(json!({"type": "ask", "n": -1})),
            ErrorCode::InvalidField
        );
    }

    #[test]
    fn tell_accepts_a_list_or_a_single_result() {
        let list = parse(json!({"type": "tell", "results": [
            {"trial_id": "t1", "value": 0.5, "cost": 2.0}, {"trial_id": "t2", "value": 1}
        ]}))
        .unwrap();
        let SolverCommand::Tell(tell) = list else {
            panic!("not a tell")
        };
        assert_eq!(tell.results.len(), 2);
        assert_eq!(tell.results[0].cost, Some(2.0));
        let single =
            parse(json!({"type": "tell", "trial_id": "t1", "value": 0.5, "cost": 2.0})).unwrap();
        let expected = Tell {
            results: vec![tell.results[0].clone()],
        };
        assert_eq!(single, SolverCommand::Tell(expected));
    }

    #[test]
    fn tell_refuses_mixed_missing_or_empty_forms() {
        for body in [
            json!({"type": "tell"}),
            json!({"type": "tell", "results": []}),
            json!({"type": "tell", "trial_id": "t1"}),
            json!({"type": "tell", "value": 1.0}),
            json!({"type": "tell", "results": [], "trial_id": "t1", "value": 1.0}),
        ] {
            assert_eq!(code(body.clone()), ErrorCode::InvalidField, "{body}");
        }
    }

    #[test]
    fn fail_accepts_a_list_or_a_single_failure_with_an_optional_reason() {
        let single = parse(json!({"type": "fail", "trial_id": "t3", "reason": "exit 3"})).unwrap();
        let failure = |id: &str, reason: Option<&str>| TrialFailure {
            trial_id: id.into(),
            reason: reason.map(Into::into),
        };
        assert_eq!(
            single,
            SolverCommand::Fail(Fail {
                failures: vec![failure("t3", Some("exit 3"))]
            })
        );
        let bare = parse(json!({"type": "fail", "trial_id": "t3"})).unwrap();
        assert_eq!(
            bare,
            SolverCommand::Fail(Fail {
                failures: vec![failure("t3", None)]
            })
        );
        let list = parse(json!({"type": "fail", "failures": [
            {"trial_id": "t4", "reason": "timed out"}, {"trial_id": "t5"}]}))
        .unwrap();
        let expected = Fail {
            failures: vec![failure("t4", Some("timed out")), failure("t5", None)],
        };
        assert_eq!(list, SolverCommand::Fail(expected.clone()));
        // Written in the list form, in both encodings.
        let value = serde_json::to_value(SolverCommand::Fail(expected.clone())).unwrap();
        assert_eq!(
            value,
            json!({"type": "fail", "failures": [
                {"trial_id": "t4", "reason": "timed out"}, {"trial_id": "t5"}]})
        );
        for encoding in [Encoding::Json, Encoding::MsgPack] {
            let bytes = encoding
                .encode(&SolverCommand::Fail(expected.clone()))
                .unwrap();
            let back: SolverCommand = encoding.decode(&bytes).unwrap();
            assert_eq!(back, SolverCommand::Fail(expected.clone()));
        }
    }

    #[test]
    fn fail_refuses_mixed_missing_or_empty_forms() {
        for body in [
            json!({"type": "fail"}),
            json!({"type": "fail", "failures": []}),
            json!({"type": "fail", "reason": "x"}),
            json!({"type": "fail", "failures": [{"trial_id": "t1"}], "trial_id": "t1"}),
            json!({"type": "fail", "failures": [{"reason": "x"}]}),
        ] {
            assert_eq!(code(body.clone()), ErrorCode::InvalidField, "{body}");
        }
    }

    #[test]
    fn trials_failed_reads_without_completes_study() {
        let event: SolverEvent = serde_json::from_value(json!({"type": "trials_failed",
            "failures": [{"trial_id": "t2", "reason": "boom"}]}))
        .unwrap();
        assert_eq!(
            event,
            SolverEvent::TrialsFailed {
                failures: vec![TrialFailure {
                    trial_id: "t2".into(),
                    reason: Some("boom".into())
                }],
                completes_study: false
            }
        );
    }

    #[test]
    fn ask_with_now_is_leased_and_without_it_is_not() {
        assert_eq!(
            parse(json!({"type": "ask", "n": 2, "now": 1000})).unwrap(),
            SolverCommand::Ask {
                n: 2,
                lease: Some(Lease {
                    now: 1000,
                    seconds: None
                })
            }
        );
        let leased = parse(json!({"type": "ask", "now": 1000, "lease_seconds": 60})).unwrap();
        let expected = SolverCommand::Ask {
            n: 1,
            lease: Some(Lease {
                now: 1000,
                seconds: Some(60),
            }),
        };
        assert_eq!(leased, expected);
        assert_eq!(
            serde_json::to_value(&expected).unwrap(),
            json!({"type": "ask", "n": 1, "now": 1000, "lease_seconds": 60})
        );
        assert_eq!(
            serde_json::to_value(SolverCommand::Ask { n: 3, lease: None }).unwrap(),
            json!({"type": "ask", "n": 3})
        );
        let e = parse(json!({"type": "ask", "lease_seconds": 60})).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidField);
        assert!(e.message.contains("lease_seconds: needs `now`"), "{e}");
        assert_eq!(
            code(json!({"type": "ask", "now": "2026-01-01T00:00:00Z"})),
            ErrorCode::InvalidField
        );
        for command in [expected, SolverCommand::Ask { n: 3, lease: None }] {
            for encoding in [Encoding::Json, Encoding::MsgPack] {
                let bytes = encoding.encode(&command).unwrap();
                assert_eq!(encoding.decode::<SolverCommand>(&bytes).unwrap(), command);
            }
        }
    }

    #[test]
    fn heartbeat_and_expire_read_and_round_trip() {
        let heartbeat =
            parse(json!({"type": "heartbeat", "trial_ids": ["t1", "t2"], "now": 5})).unwrap();
        let expected = SolverCommand::Heartbeat(Heartbeat {
            trial_ids: vec!["t1".into(), "t2".into()],
            now: 5,
            lease_seconds: None,
        });
        assert_eq!(heartbeat, expected);
        let expire = parse(json!({"type": "expire", "now": 7})).unwrap();
        assert_eq!(expire, SolverCommand::Expire { now: 7 });
        for command in [expected, expire] {
            for encoding in [Encoding::Json, Encoding::MsgPack] {
                let bytes = encoding.encode(&command).unwrap();
                assert_eq!(encoding.decode::<SolverCommand>(&bytes).unwrap(), command);
            }
        }
        assert_eq!(code(json!({"type": "expire"})), ErrorCode::InvalidField);
        assert_eq!(
            code(json!({"type": "heartbeat", "now": 1})),
            ErrorCode::InvalidField
        );
        assert_eq!(
            code(json!({"type": "heartbeat", "trial_ids": [], "now": 1, "x": 1})),
            ErrorCode::UnknownField
        );
        assert_eq!(
            code(json!({"type": "expire", "now": 1, "x": 1})),
            ErrorCode::UnknownField
        );
    }

    #[test]
    fn max_retries_is_optional_checked_and_written_only_when_set() {
        let config = lr_config();
        assert!(serde_json::to_value(&config)
            .unwrap()
            .get("max_retries")
            .is_none());
        let retrying = StudyConfig {
            max_retries: 2,
            ..lr_config()
        };
        assert_eq!(
            serde_json::to_value(&retrying).unwrap()["max_retries"],
            json!(2)
        );
        assert!(retrying.validate().is_ok());
        let e = StudyConfig {
            max_retries: 101,
            ..lr_config()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.message, "max_retries must be at most 100, got 101");
    }

    #[test]
    fn trials_asked_from_before_leases_still_reads() {
        let event: SolverEvent = serde_json::from_value(json!({"type": "trials_asked",
            "trials": [], "study_done": false}))
        .unwrap();
        assert_eq!(
            event,
            SolverEvent::TrialsAsked {
                trials: vec![],
                study_done: false,
                retried: vec![],
                lease_until: None
            }
        );
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            json!({"type": "trials_asked", "trials": [], "study_done": false})
        );
    }

    #[test]
    fn stop_reason_is_optional() {
        assert_eq!(
            parse(json!({"type": "stop"})).unwrap(),
            SolverCommand::Stop { reason: None }
        );
    }

    #[test]
    fn validate_names_the_parameter_and_the_problem() {
        let message = |edit: fn(&mut StudyConfig)| {
            let mut config = lr_config();
            edit(&mut config);
            let e = config.validate().unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidField);
            e.message
        };
        assert!(lr_config().validate().is_ok());
        assert_eq!(
            message(|c| c.budget = 0),
            "budget must be at least 1, got 0"
        );
        assert!(message(|c| c.bounds.clear()).contains("at least one"));
        let blank = message(|c| {
            let b = c.bounds["lr"].clone();
            c.bounds.insert(" ".into(), b);
        });
        assert!(blank.contains("must not be blank"), "{blank}");
        let swapped = message(|c| {
            let b = c.bounds.get_mut("lr").unwrap();
            (b.min, b.max, b.scale) = (0.1, 0.01, Scale::Linear);
        });
        assert_eq!(swapped, "bounds.lr: min 0.1 must be below max 0.01");
        let nan = message(|c| c.bounds.get_mut("lr").unwrap().min = f64::NAN);
        assert_eq!(nan, "bounds.lr: min NaN must be finite");
        let inf = message(|c| c.bounds.get_mut("lr").unwrap().max = f64::INFINITY);
        assert_eq!(inf, "bounds.lr: max inf must be finite");
        let log = message(|c| c.bounds.get_mut("lr").unwrap().min = 0.0);
        assert_eq!(log, "bounds.lr: log scale needs min > 0, got 0");
        let ratio = message(|c| c.probe_ratio = Some(0.0));
        assert_eq!(ratio, "probe_ratio must be in (0, 1], got 0");
        assert!(message(|c| c.probe_ratio = Some(1.5)).contains("got 1.5"));
        let knob = message(|c| {
            c.strategy_params.insert("gamma".into(), f64::NAN);
        });
        assert_eq!(knob, "strategy_params.gamma: must be finite, got NaN");
    }

    #[test]
    fn probe_ratio_of_one_is_valid() {
        let mut config = lr_config();
        config.probe_ratio = Some(1.0);
        assert!(config.validate().is_ok());
    }

    #[test]
    fn trial_ids_are_canonical() {
        assert_eq!(trial_id(12), "t12");
        assert_eq!(trial_number("t12"), Some(12));
        for bad in ["t0", "t07", "12", "x1", "t", "t-1", "t1a", "t+1", "T1"] {
            assert_eq!(trial_number(bad), None, "{bad}");
        }
        assert_eq!(trial_number(&trial_id(u64::MAX)), Some(u64::MAX));
    }

    #[test]
    fn command_type_matches_the_serialized_tag() {
        let commands = [
            SolverCommand::CreateStudy(lr_config()),
            SolverCommand::Ask { n: 1, lease: None },
            SolverCommand::Tell(Tell {
                results: vec![TrialResult {
                    trial_id: "t1".into(),
                    value: 1.0,
                    cost: None,
                }],
            }),
            SolverCommand::Fail(Fail {
                failures: vec![TrialFailure {
                    trial_id: "t1".into(),
                    reason: None,
                }],
            }),
            SolverCommand::Heartbeat(Heartbeat {
                trial_ids: vec!["t1".into()],
                now: 1,
                lease_seconds: None,
            }),
            SolverCommand::Expire { now: 1 },
            SolverCommand::Stop { reason: None },
        ];
        let leased = SolverCommand::Ask {
            n: 1,
            lease: Some(Lease {
                now: 1,
                seconds: None,
            }),
        };
        assert_eq!(leased.command_type(), "ask");
        assert_eq!(serde_json::to_value(&leased).unwrap()["type"], json!("ask"));
        for (command, tag) in commands.iter().zip(COMMAND_TYPES) {
            assert_eq!(command.command_type(), *tag);
            assert_eq!(serde_json::to_value(command).unwrap()["type"], json!(tag));
        }
    }

    #[test]
    fn event_type_matches_the_serialized_tag() {
        let events = [
            SolverEvent::StudyCreated {
                config: lr_config(),
            },
            SolverEvent::TrialsAsked {
                trials: vec![],
                study_done: true,
                retried: vec![],
                lease_until: Some(1),
            },
            SolverEvent::LeasesRenewed {
                trial_ids: vec![],
                lease_until: 1,
            },
            SolverEvent::TrialsExpired {
                trial_ids: vec![],
                now: 1,
                completes_study: false,
            },
            SolverEvent::TrialsTold {
                results: vec![],
                completes_study: false,
            },
            SolverEvent::TrialsFailed {
                failures: vec![],
                completes_study: true,
            },
            SolverEvent::StudyStopped { reason: None },
        ];
        for event in events {
            let tag = serde_json::to_value(&event).unwrap()["type"].clone();
            assert_eq!(tag, json!(event.event_type()));
        }
    }

    fn finite() -> impl Strategy<Value = f64> {
        any::<f64>().prop_filter("finite", |v| v.is_finite())
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-z_]{1,8}"
    }

    fn scale() -> impl Strategy<Value = Scale> {
        prop_oneof![Just(Scale::Linear), Just(Scale::Log), Just(Scale::Periodic)]
    }

    fn sampler() -> impl Strategy<Value = Sampler> {
        proptest::sample::select(Sampler::ALL.to_vec())
    }

    fn bound() -> impl Strategy<Value = Bound> {
        (finite(), finite(), scale()).prop_map(|(min, max, scale)| Bound::new(min, max, scale))
    }

    fn config() -> impl Strategy<Value = StudyConfig> {
        (
            any::<u64>(),
            any::<u64>(),
            proptest::collection::btree_map(name(), bound(), 0..4),
            proptest::option::of(finite()),
            proptest::collection::btree_map(name(), finite(), 0..3),
            (sampler(), 0u32..4),
        )
            .prop_map(
                |(seed, budget, bounds, probe_ratio, strategy_params, (sampler, max_retries))| {
                    StudyConfig {
                        seed,
                        budget,
                        bounds,
                        probe_ratio,
                        strategy_params,
                        sampler,
                        max_retries,
                        ..Default::default()
                    }
                },
            )
    }

    fn result() -> impl Strategy<Value = TrialResult> {
        ("t[1-9][0-9]{0,4}", finite(), proptest::option::of(finite())).prop_map(
            |(trial_id, value, cost)| TrialResult {
                trial_id,
                value,
                cost,
            },
        )
    }

    fn param_value() -> impl Strategy<Value = ParamValue> {
        prop_oneof![
            any::<i64>().prop_map(ParamValue::Int),
            finite().prop_map(ParamValue::Float),
            any::<bool>().prop_map(ParamValue::Bool),
            ".{0,8}".prop_map(ParamValue::Text),
        ]
    }

    fn failure() -> impl Strategy<Value = TrialFailure> {
        ("t[1-9][0-9]{0,4}", proptest::option::of(".{0,12}"))
            .prop_map(|(trial_id, reason)| TrialFailure { trial_id, reason })
    }

    fn params() -> impl Strategy<Value = Params> {
        proptest::collection::btree_map(name(), param_value(), 0..4)
    }

    fn trial() -> impl Strategy<Value = Trial> {
        (1..u64::MAX, params()).prop_map(|(number, params)| Trial {
            trial_id: trial_id(number),
            number,
            params,
        })
    }

    fn command() -> impl Strategy<Value = SolverCommand> {
        let results = proptest::collection::vec(result(), 1..4);
        prop_oneof![
            config().prop_map(SolverCommand::CreateStudy),
            any::<u32>().prop_map(|n| SolverCommand::Ask { n, lease: None }),
            (
                any::<u32>(),
                any::<u64>(),
                proptest::option::of(any::<u64>())
            )
                .prop_map(|(n, now, lease_seconds)| SolverCommand::Ask {
                    n,
                    lease: Some(Lease {
                        now,
                        seconds: lease_seconds
                    })
                }),
            (
                proptest::collection::vec("t[1-9]", 1..3),
                any::<u64>(),
                proptest::option::of(any::<u64>())
            )
                .prop_map(|(trial_ids, now, lease_seconds)| {
                    SolverCommand::Heartbeat(Heartbeat {
                        trial_ids,
                        now,
                        lease_seconds,
                    })
                }),
            any::<u64>().prop_map(|now| SolverCommand::Expire { now }),
            results.prop_map(|results| SolverCommand::Tell(Tell { results })),
            proptest::collection::vec(failure(), 1..4)
                .prop_map(|failures| SolverCommand::Fail(Fail { failures })),
            proptest::option::of(".{0,12}").prop_map(|reason| SolverCommand::Stop { reason }),
            ("t[1-9]", any::<u64>(), finite()).prop_map(|(trial_id, step, value)| {
                SolverCommand::Report(Report {
                    trial_id,
                    step,
                    value,
                })
            }),
            proptest::collection::vec((params(), finite(), proptest::option::of(finite())), 1..3)
                .prop_map(|trials| SolverCommand::Seed(SeedTrials {
                    trials: trials
                        .into_iter()
                        .map(|(params, value, cost)| PriorResult {
                            params,
                            value,
                            cost
                        })
                        .collect()
                })),
            proptest::collection::vec(params(), 1..3)
                .prop_map(|candidates| SolverCommand::Enqueue(Enqueue { candidates })),
        ]
    }

    fn event() -> impl Strategy<Value = SolverEvent> {
        prop_oneof![
            config().prop_map(|config| SolverEvent::StudyCreated { config }),
            (
                proptest::collection::vec(trial(), 0..4),
                any::<bool>(),
                proptest::collection::vec(trial(), 0..2),
                proptest::option::of(any::<u64>()),
            )
                .prop_map(|(trials, study_done, retried, lease_until)| {
                    SolverEvent::TrialsAsked {
                        trials,
                        study_done,
                        retried,
                        lease_until,
                    }
                }),
            (proptest::collection::vec("t[1-9]", 0..3), any::<u64>()).prop_map(
                |(trial_ids, lease_until)| SolverEvent::LeasesRenewed {
                    trial_ids,
                    lease_until
                }
            ),
            (
                proptest::collection::vec("t[1-9]", 0..3),
                any::<u64>(),
                any::<bool>()
            )
                .prop_map(|(trial_ids, now, completes_study)| {
                    SolverEvent::TrialsExpired {
                        trial_ids,
                        now,
                        completes_study,
                    }
                }),
            (proptest::collection::vec(result(), 0..4), any::<bool>()).prop_map(
                |(results, completes_study)| SolverEvent::TrialsTold {
                    results,
                    completes_study
                }
            ),
            (proptest::collection::vec(failure(), 0..4), any::<bool>()).prop_map(
                |(failures, completes_study)| SolverEvent::TrialsFailed {
                    failures,
                    completes_study
                }
            ),
            proptest::option::of(".{0,12}").prop_map(|reason| SolverEvent::StudyStopped { reason }),
            (
                "t[1-9]",
                any::<u64>(),
                finite(),
                any::<bool>(),
                any::<bool>()
            )
                .prop_map(|(trial_id, step, value, prune, completes_study)| {
                    SolverEvent::TrialReported {
                        trial_id,
                        step,
                        value,
                        action: if prune {
                            PruneAction::Prune
                        } else {
                            PruneAction::Continue
                        },
                        completes_study,
                    }
                }),
            (
                proptest::collection::vec(trial(), 0..3),
                proptest::collection::vec(result(), 0..3)
            )
                .prop_map(|(trials, results)| SolverEvent::TrialsSeeded { trials, results }),
            proptest::collection::vec(params(), 0..3)
                .prop_map(|candidates| SolverEvent::CandidatesEnqueued { candidates }),
        ]
    }

    fn round_trips<T>(value: &T) -> Result<(), TestCaseError>
    where
        T: Serialize + serde::de::DeserializeOwned + PartialEq + fmt::Debug,
    {
        for encoding in [Encoding::Json, Encoding::MsgPack] {
            let bytes = encoding.encode(value).unwrap();
            let back: T = encoding.decode(&bytes).unwrap();
            prop_assert_eq!(&back, value, "{:?}", encoding);
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn commands_round_trip(cmd in command()) {
            round_trips(&cmd)?;
        }

        #[test]
        fn events_round_trip(event in event()) {
            round_trips(&event)?;
        }

        #[test]
        fn parts_round_trip(config in config(), trial in trial(), result in result(), s in scale(), sampler in sampler()) {
            round_trips(&config)?;
            round_trips(&sampler)?;
            round_trips(&trial)?;
            round_trips(&result)?;
            round_trips(&s)?;
            round_trips(&Tell { results: vec![result] })?;
        }

        #[test]
        fn commands_parse_through_the_request_path(cmd in command()) {
            let value = serde_json::to_value(&cmd).unwrap();
            prop_assert_eq!(parse(value).unwrap(), cmd);
        }
    }
}
