//! A study's configuration: ArqonHPO's config (`seed`, `budget`, `bounds`,
//! `probe_ratio`, `strategy_params`) plus the native `direction`, `sampler`,
//! `max_retries` and `pruner`, and how it is checked.
//!
//! [`StudyConfig::validate`] names the field and the problem; the search
//! space's own checks live with it in [`search_space`](super::search_space),
//! the pruner's in [`pruning`](super::pruning). A sampler's knobs are read
//! from `strategy_params` by the rules of [`TPE_PARAMS`] and [`CMAES_PARAMS`].

use super::commands::MAX_OBJECTIVES;
use super::pruning::Pruner;
use super::search_space::{space_problem, Bound, Direction};
use crate::error::Rejection;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;

/// The most times a stale trial may be handed out again.
pub const MAX_RETRIES: u32 = 100;

/// The revision of [`Sampler::Auto`]'s rule that a new study records
/// ([`StudyConfig::as_recorded`]): 1 picks TPE or CMA-ES, 2 also GP.
pub const AUTO_RULE: u32 = 2;

/// The most parameters a study may search. Real searches have tens; the
/// bound keeps one `ask` (its trials carry every parameter) small enough to
/// store and answer in one message.
pub const MAX_PARAMETERS: usize = 256;

/// The most parameters a [`Sampler::Sobol`] study may have: the dimensions
/// of the Joe–Kuo direction-number table the solver carries.
pub const SOBOL_MAX_DIMENSIONS: usize = 32;

/// How a study picks the points it hands out.
///
/// Written lowercase (`"sobol"`); read in any case (`"Sobol"`, `"GRID"`),
/// like [`Scale`](super::Scale). Absent means [`Sampler::Auto`] in a `create_study`;
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
    /// Gaussian-process Bayesian optimisation: after
    /// [`GP_N_STARTUP_TRIALS`] trials of a scrambled Sobol design, a
    /// Matérn-5/2 GP with one length scale per parameter (fitted by
    /// maximum a posteriori) models the values, and each point maximises
    /// log expected improvement. Running trials are "believed" at the
    /// model's mean (Kriging believer), so a batch spreads out. The most
    /// sample-efficient sampler at small budgets in low dimensions; each
    /// trial costs `O(n³)` in the history's size. Tuned through
    /// `strategy_params` (see [`GP_PARAMS`]).
    Gp,
    /// NSGA-II, the multi-objective genetic algorithm (Deb et al., 2002), as
    /// Optuna's `NSGAIISampler` runs it: a first generation of random
    /// points, then each generation's parents are the elite of the trials
    /// so far by (constrained) non-dominated rank and crowding distance;
    /// a child takes each coordinate from one of two tournament-picked
    /// parents (uniform crossover, Optuna's default) and resamples each
    /// coordinate with the mutation probability. Tuned through
    /// `strategy_params` (see [`NSGA2_PARAMS`]).
    Nsga2,
    /// Picks a sampler from the search space's shape (dimensions, budget,
    /// parameter types) by a rule measured on the solver benchmark: GP up to
    /// 200 trials in up to 20 numeric dimensions, CMA-ES beyond, TPE for
    /// categorical or conditional spaces (revision 2, see
    /// [`StudyConfig::auto_rule`]). Reads the `strategy_params` of the
    /// sampler it picks. The default.
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

/// GP's default number of start-up trials before it models anything.
pub const GP_N_STARTUP_TRIALS: u64 = 10;

/// GP's default number of Sobol candidates scored per trial.
pub const GP_N_CANDIDATES: u64 = 256;

/// The most candidates a GP study may score per trial.
pub const GP_MAX_CANDIDATES: u64 = 8192;

/// The `strategy_params` keys a [`Sampler::Gp`] study reads: the number of
/// start-up trials (a whole number, default [`GP_N_STARTUP_TRIALS`]) and
/// the Sobol candidates scored per trial (a whole number in
/// 1..=[`GP_MAX_CANDIDATES`], default [`GP_N_CANDIDATES`]).
pub const GP_PARAMS: [&str; 2] = ["n_startup_trials", "n_candidates"];

/// NSGA-II's default population (Optuna's `population_size=50`).
pub const NSGA2_POPULATION_SIZE: u64 = 50;

/// The largest population a [`Sampler::Nsga2`] study may ask for.
pub const NSGA2_MAX_POPULATION_SIZE: u64 = 10_000;

/// NSGA-II's default crossover probability (Optuna's 0.9).
pub const NSGA2_CROSSOVER_PROB: f64 = 0.9;

/// NSGA-II's default swapping probability of uniform crossover (Optuna's
/// 0.5).
pub const NSGA2_SWAPPING_PROB: f64 = 0.5;

/// The `strategy_params` keys a [`Sampler::Nsga2`] study reads: the
/// population size (a whole number in 2..=[`NSGA2_MAX_POPULATION_SIZE`],
/// default [`NSGA2_POPULATION_SIZE`]), the crossover probability (in
/// [0, 1], default [`NSGA2_CROSSOVER_PROB`]), uniform crossover's swapping
/// probability (in [0, 1], default [`NSGA2_SWAPPING_PROB`]) and the
/// per-parameter mutation probability (in [0, 1], default `1 / d`, as
/// Optuna's).
pub const NSGA2_PARAMS: [&str; 4] = [
    "population_size",
    "crossover_prob",
    "swapping_prob",
    "mutation_prob",
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
    pub const ALL: [Sampler; 8] = [
        Sampler::Random,
        Sampler::Sobol,
        Sampler::Grid,
        Sampler::Tpe,
        Sampler::Cmaes,
        Sampler::Gp,
        Sampler::Nsga2,
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
            Sampler::Gp => "gp",
            Sampler::Nsga2 => "nsga2",
            Sampler::Auto => "auto",
        }
    }

    /// Whether it can run a study of several objectives.
    pub fn supports_multi_objective(self) -> bool {
        !matches!(self, Sampler::Cmaes | Sampler::Gp)
    }

    /// Whether a trial's point depends on the trials before it (the
    /// model-based samplers), not on the seed and its number alone.
    pub fn reads_history(self) -> bool {
        matches!(
            self,
            Sampler::Tpe | Sampler::Cmaes | Sampler::Gp | Sampler::Nsga2 | Sampler::Auto
        )
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
        f.write_str("sampler: a name, one of random, sobol, grid, tpe, cmaes, gp, nsga2 or auto")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Sampler, E> {
        Sampler::parse(text).ok_or_else(|| {
            E::custom(format!(
                "sampler: unknown value {text:?}: expected random, sobol, grid, tpe, cmaes, gp, nsga2 or auto"
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StudyConfig {
    /// Seeds every trial's sampling (together with the trial number).
    pub seed: u64,
    /// How many trials the study hands out in total.
    pub budget: u64,
    /// The search space: parameter name → range, type and condition
    /// ([`search_space`](super::search_space)); also read as `params`.
    #[serde(alias = "params")]
    pub bounds: BTreeMap<String, Bound>,
    /// Whether lower or higher values are better; minimise when absent.
    #[serde(default, skip_serializing_if = "Direction::is_minimize")]
    pub direction: Direction,
    /// One direction per objective for a multi-objective study (at most
    /// [`MAX_OBJECTIVES`]); results then carry `values`, one per
    /// direction. Empty (and not written) for a single objective; a
    /// one-element list is read as `direction` ([`StudyConfig::normalised`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub directions: Vec<Direction>,
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
    /// Which revision of `auto`'s rule picks the sampler (1..=
    /// [`AUTO_RULE`]); only with [`Sampler::Auto`]. A new study records
    /// the current revision when it names none, so a better rule never
    /// changes how a recorded study continues. Absent in a recorded config
    /// means revision 1, the rule from before revisions were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_rule: Option<u32>,
    /// How many times a stale trial may be handed out again (0..=
    /// [`MAX_RETRIES`]); 0 when absent, and then not written, so configs
    /// and events from before leases read and write as they did.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_retries: u32,
    /// How reports stop trials early ([`pruning`](super::pruning)); never when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pruner: Option<Pruner>,
    /// How the control plane runs the study's trials by itself, as
    /// `start_run` on `study_run/<study>` would (see
    /// [`crate::study_run`]): `flotilla up` starts the run when the study
    /// is created. No run when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<crate::study_run::RunSpec>,
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

/// The rules of [`GP_PARAMS`].
const GP_RULES: [KnobRule; 2] = [
    ("n_startup_trials", whole, "a whole number >= 0"),
    (
        "n_candidates",
        |v| whole(v) && (1.0..=GP_MAX_CANDIDATES as f64).contains(&v),
        "a whole number in 1..=8192",
    ),
];

fn probability(v: f64) -> bool {
    (0.0..=1.0).contains(&v)
}

/// The rules of [`NSGA2_PARAMS`].
const NSGA2_RULES: [KnobRule; 4] = [
    (
        "population_size",
        |v| whole(v) && (2.0..=NSGA2_MAX_POPULATION_SIZE as f64).contains(&v),
        "a whole number in 2..=10000",
    ),
    ("crossover_prob", probability, "in [0, 1]"),
    ("swapping_prob", probability, "in [0, 1]"),
    ("mutation_prob", probability, "in [0, 1]"),
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
    /// The config as `create_study` records it: a one-element
    /// `directions` read as `direction` ([`StudyConfig::normalised`]), and
    /// an `auto` study without a rule revision given today's
    /// ([`AUTO_RULE`]). Compare a config with a recorded one through this,
    /// as the recorded one went through it.
    pub fn as_recorded(&self) -> StudyConfig {
        let mut recorded = self.clone().normalised();
        if recorded.sampler == Sampler::Auto && recorded.auto_rule.is_none() {
            recorded.auto_rule = Some(AUTO_RULE);
        }
        recorded
    }

    /// Whether `recorded` (a study's recorded config) is this config's
    /// study, for resuming it: equal as recorded, where a config that names
    /// no `auto_rule` takes the study's (a study recorded before revisions
    /// keeps rule 1), and an absent revision equals revision 1.
    pub fn same_study_as(&self, recorded: &StudyConfig) -> bool {
        let mut mine = self.as_recorded();
        if self.auto_rule.is_none() {
            mine.auto_rule = recorded.auto_rule;
        }
        let mut theirs = recorded.clone();
        let same_rule = mine.auto_rule() == theirs.auto_rule();
        mine.auto_rule = None;
        theirs.auto_rule = None;
        same_rule && mine == theirs
    }

    /// The revision of `auto`'s rule this config runs under: its own, or 1
    /// for a config recorded before revisions were.
    pub fn auto_rule(&self) -> u32 {
        self.auto_rule.unwrap_or(1)
    }

    /// How many objectives its results carry: 1, or one per direction.
    pub fn objectives(&self) -> usize {
        self.directions.len().max(1)
    }

    /// Whether it has several objectives.
    pub fn is_multi_objective(&self) -> bool {
        self.directions.len() > 1
    }

    /// The direction of each objective, in order.
    pub fn all_directions(&self) -> Vec<Direction> {
        if self.directions.is_empty() {
            vec![self.direction]
        } else {
            self.directions.clone()
        }
    }

    /// The same study with a one-element `directions` read as `direction`,
    /// so a study of one objective has one spelling.
    pub fn normalised(mut self) -> Self {
        // With a `direction` given too, both stay for `validate` to refuse.
        if let [direction] = self.directions[..] {
            if self.direction.is_minimize() {
                self.direction = direction;
                self.directions.clear();
            }
        }
        self
    }

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
        if self.bounds.len() > MAX_PARAMETERS {
            return Some(format!(
                "bounds: at most {MAX_PARAMETERS} parameters, got {}",
                self.bounds.len()
            ));
        }
        if self.max_retries > MAX_RETRIES {
            return Some(format!(
                "max_retries must be at most {MAX_RETRIES}, got {}",
                self.max_retries
            ));
        }
        self.bounds_problem()
            .or_else(|| self.directions_problem())
            .or_else(|| space_problem(&self.bounds))
            .or_else(|| self.strategy_params_problem())
            .or_else(|| self.sampler_problem())
            .or_else(|| self.auto_rule_problem())
            .or_else(|| self.probe_ratio_problem())
            .or_else(|| self.pruner.and_then(|p| p.problem()))
            .or_else(|| {
                let runner = self.runner.as_ref()?;
                runner.problem().map(|m| format!("runner.{m}"))
            })
    }

    fn directions_problem(&self) -> Option<String> {
        if self.directions.len() > MAX_OBJECTIVES {
            return Some(format!(
                "directions: at most {MAX_OBJECTIVES} objectives, got {}",
                self.directions.len()
            ));
        }
        if !self.directions.is_empty() && !self.direction.is_minimize() {
            return Some(
                "directions: give either `direction` or `directions`, not both".to_string(),
            );
        }
        if self.is_multi_objective() && self.pruner.is_some() {
            return Some(
                "pruner: a multi-objective study cannot prune (reports carry one value)"
                    .to_string(),
            );
        }
        None
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
        if self.is_multi_objective() && !self.sampler.supports_multi_objective() {
            return Some(format!(
                "sampler: {} supports a single objective only; a study of {} objectives \
                 takes nsga2, tpe, auto, random, sobol or grid",
                self.sampler,
                self.directions.len()
            ));
        }
        match self.sampler {
            Sampler::Sobol if dimensions > SOBOL_MAX_DIMENSIONS => Some(format!(
                "sampler: sobol supports at most {SOBOL_MAX_DIMENSIONS} parameters, \
                 got {dimensions}; use random, grid or tpe"
            )),
            Sampler::Tpe => self.tpe_problem(),
            Sampler::Cmaes => self.cmaes_problem(),
            Sampler::Gp => self.gp_problem(),
            Sampler::Nsga2 => self.nsga2_problem(),
            // Auto may pick any model-based sampler its rule knows: every
            // one's knobs must be valid.
            Sampler::Auto => self
                .tpe_problem()
                .or_else(|| self.cmaes_problem())
                .or_else(|| self.nsga2_problem())
                .or_else(|| self.gp_problem().filter(|_| self.auto_rule() >= 2)),
            _ => None,
        }
    }

    fn auto_rule_problem(&self) -> Option<String> {
        let rule = self.auto_rule?;
        if self.sampler != Sampler::Auto {
            return Some(format!(
                "auto_rule: only for sampler auto, got sampler {}",
                self.sampler.as_str()
            ));
        }
        (!(1..=AUTO_RULE).contains(&rule))
            .then(|| format!("auto_rule must be in 1..={AUTO_RULE}, got {rule}"))
    }

    /// Checks the [`GP_PARAMS`] that are given.
    fn gp_problem(&self) -> Option<String> {
        self.knob_problem("gp", &GP_RULES)
    }

    /// Checks the [`CMAES_PARAMS`] that are given.
    fn cmaes_problem(&self) -> Option<String> {
        self.knob_problem("cmaes", &CMAES_RULES)
    }

    /// Checks the [`NSGA2_PARAMS`] that are given.
    fn nsga2_problem(&self) -> Option<String> {
        self.knob_problem("nsga2", &NSGA2_RULES)
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
